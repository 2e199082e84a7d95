//! The webhook events the hub's changes make: built under the hub's lock from the state they
//! describe, queued without waiting ([`Webhooks::send`]), so each receiver gets one room's events
//! in the order they happened.

use serde_json::{json, Value};

use super::{ParticipantView, Room};
use crate::api::wire;
use crate::webhooks::Webhooks;

/// Why a participant left, as `participant_left` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Left,
    TimedOut,
    Replaced,
    Removed,
    RoomEnded,
}

impl Why {
    fn name(self) -> &'static str {
        match self {
            Why::Left => "left",
            Why::TimedOut => "timed-out",
            Why::Replaced => "replaced",
            Why::Removed => "removed",
            Why::RoomEnded => "room-ended",
        }
    }

    /// LiveKit's `DisconnectReason`.
    fn livekit(self) -> &'static str {
        match self {
            Why::Left => "CLIENT_INITIATED",
            Why::TimedOut => "SIGNAL_CLOSE",
            Why::Replaced => "DUPLICATE_IDENTITY",
            Why::Removed => "PARTICIPANT_REMOVED",
            Why::RoomEnded => "ROOM_DELETED",
        }
    }
}

fn room_json(name: &str, room: &Room) -> Value {
    json!(wire::Room::from(&room.view(name), false))
}

/// `room_started` or `room_finished`.
pub(super) fn room(hooks: &Webhooks, event: &str, name: &str, room: &Room) {
    if hooks.on() {
        hooks.send(event, vec![("room", room_json(name, room))]);
    }
}

/// `participant_joined`.
pub(super) fn joined(hooks: &Webhooks, name: &str, room: &Room, id: &str) {
    if !hooks.on() {
        return;
    }
    if let Some(p) = room.participant_view(id) {
        let participant = json!(wire::Participant::from(&p));
        hooks.send(
            "participant_joined",
            vec![
                ("room", room_json(name, room)),
                ("participant", participant),
            ],
        );
    }
}

/// `track_published` for the participant's track `sid`.
pub(super) fn published(hooks: &Webhooks, name: &str, room: &Room, id: &str, sid: &str) {
    if !hooks.on() {
        return;
    }
    let Some(p) = room.participant_view(id) else {
        return;
    };
    let Some(track) = p.tracks.iter().find(|t| t.sid == sid) else {
        return;
    };
    let track = json!(wire::Track::from(track));
    hooks.send(
        "track_published",
        vec![
            ("room", room_json(name, room)),
            ("participant", json!(wire::Participant::from(&p))),
            ("track", track),
        ],
    );
}

/// `track_unpublished` for each track of `p` (viewed before they went).
pub(super) fn unpublished(hooks: &Webhooks, name: &str, room: &Room, p: &ParticipantView) {
    if !hooks.on() || p.tracks.is_empty() {
        return;
    }
    let room_json = room_json(name, room);
    let participant = json!(wire::Participant::from(p));
    for track in &p.tracks {
        hooks.send(
            "track_unpublished",
            vec![
                ("room", room_json.clone()),
                ("participant", participant.clone()),
                ("track", json!(wire::Track::from(track))),
            ],
        );
    }
}

/// `track_unpublished` for each of its tracks, then `participant_left`: `p` was taken out of
/// `room` (viewed before it was).
pub(super) fn left(hooks: &Webhooks, name: &str, room: &Room, p: &ParticipantView, why: Why) {
    if !hooks.on() {
        return;
    }
    unpublished(hooks, name, room, p);
    let room_json = room_json(name, room);
    let mut participant = json!(wire::Participant::from(p));
    participant["state"] = json!("DISCONNECTED");
    participant["disconnect_reason"] = json!(why.livekit());
    hooks.send(
        "participant_left",
        vec![
            ("room", room_json),
            ("participant", participant),
            ("reason", json!(why.name())),
        ],
    );
}

/// A room ended with people in it: each one leaves (`room-ended`), then `room_finished`.
pub(super) fn ended(hooks: &Webhooks, name: &str, mut room: Room) {
    if !hooks.on() {
        return;
    }
    let ids: Vec<String> = room.participants.keys().cloned().collect();
    for id in ids {
        let view = room.participant_view(&id);
        room.participants.remove(&id);
        if let Some(view) = view {
            left(hooks, name, &room, &view, Why::RoomEnded);
        }
    }
    self::room(hooks, "room_finished", name, &room);
}

//! What the server API does to rooms: create, list and end them, and act on a participant
//! named by its identity. The same rules as a moderator's actions over `/ws`; the actor is the
//! application, shown to the room as "the server".

use std::time::{Duration, Instant};

use sori_media::sori_sfu::MediaKind;

use super::events::{self, Why};
use super::moderation::server_mute;
use super::{Hub, Me, Room, RoomMeta};
use crate::backend::PeerRef;
use crate::protocol::{
    ChatMessage, LeaveReason, Moderation, ModerationAction, ParticipantInfo, RemovedReason,
    RoomMode, ServerMessage, TrackRole, CHAT_HISTORY, MAX_CHAT_CHARS,
};

/// How the room sees the application acting on it.
pub(crate) const SERVER_ID: &str = "server";
const SERVER_NAME: &str = "the server";

/// Why the server API could not do what it was asked; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// No such room, participant or track.
    NotFound(String),
    /// The request cannot be carried out as asked.
    Invalid(String),
    /// A server limit stands in the way.
    Exhausted(String),
}

/// A room the server API creates.
#[derive(Debug, Clone)]
pub(crate) struct NewRoom {
    pub name: String,
    pub mode: RoomMode,
    /// `None`: the server's setting.
    pub empty_timeout: Option<Duration>,
    pub departure_timeout: Option<Duration>,
    /// 0: the server's limit.
    pub max_participants: u32,
    pub metadata: String,
}

/// A room as the server API shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoomView {
    pub name: String,
    pub sid: String,
    pub created_ms: u64,
    pub metadata: String,
    pub empty_timeout: Duration,
    pub departure_timeout: Duration,
    pub max_participants: u32,
    pub participants: usize,
    pub publishers: usize,
    pub mode: RoomMode,
}

/// A published track as the server API shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrackView {
    /// The media server's id of the track.
    pub sid: String,
    pub kind: MediaKind,
    /// For video: camera or screen share.
    pub role: Option<TrackRole>,
    /// Muted by the participant itself or by a moderator.
    pub muted: bool,
}

/// A participant as the server API shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParticipantView {
    pub info: ParticipantInfo,
    pub joined_ms: u64,
    pub tracks: Vec<TrackView>,
    /// What its token lets it do, as changed by the server API since.
    pub chat: bool,
    pub publish: bool,
    pub subscribe: bool,
}

impl Room {
    pub(super) fn view(&self, name: &str) -> RoomView {
        RoomView {
            name: name.to_string(),
            sid: self.meta.sid.clone(),
            created_ms: self.meta.created_ms,
            metadata: self.meta.metadata.clone(),
            empty_timeout: self.meta.timeouts.empty,
            departure_timeout: self.meta.timeouts.departure,
            max_participants: self.meta.max_participants,
            participants: self.participants.len(),
            publishers: self
                .participants
                .values()
                .filter(|p| !p.published.is_empty())
                .count(),
            mode: self.active,
        }
    }

    pub(super) fn participant_view(&self, id: &str) -> Option<ParticipantView> {
        let p = self.participants.get(id)?;
        let tracks = p
            .published
            .iter()
            .map(|(sid, kind)| {
                let (by_self, by_server) = match kind {
                    MediaKind::Audio => (p.info.audio_muted, p.info.server_muted.audio),
                    MediaKind::Video => (p.info.video_muted, p.info.server_muted.video),
                };
                TrackView {
                    sid: sid.clone(),
                    kind: *kind,
                    role: p.info.tracks.get(sid).copied(),
                    muted: by_self || by_server,
                }
            })
            .collect();
        Some(ParticipantView {
            info: p.info.clone(),
            joined_ms: p.joined_ms,
            tracks,
            chat: p.chat,
            publish: p.publish,
            subscribe: p.subscribe,
        })
    }

    /// The id of the participant with `identity`.
    fn id_of(&self, identity: &str) -> Result<String, ApiError> {
        self.by_identity(identity)
            .map(str::to_string)
            .ok_or_else(|| ApiError::NotFound(format!("no participant {identity:?} in this room")))
    }
}

fn no_room(name: &str) -> ApiError {
    ApiError::NotFound(format!("no room {name:?}"))
}

impl Hub {
    fn api_room(&mut self, name: &str) -> Result<&mut Room, ApiError> {
        self.rooms.get_mut(name).ok_or_else(|| no_room(name))
    }

    /// Creates room `new.name`, open for its empty timeout; a room of that name that exists
    /// already is returned as it is.
    pub(crate) fn create_room(
        &mut self,
        new: &NewRoom,
        now: Instant,
    ) -> Result<(RoomView, bool), ApiError> {
        if let Some(room) = self.rooms.get(&new.name) {
            return Ok((room.view(&new.name), false));
        }
        if self.rooms.len() >= self.limits.rooms {
            return Err(ApiError::Exhausted(format!(
                "this server has {} rooms, the most it may have",
                self.limits.rooms
            )));
        }
        let mut meta = RoomMeta::new(self.timeouts);
        if let Some(t) = new.empty_timeout {
            meta.timeouts.empty = t;
        }
        if let Some(t) = new.departure_timeout {
            meta.timeouts.departure = t;
        }
        meta.max_participants = new.max_participants;
        meta.metadata = new.metadata.clone();
        let ends_at = Some(now + meta.timeouts.empty);
        let room = Room::new(meta, new.mode, ends_at);
        let view = room.view(&new.name);
        events::room(&self.hooks, "room_started", &new.name, &room);
        self.rooms.insert(new.name.clone(), room);
        tracing::info!(room = new.name, "room created by the server API");
        Ok((view, true))
    }

    /// The rooms named in `names` (every room if empty), by name.
    pub(crate) fn room_views(&self, names: &[String]) -> Vec<RoomView> {
        let mut out: Vec<RoomView> = self
            .rooms
            .iter()
            .filter(|(n, _)| names.is_empty() || names.contains(n))
            .map(|(n, r)| r.view(n))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Ends `room`: everyone in it is told and their sockets closed. Returns the ids of those
    /// who were in it.
    pub(crate) fn end_room(&mut self, name: &str) -> Result<Vec<String>, ApiError> {
        let room = self.rooms.remove(name).ok_or_else(|| no_room(name))?;
        let gone = ServerMessage::Removed {
            reason: RemovedReason::RoomEnded,
            by: Some(SERVER_NAME.into()),
        };
        for p in room.participants.values() {
            p.out.send(&gone);
            p.out.close("room ended by the server API");
        }
        tracing::info!(room = name, "room ended by the server API");
        let ids = room.participants.keys().cloned().collect();
        events::ended(&self.hooks, name, room);
        Ok(ids)
    }

    pub(crate) fn participant_views(&self, room: &str) -> Result<Vec<ParticipantView>, ApiError> {
        let r = self.rooms.get(room).ok_or_else(|| no_room(room))?;
        Ok(r.participants
            .keys()
            .filter_map(|id| r.participant_view(id))
            .collect())
    }

    pub(crate) fn participant_view(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<ParticipantView, ApiError> {
        let r = self.rooms.get(room).ok_or_else(|| no_room(room))?;
        let id = r.id_of(identity)?;
        r.participant_view(&id)
            .ok_or_else(|| ApiError::NotFound(format!("no participant {identity:?}")))
    }

    /// Removes the participant with `identity` from `room`: it is told, its socket closed, the
    /// others see it leave. Returns its id.
    pub(crate) fn remove_identity(
        &mut self,
        room: &str,
        identity: &str,
        now: Instant,
    ) -> Result<String, ApiError> {
        let r = self.rooms.get_mut(room).ok_or_else(|| no_room(room))?;
        let id = r.id_of(identity)?;
        let view = r.participant_view(&id);
        let p = r.participants.remove(&id).expect("found by id_of");
        p.out.send(&ServerMessage::Removed {
            reason: RemovedReason::Removed,
            by: Some(SERVER_NAME.into()),
        });
        p.out.close("removed by the server API");
        r.broadcast(
            None,
            &ServerMessage::ParticipantLeft {
                id: id.clone(),
                reason: LeaveReason::Removed,
            },
        );
        if let Some(view) = view {
            events::left(&self.hooks, room, r, &view, Why::Removed);
        }
        r.emptied(now);
        Ok(id)
    }

    /// Mutes (or unmutes) the kind of media of track `sid` of the participant with `identity`
    /// at the server: Sori's server mute covers all of a participant's media of one kind.
    /// Returns the track as it is now, and the participant's media connection to apply it to.
    pub(crate) fn mute_track(
        &mut self,
        room: &str,
        identity: &str,
        sid: &str,
        muted: bool,
    ) -> Result<(TrackView, Option<PeerRef>), ApiError> {
        let r = self.api_room(room)?;
        let id = r.id_of(identity)?;
        let kind = r.participants[&id]
            .published
            .iter()
            .find(|(t, _)| t == sid)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                ApiError::NotFound(format!("{identity:?} publishes no track {sid:?}"))
            })?;
        let mut event = server_event();
        let media = server_mute(r, room, &id, kind == MediaKind::Video, muted, &mut event)
            .map_err(|(_, why)| ApiError::Invalid(why))?;
        r.broadcast(None, &ServerMessage::Moderation(event));
        let track = r
            .participant_view(&id)
            .and_then(|v| v.tracks.into_iter().find(|t| t.sid == sid))
            .expect("the track was found above");
        Ok((track, media))
    }

    /// Changes the participant's name, metadata or chat right; everyone (it too) sees the
    /// change.
    pub(crate) fn update_participant(
        &mut self,
        room: &str,
        identity: &str,
        name: Option<&str>,
        metadata: Option<&str>,
        chat: Option<bool>,
    ) -> Result<ParticipantView, ApiError> {
        let r = self.api_room(room)?;
        let id = r.id_of(identity)?;
        let p = r.participants.get_mut(&id).expect("found by id_of");
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            p.info.name = name.to_string();
        }
        if let Some(m) = metadata {
            p.info.metadata = (!m.is_empty()).then(|| m.to_string());
        }
        if let Some(chat) = chat {
            p.chat = chat;
        }
        let update = ServerMessage::ParticipantUpdated {
            participant: p.info.clone(),
        };
        r.broadcast(None, &update);
        Ok(r.participant_view(&id).expect("still there"))
    }

    /// Sets the room's metadata; everyone in it gets `room-updated`.
    pub(crate) fn update_room_metadata(
        &mut self,
        room: &str,
        metadata: &str,
    ) -> Result<RoomView, ApiError> {
        let r = self.api_room(room)?;
        r.meta.metadata = metadata.to_string();
        r.broadcast(
            None,
            &ServerMessage::RoomUpdated {
                metadata: metadata.to_string(),
            },
        );
        Ok(r.view(room))
    }

    /// Sends application data to the participants with `identities` (everyone if empty) as a
    /// `data` message; `text`, when given, also goes into the room's chat from the server.
    /// Returns how many participants it reached.
    pub(crate) fn send_data(
        &mut self,
        room: &str,
        data: &str,
        topic: Option<&str>,
        identities: &[String],
        text: Option<&str>,
    ) -> Result<usize, ApiError> {
        let r = self.api_room(room)?;
        if let Some(text) = text {
            let text = text.trim();
            if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
                return Err(ApiError::Invalid(
                    "a chat message has 1 to 2000 characters".into(),
                ));
            }
        }
        for identity in identities {
            r.id_of(identity)?;
        }
        let message = ServerMessage::Data {
            from: None,
            topic: topic.map(str::to_string),
            data: data.to_string(),
        };
        let mut reached = 0;
        for p in r.participants.values() {
            if identities.is_empty() || identities.contains(&p.info.identity) {
                p.out.send(&message);
                reached += 1;
            }
        }
        if let Some(text) = text {
            let message = ChatMessage {
                id: r.next_chat_id,
                from: SERVER_ID.into(),
                name: SERVER_NAME.into(),
                text: text.trim().to_string(),
                time: super::unix_ms(),
                re: None,
            };
            r.next_chat_id += 1;
            r.chat.push_back(message.clone());
            while r.chat.len() > CHAT_HISTORY {
                r.chat.pop_front();
            }
            r.broadcast(None, &ServerMessage::Chat(message));
        }
        Ok(reached)
    }

    /// One of the participant's tracks stopped: `track_unpublished`, and the others see its
    /// role go.
    pub(crate) fn unpublished(&mut self, me: &Me, track: &str) {
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        let Some(view) = room.participant_view(&me.id) else {
            return;
        };
        let Some(p) = room.participants.get_mut(&me.id) else {
            return;
        };
        let Some(at) = p.published.iter().position(|(t, _)| t == track) else {
            return;
        };
        p.published.remove(at);
        let gone = ParticipantView {
            tracks: view.tracks.into_iter().filter(|t| t.sid == track).collect(),
            ..view
        };
        events::unpublished(&self.hooks, &me.room, room, &gone);
        let p = room.participants.get_mut(&me.id).expect("looked up above");
        if p.info.tracks.remove(track).is_some() {
            let update = ServerMessage::ParticipantUpdated {
                participant: p.info.clone(),
            };
            room.broadcast(Some(&me.id), &update);
        }
    }

    /// The media server published one of the participant's tracks.
    pub(crate) fn published(&mut self, me: &Me, track: String, kind: MediaKind) {
        let max = self.limits.mlines_per_sdp;
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        let Some(p) = room.participants.get_mut(&me.id) else {
            return;
        };
        if p.published.len() < max && !p.published.iter().any(|(t, _)| *t == track) {
            p.published.push((track.clone(), kind));
            events::published(&self.hooks, &me.room, room, &me.id, &track);
        }
    }
}

/// A moderation event whose actor is the application.
fn server_event() -> Moderation {
    Moderation {
        action: ModerationAction::Lock,
        by: SERVER_ID.into(),
        by_name: SERVER_NAME.into(),
        target: None,
        target_name: None,
    }
}

//! Last-N: each receiver of an SFU room gets video from at most N others — the most relevant
//! ones: those it pinned, then those sharing a screen, then the most recent speakers, then the
//! earliest arrivals. N is the room's (`[rooms] last_n`) unless the receiver asked for its
//! own (`last-n`). The media server pauses the rest for it without renegotiation
//! ([`sori_media::MediaBackend::set_video_set`]) and resumes one at a keyframe when it comes
//! back among the N; the receiver hears which participants it gets (`video-set`). Audio is
//! not limited: every participant's audio still flows (see docs/signaling.md).
//!
//! Sets are worked out at every speaker tick (a change of speaker, a join, a leave, a new
//! track, a request all show there) and only changes go out.

use std::collections::HashMap;
use std::time::Instant;

use sori_media::sori_sfu::TrackId;

use super::{Hub, Me, Participant, Room};
use crate::backend::PeerRef;
use crate::protocol::{parse_track, ErrorCode, RoomMode, ServerMessage, TrackRole};

/// The most participants a `last-n` request may pin.
pub(crate) const MAX_PINNED: usize = 16;

/// A media server's new video set for one receiver (`None`: every video).
#[derive(Debug, PartialEq)]
pub(crate) struct VideoSetUpdate {
    pub peer: PeerRef,
    pub tracks: Option<Vec<TrackId>>,
}

/// What one receiver asked for and was last given.
#[derive(Debug, Default)]
pub(crate) struct ReceiverLastN {
    /// Its own N (`None`: the room's).
    pub n: Option<u32>,
    /// The participants it pinned, first the most relevant.
    pub pinned: Vec<String>,
    /// The video tracks the media server was last told (`None`: every one).
    applied: Option<Vec<TrackId>>,
    /// Whether anything was told yet.
    told: bool,
}

impl ReceiverLastN {
    /// The receiver's media connection is new: its video set is to be told again.
    pub(crate) fn media_changed(&mut self) {
        self.applied = None;
        self.told = false;
    }
}

impl Hub {
    /// The N of rooms whose receivers did not ask for their own (`None`: no limit).
    pub fn set_last_n(&mut self, n: Option<u32>) {
        self.last_n = n;
    }

    /// `me` asks for video from at most `n` others (`None`: the room's setting), `pinned`
    /// first.
    pub(crate) fn request_last_n(
        &mut self,
        me: &Me,
        n: Option<u32>,
        pinned: Vec<String>,
    ) -> Result<(), (ErrorCode, String)> {
        if pinned.len() > MAX_PINNED {
            return Err((
                ErrorCode::BadMessage,
                format!("at most {MAX_PINNED} pinned participants"),
            ));
        }
        let Some(p) = self
            .rooms
            .get_mut(&me.room)
            .and_then(|r| r.participants.get_mut(&me.id))
        else {
            return Ok(());
        };
        p.last_n.n = n;
        p.last_n.pinned = pinned;
        Ok(())
    }

    /// The media servers' video sets that changed since the last call: one per receiver whose
    /// set changed. Called at each speaker tick.
    pub(crate) fn video_set_updates(&mut self) -> Vec<VideoSetUpdate> {
        let default = self.last_n;
        let mut out = Vec::new();
        for room in self.rooms.values_mut() {
            if room.active != RoomMode::Sfu {
                continue;
            }
            room_updates(room, default, &mut out);
        }
        out
    }
}

/// The video sets of `room`'s receivers, where they changed.
fn room_updates(room: &mut Room, default: Option<u32>, out: &mut Vec<VideoSetUpdate>) {
    let limited = room
        .participants
        .values()
        .any(|p| p.last_n.n.or(default).is_some() || p.last_n.applied.is_some());
    if !limited {
        return;
    }
    let order = relevance(room);
    let ids: Vec<String> = room.participants.keys().cloned().collect();
    for id in ids {
        let p = &room.participants[&id];
        let Some(peer) = p.media.clone() else {
            continue;
        };
        let set = p.last_n.n.or(default).map(|n| {
            let mut chosen: Vec<&str> = Vec::new();
            let pinned = p.last_n.pinned.iter().map(String::as_str);
            for other in pinned.chain(order.iter().map(String::as_str)) {
                if chosen.len() >= n as usize {
                    break;
                }
                if other != id && room.participants.contains_key(other) && !chosen.contains(&other)
                {
                    chosen.push(other);
                }
            }
            chosen.into_iter().map(str::to_string).collect::<Vec<_>>()
        });
        let tracks = set.as_ref().map(|ids| {
            let mut t: Vec<TrackId> = ids
                .iter()
                .filter_map(|i| room.participants.get(i))
                .flat_map(video_tracks)
                .collect();
            t.sort_unstable();
            t
        });
        let p = room.participants.get_mut(&id).expect("listed above");
        if p.last_n.told && p.last_n.applied == tracks {
            continue;
        }
        p.last_n.told = true;
        p.last_n.applied = tracks.clone();
        p.out.send(&ServerMessage::VideoSet { ids: set });
        out.push(VideoSetUpdate { peer, tracks });
    }
}

/// The room's participants, most relevant first: screen sharers, then by latest speech, then
/// in the order they came.
fn relevance(room: &Room) -> Vec<String> {
    let spoke: &HashMap<u64, Instant> = &room.speakers.spoke;
    let mut all: Vec<(&String, &Participant)> = room.participants.iter().collect();
    all.sort_by(|(_, a), (_, b)| {
        let screen = |p: &Participant| p.info.tracks.values().any(|r| *r == TrackRole::Screen);
        screen(b)
            .cmp(&screen(a))
            .then_with(|| spoke.get(&b.number).cmp(&spoke.get(&a.number)))
            .then_with(|| a.number.cmp(&b.number))
    });
    all.into_iter().map(|(id, _)| id.clone()).collect()
}

/// A participant's video tracks at the media server.
fn video_tracks(p: &Participant) -> impl Iterator<Item = TrackId> + '_ {
    p.published
        .iter()
        .filter(|(_, kind)| *kind == sori_media::sori_sfu::MediaKind::Video)
        .filter_map(|(t, _)| parse_track(t))
}

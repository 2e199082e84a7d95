//! Who is talking in each SFU room. The media server reports each participant's audio levels
//! (`PeerSignal::AudioLevels`, twenty a second while its audio arrives); they go into the room's
//! [`SpeakerDetector`], which [`Hub::speaker_tick`] runs every [`TICK`]. The participants hear
//! `speakers` when the set of speakers changes (at most every [`SPEAKERS_EVERY`]; while anyone
//! speaks, their levels again every [`LEVELS_EVERY`]) and `dominant-speaker` when the dominant
//! speaker changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sori_media::sori_sfu::speakers::{SpeakerConfig, SpeakerDetector};

use super::{Hub, Me, Room};
use crate::protocol::{RoomMode, ServerMessage, SpeakerLevel};

/// How often the rooms' detectors decide.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// The most often `speakers` goes to a room.
const SPEAKERS_EVERY: Duration = Duration::from_millis(250);
/// How often the levels of people speaking are sent again when the set did not change.
const LEVELS_EVERY: Duration = Duration::from_secs(1);

/// A room's speaker detector and what its participants were last told.
#[derive(Debug)]
pub(crate) struct RoomSpeakers {
    detector: SpeakerDetector<u64>,
    /// When `speakers` was last sent, and whether the set changed since.
    sent_at: Option<Instant>,
    pending: bool,
    /// The speakers last sent (ids), to tell a change of the set.
    last: Vec<u64>,
    /// The dominant speaker's participant id, once someone spoke.
    dominant: Option<String>,
    /// When each participant (by number) was last among the speakers or had the floor.
    pub(crate) spoke: HashMap<u64, Instant>,
}

impl Default for RoomSpeakers {
    fn default() -> Self {
        Self {
            detector: SpeakerDetector::new(SpeakerConfig::default()),
            sent_at: None,
            pending: false,
            last: Vec::new(),
            dominant: None,
            spoke: HashMap::new(),
        }
    }
}

impl RoomSpeakers {
    /// The dominant speaker, for a newcomer.
    pub(crate) fn dominant(&self) -> Option<&str> {
        self.dominant.as_deref()
    }
}

impl Hub {
    /// The media server's audio level report for `me`.
    pub(crate) fn audio_levels(&mut self, me: &Me, sum: u64, packets: u32) {
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        let Some(p) = room.participants.get(&me.id) else {
            return;
        };
        // A moderator's mute: the media server forwards none of it, and it does not speak.
        if p.info.server_muted.audio {
            return;
        }
        let number = p.number;
        room.speakers.detector.observe_sum(number, sum, packets);
    }

    /// Runs every room's detector; call every [`TICK`].
    pub(crate) fn speaker_tick(&mut self, now: Instant) {
        for room in self.rooms.values_mut() {
            if room.active != RoomMode::Sfu || room.participants.is_empty() {
                continue;
            }
            if tick_room(room, now) {
                self.dominant_changes += 1;
            }
        }
    }

    /// How many times a room's dominant speaker changed.
    pub(crate) fn dominant_changes(&self) -> u64 {
        self.dominant_changes
    }
}

/// One tick of `room`'s detector, and the messages it calls for. Returns whether the
/// dominant speaker changed.
fn tick_room(room: &mut Room, now: Instant) -> bool {
    // Participants that left are forgotten (a leaver may hold the floor).
    let present: std::collections::HashSet<u64> =
        room.participants.values().map(|p| p.number).collect();
    room.speakers.detector.retain(|n| present.contains(n));
    room.speakers.spoke.retain(|n, _| present.contains(n));
    if let Some(id) = &room.speakers.dominant {
        if !room.participants.contains_key(id) {
            room.speakers.dominant = None;
        }
    }
    let tick = room.speakers.detector.tick(now);
    for &(n, _) in &tick.speakers {
        room.speakers.spoke.insert(n, now);
    }
    if let Some(n) = tick.dominant {
        room.speakers.spoke.insert(n, now);
    }
    let id_of = |n: u64| {
        room.participants
            .iter()
            .find(|(_, p)| p.number == n)
            .map(|(id, _)| id.clone())
    };
    let ids: Vec<u64> = {
        let mut v: Vec<u64> = tick.speakers.iter().map(|s| s.0).collect();
        v.sort_unstable();
        v
    };
    let s = &mut room.speakers;
    if ids != s.last {
        s.pending = true;
    }
    let due = s.sent_at.is_none_or(|at| now >= at + SPEAKERS_EVERY);
    let refresh = !ids.is_empty() && s.sent_at.is_some_and(|at| now >= at + LEVELS_EVERY);
    let mut messages = Vec::new();
    if due && (s.pending || refresh) {
        s.pending = false;
        s.sent_at = Some(now);
        s.last = ids;
        let speakers = tick
            .speakers
            .iter()
            .filter_map(|&(n, level)| {
                Some(SpeakerLevel {
                    id: id_of(n)?,
                    level: (level * 100.0).round() / 100.0,
                })
            })
            .collect();
        messages.push(ServerMessage::Speakers { speakers });
    }
    let mut changed = false;
    if let Some(id) = tick.dominant.and_then(id_of) {
        room.speakers.dominant = Some(id.clone());
        messages.push(ServerMessage::DominantSpeaker { id });
        changed = true;
    }
    for m in &messages {
        room.broadcast(None, m);
    }
    changed
}

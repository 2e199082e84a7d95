//! What a WHEP viewer of a room is shown: one participant's camera and microphone, either a
//! participant the viewer named or whoever has the floor.

use sori_media::sori_sfu::MediaKind;

use super::{Hub, Participant, Room};
use crate::protocol::{RoomMode, TrackRole};

/// The tracks a viewer is fed (the media server's track names, `track-7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ViewerSources {
    pub video: Option<String>,
    pub audio: Option<String>,
}

/// The participant's camera (a video track that is not a screen share, else any video), and
/// its first audio track.
fn tracks_of(p: &Participant) -> ViewerSources {
    let videos = || {
        p.published
            .iter()
            .filter(|(_, k)| *k == MediaKind::Video)
            .map(|(t, _)| t)
    };
    let camera = videos()
        .find(|t| p.info.tracks.get(*t) != Some(&TrackRole::Screen))
        .or_else(|| videos().next());
    let audio = p
        .published
        .iter()
        .find(|(_, k)| *k == MediaKind::Audio)
        .map(|(t, _)| t);
    ViewerSources {
        video: camera.cloned(),
        audio: audio.cloned(),
    }
}

/// Whether `track` is still published by someone in `room`.
fn still_published(room: &Room, track: &str) -> bool {
    room.participants
        .values()
        .any(|p| p.published.iter().any(|(t, _)| t == track))
}

impl Hub {
    /// The mode `room` was created with (`None`: no such room).
    pub(crate) fn room_mode(&self, room: &str) -> Option<RoomMode> {
        self.rooms.get(room).map(|r| r.mode)
    }

    /// The id of the participant of `room` that `who` names: its identity, its id, or its
    /// display name, tried in that order.
    pub(crate) fn find_participant(&self, room: &str, who: &str) -> Option<String> {
        let room = self.rooms.get(room)?;
        let by = |f: &dyn Fn(&Participant) -> bool| {
            room.participants
                .iter()
                .find(|(_, p)| f(p))
                .map(|(id, _)| id.clone())
        };
        by(&|p| p.info.identity == who)
            .or_else(|| room.participants.contains_key(who).then(|| who.to_string()))
            .or_else(|| by(&|p| p.info.name == who))
    }

    /// What a viewer of `room` gets now, given what it gets (`current`); `None` when the room
    /// is gone, or the participant it follows left.
    ///
    /// Following participant `follow`: that participant's camera and microphone. Following the
    /// room: the dominant speaker's camera and microphone; until someone spoke, or while the
    /// dominant speaker publishes no video (or no audio), what the viewer gets now if it is
    /// still published, else the earliest joined participant's that has it.
    pub(crate) fn viewer_sources(
        &self,
        room: &str,
        follow: Option<&str>,
        current: &ViewerSources,
    ) -> Option<ViewerSources> {
        let room = self.rooms.get(room)?;
        if let Some(id) = follow {
            return room.participants.get(id).map(tracks_of);
        }
        let dominant = room
            .speakers
            .dominant()
            .and_then(|id| room.participants.get(id))
            .map(tracks_of)
            .unwrap_or_default();
        let mut by_age: Vec<&Participant> = room.participants.values().collect();
        by_age.sort_by_key(|p| p.number);
        let pick = |from_dominant: Option<String>,
                    now: &Option<String>,
                    of: fn(&ViewerSources) -> Option<String>| {
            from_dominant
                .or_else(|| now.clone().filter(|t| still_published(room, t)))
                .or_else(|| by_age.iter().find_map(|p| of(&tracks_of(p))))
        };
        Some(ViewerSources {
            video: pick(dominant.video, &current.video, |s| s.video.clone()),
            audio: pick(dominant.audio, &current.audio, |s| s.audio.clone()),
        })
    }
}

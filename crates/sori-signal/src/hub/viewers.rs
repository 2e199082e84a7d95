//! What a WHEP viewer of a room is shown: one participant's camera and microphone, either a
//! participant the viewer named or whoever has the floor.

use sori_media::sori_sfu::MediaKind;

use super::{Hub, Participant, Room};
use crate::protocol::{RoomMode, TrackRole};

/// The tracks a viewer is fed (the media server's track names, `track-7`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
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
    /// is gone.
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
            // Gone (for now): nothing until someone answering to the name is back.
            return Some(room.participants.get(id).map(tracks_of).unwrap_or_default());
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::auth::Grants;
    use crate::hub::{JoinOutcome, Joining, Me, SPEAKER_TICK};
    use crate::outbox::Outbox;
    use crate::protocol::LeaveReason;

    fn join(hub: &mut Hub, name: &str, tracks: &[(&str, MediaKind)]) -> Me {
        let grants = Grants::anonymous();
        let j = Joining {
            room: "r",
            name,
            mode: RoomMode::Sfu,
            grants: &grants,
            out: Outbox::detached(),
            resume: None,
            ingress: false,
        };
        let JoinOutcome::Joined(me) = hub.join(j, |_| Vec::new()) else {
            panic!("refused");
        };
        for (track, kind) in tracks {
            hub.published(&me, track.to_string(), *kind);
        }
        me
    }

    fn sources(video: &str, audio: &str) -> ViewerSources {
        ViewerSources {
            video: Some(video.into()),
            audio: Some(audio.into()),
        }
    }

    #[test]
    fn a_room_viewer_gets_the_first_publisher_then_whoever_takes_the_floor() {
        let mut hub = Hub::default();
        let (v, a) = (MediaKind::Video, MediaKind::Audio);
        let encoder = join(&mut hub, "Encoder", &[("track-1", v), ("track-2", a)]);
        let bo = join(&mut hub, "Bo", &[("track-3", v), ("track-4", a)]);
        let _listener = join(&mut hub, "Cy", &[]);
        let none = ViewerSources::default();

        // Nobody spoke: the earliest joined.
        let first = hub.viewer_sources("r", None, &none).unwrap();
        assert_eq!(first, sources("track-1", "track-2"));

        // Bo speaks for half a second: he has the floor, and the viewer follows.
        let mut t = Instant::now();
        for _ in 0..10 {
            t += SPEAKER_TICK;
            hub.audio_levels(&bo, 5 * 97, 5);
            hub.audio_levels(&encoder, 0, 5);
            hub.speaker_tick(t);
        }
        let floor = hub.viewer_sources("r", None, &first).unwrap();
        assert_eq!(floor, sources("track-3", "track-4"));

        // A viewer that named the encoder stays on it.
        let named = hub.find_participant("r", "Encoder").unwrap();
        assert_eq!(named, encoder.id);
        assert_eq!(
            hub.find_participant("r", &encoder.id),
            Some(encoder.id.clone())
        );
        assert_eq!(hub.find_participant("r", "Nobody"), None);
        assert_eq!(
            hub.viewer_sources("r", Some(&named), &floor),
            Some(sources("track-1", "track-2"))
        );

        // Bo leaves with the floor: his tracks are gone, the earliest publisher comes back.
        hub.leave(&bo, LeaveReason::Left, t);
        assert_eq!(
            hub.viewer_sources("r", None, &floor),
            Some(sources("track-1", "track-2"))
        );
        // A named participant who left: nothing (until someone of that name is back).
        assert_eq!(
            hub.viewer_sources("r", Some(&bo.id), &floor),
            Some(ViewerSources::default())
        );
        assert_eq!(hub.viewer_sources("elsewhere", None, &none), None);
    }

    #[test]
    fn a_dominant_speaker_without_a_camera_leaves_the_picture_where_it_was() {
        let mut hub = Hub::default();
        let (v, a) = (MediaKind::Video, MediaKind::Audio);
        let _ann = join(&mut hub, "Ann", &[("track-1", v), ("track-2", a)]);
        let cy = join(&mut hub, "Cy", &[("track-5", a)]);
        let mut t = Instant::now();
        for _ in 0..10 {
            t += SPEAKER_TICK;
            hub.audio_levels(&cy, 5 * 97, 5);
            hub.speaker_tick(t);
        }
        // Cy's voice, Ann's picture.
        let now = sources("track-1", "track-2");
        assert_eq!(
            hub.viewer_sources("r", None, &now),
            Some(sources("track-1", "track-5"))
        );
    }
}

//! Rooms and participants: who is where, in which mode, with which rights, the chat history,
//! and what moderators did. Every method runs under the hub's lock and only queues messages;
//! none waits on anything.

mod admin;
mod events;
mod last_n;
mod membership;
mod moderation;
mod relay;
mod snapshot;
mod speakers;
mod viewers;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::Grants;
use crate::backend::PeerRef;
use crate::limits::Limits;
use crate::outbox::{frame, Outbox};
use crate::protocol::{
    ChatMessage, ErrorCode, ParticipantInfo, RoomMode, ServerMessage, ServerMuted, TrackRole,
};
use crate::roles::Publications;

pub(crate) use admin::{ApiError, NewRoom, ParticipantView, RoomView, TrackView, SERVER_ID};
pub(crate) use moderation::Moderate;
pub(crate) use snapshot::RoomSnapshot;
pub(crate) use speakers::TICK as SPEAKER_TICK;
pub(crate) use viewers::ViewerSources;

/// How long rooms stay open without anyone in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomTimeouts {
    /// A room created by the server API that nobody joined ends after this.
    pub empty: Duration,
    /// A room ends this long after its last participant left.
    pub departure: Duration,
}

impl Default for RoomTimeouts {
    fn default() -> Self {
        Self {
            empty: Duration::from_secs(300),
            departure: Duration::from_secs(20),
        }
    }
}

/// A participant's handle on its own membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Me {
    pub room: String,
    pub id: String,
}

/// What became of a join.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    Joined(Me),
    /// Refused with this code and text; nothing changed.
    Refused(ErrorCode, String),
}

/// A join as the connection asks for it.
pub(crate) struct Joining<'a> {
    pub room: &'a str,
    /// The name the client asked for; a token's name wins over it.
    pub name: &'a str,
    /// The mode of the room if it is new.
    pub mode: RoomMode,
    pub grants: &'a Grants,
    pub out: Outbox,
    /// The secret a new socket may present to take the participant back.
    pub resume: Option<String>,
    /// An encoder publishing over WHIP.
    pub ingress: bool,
}

struct Participant {
    /// The number in its id (`p7`: 7), its key in the room's speaker detector.
    number: u64,
    info: ParticipantInfo,
    out: Outbox,
    media: Option<PeerRef>,
    publications: Publications,
    /// When it joined, in Unix milliseconds.
    joined_ms: u64,
    /// The tracks the media server published for it, in order (SFU rooms).
    published: Vec<(String, sori_media::sori_sfu::MediaKind)>,
    /// It may chat (its token's `canPublishData`, or what the server API set since).
    chat: bool,
    /// Its token lets it publish something, and receive.
    publish: bool,
    subscribe: bool,
    /// What it asked of last-N, and the video set it was given.
    last_n: last_n::ReceiverLastN,
    /// What another session server needs to take it over: the key of its resume secret
    /// (none: it cannot resume) and its grants.
    resume_key: Option<String>,
    grants: Grants,
}

/// What the server API knows of a room besides its members.
#[derive(Debug, Clone)]
struct RoomMeta {
    /// A server-unique id (`RM_…`).
    sid: String,
    /// When it was created, in Unix milliseconds.
    created_ms: u64,
    /// Application data, as it is.
    metadata: String,
    timeouts: RoomTimeouts,
    /// The most participants it takes (0: the server's limit).
    max_participants: u32,
}

impl RoomMeta {
    fn new(timeouts: RoomTimeouts) -> Self {
        let created_ms = unix_ms();
        let sid = sori_turn::credentials::random_secret()
            .map(|s| {
                s.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(12)
                    .collect()
            })
            .unwrap_or_else(|_| format!("{created_ms:x}"));
        Self {
            sid: format!("RM_{sid}"),
            created_ms,
            metadata: String::new(),
            timeouts,
            max_participants: 0,
        }
    }
}

struct Room {
    meta: RoomMeta,
    /// When the room ends if nobody joins before (`None` while anyone is in it).
    ends_at: Option<Instant>,
    /// What the room was created as.
    mode: RoomMode,
    /// How media flows now: `Sfu` or `P2p`.
    active: RoomMode,
    participants: BTreeMap<String, Participant>,
    chat: VecDeque<ChatMessage>,
    next_chat_id: u64,
    /// New participants are refused (`room-locked`).
    locked: bool,
    /// Identities removed with a ban, refused until the room ends.
    banned: HashSet<String>,
    /// Who is talking (SFU rooms).
    speakers: speakers::RoomSpeakers,
}

impl Room {
    /// An empty room of `mode` (an auto room starts peer-to-peer).
    fn new(meta: RoomMeta, mode: RoomMode, ends_at: Option<Instant>) -> Self {
        Room {
            meta,
            ends_at,
            mode,
            active: if mode == RoomMode::Sfu {
                RoomMode::Sfu
            } else {
                RoomMode::P2p
            },
            participants: BTreeMap::new(),
            chat: VecDeque::new(),
            next_chat_id: 1,
            locked: false,
            banned: HashSet::new(),
            speakers: speakers::RoomSpeakers::default(),
        }
    }

    /// Starts the departure timeout if nobody is left.
    fn emptied(&mut self, now: Instant) {
        if self.participants.is_empty() && self.ends_at.is_none() {
            self.ends_at = Some(now + self.meta.timeouts.departure);
        }
    }

    fn broadcast(&self, except: Option<&str>, message: &ServerMessage) {
        let f = frame(message);
        for (id, p) in &self.participants {
            if Some(id.as_str()) != except {
                p.out.push(f.clone());
            }
        }
    }

    fn by_identity(&self, identity: &str) -> Option<&str> {
        self.participants
            .iter()
            .find(|(_, p)| p.info.identity == identity)
            .map(|(id, _)| id.as_str())
    }

    /// Moves an auto room from peer-to-peer to the media server.
    fn move_to_sfu(&mut self, room_name: &str, why: &str) {
        if self.mode == RoomMode::Auto && self.active == RoomMode::P2p {
            self.active = RoomMode::Sfu;
            tracing::info!(room = room_name, "{why}: the room moves to the SFU");
            self.broadcast(
                None,
                &ServerMessage::Mode {
                    mode: RoomMode::Sfu,
                },
            );
        }
    }
}

/// Now, in Unix milliseconds (0 on a clock before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// All rooms of the session server.
#[derive(Default)]
pub struct Hub {
    rooms: HashMap<String, Room>,
    next_id: u64,
    limits: Limits,
    timeouts: RoomTimeouts,
    /// Where the hub's webhook events go.
    hooks: crate::webhooks::Webhooks,
    /// How many times a room's dominant speaker changed.
    dominant_changes: u64,
    /// Rooms' last-N (`None`: every receiver gets every video unless it asks otherwise).
    last_n: Option<u32>,
}

impl Hub {
    /// A hub with these limits, ending empty rooms after `timeouts`.
    pub fn new(limits: Limits, timeouts: RoomTimeouts) -> Self {
        Self {
            limits,
            timeouts,
            ..Self::default()
        }
    }

    /// Sends the hub's events to these webhooks from now on.
    pub(crate) fn set_hooks(&mut self, hooks: crate::webhooks::Webhooks) {
        self.hooks = hooks;
    }

    /// Rooms with at least one participant.
    pub fn rooms(&self) -> usize {
        self.rooms
            .values()
            .filter(|r| !r.participants.is_empty())
            .count()
    }

    /// Whether room `name` is open here.
    pub(crate) fn has_room(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
    }

    /// The names of the rooms open here.
    pub(crate) fn room_names(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// Ends the rooms that stayed empty past their timeout; returns their names.
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<String> {
        let ended: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.ends_at.is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &ended {
            tracing::info!(room = name, "room ended: nobody in it");
            if let Some(room) = self.rooms.remove(name) {
                events::room(&self.hooks, "room_finished", name, &room);
            }
        }
        ended
    }

    /// When the next empty room ends, if any.
    #[cfg(test)]
    pub(crate) fn next_end(&self) -> Option<Instant> {
        self.rooms.values().filter_map(|r| r.ends_at).min()
    }

    /// Participants in all rooms.
    pub fn participants(&self) -> usize {
        self.rooms.values().map(|r| r.participants.len()).sum()
    }

    /// Every participant's outbox, for telling everyone something at once (a shutdown).
    pub(crate) fn outboxes(&self) -> Vec<Outbox> {
        self.rooms
            .values()
            .flat_map(|r| r.participants.values().map(|p| p.out.clone()))
            .collect()
    }

    /// Whether anyone is in `room`.
    pub(crate) fn is_occupied(&self, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| !r.participants.is_empty())
    }

    /// The participant's display name.
    pub(crate) fn name_of(&self, me: &Me) -> Option<String> {
        let room = self.rooms.get(&me.room)?;
        room.participants.get(&me.id).map(|p| p.info.name.clone())
    }

    /// Whether `room` sends media through the media server (`None`: no such room).
    pub(crate) fn room_uses_sfu(&self, room: &str) -> Option<bool> {
        self.rooms.get(room).map(|r| r.active == RoomMode::Sfu)
    }

    pub(crate) fn uses_sfu(&self, me: &Me) -> bool {
        self.rooms
            .get(&me.room)
            .is_some_and(|r| r.active == RoomMode::Sfu)
    }

    pub(crate) fn mute(&mut self, me: &Me, audio: bool, video: bool) {
        self.update(me, |info| {
            info.audio_muted = audio;
            info.video_muted = video;
        });
    }

    /// Notes the participant's media connection; returns the server mutes to apply to it.
    pub(crate) fn set_media(&mut self, me: &Me, media_id: String, peer: PeerRef) -> ServerMuted {
        let mut muted = ServerMuted::default();
        if let Some(p) = self
            .rooms
            .get_mut(&me.room)
            .and_then(|r| r.participants.get_mut(&me.id))
        {
            p.media = Some(peer);
            // A new media connection starts with every video: its set is told anew.
            p.last_n.media_changed();
            muted = p.info.server_muted;
        }
        self.update(me, |info| info.media_id = Some(media_id));
        muted
    }

    /// Notes the roles of the participant's offer to the media server; a `fresh` offer starts
    /// a new media connection, whose tracks are all new.
    pub(crate) fn offered(
        &mut self,
        me: &Me,
        sdp: &str,
        roles: Option<&BTreeMap<String, TrackRole>>,
        fresh: bool,
    ) {
        let max = self.limits.mlines_per_sdp;
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        if fresh {
            // A new media connection: the old one's tracks are gone.
            if let Some(view) = room.participant_view(&me.id) {
                events::unpublished(&self.hooks, &me.room, room, &view);
            }
        }
        let Some(p) = room.participants.get_mut(&me.id) else {
            return;
        };
        if fresh {
            p.publications = Publications::default();
            p.info.tracks.clear();
            p.published.clear();
        }
        p.publications.offered(sdp, roles, max);
    }

    /// The media server published one of the participant's video tracks: the others learn
    /// its role, which is returned (`None`: the participant is gone).
    pub(crate) fn published_video(&mut self, me: &Me, track: String) -> Option<TrackRole> {
        let p = self
            .rooms
            .get_mut(&me.room)
            .and_then(|r| r.participants.get_mut(&me.id))?;
        let role = p.publications.published_video();
        self.update(me, |info| {
            info.tracks.insert(track, role);
        });
        Some(role)
    }

    fn update(&mut self, me: &Me, f: impl FnOnce(&mut ParticipantInfo)) {
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        let Some(p) = room.participants.get_mut(&me.id) else {
            return;
        };
        f(&mut p.info);
        let message = ServerMessage::ParticipantUpdated {
            participant: p.info.clone(),
        };
        room.broadcast(Some(&me.id), &message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Sources;
    use crate::outbox::Out;
    use crate::protocol::LeaveReason;
    use tokio::sync::mpsc::Receiver;

    type Rx = Receiver<Out>;

    fn drain(rx: &mut Rx) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| serde_json::from_str(&f.frame).unwrap())
            .collect()
    }

    fn token_grants(identity: &str, admin: bool) -> Grants {
        Grants {
            identity: Some(identity.into()),
            room: Some("r".into()),
            admin,
            ..Grants::anonymous()
        }
    }

    fn join_as(
        hub: &mut Hub,
        room: &str,
        name: &str,
        mode: RoomMode,
        g: &Grants,
    ) -> (Option<Me>, Rx) {
        let (out, rx) = Outbox::new(1000);
        let j = Joining {
            room,
            name,
            mode,
            grants: g,
            out,
            resume: None,
            ingress: false,
        };
        match hub.join(j, |_| Vec::new()) {
            JoinOutcome::Joined(me) => (Some(me), rx),
            JoinOutcome::Refused(..) => (None, rx),
        }
    }

    fn join(hub: &mut Hub, room: &str, name: &str, mode: RoomMode) -> (Option<Me>, Rx) {
        join_as(hub, room, name, mode, &Grants::anonymous())
    }

    fn refusal(hub: &mut Hub, room: &str, g: &Grants) -> ErrorCode {
        let (out, _rx) = Outbox::new(10);
        let j = Joining {
            room,
            name: "x",
            mode: RoomMode::Sfu,
            grants: g,
            out,
            resume: None,
            ingress: false,
        };
        match hub.join(j, |_| Vec::new()) {
            JoinOutcome::Refused(code, _) => code,
            JoinOutcome::Joined(_) => panic!("joined"),
        }
    }

    #[test]
    fn p2p_rooms_take_two() {
        let mut hub = Hub::default();
        let (a, _ra) = join(&mut hub, "r", "A", RoomMode::P2p);
        let (b, _rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        let (c, _rc) = join(&mut hub, "r", "C", RoomMode::P2p);
        assert!(a.is_some() && b.is_some() && c.is_none());
        assert_eq!(hub.participants(), 2);
    }

    #[test]
    fn auto_rooms_move_to_the_sfu_on_the_third() {
        let mut hub = Hub::default();
        let (a, mut ra) = join(&mut hub, "r", "A", RoomMode::Auto);
        let (_b, mut rb) = join(&mut hub, "r", "B", RoomMode::Auto);
        assert!(!hub.uses_sfu(a.as_ref().unwrap()));
        drain(&mut ra);
        drain(&mut rb);
        let (_c, mut rc) = join(&mut hub, "r", "C", RoomMode::Auto);
        assert!(hub.uses_sfu(a.as_ref().unwrap()));
        for rx in [&mut ra, &mut rb] {
            assert_eq!(
                drain(rx)[0],
                serde_json::json!({"type": "mode", "mode": "sfu"})
            );
        }
        let joined = &drain(&mut rc)[0];
        assert_eq!(joined["mode"], "sfu");
        assert_eq!(joined["participants"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn chat_is_ordered_capped_and_replayed() {
        let mut hub = Hub::default();
        let (a, mut ra) = join(&mut hub, "r", "A", RoomMode::Sfu);
        let a = a.unwrap();
        for i in 0..105 {
            hub.chat(&a, &format!("m{i}"), Some(i + 2)).unwrap();
        }
        assert!(hub.chat(&a, "  ", None).is_err());
        assert!(hub.chat(&a, &"x".repeat(2001), None).is_err());
        let got: Vec<u64> = drain(&mut ra)
            .into_iter()
            .filter(|m| m["type"] == "chat")
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, (1..=105).collect::<Vec<_>>());
        let (_b, mut rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        let joined = &drain(&mut rb)[0];
        let chat = joined["chat"].as_array().unwrap();
        assert_eq!(chat.len(), 100);
        assert_eq!(chat[0]["text"], "m5");
    }

    #[test]
    fn leaving_empties_the_room_and_tells_the_others() {
        let mut hub = Hub::default();
        let t0 = Instant::now();
        let (a, _ra) = join(&mut hub, "r", "A", RoomMode::Sfu);
        let (b, mut rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        drain(&mut rb);
        hub.leave(a.as_ref().unwrap(), LeaveReason::Left, t0);
        assert_eq!(
            drain(&mut rb),
            vec![
                serde_json::json!({"type": "participant-left", "id": a.unwrap().id, "reason": "left"})
            ]
        );
        hub.leave(b.as_ref().unwrap(), LeaveReason::Left, t0);
        assert_eq!(hub.rooms(), 0);
        assert!(!hub.is_occupied("r"));
        // The empty room ends after the departure timeout, not before.
        let departure = RoomTimeouts::default().departure;
        assert_eq!(hub.next_end(), Some(t0 + departure));
        assert!(hub
            .sweep(t0 + departure - Duration::from_millis(1))
            .is_empty());
        assert_eq!(hub.sweep(t0 + departure), vec!["r".to_string()]);
        assert_eq!(hub.next_end(), None);
    }

    #[test]
    fn speakers_and_the_dominant_speaker_follow_the_levels_and_a_newcomer_hears_who_has_the_floor()
    {
        let mut hub = Hub::default();
        let t0 = Instant::now();
        let (a, mut ra) = join(&mut hub, "r", "A", RoomMode::Sfu);
        let (b, mut rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        let (a, b) = (a.unwrap(), b.unwrap());
        drain(&mut ra);
        drain(&mut rb);
        // Five packets per report, ten reports a second: A speaks (-30 dBov) for 2 s, then B.
        let speech = 5 * (127 - 30);
        let mut t = t0;
        let mut run = |hub: &mut Hub, who: &Me, silent: &Me, ticks: u32| {
            for _ in 0..ticks {
                t += SPEAKER_TICK;
                hub.audio_levels(who, speech, 5);
                hub.audio_levels(silent, 0, 5);
                hub.speaker_tick(t);
            }
        };
        run(&mut hub, &a, &b, 20);
        let got = drain(&mut rb);
        let dominant: Vec<&serde_json::Value> = got
            .iter()
            .filter(|m| m["type"] == "dominant-speaker")
            .collect();
        assert_eq!(dominant.len(), 1, "{got:?}");
        assert_eq!(dominant[0]["id"], a.id.as_str());
        let speakers: Vec<&serde_json::Value> =
            got.iter().filter(|m| m["type"] == "speakers").collect();
        assert!(
            !speakers.is_empty() && speakers.len() <= 2 * 4 + 1,
            "{speakers:?}"
        );
        assert_eq!(speakers[0]["speakers"][0]["id"], a.id.as_str());
        assert!(speakers[0]["speakers"][0]["level"].as_f64().unwrap() > 0.0);
        drain(&mut ra);
        run(&mut hub, &b, &a, 20);
        let got = drain(&mut ra);
        let dominant: Vec<&serde_json::Value> = got
            .iter()
            .filter(|m| m["type"] == "dominant-speaker")
            .collect();
        assert_eq!(dominant.len(), 1, "{got:?}");
        assert_eq!(dominant[0]["id"], b.id.as_str());
        assert_eq!(hub.dominant_changes(), 2);
        // A newcomer hears who has the floor right after `joined`.
        let (_c, mut rc) = join(&mut hub, "r", "C", RoomMode::Sfu);
        let got = drain(&mut rc);
        assert_eq!(got[0]["type"], "joined");
        assert_eq!(
            got[1],
            serde_json::json!({"type": "dominant-speaker", "id": b.id})
        );
        // The speaker leaves: the floor is free; nobody speaking sends an empty `speakers`.
        hub.leave(&b, LeaveReason::Left, t);
        for _ in 0..10 {
            t += SPEAKER_TICK;
            hub.speaker_tick(t);
        }
        let got = drain(&mut ra);
        let last = got.iter().rev().find(|m| m["type"] == "speakers").unwrap();
        assert_eq!(last["speakers"], serde_json::json!([]));
    }

    #[test]
    fn last_n_gives_each_receiver_the_pinned_the_screen_and_the_latest_speakers() {
        use sori_media::sori_sfu::{MediaKind, PeerId, TrackId};
        let mut hub = Hub::default();
        hub.set_last_n(Some(2));
        let mut t = Instant::now();
        let mut me = Vec::new();
        let mut rx = Vec::new();
        // Five participants, each with a camera `track-(10 + i)` at the media server.
        for (i, name) in ["R", "A", "B", "C", "D"].iter().enumerate() {
            let (m, r) = join(&mut hub, "r", name, RoomMode::Sfu);
            let m = m.unwrap();
            hub.set_media(&m, format!("m{i}"), PeerRef::Local(PeerId(100 + i as u64)));
            hub.published(&m, TrackId(10 + i as u64).to_string(), MediaKind::Video);
            me.push(m);
            rx.push(r);
        }
        let set_of = |updates: &[last_n::VideoSetUpdate], i: u64| {
            updates
                .iter()
                .find(|u| u.peer == PeerRef::Local(PeerId(100 + i)))
                .map(|u| u.tracks.clone())
        };
        // Nobody spoke yet: the first two others to come.
        let u = hub.video_set_updates();
        assert_eq!(u.len(), 5, "everyone is told once");
        assert_eq!(set_of(&u, 0), Some(Some(vec![TrackId(11), TrackId(12)])));
        assert_eq!(set_of(&u, 1), Some(Some(vec![TrackId(10), TrackId(12)])));
        assert!(hub.video_set_updates().is_empty(), "nothing changed");
        let told = drain(&mut rx[0]);
        let video_set = told.iter().find(|m| m["type"] == "video-set").unwrap();
        assert_eq!(video_set["ids"], serde_json::json!([me[1].id, me[2].id]));

        // D speaks: D comes in for everyone but D, B goes out at R.
        for _ in 0..10 {
            t += SPEAKER_TICK;
            hub.audio_levels(&me[4], 5 * 97, 5);
            hub.speaker_tick(t);
        }
        let u = hub.video_set_updates();
        assert_eq!(set_of(&u, 0), Some(Some(vec![TrackId(11), TrackId(14)])));
        assert_eq!(set_of(&u, 4), None, "D's own set did not change");

        // R pins C: C first, then D.
        hub.request_last_n(&me[0], None, vec![me[3].id.clone()])
            .unwrap();
        let u = hub.video_set_updates();
        assert_eq!(u.len(), 1);
        assert_eq!(set_of(&u, 0), Some(Some(vec![TrackId(13), TrackId(14)])));

        // R asks for no limit of its own... the room's 2 still holds with `n: null`; a large
        // N gives everyone, and a request beyond the pin limit is refused.
        hub.request_last_n(&me[0], Some(10), vec![]).unwrap();
        let u = hub.video_set_updates();
        assert_eq!(
            set_of(&u, 0),
            Some(Some((11..15).map(TrackId).collect::<Vec<_>>()))
        );
        let too_many = vec!["x".to_string(); last_n::MAX_PINNED + 1];
        assert!(hub.request_last_n(&me[0], Some(1), too_many).is_err());

        // A leaves: its track leaves the sets that had it.
        hub.leave(&me[1], LeaveReason::Left, t);
        let u = hub.video_set_updates();
        assert_eq!(
            set_of(&u, 0),
            Some(Some(vec![TrackId(12), TrackId(13), TrackId(14)]))
        );
        // R's media connects anew (a new peer at the media server): its set goes to the new one.
        hub.set_media(&me[0], "m9".into(), PeerRef::Local(PeerId(109)));
        let u = hub.video_set_updates();
        assert_eq!(
            set_of(&u, 9),
            Some(Some(vec![TrackId(12), TrackId(13), TrackId(14)]))
        );
    }

    #[test]
    fn joining_an_emptied_room_keeps_it() {
        let mut hub = Hub::default();
        let t0 = Instant::now();
        let (a, _ra) = join(&mut hub, "r", "A", RoomMode::Sfu);
        hub.leave(a.as_ref().unwrap(), LeaveReason::Left, t0);
        let (b, _rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        assert!(b.is_some());
        assert!(hub.sweep(t0 + Duration::from_secs(3600)).is_empty());
        assert!(hub.is_occupied("r"));
    }

    #[test]
    fn a_second_socket_with_one_identity_replaces_the_first() {
        let mut hub = Hub::default();
        let ada = token_grants("ada", false);
        let (old, mut r_old) = join_as(&mut hub, "r", "Ada", RoomMode::Sfu, &ada);
        let (_bo, mut r_bo) = join_as(
            &mut hub,
            "r",
            "Bo",
            RoomMode::Sfu,
            &token_grants("bo", false),
        );
        drain(&mut r_old);
        drain(&mut r_bo);
        let (new, _r_new) = join_as(&mut hub, "r", "Ada", RoomMode::Sfu, &ada);
        let (old, new) = (old.unwrap(), new.unwrap());
        assert_ne!(old.id, new.id);
        assert!(!hub.is_member(&old) && hub.is_member(&new));
        assert_eq!(drain(&mut r_old)[0]["code"], "replaced");
        let seen: Vec<_> = drain(&mut r_bo)
            .into_iter()
            .map(|m| m["type"].clone())
            .collect();
        assert_eq!(seen, ["participant-left", "participant-joined"]);
        assert_eq!(hub.participants(), 2);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut hub = Hub::new(
            Limits {
                participants_per_room: 2,
                rooms: 2,
                ..Limits::default()
            },
            RoomTimeouts::default(),
        );
        let admin = token_grants("ad", true);
        let (ad, mut r_ad) = join_as(&mut hub, "r", "Ad", RoomMode::Sfu, &admin);
        let ad = ad.unwrap();
        let (bo, _r_bo) = join_as(
            &mut hub,
            "r",
            "Bo",
            RoomMode::Sfu,
            &token_grants("bo", false),
        );
        assert_eq!(
            refusal(&mut hub, "r", &token_grants("cy", false)),
            ErrorCode::RoomFull
        );
        let (_x, _rx) = join(&mut hub, "other", "X", RoomMode::Sfu);
        assert_eq!(
            refusal(&mut hub, "third", &Grants::anonymous()),
            ErrorCode::ServerFull
        );
        assert_eq!(hub.rooms(), 2);
        // Ban Bo, lock the room: Bo may not come back, a newcomer may not come in.
        let remove = Moderate::Remove {
            id: bo.clone().unwrap().id,
            ban: true,
        };
        hub.moderate(&ad, &remove).unwrap();
        assert_eq!(
            refusal(&mut hub, "r", &token_grants("bo", false)),
            ErrorCode::Banned
        );
        hub.moderate(&ad, &Moderate::Lock { locked: true }).unwrap();
        assert_eq!(
            refusal(&mut hub, "r", &token_grants("cy", false)),
            ErrorCode::RoomLocked
        );
        let events: Vec<_> = drain(&mut r_ad)
            .into_iter()
            .filter(|m| m["type"] == "moderation")
            .map(|m| m["action"].clone())
            .collect();
        assert_eq!(events, ["ban", "lock"]);
        assert_eq!(hub.participants(), 2);
    }

    #[test]
    fn a_join_hears_the_first_refusal_that_applies() {
        let mut hub = Hub::new(
            Limits {
                participants_per_room: 2,
                ..Limits::default()
            },
            RoomTimeouts::default(),
        );
        let admin = token_grants("ad", true);
        let (ad, _r_ad) = join_as(&mut hub, "r", "Ad", RoomMode::Sfu, &admin);
        let ad = ad.unwrap();
        let (bo, _r_bo) = join_as(
            &mut hub,
            "r",
            "Bo",
            RoomMode::Sfu,
            &token_grants("bo", false),
        );
        let remove = Moderate::Remove {
            id: bo.unwrap().id,
            ban: true,
        };
        hub.moderate(&ad, &remove).unwrap();
        let (_cy, _r_cy) = join_as(
            &mut hub,
            "r",
            "Cy",
            RoomMode::Sfu,
            &token_grants("cy", false),
        );
        hub.moderate(&ad, &Moderate::Lock { locked: true }).unwrap();
        // The room is banned to Bo, locked and full: a ban comes before the lock, the lock
        // before the places.
        assert_eq!(
            refusal(&mut hub, "r", &token_grants("bo", false)),
            ErrorCode::Banned
        );
        assert_eq!(
            refusal(&mut hub, "r", &token_grants("dee", false)),
            ErrorCode::RoomLocked
        );
        // A second admin passes the lock and meets the full room.
        assert_eq!(
            refusal(&mut hub, "r", &token_grants("ed", true)),
            ErrorCode::RoomFull
        );
        // One already in comes back through the lock and the full room, replacing itself.
        let (again, _r_again) = join_as(
            &mut hub,
            "r",
            "Cy",
            RoomMode::Sfu,
            &token_grants("cy", false),
        );
        assert!(again.is_some());
        assert_eq!(hub.participants(), 2);
    }

    #[test]
    fn only_admins_moderate_and_server_mutes_are_shown_to_all() {
        let mut hub = Hub::default();
        let (ad, _r_ad) = join_as(
            &mut hub,
            "r",
            "Ada",
            RoomMode::Sfu,
            &token_grants("ad", true),
        );
        let (bo, mut r_bo) = join_as(
            &mut hub,
            "r",
            "Bo",
            RoomMode::Sfu,
            &token_grants("bo", false),
        );
        let (ad, bo) = (ad.unwrap(), bo.unwrap());
        let mute = Moderate::Mute {
            id: ad.id.clone(),
            video: false,
            muted: true,
        };
        assert_eq!(
            hub.moderate(&bo, &mute).unwrap_err().0,
            ErrorCode::Forbidden
        );
        drain(&mut r_bo);
        let mute = Moderate::Mute {
            id: bo.id.clone(),
            video: false,
            muted: true,
        };
        hub.moderate(&ad, &mute).unwrap();
        let seen = drain(&mut r_bo);
        assert_eq!(seen[0]["type"], "participant-updated");
        assert_eq!(seen[0]["participant"]["server_muted"]["audio"], true);
        assert_eq!(seen[1]["action"], "mute-audio");
        assert_eq!(seen[1]["by_name"], "Ada");
        assert_eq!(seen[1]["target_name"], "Bo");
        // Its next media connection is muted from the start.
        let muted = hub.set_media(&bo, "s".into(), PeerRef::Remote("e".into()));
        assert!(muted.audio && !muted.video);
    }

    #[test]
    fn ending_the_room_removes_everyone() {
        let mut hub = Hub::default();
        let (ad, mut r_ad) = join_as(
            &mut hub,
            "r",
            "Ada",
            RoomMode::Sfu,
            &token_grants("ad", true),
        );
        let (_bo, mut r_bo) = join_as(
            &mut hub,
            "r",
            "Bo",
            RoomMode::Sfu,
            &token_grants("bo", false),
        );
        hub.moderate(&ad.unwrap(), &Moderate::End).unwrap();
        assert_eq!(hub.rooms(), 0);
        for rx in [&mut r_ad, &mut r_bo] {
            let last = drain(rx).pop().unwrap();
            assert_eq!(last["type"], "removed");
            assert_eq!(last["reason"], "room-ended");
        }
    }

    #[test]
    fn restricted_participants_keep_out_of_p2p_and_move_auto_rooms() {
        let mut hub = Hub::default();
        let listener = Grants {
            publish: Sources::NONE,
            ..token_grants("li", false)
        };
        let (out, _rx) = Outbox::new(10);
        let j = Joining {
            room: "p",
            name: "L",
            mode: RoomMode::P2p,
            grants: &listener,
            out,
            resume: None,
            ingress: false,
        };
        assert!(matches!(
            hub.join(j, |_| Vec::new()),
            JoinOutcome::Refused(ErrorCode::Forbidden, _)
        ));
        assert_eq!(hub.rooms(), 0);
        let (a, _ra) = join(&mut hub, "auto", "A", RoomMode::Auto);
        assert!(!hub.uses_sfu(a.as_ref().unwrap()));
        let (_l, _rl) = join_as(&mut hub, "auto", "L", RoomMode::Auto, &listener);
        assert!(hub.uses_sfu(a.as_ref().unwrap()));
    }
}

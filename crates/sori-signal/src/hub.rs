//! Rooms and participants: who is where, in which mode, with which rights, the chat history,
//! and what moderators did. Every method runs under the hub's lock and only queues messages;
//! none waits on anything.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{Grants, Sources};
use crate::backend::PeerRef;
use crate::limits::Limits;
use crate::outbox::{frame, Outbox};
use crate::protocol::{
    ChatMessage, ErrorCode, IceServer, Moderation, ModerationAction, ParticipantInfo, Permissions,
    RemovedReason, RoomMode, ServerMessage, ServerMuted, TrackRole, CHAT_HISTORY, MAX_CHAT_CHARS,
};
use crate::roles::Publications;

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
}

struct Participant {
    info: ParticipantInfo,
    out: Outbox,
    media: Option<PeerRef>,
    publications: Publications,
}

struct Room {
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
}

impl Room {
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

/// All rooms of the session server.
#[derive(Default)]
pub struct Hub {
    rooms: HashMap<String, Room>,
    next_id: u64,
    limits: Limits,
}

fn refuse(code: ErrorCode, text: impl Into<String>) -> JoinOutcome {
    JoinOutcome::Refused(code, text.into())
}

/// Whether grants limit media in a way only the media server can enforce.
fn restricts_media(g: &Grants) -> bool {
    g.publish != Sources::ALL || !g.subscribe
}

impl Hub {
    /// A hub with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Rooms with at least one participant.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Participants in all rooms.
    pub fn participants(&self) -> usize {
        self.rooms.values().map(|r| r.participants.len()).sum()
    }

    pub(crate) fn join(
        &mut self,
        j: Joining<'_>,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) -> JoinOutcome {
        let room_name = j.room;
        let identity = j.grants.identity.as_deref();
        let mode = self.rooms.get(room_name).map_or(j.mode, |r| r.mode);
        if mode == RoomMode::P2p && restricts_media(j.grants) {
            return refuse(
                ErrorCode::Forbidden,
                "your token limits what you may send or receive, which a peer-to-peer room cannot enforce",
            );
        }
        if let Some(room) = self.rooms.get(room_name) {
            if identity.is_some_and(|i| room.banned.contains(i)) {
                return refuse(
                    ErrorCode::Banned,
                    "you were removed from this room and may not join it again",
                );
            }
            let returning = identity.is_some_and(|i| room.by_identity(i).is_some());
            if room.locked && !returning && !j.grants.admin {
                return refuse(ErrorCode::RoomLocked, "the room is locked");
            }
            let staying = room.participants.len() - usize::from(returning);
            if room.mode == RoomMode::P2p && staying >= 2 {
                return refuse(
                    ErrorCode::RoomFull,
                    format!("room {room_name:?} is a two-person peer-to-peer room and both places are taken"),
                );
            }
            if staying >= self.limits.participants_per_room {
                return refuse(
                    ErrorCode::RoomFull,
                    format!(
                        "room {room_name:?} has {} participants, the most it may have",
                        self.limits.participants_per_room
                    ),
                );
            }
        } else {
            if self.rooms.len() >= self.limits.rooms {
                return refuse(
                    ErrorCode::ServerFull,
                    format!(
                        "this server has {} rooms, the most it may have",
                        self.limits.rooms
                    ),
                );
            }
        }
        // Admitted. A second socket with the same identity replaces the first.
        let room = self
            .rooms
            .entry(room_name.to_string())
            .or_insert_with(|| Room {
                mode: j.mode,
                active: if j.mode == RoomMode::Sfu {
                    RoomMode::Sfu
                } else {
                    RoomMode::P2p
                },
                participants: BTreeMap::new(),
                chat: VecDeque::new(),
                next_chat_id: 1,
                locked: false,
                banned: HashSet::new(),
            });
        if let Some(old) = identity
            .and_then(|i| room.by_identity(i))
            .map(str::to_string)
        {
            if let Some(p) = room.participants.remove(&old) {
                p.out.send(&ServerMessage::Error {
                    code: ErrorCode::Replaced,
                    message: "you joined this room again from somewhere else".into(),
                });
                p.out
                    .close("replaced by a newer connection with the same identity");
            }
            room.broadcast(None, &ServerMessage::ParticipantLeft { id: old });
        }
        if room.mode == RoomMode::Auto && room.participants.len() >= 2 {
            room.move_to_sfu(room_name, "third participant");
        }
        if restricts_media(j.grants) {
            room.move_to_sfu(
                room_name,
                "a participant whose media the server must enforce",
            );
        }
        self.next_id += 1;
        let id = format!("p{}", self.next_id);
        let info = ParticipantInfo {
            id: id.clone(),
            identity: identity.map_or_else(|| id.clone(), str::to_string),
            name: j.grants.name.clone().unwrap_or_else(|| j.name.to_string()),
            metadata: j.grants.metadata.clone(),
            admin: j.grants.admin,
            audio_muted: false,
            video_muted: false,
            server_muted: ServerMuted::default(),
            media_id: None,
            tracks: BTreeMap::new(),
        };
        j.out.send(&ServerMessage::Joined {
            v: crate::protocol::PROTOCOL_VERSION,
            id: id.clone(),
            identity: info.identity.clone(),
            name: info.name.clone(),
            room: room_name.to_string(),
            mode: room.active,
            locked: room.locked,
            permissions: Permissions::from(j.grants, room_name),
            participants: room.participants.values().map(|p| p.info.clone()).collect(),
            ice_servers: ice_servers(&id),
            chat: room.chat.iter().cloned().collect(),
        });
        room.broadcast(
            None,
            &ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        room.participants.insert(
            id.clone(),
            Participant {
                info,
                out: j.out,
                media: None,
                publications: Publications::default(),
            },
        );
        JoinOutcome::Joined(Me {
            room: room_name.to_string(),
            id,
        })
    }

    pub(crate) fn leave(&mut self, me: &Me) {
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        if room.participants.remove(&me.id).is_none() {
            return;
        }
        room.broadcast(None, &ServerMessage::ParticipantLeft { id: me.id.clone() });
        if room.participants.is_empty() {
            self.rooms.remove(&me.room);
        }
    }

    /// Whether `me` is still in its room (a moderator or a newer socket may have removed it).
    pub(crate) fn is_member(&self, me: &Me) -> bool {
        self.rooms
            .get(&me.room)
            .is_some_and(|r| r.participants.contains_key(&me.id))
    }

    /// Sends `message` to everyone in `room`.
    pub(crate) fn broadcast(&self, room: &str, message: &ServerMessage) {
        if let Some(r) = self.rooms.get(room) {
            r.broadcast(None, message);
        }
    }

    /// Whether anyone is in `room`.
    pub(crate) fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The participant's display name.
    pub(crate) fn name_of(&self, me: &Me) -> Option<String> {
        let room = self.rooms.get(&me.room)?;
        room.participants.get(&me.id).map(|p| p.info.name.clone())
    }

    pub(crate) fn uses_sfu(&self, me: &Me) -> bool {
        self.rooms
            .get(&me.room)
            .is_some_and(|r| r.active == RoomMode::Sfu)
    }

    /// Passes a P2P message to `to`, stamped with the sender's id.
    pub(crate) fn relay(
        &self,
        me: &Me,
        to: &str,
        make: impl FnOnce(String) -> ServerMessage,
    ) -> Result<(), String> {
        let room = self.rooms.get(&me.room).ok_or("not in a room")?;
        if room.active != RoomMode::P2p {
            return Err("this room uses the media server: send offers without \"to\"".into());
        }
        let target = room
            .participants
            .get(to)
            .filter(|_| to != me.id)
            .ok_or_else(|| format!("no participant {to:?} in this room"))?;
        target.out.send(&make(me.id.clone()));
        Ok(())
    }

    pub(crate) fn chat(&mut self, me: &Me, text: &str) -> Result<(), &'static str> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
            return Err("a chat message has 1 to 2000 characters");
        }
        let room = self.rooms.get_mut(&me.room).ok_or("not in a room")?;
        let name = room
            .participants
            .get(&me.id)
            .map(|p| p.info.name.clone())
            .ok_or("not in a room")?;
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let message = ChatMessage {
            id: room.next_chat_id,
            from: me.id.clone(),
            name,
            text: text.to_string(),
            time,
        };
        room.next_chat_id += 1;
        room.chat.push_back(message.clone());
        while room.chat.len() > CHAT_HISTORY {
            room.chat.pop_front();
        }
        room.broadcast(None, &ServerMessage::Chat(message));
        Ok(())
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
        let Some(p) = self
            .rooms
            .get_mut(&me.room)
            .and_then(|r| r.participants.get_mut(&me.id))
        else {
            return;
        };
        if fresh {
            p.publications = Publications::default();
            p.info.tracks.clear();
        }
        p.publications.offered(sdp, roles, max);
    }

    /// The media server published one of the participant's video tracks: the others learn
    /// its role.
    pub(crate) fn published_video(&mut self, me: &Me, track: String) {
        let Some(p) = self
            .rooms
            .get_mut(&me.room)
            .and_then(|r| r.participants.get_mut(&me.id))
        else {
            return;
        };
        let role = p.publications.published_video();
        self.update(me, |info| {
            info.tracks.insert(track, role);
        });
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

    /// A moderator's action, checked and applied to the room. Returns the media connection of
    /// the participant a mute applies to (the caller tells the media server), if it has one.
    pub(crate) fn moderate(
        &mut self,
        me: &Me,
        action: &Moderate,
    ) -> Result<Option<PeerRef>, (ErrorCode, String)> {
        let room = self
            .rooms
            .get_mut(&me.room)
            .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
        let by = room
            .participants
            .get(&me.id)
            .filter(|p| p.info.admin)
            .map(|p| p.info.name.clone())
            .ok_or((
                ErrorCode::Forbidden,
                "moderation needs an access token with roomAdmin".to_string(),
            ))?;
        let target_of = |room: &Room, id: &str| {
            room.participants
                .get(id)
                .map(|p| p.info.name.clone())
                .ok_or((
                    ErrorCode::BadTarget,
                    format!("no participant {id:?} in this room"),
                ))
        };
        let mut event = Moderation {
            action: ModerationAction::Lock,
            by: me.id.clone(),
            by_name: by.clone(),
            target: None,
            target_name: None,
        };
        let mut media = None;
        match action {
            Moderate::Mute { id, video, muted } => {
                let target_name = target_of(room, id)?;
                if room.mode == RoomMode::P2p {
                    return Err((
                        ErrorCode::BadTarget,
                        "in a peer-to-peer room media bypasses the server, which cannot mute it"
                            .into(),
                    ));
                }
                room.move_to_sfu(&me.room, "a server mute");
                let p = room.participants.get_mut(id).expect("checked by target_of");
                let slot = if *video {
                    &mut p.info.server_muted.video
                } else {
                    &mut p.info.server_muted.audio
                };
                *slot = *muted;
                media = p.media.clone();
                let update = ServerMessage::ParticipantUpdated {
                    participant: p.info.clone(),
                };
                room.broadcast(None, &update);
                event.action = match (video, muted) {
                    (false, true) => ModerationAction::MuteAudio,
                    (false, false) => ModerationAction::UnmuteAudio,
                    (true, true) => ModerationAction::MuteVideo,
                    (true, false) => ModerationAction::UnmuteVideo,
                };
                event.target = Some(id.clone());
                event.target_name = Some(target_name);
            }
            Moderate::Remove { id, ban } => {
                let target_name = target_of(room, id)?;
                let p = room.participants.remove(id).expect("checked by target_of");
                if *ban {
                    room.banned.insert(p.info.identity.clone());
                }
                p.out.send(&ServerMessage::Removed {
                    reason: if *ban {
                        RemovedReason::Banned
                    } else {
                        RemovedReason::Removed
                    },
                    by: Some(by.clone()),
                });
                p.out.close(format!("removed by moderator {}", me.id));
                room.broadcast(None, &ServerMessage::ParticipantLeft { id: id.clone() });
                event.action = if *ban {
                    ModerationAction::Ban
                } else {
                    ModerationAction::Remove
                };
                event.target = Some(id.clone());
                event.target_name = Some(target_name);
            }
            Moderate::Lock { locked } => {
                room.locked = *locked;
                event.action = if *locked {
                    ModerationAction::Lock
                } else {
                    ModerationAction::Unlock
                };
            }
            Moderate::End => {
                let room = self.rooms.remove(&me.room).expect("looked up above");
                let gone = ServerMessage::Removed {
                    reason: RemovedReason::RoomEnded,
                    by: Some(by),
                };
                for p in room.participants.values() {
                    p.out.send(&gone);
                    p.out.close(format!("room ended by moderator {}", me.id));
                }
                return Ok(None);
            }
        }
        room.broadcast(None, &ServerMessage::Moderation(event));
        Ok(media)
    }
}

/// What a moderator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Moderate {
    Mute {
        id: String,
        video: bool,
        muted: bool,
    },
    Remove {
        id: String,
        ban: bool,
    },
    Lock {
        locked: bool,
    },
    End,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Frame;
    use tokio::sync::mpsc::Receiver;

    type Rx = Receiver<Frame>;

    fn drain(rx: &mut Rx) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| serde_json::from_str(&f).unwrap())
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
        let (out, rx, _) = Outbox::new(1000);
        let j = Joining {
            room,
            name,
            mode,
            grants: g,
            out,
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
        let (out, _rx, _) = Outbox::new(10);
        let j = Joining {
            room,
            name: "x",
            mode: RoomMode::Sfu,
            grants: g,
            out,
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
            hub.chat(&a, &format!("m{i}")).unwrap();
        }
        assert!(hub.chat(&a, "  ").is_err());
        assert!(hub.chat(&a, &"x".repeat(2001)).is_err());
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
        let (a, _ra) = join(&mut hub, "r", "A", RoomMode::Sfu);
        let (b, mut rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        drain(&mut rb);
        hub.leave(a.as_ref().unwrap());
        assert_eq!(
            drain(&mut rb),
            vec![serde_json::json!({"type": "participant-left", "id": a.unwrap().id})]
        );
        hub.leave(b.as_ref().unwrap());
        assert_eq!(hub.rooms(), 0);
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
        let mut hub = Hub::new(Limits {
            participants_per_room: 2,
            rooms: 2,
            ..Limits::default()
        });
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
        let (out, _rx, _) = Outbox::new(10);
        let j = Joining {
            room: "p",
            name: "L",
            mode: RoomMode::P2p,
            grants: &listener,
            out,
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

//! Who is in which room: admission (the caps on rooms and participants, bans, the lock, the
//! rights a peer-to-peer room cannot enforce), identity replacement, and leaving.

use std::collections::BTreeMap;
use std::time::Instant;

use super::events::{self, Why};
use super::{Hub, JoinOutcome, Joining, Me, Participant, Room, RoomMeta};
use crate::auth::{Grants, Sources};
use crate::protocol::{
    ErrorCode, IceServer, LeaveReason, ParticipantInfo, Permissions, RoomMode, ServerMessage,
    ServerMuted,
};
use crate::roles::Publications;

fn refuse(code: ErrorCode, text: impl Into<String>) -> Result<(), JoinOutcome> {
    Err(JoinOutcome::Refused(code, text.into()))
}

/// Whether grants limit media in a way only the media server can enforce.
fn restricts_media(g: &Grants) -> bool {
    g.publish != Sources::ALL || !g.subscribe
}

impl Hub {
    pub(crate) fn join(
        &mut self,
        j: Joining<'_>,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) -> JoinOutcome {
        let room_name = j.room;
        let identity = j.grants.identity.as_deref();
        if let Err(refused) = self.admit(&j) {
            return refused;
        }
        // Admitted. A second socket with the same identity replaces the first.
        let timeouts = self.timeouts;
        let created = !self.rooms.contains_key(room_name);
        let room = self
            .rooms
            .entry(room_name.to_string())
            .or_insert_with(|| Room::new(RoomMeta::new(timeouts), j.mode, None));
        if created {
            events::room(&self.hooks, "room_started", room_name, room);
        }
        if let Some(old) = identity
            .and_then(|i| room.by_identity(i))
            .map(str::to_string)
        {
            let view = room.participant_view(&old);
            if let Some(p) = room.participants.remove(&old) {
                p.out.send(&ServerMessage::Error {
                    code: ErrorCode::Replaced,
                    message: "you joined this room again from somewhere else".into(),
                    re: None,
                });
                p.out
                    .close("replaced by a newer connection with the same identity");
            }
            room.broadcast(
                None,
                &ServerMessage::ParticipantLeft {
                    id: old,
                    reason: LeaveReason::Replaced,
                },
            );
            if let Some(view) = view {
                events::left(&self.hooks, room_name, room, &view, Why::Replaced);
            }
        }
        room.ends_at = None;
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
        let resume_key = j.resume.as_deref().map(crate::sessions::secret_key);
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
            ingress: j.ingress,
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
            resume: j.resume,
        });
        // Who has the floor, for a newcomer's speaker layout.
        if let Some(id) = room.speakers.dominant() {
            j.out
                .send(&ServerMessage::DominantSpeaker { id: id.to_string() });
        }
        room.broadcast(
            None,
            &ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        room.participants.insert(
            id.clone(),
            Participant {
                number: self.next_id,
                info,
                out: j.out,
                media: None,
                publications: Publications::default(),
                joined_ms: super::unix_ms(),
                published: Vec::new(),
                chat: j.grants.chat,
                publish: j.grants.publish != Sources::NONE,
                subscribe: j.grants.subscribe,
                last_n: Default::default(),
                resume_key: resume_key.filter(|_| !j.ingress),
                grants: j.grants.clone(),
            },
        );
        events::joined(&self.hooks, room_name, room, &id);
        JoinOutcome::Joined(Me {
            room: room_name.to_string(),
            id,
        })
    }

    /// Whether `j` may join, checked in this order: rights a peer-to-peer room cannot enforce,
    /// a ban, the lock, the room's places, the server's rooms.
    pub(crate) fn admit(&self, j: &Joining<'_>) -> Result<(), JoinOutcome> {
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
            let most = room.meta.max_participants as usize;
            if most > 0 && staying >= most {
                return refuse(
                    ErrorCode::RoomFull,
                    format!("room {room_name:?} has {most} participants, the most it takes"),
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
        Ok(())
    }

    /// The participant left (at `now`); its room ends after its departure timeout if it was
    /// the last one.
    pub(crate) fn leave(&mut self, me: &Me, reason: LeaveReason, now: Instant) {
        let Some(room) = self.rooms.get_mut(&me.room) else {
            return;
        };
        let view = room.participant_view(&me.id);
        if room.participants.remove(&me.id).is_none() {
            return;
        }
        room.broadcast(
            None,
            &ServerMessage::ParticipantLeft {
                id: me.id.clone(),
                reason,
            },
        );
        if let Some(view) = view {
            let why = match reason {
                LeaveReason::Left => Why::Left,
                LeaveReason::Timeout => Why::TimedOut,
                LeaveReason::Replaced => Why::Replaced,
                LeaveReason::Removed => Why::Removed,
            };
            events::left(&self.hooks, &me.room, room, &view, why);
        }
        room.emptied(now);
    }

    /// Whether `me` is still in its room (a moderator or a newer socket may have removed it).
    pub(crate) fn is_member(&self, me: &Me) -> bool {
        self.rooms
            .get(&me.room)
            .is_some_and(|r| r.participants.contains_key(&me.id))
    }
}

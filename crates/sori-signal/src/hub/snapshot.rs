//! A room as another session server needs it to take the room over when the server it lives
//! on dies (see [`crate::bus`]): its settings, lock, bans and chat, and each participant that
//! can resume (its id, name, grants and the key of its resume secret — never the secret).
//! Media is not in it: a participant taken over connects its media anew.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{last_n, Hub, Me, Participant, Room, RoomMeta, RoomTimeouts};
use crate::auth::{Grants, Sources};
use crate::outbox::Outbox;
use crate::protocol::{ChatMessage, ParticipantInfo, RoomMode};
use crate::roles::Publications;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RoomSnapshot {
    mode: RoomMode,
    active: RoomMode,
    locked: bool,
    banned: Vec<String>,
    chat: Vec<ChatMessage>,
    next_chat_id: u64,
    sid: String,
    created_ms: u64,
    metadata: String,
    empty_timeout_ms: u64,
    departure_timeout_ms: u64,
    max_participants: u32,
    participants: Vec<ParticipantSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ParticipantSnapshot {
    number: u64,
    info: ParticipantInfo,
    joined_ms: u64,
    chat: bool,
    resume_key: String,
    grants: Grants,
    /// The last client message number processed.
    received: u64,
}

/// A participant restored from a snapshot, waiting for its resume.
pub(crate) struct Restored {
    pub me: Me,
    pub resume_key: String,
    pub grants: Grants,
    pub out: Outbox,
}

impl Hub {
    /// Room `name` as another session server would restore it (`None`: no such room).
    pub(crate) fn snapshot(&self, name: &str) -> Option<RoomSnapshot> {
        let room = self.rooms.get(name)?;
        let mut banned: Vec<String> = room.banned.iter().cloned().collect();
        banned.sort();
        Some(RoomSnapshot {
            mode: room.mode,
            active: room.active,
            locked: room.locked,
            banned,
            chat: room.chat.iter().cloned().collect(),
            next_chat_id: room.next_chat_id,
            sid: room.meta.sid.clone(),
            created_ms: room.meta.created_ms,
            metadata: room.meta.metadata.clone(),
            empty_timeout_ms: room.meta.timeouts.empty.as_millis() as u64,
            departure_timeout_ms: room.meta.timeouts.departure.as_millis() as u64,
            max_participants: room.meta.max_participants,
            participants: room
                .participants
                .values()
                .filter_map(|p| {
                    Some(ParticipantSnapshot {
                        number: p.number,
                        info: p.info.clone(),
                        joined_ms: p.joined_ms,
                        chat: p.chat,
                        resume_key: p.resume_key.clone()?,
                        grants: p.grants.clone(),
                        received: p.out.received(),
                    })
                })
                .collect(),
        })
    }

    /// Opens room `name` as `snapshot` says, its participants without a socket (each waits
    /// for its resume); nothing when the room is open here already.
    pub(crate) fn restore(
        &mut self,
        name: &str,
        snapshot: RoomSnapshot,
        now: Instant,
    ) -> Vec<Restored> {
        // A room nobody can come back to (it emptied, or no one could resume) is not restored:
        // it starts anew.
        if self.rooms.contains_key(name) || snapshot.participants.is_empty() {
            return Vec::new();
        }
        let s = snapshot;
        let meta = RoomMeta {
            sid: s.sid,
            created_ms: s.created_ms,
            metadata: s.metadata,
            timeouts: RoomTimeouts {
                empty: Duration::from_millis(s.empty_timeout_ms),
                departure: Duration::from_millis(s.departure_timeout_ms),
            },
            max_participants: s.max_participants,
        };
        let mut room = Room::new(meta, s.mode, None);
        room.active = s.active;
        room.locked = s.locked;
        room.banned = s.banned.into_iter().collect();
        room.chat = VecDeque::from(s.chat);
        room.next_chat_id = s.next_chat_id;
        let mut restored = Vec::new();
        for p in s.participants {
            self.next_id = self.next_id.max(p.number);
            let mut info = p.info;
            // Its media is connected anew, with new ids.
            info.media_id = None;
            info.tracks = BTreeMap::new();
            let out = Outbox::restored(p.received);
            let me = Me {
                room: name.to_string(),
                id: info.id.clone(),
            };
            room.participants.insert(
                info.id.clone(),
                Participant {
                    number: p.number,
                    info,
                    out: out.clone(),
                    media: None,
                    publications: Publications::default(),
                    joined_ms: p.joined_ms,
                    published: Vec::new(),
                    chat: p.chat,
                    publish: p.grants.publish != Sources::NONE,
                    subscribe: p.grants.subscribe,
                    last_n: last_n::ReceiverLastN::default(),
                    resume_key: Some(p.resume_key.clone()),
                    grants: p.grants.clone(),
                },
            );
            restored.push(Restored {
                me,
                resume_key: p.resume_key,
                grants: p.grants,
                out,
            });
        }
        room.emptied(now);
        self.rooms.insert(name.to_string(), room);
        restored
    }

    /// How media flows in `room` now (`None`: no such room).
    pub(crate) fn active_mode(&self, room: &str) -> Option<RoomMode> {
        self.rooms.get(room).map(|r| r.active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{JoinOutcome, Joining};
    use crate::limits::Limits;

    fn join(hub: &mut Hub, room: &str, name: &str, secret: Option<&str>) -> (Me, Outbox) {
        let (out, _rx) = Outbox::new(64);
        out.start_numbering();
        let grants = Grants::anonymous();
        let outcome = hub.join(
            Joining {
                room,
                name,
                mode: RoomMode::Sfu,
                grants: &grants,
                out: out.clone(),
                resume: secret.map(str::to_string),
                ingress: false,
            },
            |_| Vec::new(),
        );
        match outcome {
            JoinOutcome::Joined(me) => (me, out),
            JoinOutcome::Refused(c, m) => panic!("{c:?} {m}"),
        }
    }

    #[test]
    fn a_room_restored_from_its_snapshot_is_the_room_it_was() {
        let now = Instant::now();
        let mut a = Hub::new(Limits::default(), RoomTimeouts::default());
        let (ada, ada_out) = join(&mut a, "r", "Ada", Some("secret-ada"));
        let (bo, _) = join(&mut a, "r", "Bo", Some("secret-bo"));
        // Without a secret (resuming off): not taken over.
        join(&mut a, "r", "Cy", None);
        a.chat(&ada, "hello", Some(11)).unwrap();
        a.chat(&bo, "hi", Some(4)).unwrap();
        ada_out.set_received(12);
        let snap = a.snapshot("r").unwrap();
        // What goes over the wire comes back the same.
        let json = serde_json::to_vec(&snap).unwrap();
        let back: RoomSnapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, snap);
        assert!(
            !String::from_utf8(json).unwrap().contains("secret-ada"),
            "a snapshot holds no secret"
        );

        let mut b = Hub::new(Limits::default(), RoomTimeouts::default());
        let restored = b.restore("r", back, now);
        let ids: Vec<&str> = restored.iter().map(|r| r.me.id.as_str()).collect();
        assert_eq!(ids, [ada.id.as_str(), bo.id.as_str()]);
        assert_eq!(
            restored[0].resume_key,
            crate::sessions::secret_key("secret-ada")
        );
        assert_eq!(restored[0].out.received(), 12);
        // The same room again: chat, ids, and a newcomer numbered after them.
        let again = b.snapshot("r").unwrap();
        assert_eq!(again.chat, snap.chat);
        // Each chat keeps its sender's number, by which a client knows one sent again.
        let senders: Vec<_> = again.chat.iter().map(|c| (&c.from, c.re)).collect();
        assert_eq!(senders, [(&ada.id, Some(11)), (&bo.id, Some(4))]);
        assert_eq!(again.sid, snap.sid);
        let (dee, _) = join(&mut b, "r", "Dee", Some("secret-dee"));
        assert!(![&ada.id, &bo.id].contains(&&dee.id), "{dee:?}");
        // Restoring twice does nothing.
        assert!(b.restore("r", snap.clone(), now).is_empty());
        // A room whose last snapshot has nobody in it starts anew.
        let mut c = Hub::new(Limits::default(), RoomTimeouts::default());
        let empty = RoomSnapshot {
            participants: Vec::new(),
            ..snap
        };
        assert!(c.restore("r", empty, now).is_empty());
        assert!(!c.has_room("r"));
    }
}

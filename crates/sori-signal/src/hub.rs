//! Rooms and participants: who is where, in which mode, and the chat history. Every method
//! runs under the hub's lock and only queues messages; none waits on anything.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;

use crate::protocol::{
    ChatMessage, IceServer, ParticipantInfo, RoomMode, ServerMessage, CHAT_HISTORY, MAX_CHAT_CHARS,
};

/// A participant's handle on its own membership.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub room: String,
    pub id: String,
}

pub(crate) enum JoinOutcome {
    Joined(Me),
    Full,
}

struct Participant {
    info: ParticipantInfo,
    out: UnboundedSender<ServerMessage>,
}

struct Room {
    /// What the room was created as.
    mode: RoomMode,
    /// How media flows now: `Sfu` or `P2p`.
    active: RoomMode,
    participants: BTreeMap<String, Participant>,
    chat: VecDeque<ChatMessage>,
    next_chat_id: u64,
}

impl Room {
    fn broadcast(&self, except: Option<&str>, message: &ServerMessage) {
        for (id, p) in &self.participants {
            if Some(id.as_str()) != except {
                let _ = p.out.send(message.clone());
            }
        }
    }
}

/// All rooms of the session server.
#[derive(Default)]
pub struct Hub {
    rooms: HashMap<String, Room>,
    next_id: u64,
}

impl Hub {
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
        room_name: &str,
        name: &str,
        mode: RoomMode,
        out: UnboundedSender<ServerMessage>,
        ice_servers: impl FnOnce(&str) -> Vec<IceServer>,
    ) -> JoinOutcome {
        let room = self
            .rooms
            .entry(room_name.to_string())
            .or_insert_with(|| Room {
                mode,
                active: if mode == RoomMode::Sfu {
                    RoomMode::Sfu
                } else {
                    RoomMode::P2p
                },
                participants: BTreeMap::new(),
                chat: VecDeque::new(),
                next_chat_id: 1,
            });
        if room.mode == RoomMode::P2p && room.participants.len() >= 2 {
            return JoinOutcome::Full;
        }
        if room.mode == RoomMode::Auto
            && room.active == RoomMode::P2p
            && room.participants.len() >= 2
        {
            room.active = RoomMode::Sfu;
            tracing::info!(
                room = room_name,
                "third participant: the room moves to the SFU"
            );
            room.broadcast(
                None,
                &ServerMessage::Mode {
                    mode: RoomMode::Sfu,
                },
            );
        }
        self.next_id += 1;
        let id = format!("p{}", self.next_id);
        let info = ParticipantInfo {
            id: id.clone(),
            name: name.to_string(),
            audio_muted: false,
            video_muted: false,
            media_id: None,
        };
        let _ = out.send(ServerMessage::Joined {
            v: crate::protocol::PROTOCOL_VERSION,
            id: id.clone(),
            room: room_name.to_string(),
            mode: room.active,
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
        room.participants
            .insert(id.clone(), Participant { info, out });
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
        let _ = target.out.send(make(me.id.clone()));
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

    pub(crate) fn set_media_id(&mut self, me: &Me, media_id: Option<String>) {
        self.update(me, |info| info.media_id = media_id);
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
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    fn drain(rx: &mut UnboundedReceiver<ServerMessage>) -> Vec<ServerMessage> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn join(
        hub: &mut Hub,
        room: &str,
        name: &str,
        mode: RoomMode,
    ) -> (Option<Me>, UnboundedReceiver<ServerMessage>) {
        let (tx, rx) = unbounded_channel();
        match hub.join(room, name, mode, tx, |_| Vec::new()) {
            JoinOutcome::Joined(me) => (Some(me), rx),
            JoinOutcome::Full => (None, rx),
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
                ServerMessage::Mode {
                    mode: RoomMode::Sfu
                }
            );
        }
        assert!(
            matches!(&drain(&mut rc)[0], ServerMessage::Joined { mode: RoomMode::Sfu, participants, .. } if participants.len() == 2)
        );
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
            .filter_map(|m| {
                if let ServerMessage::Chat(c) = m {
                    Some(c.id)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(got, (1..=105).collect::<Vec<_>>());
        let (_b, mut rb) = join(&mut hub, "r", "B", RoomMode::Sfu);
        let ServerMessage::Joined { chat, .. } = &drain(&mut rb)[0] else {
            panic!("joined first")
        };
        assert_eq!(chat.len(), 100);
        assert_eq!(chat[0].text, "m5");
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
            vec![ServerMessage::ParticipantLeft { id: a.unwrap().id }]
        );
        hub.leave(b.as_ref().unwrap());
        assert_eq!(hub.rooms(), 0);
    }
}

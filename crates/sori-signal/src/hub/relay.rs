//! What participants send each other through the hub: relayed P2P messages, chat, and
//! messages for a whole room.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Hub, Me};
use crate::protocol::{
    ChatMessage, ErrorCode, RoomMode, ServerMessage, CHAT_HISTORY, MAX_CHAT_CHARS,
};

impl Hub {
    /// Sends `message` to everyone in `room`.
    pub(crate) fn broadcast(&self, room: &str, message: &ServerMessage) {
        if let Some(r) = self.rooms.get(room) {
            r.broadcast(None, message);
        }
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

    /// A chat message from `me`, its client's message number `re`; refused with the code and
    /// text to answer it with.
    pub(crate) fn chat(
        &mut self,
        me: &Me,
        text: &str,
        re: Option<u64>,
    ) -> Result<(), (ErrorCode, &'static str)> {
        let bad = |why| (ErrorCode::BadChat, why);
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
            return Err(bad("a chat message has 1 to 2000 characters"));
        }
        let room = self.rooms.get_mut(&me.room).ok_or(bad("not in a room"))?;
        let p = room.participants.get(&me.id).ok_or(bad("not in a room"))?;
        if !p.chat {
            return Err((
                ErrorCode::Forbidden,
                "the server took away your right to chat in this room",
            ));
        }
        let name = p.info.name.clone();
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
            re,
        };
        room.next_chat_id += 1;
        room.chat.push_back(message.clone());
        while room.chat.len() > CHAT_HISTORY {
            room.chat.pop_front();
        }
        room.broadcast(None, &ServerMessage::Chat(message));
        Ok(())
    }
}

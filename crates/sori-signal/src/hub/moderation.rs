//! What moderators do to a room: server mutes, removals and bans, the lock, ending it.

use super::events::{self, Why};
use super::{Hub, Me, Room};
use crate::backend::PeerRef;
use crate::protocol::{
    ErrorCode, LeaveReason, Moderation, ModerationAction, RemovedReason, RoomMode, ServerMessage,
};

impl Hub {
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
                media = server_mute(room, &me.room, id, *video, *muted, &mut event)?;
            }
            Moderate::Remove { id, ban } => {
                let target_name = target_of(room, id)?;
                let view = room.participant_view(id);
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
                room.broadcast(
                    None,
                    &ServerMessage::ParticipantLeft {
                        id: id.clone(),
                        reason: LeaveReason::Removed,
                    },
                );
                event.action = if *ban {
                    ModerationAction::Ban
                } else {
                    ModerationAction::Remove
                };
                event.target = Some(id.clone());
                event.target_name = Some(target_name);
                if let Some(view) = view {
                    events::left(&self.hooks, &me.room, room, &view, Why::Removed);
                }
                room.emptied(std::time::Instant::now());
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
                events::ended(&self.hooks, &me.room, room);
                return Ok(None);
            }
        }
        room.broadcast(None, &ServerMessage::Moderation(event));
        Ok(media)
    }
}

/// The name of participant `id` of `room`, or why a moderator cannot act on it.
fn target_of(room: &Room, id: &str) -> Result<String, (ErrorCode, String)> {
    room.participants
        .get(id)
        .map(|p| p.info.name.clone())
        .ok_or((
            ErrorCode::BadTarget,
            format!("no participant {id:?} in this room"),
        ))
}

/// A server mute of participant `id`: shown to everyone, and noted for its next media
/// connection. Returns its media connection now, if it has one.
pub(super) fn server_mute(
    room: &mut Room,
    room_name: &str,
    id: &str,
    video: bool,
    muted: bool,
    event: &mut Moderation,
) -> Result<Option<PeerRef>, (ErrorCode, String)> {
    let target_name = target_of(room, id)?;
    if room.mode == RoomMode::P2p {
        return Err((
            ErrorCode::BadTarget,
            "in a peer-to-peer room media bypasses the server, which cannot mute it".into(),
        ));
    }
    room.move_to_sfu(room_name, "a server mute");
    let p = room.participants.get_mut(id).expect("checked by target_of");
    let slot = if video {
        &mut p.info.server_muted.video
    } else {
        &mut p.info.server_muted.audio
    };
    *slot = muted;
    let media = p.media.clone();
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
    event.target = Some(id.to_string());
    event.target_name = Some(target_name);
    Ok(media)
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

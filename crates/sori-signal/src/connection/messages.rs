//! A joined participant's messages: P2P relays, chat, mutes, recording and moderation; SDP
//! for the media server goes on to [`super::media`].

use std::collections::BTreeMap;

use sori_media::sori_sfu::MediaKind;

use super::{Budget, Connection};
use crate::hub::{Me, Moderate};
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, TrackRole};
use crate::sdp;

impl Connection {
    pub(super) async fn handle(&mut self, message: ClientMessage) {
        if let ClientMessage::Ping = message {
            // A reply to this socket: not numbered, not replayed.
            self.out.send_direct(&ServerMessage::Pong);
            return;
        }
        if let ClientMessage::Resume {
            v,
            secret,
            received,
            token,
        } = message
        {
            self.resume(v, &secret, received, token.as_deref()).await;
            return;
        }
        if let ClientMessage::Join {
            v,
            room,
            name,
            mode,
            token,
        } = message
        {
            self.join(v, room, name, mode, token.as_deref());
            return;
        }
        let Some(me) = self.me.clone() else {
            self.error(ErrorCode::NotJoined, "join a room first");
            return;
        };
        if !self.signal.hub().is_member(&me) {
            // Replaced or removed: the socket is about to close.
            return;
        }
        self.handle_joined(me, message).await
    }

    /// A message of a participant in a room.
    async fn handle_joined(&mut self, me: Me, message: ClientMessage) {
        let is_offer = matches!(message, ClientMessage::Offer { .. });
        match message {
            ClientMessage::Offer { sdp, to, roles } | ClientMessage::Answer { sdp, to, roles } => {
                let Some(roles) = self.roles(roles) else {
                    return;
                };
                self.session_description(&me, is_offer, sdp, to, roles)
                    .await
            }
            ClientMessage::Candidate {
                candidate,
                to: Some(to),
            } => {
                if self.within(Budget::Relays) {
                    self.relay(&me, &to, |from| ServerMessage::Candidate {
                        candidate,
                        from,
                    })
                }
            }
            // The media server is ICE-lite: it learns the browser's address from its checks.
            ClientMessage::Candidate { to: None, .. } => {}
            ClientMessage::Chat { text } => {
                if !self.grants.chat {
                    self.signal.refusals.count("forbidden");
                    self.error(
                        ErrorCode::Forbidden,
                        "your access token does not grant chat (canPublishData)",
                    );
                } else if self.within(Budget::Chat) {
                    let chat = self.signal.hub().chat(&me, &text, self.handling);
                    if let Err((code, why)) = chat {
                        self.error(code, why);
                    }
                }
            }
            ClientMessage::Mute { audio, video } => {
                if self.within(Budget::Mutes) {
                    self.signal.hub().mute(&me, audio, video)
                }
            }
            ClientMessage::View { tracks } => self.view(&tracks).await,
            ClientMessage::LastN { n, pinned } => {
                if self.within(Budget::Views) {
                    let asked = self.signal.hub().request_last_n(&me, n, pinned);
                    if let Err((code, why)) = asked {
                        self.error(code, &why);
                    }
                }
            }
            ClientMessage::Record { on } => self.record(&me, on).await,
            ClientMessage::MuteParticipant { id, audio, video } => {
                let actions = [(false, audio), (true, video)]
                    .into_iter()
                    .filter_map(|(video, muted)| {
                        let id = id.clone();
                        muted.map(|muted| Moderate::Mute { id, video, muted })
                    })
                    .collect();
                self.moderate(&me, actions).await
            }
            ClientMessage::RemoveParticipant { id, ban } => {
                self.moderate(&me, vec![Moderate::Remove { id, ban }]).await
            }
            ClientMessage::LockRoom { locked } => {
                self.moderate(&me, vec![Moderate::Lock { locked }]).await
            }
            ClientMessage::EndRoom => self.moderate(&me, vec![Moderate::End]).await,
            ClientMessage::Join { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Leave
            | ClientMessage::Ping => {}
        }
    }

    /// An offer or answer: relayed to the other browser (`to`), or for the media server.
    async fn session_description(
        &mut self,
        me: &Me,
        is_offer: bool,
        sdp: String,
        to: Option<String>,
        roles: Option<BTreeMap<String, TrackRole>>,
    ) {
        // Answers to the media server are not rate limited: it makes one offer at a time and
        // waits for the answer, and refuses one it did not ask for.
        if (is_offer || to.is_some()) && !self.within(Budget::Offers) {
            return;
        }
        let Some(sdp) = self.restrict(&sdp) else {
            return;
        };
        match (to, is_offer) {
            (Some(to), true) => self.relay(me, &to, |from| ServerMessage::Offer {
                sdp,
                from: Some(from),
                roles,
            }),
            (Some(to), false) => self.relay(me, &to, |from| ServerMessage::Answer {
                sdp,
                from: Some(from),
                roles,
                re: None,
            }),
            (None, true) => self.media_offer(me, &sdp, roles.as_ref()).await,
            (None, false) => self.media_answer(&sdp).await,
        }
    }

    /// The checked `roles` of an offer or answer; `None` when refused (said why).
    fn roles(
        &self,
        roles: Option<BTreeMap<String, String>>,
    ) -> Option<Option<BTreeMap<String, TrackRole>>> {
        let Some(roles) = roles else {
            return Some(None);
        };
        match TrackRole::parse_map(&roles, self.signal.config.limits.mlines_per_sdp) {
            Ok(r) => Some(Some(r)),
            Err(why) => {
                self.signal.refusals.count("bad-roles");
                self.error(ErrorCode::BadRoles, &why);
                None
            }
        }
    }

    /// The SDP limited to what this participant may publish, or `None` (refused, said why).
    fn restrict(&self, sdp: &str) -> Option<String> {
        let max = self.signal.config.limits.mlines_per_sdp;
        match sdp::restrict(sdp, self.grants.publish, max) {
            Ok(s) => Some(s),
            Err(sdp::TooManyLines(n)) => {
                self.signal.refusals.count("too-many-m-lines");
                self.error(
                    ErrorCode::MediaError,
                    &format!("an SDP with {n} m-lines was refused; the limit is {max}"),
                );
                None
            }
        }
    }

    async fn moderate(&mut self, me: &Me, actions: Vec<Moderate>) {
        if actions.is_empty() {
            return;
        }
        if !self.grants.admin {
            self.signal.refusals.count("forbidden");
            self.error(
                ErrorCode::Forbidden,
                "moderation needs an access token with roomAdmin",
            );
            return;
        }
        for action in actions {
            if self.within(Budget::Mutes) {
                self.moderate_one(me, action).await;
            }
        }
    }

    async fn moderate_one(&mut self, me: &Me, action: Moderate) {
        if matches!(action, Moderate::End) {
            // The recording is finished before the room ends: its webhook comes first.
            self.signal.recordings.stop(&me.room).await;
        }
        let outcome = self.signal.hub().moderate(me, &action);
        match outcome {
            Ok(media) => {
                tracing::info!(room = me.room, by = me.id, ?action, "moderation");
                if let (Moderate::Mute { video, muted, .. }, Some(peer)) = (&action, media) {
                    let kind = if *video {
                        MediaKind::Video
                    } else {
                        MediaKind::Audio
                    };
                    if let Err(e) = self.signal.media.set_muted(&peer, kind, *muted).await {
                        tracing::warn!("server mute not applied: {e}");
                    }
                }
            }
            Err((code, why)) => {
                self.signal.refusals.count(code.name());
                self.error(code, &why)
            }
        }
    }

    fn relay(&self, me: &Me, to: &str, make: impl FnOnce(String) -> ServerMessage) {
        if let Err(why) = self.signal.hub().relay(me, to, make) {
            self.error(ErrorCode::BadTarget, &why);
        }
    }

    async fn record(&mut self, me: &Me, on: bool) {
        if !self.grants.may_record(&me.room) {
            self.signal.refusals.count("forbidden");
            self.error(
                ErrorCode::Forbidden,
                "recording needs an access token with roomRecord or roomAdmin",
            );
            return;
        }
        if !self.signal.hub().uses_sfu(me) {
            self.error(
                ErrorCode::BadTarget,
                "only SFU rooms can be recorded: in a peer-to-peer room media bypasses the server",
            );
            return;
        }
        let recordings = &self.signal.recordings;
        let name = if on {
            match recordings.start(&me.room).await {
                Ok(name) => Some(name),
                Err((code, why)) => {
                    if code != ErrorCode::MediaError {
                        self.signal.refusals.count(code.name());
                    }
                    self.error(code, &why);
                    return;
                }
            }
        } else {
            recordings.stop(&me.room).await
        };
        self.signal.hub().broadcast(
            &me.room,
            &ServerMessage::Recording {
                on,
                by: Some(me.id.clone()),
                name,
            },
        );
    }
}

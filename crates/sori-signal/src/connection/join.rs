//! A connection's join: the checks made before the hub sees it (protocol version, names, the
//! address's join rate, the access token), then the hub's admission.

use super::Connection;
use crate::hub::{JoinOutcome, Joining};
use crate::ice_servers;
use crate::protocol::{self, ErrorCode, RoomMode, ServerMessage};

impl Connection {
    /// The checks a `join` and a `resume` share, in this order: a socket not yet in a room,
    /// the protocol version, valid names (`names`), no shutdown under way, the address's join
    /// rate. False (and the refusal sent) when one fails.
    pub(super) fn may_enter(&mut self, v: u32, names: bool) -> bool {
        if self.me.is_some() {
            self.error(
                ErrorCode::AlreadyJoined,
                "this connection is already in a room",
            );
            return false;
        }
        if v != protocol::PROTOCOL_VERSION {
            self.error(
                ErrorCode::UnsupportedVersion,
                &format!(
                    "protocol version {v} is not supported; this server speaks version {}",
                    protocol::PROTOCOL_VERSION
                ),
            );
            return false;
        }
        if !names {
            self.error(
                ErrorCode::InvalidName,
                "room and name must be 1 to 64 characters, without control characters",
            );
            return false;
        }
        if self.signal.draining() {
            self.refuse_join(
                ErrorCode::ShuttingDown,
                "the server is shutting down: try again in a moment",
            );
            return false;
        }
        if !std::mem::take(&mut self.join_counted) && !self.signal.allow_join(self.ip) {
            self.refuse_join(
                ErrorCode::RateLimited,
                "too many joins from your address: wait a moment and try again",
            );
            return false;
        }
        true
    }

    pub(super) fn join(
        &mut self,
        v: u32,
        room: String,
        name: String,
        mode: Option<RoomMode>,
        token: Option<&str>,
    ) {
        let names = protocol::valid_name(&room) && protocol::valid_name(&name);
        if !self.may_enter(v, names) {
            return;
        }
        let grants = match self.signal.authorize(token) {
            Ok(g) => g,
            Err(e) => {
                self.refuse_join(ErrorCode::Unauthorized, &e.to_string());
                return;
            }
        };
        if let Err(why) = grants.may_join(&room) {
            self.refuse_join(ErrorCode::Forbidden, why);
            return;
        }
        let mode = mode.unwrap_or(self.signal.config.default_mode);
        let config = self.signal.config.clone();
        let secret = if self.signal.sessions.enabled() {
            match sori_turn::credentials::random_secret() {
                // With other session servers, the secret names the room: a resume reaching
                // another is relayed to the room's server.
                Ok(s) => Some(match &self.signal.links {
                    Some(_) => crate::bus::secret_for(&room, &s),
                    None => s,
                }),
                Err(_) => {
                    tracing::error!(
                        "no randomness for a resume secret: this participant cannot resume"
                    );
                    None
                }
            }
        } else {
            None
        };
        // From its `joined` on, the participant's messages are numbered.
        self.out.start_numbering();
        let outcome = self.signal.hub().join(
            Joining {
                room: &room,
                name: &name,
                mode,
                grants: &grants,
                out: self.out.clone(),
                resume: secret.clone(),
                ingress: false,
            },
            |id| ice_servers(&config, id),
        );
        match outcome {
            JoinOutcome::Joined(me) => {
                tracing::info!(room, id = me.id, identity = ?grants.identity, client = %self.ip, "participant joined");
                if let Some(secret) = &secret {
                    self.signal.sessions.register(
                        secret,
                        me.clone(),
                        grants.identity.clone(),
                        self.kick.clone(),
                    );
                }
                self.secret = secret;
                self.me = Some(me);
                self.grants = grants;
                let (recordings, out) = (self.signal.recordings.clone(), self.out.clone());
                tokio::spawn(async move {
                    if recordings.is_on(&room).await {
                        out.send(&ServerMessage::Recording {
                            on: true,
                            by: None,
                            name: None,
                        });
                    }
                });
            }
            JoinOutcome::Refused(code, why) => self.refuse_join(code, &why),
        }
    }
}

//! `resume`: a new socket takes back a participant whose socket dropped (or is about to be
//! found dead), with everything it missed.

use super::Connection;
use crate::outbox::AttachError;
use crate::protocol::{ErrorCode, ServerMessage};
use crate::{ice_servers, LeaveReason};

impl Connection {
    pub(super) async fn resume(&mut self, v: u32, secret: &str, seq: u64, token: Option<&str>) {
        if !self.may_enter(v, true) {
            return;
        }
        // With API keys the token must name the identity that joined.
        let grants = if self.signal.config.keys.is_empty() {
            None
        } else {
            match self.signal.authorize(token) {
                Ok(g) => Some(g),
                Err(e) => {
                    self.refuse_join(ErrorCode::Unauthorized, &e.to_string());
                    return;
                }
            }
        };
        let check = |me: &crate::hub::Me, identity: Option<&str>| match &grants {
            None => Ok(()),
            Some(g) if g.identity.as_deref() == identity && g.may_join(&me.room).is_ok() => Ok(()),
            Some(_) => Err("the access token is not that of the participant to resume".to_string()),
        };
        let parked = match self
            .signal
            .sessions
            .take(secret, self.kick.clone(), check)
            .await
        {
            Ok(p) => p,
            Err(why) => {
                self.signal.refusals.count(ErrorCode::ResumeFailed.name());
                tracing::info!(client = %self.ip, "resume refused: {why}");
                self.error(ErrorCode::ResumeFailed, &why);
                return;
            }
        };
        let resumed = ServerMessage::Resumed {
            id: parked.me.id.clone(),
            room: parked.me.room.clone(),
            received: parked.received,
        };
        if let Err(e) = parked.out.attach(self.socket_tx.clone(), seq, &resumed) {
            // It cannot carry on where the client left it: it leaves, the client joins again.
            let why = match e {
                AttachError::Gap => "too much was missed since the socket dropped; join again",
                AttachError::Ahead => "the client claims messages that were never sent; join again",
            };
            tracing::info!(client = %self.ip, id = parked.me.id, "resume refused: {why}");
            self.signal.sessions.forget(secret);
            parked.out.close(why);
            super::end_participant(
                &self.signal,
                parked.ip,
                parked.me,
                parked.media_peer,
                LeaveReason::Left,
            )
            .await;
            self.signal.refusals.count(ErrorCode::ResumeFailed.name());
            self.error(ErrorCode::ResumeFailed, why);
            return;
        }
        tracing::info!(room = parked.me.room, id = parked.me.id, client = %self.ip, "participant resumed");
        let parked = *parked;
        self.out = parked.out;
        self.grants = parked.grants;
        self.media_peer = parked.media_peer;
        self.media_fingerprint = parked.media_fingerprint;
        self.received = parked.received;
        self.secret = Some(secret.to_string());
        // Credentials may have aged while the socket was down.
        self.send(ServerMessage::IceServers {
            ice_servers: ice_servers(&self.signal.config, &parked.me.id),
        });
        // Taken over from a session server that is gone: its media connection went with it.
        let mode = self.signal.hub().active_mode(&parked.me.room);
        if parked.restored && mode == Some(crate::protocol::RoomMode::Sfu) {
            self.send(ServerMessage::Mode {
                mode: crate::protocol::RoomMode::Sfu,
            });
        }
        self.me = Some(parked.me);
    }
}

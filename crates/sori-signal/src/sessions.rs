//! Participants whose socket dropped, kept for a grace period so that a new socket can take
//! them back (`resume`), and the handover from a socket that still looks alive.
//!
//! Each joined participant has an entry under its resume secret: `Live` while a connection
//! task holds it, `Parked` once that task's socket ended without a leave. A resume takes a
//! parked participant at once; a live one is first asked to let go (its connection parks it
//! and ends). A parked participant no one took back within the grace period leaves with
//! reason `timeout`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::auth::Grants;
use crate::hub::Me;
use crate::outbox::Outbox;
use crate::PeerRef;

/// The key a participant is kept under: a digest of its secret (the secret itself is kept
/// nowhere, here or in a snapshot another session server reads).
pub(crate) fn secret_key(secret: &str) -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// How long a resume waits for the socket it replaces to let go.
const HANDOVER: Duration = Duration::from_secs(2);

/// A participant without a socket.
pub(crate) struct Parked {
    pub out: Outbox,
    pub me: Me,
    pub grants: Grants,
    pub media_peer: Option<PeerRef>,
    pub media_fingerprint: Option<String>,
    /// The last client message number processed.
    pub received: u64,
    pub ip: IpAddr,
    /// Restored from another session server's snapshot: its media is to be connected anew.
    pub restored: bool,
}

enum State {
    /// A connection holds it; notifying `kick` makes that connection park it.
    Live {
        kick: Arc<Notify>,
    },
    Parked(Box<Parked>),
}

struct Entry {
    me: Me,
    identity: Option<String>,
    /// Changes with every resume, so that a grace timer set before it does nothing.
    generation: u64,
    state: State,
    /// Notified when the entry becomes parked.
    parked: Arc<Notify>,
}

/// The participants that can be resumed.
pub(crate) struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
    /// How long a participant without a socket is kept (zero: not at all).
    pub grace: Duration,
}

/// What a parked participant's grace timer needs to check that nothing changed meanwhile.
pub(crate) struct Ticket {
    key: String,
    generation: u64,
}

impl Sessions {
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            grace,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether participants are kept when their socket drops.
    pub(crate) fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }

    /// How many participants are waiting for a resume.
    pub(crate) fn parked(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| matches!(e.state, State::Parked(_)))
            .count()
    }

    /// A joined participant, held by the connection that `kick` asks to let go.
    pub(crate) fn register(
        &self,
        secret: &str,
        me: Me,
        identity: Option<String>,
        kick: Arc<Notify>,
    ) {
        self.entries().insert(
            secret_key(secret),
            Entry {
                me,
                identity,
                generation: 0,
                state: State::Live { kick },
                parked: Arc::default(),
            },
        );
    }

    /// The participant is gone for good.
    pub(crate) fn forget(&self, secret: &str) {
        self.entries().remove(&secret_key(secret));
    }

    /// A participant restored from another session server's snapshot, under the key of its
    /// secret: it waits for a resume.
    pub(crate) fn restore(&self, key: String, identity: Option<String>, parked: Parked) -> Ticket {
        let entry = Entry {
            me: parked.me.clone(),
            identity,
            generation: 0,
            state: State::Parked(Box::new(parked)),
            parked: Arc::default(),
        };
        self.entries().insert(key.clone(), entry);
        Ticket { key, generation: 0 }
    }

    /// The participant's socket ended: it waits for a resume. The ticket is for
    /// [`Sessions::expire`] once the grace period is over.
    pub(crate) fn park(&self, secret: &str, parked: Parked) -> Result<Ticket, Box<Parked>> {
        let key = secret_key(secret);
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(&key) else {
            return Err(Box::new(parked));
        };
        entry.state = State::Parked(Box::new(parked));
        entry.parked.notify_one();
        Ok(Ticket {
            generation: entry.generation,
            key,
        })
    }

    /// The grace period of `ticket` is over: the participant, if no one took it back since.
    pub(crate) fn expire(&self, ticket: &Ticket) -> Option<Box<Parked>> {
        let mut entries = self.entries();
        let entry = entries.get(&ticket.key)?;
        if entry.generation != ticket.generation || !matches!(entry.state, State::Parked(_)) {
            return None;
        }
        match entries.remove(&ticket.key)?.state {
            State::Parked(p) => Some(p),
            State::Live { .. } => None,
        }
    }

    /// Takes the participant of `secret` for a new connection whose kick is `kick`, once
    /// `check` accepted its room and identity. A participant still held by a connection is
    /// first handed over by it.
    pub(crate) async fn take(
        &self,
        secret: &str,
        kick: Arc<Notify>,
        check: impl Fn(&Me, Option<&str>) -> Result<(), String>,
    ) -> Result<Box<Parked>, String> {
        const GONE: &str = "no participant to resume: it left, or waited too long; join again";
        let deadline = tokio::time::Instant::now() + HANDOVER;
        let key = secret_key(secret);
        loop {
            let parked = {
                let mut entries = self.entries();
                let entry = entries.get_mut(&key).ok_or(GONE)?;
                check(&entry.me, entry.identity.as_deref())?;
                match &entry.state {
                    State::Live { kick: old } => {
                        old.notify_one();
                        entry.parked.clone()
                    }
                    State::Parked(_) => {
                        let State::Parked(p) =
                            std::mem::replace(&mut entry.state, State::Live { kick })
                        else {
                            unreachable!("matched just above")
                        };
                        entry.generation += 1;
                        return Ok(p);
                    }
                }
            };
            // The old connection parks it as it ends. A wake-up left over from an earlier
            // park only costs one more look.
            if tokio::time::timeout_at(deadline, parked.notified())
                .await
                .is_err()
            {
                return Err(GONE.into());
            }
        }
    }
}

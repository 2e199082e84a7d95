//! The TURN server's check of time-limited credentials.

use std::net::SocketAddr;
use std::time::SystemTime;

use turn::auth::{generate_auth_key, AuthHandler};

use crate::credentials;

/// Accepts a username while its expiry lies in the future; its key derives from the shared
/// secret. The `turn` crate then checks the request's MESSAGE-INTEGRITY with that key, so a
/// wrong password fails there.
pub(crate) struct SecretAuth {
    secret: String,
}

impl SecretAuth {
    pub(crate) fn new(secret: String) -> Self {
        Self { secret }
    }

    /// The long-term key (RFC 5389 §15.4) of a current `username`; `None` when it expired.
    pub(crate) fn key(&self, username: &str, realm: &str) -> Option<Vec<u8>> {
        if !credentials::is_current(username, SystemTime::now()) {
            return None;
        }
        let password = credentials::password(&self.secret, username);
        Some(generate_auth_key(username, realm, &password))
    }
}

impl AuthHandler for SecretAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        self.key(username, realm).ok_or_else(|| {
            tracing::debug!(%src_addr, username, "TURN credential expired or malformed");
            turn::Error::ErrNoSuchUser
        })
    }
}

//! Time-limited TURN credentials, the "TURN REST API" convention coturn calls `use-auth-secret`:
//! the username is `<unix expiry>:<participant>`, the password `base64(HMAC-SHA1(secret, username))`.
//! Whoever knows the shared secret can check a credential without any per-user state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::hmac;

/// A username and password for a browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// A credential for `participant`, valid until `now + ttl`.
pub fn issue(secret: &str, participant: &str, ttl: Duration, now: SystemTime) -> Credential {
    let expiry = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let username = format!("{expiry}:{participant}");
    let password = password(secret, &username);
    Credential { username, password }
}

/// The password of `username`: base64 of its HMAC-SHA1 under `secret`.
pub fn password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The expiry (unix seconds) a username carries: `<expiry>` or `<expiry>:<anything>`.
pub fn expiry(username: &str) -> Option<u64> {
    let head = username.split(':').next()?;
    if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    head.parse().ok()
}

/// The participant a username names: what follows `<expiry>:`; `None` for a bare expiry.
pub fn participant(username: &str) -> Option<&str> {
    username.split_once(':').map(|(_, id)| id)
}

/// Whether `username` has not expired at `now`.
pub fn is_current(username: &str, now: SystemTime) -> bool {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    expiry(username).is_some_and(|e| e > now)
}

/// A fresh random secret (32 random bytes, base64url) for when none is configured.
pub fn random_secret() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_an_independent_hmac_sha1() {
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(
        //   b"north", b"1700000000:p7", hashlib.sha1).digest()).decode())'
        assert_eq!(
            password("north", "1700000000:p7"),
            "tjK/TfZA5vnYb1ueK8XYPggLFec="
        );
    }

    #[test]
    fn issued_credentials_carry_expiry_and_participant() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = issue("north", "p7", Duration::from_secs(3600), now);
        assert_eq!(c.username, "1700003600:p7");
        assert_eq!(c.password, password("north", "1700003600:p7"));
        assert_eq!(expiry(&c.username), Some(1_700_003_600));
        assert_eq!(participant(&c.username), Some("p7"));
        assert_eq!(participant("1700003600"), None);
        assert!(is_current(&c.username, now));
        assert!(!is_current(&c.username, now + Duration::from_secs(3600)));
    }

    #[test]
    fn usernames_without_a_leading_expiry_are_not_current() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for bad in [
            "",
            "p7",
            ":p7",
            "-5:p7",
            "17x:p7",
            "99999999999999999999999:p7",
        ] {
            assert_eq!(expiry(bad), None, "{bad:?}");
            assert!(!is_current(bad, now), "{bad:?}");
        }
        assert!(is_current("1800000000", now));
    }

    #[test]
    fn random_secrets_differ() {
        let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}

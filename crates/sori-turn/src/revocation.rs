//! Revoked credentials: a participant who left must not keep relaying until its credential
//! expires.
//!
//! Credentials are stateless (the server recomputes the password from the secret), so a
//! revocation is the one piece of state per participant: its id and `until`, the latest expiry
//! of a credential issued to it. Every credential of that participant expiring at or before
//! `until` is refused; once `until` has passed all of them have expired anyway, so the entry is
//! dropped and memory holds only revocations that still matter.

use std::collections::HashMap;

use crate::credentials;

#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Participant id → the unix second up to which its credentials are revoked.
    until: HashMap<String, u64>,
}

impl Revocations {
    /// Revokes `participant`'s credentials expiring at or before `until` (unix seconds), and
    /// forgets revocations that ended by `now`.
    pub(crate) fn revoke(&mut self, participant: &str, until: u64, now: u64) {
        self.until.retain(|_, u| *u > now);
        if until > now {
            let entry = self.until.entry(participant.to_string()).or_default();
            *entry = (*entry).max(until);
        }
    }

    /// Whether `username` (`<expiry>:<participant>`) is a revoked credential.
    pub(crate) fn is_revoked(&self, username: &str) -> bool {
        let (Some(expiry), Some(participant)) = (
            credentials::expiry(username),
            credentials::participant(username),
        ) else {
            return false;
        };
        self.until.get(participant).is_some_and(|&u| expiry <= u)
    }

    /// Revocations in force at `now`.
    pub(crate) fn in_force(&self, now: u64) -> usize {
        self.until.values().filter(|&&u| u > now).count()
    }

    /// Revocations held, ended or not.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_participant_loses_every_credential_up_to_until() {
        let mut r = Revocations::default();
        r.revoke("p1", 2000, 1000);
        assert!(r.is_revoked("1500:p1"));
        assert!(r.is_revoked("2000:p1"));
        // Issued after the revocation's horizon: not covered.
        assert!(!r.is_revoked("2001:p1"));
        assert!(!r.is_revoked("1500:p2"));
        assert!(!r.is_revoked("1500:p1x"));
        assert!(!r.is_revoked("1500"));
        assert!(!r.is_revoked("p1"));
    }

    #[test]
    fn revoking_again_keeps_the_later_horizon() {
        let mut r = Revocations::default();
        r.revoke("p1", 3000, 1000);
        r.revoke("p1", 2000, 1000);
        assert!(r.is_revoked("2500:p1"));
    }

    #[test]
    fn ended_revocations_are_forgotten() {
        let mut r = Revocations::default();
        r.revoke("p1", 2000, 1000);
        r.revoke("p2", 5000, 1000);
        assert_eq!((r.held(), r.in_force(1999)), (2, 2));
        assert_eq!(r.in_force(2000), 1);
        // The next revocation drops p1's: every credential it covered has expired.
        r.revoke("p3", 5000, 2000);
        assert_eq!(r.held(), 2);
        // A horizon already past is not even stored.
        r.revoke("p4", 1500, 2000);
        assert_eq!(r.held(), 2);
        assert!(!r.is_revoked("1500:p4"));
    }
}

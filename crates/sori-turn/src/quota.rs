//! Allocation quotas: how many relays one credential and one client address hold at once.
//!
//! Every allocation holds a UDP port of the relay range until it is released or expires, so
//! without a cap one credential can take the whole range and every later Allocate fails. RFC
//! 8656 §7.2 lets a server refuse an Allocate over a locally defined quota with
//! `486 Allocation Quota Reached`; [`Quotas`] decides when.
//!
//! The `turn` crate has no quota hook, so the packet guard keeps the books around it: it
//! reserves a slot when it passes an authenticated Allocate ([`Quotas::reserve`]), settles the
//! slot when the crate's answer goes out ([`Quotas::answered`]: a success keeps it, an error
//! frees it), and the crate's allocation-closed notification frees it whenever the allocation
//! ends — released, expired, revoked or shut down ([`Quotas::released`]). Reserving before the
//! crate answers keeps the cap exact when UDP, TCP and TLS clients allocate at the same time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Caps on allocations open at once; 0 lifts a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationLimits {
    /// Allocations of one username (`<expiry>:<participant>`).
    pub per_username: usize,
    /// Allocations from one client IP address, whatever their usernames.
    pub per_ip: usize,
}

impl Default for AllocationLimits {
    /// A browser allocates once per TURN URL (UDP, TCP, TLS) and network interface for each
    /// peer connection, and an `auto` room briefly holds two; 8 per username covers that with
    /// room to spare. 64 per address lets an office of a dozen or more participants behind one
    /// NAT relay at once, while one host still takes under 0.5 % of the default relay range.
    fn default() -> Self {
        AllocationLimits {
            per_username: 8,
            per_ip: 64,
        }
    }
}

/// An allocation's client as the crate keys it: the client's address and the server address
/// (listener) it reached.
pub(crate) type Client = (SocketAddr, SocketAddr);

/// Which cap an Allocate would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaReached {
    Username,
    Ip,
}

/// The slots held by allocations, open or being answered.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    limits: AllocationLimits,
    slots: HashMap<Client, Slot>,
    per_username: HashMap<String, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Slot {
    username: String,
    /// The crate answered the Allocate with success: only its close frees the slot now.
    open: bool,
}

impl Quotas {
    pub(crate) fn new(limits: AllocationLimits) -> Self {
        Quotas {
            limits,
            ..Default::default()
        }
    }

    /// Takes a slot for an authenticated Allocate of `username` from `client`, or says which
    /// cap it would exceed. A client that holds a slot already (a retransmission, or a second
    /// Allocate the crate refuses with 437) takes none.
    pub(crate) fn reserve(&mut self, client: Client, username: &str) -> Result<(), QuotaReached> {
        if self.slots.contains_key(&client) {
            return Ok(());
        }
        let over = |cap: usize, held: Option<&usize>| cap != 0 && held.copied().unwrap_or(0) >= cap;
        if over(self.limits.per_username, self.per_username.get(username)) {
            return Err(QuotaReached::Username);
        }
        let ip = client.0.ip();
        if over(self.limits.per_ip, self.per_ip.get(&ip)) {
            return Err(QuotaReached::Ip);
        }
        *self.per_username.entry(username.to_string()).or_default() += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        self.slots.insert(
            client,
            Slot {
                username: username.to_string(),
                open: false,
            },
        );
        Ok(())
    }

    /// The crate answered `client`'s Allocate: a success keeps its slot until the allocation
    /// closes, an error frees a slot not yet open.
    pub(crate) fn answered(&mut self, client: Client, success: bool) {
        match self.slots.get_mut(&client) {
            Some(slot) if success => slot.open = true,
            Some(slot) if !slot.open => self.released(client),
            _ => {}
        }
    }

    /// `client`'s allocation ended: its slot is free.
    pub(crate) fn released(&mut self, client: Client) {
        let Some(slot) = self.slots.remove(&client) else {
            return;
        };
        decrement(&mut self.per_username, &slot.username);
        decrement(&mut self.per_ip, &client.0.ip());
    }

    /// Slots held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.len()
    }
}

/// Counts one fewer for `key`, forgetting keys that reach zero so the maps hold only clients
/// with allocations.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "192.0.2.1:3478";

    fn client(addr: &str) -> Client {
        (addr.parse().unwrap(), SERVER.parse().unwrap())
    }

    fn limits(per_username: usize, per_ip: usize) -> Quotas {
        Quotas::new(AllocationLimits {
            per_username,
            per_ip,
        })
    }

    #[test]
    fn a_username_over_its_cap_is_refused_and_others_are_not() {
        let mut q = limits(2, 0);
        q.reserve(client("198.51.100.1:1"), "9:a").unwrap();
        q.reserve(client("198.51.100.1:2"), "9:a").unwrap();
        assert_eq!(
            q.reserve(client("198.51.100.1:3"), "9:a"),
            Err(QuotaReached::Username)
        );
        q.reserve(client("198.51.100.1:3"), "9:b").unwrap();
    }

    #[test]
    fn an_address_over_its_cap_is_refused_whatever_the_username() {
        let mut q = limits(0, 2);
        q.reserve(client("198.51.100.1:1"), "9:a").unwrap();
        q.reserve(client("198.51.100.1:2"), "9:b").unwrap();
        assert_eq!(
            q.reserve(client("198.51.100.1:3"), "9:c"),
            Err(QuotaReached::Ip)
        );
        q.reserve(client("198.51.100.2:3"), "9:c").unwrap();
    }

    #[test]
    fn a_client_holding_a_slot_takes_no_second_one() {
        let mut q = limits(1, 1);
        q.reserve(client("198.51.100.1:1"), "9:a").unwrap();
        q.reserve(client("198.51.100.1:1"), "9:a").unwrap();
        assert_eq!(q.held(), 1);
    }

    #[test]
    fn refused_and_closed_allocations_free_their_slots() {
        let mut q = limits(1, 0);
        // The crate refuses the Allocate (stale nonce, say): the slot is free at once.
        q.reserve(client("198.51.100.1:1"), "9:a").unwrap();
        q.answered(client("198.51.100.1:1"), false);
        assert_eq!(q.held(), 0);
        // A success holds it, and a later error to the same client (437) does not free it.
        q.reserve(client("198.51.100.1:2"), "9:a").unwrap();
        q.answered(client("198.51.100.1:2"), true);
        q.answered(client("198.51.100.1:2"), false);
        assert_eq!(
            q.reserve(client("198.51.100.1:3"), "9:a"),
            Err(QuotaReached::Username)
        );
        // Closing the allocation frees it, and forgets the username and address.
        q.released(client("198.51.100.1:2"));
        assert_eq!(q.held(), 0);
        assert!(q.per_username.is_empty() && q.per_ip.is_empty());
        q.reserve(client("198.51.100.1:3"), "9:a").unwrap();
    }

    #[test]
    fn a_close_seen_before_the_success_leaves_no_slot_behind() {
        // A revocation can end an allocation between its creation and the crate's answer.
        let mut q = limits(1, 0);
        q.reserve(client("198.51.100.1:1"), "9:a").unwrap();
        q.released(client("198.51.100.1:1"));
        q.answered(client("198.51.100.1:1"), true);
        assert_eq!(q.held(), 0);
    }
}

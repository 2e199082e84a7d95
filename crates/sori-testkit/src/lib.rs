//! Test tools shared by Sori's crates. Only tests and the load generator (`sori-bench`) depend
//! on this crate; no shipped binary does.
//!
//! - [`Rng`]: a small seeded generator (xorshift64), so that a failing run replays exactly.
//! - [`mutate`]: byte and line manglings of a valid input, for hostile-input tests.
//! - `ws` (feature `ws`): a WebSocket client that keeps reading (so it answers the server's
//!   pings) and hands each text frame on as JSON: a browser on `/ws`, or a Kurento client.
//! - `udp` (feature `udp`): a str0m peer on a UDP socket and the one run loop that drives it
//!   (pacing synthetic audio and video, draining the peer, reading datagrams in batches); a
//!   `udp::Handler` says what the client sends and what it makes of the events.
//! - `prop` (feature `prop`): the proptest settings every property test uses.
//!
//! # Property tests, not `cargo fuzz`
//!
//! Every parser that faces the network (STUN and TURN messages, SDP, the `/ws` protocol, the
//! Kurento JSON-RPC, the RTP depacketizer) has property tests: arbitrary bytes and mutations
//! of valid inputs never panic, valid inputs parse to what was built, output stays bounded.
//! They use proptest rather than `cargo fuzz` because CI machines have only the stable
//! toolchain and cannot fetch nightly, which cargo-fuzz needs; proptest runs under plain
//! `cargo test`. Each target runs a bounded number of cases (a few seconds in a debug build);
//! `SORI_PROPTEST_CASES=100000 cargo test -p CRATE --test NAME` runs longer (see `prop`).

pub mod mutate;
#[cfg(feature = "prop")]
pub mod prop;
#[cfg(feature = "udp")]
pub mod udp;
#[cfg(feature = "ws")]
pub mod ws;

/// A small deterministic generator (xorshift64): the same seed gives the same sequence, so a
/// failure found by a mutation or loss test replays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero, which xorshift cannot leave, is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// True with probability `p` (0.0 never, 1.0 always).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_replays_and_below_stays_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let (x, y) = (a.below(10), b.below(10));
            assert_eq!(x, y);
            assert!(x < 10);
        }
        assert_eq!(Rng::new(0).below(0), 0);
        let hits = (0..10_000).filter(|_| a.chance(0.25)).count();
        assert!(
            (2_000..3_000).contains(&hits),
            "{hits} of 10000 at p = 0.25"
        );
    }
}

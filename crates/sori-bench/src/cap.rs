//! A receiver's bandwidth cap (`--receiver-cap-kbps`): a token bucket in the client's receive
//! path that drops every datagram it has no room for.
//!
//! The bucket fills at the cap's rate up to [`TokenBucket::depth`] bytes (100 ms of the rate, at
//! least two full datagrams); a datagram passes when the bucket holds its size, which is then
//! taken out, and is dropped otherwise — a policer, as a shaped access link or a busy Wi-Fi
//! behaves at its limit, without a queue. What the cap drops the receiver never acknowledges,
//! so the server's bandwidth estimate (TWCC) sees the loss, as it would on a real link.
//! Every datagram counts (RTP, RTCP, STUN, DTLS), by its UDP payload size.

use std::time::Instant;

/// Bytes the bucket holds at least: two datagrams of the largest size the clients use.
const MIN_DEPTH: u64 = 2 * 1200;

/// A token bucket over datagram sizes, on the caller's clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    bytes_per_sec: u64,
    depth: u64,
    /// Bytes of room, scaled by 1e9 (byte-nanoseconds per second) so refills stay exact.
    tokens: u128,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A cap of `kbps` kilobits (1000 bits) per second, starting full.
    pub fn new(kbps: u32) -> TokenBucket {
        let bytes_per_sec = u64::from(kbps) * 1000 / 8;
        let depth = (bytes_per_sec / 10).max(MIN_DEPTH);
        TokenBucket {
            bytes_per_sec,
            depth,
            tokens: u128::from(depth) * 1_000_000_000,
            last: None,
        }
    }

    /// Bytes the bucket holds when full: the largest burst that passes at once.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Whether a datagram of `bytes` arriving at `now` passes (it then uses up its room).
    pub fn admit(&mut self, now: Instant, bytes: usize) -> bool {
        let full = u128::from(self.depth) * 1_000_000_000;
        if let Some(last) = self.last {
            let ns = now.saturating_duration_since(last).as_nanos();
            self.tokens = (self.tokens + ns * u128::from(self.bytes_per_sec)).min(full);
        }
        self.last = Some(now);
        let need = bytes as u128 * 1_000_000_000;
        if need <= self.tokens {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_bucket_passes_its_depth_then_refuses() {
        // 800 kbit/s = 100 000 bytes/s; 100 ms of it is 10 000 bytes.
        let mut b = TokenBucket::new(800);
        assert_eq!(b.depth(), 10_000);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(b.admit(t, 1000));
        }
        assert!(!b.admit(t, 1));
        // 10 ms later: room for 1000 bytes again, not for 1001.
        let t = t + Duration::from_millis(10);
        assert!(!b.admit(t, 1001));
        assert!(b.admit(t, 1000));
        assert!(!b.admit(t, 1));
    }

    #[test]
    fn a_slow_cap_still_holds_two_datagrams() {
        let mut b = TokenBucket::new(50);
        assert_eq!(b.depth(), MIN_DEPTH);
        let t = Instant::now();
        assert!(b.admit(t, 1200));
        assert!(b.admit(t, 1200));
        assert!(!b.admit(t, 1200));
    }

    #[test]
    fn over_time_it_passes_the_rate_and_drops_the_rest() {
        // 500 kbit/s against 1200-byte datagrams every millisecond (9.6 Mbit/s) for 10 s.
        let mut b = TokenBucket::new(500);
        let start = Instant::now();
        let mut passed = 0u64;
        for ms in 0..10_000u64 {
            if b.admit(start + Duration::from_millis(ms), 1200) {
                passed += 1200;
            }
        }
        let allowed = 500_000 / 8 * 10 + b.depth();
        assert!(
            passed <= allowed,
            "{passed} bytes passed, at most {allowed}"
        );
        assert!(passed + 1200 > 500_000 / 8 * 10, "{passed} bytes passed");
        // An idle bucket fills up to its depth, no further.
        let later = start + Duration::from_secs(60);
        let mut burst = 0;
        while b.admit(later, 1) {
            burst += 1;
        }
        assert_eq!(burst, b.depth());
    }
}

//! Limits on what one client can make the server do: the settings, and the token bucket each
//! rate limit is. Buckets take the time as an argument, so their tests run on virtual time.

use std::time::{Duration, Instant};

/// Every limit of the session server, each with a safe default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Participants in one room (`room-full` past it).
    pub participants_per_room: usize,
    /// WHEP viewers of one room (503 past it; 0: none).
    pub viewers_per_room: usize,
    /// Rooms with at least one participant on this server.
    pub rooms: usize,
    /// Open HTTP and WebSocket connections in all.
    pub connections: usize,
    /// Open HTTP and WebSocket connections from one source address.
    pub connections_per_ip: usize,
    /// Joins per second from one source address (sustained; bursts of `joins_burst`).
    pub joins_per_sec: f64,
    pub joins_burst: f64,
    /// Chat messages per second from one participant (bursts of `chat_burst`).
    pub chat_per_sec: f64,
    pub chat_burst: f64,
    /// SDP offers and answers per second from one participant.
    pub offers_per_sec: f64,
    pub offers_burst: f64,
    /// Mute changes and moderation actions per second from one participant.
    pub mutes_per_sec: f64,
    pub mutes_burst: f64,
    /// Messages relayed to the other browser of a P2P room, per second (ICE candidates come in
    /// bursts at the start of a call).
    pub relays_per_sec: f64,
    pub relays_burst: f64,
    /// `view` messages (tile sizes and visibility) per second from one participant.
    pub views_per_sec: f64,
    pub views_burst: f64,
    /// Messages waiting for one socket; a client that reads slower than this is dropped.
    pub send_queue: usize,
    /// m-lines in one SDP (a participant's own and those carrying the others' tracks).
    pub mlines_per_sdp: usize,
    /// Time a client has to send a whole HTTP request head.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            participants_per_room: 100,
            viewers_per_room: 1000,
            rooms: 1000,
            connections: 10_000,
            connections_per_ip: 64,
            joins_per_sec: 5.0,
            joins_burst: 50.0,
            chat_per_sec: 5.0,
            chat_burst: 20.0,
            offers_per_sec: 2.0,
            offers_burst: 10.0,
            mutes_per_sec: 5.0,
            mutes_burst: 20.0,
            relays_per_sec: 50.0,
            relays_burst: 200.0,
            views_per_sec: 5.0,
            views_burst: 20.0,
            send_queue: 256,
            mlines_per_sdp: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// A token bucket: `burst` actions at once, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct Rate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Rate {
    /// A full bucket.
    pub fn new(per_sec: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            per_sec: per_sec.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now` (its entry can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The rate limits of one participant, and whether it was told about a refusal lately (a
/// flood is answered with one `rate-limited` error per second, not one per message).
#[derive(Debug)]
pub(crate) struct ParticipantRates {
    pub chat: Rate,
    pub offers: Rate,
    pub mutes: Rate,
    pub relays: Rate,
    pub views: Rate,
    told: Option<Instant>,
}

impl ParticipantRates {
    pub fn new(l: &Limits, now: Instant) -> Self {
        Self {
            chat: Rate::new(l.chat_per_sec, l.chat_burst, now),
            offers: Rate::new(l.offers_per_sec, l.offers_burst, now),
            mutes: Rate::new(l.mutes_per_sec, l.mutes_burst, now),
            relays: Rate::new(l.relays_per_sec, l.relays_burst, now),
            views: Rate::new(l.views_per_sec, l.views_burst, now),
            told: None,
        }
    }

    /// Whether a refusal now should be reported to the client.
    pub fn tell(&mut self, now: Instant) -> bool {
        match self.told {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => false,
            _ => {
                self.told = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut r = Rate::new(5.0, 20.0, t0);
        assert_eq!((0..100).filter(|_| r.allow(t0)).count(), 20);
        // One second later: five more, not a new burst.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| r.allow(t1)).count(), 5);
        assert!(!r.is_full(t1));
        assert!(r.is_full(t1 + Duration::from_secs(4)));
        // Ten thousand attempts within one second get the burst and the second's refill.
        let mut r = Rate::new(5.0, 20.0, t0);
        let allowed = (0..10_000u64)
            .filter(|i| r.allow(t0 + Duration::from_micros(i * 100)))
            .count();
        assert_eq!(allowed, 24);
    }

    #[test]
    fn refusals_are_reported_once_a_second() {
        let t0 = Instant::now();
        let mut p = ParticipantRates::new(&Limits::default(), t0);
        assert!(p.tell(t0));
        assert!(!p.tell(t0 + Duration::from_millis(999)));
        assert!(p.tell(t0 + Duration::from_millis(1000)));
    }
}

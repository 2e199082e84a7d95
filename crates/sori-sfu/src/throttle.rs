//! Keyframe-request throttling toward one publisher's video track.
//!
//! Every subscriber may ask for a keyframe (PLI/FIR) whenever it lost a picture; passed on one
//! by one, N subscribers would make the publisher encode keyframes back to back. Requests are
//! coalesced: at most one per interval goes upstream; requests inside the interval leave one
//! request pending, sent when the interval ends, unless a keyframe arrives first.
//!
//! A subscriber that starts (joins, subscribes, is fed a new source) has nothing to show until
//! a keyframe comes, so its request uses a shorter gap: joiners wait a fraction of a second, not
//! up to a whole interval, while a join storm still costs the publisher a bounded number of
//! keyframes per second.

use std::time::{Duration, Instant};

/// Why a keyframe is wanted: the gap before the next request may go upstream differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A receiver lost a picture (its own PLI/FIR, an application's request).
    Repair,
    /// A receiver starts on this track and shows nothing until a keyframe.
    Start,
}

/// Coalesces keyframe requests for one track.
#[derive(Debug)]
pub struct KeyframeThrottle {
    interval: Duration,
    start_interval: Duration,
    last_sent: Option<Instant>,
    /// The oldest request not yet sent, and when it may go.
    pending: Option<(Instant, Instant)>,
}

impl KeyframeThrottle {
    /// A throttle letting one request through per `interval`, or per `start_interval` when a
    /// receiver starts.
    pub fn new(interval: Duration, start_interval: Duration) -> Self {
        Self {
            interval,
            start_interval: start_interval.min(interval),
            last_sent: None,
            pending: None,
        }
    }

    /// A keyframe is wanted. Returns true when the request goes upstream now.
    pub fn request(&mut self, urgency: Urgency, now: Instant) -> bool {
        let gap = match urgency {
            Urgency::Repair => self.interval,
            Urgency::Start => self.start_interval,
        };
        match self.last_sent {
            Some(t) if now < t + gap => {
                let due = t + gap;
                self.pending = Some(match self.pending {
                    Some((since, d)) => (since.min(now), d.min(due)),
                    None => (now, due),
                });
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = None;
                true
            }
        }
    }

    /// A keyframe arrived from the publisher; it answers every request made before it.
    pub fn keyframe_received(&mut self, at: Instant) {
        if self.pending.is_some_and(|(since, _)| since <= at) {
            self.pending = None;
        }
    }

    /// When the pending request, if any, may go upstream.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|(_, due)| due)
    }

    /// Returns true when the pending request goes upstream now.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(t) if now >= t => {
                self.last_sent = Some(now);
                self.pending = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn one_request_per_interval_then_the_pending_one() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(SEC, SEC / 4);
        assert!(k.request(Urgency::Repair, t0));
        assert!(!k.request(Urgency::Repair, t0 + Duration::from_millis(100)));
        assert!(!k.request(Urgency::Repair, t0 + Duration::from_millis(300)));
        assert_eq!(k.poll_timeout(), Some(t0 + SEC));
        assert!(!k.handle_timeout(t0 + Duration::from_millis(999)));
        assert!(k.handle_timeout(t0 + SEC));
        assert_eq!(k.poll_timeout(), None);
        // Next interval counts from the pending request's send time.
        assert!(!k.request(Urgency::Repair, t0 + Duration::from_millis(1500)));
        assert!(k.request(Urgency::Repair, t0 + 2 * SEC));
    }

    #[test]
    fn keyframe_after_the_request_cancels_it() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(SEC, SEC / 4);
        assert!(k.request(Urgency::Repair, t0));
        assert!(!k.request(Urgency::Repair, t0 + Duration::from_millis(200)));
        // A keyframe from before the pending request does not answer it.
        k.keyframe_received(t0 + Duration::from_millis(100));
        assert!(k.poll_timeout().is_some());
        k.keyframe_received(t0 + Duration::from_millis(250));
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.handle_timeout(t0 + 2 * SEC));
    }

    #[test]
    fn a_starting_receiver_waits_only_the_short_gap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::new(SEC, ms(250));
        assert!(k.request(Urgency::Start, t0));
        // A repair request waits the whole interval; a start after it shortens the wait.
        assert!(!k.request(Urgency::Repair, t0 + ms(50)));
        assert_eq!(k.poll_timeout(), Some(t0 + SEC));
        assert!(!k.request(Urgency::Start, t0 + ms(100)));
        assert_eq!(k.poll_timeout(), Some(t0 + ms(250)));
        assert!(k.handle_timeout(t0 + ms(250)));
        // A join storm: starts every 50 ms get one request upstream per 250 ms.
        let mut sent = 0;
        for i in 1..=20 {
            let now = t0 + ms(250 + 50 * i);
            sent += k.request(Urgency::Start, now) as u32 + k.handle_timeout(now) as u32;
        }
        assert_eq!(sent, 4);
    }
}

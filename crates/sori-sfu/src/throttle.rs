//! Keyframe-request throttling toward one publisher's video track.
//!
//! Every subscriber may ask for a keyframe (PLI/FIR) whenever it lost a picture; passed on one
//! by one, N subscribers would make the publisher encode keyframes back to back. Requests are
//! coalesced: at most one per interval goes upstream; requests inside the interval leave one
//! request pending, sent when the interval ends, unless a keyframe arrives first.
//!
//! A subscriber that starts (joins, subscribes, is moved to another layer) has nothing to show
//! until a keyframe comes: its request goes upstream at once unless one is outstanding (sent,
//! and neither answered by a keyframe nor older than the start interval), whose keyframe will
//! serve it too. A join storm thus costs the publisher at most one keyframe per round trip
//! (request, encoding, the keyframe's way back), and a lost request is asked again after the
//! start interval.

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
    /// A keyframe arrived since the last request went upstream.
    answered: bool,
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
            answered: false,
            pending: None,
        }
    }

    /// A keyframe is wanted. Returns true when the request goes upstream now.
    pub fn request(&mut self, urgency: Urgency, now: Instant) -> bool {
        let gap = match urgency {
            Urgency::Repair => self.interval,
            Urgency::Start => self.start_interval,
        };
        let answered = urgency == Urgency::Start && self.answered;
        match self.last_sent {
            Some(t) if now < t + gap && !answered => {
                let due = t + gap;
                self.pending = Some(match self.pending {
                    Some((since, d)) => (since.min(now), d.min(due)),
                    None => (now, due),
                });
                false
            }
            _ => {
                self.sent(now);
                true
            }
        }
    }

    fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.answered = false;
        self.pending = None;
    }

    /// A keyframe arrived from the publisher; it answers every request made before it.
    pub fn keyframe_received(&mut self, at: Instant) {
        if self.last_sent.is_some_and(|t| t <= at) {
            self.answered = true;
        }
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
                self.sent(now);
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
    fn a_starting_receiver_asks_at_once_unless_a_request_is_outstanding() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::new(SEC, ms(250));
        assert!(k.request(Urgency::Start, t0));
        // Outstanding: a repair request waits the whole interval; a start the start interval
        // (asked again then if no keyframe came).
        assert!(!k.request(Urgency::Repair, t0 + ms(50)));
        assert_eq!(k.poll_timeout(), Some(t0 + SEC));
        assert!(!k.request(Urgency::Start, t0 + ms(100)));
        assert_eq!(k.poll_timeout(), Some(t0 + ms(250)));
        // Its keyframe answers both.
        k.keyframe_received(t0 + ms(120));
        assert_eq!(k.poll_timeout(), None);
        // Answered: the next start goes at once, a repair still waits its interval.
        assert!(!k.request(Urgency::Repair, t0 + ms(130)));
        assert!(k.request(Urgency::Start, t0 + ms(140)));
        assert_eq!(k.poll_timeout(), None, "the start's keyframe will do");
        // Unanswered for the start interval: asked again.
        assert!(!k.request(Urgency::Start, t0 + ms(200)));
        assert!(k.handle_timeout(t0 + ms(390)));
        // A join storm, a start every 10 ms, keyframes 40 ms after each request: one request
        // per round trip.
        let mut k = KeyframeThrottle::new(SEC, ms(250));
        let mut sent = Vec::new();
        for i in 0..50 {
            let now = t0 + ms(10 * i);
            if let Some(&t) = sent.last() {
                if now >= t + ms(40) {
                    k.keyframe_received(t + ms(40));
                }
            }
            if k.request(Urgency::Start, now) || k.handle_timeout(now) {
                sent.push(now);
            }
        }
        // 0, 40, 80, … 480 ms: 13 requests for 50 starts.
        assert_eq!(sent.len(), 13, "{sent:?}");
        assert!(sent.windows(2).all(|w| w[1] - w[0] == ms(40)));
    }
}

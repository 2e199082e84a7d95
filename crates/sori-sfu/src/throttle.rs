//! Keyframe-request throttling toward one publisher's video track.
//!
//! Every subscriber may ask for a keyframe (PLI/FIR) whenever it lost a picture; passed on one
//! by one, N subscribers would make the publisher encode keyframes back to back. Requests are
//! coalesced: at most one per interval goes upstream; requests inside the interval leave one
//! request pending, sent when the interval ends, unless a keyframe arrives first.

use std::time::{Duration, Instant};

/// Coalesces keyframe requests for one track.
#[derive(Debug)]
pub struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    pending_since: Option<Instant>,
}

impl KeyframeThrottle {
    /// A throttle letting one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            pending_since: None,
        }
    }

    /// A subscriber asks for a keyframe. Returns true when the request goes upstream now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now < t + self.interval => {
                self.pending_since.get_or_insert(now);
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending_since = None;
                true
            }
        }
    }

    /// A keyframe arrived from the publisher; it answers every request made before it.
    pub fn keyframe_received(&mut self, at: Instant) {
        if self.pending_since.is_some_and(|p| p <= at) {
            self.pending_since = None;
        }
    }

    /// When the pending request, if any, may go upstream.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending_since?;
        self.last_sent.map(|t| t + self.interval)
    }

    /// Returns true when the pending request goes upstream now.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(t) if now >= t => {
                self.last_sent = Some(now);
                self.pending_since = None;
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
        let mut k = KeyframeThrottle::new(SEC);
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(100)));
        assert!(!k.request(t0 + Duration::from_millis(300)));
        assert_eq!(k.poll_timeout(), Some(t0 + SEC));
        assert!(!k.handle_timeout(t0 + Duration::from_millis(999)));
        assert!(k.handle_timeout(t0 + SEC));
        assert_eq!(k.poll_timeout(), None);
        // Next interval counts from the pending request's send time.
        assert!(!k.request(t0 + Duration::from_millis(1500)));
        assert!(k.request(t0 + 2 * SEC));
    }

    #[test]
    fn keyframe_after_the_request_cancels_it() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(SEC);
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(200)));
        // A keyframe from before the pending request does not answer it.
        k.keyframe_received(t0 + Duration::from_millis(100));
        assert!(k.poll_timeout().is_some());
        k.keyframe_received(t0 + Duration::from_millis(250));
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.handle_timeout(t0 + 2 * SEC));
    }
}

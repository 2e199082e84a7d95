//! What receivers count: delay histograms and per-stream probe bitmaps over the measurement
//! window.
//!
//! The window is a range of *send* times, `[start, end)`: a packet belongs to it if the
//! publisher wrote it inside the window, however late it arrives. Receivers keep listening for a
//! grace period after the window ends, so packets in flight at its end are not miscounted as lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::probe::{Probe, StreamKind};

/// The measurement window, shared by every client of a run.
#[derive(Debug)]
pub struct Window {
    start_ns: AtomicU64,
    end_ns: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            start_ns: AtomicU64::new(u64::MAX),
            end_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    pub fn open(&self, at_ns: u64) {
        self.start_ns.store(at_ns, Ordering::SeqCst);
    }

    pub fn close(&self, at_ns: u64) {
        self.end_ns.store(at_ns, Ordering::SeqCst);
    }

    pub fn contains(&self, sent_ns: u64) -> bool {
        sent_ns >= self.start_ns.load(Ordering::Relaxed)
            && sent_ns < self.end_ns.load(Ordering::Relaxed)
    }
}

/// Delays in microseconds, in buckets with about 1% resolution, mergeable across receivers.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Bucket `b` holds values whose bucket index is `b`; see [`bucket`].
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

/// Values below 128 µs get a bucket each; above, 64 buckets per power of two.
fn bucket(us: u64) -> usize {
    if us < 128 {
        return us as usize;
    }
    let log = 63 - us.leading_zeros() as usize; // >= 7
    let mantissa = ((us >> (log - 6)) & 63) as usize;
    128 + (log - 7) * 64 + mantissa
}

/// The smallest value in bucket `b`.
fn bucket_floor(b: usize) -> u64 {
    if b < 128 {
        return b as u64;
    }
    let log = (b - 128) / 64 + 7;
    let mantissa = ((b - 128) % 64) as u64;
    (64 + mantissa) << (log - 6)
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; bucket(u64::MAX) + 1],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0–1), in microseconds, to the bucket's resolution; `None` when
    /// empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_floor(b).min(self.max_us));
            }
        }
        Some(self.max_us)
    }
}

/// Probe sequence numbers seen on one stream, for duplicates and loss.
#[derive(Debug, Default, Clone)]
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    /// Marks `seq`; false if it was already marked.
    fn mark(&mut self, seq: u32) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }
}

/// One receiver's counts, for the streams it receives.
#[derive(Debug, Default, Clone)]
pub struct Reception {
    seen: HashMap<(u16, StreamKind), Seen>,
    /// Distinct probes sent inside the window that arrived, per stream.
    pub in_window: HashMap<(u16, StreamKind), u64>,
    pub delay: Histogram,
    /// Every RTP packet with a probe, duplicates and out-of-window ones included.
    pub packets: u64,
    pub duplicates: u64,
}

impl Reception {
    /// Counts a packet that arrived at `recv_ns`.
    pub fn record(&mut self, probe: &Probe, recv_ns: u64, window: &Window) {
        self.packets += 1;
        let key = (probe.publisher, probe.kind);
        if !self.seen.entry(key).or_default().mark(probe.seq) {
            self.duplicates += 1;
            return;
        }
        if window.contains(probe.sent_ns) {
            *self.in_window.entry(key).or_default() += 1;
            self.delay
                .record(recv_ns.saturating_sub(probe.sent_ns) / 1000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_two_percent() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let b = bucket(us);
            assert!(b >= last);
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= us, "{us}: floor {floor}");
            assert!(us - floor <= us / 50 + 1, "{us}: floor {floor}");
        }
        assert!(bucket(u64::MAX) < 4096);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=1000 {
            h.record(us * 10);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((4900..=5000).contains(&p50), "{p50}");
        assert!((9700..=9900).contains(&p99), "{p99}");
        let max = h.quantile(1.0).unwrap();
        assert!((9800..=10_000).contains(&max), "{max}");
        let mut m = Histogram::default();
        m.record(1);
        m.merge(&h);
        assert_eq!(m.count(), 1001);
        assert_eq!(m.quantile(0.0), Some(1));
    }

    #[test]
    fn reception_counts_each_probe_once_and_only_inside_the_window() {
        let w = Window::default();
        w.open(1_000);
        w.close(2_000);
        let mut r = Reception::default();
        let probe = |seq, sent_ns| Probe {
            publisher: 1,
            kind: StreamKind::Audio,
            keyframe_start: false,
            seq,
            sent_ns,
        };
        r.record(&probe(0, 500), 600, &w);
        r.record(&probe(1, 1_000), 3_000, &w);
        r.record(&probe(1, 1_000), 3_500, &w);
        r.record(&probe(200, 1_999), 5_000_000, &w);
        r.record(&probe(201, 2_000), 2_100, &w);
        assert_eq!(r.packets, 5);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.in_window[&(1, StreamKind::Audio)], 2);
        assert_eq!(r.delay.count(), 2);
        let max = r.delay.quantile(1.0).unwrap();
        assert!((4900..=4998).contains(&max), "{max}");
    }
}

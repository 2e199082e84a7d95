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

    /// The window has opened by `at_ns` (it may have closed since).
    pub fn opened(&self, at_ns: u64) -> bool {
        at_ns >= self.start_ns.load(Ordering::Relaxed)
    }

    /// Sent after the window closed.
    pub fn after(&self, sent_ns: u64) -> bool {
        sent_ns >= self.end_ns.load(Ordering::Relaxed)
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

/// One received stream: a publisher's audio, or one simulcast layer of its video (layer 0
/// for audio and for video sent as one encoding).
pub type StreamKey = (u16, StreamKind, u8);

/// Which layer of a publisher's video a receiver is on at the end of the window (packets sent
/// after it are not looked at), and how often that changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerTrack {
    /// The layer of the last keyframe start that arrived (an SFU moves a receiver to another
    /// layer at one of its keyframes); before any, the layer of the last packet.
    pub current: u8,
    keyframe_seen: bool,
    /// Moves to another layer, seen as a keyframe start of another layer than the current one.
    pub switches: u64,
    /// Of those, the ones whose keyframe was sent inside the window.
    pub switches_in_window: u64,
}

/// One receiver's counts, for the streams it receives.
#[derive(Debug, Default, Clone)]
pub struct Reception {
    seen: HashMap<StreamKey, Seen>,
    /// Distinct probes sent inside the window that arrived, per stream.
    pub in_window: HashMap<StreamKey, u64>,
    /// The lowest and highest probe sequence number among those, per stream.
    pub spans: HashMap<StreamKey, (u32, u32)>,
    /// Their payload bytes, per stream.
    pub bytes_in_window: HashMap<StreamKey, u64>,
    /// The video layer each publisher's video is on here.
    pub layers: HashMap<u16, LayerTrack>,
    pub delay: Histogram,
    /// Every RTP packet with a probe, duplicates and out-of-window ones included.
    pub packets: u64,
    pub duplicates: u64,
}

impl Reception {
    /// Counts a packet of `payload_len` bytes that arrived at `recv_ns`.
    pub fn record(&mut self, probe: &Probe, payload_len: usize, recv_ns: u64, window: &Window) {
        self.count(probe, payload_len, Some(recv_ns), window);
    }

    /// Counts a packet whose probe was inferred from its RTP header ([`crate::sample`]): as
    /// [`Reception::record`], but its send time is an estimate, so it adds no delay.
    pub fn record_counted(&mut self, probe: &Probe, payload_len: usize, window: &Window) {
        self.count(probe, payload_len, None, window);
    }

    fn count(&mut self, probe: &Probe, payload_len: usize, recv_ns: Option<u64>, window: &Window) {
        self.packets += 1;
        let key = (probe.publisher, probe.kind, probe.layer);
        if !self.seen.entry(key).or_default().mark(probe.seq) {
            self.duplicates += 1;
            return;
        }
        let inside = window.contains(probe.sent_ns);
        if probe.kind == StreamKind::Video && !window.after(probe.sent_ns) {
            let t = self.layers.entry(probe.publisher).or_default();
            if probe.keyframe_start {
                if t.keyframe_seen && t.current != probe.layer {
                    t.switches += 1;
                    t.switches_in_window += inside as u64;
                }
                t.keyframe_seen = true;
                t.current = probe.layer;
            } else if !t.keyframe_seen {
                t.current = probe.layer;
            }
        }
        if inside {
            *self.in_window.entry(key).or_default() += 1;
            *self.bytes_in_window.entry(key).or_default() += payload_len as u64;
            let span = self.spans.entry(key).or_insert((probe.seq, probe.seq));
            span.0 = span.0.min(probe.seq);
            span.1 = span.1.max(probe.seq);
            if let Some(recv_ns) = recv_ns {
                self.delay
                    .record(recv_ns.saturating_sub(probe.sent_ns) / 1000);
            }
        }
    }

    /// Distinct probes of `publisher`'s `kind` sent inside the window that arrived, all layers.
    pub fn arrived(&self, publisher: u16, kind: StreamKind) -> u64 {
        self.in_window
            .iter()
            .filter(|((p, k, _), _)| *p == publisher && *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// The video packets of `publisher` this receiver should have got in the window, and how
    /// many of them arrived, given what the publisher sent in the window per layer (`sent`,
    /// lowest layer first). A receiver that got one layer throughout should have got all of
    /// it; one that moved between layers should have got, of each layer, the packets from the
    /// first to the last that arrived (the part it was on; a loss just before a move is not
    /// counted). A receiver that got nothing should have got the top layer.
    pub fn video_expected(&self, publisher: u16, sent: &[u64]) -> (u64, u64) {
        let got: Vec<(u8, u64)> = self
            .in_window
            .iter()
            .filter(|((p, k, _), _)| *p == publisher && *k == StreamKind::Video)
            .map(|((_, _, l), n)| (*l, *n))
            .collect();
        match got.as_slice() {
            [] => (sent.last().copied().unwrap_or(0), 0),
            [(layer, n)] => {
                let expected = sent.get(*layer as usize).copied().unwrap_or(0);
                (expected.max(*n), *n)
            }
            several => several.iter().fold((0, 0), |(e, r), (layer, n)| {
                let (lo, hi) = self.spans[&(publisher, StreamKind::Video, *layer)];
                (e + u64::from(hi - lo) + 1, r + n)
            }),
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
            layer: 0,
            seq,
            sent_ns,
        };
        r.record(&probe(0, 500), 80, 600, &w);
        r.record(&probe(1, 1_000), 80, 3_000, &w);
        r.record(&probe(1, 1_000), 80, 3_500, &w);
        r.record(&probe(200, 1_999), 80, 5_000_000, &w);
        r.record(&probe(201, 2_000), 80, 2_100, &w);
        assert_eq!(r.packets, 5);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.in_window[&(1, StreamKind::Audio, 0)], 2);
        assert_eq!(r.arrived(1, StreamKind::Audio), 2);
        assert_eq!(r.bytes_in_window[&(1, StreamKind::Audio, 0)], 160);
        assert_eq!(r.delay.count(), 2);
        let max = r.delay.quantile(1.0).unwrap();
        assert!((4900..=4998).contains(&max), "{max}");
    }

    fn video(layer: u8, seq: u32, key: bool, sent_ns: u64) -> Probe {
        Probe {
            publisher: 2,
            kind: StreamKind::Video,
            keyframe_start: key,
            layer,
            seq,
            sent_ns,
        }
    }

    #[test]
    fn layer_moves_are_counted_at_keyframes_of_another_layer() {
        let w = Window::default();
        w.open(100);
        w.close(1_000);
        let mut r = Reception::default();
        // Starts on layer 0 before the window, moves to 2 inside it; a late resend of a
        // layer-0 packet (not a keyframe start) is no move. Switches before the window count
        // in `switches` only.
        r.record(&video(0, 0, true, 10), 900, 20, &w);
        r.record(&video(0, 1, false, 20), 900, 30, &w);
        r.record(&video(2, 0, true, 200), 1100, 210, &w);
        r.record(&video(0, 2, false, 190), 900, 220, &w);
        r.record(&video(2, 1, false, 230), 1100, 240, &w);
        let t = r.layers[&2];
        assert_eq!((t.current, t.switches, t.switches_in_window), (2, 1, 1));
        // Back to 0 after the window: not looked at.
        r.record(&video(0, 3, true, 1_500), 900, 1_510, &w);
        let t = r.layers[&2];
        assert_eq!((t.current, t.switches, t.switches_in_window), (2, 1, 1));
        // Video counts per layer, all layers together.
        assert_eq!(r.arrived(2, StreamKind::Video), 3);
        assert_eq!(r.bytes_in_window[&(2, StreamKind::Video, 2)], 2200);
    }

    #[test]
    fn expected_video_follows_the_layers_that_arrived() {
        let w = Window::default();
        w.open(0);
        w.close(1_000_000);
        // One layer throughout: all of what the publisher sent in it.
        let mut one = Reception::default();
        for seq in [0, 1, 3] {
            one.record(&video(2, seq, seq == 0, 10), 1000, 20, &w);
        }
        assert_eq!(one.video_expected(2, &[10, 20, 40]), (40, 3));
        // Two layers: of each, its first to its last arrival (5–9 of layer 0 with 7 lost,
        // 100–104 of layer 1).
        let mut moved = Reception::default();
        for seq in [5, 6, 8, 9] {
            moved.record(&video(0, seq, seq == 5, 10), 300, 20, &w);
        }
        for seq in 100..=104 {
            moved.record(&video(1, seq, seq == 100, 10), 300, 20, &w);
        }
        assert_eq!(moved.video_expected(2, &[10, 20, 40]), (10, 9));
        // Nothing: the top layer was owed; another publisher's video is not this one's.
        assert_eq!(
            Reception::default().video_expected(2, &[10, 20, 40]),
            (40, 0)
        );
        assert_eq!(moved.video_expected(3, &[7]), (7, 0));
        // One encoding (layer 0): all of what was sent, as without simulcast.
        let mut single = Reception::default();
        for seq in [0, 2, 3] {
            single.record(&video(0, seq, seq == 0, 10), 1000, 20, &w);
        }
        assert_eq!(single.video_expected(2, &[4]), (4, 3));
    }
}

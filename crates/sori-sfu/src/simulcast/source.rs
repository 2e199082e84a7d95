//! A published track's layers as the core sees them at the publisher: each one's `rid`, its
//! measured bitrate, its frame height, its keyframe-request throttle and when it last arrived.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::throttle::KeyframeThrottle;

/// Most layers a track may have; more `rid`s in an offer are not forwarded.
pub(crate) const MAX_LAYERS: usize = 4;
/// Most temporal layers told apart (VP8 `TID` 0..=3).
pub(crate) const MAX_TEMPORAL: usize = 4;
/// A layer from which nothing arrived for this long is not arriving: receivers are not switched
/// to it (the publisher paused it, or its own uplink dropped it).
pub(crate) const ARRIVING: Duration = Duration::from_millis(1500);
/// A layer whose sibling ended this many frames since its last packet has stopped arriving,
/// however recent that packet: a publisher whose bandwidth estimate fell stops encoding its
/// upper layers, and receivers on them are moved down within a few frames rather than after
/// [`ARRIVING`]. (Frames, not time: a screen share's layers may both be a second apart.)
pub(crate) const OVERTAKEN_FRAMES: u64 = 6;
/// How long a layer's highest rate measured stands for it. An encoder's rate swings with the
/// picture: a layer judged by a quiet moment would be taken on a link it then overruns.
const PEAK_HOLD: Duration = Duration::from_secs(10);

/// Bitrate over a sliding window of [`RateMeter::BUCKETS`] buckets of [`RateMeter::BUCKET`].
#[derive(Debug, Default, Clone)]
pub(crate) struct RateMeter {
    /// (bucket start, bytes), oldest first.
    buckets: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    const BUCKET: Duration = Duration::from_millis(250);
    const BUCKETS: usize = 8;
    /// The window measured: [`Self::BUCKETS`] × [`Self::BUCKET`].
    pub(crate) const WINDOW: Duration = Duration::from_millis(2000);

    /// Counts `bytes` arriving at `now`.
    pub(crate) fn add(&mut self, bytes: usize, now: Instant) {
        match self.buckets.back_mut() {
            Some((start, b)) if now < *start + Self::BUCKET => *b += bytes as u64,
            _ => {
                self.buckets.push_back((now, bytes as u64));
                if self.buckets.len() > Self::BUCKETS {
                    self.buckets.pop_front();
                }
            }
        }
    }

    /// Bits per second over the window ending at `now` (0 when nothing arrived in it).
    pub(crate) fn bps(&self, now: Instant) -> u64 {
        let window = Self::BUCKET * Self::BUCKETS as u32;
        let from = now.checked_sub(window);
        let bytes: u64 = self
            .buckets
            .iter()
            .filter(|(t, _)| from.is_none_or(|f| *t >= f))
            .map(|(_, b)| b)
            .sum();
        bytes * 8 * 1000 / window.as_millis() as u64
    }
}

/// A packet of layer `layer` arrived; `ends_frame`: its marker bit. Counts for [`arrives`].
pub(crate) fn note_packet(layers: &mut [SourceLayer], layer: usize, ends_frame: bool) {
    if layers.len() < 2 || layer >= layers.len().min(MAX_LAYERS) {
        return;
    }
    if ends_frame {
        layers[layer].frames += 1;
    }
    let mut seen = [0; MAX_LAYERS];
    for (s, l) in seen.iter_mut().zip(layers.iter()) {
        *s = l.frames;
    }
    layers[layer].others_at_last = seen;
}

/// Whether layer `layer` of a track arrives now: a packet of it came within [`ARRIVING`], and
/// no other layer ended [`OVERTAKEN_FRAMES`] frames since.
pub(crate) fn arrives(layers: &[SourceLayer], layer: usize, now: Instant) -> bool {
    let Some(me) = layers.get(layer) else {
        return false;
    };
    me.arriving(now)
        && !layers
            .iter()
            .enumerate()
            .take(MAX_LAYERS)
            .any(|(i, other)| {
                i != layer && other.frames.saturating_sub(me.others_at_last[i]) >= OVERTAKEN_FRAMES
            })
}

/// One encoding of a published track.
#[derive(Debug)]
pub(crate) struct SourceLayer {
    /// Its `rid` (`None`: the track is sent as one encoding).
    pub(crate) rid: Option<Rid>,
    pub(crate) throttle: KeyframeThrottle,
    /// All of its packets.
    pub(crate) meter: RateMeter,
    /// Its packets per temporal layer (`TID`), when the codec says.
    pub(crate) temporal: [RateMeter; MAX_TEMPORAL],
    /// Whether any packet carried a temporal layer id.
    pub(crate) has_temporal: bool,
    /// The highest bitrate measured over the last [`PEAK_HOLD`] it was arriving (kept while it
    /// is paused), and when it was measured.
    peak_bps: u64,
    peak_at: Option<Instant>,
    /// Its frame height, from its last keyframe.
    pub(crate) height: Option<u32>,
    pub(crate) last_packet: Option<Instant>,
    /// When it started arriving (again): its meter covers a whole window only after
    /// [`RateMeter::WINDOW`].
    arriving_since: Option<Instant>,
    /// Whether the publisher was last told to send it (dynacast), and when someone last
    /// wanted it.
    pub(crate) active: bool,
    pub(crate) last_wanted: Option<Instant>,
    /// Frames it ended (packets with the marker bit).
    frames: u64,
    /// Each layer's `frames` when its last packet arrived.
    others_at_last: [u64; MAX_LAYERS],
}

impl SourceLayer {
    pub(crate) fn new(rid: Option<Rid>, throttle: KeyframeThrottle) -> Self {
        Self {
            rid,
            throttle,
            meter: RateMeter::default(),
            temporal: Default::default(),
            has_temporal: false,
            peak_bps: 0,
            peak_at: None,
            height: None,
            last_packet: None,
            arriving_since: None,
            active: true,
            last_wanted: None,
            frames: 0,
            others_at_last: [0; MAX_LAYERS],
        }
    }

    /// Whether packets of it arrive now.
    pub(crate) fn arriving(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < ARRIVING)
    }

    /// One of its packets arrived.
    pub(crate) fn packet(&mut self, bytes: usize, tid: Option<u8>, now: Instant) {
        self.meter.add(bytes, now);
        if let Some(t) = tid {
            self.has_temporal = true;
            if let Some(m) = self.temporal.get_mut(t as usize) {
                m.add(bytes, now);
            }
        }
        if !self.arriving(now) {
            self.arriving_since = Some(now);
        }
        self.last_packet = Some(now);
    }

    /// Its bitrate for layer selection as far as it knows: the highest measured over a full
    /// window in the last [`PEAK_HOLD`] while it arrives, else the last such peak (a layer that
    /// has just resumed or just stopped has a half-empty window that would make it look cheap),
    /// or `None` when it was never measured over a full window ([`layer_rates`] guesses).
    pub(crate) fn known_bitrate(&mut self, now: Instant) -> Option<u64> {
        let measured = self.meter.bps(now);
        // The window is full: packets arrived all through it, up to now (not a layer that has
        // just resumed, nor one that has just stopped and whose window is emptying).
        let full = self
            .arriving_since
            .is_some_and(|t| now.saturating_duration_since(t) >= RateMeter::WINDOW)
            && self
                .last_packet
                .is_some_and(|t| now.saturating_duration_since(t) < RateMeter::BUCKET * 2);
        if full && measured > 0 {
            let stale = self
                .peak_at
                .is_none_or(|t| now.saturating_duration_since(t) >= PEAK_HOLD);
            if measured >= self.peak_bps || stale {
                self.peak_bps = measured;
                self.peak_at = Some(now);
            }
            return Some(self.peak_bps);
        }
        (self.peak_bps > 0).then(|| self.peak_bps.max(measured))
    }

    /// What it sends per second judged from the time it has been arriving, for a layer not
    /// yet measured over a whole window: the bytes of its meter over that time, where
    /// [`RateMeter::bps`] spreads them over the whole window (100 ms after a start the meter
    /// shows a twentieth of the rate). `None` before [`RateMeter::BUCKET`]: a few packets say
    /// little of a rate.
    fn rate_so_far(&self, now: Instant) -> Option<u64> {
        let measured = self.meter.bps(now);
        let elapsed = now.saturating_duration_since(self.arriving_since?);
        if elapsed >= RateMeter::WINDOW {
            return Some(measured);
        }
        if elapsed < RateMeter::BUCKET {
            return None;
        }
        let scaled = u128::from(measured) * RateMeter::WINDOW.as_micros() / elapsed.as_micros();
        Some(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// Cumulative bitrates of its temporal layers (empty: none seen).
    pub(crate) fn temporal_bps(&self, now: Instant) -> Vec<u64> {
        if !self.has_temporal {
            return Vec::new();
        }
        let mut sum = 0;
        let mut out: Vec<u64> = self
            .temporal
            .iter()
            .map(|m| {
                sum += m.bps(now);
                sum
            })
            .collect();
        while out.len() > 1 && out[out.len() - 1] == out[out.len() - 2] {
            out.pop();
        }
        out
    }
}

/// Each layer's bitrate for layer selection, lowest first. A layer never measured over a full
/// window counts, when it is the track's only layer, as what it has sent per second since it
/// started (no choice hangs on it, but the estimator's first probes aim at twice what the
/// receivers' tracks need: at a twentieth of the rate they paced the video at that for a third
/// of a second and dragged the estimate below it), and before a quarter second as the guess
/// below. One of several counts as a guess from the nearest measured layer, a third of it per
/// step down or three times per step up (the steps of the usual 150 k / 500 k / 1.5 Mbit/s
/// ladder), or with none measured 1.5 Mbit/s for the top layer and a third per step below,
/// unless it already measures more (a layer that started 100 ms ago has sent a twentieth of a
/// window's worth).
pub(crate) fn layer_rates(layers: &mut [SourceLayer], now: Instant) -> Vec<u64> {
    let known: Vec<Option<u64>> = layers.iter_mut().map(|l| l.known_bitrate(now)).collect();
    let top = layers.len().saturating_sub(1);
    let steps = |n: usize| 3u64.saturating_pow(u32::try_from(n).unwrap_or(u32::MAX));
    (0..layers.len())
        .map(|i| {
            let measured = layers[i].meter.bps(now);
            if let Some(bps) = known[i] {
                return bps;
            }
            if layers.len() == 1 && layers[i].arriving(now) && measured > 0 {
                if let Some(bps) = layers[i].rate_so_far(now) {
                    return bps;
                }
            }
            let above = (i + 1..layers.len()).find_map(|j| Some((j, known[j]?)));
            let below = (0..i).rev().find_map(|j| Some((j, known[j]?)));
            let guess = match (above, below) {
                (Some((j, bps)), _) => bps / steps(j - i),
                (None, Some((j, bps))) => bps.saturating_mul(steps(i - j)),
                (None, None) => 1_500_000 / steps(top - i),
            };
            guess.max(measured)
        })
        .collect()
}

/// Orders a simulcast offer's `rid`s from the lowest layer to the highest: by the names the
/// usual conventions give them (`q`/`h`/`f`, `l`/`m`/`h`, `low`/`mid`/`high`, numbers), and
/// otherwise as the offer lists them (browsers list encodings lowest first by convention).
pub(crate) fn rank_rids(rids: &[Rid]) -> Vec<Rid> {
    const SCHEMES: [&[&str]; 3] = [&["q", "h", "f"], &["l", "m", "h"], &["low", "mid", "high"]];
    let names: Vec<String> = rids.iter().map(|r| r.to_string()).collect();
    for scheme in SCHEMES {
        if names.iter().all(|n| scheme.contains(&n.as_str())) {
            let mut out = rids.to_vec();
            out.sort_by_key(|r| scheme.iter().position(|s| *s == r.to_string()));
            return out;
        }
    }
    if names.iter().all(|n| n.parse::<u32>().is_ok()) {
        let mut out = rids.to_vec();
        out.sort_by_key(|r| r.to_string().parse::<u32>().unwrap_or(0));
        return out;
    }
    rids.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rids(names: &[&str]) -> Vec<Rid> {
        names.iter().map(|n| Rid::from(*n)).collect()
    }

    fn names(rids: &[Rid]) -> Vec<String> {
        rids.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn a_resumed_layer_counts_at_its_last_rate_until_its_window_is_full() {
        let t0 = Instant::now();
        let mut l = SourceLayer::new(None, KeyframeThrottle::new(Duration::ZERO, Duration::ZERO));
        let ms = Duration::from_millis;
        for i in 0..300 {
            l.packet(1000, None, t0 + ms(10 * i));
        }
        let live = l.known_bitrate(t0 + ms(3000)).unwrap();
        assert!((700_000..=900_000).contains(&live), "{live}");
        // Paused for 10 s, then back: 200 ms in, the meter has a tenth of a window.
        let back = t0 + Duration::from_secs(13);
        for i in 0..20 {
            l.packet(1000, None, back + ms(10 * i));
        }
        assert_eq!(l.known_bitrate(back + ms(200)).unwrap(), live);
        // A whole window later it is measured again.
        for i in 20..220 {
            l.packet(500, None, back + ms(10 * i));
        }
        let now = l.known_bitrate(back + ms(2200)).unwrap();
        assert!((350_000..=450_000).contains(&now), "{now}");
    }

    #[test]
    fn rids_are_ordered_lowest_first() {
        assert_eq!(names(&rank_rids(&rids(&["f", "h", "q"]))), ["q", "h", "f"]);
        assert_eq!(names(&rank_rids(&rids(&["h", "m", "l"]))), ["l", "m", "h"]);
        assert_eq!(names(&rank_rids(&rids(&["2", "0", "1"]))), ["0", "1", "2"]);
        assert_eq!(names(&rank_rids(&rids(&["h", "f"]))), ["h", "f"]);
        assert_eq!(names(&rank_rids(&rids(&["b", "a"]))), ["b", "a"]);
    }

    #[test]
    fn the_meter_measures_the_last_two_seconds() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        // 125 bytes every 10 ms for 3 s: 100 kbit/s.
        for i in 0..300 {
            m.add(125, t0 + Duration::from_millis(10 * i));
        }
        let bps = m.bps(t0 + Duration::from_millis(3000));
        assert!((90_000..=110_000).contains(&bps), "{bps}");
        // Silence: the window empties.
        assert_eq!(m.bps(t0 + Duration::from_secs(10)), 0);
    }

    #[test]
    fn a_layer_counts_at_its_peak_of_the_last_ten_seconds() {
        let t0 = Instant::now();
        let mut l = SourceLayer::new(None, KeyframeThrottle::new(Duration::ZERO, Duration::ZERO));
        let ms = Duration::from_millis;
        // 800 kbit/s for 3 s, then 400 kbit/s.
        for i in 0..300 {
            l.packet(1000, None, t0 + ms(10 * i));
        }
        let peak = l.known_bitrate(t0 + ms(3000)).unwrap();
        assert!((700_000..=900_000).contains(&peak), "{peak}");
        let mut quiet = 0;
        for i in 300..1600 {
            let now = t0 + ms(10 * i);
            l.packet(500, None, now);
            if i % 50 == 0 {
                quiet = l.known_bitrate(now).unwrap();
                if i < 1200 {
                    assert_eq!(quiet, peak, "a quiet moment {}0 ms in", i);
                }
            }
        }
        assert!(
            (350_000..=450_000).contains(&quiet),
            "ten seconds later: {quiet}"
        );
    }

    #[test]
    fn a_layer_never_measured_is_guessed_from_the_others() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let throttle = || KeyframeThrottle::new(Duration::ZERO, Duration::ZERO);
        let mut layers: Vec<SourceLayer> =
            (0..3).map(|_| SourceLayer::new(None, throttle())).collect();
        assert_eq!(layer_rates(&mut layers, t0), [166_666, 500_000, 1_500_000]);
        // The top layer, 300 ms in at 2 Mbit/s: 75 kB, a 2 s window's 300 kbit/s. Not cheap.
        for i in 0..30 {
            layers[2].packet(2500, None, t0 + ms(10 * i));
        }
        assert_eq!(
            layer_rates(&mut layers, t0 + ms(300)),
            [166_666, 500_000, 1_500_000]
        );
        // A whole window later it is measured, and the paused ones below follow it.
        for i in 30..230 {
            layers[2].packet(2500, None, t0 + ms(10 * i));
        }
        let rates = layer_rates(&mut layers, t0 + ms(2300));
        assert!((1_800_000..=2_200_000).contains(&rates[2]), "{rates:?}");
        assert_eq!(rates[..2], [rates[2] / 9, rates[2] / 3]);
        // The track's only layer counts as what it has sent per second since it started
        // (2 Mbit/s, not the meter's 300 kbit/s), after a quarter second; before, as guessed.
        let mut one = vec![SourceLayer::new(None, throttle())];
        for i in 0..10 {
            one[0].packet(2500, None, t0 + ms(10 * i));
        }
        assert_eq!(layer_rates(&mut one, t0 + ms(100)), [1_500_000]);
        for i in 10..30 {
            one[0].packet(2500, None, t0 + ms(10 * i));
        }
        assert_eq!(layer_rates(&mut one, t0 + ms(300)), [2_000_000]);
        // A whole window in, the meter's measure.
        for i in 30..250 {
            one[0].packet(2500, None, t0 + ms(10 * i));
        }
        assert_eq!(layer_rates(&mut one, t0 + ms(2500)), [2_000_000]);
    }

    #[test]
    fn a_paused_layer_keeps_its_last_bitrate() {
        let t0 = Instant::now();
        let mut l = SourceLayer::new(None, KeyframeThrottle::new(Duration::ZERO, Duration::ZERO));
        assert_eq!(l.known_bitrate(t0), None);
        for i in 0..200 {
            l.packet(1000, None, t0 + Duration::from_millis(10 * i));
        }
        let now = t0 + Duration::from_secs(2);
        let live = l.known_bitrate(now).unwrap();
        assert!((700_000..=900_000).contains(&live), "{live}");
        assert_eq!(
            l.known_bitrate(now + Duration::from_secs(30)).unwrap(),
            live
        );
    }
}

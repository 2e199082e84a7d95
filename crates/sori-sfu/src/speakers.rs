//! Who is talking: audio levels in, the active speakers and the dominant speaker out.
//!
//! Every browser puts the loudness of each Opus packet in the `ssrc-audio-level` RTP header
//! extension (RFC 6464: 0 to -127 dBov, 0 the loudest); nothing is decoded. Levels are summed
//! per participant ([`SpeakerDetector::observe`], or [`SpeakerDetector::observe_sum`] for sums
//! made elsewhere), and every [`SpeakerDetector::tick`] (ten to twenty a second) turns them into:
//!
//! - **activity**: how far the tick's mean loudness is above the participant's own noise floor
//!   (which follows the quietest level heard, falling at once and rising slowly, so a fan or a
//!   busy street is not speech), 0 below an absolute gate or without packets;
//! - a **score**: the activity smoothed with a time constant of [`SpeakerConfig::tau`];
//! - **speaking**: the score above [`SpeakerConfig::speaking_on`], until it falls below
//!   [`SpeakerConfig::speaking_off`];
//! - the **dominant speaker**: a challenger takes the floor once its score has been at least
//!   [`SpeakerConfig::ratio`] times the dominant's, and it speaking, for
//!   [`SpeakerConfig::hold`] on end. A cough is too short to hold the lead; a real change of
//!   speaker shows within about half a second; nobody speaking leaves the floor where it was.
//!
//! Sans-IO like the rest of the core: time comes in with each call, so the tests script level
//! sequences on virtual time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How the detector decides.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Time constant of the score.
    pub tau: Duration,
    /// How long a challenger must lead before it takes the floor.
    pub hold: Duration,
    /// How many times the dominant's score a challenger's must be to lead.
    pub ratio: f32,
    /// Score from which a participant counts as speaking.
    pub speaking_on: f32,
    /// Score below which a speaking participant stops counting as speaking.
    pub speaking_off: f32,
    /// Loudness (dB above -127 dBov) below which a tick is silence whatever the floor.
    pub gate: f32,
    /// dB above the noise floor that are still noise.
    pub margin: f32,
    /// How fast the noise floor rises toward louder sound (dB per second).
    pub floor_rise: f32,
    /// The noise floor of a participant not heard yet (dB above -127 dBov): the quietest
    /// level of its first tick lowers it at once, and a louder room raises it at `floor_rise`.
    pub floor_start: f32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            tau: Duration::from_millis(150),
            hold: Duration::from_millis(200),
            ratio: 1.3,
            speaking_on: 8.0,
            speaking_off: 4.0,
            // -85 dBov: quieter than any voice into a working microphone.
            gate: 42.0,
            margin: 10.0,
            floor_rise: 2.0,
            // -67 dBov: a quiet room.
            floor_start: 60.0,
        }
    }
}

/// The most activity one tick counts (dB above the floor and margin): a shouter does not
/// outweigh a talker for longer than a talker outweighs silence.
const MAX_ACTIVITY: f32 = 30.0;

#[derive(Debug)]
struct Talker {
    /// Loudness summed over the packets of the current tick, and their number.
    sum: u64,
    packets: u32,
    floor: Option<f32>,
    score: f32,
    speaking: bool,
}

/// What a tick found.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick<K> {
    /// The participants speaking now, loudest first, each with its level (0 to 1).
    pub speakers: Vec<(K, f32)>,
    /// Whether the set of speakers differs from the last tick's.
    pub speakers_changed: bool,
    /// The new dominant speaker, when it changed at this tick.
    pub dominant: Option<K>,
}

/// Active speakers and the dominant speaker of one room.
#[derive(Debug)]
pub struct SpeakerDetector<K> {
    config: SpeakerConfig,
    talkers: HashMap<K, Talker>,
    dominant: Option<K>,
    /// The participant leading the dominant, and since when.
    challenger: Option<(K, Instant)>,
    last_tick: Option<Instant>,
    changes: u64,
}

impl<K: Copy + Eq + Hash + Ord> SpeakerDetector<K> {
    /// A detector deciding as `config` says.
    pub fn new(config: SpeakerConfig) -> Self {
        Self {
            config,
            talkers: HashMap::new(),
            dominant: None,
            challenger: None,
            last_tick: None,
            changes: 0,
        }
    }

    /// One audio packet of `who` with `level` (-dBov: 0 the loudest, -127 silence).
    pub fn observe(&mut self, who: K, level: i8) {
        let loudness = 127 - u64::from(level.unsigned_abs().min(127));
        self.observe_sum(who, loudness, 1);
    }

    /// `packets` audio packets of `who` whose loudnesses (127 + level, 0 to 127) sum to `sum`.
    pub fn observe_sum(&mut self, who: K, sum: u64, packets: u32) {
        let t = self.talkers.entry(who).or_insert(Talker {
            sum: 0,
            packets: 0,
            floor: None,
            score: 0.0,
            speaking: false,
        });
        t.sum += sum;
        t.packets += packets;
    }

    /// `who` left: forgotten; the floor is free if it had it.
    pub fn remove(&mut self, who: K) {
        self.talkers.remove(&who);
        if self.dominant == Some(who) {
            self.dominant = None;
        }
        if self.challenger.is_some_and(|(c, _)| c == who) {
            self.challenger = None;
        }
    }

    /// Forgets every participant `keep` says no to (those who left).
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        let gone: Vec<K> = self.talkers.keys().filter(|k| !keep(k)).copied().collect();
        for k in gone {
            self.remove(k);
        }
        if self.dominant.is_some_and(|d| !keep(&d)) {
            self.dominant = None;
        }
    }

    /// The dominant speaker.
    pub fn dominant(&self) -> Option<K> {
        self.dominant
    }

    /// How many times the dominant speaker changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Turns the levels since the last tick into speakers and the dominant speaker. Call it
    /// every 50 to 100 ms.
    pub fn tick(&mut self, now: Instant) -> Tick<K> {
        let dt = self
            .last_tick
            .map_or(Duration::from_millis(100), |t| {
                now.saturating_duration_since(t)
            })
            .min(Duration::from_secs(1));
        self.last_tick = Some(now);
        let c = &self.config;
        let keep = 1.0 - (-dt.as_secs_f32() / c.tau.as_secs_f32()).exp();
        let mut changed = false;
        for t in self.talkers.values_mut() {
            let activity = if t.packets == 0 {
                // No packets: muted, or silence the sender does not send (DTX).
                0.0
            } else {
                let loudness = t.sum as f32 / t.packets as f32;
                let floor = match t.floor {
                    None => c.floor_start.min(loudness),
                    Some(f) => (f + c.floor_rise * dt.as_secs_f32()).min(loudness),
                };
                t.floor = Some(floor);
                if loudness < c.gate {
                    0.0
                } else {
                    (loudness - floor - c.margin).clamp(0.0, MAX_ACTIVITY)
                }
            };
            t.sum = 0;
            t.packets = 0;
            t.score += (activity - t.score) * keep;
            let speaking = if t.speaking {
                t.score >= c.speaking_off
            } else {
                t.score >= c.speaking_on
            };
            changed |= speaking != t.speaking;
            t.speaking = speaking;
        }
        let mut speakers: Vec<(K, f32)> = self
            .talkers
            .iter()
            .filter(|(_, t)| t.speaking)
            .map(|(&k, t)| (k, (t.score / MAX_ACTIVITY).clamp(0.0, 1.0)))
            .collect();
        speakers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let dominant = self.decide(now);
        Tick {
            speakers,
            speakers_changed: changed,
            dominant,
        }
    }

    /// The floor: who leads, for how long, and whether that changes the dominant speaker.
    fn decide(&mut self, now: Instant) -> Option<K> {
        let c = &self.config;
        let held = self
            .dominant
            .and_then(|d| self.talkers.get(&d))
            .map_or(0.0, |t| t.score);
        // The loudest speaking participant other than the dominant one (ties: the lowest key,
        // so that the outcome never depends on the map's order).
        let best = self
            .talkers
            .iter()
            .filter(|(k, t)| t.speaking && Some(**k) != self.dominant)
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score).then(b.0.cmp(a.0)))
            .map(|(&k, t)| (k, t.score));
        let Some((who, _)) = best.filter(|&(_, s)| s >= held * c.ratio) else {
            self.challenger = None;
            return None;
        };
        let since = match self.challenger {
            Some((k, since)) if k == who => since,
            _ => {
                self.challenger = Some((who, now));
                now
            }
        };
        // Also when nobody had the floor: the first speaker takes it once it has spoken for
        // `hold` (a cough in a silent room takes nothing either).
        if now.saturating_duration_since(since) < c.hold {
            return None;
        }
        self.dominant = Some(who);
        self.challenger = None;
        self.changes += 1;
        Some(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(50);
    const PACKET: Duration = Duration::from_millis(20);
    const SPEECH: i8 = -30;
    const SILENCE: i8 = -127;

    /// A script: for each participant, its level over time as (from, level) steps.
    struct Script {
        steps: Vec<(u32, Duration, i8)>,
    }

    impl Script {
        fn new() -> Self {
            Self { steps: Vec::new() }
        }
        /// From `at_ms` on, `who` sends `level`.
        fn at(mut self, at_ms: u64, who: u32, level: i8) -> Self {
            self.steps.push((who, Duration::from_millis(at_ms), level));
            self
        }
        fn level(&self, who: u32, t: Duration) -> Option<i8> {
            self.steps
                .iter()
                .filter(|(w, at, _)| *w == who && *at <= t)
                .max_by_key(|(_, at, _)| *at)
                .map(|&(_, _, l)| l)
        }
    }

    /// Runs `script` for `secs` seconds over participants `who`, packets every 20 ms and a
    /// tick every 50 ms; returns the dominant changes as (milliseconds, who) and the ticks.
    fn run(script: &Script, who: &[u32], secs: u64) -> (Vec<(u64, u32)>, Vec<Tick<u32>>) {
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let start = Instant::now();
        let mut changes = Vec::new();
        let mut ticks = Vec::new();
        let mut next_packet = Duration::ZERO;
        for n in 1..=secs * 20 {
            let t = TICK * n as u32;
            while next_packet < t {
                for &w in who {
                    if let Some(level) = script.level(w, next_packet) {
                        d.observe(w, level);
                    }
                }
                next_packet += PACKET;
            }
            let tick = d.tick(start + t);
            if let Some(k) = tick.dominant {
                changes.push((t.as_millis() as u64, k));
            }
            ticks.push(tick);
        }
        (changes, ticks)
    }

    #[test]
    fn one_talker_takes_the_floor_within_half_a_second_and_keeps_it() {
        let s = Script::new()
            .at(0, 1, SILENCE)
            .at(0, 2, SILENCE)
            .at(1000, 1, SPEECH);
        let (changes, ticks) = run(&s, &[1, 2], 10);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (at, who) = changes[0];
        assert_eq!(who, 1);
        assert!((1000..=1500).contains(&at), "took the floor at {at} ms");
        // Speaking shows sooner than the floor.
        let first = ticks.iter().position(|t| !t.speakers.is_empty()).unwrap();
        let speaking_at = (first as u64 + 1) * TICK.as_millis() as u64;
        assert!(
            speaking_at < at && speaking_at <= 1200,
            "speaking from {speaking_at} ms"
        );
        assert_eq!(ticks.last().unwrap().speakers.len(), 1);
    }

    #[test]
    fn two_alternating_talkers_each_take_the_floor_once_per_turn() {
        // Ada 0–3 s, Bo 3–6 s, Ada 6–9 s, Bo 9–12 s.
        let mut s = Script::new();
        for (turn, who) in [(0, 1), (1, 2), (2, 1), (3, 2)] {
            let from = turn * 3000;
            s = s.at(from, who, SPEECH).at(from, 3 - who, SILENCE);
        }
        let (changes, _) = run(&s, &[1, 2], 13);
        println!("changes (ms, who): {changes:?}");
        let who: Vec<u32> = changes.iter().map(|c| c.1).collect();
        assert_eq!(who, [1, 2, 1, 2], "{changes:?}");
        for (i, &(at, _)) in changes.iter().enumerate() {
            let turn = i as u64 * 3000;
            assert!(
                at >= turn && at <= turn + 400,
                "turn {i} starts at {turn} ms, changed at {at} ms"
            );
        }
    }

    #[test]
    fn a_cough_does_not_steal_the_floor() {
        // Ada talks throughout; Bo coughs for 200 ms at 3 s, then louder for 200 ms at 5 s.
        let s = Script::new()
            .at(0, 1, SPEECH)
            .at(0, 2, SILENCE)
            .at(3000, 2, -20)
            .at(3200, 2, SILENCE)
            .at(5000, 2, -5)
            .at(5200, 2, SILENCE);
        let (changes, ticks) = run(&s, &[1, 2], 8);
        assert_eq!(changes, [(changes[0].0, 1)], "{changes:?}");
        // Bo shows as speaking while coughing (the tile may light), no more.
        assert!(ticks.iter().any(|t| t.speakers.iter().any(|s| s.0 == 2)));
    }

    #[test]
    fn a_cough_in_a_pause_does_not_steal_the_floor_either() {
        // Ada pauses for 300 ms at 3 s; Bo coughs for 200 ms in the pause.
        let s = Script::new()
            .at(0, 1, SPEECH)
            .at(0, 2, SILENCE)
            .at(3000, 1, SILENCE)
            .at(3300, 1, SPEECH)
            .at(3050, 2, -20)
            .at(3250, 2, SILENCE);
        let (changes, _) = run(&s, &[1, 2], 6);
        assert_eq!(
            changes.iter().map(|c| c.1).collect::<Vec<_>>(),
            [1],
            "{changes:?}"
        );
    }

    #[test]
    fn long_silence_leaves_the_floor_where_it_was() {
        let s = Script::new()
            .at(0, 1, SPEECH)
            .at(0, 2, SILENCE)
            .at(2000, 1, SILENCE);
        let (changes, ticks) = run(&s, &[1, 2], 60);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(ticks.last().unwrap().speakers.is_empty());
        // No packets at all (muted, DTX) is silence too.
        let s = Script::new().at(0, 1, SPEECH);
        let (changes, _) = run(&s, &[1], 2);
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn background_noise_is_not_speech() {
        // Cy's microphone hears a fan at -60 dBov all along; Ada speaks from 2 s.
        let s = Script::new()
            .at(0, 3, -60)
            .at(0, 1, SILENCE)
            .at(2000, 1, SPEECH);
        let (changes, ticks) = run(&s, &[1, 3], 10);
        assert_eq!(
            changes.iter().map(|c| c.1).collect::<Vec<_>>(),
            [1],
            "{changes:?}"
        );
        assert!(
            ticks.iter().all(|t| t.speakers.iter().all(|s| s.0 != 3)),
            "the fan never counts as speaking"
        );
        // Cy then speaks over the fan, Ada silent: Cy takes the floor.
        let s = Script::new()
            .at(0, 3, -60)
            .at(0, 1, SPEECH)
            .at(4000, 1, SILENCE)
            .at(4000, 3, -25);
        let (changes, _) = run(&s, &[1, 3], 8);
        assert_eq!(
            changes.iter().map(|c| c.1).collect::<Vec<_>>(),
            [1, 3],
            "{changes:?}"
        );
        assert!(changes[1].0 <= 4500, "{changes:?}");
    }

    #[test]
    fn at_most_two_changes_a_second_however_the_levels_flip() {
        // Ada and Bo swap every 100 ms for ten seconds.
        let mut s = Script::new();
        for i in 0..100u64 {
            let (a, b) = if i % 2 == 0 {
                (SPEECH, SILENCE)
            } else {
                (SILENCE, SPEECH)
            };
            s = s.at(i * 100, 1, a).at(i * 100, 2, b);
        }
        let (changes, _) = run(&s, &[1, 2], 10);
        for w in changes.windows(3) {
            assert!(
                w[2].0 - w[0].0 >= 1000,
                "three changes within a second: {changes:?}"
            );
        }
    }

    #[test]
    fn a_participant_that_leaves_frees_the_floor() {
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let start = Instant::now();
        for n in 1..=20 {
            for _ in 0..(2 + n % 2) {
                d.observe(1u32, SPEECH);
            }
            d.tick(start + TICK * n);
        }
        assert_eq!(d.dominant(), Some(1));
        d.remove(1);
        assert_eq!(d.dominant(), None);
        let t = d.tick(start + TICK * 21);
        assert!(t.speakers.is_empty());
    }
}

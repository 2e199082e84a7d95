//! Sequence-number and timestamp rewriting for one outgoing RTP stream.
//!
//! Every stream a subscriber receives has its own numbering, independent of the publisher's. When
//! the stream's source changes (another publisher, another simulcast layer), numbering continues
//! where it left off: sequence numbers without a gap, timestamps advanced by the wall-clock time
//! that passed. The receiver sees one continuous stream.

use std::collections::VecDeque;
use std::time::Instant;

/// Identifies the incoming stream currently feeding an outgoing one.
pub type SourceKey = u64;

/// The rewriting state of one outgoing stream.
#[derive(Debug, Default)]
pub struct StreamRewriter {
    current: Option<Current>,
    last: Option<Last>,
}

#[derive(Debug)]
struct Current {
    source: SourceKey,
    /// The first incoming sequence number forwarded from this source; older ones are dropped.
    first_seq: u64,
    seq_delta: u64,
    ts_delta: u32,
    /// After packets of the source were skipped: from which incoming sequence number on which
    /// delta applies, oldest first (at most [`MAX_SKIP_SEGMENTS`]).
    skips: VecDeque<(u64, u64)>,
    /// The highest incoming sequence number seen of this source.
    highest: u64,
}

/// Most skip segments kept; older packets than the oldest segment are dropped.
const MAX_SKIP_SEGMENTS: usize = 64;

impl Current {
    /// The sequence-number delta for incoming `seq`.
    fn delta_for(&self, seq: u64) -> u64 {
        self.skips
            .iter()
            .rev()
            .find(|(from, _)| seq >= *from)
            .map_or(self.seq_delta, |(_, d)| *d)
    }
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u64,
    ts: u32,
    at: Instant,
}

/// A rewritten packet's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended outgoing sequence number.
    pub seq: u64,
    /// Outgoing RTP timestamp.
    pub ts: u32,
}

impl StreamRewriter {
    /// Rewrites one packet of `source`. `seq` is the publisher's extended sequence number,
    /// `ts` its RTP timestamp, `clock_rate` the codec's RTP clock. Returns `None` for a packet
    /// older than the switch to this source (it would collide with numbers already used).
    pub fn rewrite(
        &mut self,
        source: SourceKey,
        seq: u64,
        ts: u32,
        now: Instant,
        clock_rate: u32,
    ) -> Option<Rewritten> {
        let switch = self.current.as_ref().is_none_or(|c| c.source != source);
        if switch {
            let (out_seq, out_ts) = match self.last {
                // The first outgoing sequence number stays below 2^16 so the receiver's
                // rollover counter starts at zero without out-of-band signalling.
                None => (seq % 65_536, ts),
                Some(last) => {
                    let elapsed = now.saturating_duration_since(last.at);
                    let ticks = (elapsed.as_secs_f64() * clock_rate as f64) as u32;
                    (last.seq + 1, last.ts.wrapping_add(ticks.max(1)))
                }
            };
            self.current = Some(Current {
                source,
                first_seq: seq,
                seq_delta: out_seq.wrapping_sub(seq),
                ts_delta: out_ts.wrapping_sub(ts),
                skips: VecDeque::new(),
                highest: seq,
            });
        }
        // Set just above; the unwrap cannot fail.
        let cur = self.current.as_mut().expect("current source set above");
        if seq < cur.first_seq {
            return None;
        }
        cur.highest = cur.highest.max(seq);
        let out = Rewritten {
            seq: seq.wrapping_add(cur.delta_for(seq)),
            ts: ts.wrapping_add(cur.ts_delta),
        };
        let newer = self.last.is_none_or(|l| out.seq > l.seq);
        if newer {
            self.last = Some(Last {
                seq: out.seq,
                ts: out.ts,
                at: now,
            });
        }
        Some(out)
    }

    /// The stream pauses: whatever comes next (the same source too) continues the numbering
    /// where it stopped, as after a switch, instead of leaving a gap for what was not sent.
    pub fn pause(&mut self) {
        self.current = None;
    }

    /// Packet `seq` of `source` is not forwarded (a temporal layer the receiver does not
    /// take): the packets after it are numbered as if it never existed, so the receiver sees
    /// no gap. A packet older than the newest one seen cannot be skipped that way (its number
    /// may be in use); it stays a gap.
    pub fn skip(&mut self, source: SourceKey, seq: u64) {
        let Some(cur) = self.current.as_mut().filter(|c| c.source == source) else {
            return;
        };
        if seq < cur.highest || seq < cur.first_seq {
            return;
        }
        cur.highest = seq;
        let delta = cur.delta_for(seq).wrapping_sub(1);
        match cur.skips.back_mut() {
            // A run of skipped packets: one segment.
            Some(last) if last.0 == seq => *last = (seq + 1, delta),
            _ => cur.skips.push_back((seq + 1, delta)),
        }
        if cur.skips.len() > MAX_SKIP_SEGMENTS {
            if let Some((from, d)) = cur.skips.pop_front() {
                cur.first_seq = from;
                cur.seq_delta = d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_packet_starts_below_rollover() {
        let mut r = StreamRewriter::default();
        let now = Instant::now();
        let out = r.rewrite(1, 3 * 65_536 + 17, 1000, now, 90_000).unwrap();
        assert_eq!(out, Rewritten { seq: 17, ts: 1000 });
        let out = r.rewrite(1, 3 * 65_536 + 18, 4000, now, 90_000).unwrap();
        assert_eq!(out, Rewritten { seq: 18, ts: 4000 });
    }

    #[test]
    fn reordered_and_retransmitted_packets_keep_their_offset() {
        let mut r = StreamRewriter::default();
        let now = Instant::now();
        r.rewrite(1, 100, 0, now, 90_000).unwrap();
        r.rewrite(1, 102, 6000, now, 90_000).unwrap();
        let late = r.rewrite(1, 101, 3000, now, 90_000).unwrap();
        assert_eq!(late.seq, 101);
        // Older than the first forwarded packet of this source.
        assert_eq!(r.rewrite(1, 99, 0, now, 90_000), None);
    }

    #[test]
    fn source_switch_continues_without_a_jump() {
        let mut r = StreamRewriter::default();
        let t0 = Instant::now();
        r.rewrite(1, 500, 90_000, t0, 90_000).unwrap();
        let a = r.rewrite(1, 501, 93_000, t0, 90_000).unwrap();
        let t1 = t0 + Duration::from_millis(100);
        let b = r.rewrite(2, 40_000, 7, t1, 90_000).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.ts, a.ts + 9_000);
        let c = r.rewrite(2, 40_001, 3_007, t1, 90_000).unwrap();
        assert_eq!(
            c,
            Rewritten {
                seq: b.seq + 1,
                ts: b.ts + 3_000
            }
        );
        // Back to the first source: still continuous.
        let d = r.rewrite(1, 900, 5, t1, 90_000).unwrap();
        assert_eq!(d.seq, c.seq + 1);
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let mut r = StreamRewriter::default();
        let now = Instant::now();
        let a = r.rewrite(1, 100, 0, now, 90_000).unwrap();
        r.skip(1, 101);
        r.skip(1, 102);
        let b = r.rewrite(1, 103, 3000, now, 90_000).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        r.skip(1, 104);
        let c = r.rewrite(1, 105, 6000, now, 90_000).unwrap();
        assert_eq!(c.seq, b.seq + 1);
        // A late packet from before the skips keeps its own number.
        let late = r.rewrite(1, 100, 0, now, 90_000).unwrap();
        assert_eq!(late.seq, a.seq);
        // A skip of an old packet changes nothing.
        r.skip(1, 99);
        assert_eq!(r.rewrite(1, 106, 9000, now, 90_000).unwrap().seq, c.seq + 1);
        // Skips of another source change nothing either.
        r.skip(2, 107);
        assert_eq!(r.rewrite(1, 107, 9000, now, 90_000).unwrap().seq, c.seq + 2);
    }

    #[test]
    fn many_skips_stay_bounded() {
        let mut r = StreamRewriter::default();
        let now = Instant::now();
        let first = r.rewrite(1, 0, 0, now, 90_000).unwrap();
        for i in 0..1000u64 {
            r.skip(1, 2 * i + 1);
            let out = r.rewrite(1, 2 * i + 2, 0, now, 90_000).unwrap();
            assert_eq!(out.seq, first.seq + i + 1);
        }
        assert!(r.current.as_ref().unwrap().skips.len() <= MAX_SKIP_SEGMENTS);
    }

    #[test]
    fn after_a_pause_the_same_source_continues_without_a_gap() {
        let mut r = StreamRewriter::default();
        let t0 = Instant::now();
        let a = r.rewrite(1, 100, 0, t0, 90_000).unwrap();
        r.pause();
        let t1 = t0 + Duration::from_secs(2);
        let b = r.rewrite(1, 160, 180_000, t1, 90_000).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.ts, a.ts + 180_000);
    }

    #[test]
    fn timestamps_wrap() {
        let mut r = StreamRewriter::default();
        let now = Instant::now();
        r.rewrite(1, 1, u32::MAX - 10, now, 48_000).unwrap();
        let out = r.rewrite(1, 2, 950, now, 48_000).unwrap();
        assert_eq!(out.ts, 950);
    }
}

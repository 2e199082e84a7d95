//! What each class of receivers got of the publishers' video: the receivers with a bandwidth
//! cap (`--receiver-cap-kbps`) and the others, apart, so a run shows the capped ones on a lower
//! layer and the others on the top one. Everything here comes from the received packets: the
//! probe names the layer each was sent in ([`crate::probe`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::client::ClientReport;
use crate::measure::Histogram;
use crate::probe::StreamKind;
use crate::run::Percentiles;

/// One class of receivers in a step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassResult {
    /// `capped` or `uncapped`.
    pub class: String,
    /// The cap of this class's receivers, kbit/s.
    pub cap_kbps: Option<u32>,
    pub receivers: usize,
    /// Video streams received: (receiver, publisher) pairs.
    pub streams: usize,
    /// Video payload received per stream inside the window, kbit/s (mean over the streams).
    pub video_kbps: f64,
    /// Streams by the layer they were on at the end of the window (`none`: no video arrived).
    pub on_layer: BTreeMap<String, usize>,
    /// Share of the video packets sent in the window that arrived, by layer.
    pub layer_share: BTreeMap<String, f64>,
    /// Moves to another layer seen by the receivers (a keyframe of another layer arrived),
    /// whose keyframe was sent inside the window, and from the join to the window's end.
    pub switches_in_window: u64,
    pub switches: u64,
    /// Share of the video packets owed to these receivers that never arrived (see
    /// [`crate::measure::Reception::video_expected`]).
    pub video_loss: f64,
    /// One-way delay of everything these receivers got in the window (audio and video).
    pub delay: Percentiles,
    /// What reached these receivers' sockets in the window, before any cap (everything the
    /// server sent: media, retransmissions, padding, RTCP), kbit/s per receiver.
    pub offered_kbps: f64,
    /// Datagrams the cap dropped in the window, and their share of the bytes offered.
    pub dropped_by_cap: u64,
    pub dropped_share: f64,
}

/// One receiver as the classes see it.
pub struct Receiver<'a> {
    pub capped: bool,
    /// The publishers it receives.
    pub expects: &'a BTreeSet<u16>,
    pub report: &'a ClientReport,
}

/// What each publisher sent in the window: audio packets, video packets per layer.
pub type SentBy = HashMap<u16, (u64, Vec<u64>)>;

/// The classes of a step, capped first; a class without receivers is left out.
pub fn classes(
    receivers: &[Receiver<'_>],
    sent_by: &SentBy,
    layer_names: &[String],
    cap_kbps: Option<u32>,
    window_secs: f64,
) -> Vec<ClassResult> {
    [true, false]
        .into_iter()
        .filter_map(|capped| {
            let members: Vec<&Receiver> = receivers.iter().filter(|r| r.capped == capped).collect();
            if members.is_empty() {
                return None;
            }
            let mut c = class(&members, sent_by, layer_names, window_secs);
            c.class = if capped { "capped" } else { "uncapped" }.into();
            c.cap_kbps = cap_kbps.filter(|_| capped);
            Some(c)
        })
        .collect()
}

fn name(layer_names: &[String], layer: u8) -> String {
    layer_names
        .get(layer as usize)
        .cloned()
        .unwrap_or_else(|| format!("layer{layer}"))
}

fn class(
    members: &[&Receiver<'_>],
    sent_by: &SentBy,
    layer_names: &[String],
    window_secs: f64,
) -> ClassResult {
    let mut on_layer: BTreeMap<String, usize> = BTreeMap::new();
    let mut packets_by_layer: BTreeMap<String, u64> = BTreeMap::new();
    let (mut streams, mut bytes, mut expected, mut arrived) = (0usize, 0u64, 0u64, 0u64);
    let (mut switches, mut switches_in_window) = (0, 0);
    let (mut dropped, mut dropped_bytes, mut offered) = (0, 0, 0);
    let mut delay = Histogram::default();
    for r in members {
        let rec = &r.report.reception;
        for &p in r.expects {
            let Some((_, sent)) = sent_by.get(&p).filter(|(_, v)| !v.is_empty()) else {
                continue;
            };
            streams += 1;
            let (e, a) = rec.video_expected(p, sent);
            expected += e;
            arrived += a;
            let layer = match rec.layers.get(&p) {
                Some(t) => name(layer_names, t.current),
                None => "none".into(),
            };
            *on_layer.entry(layer).or_default() += 1;
            if let Some(t) = rec.layers.get(&p) {
                switches += t.switches;
                switches_in_window += t.switches_in_window;
            }
        }
        for (&(p, kind, layer), &n) in &rec.in_window {
            if kind == StreamKind::Video && r.expects.contains(&p) {
                *packets_by_layer
                    .entry(name(layer_names, layer))
                    .or_default() += n;
                bytes += rec.bytes_in_window[&(p, kind, layer)];
            }
        }
        offered += r.report.offered_bytes;
        delay.merge(&rec.delay);
        dropped += r.report.dropped_by_cap;
        dropped_bytes += r.report.dropped_bytes_by_cap;
    }
    let total: u64 = packets_by_layer.values().sum();
    ClassResult {
        class: String::new(),
        cap_kbps: None,
        receivers: members.len(),
        streams,
        video_kbps: if streams > 0 && window_secs > 0.0 {
            bytes as f64 * 8.0 / 1000.0 / window_secs / streams as f64
        } else {
            0.0
        },
        on_layer,
        layer_share: packets_by_layer
            .into_iter()
            .map(|(l, n)| (l, n as f64 / total.max(1) as f64))
            .collect(),
        switches_in_window,
        switches,
        video_loss: if expected > 0 {
            1.0 - arrived.min(expected) as f64 / expected as f64
        } else {
            0.0
        },
        delay: Percentiles::of(&delay),
        offered_kbps: if window_secs > 0.0 {
            offered as f64 * 8.0 / 1000.0 / window_secs / members.len() as f64
        } else {
            0.0
        },
        dropped_by_cap: dropped,
        dropped_share: dropped_bytes as f64 / offered.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Window;
    use crate::probe::Probe;

    fn receiving(layers: &[(u8, u32)]) -> ClientReport {
        let w = Window::default();
        w.open(0);
        w.close(u64::MAX - 1);
        let mut r = ClientReport::default();
        for &(layer, count) in layers {
            for seq in 0..count {
                let p = Probe {
                    publisher: 0,
                    kind: StreamKind::Video,
                    keyframe_start: seq == 0,
                    layer,
                    seq,
                    sent_ns: 10,
                };
                r.reception.record(&p, 1000, 20, &w);
            }
        }
        r
    }

    #[test]
    fn capped_and_uncapped_receivers_are_told_apart() {
        let names = crate::client::layer_names(true);
        let sent: SentBy = [(0, (0, vec![100, 100, 400]))].into();
        let expects: BTreeSet<u16> = [0].into();
        let low = ClientReport {
            dropped_by_cap: 7,
            dropped_bytes_by_cap: 10_000,
            offered_bytes: 100_000,
            ..receiving(&[(1, 90)])
        };
        let top = receiving(&[(2, 400)]);
        let moved = receiving(&[(0, 10), (2, 200)]);
        let rs = [
            Receiver {
                capped: true,
                expects: &expects,
                report: &low,
            },
            Receiver {
                capped: false,
                expects: &expects,
                report: &top,
            },
            Receiver {
                capped: false,
                expects: &expects,
                report: &moved,
            },
        ];
        let c = classes(&rs, &sent, &names, Some(500), 10.0);
        assert_eq!(c.len(), 2);
        let (capped, free) = (&c[0], &c[1]);
        assert_eq!(
            (capped.class.as_str(), capped.cap_kbps),
            ("capped", Some(500))
        );
        assert_eq!(capped.on_layer, [("h".to_string(), 1)].into());
        assert_eq!(capped.layer_share["h"], 1.0);
        // 90 of the 100 packets of h.
        assert!((capped.video_loss - 0.1).abs() < 1e-9);
        // 90 kB in 10 s: 72 kbit/s.
        assert!((capped.video_kbps - 72.0).abs() < 1e-9);
        assert_eq!(capped.dropped_by_cap, 7);
        assert!((capped.dropped_share - 0.1).abs() < 1e-9);
        assert!((capped.offered_kbps - 80.0).abs() < 1e-9);

        assert_eq!((free.class.as_str(), free.cap_kbps), ("uncapped", None));
        assert_eq!((free.receivers, free.streams), (2, 2));
        assert_eq!(free.on_layer, [("f".to_string(), 2)].into());
        assert_eq!(free.switches, 1);
        assert!((free.layer_share["f"] - 600.0 / 610.0).abs() < 1e-9);
        // All 400 of f; 10 of q and 200 of f after a move, all of their spans.
        assert_eq!(free.video_loss, 0.0);
    }

    #[test]
    fn without_a_cap_there_is_one_class() {
        let names = crate::client::layer_names(false);
        let sent: SentBy = [(0, (0, vec![50]))].into();
        let expects: BTreeSet<u16> = [0].into();
        let r = receiving(&[(0, 50)]);
        let c = classes(
            &[Receiver {
                capped: false,
                expects: &expects,
                report: &r,
            }],
            &sent,
            &names,
            None,
            1.0,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].on_layer, [("single".to_string(), 1)].into());
        assert_eq!(c[0].video_loss, 0.0);
    }
}

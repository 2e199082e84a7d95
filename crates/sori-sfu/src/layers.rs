//! Simulcast in the core: each receiver's layers (its policy, fed its bandwidth estimate and
//! the layers' measured bitrates), the layers publishers are asked to send ("dynacast"), the
//! application's view of each received track, and what each receiver gets, for stats.
//!
//! A receiver's layers are allocated when its estimate changes, when its view of a track
//! changes, when it starts receiving a track, and every [`TICK`] (a layer's bitrate moved, a
//! hold ended, a layer stopped or started arriving).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::media::KeyframeRequestKind;

use crate::error::SfuError;
use crate::id::{MediaKind, PeerId, TrackId};
use crate::output::{RemoveReason, SfuEvent};
use crate::peer::Peer;
use crate::room::Track;
use crate::sfu::Sfu;
use crate::simulcast::policy::{Demand, Layer, Priority, Probe};
use crate::simulcast::source::layer_rates;
use crate::simulcast::{LayerCensus, ReceiverStats, TrackLayer, View};
use crate::throttle::Urgency;
use crate::timers::Timer;

/// How often each peer's layers are looked at without new input.
pub(crate) const TICK: Duration = Duration::from_millis(500);
/// What one received audio track takes of a receiver's estimate (Opus with its overhead).
const AUDIO_BPS: u64 = 40_000;
/// A probe that did not raise the estimate to what the policy wants is tried again after this.
/// (Asked every second, str0m's prober never finished one: each request starts a new probe.)
const PROBE_RETRY: Duration = Duration::from_secs(2);
/// A peer held below the layers its tiles could use, asking for more than its estimate, whose
/// estimate has not gone down for this long (nothing congested) though it still falls short,
/// gets a fresh estimator: str0m's loss-based stage keeps the loss it saw (on a link that
/// was limited until a moment ago) for many seconds, during which it disregards its own
/// probes and grows the estimate by at most half the rate acknowledged; the fresh estimator
/// probes at once (three and six times the estimate) and finds the link's rate again …
const QUIET: Duration = Duration::from_secs(2);
/// … at most this often.
const RESTART_EVERY: Duration = Duration::from_secs(5);
/// A layer nobody has wanted for this long is paused at its publisher.
const UNWANTED: Duration = Duration::from_secs(10);

impl Sfu {
    /// How `peer` shows `track`, one of the video tracks it receives: the layer it gets follows.
    pub fn set_view(
        &mut self,
        peer: PeerId,
        track: TrackId,
        view: View,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(SfuError::UnknownPeer(peer))?;
        let Some(out) = p
            .out
            .values_mut()
            .find(|o| o.source == track && o.kind == MediaKind::Video)
        else {
            return Err(SfuError::Rejected(format!(
                "{peer} does not receive video {track}"
            )));
        };
        if out.view != view {
            out.view = view;
            self.allocate_layers(peer, now);
            self.process(now);
        }
        Ok(())
    }

    /// Forwards `peer` only the video of the tracks in `set` (last-N: the participants it
    /// should see); the others are paused as hidden tiles are, without renegotiation (their
    /// m-lines stay), and resume at a keyframe of the right layer when they are in the set
    /// again. `None`: every video it receives. Audio is not affected.
    pub fn set_video_set(
        &mut self,
        peer: PeerId,
        set: Option<BTreeSet<TrackId>>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(SfuError::UnknownPeer(peer))?;
        if p.video_set != set {
            p.video_set = set;
            self.allocate_layers(peer, now);
            self.process(now);
        }
        Ok(())
    }

    /// Whether `track` is a screen share (its receivers give it their bandwidth first) or a
    /// camera (the default).
    pub fn set_priority(
        &mut self,
        track: TrackId,
        priority: Priority,
        now: Instant,
    ) -> Result<(), SfuError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or_else(|| SfuError::Rejected(format!("unknown {track}")))?;
        if t.priority == priority {
            return Ok(());
        }
        t.priority = priority;
        let receivers: Vec<PeerId> = t.subscribers.iter().map(|(p, _)| *p).collect();
        for peer in receivers {
            self.allocate_layers(peer, now);
        }
        self.process(now);
        Ok(())
    }

    /// A bandwidth estimate event toward `id`. str0m's TWCC estimate events are a 3 s
    /// average of its estimates (moves of 5 % and more), seconds behind a link that was just
    /// freed; the estimator's own estimate comes with the peer's stats ([`STATS_INTERVAL`])
    /// and is the one used, once str0m says it can probe (before, it is the configured
    /// starting rate, and a receiver starts on its lowest layers). A REMB estimate (the
    /// receiver's own) is used as it comes.
    ///
    /// [`STATS_INTERVAL`]: crate::peer::STATS_INTERVAL
    pub(crate) fn estimate_event(&mut self, id: PeerId, kind: BweKind, now: Instant) {
        match kind {
            BweKind::Remb { estimate, .. } => self.estimate(id, estimate, now),
            BweKind::Twcc { can_probe, .. } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.bwe_live = can_probe;
                }
            }
            _ => {}
        }
    }

    /// The peer's stats came, with its estimator's estimate.
    pub(crate) fn estimate_stats(&mut self, id: PeerId, estimate: Option<Bitrate>, now: Instant) {
        let live = self.peers.get(&id).is_some_and(|p| p.bwe_live);
        if let (true, Some(estimate)) = (live, estimate) {
            self.estimate(id, estimate, now);
        }
    }

    /// A new bandwidth estimate toward `id`.
    pub(crate) fn estimate(&mut self, id: PeerId, estimate: Bitrate, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let bps = estimate.as_u64();
        tracing::trace!(%id, bps, "estimate");
        if peer.estimate.is_some_and(|e| bps < e) {
            peer.estimate_fell_at = Some(now);
        }
        peer.estimate = Some(bps);
        // Audio that arrives is forwarded whatever the estimate: video gets the rest.
        let tracks = &self.tracks;
        let audio = peer
            .out
            .values()
            .filter(|o| o.kind == MediaKind::Audio)
            .filter(|o| {
                tracks
                    .get(&o.source)
                    .is_some_and(|t| t.layers.iter().any(|l| l.arriving(now)))
            })
            .count() as u64;
        peer.audio_bps = audio * AUDIO_BPS;
        peer.allocator
            .estimate(bps.saturating_sub(peer.audio_bps), now);
        self.allocate_layers(id, now);
    }

    /// Decides the layer of every video track `id` receives, asks for keyframes of the layers
    /// it moves to, and passes the policy's probe to the estimator.
    pub(crate) fn allocate_layers(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut demands = Vec::new();
        for out in peer.out.values() {
            if out.kind != MediaKind::Video {
                continue;
            }
            let Some(track) = self.tracks.get_mut(&out.source) else {
                continue;
            };
            // Outside the peer's video set (last-N): as a hidden tile, paused.
            let view = match &peer.video_set {
                Some(set) if !set.contains(&out.source) => View {
                    visible: false,
                    ..out.view
                },
                _ => out.view,
            };
            demands.push(Demand {
                track: out.source,
                priority: track.priority,
                layers: measured_layers(track, now),
                view,
            });
        }
        // In the order the tracks were published: the same order every time.
        demands.sort_by_key(|d| d.track);
        let allocation = peer.allocator.allocate(&demands, now);
        let mut keyframes = Vec::new();
        let mut moved = Vec::new();
        for (track_id, choice) in allocation.choices {
            let Some(track) = self.tracks.get(&track_id) else {
                continue;
            };
            let Some(out) = peer
                .out
                .values_mut()
                .find(|o| o.source == track_id && o.kind == MediaKind::Video)
            else {
                continue;
            };
            if out.desired.map(|c| c.spatial) != choice.map(|c| c.spatial) {
                moved.push(track_id);
                let layers = demands.iter().find(|d| d.track == track_id).map(|d| {
                    d.layers
                        .iter()
                        .map(|l| l.bitrate_bps / 1000)
                        .collect::<Vec<_>>()
                });
                tracing::debug!(
                    %id, track = %track_id, from = ?out.desired.map(|c| c.spatial),
                    to = ?choice.map(|c| c.spatial), estimate = ?peer.estimate,
                    ?layers, "layer chosen"
                );
            }
            out.desired = choice;
            out.temporal_target = choice.and_then(|c| c.temporal);
            let current = out.gate.current;
            let target = choice.map(|c| layer_to_send(track, c.spatial, current, now));
            if target != out.gate.target {
                tracing::debug!(%id, track = %track_id, ?target, "layer");
                out.retarget(target);
                // A layer that does not arrive yet (paused at the publisher until now) starts
                // with a keyframe when it resumes: asking for one would cost a second.
                let arrives = |l: u8| track.arrives(l, now);
                if let (true, Some(layer)) = (out.gate.switching(), target.filter(|l| arrives(*l)))
                {
                    keyframes.push((track_id, layer));
                }
            }
        }
        if let Err(e) = steer_estimator(peer, allocation.probe, now) {
            self.board.doomed.push((id, RemoveReason::Failed(e)));
        }
        self.board.settle(peer);
        let connected = peer.connected;
        // A layer someone now wants is asked of its publisher at once.
        for track in moved {
            if let Some(t) = self.tracks.get(&track) {
                let (publisher, mid) = (t.publisher, t.mid.to_string());
                self.dynacast(publisher, mid, track, now);
            }
        }
        if !connected {
            return;
        }
        for (track, layer) in keyframes {
            let pli = KeyframeRequestKind::Pli;
            self.request_keyframe_of(track, layer, pli, Urgency::Start, now);
        }
    }

    /// The peer's layer timer fired: its layers as a receiver, its tracks' taps and dynacast
    /// as a publisher.
    pub(crate) fn layer_tick(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.timers.is_expired(Timer::Layers, now) {
            return;
        }
        peer.timers.set(Timer::Layers, now + TICK);
        let published: Vec<(String, TrackId)> = peer
            .published
            .iter()
            .map(|(m, t)| (m.to_string(), *t))
            .collect();
        self.allocate_layers(id, now);
        for (mid, track) in published {
            self.dynacast(id, mid, track, now);
        }
    }

    /// Tells the publisher which layers of `track` anyone wants, when that changed: a layer
    /// is wanted at once, and given up after [`UNWANTED`].
    fn dynacast(&mut self, publisher: PeerId, mid: String, track_id: TrackId, now: Instant) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if track.layers.len() < 2 {
            return;
        }
        let top = track.top();
        // Taps take the top layer: kept on the one they record until its first keyframe.
        let mut keyframes = Vec::new();
        for i in 0..track.taps.len() {
            let current = track.taps[i].gate.current;
            let target = layer_to_send(track, top, current, now);
            let tap = &mut track.taps[i];
            if tap.gate.target != Some(target) {
                tap.gate.retarget(Some(target));
                if track.arrives(target, now) {
                    keyframes.push(target);
                }
            }
        }
        // Another core picks layers for its own receivers: it gets every one.
        let mut wanted = vec![!track.exports.is_empty(); track.layers.len()];
        wanted[0] = true;
        if !track.taps.is_empty() {
            wanted[top as usize] = true;
        }
        for (sub, mid) in &track.subscribers {
            let Some(out) = self.peers.get(sub).and_then(|p| p.out.get(mid)) else {
                continue;
            };
            let layer = out.desired.map(|c| c.spatial);
            if let Some(w) = layer.and_then(|l| wanted.get_mut(l as usize)) {
                *w = true;
            }
        }
        let mut changed = false;
        for (layer, want) in track.layers.iter_mut().zip(wanted) {
            if want {
                layer.last_wanted = Some(now);
            }
            let keep = want
                || layer
                    .last_wanted
                    .is_some_and(|t| now.saturating_duration_since(t) < UNWANTED);
            if keep != layer.active {
                layer.active = keep;
                changed = true;
            }
        }
        // An imported track's publisher is another core's peer.
        if changed && !track.imported {
            let active = track
                .layers
                .iter()
                .filter_map(|l| Some((l.rid?.to_string(), l.active)))
                .collect();
            self.events.push_back(SfuEvent::LayersWanted {
                peer: publisher,
                mid,
                active,
            });
        }
        for layer in keyframes {
            let pli = KeyframeRequestKind::Pli;
            self.request_keyframe_of(track_id, layer, pli, Urgency::Start, now);
        }
    }

    /// What `peer` receives: its bandwidth estimate and the layer of each video track.
    pub fn receiver_stats(&self, peer: PeerId, now: Instant) -> Option<ReceiverStats> {
        let p = self.peers.get(&peer)?;
        let mut tracks: Vec<TrackLayer> = p
            .out
            .values()
            .filter(|o| o.kind == MediaKind::Video)
            .filter_map(|o| {
                let track = self.tracks.get(&o.source)?;
                let layer = o.gate.current.or(o.gate.target).unwrap_or(0);
                let source = track.layers.get(layer as usize)?;
                Some(TrackLayer {
                    track: o.source,
                    rid: source.rid.map(|r| r.to_string()),
                    spatial: layer,
                    layers: track.layers.len() as u8,
                    temporal: o.temporal_now,
                    height: source.height,
                    bitrate_bps: source.meter.bps(now),
                    paused: o.gate.target.is_none(),
                })
            })
            .collect();
        tracks.sort_by_key(|t| t.track);
        Some(ReceiverStats {
            estimate_bps: p.estimate,
            tracks,
        })
    }

    /// How many (receiver, video track) pairs get which layer.
    pub fn layer_census(&self) -> LayerCensus {
        let mut census = LayerCensus::default();
        for p in self.peers.values() {
            for o in p.out.values().filter(|o| o.kind == MediaKind::Video) {
                let Some(track) = self.tracks.get(&o.source) else {
                    continue;
                };
                match o.gate.target {
                    None => census.paused += 1,
                    Some(l) if l == track.top() => census.high += 1,
                    Some(0) => census.low += 1,
                    Some(_) => census.medium += 1,
                }
            }
        }
        census
    }
}

/// Passes the policy's probe to the peer's estimator when it changed, and again every
/// [`PROBE_RETRY`] while the estimate stays short of it (the estimator probes only when the desired rate
/// goes up: each retry raises it by 1 bit/s).
///
/// The desired rate follows the layers' measured rates, which move a little all the time; it
/// is passed on only when it moved by more than a tenth, so that neither jitter makes the
/// estimator probe (each rise would) nor a change of the padding alone (the minimum) puts off
/// the next retry.
fn steer_estimator(peer: &mut Peer, probe: Option<Probe>, now: Instant) -> Result<(), String> {
    if peer.unestimated {
        // No estimator runs toward this peer (off, or no transport-cc): nothing to steer.
        return Ok(());
    }
    restart_stalled_estimator(peer, now)?;
    let given = peer.probe;
    let probe = probe.map(|p| match given {
        Some(g) if p.desired_bps.abs_diff(g.desired_bps) * 10 <= g.desired_bps => Probe {
            desired_bps: g.desired_bps.max(p.minimum_bps),
            ..p
        },
        _ => p,
    });
    let desired_moved = probe.map(|p| p.desired_bps) != given.map(|g| g.desired_bps);
    let unmet = probe.is_some_and(|p| p.desired_bps > peer.estimate.unwrap_or(0));
    let retry = !desired_moved && unmet && peer.probe_retry.is_some_and(|at| now >= at);
    if probe == given && !retry {
        return Ok(());
    }
    if desired_moved || retry {
        peer.probe_retry = unmet.then_some(now + PROBE_RETRY);
        peer.probe_bump = if retry { peer.probe_bump + 1 } else { 0 };
    }
    peer.probe = probe;
    let Some(probe) = probe else {
        return Ok(());
    };
    // The policy works in video; the estimator sees the audio too.
    let audio = peer.audio_bps;
    let min = probe.minimum_bps + audio;
    let desired = probe.desired_bps + audio + peer.probe_bump;
    tracing::trace!(id = %peer.id, min, desired, "probe");
    peer.mutate(|rtc| {
        rtc.bwe()
            .set_bitrate(Bitrate::bps(min), Bitrate::bps(desired))
    })
}

/// Restarts the peer's estimator from its current estimate when the peer waits for more and
/// the estimate has not gone down for [`QUIET`] (see there).
fn restart_stalled_estimator(peer: &mut Peer, now: Instant) -> Result<(), String> {
    let Some(estimate) = peer.estimate else {
        return Ok(());
    };
    // Held below what its tiles could use, and asking for more than it has.
    let unmet = peer
        .probe
        .is_some_and(|p| p.desired_bps + peer.audio_bps > estimate);
    if !(peer.allocator.below_cap() && unmet) {
        peer.waiting_since = None;
        return Ok(());
    }
    let waiting = *peer.waiting_since.get_or_insert(now);
    let quiet_since = peer.estimate_fell_at.map_or(waiting, |t| t.max(waiting));
    if !stalled(quiet_since, peer.estimator_restarted, now) {
        return Ok(());
    }
    tracing::debug!(id = %peer.id, estimate, "estimate short of the next layer and not congested: estimator restarted");
    peer.estimator_restarted = Some(now);
    peer.mutate(|rtc| rtc.bwe().reset(Bitrate::bps(estimate)))
}

/// Whether an estimator that has waited without the estimate going down since `quiet_since`
/// is due a restart: for [`QUIET`], and [`RESTART_EVERY`] after the last restart (if any).
fn stalled(quiet_since: Instant, restarted: Option<Instant>, now: Instant) -> bool {
    let quiet = now.saturating_duration_since(quiet_since) >= QUIET;
    let rested = restarted.is_none_or(|t| now.saturating_duration_since(t) >= RESTART_EVERY);
    quiet && rested
}

/// The track's layers as the policy sees them. A track none of whose layers arrives costs
/// nothing (its publisher sends nothing now: camera off, or not started).
fn measured_layers(track: &mut Track, now: Instant) -> Vec<Layer> {
    let count = track.layers.len();
    if !track.layers.iter().any(|l| l.arriving(now)) {
        return vec![Layer::default(); count];
    }
    let rates = layer_rates(&mut track.layers, now);
    track
        .layers
        .iter()
        .zip(rates)
        .map(|(l, bitrate_bps)| Layer {
            bitrate_bps,
            height: l.height,
            temporal_bps: l.temporal_bps(now),
        })
        .collect()
}

/// The layer to move a receiver on `current` to for a wish of `want`: `want` itself while the
/// receiver still gets `current` (it keeps flowing until `want`'s first keyframe, also when
/// `want` is only being resumed at the publisher); otherwise [`arriving_layer`].
fn layer_to_send(track: &Track, want: u8, current: Option<u8>, now: Instant) -> u8 {
    let want = want.min(track.top());
    let served = current.is_some_and(|c| c != want && track.arrives(c, now));
    if served {
        want
    } else {
        arriving_layer(track, want, now)
    }
}

/// The layer to send for a wish of `want`: it, if it arrives; else the nearest one below that
/// arrives; else the nearest above; else `want` (nothing arrives yet).
pub(crate) fn arriving_layer(track: &Track, want: u8, now: Instant) -> u8 {
    let want = want.min(track.top());
    let arrives = |l: u8| track.arrives(l, now);
    (0..=want)
        .rev()
        .find(|l| arrives(*l))
        .or_else(|| (want + 1..=track.top()).find(|l| arrives(*l)))
        .unwrap_or(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_estimator_that_saw_no_congestion_for_2_s_is_restarted_at_most_every_5_s() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Down a moment ago: left alone.
        assert!(!stalled(t0, None, t0 + Duration::from_millis(1999)));
        // Not down for 2 s: restarted.
        assert!(stalled(t0, None, t0 + QUIET));
        // The next one 5 s after it at the earliest, however quiet the estimate stays.
        let restarted = t0 + s(2);
        assert!(!stalled(t0, Some(restarted), restarted + s(4)));
        assert!(stalled(t0, Some(restarted), restarted + RESTART_EVERY));
        // A fall after the restart starts the quiet anew.
        let fell = restarted + s(4);
        assert!(!stalled(fell, Some(restarted), restarted + RESTART_EVERY));
        assert!(stalled(fell, Some(restarted), fell + QUIET));
    }
}

//! Forwarding: a publisher's packet goes to each subscriber of its track and to its taps; the
//! application feeds tracks into m-lines by hand, mutes publishers and taps tracks.

use std::collections::BTreeSet;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::KeyframeRequestKind;
use str0m::rtp::{ExtensionValues, RtpPacket};

use crate::error::SfuError;
use crate::id::{MediaKind, PeerId, TapId, TrackId};
use crate::keyframe::VideoCodec;
use crate::layers::arriving_layer;
use crate::output::{RemoveReason, TapPacket};
use crate::peer::{Forwardable, OutTrack, Temporal, Written};
use crate::relay::{MediaPacket, RelayPacket};
use crate::rewrite::StreamRewriter;
use crate::room::{Track, TrackTap};
use crate::sfu::Sfu;
use crate::simulcast::gate::{Gate, LayerGate};
use crate::simulcast::source::MAX_LAYERS;
use crate::simulcast::vp8;
use crate::throttle::Urgency;
use crate::timers::Timer;

impl Sfu {
    /// Forwards `source` (or nothing) into the m-line `mid` that the client `sink` negotiated
    /// for receiving, without renegotiation. Replacing the source keeps the outgoing stream
    /// continuous and waits for a keyframe of the new one; feeding the same source again
    /// changes nothing. A peer may be fed its own track (loopback). The layer of a simulcast
    /// source follows the peer's estimate and view, as for a track its room feeds it.
    pub fn feed(
        &mut self,
        sink: PeerId,
        mid: &str,
        source: Option<TrackId>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let peer = self
            .peers
            .get_mut(&sink)
            .ok_or(SfuError::UnknownPeer(sink))?;
        let Some(&(mid, kind)) = peer.lines.iter().find(|(m, _)| &**m == mid) else {
            return Err(SfuError::Rejected(format!("{sink} has no m-line {mid}")));
        };
        let sends = peer
            .rtc
            .media(mid)
            .is_some_and(|m| m.direction().is_sending());
        if !sends {
            return Err(SfuError::Rejected(format!(
                "m-line {mid} of {sink} does not receive media"
            )));
        }
        if let Some(t) = source {
            let track = self
                .tracks
                .get(&t)
                .ok_or_else(|| SfuError::Rejected(format!("unknown {t}")))?;
            if track.room != peer.room || track.kind != kind {
                return Err(SfuError::Rejected(format!(
                    "{t} cannot feed m-line {mid} of {sink}"
                )));
            }
        }
        let old = match peer.out.get(&mid) {
            Some(o) if !o.pinned => {
                return Err(SfuError::Rejected(format!(
                    "m-line {mid} of {sink} is managed by its room"
                )))
            }
            Some(o) if Some(o.source) == source => return Ok(()),
            Some(o) => Some(o.source),
            None => None,
        };
        if let Some(old) = old.and_then(|o| self.tracks.get_mut(&o)) {
            old.subscribers.retain(|s| *s != (sink, mid));
        }
        let Some(source) = source else {
            if let Some(out) = peer.out.remove(&mid) {
                peer.parked.insert(mid, out.rewriter);
            }
            return Ok(());
        };
        let parked = peer.parked.remove(&mid);
        let out = peer.out.entry(mid).or_insert_with(|| {
            let mut out = OutTrack::new(source, kind);
            if let Some(numbering) = parked {
                out.rewriter = numbering;
            }
            out
        });
        out.source = source;
        out.pinned = true;
        let connected = peer.connected;
        let mut top = 0;
        if let Some(track) = self.tracks.get_mut(&source) {
            track.subscribers.push((sink, mid));
            top = track.top();
        }
        if kind != MediaKind::Video {
            return Ok(());
        }
        // The new source starts at its next keyframe, of the layer the receiver's estimate
        // and view allow (as for a track the room feeds it).
        out.restart();
        out.desired = None;
        out.retarget(Some(top));
        self.allocate_layers(sink, now);
        let target = self
            .peers
            .get(&sink)
            .and_then(|p| p.out.get(&mid))
            .and_then(|o| o.gate.target);
        if let (true, Some(layer)) = (connected, target) {
            self.request_keyframe_of(source, layer, KeyframeRequestKind::Pli, Urgency::Start, now);
            self.process(now);
        }
        Ok(())
    }

    /// Stops (`muted`) or resumes forwarding `peer`'s media of `kind` to everyone, whatever
    /// the client does: a server-side mute. On resuming video, receivers wait for a keyframe,
    /// which is requested at once.
    pub fn set_muted(
        &mut self,
        peer: PeerId,
        kind: MediaKind,
        muted: bool,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(SfuError::UnknownPeer(peer))?;
        let was = std::mem::replace(&mut p.muted[kind as usize], muted);
        if was == muted || muted || kind != MediaKind::Video {
            return Ok(());
        }
        let sources: Vec<TrackId> = p
            .published
            .values()
            .copied()
            .filter(|t| self.tracks.get(t).is_some_and(|t| t.kind == kind))
            .collect();
        for source in sources {
            let subscribers = self
                .tracks
                .get(&source)
                .map(|t| t.subscribers.clone())
                .unwrap_or_default();
            let mut layers = BTreeSet::new();
            for (sub, mid) in subscribers {
                if let Some(out) = self.peers.get_mut(&sub).and_then(|s| s.out.get_mut(&mid)) {
                    out.restart();
                    layers.extend(out.gate.target);
                }
            }
            for layer in layers {
                let pli = KeyframeRequestKind::Pli;
                self.request_keyframe_of(source, layer, pli, Urgency::Start, now);
            }
        }
        self.process(now);
        Ok(())
    }

    /// Copies every packet of `track` out through [`Sfu::poll_tap`] until [`Sfu::untap`]; a
    /// video track's publisher is asked for a keyframe so that a recording can start at once.
    pub fn tap(&mut self, track: TrackId, now: Instant) -> Result<TapId, SfuError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or_else(|| SfuError::Rejected(format!("unknown {track}")))?;
        let tap = TapId(self.next_id);
        self.next_id += 1;
        // The highest layer that arrives now; a higher one resumed for the recording is moved
        // to at its first keyframe ([`Sfu::dynacast`]).
        let first = arriving_layer(t, t.top(), now);
        let mut gate = match t.kind {
            MediaKind::Video => LayerGate::video(),
            MediaKind::Audio => LayerGate::audio(),
        };
        gate.retarget(Some(first));
        t.taps.push(TrackTap {
            id: tap,
            gate,
            rewriter: StreamRewriter::default(),
        });
        self.request_keyframe_of(track, first, KeyframeRequestKind::Pli, Urgency::Start, now);
        self.process(now);
        Ok(tap)
    }

    /// Stops a tap (unknown taps are fine).
    pub fn untap(&mut self, tap: TapId) {
        for t in self.tracks.values_mut() {
            t.taps.retain(|x| x.id != tap);
        }
        self.board.tapped.retain(|p| p.tap != tap);
    }

    /// The next tapped packet.
    pub fn poll_tap(&mut self) -> Option<TapPacket> {
        self.board.tapped.pop_front()
    }

    /// Forwards one publisher packet to every subscriber of its track and to its taps.
    pub(crate) fn forward(&mut self, id: PeerId, packet: RtpPacket, now: Instant) {
        self.counters.rtp_received += 1;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some((track_id, layer)) = peer.track_of(packet.header.ssrc, &self.tracks) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        peer.packets_in[track.kind as usize] += 1;
        if peer.muted[track.kind as usize] {
            // Muted by the server: whatever the client sends goes nowhere, not even to a
            // recording.
            self.counters.rtp_dropped_muted += 1;
            return;
        }
        if let (MediaKind::Audio, Some(level)) = (track.kind, packet.header.ext_vals.audio_level) {
            // Who is talking: the packet's loudness, summed until the level report is due.
            let (sum, packets) = &mut peer.levels;
            *sum += 127 - u64::from(level.unsigned_abs().min(127));
            *packets += 1;
            if peer.timers.get(Timer::Levels).is_none() {
                peer.timers
                    .set(Timer::Levels, now + self.config.level_interval);
                if let Some(at) = peer.timers.next() {
                    self.board.timers.set(id, at);
                }
            }
        }
        let pt = packet.header.payload_type;
        let params = match track.params.iter().find(|(p, _)| *p == pt) {
            Some((_, params)) => *params,
            None => {
                let Some(params) = peer.params_for(pt) else {
                    return;
                };
                track.params.push((pt, params));
                params
            }
        };
        self.forward_track(track_id, layer, params, packet.into(), now);
    }

    /// Forwards one packet of `layer` of a track (a local publisher's, or an imported one's)
    /// to its subscribers, taps and exports.
    pub(crate) fn forward_track(
        &mut self,
        track_id: TrackId,
        layer: u8,
        params: PayloadParams,
        packet: MediaPacket,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let keyframe = track
            .codec
            .is_some_and(|c| c.is_keyframe_start(&packet.payload));
        let vp8 = measure(track, layer, &packet.payload, keyframe, now);
        crate::simulcast::source::note_packet(
            &mut track.layers,
            layer as usize,
            packet.header.marker,
        );
        let temporal = vp8.and_then(|d| {
            Some(Temporal {
                tid: d.tid?,
                picture_id: d.picture_id.map(|(pid, ..)| pid),
                sync: d.sync && d.start,
            })
        });
        let clock_rate = params.spec().clock_rate.get();
        let mut wanted = [false; MAX_LAYERS];
        for tap in &mut track.taps {
            let copy = tap_packet(
                tap,
                track.kind,
                track.codec,
                layer,
                &packet,
                clock_rate,
                keyframe,
                now,
            );
            match copy {
                Tapped::Packet(p) => self.board.tapped.push_back(p),
                Tapped::WaitsForKeyframe => wanted[layer as usize % MAX_LAYERS] = true,
                Tapped::NotItsLayer => {}
            }
        }
        for &to in &track.exports {
            self.relayed.push_back(RelayPacket {
                to,
                track: track_id,
                layer,
                params,
                packet: packet.clone(),
            });
        }
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let silent = track.kind == MediaKind::Audio
            && self.config.silence_dbov.is_some_and(|quiet| {
                ext_vals
                    .audio_level
                    .is_some_and(|level| level.unsigned_abs() >= quiet)
            });
        if silent && !track.subscribers.is_empty() {
            self.counters.rtp_silence_not_forwarded += 1;
        }
        let p = Forwardable {
            track: track_id,
            layer,
            vp8,
            temporal,
            kind: track.kind,
            packet: &packet,
            params,
            clock_rate,
            keyframe,
            nackable: track.kind == MediaKind::Video,
            silent,
            ext_vals: &ext_vals,
            rtx_history: self.config.rtx_history,
            now,
        };
        for &(sub_id, mid) in &track.subscribers {
            let Some(sub) = self.peers.get_mut(&sub_id) else {
                continue;
            };
            match sub.write_forwarded(mid, &p) {
                w @ (Written::Sent | Written::Switched) => {
                    self.counters.rtp_forwarded_packets += 1;
                    self.counters.rtp_forwarded_bytes += packet.payload.len() as u64;
                    if let Written::Switched = w {
                        self.counters.layer_switches += 1;
                    }
                }
                Written::NoStream => {}
                Written::Failed(e) => self.board.doomed.push((sub_id, RemoveReason::Failed(e))),
                Written::HeldForKeyframe(layer) => {
                    self.counters.rtp_held_for_keyframe += 1;
                    if let Some(w) = wanted.get_mut(layer as usize) {
                        *w = true;
                    }
                    continue;
                }
                Written::CodecMismatch => {
                    self.counters.rtp_codec_mismatch += 1;
                    continue;
                }
                Written::Skipped => continue,
            }
            self.board.settle(sub);
        }
        for (layer, _) in wanted.iter().enumerate().filter(|(_, w)| **w) {
            let pli = KeyframeRequestKind::Pli;
            self.request_keyframe_of(track_id, layer as u8, pli, Urgency::Start, now);
        }
    }
}

/// What a forwarded packet adds to its payload on the wire, in bytes: RTP header with its
/// extensions (~24), SRTP tag (10), UDP and IPv4 headers (28). A layer's bitrate is measured
/// with it, as the receiver's estimate is.
const WIRE_OVERHEAD: usize = 62;

/// Counts a packet of `layer` toward its bitrate; a keyframe answers the layer's pending
/// requests and tells its frame height. Returns the packet's VP8 descriptor.
fn measure(
    track: &mut Track,
    layer: u8,
    payload: &[u8],
    keyframe: bool,
    now: Instant,
) -> Option<vp8::Descriptor> {
    let is_vp8 = track.codec == Some(VideoCodec::Vp8);
    let source = track.layers.get_mut(layer as usize)?;
    let descriptor = is_vp8.then(|| vp8::descriptor(payload)).flatten();
    source.packet(
        payload.len() + WIRE_OVERHEAD,
        descriptor.and_then(|d| d.tid),
        now,
    );
    if keyframe {
        tracing::trace!(publisher = %track.publisher, layer, "keyframe received");
        source.throttle.keyframe_received(now);
        if let Some((_, h)) = is_vp8.then(|| vp8::keyframe_size(payload)).flatten() {
            source.height = Some(h);
        }
    }
    descriptor
}

/// What a tap makes of one packet of its track.
enum Tapped {
    /// Its copy for the tap.
    Packet(TapPacket),
    /// Of the layer the tap moves to, before that layer's first keyframe (which is wanted).
    WaitsForKeyframe,
    /// Of a layer the tap does not take.
    NotItsLayer,
}

/// The copy of a publisher's packet for one tap of its track, if the tap takes its layer:
/// numbered as one continuous stream, the sender report's RTP time moved with the timestamps.
#[allow(clippy::too_many_arguments)]
fn tap_packet(
    tap: &mut TrackTap,
    kind: MediaKind,
    codec: Option<VideoCodec>,
    layer: u8,
    packet: &MediaPacket,
    clock_rate: u32,
    keyframe: bool,
    now: Instant,
) -> Tapped {
    match tap.gate.admit(layer, keyframe) {
        Gate::Pass | Gate::Switched => {}
        Gate::WaitKeyframe => return Tapped::WaitsForKeyframe,
        Gate::Drop => return Tapped::NotItsLayer,
    }
    let source = u64::from(layer);
    let ts = packet.header.timestamp;
    let Some(rw) = tap
        .rewriter
        .rewrite(source, *packet.seq_no, ts, now, clock_rate)
    else {
        return Tapped::NotItsLayer;
    };
    let ts_delta = rw.ts.wrapping_sub(ts);
    Tapped::Packet(TapPacket {
        tap: tap.id,
        kind,
        codec,
        clock_rate,
        seq: rw.seq,
        rtp_time: rw.ts,
        marker: packet.header.marker,
        keyframe,
        arrival: now,
        sender_report: packet.last_sender_info.map(|i| {
            (
                i.ntp_time,
                (i.rtp_time.numer() as u32).wrapping_add(ts_delta),
            )
        }),
        payload: packet.payload.clone(),
    })
}

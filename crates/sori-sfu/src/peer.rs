//! One peer: its server-side str0m `Rtc` and what the core knows about it.
//!
//! This module and the `Sfu`'s own modules are the only ones that touch str0m; its API changes
//! stop here. A peer owns its write path: forwarding hands it a packet for one of its m-lines
//! ([`Peer::write_forwarded`]) and learns what became of it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::SdpPendingOffer;
use str0m::config::DtlsCert;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Output, Rtc, RtcConfig};

use crate::config::SfuConfig;
use crate::id::{MediaKind, PeerId, TrackId};
use crate::keyframe::VideoCodec;
use crate::output::Proto;
use crate::rewrite::StreamRewriter;
use crate::room::Track;
use crate::simulcast::gate::{temporal_limit, Gate, LayerGate};
use crate::simulcast::policy::{Allocator, Choice, PolicyConfig, Probe};
use crate::simulcast::vp8::{Descriptor, Munger};
use crate::simulcast::View;
use crate::timers::{Timer, TimerTable};

/// How often str0m reports a peer's stats, with its bandwidth estimate toward the peer.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_millis(200);

/// The estimate a receiver's layer policy is given when bandwidth estimation is off.
const UNLIMITED_BPS: u64 = 10_000_000_000;
/// Most remote addresses remembered per peer for routing.
const MAX_ADDRS: usize = 8;
/// Upper bound on a forwarded video stream's retransmission cache, in packets, whatever
/// [`SfuConfig::rtx_history`] says (str0m's default; 1000 packets are a second at ~8 Mbit/s).
const RTX_MAX_PACKETS: usize = 1000;
/// Queued retransmissions are dropped while they exceed this share of a stream's bytes over
/// the last second: a receiver that asks for everything does not double its stream. Twice
/// str0m's default of 15 %, which a link losing 10 % crosses now and then (retransmissions
/// are lost too): 4 to 11 frames of 3000 were lost for good at 15 %, none at 30 %
/// (`tests/loss_recovery.rs`). Retransmissions go through the pacer either way.
const RTX_RATIO_CAP: Option<f32> = Some(0.3);

/// One publisher packet on its way to the subscribers of its track: what every subscriber's
/// write shares.
pub(crate) struct Forwardable<'a> {
    pub track: TrackId,
    /// The simulcast layer the packet belongs to (0 without simulcast).
    pub layer: u8,
    /// VP8: the packet's payload descriptor, read once for all receivers.
    pub vp8: Option<Descriptor>,
    /// VP8: the packet's temporal layer, picture id and whether it starts a frame a receiver
    /// may switch its temporal layer up at.
    pub temporal: Option<Temporal>,
    pub kind: MediaKind,
    pub packet: &'a crate::relay::MediaPacket,
    /// The publisher's parameters for the packet's payload type.
    pub params: PayloadParams,
    pub clock_rate: u32,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// Video: kept for retransmission on the subscriber's NACKs.
    pub nackable: bool,
    /// Audio quieter than [`crate::SfuConfig::silence_dbov`]: not sent, and numbered as if
    /// it never existed.
    pub silent: bool,
    /// The header extension values forwarded (the rest are the subscriber's own).
    pub ext_vals: &'a ExtensionValues,
    /// [`SfuConfig::rtx_history`].
    pub rtx_history: Duration,
    pub now: Instant,
}

/// A VP8 packet's temporal layer, as forwarding needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Temporal {
    pub tid: u8,
    pub picture_id: Option<u16>,
    /// A frame start with the layer-sync bit.
    pub sync: bool,
}

/// What became of a forwarded packet at one subscriber.
pub(crate) enum Written {
    /// Written on the subscriber's outgoing stream.
    Sent,
    /// Not written, and the session was not touched: the subscriber is not connected, has no
    /// such m-line, or the packet is older than the switch to this source.
    Skipped,
    /// Video held back until a keyframe of the layer the subscriber should get (which is
    /// wanted).
    HeldForKeyframe(u8),
    /// Sent, and the subscriber moved to another layer with it.
    Switched,
    /// The subscriber negotiated no codec matching the packet's.
    CodecMismatch,
    /// The session has no outgoing stream on the m-line (yet).
    NoStream,
    /// The session failed; the peer must go.
    Failed(String),
}

/// What [`Peer::learn_addr`] did with an address.
pub(crate) enum Learned {
    /// It was among the remembered addresses already.
    Known,
    /// It is remembered now.
    Added,
    /// It is remembered now, in place of the oldest one, which is forgotten.
    Replaced((Proto, SocketAddr)),
}

/// A server offer waiting for the client's answer.
pub(crate) struct PendingOffer {
    pub pending: SdpPendingOffer,
    /// The m-lines this offer adds, and the tracks they will carry.
    pub added: Vec<(Mid, TrackId)>,
}

/// A track this peer receives from another peer.
pub(crate) struct OutTrack {
    pub source: TrackId,
    pub kind: MediaKind,
    /// Fed by the application into one of the client's own m-lines ([`crate::Sfu::feed`]);
    /// the core's negotiation leaves it alone.
    pub pinned: bool,
    pub rewriter: StreamRewriter,
    /// The layer forwarded and the layer wanted; video waits for a keyframe of the wanted one.
    pub gate: LayerGate,
    /// The layer the policy chose, before falling back to a layer that arrives.
    pub desired: Option<Choice>,
    /// VP8 picture ids kept continuous across layer switches.
    pub munger: Munger,
    /// The highest temporal layer wanted and the one forwarded now (`None`: all).
    pub temporal_target: Option<u8>,
    pub temporal_now: Option<u8>,
    /// The outgoing SSRC whose retransmission cache was sized to [`SfuConfig::rtx_history`].
    pub history_for: Option<Ssrc>,
    /// Incoming payload type → this subscriber's payload type (None: it cannot receive it).
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// How the receiver shows the track.
    pub view: View,
}

impl OutTrack {
    pub(crate) fn new(source: TrackId, kind: MediaKind) -> Self {
        Self {
            source,
            kind,
            pinned: false,
            rewriter: StreamRewriter::default(),
            gate: match kind {
                MediaKind::Video => LayerGate::video(),
                MediaKind::Audio => LayerGate::audio(),
            },
            desired: None,
            munger: Munger::default(),
            temporal_target: None,
            temporal_now: None,
            history_for: None,
            pt_map: Vec::new(),
            view: View::default(),
        }
    }

    /// Moves to layer `target` from its next keyframe (`None`: pauses at once).
    pub(crate) fn retarget(&mut self, target: Option<u8>) {
        self.gate.retarget(target);
        if target.is_none() {
            self.rewriter.pause();
        }
    }

    /// Forwards nothing until the next keyframe, numbered on from the last packet sent.
    pub(crate) fn restart(&mut self) {
        self.gate.restart();
        self.rewriter.pause();
    }

    /// The payload type this subscriber negotiated for the codec of `params`, if any.
    pub(crate) fn pt_for(&mut self, mid: Mid, params: &PayloadParams, rtc: &Rtc) -> Option<Pt> {
        if let Some((_, out)) = self.pt_map.iter().find(|(pt, _)| *pt == params.pt()) {
            return *out;
        }
        let out = rtc.codec_config().match_params(*params).and_then(|p| {
            let negotiated = rtc.media(mid).map(|m| m.remote_pts().contains(&p.pt()));
            negotiated.unwrap_or(false).then_some(p.pt())
        });
        self.pt_map.push((params.pt(), out));
        out
    }

    /// Writes one packet of the source track on this m-line (`mid`) of the session `rtc`:
    /// held back while video waits for a keyframe, its payload type mapped, its numbering
    /// rewritten.
    fn write(&mut self, mid: Mid, rtc: &mut Rtc, p: &Forwardable<'_>) -> Written {
        let switched = match self.gate.admit(p.layer, p.keyframe) {
            Gate::Pass => false,
            Gate::Switched => true,
            Gate::Drop => return Written::Skipped,
            Gate::WaitKeyframe => return Written::HeldForKeyframe(p.layer),
        };
        let Some(out_pt) = self.pt_for(mid, &p.params, rtc) else {
            return Written::CodecMismatch;
        };
        let packet = p.packet;
        // One numbering space per (track, layer): each layer is its own RTP stream.
        let source = p.track.0 << 3 | u64::from(p.layer);
        if p.silent {
            // Nothing to hear: the next packet sent follows the last one sent without a gap in
            // the numbers, its timestamp telling the pause (as after the sender's own DTX).
            self.rewriter.skip(source, *packet.seq_no);
            return Written::Skipped;
        }
        if let Some(t) = p.temporal {
            let (target, now) = (self.temporal_target, self.temporal_now);
            self.temporal_now = temporal_limit(now, target, t.tid, t.sync, switched || p.keyframe);
            if self.temporal_now.is_some_and(|max| t.tid > max) {
                // Not taken: the receiver sees neither a gap in the numbers nor in the ids.
                self.rewriter.skip(source, *packet.seq_no);
                if let Some(pid) = t.picture_id {
                    self.munger.drop_picture(source, pid);
                }
                return Written::Skipped;
            }
        }
        let Some(rw) = self.rewriter.rewrite(
            source,
            *packet.seq_no,
            packet.header.timestamp,
            p.now,
            p.clock_rate,
        ) else {
            return Written::Skipped;
        };
        let payload = match &p.vp8 {
            Some(d) => self
                .munger
                .munge(source, d, &packet.payload)
                .map(Into::into),
            None => None,
        }
        .unwrap_or_else(|| packet.payload.clone());
        let write = RtpWrite::new(out_pt, rw.seq.into(), rw.ts, packet.timestamp, payload)
            .marker(packet.header.marker)
            .ext_vals(p.ext_vals.clone())
            .nackable(p.nackable);
        let (nackable, history_for, history) = (p.nackable, self.history_for, p.rtx_history);
        let written = in_session(rtc, |rtc| {
            let mut api = rtc.direct_api();
            let tx = api.stream_tx_by_mid(mid, None)?;
            let ssrc = tx.ssrc();
            if nackable && history_for != Some(ssrc) {
                // Before the stream's first packet: this replaces str0m's default cache.
                tx.set_rtx_cache(RTX_MAX_PACKETS, history, RTX_RATIO_CAP);
            }
            tx.write_rtp(write);
            Some(ssrc)
        });
        match written {
            Ok(Some(ssrc)) => {
                if nackable {
                    self.history_for = Some(ssrc);
                }
                if switched {
                    Written::Switched
                } else {
                    Written::Sent
                }
            }
            Ok(None) => Written::NoStream,
            Err(e) => Written::Failed(e),
        }
    }
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub room: String,
    pub rtc: Rtc,
    /// The local ICE ufrag of the current credentials: binding requests naming it are routed
    /// to this peer.
    pub ufrag: String,
    /// The ufrag of the credentials an ICE restart replaced, still routed until the restart
    /// completes (the client may check the old path meanwhile).
    pub retired_ufrag: Option<String>,
    pub connected: bool,
    /// [`crate::SfuEvent::IceStalled`] was reported and nothing has arrived since.
    pub stalled: bool,
    /// Remote addresses the peer's ICE agent has answered; routed straight to this peer.
    pub addrs: Vec<(Proto, SocketAddr)>,
    /// Every m-line of the session, in the order str0m reported them.
    pub lines: Vec<(Mid, MediaKind)>,
    /// RTP packets received from this peer and sent to it, per kind (audio, video).
    pub packets_in: [u64; 2],
    pub packets_out: [u64; 2],
    /// Tracks this peer publishes, by its m-line.
    pub published: HashMap<Mid, TrackId>,
    /// Incoming SSRC → published track and its layer, filled as packets arrive.
    pub rx_tracks: HashMap<Ssrc, (TrackId, u8)>,
    /// Tracks this peer receives, by the m-line the core added for each.
    pub out: HashMap<Mid, OutTrack>,
    /// The numbering of streams this peer's own m-lines carried before they were emptied
    /// ([`crate::Sfu::feed`] with no source): the next source fed there continues it, so that
    /// the client sees one stream (a numbering started anew could run behind the old one,
    /// and its packets would be dropped as old).
    pub parked: HashMap<Mid, StreamRewriter>,
    /// Tracks this peer should receive; negotiation brings `out` in line with it.
    pub desired: BTreeSet<TrackId>,
    /// Whether the room's tracks are forwarded to this peer (off: a publish-only participant).
    pub receives: bool,
    /// Media of this kind (audio, video) from this peer is not forwarded: a server-side mute.
    pub muted: [bool; 2],
    pub pending: Option<PendingOffer>,
    /// When the last datagram from one of the peer's known addresses arrived.
    pub last_input: Instant,
    pub timers: TimerTable,
    /// The simulcast layer policy for what this peer receives.
    pub allocator: Allocator,
    /// The latest bandwidth estimate toward this peer, bits per second.
    pub estimate: Option<u64>,
    /// Loudness of the audio received since the last level report: the sum and the packets.
    pub levels: (u64, u32),
    /// The only video tracks forwarded to this peer (last-N; `None`: every one it receives).
    pub video_set: Option<BTreeSet<TrackId>>,
    /// What the estimator was last asked to probe for.
    pub probe: Option<Probe>,
    /// When to probe again if the estimate still falls short.
    pub probe_retry: Option<Instant>,
    /// Added to the desired rate of a repeated probe (the estimator probes when it goes up).
    pub probe_bump: u64,
    /// When the estimator was last restarted for being stuck short of the next layer.
    pub estimator_restarted: Option<Instant>,
    /// When the estimate last went down.
    pub estimate_fell_at: Option<Instant>,
    /// Whether the estimator can probe (its estimates count).
    pub bwe_live: bool,
    /// The peer negotiated no transport-wide congestion control: no estimate will come, so
    /// nothing is paced or probed toward it and its views alone pick its layers.
    pub unestimated: bool,
    /// Since when the peer has been held below the layers its tiles could use, asking for
    /// more than its estimate.
    pub waiting_since: Option<Instant>,
    /// What the audio this peer receives takes of its estimate, bits per second (the policy
    /// shares out the rest; the estimator is asked for both).
    pub audio_bps: u64,
}

/// What a drained `Rtc` left to do.
pub(crate) enum Drained {
    Ok,
    /// The `Rtc` failed (an error or a panic inside str0m); the peer must go.
    Failed(String),
}

impl Peer {
    pub(crate) fn new(
        id: PeerId,
        room: String,
        video: &[VideoCodec],
        cert: &DtlsCert,
        config: &SfuConfig,
        now: Instant,
    ) -> Self {
        let mut rtc_config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .set_stats_interval(None);
        if let Some(bps) = config.initial_estimate {
            // TWCC bandwidth estimation toward the peer: it picks each track's layer. Its
            // estimate comes with the stats.
            rtc_config = rtc_config
                .enable_bwe(Some(Bitrate::bps(bps)))
                .set_stats_interval(Some(STATS_INTERVAL));
        }
        for codec in video {
            rtc_config = match codec {
                VideoCodec::Vp8 => rtc_config.enable_vp8(true),
                VideoCodec::Vp9 => rtc_config.enable_vp9(true),
                VideoCodec::H264 => rtc_config.enable_h264(true),
            };
        }
        let mut rtc = rtc_config.build(now);
        for addr in &config.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(%addr, "unusable candidate address: {e}"),
            }
        }
        // ICE-TCP (RFC 6544): the client connects, the core only accepts. str0m gives TCP host
        // candidates a lower type preference than UDP ones, so clients prefer UDP when it works.
        for addr in &config.tcp_candidates {
            let candidate = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build();
            match candidate {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(%addr, "unusable TCP candidate address: {e}"),
            }
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let mut allocator = Allocator::new(PolicyConfig::default());
        if config.initial_estimate.is_none() {
            // No estimation: as if the link carried anything; the views alone decide.
            allocator.estimate(UNLIMITED_BPS, now);
        }
        let mut timers = TimerTable::default();
        timers.set(Timer::Rtc, now);
        timers.set(Timer::Idle, now + config.ice_timeout);
        timers.set(Timer::Layers, now + crate::layers::TICK);
        Self {
            id,
            room,
            rtc,
            ufrag,
            retired_ufrag: None,
            connected: false,
            stalled: false,
            addrs: Vec::new(),
            lines: Vec::new(),
            packets_in: [0; 2],
            packets_out: [0; 2],
            published: HashMap::new(),
            rx_tracks: HashMap::new(),
            out: HashMap::new(),
            parked: HashMap::new(),
            desired: BTreeSet::new(),
            receives: true,
            muted: [false; 2],
            pending: None,
            last_input: now,
            timers,
            allocator,
            estimate: None,
            levels: (0, 0),
            video_set: None,
            probe: None,
            probe_retry: None,
            probe_bump: 0,
            estimator_restarted: None,
            estimate_fell_at: None,
            bwe_live: false,
            // Estimation off: nothing to do for a peer without transport-cc either.
            unestimated: config.initial_estimate.is_none(),
            waiting_since: None,
            audio_bps: 0,
        }
    }

    /// Runs one mutation of the `Rtc` inside the peer's panic boundary.
    pub(crate) fn mutate<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> Result<R, String> {
        in_session(&mut self.rtc, f)
    }

    /// Writes one packet of a track this peer receives on its m-line `mid`.
    pub(crate) fn write_forwarded(&mut self, mid: Mid, p: &Forwardable<'_>) -> Written {
        if !self.connected {
            return Written::Skipped;
        }
        let Some(out) = self.out.get_mut(&mid) else {
            return Written::Skipped;
        };
        let written = out.write(mid, &mut self.rtc, p);
        if let Written::Sent | Written::Switched = written {
            self.packets_out[p.kind as usize] += 1;
        }
        written
    }

    /// Notes a session description the peer agreed to: without transport-wide congestion
    /// control in it (no transport sequence numbers, so no feedback), str0m's estimator would
    /// stay at its starting rate and pace everything sent to the peer at that rate, however
    /// much the peer's tiles ask for; the peer is then treated as when estimation is off.
    pub(crate) fn note_congestion_control(&mut self, sdp: &str, now: Instant) {
        if self.unestimated || self.estimate.is_some() || sdp_has_transport_cc(sdp) {
            return;
        }
        if !self.lines.iter().any(|(_, kind)| *kind == MediaKind::Video) {
            // Audio alone: the starting rate carries it.
            return;
        }
        tracing::debug!(id = %self.id, "no transport-cc negotiated: not paced, layers by view");
        self.unestimated = true;
        self.allocator.estimate(UNLIMITED_BPS, now);
        // A failure here closes the session, as any other in str0m, at the next drain.
        let _ = self.mutate(|rtc| rtc.bwe().reset(Bitrate::bps(UNLIMITED_BPS)));
    }

    /// Drains the `Rtc` until it asks for a timeout (str0m's single-mutation invariant):
    /// transmits go to `transmits`, events to `events`.
    pub(crate) fn drain(
        &mut self,
        transmits: &mut Vec<(Proto, SocketAddr, SocketAddr, Vec<u8>)>,
        events: &mut Vec<Event>,
    ) -> Drained {
        let rtc = &mut self.rtc;
        let result = catch_unwind(AssertUnwindSafe(|| loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break Ok(t),
                Ok(Output::Transmit(t)) => {
                    let proto = match t.proto {
                        Protocol::Udp => Proto::Udp,
                        // Only TCP candidates were added besides UDP ones.
                        _ => Proto::Tcp,
                    };
                    transmits.push((proto, t.source, t.destination, t.contents.into()));
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => break Err(e.to_string()),
            }
        }));
        match result {
            Ok(Ok(t)) => {
                self.timers.set(Timer::Rtc, t);
                if self.rtc.is_alive() {
                    Drained::Ok
                } else {
                    Drained::Failed("media session closed".into())
                }
            }
            Ok(Err(e)) => Drained::Failed(e),
            Err(_) => Drained::Failed("internal error in the peer's media session".into()),
        }
    }

    /// Remembers a remote address the peer's ICE agent sent to, keeping the latest
    /// [`MAX_ADDRS`]; says whether it was known, added, or added in place of the oldest.
    pub(crate) fn learn_addr(&mut self, addr: (Proto, SocketAddr)) -> Learned {
        if self.addrs.contains(&addr) {
            return Learned::Known;
        }
        let evicted = (self.addrs.len() >= MAX_ADDRS).then(|| self.addrs.remove(0));
        self.addrs.push(addr);
        match evicted {
            Some(old) => Learned::Replaced(old),
            None => Learned::Added,
        }
    }

    /// The published track of the incoming stream `ssrc` and the layer it carries,
    /// remembered once str0m knows the stream's m-line (and `rid`).
    pub(crate) fn track_of(
        &mut self,
        ssrc: Ssrc,
        tracks: &HashMap<TrackId, Track>,
    ) -> Option<(TrackId, u8)> {
        if let Some(t) = self.rx_tracks.get(&ssrc) {
            return Some(*t);
        }
        let (mid, rid) = self
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))?;
        let t = self.published.get(&mid).copied()?;
        let layer = tracks.get(&t)?.layer_of(rid)?;
        self.rx_tracks.insert(ssrc, (t, layer));
        Some((t, layer))
    }

    /// The negotiated parameters of payload type `pt` on this peer.
    pub(crate) fn params_for(&self, pt: Pt) -> Option<PayloadParams> {
        self.rtc.codec_config().find(|p| p.pt() == pt).copied()
    }
}

/// Runs `f` on the session inside the peer's panic boundary: a panic in str0m fails the peer,
/// not the core.
fn in_session<R>(rtc: &mut Rtc, f: impl FnOnce(&mut Rtc) -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(|| f(rtc)))
        .map_err(|_| "internal error in the peer's media session".to_string())
}

/// Whether a session description negotiates transport-wide congestion control: its transport
/// sequence number header extension (without it there is no feedback to estimate from).
pub(crate) fn sdp_has_transport_cc(sdp: &str) -> bool {
    sdp.lines()
        .any(|l| l.starts_with("a=extmap:") && l.contains("transport-wide-cc-extensions"))
}

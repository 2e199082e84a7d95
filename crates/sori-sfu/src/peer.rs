//! One peer: its server-side str0m `Rtc` and what the core knows about it.
//!
//! This module and `sfu.rs` are the only ones that touch str0m; its API changes stop here.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::config::DtlsCert;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, Output, Rtc, RtcConfig};

use crate::keyframe::VideoCodec;
use crate::rewrite::StreamRewriter;
use crate::sfu::{MediaKind, PeerId, Proto, SfuConfig, TrackId};

/// Most remote addresses remembered per peer for routing.
const MAX_ADDRS: usize = 8;

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
    /// Video is held back until a keyframe starts.
    pub waiting_keyframe: bool,
    /// The outgoing SSRC whose retransmission cache was sized to [`SfuConfig::rtx_history`].
    pub history_for: Option<Ssrc>,
    /// Incoming payload type → this subscriber's payload type (None: it cannot receive it).
    pt_map: Vec<(Pt, Option<Pt>)>,
}

impl OutTrack {
    pub(crate) fn new(source: TrackId, kind: MediaKind) -> Self {
        Self {
            source,
            kind,
            pinned: false,
            rewriter: StreamRewriter::default(),
            waiting_keyframe: kind == MediaKind::Video,
            history_for: None,
            pt_map: Vec::new(),
        }
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
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub room: String,
    pub rtc: Rtc,
    pub ufrag: String,
    pub connected: bool,
    /// Remote addresses the peer's ICE agent has answered; routed straight to this peer.
    pub addrs: Vec<(Proto, SocketAddr)>,
    /// Every m-line of the session, in the order str0m reported them.
    pub lines: Vec<(Mid, MediaKind)>,
    /// RTP packets received from this peer and sent to it, per kind (audio, video).
    pub packets_in: [u64; 2],
    pub packets_out: [u64; 2],
    /// Tracks this peer publishes, by its m-line.
    pub published: HashMap<Mid, TrackId>,
    /// Incoming SSRC → published track, filled as packets arrive.
    pub rx_tracks: HashMap<Ssrc, TrackId>,
    /// Tracks this peer receives, by the m-line the core added for each.
    pub out: HashMap<Mid, OutTrack>,
    /// Tracks this peer should receive; negotiation brings `out` in line with it.
    pub desired: BTreeSet<TrackId>,
    /// Whether the room's tracks are forwarded to this peer (off: a publish-only participant).
    pub receives: bool,
    /// Media of this kind (audio, video) from this peer is not forwarded: a server-side mute.
    pub muted: [bool; 2],
    pub pending: Option<PendingOffer>,
    pub rtc_timeout: Instant,
    pub last_input: Instant,
    pub idle_check: Instant,
    /// Earliest pending keyframe request on one of this peer's tracks.
    pub throttle_due: Option<Instant>,
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
        Self {
            id,
            room,
            rtc,
            ufrag,
            connected: false,
            addrs: Vec::new(),
            lines: Vec::new(),
            packets_in: [0; 2],
            packets_out: [0; 2],
            published: HashMap::new(),
            rx_tracks: HashMap::new(),
            out: HashMap::new(),
            desired: BTreeSet::new(),
            receives: true,
            muted: [false; 2],
            pending: None,
            rtc_timeout: now,
            last_input: now,
            idle_check: now + config.ice_timeout,
            throttle_due: None,
        }
    }

    /// The next time this peer needs `handle_timeout`.
    pub(crate) fn deadline(&self) -> Instant {
        let mut at = self.rtc_timeout.min(self.idle_check);
        if let Some(t) = self.throttle_due {
            at = at.min(t);
        }
        at
    }

    /// Runs one mutation of the `Rtc` inside the peer's panic boundary.
    pub(crate) fn mutate<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> Result<R, String> {
        catch_unwind(AssertUnwindSafe(|| f(&mut self.rtc)))
            .map_err(|_| "internal error in the peer's media session".to_string())
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
                self.rtc_timeout = t;
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

    /// Remembers a remote address the peer's ICE agent talks to. Returns true if new.
    pub(crate) fn learn_addr(
        &mut self,
        addr: (Proto, SocketAddr),
    ) -> Option<Option<(Proto, SocketAddr)>> {
        if self.addrs.contains(&addr) {
            return None;
        }
        let evicted = (self.addrs.len() >= MAX_ADDRS).then(|| self.addrs.remove(0));
        self.addrs.push(addr);
        Some(evicted)
    }

    /// The negotiated parameters of payload type `pt` on this peer.
    pub(crate) fn params_for(&self, pt: Pt) -> Option<PayloadParams> {
        self.rtc.codec_config().find(|p| p.pt() == pt).copied()
    }
}

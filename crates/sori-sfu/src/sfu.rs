//! The `Sfu`: rooms, routing, forwarding and negotiation over all peers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Event, Input};

use crate::deadline::Deadlines;
use crate::keyframe::VideoCodec;
use crate::peer::{Drained, OutTrack, Peer, PendingOffer};
use crate::sdp::video_offer;
use crate::stun;
use crate::throttle::{KeyframeThrottle, Urgency};

/// Upper bound on a forwarded video stream's retransmission cache, in packets, whatever
/// [`SfuConfig::rtx_history`] says (str0m's default; 1000 packets are a second at ~8 Mbit/s).
const RTX_MAX_PACKETS: usize = 1000;
/// Queued retransmissions are dropped while they exceed this share of a stream's bytes
/// (str0m's default).
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// A peer (one client PeerConnection) in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

/// One published audio or video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackId(pub u64);

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "track-{}", self.0)
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (the room's video codec).
    Video,
}

impl From<str0m::media::MediaKind> for MediaKind {
    fn from(k: str0m::media::MediaKind) -> Self {
        if k.is_audio() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        }
    }
}

impl From<MediaKind> for str0m::media::MediaKind {
    fn from(k: MediaKind) -> Self {
        match k {
            MediaKind::Audio => str0m::media::MediaKind::Audio,
            MediaKind::Video => str0m::media::MediaKind::Video,
        }
    }
}

/// How a room decides who receives what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// Every peer receives every other peer's tracks; the core adds m-lines and offers them.
    #[default]
    Automatic,
    /// Nobody receives anything until the application feeds a track into one of the
    /// receiver's own m-lines with [`Sfu::feed`]; the core never renegotiates on its own.
    Manual,
}

/// One m-line of a peer's session, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// The m-line's `a=mid`.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The core sends on it (the client receives).
    pub sends: bool,
    /// The track the client publishes on it, if it sends.
    pub published: Option<TrackId>,
    /// The track the core forwards into it.
    pub fed_by: Option<TrackId>,
    /// The core added it to carry a subscription (not one of the client's own m-lines).
    pub managed: bool,
}

/// RTP packets a peer sent to the core and received from it, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerFlow {
    /// From the peer: audio packets.
    pub audio_in: u64,
    /// From the peer: video packets.
    pub video_in: u64,
    /// To the peer: audio packets.
    pub audio_out: u64,
    /// To the peer: video packets.
    pub video_out: u64,
}

/// One m-line of an offer the core makes ([`Sfu::offer_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferLine {
    /// Audio or video.
    pub kind: MediaKind,
    /// The core receives the client's media on it.
    pub receive: bool,
    /// The core sends media to the client on it.
    pub send: bool,
}

/// A tap on a track: every packet of it, copied out for recording ([`Sfu::tap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TapId(pub u64);

impl fmt::Display for TapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tap-{}", self.0)
    }
}

/// One RTP packet of a tapped track, as the publisher sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPacket {
    /// The tap.
    pub tap: TapId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The video codec (`None` for audio, which is Opus).
    pub codec: Option<VideoCodec>,
    /// The RTP clock rate.
    pub clock_rate: u32,
    /// Extended sequence number (no wrap-around).
    pub seq: u64,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// The marker bit (last packet of a video frame).
    pub marker: bool,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// When the core received it.
    pub arrival: Instant,
    /// The sender's latest RTCP sender report for this track: its wall clock (NTP) and the
    /// RTP time at that moment. Tracks of one sender share the wall clock.
    pub sender_report: Option<(std::time::SystemTime, u32)>,
    /// The RTP payload.
    pub payload: std::sync::Arc<[u8]>,
}

/// Configuration of the media core.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The addresses (advertised IP, the one UDP port) given to clients as ICE candidates.
    pub candidates: Vec<SocketAddr>,
    /// Addresses given to clients as passive TCP candidates (ICE-TCP, RFC 6544), at a lower
    /// priority than the UDP ones. Empty: UDP only.
    pub tcp_candidates: Vec<SocketAddr>,
    /// A peer from which nothing arrived for this long is removed.
    pub ice_timeout: Duration,
    /// At most one keyframe request per track goes to its publisher in this interval.
    pub keyframe_request_interval: Duration,
    /// The shorter gap for a request made because a receiver starts on a track (it shows
    /// nothing until a keyframe); at most `keyframe_request_interval`.
    pub keyframe_request_on_start_interval: Duration,
    /// Video codecs a room may use, in order of preference.
    pub video_codecs: Vec<VideoCodec>,
    /// How long each forwarded video stream keeps its sent packets to answer the subscriber's
    /// NACKs with retransmissions ([`DEFAULT_RTX_HISTORY`]).
    pub rtx_history: Duration,
}

/// The default [`SfuConfig::rtx_history`]: one second.
///
/// A retransmission helps only while the receiver still waits for the packet: the loss is
/// noticed at the next packet, the NACK reaches the core half a round trip later, and the
/// receiver repeats it about once per round trip when the retransmission is lost too. One
/// second covers the first NACK and two or three repeats at a 200–300 ms round trip; a picture
/// broken for longer is repaired by a keyframe request instead.
///
/// The history costs memory per subscriber, not per publisher: the payloads are shared between
/// subscribers, but str0m keeps a ~430-byte packet record per cached packet and stream. At
/// 1 Mbit/s (about 120 packets/s) one second is ~120 records, ~50 KiB per forwarded video stream;
/// str0m's own default (three seconds, at most 1000 packets) is three times that.
pub const DEFAULT_RTX_HISTORY: Duration = Duration::from_secs(1);

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            tcp_candidates: Vec::new(),
            ice_timeout: Duration::from_secs(15),
            keyframe_request_interval: Duration::from_secs(1),
            keyframe_request_on_start_interval: Duration::from_millis(200),
            video_codecs: vec![VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264],
            rtx_history: DEFAULT_RTX_HISTORY,
        }
    }
}

/// The transport a packet came in on or goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// A datagram on the media port's UDP socket.
    Udp,
    /// One RFC 4571 frame on an ICE-TCP connection; the remote address names the connection.
    Tcp,
}

/// A datagram (or, for [`Proto::Tcp`], one frame) to send from the media port.
#[derive(Debug)]
pub struct Transmit {
    /// UDP, or the TCP connection whose remote address is `destination`.
    pub proto: Proto,
    /// The local address (one of the candidates) it is sent from.
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Why a peer left the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveReason {
    /// [`Sfu::leave`] was called.
    Left,
    /// The client closed DTLS.
    DtlsClosed,
    /// Nothing was received from the client for the ICE timeout.
    IceTimeout,
    /// The peer's media session failed.
    Failed(String),
}

impl fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveReason::Left => f.write_str("left"),
            RemoveReason::DtlsClosed => f.write_str("DTLS closed"),
            RemoveReason::IceTimeout => f.write_str("ICE timeout"),
            RemoveReason::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// What the core tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// The core offers a new session description to the peer (tracks added or removed);
    /// answer with [`Sfu::accept_answer`].
    Offer {
        /// The peer to send the offer to.
        peer: PeerId,
        /// The SDP offer.
        sdp: String,
    },
    /// ICE and DTLS are up: media flows.
    Connected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer started publishing a track.
    TrackPublished {
        /// The publisher.
        peer: PeerId,
        /// The track.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// A track stopped (its publisher left or stopped sending it).
    TrackUnpublished {
        /// The publisher.
        peer: PeerId,
        /// The track.
        track: TrackId,
    },
    /// A peer is gone, with all its state.
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RemoveReason,
    },
}

/// Errors of the core's API; each leaves the core as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// No such peer (never existed or already removed).
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// The SDP could not be parsed.
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    /// The SDP parsed but cannot be accepted.
    #[error("SDP rejected: {0}")]
    Rejected(String),
    /// An answer arrived while no offer of the core was outstanding.
    #[error("no offer is waiting for an answer")]
    NoPendingOffer,
    /// The offer's video cannot use the room's codec.
    #[error("the room uses {room} video, which this client does not offer (it offers: {offered})")]
    VideoCodecUnsupported {
        /// The room's codec, or the configured list when the room has none yet.
        room: String,
        /// What the client offered.
        offered: String,
    },
}

/// Running totals, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handed to [`Sfu::handle_datagram`].
    pub datagrams_received: u64,
    /// Dropped: from an unknown address and not a binding request for a known peer.
    pub datagrams_unroutable: u64,
    /// Dropped: not STUN, DTLS, RTP or RTCP.
    pub datagrams_malformed: u64,
    /// Routed to a peer whose session rejected them.
    pub datagrams_rejected: u64,
    /// RTP packets received from publishers.
    pub rtp_received: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded_packets: u64,
    /// Payload bytes of those packets.
    pub rtp_forwarded_bytes: u64,
    /// Video packets not sent to a subscriber still waiting for a keyframe.
    pub rtp_held_for_keyframe: u64,
    /// Packets a subscriber could not take (it negotiated no matching codec).
    pub rtp_codec_mismatch: u64,
    /// Packets of a publisher the server muted, forwarded to no one.
    pub rtp_dropped_muted: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Peers that joined.
    pub peers_joined: u64,
    /// Peers removed, for any reason.
    pub peers_removed: u64,
}

/// Sizes of the core's state, to check that nothing outlives its peer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoreState {
    /// Peers.
    pub peers: usize,
    /// Rooms with at least one peer.
    pub rooms: usize,
    /// Published tracks.
    pub tracks: usize,
    /// (track, subscriber) forwarding entries.
    pub subscriptions: usize,
    /// ICE ufrag routing entries.
    pub ufrag_routes: usize,
    /// Remote-address routing entries.
    pub addr_routes: usize,
    /// Scheduled deadlines.
    pub timers: usize,
}

struct Room {
    forwarding: Forwarding,
    peers: BTreeSet<PeerId>,
    tracks: BTreeSet<TrackId>,
    video: Option<VideoCodec>,
}

struct Track {
    publisher: PeerId,
    room: String,
    mid: Mid,
    kind: MediaKind,
    codec: Option<VideoCodec>,
    subscribers: Vec<(PeerId, Mid)>,
    taps: Vec<TapId>,
    throttle: KeyframeThrottle,
    params: Vec<(Pt, PayloadParams)>,
}

/// Where drained peers put their output; kept apart from `peers` and `tracks` so forwarding
/// can hold a track while it drives its subscribers.
#[derive(Default)]
struct Io {
    transmits: VecDeque<Transmit>,
    tapped: VecDeque<TapPacket>,
    by_addr: HashMap<(Proto, SocketAddr), PeerId>,
    timers: Deadlines<PeerId>,
    work: VecDeque<(PeerId, Event)>,
    doomed: Vec<(PeerId, RemoveReason)>,
    scratch_tx: Vec<(Proto, SocketAddr, SocketAddr, Vec<u8>)>,
    scratch_ev: Vec<Event>,
}

impl Io {
    /// Drains `peer` after a mutation and files its output.
    fn settle(&mut self, peer: &mut Peer) {
        let drained = peer.drain(&mut self.scratch_tx, &mut self.scratch_ev);
        for (proto, source, destination, contents) in self.scratch_tx.drain(..) {
            // The ICE agent only answers addresses that proved they know the credentials.
            if let Some(evicted) = peer.learn_addr((proto, destination)) {
                if let Some(old) = evicted {
                    if self.by_addr.get(&old) == Some(&peer.id) {
                        self.by_addr.remove(&old);
                    }
                }
                self.by_addr.entry((proto, destination)).or_insert(peer.id);
            }
            self.transmits.push_back(Transmit {
                proto,
                source,
                destination,
                contents,
            });
        }
        for e in self.scratch_ev.drain(..) {
            self.work.push_back((peer.id, e));
        }
        self.timers.set(peer.id, peer.deadline());
        if let Drained::Failed(why) = drained {
            self.doomed.push((peer.id, RemoveReason::Failed(why)));
        }
    }
}

/// The media core. See the crate documentation for the run loop.
pub struct Sfu {
    config: SfuConfig,
    cert: DtlsCert,
    peers: HashMap<PeerId, Peer>,
    rooms: HashMap<String, Room>,
    tracks: HashMap<TrackId, Track>,
    by_ufrag: HashMap<String, PeerId>,
    renegotiate: BTreeSet<PeerId>,
    events: VecDeque<SfuEvent>,
    io: Io,
    counters: Counters,
    next_id: u64,
}

impl Sfu {
    /// A core with one freshly generated DTLS certificate for all its peers.
    pub fn new(config: SfuConfig) -> Self {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs crypto provider generates certificates");
        Self {
            config,
            cert,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            tracks: HashMap::new(),
            by_ufrag: HashMap::new(),
            renegotiate: BTreeSet::new(),
            events: VecDeque::new(),
            io: Io::default(),
            counters: Counters::default(),
            next_id: 1,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// A new peer joins `room` with its first SDP offer; returns its id and the answer.
    ///
    /// The peer then receives every track of the room; the core's offer for them follows as
    /// an [`SfuEvent::Offer`], to be delivered after this answer.
    pub fn join(
        &mut self,
        room: &str,
        offer: &str,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.join_with(room, offer, Forwarding::Automatic, now)
    }

    /// [`Sfu::join`] into a room with the given forwarding; a room keeps the forwarding of
    /// its first peer, and a join asking for the other one is refused.
    pub fn join_with(
        &mut self,
        room: &str,
        offer: &str,
        forwarding: Forwarding,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.join_as(room, offer, forwarding, true, now)
    }

    /// [`Sfu::join_with`] for a peer that receives the room's tracks only when `receive` is
    /// true; a peer that may not subscribe is never offered anything.
    pub fn join_as(
        &mut self,
        room: &str,
        offer: &str,
        forwarding: Forwarding,
        receive: bool,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.check_forwarding(room, forwarding)?;
        let room_video = self.rooms.get(room).and_then(|r| r.video);
        let (codecs, chosen) = self.video_codecs_for(room_video, offer)?;
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;

        let id = PeerId(self.next_id);
        let mut peer = Peer::new(id, room.to_string(), &codecs, &self.cert, &self.config, now);
        peer.receives = receive;
        let answer = match peer.mutate(|rtc| rtc.sdp_api().accept_offer(parsed)) {
            Ok(Ok(answer)) => {
                let sdp = answer.to_sdp_string();
                record_lines(&mut peer, &sdp);
                sdp
            }
            Ok(Err(e)) => return Err(SfuError::Rejected(e.to_string())),
            Err(e) => return Err(SfuError::Rejected(e)),
        };
        self.admit(peer, forwarding, chosen);
        tracing::debug!(%id, room, "peer joined");
        self.renegotiate.insert(id);
        self.process(now);
        Ok((id, answer))
    }

    fn check_forwarding(&self, room: &str, forwarding: Forwarding) -> Result<(), SfuError> {
        match self.rooms.get(room) {
            Some(r) if r.forwarding != forwarding => Err(SfuError::Rejected(format!(
                "room {room} uses {:?} forwarding",
                r.forwarding
            ))),
            _ => Ok(()),
        }
    }

    /// Puts a new peer into its room (created with `forwarding` if new; its video codec set
    /// from `video` if it has none yet) and into the routing tables.
    fn admit(&mut self, mut peer: Peer, forwarding: Forwarding, video: Option<VideoCodec>) {
        let id = peer.id;
        self.next_id += 1;
        self.counters.peers_joined += 1;
        let room_state = self.rooms.entry(peer.room.clone()).or_insert_with(|| Room {
            forwarding,
            peers: BTreeSet::new(),
            tracks: BTreeSet::new(),
            video: None,
        });
        if room_state.video.is_none() {
            room_state.video = video;
        }
        room_state.peers.insert(id);
        if forwarding == Forwarding::Automatic && peer.receives {
            peer.desired = room_state.tracks.clone();
        }
        self.by_ufrag.insert(peer.ufrag.clone(), id);
        self.io.settle(&mut peer);
        self.peers.insert(id, peer);
    }

    /// A new peer whose session the core offers: one m-line per entry of `lines` (`receive`:
    /// the core receives the client's media on it; `send`: it sends media to the client). The
    /// client's answer goes to [`Sfu::accept_answer`]. The offer names one video codec: the
    /// room's, or the first configured one for a new room.
    pub fn offer_with(
        &mut self,
        room: &str,
        forwarding: Forwarding,
        lines: &[OfferLine],
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.check_forwarding(room, forwarding)?;
        let video = self
            .rooms
            .get(room)
            .and_then(|r| r.video)
            .or_else(|| self.config.video_codecs.first().copied())
            .ok_or_else(|| SfuError::Rejected("no video codec is configured".into()))?;
        let id = PeerId(self.next_id);
        let mut peer = Peer::new(
            id,
            room.to_string(),
            &[video],
            &self.cert,
            &self.config,
            now,
        );
        let result = peer.mutate(|rtc| {
            let mut api = rtc.sdp_api();
            for line in lines {
                let direction = match (line.receive, line.send) {
                    (true, true) => Direction::SendRecv,
                    (true, false) => Direction::RecvOnly,
                    (false, true) => Direction::SendOnly,
                    (false, false) => Direction::Inactive,
                };
                api.add_media(line.kind.into(), direction, None, None, None);
            }
            api.apply()
        });
        let (offer, pending) = match result {
            Ok(Some(pair)) => pair,
            Ok(None) => {
                return Err(SfuError::Rejected(
                    "an offer needs at least one m-line".into(),
                ))
            }
            Err(e) => return Err(SfuError::Rejected(e)),
        };
        let sdp = offer.to_sdp_string();
        record_lines(&mut peer, &sdp);
        peer.pending = Some(PendingOffer {
            pending,
            added: Vec::new(),
        });
        let has_video = lines.iter().any(|l| l.kind == MediaKind::Video);
        self.admit(peer, forwarding, has_video.then_some(video));
        tracing::debug!(%id, room, "peer offered");
        self.process(now);
        Ok((id, sdp))
    }

    /// A new offer from an existing peer (it added or stopped tracks). If the core's own
    /// offer was outstanding, it is dropped (the core is the polite side) and made again.
    pub fn accept_offer(
        &mut self,
        id: PeerId,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let peer = self.peers.get(&id).ok_or(SfuError::UnknownPeer(id))?;
        let room_video = self.rooms.get(&peer.room).and_then(|r| r.video);
        if let Some(video) = room_video {
            let offered = video_offer(offer);
            if offered.has_video && !offered.codecs.contains(&video) {
                return Err(codec_error(&[video], &offered.codecs));
            }
        }
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        if peer.pending.take().is_some() {
            tracing::debug!(%id, "offer collision: dropping the core's offer");
        }
        let result = peer.mutate(|rtc| rtc.sdp_api().accept_offer(parsed));
        self.io.settle(peer);
        self.renegotiate.insert(id);
        let answer = match result {
            Ok(Ok(answer)) => {
                let sdp = answer.to_sdp_string();
                record_lines(peer, &sdp);
                Ok(sdp)
            }
            Ok(Err(e)) => Err(SfuError::Rejected(e.to_string())),
            Err(e) => {
                self.io.doomed.push((id, RemoveReason::Failed(e.clone())));
                Err(SfuError::Rejected(e))
            }
        };
        self.process(now);
        answer
    }

    /// The peer's answer to the core's last [`SfuEvent::Offer`].
    pub fn accept_answer(
        &mut self,
        id: PeerId,
        answer: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        if peer.pending.is_none() {
            return Err(SfuError::NoPendingOffer);
        }
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // Checked above; the unwrap cannot fail.
        let PendingOffer { pending, added } = peer.pending.take().expect("pending offer");
        let result = peer.mutate(|rtc| rtc.sdp_api().accept_answer(pending, parsed));
        self.io.settle(peer);
        // Whatever happened, the core brings the peer to its desired state again.
        self.renegotiate.insert(id);
        let outcome = match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SfuError::Rejected(e.to_string())),
            Err(e) => {
                self.io.doomed.push((id, RemoveReason::Failed(e.clone())));
                Err(SfuError::Rejected(e))
            }
        };
        if outcome.is_ok() {
            for (mid, track_id) in added {
                self.start_subscription(id, mid, track_id, now);
            }
            // m-lines the core itself offered for receiving raise no MediaAdded: they are
            // published here.
            let receiving: Vec<(Mid, MediaKind)> = self
                .peers
                .get(&id)
                .map(|p| {
                    p.lines
                        .iter()
                        .filter(|(mid, _)| {
                            !p.published.contains_key(mid)
                                && !p.out.contains_key(mid)
                                && p.rtc
                                    .media(*mid)
                                    .is_some_and(|m| m.direction().is_receiving())
                        })
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for (mid, kind) in receiving {
                self.publish(id, mid, kind);
            }
        }
        self.process(now);
        outcome
    }

    /// The peer leaves; it is removed at once and the others renegotiate.
    pub fn leave(&mut self, id: PeerId, now: Instant) -> Result<(), SfuError> {
        if !self.peers.contains_key(&id) {
            return Err(SfuError::UnknownPeer(id));
        }
        self.io.doomed.push((id, RemoveReason::Left));
        self.process(now);
        Ok(())
    }

    /// Makes `id` receive `track` (rooms do this for every track automatically).
    pub fn subscribe(&mut self, id: PeerId, track: TrackId, now: Instant) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        let t = self
            .tracks
            .get(&track)
            .ok_or_else(|| SfuError::Rejected(format!("unknown {track}")))?;
        if t.publisher == id || t.room != peer.room {
            return Err(SfuError::Rejected(format!(
                "{id} cannot subscribe to {track}"
            )));
        }
        if peer.desired.insert(track) {
            self.renegotiate.insert(id);
            self.process(now);
        }
        Ok(())
    }

    /// Stops `track` toward `id`: forwarding stops now, the m-line goes in the next offer.
    pub fn unsubscribe(
        &mut self,
        id: PeerId,
        track: TrackId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        if peer.desired.remove(&track) {
            if let Some(t) = self.tracks.get_mut(&track) {
                t.subscribers.retain(|(p, _)| *p != id);
            }
            self.renegotiate.insert(id);
            self.process(now);
        }
        Ok(())
    }

    /// Forwards `source` (or nothing) into the m-line `mid` that the client `sink` negotiated
    /// for receiving, without renegotiation. Replacing the source keeps the outgoing stream
    /// continuous and waits for a keyframe of the new one; feeding the same source again
    /// changes nothing. A peer may be fed its own track (loopback).
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
            peer.out.remove(&mid);
            return Ok(());
        };
        let out = peer
            .out
            .entry(mid)
            .or_insert_with(|| OutTrack::new(source, kind));
        out.source = source;
        out.pinned = true;
        out.waiting_keyframe = kind == MediaKind::Video;
        let connected = peer.connected;
        if let Some(track) = self.tracks.get_mut(&source) {
            track.subscribers.push((sink, mid));
        }
        if connected && kind == MediaKind::Video {
            self.request_keyframe_of(source, KeyframeRequestKind::Pli, Urgency::Start, now);
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
            for (sub, mid) in subscribers {
                if let Some(out) = self.peers.get_mut(&sub).and_then(|s| s.out.get_mut(&mid)) {
                    out.waiting_keyframe = true;
                }
            }
            self.request_keyframe_of(source, KeyframeRequestKind::Pli, Urgency::Start, now);
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
        t.taps.push(tap);
        self.request_keyframe_of(track, KeyframeRequestKind::Pli, Urgency::Start, now);
        self.process(now);
        Ok(tap)
    }

    /// Stops a tap (unknown taps are fine).
    pub fn untap(&mut self, tap: TapId) {
        for t in self.tracks.values_mut() {
            t.taps.retain(|x| *x != tap);
        }
        self.io.tapped.retain(|p| p.tap != tap);
    }

    /// The next tapped packet.
    pub fn poll_tap(&mut self) -> Option<TapPacket> {
        self.io.tapped.pop_front()
    }

    /// Asks the sources of every video track `peer` receives for a keyframe (throttled like
    /// every other request).
    pub fn request_keyframe(&mut self, peer: PeerId, now: Instant) -> Result<(), SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer(peer))?;
        let sources: Vec<TrackId> = p
            .out
            .values()
            .filter(|o| o.kind == MediaKind::Video)
            .map(|o| o.source)
            .collect();
        for track in sources {
            self.request_keyframe_of(track, KeyframeRequestKind::Pli, Urgency::Repair, now);
        }
        self.process(now);
        Ok(())
    }

    /// The m-lines of `peer`'s session, in order.
    pub fn media(&self, peer: PeerId) -> Option<Vec<MediaLine>> {
        let p = self.peers.get(&peer)?;
        let lines = p
            .lines
            .iter()
            .map(|(mid, kind)| MediaLine {
                mid: mid.to_string(),
                kind: *kind,
                sends: p
                    .rtc
                    .media(*mid)
                    .is_some_and(|m| m.direction().is_sending()),
                published: p.published.get(mid).copied(),
                fed_by: p.out.get(mid).map(|o| o.source),
                managed: p.out.get(mid).is_some_and(|o| !o.pinned),
            })
            .collect();
        Some(lines)
    }

    /// RTP packets `peer` sent and received so far.
    pub fn flow(&self, peer: PeerId) -> Option<PeerFlow> {
        let p = self.peers.get(&peer)?;
        Some(PeerFlow {
            audio_in: p.packets_in[0],
            video_in: p.packets_in[1],
            audio_out: p.packets_out[0],
            video_out: p.packets_out[1],
        })
    }

    /// A datagram arrived on the media port.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.handle_receive(now, Proto::Udp, source, destination, buf);
    }

    /// A datagram, or one frame of an ICE-TCP connection, arrived. For TCP, `source` is the
    /// connection's remote address and `destination` the TCP candidate it was made to.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Proto,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.counters.datagrams_received += 1;
        let (id, known_addr) = match self.io.by_addr.get(&(proto, source)) {
            Some(id) => (*id, true),
            None => match stun::binding_request_ufrag(buf).and_then(|u| self.by_ufrag.get(u)) {
                Some(id) => (*id, false),
                None => {
                    self.counters.datagrams_unroutable += 1;
                    return;
                }
            },
        };
        let protocol = match proto {
            Proto::Udp => Protocol::Udp,
            Proto::Tcp => Protocol::Tcp,
        };
        let Ok(recv) = Receive::new(protocol, source, destination, buf) else {
            self.counters.datagrams_malformed += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.counters.datagrams_unroutable += 1;
            return;
        };
        if known_addr {
            peer.last_input = now;
        }
        match peer.mutate(|rtc| rtc.handle_input(Input::Receive(now, recv))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.counters.datagrams_rejected += 1;
                tracing::trace!(%id, "datagram rejected: {e}");
            }
            Err(e) => self.io.doomed.push((id, RemoveReason::Failed(e))),
        }
        self.io.settle(peer);
        self.process(now);
    }

    /// The peer a STUN binding request is addressed to (by the ICE ufrag of its USERNAME), if
    /// it is one and the peer exists. Only routing: the peer's ICE agent still checks it.
    pub fn binding_request_peer(&self, buf: &[u8]) -> Option<PeerId> {
        stun::binding_request_ufrag(buf).and_then(|u| self.by_ufrag.get(u).copied())
    }

    /// Time passed: call when [`Sfu::poll_timeout`] is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.io.timers.pop_due(now) {
            self.peer_timeout(id, now);
        }
        self.process(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// When [`Sfu::handle_timeout`] must be called next (`None`: no peer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.io.timers.next()
    }

    /// Running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Sizes of the core's state.
    pub fn state(&self) -> CoreState {
        CoreState {
            peers: self.peers.len(),
            rooms: self.rooms.len(),
            tracks: self.tracks.len(),
            subscriptions: self.tracks.values().map(|t| t.subscribers.len()).sum(),
            ufrag_routes: self.by_ufrag.len(),
            addr_routes: self.io.by_addr.len(),
            timers: self.io.timers.len(),
        }
    }

    /// Peers per room, for metrics and listings.
    pub fn rooms(&self) -> BTreeMap<String, usize> {
        self.rooms
            .iter()
            .map(|(name, r)| (name.clone(), r.peers.len()))
            .collect()
    }

    /// Video codecs the new peer's session offers, and the room codec its offer settles on.
    fn video_codecs_for(
        &self,
        room_video: Option<VideoCodec>,
        offer: &str,
    ) -> Result<(Vec<VideoCodec>, Option<VideoCodec>), SfuError> {
        let offered = video_offer(offer);
        match room_video {
            Some(v) if offered.has_video && !offered.codecs.contains(&v) => {
                Err(codec_error(&[v], &offered.codecs))
            }
            Some(v) => Ok((vec![v], Some(v))),
            None if offered.has_video => {
                let choice = self
                    .config
                    .video_codecs
                    .iter()
                    .find(|c| offered.codecs.contains(c));
                match choice {
                    Some(v) => Ok((vec![*v], Some(*v))),
                    None => Err(codec_error(&self.config.video_codecs, &offered.codecs)),
                }
            }
            // No video sent and no room codec yet: able to receive any of them.
            None => Ok((self.config.video_codecs.clone(), None)),
        }
    }

    /// Runs queued work until none is left: peer events, removals, renegotiations.
    fn process(&mut self, now: Instant) {
        loop {
            if let Some((id, event)) = self.io.work.pop_front() {
                self.handle_rtc_event(id, event, now);
            } else if let Some((id, reason)) = self.io.doomed.pop() {
                self.remove_peer(id, reason);
            } else if let Some(id) = self.renegotiate.pop_first() {
                self.negotiate(id);
            } else {
                break;
            }
        }
    }

    fn handle_rtc_event(&mut self, id: PeerId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, packet, now),
            Event::KeyframeRequest(req) => {
                let source = self
                    .peers
                    .get(&id)
                    .and_then(|p| p.out.get(&req.mid))
                    .map(|o| o.source);
                if let Some(track) = source {
                    self.request_keyframe_of(track, req.kind, Urgency::Repair, now);
                }
            }
            Event::Connected => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                peer.connected = true;
                tracing::debug!(%id, "connected");
                self.events.push_back(SfuEvent::Connected { peer: id });
                let video: Vec<TrackId> = peer
                    .out
                    .values()
                    .filter(|o| o.kind == MediaKind::Video)
                    .map(|o| o.source)
                    .collect();
                for track in video {
                    self.request_keyframe_of(track, KeyframeRequestKind::Pli, Urgency::Start, now);
                }
            }
            Event::MediaAdded(added) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    if !peer.lines.iter().any(|(m, _)| *m == added.mid) {
                        peer.lines.push((added.mid, added.kind.into()));
                    }
                }
                if added.direction.is_receiving() {
                    self.publish(id, added.mid, added.kind.into());
                }
            }
            Event::MediaChanged(changed) => {
                let Some(peer) = self.peers.get(&id) else {
                    return;
                };
                let published = peer.published.get(&changed.mid).copied();
                let kind = peer
                    .rtc
                    .media(changed.mid)
                    .map(|m| MediaKind::from(m.kind()));
                match (changed.direction.is_receiving(), published, kind) {
                    (true, None, Some(kind))
                        if peer.out.get(&changed.mid).is_none_or(|o| o.pinned) =>
                    {
                        self.publish(id, changed.mid, kind)
                    }
                    (false, Some(track), _) => self.unpublish(track),
                    _ => {}
                }
            }
            Event::Closed => self.io.doomed.push((id, RemoveReason::DtlsClosed)),
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(%id, ?state, "ICE state");
            }
            _ => {}
        }
    }

    fn publish(&mut self, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&peer.room) else {
            return;
        };
        if peer.published.contains_key(&mid) {
            return;
        }
        let track = TrackId(self.next_id);
        self.next_id += 1;
        peer.published.insert(mid, track);
        room.tracks.insert(track);
        let automatic = room.forwarding == Forwarding::Automatic;
        let codec = (kind == MediaKind::Video).then_some(room.video).flatten();
        self.tracks.insert(
            track,
            Track {
                publisher: id,
                room: peer.room.clone(),
                mid,
                kind,
                codec,
                subscribers: Vec::new(),
                taps: Vec::new(),
                throttle: KeyframeThrottle::new(
                    self.config.keyframe_request_interval,
                    self.config.keyframe_request_on_start_interval,
                ),
                params: Vec::new(),
            },
        );
        tracing::debug!(%id, %track, ?kind, "track published");
        self.events.push_back(SfuEvent::TrackPublished {
            peer: id,
            track,
            kind,
        });
        for other in room.peers.iter().filter(|p| automatic && **p != id) {
            if let Some(p) = self.peers.get_mut(other).filter(|p| p.receives) {
                p.desired.insert(track);
                self.renegotiate.insert(*other);
            }
        }
    }

    fn unpublish(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        if let Some(publisher) = self.peers.get_mut(&track.publisher) {
            publisher.published.remove(&track.mid);
            publisher.rx_tracks.retain(|_, t| *t != track_id);
        }
        if let Some(room) = self.rooms.get_mut(&track.room) {
            room.tracks.remove(&track_id);
            for p in &room.peers {
                if let Some(peer) = self.peers.get_mut(p) {
                    if peer.desired.remove(&track_id) {
                        self.renegotiate.insert(*p);
                    }
                }
            }
        }
        self.events.push_back(SfuEvent::TrackUnpublished {
            peer: track.publisher,
            track: track_id,
        });
    }

    fn remove_peer(&mut self, id: PeerId, reason: RemoveReason) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        tracing::info!(%id, room = peer.room, %reason, "peer removed");
        if reason == RemoveReason::Left {
            // Say goodbye (RTCP BYE, DTLS close_notify) before the session is dropped.
            if peer.mutate(|rtc| rtc.close()).is_ok() {
                self.io.settle(&mut peer);
            }
        }
        self.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            if self.io.by_addr.get(addr) == Some(&id) {
                self.io.by_addr.remove(addr);
            }
        }
        self.io.timers.remove(id);
        self.io.work.retain(|(p, _)| *p != id);
        self.io.doomed.retain(|(p, _)| *p != id);
        self.renegotiate.remove(&id);
        let published: Vec<TrackId> = peer.published.values().copied().collect();
        for track in published {
            self.unpublish(track);
        }
        for out in peer.out.values() {
            if let Some(t) = self.tracks.get_mut(&out.source) {
                t.subscribers.retain(|(p, _)| *p != id);
            }
        }
        if let Some(room) = self.rooms.get_mut(&peer.room) {
            room.peers.remove(&id);
            if room.peers.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        self.counters.peers_removed += 1;
        self.events
            .push_back(SfuEvent::PeerRemoved { peer: id, reason });
    }

    /// Brings the peer's outgoing m-lines in line with the tracks it should receive, with a
    /// new offer when anything changed. Waits while an offer is outstanding.
    fn negotiate(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.pending.is_some() {
            return;
        }
        let tracks = &self.tracks;
        peer.desired.retain(|t| tracks.contains_key(t));
        let stale: Vec<Mid> = peer
            .out
            .iter()
            .filter(|(_, o)| !o.pinned && !peer.desired.contains(&o.source))
            .map(|(mid, _)| *mid)
            .collect();
        let missing: Vec<(TrackId, MediaKind, PeerId)> = peer
            .desired
            .iter()
            .filter(|t| !peer.out.values().any(|o| !o.pinned && o.source == **t))
            .filter_map(|t| tracks.get(t).map(|tr| (*t, tr.kind, tr.publisher)))
            .collect();
        if stale.is_empty() && missing.is_empty() {
            return;
        }
        for mid in &stale {
            if let Some(out) = peer.out.remove(mid) {
                if let Some(t) = self.tracks.get_mut(&out.source) {
                    t.subscribers.retain(|(p, _)| *p != id);
                }
            }
        }
        let result = peer.mutate(|rtc| {
            let mut api = rtc.sdp_api();
            for mid in &stale {
                api.stop_media(*mid);
            }
            let added: Vec<(Mid, TrackId)> = missing
                .iter()
                .map(|(track, kind, publisher)| {
                    let mid = api.add_media(
                        (*kind).into(),
                        Direction::SendOnly,
                        Some(publisher.to_string()),
                        Some(track.to_string()),
                        None,
                    );
                    (mid, *track)
                })
                .collect();
            api.apply()
                .map(|(offer, pending)| (offer.to_sdp_string(), PendingOffer { pending, added }))
        });
        match result {
            Ok(Some((sdp, pending))) => {
                peer.pending = Some(pending);
                self.events.push_back(SfuEvent::Offer { peer: id, sdp });
            }
            Ok(None) => {}
            Err(e) => self.io.doomed.push((id, RemoveReason::Failed(e))),
        }
        self.io.settle(peer);
    }

    /// An m-line the peer accepted starts carrying `track`.
    fn start_subscription(&mut self, id: PeerId, mid: Mid, track_id: TrackId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            // The track went while the offer was out; the next negotiation stops the m-line.
            peer.out
                .insert(mid, OutTrack::new(track_id, MediaKind::Audio));
            return;
        };
        peer.out.insert(mid, OutTrack::new(track_id, track.kind));
        if peer.desired.contains(&track_id) {
            track.subscribers.push((id, mid));
            if peer.connected && track.kind == MediaKind::Video {
                self.request_keyframe_of(track_id, KeyframeRequestKind::Pli, Urgency::Start, now);
            }
        }
    }

    /// A keyframe is wanted on `track`; goes upstream at most once per interval.
    fn request_keyframe_of(
        &mut self,
        track_id: TrackId,
        kind: KeyframeRequestKind,
        urgency: Urgency,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        let Some(publisher) = self.peers.get_mut(&track.publisher) else {
            return;
        };
        if track.throttle.request(urgency, now) {
            send_keyframe_request(publisher, track.mid, kind, &mut self.io, &mut self.counters);
        } else if let Some(due) = track.throttle.poll_timeout() {
            publisher.throttle_due = Some(publisher.throttle_due.map_or(due, |t| t.min(due)));
            self.io.timers.set(publisher.id, publisher.deadline());
        }
    }

    fn peer_timeout(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if now >= peer.idle_check {
            let idle = now.saturating_duration_since(peer.last_input);
            if idle >= self.config.ice_timeout {
                self.io.doomed.push((id, RemoveReason::IceTimeout));
                return;
            }
            peer.idle_check = peer.last_input + self.config.ice_timeout;
        }
        if peer.throttle_due.is_some_and(|t| now >= t) {
            peer.throttle_due = None;
            let published: Vec<(Mid, TrackId)> =
                peer.published.iter().map(|(m, t)| (*m, *t)).collect();
            for (mid, track_id) in published {
                let Some(track) = self.tracks.get_mut(&track_id) else {
                    continue;
                };
                if track.throttle.handle_timeout(now) {
                    send_keyframe_request(
                        peer,
                        mid,
                        KeyframeRequestKind::Pli,
                        &mut self.io,
                        &mut self.counters,
                    );
                } else if let Some(due) = track.throttle.poll_timeout() {
                    peer.throttle_due = Some(peer.throttle_due.map_or(due, |t| t.min(due)));
                }
            }
        }
        if now >= peer.rtc_timeout {
            match peer.mutate(|rtc| rtc.handle_input(Input::Timeout(now))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self
                    .io
                    .doomed
                    .push((id, RemoveReason::Failed(e.to_string()))),
                Err(e) => self.io.doomed.push((id, RemoveReason::Failed(e))),
            }
        }
        self.io.settle(peer);
    }

    /// Forwards one publisher packet to every subscriber of its track.
    fn forward(&mut self, id: PeerId, packet: RtpPacket, now: Instant) {
        self.counters.rtp_received += 1;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let track_id = match peer.rx_tracks.get(&ssrc) {
            Some(t) => *t,
            None => {
                let mid = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                let Some(t) = mid.and_then(|m| peer.published.get(&m)).copied() else {
                    return;
                };
                peer.rx_tracks.insert(ssrc, t);
                t
            }
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
        let is_keyframe = track
            .codec
            .is_some_and(|c| c.is_keyframe_start(&packet.payload));
        if is_keyframe {
            track.throttle.keyframe_received(now);
        }
        let clock_rate = params.spec().clock_rate.get();
        for tap in &track.taps {
            self.io.tapped.push_back(TapPacket {
                tap: *tap,
                kind: track.kind,
                codec: track.codec,
                clock_rate,
                seq: *packet.seq_no,
                rtp_time: packet.header.timestamp,
                marker: packet.header.marker,
                keyframe: is_keyframe,
                arrival: now,
                sender_report: packet
                    .last_sender_info
                    .map(|i| (i.ntp_time, i.rtp_time.numer() as u32)),
                payload: packet.payload.clone(),
            });
        }
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let nackable = track.kind == MediaKind::Video;
        let mut wants_keyframe = false;
        for &(sub_id, mid) in &track.subscribers {
            let Some(sub) = self.peers.get_mut(&sub_id) else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            let Some(out) = sub.out.get_mut(&mid) else {
                continue;
            };
            if out.waiting_keyframe {
                if !is_keyframe {
                    self.counters.rtp_held_for_keyframe += 1;
                    wants_keyframe = true;
                    continue;
                }
                out.waiting_keyframe = false;
            }
            let Some(out_pt) = out.pt_for(mid, &params, &sub.rtc) else {
                self.counters.rtp_codec_mismatch += 1;
                continue;
            };
            let Some(rw) = out.rewriter.rewrite(
                track_id.0,
                *packet.seq_no,
                packet.header.timestamp,
                now,
                clock_rate,
            ) else {
                continue;
            };
            let write = RtpWrite::new(
                out_pt,
                rw.seq.into(),
                rw.ts,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .ext_vals(ext_vals.clone())
            .nackable(nackable);
            let history_for = out.history_for;
            let history = self.config.rtx_history;
            let written = sub.mutate(|rtc| match rtc.direct_api().stream_tx_by_mid(mid, None) {
                Some(tx) => {
                    let ssrc = tx.ssrc();
                    if nackable && history_for != Some(ssrc) {
                        // Before the stream's first packet: this replaces str0m's default cache.
                        tx.set_rtx_cache(RTX_MAX_PACKETS, history, RTX_RATIO_CAP);
                    }
                    tx.write_rtp(write);
                    Some(ssrc)
                }
                None => None,
            });
            match written {
                Ok(Some(ssrc)) => {
                    if nackable && history_for != Some(ssrc) {
                        if let Some(out) = sub.out.get_mut(&mid) {
                            out.history_for = Some(ssrc);
                        }
                    }
                    sub.packets_out[track.kind as usize] += 1;
                    self.counters.rtp_forwarded_packets += 1;
                    self.counters.rtp_forwarded_bytes += packet.payload.len() as u64;
                }
                Ok(None) => {}
                Err(e) => self.io.doomed.push((sub_id, RemoveReason::Failed(e))),
            }
            self.io.settle(sub);
        }
        if wants_keyframe {
            self.request_keyframe_of(track_id, KeyframeRequestKind::Pli, Urgency::Start, now);
        }
    }
}

/// Notes the m-lines of a session description the peer agreed to, in order (str0m reports them
/// only once the peer connects).
fn record_lines(peer: &mut Peer, sdp: &str) {
    let mut kind = None;
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            kind = match m.split(' ').next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
        } else if let (Some(mid), Some(k)) = (line.strip_prefix("a=mid:"), kind) {
            let mid = Mid::from(mid);
            if !peer.lines.iter().any(|(m, _)| *m == mid) {
                peer.lines.push((mid, k));
            }
        }
    }
}

fn send_keyframe_request(
    peer: &mut Peer,
    mid: Mid,
    kind: KeyframeRequestKind,
    io: &mut Io,
    counters: &mut Counters,
) {
    let sent = peer.mutate(|rtc| match rtc.direct_api().stream_rx_by_mid(mid, None) {
        Some(rx) => {
            rx.request_keyframe(kind);
            true
        }
        None => false,
    });
    match sent {
        Ok(true) => counters.keyframe_requests_sent += 1,
        Ok(false) => {}
        Err(e) => io.doomed.push((peer.id, RemoveReason::Failed(e))),
    }
    io.settle(peer);
}

fn codec_error(wanted: &[VideoCodec], offered: &[VideoCodec]) -> SfuError {
    let names = |c: &[VideoCodec]| {
        if c.is_empty() {
            "none of VP8, VP9, H.264".to_string()
        } else {
            c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
        }
    };
    SfuError::VideoCodecUnsupported {
        room: names(wanted),
        offered: names(offered),
    }
}

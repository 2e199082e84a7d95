//! What the core hands out: datagrams to send, events for the application, tapped packets.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use crate::id::{MediaKind, PeerId, TapId, TrackId};
use crate::keyframe::VideoCodec;

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
    /// [`Sfu::leave`](crate::Sfu::leave) was called.
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
    /// answer with [`Sfu::accept_answer`](crate::Sfu::accept_answer).
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
    /// The layers of a publisher's simulcast m-line that some receiver takes changed: the
    /// publisher may stop encoding the others ("dynacast").
    LayersWanted {
        /// The publisher.
        peer: PeerId,
        /// Its sending m-line.
        mid: String,
        /// Each layer's `rid`, lowest first, and whether any receiver (or a tap) wants it.
        active: Vec<(String, bool)>,
    },
    /// The loudness of a peer's audio over the last [`SfuConfig::level_interval`], from the
    /// `ssrc-audio-level` header extension of its packets (RFC 6464): the sum of each packet's
    /// 127 + level (0 silence, 127 the loudest) and how many packets. Only while audio with
    /// levels arrives; [`crate::speakers::SpeakerDetector::observe_sum`] takes it as it is.
    ///
    /// [`SfuConfig::level_interval`]: crate::SfuConfig::level_interval
    AudioLevels {
        /// The publisher.
        peer: PeerId,
        /// The loudnesses summed.
        sum: u64,
        /// The packets.
        packets: u32,
    },
    /// Nothing has arrived from a connected peer for [`SfuConfig::ice_stall`]: its path is
    /// gone (an outage, a network change). The client should restart ICE (offer with new
    /// credentials); the peer keeps everything meanwhile. Once per silence.
    ///
    /// [`SfuConfig::ice_stall`]: crate::SfuConfig::ice_stall
    IceStalled {
        /// The peer.
        peer: PeerId,
    },
    /// A receiver here wants a keyframe of an imported track ([`Sfu::import`](crate::Sfu::import)):
    /// pass it to the core that exported it ([`Sfu::request_track_keyframe`](crate::Sfu::request_track_keyframe)).
    RelayKeyframeRequest {
        /// The track.
        track: TrackId,
        /// Its layer.
        layer: u8,
        /// Why.
        urgency: crate::throttle::Urgency,
    },
    /// A peer is gone, with all its state.
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RemoveReason,
    },
}

//! The core's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use crate::keyframe::VideoCodec;

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
    /// A connected peer from which nothing arrived for this long is reported
    /// ([`SfuEvent::IceStalled`](crate::SfuEvent::IceStalled)) so that its client restarts
    /// ICE, well before [`SfuConfig::ice_timeout`] would remove it.
    pub ice_stall: Duration,
    /// At most one keyframe request per track goes to its publisher in this interval.
    pub keyframe_request_interval: Duration,
    /// A request made because a receiver starts on a track (it shows nothing until a
    /// keyframe) goes at once unless one is outstanding: sent less than this long ago and not
    /// answered by a keyframe yet (asked again after it); at most `keyframe_request_interval`.
    pub keyframe_request_on_start_interval: Duration,
    /// Video codecs a room may use, in order of preference.
    pub video_codecs: Vec<VideoCodec>,
    /// How long each forwarded video stream keeps its sent packets to answer the subscriber's
    /// NACKs with retransmissions ([`DEFAULT_RTX_HISTORY`]).
    pub rtx_history: Duration,
    /// Bandwidth estimation (TWCC) toward each peer, starting from this estimate in bits per
    /// second; it picks the simulcast layer each receiver gets. `None`: off (every receiver
    /// gets each track's highest layer that its view asks for).
    pub initial_estimate: Option<u64>,
    /// The first id this core gives a peer, track or tap (each next one is one more). Cores
    /// that exchange tracks ([`Sfu::import`](crate::Sfu::import)) start far apart, so that
    /// every id names one thing across them.
    pub first_id: u64,
    /// How often a peer's audio levels are reported ([`SfuEvent::AudioLevels`]), while its
    /// audio arrives.
    ///
    /// [`SfuEvent::AudioLevels`]: crate::SfuEvent::AudioLevels
    pub level_interval: Duration,
    /// Audio packets whose `ssrc-audio-level` is this many dB below overload or quieter are
    /// not forwarded to receivers ([`DEFAULT_SILENCE_DBOV`]); recordings still get them. The
    /// receiver sees no gap in the sequence numbers, only a pause in the timestamps, as after
    /// the sender's own discontinuous transmission. `None`: every audio packet is forwarded.
    pub silence_dbov: Option<u8>,
}

/// The default [`SfuConfig::silence_dbov`]: 85 dB below overload, the level under which the
/// dominant-speaker detector hears nothing either ([`crate::speakers`]). A microphone switched
/// off in the browser (`track.enabled = false`) sends digital silence (127); a quiet room
/// through a real microphone measures around 50–70. In a meeting where most participants keep
/// their microphones off, this spares every receiver their 50 packets a second each.
pub const DEFAULT_SILENCE_DBOV: u8 = 85;

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
            // Browsers check the selected path every 2.5 s even when no media flows.
            ice_stall: Duration::from_secs(4),
            keyframe_request_interval: Duration::from_secs(1),
            keyframe_request_on_start_interval: Duration::from_millis(200),
            video_codecs: vec![VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264],
            rtx_history: DEFAULT_RTX_HISTORY,
            initial_estimate: Some(1_000_000),
            first_id: 1,
            level_interval: Duration::from_millis(50),
            silence_dbov: Some(DEFAULT_SILENCE_DBOV),
        }
    }
}

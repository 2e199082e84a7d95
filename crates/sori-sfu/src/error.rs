//! Errors of the core's API.

use crate::id::PeerId;
use crate::keyframe::VideoCodec;

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

pub(crate) fn codec_error(wanted: &[VideoCodec], offered: &[VideoCodec]) -> SfuError {
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

//! # sori-media — what the session server asks of a media server
//!
//! The session server gives each participant one peer connection at a media server, which
//! receives everyone else in the room and sends its own offers for new tracks. Two media
//! servers implement [`MediaBackend`]: the media core in this process (`sori-net`'s
//! `MediaHandle`) and a media server elsewhere driven over the Kurento control API
//! (`sori-kurento-client`'s `RemoteMedia`). The session server holds an
//! `Arc<dyn MediaBackend>` and does not know which one it drives.
//!
//! A participant's life: [`MediaBackend::join`] with its first offer gives the answer and a
//! channel of [`PeerSignal`]s (the media server's offers, connection, removal); later offers
//! and answers go through [`MediaBackend::offer`] and [`MediaBackend::answer`];
//! [`MediaBackend::leave`] ends it. Signals for a peer always come after the reply of the call
//! that caused them.
//!
//! A trait rather than an enum of the two: the session server then links neither the remote
//! client nor anything it does not use, and a test can stand in a media server of its own.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use sori_sfu;
use sori_sfu::{
    CoreState, Counters, LayerCensus, MediaKind, PeerId, Priority, ReceiverStats, RemoveReason,
    TapPacket, TrackId, View,
};
use tokio::sync::mpsc;

/// A future a [`MediaBackend`] returns (boxed, so that the trait is object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A media server the session server drives.
pub trait MediaBackend: std::any::Any + Send + Sync {
    /// Joins `room` with the participant's first offer; it receives the others' media only
    /// when `receive` is true.
    fn join<'a>(
        &'a self,
        room: &'a str,
        offer: &'a str,
        receive: bool,
    ) -> BoxFuture<'a, Result<BackendJoined, BackendError>>;

    /// A later offer of the participant; returns the answer.
    fn offer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<String, BackendError>>;

    /// The participant's answer to the media server's offer.
    fn answer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Stops (`muted`) or resumes forwarding the participant's media of `kind` to everyone.
    fn set_muted<'a>(
        &'a self,
        peer: &'a PeerRef,
        kind: MediaKind,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// How the participant shows `track` it receives (tile size, visibility, pinned quality):
    /// the media server picks the simulcast layer from it.
    fn set_view<'a>(
        &'a self,
        peer: &'a PeerRef,
        track: TrackId,
        view: View,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Forwards the participant only the videos of `set` (last-N; `None`: all it receives).
    /// A media server that cannot says so.
    fn set_video_set<'a>(
        &'a self,
        peer: &'a PeerRef,
        set: Option<Vec<TrackId>>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (peer, set);
        Box::pin(async { Err(BackendError::NotSupported("last-N")) })
    }

    /// Forwards `source` (or nothing) into the peer's own m-line `mid`, one its client
    /// offered for receiving, without renegotiation: a viewer that cannot renegotiate (WHEP)
    /// is fed this way. A media server that cannot says so.
    fn feed<'a>(
        &'a self,
        peer: &'a PeerRef,
        mid: &'a str,
        source: Option<TrackId>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (peer, mid, source);
        Box::pin(async { Err(BackendError::NotSupported("feeding a viewer's own m-line")) })
    }

    /// Whether `track` is a screen share or a camera: receivers give a screen share their
    /// bandwidth first. A media server that does not choose layers ignores it.
    fn set_priority(
        &self,
        track: TrackId,
        priority: Priority,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        let _ = (track, priority);
        Box::pin(async { Ok(()) })
    }

    /// What the participant receives: its bandwidth estimate and the layer of each video track
    /// (`None`: this media server does not say).
    fn receiver_stats<'a>(
        &'a self,
        peer: &'a PeerRef,
    ) -> BoxFuture<'a, Result<Option<ReceiverStats>, BackendError>>;

    /// The participant's media leaves (a peer already gone is fine).
    fn leave<'a>(&'a self, peer: &'a PeerRef) -> BoxFuture<'a, ()>;

    /// The media server's numbers, when it is in this process (`None`: a remote media server
    /// reports its own).
    fn stats(&self) -> BoxFuture<'_, Result<Option<MediaStats>, BackendError>>;

    /// A round trip to the media server: `Ok` when it answers (the in-process core's task, or
    /// a remote server over its control connection).
    fn health(&self) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Whether [`MediaBackend::record`] works here (the in-process core: yes; a remote media
    /// server: no, it records with its own RecorderEndpoint). No, unless a backend says so.
    fn can_record(&self) -> bool {
        false
    }

    /// Every packet of `track` from now on, for recording, until the [`Tap`] is dropped
    /// (refused, unless a backend records).
    fn record(&self, _track: TrackId) -> BoxFuture<'_, Result<Tap, BackendError>> {
        Box::pin(async { Err(BackendError::NotSupported("recording")) })
    }
}

/// A participant's peer connection at the media server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRef {
    /// A peer of the in-process core.
    Local(PeerId),
    /// An endpoint of a remote media server.
    Remote(String),
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRef::Local(p) => p.fmt(f),
            PeerRef::Remote(id) => f.write_str(id),
        }
    }
}

/// A media join: the peer, the answer, and what the media server says later.
#[derive(Debug)]
pub struct BackendJoined {
    /// The participant's peer connection.
    pub peer: PeerRef,
    /// The stream id (`a=msid`) under which the others receive its tracks.
    pub stream_id: String,
    /// The SDP answer.
    pub answer: String,
    /// Offers, connection and removal.
    pub signals: mpsc::UnboundedReceiver<PeerSignal>,
}

/// What the media server says to one peer on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSignal {
    /// A new offer from the media server; answer with [`MediaBackend::answer`].
    Offer(String),
    /// ICE and DTLS are up.
    Connected,
    /// The peer's media started arriving on an m-line: a track other peers can be fed.
    Published {
        /// The track.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// One of the peer's tracks stopped (it stopped sending it, or renegotiated it away).
    Unpublished {
        /// The track.
        track: TrackId,
    },
    /// Which simulcast layers of the participant's m-line `mid` anyone receives: the browser
    /// pauses the others (`RTCRtpSender.setParameters`, `active: false`) and resumes them when
    /// they are wanted again.
    Layers {
        /// The sending m-line.
        mid: String,
        /// Each layer's `rid` and whether it is wanted.
        active: Vec<(String, bool)>,
    },
    /// How loud the peer's audio was over the last 50 ms: the sum of its packets'
    /// loudness (127 + the RFC 6464 level) and how many there were (see
    /// `sori_sfu::speakers`). Only while its audio arrives.
    AudioLevels {
        /// The loudnesses summed.
        sum: u64,
        /// The packets.
        packets: u32,
    },
    /// Nothing has arrived from the peer's media for a few seconds: its client should restart
    /// ICE (an offer with new credentials), keeping everything else.
    IceStalled,
    /// The peer is gone from the media server.
    Removed(RemoveReason),
}

/// Why a media command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The media server no longer knows the peer: join anew.
    UnknownPeer,
    /// This media server cannot do it (what it cannot do is named).
    NotSupported(&'static str),
    /// The offer cannot be used as it is: it does not parse, or it asks for what the media
    /// server cannot do (the reason is said).
    BadOffer(String),
    /// The offer has no video codec the room carries (the room's and the offered ones are
    /// named).
    Codec(String),
    /// The media server did not answer: its connection is lost, or the reply did not come in
    /// time. The same request may well work once it answers again.
    Unreachable(String),
    /// Anything else, said to the browser.
    Failed(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::UnknownPeer => f.write_str("the media server no longer knows this peer"),
            BackendError::NotSupported(what) => {
                write!(f, "{what} is not supported by a remote media server")
            }
            BackendError::BadOffer(why)
            | BackendError::Codec(why)
            | BackendError::Unreachable(why)
            | BackendError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BackendError {}

/// The packets of one track, while it is held.
pub struct Tap {
    packets: Option<mpsc::UnboundedReceiver<TapPacket>>,
    stop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Tap {
    /// A tap whose packets come on `packets`; `stop` runs once, when it is dropped.
    pub fn new(
        packets: mpsc::UnboundedReceiver<TapPacket>,
        stop: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            packets: Some(packets),
            stop: Some(Box::new(stop)),
        }
    }

    /// The packets, in the order the media server received them (once: later calls get
    /// `None`). The tap keeps running until it is dropped.
    pub fn packets(&mut self) -> Option<mpsc::UnboundedReceiver<TapPacket>> {
        self.packets.take()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap").finish_non_exhaustive()
    }
}

/// A snapshot of the in-process core for metrics and tests.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    /// Running totals.
    pub counters: Counters,
    /// Sizes of the core's state.
    pub state: CoreState,
    /// Participants per room.
    pub rooms: Vec<(String, usize)>,
    /// ICE-TCP connections (all zero when TCP is off).
    pub tcp: TcpStats,
    /// Receivers per simulcast layer.
    pub layers: LayerCensus,
}

/// ICE-TCP connection counts, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections the core has answered (carrying a peer's media).
    pub open: usize,
    /// Connections waiting for their first answer.
    pub pending: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed when accepted: too many pending, or a duplicate remote address.
    pub refused: u64,
    /// Connections closed for what they sent (or did not send in time).
    pub rejected: u64,
    /// Frames dropped because a connection's send queue was full.
    pub send_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_tap_stops_once_when_dropped() {
        let stops = Arc::new(AtomicUsize::new(0));
        let (_tx, rx) = mpsc::unbounded_channel();
        let counted = stops.clone();
        let tap = Tap::new(rx, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(stops.load(Ordering::SeqCst), 0);
        drop(tap);
        assert_eq!(stops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn unsupported_operations_name_what_and_where() {
        let e = BackendError::NotSupported("recording");
        assert_eq!(
            e.to_string(),
            "recording is not supported by a remote media server"
        );
    }
}

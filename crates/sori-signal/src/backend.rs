//! The media server the session server drives: the core in this process, or a remote media
//! server over the control API (`sori signal --media ws://…`). Both behave the same towards
//! browsers: one peer connection per participant that receives everyone else, with the media
//! server's offers for new tracks.

use std::fmt;

use sori_kurento::{RemoteError, RemoteMedia};
use sori_net::sori_sfu::{Forwarding, MediaKind, PeerId, SfuError};
use sori_net::{MediaError, MediaHandle, MediaStats, PeerSignal, Stopped};
use tokio::sync::mpsc;

/// Where media goes.
#[derive(Clone)]
pub enum MediaBackend {
    /// The media core in this process.
    Local(MediaHandle),
    /// A media server elsewhere, over the control API.
    Remote(RemoteMedia),
}

impl From<MediaHandle> for MediaBackend {
    fn from(h: MediaHandle) -> Self {
        MediaBackend::Local(h)
    }
}

impl From<RemoteMedia> for MediaBackend {
    fn from(r: RemoteMedia) -> Self {
        MediaBackend::Remote(r)
    }
}

/// A participant's peer connection at the media server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRef {
    /// A peer of the in-process core.
    Local(PeerId),
    /// An endpoint of the remote media server.
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

/// Why a media command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The media server no longer knows the peer: join anew.
    UnknownPeer,
    /// Anything else, said to the browser.
    Failed(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::UnknownPeer => f.write_str("the media server no longer knows this peer"),
            BackendError::Failed(why) => f.write_str(why),
        }
    }
}

impl From<MediaError> for BackendError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Sfu(SfuError::UnknownPeer(_)) => BackendError::UnknownPeer,
            other => BackendError::Failed(other.to_string()),
        }
    }
}

impl From<RemoteError> for BackendError {
    fn from(e: RemoteError) -> Self {
        if e.is_unknown_object() {
            BackendError::UnknownPeer
        } else {
            BackendError::Failed(e.to_string())
        }
    }
}

impl MediaBackend {
    /// Joins `room` with the participant's first offer; it receives the others' media only
    /// when `receive` is true.
    pub async fn join(
        &self,
        room: &str,
        offer: &str,
        receive: bool,
    ) -> Result<BackendJoined, BackendError> {
        match self {
            MediaBackend::Local(h) => {
                let j = h
                    .join_as(room, offer, Forwarding::Automatic, receive)
                    .await?;
                Ok(BackendJoined {
                    stream_id: j.peer.to_string(),
                    peer: PeerRef::Local(j.peer),
                    answer: j.answer,
                    signals: j.signals,
                })
            }
            MediaBackend::Remote(r) => {
                let j = r.join_as(room, offer, receive).await?;
                Ok(BackendJoined {
                    stream_id: j.stream_id,
                    peer: PeerRef::Remote(j.peer),
                    answer: j.answer,
                    signals: j.signals,
                })
            }
        }
    }

    /// A later offer of the participant; returns the answer.
    pub async fn offer(&self, peer: &PeerRef, sdp: &str) -> Result<String, BackendError> {
        match (self, peer) {
            (MediaBackend::Local(h), PeerRef::Local(p)) => Ok(h.offer(*p, sdp).await?),
            (MediaBackend::Remote(r), PeerRef::Remote(p)) => Ok(r.offer(p, sdp).await?),
            _ => Err(BackendError::UnknownPeer),
        }
    }

    /// The participant's answer to the media server's offer.
    pub async fn answer(&self, peer: &PeerRef, sdp: &str) -> Result<(), BackendError> {
        match (self, peer) {
            (MediaBackend::Local(h), PeerRef::Local(p)) => Ok(h.answer(*p, sdp).await?),
            (MediaBackend::Remote(r), PeerRef::Remote(p)) => Ok(r.answer(p, sdp).await?),
            _ => Err(BackendError::UnknownPeer),
        }
    }

    /// Stops (`muted`) or resumes forwarding the participant's media of `kind` to everyone.
    pub async fn set_muted(
        &self,
        peer: &PeerRef,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), BackendError> {
        match (self, peer) {
            (MediaBackend::Local(h), PeerRef::Local(p)) => Ok(h.set_muted(*p, kind, muted).await?),
            (MediaBackend::Remote(r), PeerRef::Remote(p)) => {
                Ok(r.set_muted(p, kind == MediaKind::Video, muted).await?)
            }
            _ => Err(BackendError::UnknownPeer),
        }
    }

    /// The participant's media leaves.
    pub async fn leave(&self, peer: &PeerRef) {
        match (self, peer) {
            (MediaBackend::Local(h), PeerRef::Local(p)) => {
                let _ = h.leave(*p).await;
            }
            (MediaBackend::Remote(r), PeerRef::Remote(p)) => r.leave(p).await,
            _ => {}
        }
    }

    /// The in-process core's numbers (`None` for a remote media server, which has its own).
    pub async fn stats(&self) -> Result<Option<MediaStats>, Stopped> {
        match self {
            MediaBackend::Local(h) => h.stats().await.map(Some),
            MediaBackend::Remote(_) => Ok(None),
        }
    }
}

//! The media core in this process as the session server's [`MediaBackend`].

use std::sync::Arc;

use sori_media::{BackendError, BackendJoined, BoxFuture, MediaBackend, MediaStats, PeerRef, Tap};
use sori_sfu::{Forwarding, MediaKind, PeerId, Priority, ReceiverStats, SfuError, TrackId, View};

use crate::{MediaError, MediaHandle};

impl From<MediaError> for BackendError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Sfu(SfuError::UnknownPeer(_)) => BackendError::UnknownPeer,
            MediaError::Sfu(e @ (SfuError::BadSdp(_) | SfuError::Rejected(_))) => {
                BackendError::BadOffer(e.to_string())
            }
            MediaError::Sfu(e @ SfuError::VideoCodecUnsupported { .. }) => {
                BackendError::Codec(e.to_string())
            }
            other => BackendError::Failed(other.to_string()),
        }
    }
}

/// The core's id of a peer; a remote media server's endpoint is not one of ours.
fn local(peer: &PeerRef) -> Result<PeerId, BackendError> {
    match peer {
        PeerRef::Local(p) => Ok(*p),
        PeerRef::Remote(_) => Err(BackendError::UnknownPeer),
    }
}

impl MediaBackend for MediaHandle {
    fn join<'a>(
        &'a self,
        room: &'a str,
        offer: &'a str,
        receive: bool,
    ) -> BoxFuture<'a, Result<BackendJoined, BackendError>> {
        Box::pin(async move {
            let j = self
                .join_as(room, offer, Forwarding::Automatic, receive)
                .await?;
            Ok(BackendJoined {
                stream_id: j.peer.to_string(),
                peer: PeerRef::Local(j.peer),
                answer: j.answer,
                signals: j.signals,
            })
        })
    }

    fn offer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move { Ok(MediaHandle::offer(self, local(peer)?, sdp).await?) })
    }

    fn answer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { Ok(MediaHandle::answer(self, local(peer)?, sdp).await?) })
    }

    fn set_muted<'a>(
        &'a self,
        peer: &'a PeerRef,
        kind: MediaKind,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { Ok(MediaHandle::set_muted(self, local(peer)?, kind, muted).await?) })
    }

    fn set_view<'a>(
        &'a self,
        peer: &'a PeerRef,
        track: TrackId,
        view: View,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { Ok(MediaHandle::set_view(self, local(peer)?, track, view).await?) })
    }

    fn set_video_set<'a>(
        &'a self,
        peer: &'a PeerRef,
        set: Option<Vec<TrackId>>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let set = set.map(|s| s.into_iter().collect());
            Ok(MediaHandle::set_video_set(self, local(peer)?, set).await?)
        })
    }

    fn feed<'a>(
        &'a self,
        peer: &'a PeerRef,
        mid: &'a str,
        source: Option<TrackId>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { Ok(MediaHandle::feed(self, local(peer)?, mid, source).await?) })
    }

    fn set_priority(
        &self,
        track: TrackId,
        priority: Priority,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Ok(MediaHandle::set_priority(self, track, priority).await?) })
    }

    fn receiver_stats<'a>(
        &'a self,
        peer: &'a PeerRef,
    ) -> BoxFuture<'a, Result<Option<ReceiverStats>, BackendError>> {
        Box::pin(async move { Ok(Some(MediaHandle::receiver_stats(self, local(peer)?).await?)) })
    }

    fn leave<'a>(&'a self, peer: &'a PeerRef) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(p) = local(peer) {
                let _ = MediaHandle::leave(self, p).await;
            }
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Option<MediaStats>, BackendError>> {
        Box::pin(async move {
            MediaHandle::stats(self)
                .await
                .map(Some)
                .map_err(|e| BackendError::Failed(e.to_string()))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            MediaHandle::stats(self)
                .await
                .map(|_| ())
                .map_err(|e| BackendError::Failed(e.to_string()))
        })
    }

    fn can_record(&self) -> bool {
        true
    }

    fn record(&self, track: TrackId) -> BoxFuture<'_, Result<Tap, BackendError>> {
        Box::pin(async move {
            let (tap, packets) = self.tap(track).await?;
            let handle = self.clone();
            Ok(Tap::new(packets, move || handle.untap(tap)))
        })
    }
}

impl From<MediaHandle> for Arc<dyn MediaBackend> {
    fn from(h: MediaHandle) -> Self {
        Arc::new(h)
    }
}

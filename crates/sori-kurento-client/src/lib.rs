//! # sori-kurento-client — a media server elsewhere, over the Kurento control API
//!
//! Sori's session server running apart from its media server (`sori signal --media
//! ws://HOST:8888/kurento`) drives it through [`RemoteMedia`], one of the two
//! [`MediaBackend`]s.
//!
//! Each room is a `MediaPipeline`; each participant one `WebRtcEndpoint` with the
//! renegotiation extension, connected to and from every other participant through sink media
//! descriptions of their own, so one peer connection carries everyone (as in the in-process
//! SFU rooms). The media server's offers arrive as `RenegotiationNeeded` events.
//!
//! One task owns the WebSocket ([`connection`]): requests go out in order and replies are
//! matched by id; a lost connection is retried, and the participants it carried are told
//! they were removed.

#![forbid(unsafe_code)]

mod connection;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use sori_media::sori_sfu::{MediaKind, ReceiverStats, TrackId, View};
use sori_media::{
    BackendError, BackendJoined, BoxFuture, MediaBackend, MediaStats, PeerRef, PeerSignal, Tap,
};
use tokio::sync::{mpsc, oneshot, Mutex};

use connection::{Outgoing, Task, Watchers};

/// An error from the media server (or from reaching it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The protocol's error code (0: the media server could not be reached).
    pub code: i64,
    /// Its message.
    pub message: String,
}

impl RemoteError {
    pub(crate) fn unreachable(why: impl Into<String>) -> Self {
        Self {
            code: 0,
            message: why.into(),
        }
    }

    /// The object is gone (released, or the media server restarted).
    pub fn is_unknown_object(&self) -> bool {
        self.code == 40101
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code == 0 {
            write!(f, "media server unreachable: {}", self.message)
        } else {
            write!(f, "media server error {}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for RemoteError {}

/// A participant that joined through the remote media server.
#[derive(Debug)]
pub struct RemoteJoined {
    /// Its endpoint's id.
    pub peer: String,
    /// The stream id under which the others receive its tracks.
    pub stream_id: String,
    /// The SDP answer to its offer.
    pub answer: String,
    /// What the media server says to it later.
    pub signals: mpsc::UnboundedReceiver<PeerSignal>,
}

/// A room: its pipeline and participants.
#[derive(Default)]
pub(crate) struct Room {
    pipeline: String,
    endpoints: Vec<Endpoint>,
}

/// A participant's endpoint and what flows from and to it.
struct Endpoint {
    id: String,
    /// It receives the others (off: a publish-only participant).
    receives: bool,
    /// Its audio and video go to no one (a server-side mute).
    muted: [bool; 2],
}

const KINDS: [&str; 2] = ["AUDIO", "VIDEO"];

/// How long a request to the media server may go unanswered.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The connection to a remote media server; cheap to clone.
#[derive(Clone)]
pub struct RemoteMedia {
    tx: mpsc::UnboundedSender<Outgoing>,
    rooms: Arc<Mutex<HashMap<String, Room>>>,
    watchers: Watchers,
}

impl RemoteMedia {
    /// Connects to the control API at `url`; fails when it cannot be reached now. Later
    /// disconnections are retried; participants of a lost connection are told they were
    /// removed.
    pub async fn connect(url: &str) -> Result<RemoteMedia, RemoteError> {
        let tls = tls::tls_for(url)?;
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, tls.clone())
                .await
                .map_err(|e| RemoteError::unreachable(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let media = RemoteMedia {
            tx,
            rooms: Arc::default(),
            watchers: Arc::default(),
        };
        let task = Task {
            url: url.to_string(),
            tls,
            rx,
            this: media.tx.downgrade(),
            watchers: media.watchers.clone(),
            rooms: media.rooms.clone(),
        };
        tokio::spawn(task.run(ws));
        // A session of our own from the start.
        media.request("ping", json!({"interval": 240000})).await?;
        Ok(media)
    }

    async fn request(&self, method: &'static str, params: Value) -> Result<Value, RemoteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                method,
                params,
                reply,
            })
            .map_err(|_| RemoteError::unreachable("connection task stopped"))?;
        // A media server that stopped answering (frozen, overloaded) must not hold a
        // participant's offer, or anything else, without bound.
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(reply) => reply.map_err(|_| RemoteError::unreachable("connection lost"))?,
            Err(_) => Err(RemoteError::unreachable(format!(
                "the media server did not answer {method} within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    async fn invoke(
        &self,
        object: &str,
        operation: &str,
        params: Value,
    ) -> Result<Value, RemoteError> {
        let r = self
            .request(
                "invoke",
                json!({"object": object, "operation": operation, "operationParams": params}),
            )
            .await?;
        Ok(r.get("value").cloned().unwrap_or(Value::Null))
    }

    async fn create(&self, params: Value) -> Result<String, RemoteError> {
        let r = self.request("create", params).await?;
        r.get("value")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RemoteError::unreachable("create answered without an id"))
    }

    /// Joins `room` with the browser's first offer.
    pub async fn join(&self, room: &str, offer: &str) -> Result<RemoteJoined, RemoteError> {
        self.join_as(room, offer, true).await
    }

    /// Connects `source`'s media of the kinds not in `muted` to `sink`, on a media description
    /// of the sink's own for that source.
    async fn link(&self, source: &str, sink: &str, muted: [bool; 2]) -> Result<(), RemoteError> {
        if muted == [false; 2] {
            self.invoke(
                source,
                "connect",
                json!({"sink": sink, "sinkMediaDescription": source}),
            )
            .await?;
            return Ok(());
        }
        for (kind, _) in KINDS.iter().zip(muted).filter(|(_, m)| !m) {
            self.invoke(
                source,
                "connect",
                json!({"sink": sink, "mediaType": kind, "sinkMediaDescription": source}),
            )
            .await?;
        }
        Ok(())
    }

    /// Joins `room`; the participant receives the others only when `receive` is true.
    pub async fn join_as(
        &self,
        room: &str,
        offer: &str,
        receive: bool,
    ) -> Result<RemoteJoined, RemoteError> {
        let mut rooms = self.rooms.lock().await;
        if !rooms.contains_key(room) {
            let pipeline = self
                .create(json!({"type": "MediaPipeline", "properties": {}}))
                .await?;
            rooms.insert(
                room.to_string(),
                Room {
                    pipeline,
                    endpoints: Vec::new(),
                },
            );
        }
        let pipeline = rooms[room].pipeline.clone();
        let endpoint = self
            .create(json!({"type": "WebRtcEndpoint",
                           "constructorParams": {"mediaPipeline": pipeline},
                           "properties": {"renegotiation": true}}))
            .await?;
        let (signal_tx, signals) = mpsc::unbounded_channel();
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.clone(), signal_tx);
        let result = async {
            for event in [
                "RenegotiationNeeded",
                "ConnectionStateChanged",
                "MediaSessionTerminated",
            ] {
                self.request("subscribe", json!({"object": endpoint, "type": event}))
                    .await?;
            }
            let answer = self
                .invoke(&endpoint, "processOffer", json!({"offer": offer}))
                .await?;
            let answer = answer
                .as_str()
                .ok_or_else(|| RemoteError::unreachable("processOffer answered no SDP"))?
                .to_string();
            let stream_id = self.invoke(&endpoint, "getStreamId", json!({})).await?;
            let stream_id = stream_id.as_str().unwrap_or_default().to_string();
            for other in &rooms[room].endpoints {
                if receive {
                    self.link(&other.id, &endpoint, other.muted).await?;
                }
                if other.receives {
                    self.link(&endpoint, &other.id, [false; 2]).await?;
                }
            }
            Ok((answer, stream_id))
        }
        .await;
        match result {
            Ok((answer, stream_id)) => {
                if let Some(r) = rooms.get_mut(room) {
                    r.endpoints.push(Endpoint {
                        id: endpoint.clone(),
                        receives: receive,
                        muted: [false; 2],
                    });
                }
                Ok(RemoteJoined {
                    peer: endpoint,
                    stream_id,
                    answer,
                    signals,
                })
            }
            Err(e) => {
                drop(rooms);
                self.leave(&endpoint).await;
                Err(e)
            }
        }
    }

    /// Stops (`muted`) or resumes forwarding the participant's audio (`video` false) or video
    /// to everyone: its links of that kind are disconnected, or connected again.
    pub async fn set_muted(&self, peer: &str, video: bool, muted: bool) -> Result<(), RemoteError> {
        let mut rooms = self.rooms.lock().await;
        let Some(room) = rooms
            .values_mut()
            .find(|r| r.endpoints.iter().any(|e| e.id == peer))
        else {
            return Err(RemoteError {
                code: 40101,
                message: format!("no endpoint {peer}"),
            });
        };
        let k = usize::from(video);
        let sinks: Vec<String> = room
            .endpoints
            .iter()
            .filter(|e| e.id != peer && e.receives)
            .map(|e| e.id.clone())
            .collect();
        if let Some(e) = room.endpoints.iter_mut().find(|e| e.id == peer) {
            if e.muted[k] == muted {
                return Ok(());
            }
            e.muted[k] = muted;
        }
        let op = if muted { "disconnect" } else { "connect" };
        for sink in sinks {
            self.invoke(
                peer,
                op,
                json!({"sink": sink, "mediaType": KINDS[k], "sinkMediaDescription": peer}),
            )
            .await?;
        }
        Ok(())
    }

    /// A later offer from the browser; returns the answer.
    pub async fn offer(&self, peer: &str, sdp: &str) -> Result<String, RemoteError> {
        let v = self
            .invoke(peer, "processOffer", json!({"offer": sdp}))
            .await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| RemoteError::unreachable("processOffer answered no SDP"))
    }

    /// The browser's answer to the media server's last offer.
    pub async fn answer(&self, peer: &str, sdp: &str) -> Result<(), RemoteError> {
        self.invoke(peer, "processAnswer", json!({"answer": sdp}))
            .await
            .map(|_| ())
    }

    /// The participant leaves: its endpoint goes, and the room's pipeline with the last one.
    pub async fn leave(&self, peer: &str) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
        let _ = self.request("release", json!({"object": peer})).await;
        let mut rooms = self.rooms.lock().await;
        let mut empty = None;
        for (name, room) in rooms.iter_mut() {
            if let Some(i) = room.endpoints.iter().position(|e| e.id == peer) {
                room.endpoints.remove(i);
                if room.endpoints.is_empty() {
                    empty = Some(name.clone());
                }
            }
        }
        if let Some(name) = empty {
            if let Some(room) = rooms.remove(&name) {
                let _ = self
                    .request("release", json!({"object": room.pipeline}))
                    .await;
            }
        }
    }
}

impl MediaBackend for RemoteMedia {
    fn join<'a>(
        &'a self,
        room: &'a str,
        offer: &'a str,
        receive: bool,
    ) -> BoxFuture<'a, Result<BackendJoined, BackendError>> {
        Box::pin(async move {
            let j = self
                .join_as(room, offer, receive)
                .await
                .map_err(backend_error)?;
            Ok(BackendJoined {
                stream_id: j.stream_id,
                peer: PeerRef::Remote(j.peer),
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
        Box::pin(async move {
            RemoteMedia::offer(self, remote(peer)?, sdp)
                .await
                .map_err(backend_error)
        })
    }

    fn answer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            RemoteMedia::answer(self, remote(peer)?, sdp)
                .await
                .map_err(backend_error)
        })
    }

    fn set_view<'a>(
        &'a self,
        _peer: &'a PeerRef,
        _track: TrackId,
        _view: View,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        // Kurento's API has no simulcast: a remote media server forwards what it gets.
        Box::pin(async { Err(BackendError::NotSupported("choosing a simulcast layer")) })
    }

    fn receiver_stats<'a>(
        &'a self,
        _peer: &'a PeerRef,
    ) -> BoxFuture<'a, Result<Option<ReceiverStats>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn set_muted<'a>(
        &'a self,
        peer: &'a PeerRef,
        kind: MediaKind,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let video = kind == MediaKind::Video;
            RemoteMedia::set_muted(self, remote(peer)?, video, muted)
                .await
                .map_err(backend_error)
        })
    }

    fn leave<'a>(&'a self, peer: &'a PeerRef) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(p) = remote(peer) {
                RemoteMedia::leave(self, p).await;
            }
        })
    }

    /// A remote media server reports its own numbers.
    fn stats(&self) -> BoxFuture<'_, Result<Option<MediaStats>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    /// A `ping` over the control connection.
    fn health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.request("ping", json!({"interval": 240000}))
                .await
                .map(|_| ())
                .map_err(backend_error)
        })
    }

    /// Its packets stay at the media server, which records with its own RecorderEndpoints.
    fn can_record(&self) -> bool {
        false
    }

    fn record(&self, _track: TrackId) -> BoxFuture<'_, Result<Tap, BackendError>> {
        Box::pin(async { Err(BackendError::NotSupported("recording")) })
    }
}

impl From<RemoteMedia> for Arc<dyn MediaBackend> {
    fn from(r: RemoteMedia) -> Self {
        Arc::new(r)
    }
}

/// The media server's endpoint id of a peer; a peer of an in-process core is not one of its.
fn remote(peer: &PeerRef) -> Result<&str, BackendError> {
    match peer {
        PeerRef::Remote(id) => Ok(id),
        PeerRef::Local(_) => Err(BackendError::UnknownPeer),
    }
}

fn backend_error(e: RemoteError) -> BackendError {
    if e.is_unknown_object() {
        BackendError::UnknownPeer
    } else {
        BackendError::Failed(e.to_string())
    }
}

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
//! matched by id; WebSocket pings find a dead connection within seconds. A lost connection is
//! made again and the media server's session resumed (`connect{sessionId}`), so the media goes
//! on untouched; when the media server restarted and the session is gone, the participants
//! are told their media was removed, and their browsers connect it again.
//!
//! Each room has a lock of its own (a join links the newcomer with everyone in the room), and
//! every operation fails at its deadline: a media server that stops answering holds nothing
//! up for longer than [`RemoteOptions::request_timeout`].

#![forbid(unsafe_code)]

mod connection;
mod rooms;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sori_media::sori_sfu::{MediaKind, ReceiverStats, TrackId, View};
use sori_media::{
    BackendError, BackendJoined, BoxFuture, MediaBackend, MediaStats, PeerRef, PeerSignal,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use connection::{Outgoing, Task, Watchers};
use rooms::{Endpoint, RemotePeer, Room, RoomLock, Rooms};

/// An error from the media server (or from reaching it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The protocol's error code (0: the media server could not be reached).
    pub code: i64,
    /// Its message.
    pub message: String,
    /// Its `data.type`, when it has one (`SDP_PARSE_ERROR`, …).
    pub kind: Option<String>,
}

impl RemoteError {
    pub(crate) fn unreachable(why: impl Into<String>) -> Self {
        Self {
            code: 0,
            message: why.into(),
            kind: None,
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

const KINDS: [&str; 2] = ["AUDIO", "VIDEO"];
/// Kurento's refusal of a subscription to an event the object does not raise.
const EVENT_NOT_SUPPORTED: i64 = 40106;
/// The events of a WebRtcEndpoint every media server raises.
const KURENTO_EVENTS: [&str; 3] = [
    "RenegotiationNeeded",
    "ConnectionStateChanged",
    "MediaSessionTerminated",
];
/// Sori's extension events (docs/kurento-compat.md), which an older media server refuses.
const SORI_EVENTS: [&str; 3] = ["TrackPublished", "TrackUnpublished", "AudioLevels"];

/// How the control connection is kept and how long requests may take.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// How long a request to the media server may go unanswered, waiting for the connection
    /// to come back included.
    pub request_timeout: Duration,
    /// A WebSocket ping goes to the media server this often.
    pub keepalive: Duration,
    /// A connection on which nothing (not even a pong) arrived for this long is dead: it is
    /// dropped and made again.
    pub dead_after: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// What the [`RemoteMedia`] handles and the connection task share.
pub(crate) struct Shared {
    pub(crate) rooms: Rooms,
    pub(crate) watchers: Watchers,
    pub(crate) options: RemoteOptions,
    /// There is a connection whose session is known to be good.
    pub(crate) connected: std::sync::atomic::AtomicBool,
}

/// The connection to a remote media server; cheap to clone.
///
/// When the connection drops, it is made again and the media server's session resumed with
/// `connect{sessionId}`: the media keeps flowing and nobody is told. Requests made meanwhile
/// wait for the connection (up to [`RemoteOptions::request_timeout`]). When the session is
/// gone (the media server restarted), every participant's media is reported removed
/// ([`PeerSignal::Removed`]) once the new connection is up, so that their next offers start
/// new media at once.
#[derive(Clone)]
pub struct RemoteMedia {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

impl RemoteMedia {
    /// Connects to the control API at `url`; fails when it cannot be reached now.
    pub async fn connect(url: &str) -> Result<RemoteMedia, RemoteError> {
        Self::connect_with(url, RemoteOptions::default()).await
    }

    /// [`RemoteMedia::connect`] with other timeouts.
    pub async fn connect_with(
        url: &str,
        options: RemoteOptions,
    ) -> Result<RemoteMedia, RemoteError> {
        let tls = tls::tls_for(url)?;
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, tls.clone());
        let (ws, _) = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| RemoteError::unreachable("no WebSocket handshake in time"))?
            .map_err(|e| RemoteError::unreachable(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let media = RemoteMedia {
            tx,
            shared: Arc::new(Shared {
                rooms: Rooms::default(),
                watchers: Watchers::default(),
                options,
                connected: true.into(),
            }),
        };
        let task = Task {
            url: url.to_string(),
            tls,
            rx,
            this: media.tx.downgrade(),
            shared: media.shared.clone(),
        };
        tokio::spawn(task.run(ws));
        // A session of our own from the start.
        media.request("ping", json!({"interval": 240000})).await?;
        Ok(media)
    }

    /// Resolves when the connection task has stopped (it panicked): from then on every
    /// request fails, and the process should end.
    pub async fn stopped(&self) {
        self.tx.closed().await
    }

    /// Whether the connection task has stopped.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether the control connection is up now (false from when a lost connection is noticed
    /// until a new one has resumed the session or found it gone).
    pub fn is_connected(&self) -> bool {
        self.shared
            .connected
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.shared.options.request_timeout
    }

    async fn request(&self, method: &'static str, params: Value) -> Result<Value, RemoteError> {
        self.request_by(method, params, self.deadline()).await
    }

    /// A request that fails when unanswered at `deadline`.
    async fn request_by(
        &self,
        method: &'static str,
        params: Value,
        deadline: Instant,
    ) -> Result<Value, RemoteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                method,
                params,
                reply,
            })
            .map_err(|_| RemoteError::unreachable("connection task stopped"))?;
        // A media server that stopped answering (frozen, overloaded, or away) must not hold a
        // participant's offer, or anything else, without bound.
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(reply) => reply.map_err(|_| RemoteError::unreachable("connection lost"))?,
            Err(_) => Err(RemoteError::unreachable(format!(
                "the media server did not answer {method} in time"
            ))),
        }
    }

    async fn invoke(
        &self,
        object: &str,
        operation: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Value, RemoteError> {
        let r = self
            .request_by(
                "invoke",
                json!({"object": object, "operation": operation, "operationParams": params}),
                deadline,
            )
            .await?;
        Ok(r.get("value").cloned().unwrap_or(Value::Null))
    }

    async fn create(&self, params: Value, deadline: Instant) -> Result<String, RemoteError> {
        let r = self.request_by("create", params, deadline).await?;
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
    async fn link(
        &self,
        source: &str,
        sink: &str,
        muted: [bool; 2],
        deadline: Instant,
    ) -> Result<(), RemoteError> {
        self.link_described(source, "default", source, sink, muted, deadline)
            .await
    }

    /// [`Self::link`] with the source's media description `from` (a relay's: the publisher's
    /// stream id) and the sink's `to`.
    async fn link_described(
        &self,
        source: &str,
        from: &str,
        to: &str,
        sink: &str,
        muted: [bool; 2],
        deadline: Instant,
    ) -> Result<(), RemoteError> {
        if muted == [false; 2] {
            let params =
                json!({"sink": sink, "sourceMediaDescription": from, "sinkMediaDescription": to});
            self.invoke(source, "connect", params, deadline).await?;
            return Ok(());
        }
        for (kind, _) in KINDS.iter().zip(muted).filter(|(_, m)| !m) {
            let params = json!({"sink": sink, "mediaType": kind,
                                "sourceMediaDescription": from, "sinkMediaDescription": to});
            self.invoke(source, "connect", params, deadline).await?;
        }
        Ok(())
    }

    /// Joins `room`; the participant receives the others only when `receive` is true. The
    /// whole join, waiting for the room included, fails at the request timeout.
    pub async fn join_as(
        &self,
        room: &str,
        offer: &str,
        receive: bool,
    ) -> Result<RemoteJoined, RemoteError> {
        let deadline = self.deadline();
        let rooms = &self.shared.rooms;
        // A second try when the room went (emptied, or the session lost) while we waited for
        // it or worked in it.
        for attempt in 0..3 {
            let shared = rooms.get_or_add(room);
            let Ok(mut r) = tokio::time::timeout_at(deadline, shared.lock()).await else {
                return Err(RemoteError::unreachable(format!(
                    "room {room} stayed busy: the media server is slow to answer"
                )));
            };
            if !r.live(rooms) {
                continue;
            }
            match self
                .join_locked(&mut r, room, offer, receive, deadline)
                .await
            {
                Err(e) if !r.live(rooms) && attempt < 2 => {
                    tracing::debug!(room, "room lost during a join ({e}): again");
                }
                Err(e) => {
                    if r.endpoints.is_empty() {
                        r.gone = true;
                        rooms.remove(room, &shared);
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
        Err(RemoteError::unreachable(
            "the media server's session keeps being lost",
        ))
    }

    /// A join with the room's lock held.
    async fn join_locked(
        &self,
        r: &mut Room,
        room: &str,
        offer: &str,
        receive: bool,
        deadline: Instant,
    ) -> Result<RemoteJoined, RemoteError> {
        let pipeline = match &r.pipeline {
            Some(p) => p.clone(),
            None => {
                let params = json!({"type": "MediaPipeline", "properties": {}});
                let p = self.create(params, deadline).await?;
                r.pipeline = Some(p.clone());
                p
            }
        };
        let endpoint = self
            .create(
                json!({"type": "WebRtcEndpoint",
                       "constructorParams": {"mediaPipeline": pipeline},
                       "properties": {"renegotiation": true}}),
                deadline,
            )
            .await?;
        let (signal_tx, signals) = mpsc::unbounded_channel();
        lock(&self.shared.watchers).insert(endpoint.clone(), signal_tx);
        match self.setup(r, &endpoint, offer, receive, deadline).await {
            Ok((answer, stream_id)) => {
                r.endpoints.push(Endpoint {
                    id: endpoint.clone(),
                    receives: receive,
                    muted: [false; 2],
                });
                self.shared.rooms.placed(&endpoint, room);
                Ok(RemoteJoined {
                    peer: endpoint,
                    stream_id,
                    answer,
                    signals,
                })
            }
            Err(e) => {
                lock(&self.shared.watchers).remove(&endpoint);
                // Not in the room yet: only the endpoint goes, and the pipeline of a room
                // with no one in it. Released in the background: the room's lock is not held
                // for it.
                let mut objects = vec![endpoint];
                if r.endpoints.is_empty() {
                    objects.extend(r.pipeline.take());
                }
                let media = self.clone();
                tokio::spawn(async move {
                    for object in objects {
                        let _ = media.request("release", json!({"object": object})).await;
                    }
                });
                Err(e)
            }
        }
    }

    /// Subscribes to the new endpoint's events, negotiates, and links it with the room.
    async fn setup(
        &self,
        r: &Room,
        endpoint: &str,
        offer: &str,
        receive: bool,
        deadline: Instant,
    ) -> Result<(String, String), RemoteError> {
        for event in KURENTO_EVENTS.into_iter().chain(SORI_EVENTS) {
            let params = json!({"object": endpoint, "type": event});
            match self.request_by("subscribe", params, deadline).await {
                Ok(_) => {}
                // With a media server from before Sori said which tracks arrive and how loud
                // the audio is, the session server does not know the participant's tracks
                // (not listed, no track webhooks) or when it speaks.
                Err(e) if e.code == EVENT_NOT_SUPPORTED && SORI_EVENTS.contains(&event) => {
                    tracing::debug!("media server does not report {event}: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        let answer = self
            .invoke(endpoint, "processOffer", json!({"offer": offer}), deadline)
            .await?;
        let answer = answer
            .as_str()
            .ok_or_else(|| RemoteError::unreachable("processOffer answered no SDP"))?
            .to_string();
        let stream_id = self
            .invoke(endpoint, "getStreamId", json!({}), deadline)
            .await?;
        let stream_id = stream_id.as_str().unwrap_or_default().to_string();
        for other in &r.endpoints {
            if receive {
                self.link(&other.id, endpoint, other.muted, deadline)
                    .await?;
            }
            if other.receives {
                self.link(endpoint, &other.id, [false; 2], deadline).await?;
            }
        }
        if receive {
            for p in &r.remote {
                if let Some(relay) = r.relays.get(&p.node) {
                    self.link_described(relay, &p.stream, &p.id, endpoint, p.muted, deadline)
                        .await?;
                }
            }
        }
        Ok((answer, stream_id))
    }

    /// The room of `peer`, locked (waiting at most until `deadline`).
    async fn room_of(
        &self,
        peer: &str,
        deadline: Instant,
    ) -> Result<Option<(String, RoomLock, tokio::sync::OwnedMutexGuard<Room>)>, RemoteError> {
        let Some((name, room)) = self.shared.rooms.of(peer) else {
            return Ok(None);
        };
        let guard = tokio::time::timeout_at(deadline, room.clone().lock_owned())
            .await
            .map_err(|_| RemoteError::unreachable(format!("room {name} stayed busy")))?;
        if !guard.live(&self.shared.rooms) {
            return Ok(None);
        }
        Ok(Some((name, room, guard)))
    }

    /// Stops (`muted`) or resumes forwarding the participant's audio (`video` false) or video
    /// to everyone: its links of that kind are disconnected, or connected again.
    pub async fn set_muted(&self, peer: &str, video: bool, muted: bool) -> Result<(), RemoteError> {
        let deadline = self.deadline();
        let Some((_, _, mut room)) = self.room_of(peer, deadline).await? else {
            return Err(RemoteError {
                code: 40101,
                message: format!("no endpoint {peer}"),
                kind: None,
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
            let params = json!({"sink": sink, "mediaType": KINDS[k], "sinkMediaDescription": peer});
            self.invoke(peer, op, params, deadline).await?;
        }
        Ok(())
    }

    /// Takes `room` (locked as `r`) out of the map and releases its pipeline, with whatever
    /// is left in it.
    async fn close_room(&self, room: &str, shared: &RoomLock, r: &mut Room, deadline: Instant) {
        r.gone = true;
        self.shared.rooms.remove(room, shared);
        if let Some(pipeline) = r.pipeline.take() {
            let _ = self
                .request_by("release", json!({"object": pipeline}), deadline)
                .await;
        }
    }

    /// The room `room` locked, live, made when there is none.
    async fn room_locked(
        &self,
        room: &str,
        deadline: Instant,
    ) -> Result<(RoomLock, tokio::sync::OwnedMutexGuard<Room>), RemoteError> {
        for _ in 0..3 {
            let shared = self.shared.rooms.get_or_add(room);
            let guard = tokio::time::timeout_at(deadline, shared.clone().lock_owned())
                .await
                .map_err(|_| RemoteError::unreachable(format!("room {room} stayed busy")))?;
            if guard.live(&self.shared.rooms) {
                return Ok((shared, guard));
            }
        }
        Err(RemoteError::unreachable(
            "the media server's session keeps being lost",
        ))
    }

    /// The room `room` locked, if there is one and it is live.
    async fn existing_room(
        &self,
        room: &str,
        deadline: Instant,
    ) -> Option<(RoomLock, tokio::sync::OwnedMutexGuard<Room>)> {
        let shared = self.shared.rooms.get(room)?;
        let r = tokio::time::timeout_at(deadline, shared.clone().lock_owned())
            .await
            .ok()?;
        r.live(&self.shared.rooms).then_some((shared, r))
    }

    /// Cascading: the RelayEndpoint of `room` here (its pipeline made if need be) that links
    /// it to media node `node`'s pipeline of the room. Made now when there is none: with
    /// `dial`, it dials that URI (the other node's waiting RelayEndpoint); without, it waits
    /// to be dialed.
    pub async fn relay(
        &self,
        room: &str,
        node: &str,
        dial: Option<&str>,
    ) -> Result<String, RemoteError> {
        let deadline = self.deadline();
        let (shared, mut r) = self.room_locked(room, deadline).await?;
        if let Some(relay) = r.relays.get(node) {
            return Ok(relay.clone());
        }
        let pipeline = match &r.pipeline {
            Some(p) => p.clone(),
            None => {
                let params = json!({"type": "MediaPipeline", "properties": {}});
                let p = self.create(params, deadline).await?;
                r.pipeline = Some(p.clone());
                p
            }
        };
        let mut ctor = json!({"mediaPipeline": pipeline});
        if let Some(uri) = dial {
            ctor["uri"] = json!(uri);
        }
        let made = self
            .create(
                json!({"type": "sori.RelayEndpoint", "constructorParams": ctor}),
                deadline,
            )
            .await;
        let relay = match made {
            Ok(relay) => relay,
            Err(e) => {
                // A pipeline made for this relay alone goes with it.
                if r.endpoints.is_empty() && r.relays.is_empty() {
                    self.close_room(room, &shared, &mut r, deadline).await;
                }
                return Err(e);
            }
        };
        r.relays.insert(node.to_string(), relay.clone());
        Ok(relay)
    }

    /// Cascading: `peer` (endpoint id `peer` with stream id `stream` on media node `node`,
    /// linked to this one by [`Self::relay`]) is in `room`: every participant here that
    /// receives gets its media of the kinds not `muted`, through the relay.
    pub async fn add_remote(
        &self,
        room: &str,
        node: &str,
        peer: &str,
        stream: &str,
        muted: [bool; 2],
    ) -> Result<(), RemoteError> {
        let deadline = self.deadline();
        let (_, mut r) = self.room_locked(room, deadline).await?;
        let Some(relay) = r.relays.get(node).cloned() else {
            return Err(RemoteError::unreachable(format!(
                "room {room} has no relay to node {node}"
            )));
        };
        if r.remote.iter().any(|p| p.id == peer) {
            return Ok(());
        }
        r.remote.push(RemotePeer {
            id: peer.to_string(),
            stream: stream.to_string(),
            node: node.to_string(),
            muted,
        });
        let sinks: Vec<String> = r
            .endpoints
            .iter()
            .filter(|e| e.receives)
            .map(|e| e.id.clone())
            .collect();
        for sink in sinks {
            self.link_described(&relay, stream, peer, &sink, muted, deadline)
                .await?;
        }
        Ok(())
    }

    /// Cascading: the participant `peer` of another node left `room`, or its media of `kind`
    /// is muted (`Some((kind, muted))`): the links from it here go, or come back.
    pub async fn update_remote(
        &self,
        room: &str,
        peer: &str,
        mute: Option<(MediaKind, bool)>,
    ) -> Result<(), RemoteError> {
        let deadline = self.deadline();
        let Some((_, mut r)) = self.existing_room(room, deadline).await else {
            return Ok(());
        };
        let Some(at) = r.remote.iter().position(|p| p.id == peer) else {
            return Ok(());
        };
        let Some(relay) = r.relays.get(&r.remote[at].node).cloned() else {
            return Ok(());
        };
        let stream = r.remote[at].stream.clone();
        let kinds: Vec<(usize, bool)> = match mute {
            None => {
                r.remote.remove(at);
                vec![(0, false), (1, false)]
            }
            Some((kind, muted)) => {
                let k = usize::from(kind == MediaKind::Video);
                if r.remote[at].muted[k] == muted {
                    return Ok(());
                }
                r.remote[at].muted[k] = muted;
                vec![(k, !muted)]
            }
        };
        let sinks: Vec<String> = r
            .endpoints
            .iter()
            .filter(|e| e.receives)
            .map(|e| e.id.clone())
            .collect();
        for (k, on) in kinds {
            let op = if on { "connect" } else { "disconnect" };
            for sink in &sinks {
                let params = json!({"sink": sink, "mediaType": KINDS[k],
                                    "sourceMediaDescription": stream, "sinkMediaDescription": peer});
                self.invoke(&relay, op, params, deadline).await?;
            }
        }
        Ok(())
    }

    /// Cascading: `room` no longer spans this node and `node`: the relay goes, with the
    /// participants of that node it brought.
    pub async fn unrelay(&self, room: &str, node: &str) {
        let deadline = self.deadline();
        let Some((shared, mut r)) = self.existing_room(room, deadline).await else {
            return;
        };
        r.remote.retain(|p| p.node != node);
        if let Some(relay) = r.relays.remove(node) {
            let _ = self
                .request_by("release", json!({"object": relay}), deadline)
                .await;
        }
        // A pipeline made for a relay alone goes with it.
        if r.endpoints.is_empty() && r.relays.is_empty() {
            self.close_room(room, &shared, &mut r, deadline).await;
        }
    }

    /// A later offer from the browser; returns the answer.
    pub async fn offer(&self, peer: &str, sdp: &str) -> Result<String, RemoteError> {
        let v = self
            .invoke(peer, "processOffer", json!({"offer": sdp}), self.deadline())
            .await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| RemoteError::unreachable("processOffer answered no SDP"))
    }

    /// The browser's answer to the media server's last offer.
    pub async fn answer(&self, peer: &str, sdp: &str) -> Result<(), RemoteError> {
        self.invoke(
            peer,
            "processAnswer",
            json!({"answer": sdp}),
            self.deadline(),
        )
        .await
        .map(|_| ())
    }

    /// The participant leaves: its endpoint goes, and the room's pipeline with the last one.
    pub async fn leave(&self, peer: &str) {
        lock(&self.shared.watchers).remove(peer);
        let deadline = self.deadline();
        // Released with the room's lock held: a join in the room meanwhile would link its
        // newcomer with an endpoint that is gone, and fail.
        let found = self.room_of(peer, deadline).await;
        let _ = self
            .request_by("release", json!({"object": peer}), deadline)
            .await;
        self.shared.rooms.unplaced(peer);
        let Ok(Some((name, shared, mut room))) = found else {
            return;
        };
        room.endpoints.retain(|e| e.id != peer);
        if room.endpoints.is_empty() {
            self.close_room(&name, &shared, &mut room, deadline).await;
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

    /// A `ping` over the control connection; without a connection, unhealthy at once.
    fn health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if !self.is_connected() {
                return Err(BackendError::Unreachable(
                    "no connection to the media server: connecting again".into(),
                ));
            }
            self.request("ping", json!({"interval": 240000}))
                .await
                .map(|_| ())
                .map_err(backend_error)
        })
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `data.type` with which Sori's media server refuses an offer for its video codecs
/// (Kurento's code 40205 otherwise).
const NO_COMMON_VIDEO_CODEC: &str = "SORI_NO_COMMON_VIDEO_CODEC";

fn backend_error(e: RemoteError) -> BackendError {
    match (e.code, e.kind.as_deref()) {
        _ if e.is_unknown_object() => BackendError::UnknownPeer,
        (40205, Some(NO_COMMON_VIDEO_CODEC)) => BackendError::Codec(e.to_string()),
        // The media server refused the offer as it is: sending it again changes nothing.
        (40201 | 40205, _) => BackendError::BadOffer(e.to_string()),
        // No reply at all: the connection, not the media server, failed.
        (0, _) => BackendError::Unreachable(e.to_string()),
        _ => BackendError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_servers_refusals_map_to_what_the_session_server_answers() {
        let e = |code, kind: Option<&str>| RemoteError {
            code,
            message: "why".into(),
            kind: kind.map(str::to_string),
        };
        assert_eq!(backend_error(e(40101, None)), BackendError::UnknownPeer);
        assert!(matches!(
            backend_error(e(40205, Some(NO_COMMON_VIDEO_CODEC))),
            BackendError::Codec(_)
        ));
        for refused in [
            e(40205, Some("SDP_END_POINT_PROCESS_OFFER_ERROR")),
            e(40201, Some("SDP_PARSE_ERROR")),
        ] {
            assert!(matches!(backend_error(refused), BackendError::BadOffer(_)));
        }
        assert!(matches!(
            backend_error(RemoteError::unreachable("connection lost")),
            BackendError::Unreachable(_)
        ));
        assert!(matches!(
            backend_error(e(-32603, None)),
            BackendError::Failed(_)
        ));
    }
}

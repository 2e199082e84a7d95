//! A client of the control API for Sori's own session server running apart from its media
//! server (`sori signal --media ws://HOST:8888/kurento`).
//!
//! Each room is a `MediaPipeline`; each participant one `WebRtcEndpoint` with the
//! renegotiation extension, connected to and from every other participant through sink media
//! descriptions of their own, so one peer connection carries everyone (as in the in-process
//! SFU rooms). The media server's offers arrive as `RenegotiationNeeded` events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sori_net::sori_sfu::RemoveReason;
use sori_net::PeerSignal;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

/// An error from the media server (or from reaching it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The protocol's error code (0: the media server could not be reached).
    pub code: i64,
    /// Its message.
    pub message: String,
}

impl RemoteError {
    fn unreachable(why: impl Into<String>) -> Self {
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

enum Outgoing {
    Request {
        method: &'static str,
        params: Value,
        reply: oneshot::Sender<Result<Value, RemoteError>>,
    },
}

#[derive(Default)]
struct Room {
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

type Watchers = Arc<std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<PeerSignal>>>>;

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
        let tls = tls_for(url)?;
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
        tokio::spawn(run(
            url.to_string(),
            tls,
            Some(ws),
            rx,
            media.tx.downgrade(),
            media.watchers.clone(),
            media.rooms.clone(),
        ));
        // A session of our own from the start.
        media.request("ping", json!({"interval": 240000})).await?;
        Ok(media)
    }

    async fn request(&self, method: &'static str, params: Value) -> Result<Value, RemoteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing::Request {
                method,
                params,
                reply,
            })
            .map_err(|_| RemoteError::unreachable("connection task stopped"))?;
        rx.await
            .map_err(|_| RemoteError::unreachable("connection lost"))?
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

/// The TLS settings for a `wss://` URL (`None` for `ws://`): rustls on aws-lc-rs, the crypto
/// provider the rest of Sori builds, trusting the system's root certificates, which
/// `SSL_CERT_FILE` or `SSL_CERT_DIR` replace (as for OpenSSL: a private CA goes there).
fn tls_for(url: &str) -> Result<Option<Connector>, RemoteError> {
    if !url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        return Ok(None);
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(RemoteError::unreachable(format!(
            "no trusted root certificates for wss:// (set SSL_CERT_FILE): {:?}",
            found.errors
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::unreachable(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

/// The connection task: requests out in order, replies matched by id, events to watchers.
async fn run(
    url: String,
    tls: Option<Connector>,
    mut first: Option<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    this: mpsc::WeakUnboundedSender<Outgoing>,
    watchers: Watchers,
    rooms: Arc<Mutex<HashMap<String, Room>>>,
) {
    // The query may hold an access token: logs show the rest.
    let shown = url.split('?').next().unwrap_or(&url).to_string();
    let mut backoff = Duration::from_millis(200);
    loop {
        let ws = match first.take() {
            Some(ws) => ws,
            None => match tokio_tungstenite::connect_async_tls_with_config(
                &url,
                None,
                true,
                tls.clone(),
            )
            .await
            {
                Ok((ws, _)) => {
                    tracing::info!(url = shown, "media server connection restored");
                    backoff = Duration::from_millis(200);
                    ws
                }
                Err(e) => {
                    tracing::warn!(url = shown, "media server unreachable: {e}");
                    // Requests meanwhile fail at once.
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            out = rx.recv() => match out {
                                Some(Outgoing::Request { reply, .. }) => {
                                    let _ = reply.send(Err(RemoteError::unreachable(e.to_string())));
                                }
                                None => return,
                            },
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let (mut sink, mut stream) = ws.split();
        let mut pending: HashMap<u64, oneshot::Sender<Result<Value, RemoteError>>> = HashMap::new();
        let mut next_id = 0u64;
        let mut session: Option<String> = None;
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(Outgoing::Request { method, mut params, reply }) = out else {
                        let _ = sink.close().await;
                        return;
                    };
                    if let (Some(s), Value::Object(m)) = (&session, &mut params) {
                        m.entry("sessionId").or_insert_with(|| json!(s));
                    }
                    let id = next_id;
                    next_id += 1;
                    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                    if sink.send(Message::text(frame.to_string())).await.is_err() {
                        let _ = reply.send(Err(RemoteError::unreachable("connection lost")));
                        break;
                    }
                    pending.insert(id, reply);
                }
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    if v.get("method").and_then(Value::as_str) == Some("onEvent") {
                        if let Some(ended) = event(&v["params"]["value"], &watchers) {
                            // The media server dropped the participant's session: its endpoint
                            // goes too, so that its next offer starts a new one.
                            if let Some(tx) = this.upgrade() {
                                let media = RemoteMedia { tx, rooms: rooms.clone(), watchers: watchers.clone() };
                                tokio::spawn(async move { media.leave(&ended).await });
                            }
                        }
                        continue;
                    }
                    let Some(id) = v.get("id").and_then(Value::as_u64) else { continue };
                    let Some(reply) = pending.remove(&id) else { continue };
                    if let Some(result) = v.get("result") {
                        if let Some(s) = result.get("sessionId").and_then(Value::as_str) {
                            session = Some(s.to_string());
                        }
                        let _ = reply.send(Ok(result.clone()));
                    } else {
                        let e = &v["error"];
                        let _ = reply.send(Err(RemoteError {
                            code: e["code"].as_i64().unwrap_or(-1),
                            message: e["message"].as_str().unwrap_or("").to_string(),
                        }));
                    }
                }
            }
        }
        tracing::warn!(url = shown, "media server connection lost");
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(RemoteError::unreachable("connection lost")));
        }
        // Every participant's media is gone with the session: tell them, forget the rooms.
        let lost: Vec<_> = watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, tx) in lost {
            let _ = tx.send(PeerSignal::Removed(RemoveReason::Failed(
                "media server connection lost".into(),
            )));
        }
        rooms.lock().await.clear();
    }
}

/// Passes an event on as a peer signal; returns the endpoint whose media session ended.
fn event(value: &Value, watchers: &Watchers) -> Option<String> {
    let object = value.get("object").and_then(Value::as_str)?;
    let data = &value["data"];
    let signal = match value.get("type").and_then(Value::as_str) {
        Some("RenegotiationNeeded") => {
            PeerSignal::Offer(data.get("sdpOffer").and_then(Value::as_str)?.to_string())
        }
        Some("ConnectionStateChanged") if data["newState"] == "CONNECTED" => PeerSignal::Connected,
        Some("MediaSessionTerminated") => {
            PeerSignal::Removed(RemoveReason::Failed("media session ended".into()))
        }
        _ => return None,
    };
    let mut w = watchers.lock().unwrap_or_else(|e| e.into_inner());
    let removed = matches!(signal, PeerSignal::Removed(_));
    if let Some(tx) = w.get(object) {
        let _ = tx.send(signal);
    }
    if removed {
        w.remove(object);
        return Some(object.to_string());
    }
    None
}

//! # sori-signal — the session server
//!
//! Browsers hold one WebSocket (`/ws`) each for everything but media: joining a room, SDP and ICE
//! exchange, chat, mute state. The protocol is in [`protocol`] and `docs/signaling.md`.
//!
//! - **SFU rooms**: a browser's offer goes to the media server (through [`MediaHandle`]), whose
//!   answer and later offers come back on the same socket.
//! - **P2P rooms** (two people): offers, answers and candidates are relayed to the other browser;
//!   media never touches the server.
//! - **Auto rooms**: P2P while two are in, moved to the SFU when a third joins (the server sends
//!   `mode`, the browsers reconnect their media without reloading).
//!
//! Room state lives in one [`Hub`] behind a mutex that is never held across an `await`; each
//! connection is one task that owns its media peer and talks to the media server itself.

#![forbid(unsafe_code)]

mod backend;
mod hub;
pub mod metrics;
pub mod protocol;
mod recording;
mod web;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
pub use backend::{BackendError, BackendJoined, MediaBackend, PeerRef};
use futures_util::{SinkExt, StreamExt};
use sori_net::sori_sfu::RemoveReason;
use sori_net::PeerSignal;
use tokio::sync::mpsc;

pub use hub::Hub;
use hub::{JoinOutcome, Me};
use protocol::{ClientMessage, ErrorCode, IceServer, RoomMode, ServerMessage, MAX_MESSAGE};

/// Interval of the server's WebSocket pings.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Settings of the session server.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// Mode of a room whose first participant asks for none.
    pub default_mode: RoomMode,
    /// ICE server URLs handed to browsers as they are (`stun:…`, `turn:…`).
    pub ice_servers: Vec<String>,
    /// TURN servers for which each participant gets its own time-limited credential.
    pub turn: Option<TurnAccess>,
    /// The embedded TURN server, whose counters `/metrics` shows.
    pub turn_monitor: Option<sori_turn::TurnMonitor>,
    /// A socket on which nothing arrives for this long is closed (browsers ping every 5 s).
    pub idle_timeout: Duration,
    /// Room recordings go here (`None`: the record button is refused).
    pub recordings_dir: Option<std::path::PathBuf>,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            default_mode: RoomMode::Sfu,
            ice_servers: Vec::new(),
            turn: None,
            turn_monitor: None,
            idle_timeout: Duration::from_secs(20),
            recordings_dir: None,
        }
    }
}

/// TURN servers sharing a secret with the session server (Sori's own or coturn with
/// `use-auth-secret`): each participant's `joined` carries a credential valid for `ttl`.
#[derive(Clone)]
pub struct TurnAccess {
    /// `stun:`/`turn:` URLs of the servers.
    pub urls: Vec<String>,
    /// The shared secret credentials are signed with.
    pub secret: String,
    /// How long an issued credential stays valid.
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnAccess")
            .field("urls", &self.urls)
            .field("secret", &"<set>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The session server: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Signal {
    hub: Arc<Mutex<Hub>>,
    media: MediaBackend,
    config: Arc<SignalConfig>,
    recordings: Arc<recording::Recordings>,
}

impl Signal {
    /// A session server driving `media`.
    pub fn new(media: impl Into<MediaBackend>, config: SignalConfig) -> Self {
        let media: MediaBackend = media.into();
        let local = match &media {
            MediaBackend::Local(h) => Some(h.clone()),
            MediaBackend::Remote(_) => None,
        };
        Self {
            recordings: Arc::new(recording::Recordings::new(
                config.recordings_dir.clone(),
                local,
            )),
            hub: Arc::new(Mutex::new(Hub::default())),
            media,
            config: Arc::new(config),
        }
    }

    /// The HTTP routes: web client, `/ws`, `/healthz`, `/metrics`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(web::index))
            .route("/app.js", get(web::app_js))
            .route("/style.css", get(web::style_css))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics::page))
            .route("/ws", get(upgrade))
            .route("/recordings", get(recording::list))
            .route("/recordings/{recording}/{file}", get(recording::download))
            .with_state(self)
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        // A panic while holding the lock is a bug elsewhere; the state itself stays usable.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The ICE servers participant `id` is given: the plain URLs, then the TURN servers with a
/// credential of its own.
fn ice_servers(config: &SignalConfig, id: &str) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !config.ice_servers.is_empty() {
        servers.push(IceServer {
            urls: config.ice_servers.clone(),
            username: None,
            credential: None,
        });
    }
    if let Some(turn) = config.turn.as_ref().filter(|t| !t.urls.is_empty()) {
        let c = sori_turn::credentials::issue(&turn.secret, id, turn.ttl, SystemTime::now());
        servers.push(IceServer {
            urls: turn.urls.clone(),
            username: Some(c.username),
            credential: Some(c.password),
        });
    }
    servers
}

async fn upgrade(ws: WebSocketUpgrade, State(signal): State<Signal>) -> impl IntoResponse {
    // Frames past the protocol limit still get a polite refusal; far larger ones end the socket.
    ws.max_message_size(16 * MAX_MESSAGE)
        .on_upgrade(move |socket| connection(socket, signal))
}

/// One browser's socket, from upgrade to close.
async fn connection(socket: WebSocket, signal: Signal) {
    let (out, mut outgoing) = mpsc::unbounded_channel::<ServerMessage>();
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        // WebSocket pings are answered by the browser itself, even in a throttled background
        // tab; their pongs keep the connection from looking idle.
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let frame = tokio::select! {
                message = outgoing.recv() => match message {
                    // Serializing our own types cannot fail.
                    Some(m) => Message::Text(serde_json::to_string(&m).expect("server messages serialize").into()),
                    None => break,
                },
                _ = keepalive.tick() => Message::Ping(Default::default()),
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut conn = Connection {
        signal: signal.clone(),
        out,
        me: None,
        media_peer: None,
    };
    loop {
        let next = tokio::time::timeout(signal.config.idle_timeout, stream.next()).await;
        let message = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                tracing::debug!("socket error: {e}");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::info!(
                    "closing a socket silent for {:?}",
                    signal.config.idle_timeout
                );
                break;
            }
        };
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => match String::from_utf8(b.to_vec()) {
                Ok(t) => t,
                Err(_) => {
                    conn.error(
                        ErrorCode::BadMessage,
                        "binary frames are not part of the protocol",
                    );
                    continue;
                }
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match protocol::parse(&text) {
            Ok(ClientMessage::Leave) => break,
            Ok(m) => conn.handle(m).await,
            Err((code, message)) => conn.error(code, &message),
        }
    }
    conn.leave().await;
    drop(conn);
    let _ = writer.await;
}

struct Connection {
    signal: Signal,
    out: mpsc::UnboundedSender<ServerMessage>,
    me: Option<Me>,
    media_peer: Option<PeerRef>,
}

impl Connection {
    fn send(&self, m: ServerMessage) {
        let _ = self.out.send(m);
    }

    fn error(&self, code: ErrorCode, message: &str) {
        self.send(ServerMessage::Error {
            code,
            message: message.to_string(),
        });
    }

    async fn handle(&mut self, message: ClientMessage) {
        if let ClientMessage::Ping = message {
            self.send(ServerMessage::Pong);
            return;
        }
        if let ClientMessage::Join {
            v,
            room,
            name,
            mode,
            token: _,
        } = message
        {
            self.join(v, room, name, mode);
            return;
        }
        let Some(me) = self.me.clone() else {
            self.error(ErrorCode::NotJoined, "join a room first");
            return;
        };
        match message {
            ClientMessage::Offer { sdp, to: Some(to) } => {
                self.relay(&me, &to, |from| ServerMessage::Offer {
                    sdp,
                    from: Some(from),
                })
            }
            ClientMessage::Answer { sdp, to: Some(to) } => {
                self.relay(&me, &to, |from| ServerMessage::Answer {
                    sdp,
                    from: Some(from),
                })
            }
            ClientMessage::Candidate {
                candidate,
                to: Some(to),
            } => self.relay(&me, &to, |from| ServerMessage::Candidate {
                candidate,
                from,
            }),
            ClientMessage::Offer { sdp, to: None } => self.media_offer(&me, &sdp).await,
            ClientMessage::Answer { sdp, to: None } => self.media_answer(&sdp).await,
            // The media server is ICE-lite: it learns the browser's address from its checks.
            ClientMessage::Candidate { to: None, .. } => {}
            ClientMessage::Chat { text } => {
                if let Err(why) = self.signal.hub().chat(&me, &text) {
                    self.error(ErrorCode::BadChat, why);
                }
            }
            ClientMessage::Mute { audio, video } => self.signal.hub().mute(&me, audio, video),
            ClientMessage::Record { on } => self.record(&me, on).await,
            ClientMessage::Join { .. } | ClientMessage::Leave | ClientMessage::Ping => {}
        }
    }

    fn join(&mut self, v: u32, room: String, name: String, mode: Option<RoomMode>) {
        if self.me.is_some() {
            self.error(
                ErrorCode::AlreadyJoined,
                "this connection is already in a room",
            );
            return;
        }
        if v != protocol::PROTOCOL_VERSION {
            self.error(
                ErrorCode::UnsupportedVersion,
                &format!(
                    "protocol version {v} is not supported; this server speaks version {}",
                    protocol::PROTOCOL_VERSION
                ),
            );
            return;
        }
        if !protocol::valid_name(&room) || !protocol::valid_name(&name) {
            self.error(
                ErrorCode::InvalidName,
                "room and name must be 1 to 64 characters, without control characters",
            );
            return;
        }
        let mode = mode.unwrap_or(self.signal.config.default_mode);
        let outcome = self
            .signal
            .hub()
            .join(&room, &name, mode, self.out.clone(), |id| {
                ice_servers(&self.signal.config, id)
            });
        match outcome {
            JoinOutcome::Joined(me) => {
                tracing::info!(room, id = me.id, "participant joined");
                self.me = Some(me);
                let (recordings, out) = (self.signal.recordings.clone(), self.out.clone());
                tokio::spawn(async move {
                    if recordings.is_on(&room).await {
                        let _ = out.send(ServerMessage::Recording {
                            on: true,
                            by: None,
                            name: None,
                        });
                    }
                });
            }
            JoinOutcome::Full => self.error(
                ErrorCode::RoomFull,
                &format!(
                    "room {room:?} is a two-person peer-to-peer room and both places are taken"
                ),
            ),
        }
    }

    fn relay(&self, me: &Me, to: &str, make: impl FnOnce(String) -> ServerMessage) {
        if let Err(why) = self.signal.hub().relay(me, to, make) {
            self.error(ErrorCode::BadTarget, &why);
        }
    }

    async fn media_offer(&mut self, me: &Me, sdp: &str) {
        if !self.signal.hub().uses_sfu(me) {
            self.error(
                ErrorCode::BadTarget,
                "this room is peer-to-peer: address offers to a participant with \"to\"",
            );
            return;
        }
        let media = self.signal.media.clone();
        let mut reply = None;
        if let Some(peer) = &self.media_peer {
            match media.offer(peer, sdp).await {
                // The media server dropped this peer (see forward_media_signals): start anew.
                Err(BackendError::UnknownPeer) => self.media_peer = None,
                other => reply = Some(other),
            }
        }
        let reply = match reply {
            Some(r) => r,
            None => match media.join(&me.room, sdp).await {
                Ok(joined) => {
                    self.signal
                        .hub()
                        .set_media_id(me, Some(joined.stream_id.clone()));
                    self.media_peer = Some(joined.peer);
                    self.send(ServerMessage::Answer {
                        sdp: joined.answer,
                        from: None,
                    });
                    let name = self.signal.hub().name_of(me).unwrap_or_default();
                    tokio::spawn(forward_media_signals(
                        joined.signals,
                        self.out.clone(),
                        self.signal.recordings.clone(),
                        me.clone(),
                        name,
                    ));
                    return;
                }
                Err(e) => Err(e),
            },
        };
        match reply {
            Ok(answer) => self.send(ServerMessage::Answer {
                sdp: answer,
                from: None,
            }),
            Err(e) => self.media_error(e),
        }
    }

    async fn media_answer(&mut self, sdp: &str) {
        let Some(peer) = &self.media_peer else {
            self.error(
                ErrorCode::BadTarget,
                "no offer from the media server is waiting for an answer",
            );
            return;
        };
        if let Err(e) = self.signal.media.answer(peer, sdp).await {
            self.media_error(e);
        }
    }

    async fn record(&mut self, me: &Me, on: bool) {
        if !self.signal.hub().uses_sfu(me) {
            self.error(
                ErrorCode::BadTarget,
                "only SFU rooms can be recorded: in a peer-to-peer room media bypasses the server",
            );
            return;
        }
        let recordings = &self.signal.recordings;
        let name = if on {
            match recordings.start(&me.room).await {
                Ok(name) => Some(name),
                Err(why) => {
                    self.error(ErrorCode::MediaError, &why);
                    return;
                }
            }
        } else {
            recordings.stop(&me.room).await
        };
        self.signal.hub().broadcast(
            &me.room,
            &ServerMessage::Recording {
                on,
                by: Some(me.id.clone()),
                name,
            },
        );
    }

    fn media_error(&self, e: BackendError) {
        self.error(ErrorCode::MediaError, &e.to_string());
    }

    async fn leave(&mut self) {
        if let Some(me) = self.me.take() {
            tracing::info!(room = me.room, id = me.id, "participant left");
            let empty = {
                let mut hub = self.signal.hub();
                hub.leave(&me);
                !hub.has_room(&me.room)
            };
            self.signal.recordings.left(&me.room, &me.id).await;
            if empty {
                // The last one out ends the room's recording.
                self.signal.recordings.stop(&me.room).await;
            }
        }
        if let Some(peer) = self.media_peer.take() {
            self.signal.media.leave(&peer).await;
        }
    }
}

/// Passes the media server's offers for this participant to its socket.
async fn forward_media_signals(
    mut signals: mpsc::UnboundedReceiver<PeerSignal>,
    out: mpsc::UnboundedSender<ServerMessage>,
    recordings: Arc<recording::Recordings>,
    me: Me,
    name: String,
) {
    while let Some(signal) = signals.recv().await {
        match signal {
            PeerSignal::Offer(sdp) => {
                if out.send(ServerMessage::Offer { sdp, from: None }).is_err() {
                    break;
                }
            }
            PeerSignal::Published { track, kind } => {
                recordings
                    .published(&me.room, &me.id, &name, track, kind)
                    .await;
            }
            PeerSignal::Connected => {}
            PeerSignal::Removed(reason) => {
                tracing::info!("media connection removed: {reason}");
                if reason != RemoveReason::Left {
                    // The socket is still up: have the browser connect its media again.
                    let _ = out.send(ServerMessage::Mode {
                        mode: RoomMode::Sfu,
                    });
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn joined_carries_turn_credentials_that_verify_against_the_secret() {
        let config = SignalConfig {
            ice_servers: vec!["stun:stun.example.org:3478".into()],
            turn: Some(TurnAccess {
                urls: vec![
                    "stun:192.0.2.1:3478".into(),
                    "turn:192.0.2.1:3478?transport=udp".into(),
                    "turn:192.0.2.1:3478?transport=tcp".into(),
                ],
                secret: "shared".into(),
                ttl: Duration::from_secs(3600),
            }),
            ..SignalConfig::default()
        };
        let mut hub = Hub::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let outcome = hub.join("r", "Ada", RoomMode::Sfu, tx, |id| ice_servers(&config, id));
        let JoinOutcome::Joined(me) = outcome else {
            panic!("join refused");
        };
        let joined = serde_json::to_value(rx.try_recv().unwrap()).unwrap();
        assert_eq!(joined["type"], "joined");
        let servers = joined["ice_servers"].as_array().unwrap();
        assert_eq!(
            servers[0],
            serde_json::json!({"urls": ["stun:stun.example.org:3478"]}),
            "plain URLs carry no credential fields"
        );
        let turn = &servers[1];
        assert_eq!(turn["urls"].as_array().unwrap().len(), 3);
        let username = turn["username"].as_str().unwrap();
        let (expiry, id) = username.split_once(':').unwrap();
        assert_eq!(id, me.id);
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            (before + 3600..=before + 3601).contains(&expiry),
            "{expiry}"
        );
        assert_eq!(
            turn["credential"].as_str().unwrap(),
            sori_turn::credentials::password("shared", username)
        );
    }
}

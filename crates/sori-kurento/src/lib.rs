//! # sori-kurento — the media server's control API
//!
//! Sori's media server is commanded over WebSocket JSON-RPC in the Kurento protocol, so
//! applications written against Kurento's client libraries drive it unchanged: they create a
//! `MediaPipeline` (a room of the media core in manual forwarding), `WebRtcEndpoint`s (one
//! peer connection each), and `connect` them ("send A's video to B").
//!
//! - One [`tokio::sync::Mutex`] holds the whole object model ([`model`]); each connection's
//!   requests are handled one after another, in order, and may hold it across a call to the
//!   media task (those calls take microseconds).
//! - Sessions outlive their socket: objects stay until the session is closed, released, or
//!   collected after its socket has been gone for one to two collection periods. A client
//!   takes its session back on a new socket with `connect{sessionId}`.
//! - Each socket is pinged; one silent for a few keepalive periods is closed (its session
//!   stays).
//! - Events go to whichever socket is currently bound to the subscribing session.
//!
//! What is supported and how it differs from Kurento Media Server is in
//! `docs/kurento-compat.md`.

#![forbid(unsafe_code)]

mod model;
mod recorder;
pub mod rpc;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{FutureExt, SinkExt, StreamExt};
use sori_net::MediaHandle;
use tokio::sync::{mpsc, Mutex};

use model::{Conn, Kms};

/// Largest accepted frame (big SDPs fit many times over).
const MAX_FRAME: usize = 1 << 20;
/// Frames read ahead of the one being handled (each at most [`MAX_FRAME`]).
const READ_AHEAD: usize = 16;

/// Settings of the control API.
#[derive(Debug, Clone)]
pub struct KurentoConfig {
    /// The WebSocket path (`/kurento`).
    pub path: String,
    /// When set, a connection must carry `?access_token=<this>` (an extension: the protocol
    /// itself has no authentication).
    pub access_token: Option<String>,
    /// Web origins (`https://app.example.com`) whose pages may open the control API. A
    /// WebSocket upgrade with any other `Origin` header is refused: otherwise any page open in
    /// a browser on the server's host could drive it. Kurento applications run server-side
    /// and send no `Origin`; they are not affected.
    pub allowed_origins: Vec<String>,
    /// Objects of a session whose socket is gone are released after one to two periods.
    pub gc_period: Duration,
    /// Media that has not moved for this long is reported as NOT_FLOWING.
    pub flow_idle: Duration,
    /// RecorderEndpoints write only inside this directory (`None`: recording is off).
    pub recordings_dir: Option<std::path::PathBuf>,
    /// The most media objects (pipelines and elements) one session may create; beyond it,
    /// `create` is 40009 NOT_ENOUGH_RESOURCES and other sessions are unaffected.
    pub max_objects_per_session: usize,
    /// The most RecorderEndpoints one session may create (each that records is a thread
    /// writing a file).
    pub max_recorders_per_session: usize,
    /// A WebSocket ping goes to each client this often, and a connection on which nothing
    /// (not even a pong) arrived for [`KEEPALIVE_MISSES`] times as long is closed: its session
    /// stays, for the client to resume on a new connection.
    pub keepalive: Duration,
}

/// Keepalive periods of silence after which a control connection is dead.
pub const KEEPALIVE_MISSES: u32 = 3;

impl Default for KurentoConfig {
    fn default() -> Self {
        Self {
            path: "/kurento".into(),
            access_token: None,
            allowed_origins: Vec::new(),
            gc_period: Duration::from_secs(240),
            flow_idle: Duration::from_secs(2),
            recordings_dir: None,
            max_objects_per_session: 1000,
            max_recorders_per_session: 16,
            keepalive: Duration::from_secs(2),
        }
    }
}

/// The control API: cheap to clone.
#[derive(Clone)]
pub struct Kurento {
    kms: Arc<Mutex<Kms>>,
    config: Arc<KurentoConfig>,
}

impl Kurento {
    /// A control API over `media`; starts its background tasks (event flow, garbage
    /// collection) on the current tokio runtime.
    pub fn new(media: MediaHandle, config: KurentoConfig) -> Self {
        let caps = model::Caps {
            objects: config.max_objects_per_session,
            recorders: config.max_recorders_per_session,
        };
        let kms = Kms::new(media, config.flow_idle, config.recordings_dir.clone(), caps);
        let kurento = Self {
            kms,
            config: Arc::new(config),
        };
        tokio::spawn(model::flow_task(
            Arc::downgrade(&kurento.kms),
            Duration::from_millis(200),
        ));
        tokio::spawn(model::gc_task(
            Arc::downgrade(&kurento.kms),
            kurento.config.gc_period,
        ));
        kurento
    }

    /// The router serving the WebSocket at the configured path.
    pub fn router(&self) -> Router {
        Router::new()
            .route(&self.config.path, get(upgrade))
            .route(&relay_path(&self.config.path), get(relay_upgrade))
            .with_state(self.clone())
    }

    /// Numbers of live sessions, pipelines and elements (for tests and metrics).
    /// The refusal of a connection without the control API's token (none when it has none).
    fn token_refused(&self, given: Option<&str>) -> Option<Response> {
        let token = self.config.access_token.as_ref()?;
        let given = given.unwrap_or_default();
        (!token_matches(given.as_bytes(), token.as_bytes()))
            .then(|| (StatusCode::UNAUTHORIZED, "access_token required").into_response())
    }

    pub async fn counts(&self) -> (usize, usize, usize) {
        self.kms.lock().await.counts()
    }
}

#[derive(serde::Deserialize)]
struct Params {
    access_token: Option<String>,
}

/// Where a RelayEndpoint made without `uri` is dialed by the other node's: under the control
/// API's path, with `?element=<its id>` (and the control API's token).
pub fn relay_path(path: &str) -> String {
    format!("{}/relay", path.trim_end_matches('/'))
}

#[derive(serde::Deserialize)]
struct RelayParams {
    access_token: Option<String>,
    element: String,
}

/// The other node's RelayEndpoint dials in: with the control API's token, for an element
/// here that waits for it.
async fn relay_upgrade(
    State(k): State<Kurento>,
    Query(q): Query<RelayParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Media nodes dial each other; a browser page never does.
    if headers.contains_key(header::ORIGIN) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if let Some(refused) = k.token_refused(q.access_token.as_deref()) {
        return refused;
    }
    let Some((from_remote, to_remote)) = k.kms.lock().await.take_waiting(&q.element) else {
        return (StatusCode::NOT_FOUND, "no RelayEndpoint waits with that id").into_response();
    };
    let kms = k.kms.clone();
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let id = q.element;
            tracing::info!(object = id, "relay linked (dialed in)");
            let (tx, rx) = socket.split();
            let rx = rx
                .take_while(|m| {
                    std::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_))))
                })
                .map(|m| match m {
                    Ok(Message::Binary(b)) => model::Frame::Data(b.to_vec()),
                    _ => model::Frame::Other,
                });
            let tx = tx.with(|f: model::Frame| {
                std::future::ready(Ok::<_, axum::Error>(match f {
                    model::Frame::Data(b) => Message::Binary(b.into()),
                    model::Frame::Ping | model::Frame::Other => Message::Ping(Default::default()),
                }))
            });
            // Stopped with the element (released, or its pipeline).
            let carry = tokio::spawn({
                let id = id.clone();
                async move { model::pump(&id, rx, tx, from_remote, to_remote).await }
            });
            {
                let mut k = kms.lock().await;
                k.relay_task(&id, carry.abort_handle());
                k.relay_linked(&id, true);
            }
            // Ended while the element lives (not stopped with it): it waits anew.
            if carry.await.is_ok() {
                let mut k = kms.lock().await;
                k.relay_linked(&id, false);
                k.rearm(&id);
            }
        })
}

async fn upgrade(
    State(k): State<Kurento>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin_allowed(origin.as_bytes(), &k.config.allowed_origins) {
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    if let Some(refused) = k.token_refused(q.access_token.as_deref()) {
        return refused;
    }
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| connection(k, socket))
}

/// Browsers send origins as `scheme://host[:port]` in lower case; the configured ones are
/// compared the same way, forgiving a trailing `/` and capitals.
fn origin_allowed(origin: &[u8], allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        let a = a.trim().trim_end_matches('/');
        !a.is_empty() && a.as_bytes().eq_ignore_ascii_case(origin)
    })
}

/// Compares a presented token with the configured one in a time that depends on the lengths
/// only, never on where the first differing byte is, so the response time gives no way to
/// guess the token byte by byte.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    // Keeps the optimiser from turning the loop back into an early exit.
    std::hint::black_box(diff) == 0
}

async fn connection(k: Kurento, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let (outbox, mut out_rx) = mpsc::unbounded_channel::<String>();
    let keepalive = k.config.keepalive;
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(keepalive);
        ping.tick().await;
        loop {
            let frame = tokio::select! {
                text = out_rx.recv() => match text {
                    Some(text) => Message::Text(text.into()),
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            // A client that takes no more data for a while is gone.
            match tokio::time::timeout(keepalive * KEEPALIVE_MISSES, tx.send(frame)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let _ = tokio::time::timeout(keepalive, tx.close()).await;
    });
    let mut conn = Conn::new(outbox.clone());
    tracing::debug!(conn = conn.id, "control connection open");
    let silence = keepalive * KEEPALIVE_MISSES;
    // Frames already received behind the one being handled, and whether the client closed the
    // connection after them: a process that was stopped finds, once it runs again, requests a
    // client sent before it gave up and closed; read ahead, the close is known before they run.
    let mut ahead = VecDeque::new();
    let mut closed = false;
    loop {
        let msg = match ahead.pop_front() {
            Some(msg) => msg,
            None if closed => break,
            None => {
                let msg = tokio::select! {
                    msg = tokio::time::timeout(silence, rx.next()) => msg,
                    // The writer ended: the socket is gone.
                    _ = outbox.closed() => break,
                };
                match msg {
                    Ok(Some(Ok(msg))) => msg,
                    Ok(_) => break,
                    Err(_) => {
                        tracing::info!(
                            conn = conn.id,
                            "control connection silent for {silence:?}: closed"
                        );
                        break;
                    }
                }
            }
        };
        while !closed && ahead.len() < READ_AHEAD {
            match rx.next().now_or_never() {
                None => break,
                Some(Some(Ok(Message::Close(_)) | Err(_)) | None) => closed = true,
                Some(Some(Ok(next))) => ahead.push_back(next),
            }
        }
        // Some clients send their JSON in binary frames.
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => std::str::from_utf8(b).unwrap_or("\u{fffd}"),
            Message::Close(_) => break,
            _ => continue,
        };
        if let Some(reply) = model::handle_frame(&k.kms, &mut conn, text, closed).await {
            if outbox.send(reply).is_err() && !closed {
                break;
            }
        }
    }
    k.kms.lock().await.disconnected(&conn);
    tracing::debug!(conn = conn.id, "control connection closed");
    drop(conn);
    drop(outbox);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        let token = b"s3cret-token";
        assert!(token_matches(b"s3cret-token", token));
        for wrong in [
            &b"s3cret-tokeN"[..],
            b"x3cret-token",
            b"s3cret-toke",
            b"s3cret-token-",
            b"s3cret-token\0",
            b"",
        ] {
            assert!(!token_matches(wrong, token), "{wrong:?}");
        }
        assert!(!token_matches(b"a", b""));
    }

    #[test]
    fn origins_match_the_allow_list_only() {
        let allowed = vec!["https://App.example.com/".to_string(), " ".to_string()];
        assert!(origin_allowed(b"https://app.example.com", &allowed));
        for other in [
            &b"https://app.example.com.evil.test"[..],
            b"http://app.example.com",
            b"null",
            b"",
        ] {
            assert!(!origin_allowed(other, &allowed), "{other:?}");
        }
        assert!(!origin_allowed(b"http://localhost", &[]));
    }
}

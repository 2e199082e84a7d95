//! `--target sori`: clients join rooms through Sori's WebSocket signaling (docs/signaling.md).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Client, Setup, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for any one signaling reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The protocol closes sockets idle for 20 s; a ping every 5 s keeps them open.
const PING_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot connect to {url}: {why}")]
    Connect { url: String, why: String },
    #[error("the signaling socket closed: {0}")]
    Closed(String),
    #[error("no {0} from the server within {REPLY_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Client(#[from] crate::client::ClientError),
}

/// An access token for `name` in `room` (identity and name `name`; it joins, publishes and
/// subscribes), valid for six hours, signed with the API key `key` and its `secret` (HS256).
fn token(key: &str, secret: &str, room: &str, name: &str) -> Result<String, SignalError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({"iss": key, "sub": name, "name": name, "nbf": now.saturating_sub(10),
                        "exp": now + 6 * 3600, "video": {"room": room, "roomJoin": true}});
    let secret = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| SignalError::Refused(format!("API secret: {e}")))?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &secret)
        .map_err(|e| SignalError::Refused(format!("cannot sign a token: {e}")))
}

/// Joins `room` as `name`, makes the first SDP exchange, and starts the client. The returned
/// task carries later offers and answers and keeps the socket alive until `stop` turns true.
pub async fn join(
    url: &str,
    key: Option<&(String, String)>,
    room: &str,
    name: &str,
    mut setup: Setup,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Result<(Client, tokio::task::JoinHandle<()>), SignalError> {
    let (mut ws, _) = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| SignalError::Timeout("WebSocket handshake"))?
        .map_err(|e| SignalError::Connect {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    let mut join = json!({"type": "join", "v": 1, "room": room, "name": name, "mode": "sfu"});
    if let Some((key, secret)) = key {
        join["token"] = json!(token(key, secret, room, name)?);
    }
    send(&mut ws, join).await?;
    expect(&mut ws, "joined").await?;
    send(&mut ws, json!({"type": "offer", "sdp": setup.offer()?})).await?;
    // Server offers that cross ours are dropped: the server offers again after answering.
    let answer = expect(&mut ws, "answer").await?;
    let sdp = answer["sdp"]
        .as_str()
        .ok_or_else(|| SignalError::Refused("an answer without sdp".into()))?;
    setup.accept_answer(sdp)?;

    let (offers_tx, offers_rx) = mpsc::unbounded_channel();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    let client = setup.start(offers_rx, answers_tx, stop.clone(), shared);
    let relay = tokio::spawn(relay(ws, offers_tx, answers_rx, stop));
    Ok((client, relay))
}

async fn send(ws: &mut Ws, msg: Value) -> Result<(), SignalError> {
    ws.send(Message::text(msg.to_string()))
        .await
        .map_err(|e| SignalError::Closed(e.to_string()))
}

/// Reads messages until one of type `want`; an `error` message fails.
async fn expect(ws: &mut Ws, want: &'static str) -> Result<Value, SignalError> {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| SignalError::Timeout(want))?;
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(SignalError::Closed(e.to_string())),
            None => return Err(SignalError::Closed("end of stream".into())),
        };
        let Message::Text(text) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v["type"].as_str() {
            Some(t) if t == want => return Ok(v),
            Some("error") => {
                return Err(SignalError::Refused(format!(
                    "{}: {}",
                    v["code"].as_str().unwrap_or("?"),
                    v["message"].as_str().unwrap_or("")
                )))
            }
            _ => {}
        }
    }
}

async fn relay(
    mut ws: Ws,
    offers: mpsc::UnboundedSender<String>,
    mut answers: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    if v["type"] == "offer" {
                        if let Some(sdp) = v["sdp"].as_str() {
                            let _ = offers.send(sdp.to_string());
                        }
                    } else if v["type"] == "error" {
                        tracing::warn!("signaling error: {text}");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            answer = answers.recv() => {
                let Some(sdp) = answer else { return };
                if send(&mut ws, json!({"type": "answer", "sdp": sdp})).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if send(&mut ws, json!({"type": "ping"})).await.is_err() {
                    return;
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = send(&mut ws, json!({"type": "leave"})).await;
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    }
}

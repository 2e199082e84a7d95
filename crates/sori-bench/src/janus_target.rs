//! `--target janus`: clients join a Janus VideoRoom through Janus's WebSocket API (subprotocol
//! `janus-protocol`), for a side-by-side comparison on the same machine.
//!
//! Each client has its own WebSocket, session and plugin handle. A publisher creates the room
//! if it does not exist, joins as a publisher and publishes with its offer; a receiver lists
//! the room's publishers, joins as a subscriber to all of them, and answers Janus's offer.
//! Janus keeps publishing and subscribing on separate PeerConnections, so a participant that
//! does both (the meeting scenario) is not supported here.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Client, Setup, Shared};
use crate::sori_target::SignalError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Janus drops sessions after 60 s without a request.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(25);

/// The VideoRoom room number for a room name.
pub fn room_number(room: &str) -> u64 {
    // FNV-1a, kept below 2^31 so any Janus build takes it.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h & 0x7fff_ffff).max(1)
}

struct Janus {
    ws: Ws,
    next: u64,
    session: u64,
    handle: u64,
}

impl Janus {
    async fn connect(url: &str) -> Result<Janus, SignalError> {
        let connect_err = |why: String| SignalError::Connect {
            url: url.to_string(),
            why,
        };
        let mut req = url
            .into_client_request()
            .map_err(|e| connect_err(e.to_string()))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| SignalError::Timeout("WebSocket handshake"))?
            .map_err(|e| connect_err(e.to_string()))?;
        let mut j = Janus {
            ws,
            next: 1,
            session: 0,
            handle: 0,
        };
        let created = j.call(json!({"janus": "create"})).await?;
        j.session = id_of(&created)?;
        let attached = j
            .call(json!({"janus": "attach", "session_id": j.session, "plugin": "janus.plugin.videoroom"}))
            .await?;
        j.handle = id_of(&attached)?;
        Ok(j)
    }

    fn transaction(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    async fn send(&mut self, mut msg: Value) -> Result<String, SignalError> {
        let t = self.transaction();
        msg["transaction"] = json!(t);
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| SignalError::Closed(e.to_string()))?;
        Ok(t)
    }

    /// Sends a request and waits for its `success` or `event` (an `ack` is skipped).
    async fn call(&mut self, msg: Value) -> Result<Value, SignalError> {
        let t = self.send(msg).await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| SignalError::Timeout("Janus reply"))?;
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(SignalError::Closed(e.to_string())),
                None => return Err(SignalError::Closed("end of stream".into())),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if v["transaction"].as_str() != Some(t.as_str()) {
                continue;
            }
            match v["janus"].as_str() {
                Some("ack") => continue,
                Some("error") => return Err(SignalError::Refused(v["error"].to_string())),
                _ => {}
            }
            if let Some(code) = v["plugindata"]["data"]["error_code"].as_u64() {
                return Err(SignalError::Refused(format!(
                    "{code}: {}",
                    v["plugindata"]["data"]["error"].as_str().unwrap_or("")
                )));
            }
            return Ok(v);
        }
    }

    /// A VideoRoom request on this client's handle, with an optional JSEP.
    async fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<Value, SignalError> {
        let mut msg = json!({"janus": "message", "session_id": self.session, "handle_id": self.handle, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.call(msg).await
    }
}

fn id_of(v: &Value) -> Result<u64, SignalError> {
    v["data"]["id"]
        .as_u64()
        .ok_or_else(|| SignalError::Refused(format!("no id in {v}")))
}

fn jsep_sdp(v: &Value, kind: &str) -> Result<String, SignalError> {
    if v["jsep"]["type"].as_str() != Some(kind) {
        return Err(SignalError::Refused(format!(
            "expected a JSEP {kind} in {v}"
        )));
    }
    Ok(v["jsep"]["sdp"].as_str().unwrap_or_default().to_string())
}

/// Joins VideoRoom `room` (by [`room_number`]) as a publisher (if `publishes`) or as a
/// subscriber to every publisher in it, makes the first SDP exchange, and starts the client.
pub async fn join(
    url: &str,
    room: &str,
    name: &str,
    publishes: bool,
    mut setup: Setup,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Result<(Client, tokio::task::JoinHandle<()>), SignalError> {
    let mut j = Janus::connect(url).await?;
    let room = room_number(room);
    if publishes {
        let create = json!({"request": "create", "room": room, "publishers": 1000,
            "videocodec": "vp8", "audiocodec": "opus", "bitrate": 0, "notify_joining": false});
        match j.message(create, None).await {
            Ok(_) => {}
            // 427: the room exists already (an earlier publisher made it).
            Err(SignalError::Refused(e)) if e.starts_with("427") => {}
            Err(e) => return Err(e),
        }
        j.message(
            json!({"request": "join", "ptype": "publisher", "room": room, "display": name}),
            None,
        )
        .await?;
        let offer = setup.offer()?;
        let answer = j
            .message(
                json!({"request": "publish", "audiocodec": "opus", "videocodec": "vp8"}),
                Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
            )
            .await?;
        setup.accept_answer(&jsep_sdp(&answer, "answer")?)?;
    } else {
        let list = j
            .message(json!({"request": "listparticipants", "room": room}), None)
            .await?;
        let feeds: Vec<Value> = list["plugindata"]["data"]["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["publisher"].as_bool() == Some(true))
            .map(|p| json!({"feed": p["id"]}))
            .collect();
        if feeds.is_empty() {
            return Err(SignalError::Refused(format!(
                "no publishers in room {room}"
            )));
        }
        let attached = j
            .message(
                json!({"request": "join", "ptype": "subscriber", "room": room, "streams": feeds}),
                None,
            )
            .await?;
        let answer = setup.accept_offer(&jsep_sdp(&attached, "offer")?)?;
        j.message(
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
        )
        .await?;
    }
    let (offers_tx, offers_rx) = mpsc::unbounded_channel();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    let client = setup.start(offers_rx, answers_tx, stop.clone(), shared);
    let relay = tokio::spawn(relay(j, offers_tx, answers_rx, stop));
    Ok((client, relay))
}

/// Keeps the session alive, carries renegotiation offers from Janus and their answers, and
/// leaves when `stop` turns true.
async fn relay(
    mut j: Janus,
    offers: mpsc::UnboundedSender<String>,
    mut answers: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = j.ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    if v["jsep"]["type"] == "offer" {
                        if let Some(sdp) = v["jsep"]["sdp"].as_str() {
                            let _ = offers.send(sdp.to_string());
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            answer = answers.recv() => {
                let Some(sdp) = answer else { return };
                let msg = json!({"janus": "message", "session_id": j.session, "handle_id": j.handle,
                    "body": {"request": "start"}, "jsep": {"type": "answer", "sdp": sdp, "trickle": false}});
                if j.send(msg).await.is_err() {
                    return;
                }
            }
            _ = keepalive.tick() => {
                if j.send(json!({"janus": "keepalive", "session_id": j.session})).await.is_err() {
                    return;
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = j.send(json!({"janus": "destroy", "session_id": j.session})).await;
                    let _ = j.ws.close(None).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_numbers_are_stable_positive_and_small() {
        let a = room_number("bench-fanout-10-1");
        assert_eq!(a, room_number("bench-fanout-10-1"));
        assert_ne!(a, room_number("bench-fanout-10-2"));
        assert!((1..1 << 31).contains(&a));
        assert!(room_number("") >= 1);
    }
}

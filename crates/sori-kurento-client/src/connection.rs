//! The connection task: requests out in order, replies matched by id, events to the
//! participants they concern; reconnection with backoff when the media server goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sori_media::sori_sfu::RemoveReason;
use sori_media::PeerSignal;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{RemoteError, RemoteMedia, Room};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The signal channels of the participants, by endpoint id.
pub(crate) type Watchers =
    Arc<std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<PeerSignal>>>>;

type ReplyTx = oneshot::Sender<Result<Value, RemoteError>>;

/// A request for the connection task.
pub(crate) struct Outgoing {
    pub(crate) method: &'static str,
    pub(crate) params: Value,
    pub(crate) reply: ReplyTx,
}

/// What the connection task shares with the [`RemoteMedia`] handles.
pub(crate) struct Task {
    pub(crate) url: String,
    pub(crate) tls: Option<Connector>,
    pub(crate) rx: mpsc::UnboundedReceiver<Outgoing>,
    /// To hand out a [`RemoteMedia`] for a participant the media server dropped, without
    /// keeping the task alive.
    pub(crate) this: mpsc::WeakUnboundedSender<Outgoing>,
    pub(crate) watchers: Watchers,
    pub(crate) rooms: Arc<Mutex<HashMap<String, Room>>>,
}

/// One connection's state: requests awaiting their reply, and the session the media server
/// gave us.
#[derive(Default)]
struct Exchange {
    pending: HashMap<u64, ReplyTx>,
    next_id: u64,
    session: Option<String>,
}

/// How a connection ended.
enum Ended {
    /// Every [`RemoteMedia`] is gone: the task ends.
    Dropped,
    /// The media server went away: connect again.
    Lost,
}

impl Task {
    /// Runs until every [`RemoteMedia`] is dropped, starting with the connection `first`.
    pub(crate) async fn run(mut self, first: Ws) {
        // The query may hold an access token: logs show the rest.
        let shown = self.url.split('?').next().unwrap_or(&self.url).to_string();
        let mut ws = first;
        loop {
            let mut exchange = Exchange::default();
            if let Ended::Dropped = self.serve(ws, &mut exchange).await {
                return;
            }
            tracing::warn!(url = shown, "media server connection lost");
            self.lost(exchange).await;
            match self.reconnect(&shown).await {
                Some(next) => ws = next,
                None => return,
            }
        }
    }

    /// Connects again, waiting longer after each failure; meanwhile requests fail at once.
    /// `None` when every [`RemoteMedia`] is gone.
    async fn reconnect(&mut self, shown: &str) -> Option<Ws> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let connecting = tokio_tungstenite::connect_async_tls_with_config(
                &self.url,
                None,
                true,
                self.tls.clone(),
            );
            match connecting.await {
                Ok((ws, _)) => {
                    tracing::info!(url = shown, "media server connection restored");
                    return Some(ws);
                }
                Err(e) => {
                    tracing::warn!(url = shown, "media server unreachable: {e}");
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            out = self.rx.recv() => {
                                let out = out?;
                                let _ = out.reply.send(Err(RemoteError::unreachable(e.to_string())));
                            }
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Carries requests and replies over one connection until it ends.
    async fn serve(&mut self, ws: Ws, exchange: &mut Exchange) -> Ended {
        let (mut sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                out = self.rx.recv() => {
                    let Some(out) = out else {
                        let _ = sink.close().await;
                        return Ended::Dropped;
                    };
                    if !send(&mut sink, exchange, out).await {
                        return Ended::Lost;
                    }
                }
                frame = next_text(&mut stream) => {
                    let Some(text) = frame else { return Ended::Lost };
                    self.received(&text, exchange);
                }
            }
        }
    }

    /// A frame from the media server: an event, or the reply to one of our requests.
    fn received(&self, text: &str, exchange: &mut Exchange) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if v.get("method").and_then(Value::as_str) == Some("onEvent") {
            if let Some(ended) = event(&v["params"]["value"], &self.watchers) {
                // The media server dropped the participant's session: its endpoint goes too,
                // so that its next offer starts a new one.
                if let Some(tx) = self.this.upgrade() {
                    let media = RemoteMedia {
                        tx,
                        rooms: self.rooms.clone(),
                        watchers: self.watchers.clone(),
                    };
                    tokio::spawn(async move { media.leave(&ended).await });
                }
            }
            return;
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return;
        };
        let Some(reply) = exchange.pending.remove(&id) else {
            return;
        };
        if let Some(result) = v.get("result") {
            if let Some(s) = result.get("sessionId").and_then(Value::as_str) {
                exchange.session = Some(s.to_string());
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

    /// The connection is gone: pending requests fail, and every participant's media with the
    /// session: they are told, and the rooms forgotten.
    async fn lost(&self, exchange: Exchange) {
        for (_, reply) in exchange.pending {
            let _ = reply.send(Err(RemoteError::unreachable("connection lost")));
        }
        let lost: Vec<_> = self
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, tx) in lost {
            let _ = tx.send(PeerSignal::Removed(RemoveReason::Failed(
                "media server connection lost".into(),
            )));
        }
        self.rooms.lock().await.clear();
    }
}

/// Sends one request in our session; false when the connection is gone.
async fn send(sink: &mut SplitSink<Ws, Message>, exchange: &mut Exchange, out: Outgoing) -> bool {
    let Outgoing {
        method,
        mut params,
        reply,
    } = out;
    if let (Some(s), Value::Object(m)) = (&exchange.session, &mut params) {
        m.entry("sessionId").or_insert_with(|| json!(s));
    }
    let id = exchange.next_id;
    exchange.next_id += 1;
    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    if sink.send(Message::text(frame.to_string())).await.is_err() {
        let _ = reply.send(Err(RemoteError::unreachable("connection lost")));
        return false;
    }
    exchange.pending.insert(id, reply);
    true
}

/// The next text frame; `None` when the connection closed or failed.
async fn next_text(stream: &mut SplitStream<Ws>) -> Option<String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return Some(t.as_str().to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_their_participant_and_an_ended_session_is_reported() {
        let watchers: Watchers = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        watchers.lock().unwrap().insert("E".into(), tx);
        let offer = json!({"object": "E", "type": "RenegotiationNeeded",
                           "data": {"sdpOffer": "v=0"}});
        assert_eq!(event(&offer, &watchers), None);
        assert_eq!(rx.try_recv().unwrap(), PeerSignal::Offer("v=0".into()));
        let connecting = json!({"object": "E", "type": "ConnectionStateChanged",
                                "data": {"newState": "CONNECTING"}});
        assert_eq!(event(&connecting, &watchers), None);
        assert!(rx.try_recv().is_err());
        let ended = json!({"object": "E", "type": "MediaSessionTerminated", "data": {}});
        assert_eq!(event(&ended, &watchers), Some("E".into()));
        assert!(matches!(rx.try_recv().unwrap(), PeerSignal::Removed(_)));
        assert!(watchers.lock().unwrap().is_empty());
    }
}

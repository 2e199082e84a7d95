//! The connection task: requests out in order, replies matched by id, events to the
//! participants they concern; pings that find a dead connection, and a new connection that
//! resumes the media server's session.
//!
//! While there is no connection, requests wait for one (each until its caller's deadline).
//! A new connection first sends `connect{sessionId}`: accepted, the session's objects are all
//! still there and nothing else happens; refused (the media server restarted), every
//! participant's media is reported removed and the rooms are forgotten, before the waiting
//! requests go out.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sori_media::sori_sfu::{MediaKind, RemoveReason, TrackId};
use sori_media::PeerSignal;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{lock, RemoteError, RemoteMedia, Shared};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// The signal channels of the participants, by endpoint id.
pub(crate) type Watchers = std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<PeerSignal>>>;

type ReplyTx = oneshot::Sender<Result<Value, RemoteError>>;

/// A request for the connection task.
pub(crate) struct Outgoing {
    pub(crate) method: &'static str,
    pub(crate) params: Value,
    pub(crate) reply: ReplyTx,
}

/// The most requests that wait for a connection; beyond, new ones fail at once.
const MAX_WAITING: usize = 4096;

/// The first wait before connecting again; it doubles after each failure, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The id of the `connect` that resumes a session on a new connection.
const RESUME_ID: u64 = 0;

/// What the connection task shares with the [`RemoteMedia`] handles.
pub(crate) struct Task {
    pub(crate) url: String,
    pub(crate) tls: Option<Connector>,
    pub(crate) rx: mpsc::UnboundedReceiver<Outgoing>,
    /// To hand out a [`RemoteMedia`] for a participant the media server dropped, without
    /// keeping the task alive.
    pub(crate) this: mpsc::WeakUnboundedSender<Outgoing>,
    pub(crate) shared: Arc<Shared>,
}

/// One connection's state: requests awaiting their reply, and the session the media server
/// gave us.
struct Exchange {
    pending: HashMap<u64, ReplyTx>,
    next_id: u64,
    session: Option<String>,
}

/// How a connection ended.
enum Ended {
    /// Every [`RemoteMedia`] is gone: the task ends.
    Dropped,
    /// The media server went away, or stopped answering: connect again.
    Lost(String),
}

impl Task {
    /// Runs until every [`RemoteMedia`] is dropped, starting with the connection `first`.
    pub(crate) async fn run(mut self, first: Ws) {
        // The query may hold an access token: logs show the rest.
        let shown = self.url.split('?').next().unwrap_or(&self.url).to_string();
        let mut ws = first;
        let mut session = None;
        let mut waiting = VecDeque::new();
        loop {
            let mut exchange = Exchange {
                pending: HashMap::new(),
                next_id: RESUME_ID + 1,
                session: session.take(),
            };
            let (mut sink, mut stream) = ws.split();
            let ended = match self.resume(&mut sink, &mut stream, &mut exchange).await {
                Ok(()) => {
                    self.shared.connected.store(true, Ordering::SeqCst);
                    self.serve(&mut sink, &mut stream, &mut exchange, &mut waiting)
                        .await
                }
                Err(ended) => ended,
            };
            self.shared.connected.store(false, Ordering::SeqCst);
            // Requests in flight: whether the media server acted on them is unknown.
            for (_, reply) in exchange.pending.drain() {
                let _ = reply.send(Err(RemoteError::unreachable("connection lost")));
            }
            session = exchange.session;
            match ended {
                Ended::Dropped => return,
                Ended::Lost(why) => {
                    tracing::warn!(url = shown, "media server connection lost: {why}");
                }
            }
            match self.reconnect(&shown, &mut waiting).await {
                Some(next) => ws = next,
                None => return,
            }
        }
    }

    /// Connects again, waiting longer after each failure; meanwhile requests wait.
    /// `None` when every [`RemoteMedia`] is gone.
    async fn reconnect(&mut self, shown: &str, waiting: &mut VecDeque<Outgoing>) -> Option<Ws> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            let (url, tls) = (self.url.clone(), self.tls.clone());
            let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, tls);
            let limit = self.shared.options.connect_timeout;
            let attempt = self
                .hold(tokio::time::timeout(limit, connecting), waiting)
                .await?;
            match attempt {
                Ok(Ok((ws, _))) => {
                    tracing::info!(url = shown, "media server connection restored");
                    return Some(ws);
                }
                // Said once per outage; each further attempt in the debug log.
                Ok(Err(e)) if attempts == 0 => {
                    tracing::warn!(url = shown, "media server unreachable: {e}; trying again");
                }
                Err(_) if attempts == 0 => tracing::warn!(
                    url = shown,
                    "media server did not answer in {limit:?}; trying again"
                ),
                Ok(Err(e)) => tracing::debug!(url = shown, "media server unreachable: {e}"),
                Err(_) => tracing::debug!(url = shown, "media server did not answer"),
            }
            attempts += 1;
            self.hold(tokio::time::sleep(backoff), waiting).await?;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Awaits `fut` while requests arriving meanwhile wait in `waiting`. `None` when every
    /// [`RemoteMedia`] is gone.
    async fn hold<F: Future>(
        &mut self,
        fut: F,
        waiting: &mut VecDeque<Outgoing>,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                out = self.rx.recv() => wait_for_connection(waiting, out?),
            }
        }
    }

    /// On a new connection, takes the session back with `connect{sessionId}`. Refused, the
    /// media server no longer has our objects: everyone's media is reported lost and the
    /// session starts anew. An error when the connection fails meanwhile.
    async fn resume(
        &mut self,
        sink: &mut Sink,
        stream: &mut Stream,
        exchange: &mut Exchange,
    ) -> Result<(), Ended> {
        let Some(session) = exchange.session.clone() else {
            return Ok(());
        };
        let (reply, answered) = oneshot::channel();
        exchange.pending.insert(RESUME_ID, reply);
        let frame = json!({"jsonrpc": "2.0", "id": RESUME_ID, "method": "connect",
                           "params": {"sessionId": session}});
        let limit = self.shared.options.connect_timeout;
        send_frame(sink, Message::text(frame.to_string()), limit).await?;
        let reading = async {
            loop {
                match next_text(stream).await {
                    Some(text) => self.received(&text, exchange),
                    None => return Err(Ended::Lost("closed while resuming".into())),
                }
                if exchange.pending.is_empty() {
                    return Ok(());
                }
            }
        };
        // Requests made meanwhile wait in the channel.
        tokio::time::timeout(limit, reading)
            .await
            .map_err(|_| Ended::Lost("no answer to connect".into()))??;
        match answered.await {
            Ok(Ok(_)) => {
                tracing::info!("media server session resumed: the media went on");
            }
            Ok(Err(e)) => {
                tracing::warn!("media server session gone ({e}): making everyone's media again");
                exchange.session = None;
                self.media_lost();
            }
            Err(_) => return Err(Ended::Lost("resume not answered".into())),
        }
        Ok(())
    }

    /// Carries requests and replies over one connection until it ends, pinging the media
    /// server: silence past [`RemoteOptions::dead_after`](crate::RemoteOptions) ends it too.
    async fn serve(
        &mut self,
        sink: &mut Sink,
        stream: &mut Stream,
        exchange: &mut Exchange,
        waiting: &mut VecDeque<Outgoing>,
    ) -> Ended {
        let options = self.shared.options.clone();
        // The requests that waited for this connection, unless their callers gave up.
        while let Some(out) = waiting.pop_front() {
            if out.reply.is_closed() {
                continue;
            }
            if let Err(ended) = send(sink, exchange, out, options.dead_after).await {
                return ended;
            }
        }
        let mut ping = tokio::time::interval(options.keepalive);
        ping.tick().await;
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                out = self.rx.recv() => {
                    let Some(out) = out else {
                        let _ = sink.close().await;
                        return Ended::Dropped;
                    };
                    if let Err(ended) = send(sink, exchange, out, options.dead_after).await {
                        return ended;
                    }
                }
                frame = stream.next() => {
                    heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(t))) => self.received(t.as_str(), exchange),
                        Some(Ok(Message::Close(_))) | None => {
                            return Ended::Lost("closed by the media server".into());
                        }
                        Some(Err(e)) => return Ended::Lost(e.to_string()),
                        Some(Ok(_)) => {}
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= options.dead_after {
                        return Ended::Lost(format!(
                            "nothing heard for {:?}, pings included",
                            options.dead_after
                        ));
                    }
                    let ping = Message::Ping(Vec::new().into());
                    if let Err(ended) = send_frame(sink, ping, options.dead_after).await {
                        return ended;
                    }
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
            if let Some(ended) = event(&v["params"]["value"], &self.shared.watchers) {
                // The media server dropped the participant's session: its endpoint goes too,
                // so that its next offer starts a new one.
                if let Some(tx) = self.this.upgrade() {
                    let media = RemoteMedia {
                        tx,
                        shared: self.shared.clone(),
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
                kind: e["data"]["type"].as_str().map(str::to_string),
            }));
        }
    }

    /// The media server lost our session (it restarted): every participant is told its
    /// media was removed (the session server has the browser connect it again), and the
    /// rooms are forgotten.
    fn media_lost(&self) {
        self.shared.rooms.forget_all();
        let lost: Vec<_> = lock(&self.shared.watchers).drain().collect();
        for (_, tx) in lost {
            let _ = tx.send(PeerSignal::Removed(RemoveReason::Failed(
                "the media server restarted".into(),
            )));
        }
    }
}

/// A request made while there is no connection waits for one, unless too many wait already.
fn wait_for_connection(waiting: &mut VecDeque<Outgoing>, out: Outgoing) {
    if waiting.len() >= MAX_WAITING {
        waiting.retain(|o| !o.reply.is_closed());
    }
    if waiting.len() >= MAX_WAITING {
        let why = "no connection to the media server, and too many requests waiting for one";
        let _ = out.reply.send(Err(RemoteError::unreachable(why)));
        return;
    }
    waiting.push_back(out);
}

/// Sends one request in our session.
async fn send(
    sink: &mut Sink,
    exchange: &mut Exchange,
    out: Outgoing,
    limit: Duration,
) -> Result<(), Ended> {
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
    exchange.pending.insert(id, reply);
    send_frame(sink, Message::text(frame.to_string()), limit).await
}

/// Sends one frame; a connection that takes longer than `limit` to take it is dead.
async fn send_frame(sink: &mut Sink, frame: Message, limit: Duration) -> Result<(), Ended> {
    match tokio::time::timeout(limit, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::Lost(e.to_string())),
        Err(_) => Err(Ended::Lost("the connection took no more data".into())),
    }
}

/// The next text frame; `None` when the connection closed or failed.
async fn next_text(stream: &mut Stream) -> Option<String> {
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
        Some("TrackPublished") => PeerSignal::Published {
            track: track_id(data)?,
            kind: match data.get("mediaType").and_then(Value::as_str)? {
                "AUDIO" => MediaKind::Audio,
                "VIDEO" => MediaKind::Video,
                _ => return None,
            },
        },
        Some("TrackUnpublished") => PeerSignal::Unpublished {
            track: track_id(data)?,
        },
        Some("AudioLevels") => audio_levels(data)?,
        _ => return None,
    };
    let mut w = lock(watchers);
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

/// How loud an endpoint's audio was (`sum` of its packets' loudness, 0–127 each, over
/// `packets` packets, at least one).
fn audio_levels(data: &Value) -> Option<PeerSignal> {
    let sum = data.get("sum").and_then(Value::as_u64)?;
    let packets = data.get("packets").and_then(Value::as_u64)?;
    let packets = u32::try_from(packets).ok().filter(|&n| n > 0)?;
    (sum <= 127 * u64::from(packets)).then_some(PeerSignal::AudioLevels { sum, packets })
}

/// The track an event names (`trackId`: `track-<number>`, as the media server shows it).
fn track_id(data: &Value) -> Option<TrackId> {
    let id = data.get("trackId").and_then(Value::as_str)?;
    id.strip_prefix("track-")?.parse().ok().map(TrackId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_their_participant_and_an_ended_session_is_reported() {
        let watchers = Watchers::default();
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

    #[test]
    fn tracks_the_media_server_reports_reach_their_participant_and_malformed_ones_do_not() {
        let watchers = Watchers::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        watchers.lock().unwrap().insert("E".into(), tx);
        let ev = |ty: &str, data: Value| json!({"object": "E", "type": ty, "data": data});
        let published = ev(
            "TrackPublished",
            json!({"trackId": "track-281474976710657", "mediaType": "VIDEO"}),
        );
        assert_eq!(event(&published, &watchers), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            PeerSignal::Published {
                track: TrackId(281_474_976_710_657),
                kind: MediaKind::Video
            }
        );
        let gone = ev("TrackUnpublished", json!({"trackId": "track-7"}));
        event(&gone, &watchers);
        assert_eq!(
            rx.try_recv().unwrap(),
            PeerSignal::Unpublished { track: TrackId(7) }
        );
        for data in [
            json!({"trackId": "track-7", "mediaType": "DATA"}),
            json!({"trackId": "7", "mediaType": "AUDIO"}),
            json!({"trackId": "track--7", "mediaType": "AUDIO"}),
            json!({"trackId": "track-99999999999999999999", "mediaType": "AUDIO"}),
            json!({"trackId": 7, "mediaType": "AUDIO"}),
            json!({"mediaType": "AUDIO"}),
            json!({"trackId": "track-7"}),
        ] {
            assert_eq!(event(&ev("TrackPublished", data), &watchers), None);
        }
        assert!(
            rx.try_recv().is_err(),
            "a malformed track event was passed on"
        );
    }

    #[test]
    fn audio_levels_reach_their_participant_and_impossible_ones_do_not() {
        let watchers = Watchers::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        watchers.lock().unwrap().insert("E".into(), tx);
        let ev = |data: Value| json!({"object": "E", "type": "AudioLevels", "data": data});
        assert_eq!(
            event(&ev(json!({"sum": 291, "packets": 3})), &watchers),
            None
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            PeerSignal::AudioLevels {
                sum: 291,
                packets: 3
            }
        );
        for data in [
            json!({"sum": 382, "packets": 3}),
            json!({"sum": 0, "packets": 0}),
            json!({"sum": 1, "packets": 4_294_967_296u64}),
            json!({"sum": -1, "packets": 3}),
            json!({"sum": "9", "packets": 3}),
            json!({"packets": 3}),
            json!({"sum": 9}),
        ] {
            assert_eq!(event(&ev(data.clone()), &watchers), None);
            assert!(rx.try_recv().is_err(), "{data} was passed on");
        }
    }
}

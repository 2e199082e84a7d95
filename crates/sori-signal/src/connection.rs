//! One browser's `/ws` socket: the upgrade, the connection task with its read and write loops,
//! and what the connection knows of its participant (rights, rate limits, media peer).

mod join;
mod media;
mod messages;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::auth::Grants;
use crate::hub::Me;
use crate::limits::ParticipantRates;
use crate::outbox::{Frame, Outbox};
use crate::protocol::{self, ClientMessage, ErrorCode, ServerMessage, MAX_MESSAGE};
use crate::{http, ice_servers, PeerRef, Signal};

/// Interval of the server's WebSocket pings.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// How long a closing connection may take to send what was queued for it.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    State(signal): State<Signal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<axum::Extension<http::ConnSlot>>,
    headers: HeaderMap,
) -> Response {
    let ip = http::client_ip(peer, &headers, &signal.config.trusted_proxies);
    if !signal.origin_allowed(&headers) {
        signal.refusals.count("origin");
        tracing::warn!(client = %ip, "refused /ws from a page of another origin");
        return (
            StatusCode::FORBIDDEN,
            "pages of this origin may not connect; see allowed_origins\n",
        )
            .into_response();
    }
    // No frame larger than a message is buffered.
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            // The socket counts against the connection limits for as long as it is open.
            let _slot = slot;
            connection(socket, signal, ip).await
        })
}

/// One browser's socket, from upgrade to close.
async fn connection(socket: WebSocket, signal: Signal, ip: IpAddr) {
    let (out, outgoing, end) = Outbox::new(signal.config.limits.send_queue);
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(outgoing, sink));
    // TURN credentials are renewed at half their lifetime while the participant is here.
    let renew_every = signal
        .config
        .turn
        .as_ref()
        .map(|t| (t.ttl / 2).max(Duration::from_secs(1)));
    let mut renew = renew_every
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut conn = Connection {
        signal: signal.clone(),
        out,
        me: None,
        grants: Grants::anonymous(),
        media_peer: None,
        rates: ParticipantRates::new(&signal.config.limits, Instant::now()),
        ip,
    };
    loop {
        let next = tokio::select! {
            _ = end.wait() => break,
            _ = async { renew.as_mut().expect("guarded").tick().await }, if renew.is_some() => {
                if let Some(me) = &conn.me {
                    conn.send(ServerMessage::IceServers {
                        ice_servers: ice_servers(&signal.config, &me.id),
                    });
                }
                continue;
            }
            next = tokio::time::timeout(signal.config.idle_timeout, stream.next()) => next,
        };
        let message = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                tracing::debug!(client = %ip, "socket error: {e}");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::info!(
                    client = %ip,
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
    if let Some(reason) = end.reason() {
        tracing::info!(client = %ip, "closing a connection: {reason}");
        if reason.contains("too slowly") {
            signal.refusals.count("slow-reader");
        }
    }
    conn.leave().await;
    drop(conn);
    // What was queued (a refusal, `removed`) goes out unless the client does not read.
    if tokio::time::timeout(FLUSH_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Sends what is queued for the socket, and a ping every [`KEEPALIVE`], until the queue closes.
async fn write_loop(mut outgoing: mpsc::Receiver<Frame>, mut sink: SplitSink<WebSocket, Message>) {
    // WebSocket pings are answered by the browser itself, even in a throttled background
    // tab; their pongs keep the connection from looking idle.
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let frame = tokio::select! {
            message = outgoing.recv() => match message {
                Some(f) => Message::Text(f.as_ref().into()),
                None => break,
            },
            _ = keepalive.tick() => Message::Ping(Default::default()),
        };
        if sink.send(frame).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

struct Connection {
    signal: Signal,
    out: Outbox,
    me: Option<Me>,
    grants: Grants,
    media_peer: Option<PeerRef>,
    rates: ParticipantRates,
    ip: IpAddr,
}

/// Which of a participant's rate limits a message counts against.
#[derive(Clone, Copy)]
enum Budget {
    Chat,
    Offers,
    Mutes,
    Relays,
    Views,
}

impl Connection {
    fn send(&self, m: ServerMessage) {
        self.out.send(&m);
    }

    fn error(&self, code: ErrorCode, message: &str) {
        self.send(ServerMessage::Error {
            code,
            message: message.to_string(),
        });
    }

    /// Refuses the join with `code` and closes the socket once the refusal is out.
    fn refuse_join(&self, code: ErrorCode, message: &str) {
        self.signal.refusals.count(code.name());
        tracing::info!(client = %self.ip, "join refused: {message}");
        self.error(code, message);
        self.out.close(format!("join refused: {message}"));
    }

    /// Takes one unit of `budget`; false (and an occasional `rate-limited`) when spent.
    fn within(&mut self, budget: Budget) -> bool {
        let now = Instant::now();
        let (rate, what) = match budget {
            Budget::Chat => (&mut self.rates.chat, "chat messages"),
            Budget::Offers => (&mut self.rates.offers, "offers and answers"),
            Budget::Mutes => (&mut self.rates.mutes, "mute and moderation changes"),
            Budget::Relays => (&mut self.rates.relays, "relayed messages"),
            Budget::Views => (&mut self.rates.views, "view updates"),
        };
        if rate.allow(now) {
            return true;
        }
        self.signal.refusals.count("rate-limited");
        if self.rates.tell(now) {
            self.error(
                ErrorCode::RateLimited,
                &format!("too many {what}: some were dropped; slow down"),
            );
        }
        false
    }

    async fn leave(&mut self) {
        let gone = self.me.as_ref().map(|me| me.id.clone());
        if let Some(me) = self.me.take() {
            tracing::info!(room = me.room, id = me.id, client = %self.ip, "participant left");
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
        if let Some(id) = gone {
            self.revoke_turn(&id).await;
        }
    }

    /// The participant is gone: the embedded TURN server refuses its credentials from now on
    /// and closes its relays.
    async fn revoke_turn(&self, id: &str) {
        let config = &self.signal.config;
        if let (Some(monitor), Some(turn)) = (&config.turn_monitor, &config.turn) {
            monitor.revoke(id, SystemTime::now() + turn.ttl).await;
        }
    }
}

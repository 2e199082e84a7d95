//! One browser's `/ws` socket: the upgrade, the connection task with its read and write loops,
//! and what the connection knows of its participant (rights, rate limits, media peer).

mod join;
mod media;
mod messages;
mod resume;

pub(crate) use media::Forwarder;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Notify};

use crate::auth::Grants;
use crate::hub::Me;
use crate::limits::ParticipantRates;
use crate::outbox::{Out, Outbox};
use crate::protocol::{self, ClientMessage, ErrorCode, LeaveReason, ServerMessage, MAX_MESSAGE};
use crate::sessions::Parked;
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
            match signal.links.clone() {
                Some(links) => crate::bus::accept(signal, links, socket, ip).await,
                None => {
                    let (sink, stream) = socket.split();
                    connection(stream, sink, signal, ip, false).await
                }
            }
        })
}

/// How a connection's read loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The client sent `leave`, or closed the socket on purpose.
    Leave,
    /// The socket dropped (an error, no close frame, silence past the idle timeout, or a
    /// close frame with a code from 4000: "reconnecting").
    Dropped,
    /// A new socket resumed this participant.
    Kicked,
    /// The participant was ended from elsewhere (replaced, removed, too slow a reader).
    Ended,
}

/// The most frames read ahead while a message waits for the media server.
const EARLY_MAX: usize = 64;

/// A `ping` read while a message waits for the media server is answered after this long
/// (the web client takes a socket whose ping is unanswered for 0.6 s for dead).
const PONG_WITHIN: Duration = Duration::from_millis(300);

/// Whether a frame read is a `ping`.
fn is_ping<E>(frame: &Option<Result<Message, E>>) -> bool {
    let Some(Ok(Message::Text(t))) = frame else {
        return false;
    };
    matches!(
        protocol::parse_sequenced(t.as_str()),
        Ok((ClientMessage::Ping, _))
    )
}

/// Close codes with which a client says it means to come back (`resume`).
pub(crate) const RECONNECTING: std::ops::RangeInclusive<u16> = 4000..=4999;

/// Whether a socket that failed with `error` ends its participant: a frame the server refuses
/// to read does, and so does a connection its client's system closed in order without a close
/// frame (the browser crashed or was killed); one that broke (a reset, or silence: the network
/// failed) keeps it for a resume.
pub(crate) fn ends_participant(error: &str) -> bool {
    error.starts_with("Space limit exceeded")
        || error.starts_with("UTF-8 encoding error")
        || error.contains("without closing handshake")
}

/// One browser's socket, from upgrade to close: `stream` and `sink` are the socket's halves,
/// or a relay to a socket on another session server. `counted`: its first `join` or `resume`
/// was counted against the address's joins already (by the server that routed it).
pub(crate) async fn connection<S, K>(
    mut stream: S,
    sink: K,
    signal: Signal,
    ip: IpAddr,
    counted: bool,
) where
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin + Send + 'static,
    K: futures_util::Sink<Message> + Unpin + Send + 'static,
{
    // Counted until it ends, so that a shutdown can wait for its close frame to go out.
    let _open = signal.sockets.open();
    let (socket_tx, outgoing) = Outbox::socket(signal.config.limits.send_queue);
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
        out: Outbox::with_socket(socket_tx.clone()),
        socket_tx,
        me: None,
        grants: Grants::anonymous(),
        media_peer: None,
        media_fingerprint: None,
        rates: ParticipantRates::new(&signal.config.limits, Instant::now()),
        ip,
        secret: None,
        kick: Arc::default(),
        received: 0,
        handling: None,
        media_retry: media::Retry::default(),
        join_counted: counted,
    };
    // Frames read while a message waited for the media server, in order; `None` in it: the
    // stream ended.
    let mut early = VecDeque::new();
    // Pings in `early` answered already (the first ones: they are answered in order).
    let mut ponged_early = 0usize;
    let exit = loop {
        let end = conn.out.end();
        let kick = conn.kick.clone();
        let next = if let Some(frame) = early.pop_front() {
            if ponged_early > 0 && is_ping(&frame) {
                ponged_early -= 1;
                continue;
            }
            Ok(frame)
        } else {
            tokio::select! {
            _ = end.wait() => break Exit::Ended,
            _ = kick.notified() => break Exit::Kicked,
            _ = async { renew.as_mut().expect("guarded").tick().await }, if renew.is_some() => {
                if let Some(me) = &conn.me {
                    conn.send(ServerMessage::IceServers {
                        ice_servers: ice_servers(&signal.config, &me.id),
                    });
                }
                continue;
            }
            next = tokio::time::timeout(signal.config.idle_timeout, stream.next()) => next,
            }
        };
        let message = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                tracing::debug!(client = %ip, "socket error: {e}");
                break if ends_participant(&e.to_string()) {
                    Exit::Leave
                } else {
                    Exit::Dropped
                };
            }
            Ok(None) => break Exit::Dropped,
            Err(_) => {
                tracing::info!(
                    client = %ip,
                    "closing a socket silent for {:?}",
                    signal.config.idle_timeout
                );
                break Exit::Dropped;
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
            Message::Close(frame) => {
                let code = frame.map(|f| f.code);
                break if code.is_some_and(|c| RECONNECTING.contains(&c)) {
                    Exit::Dropped
                } else {
                    Exit::Leave
                };
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match protocol::parse_sequenced(&text) {
            Ok((ClientMessage::Leave, _)) => break Exit::Leave,
            Ok((m, seq)) => {
                // Only a joined participant's messages count (not `join` or `resume`).
                let seq = seq.filter(|_| {
                    !matches!(m, ClientMessage::Join { .. } | ClientMessage::Resume { .. })
                });
                if let Some(seq) = seq {
                    if conn.me.is_some() && seq <= conn.received {
                        // Sent again after a resume, but it had arrived.
                        continue;
                    }
                }
                // A resume on a newer socket takes the participant even while this one waits
                // for the media server (which may not answer for seconds): the message is
                // dropped unprocessed, and the client sends it again after the resume.
                let kick = conn.kick.clone();
                let out = conn.out.clone();
                conn.handling = seq.filter(|_| conn.me.is_some());
                let handled = {
                    let handling = conn.handle(m);
                    tokio::pin!(handling);
                    // Meanwhile what arrives waits its turn, but a `ping` still waiting after
                    // PONG_WITHIN is answered: a client that hears nothing back takes its
                    // socket for dead and resumes on a new one, which would cut short what
                    // the media server is doing for it. (Sooner, replies keep their order.)
                    let mut owed = None;
                    loop {
                        let reading =
                            !matches!(early.back(), Some(None)) && early.len() < EARLY_MAX;
                        let pong_due = async {
                            match owed {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = &mut handling => break true,
                            _ = kick.notified() => break false,
                            _ = pong_due => {
                                out.send_direct(&ServerMessage::Pong);
                                ponged_early += 1;
                                owed = None;
                            }
                            frame = stream.next(), if reading => {
                                if is_ping(&frame) && owed.is_none() {
                                    owed = Some(tokio::time::Instant::now() + PONG_WITHIN);
                                }
                                early.push_back(frame);
                            }
                        }
                    }
                };
                conn.handling = None;
                if !handled {
                    break Exit::Kicked;
                }
                if let Some(seq) = seq {
                    if conn.me.is_some() {
                        conn.received = conn.received.max(seq);
                        conn.out.set_received(conn.received);
                    }
                }
            }
            Err((code, message)) => conn.error(code, &message),
        }
    };
    let end = conn.out.end();
    if let Some(reason) = end.reason() {
        tracing::info!(client = %ip, "closing a connection: {reason}");
        if reason.contains("too slowly") {
            signal.refusals.count("slow-reader");
        }
    }
    let out = conn.out.clone();
    if exit == Exit::Kicked {
        out.send_direct(&ServerMessage::Error {
            code: ErrorCode::Replaced,
            message: "this participant was resumed on a newer connection".into(),
            re: None,
        });
    }
    conn.finish(exit).await;
    // The writer ends once nothing can queue for this socket any more.
    drop(conn);
    drop(out);
    // What was queued for it (a refusal, `removed`) goes out unless the client does not read.
    if tokio::time::timeout(FLUSH_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
        return;
    }
    if signal.draining() {
        // The close frame is out: wait for the client's, so that the process does not exit
        // with unread data on the connection (the system would reset it, and the client
        // could lose the close frame).
        let _ = tokio::time::timeout(FLUSH_GRACE, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Sends what is queued for the socket, and a ping every [`KEEPALIVE`], until the queue closes.
async fn write_loop<K: futures_util::Sink<Message> + Unpin>(
    mut outgoing: mpsc::Receiver<Out>,
    mut sink: K,
) {
    // WebSocket pings are answered by the browser itself, even in a throttled background
    // tab; their pongs keep the connection from looking idle.
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let frame = tokio::select! {
            message = outgoing.recv() => match message {
                Some(Out { close: Some(code), .. }) => {
                    let close = CloseFrame { code, reason: "the server is restarting".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
                Some(out) => Message::Text(out.text().into()),
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
    /// The participant's messages (a fresh outbox until a join or resume).
    out: Outbox,
    /// This socket's queue, which a resumed participant's outbox is attached to.
    socket_tx: mpsc::Sender<Out>,
    me: Option<Me>,
    grants: Grants,
    media_peer: Option<PeerRef>,
    /// The DTLS fingerprint of the browser's offers to `media_peer`: an offer with another
    /// one comes from a new peer connection, which gets new media.
    media_fingerprint: Option<String>,
    rates: ParticipantRates,
    ip: IpAddr,
    /// The participant's resume secret (none before a join, or when resuming is off).
    secret: Option<String>,
    /// Notified when a newer socket resumes this participant.
    kick: Arc<Notify>,
    /// The last client message number (`seq`) processed.
    received: u64,
    /// The number (`seq`) of the client message being handled, which an error names.
    handling: Option<u64>,
    /// Waits for an unreachable media server to answer again (see `Connection::media_offer`).
    media_retry: media::Retry,
    /// The first `join` or `resume` was counted against the address's joins already.
    join_counted: bool,
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
            re: self.handling,
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

    /// The socket is done: the participant leaves, or waits for a resume when its socket
    /// dropped (or a newer one takes it).
    async fn finish(&mut self, exit: Exit) {
        let out = self.out.clone();
        out.detach();
        let Some(me) = self.me.take() else {
            return;
        };
        let media_peer = self.media_peer.take();
        let end = out.end();
        let keep = matches!(exit, Exit::Dropped | Exit::Kicked) && end.reason().is_none();
        if let (true, Some(secret)) = (keep, self.secret.take()) {
            let parked = Parked {
                out,
                me,
                grants: std::mem::replace(&mut self.grants, Grants::anonymous()),
                media_peer,
                media_fingerprint: self.media_fingerprint.take(),
                received: self.received,
                ip: self.ip,
                restored: false,
            };
            match self.signal.sessions.park(&secret, parked) {
                Ok(ticket) => {
                    if exit == Exit::Dropped {
                        tracing::info!(client = %self.ip, "socket dropped: the participant waits {:?} for a resume", self.signal.sessions.grace);
                    }
                    wait_for_resume(&self.signal, ticket, end);
                }
                Err(p) => {
                    end_participant(&self.signal, self.ip, p.me, p.media_peer, LeaveReason::Left)
                        .await
                }
            }
            return;
        }
        if let Some(secret) = self.secret.take() {
            self.signal.sessions.forget(&secret);
        }
        end_participant(&self.signal, self.ip, me, media_peer, LeaveReason::Left).await;
    }
}

/// A parked participant (ticket `ticket`, end signal `ended`) leaves unless a resume takes it
/// back within the grace period.
pub(crate) fn wait_for_resume(
    signal: &Signal,
    ticket: crate::sessions::Ticket,
    ended: Arc<crate::outbox::End>,
) {
    let signal = signal.clone();
    tokio::spawn(async move {
        // Removed or replaced meanwhile: no need to wait.
        tokio::select! {
            _ = tokio::time::sleep(signal.sessions.grace) => {}
            _ = ended.wait() => {}
        }
        if let Some(p) = signal.sessions.expire(&ticket) {
            // A moderator or a newer join already took it out of its room.
            let ended = ended.reason().is_some();
            if !ended {
                tracing::info!(
                    room = p.me.room,
                    id = p.me.id,
                    "no resume within {:?}",
                    signal.sessions.grace
                );
                p.out.close("no resume within the grace period");
            }
            end_participant(&signal, p.ip, p.me, p.media_peer, LeaveReason::Timeout).await;
        }
    });
}

/// The participant leaves its room: the others hear of it, its recording tracks end, its
/// media connection closes and its TURN credentials stop working.
pub(crate) async fn end_participant(
    signal: &Signal,
    ip: IpAddr,
    me: Me,
    media_peer: Option<PeerRef>,
    reason: LeaveReason,
) {
    tracing::info!(room = me.room, id = me.id, client = %ip, ?reason, "participant left");
    let empty = {
        let mut hub = signal.hub();
        hub.leave(&me, reason, std::time::Instant::now());
        !hub.is_occupied(&me.room)
    };
    signal.recordings.left(&me.room, &me.id).await;
    if empty {
        // The last one out ends the room's recording.
        signal.recordings.stop(&me.room).await;
    }
    if let Some(peer) = media_peer {
        signal.media.leave(&peer).await;
    }
    revoke_turn(signal, &me.id).await;
}

/// The participant is gone: the embedded TURN server refuses its credentials from now on
/// and closes its relays.
pub(crate) async fn revoke_turn(signal: &Signal, id: &str) {
    let config = &signal.config;
    if let (Some(monitor), Some(turn)) = (&config.turn_monitor, &config.turn) {
        monitor.revoke(id, SystemTime::now() + turn.ttl).await;
    }
}

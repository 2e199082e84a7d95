//! Several session servers sharing rooms (`sori signal --redis`; `docs/scale-out.md`).
//!
//! A room lives on one session server, its *owner*: the hub that orders its chat, knows its
//! members, locks and bans, and drives its media. Any session server takes any socket: the
//! first message says where it goes (`join` names the room, whose owner the [`SessionBus`]
//! knows or makes this server; `resume` carries the room in its secret). A socket whose room
//! is elsewhere is *relayed*: its frames go to the owner over the bus, in order, and the
//! owner's frames for it come back the same way. The owner runs the ordinary connection for
//! it, with the relay in place of the socket, so that a relayed participant is one like any
//! other (rate limits, resume, moderation). HTTP requests about a room are forwarded the same
//! way ([`crate::forward`]).
//!
//! The owner stores each room's snapshot (at most every second, when it changed). A node that
//! stops answering (its process died: the bus says so within a second) ends what was relayed
//! through it: sockets here whose owner is gone are closed with 1012 (the client resumes, on
//! whichever server it reaches), participants here whose socket node is gone wait for a
//! resume as after any dropped socket. The first server a room's participant reaches after
//! its owner died takes the room over from its snapshot, every participant waiting there for
//! its resume. A server that stops on purpose hands its rooms over the same way, with a last
//! snapshot.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::protocol::{self, ClientMessage, ErrorCode, ServerMessage};
use crate::Signal;

/// A boxed future, for the bus's object-safe methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which session server a room lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This one (it was free, or its owner is gone: it is this server's now).
    Here,
    /// Another, by node id.
    Node(String),
}

/// What carries messages between session servers and knows where rooms live (Redis in
/// `sori`; a test may stand in its own).
pub trait SessionBus: Send + Sync + 'static {
    /// This server's node id.
    fn node(&self) -> &str;
    /// Where `room` lives, making it this server's if no live server has it.
    fn owner<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Owner, String>>;
    /// Renews this server's hold on `rooms`, each with its snapshot when it changed since
    /// the last call (else the one stored is kept); returns those another server holds now.
    fn keep(
        &self,
        rooms: Vec<(String, Option<Vec<u8>>)>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>>;
    /// The last snapshot of `room` stored by the server it lived on.
    fn load<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    /// Sends `message` to node `to`; `Ok(false)` when nothing there listens (it is gone).
    fn publish<'a>(&'a self, to: &'a str, message: Vec<u8>) -> BoxFuture<'a, Result<bool, String>>;
    /// Whether node `id` is alive.
    fn alive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool>;
    /// This server leaves the bus for good (it stops): from now on the others find it gone.
    fn leave(&self) -> BoxFuture<'_, ()>;
    /// The session servers alive now, this one included.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
}

/// What the bus delivers to this server.
#[derive(Debug)]
pub enum Incoming {
    /// A message another node published to this one.
    Message(Vec<u8>),
    /// Messages may have been lost (the bus's connection dropped): everything relayed ends.
    Reset,
}

/// One message between two session servers.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k", rename_all = "kebab-case")]
enum Envelope {
    /// To the owner: a socket on node `from` (its number there `c`) has a participant here
    /// (its first message counted against the address's joins there).
    Open { from: String, c: u64, ip: IpAddr },
    /// To the owner: a text frame from that socket.
    In { from: String, c: u64, t: String },
    /// To the owner: the socket ended (`leave`: on purpose; else it dropped).
    End { from: String, c: u64, leave: bool },
    /// To the socket's node: a frame for socket `c`.
    Out { c: u64, t: String },
    /// To the socket's node: close socket `c` (with `code`; none: a bare close).
    Close { c: u64, code: Option<u16> },
    /// To a room's server: an HTTP request about the room (see [`crate::forward`]).
    Http {
        from: String,
        id: u64,
        request: crate::forward::Sent,
    },
    /// Back to the server that forwarded request `id`: its response.
    Answer {
        id: u64,
        answer: crate::forward::Answer,
    },
}

/// Frames a relayed socket here waits for, at most (past it the socket is too slow a reader:
/// closed, its participant waits for a resume).
const SOCKET_QUEUE: usize = 1024;
/// Frames a relayed connection here has not read yet, at most (the connection reads them at
/// once, but for the time a message waits for the media server).
const HOSTED_QUEUE: usize = 256;
/// How often the nodes relayed to and from are checked.
const WATCH: Duration = Duration::from_millis(500);
/// How often this server renews its hold on its rooms.
const KEEP: Duration = Duration::from_secs(1);
/// Close code of a relayed socket whose owner is gone: the client resumes.
const GONE: u16 = 1012;
/// Close code of the sockets of a session server that hands its rooms over as it stops: in
/// the range with which a client says it comes back (the client echoes it), so that its
/// participants wait for their resume instead of leaving.
pub(crate) const HANDED_OVER: u16 = 4012;
/// WebSocket pings to a relayed socket (the owner's own pings are not relayed).
const KEEPALIVE: Duration = Duration::from_secs(5);

/// A frame for a relayed socket here.
enum ToSocket {
    Text(String),
    Close(Option<u16>),
}

/// A connection here whose socket is on another node, fed from the bus.
type Feed = mpsc::Sender<Result<Message, axum::Error>>;

/// This server's side of the bus.
pub(crate) struct Links {
    bus: Arc<dyn SessionBus>,
    next: AtomicU64,
    /// Sockets here whose participant lives on another node: number → (that node, queue).
    sockets: Mutex<HashMap<u64, (String, mpsc::Sender<ToSocket>)>>,
    /// Connections here whose socket is on another node: (that node, its number) → feed.
    hosted: Mutex<HashMap<(String, u64), Feed>>,
    /// A digest of each room's last snapshot stored.
    stored: Mutex<HashMap<String, u64>>,
    /// Held while rooms are renewed: the last renewal (a hand-over's) is not followed by an
    /// older one.
    keeping: tokio::sync::Mutex<()>,
    /// Set once this server handed its rooms over: it renews nothing more.
    left: std::sync::atomic::AtomicBool,
    /// Held while a room is restored.
    adopting: tokio::sync::Mutex<()>,
    /// Requests forwarded to other servers, waiting for their answer.
    pending: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<crate::forward::Answer>>>,
    /// This server's routes, which answer forwarded requests.
    pub(crate) router: std::sync::OnceLock<axum::Router>,
}

/// A resume secret for a participant of `room`: the room (base64url), `~`, the random part. A
/// resume reaching any session server goes to the room's.
pub(crate) fn secret_for(room: &str, random: &str) -> String {
    use base64::Engine;
    let room = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(room);
    format!("{room}~{random}")
}

/// The room a resume secret names (`None`: not one of [`secret_for`]).
fn room_of(secret: &str) -> Option<String> {
    use base64::Engine;
    let (room, _) = secret.split_once('~')?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(room)
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl Links {
    pub(crate) fn new(bus: Arc<dyn SessionBus>) -> Self {
        Links {
            bus,
            next: AtomicU64::new(1),
            sockets: Mutex::default(),
            hosted: Mutex::default(),
            stored: Mutex::default(),
            keeping: tokio::sync::Mutex::new(()),
            left: std::sync::atomic::AtomicBool::new(false),
            adopting: tokio::sync::Mutex::new(()),
            pending: Mutex::default(),
            router: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn node(&self) -> &str {
        self.bus.node()
    }

    /// Relayed sockets here and relayed connections here, for `/metrics`.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (lock(&self.sockets).len(), lock(&self.hosted).len())
    }

    async fn send(&self, to: &str, e: &Envelope) -> bool {
        let bytes = serde_json::to_vec(e).expect("envelopes serialize");
        match self.bus.publish(to, bytes).await {
            Ok(delivered) => delivered,
            Err(why) => {
                tracing::warn!(node = to, "session bus: {why}");
                false
            }
        }
    }

    /// Where the socket whose first message is `first` goes.
    async fn route(&self, signal: &Signal, first: &str) -> Result<Owner, String> {
        let (room, resume) = match protocol::parse_sequenced(first) {
            Ok((ClientMessage::Join { room, .. }, _)) => (room, false),
            Ok((ClientMessage::Resume { secret, .. }, _)) => match room_of(&secret) {
                Some(room) => (room, true),
                None => return Ok(Owner::Here),
            },
            _ => return Ok(Owner::Here),
        };
        match self.locate(signal, &room).await {
            Ok(o) => Ok(o),
            // Redis away: a resume waits for it (its participant may be on another server:
            // the client tries again); a join is served here, the room claimed for this server
            // once Redis is back (another server doing the same for the same room meanwhile
            // splits it until then: see docs/scale-out.md).
            Err(why) if resume => Err(why),
            Err(why) => {
                tracing::warn!(
                    room,
                    "cannot ask where the room lives ({why}): serving it here"
                );
                Ok(Owner::Here)
            }
        }
    }

    /// Where `room` lives, taking it (and its snapshot) for this server when nobody holds it;
    /// here while Redis cannot say.
    pub(crate) async fn place(&self, signal: &Signal, room: &str) -> Owner {
        self.locate(signal, room).await.unwrap_or_else(|why| {
            tracing::warn!(
                room,
                "cannot ask where the room lives ({why}): answering here"
            );
            Owner::Here
        })
    }

    /// Where `room` lives, taking it (and its snapshot) for this server when nobody holds it;
    /// an error when Redis cannot say and the room is not here.
    async fn locate(&self, signal: &Signal, room: &str) -> Result<Owner, String> {
        match self.bus.owner(room).await {
            Ok(Owner::Here) => {
                self.adopt(signal, room).await;
                Ok(Owner::Here)
            }
            Ok(o) => Ok(o),
            Err(_) if signal.hub().has_room(room) => Ok(Owner::Here),
            Err(why) => Err(why),
        }
    }

    /// Sends `request` to session server `node`; its answer (`None`: none within
    /// [`crate::forward::WITHIN`]).
    pub(crate) async fn request(
        &self,
        node: &str,
        request: crate::forward::Sent,
    ) -> Option<crate::forward::Answer> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let e = Envelope::Http {
            from: self.node().to_string(),
            id,
            request,
        };
        let answer = if self.send(node, &e).await {
            tokio::time::timeout(crate::forward::WITHIN, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(&self.pending).remove(&id);
        answer
    }

    /// The other session servers alive now.
    pub(crate) async fn others(&self) -> Vec<String> {
        match self.bus.nodes().await {
            Ok(nodes) => nodes.into_iter().filter(|n| n != self.node()).collect(),
            Err(why) => {
                tracing::warn!("cannot list the session servers: {why}");
                Vec::new()
            }
        }
    }

    /// Room `room` is this server's now: if it lived on a server that is gone, it is
    /// restored from that server's last snapshot, its participants waiting for their resume.
    async fn adopt(&self, signal: &Signal, room: &str) {
        // One at a time: a resume that finds the room open finds its participants waiting.
        let _adopting = self.adopting.lock().await;
        if signal.hub().has_room(room) {
            return;
        }
        let snapshot = match self.bus.load(room).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(why) => {
                tracing::warn!(room, "cannot read the room's snapshot: {why}");
                return;
            }
        };
        let snapshot: crate::hub::RoomSnapshot = match serde_json::from_slice(&snapshot) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(room, "a snapshot of the room that does not read: {e}");
                return;
            }
        };
        let restored = signal
            .hub()
            .restore(room, snapshot, std::time::Instant::now());
        if restored.is_empty() {
            return;
        }
        tracing::info!(
            room,
            participants = restored.len(),
            "room taken over from a session server that is gone: its participants wait for their resume"
        );
        for r in restored {
            let end = r.out.end();
            let identity = r.grants.identity.clone();
            let parked = crate::sessions::Parked {
                received: r.out.received(),
                out: r.out,
                me: r.me,
                grants: r.grants,
                media_peer: None,
                media_fingerprint: None,
                ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
                restored: true,
            };
            let ticket = signal.sessions.restore(r.resume_key, identity, parked);
            crate::connection::wait_for_resume(signal, ticket, end);
        }
    }

    /// The rooms held here, each with its snapshot when it changed since it was last stored.
    fn snapshots(&self, signal: &Signal) -> Vec<(String, Option<Vec<u8>>)> {
        use std::hash::{Hash, Hasher};
        // Taken under the hub's lock, serialised after it.
        let taken: Vec<(String, Option<crate::hub::RoomSnapshot>)> = {
            let hub = signal.hub();
            hub.room_names()
                .into_iter()
                .map(|name| {
                    let s = hub.snapshot(&name);
                    (name, s)
                })
                .collect()
        };
        let mut stored = lock(&self.stored);
        stored.retain(|name, _| taken.iter().any(|(n, _)| n == name));
        taken
            .into_iter()
            .map(|(name, snapshot)| {
                let bytes = snapshot.and_then(|s| serde_json::to_vec(&s).ok());
                let changed = bytes.filter(|b| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    b.hash(&mut h);
                    stored.insert(name.clone(), h.finish()) != Some(h.finish())
                });
                (name, changed)
            })
            .collect()
    }

    /// Hands one incoming message to its socket or connection.
    fn deliver(self: &Arc<Self>, signal: &Signal, bytes: &[u8]) {
        let envelope: Envelope = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("session bus: a message that is not one ({e}): dropped");
                return;
            }
        };
        match envelope {
            Envelope::Open { from, c, ip } => self.host(signal, from, c, ip),
            Envelope::In { from, c, t } => {
                let key = (from, c);
                let mut hosted = lock(&self.hosted);
                let Some(feed) = hosted.get(&key) else { return };
                if feed.try_send(Ok(Message::Text(t.into()))).is_err() {
                    // More than the connection could read: it ends as a dropped socket.
                    hosted.remove(&key);
                    drop(hosted);
                    let links = self.clone();
                    tokio::spawn(async move {
                        let close = Envelope::Close {
                            c: key.1,
                            code: Some(GONE),
                        };
                        links.send(&key.0, &close).await;
                    });
                }
            }
            Envelope::End { from, c, leave } => {
                if let Some(feed) = lock(&self.hosted).remove(&(from, c)) {
                    if leave {
                        let frame = CloseFrame {
                            code: 1000,
                            reason: "".into(),
                        };
                        let _ = feed.try_send(Ok(Message::Close(Some(frame))));
                    }
                }
            }
            Envelope::Http { from, id, request } => {
                let Some(router) = self.router.get().cloned() else {
                    return;
                };
                let links = self.clone();
                tokio::spawn(async move {
                    let answer = crate::forward::answer(router, request).await;
                    links.send(&from, &Envelope::Answer { id, answer }).await;
                });
            }
            Envelope::Answer { id, answer } => {
                if let Some(waiting) = lock(&self.pending).remove(&id) {
                    let _ = waiting.send(answer);
                }
            }
            Envelope::Out { c, t } => self.to_socket(c, ToSocket::Text(t)),
            Envelope::Close { c, code } => self.to_socket(c, ToSocket::Close(code)),
        }
    }

    fn to_socket(&self, c: u64, frame: ToSocket) {
        let mut sockets = lock(&self.sockets);
        let Some((_, queue)) = sockets.get(&c) else {
            return;
        };
        if queue.try_send(frame).is_err() {
            // Too slow a reader: its socket closes and the client resumes.
            sockets.remove(&c);
        }
    }

    /// Runs a connection here for socket `c` of node `from`.
    fn host(self: &Arc<Self>, signal: &Signal, from: String, c: u64, ip: IpAddr) {
        let (feed, mut fed) = mpsc::channel(HOSTED_QUEUE);
        lock(&self.hosted).insert((from.clone(), c), feed);
        let stream = futures_util::stream::poll_fn(move |cx| fed.poll_recv(cx));
        let links = self.clone();
        let to = from.clone();
        let sink = Box::pin(futures_util::sink::unfold(
            (links, to),
            move |(links, to), m: Message| async move {
                let e = match m {
                    Message::Text(t) => Envelope::Out {
                        c,
                        t: t.to_string(),
                    },
                    Message::Close(f) => Envelope::Close {
                        c,
                        code: f.map(|f| f.code),
                    },
                    _ => return Ok((links, to)),
                };
                if links.send(&to, &e).await {
                    Ok((links, to))
                } else {
                    Err(())
                }
            },
        ));
        let links = self.clone();
        let signal = signal.clone();
        tokio::spawn(async move {
            crate::connection::connection(stream, sink, signal, ip, true).await;
            lock(&links.hosted).remove(&(from.clone(), c));
            // Whatever the connection sent last, the socket there closes now.
            links.send(&from, &Envelope::Close { c, code: None }).await;
        });
    }

    /// Ends what was relayed through nodes that are gone, every [`WATCH`].
    async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH);
        loop {
            tick.tick().await;
            let mut nodes: Vec<String> = lock(&self.sockets)
                .values()
                .map(|(n, _)| n.clone())
                .chain(lock(&self.hosted).keys().map(|(n, _)| n.clone()))
                .collect();
            nodes.sort();
            nodes.dedup();
            for node in nodes {
                if self.bus.alive(&node).await {
                    continue;
                }
                tracing::warn!(
                    node,
                    "session node gone: ending what was relayed through it"
                );
                self.cut(Some(&node));
            }
        }
    }

    /// This server stops: its rooms' snapshots are stored as they are now, it leaves the bus
    /// (the others find it gone at once, and take its rooms over as its participants
    /// resume), and the sockets it relays to others are closed for their clients to resume.
    /// Its own sockets are closed with [`HANDED_OVER`] next.
    pub(crate) async fn hand_over(&self, signal: &Signal) {
        {
            let _keeping = self.keeping.lock().await;
            self.left.store(true, Ordering::SeqCst);
            lock(&self.stored).clear();
            let rooms = self.snapshots(signal);
            let n = rooms.len();
            match self.bus.keep(rooms).await {
                Ok(_) => {
                    tracing::info!(rooms = n, "rooms handed over to the other session servers")
                }
                Err(why) => tracing::warn!("rooms not handed over: {why}"),
            }
        }
        self.bus.leave().await;
        self.cut(None);
    }

    /// Ends what is relayed through `node` (`None`: through any node).
    fn cut(&self, node: Option<&str>) {
        let through = |n: &String| node.is_none_or(|node| node == n);
        lock(&self.sockets).retain(|_, (n, _)| !through(n));
        lock(&self.hosted).retain(|(n, _), _| !through(n));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the bus's tasks: incoming messages, the watch of other nodes, the renewal of this
/// server's rooms.
pub(crate) fn start(signal: &Signal, links: &Arc<Links>, mut incoming: mpsc::Receiver<Incoming>) {
    let (s, l) = (signal.clone(), links.clone());
    tokio::spawn(async move {
        while let Some(i) = incoming.recv().await {
            match i {
                Incoming::Message(bytes) => l.deliver(&s, &bytes),
                Incoming::Reset => {
                    tracing::warn!("session bus reconnected: ending what was relayed");
                    l.cut(None);
                }
            }
        }
    });
    tokio::spawn(links.clone().watch());
    let (s, l) = (signal.clone(), links.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEP);
        loop {
            tick.tick().await;
            let _keeping = l.keeping.lock().await;
            if l.left.load(Ordering::SeqCst) {
                return;
            }
            let rooms = l.snapshots(&s);
            match l.bus.keep(rooms).await {
                Ok(lost) if !lost.is_empty() => tracing::warn!(
                    ?lost,
                    "rooms of this session server are held by another one (a Redis that forgot?)"
                ),
                Ok(_) => {}
                Err(why) => {
                    tracing::debug!("session bus: cannot renew the rooms: {why}");
                    // Their snapshots are stored again at the next renewal.
                    lock(&l.stored).clear();
                }
            }
        }
    });
}

/// A new socket on a server with a bus: to this server's connection, or relayed to the owner
/// of its room.
pub(crate) async fn accept(signal: Signal, links: Arc<Links>, socket: WebSocket, ip: IpAddr) {
    let (sink, mut stream) = socket.split();
    // The first text frame says where the socket goes.
    let first = loop {
        match tokio::time::timeout(signal.config.idle_timeout, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => break t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            // Anything else is for the connection to answer, as it does without a bus.
            Ok(Some(frame)) => {
                let early = futures_util::stream::iter([frame]).chain(stream);
                return crate::connection::connection(early, sink, signal, ip, false).await;
            }
            Ok(None) | Err(_) => return,
        }
    };
    // A join or resume counts against the address's joins before anything is asked of Redis
    // (where the room lives, claiming it): an address cannot make this server write to Redis
    // faster than it may join.
    let entering = matches!(
        protocol::parse_sequenced(&first),
        Ok((ClientMessage::Join { .. } | ClientMessage::Resume { .. }, _))
    );
    if entering && !signal.allow_join(ip) {
        signal.refusals.count(ErrorCode::RateLimited.name());
        let refusal = ServerMessage::Error {
            code: ErrorCode::RateLimited,
            message: "too many joins from your address: wait a moment and try again".into(),
            re: None,
        };
        let mut sink = sink;
        let text = crate::outbox::frame(&refusal).to_string();
        let _ = sink.send(Message::Text(text.into())).await;
        let _ = sink.close().await;
        return;
    }
    match links.route(&signal, &first).await {
        Ok(Owner::Here) => {
            let first = Ok(Message::Text(first.into()));
            let early = futures_util::stream::iter([first]).chain(stream);
            crate::connection::connection(early, sink, signal, ip, entering).await
        }
        Ok(Owner::Node(node)) => relay(&signal, &links, node, first, stream, sink, ip).await,
        Err(why) => {
            signal.refusals.count(ErrorCode::ShuttingDown.name());
            tracing::info!(client = %ip, "resume put off: cannot ask where its room lives ({why})");
            let refusal = ServerMessage::Error {
                code: ErrorCode::ShuttingDown,
                message:
                    "the room's session server cannot be found just now: try again in a moment"
                        .into(),
                re: None,
            };
            let mut sink = sink;
            let text = crate::outbox::frame(&refusal).to_string();
            let _ = sink.send(Message::Text(text.into())).await;
            let frame = CloseFrame {
                code: GONE,
                reason: "try again".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    }
}

/// Relays a socket here to its participant's connection on `node`.
async fn relay(
    signal: &Signal,
    links: &Arc<Links>,
    node: String,
    first: String,
    mut stream: SplitStream<WebSocket>,
    mut sink: SplitSink<WebSocket, Message>,
    ip: IpAddr,
) {
    let _open = signal.sockets.open();
    let c = links.next.fetch_add(1, Ordering::Relaxed);
    let (queue, mut frames) = mpsc::channel(SOCKET_QUEUE);
    lock(&links.sockets).insert(c, (node.clone(), queue));
    let from = links.node().to_string();
    tracing::debug!(client = %ip, node, "socket relayed to the room's session server");
    let opened = links
        .send(
            &node,
            &Envelope::Open {
                from: from.clone(),
                c,
                ip,
            },
        )
        .await
        && links
            .send(
                &node,
                &Envelope::In {
                    from: from.clone(),
                    c,
                    t: first,
                },
            )
            .await;
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    // What the owner is told when the socket ends (`None`: nothing, it ended it).
    let end: Option<bool> = if !opened {
        None
    } else {
        loop {
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(ToSocket::Text(t)) => {
                        if sink.send(Message::Text(t.into())).await.is_err() {
                            break Some(false);
                        }
                    }
                    Some(ToSocket::Close(code)) => {
                        let frame = code.map(|code| CloseFrame { code, reason: "".into() });
                        let _ = sink.send(Message::Close(frame)).await;
                        break None;
                    }
                    // The owner is gone, or this socket read too slowly.
                    None => break Some(false),
                },
                frame = stream.next() => {
                    let e = match frame {
                        Some(Ok(Message::Text(t))) => Envelope::In { from: from.clone(), c, t: t.to_string() },
                        Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                            Ok(t) => Envelope::In { from: from.clone(), c, t },
                            Err(_) => continue,
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(f))) => {
                            let reconnecting = f.is_some_and(|f| crate::connection::RECONNECTING.contains(&f.code));
                            break Some(!reconnecting);
                        }
                        Some(Err(e)) => break Some(crate::connection::ends_participant(&e.to_string())),
                        None => break Some(false),
                    };
                    if !links.send(&node, &e).await {
                        break Some(false);
                    }
                }
                _ = keepalive.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break Some(false);
                    }
                }
            }
        }
    };
    let owned = lock(&links.sockets).remove(&c).is_some();
    if let Some(leave) = end {
        links.send(&node, &Envelope::End { from, c, leave }).await;
        if !owned || !leave {
            // The owner is gone (or the socket read too slowly): the client resumes.
            let frame = CloseFrame {
                code: GONE,
                reason: "reconnect".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let all = [
            Envelope::Open {
                from: "a".into(),
                c: 1,
                ip: "127.0.0.1".parse().unwrap(),
            },
            Envelope::In {
                from: "a".into(),
                c: 1,
                t: "{\"type\":\"ping\"}".into(),
            },
            Envelope::End {
                from: "a".into(),
                c: 1,
                leave: true,
            },
            Envelope::Out {
                c: 2,
                t: "x".into(),
            },
            Envelope::Close { c: 2, code: None },
        ];
        for e in all {
            let bytes = serde_json::to_vec(&e).unwrap();
            assert_eq!(serde_json::from_slice::<Envelope>(&bytes).unwrap(), e);
        }
    }
}

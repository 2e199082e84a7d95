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
//!
//! **Access control** ([`auth`], `docs/security.md`): with API keys, a join carries an access
//! token (LiveKit's claim layout); its grants decide what the participant may publish (the SDP
//! is restricted before the media server sees it), receive, say and moderate. A moderator's
//! mute is applied in the media core, below the client's reach. **Limits** sit where input
//! arrives: connection caps and a request-head deadline in [`http`], rate limits per participant
//! and per address, and a bounded queue per socket whose messages are serialised once per
//! broadcast and shared.

#![forbid(unsafe_code)]

pub mod auth;
mod backend;
pub mod http;
mod hub;
mod limits;
pub mod metrics;
mod outbox;
pub mod protocol;
mod recording;
mod roles;
mod sdp;
mod web;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use backend::{BackendError, BackendJoined, MediaBackend, PeerRef};
use futures_util::{SinkExt, StreamExt};
use sori_net::sori_sfu::{MediaKind, RemoveReason};
use sori_net::PeerSignal;
use tokio::sync::mpsc;

use auth::{Grants, Keys};
pub use hub::Hub;
use hub::{JoinOutcome, Joining, Me, Moderate};
use limits::ParticipantRates;
pub use limits::{Limits, Rate};
use outbox::Outbox;
use protocol::{
    ClientMessage, ErrorCode, IceServer, RoomMode, ServerMessage, TrackRole, MAX_MESSAGE,
};

/// Interval of the server's WebSocket pings.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// How long a closing connection may take to send what was queued for it.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

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
    /// Recordings one room may start in an hour (0: any number); past it `record` is refused
    /// with `rate-limited`, and no folder is made.
    pub recording_starts_per_hour: u32,
    /// Bytes the recordings directory may hold: once it does, `record` is refused with
    /// `server-full` (`None`: no quota). Checked when a recording starts.
    pub recordings_quota: Option<u64>,
    /// API keys access tokens are signed with; none: nobody has a token.
    pub keys: Keys,
    /// Joins without a token are accepted (a server without keys, or `--dev`).
    pub anonymous: bool,
    /// What one client can make the server do.
    pub limits: Limits,
    /// Web origins whose pages may open `/ws` besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Bearer token that opens `/metrics` to clients not on loopback (`None`: loopback only).
    pub metrics_token: Option<String>,
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
            recording_starts_per_hour: 20,
            recordings_quota: Some(10 << 30),
            keys: Keys::default(),
            anonymous: true,
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            metrics_token: None,
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

/// Counts of what the server refused, by error code, for `/metrics`.
#[derive(Default)]
pub(crate) struct Refusals(Mutex<BTreeMap<&'static str, u64>>);

impl Refusals {
    fn count(&self, what: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// The session server: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Signal {
    hub: Arc<Mutex<Hub>>,
    media: MediaBackend,
    config: Arc<SignalConfig>,
    recordings: Arc<recording::Recordings>,
    join_rates: Arc<Mutex<HashMap<IpAddr, Rate>>>,
    refusals: Arc<Refusals>,
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
            recordings: Arc::new(recording::Recordings::new(&config, local)),
            hub: Arc::new(Mutex::new(Hub::new(config.limits.clone()))),
            media,
            config: Arc::new(config),
            join_rates: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// The HTTP routes: web client, `/ws`, `/healthz`, `/metrics`, `/recordings`. Serve them
    /// with [`Signal::serve`] (handlers need the client's address).
    pub fn router(self) -> Router {
        web::routes()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics::page))
            .route("/ws", get(upgrade))
            .route("/recordings", get(recording::list))
            .route("/recordings/{recording}/{file}", get(recording::download))
            .with_state(self)
    }

    /// `/metrics` and `/healthz` alone, for a metrics address of their own: whoever reaches
    /// that address reads the metrics, without a token.
    pub fn metrics_router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics::open_page))
            .with_state(self)
    }

    /// Serves the routes on `listener`, with the connection limits of the configuration, until
    /// `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let limits = http::ConnLimits {
            proxies: self.config.trusted_proxies.clone(),
            ..http::ConnLimits::from(&self.config.limits)
        };
        http::serve(listener, self.router(), limits, "HTTP server", shutdown).await;
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        // A panic while holding the lock is a bug elsewhere; the state itself stays usable.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a join with `token` may do, or why it may not join at all.
    fn authorize(&self, token: Option<&str>) -> Result<Grants, auth::TokenError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        match token {
            Some(t) if !self.config.keys.is_empty() => {
                auth::verify(&self.config.keys, t, unix_now())
            }
            _ if self.config.anonymous => Ok(Grants::anonymous()),
            _ => Err(auth::TokenError::Missing),
        }
    }

    /// The grants of an HTTP request's token (`Authorization: Bearer …` or `?access_token=…`):
    /// `Ok(None)` on a server without keys, where there are none to check.
    fn http_grants(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Option<Grants>, (StatusCode, String)> {
        if self.config.keys.is_empty() {
            return Ok(None);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let token = bearer.or_else(|| query_token.map(str::to_string));
        let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "an access token is needed\n".into(),
            ));
        };
        auth::verify(&self.config.keys, &token, unix_now())
            .map(Some)
            .map_err(|e| (StatusCode::UNAUTHORIZED, format!("{e}\n")))
    }

    /// Whether `ip` may join now (joins per second per address).
    fn allow_join(&self, ip: IpAddr) -> bool {
        let l = &self.config.limits;
        let now = Instant::now();
        let mut rates = self.join_rates.lock().unwrap_or_else(|e| e.into_inner());
        if rates.len() >= 10_000 {
            // Addresses whose bucket refilled are forgotten: the table stays bounded.
            rates.retain(|_, r| !r.is_full(now));
        }
        if rates.len() >= 10_000 {
            return false;
        }
        rates
            .entry(ip)
            .or_insert_with(|| Rate::new(l.joins_per_sec, l.joins_burst, now))
            .allow(now)
    }

    /// Whether a page of `origin` may open `/ws`: its own origin, or one configured.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            // Not a browser page: nothing for a cross-site request to abuse.
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self
            .config
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin)
        {
            return true;
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        host.is_some() && origin_host == host
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

async fn upgrade(
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
    let (out, mut outgoing, end) = Outbox::new(signal.config.limits.send_queue);
    let (mut sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(async move {
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
    });
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
            token,
        } = message
        {
            self.join(v, room, name, mode, token.as_deref());
            return;
        }
        let Some(me) = self.me.clone() else {
            self.error(ErrorCode::NotJoined, "join a room first");
            return;
        };
        if !self.signal.hub().is_member(&me) {
            // Replaced or removed: the socket is about to close.
            return;
        }
        let is_offer = matches!(message, ClientMessage::Offer { .. });
        match message {
            ClientMessage::Offer { sdp, to, roles } | ClientMessage::Answer { sdp, to, roles } => {
                let Some(roles) = self.roles(roles) else {
                    return;
                };
                self.session_description(&me, is_offer, sdp, to, roles)
                    .await
            }
            ClientMessage::Candidate {
                candidate,
                to: Some(to),
            } => {
                if self.within(Budget::Relays) {
                    self.relay(&me, &to, |from| ServerMessage::Candidate {
                        candidate,
                        from,
                    })
                }
            }
            // The media server is ICE-lite: it learns the browser's address from its checks.
            ClientMessage::Candidate { to: None, .. } => {}
            ClientMessage::Chat { text } => {
                if !self.grants.chat {
                    self.signal.refusals.count("forbidden");
                    self.error(
                        ErrorCode::Forbidden,
                        "your access token does not grant chat (canPublishData)",
                    );
                } else if self.within(Budget::Chat) {
                    if let Err(why) = self.signal.hub().chat(&me, &text) {
                        self.error(ErrorCode::BadChat, why);
                    }
                }
            }
            ClientMessage::Mute { audio, video } => {
                if self.within(Budget::Mutes) {
                    self.signal.hub().mute(&me, audio, video)
                }
            }
            ClientMessage::Record { on } => self.record(&me, on).await,
            ClientMessage::MuteParticipant { id, audio, video } => {
                let actions = [(false, audio), (true, video)]
                    .into_iter()
                    .filter_map(|(video, muted)| {
                        let id = id.clone();
                        muted.map(|muted| Moderate::Mute { id, video, muted })
                    })
                    .collect();
                self.moderate(&me, actions).await
            }
            ClientMessage::RemoveParticipant { id, ban } => {
                self.moderate(&me, vec![Moderate::Remove { id, ban }]).await
            }
            ClientMessage::LockRoom { locked } => {
                self.moderate(&me, vec![Moderate::Lock { locked }]).await
            }
            ClientMessage::EndRoom => self.moderate(&me, vec![Moderate::End]).await,
            ClientMessage::Join { .. } | ClientMessage::Leave | ClientMessage::Ping => {}
        }
    }

    /// An offer or answer: relayed to the other browser (`to`), or for the media server.
    async fn session_description(
        &mut self,
        me: &Me,
        is_offer: bool,
        sdp: String,
        to: Option<String>,
        roles: Option<BTreeMap<String, TrackRole>>,
    ) {
        // Answers to the media server are not rate limited: it makes one offer at a time and
        // waits for the answer, and refuses one it did not ask for.
        if (is_offer || to.is_some()) && !self.within(Budget::Offers) {
            return;
        }
        let Some(sdp) = self.restrict(&sdp) else {
            return;
        };
        match (to, is_offer) {
            (Some(to), true) => self.relay(me, &to, |from| ServerMessage::Offer {
                sdp,
                from: Some(from),
                roles,
            }),
            (Some(to), false) => self.relay(me, &to, |from| ServerMessage::Answer {
                sdp,
                from: Some(from),
                roles,
            }),
            (None, true) => self.media_offer(me, &sdp, roles.as_ref()).await,
            (None, false) => self.media_answer(&sdp).await,
        }
    }

    /// The checked `roles` of an offer or answer; `None` when refused (said why).
    fn roles(
        &self,
        roles: Option<BTreeMap<String, String>>,
    ) -> Option<Option<BTreeMap<String, TrackRole>>> {
        let Some(roles) = roles else {
            return Some(None);
        };
        match TrackRole::parse_map(&roles, self.signal.config.limits.mlines_per_sdp) {
            Ok(r) => Some(Some(r)),
            Err(why) => {
                self.signal.refusals.count("bad-roles");
                self.error(ErrorCode::BadRoles, &why);
                None
            }
        }
    }

    /// The SDP limited to what this participant may publish, or `None` (refused, said why).
    fn restrict(&self, sdp: &str) -> Option<String> {
        let max = self.signal.config.limits.mlines_per_sdp;
        match sdp::restrict(sdp, self.grants.publish, max) {
            Ok(s) => Some(s),
            Err(sdp::TooManyLines(n)) => {
                self.signal.refusals.count("too-many-m-lines");
                self.error(
                    ErrorCode::MediaError,
                    &format!("an SDP with {n} m-lines was refused; the limit is {max}"),
                );
                None
            }
        }
    }

    async fn moderate(&mut self, me: &Me, actions: Vec<Moderate>) {
        if actions.is_empty() {
            return;
        }
        if !self.grants.admin {
            self.signal.refusals.count("forbidden");
            self.error(
                ErrorCode::Forbidden,
                "moderation needs an access token with roomAdmin",
            );
            return;
        }
        for action in actions {
            if self.within(Budget::Mutes) {
                self.moderate_one(me, action).await;
            }
        }
    }

    async fn moderate_one(&mut self, me: &Me, action: Moderate) {
        let outcome = self.signal.hub().moderate(me, &action);
        match outcome {
            Ok(media) => {
                tracing::info!(room = me.room, by = me.id, ?action, "moderation");
                if let (Moderate::Mute { video, muted, .. }, Some(peer)) = (&action, media) {
                    let kind = if *video {
                        MediaKind::Video
                    } else {
                        MediaKind::Audio
                    };
                    if let Err(e) = self.signal.media.set_muted(&peer, kind, *muted).await {
                        tracing::warn!("server mute not applied: {e}");
                    }
                }
                if matches!(action, Moderate::End) {
                    self.signal.recordings.stop(&me.room).await;
                }
            }
            Err((code, why)) => {
                self.signal.refusals.count(code.name());
                self.error(code, &why)
            }
        }
    }

    fn join(
        &mut self,
        v: u32,
        room: String,
        name: String,
        mode: Option<RoomMode>,
        token: Option<&str>,
    ) {
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
        if !self.signal.allow_join(self.ip) {
            self.refuse_join(
                ErrorCode::RateLimited,
                "too many joins from your address: wait a moment and try again",
            );
            return;
        }
        let grants = match self.signal.authorize(token) {
            Ok(g) => g,
            Err(e) => {
                self.refuse_join(ErrorCode::Unauthorized, &e.to_string());
                return;
            }
        };
        if let Err(why) = grants.may_join(&room) {
            self.refuse_join(ErrorCode::Forbidden, why);
            return;
        }
        let mode = mode.unwrap_or(self.signal.config.default_mode);
        let config = self.signal.config.clone();
        let outcome = self.signal.hub().join(
            Joining {
                room: &room,
                name: &name,
                mode,
                grants: &grants,
                out: self.out.clone(),
            },
            |id| ice_servers(&config, id),
        );
        match outcome {
            JoinOutcome::Joined(me) => {
                tracing::info!(room, id = me.id, identity = ?grants.identity, client = %self.ip, "participant joined");
                self.me = Some(me);
                self.grants = grants;
                let (recordings, out) = (self.signal.recordings.clone(), self.out.clone());
                tokio::spawn(async move {
                    if recordings.is_on(&room).await {
                        out.send(&ServerMessage::Recording {
                            on: true,
                            by: None,
                            name: None,
                        });
                    }
                });
            }
            JoinOutcome::Refused(code, why) => self.refuse_join(code, &why),
        }
    }

    fn relay(&self, me: &Me, to: &str, make: impl FnOnce(String) -> ServerMessage) {
        if let Err(why) = self.signal.hub().relay(me, to, make) {
            self.error(ErrorCode::BadTarget, &why);
        }
    }

    async fn media_offer(
        &mut self,
        me: &Me,
        sdp: &str,
        roles: Option<&BTreeMap<String, TrackRole>>,
    ) {
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
            self.signal.hub().offered(me, sdp, roles, false);
            match media.offer(peer, sdp).await {
                // The media server dropped this peer (see forward_media_signals): start anew.
                Err(BackendError::UnknownPeer) => self.media_peer = None,
                other => reply = Some(other),
            }
        }
        if reply.is_none() {
            // A new media connection: its tracks are all new.
            self.signal.hub().offered(me, sdp, roles, true);
        }
        let reply = match reply {
            Some(r) => r,
            None => match media.join(&me.room, sdp, self.grants.subscribe).await {
                Ok(joined) => {
                    let muted = self.signal.hub().set_media(
                        me,
                        joined.stream_id.clone(),
                        joined.peer.clone(),
                    );
                    for (kind, on) in [
                        (MediaKind::Audio, muted.audio),
                        (MediaKind::Video, muted.video),
                    ] {
                        if on {
                            if let Err(e) = media.set_muted(&joined.peer, kind, true).await {
                                tracing::warn!("server mute not applied: {e}");
                            }
                        }
                    }
                    self.media_peer = Some(joined.peer);
                    self.send(ServerMessage::Answer {
                        sdp: joined.answer,
                        from: None,
                        roles: None,
                    });
                    let name = self.signal.hub().name_of(me).unwrap_or_default();
                    tokio::spawn(forward_media_signals(
                        joined.signals,
                        self.signal.hub.clone(),
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
                roles: None,
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
        if !self.grants.may_record(&me.room) {
            self.signal.refusals.count("forbidden");
            self.error(
                ErrorCode::Forbidden,
                "recording needs an access token with roomRecord or roomAdmin",
            );
            return;
        }
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
                Err((code, why)) => {
                    if code != ErrorCode::MediaError {
                        self.signal.refusals.count(code.name());
                    }
                    self.error(code, &why);
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

/// Passes the media server's offers for this participant to its socket.
async fn forward_media_signals(
    mut signals: mpsc::UnboundedReceiver<PeerSignal>,
    hub: Arc<Mutex<Hub>>,
    out: Outbox,
    recordings: Arc<recording::Recordings>,
    me: Me,
    name: String,
) {
    while let Some(signal) = signals.recv().await {
        match signal {
            PeerSignal::Offer(sdp) => {
                if !out.send(&ServerMessage::Offer {
                    sdp,
                    from: None,
                    roles: None,
                }) {
                    break;
                }
            }
            PeerSignal::Published { track, kind } => {
                if kind == MediaKind::Video {
                    hub.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .published_video(&me, track.to_string());
                }
                recordings
                    .published(&me.room, &me.id, &name, track, kind)
                    .await;
            }
            PeerSignal::Connected => {}
            PeerSignal::Removed(reason) => {
                tracing::info!("media connection removed: {reason}");
                if reason != RemoveReason::Left {
                    // The socket is still up: have the browser connect its media again.
                    out.send(&ServerMessage::Mode {
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
        let (out, mut rx, _) = Outbox::new(8);
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let grants = Grants::anonymous();
        let joining = Joining {
            room: "r",
            name: "Ada",
            mode: RoomMode::Sfu,
            grants: &grants,
            out,
        };
        let outcome = hub.join(joining, |id| ice_servers(&config, id));
        let JoinOutcome::Joined(me) = outcome else {
            panic!("join refused");
        };
        let joined: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
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

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
//! - **WHIP and WHEP** (`POST /whip/<room>`, `POST /whep/<room>[/<who>]`): encoders publish
//!   into rooms as participants without a socket, players watch a room's speaker or one
//!   participant (see `whip.rs` and `docs/whip-whep.md`).
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

mod api;
pub mod auth;
mod backend;
pub mod bus;
mod connection;
mod forward;
pub mod http;
mod hub;
mod limits;
pub mod metrics;
mod outbox;
pub mod protocol;
mod recording;
mod roles;
mod sdp;
mod sessions;
mod web;
pub mod webhooks;
mod whip;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
pub use backend::{BackendError, BackendJoined, MediaBackend, PeerRef};

use auth::{Grants, Keys};
pub use hub::{Hub, RoomTimeouts};
pub use limits::{Limits, Rate};
use protocol::{IceServer, LeaveReason, RoomMode};
pub use webhooks::WebhookConfig;

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
    /// How long a participant whose socket dropped is kept for a `resume` (zero: it leaves
    /// at once).
    pub resume_grace: Duration,
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
    /// How long empty rooms stay open.
    pub room_timeouts: RoomTimeouts,
    /// Last-N of every room: video from at most this many others (`None`: no limit).
    pub last_n: Option<u32>,
    /// Where events are POSTed.
    pub webhooks: WebhookConfig,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            default_mode: RoomMode::Sfu,
            ice_servers: Vec::new(),
            turn: None,
            turn_monitor: None,
            idle_timeout: Duration::from_secs(20),
            resume_grace: Duration::from_secs(20),
            recordings_dir: None,
            recording_starts_per_hour: 20,
            recordings_quota: Some(10 << 30),
            keys: Keys::default(),
            anonymous: true,
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            metrics_token: None,
            room_timeouts: RoomTimeouts::default(),
            last_n: None,
            webhooks: WebhookConfig::default(),
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
    media: Arc<dyn MediaBackend>,
    config: Arc<SignalConfig>,
    recordings: Arc<recording::Recordings>,
    join_rates: Arc<Mutex<HashMap<IpAddr, Rate>>>,
    refusals: Arc<Refusals>,
    api_calls: Arc<api::ApiCalls>,
    hooks: webhooks::Webhooks,
    sessions: Arc<sessions::Sessions>,
    sockets: Arc<Sockets>,
    /// WHIP publishers and WHEP viewers.
    http_sessions: Arc<whip::HttpSessions>,
    /// Set once a shutdown began: joins and resumes are refused.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The other session servers sharing rooms with this one (`None`: alone).
    links: Option<Arc<bus::Links>>,
}

/// The open `/ws` sockets, counted so that a shutdown can wait for them to close.
#[derive(Default)]
struct Sockets {
    open: Mutex<usize>,
    closed: tokio::sync::Notify,
}

/// One open socket; dropping it counts it closed.
struct OpenSocket(Arc<Sockets>);

impl Sockets {
    fn open(self: &Arc<Self>) -> OpenSocket {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        OpenSocket(self.clone())
    }

    fn count(&self) -> usize {
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no socket is open, or `limit` passed.
    async fn all_closed(&self, limit: Duration) {
        let wait = async {
            loop {
                let closed = self.closed.notified();
                if self.count() == 0 {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.closed.notify_waiters();
    }
}

/// How long a shutdown waits for the sockets to take their close frames, and for the
/// recordings to be finished.
const DRAIN: Duration = Duration::from_secs(5);

impl Signal {
    /// A session server driving `media`.
    pub fn new(media: impl Into<Arc<dyn MediaBackend>>, config: SignalConfig) -> Self {
        let media: Arc<dyn MediaBackend> = media.into();
        // Recordings tap the in-process core's tracks; a remote media server's stay there.
        let recorder = media.can_record().then(|| media.clone());
        let hooks = match webhooks::Webhooks::start(&config.webhooks, &config.keys) {
            Ok(h) => h,
            Err(e) => {
                // `sori` checks this before it starts ([`webhooks::check`]).
                tracing::error!("webhooks off: {e}");
                webhooks::Webhooks::default()
            }
        };
        let mut hub = Hub::new(config.limits.clone(), config.room_timeouts);
        hub.set_hooks(hooks.clone());
        hub.set_last_n(config.last_n);
        Self {
            recordings: Arc::new(recording::Recordings::new(&config, recorder, hooks.clone())),
            hub: Arc::new(Mutex::new(hub)),
            hooks,
            sessions: Arc::new(sessions::Sessions::new(config.resume_grace)),
            sockets: Arc::default(),
            http_sessions: Arc::default(),
            draining: Arc::default(),
            media,
            config: Arc::new(config),
            join_rates: Arc::default(),
            refusals: Arc::default(),
            api_calls: Arc::default(),
            links: None,
        }
    }

    /// Shares rooms with the other session servers on `bus`, whose messages to this one
    /// arrive on `incoming`: each room lives on one of them, and sockets for it on the others
    /// are relayed to it (see [`bus`]). Call before serving.
    pub fn with_bus(
        mut self,
        bus: Arc<dyn bus::SessionBus>,
        incoming: tokio::sync::mpsc::Receiver<bus::Incoming>,
    ) -> Self {
        let links = Arc::new(bus::Links::new(bus));
        self.links = Some(links.clone());
        bus::start(&self, &links, incoming);
        self
    }

    /// The HTTP routes: web client, `/ws`, `/healthz`, `/metrics`, `/recordings`. Serve them
    /// with [`Signal::serve`] (handlers need the client's address).
    pub fn router(self) -> Router {
        let links = self.links.clone();
        let forwarding = axum::middleware::from_fn_with_state(self.clone(), forward::layer);
        let router = web::routes()
            .route("/healthz", get(health))
            .route("/metrics", get(metrics::page))
            .route("/ws", get(connection::upgrade))
            .route("/recordings", get(recording::list))
            .route("/recordings/{recording}/{file}", get(recording::download))
            .route(
                "/twirp/livekit.RoomService/{method}",
                post(api::room_service).layer(DefaultBodyLimit::max(api::MAX_BODY)),
            )
            .merge(whip::routes())
            .route(
                "/twirp/sori.RecordingService/{method}",
                post(api::recording_service).layer(DefaultBodyLimit::max(api::MAX_BODY)),
            )
            .layer(forwarding)
            .with_state(self);
        if let Some(links) = links {
            // What other session servers forward here is answered by these same routes.
            let _ = links.router.set(router.clone());
        }
        router
    }

    /// `/metrics` and `/healthz` alone, for a metrics address of their own: whoever reaches
    /// that address reads the metrics, without a token.
    pub fn metrics_router(self) -> Router {
        Router::new()
            .route("/healthz", get(health))
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
        self.serve_tls(listener, None, shutdown).await
    }

    /// As [`Signal::serve`], over TLS (HTTPS and WSS) when `tls` is given.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let limits = http::ConnLimits {
            proxies: self.config.trusted_proxies.clone(),
            ..http::ConnLimits::from(&self.config.limits)
        };
        let signal = self.clone();
        let sweeper = tokio::spawn(self.clone().end_empty_rooms());
        let speakers = tokio::spawn(self.clone().tick_speakers());
        let what = if tls.is_some() {
            "HTTPS server"
        } else {
            "HTTP server"
        };
        http::serve_tls(listener, self.router(), limits, what, tls, shutdown).await;
        sweeper.abort();
        speakers.abort();
        signal.drain().await;
    }

    /// A graceful shutdown, once the listener stopped taking connections: joins are refused,
    /// every participant is told (`shutdown`, then a close frame with code 1001, so that its
    /// client reconnects), every recording is finished (files complete, manifests written),
    /// and the sockets get up to [`DRAIN`] to close.
    pub async fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(links) = &self.links {
            // With other session servers: they take the rooms over, and the participants
            // resume there with their place.
            links.hand_over(self).await;
            let outboxes = self.hub().outboxes();
            tracing::info!(
                participants = outboxes.len(),
                "shutting down: the participants resume on another session server"
            );
            for out in &outboxes {
                out.close_socket(bus::HANDED_OVER);
            }
        } else {
            let outboxes = self.hub().outboxes();
            tracing::info!(
                participants = outboxes.len(),
                "shutting down: telling every participant, finishing recordings"
            );
            for out in &outboxes {
                out.send(&protocol::ServerMessage::Shutdown);
                out.close_socket(1001);
                out.close("the server is shutting down");
            }
        }
        let deadline = tokio::time::Instant::now() + DRAIN;
        let finished = tokio::time::timeout(DRAIN, self.recordings.stop_all()).await;
        if finished.is_err() {
            tracing::warn!("recordings not finished within {DRAIN:?}");
        }
        self.sockets
            .all_closed(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        let open = self.sockets.count();
        if open > 0 {
            tracing::warn!(open, "sockets still open at shutdown");
        }
    }

    /// Ends rooms that stayed empty past their timeout, checking every second.
    async fn end_empty_rooms(self) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let ended = self.hub().sweep(Instant::now());
            for room in ended {
                self.recordings.stop(&room).await;
            }
        }
    }

    /// Decides who is speaking in every room, twenty times a second, and what each receiver of
    /// a last-N room gets.
    async fn tick_speakers(self) {
        let mut every = tokio::time::interval(hub::SPEAKER_TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let updates = {
                let mut hub = self.hub();
                hub.speaker_tick(Instant::now());
                hub.video_set_updates()
            };
            // Last-N: the media server forwards each receiver what its set says.
            for u in updates {
                if let Err(e) = self.media.set_video_set(&u.peer, u.tracks).await {
                    tracing::debug!(peer = %u.peer, "video set not applied: {e}");
                }
            }
            // WHEP viewers follow the floor.
            whip::refresh_viewers(&self).await;
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
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
        let bearer = http::bearer(headers).map(str::to_string);
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

/// How long `/healthz` waits for the media server's answer.
const HEALTH_WAIT: Duration = Duration::from_secs(2);

/// `/healthz`: 200 when the media server answers a round trip within [`HEALTH_WAIT`] (the
/// in-process core's task, or a remote one over the control connection) and no shutdown is
/// under way; 503 with the reason otherwise.
async fn health(
    axum::extract::State(signal): axum::extract::State<Signal>,
) -> (StatusCode, String) {
    if signal.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match tokio::time::timeout(HEALTH_WAIT, signal.media.health()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".into()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the media server fails: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the media server did not answer within {HEALTH_WAIT:?}\n"),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{JoinOutcome, Joining};
    use crate::outbox::Outbox;
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
        let (out, mut rx) = Outbox::new(8);
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
            resume: None,
            ingress: false,
        };
        let outcome = hub.join(joining, |id| ice_servers(&config, id));
        let JoinOutcome::Joined(me) = outcome else {
            panic!("join refused");
        };
        let joined: serde_json::Value =
            serde_json::from_str(&rx.try_recv().unwrap().text()).unwrap();
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

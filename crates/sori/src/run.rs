//! Running a role: the media server, the control API, the session server, each on its
//! listener, until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use sori_kurento::Kurento;
use sori_kurento_client::RemoteMedia;
use sori_net::{MediaConfig, MediaServer};
use sori_signal::{MediaBackend, Signal, TurnAccess};
use sori_turn::TurnServer;

use crate::config::{Config, TlsPlanWeb, TurnPlan};
use crate::turn::start_turn;

/// The links to other media nodes a media node of a cluster may have at once (each a room
/// spanning it and another node).
pub const MEDIA_LINKS: usize = 64;

/// What a process runs.
pub enum Role {
    /// Session server and media server; with the control API when true.
    Serve { kurento: bool },
    /// Media server and control API only.
    Media,
    /// Session server only, driving the media server at this URL, or (`None`) the media nodes
    /// announced in the cluster's Redis.
    Signal { media_url: Option<String> },
}

pub async fn run(config: Config, role: Role) -> Result<(), String> {
    if let Role::Signal { media_url } = &role {
        return run_signal(config, media_url.as_deref()).await;
    }
    // A media node of a cluster may link rooms with other nodes (cascading): its ids carry a
    // number unique among them.
    let node = match (&role, &config.cluster.redis) {
        (Role::Media, Some(redis)) => Some(crate::cluster::node_number(redis.expose()).await?),
        _ => None,
    };
    let media = start_media(&config, node).await?;
    let advertised = media
        .candidates
        .iter()
        .map(|c| c.to_string())
        .chain(media.tcp_candidates.iter().map(|c| format!("{c}/tcp")))
        .collect::<Vec<_>>()
        .join(", ");

    let mut servers = tokio::task::JoinSet::new();
    if matches!(role, Role::Media | Role::Serve { kurento: true }) {
        let kconfig = config.kurento();
        let path = kconfig.path.clone();
        let mut app = Kurento::new(media.handle.clone(), kconfig).router();
        if let Role::Media = role {
            app = with_health_and_metrics(app, &media);
        }
        let (listener, addr) = bind(config.kurento.listen).await?;
        tracing::info!(
            "Sori {} media server: control API on ws://{addr}{path} (media: UDP {}, advertised as {advertised})",
            crate::VERSION,
            media.local_addr,
        );
        let limits = sori_signal::http::ConnLimits::from(&config.limits());
        match (&role, &config.cluster.redis) {
            (Role::Media, Some(redis)) => {
                // A node of a cluster: announced until asked to stop (or to drain), then
                // drained.
                let drain = Arc::new(tokio::sync::Notify::new());
                let token = config.kurento.access_token.as_ref();
                let app = app.route(
                    "/drain",
                    crate::cluster::drain_route(drain.clone(), token.map(|t| t.expose().into())),
                );
                let node = crate::cluster::announce(&config, &media, addr, redis.expose(), drain)?;
                servers.spawn(async move {
                    sori_signal::http::serve(listener, app, limits, "control API", node).await;
                    Ok(())
                });
            }
            _ => {
                servers.spawn(serve_http(listener, app, limits, "control API"));
            }
        }
        if let Role::Media = role {
            // No certificate to reload; SIGHUP (systemctl reload) must not end the process.
            ignore_hangups();
        }
    }
    let mut turn = None;
    if let Role::Serve { .. } = role {
        let mut signal = config.signal();
        // HTTPS first: TURN over TLS may present the same certificate.
        let web = WebListener::open(&config).await?;
        let (server, access) = start_turn(&config, &media.candidates, web.store.clone()).await?;
        signal.turn = access;
        signal.turn_monitor = server.as_ref().map(TurnServer::monitor);
        turn = server;
        log_access_mode(&signal);
        let app = Signal::new(media.handle.clone(), signal);
        if let Some(at) = config.server.metrics_listen {
            servers.spawn(serve_metrics(at, app.clone(), &config).await?);
        }
        tracing::info!(
            "Sori {} listening on {} (media: UDP {}, advertised as {advertised})",
            crate::VERSION,
            web.url(),
            media.local_addr,
        );
        web.spawn(app, &config, &mut servers).await?;
    }
    let mut task = media.task;
    let mut result = Ok(());
    let mut media_ended = false;
    loop {
        tokio::select! {
            done = servers.join_next() => match done {
                Some(Ok(Err(e))) => {
                    result = Err(e);
                    servers.abort_all();
                }
                Some(_) => {}
                None => break,
            },
            // Without its media task the process only answers HTTP while every media command
            // fails: it stops, for its service manager to start it again.
            ended = &mut task, if !media_ended => {
                media_ended = true;
                result = Err(media_task_ended(ended));
                servers.abort_all();
            }
        }
    }
    if let Some(turn) = turn {
        turn.shutdown().await;
    }
    media.handle.shutdown();
    if !media_ended {
        let _ = task.await;
    }
    tracing::info!("stopped");
    result
}

/// Why the process stops when its media task ended before a shutdown asked it to.
fn media_task_ended(ended: Result<(), tokio::task::JoinError>) -> String {
    let why = match ended {
        Ok(()) => "the media task ended".to_string(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("the media task panicked: {message}")
        }
        Err(e) => format!("the media task stopped: {e}"),
    };
    tracing::error!("{why}: stopping");
    why
}

/// Opens the media port (UDP, and TCP for ICE-TCP) and starts the media server on it.
/// `node`: this media node's number in a cluster (it then takes [`MEDIA_LINKS`] links to other
/// nodes).
async fn start_media(config: &Config, node: Option<u16>) -> Result<MediaServer, String> {
    sori_net::start(MediaConfig {
        bind: SocketAddr::new(config.media.bind_ip, config.media.rtc_port),
        advertise: config.media.advertise_ip.clone(),
        sfu: config.sfu(),
        tcp: config.tcp(),
        workers: config.media_workers(),
        node: node.unwrap_or(0),
        links: if node.is_some() { MEDIA_LINKS } else { 0 },
    })
    .await
    .map_err(|e| {
        let (ip, port) = (config.media.bind_ip, config.media.rtc_port);
        let tcp = match config.tcp() {
            Some(t) => format!("TCP {ip}:{}", t.port.unwrap_or(port)),
            None => "no TCP".into(),
        };
        format!("cannot open the media port (UDP {ip}:{port}, {tcp}): {e}")
    })
}

/// The media server alone still answers health checks and metrics, beside the control API.
fn with_health_and_metrics(app: axum::Router, media: &MediaServer) -> axum::Router {
    let handle = media.handle.clone();
    let health = media.handle.clone();
    app.route(
        "/healthz",
        axum::routing::get(move || {
            let handle = health.clone();
            async move {
                // A round trip to the media task: a process whose media task is gone is not
                // healthy, whatever its HTTP side says.
                match tokio::time::timeout(std::time::Duration::from_secs(2), handle.stats()).await
                {
                    Ok(Ok(_)) => (axum::http::StatusCode::OK, "ok\n".to_string()),
                    Ok(Err(e)) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("{e}\n"),
                    ),
                    Err(_) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "the media task did not answer within 2 s\n".to_string(),
                    ),
                }
            }
        }),
    )
    .route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                match handle.stats().await {
                    Ok(stats) => Ok(sori_signal::metrics::render(0, 0, Some(&stats), None)),
                    Err(e) => Err((axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
                }
            }
        }),
    )
}

/// The session server alone, driving a remote media server (`media_url`) or the media nodes
/// of a cluster (the Redis of `[cluster]`).
async fn run_signal(config: Config, media_url: Option<&str>) -> Result<(), String> {
    let (media, shown, connection): (Arc<dyn MediaBackend>, String, Option<RemoteMedia>) =
        match media_url {
            Some(url) => {
                let shown = url.split('?').next().unwrap_or(url).to_string();
                let media = RemoteMedia::connect(url)
                    .await
                    .map_err(|e| format!("cannot reach the media server at {shown}: {e}"))?;
                (Arc::new(media.clone()), shown, Some(media))
            }
            None => {
                let redis = config
                    .cluster
                    .redis
                    .as_ref()
                    .ok_or("no --media and no --redis")?;
                let registry = sori_cluster::Registry::connect(redis.expose())
                    .map_err(|e| format!("--redis: {e}"))?;
                let token = config
                    .kurento
                    .access_token
                    .as_ref()
                    .map(|t| t.expose().to_string());
                let media = sori_cluster::ClusterMedia::new(registry, token);
                (Arc::new(media), "media nodes in Redis".to_string(), None)
            }
        };
    let mut signal = config.signal();
    // A session server alone hands out TURN servers run elsewhere, never its own.
    if let TurnPlan::External { urls, secret, ttl } = config.turn() {
        tracing::info!("TURN: handing out {}", urls.join(", "));
        signal.turn = Some(TurnAccess { urls, secret, ttl });
    }
    log_access_mode(&signal);
    let mut app = Signal::new(media, signal);
    let web = WebListener::open(&config).await?;
    // With Redis, rooms are shared with the other session servers announced there.
    let (stop_beat, beat_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut beat = None;
    if let (None, Some(redis)) = (media_url, &config.cluster.redis) {
        let stopped = async move {
            let _ = beat_stopped.await;
        };
        let port = web.addr.port();
        let (shared, beating) =
            crate::cluster::share_rooms(app, &config, redis.expose(), port, stopped)?;
        app = shared;
        beat = Some(tokio::spawn(beating));
    }
    if let Some(at) = config.server.metrics_listen {
        tokio::spawn(serve_metrics(at, app.clone(), &config).await?);
    }
    tracing::info!(
        "Sori {} listening on {} (media server: {shown})",
        crate::VERSION,
        web.url()
    );
    let watched = connection.clone();
    let stopped = async move {
        let task_ended = async {
            match &watched {
                Some(m) => m.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = task_ended => {}
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    web.spawn_helpers(&config, &mut servers).await?;
    app.serve_tls(web.listener, web.tls, stopped).await;
    servers.abort_all();
    let _ = stop_beat.send(());
    if let Some(beat) = beat {
        let _ = beat.await;
    }
    if connection.is_some_and(|m| m.is_stopped()) {
        let why = "the media server connection task stopped";
        tracing::error!("{why}: stopping");
        return Err(why.into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// The session server's listener, plain or HTTPS, with what keeps its certificate current.
struct WebListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<std::sync::Arc<sori_turn::rustls::ServerConfig>>,
    store: Option<std::sync::Arc<crate::tls::CertStore>>,
}

impl WebListener {
    /// Loads the certificate files (an unreadable or unusable one stops the start, the error
    /// naming the file) and binds the listener.
    async fn open(config: &Config) -> Result<WebListener, String> {
        let (tls, store) = match config.web_tls() {
            TlsPlanWeb::Off => (None, None),
            TlsPlanWeb::Files { cert, key } => {
                let store = std::sync::Arc::new(crate::tls::CertStore::default());
                crate::tls::load_files(&store, &cert, &key)?;
                (
                    Some(crate::tls::server_config(store.clone(), false)),
                    Some(store),
                )
            }
            TlsPlanWeb::Acme(_) => {
                let store = std::sync::Arc::new(crate::tls::CertStore::default());
                (
                    Some(crate::tls::server_config(store.clone(), true)),
                    Some(store),
                )
            }
        };
        let (listener, addr) = bind(config.server.listen).await?;
        Ok(WebListener {
            listener,
            addr,
            tls,
            store,
        })
    }

    fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// Serves `app` on the listener, with its helpers, in `servers`.
    async fn spawn(
        self,
        app: Signal,
        config: &Config,
        servers: &mut tokio::task::JoinSet<Result<(), String>>,
    ) -> Result<(), String> {
        self.spawn_helpers(config, servers).await?;
        let tls = self.tls;
        let listener = self.listener;
        servers.spawn(async move {
            app.serve_tls(listener, tls, shutdown_signal()).await;
            Ok(())
        });
        Ok(())
    }

    /// What keeps the certificate current (the file watcher, or ACME) and the plain-HTTP
    /// listener, in `servers`.
    async fn spawn_helpers(
        &self,
        config: &Config,
        servers: &mut tokio::task::JoinSet<Result<(), String>>,
    ) -> Result<(), String> {
        let Some(store) = &self.store else {
            ignore_hangups();
            return Ok(());
        };
        let mut http01 = false;
        if let Some(at) = config.tls.http_listen {
            let (listener, addr) = bind(at).await?;
            tracing::info!(
                "plain HTTP on {}",
                crate::tls::describe_redirect(addr, self.addr.port())
            );
            // The CA asks on port 80: this listener, or a port forwarded to it.
            http01 = true;
            let limits = sori_signal::http::ConnLimits::from(&config.limits());
            servers.spawn(serve_http(
                listener,
                crate::tls::redirect_router(
                    store.clone(),
                    self.addr.port(),
                    match config.web_tls() {
                        TlsPlanWeb::Acme(plan) => Some(plan.domain),
                        _ => None,
                    },
                ),
                limits,
                "HTTP redirect",
            ));
        }
        match config.web_tls() {
            TlsPlanWeb::Off => {}
            TlsPlanWeb::Files { cert, key } => {
                let store = store.clone();
                tokio::spawn(crate::tls::watch_files(store, cert, key));
            }
            TlsPlanWeb::Acme(plan) => {
                let challenge = if http01 {
                    crate::acme::Challenge::Http01
                } else {
                    crate::acme::Challenge::TlsAlpn01
                };
                let acme = crate::acme::Acme::new(plan, store.clone(), challenge)?;
                tokio::spawn(acme.run());
            }
        }
        Ok(())
    }
}

/// SIGHUP would end the process (its default action), and `systemctl reload` sends it: where
/// there is no certificate to reload, it is logged and otherwise ignored.
fn ignore_hangups() {
    let mut hangup = crate::tls::hangups();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: nothing to reload (no HTTPS certificate)");
        }
    });
}

/// Binds a TCP listener; returns it with the address it got.
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}

/// Serves `app` on `listener` until SIGINT/SIGTERM, with the connection limits of `config`;
/// `what` names it in logs.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: sori_signal::http::ConnLimits,
    what: &'static str,
) -> Result<(), String> {
    sori_signal::http::serve(listener, app, limits, what, shutdown_signal()).await;
    Ok(())
}

/// Binds the separate metrics address; the returned future serves it until shutdown.
async fn serve_metrics(
    at: SocketAddr,
    signal: Signal,
    config: &Config,
) -> Result<impl std::future::Future<Output = Result<(), String>>, String> {
    let (listener, addr) = bind(at).await?;
    tracing::info!("metrics on http://{addr}/metrics");
    let limits = sori_signal::http::ConnLimits::from(&config.limits());
    Ok(serve_http(
        listener,
        signal.metrics_router(),
        limits,
        "metrics",
    ))
}

/// One line at start saying who may join.
fn log_access_mode(signal: &sori_signal::SignalConfig) {
    if signal.keys.is_empty() {
        tracing::info!(
            "no API keys: open mode, anyone who reaches this server joins any room without a token"
        );
    } else if signal.anonymous {
        tracing::warn!("--dev: joins without a token are accepted; tokens are checked when given");
    } else {
        tracing::info!("joins need an access token signed with one of the configured API keys");
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

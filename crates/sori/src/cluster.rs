//! `sori media --redis …`: the media node announces itself in the cluster's Redis (its control
//! URL, capacity and load, every second), and on SIGTERM/SIGINT drains — it takes no new rooms,
//! session servers move its participants to other nodes — before it withdraws and stops.
//!
//! `sori signal --redis …`: the session server announces itself too, and shares rooms with
//! the other session servers over Redis ([`session_bus`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use sori_cluster::{Heard, NodeInfo, Registry, SessionNode};
use sori_net::{MediaHandle, MediaServer};
use sori_signal::bus::{BoxFuture, Incoming, Owner, SessionBus};

use tokio::sync::Notify;

use crate::config::Config;

/// How often a node announces itself (its announcement lasts three of these).
const BEAT: Duration = Duration::from_secs(1);
/// How often a draining node counts the participants it still has.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// This media node's number among the cluster's (from Redis; a random one when Redis does not
/// answer within a few seconds: unique enough among the nodes a room links).
pub async fn node_number(redis: &str) -> Result<u16, String> {
    let registry = Registry::connect(redis).map_err(|e| format!("--redis: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), registry.node_number()).await {
        Ok(Ok(n)) => Ok(n),
        failed => {
            let n = random_node_number();
            tracing::warn!(
                "no node number from Redis ({}): {n} at random",
                match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".into(),
                }
            );
            Ok(n)
        }
    }
}

fn random_node_number() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % 65535 + 1) as u16
}

/// Starts announcing this media node (control API on `control`) in Redis at `redis`; the
/// future returned resolves once the node was asked to stop, drained and withdrawn.
pub fn announce(
    config: &Config,
    media: &MediaServer,
    control: SocketAddr,
    redis: &str,
    drain: Arc<Notify>,
) -> Result<impl Future<Output = ()> + Send + 'static, String> {
    let registry = Registry::connect(redis).map_err(|e| format!("--redis: {e}"))?;
    let c = &config.cluster;
    let id = if c.node_id.is_empty() {
        default_id(control.port())
    } else {
        c.node_id.clone()
    };
    let advertised: Vec<String> = media
        .candidates
        .iter()
        .map(|a| a.ip().to_string())
        .collect();
    let control_url = match &c.node_url {
        Some(u) => u.clone(),
        None => {
            let ip = if control.ip().is_unspecified() {
                media
                    .candidates
                    .first()
                    .map(|a| a.ip())
                    .ok_or("no advertised address for the node's control URL: set --node-url")?
            } else {
                control.ip()
            };
            format!(
                "ws://{}{}",
                SocketAddr::new(ip, control.port()),
                config.kurento.path
            )
        }
    };
    tracing::info!(
        node = id,
        url = control_url,
        "media node of a cluster: announcing itself in Redis"
    );
    let draining = Arc::new(AtomicBool::new(false));
    let state = State {
        handle: media.handle.clone(),
        info: NodeInfo {
            id,
            control_url,
            advertised,
            capacity: c.capacity,
            load: 0,
            draining: false,
        },
        draining: draining.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let beat_now = Arc::new(Notify::new());
    let beat = {
        let (state, beat_now) = (state.clone(), beat_now.clone());
        tokio::spawn(async move {
            sori_cluster::heartbeat(
                registry,
                BEAT,
                move || state.clone().now(),
                &beat_now,
                async move {
                    let _ = stopped.await;
                },
            )
            .await
        })
    };
    let timeout = c.drain_timeout;
    // One listener for the process's life: a second SIGTERM is a new one, never the first
    // seen again by a listener made after it.
    let mut stops = Stops::new().map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = stops.next() => tracing::info!("asked to stop: draining first"),
            _ = drain.notified() => tracing::info!("drain asked for (POST /drain)"),
        }
        draining.store(true, Ordering::SeqCst);
        // Said at once (after a beat in flight, which read the old state), not at the next
        // beat: no new room comes here from now on.
        beat_now.notify_one();
        tracing::info!(
            "draining: {} participants to move to other nodes (at most {}s)",
            state.load().await,
            timeout.as_secs()
        );
        let drained = async {
            while state.load().await > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, drained) => match r {
                Ok(()) => tracing::info!("drained: every participant moved"),
                Err(_) => tracing::warn!("drain timeout: stopping with {} participants", state.load().await),
            },
            _ = stops.next() => tracing::warn!("asked again: stopping without waiting"),
        }
        let _ = stop.send(());
        let _ = beat.await;
    })
}

/// `POST /drain` on the control API's address: the node drains as on SIGTERM, and stops once
/// drained. From loopback only, or with `Authorization: Bearer <the control API's token>`
/// when it has one.
pub fn drain_route(drain: Arc<Notify>, token: Option<String>) -> axum::routing::MethodRouter {
    axum::routing::post(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap| {
            let (drain, token) = (drain.clone(), token.clone());
            async move {
                let allowed = match &token {
                    Some(t) => sori_signal::http::bearer(&headers).is_some_and(|b| {
                        sori_signal::metrics::constant_time_eq(b.as_bytes(), t.as_bytes())
                    }),
                    None => peer.ip().is_loopback(),
                };
                if !allowed {
                    let why = match token {
                        Some(_) => {
                            "a drain needs the control API's token (Authorization: Bearer)\n"
                        }
                        None => "a drain is asked for from this machine (loopback) only\n",
                    };
                    return (StatusCode::FORBIDDEN, why);
                }
                drain.notify_one();
                (
                    StatusCode::ACCEPTED,
                    "draining: no new rooms; stopping once empty\n",
                )
            }
        },
    )
}

/// SIGTERM and SIGINT, each one once.
struct Stops {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stops {
    fn new() -> std::io::Result<Stops> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Stops {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// What the heartbeat reads at each beat.
#[derive(Clone)]
struct State {
    handle: MediaHandle,
    info: NodeInfo,
    draining: Arc<AtomicBool>,
}

impl State {
    /// The participants this node has now.
    async fn load(&self) -> u32 {
        match self.handle.stats().await {
            Ok(s) => s.rooms.iter().map(|(_, n)| *n as u32).sum(),
            Err(_) => 0,
        }
    }

    async fn now(self) -> NodeInfo {
        NodeInfo {
            load: self.load().await,
            draining: self.draining.load(Ordering::SeqCst),
            ..self.info
        }
    }
}

/// `<host name>-<control port>`, with what a node id cannot hold replaced.
fn default_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let host = if host.is_empty() { "sori".into() } else { host };
    format!("{host}-{port}")
}

/// `sori signal --redis …`: `app` shares rooms with the other session servers announced in
/// Redis ([`sori_signal::Signal::with_bus`]). Returns it, and a future that announces this
/// server every beat until `stop` resolves, then withdraws it.
pub fn share_rooms(
    app: sori_signal::Signal,
    config: &Config,
    redis: &str,
    port: u16,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        sori_signal::Signal,
        impl Future<Output = ()> + Send + 'static,
    ),
    String,
> {
    let id = if config.cluster.node_id.is_empty() {
        default_id(port)
    } else {
        config.cluster.node_id.clone()
    };
    let node = SessionNode::connect(redis, &id).map_err(|e| format!("--redis: {e}"))?;
    tracing::info!(
        node = id,
        "session server of a cluster: rooms shared over Redis"
    );
    let (heard_tx, mut heard) = tokio::sync::mpsc::channel(BUS_QUEUE);
    let (incoming_tx, incoming) = tokio::sync::mpsc::channel(BUS_QUEUE);
    let listening = tokio::spawn(node.clone().listen(heard_tx)).abort_handle();
    let left = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Some(h) = heard.recv().await {
            let i = match h {
                Heard::Message(m) => Incoming::Message(m),
                Heard::Reset => Incoming::Reset,
            };
            if incoming_tx.send(i).await.is_err() {
                return;
            }
        }
    });
    let beating = node.clone();
    let gone = left.clone();
    let beat = async move {
        let beats = async {
            let mut tick = tokio::time::interval(BEAT);
            loop {
                tick.tick().await;
                if gone.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = beating.announce(BEAT * 3).await {
                    tracing::warn!("session node not announced: {e}");
                }
            }
        };
        tokio::select! {
            _ = beats => {}
            _ = stop => {}
        }
        if let Err(e) = beating.withdraw().await {
            tracing::warn!("session node not withdrawn: {e}");
        }
    };
    let bus = RedisBus {
        node,
        listening,
        left,
    };
    Ok((app.with_bus(Arc::new(bus), incoming), beat))
}

/// Messages from other session servers not handled yet, at most (past it the subscription
/// waits, and Redis holds them).
const BUS_QUEUE: usize = 4096;

/// The session bus on Redis.
struct RedisBus {
    node: SessionNode,
    /// The task listening on this server's channel.
    listening: tokio::task::AbortHandle,
    /// Set once this server left: the heartbeat stops.
    left: Arc<AtomicBool>,
}

impl SessionBus for RedisBus {
    fn node(&self) -> &str {
        self.node.id()
    }

    fn owner<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Owner, String>> {
        Box::pin(async move {
            let id = self.node.owner(room).await.map_err(|e| e.to_string())?;
            Ok(if id == self.node.id() {
                Owner::Here
            } else {
                Owner::Node(id)
            })
        })
    }

    fn keep(
        &self,
        rooms: Vec<(String, Option<Vec<u8>>)>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move { self.node.keep(&rooms).await.map_err(|e| e.to_string()) })
    }

    fn load<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { self.node.load(room).await.map_err(|e| e.to_string()) })
    }

    fn publish<'a>(&'a self, to: &'a str, message: Vec<u8>) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            self.node
                .publish(to, &message)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn alive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(self.node.alive(id))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move { self.node.nodes().await.map_err(|e| e.to_string()) })
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.left.store(true, Ordering::SeqCst);
            // Its channel's subscription ends with the task: others find it gone at once.
            self.listening.abort();
            if let Err(e) = self.node.withdraw().await {
                tracing::warn!("session node not withdrawn: {e}");
            }
        })
    }
}

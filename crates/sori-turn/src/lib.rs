//! # sori-turn — the TURN/STUN server embedded in `sori serve`
//!
//! Browsers that cannot reach the media server's UDP port directly (symmetric NATs, firewalls
//! that pass only TCP) relay their media through TURN. [`TurnServer::start`] runs one on a
//! UDP and a TCP socket on the same port, using the [`turn`] crate of webrtc-rs for the protocol;
//! this crate adds what a conferencing server needs around it:
//!
//! - [`credentials`]: time-limited usernames and passwords from a shared secret (the TURN REST
//!   API convention coturn calls `use-auth-secret`), so the session server can hand each
//!   participant its own credential and coturn can replace this server without changes.
//! - [`policy`]: the relay reaches public addresses and the server's own, never the operator's
//!   private network unless allowed ([`RelayPolicy`]).
//! - Limits on what one credential can take: caps on the allocations open at once per username
//!   and per client address ([`AllocationLimits`]), and revocation of a participant's
//!   credentials when it leaves ([`TurnMonitor::revoke`]), so credentials cannot be farmed to
//!   fill the relay port range.
//! - TURN over TCP, which the `turn` crate's server does not do itself: a framing layer that
//!   makes a TCP listener look like the datagram socket the crate reads.
//! - TURN over TLS ([`tls`]) on a listener of its own when a certificate is given: the same
//!   framing after a TLS handshake.
//! - Limits and revocation: allocations capped per username and per client address, and the
//!   credentials of a participant who left refused (`TurnMonitor::revoke`).
//! - Answers from the right address: the UDP listener reads each request's destination address
//!   and answers from it, so a multi-homed host answers from the address it was asked on.
//!
//! Peers are always reached over UDP (no RFC 6062 TCP allocations), from IPv4 relay addresses.

#![forbid(unsafe_code)]

mod addressed;
mod auth;
pub mod credentials;
mod guard;
pub mod policy;
mod quota;
mod revocation;
mod tcp;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use turn::allocation::AllocationInfo;
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::vnet::net::Net;
use webrtc_util::Conn;

pub use credentials::Credential;
pub use policy::{IpPrefix, RelayPolicy};
pub use quota::AllocationLimits;
pub use tls::{TlsError, TurnTls};
pub use tokio_rustls::rustls;

/// Settings of the embedded TURN server.
#[derive(Clone)]
pub struct TurnConfig {
    /// The UDP and TCP address clients reach (port 0: a free port, the same for both).
    pub listen: SocketAddr,
    /// The address relay sockets bind.
    pub relay_bind: IpAddr,
    /// The address announced to clients as their relayed address (the advertised IP).
    pub relay_ip: IpAddr,
    /// The UDP ports relay sockets use.
    pub relay_ports: RangeInclusive<u16>,
    /// The shared secret credentials are signed with.
    pub secret: String,
    /// The realm of long-term credentials.
    pub realm: String,
    /// Non-public peers the relay may still reach; the relay's own ports always are.
    pub allow: Vec<IpPrefix>,
    /// Further addresses of this server peers may reach, e.g. the media port.
    pub own: Vec<SocketAddr>,
    /// TURN over TLS on a TCP listener of its own; `None`: no TLS.
    pub tls: Option<TurnTls>,
    /// Caps on the allocations one username and one client address hold at once.
    pub limits: AllocationLimits,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("listen", &self.listen)
            .field("relay_bind", &self.relay_bind)
            .field("relay_ip", &self.relay_ip)
            .field("relay_ports", &self.relay_ports)
            .field("secret", &"<set>")
            .field("realm", &self.realm)
            .field("allow", &self.allow)
            .field("own", &self.own)
            .field("tls", &self.tls)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Why the TURN server did not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("cannot listen for TURN on {transport} {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TURN relay ports {0:?}: give a range of non-zero ports, lowest first")]
    RelayPorts(RangeInclusive<u16>),
    #[error("the TURN secret is empty")]
    NoSecret,
    #[error("cannot start the TURN server: {0}")]
    Start(String),
}

/// A running TURN server; [`TurnServer::shutdown`] stops it.
pub struct TurnServer {
    monitor: TurnMonitor,
    /// The sockets and listeners clients reach the server on, closed by [`Self::shutdown`].
    transports: Vec<Arc<dyn Conn + Send + Sync>>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

/// What a running TURN server reports (see [`TurnMonitor::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations now open.
    pub allocations: usize,
    /// CreatePermission and ChannelBind requests and Send indications refused because their
    /// peer is not one the relay may reach, since the start.
    pub peers_refused: u64,
    /// Allocate requests refused with 486 because their username or client address held its
    /// cap of allocations ([`AllocationLimits`]), since the start.
    pub quota_refused: u64,
    /// Requests refused with 401 because their credential was revoked, since the start.
    pub revoked_refused: u64,
    /// Participants whose credentials are revoked now ([`TurnMonitor::revoke`]).
    pub revocations: usize,
}

/// A handle on a running server: reads its [`TurnStats`] and revokes credentials; cheap to
/// clone.
#[derive(Clone)]
pub struct TurnMonitor {
    server: Arc<Server>,
    shared: Arc<guard::Shared>,
}

impl TurnMonitor {
    /// The server's counters now; `None` once it stopped.
    pub async fn stats(&self) -> Option<TurnStats> {
        let allocations = self.server.get_allocations_info(None).await.ok()?.len();
        let refusals = &self.shared.refusals;
        Some(TurnStats {
            allocations,
            peers_refused: refusals.peers.load(Ordering::Relaxed),
            quota_refused: refusals.quota.load(Ordering::Relaxed),
            revoked_refused: refusals.revoked.load(Ordering::Relaxed),
            revocations: self.shared.revocations().in_force(unix(SystemTime::now())),
        })
    }

    /// Kills the credentials of `participant` (the id part of `<expiry>:<id>` usernames), e.g.
    /// when it left its room: from now on an Allocate, Refresh, CreatePermission or ChannelBind
    /// with any of its credentials expiring at or before `until` is refused with 401, and the
    /// allocations open with them are ended now, freeing their relay ports.
    ///
    /// `until` is the latest expiry of a credential issued to the participant (issue time plus
    /// the TTL, or later); the revocation is forgotten then, when every credential it covers has
    /// expired anyway. Returns once the allocations are closed (at once if the server stopped).
    /// An Allocate the crate is answering while this runs can escape the sweep; its Refresh is
    /// refused, so it ends within its lifetime (10 minutes unless the client asked for more, at
    /// most an hour).
    pub async fn revoke(&self, participant: &str, until: SystemTime) {
        let until = unix(until);
        self.shared
            .revocations()
            .revoke(participant, until, unix(SystemTime::now()));
        let Ok(open) = self.server.get_allocations_info(None).await else {
            return;
        };
        let mut usernames: Vec<String> = open
            .into_values()
            .map(|info| info.username)
            .filter(|u| {
                credentials::participant(u) == Some(participant)
                    && credentials::expiry(u).is_some_and(|e| e <= until)
            })
            .collect();
        usernames.sort_unstable();
        usernames.dedup();
        for username in usernames {
            tracing::debug!(username, "TURN credential revoked: its allocations end");
            if let Err(e) = self.server.delete_allocations_by_username(username).await {
                tracing::debug!("TURN revocation: {e}");
            }
        }
    }
}

impl std::fmt::Debug for TurnMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnMonitor")
            .field("refusals", &self.shared.refusals)
            .finish_non_exhaustive()
    }
}

/// `t` in unix seconds (0 before the epoch).
fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl TurnServer {
    /// Binds UDP and TCP on `config.listen` (and TLS on `config.tls`) and starts serving.
    pub async fn start(config: TurnConfig) -> Result<TurnServer, TurnError> {
        if config.secret.is_empty() {
            return Err(TurnError::NoSecret);
        }
        let ports = config.relay_ports.clone();
        if *ports.start() == 0 || ports.is_empty() {
            return Err(TurnError::RelayPorts(ports));
        }
        let (udp, tcp) = bind(config.listen).await?;
        let local_addr = udp.local_addr().map_err(|source| TurnError::Bind {
            transport: "UDP",
            addr: config.listen,
            source,
        })?;
        let mut own = vec![(config.relay_ip, ports.clone())];
        own.extend(config.own.iter().map(|a| (a.ip(), a.port()..=a.port())));
        let policy = Arc::new(RelayPolicy {
            allow: config.allow.clone(),
            own,
        });
        let auth = Arc::new(auth::SecretAuth::new(config.secret.clone()));
        let shared = Arc::new(guard::Shared {
            quotas: std::sync::Mutex::new(quota::Quotas::new(config.limits)),
            ..Default::default()
        });
        let tcp = tcp::TcpTransport::new(tcp, auth.clone()).map_err(|source| TurnError::Bind {
            transport: "TCP",
            addr: config.listen,
            source,
        })?;
        // Replies leave from the address each client's datagrams arrived at.
        let udp = addressed::AddressedUdp::new(udp).map_err(|source| TurnError::Bind {
            transport: "UDP",
            addr: config.listen,
            source,
        })?;
        let mut transports: Vec<Arc<dyn Conn + Send + Sync>> = vec![Arc::new(udp), Arc::new(tcp)];
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let (transport, addr) = Self::bind_tls(tls, auth.clone()).await?;
            tls_addr = Some(addr);
            transports.push(transport);
        }
        let net = Arc::new(Net::new(None));
        let mut conn_configs = Vec::new();
        for inner in &transports {
            let local = inner
                .local_addr()
                .map_err(|e| TurnError::Start(e.to_string()))?;
            conn_configs.push(ConnConfig {
                conn: Arc::new(guard::Guarded {
                    inner: inner.clone(),
                    local,
                    policy: policy.clone(),
                    auth: auth.clone(),
                    realm: config.realm.clone(),
                    shared: shared.clone(),
                }),
                relay_addr_generator: Box::new(RelayAddressGeneratorRanges {
                    relay_address: config.relay_ip,
                    min_port: *ports.start(),
                    max_port: *ports.end(),
                    max_retries: 0,
                    address: config.relay_bind.to_string(),
                    net: net.clone(),
                }),
            });
        }
        let closed_tx = Self::release_quotas_of_closed_allocations(shared.clone());
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: auth,
            channel_bind_timeout: std::time::Duration::ZERO,
            alloc_close_notify: Some(closed_tx),
        })
        .await
        .map_err(|e| TurnError::Start(e.to_string()))?;
        Ok(TurnServer {
            monitor: TurnMonitor {
                server: Arc::new(server),
                shared,
            },
            transports,
            local_addr,
            tls_addr,
        })
    }

    /// The TURN-over-TLS listener: its transport, and the address it got.
    async fn bind_tls(
        tls: &TurnTls,
        auth: Arc<auth::SecretAuth>,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), TurnError> {
        let bind_err = |source| TurnError::Bind {
            transport: "TLS",
            addr: tls.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(tls.listen)
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let transport =
            tcp::TcpTransport::with_tls(listener, Some(acceptor), auth).map_err(bind_err)?;
        let transport: Arc<dyn Conn + Send + Sync> = Arc::new(transport);
        Ok((transport, addr))
    }

    /// The crate tells when an allocation ends, for whatever reason: its quota slot is free.
    /// Returns the sender the crate tells it on.
    fn release_quotas_of_closed_allocations(
        shared: Arc<guard::Shared>,
    ) -> tokio::sync::mpsc::Sender<AllocationInfo> {
        let (closed_tx, mut closed) = tokio::sync::mpsc::channel::<AllocationInfo>(64);
        tokio::spawn(async move {
            while let Some(info) = closed.recv().await {
                let t = info.five_tuple;
                shared.quotas().released((t.src_addr, t.dst_addr));
            }
        });
        closed_tx
    }

    /// The UDP and TCP address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// A handle on the server's counters and revocations.
    pub fn monitor(&self) -> TurnMonitor {
        self.monitor.clone()
    }

    /// Stops serving and closes every allocation.
    pub async fn shutdown(self) {
        if let Err(e) = self.monitor.server.close().await {
            tracing::debug!("TURN server close: {e}");
        }
        for t in &self.transports {
            let _ = t.close().await;
        }
    }
}

/// A UDP socket and a TCP listener on the same address. With port 0 the TCP port follows the
/// UDP one; should another program hold it, a few other ports are tried.
async fn bind(
    addr: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), TurnError> {
    let attempts = if addr.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| TurnError::Bind {
                transport: "UDP",
                addr,
                source,
            })?;
        let at = udp.local_addr().map_err(|source| TurnError::Bind {
            transport: "UDP",
            addr,
            source,
        })?;
        match tokio::net::TcpListener::bind(at).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => last = Some(source),
        }
    }
    Err(TurnError::Bind {
        transport: "TCP",
        addr,
        // The loop ran at least once and only falls through after a TCP failure.
        source: last.unwrap_or_else(|| std::io::Error::other("no attempt")),
    })
}

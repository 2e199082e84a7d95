//! # sori-net — the media port
//!
//! Runs the sans-IO [`Sfu`] on a real UDP socket: one tokio task owns the core and the socket,
//! and waits for whichever comes first — a datagram, a command from the session server, or the
//! core's next deadline. Everything else talks to it through a cloneable [`MediaHandle`].
//!
//! With [`MediaConfig::tcp`], the same task also accepts ICE-TCP connections (RFC 6544, RFC 4571
//! framing) for clients whose UDP is blocked; see [`tcp`] for how they are admitted.
//!
//! Replies to commands come back on a oneshot channel; what the core says on its own for a peer
//! (a new offer, connection, removal) comes on that peer's [`PeerSignal`] channel, always after
//! the reply of the command that caused it.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod backend;
pub mod link_wire;
pub mod tcp;
mod udp;
pub mod workers;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sori_sfu::{
    Forwarding, MediaKind, MediaLine, OfferLine, PeerFlow, PeerId, Proto, Sfu, SfuConfig, SfuError,
    SfuEvent, TrackId,
};
use sori_sfu::{Priority, ReceiverStats, View};
use sori_sfu::{TapId, TapPacket};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use sori_media::{MediaStats, PeerSignal, TcpStats};
pub use tcp::TcpConfig;

use crate::tcp::TcpPort;

/// Where the media port listens and what it tells clients.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the UDP socket binds (e.g. `0.0.0.0:40000`; port 0 picks a free one).
    pub bind: SocketAddr,
    /// IPs given to clients as ICE host candidates, with the bound port. Empty: the machine's
    /// first non-loopback address.
    pub advertise: Vec<IpAddr>,
    /// The core's settings; its `candidates` (and `tcp_candidates`) are filled in from
    /// `advertise` and the ports.
    pub sfu: SfuConfig,
    /// ICE-TCP: also accept media over TCP, offered as passive TCP candidates at the advertised
    /// IPs. `None`: UDP only.
    pub tcp: Option<TcpConfig>,
    /// Media workers: threads, each with its own core, sharing the port (see [`workers`]).
    /// 0 or 1: one task on the current runtime does everything (unless `links`).
    pub workers: usize,
    /// This media node's number among the nodes that link rooms (ids of peers and tracks are
    /// unique across them). 0 alone.
    pub node: u16,
    /// Links to other media nodes this one may have at once ([`MediaHandle::link`]); 0: none.
    pub links: usize,
}

/// The media port stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the media server is not running")
    }
}

impl std::error::Error for Stopped {}

/// An error of a media command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The core refused the command.
    Sfu(SfuError),
    /// The media task is gone.
    Stopped,
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaError::Sfu(e) => e.fmt(f),
            MediaError::Stopped => Stopped.fmt(f),
        }
    }
}

impl std::error::Error for MediaError {}

impl From<SfuError> for MediaError {
    fn from(e: SfuError) -> Self {
        MediaError::Sfu(e)
    }
}

/// A peer that joined: its id, the core's answer, and its signal channel.
#[derive(Debug)]
pub struct Joined {
    /// The peer's id in the core.
    pub peer: PeerId,
    /// The SDP answer to the join offer.
    pub answer: String,
    /// What the core says to this peer later.
    pub signals: mpsc::UnboundedReceiver<PeerSignal>,
}

/// A peer whose session the core offered: its id, the offer, and its signal channel.
#[derive(Debug)]
pub struct Offered {
    /// The peer's id in the core.
    pub peer: PeerId,
    /// The SDP offer; the client's answer goes to [`MediaHandle::answer`].
    pub offer: String,
    /// What the core says to this peer later.
    pub signals: mpsc::UnboundedReceiver<PeerSignal>,
}

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

pub(crate) enum Command {
    Join {
        room: String,
        offer: String,
        forwarding: Forwarding,
        receive: bool,
        reply: Reply<Joined>,
    },
    Mute {
        peer: PeerId,
        kind: MediaKind,
        muted: bool,
        reply: Reply<()>,
    },
    OfferNew {
        room: String,
        forwarding: Forwarding,
        lines: Vec<OfferLine>,
        reply: Reply<Offered>,
    },
    Feed {
        sink: PeerId,
        mid: String,
        source: Option<TrackId>,
        reply: Reply<()>,
    },
    Media {
        peer: PeerId,
        reply: Reply<Vec<MediaLine>>,
    },
    Keyframe {
        peer: PeerId,
        reply: Reply<()>,
    },
    Tap {
        track: TrackId,
        reply: Reply<(TapId, mpsc::UnboundedReceiver<TapPacket>)>,
    },
    Untap {
        tap: TapId,
    },
    Subscribe {
        peer: PeerId,
        track: TrackId,
        on: bool,
        reply: Reply<()>,
    },
    Flows {
        peers: Vec<PeerId>,
        reply: oneshot::Sender<Vec<Option<PeerFlow>>>,
    },
    Offer {
        peer: PeerId,
        sdp: String,
        reply: Reply<String>,
    },
    Answer {
        peer: PeerId,
        sdp: String,
        reply: Reply<()>,
    },
    Leave {
        peer: PeerId,
        reply: Reply<()>,
    },
    Stats {
        reply: oneshot::Sender<MediaStats>,
    },
    View {
        peer: PeerId,
        track: TrackId,
        view: View,
        reply: Reply<()>,
    },
    VideoSet {
        peer: PeerId,
        set: Option<BTreeSet<TrackId>>,
        reply: Reply<()>,
    },
    ReceiverStats {
        peer: PeerId,
        reply: Reply<ReceiverStats>,
    },
    Priority {
        track: TrackId,
        priority: Priority,
        reply: Reply<()>,
    },
    Shutdown,
}

/// Commands the media port; cheap to clone.
#[derive(Clone)]
pub struct MediaHandle {
    plane: Arc<Plane>,
}

/// Every worker's command channel, and (with several) where rooms and tracks are.
struct Plane {
    workers: Vec<mpsc::UnboundedSender<Command>>,
    registry: Option<Arc<Mutex<workers::Registry>>>,
    links: Option<Arc<LinkPool>>,
}

/// The lanes for links to other media nodes, those free now, and what a link needs.
struct LinkPool {
    lanes: workers::Lanes,
    registry: Arc<Mutex<workers::Registry>>,
    free: Mutex<Vec<(usize, workers::LaneEnds)>>,
}

/// Messages a link holds each way before it drops packets.
const LINK_QUEUE: usize = 4096;

pub use workers::{LinkEvent, LinkMsg};

/// This node's end of a link to another media node (see [`MediaHandle::link`]).
pub struct Link {
    /// What the other node's end sent, to take in.
    pub from_remote: mpsc::Sender<LinkMsg>,
    /// What this end sends to the other node's.
    pub to_remote: mpsc::Receiver<LinkMsg>,
    /// The other node's tracks as the room's workers here have them: imported, or ended.
    pub events: mpsc::Receiver<LinkEvent>,
}

impl MediaHandle {
    /// Links `room` here to the same room on another media node: what this end sends
    /// (the tracks published here, their packets, keyframe requests for the other node's
    /// tracks) comes out of [`Link::to_remote`]; what the other node's end sent goes into
    /// [`Link::from_remote`]. The link ends when either is dropped. `None`: no free link (see
    /// [`MediaConfig::links`]).
    pub fn link(&self, room: &str) -> Option<Link> {
        let pool = self.plane.links.clone()?;
        let (lane, ends) = pool.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let (to_remote, out) = mpsc::channel(LINK_QUEUE);
        let (into, from_remote) = mpsc::channel(LINK_QUEUE);
        let (events_tx, events) = mpsc::channel(LINK_QUEUE);
        let room = room.to_string();
        tokio::spawn(async move {
            let ends = workers::link(
                lane,
                room,
                pool.registry.clone(),
                pool.lanes.clone(),
                ends,
                workers::LinkIo {
                    to_remote,
                    from_remote,
                    events: events_tx,
                },
            )
            .await;
            pool.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((lane, ends));
        });
        Some(Link {
            from_remote: into,
            to_remote: out,
            events,
        })
    }
}

impl Plane {
    fn worker_of(&self, id: u64) -> usize {
        workers::worker_of(id, self.workers.len())
    }

    /// The worker a command goes to.
    fn target(&self, command: &Command) -> usize {
        match command {
            Command::Join { room, .. } | Command::OfferNew { room, .. } => {
                self.registry.as_ref().map_or(0, |r| {
                    r.lock().unwrap_or_else(|e| e.into_inner()).place(room)
                })
            }
            Command::Mute { peer, .. }
            | Command::Media { peer, .. }
            | Command::Keyframe { peer, .. }
            | Command::Subscribe { peer, .. }
            | Command::Offer { peer, .. }
            | Command::Answer { peer, .. }
            | Command::Leave { peer, .. }
            | Command::View { peer, .. }
            | Command::VideoSet { peer, .. }
            | Command::ReceiverStats { peer, .. } => self.worker_of(peer.0),
            Command::Feed { sink, .. } => self.worker_of(sink.0),
            Command::Tap { track, .. } | Command::Priority { track, .. } => self.worker_of(track.0),
            Command::Untap { tap } => self.worker_of(tap.0),
            Command::Flows { .. } | Command::Stats { .. } | Command::Shutdown => 0,
        }
    }

    fn send(&self, command: Command) -> Result<(), MediaError> {
        let w = self.target(&command);
        if let Command::Priority {
            track, priority, ..
        } = &command
        {
            // Copies of the track on other workers weigh it the same.
            for (_, other) in self.workers.iter().enumerate().filter(|(i, _)| *i != w) {
                let (reply, _) = oneshot::channel();
                let _ = other.send(Command::Priority {
                    track: *track,
                    priority: *priority,
                    reply,
                });
            }
        }
        self.workers[w]
            .send(command)
            .map_err(|_| MediaError::Stopped)
    }
}

impl MediaHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.plane.send(make(reply))?;
        rx.await
            .map_err(|_| MediaError::Stopped)?
            .map_err(MediaError::Sfu)
    }

    /// Joins `room` with a first SDP offer.
    pub async fn join(&self, room: &str, offer: &str) -> Result<Joined, MediaError> {
        self.join_with(room, offer, Forwarding::Automatic).await
    }

    /// Joins `room` with the given forwarding (see [`Sfu::join_with`]).
    pub async fn join_with(
        &self,
        room: &str,
        offer: &str,
        forwarding: Forwarding,
    ) -> Result<Joined, MediaError> {
        self.join_as(room, offer, forwarding, true).await
    }

    /// Joins `room`; the peer receives the room's tracks only when `receive` is true (see
    /// [`Sfu::join_as`]).
    pub async fn join_as(
        &self,
        room: &str,
        offer: &str,
        forwarding: Forwarding,
        receive: bool,
    ) -> Result<Joined, MediaError> {
        let (room, offer) = (room.to_string(), offer.to_string());
        self.call(|reply| Command::Join {
            room,
            offer,
            forwarding,
            receive,
            reply,
        })
        .await
    }

    /// Stops or resumes forwarding the peer's media of `kind` (see [`Sfu::set_muted`]).
    pub async fn set_muted(
        &self,
        peer: PeerId,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Mute {
            peer,
            kind,
            muted,
            reply,
        })
        .await
    }

    /// A new peer whose session the core offers (see [`Sfu::offer_with`]).
    pub async fn offer_new(
        &self,
        room: &str,
        forwarding: Forwarding,
        lines: Vec<OfferLine>,
    ) -> Result<Offered, MediaError> {
        let room = room.to_string();
        self.call(|reply| Command::OfferNew {
            room,
            forwarding,
            lines,
            reply,
        })
        .await
    }

    /// Forwards `source` (or nothing) into the sink's m-line `mid` (see [`Sfu::feed`]).
    pub async fn feed(
        &self,
        sink: PeerId,
        mid: &str,
        source: Option<TrackId>,
    ) -> Result<(), MediaError> {
        let mid = mid.to_string();
        self.call(|reply| Command::Feed {
            sink,
            mid,
            source,
            reply,
        })
        .await
    }

    /// Every packet of `track`, for recording, until the receiver is dropped or
    /// [`MediaHandle::untap`].
    pub async fn tap(
        &self,
        track: TrackId,
    ) -> Result<(TapId, mpsc::UnboundedReceiver<TapPacket>), MediaError> {
        self.call(|reply| Command::Tap { track, reply }).await
    }

    /// Stops a tap.
    pub fn untap(&self, tap: TapId) {
        let _ = self.plane.send(Command::Untap { tap });
    }

    /// Makes the peer receive `track` on an m-line of its own, added by renegotiation (`on`),
    /// or stops it (see [`Sfu::subscribe`]).
    pub async fn subscribe(
        &self,
        peer: PeerId,
        track: TrackId,
        on: bool,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Subscribe {
            peer,
            track,
            on,
            reply,
        })
        .await
    }

    /// Asks the sources of the peer's incoming video for a keyframe.
    pub async fn request_keyframe(&self, peer: PeerId) -> Result<(), MediaError> {
        self.call(|reply| Command::Keyframe { peer, reply }).await
    }

    /// The peer's m-lines.
    pub async fn media(&self, peer: PeerId) -> Result<Vec<MediaLine>, MediaError> {
        self.call(|reply| Command::Media { peer, reply }).await
    }

    /// Packet counts of several peers at once (`None` for one that is gone).
    pub async fn flows(&self, peers: Vec<PeerId>) -> Result<Vec<Option<PeerFlow>>, Stopped> {
        // Each worker answers for its own peers; the answers are put back in order.
        let mut asked = Vec::new();
        for (w, tx) in self.plane.workers.iter().enumerate() {
            let mine: Vec<usize> = (0..peers.len())
                .filter(|i| self.plane.worker_of(peers[*i].0) == w)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let ask = mine.iter().map(|i| peers[*i]).collect();
            tx.send(Command::Flows { peers: ask, reply })
                .map_err(|_| Stopped)?;
            asked.push((mine, rx));
        }
        let mut flows = vec![None; peers.len()];
        for (mine, rx) in asked {
            for (i, f) in mine.into_iter().zip(rx.await.map_err(|_| Stopped)?) {
                flows[i] = f;
            }
        }
        Ok(flows)
    }

    /// A later offer from the peer; returns the answer.
    pub async fn offer(&self, peer: PeerId, sdp: &str) -> Result<String, MediaError> {
        let sdp = sdp.to_string();
        self.call(|reply| Command::Offer { peer, sdp, reply }).await
    }

    /// The peer's answer to a [`PeerSignal::Offer`].
    pub async fn answer(&self, peer: PeerId, sdp: &str) -> Result<(), MediaError> {
        let sdp = sdp.to_string();
        self.call(|reply| Command::Answer { peer, sdp, reply })
            .await
    }

    /// The peer leaves.
    pub async fn leave(&self, peer: PeerId) -> Result<(), MediaError> {
        self.call(|reply| Command::Leave { peer, reply }).await
    }

    /// How the peer shows `track` (see [`Sfu::set_view`]).
    pub async fn set_view(
        &self,
        peer: PeerId,
        track: TrackId,
        view: View,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::View {
            peer,
            track,
            view,
            reply,
        })
        .await
    }

    /// The only videos forwarded to the peer (last-N; see [`Sfu::set_video_set`]).
    pub async fn set_video_set(
        &self,
        peer: PeerId,
        set: Option<BTreeSet<TrackId>>,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::VideoSet { peer, set, reply })
            .await
    }

    /// Whether `track` is a screen share or a camera (see [`Sfu::set_priority`]).
    pub async fn set_priority(&self, track: TrackId, priority: Priority) -> Result<(), MediaError> {
        self.call(|reply| Command::Priority {
            track,
            priority,
            reply,
        })
        .await
    }

    /// What the peer receives (see [`Sfu::receiver_stats`]).
    pub async fn receiver_stats(&self, peer: PeerId) -> Result<ReceiverStats, MediaError> {
        self.call(|reply| Command::ReceiverStats { peer, reply })
            .await
    }

    /// Counters and state sizes.
    pub async fn stats(&self) -> Result<MediaStats, Stopped> {
        let mut asked = Vec::new();
        for tx in &self.plane.workers {
            let (reply, rx) = oneshot::channel();
            tx.send(Command::Stats { reply }).map_err(|_| Stopped)?;
            asked.push(rx);
        }
        let mut total: Option<MediaStats> = None;
        for rx in asked {
            let s = rx.await.map_err(|_| Stopped)?;
            match &mut total {
                None => total = Some(s),
                Some(t) => {
                    t.counters.absorb(&s.counters);
                    t.state.absorb(&s.state);
                    t.layers.absorb(&s.layers);
                    // A room on several workers: its participants on each.
                    for (room, n) in s.rooms {
                        match t.rooms.iter_mut().find(|(r, _)| *r == room) {
                            Some((_, m)) => *m += n,
                            None => t.rooms.push((room, n)),
                        }
                    }
                }
            }
        }
        total.ok_or(Stopped)
    }

    /// Stops the media task (every peer's session ends with it).
    pub fn shutdown(&self) {
        for tx in &self.plane.workers {
            let _ = tx.send(Command::Shutdown);
        }
    }
}

/// A running media port.
pub struct MediaServer {
    /// Commands the core.
    pub handle: MediaHandle,
    /// The bound UDP address.
    pub local_addr: SocketAddr,
    /// The ICE candidates clients are given.
    pub candidates: Vec<SocketAddr>,
    /// The bound ICE-TCP listener address, when TCP is on.
    pub tcp_addr: Option<SocketAddr>,
    /// The passive TCP candidates clients are given.
    pub tcp_candidates: Vec<SocketAddr>,
    /// The task; ends on [`MediaHandle::shutdown`].
    pub task: JoinHandle<()>,
}

/// Binds the media port and starts its task on the current tokio runtime.
pub async fn start(mut config: MediaConfig) -> io::Result<MediaServer> {
    // An IPv6 address to advertise needs an IPv6 socket: `[::]` takes both families.
    if config.bind.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        && config.advertise.iter().any(IpAddr::is_ipv6)
    {
        config
            .bind
            .set_ip(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    }
    let (socket, listener) = bind(&config).await?;
    let local_addr = socket.local_addr()?;
    let tcp_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let ips = if config.advertise.is_empty() {
        vec![first_non_loopback_ip()]
    } else {
        config.advertise.clone()
    };
    let candidates: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, local_addr.port()))
        .collect();
    let tcp_candidates: Vec<SocketAddr> = tcp_addr
        .map(|t| {
            ips.iter()
                .map(|ip| SocketAddr::new(*ip, t.port()))
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(%local_addr, ?candidates, ?tcp_addr, ?tcp_candidates, "media port open");
    let mut sfu_config = config.sfu;
    sfu_config.candidates = candidates.clone();
    sfu_config.tcp_candidates = tcp_candidates.clone();
    let sfu = Sfu::new(sfu_config.clone());
    let tcp = listener.map(|l| {
        TcpPort::new(
            l,
            config.tcp.clone().unwrap_or_default(),
            tcp_candidates.clone(),
        )
    });
    for c in &candidates {
        if !udp::is_local(c.ip()) {
            tracing::warn!(
                candidate = %c,
                "the advertised address is not one of this host's: right behind a 1:1 NAT that \
                 forwards it here, otherwise no client can reach the media port there"
            );
        }
    }
    let routes = udp::Routes::new(local_addr, candidates.clone(), udp::is_local);
    let n = config.workers.max(1);
    let (handle, task) = if n == 1 && config.links == 0 {
        let socket = udp::MediaSocket::new(socket, routes)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(socket, tcp, sfu, rx));
        let plane = Plane {
            workers: vec![tx],
            registry: None,
            links: None,
        };
        (
            MediaHandle {
                plane: Arc::new(plane),
            },
            task,
        )
    } else {
        drop(sfu);
        start_workers(
            n,
            socket,
            routes,
            tcp,
            sfu_config,
            config.node,
            config.links,
        )?
    };
    Ok(MediaServer {
        handle,
        local_addr,
        candidates,
        tcp_addr,
        tcp_candidates,
        task,
    })
}

/// Starts `n` media workers (threads) and the task that receives for them.
fn start_workers(
    n: usize,
    socket: UdpSocket,
    routes: udp::Routes,
    tcp: Option<TcpPort>,
    sfu_config: SfuConfig,
    node: u16,
    links: usize,
) -> io::Result<(MediaHandle, JoinHandle<()>)> {
    let registry = Arc::new(Mutex::new(workers::Registry::new(n)));
    let (lanes, mut ends) = workers::lanes(n + links);
    // The lanes past the workers' are for links to other media nodes.
    let link_ends: Vec<(usize, workers::LaneEnds)> = ends
        .drain(n..)
        .enumerate()
        .map(|(i, e)| (n + i, e))
        .collect();
    let link_pool = Arc::new(LinkPool {
        lanes: lanes.clone(),
        registry: registry.clone(),
        free: Mutex::new(link_ends),
    });
    let (to_receiver, from_workers) = mpsc::unbounded_channel();
    let (tcp_out, tcp_in) = workers::tcp_lane();
    let tcp_stats = Arc::new(Mutex::new(TcpStats::default()));
    let std_socket = socket.into_std()?;
    let mut commands = Vec::new();
    let mut threads = Vec::new();
    for (i, (media_rx, control_rx)) in ends.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        let worker = workers::Worker {
            index: i,
            sfu: Sfu::new(SfuConfig {
                first_id: workers::first_id(node, i),
                ..sfu_config.clone()
            }),
            registry: registry.clone(),
            lanes: lanes.clone(),
            media_rx,
            control_rx,
            commands: rx,
            to_receiver: to_receiver.clone(),
            tcp_out: tcp_out.clone(),
            tcp_stats: tcp_stats.clone(),
        };
        let socket = std_socket.try_clone()?;
        let routes = routes.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sori-media-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(worker.run(socket, routes)),
                    Err(e) => tracing::error!("media worker {i}: no runtime: {e}"),
                }
            })?;
        threads.push(thread);
    }
    drop(to_receiver);
    let socket = udp::MediaSocket::new(UdpSocket::from_std(std_socket)?, routes)?;
    let mut worker_lanes = lanes.clone();
    worker_lanes.media.truncate(n);
    worker_lanes.control.truncate(n);
    let receiver = workers::receive(socket, tcp, worker_lanes, from_workers, tcp_in, tcp_stats);
    let task = tokio::spawn(async move {
        receiver.await;
        // Every worker has stopped (its channel to the receiver closed).
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    });
    tracing::info!(workers = n, "media workers started");
    let plane = Plane {
        workers: commands,
        registry: Some(registry),
        links: Some(link_pool),
    };
    Ok((
        MediaHandle {
            plane: Arc::new(plane),
        },
        task,
    ))
}

/// Tries for a free UDP port whose number is also free on TCP, when both are left to the OS.
const BIND_ATTEMPTS: usize = 20;

/// Binds the UDP socket and, with ICE-TCP on, the TCP listener (by default on the same port
/// number as UDP).
async fn bind(config: &MediaConfig) -> io::Result<(UdpSocket, Option<TcpListener>)> {
    let Some(tcp) = &config.tcp else {
        return Ok((UdpSocket::bind(config.bind).await?, None));
    };
    let ip = config.bind.ip();
    if let Some(port) = tcp.port {
        let socket = UdpSocket::bind(config.bind).await?;
        return Ok((socket, Some(TcpListener::bind((ip, port)).await?)));
    }
    let mut attempt = 0;
    loop {
        let socket = UdpSocket::bind(config.bind).await?;
        let port = socket.local_addr()?.port();
        match TcpListener::bind((ip, port)).await {
            Ok(listener) => return Ok((socket, Some(listener))),
            // A port picked for UDP may be taken on TCP: pick another.
            Err(e) if config.bind.port() == 0 && attempt < BIND_ATTEMPTS => {
                tracing::debug!(port, "TCP port taken, picking another: {e}");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `ip` is an address of this host (a socket can be bound to it).
pub fn is_local_address(ip: IpAddr) -> bool {
    udp::is_local(ip)
}

/// The machine's first non-loopback IPv4 address (what clients on other machines can reach),
/// or 127.0.0.1 when it has none.
pub fn first_non_loopback_ip() -> IpAddr {
    let found = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback());
    found.unwrap_or_else(|| {
        tracing::warn!("no non-loopback address found; advertising 127.0.0.1 (set --advertise-ip)");
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    })
}

/// Datagrams read per wake-up before the core's output is flushed.
pub(crate) const RECV_BATCH: usize = 64;

async fn run(
    mut socket: udp::MediaSocket,
    mut tcp: Option<TcpPort>,
    mut sfu: Sfu,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut peers: HashMap<PeerId, mpsc::UnboundedSender<PeerSignal>> = HashMap::new();
    let mut taps: HashMap<TapId, mpsc::UnboundedSender<TapPacket>> = HashMap::new();
    let mut batch = Vec::with_capacity(FLUSH_CHUNK);
    let mut frames = Vec::new();
    loop {
        flush(&socket, tcp.as_mut(), &mut sfu, &mut batch, &mut frames).await;
        while let Some(event) = sfu.poll_event() {
            if let (SfuEvent::PeerRemoved { peer, .. }, Some(tcp)) = (&event, tcp.as_mut()) {
                tcp.peer_removed(*peer);
            }
            dispatch(event, &mut peers);
        }
        while let Some(packet) = sfu.poll_tap() {
            let tap = packet.tap;
            let gone = taps.get(&tap).is_none_or(|tx| tx.send(packet).is_err());
            if gone {
                taps.remove(&tap);
                sfu.untap(tap);
            }
        }
        let mut deadline = sfu
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let tcp_deadline = tcp.as_mut().and_then(|t| t.next_deadline());
        if let Some(at) = tcp_deadline {
            deadline = deadline.min(at);
        }
        let tcp_input = async {
            match tcp.as_mut() {
                Some(t) => t.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            readable = socket.readable() => {
                if let Err(e) = readable {
                    tracing::debug!("media socket: {e}");
                    continue;
                }
                let mut read = 0;
                while read < RECV_BATCH {
                    let now = Instant::now();
                    match socket.try_recv(|source, destination, datagram| {
                        sfu.handle_datagram(now, source, destination, datagram)
                    }) {
                        Ok(n) => read += n.max(1),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!("media socket receive: {e}");
                            break;
                        }
                    }
                }
            }
            input = tcp_input => {
                if let Some(tcp) = tcp.as_mut() {
                    tcp.handle(input, &mut sfu, Instant::now());
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                let tcp_stats = tcp.as_ref().map(|t| t.stats()).unwrap_or_default();
                let handled =
                    handle_command(command, &mut sfu, &mut peers, &mut taps, tcp_stats, &mut |_, _| {});
                if !handled.1 {
                    break;
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let now = Instant::now();
                if let Some(tcp) = tcp.as_mut() {
                    tcp.expire(now);
                }
                sfu.handle_timeout(now);
            }
        }
    }
    tracing::info!("media port closed");
}

/// Datagrams taken from the core before they are sent (in batches: see `udp.rs`).
const FLUSH_CHUNK: usize = 256;

/// Sends what the core has to send: UDP datagrams in batches, ICE-TCP frames to their
/// connections. `batch` is reused from call to call.
async fn flush(
    socket: &udp::MediaSocket,
    tcp: Option<&mut TcpPort>,
    sfu: &mut Sfu,
    batch: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    frames: &mut Vec<sori_sfu::Transmit>,
) {
    flush_udp(socket, sfu, batch, frames).await;
    if let Some(tcp) = tcp {
        for t in frames.drain(..) {
            tcp.send(t);
        }
    }
    frames.clear();
}

/// Sends the core's UDP datagrams in batches; its ICE-TCP frames are left in `frames`.
pub(crate) async fn flush_udp(
    socket: &udp::MediaSocket,
    sfu: &mut Sfu,
    batch: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    frames: &mut Vec<sori_sfu::Transmit>,
) {
    loop {
        batch.clear();
        while batch.len() < FLUSH_CHUNK {
            let Some(t) = sfu.poll_transmit() else { break };
            if t.proto == Proto::Tcp {
                frames.push(t);
                continue;
            }
            batch.push((t.source, t.destination, t.contents));
        }
        if batch.is_empty() {
            return;
        }
        socket.send_all(batch).await;
    }
}

pub(crate) fn dispatch(
    event: SfuEvent,
    peers: &mut HashMap<PeerId, mpsc::UnboundedSender<PeerSignal>>,
) {
    let (peer, signal) = match event {
        SfuEvent::Offer { peer, sdp } => (peer, PeerSignal::Offer(sdp)),
        SfuEvent::Connected { peer } => (peer, PeerSignal::Connected),
        SfuEvent::IceStalled { peer } => (peer, PeerSignal::IceStalled),
        SfuEvent::PeerRemoved { peer, reason } => {
            if let Some(tx) = peers.remove(&peer) {
                let _ = tx.send(PeerSignal::Removed(reason));
            }
            return;
        }
        SfuEvent::TrackPublished { peer, track, kind } => {
            (peer, PeerSignal::Published { track, kind })
        }
        // Sent to the publisher's own task only: the copy of an imported track going away
        // names a publisher this core has no channel for.
        SfuEvent::TrackUnpublished { peer, track } => (peer, PeerSignal::Unpublished { track }),
        // One core imports nothing: no relay to ask.
        SfuEvent::RelayKeyframeRequest { .. } => return,
        SfuEvent::LayersWanted { peer, mid, active } => (peer, PeerSignal::Layers { mid, active }),
        SfuEvent::AudioLevels { peer, sum, packets } => {
            (peer, PeerSignal::AudioLevels { sum, packets })
        }
    };
    if let Some(tx) = peers.get(&peer) {
        let _ = tx.send(signal);
    }
}

/// Whether a command made a peer.
pub(crate) enum Handled {
    Joined { peer: PeerId },
    Other,
}

/// Carries out a command; says whether it made a peer, and false when the task should stop.
/// A reply nobody waits for any more is dropped.
pub(crate) fn handle_command(
    command: Command,
    sfu: &mut Sfu,
    peers: &mut HashMap<PeerId, mpsc::UnboundedSender<PeerSignal>>,
    taps: &mut HashMap<TapId, mpsc::UnboundedSender<TapPacket>>,
    tcp: TcpStats,
    on_sdp: &mut dyn FnMut(PeerId, &str),
) -> (Handled, bool) {
    let mut handled = Handled::Other;
    let now = Instant::now();
    // The channel on which a new peer hears from the core.
    let mut signals_for = |peer: PeerId| {
        let (tx, signals) = mpsc::unbounded_channel();
        peers.insert(peer, tx);
        signals
    };
    match command {
        Command::Join {
            room,
            offer,
            forwarding,
            receive,
            reply,
        } => {
            let result = sfu.join_as(&room, &offer, forwarding, receive, now);
            if let Ok((peer, answer)) = &result {
                // Before the reply: the client checks ICE as soon as it has the answer.
                on_sdp(*peer, answer);
                handled = Handled::Joined { peer: *peer };
            }
            let result = result.map(|(peer, answer)| Joined {
                peer,
                answer,
                signals: signals_for(peer),
            });
            if let Err(Ok(joined)) = reply.send(result) {
                // The caller went away before the reply: the peer has no one to talk to.
                let _ = sfu.leave(joined.peer, now);
            }
        }
        Command::OfferNew {
            room,
            forwarding,
            lines,
            reply,
        } => {
            let result = sfu.offer_with(&room, forwarding, &lines, now);
            if let Ok((peer, offer)) = &result {
                on_sdp(*peer, offer);
                handled = Handled::Joined { peer: *peer };
            }
            let result = result.map(|(peer, offer)| Offered {
                peer,
                offer,
                signals: signals_for(peer),
            });
            if let Err(Ok(offered)) = reply.send(result) {
                let _ = sfu.leave(offered.peer, now);
            }
        }
        Command::Feed {
            sink,
            mid,
            source,
            reply,
        } => drop(reply.send(sfu.feed(sink, &mid, source, now))),
        Command::Mute {
            peer,
            kind,
            muted,
            reply,
        } => drop(reply.send(sfu.set_muted(peer, kind, muted, now))),
        Command::Media { peer, reply } => {
            drop(reply.send(sfu.media(peer).ok_or(SfuError::UnknownPeer(peer))))
        }
        Command::Tap { track, reply } => start_tap(sfu, taps, track, reply, now),
        Command::Untap { tap } => {
            taps.remove(&tap);
            sfu.untap(tap);
        }
        Command::Subscribe {
            peer,
            track,
            on: true,
            reply,
        } => drop(reply.send(sfu.subscribe(peer, track, now))),
        Command::Subscribe {
            peer, track, reply, ..
        } => drop(reply.send(sfu.unsubscribe(peer, track, now))),
        Command::Keyframe { peer, reply } => drop(reply.send(sfu.request_keyframe(peer, now))),
        Command::Flows { peers, reply } => {
            drop(reply.send(peers.iter().map(|p| sfu.flow(*p)).collect()))
        }
        Command::Offer { peer, sdp, reply } => {
            let result = sfu.accept_offer(peer, &sdp, now);
            if let Ok(answer) = &result {
                // An ICE restart's answer carries new credentials.
                on_sdp(peer, answer);
            }
            drop(reply.send(result))
        }
        Command::Answer { peer, sdp, reply } => {
            drop(reply.send(sfu.accept_answer(peer, &sdp, now)))
        }
        Command::Leave { peer, reply } => drop(reply.send(sfu.leave(peer, now))),
        Command::Stats { reply } => drop(reply.send(MediaStats {
            counters: sfu.counters(),
            state: sfu.state(),
            rooms: sfu.rooms().into_iter().collect(),
            tcp,
            layers: sfu.layer_census(),
        })),
        Command::View {
            peer,
            track,
            view,
            reply,
        } => drop(reply.send(sfu.set_view(peer, track, view, now))),
        Command::VideoSet { peer, set, reply } => {
            drop(reply.send(sfu.set_video_set(peer, set, now)))
        }
        Command::Priority {
            track,
            priority,
            reply,
        } => drop(reply.send(sfu.set_priority(track, priority, now))),
        Command::ReceiverStats { peer, reply } => drop(
            reply.send(
                sfu.receiver_stats(peer, now)
                    .ok_or(SfuError::UnknownPeer(peer)),
            ),
        ),
        Command::Shutdown => return (handled, false),
    }
    (handled, true)
}

/// Starts a tap on `track` and replies with its packets; a caller gone before the reply leaves
/// no tap behind.
fn start_tap(
    sfu: &mut Sfu,
    taps: &mut HashMap<TapId, mpsc::UnboundedSender<TapPacket>>,
    track: TrackId,
    reply: Reply<(TapId, mpsc::UnboundedReceiver<TapPacket>)>,
    now: Instant,
) {
    let result = sfu.tap(track, now).map(|tap| {
        let (tx, rx) = mpsc::unbounded_channel();
        taps.insert(tap, tx);
        (tap, rx)
    });
    if let Err(Ok((tap, _))) = reply.send(result) {
        taps.remove(&tap);
        sfu.untap(tap);
    }
}

//! Media workers: with [`MediaConfig::workers`](crate::MediaConfig::workers) above one, each
//! worker is a thread with its own core ([`Sfu`]) and its own peers, and all of them share the
//! one UDP port (and the one ICE-TCP port).
//!
//! ```text
//!            UDP port ─► receiver (task) ──datagram──► worker k (thread, its Sfu) ─► sendmmsg
//!                        routes by address,            ▲   │ relay packets, once per worker
//!                        else by STUN ufrag            │   ▼
//!   MediaHandle ─command─► the peer's worker     worker j (imports the track)
//! ```
//!
//! - **Receiving.** One task reads the socket (recvmmsg) and hands each datagram to the worker
//!   of the peer it belongs to: by the remote address once known, else by the ICE ufrag a STUN
//!   binding request names (each worker registers the ufrags of its peers). What is for no one
//!   is dropped there. Only what peers send is received here — in a big room a small part of
//!   the traffic; forwarding is the work, and the workers do it.
//! - **Sending.** Each worker sends its own datagrams, in batches, on its own handle of the
//!   socket, from the address the peer reached.
//! - **Rooms across workers.** A new participant goes to the least loaded worker (a worker
//!   that already has the room counts as [`ROOM_AFFINITY`] peers lighter, so small rooms stay
//!   on one). A room on several workers has its tracks exported by the worker of their
//!   publisher and imported by each other one ([`sori_sfu::RelayId`]): a packet crosses to
//!   another worker once per worker, whatever the number of receivers there, and keyframe
//!   requests cross back. The [`Registry`] knows which workers hold which rooms and tracks.
//! - **Ids.** Each worker's core numbers its peers, tracks and taps from its own range, so an
//!   id says which worker has it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sori_sfu::{PeerId, Proto, RelayId, RelayPacket, Sfu, SfuEvent, TapId, TapPacket, TrackId};
use sori_sfu::{TrackInfo, Transmit};
use tokio::sync::mpsc;

use crate::tcp::{TcpPort, TcpSink};
use crate::udp::{MediaSocket, Routes};
use crate::{dispatch, flush_udp, handle_command, Command, PeerSignal, TcpStats};

/// Bits of an id below the worker's number.
const ID_SHIFT: u32 = 40;

/// A worker that already has the room counts as this many peers lighter when placing.
pub(crate) const ROOM_AFFINITY: usize = 4;

/// Datagrams and relay packets waiting for a worker; more are dropped (and counted).
const MEDIA_QUEUE: usize = 4096;

/// Transmits for ICE-TCP connections waiting for the receiver task.
const TCP_QUEUE: usize = 1024;

/// ICE ufrags and remote addresses remembered per peer for routing (an ICE restart adds a
/// ufrag, a network change an address); the oldest goes first.
const UFRAGS_PER_PEER: usize = 4;
const ADDRS_PER_PEER: usize = 8;

/// Input a worker handles in batches of at most this many before flushing.
const WORK_BATCH: usize = 64;

/// Bits of an id below the media node's number (see [`MediaConfig::node`](crate::MediaConfig::node)).
const NODE_SHIFT: u32 = 48;

/// The first id of worker `w`'s core on media node `node`.
pub(crate) fn first_id(node: u16, w: usize) -> u64 {
    ((node as u64) << NODE_SHIFT) | ((w as u64) << ID_SHIFT) | 1
}

/// The worker that made the peer, track or tap `id` (of `n` workers).
pub fn worker_of(id: u64, n: usize) -> usize {
    (((id >> ID_SHIFT) & 0xff) as usize).min(n.saturating_sub(1))
}

/// Which workers hold each room, with how many of its peers, and where each of its tracks
/// comes from. Shared by the handle (placement) and the workers.
#[derive(Default)]
pub(crate) struct Registry {
    /// Peers per worker.
    load: Vec<usize>,
    rooms: HashMap<String, Span>,
}

#[derive(Default)]
struct Span {
    /// Worker → its peers of the room.
    workers: BTreeMap<usize, usize>,
    /// Track → the worker of its publisher, and what importing it takes.
    tracks: HashMap<TrackId, (usize, TrackInfo)>,
}

impl Registry {
    pub(crate) fn new(workers: usize) -> Registry {
        Registry {
            load: vec![0; workers],
            rooms: HashMap::new(),
        }
    }

    /// The worker a new peer of `room` goes to.
    pub(crate) fn place(&self, room: &str) -> usize {
        let span = self.rooms.get(room);
        (0..self.load.len())
            .min_by_key(|w| {
                let here = span.is_some_and(|s| s.workers.contains_key(w));
                (self.load[*w] + ROOM_AFFINITY).saturating_sub(if here { ROOM_AFFINITY } else { 0 })
            })
            .unwrap_or(0)
    }

    /// A peer of `room` joined worker `w`; returns the room's tracks from other workers, to
    /// import, when it is the room's first peer there.
    fn joined(&mut self, room: &str, w: usize) -> Vec<(usize, TrackInfo)> {
        // Links to other media nodes hold rooms too, but are no worker's load.
        if let Some(load) = self.load.get_mut(w) {
            *load += 1;
        }
        let span = self.rooms.entry(room.to_string()).or_default();
        let peers = span.workers.entry(w).or_insert(0);
        *peers += 1;
        if *peers > 1 {
            return Vec::new();
        }
        span.tracks
            .values()
            .filter(|(origin, _)| *origin != w)
            .cloned()
            .collect()
    }

    /// A peer of `room` left worker `w`.
    fn left(&mut self, room: &str, w: usize) {
        if let Some(load) = self.load.get_mut(w) {
            *load = load.saturating_sub(1);
        }
        let Some(span) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(peers) = span.workers.get_mut(&w) {
            *peers -= 1;
            if *peers == 0 {
                span.workers.remove(&w);
            }
        }
        if span.workers.is_empty() {
            self.rooms.remove(room);
        }
    }

    /// Worker `w` has a new track; returns the other workers of its room (to export to).
    fn published(&mut self, w: usize, info: TrackInfo) -> Vec<usize> {
        let span = self.rooms.entry(info.room.clone()).or_default();
        let others = span.workers.keys().copied().filter(|o| *o != w).collect();
        span.tracks.insert(info.track, (w, info));
        others
    }

    /// A track of worker `w` ended; returns the other workers of its room (holding copies).
    fn unpublished(&mut self, w: usize, room: &str, track: TrackId) -> Vec<usize> {
        let Some(span) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        span.tracks.remove(&track);
        span.workers.keys().copied().filter(|o| *o != w).collect()
    }

    /// Whether `lane` is a worker's (not a link's).
    fn is_worker(&self, lane: usize) -> bool {
        lane < self.load.len()
    }

    /// The worker of `track`'s publisher.
    fn origin(&self, room: &str, track: TrackId) -> Option<usize> {
        self.rooms.get(room)?.tracks.get(&track).map(|(w, _)| *w)
    }
}

/// What reaches a worker from the network side: datagrams and other workers' relay packets.
pub(crate) enum Media {
    Datagram {
        proto: Proto,
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
    Relay(Box<RelayPacket>),
}

/// What workers tell each other about the tracks of rooms they share.
pub(crate) enum Control {
    Import(TrackInfo),
    Unimport(TrackId),
    Export {
        track: TrackId,
        to: usize,
    },
    Unexport {
        track: TrackId,
        to: usize,
    },
    Keyframe {
        track: TrackId,
        layer: u8,
        urgency: sori_sfu::throttle::Urgency,
    },
}

/// What workers tell the receiver task.
pub(crate) enum ToReceiver {
    /// Binding requests naming `ufrag` go to this peer's worker.
    Ufrag { ufrag: String, peer: PeerId },
    /// The peer is gone: forget its ufrags and addresses, close its TCP connections.
    Gone(PeerId),
}

/// The channels to every worker.
#[derive(Clone)]
pub(crate) struct Lanes {
    pub(crate) media: Vec<mpsc::Sender<Media>>,
    pub(crate) control: Vec<mpsc::UnboundedSender<Control>>,
}

/// One worker: its core, its peers' signal channels, its taps, its share of the socket.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) sfu: Sfu,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) lanes: Lanes,
    pub(crate) media_rx: mpsc::Receiver<Media>,
    pub(crate) control_rx: mpsc::UnboundedReceiver<Control>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) to_receiver: mpsc::UnboundedSender<ToReceiver>,
    pub(crate) tcp_out: mpsc::Sender<Transmit>,
    pub(crate) tcp_stats: Arc<Mutex<TcpStats>>,
}

/// A worker's bookkeeping besides its core.
struct State {
    peers: HashMap<PeerId, mpsc::UnboundedSender<PeerSignal>>,
    taps: HashMap<TapId, mpsc::UnboundedSender<TapPacket>>,
    /// Each local peer's room.
    rooms: HashMap<PeerId, String>,
    /// Each track's room, local and imported.
    track_rooms: HashMap<TrackId, String>,
    /// Relay packets dropped because the other worker's queue was full.
    relay_dropped: u64,
}

fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Runs the worker on the current thread (a current-thread runtime) until shut down.
    pub(crate) async fn run(mut self, socket: std::net::UdpSocket, routes: Routes) {
        let socket = match tokio::net::UdpSocket::from_std(socket)
            .and_then(|s| MediaSocket::new(s, routes))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    worker = self.index,
                    "media worker cannot use the socket: {e}"
                );
                return;
            }
        };
        let mut st = State {
            peers: HashMap::new(),
            taps: HashMap::new(),
            rooms: HashMap::new(),
            track_rooms: HashMap::new(),
            relay_dropped: 0,
        };
        let mut batch = Vec::new();
        let mut tcp = Vec::new();
        loop {
            flush_udp(&socket, &mut self.sfu, &mut batch, &mut tcp).await;
            for t in tcp.drain(..) {
                let _ = self.tcp_out.try_send(t);
            }
            self.after(&mut st);
            let deadline = self
                .sfu
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                // Another worker's word first: a track it published is imported here before
                // a command that names the track (a subscribe, sent once the session server
                // heard of it) is handled. Then media; the timer only wakes the worker.
                biased;
                c = self.control_rx.recv() => {
                    let Some(c) = c else { break };
                    self.control(c, &mut st);
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    if !self.command(command, &mut st) {
                        break;
                    }
                }
                m = self.media_rx.recv() => {
                    let Some(m) = m else { break };
                    self.media(m);
                    for _ in 1..WORK_BATCH {
                        match self.media_rx.try_recv() {
                            Ok(m) => self.media(m),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            // Due timers run after whatever woke the worker: media that never stops arriving
            // cannot hold them back, nor can a pacer that is due again at once hold back media.
            let now = Instant::now();
            if self.sfu.poll_timeout().is_some_and(|at| at <= now) {
                self.sfu.handle_timeout(now);
            }
        }
        tracing::debug!(worker = self.index, "media worker stopped");
    }

    fn media(&mut self, m: Media) {
        let now = Instant::now();
        match m {
            Media::Datagram {
                proto,
                source,
                destination,
                data,
            } => self
                .sfu
                .handle_receive(now, proto, source, destination, &data),
            Media::Relay(p) => self.sfu.relay_in(now, *p),
        }
    }

    fn control(&mut self, c: Control, st: &mut State) {
        let now = Instant::now();
        match c {
            Control::Import(info) => {
                let (track, room) = (info.track, info.room.clone());
                let origin = lock(&self.registry).origin(&room, track);
                match self.sfu.import(info, now) {
                    Ok(()) => {
                        st.track_rooms.insert(track, room);
                    }
                    // The room's last peer here left meanwhile: nothing to send here.
                    Err(_) => {
                        if let Some(o) = origin {
                            let to = self.index;
                            let _ = self.lanes.control[o].send(Control::Unexport { track, to });
                        }
                    }
                }
            }
            Control::Unimport(track) => self.sfu.unimport(track, now),
            Control::Export { track, to } => {
                let _ = self.sfu.export(track, RelayId(to as u32), now);
            }
            Control::Unexport { track, to } => self.sfu.unexport(track, RelayId(to as u32), now),
            Control::Keyframe {
                track,
                layer,
                urgency,
            } => {
                let _ = self.sfu.request_track_keyframe(track, layer, urgency, now);
            }
        }
    }

    /// Handles a command; false when the worker should stop.
    fn command(&mut self, command: Command, st: &mut State) -> bool {
        let joining = match &command {
            Command::Join { room, .. } | Command::OfferNew { room, .. } => Some(room.clone()),
            _ => None,
        };
        let tcp = *self.tcp_stats.lock().unwrap_or_else(|e| e.into_inner());
        let to_receiver = &self.to_receiver;
        // The receiver learns the ufrag before the client has the SDP that names it.
        let mut register = |peer: PeerId, sdp: &str| {
            if let Some(ufrag) = ice_ufrag(sdp) {
                let ufrag = ufrag.to_string();
                let _ = to_receiver.send(ToReceiver::Ufrag { ufrag, peer });
            }
        };
        // A join counts toward this worker's load before its reply goes out: the next join's
        // placement (made as soon as this one's caller has its answer) sees it.
        let imports = joining
            .as_ref()
            .map(|room| lock(&self.registry).joined(room, self.index));
        let (result, go_on) = handle_command(
            command,
            &mut self.sfu,
            &mut st.peers,
            &mut st.taps,
            tcp,
            &mut register,
        );
        match (result, joining, imports) {
            (crate::Handled::Joined { peer, .. }, Some(room), Some(tracks)) => {
                self.joined(peer, &room, tracks, st)
            }
            // Refused: it never joined.
            (_, Some(room), Some(_)) => lock(&self.registry).left(&room, self.index),
            _ => {}
        }
        go_on
    }

    /// A peer joined here: the room's tracks on other workers (`tracks`, when it is the room's
    /// first peer here) are imported.
    fn joined(
        &mut self,
        peer: PeerId,
        room: &str,
        tracks: Vec<(usize, TrackInfo)>,
        st: &mut State,
    ) {
        st.rooms.insert(peer, room.to_string());
        let now = Instant::now();
        for (origin, info) in tracks {
            let track = info.track;
            if self.sfu.import(info, now).is_ok() {
                st.track_rooms.insert(track, room.to_string());
                let to = self.index;
                let _ = self.lanes.control[origin].send(Control::Export { track, to });
            }
        }
    }

    /// After any input: the core's events, taps and relay packets go where they belong.
    fn after(&mut self, st: &mut State) {
        while let Some(event) = self.sfu.poll_event() {
            self.event(&event, st);
            dispatch(event, &mut st.peers);
        }
        while let Some(packet) = self.sfu.poll_tap() {
            let tap = packet.tap;
            let gone = st.taps.get(&tap).is_none_or(|tx| tx.send(packet).is_err());
            if gone {
                st.taps.remove(&tap);
                self.sfu.untap(tap);
            }
        }
        while let Some(p) = self.sfu.poll_relay() {
            let to = p.to.0 as usize;
            if let Some(lane) = self.lanes.media.get(to) {
                if lane.try_send(Media::Relay(Box::new(p))).is_err() {
                    st.relay_dropped += 1;
                }
            }
        }
    }

    /// What the other workers and the receiver task must hear of a core event.
    fn event(&mut self, event: &SfuEvent, st: &mut State) {
        let now = Instant::now();
        match event {
            SfuEvent::TrackPublished { peer, track, .. } if st.peers.contains_key(peer) => {
                let Some(info) = self.sfu.track_info(*track) else {
                    return;
                };
                st.track_rooms.insert(*track, info.room.clone());
                let others = lock(&self.registry).published(self.index, info.clone());
                for w in others {
                    let _ = self.lanes.control[w].send(Control::Import(info.clone()));
                    let _ = self.sfu.export(*track, RelayId(w as u32), now);
                }
            }
            SfuEvent::TrackUnpublished { track, .. } => {
                let Some(room) = st.track_rooms.remove(track) else {
                    return;
                };
                let origin = lock(&self.registry).origin(&room, *track);
                if origin == Some(self.index) {
                    let others = lock(&self.registry).unpublished(self.index, &room, *track);
                    for w in others {
                        let _ = self.lanes.control[w].send(Control::Unimport(*track));
                    }
                } else if let Some(o) = origin {
                    // Our copy went (the room's last peer here left): stop sending it here.
                    let (track, to) = (*track, self.index);
                    let _ = self.lanes.control[o].send(Control::Unexport { track, to });
                }
            }
            SfuEvent::RelayKeyframeRequest {
                track,
                layer,
                urgency,
            } => {
                let origin = st
                    .track_rooms
                    .get(track)
                    .and_then(|room| lock(&self.registry).origin(room, *track));
                if let Some(o) = origin {
                    let _ = self.lanes.control[o].send(Control::Keyframe {
                        track: *track,
                        layer: *layer,
                        urgency: *urgency,
                    });
                }
            }
            SfuEvent::PeerRemoved { peer, .. } => {
                if let Some(room) = st.rooms.remove(peer) {
                    lock(&self.registry).left(&room, self.index);
                }
                let _ = self.to_receiver.send(ToReceiver::Gone(*peer));
            }
            _ => {}
        }
    }
}

/// The `a=ice-ufrag` of a session description.
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// Where the receiver task sends what arrives: to the worker of the peer whose ICE agent
/// was checked from that address, or whose ufrag a binding request names.
#[derive(Default)]
pub(crate) struct Router {
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<(Proto, SocketAddr), PeerId>,
    /// Each peer's ufrags and addresses, oldest first.
    ufrags_of: HashMap<PeerId, VecDeque<String>>,
    addrs_of: HashMap<PeerId, VecDeque<(Proto, SocketAddr)>>,
    /// Dropped: for no known peer.
    pub(crate) unroutable: u64,
}

impl Router {
    fn update(&mut self, msg: ToReceiver, tcp: Option<&mut TcpPort>) {
        match msg {
            ToReceiver::Ufrag { ufrag, peer } => {
                let list = self.ufrags_of.entry(peer).or_default();
                if list.contains(&ufrag) {
                    return;
                }
                list.push_back(ufrag.clone());
                if list.len() > UFRAGS_PER_PEER {
                    if let Some(old) = list.pop_front() {
                        self.by_ufrag.remove(&old);
                    }
                }
                self.by_ufrag.insert(ufrag, peer);
            }
            ToReceiver::Gone(peer) => {
                for u in self.ufrags_of.remove(&peer).unwrap_or_default() {
                    if self.by_ufrag.get(&u) == Some(&peer) {
                        self.by_ufrag.remove(&u);
                    }
                }
                for a in self.addrs_of.remove(&peer).unwrap_or_default() {
                    if self.by_addr.get(&a) == Some(&peer) {
                        self.by_addr.remove(&a);
                    }
                }
                if let Some(tcp) = tcp {
                    tcp.peer_removed(peer);
                }
            }
        }
    }

    /// The peer a datagram from `source` is for.
    fn route(&mut self, proto: Proto, source: SocketAddr, data: &[u8]) -> Option<PeerId> {
        if let Some(peer) = self.by_addr.get(&(proto, source)) {
            // A binding request naming another peer's ufrag moves the address (a NAT that
            // gave it to someone else); anything else stays with the address's peer.
            match self.by_stun(data) {
                Some(other) if other != *peer => {}
                _ => return Some(*peer),
            }
        }
        let peer = self.by_stun(data)?;
        self.learn(peer, (proto, source));
        Some(peer)
    }

    fn by_stun(&self, data: &[u8]) -> Option<PeerId> {
        sori_sfu::stun::binding_request_ufrag(data).and_then(|u| self.by_ufrag.get(u).copied())
    }

    fn learn(&mut self, peer: PeerId, addr: (Proto, SocketAddr)) {
        let list = self.addrs_of.entry(peer).or_default();
        if !list.contains(&addr) {
            list.push_back(addr);
            if list.len() > ADDRS_PER_PEER {
                if let Some(old) = list.pop_front() {
                    if self.by_addr.get(&old) == Some(&peer) {
                        self.by_addr.remove(&old);
                    }
                }
            }
        }
        self.by_addr.insert(addr, peer);
    }
}

/// The receiver task: reads the UDP socket (and serves the ICE-TCP port) and hands every
/// datagram to its peer's worker; ends when every worker has.
pub(crate) async fn receive(
    mut socket: MediaSocket,
    mut tcp: Option<TcpPort>,
    lanes: Lanes,
    mut from_workers: mpsc::UnboundedReceiver<ToReceiver>,
    mut tcp_in: mpsc::Receiver<Transmit>,
    tcp_stats: Arc<Mutex<TcpStats>>,
) {
    let n = lanes.media.len();
    let mut router = Router::default();
    let mut dropped = 0u64;
    loop {
        let tcp_deadline = tcp
            .as_mut()
            .and_then(|t| t.next_deadline())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let tcp_input = async {
            match tcp.as_mut() {
                Some(t) => t.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // What the workers say first: a ufrag is known before a check naming it is read.
            biased;
            msg = from_workers.recv() => {
                let Some(msg) = msg else { break };
                router.update(msg, tcp.as_mut());
            }
            readable = socket.readable() => {
                if let Err(e) = readable {
                    tracing::debug!("media socket: {e}");
                    continue;
                }
                let mut read = 0;
                while read < crate::RECV_BATCH {
                    let r = socket.try_recv(|source, destination, data| {
                        let Some(peer) = router.route(Proto::Udp, source, data) else {
                            router.unroutable += 1;
                            return;
                        };
                        let w = worker_of(peer.0, n);
                        let m = Media::Datagram { proto: Proto::Udp, source, destination, data: data.to_vec() };
                        if lanes.media[w].try_send(m).is_err() {
                            dropped += 1;
                        }
                    });
                    match r {
                        Ok(k) => read += k.max(1),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!("media socket receive: {e}");
                            break;
                        }
                    }
                }
            }
            input = tcp_input => {
                if let Some(t) = tcp.as_mut() {
                    let mut sink = Sink { router: &mut router, lanes: &lanes, dropped: &mut dropped };
                    t.handle(input, &mut sink, Instant::now());
                    *tcp_stats.lock().unwrap_or_else(|e| e.into_inner()) = t.stats();
                }
            }
            t = tcp_in.recv() => {
                if let (Some(t), Some(tcp)) = (t, tcp.as_mut()) {
                    tcp.send(t);
                    *tcp_stats.lock().unwrap_or_else(|e| e.into_inner()) = tcp.stats();
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(tcp_deadline)) => {
                if let Some(t) = tcp.as_mut() {
                    t.expire(Instant::now());
                }
            }
        }
    }
    tracing::info!(dropped, unroutable = router.unroutable, "media port closed");
}

/// ICE-TCP frames go to their peer's worker like datagrams.
struct Sink<'a> {
    router: &'a mut Router,
    lanes: &'a Lanes,
    dropped: &'a mut u64,
}

impl TcpSink for Sink<'_> {
    fn binding_request_peer(&self, data: &[u8]) -> Option<PeerId> {
        self.router.by_stun(data)
    }

    fn receive(
        &mut self,
        peer: PeerId,
        _now: Instant,
        remote: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.router.learn(peer, (Proto::Tcp, remote));
        let w = worker_of(peer.0, self.lanes.media.len());
        let m = Media::Datagram {
            proto: Proto::Tcp,
            source: remote,
            destination,
            data: data.to_vec(),
        };
        if self.lanes.media[w].try_send(m).is_err() {
            *self.dropped += 1;
        }
    }
}

/// The channels of `n` workers, and their receiving ends.
/// A worker's ends of its lanes.
pub(crate) type LaneEnds = (mpsc::Receiver<Media>, mpsc::UnboundedReceiver<Control>);

pub(crate) fn lanes(n: usize) -> (Lanes, Vec<LaneEnds>) {
    let mut media = Vec::new();
    let mut control = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..n {
        let (mt, mr) = mpsc::channel(MEDIA_QUEUE);
        let (ct, cr) = mpsc::unbounded_channel();
        media.push(mt);
        control.push(ct);
        ends.push((mr, cr));
    }
    (Lanes { media, control }, ends)
}

/// The ICE-TCP transmit channel from the workers to the receiver task.
pub(crate) fn tcp_lane() -> (mpsc::Sender<Transmit>, mpsc::Receiver<Transmit>) {
    mpsc::channel(TCP_QUEUE)
}

/// What crosses a link between two media nodes that share a room (see [`link`]).
#[derive(Debug, Clone)]
pub enum LinkMsg {
    /// A track published on the sending node, to import.
    Track(TrackInfo),
    /// That track ended.
    Untrack(TrackId),
    /// A packet of one of the sending node's tracks.
    Packet(Box<RelayPacket>),
    /// A receiver on the sending node needs a keyframe of the receiving node's track.
    Keyframe {
        /// The track.
        track: TrackId,
        /// Its layer.
        layer: u8,
        /// How soon.
        urgency: sori_sfu::throttle::Urgency,
    },
}

/// What the other node's tracks became here, once the room's workers have been told (a
/// command naming such a track, sent after the event, finds it imported).
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// The other node's track, now published here.
    Imported(TrackInfo),
    /// That track ended here.
    Ended(TrackId),
}

/// A link task's channels to and from the other node, and its events.
pub(crate) struct LinkIo {
    pub(crate) to_remote: mpsc::Sender<LinkMsg>,
    pub(crate) from_remote: mpsc::Receiver<LinkMsg>,
    pub(crate) events: mpsc::Sender<LinkEvent>,
}

/// Link `lane` (a lane past the workers') carrying `room` to and from another media node:
/// to the room's workers here it is one more worker of the room — it takes every track
/// published here (sent on as [`LinkMsg::Track`] and packets) and publishes the other node's.
pub(crate) async fn link(
    lane: usize,
    room: String,
    registry: Arc<Mutex<Registry>>,
    lanes: Lanes,
    (mut media_rx, mut control_rx): LaneEnds,
    io: LinkIo,
) -> LaneEnds {
    let LinkIo {
        to_remote,
        mut from_remote,
        events,
    } = io;
    // Which workers here take each of the other node's tracks.
    let mut wants: HashMap<TrackId, Vec<usize>> = HashMap::new();
    // The tracks sent to the other node: only those published on this node cross a link (a
    // track from a third node reaches the other over its own link to that node; passing it
    // on would loop it round the nodes).
    let mut sent: std::collections::HashSet<TrackId> = std::collections::HashSet::new();
    let tracks: Vec<(usize, TrackInfo)> = {
        let mut reg = lock(&registry);
        let tracks = reg.joined(&room, lane);
        tracks
            .into_iter()
            .filter(|(o, _)| reg.is_worker(*o))
            .collect()
    };
    for (origin, info) in tracks {
        let track = info.track;
        sent.insert(track);
        if to_remote.send(LinkMsg::Track(info)).await.is_err() {
            break;
        }
        let _ = lanes.control[origin].send(Control::Export { track, to: lane });
    }
    loop {
        tokio::select! {
            c = control_rx.recv() => match c {
                Some(Control::Import(info)) => {
                    let local = {
                        let reg = lock(&registry);
                        reg.origin(&room, info.track).is_some_and(|o| reg.is_worker(o))
                    };
                    if local {
                        sent.insert(info.track);
                        if to_remote.send(LinkMsg::Track(info)).await.is_err() { break; }
                    }
                }
                Some(Control::Unimport(track)) => {
                    if sent.remove(&track) && to_remote.send(LinkMsg::Untrack(track)).await.is_err() {
                        break;
                    }
                }
                Some(Control::Export { track, to }) => {
                    let w = wants.entry(track).or_default();
                    if !w.contains(&to) { w.push(to); }
                }
                Some(Control::Unexport { track, to }) => {
                    if let Some(w) = wants.get_mut(&track) { w.retain(|x| *x != to); }
                }
                Some(Control::Keyframe { track, layer, urgency }) => {
                    let k = LinkMsg::Keyframe { track, layer, urgency };
                    if to_remote.send(k).await.is_err() { break; }
                }
                None => break,
            },
            m = media_rx.recv() => match m {
                Some(Media::Relay(p)) => {
                    // Never wait on the other node: a full link drops, as a full lane does.
                    let _ = to_remote.try_send(LinkMsg::Packet(p));
                }
                Some(Media::Datagram { .. }) => {}
                None => break,
            },
            r = from_remote.recv() => match r {
                Some(LinkMsg::Track(mut info)) => {
                    // The room has its own name on each node (a control API pipeline's id).
                    info.room = room.clone();
                    let track = info.track;
                    // Known here from elsewhere (this node's own, or another link's): never
                    // taken over by this link.
                    if lock(&registry).origin(&room, track).is_some_and(|o| o != lane) {
                        continue;
                    }
                    let others: Vec<usize> = {
                        let mut reg = lock(&registry);
                        let others = reg.published(lane, info.clone());
                        // The room's workers take it; other links never (see `sent`).
                        others.into_iter().filter(|w| reg.is_worker(*w)).collect()
                    };
                    for w in &others {
                        let _ = lanes.control[*w].send(Control::Import(info.clone()));
                    }
                    wants.insert(track, others);
                    // Nobody listening to them is no reason to end the link.
                    let _ = events.send(LinkEvent::Imported(info)).await;
                }
                Some(LinkMsg::Untrack(track)) => {
                    if lock(&registry).origin(&room, track) != Some(lane) {
                        continue;
                    }
                    let others = lock(&registry).unpublished(lane, &room, track);
                    for w in others {
                        let _ = lanes.control[w].send(Control::Unimport(track));
                    }
                    wants.remove(&track);
                    let _ = events.send(LinkEvent::Ended(track)).await;
                }
                Some(LinkMsg::Packet(p)) => {
                    for w in wants.get(&p.track).into_iter().flatten() {
                        let mut copy = p.clone();
                        copy.to = RelayId(*w as u32);
                        let _ = lanes.media[*w].try_send(Media::Relay(copy));
                    }
                }
                Some(LinkMsg::Keyframe { track, layer, urgency }) => {
                    if let Some(o) = lock(&registry).origin(&room, track) {
                        let _ = lanes.control[o].send(Control::Keyframe { track, layer, urgency });
                    }
                }
                None => break,
            },
        }
    }
    // The link is gone: its tracks here end, and the room's tracks here stop going to it.
    // The other node's tracks (with the workers that held copies), and this node's tracks
    // (with their workers).
    type Ended = (Vec<(TrackId, Vec<usize>)>, Vec<(TrackId, usize)>);
    let (gone, sent): Ended = {
        let mut reg = lock(&registry);
        let (mine, sent): (Vec<_>, Vec<_>) = reg
            .rooms
            .get(&room)
            .map(|s| {
                s.tracks
                    .iter()
                    .map(|(t, (o, _))| (*t, *o))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .partition(|(_, o)| *o == lane);
        let gone = mine
            .into_iter()
            .map(|(t, _)| (t, reg.unpublished(lane, &room, t)))
            .collect();
        reg.left(&room, lane);
        (gone, sent)
    };
    for (track, others) in gone {
        for w in others {
            let _ = lanes.control[w].send(Control::Unimport(track));
        }
    }
    for (track, origin) in sent {
        let _ = lanes.control[origin].send(Control::Unexport { track, to: lane });
    }
    // What is still queued for it is for no one now.
    while media_rx.try_recv().is_ok() {}
    while control_rx.try_recv().is_ok() {}
    (media_rx, control_rx)
}

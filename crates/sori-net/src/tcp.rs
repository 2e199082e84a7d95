//! ICE-TCP on the media port (RFC 6544, passive side): clients whose UDP is blocked connect
//! over TCP and send RFC 4571 frames (a 16-bit big-endian length, then one packet).
//!
//! The media task owns every connection's bookkeeping; per connection, one task reads and
//! deframes, one writes. Frames go to the core as [`Proto::Tcp`] with the connection's remote
//! address, through the same demultiplexing as datagrams: a new connection must begin with a
//! STUN binding request for a known peer's ufrag and is *pending* until the core answers on it
//! (its ICE agent checked the credentials). A pending connection that sends anything else,
//! a first frame that cannot be a binding request, or nothing answerable within
//! [`TcpConfig::auth_timeout`] is closed; at most [`TcpConfig::max_pending`] may wait at once.
//! The core's TCP transmits go to the connection with that remote address through a bounded
//! queue: when a slow client's queue is full, frames are dropped, never waited for.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use sori_media::TcpStats;
use sori_sfu::{PeerId, Proto, Sfu, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Settings of the ICE-TCP listener.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Port of the TCP listener, on the media port's bind IP. `None`: the UDP port's number.
    pub port: Option<u16>,
    /// A new connection the core has not answered within this is closed.
    pub auth_timeout: Duration,
    /// Most connections waiting for that answer at once; more are closed when accepted.
    pub max_pending: usize,
    /// Frames queued per connection; beyond it new frames are dropped.
    pub send_queue: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            port: None,
            auth_timeout: Duration::from_secs(5),
            max_pending: 64,
            send_queue: 256,
        }
    }
}

/// Longest first frame: it must be a STUN binding request, a few hundred bytes at most.
const MAX_FIRST_FRAME: usize = 1500;
/// Shortest first frame: a STUN header.
const MIN_FIRST_FRAME: usize = 20;
/// Most bytes the writer gathers from its queue into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// Frames and closes from all readers to the media task.
const EVENT_QUEUE: usize = 1024;

/// What the connection tasks tell the media task.
pub(crate) enum TcpEvent {
    Frame { conn: u64, data: Vec<u8> },
    Closed { conn: u64, bad_frame: bool },
}

/// One wake-up of the TCP side.
pub(crate) enum TcpInput {
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    Event(TcpEvent),
}

struct Conn {
    remote: SocketAddr,
    /// The peer its binding requests named.
    peer: Option<PeerId>,
    answered: bool,
    frames: mpsc::Sender<Vec<u8>>,
    reader: AbortHandle,
    writer: AbortHandle,
}

/// The listener and its connections; owned by the media task.
/// Where the frames of admitted connections go: the core, or the workers' receiver.
pub(crate) trait TcpSink {
    /// The peer a STUN binding request is for (by the ufrag it names).
    fn binding_request_peer(&self, data: &[u8]) -> Option<PeerId>;
    /// One frame from `remote`, a connection admitted for `peer`.
    fn receive(
        &mut self,
        peer: PeerId,
        now: Instant,
        remote: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    );
}

impl TcpSink for Sfu {
    fn binding_request_peer(&self, data: &[u8]) -> Option<PeerId> {
        Sfu::binding_request_peer(self, data)
    }

    fn receive(
        &mut self,
        _peer: PeerId,
        now: Instant,
        remote: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.handle_receive(now, Proto::Tcp, remote, destination, data);
    }
}

pub(crate) struct TcpPort {
    listener: TcpListener,
    config: TcpConfig,
    /// The advertised TCP candidates; the one of a connection's address family is the
    /// destination the core expects on its frames.
    candidates: Vec<SocketAddr>,
    conns: HashMap<u64, Conn>,
    by_remote: HashMap<SocketAddr, u64>,
    /// Pending connections in accept order, with their deadlines; stale entries are skipped.
    pending: VecDeque<(Instant, u64)>,
    events_tx: mpsc::Sender<TcpEvent>,
    events_rx: mpsc::Receiver<TcpEvent>,
    next_id: u64,
    stats: TcpStats,
}

impl TcpPort {
    pub(crate) fn new(
        listener: TcpListener,
        config: TcpConfig,
        candidates: Vec<SocketAddr>,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Self {
            listener,
            config,
            candidates,
            conns: HashMap::new(),
            by_remote: HashMap::new(),
            pending: VecDeque::new(),
            events_tx,
            events_rx,
            next_id: 1,
            stats: TcpStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> TcpStats {
        self.stats
    }

    /// The next accepted connection or connection event (cancel-safe).
    pub(crate) async fn next(&mut self) -> TcpInput {
        tokio::select! {
            accepted = self.listener.accept() => TcpInput::Accepted(accepted),
            // The port holds a sender itself, so the channel never closes.
            Some(event) = self.events_rx.recv() => TcpInput::Event(event),
        }
    }

    pub(crate) fn handle(&mut self, input: TcpInput, sfu: &mut impl TcpSink, now: Instant) {
        match input {
            TcpInput::Accepted(Ok((stream, remote))) => self.accept(stream, remote, now),
            TcpInput::Accepted(Err(e)) => tracing::debug!("ICE-TCP accept: {e}"),
            TcpInput::Event(TcpEvent::Frame { conn, data }) => self.frame(conn, data, sfu, now),
            TcpInput::Event(TcpEvent::Closed { conn, bad_frame }) => {
                if bad_frame {
                    self.stats.rejected += 1;
                }
                self.close(conn, if bad_frame { "bad frame" } else { "closed" });
            }
        }
    }

    fn accept(&mut self, stream: TcpStream, remote: SocketAddr, now: Instant) {
        if self.stats.pending >= self.config.max_pending || self.by_remote.contains_key(&remote) {
            self.stats.refused += 1;
            tracing::debug!(%remote, "ICE-TCP connection refused");
            return;
        }
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let conn = self.next_id;
        self.next_id += 1;
        let (frames, queue) = mpsc::channel(self.config.send_queue.max(1));
        let reader = tokio::spawn(read_frames(conn, read, self.events_tx.clone()));
        let writer = tokio::spawn(write_frames(write, queue));
        self.conns.insert(
            conn,
            Conn {
                remote,
                peer: None,
                answered: false,
                frames,
                reader: reader.abort_handle(),
                writer: writer.abort_handle(),
            },
        );
        self.by_remote.insert(remote, conn);
        self.pending
            .push_back((now + self.config.auth_timeout, conn));
        self.stats.accepted += 1;
        self.stats.pending += 1;
        tracing::debug!(%remote, "ICE-TCP connection accepted");
    }

    fn frame(&mut self, conn: u64, data: Vec<u8>, sfu: &mut impl TcpSink, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.answered {
            match sfu.binding_request_peer(&data) {
                Some(peer) => c.peer = Some(peer),
                None => {
                    self.stats.rejected += 1;
                    self.close(conn, "not a binding request for a known peer");
                    return;
                }
            }
        }
        let (remote, Some(peer)) = (c.remote, c.peer) else {
            return;
        };
        let destination = self
            .candidates
            .iter()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
            .or(self.candidates.first())
            .copied();
        if let Some(destination) = destination {
            sfu.receive(peer, now, remote, destination, &data);
        }
    }

    /// Queues one of the core's TCP transmits on its connection.
    pub(crate) fn send(&mut self, t: Transmit) {
        let Some(&conn) = self.by_remote.get(&t.destination) else {
            tracing::trace!(destination = %t.destination, "ICE-TCP frame for no connection");
            return;
        };
        let Ok(len) = u16::try_from(t.contents.len()) else {
            tracing::debug!(
                len = t.contents.len(),
                "ICE-TCP frame too long for RFC 4571"
            );
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.answered {
            // The core answers only a request that passed its ICE agent's checks.
            c.answered = true;
            self.stats.pending -= 1;
            self.stats.open += 1;
        }
        let mut framed = Vec::with_capacity(2 + t.contents.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&t.contents);
        let sent = c.frames.try_send(framed);
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.stats.send_dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => self.close(conn, "write failed"),
        }
    }

    /// Closes the connections of a peer the core removed.
    pub(crate) fn peer_removed(&mut self, peer: PeerId) {
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == Some(peer))
            .map(|(id, _)| *id)
            .collect();
        for conn in gone {
            self.close(conn, "peer removed");
        }
    }

    /// Closes pending connections whose time is up.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.pending.front() {
            if at > now {
                break;
            }
            self.pending.pop_front();
            if self.conns.get(&conn).is_some_and(|c| !c.answered) {
                self.stats.rejected += 1;
                self.close(conn, "not answered in time");
            }
        }
    }

    /// When [`TcpPort::expire`] has work next.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(at, conn)) = self.pending.front() {
            if self.conns.get(&conn).is_some_and(|c| !c.answered) {
                return Some(at);
            }
            self.pending.pop_front();
        }
        None
    }

    fn close(&mut self, conn: u64, why: &str) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if self.by_remote.get(&c.remote) == Some(&conn) {
            self.by_remote.remove(&c.remote);
        }
        if c.answered {
            self.stats.open -= 1;
        } else {
            self.stats.pending -= 1;
        }
        // Both halves dropped: the socket closes.
        c.reader.abort();
        c.writer.abort();
        tracing::debug!(remote = %c.remote, peer = ?c.peer, "ICE-TCP connection closed: {why}");
    }
}

impl Drop for TcpPort {
    fn drop(&mut self) {
        for c in self.conns.values() {
            c.reader.abort();
            c.writer.abort();
        }
    }
}

/// Reads RFC 4571 frames until the connection ends or breaks the rules.
async fn read_frames(conn: u64, read: OwnedReadHalf, events: mpsc::Sender<TcpEvent>) {
    let mut read = BufReader::with_capacity(16 * 1024, read);
    let mut first = true;
    let bad_frame = loop {
        let mut len = [0u8; 2];
        if read.read_exact(&mut len).await.is_err() {
            break false;
        }
        let len = u16::from_be_bytes(len) as usize;
        if first && !(MIN_FIRST_FRAME..=MAX_FIRST_FRAME).contains(&len) {
            break true;
        }
        first = false;
        let mut data = vec![0u8; len];
        if read.read_exact(&mut data).await.is_err() {
            break false;
        }
        if len == 0 {
            continue;
        }
        if events.send(TcpEvent::Frame { conn, data }).await.is_err() {
            return;
        }
    };
    let _ = events.send(TcpEvent::Closed { conn, bad_frame }).await;
}

/// Writes queued frames, several per write when they pile up, until the queue closes or a
/// write fails.
async fn write_frames(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    while let Some(frame) = queue.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        while buf.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Err(e) = write.write_all(&buf).await {
            tracing::debug!("ICE-TCP write: {e}");
            return;
        }
    }
}

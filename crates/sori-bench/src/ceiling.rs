//! `--target ceiling`: the least an SFU can do, as a yardstick for what this machine allows.
//!
//! A relay on one thread and one UDP port that decrypts each incoming RTP packet and
//! re-encrypts it for every other participant of the room, and nothing else: no keyframe
//! gating or throttling (a keyframe request is passed to the publisher as is), no bandwidth
//! estimation, no layer selection, one sequence-number offset per outgoing stream. It runs as
//! its own process (`sori-bench relay`) so its CPU time is read apart from the clients', and
//! speaks the part of Sori's signaling the load generator uses (`join`, `offer`/`answer` both
//! ways, `ping`, `leave`; docs/signaling.md), so the same clients join it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

enum Ctl {
    Join {
        conn: u64,
        room: String,
        out: mpsc::UnboundedSender<String>,
    },
    Offer {
        conn: u64,
        sdp: String,
    },
    Answer {
        conn: u64,
        sdp: String,
    },
    Leave {
        conn: u64,
    },
}

/// Binds the WebSocket on `listen` and the media port on the same IP, prints where it listens,
/// and relays until the process ends.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let udp = UdpSocket::bind(SocketAddr::new(listen.ip(), 0))
        .await
        .map_err(|e| format!("cannot bind UDP on {}: {e}", listen.ip()))?;
    let http = tcp.local_addr().map_err(|e| e.to_string())?;
    let media = udp.local_addr().map_err(|e| e.to_string())?;
    eprintln!("ceiling relay listening on http://{http} (media: UDP {media})");
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    tokio::spawn(accept(tcp, ctl_tx));
    Relay {
        socket: Arc::new(udp),
        media,
        peers: HashMap::new(),
        by_addr: HashMap::new(),
        work: VecDeque::new(),
        backlog: VecDeque::new(),
    }
    .run(ctl_rx)
    .await;
    Ok(())
}

async fn accept(tcp: TcpListener, ctl: mpsc::UnboundedSender<Ctl>) {
    let mut next = 1u64;
    while let Ok((stream, _)) = tcp.accept().await {
        let conn = next;
        next += 1;
        tokio::spawn(connection(stream, conn, ctl.clone()));
    }
}

async fn connection(stream: tokio::net::TcpStream, conn: u64, ctl: mpsc::UnboundedSender<Ctl>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                let sdp = || v["sdp"].as_str().unwrap_or_default().to_string();
                let reply = match v["type"].as_str() {
                    Some("join") => {
                        let room = v["room"].as_str().unwrap_or_default().to_string();
                        let _ = ctl.send(Ctl::Join { conn, room: room.clone(), out: out_tx.clone() });
                        Some(json!({"type": "joined", "v": 1, "id": format!("p{conn}"), "room": room,
                            "mode": "sfu", "participants": [], "ice_servers": [], "chat": []}))
                    }
                    Some("offer") => {
                        let _ = ctl.send(Ctl::Offer { conn, sdp: sdp() });
                        None
                    }
                    Some("answer") => {
                        let _ = ctl.send(Ctl::Answer { conn, sdp: sdp() });
                        None
                    }
                    Some("ping") => Some(json!({"type": "pong"})),
                    Some("leave") => break,
                    _ => None,
                };
                if let Some(reply) = reply {
                    if ws.send(Message::text(reply.to_string())).await.is_err() {
                        break;
                    }
                }
            }
            out = out_rx.recv() => {
                let Some(text) = out else { break };
                if ws.send(Message::text(text)).await.is_err() { break }
            }
        }
    }
    let _ = ctl.send(Ctl::Leave { conn });
}

/// One outgoing copy of a published track.
struct Out {
    mid: Mid,
    /// Subtracted from the publisher's extended sequence numbers, so each copy starts at 1.
    offset: Option<u64>,
}

struct Peer {
    room: String,
    out: mpsc::UnboundedSender<String>,
    rtc: Option<Rtc>,
    deadline: Instant,
    /// Tracks this peer publishes, by the relay's receiving m-line.
    published: Vec<(Mid, MediaKind)>,
    rx_mids: HashMap<Ssrc, Mid>,
    /// Copies of other peers' tracks this peer receives, by (publisher, publisher's m-line).
    sends: HashMap<(u64, Mid), Out>,
    /// The reverse, for keyframe requests.
    out_tracks: HashMap<Mid, (u64, Mid)>,
    pending: Option<SdpPendingOffer>,
    needs_offer: bool,
}

enum Work {
    Forward(u64, Box<RtpPacket>),
    Keyframe(u64, Mid),
    Published(u64),
}

struct Relay {
    socket: Arc<UdpSocket>,
    media: SocketAddr,
    peers: HashMap<u64, Peer>,
    by_addr: HashMap<SocketAddr, u64>,
    work: VecDeque<Work>,
    /// Datagrams waiting for room in the socket's send buffer, in order.
    backlog: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Relay {
    async fn run(mut self, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let next = self
                .peers
                .values()
                .map(|p| p.deadline)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                // A full send buffer (a burst of fan-out) is waited out, as a kernel
                // driver would, rather than dropping what the relay forwards.
                w = self.socket.writable(), if !self.backlog.is_empty() => {
                    if w.is_ok() {
                        self.flush();
                    }
                }
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    self.datagram(source, &buf[..n]);
                    for _ in 1..32 {
                        let Ok((n, source)) = self.socket.try_recv_from(&mut buf) else { break };
                        self.datagram(source, &buf[..n]);
                    }
                }
                c = ctl.recv() => match c {
                    Some(c) => self.control(c),
                    None => return,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
            }
            self.do_work();
            // Due timers, among them every peer that was just given packets to send: one
            // timeout sends all of a batch.
            let now = Instant::now();
            let due: Vec<u64> = self
                .peers
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.input(id, |rtc| rtc.handle_input(Input::Timeout(now)));
            }
            self.do_work();
        }
    }

    fn flush(&mut self) {
        while let Some((to, data)) = self.backlog.front() {
            match self.socket.try_send_to(data, *to) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                _ => {
                    self.backlog.pop_front();
                }
            }
        }
    }

    fn datagram(&mut self, source: SocketAddr, data: &[u8]) {
        let Ok(recv) = Receive::new(Protocol::Udp, source, self.media, data) else {
            return;
        };
        let input = Input::Receive(Instant::now(), recv);
        let id = match self.by_addr.get(&source) {
            Some(id) => *id,
            None => {
                // A new address: the peer whose ICE credentials its STUN request carries.
                let Some(id) = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.rtc.as_ref().is_some_and(|r| r.accepts(&input)))
                    .map(|(id, _)| *id)
                else {
                    return;
                };
                self.by_addr.insert(source, id);
                id
            }
        };
        self.input(id, move |rtc| rtc.handle_input(input));
    }

    /// Gives a peer one input and drains its output; a peer whose `Rtc` fails is dropped.
    fn input(&mut self, id: u64, f: impl FnOnce(&mut Rtc) -> Result<(), str0m::RtcError>) {
        let Some(rtc) = self.peers.get_mut(&id).and_then(|p| p.rtc.as_mut()) else {
            return;
        };
        if f(rtc).is_err() {
            self.remove(id);
            return;
        }
        self.drain(id);
    }

    fn drain(&mut self, id: u64) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(rtc) = peer.rtc.as_mut() else {
            return;
        };
        let failed = loop {
            let out = match rtc.poll_output() {
                Ok(o) => o,
                Err(_) => break true,
            };
            match out {
                Output::Timeout(t) => {
                    peer.deadline = t;
                    break false;
                }
                Output::Transmit(t) => {
                    send(&self.socket, &mut self.backlog, t.destination, &t.contents);
                }
                Output::Event(Event::RtpPacket(p)) => {
                    self.work.push_back(Work::Forward(id, Box::new(p)))
                }
                Output::Event(Event::KeyframeRequest(r)) => {
                    self.work.push_back(Work::Keyframe(id, r.mid))
                }
                Output::Event(Event::MediaAdded(m)) if m.direction == Direction::RecvOnly => {
                    peer.published.push((m.mid, m.kind));
                    self.work.push_back(Work::Published(id));
                }
                Output::Event(_) => {}
            }
        };
        if failed {
            self.remove(id);
        }
    }

    fn do_work(&mut self) {
        while let Some(w) = self.work.pop_front() {
            match w {
                Work::Forward(id, p) => self.forward(id, *p),
                Work::Keyframe(id, mid) => {
                    let Some(&(publisher, src_mid)) =
                        self.peers.get(&id).and_then(|p| p.out_tracks.get(&mid))
                    else {
                        continue;
                    };
                    self.input(publisher, |rtc| {
                        if let Some(rx) = rtc.direct_api().stream_rx_by_mid(src_mid, None) {
                            rx.request_keyframe(KeyframeRequestKind::Pli);
                        }
                        Ok(())
                    });
                }
                Work::Published(id) => {
                    let Some(room) = self.peers.get(&id).map(|p| p.room.clone()) else {
                        continue;
                    };
                    let others: Vec<u64> = self
                        .peers
                        .iter()
                        .filter(|(o, p)| **o != id && p.room == room)
                        .map(|(o, _)| *o)
                        .collect();
                    for o in others {
                        self.renegotiate(o);
                    }
                }
            }
        }
    }

    fn forward(&mut self, publisher: u64, packet: RtpPacket) {
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let mid = match p.rx_mids.get(&ssrc) {
            Some(m) => *m,
            None => {
                let Some(rtc) = p.rtc.as_mut() else { return };
                let Some(m) = rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else {
                    return;
                };
                p.rx_mids.insert(ssrc, m);
                m
            }
        };
        let room = p.room.clone();
        let video = p
            .published
            .iter()
            .any(|(m, k)| *m == mid && *k == MediaKind::Video);
        let subs: Vec<u64> = self
            .peers
            .iter()
            .filter(|(id, s)| **id != publisher && s.room == room)
            .map(|(id, _)| *id)
            .collect();
        for sub in subs {
            let Some(s) = self.peers.get_mut(&sub) else {
                continue;
            };
            let Some(out) = s.sends.get_mut(&(publisher, mid)) else {
                continue;
            };
            let Some(rtc) = s.rtc.as_mut() else { continue };
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out.mid, None) else {
                continue;
            };
            let offset = *out.offset.get_or_insert(packet.seq_no.saturating_sub(1));
            // Every participant runs the same codec set, so payload types carry over as is.
            let write = RtpWrite::new(
                packet.header.payload_type,
                (*packet.seq_no - offset).into(),
                packet.header.timestamp,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .nackable(video);
            tx.write_rtp(write);
            // Sent when the peer's timer runs, after the whole batch is written.
            self.drain(sub);
        }
    }

    fn control(&mut self, c: Ctl) {
        match c {
            Ctl::Join { conn, room, out } => {
                self.peers.insert(
                    conn,
                    Peer {
                        room,
                        out,
                        rtc: None,
                        deadline: Instant::now() + Duration::from_secs(3600),
                        published: Vec::new(),
                        rx_mids: HashMap::new(),
                        sends: HashMap::new(),
                        out_tracks: HashMap::new(),
                        pending: None,
                        needs_offer: false,
                    },
                );
            }
            Ctl::Offer { conn, sdp } => {
                let Some(peer) = self.peers.get_mut(&conn) else {
                    return;
                };
                if peer.rtc.is_some() {
                    let _ = peer.out.send(error("only the first offer is taken"));
                    return;
                }
                let mut rtc = RtcConfig::new()
                    .clear_codecs()
                    .enable_opus(true, false)
                    .enable_vp8(true)
                    .set_ice_lite(true)
                    .set_rtp_mode(true)
                    .build(Instant::now());
                match Candidate::host(self.media, "udp") {
                    Ok(c) => {
                        rtc.add_local_candidate(c);
                    }
                    Err(e) => {
                        let _ = peer.out.send(error(&e.to_string()));
                        return;
                    }
                }
                let answer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| e.to_string())
                    .and_then(|o| rtc.sdp_api().accept_offer(o).map_err(|e| e.to_string()));
                match answer {
                    Ok(a) => {
                        let _ = peer
                            .out
                            .send(json!({"type": "answer", "sdp": a.to_sdp_string()}).to_string());
                        peer.rtc = Some(rtc);
                        self.drain(conn);
                        self.do_work();
                        self.renegotiate(conn);
                    }
                    Err(e) => {
                        let _ = peer.out.send(error(&e));
                    }
                }
            }
            Ctl::Answer { conn, sdp } => {
                let Some(peer) = self.peers.get_mut(&conn) else {
                    return;
                };
                let (Some(rtc), Some(pending)) = (peer.rtc.as_mut(), peer.pending.take()) else {
                    let _ = peer.out.send(error("an answer without an offer"));
                    return;
                };
                let ok = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| e.to_string())
                    .and_then(|a| {
                        rtc.sdp_api()
                            .accept_answer(pending, a)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = ok {
                    let _ = peer.out.send(error(&e));
                    return;
                }
                self.drain(conn);
                if self.peers.get(&conn).is_some_and(|p| p.needs_offer) {
                    self.renegotiate(conn);
                }
            }
            Ctl::Leave { conn } => self.remove(conn),
        }
    }

    /// Offers `id` every track of its room it does not receive yet.
    fn renegotiate(&mut self, id: u64) {
        let Some(room) = self.peers.get(&id).map(|p| p.room.clone()) else {
            return;
        };
        let tracks: Vec<(u64, Mid, MediaKind)> = self
            .peers
            .iter()
            .filter(|(o, p)| **o != id && p.room == room)
            .flat_map(|(o, p)| p.published.iter().map(move |(m, k)| (*o, *m, *k)))
            .collect();
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(rtc) = peer.rtc.as_mut() else {
            return;
        };
        if peer.pending.is_some() {
            peer.needs_offer = true;
            return;
        }
        peer.needs_offer = false;
        let mut api = rtc.sdp_api();
        let mut added = Vec::new();
        for (publisher, mid, kind) in tracks {
            if peer.sends.contains_key(&(publisher, mid)) {
                continue;
            }
            let stream = format!("p{publisher}");
            let track = format!("p{publisher}-{mid}");
            let out = api.add_media(kind, Direction::SendOnly, Some(stream), Some(track), None);
            added.push(((publisher, mid), out));
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        for (track, out) in added {
            peer.sends.insert(
                track,
                Out {
                    mid: out,
                    offset: None,
                },
            );
            peer.out_tracks.insert(out, track);
        }
        peer.pending = Some(pending);
        let _ = peer
            .out
            .send(json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string());
        self.drain(id);
    }

    fn remove(&mut self, id: u64) {
        self.peers.remove(&id);
        self.by_addr.retain(|_, p| *p != id);
        for p in self.peers.values_mut() {
            p.sends.retain(|(publisher, _), _| *publisher != id);
        }
    }
}

fn error(message: &str) -> String {
    json!({"type": "error", "code": "media-error", "message": message}).to_string()
}

/// Sends now, or queues behind what already waits for the send buffer.
fn send(
    socket: &UdpSocket,
    backlog: &mut VecDeque<(SocketAddr, Vec<u8>)>,
    to: SocketAddr,
    data: &[u8],
) {
    if backlog.is_empty() {
        match socket.try_send_to(data, to) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => return,
        }
    }
    backlog.push_back((to, data.to_vec()));
}

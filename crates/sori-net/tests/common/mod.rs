//! Test clients: str0m peers over real UDP on 127.0.0.1 against a media port.
//!
//! Each client publishes synthetic Opus and VP8 frames whose bytes are a pure function of
//! (sender, kind, sequence number, keyframe flag), so a receiver can check every byte of every
//! frame it decodes. Clients report what they saw through a `watch` channel that tests wait on.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sori_net::sori_sfu::{PeerId, RemoveReason, SfuConfig};
use sori_net::{MediaConfig, MediaHandle, MediaServer, PeerSignal, TcpConfig};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A media port on 127.0.0.1 with a free port, UDP only.
pub async fn start_server(ice_timeout: Duration) -> MediaServer {
    start_server_with(ice_timeout, None).await
}

/// A media port on 127.0.0.1 with a free port, with ICE-TCP as `tcp` says.
pub async fn start_server_with(ice_timeout: Duration, tcp: Option<TcpConfig>) -> MediaServer {
    start_server_at(
        SocketAddr::new(LOCALHOST, 0),
        vec![LOCALHOST],
        ice_timeout,
        tcp,
    )
    .await
}

/// A media port bound to `bind`, advertising `advertise`.
pub async fn start_server_at(
    bind: SocketAddr,
    advertise: Vec<IpAddr>,
    ice_timeout: Duration,
    tcp: Option<TcpConfig>,
) -> MediaServer {
    let config = MediaConfig {
        bind,
        advertise,
        sfu: SfuConfig {
            ice_timeout,
            ..SfuConfig::default()
        },
        tcp,
    };
    sori_net::start(config)
        .await
        .expect("media port binds on 127.0.0.1")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Audio,
    Video,
}

/// The synthetic frame `sender` sends as number `seq`.
pub fn frame_bytes(kind: Kind, sender: u8, seq: u32, keyframe: bool) -> Vec<u8> {
    let (mut v, len) = match kind {
        Kind::Audio => (b"OPUS".to_vec(), 60),
        // A VP8 frame tag (show_frame, P=0 for a keyframe) and, for keyframes, the start code
        // and a 640x480 size, as a real encoder writes them.
        Kind::Video if keyframe => (
            vec![0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01],
            3000,
        ),
        Kind::Video => (vec![0x11, 0, 0], 1100),
    };
    v.extend_from_slice(b"SORI");
    v.push(sender);
    v.extend_from_slice(&seq.to_be_bytes());
    let mut i = 0u32;
    while v.len() < len {
        v.push(
            (seq.wrapping_mul(31)
                .wrapping_add(i.wrapping_mul(7))
                .wrapping_add(sender as u32)) as u8,
        );
        i += 1;
    }
    v
}

/// A decoded frame as the receiver saw it.
#[derive(Debug, Clone)]
pub struct RecvFrame {
    pub seq: u32,
    pub keyframe: bool,
    /// Every byte equal to what the sender wrote.
    pub intact: bool,
    pub at: Instant,
}

fn parse_frame(kind: Kind, data: &[u8]) -> Option<(u8, RecvFrame)> {
    let (keyframe, at) = match kind {
        Kind::Audio => (false, 4),
        Kind::Video => {
            let key = data.first()? & 0x01 == 0;
            (key, if key { 10 } else { 3 })
        }
    };
    let magic = data.get(at..at + 4)?;
    if magic != b"SORI" {
        return None;
    }
    let sender = *data.get(at + 4)?;
    let seq = u32::from_be_bytes(data.get(at + 5..at + 9)?.try_into().ok()?);
    let intact = data == frame_bytes(kind, sender, seq, keyframe).as_slice();
    Some((
        sender,
        RecvFrame {
            seq,
            keyframe,
            intact,
            at: Instant::now(),
        },
    ))
}

#[derive(Debug, Clone, Default)]
pub struct ClientState {
    pub connected: bool,
    /// Frames received, by (sender index, kind), in arrival order.
    pub received: BTreeMap<(u8, Kind), Vec<RecvFrame>>,
    /// When keyframe requests (PLI/FIR) reached this client as a publisher.
    pub keyframe_requests: Vec<Instant>,
    pub sent_audio: u32,
    pub sent_video: u32,
    /// Video frames sent as keyframes, by sequence number.
    pub sent_keyframes: Vec<u32>,
    /// Receiving m-lines the server added, and whether each is still active.
    pub recv_mids: BTreeMap<String, bool>,
    pub offers_accepted: u32,
    pub removed: Option<RemoveReason>,
    pub finished: bool,
    /// Datagrams dropped by the simulated loss, both directions.
    pub dropped: u32,
    /// The transport of the ICE pair the client's agent selected (from str0m's stats).
    pub selected: Option<Protocol>,
    /// Datagrams that came from another address than the server's candidate (dropped).
    pub foreign_datagrams: u32,
}

impl ClientState {
    pub fn frames(&self, sender: u8, kind: Kind) -> &[RecvFrame] {
        self.received
            .get(&(sender, kind))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    pub fn active_recv_mids(&self) -> usize {
        self.recv_mids.values().filter(|a| **a).count()
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub index: u8,
    pub room: String,
    pub publish: bool,
    /// Interval between unrequested keyframes.
    pub keyframe_interval: Duration,
    /// Share of datagrams dropped each way once connected (0.0–1.0).
    pub loss: f64,
    /// UDP blocked by a firewall: the client's UDP candidate gets nothing through, and it also
    /// has an active TCP candidate, connected to the server's ICE-TCP port.
    pub udp_blocked: bool,
    /// Which of the server's candidates the client sends to (its socket is of that family).
    pub candidate: usize,
}

impl ClientOptions {
    pub fn new(index: u8, room: &str) -> Self {
        Self {
            index,
            room: room.to_string(),
            publish: true,
            keyframe_interval: Duration::from_secs(2),
            loss: 0.0,
            udp_blocked: false,
            candidate: 0,
        }
    }
}

enum Ctl {
    RequestKeyframe { sender_peer: PeerId },
    Leave,
    CloseDtls,
    Vanish,
    Garbage(usize),
}

pub struct Client {
    pub peer: PeerId,
    pub index: u8,
    pub addr: SocketAddr,
    state: watch::Receiver<ClientState>,
    ctl: mpsc::UnboundedSender<Ctl>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Creates a str0m client, joins `room` on `media`, and starts its run loop.
    pub async fn join(server: &MediaServer, opts: ClientOptions) -> Client {
        let media = &server.handle;
        let server_addr = server.candidates[opts.candidate];
        let own_ip = if server_addr.is_ipv6() {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            LOCALHOST
        };
        let socket = UdpSocket::bind(SocketAddr::new(own_ip, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(Some(Duration::from_millis(200)))
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let tcp = if opts.udp_blocked {
            let server_tcp = server.tcp_candidates[0];
            let stream = TcpStream::connect(server_tcp)
                .await
                .expect("ICE-TCP connects");
            stream.set_nodelay(true).unwrap();
            let local = stream.local_addr().unwrap();
            let candidate = Candidate::builder()
                .tcp()
                .host(local)
                .tcptype(TcpType::Active)
                .build()
                .unwrap();
            rtc.add_local_candidate(candidate);
            Some(TcpLink::start(stream, server_tcp))
        } else {
            None
        };
        let mut api = rtc.sdp_api();
        let mut send_mids = HashMap::new();
        if opts.publish {
            let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
            send_mids.insert(Kind::Audio, a);
            send_mids.insert(Kind::Video, v);
        } else {
            // An offer needs one m-line; a receive-only audio line publishes nothing.
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().unwrap();
        let joined = media
            .join(&opts.room, &offer.to_sdp_string())
            .await
            .expect("join");
        let answer = SdpAnswer::from_sdp_string(&joined.answer).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();

        let (state_tx, state) = watch::channel(ClientState::default());
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let runner = Runner {
            rtc,
            server_addr,
            socket: Arc::new(socket),
            media: media.clone(),
            peer: joined.peer,
            signals: joined.signals,
            ctl: ctl_rx,
            state: state_tx,
            opts: opts.clone(),
            send_mids,
            peer_mids: HashMap::new(),
            rng: 0x9e37_79b9_7f4a_7c15 ^ ((opts.index as u64 + 1) * 0x2545_f491),
            force_keyframe: true,
            tcp,
        };
        let task = tokio::spawn(runner.run());
        Client {
            peer: joined.peer,
            index: opts.index,
            addr,
            state,
            ctl,
            task,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state.borrow().clone()
    }

    /// Waits until `cond` holds on the client's state, or panics after `limit`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&ClientState) -> bool,
    ) -> ClientState {
        let mut rx = self.state.clone();
        let waited = tokio::time::timeout(limit, async {
            rx.wait_for(|s| cond(s)).await.map(|s| s.clone())
        })
        .await;
        match waited {
            Ok(Ok(s)) => s,
            _ => panic!(
                "client {}: timed out after {limit:?} waiting for {what}; state: {}",
                self.index,
                summary(&self.state())
            ),
        }
    }

    /// Sends a PLI for the video this client receives from `sender_peer`.
    pub fn request_keyframe(&self, sender_peer: PeerId) {
        let _ = self.ctl.send(Ctl::RequestKeyframe { sender_peer });
    }

    /// Tells the server it leaves, then stops.
    pub fn leave(&self) {
        let _ = self.ctl.send(Ctl::Leave);
    }

    /// Closes DTLS (close_notify), then stops.
    pub fn close_dtls(&self) {
        let _ = self.ctl.send(Ctl::CloseDtls);
    }

    /// Stops without a word to anyone.
    pub async fn vanish(self) {
        let _ = self.ctl.send(Ctl::Vanish);
        let _ = self.task.await;
    }

    /// Sends `n` garbage datagrams to the server from this client's own socket.
    pub fn send_garbage(&self, n: usize) {
        let _ = self.ctl.send(Ctl::Garbage(n));
    }
}

pub fn summary(s: &ClientState) -> String {
    let rx: Vec<String> = s
        .received
        .iter()
        .map(|((sender, kind), f)| format!("{sender}/{kind:?}:{}", f.len()))
        .collect();
    format!(
        "connected={} sent a/v={}/{} received=[{}] recv_mids={:?} pli={} removed={:?}",
        s.connected,
        s.sent_audio,
        s.sent_video,
        rx.join(" "),
        s.recv_mids,
        s.keyframe_requests.len(),
        s.removed
    )
}

/// The client's end of an ICE-TCP connection: RFC 4571 frames both ways.
struct TcpLink {
    write: OwnedWriteHalf,
    frames: mpsc::UnboundedReceiver<Vec<u8>>,
    local: SocketAddr,
    server: SocketAddr,
}

impl TcpLink {
    fn start(stream: TcpStream, server: SocketAddr) -> TcpLink {
        let local = stream.local_addr().unwrap();
        let (mut read, write) = stream.into_split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if read.read_exact(&mut len).await.is_err() {
                    break;
                }
                let mut frame = vec![0u8; u16::from_be_bytes(len) as usize];
                if read.read_exact(&mut frame).await.is_err() || tx.send(frame).is_err() {
                    break;
                }
            }
        });
        TcpLink {
            write,
            frames,
            local,
            server,
        }
    }

    async fn send(&mut self, contents: &[u8]) {
        let mut framed = (contents.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(contents);
        let _ = self.write.write_all(&framed).await;
    }

    async fn recv(link: &mut Option<TcpLink>) -> Option<Vec<u8>> {
        match link {
            Some(l) => l.frames.recv().await,
            None => std::future::pending().await,
        }
    }
}

struct Runner {
    tcp: Option<TcpLink>,
    rtc: Rtc,
    server_addr: SocketAddr,
    socket: Arc<UdpSocket>,
    media: MediaHandle,
    peer: PeerId,
    signals: mpsc::UnboundedReceiver<PeerSignal>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    state: watch::Sender<ClientState>,
    opts: ClientOptions,
    send_mids: HashMap<Kind, Mid>,
    /// Receiving video m-line per publishing peer (from the server's msid stream id).
    peer_mids: HashMap<String, Mid>,
    rng: u64,
    force_keyframe: bool,
}

const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const VIDEO_INTERVAL: Duration = Duration::from_millis(33);

impl Runner {
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn lossy(&mut self) -> bool {
        let drop =
            self.opts.loss > 0.0 && self.state.borrow().connected && self.random() < self.opts.loss;
        if drop {
            self.state.send_modify(|s| s.dropped += 1);
        }
        drop
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let start = Instant::now();
        let mut next_audio = start;
        let mut next_video = start;
        let mut last_keyframe = start;
        let (mut audio_seq, mut video_seq) = (0u32, 0u32);
        let server_addr = self.server_addr;
        let mut closing = false;
        loop {
            let timeout = match self.drain().await {
                Some(t) => t,
                None => break,
            };
            if closing && !self.rtc.is_alive() {
                break;
            }
            let now = Instant::now();
            if self.opts.publish && self.state.borrow().connected && !closing {
                if now >= next_audio {
                    let data = frame_bytes(Kind::Audio, self.opts.index, audio_seq, false);
                    self.write(
                        Kind::Audio,
                        now,
                        audio_seq as u64 * 960,
                        Frequency::FORTY_EIGHT_KHZ,
                        &data,
                    );
                    audio_seq += 1;
                    self.state.send_modify(|s| s.sent_audio = audio_seq);
                    next_audio += AUDIO_INTERVAL;
                    continue;
                }
                if now >= next_video {
                    let key = self.force_keyframe
                        || now.duration_since(last_keyframe) >= self.opts.keyframe_interval;
                    if key {
                        self.force_keyframe = false;
                        last_keyframe = now;
                    }
                    let data = frame_bytes(Kind::Video, self.opts.index, video_seq, key);
                    self.write(
                        Kind::Video,
                        now,
                        video_seq as u64 * 3000,
                        Frequency::NINETY_KHZ,
                        &data,
                    );
                    let seq = video_seq;
                    video_seq += 1;
                    self.state.send_modify(|s| {
                        s.sent_video = video_seq;
                        if key {
                            s.sent_keyframes.push(seq);
                        }
                    });
                    next_video += VIDEO_INTERVAL;
                    continue;
                }
            } else {
                next_audio = now;
                next_video = now;
            }
            let mut wake = timeout;
            if self.opts.publish && !closing {
                wake = wake.min(next_audio).min(next_video);
            }
            tokio::select! {
                frame = TcpLink::recv(&mut self.tcp) => {
                    let Some(frame) = frame else {
                        // The server closed the connection: nothing more comes.
                        self.tcp = None;
                        continue;
                    };
                    let Some(link) = &self.tcp else { continue };
                    if let Ok(recv) = Receive::new(Protocol::Tcp, link.server, link.local, &frame) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), recv));
                    }
                }
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    if self.lossy() || self.opts.udp_blocked {
                        continue;
                    }
                    // As a browser does: what comes from another address than the server's
                    // candidate answers none of its checks and belongs to no session.
                    if source != self.server_addr {
                        self.state.send_modify(|s| s.foreign_datagrams += 1);
                        continue;
                    }
                    let local = self.socket.local_addr().unwrap();
                    if let Ok(recv) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), recv));
                    }
                }
                signal = self.signals.recv() => match signal {
                    Some(PeerSignal::Offer(sdp)) => self.accept_server_offer(&sdp).await,
                    Some(PeerSignal::Connected | PeerSignal::Published { .. }) => {}
                    Some(PeerSignal::Removed(reason)) => self.state.send_modify(|s| s.removed = Some(reason)),
                    None => {}
                },
                ctl = self.ctl.recv() => match ctl {
                    Some(Ctl::RequestKeyframe { sender_peer }) => {
                        if let Some(mid) = self.peer_mids.get(&sender_peer.to_string()).copied() {
                            let _ = self.rtc.direct_api().stream_rx_by_mid(mid, None).map(|s| s.request_keyframe(KeyframeRequestKind::Pli));
                        }
                    }
                    Some(Ctl::Leave) => {
                        let _ = self.media.leave(self.peer).await;
                        break;
                    }
                    Some(Ctl::CloseDtls) => {
                        let _ = self.rtc.close();
                        closing = true;
                    }
                    Some(Ctl::Vanish) | None => break,
                    Some(Ctl::Garbage(n)) => {
                        for i in 0..n {
                            let len = 1 + (self.random() * 1200.0) as usize;
                            let mut g: Vec<u8> = (0..len).map(|_| (self.random() * 256.0) as u8).collect();
                            // Some look like RTP/RTCP or DTLS to get past the first checks.
                            match i % 3 {
                                0 => g[0] = 0x80,
                                1 => g[0] = 22,
                                _ => {}
                            }
                            let _ = self.socket.send_to(&g, server_addr).await;
                        }
                    }
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
        self.state.send_modify(|s| s.finished = true);
    }

    fn write(&mut self, kind: Kind, now: Instant, ts: u64, freq: Frequency, data: &[u8]) {
        let Some(mid) = self.send_mids.get(&kind).copied() else {
            return;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        let _ = writer.write(pt, now, MediaTime::new(ts, freq), data.to_vec());
    }

    async fn accept_server_offer(&mut self, sdp: &str) {
        let offer = SdpOffer::from_sdp_string(sdp).expect("server offer parses");
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("server offer accepted");
        self.state.send_modify(|s| s.offers_accepted += 1);
        self.refresh_mids();
        self.media
            .answer(self.peer, &answer.to_sdp_string())
            .await
            .expect("server takes the answer");
    }

    /// Records the receiving m-lines and whether each is active.
    fn refresh_mids(&mut self) {
        let mids: Vec<Mid> = self
            .state
            .borrow()
            .recv_mids
            .keys()
            .map(|m| Mid::from(m.as_str()))
            .collect();
        let mut updates = Vec::new();
        for mid in mids {
            if let Some(m) = self.rtc.media(mid) {
                updates.push((mid, m.direction().is_receiving() && !m.disabled()));
            }
        }
        self.state.send_modify(|s| {
            for (mid, active) in updates {
                s.recv_mids.insert(mid.to_string(), active);
            }
        });
    }

    /// Drains the client's Rtc; returns its next timeout, or None when the client is done.
    async fn drain(&mut self) -> Option<Instant> {
        loop {
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => panic!("client {} rtc error: {e}", self.opts.index),
            };
            match out {
                Output::Timeout(t) => return Some(t),
                Output::Transmit(t) => {
                    if self.lossy() {
                        continue;
                    }
                    match (t.proto, self.tcp.as_mut()) {
                        (Protocol::Tcp, Some(link)) => link.send(&t.contents).await,
                        (Protocol::Tcp, None) => {}
                        // The firewall drops it.
                        _ if self.opts.udp_blocked => {}
                        _ => {
                            let _ = self.socket.send_to(&t.contents, t.destination).await;
                        }
                    }
                }
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.state.send_modify(|s| s.connected = true),
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                if let Some(media) = self.rtc.media(m.mid) {
                    if media.kind().is_video() {
                        self.peer_mids.insert(media.stream_id().to_string(), m.mid);
                    }
                }
                self.state.send_modify(|s| {
                    s.recv_mids.insert(m.mid.to_string(), true);
                });
            }
            Event::MediaChanged(_) => self.refresh_mids(),
            Event::MediaData(d) => {
                let kind = if d.params.spec().codec.is_audio() {
                    Kind::Audio
                } else {
                    Kind::Video
                };
                if let Some((sender, frame)) = parse_frame(kind, &d.data) {
                    self.state
                        .send_modify(|s| s.received.entry((sender, kind)).or_default().push(frame));
                }
            }
            Event::PeerStats(s) => {
                let selected = s.selected_candidate_pair.map(|p| p.protocol);
                self.state.send_modify(|st| st.selected = selected);
            }
            Event::KeyframeRequest(_) => {
                self.force_keyframe = true;
                self.state
                    .send_modify(|s| s.keyframe_requests.push(Instant::now()));
            }
            _ => {}
        }
    }
}

//! Test clients: str0m peers over real UDP on 127.0.0.1 against a media port.
//!
//! Each client publishes synthetic Opus and VP8 frames whose bytes are a pure function of
//! (sender, kind, sequence number, keyframe flag), so a receiver can check every byte of every
//! frame it decodes. Clients report what they saw through a `watch` channel that tests wait on.
//! The peer, its socket and its run loop are the test kit's ([`sori_testkit::udp`]); a client
//! here is a handler of that loop, with simulated loss, ICE-TCP and the tests' commands.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sori_net::{MediaConfig, MediaHandle, MediaServer, PeerSignal, TcpConfig};
use sori_sfu::{PeerId, RemoveReason, SfuConfig};
use sori_testkit::udp::{self, Flow, Pacer, Peer, Stage, Tick};
use sori_testkit::Rng;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Frequency, KeyframeRequestKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Event, Input, Rtc, RtcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

/// A media port on 127.0.0.1 with `workers` media workers.
pub async fn start_server_workers(workers: usize) -> MediaServer {
    start_node(workers, 0, 0).await
}

/// Media node `node` on 127.0.0.1 with `workers` media workers and `links` links.
pub async fn start_node(workers: usize, node: u16, links: usize) -> MediaServer {
    let config = MediaConfig {
        bind: SocketAddr::new(LOCALHOST, 0),
        advertise: vec![LOCALHOST],
        sfu: SfuConfig::default(),
        tcp: None,
        workers,
        node,
        links,
    };
    sori_net::start(config)
        .await
        .expect("media port binds on 127.0.0.1")
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
        workers: 1,
        node: 0,
        links: 0,
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
    /// ICE restarts the server answered.
    pub ice_restarts: u32,
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
    IceRestart,
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
        let config = udp::config().set_stats_interval(Some(Duration::from_millis(200)));
        let mut peer = Peer::bind(own_ip, config).await.unwrap();
        let addr = peer.local;
        let tcp = if opts.udp_blocked {
            Some(TcpLink::connect(&mut peer.rtc, server.tcp_candidates[0]).await)
        } else {
            None
        };
        // A client that does not publish offers one receive-only audio line.
        let offer = peer.offer(opts.publish, opts.publish).unwrap();
        let joined = media.join(&opts.room, &offer.sdp).await.expect("join");
        let answer = SdpAnswer::from_sdp_string(&joined.answer).unwrap();
        peer.rtc
            .sdp_api()
            .accept_answer(offer.pending, answer)
            .unwrap();

        let (state_tx, state) = watch::channel(ClientState::default());
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let mut runner = Runner {
            server_addr,
            media: media.clone(),
            peer: joined.peer,
            signals: joined.signals,
            ctl: ctl_rx,
            state: state_tx,
            audio_mid: offer.audio,
            video_mid: offer.video,
            peer_mids: HashMap::new(),
            rng: Rng::new(0x9e37_79b9_7f4a_7c15 ^ ((opts.index as u64 + 1) * 0x2545_f491)),
            pacer: Pacer::new(
                opts.publish.then_some(AUDIO_INTERVAL),
                opts.publish.then_some(VIDEO_INTERVAL),
                opts.keyframe_interval,
                Instant::now(),
            ),
            audio_seq: 0,
            video_seq: 0,
            closing: false,
            tcp,
            opts: opts.clone(),
        };
        let task = tokio::spawn(async move {
            udp::run(&mut peer, &mut runner).await;
            runner.state.send_modify(|s| s.finished = true);
        });
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

    /// Restarts ICE: an offer with new credentials through the media handle.
    pub fn ice_restart(&self) {
        let _ = self.ctl.send(Ctl::IceRestart);
    }

    /// Sends `n` garbage datagrams to the server from this client's own socket.
    pub fn send_garbage(&self, n: usize) {
        let _ = self.ctl.send(Ctl::Garbage(n));
    }
}

/// Checks what client `me` received from `sender`: every frame intact, none missing or out
/// of order from the first one, and video starting on a keyframe.
pub fn assert_complete(me: u8, s: &ClientState, sender: u8) {
    for kind in [Kind::Audio, Kind::Video] {
        let frames = s.frames(sender, kind);
        let bad: Vec<u32> = frames.iter().filter(|f| !f.intact).map(|f| f.seq).collect();
        assert!(
            bad.is_empty(),
            "client {me} got corrupted {kind:?} frames from {sender}: {bad:?}"
        );
        // Nothing missing: consecutive sequence numbers from the first one received.
        let first = frames[0].seq;
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(
                f.seq,
                first + i as u32,
                "client {me} {kind:?} from {sender}: gap or reorder"
            );
        }
        if kind == Kind::Video {
            assert!(
                frames[0].keyframe,
                "client {me}: first video frame from {sender} is a keyframe"
            );
        }
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

/// The client's end of an ICE-TCP connection: RFC 4571 frames both ways, each way a task.
struct TcpLink {
    out: mpsc::UnboundedSender<Vec<u8>>,
    frames: mpsc::UnboundedReceiver<Vec<u8>>,
    local: SocketAddr,
    server: SocketAddr,
}

impl TcpLink {
    /// Connects to the server's ICE-TCP port and adds the active TCP candidate to `rtc`.
    async fn connect(rtc: &mut Rtc, server: SocketAddr) -> TcpLink {
        let stream = TcpStream::connect(server).await.expect("ICE-TCP connects");
        stream.set_nodelay(true).unwrap();
        let local = stream.local_addr().unwrap();
        let candidate = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .unwrap();
        rtc.add_local_candidate(candidate);
        let (mut read, mut write) = stream.into_split();
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
        let (out, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(framed) = outgoing.recv().await {
                if write.write_all(&framed).await.is_err() {
                    break;
                }
            }
        });
        TcpLink {
            out,
            frames,
            local,
            server,
        }
    }

    fn send(&self, contents: &[u8]) {
        let mut framed = (contents.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(contents);
        let _ = self.out.send(framed);
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
    server_addr: SocketAddr,
    media: MediaHandle,
    peer: PeerId,
    signals: mpsc::UnboundedReceiver<PeerSignal>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    state: watch::Sender<ClientState>,
    opts: ClientOptions,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    /// Receiving video m-line per publishing peer (from the server's msid stream id).
    peer_mids: HashMap<String, Mid>,
    rng: Rng,
    pacer: Pacer,
    audio_seq: u32,
    video_seq: u32,
    /// DTLS is closing: the client sends nothing more and stops once the peer is dead.
    closing: bool,
}

const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const VIDEO_INTERVAL: Duration = Duration::from_millis(33);

/// What arrives besides UDP datagrams.
enum Command {
    Tcp(Option<Vec<u8>>),
    Signal(Option<PeerSignal>),
    Ctl(Option<Ctl>),
}

impl Runner {
    fn lossy(&mut self) -> bool {
        let drop = self.opts.loss > 0.0
            && self.state.borrow().connected
            && self.rng.chance(self.opts.loss);
        if drop {
            self.state.send_modify(|s| s.dropped += 1);
        }
        drop
    }

    /// Writes the audio packet or the video frame due at `now`; true if it wrote one.
    fn send_due(&mut self, rtc: &mut Rtc, now: Instant) -> bool {
        if self.pacer.audio_due(now) {
            let data = frame_bytes(Kind::Audio, self.opts.index, self.audio_seq, false);
            let ts = MediaTime::new(self.audio_seq as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
            write(rtc, self.audio_mid, now, ts, &data);
            self.audio_seq += 1;
            let sent = self.audio_seq;
            self.state.send_modify(|s| s.sent_audio = sent);
            return true;
        }
        let Some(frame) = self.pacer.video_due(now) else {
            return false;
        };
        let (seq, key) = (self.video_seq, frame.keyframe);
        let data = frame_bytes(Kind::Video, self.opts.index, seq, key);
        let ts = MediaTime::new(seq as u64 * 3000, Frequency::NINETY_KHZ);
        write(rtc, self.video_mid, now, ts, &data);
        self.video_seq += 1;
        self.state.send_modify(|s| {
            s.sent_video = seq + 1;
            if key {
                s.sent_keyframes.push(seq);
            }
        });
        true
    }

    async fn on_ctl(&mut self, peer: &mut Peer, ctl: Option<Ctl>) -> Flow {
        match ctl {
            Some(Ctl::RequestKeyframe { sender_peer }) => {
                if let Some(mid) = self.peer_mids.get(&sender_peer.to_string()).copied() {
                    if let Some(s) = peer.rtc.direct_api().stream_rx_by_mid(mid, None) {
                        s.request_keyframe(KeyframeRequestKind::Pli);
                    }
                }
            }
            Some(Ctl::Leave) => {
                let _ = self.media.leave(self.peer).await;
                return Flow::Stop;
            }
            Some(Ctl::CloseDtls) => {
                let _ = peer.rtc.close();
                self.closing = true;
            }
            Some(Ctl::Vanish) | None => return Flow::Stop,
            Some(Ctl::IceRestart) => {
                let mut api = peer.rtc.sdp_api();
                api.ice_restart(true);
                let (offer, pending) = api.apply().expect("an ICE restart makes an offer");
                let answer = self
                    .media
                    .offer(self.peer, &offer.to_sdp_string())
                    .await
                    .expect("the server answers the restart");
                let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
                peer.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .expect("the restart's answer is accepted");
                self.state.send_modify(|s| s.ice_restarts += 1);
            }
            Some(Ctl::Garbage(n)) => {
                for i in 0..n {
                    let len = 1 + self.rng.below(1200);
                    let mut g: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                    // Some look like RTP/RTCP or DTLS to get past the first checks.
                    match i % 3 {
                        0 => g[0] = 0x80,
                        1 => g[0] = 22,
                        _ => {}
                    }
                    let _ = peer.socket.send_to(&g, self.server_addr).await;
                }
            }
        }
        Flow::Continue
    }

    async fn accept_server_offer(&mut self, rtc: &mut Rtc, sdp: &str) {
        let offer = SdpOffer::from_sdp_string(sdp).expect("server offer parses");
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("server offer accepted");
        self.state.send_modify(|s| s.offers_accepted += 1);
        self.refresh_mids(rtc);
        self.media
            .answer(self.peer, &answer.to_sdp_string())
            .await
            .expect("server takes the answer");
    }

    /// Records the receiving m-lines and whether each is active.
    fn refresh_mids(&mut self, rtc: &Rtc) {
        let mids: Vec<Mid> = self
            .state
            .borrow()
            .recv_mids
            .keys()
            .map(|m| Mid::from(m.as_str()))
            .collect();
        let mut updates = Vec::new();
        for mid in mids {
            if let Some(m) = rtc.media(mid) {
                updates.push((mid, m.direction().is_receiving() && !m.disabled()));
            }
        }
        self.state.send_modify(|s| {
            for (mid, active) in updates {
                s.recv_mids.insert(mid.to_string(), active);
            }
        });
    }
}

fn write(rtc: &mut Rtc, mid: Option<Mid>, now: Instant, ts: MediaTime, data: &[u8]) {
    let Some(writer) = mid.and_then(|mid| rtc.writer(mid)) else {
        return;
    };
    let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
        return;
    };
    let _ = writer.write(pt, now, ts, data.to_vec());
}

impl udp::Handler for Runner {
    type Command = Command;

    fn tick(&mut self, rtc: &mut Rtc, now: Instant) -> Tick {
        if self.closing && !rtc.is_alive() {
            return Tick::Stop;
        }
        if !self.opts.publish || !self.state.borrow().connected || self.closing {
            self.pacer.hold(now);
            return Tick::Wait(None);
        }
        if self.send_due(rtc, now) {
            return Tick::Wrote;
        }
        Tick::Wait(self.pacer.next_due())
    }

    fn admit(&mut self, source: SocketAddr, _datagram: &[u8]) -> bool {
        if self.lossy() || self.opts.udp_blocked {
            return false;
        }
        // As a browser does: what comes from another address than the server's candidate
        // answers none of its checks and belongs to no session.
        if source != self.server_addr {
            self.state.send_modify(|s| s.foreign_datagrams += 1);
            return false;
        }
        true
    }

    fn route(&mut self, t: Transmit) -> Option<Transmit> {
        if self.lossy() {
            return None;
        }
        match (t.proto, self.tcp.as_ref()) {
            (Protocol::Tcp, Some(link)) => link.send(&t.contents),
            (Protocol::Tcp, None) => {}
            // The firewall drops it.
            _ if self.opts.udp_blocked => {}
            _ => return Some(t),
        }
        None
    }

    fn on_error(&mut self, e: RtcError, stage: Stage) -> Flow {
        match stage {
            // A datagram or timeout the peer refuses changes nothing for the test.
            Stage::Input => Flow::Continue,
            Stage::Output => panic!("client {} rtc error: {e}", self.opts.index),
        }
    }

    fn on_event(&mut self, rtc: &mut Rtc, e: Event) {
        match e {
            Event::Connected => self.state.send_modify(|s| s.connected = true),
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                if let Some(media) = rtc.media(m.mid) {
                    if media.kind().is_video() {
                        self.peer_mids.insert(media.stream_id().to_string(), m.mid);
                    }
                }
                self.state.send_modify(|s| {
                    s.recv_mids.insert(m.mid.to_string(), true);
                });
            }
            Event::MediaChanged(_) => self.refresh_mids(rtc),
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
                self.pacer.request_keyframe();
                self.state
                    .send_modify(|s| s.keyframe_requests.push(Instant::now()));
            }
            _ => {}
        }
    }

    async fn next_command(&mut self) -> Command {
        tokio::select! {
            frame = TcpLink::recv(&mut self.tcp) => Command::Tcp(frame),
            signal = self.signals.recv() => Command::Signal(signal),
            ctl = self.ctl.recv() => Command::Ctl(ctl),
        }
    }

    async fn on_command(&mut self, peer: &mut Peer, command: Command) -> Flow {
        match command {
            // The server closed the connection: nothing more comes.
            Command::Tcp(None) => self.tcp = None,
            Command::Tcp(Some(frame)) => {
                let Some(link) = &self.tcp else {
                    return Flow::Continue;
                };
                if let Ok(recv) = Receive::new(Protocol::Tcp, link.server, link.local, &frame) {
                    let _ = peer.rtc.handle_input(Input::Receive(Instant::now(), recv));
                }
            }
            Command::Signal(Some(PeerSignal::Offer(sdp))) => {
                self.accept_server_offer(&mut peer.rtc, &sdp).await
            }
            Command::Signal(Some(PeerSignal::Removed(reason))) => {
                self.state.send_modify(|s| s.removed = Some(reason))
            }
            Command::Signal(_) => {}
            Command::Ctl(ctl) => return self.on_ctl(peer, ctl).await,
        }
        Flow::Continue
    }
}

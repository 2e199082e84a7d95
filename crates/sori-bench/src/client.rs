//! One load-generator participant: a str0m peer in RTP mode on its own UDP socket.
//!
//! A client publishes synthetic Opus (50 packets/s) and VP8 (a set bitrate and frame rate, a
//! keyframe at a set interval and on every keyframe request), and receives whatever the other
//! side offers, counting each packet by its probe ([`crate::probe`]). How the SDP travels is not
//! its business: the caller makes the first exchange with [`Setup`], then hands the running
//! client two channels for later offers (in) and answers (out).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::measure::{Reception, Window};
use crate::probe::{self, now_ns, Probe, StreamKind};

/// What a client sends.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The publisher number every probe of this client carries.
    pub id: u16,
    pub audio: bool,
    pub video: bool,
    pub video_kbps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
    /// Bytes per Opus packet, probe included.
    pub audio_bytes: usize,
    /// The publishers this client receives send audio only, so their first audio packet is a
    /// decodable start (otherwise only a video keyframe is).
    pub ready_on_audio: bool,
}

impl ClientOptions {
    /// A client that only receives.
    pub fn receiver(id: u16) -> Self {
        Self {
            id,
            audio: false,
            video: false,
            video_kbps: 0,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            audio_bytes: 80,
            ready_on_audio: false,
        }
    }
}

/// Counters every client of a run adds to, for the progress line.
#[derive(Debug, Default)]
pub struct Shared {
    pub window: Window,
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

/// Milestones of a client's join, in [`now_ns`] time.
#[derive(Debug, Clone, Default)]
pub struct Milestones {
    pub connected_ns: Option<u64>,
    pub first_rtp_ns: Option<u64>,
    pub first_keyframe_ns: Option<u64>,
    /// Publishers this client receives a decodable start from: a keyframe, or audio for
    /// publishers without video.
    pub ready_from: BTreeSet<u16>,
    /// Why the client stopped early, if it did.
    pub failed: Option<String>,
}

/// Packets a publisher wrote inside the measurement window, per stream.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub audio: u64,
    pub video: u64,
}

/// Everything a client counted, handed back when it stops.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub id: u16,
    pub milestones: Milestones,
    pub reception: Reception,
    pub sent_in_window: Sent,
    pub sent_packets: u64,
    /// Keyframes sent because a keyframe request arrived.
    pub keyframes_on_request: u64,
    pub keyframe_requests_received: u64,
    pub nacks_received: u64,
    pub nacks_sent: u64,
    pub plis_sent: u64,
    /// Datagrams the client's own socket refused (a full send buffer).
    pub send_failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("UDP socket: {0}")]
    Io(#[from] io::Error),
    #[error("SDP: {0}")]
    Sdp(String),
    #[error("{0}")]
    Protocol(String),
}

/// A client before its run loop starts: the socket, the `Rtc`, and the first SDP exchange.
pub struct Setup {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    opts: ClientOptions,
    pending: Option<SdpPendingOffer>,
    send_mids: HashMap<StreamKind, Mid>,
}

impl Setup {
    /// Binds a UDP socket on `ip` and creates the peer.
    pub async fn new(opts: ClientOptions, ip: IpAddr) -> Result<Setup, ClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = socket.local_addr()?;
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_rtp_mode(true)
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(Instant::now());
        let candidate =
            Candidate::host(addr, "udp").map_err(|e| ClientError::Protocol(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Setup {
            rtc,
            socket,
            local: addr,
            opts,
            pending: None,
            send_mids: HashMap::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The first offer: send-only audio and video as the options say, or one receive-only audio
    /// line for a client that only receives (an offer needs at least one m-line).
    pub fn offer(&mut self) -> Result<String, ClientError> {
        let mut api = self.rtc.sdp_api();
        let mut mids = HashMap::new();
        if self.opts.audio {
            let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            mids.insert(StreamKind::Audio, mid);
        }
        if self.opts.video {
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
            mids.insert(StreamKind::Video, mid);
        }
        if mids.is_empty() {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| ClientError::Protocol("nothing to offer".into()))?;
        self.pending = Some(pending);
        self.send_mids = mids;
        Ok(offer.to_sdp_string())
    }

    /// Takes the answer to [`Setup::offer`].
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), ClientError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| ClientError::Sdp(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| ClientError::Protocol("an answer without an offer".into()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ClientError::Sdp(e.to_string()))
    }

    /// Answers an offer from the other side (for a client that did not offer first).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, ClientError> {
        accept_offer(&mut self.rtc, sdp)
    }

    /// Starts the run loop. Later offers arrive on `offers`; answers leave on `answers`. The
    /// client stops when `stop` turns true (or its sender is dropped) and returns its report.
    pub fn start(
        self,
        offers: mpsc::UnboundedReceiver<String>,
        answers: mpsc::UnboundedSender<String>,
        stop: watch::Receiver<bool>,
        shared: Arc<Shared>,
    ) -> Client {
        let (milestones_tx, milestones) = watch::channel(Milestones::default());
        let runner = Runner {
            rtc: self.rtc,
            local: self.local,
            socket: self.socket,
            send_mids: self.send_mids,
            pts: HashMap::new(),
            seqs: HashMap::new(),
            offers,
            answers,
            stop,
            shared,
            milestones: milestones_tx,
            report: ClientReport {
                id: self.opts.id,
                ..ClientReport::default()
            },
            ingress: HashMap::new(),
            egress: HashMap::new(),
            opts: self.opts,
            force_keyframe: true,
        };
        Client {
            milestones,
            task: tokio::spawn(runner.run()),
        }
    }
}

fn accept_offer(rtc: &mut Rtc, sdp: &str) -> Result<String, ClientError> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| ClientError::Sdp(e.to_string()))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| ClientError::Sdp(e.to_string()))?;
    Ok(answer.to_sdp_string())
}

/// A running client.
pub struct Client {
    pub milestones: watch::Receiver<Milestones>,
    task: tokio::task::JoinHandle<ClientReport>,
}

impl Client {
    /// Waits for the client to stop (see [`Setup::start`]) and returns what it counted.
    pub async fn finish(self) -> ClientReport {
        match self.task.await {
            Ok(r) => r,
            Err(e) => ClientReport {
                milestones: Milestones {
                    failed: Some(format!("client task ended abnormally: {e}")),
                    ..Milestones::default()
                },
                ..ClientReport::default()
            },
        }
    }
}

struct Runner {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    opts: ClientOptions,
    send_mids: HashMap<StreamKind, Mid>,
    pts: HashMap<StreamKind, Pt>,
    seqs: HashMap<StreamKind, u64>,
    offers: mpsc::UnboundedReceiver<String>,
    answers: mpsc::UnboundedSender<String>,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    milestones: watch::Sender<Milestones>,
    report: ClientReport,
    /// Last cumulative (nacks, plis) sent per receiving m-line.
    ingress: HashMap<Mid, (u64, u64)>,
    /// Last cumulative nacks received per sending m-line.
    egress: HashMap<Mid, u64>,
    force_keyframe: bool,
}

const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Datagrams read per wake-up before the peer is drained.
const RECV_BATCH: usize = 32;

impl Runner {
    async fn run(mut self) -> ClientReport {
        let mut buf = vec![0u8; 2048];
        let video_interval = Duration::from_secs_f64(1.0 / self.opts.fps.max(1) as f64);
        let frame_bytes =
            (self.opts.video_kbps as usize * 1000 / 8) / self.opts.fps.max(1) as usize;
        let mut next_audio = Instant::now();
        let mut next_video = Instant::now();
        let mut last_keyframe = Instant::now();
        let (mut audio_seq, mut video_seq, mut frame_no) = (0u32, 0u32, 0u32);
        let mut sending = false;
        let mut recv_ns = now_ns();
        let mut offers_open = true;
        loop {
            let timeout = match self.drain(recv_ns) {
                Ok(t) => t,
                Err(e) => {
                    self.fail(e);
                    break;
                }
            };
            let now = Instant::now();
            let connected = self.milestones.borrow().connected_ns.is_some();
            if connected && !sending {
                sending = true;
                next_audio = now;
                next_video = now;
                self.resolve_pts();
            }
            if sending {
                let mut wrote = false;
                if self.opts.audio && now >= next_audio {
                    let sent_ns = now_ns();
                    let p = probe::opus_packet(
                        self.opts.id,
                        &mut audio_seq,
                        self.opts.audio_bytes,
                        sent_ns,
                    );
                    let ts = audio_seq.wrapping_sub(1).wrapping_mul(960);
                    self.write(StreamKind::Audio, now, ts, p, sent_ns);
                    next_audio += AUDIO_INTERVAL;
                    wrote = true;
                }
                if self.opts.video && now >= next_video {
                    let key = self.force_keyframe
                        || now.duration_since(last_keyframe) >= self.opts.keyframe_interval;
                    if key {
                        if self.force_keyframe && frame_no > 0 {
                            self.report.keyframes_on_request += 1;
                        }
                        self.force_keyframe = false;
                        last_keyframe = now;
                    }
                    let sent_ns = now_ns();
                    let bytes = if key { frame_bytes * 3 } else { frame_bytes };
                    let ts = (frame_no as u64 * 90_000 / self.opts.fps.max(1) as u64) as u32;
                    for p in probe::vp8_frame(self.opts.id, &mut video_seq, bytes, key, sent_ns) {
                        self.write(StreamKind::Video, now, ts, p, sent_ns);
                    }
                    frame_no = frame_no.wrapping_add(1);
                    next_video += video_interval;
                    wrote = true;
                }
                if wrote {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        self.fail(e.to_string());
                        break;
                    }
                    continue;
                }
            }
            let mut wake = timeout;
            if sending && self.opts.audio {
                wake = wake.min(next_audio);
            }
            if sending && self.opts.video {
                wake = wake.min(next_video);
            }
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    recv_ns = now_ns();
                    if let Err(e) = self.receive(source, &buf[..n]) {
                        self.fail(e);
                        break;
                    }
                    // More datagrams that are already waiting; str0m wants its output drained
                    // after each input.
                    for _ in 1..RECV_BATCH {
                        if let Err(e) = self.drain(recv_ns) {
                            self.fail(e);
                            break;
                        }
                        let Ok((n, source)) = self.socket.try_recv_from(&mut buf) else { break };
                        recv_ns = now_ns();
                        if let Err(e) = self.receive(source, &buf[..n]) {
                            self.fail(e);
                            break;
                        }
                    }
                }
                offer = self.offers.recv(), if offers_open => match offer {
                    // No one will renegotiate any more.
                    None => offers_open = false,
                    Some(sdp) => match accept_offer(&mut self.rtc, &sdp) {
                        Ok(answer) => {
                            let _ = self.answers.send(answer);
                        }
                        Err(e) => {
                            self.fail(e.to_string());
                            break;
                        }
                    },
                },
                _ = self.stop.changed() => {
                    if *self.stop.borrow() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        self.fail(e.to_string());
                        break;
                    }
                }
            }
            if self.stop.has_changed().is_err() {
                break;
            }
        }
        self.report.milestones = self.milestones.borrow().clone();
        self.report.nacks_sent = self.ingress.values().map(|v| v.0).sum();
        self.report.plis_sent = self.ingress.values().map(|v| v.1).sum();
        self.report.nacks_received = self.egress.values().sum();
        self.report
    }

    fn fail(&mut self, why: String) {
        self.milestones.send_modify(|m| {
            if m.failed.is_none() {
                m.failed = Some(why);
            }
        });
    }

    fn receive(&mut self, source: SocketAddr, data: &[u8]) -> Result<(), String> {
        let local = self.local;
        // Datagrams that are not STUN, DTLS, RTP or RTCP are not for the peer.
        let Ok(recv) = Receive::new(Protocol::Udp, source, local, data) else {
            return Ok(());
        };
        self.rtc
            .handle_input(Input::Receive(Instant::now(), recv))
            .map_err(|e| e.to_string())
    }

    /// The payload type the other side takes for each stream this client sends.
    fn resolve_pts(&mut self) {
        for (&kind, &mid) in &self.send_mids {
            let want = match kind {
                StreamKind::Audio => Codec::Opus,
                StreamKind::Video => Codec::Vp8,
            };
            let Some(media) = self.rtc.media(mid) else {
                continue;
            };
            let params = self.rtc.codec_config().params();
            let pt = media.remote_pts().iter().copied().find(|pt| {
                params
                    .iter()
                    .any(|p| p.pt() == *pt && p.spec().codec == want)
            });
            if let Some(pt) = pt {
                self.pts.insert(kind, pt);
            }
        }
    }

    fn write(&mut self, kind: StreamKind, now: Instant, ts: u32, p: probe::Packet, sent_ns: u64) {
        let (Some(&mid), Some(&pt)) = (self.send_mids.get(&kind), self.pts.get(&kind)) else {
            return;
        };
        let seq = self.seqs.entry(kind).or_insert(1);
        let write = RtpWrite::new(pt, SeqNo::from(*seq), ts, now, p.payload)
            .marker(p.marker)
            .nackable(kind == StreamKind::Video);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        tx.write_rtp(write);
        *seq += 1;
        self.report.sent_packets += 1;
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        if self.shared.window.contains(sent_ns) {
            match kind {
                StreamKind::Audio => self.report.sent_in_window.audio += 1,
                StreamKind::Video => self.report.sent_in_window.video += 1,
            }
        }
    }

    /// Drains the peer's output; returns its next timeout.
    fn drain(&mut self, recv_ns: u64) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    // A full socket buffer drops the datagram, as the network would.
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.report.send_failures += 1;
                    }
                }
                Output::Event(e) => self.on_event(e, recv_ns),
            }
        }
    }

    fn on_event(&mut self, e: Event, recv_ns: u64) {
        match e {
            Event::Connected => {
                self.milestones.send_modify(|m| {
                    m.connected_ns.get_or_insert(now_ns());
                });
            }
            Event::RtpPacket(p) => {
                let Some(probe) = Probe::parse(&p.payload) else {
                    return;
                };
                self.shared.received.fetch_add(1, Ordering::Relaxed);
                self.report
                    .reception
                    .record(&probe, recv_ns, &self.shared.window);
                self.on_probe(&probe, recv_ns);
            }
            Event::KeyframeRequest(_) => {
                self.force_keyframe = true;
                self.report.keyframe_requests_received += 1;
            }
            Event::MediaIngressStats(s) => {
                self.ingress.insert(s.mid, (s.nacks, s.plis));
            }
            Event::MediaEgressStats(s) => {
                self.egress.insert(s.mid, s.nacks);
            }
            _ => {}
        }
    }

    fn on_probe(&mut self, probe: &Probe, recv_ns: u64) {
        let m = self.milestones.borrow();
        let ready = match probe.kind {
            StreamKind::Video => probe.keyframe_start,
            StreamKind::Audio => self.opts.ready_on_audio,
        };
        let new_first = m.first_rtp_ns.is_none();
        let new_key = ready && m.first_keyframe_ns.is_none();
        let new_ready = ready && !m.ready_from.contains(&probe.publisher);
        drop(m);
        if new_first || new_key || new_ready {
            self.milestones.send_modify(|m| {
                m.first_rtp_ns.get_or_insert(recv_ns);
                if ready {
                    m.first_keyframe_ns.get_or_insert(recv_ns);
                    m.ready_from.insert(probe.publisher);
                }
            });
        }
    }
}

//! One load-generator participant: a str0m peer in RTP mode on its own UDP socket.
//!
//! A client publishes synthetic Opus (50 packets/s) and VP8 (a set bitrate and frame rate, a
//! keyframe at a set interval and on every keyframe request), and receives whatever the other
//! side offers, counting each packet by its probe ([`crate::probe`]). With simulcast the video
//! goes out as three encodings (`rid` q, h, f: 1/16, 1/4 and all of the bitrate), each with its
//! own packet numbering and its own keyframes on request. A receiver may have a bandwidth cap
//! ([`crate::cap`]) that drops what exceeds it before the peer sees it. How the SDP travels is not
//! its business: the caller makes the first exchange with [`Setup`], then hands the running
//! client two channels for later offers (in) and answers (out). The socket, the peer and the run
//! loop are the test kit's ([`sori_testkit::udp`]); this module is what a load-generator client
//! sends and counts.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sori_testkit::udp::{self, Flow, Pacer, Peer, Stage, Tick};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Event, Input, Rtc, RtcError};
use tokio::sync::{mpsc, watch};

use crate::cap::TokenBucket;
use crate::measure::{Reception, Window};
use crate::probe::{self, now_ns, Layer, Probe, StreamKind};
use crate::sample::{self, Sampler, Verdict};

/// The simulcast encodings, lowest first: `rid`, share of the video bitrate (1/n), frame size.
const SIMULCAST: [(&str, u32, u16, u16); 3] =
    [("q", 16, 160, 120), ("h", 4, 320, 240), ("f", 1, 640, 480)];

/// The names of the video layers a publisher sends, lowest first, as reports show them: the
/// `rid`s with simulcast, `single` for one encoding.
pub fn layer_names(simulcast: bool) -> Vec<String> {
    if simulcast {
        SIMULCAST.iter().map(|(rid, ..)| rid.to_string()).collect()
    } else {
        vec!["single".to_string()]
    }
}

/// One video encoding a publisher sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Its `rid` (`None`: the one encoding, without simulcast).
    pub rid: Option<&'static str>,
    pub layer: Layer,
    pub kbps: u32,
}

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
    /// Send the video as three simulcast encodings (q, h, f) instead of one.
    pub simulcast: bool,
    /// Drop received datagrams beyond this many kbit/s ([`crate::cap`]).
    pub cap_kbps: Option<u32>,
    /// Decrypt 1 in this many received RTP packets once the window opens and count the rest
    /// from their headers ([`crate::sample`]); 1 decrypts all.
    pub sample: u32,
    /// When this publisher speaks: its Opus packets carry the `ssrc-audio-level` extension,
    /// -30 dBov inside these spans (from, to) and silence (-127) outside them, in time since
    /// the tool started (`None`: no levels, as before).
    pub speech: Option<Arc<Vec<(Duration, Duration)>>>,
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
            simulcast: false,
            cap_kbps: None,
            sample: 1,
            speech: None,
        }
    }

    /// The video encodings this client sends, lowest first (none without video).
    pub fn encodings(&self) -> Vec<Encoding> {
        if !self.video {
            return Vec::new();
        }
        if !self.simulcast {
            return vec![Encoding {
                rid: None,
                layer: Layer::SINGLE,
                kbps: self.video_kbps,
            }];
        }
        SIMULCAST
            .iter()
            .enumerate()
            .map(|(i, &(rid, share, width, height))| Encoding {
                rid: Some(rid),
                layer: Layer {
                    index: i as u8,
                    width,
                    height,
                },
                kbps: self.video_kbps / share,
            })
            .collect()
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
    /// Per video layer, lowest first.
    pub video: Vec<u64>,
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
    /// Datagrams the receiver's bandwidth cap dropped while the window was open (by arrival
    /// time), and their bytes.
    pub dropped_by_cap: u64,
    pub dropped_bytes_by_cap: u64,
    /// Bytes of every datagram that reached the socket while the window was open, before the
    /// cap: what the server sent this client.
    pub offered_bytes: u64,
    /// A sampling receiver's RTP packets: given to str0m, and counted from the header only
    /// ([`crate::sample`]). Both 0 for a full receiver.
    pub rtp_decrypted: u64,
    pub rtp_counted: u64,
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
    peer: Peer,
    opts: ClientOptions,
    pending: Option<SdpPendingOffer>,
    send_mids: HashMap<StreamKind, Mid>,
}

impl Setup {
    /// Binds a UDP socket on `ip` and creates the peer.
    pub async fn new(opts: ClientOptions, ip: IpAddr) -> Result<Setup, ClientError> {
        let mut config = udp::config()
            .set_rtp_mode(true)
            .set_stats_interval(Some(Duration::from_millis(500)));
        if opts.sample > 1 {
            config = sample::config(config, opts.audio || opts.video);
        }
        let peer = Peer::bind(ip, config).await?;
        Ok(Setup {
            peer,
            opts,
            pending: None,
            send_mids: HashMap::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.peer.local
    }

    /// The first offer: send-only audio and video as the options say, or one receive-only audio
    /// line for a client that only receives (an offer needs at least one m-line).
    pub fn offer(&mut self) -> Result<String, ClientError> {
        let rids: Vec<&str> = self.opts.encodings().iter().filter_map(|e| e.rid).collect();
        let offer = self
            .peer
            .offer_simulcast(self.opts.audio, self.opts.video, &rids)
            .ok_or_else(|| ClientError::Protocol("nothing to offer".into()))?;
        self.pending = Some(offer.pending);
        self.send_mids = [
            (StreamKind::Audio, offer.audio),
            (StreamKind::Video, offer.video),
        ]
        .into_iter()
        .filter_map(|(kind, mid)| Some((kind, mid?)))
        .collect();
        Ok(offer.sdp)
    }

    /// Takes the answer to [`Setup::offer`].
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), ClientError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| ClientError::Sdp(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| ClientError::Protocol("an answer without an offer".into()))?;
        self.peer
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ClientError::Sdp(e.to_string()))
    }

    /// Answers an offer from the other side (for a client that did not offer first).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, ClientError> {
        accept_offer(&mut self.peer.rtc, sdp)
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
        let fps = self.opts.fps.max(1);
        let now = Instant::now();
        let encodings = self.opts.encodings();
        let runner = Runner {
            send_mids: self.send_mids,
            pts: HashMap::new(),
            seqs: HashMap::new(),
            offers,
            offers_open: true,
            answers,
            stop,
            shared,
            milestones: milestones_tx,
            report: ClientReport {
                id: self.opts.id,
                sent_in_window: Sent {
                    audio: 0,
                    video: vec![0; encodings.len()],
                },
                ..ClientReport::default()
            },
            ingress: HashMap::new(),
            egress: HashMap::new(),
            pacer: Pacer::new(
                self.opts.audio.then_some(AUDIO_INTERVAL),
                self.opts
                    .video
                    .then(|| Duration::from_secs_f64(1.0 / fps as f64)),
                self.opts.keyframe_interval,
                now,
            ),
            frame_bytes: encodings
                .iter()
                .map(|e| (e.kbps as usize * 1000 / 8) / fps as usize)
                .collect(),
            video_seqs: vec![0; encodings.len()],
            keyframe_owed: vec![false; encodings.len()],
            encodings,
            cap: self.opts.cap_kbps.map(TokenBucket::new),
            sampler: (self.opts.sample > 1).then(|| Sampler::new(self.opts.sample)),
            audio_seq: 0,
            frame_no: 0,
            sending: false,
            recv_ns: now_ns(),
            opts: self.opts,
        };
        Client {
            milestones,
            task: tokio::spawn(runner.run(self.peer)),
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
    opts: ClientOptions,
    send_mids: HashMap<StreamKind, Mid>,
    pts: HashMap<StreamKind, Pt>,
    /// The next RTP sequence number per stream (audio, each video layer).
    seqs: HashMap<(StreamKind, u8), u64>,
    offers: mpsc::UnboundedReceiver<String>,
    offers_open: bool,
    answers: mpsc::UnboundedSender<String>,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    milestones: watch::Sender<Milestones>,
    report: ClientReport,
    /// Last cumulative (nacks, plis) sent per receiving m-line.
    ingress: HashMap<Mid, (u64, u64)>,
    /// Last cumulative nacks received per sending m-line.
    egress: HashMap<Mid, u64>,
    pacer: Pacer,
    /// The video encodings, lowest first.
    encodings: Vec<Encoding>,
    /// Bytes of a video delta frame per encoding (a keyframe is three times as large).
    frame_bytes: Vec<usize>,
    /// Probe sequence numbers per encoding.
    video_seqs: Vec<u32>,
    /// A keyframe was asked for in this encoding alone (a request naming its `rid`).
    keyframe_owed: Vec<bool>,
    cap: Option<TokenBucket>,
    sampler: Option<Sampler>,
    audio_seq: u32,
    frame_no: u32,
    sending: bool,
    /// When the datagram being handled arrived.
    recv_ns: u64,
}

const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// What arrives besides datagrams.
enum Command {
    /// A later offer (`None`: no one will renegotiate any more).
    Offer(Option<String>),
    /// `stop` changed, or its sender is gone.
    Stop(bool),
}

impl Runner {
    async fn run(mut self, mut peer: Peer) -> ClientReport {
        udp::run(&mut peer, &mut self).await;
        self.report.milestones = self.milestones.borrow().clone();
        self.report.nacks_sent = self.ingress.values().map(|v| v.0).sum();
        self.report.plis_sent = self.ingress.values().map(|v| v.1).sum();
        self.report.nacks_received = self.egress.values().sum();
        if let Some(s) = &self.sampler {
            self.report.rtp_decrypted = s.decrypted;
            self.report.rtp_counted = s.counted;
        }
        self.report
    }

    fn fail(&mut self, why: String) {
        self.milestones.send_modify(|m| {
            if m.failed.is_none() {
                m.failed = Some(why);
            }
        });
    }

    /// Writes the audio packet and the video frame due at `now`; true if it wrote any.
    fn send_due(&mut self, rtc: &mut Rtc, now: Instant) -> bool {
        let mut wrote = false;
        if self.pacer.audio_due(now) {
            let sent_ns = now_ns();
            let p = probe::opus_packet(
                self.opts.id,
                &mut self.audio_seq,
                self.opts.audio_bytes,
                sent_ns,
            );
            let ts = StreamKind::Audio.rtp_timestamp(sent_ns);
            self.write(rtc, (StreamKind::Audio, 0), now, ts, p, sent_ns);
            wrote = true;
        }
        if let Some(frame) = self.pacer.video_due(now) {
            let sent_ns = now_ns();
            let ts = StreamKind::Video.rtp_timestamp(sent_ns);
            for l in 0..self.encodings.len() {
                let owed = std::mem::take(&mut self.keyframe_owed[l]);
                if (frame.requested || owed) && self.frame_no > 0 {
                    self.report.keyframes_on_request += 1;
                }
                let key = frame.keyframe || owed;
                let bytes = self.frame_bytes[l] * if key { 3 } else { 1 };
                let layer = self.encodings[l].layer;
                let seq = &mut self.video_seqs[l];
                for p in probe::vp8_frame(self.opts.id, layer, seq, bytes, key, sent_ns) {
                    self.write(rtc, (StreamKind::Video, l as u8), now, ts, p, sent_ns);
                }
            }
            self.frame_no = self.frame_no.wrapping_add(1);
            wrote = true;
        }
        wrote
    }

    /// A keyframe request: for the encoding its `rid` names, or for all of them.
    fn keyframe_requested(&mut self, rid: Option<Rid>) {
        let layer = rid.and_then(|rid| {
            self.encodings
                .iter()
                .position(|e| e.rid.is_some_and(|r| *rid == *r))
        });
        match layer {
            Some(l) => self.keyframe_owed[l] = true,
            None => self.pacer.request_keyframe(),
        }
        self.report.keyframe_requests_received += 1;
    }

    /// The payload type the other side takes for each stream this client sends.
    fn resolve_pts(&mut self, rtc: &Rtc) {
        for (&kind, &mid) in &self.send_mids {
            let want = match kind {
                StreamKind::Audio => Codec::Opus,
                StreamKind::Video => Codec::Vp8,
            };
            let Some(media) = rtc.media(mid) else {
                continue;
            };
            let params = rtc.codec_config().params();
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

    /// Writes one packet of `stream` (audio, or a video layer).
    fn write(
        &mut self,
        rtc: &mut Rtc,
        stream: (StreamKind, u8),
        now: Instant,
        ts: u32,
        p: probe::Packet,
        sent_ns: u64,
    ) {
        let (kind, layer) = stream;
        let (Some(&mid), Some(&pt)) = (self.send_mids.get(&kind), self.pts.get(&kind)) else {
            return;
        };
        let rid = match kind {
            StreamKind::Audio => None,
            StreamKind::Video => self.encodings[layer as usize].rid.map(Rid::from),
        };
        let seq = self.seqs.entry(stream).or_insert(1);
        let mut write = RtpWrite::new(pt, SeqNo::from(*seq), ts, now, p.payload)
            .marker(p.marker)
            .nackable(kind == StreamKind::Video);
        if let (StreamKind::Audio, Some(spans)) = (kind, &self.opts.speech) {
            let t = now.saturating_duration_since(crate::epoch());
            let speaking = spans.iter().any(|&(from, to)| from <= t && t < to);
            let level: i8 = if speaking { -30 } else { -127 };
            write = write.ext_vals(ExtensionValues {
                audio_level: Some(level),
                voice_activity: Some(speaking),
                ..Default::default()
            });
        }
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
            return;
        };
        tx.write_rtp(write);
        *seq += 1;
        self.report.sent_packets += 1;
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        if self.shared.window.contains(sent_ns) {
            match kind {
                StreamKind::Audio => self.report.sent_in_window.audio += 1,
                StreamKind::Video => self.report.sent_in_window.video[layer as usize] += 1,
            }
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

impl udp::Handler for Runner {
    type Command = Command;

    fn tick(&mut self, rtc: &mut Rtc, now: Instant) -> Tick {
        if self.stop.has_changed().is_err() {
            return Tick::Stop;
        }
        if !self.sending {
            if self.milestones.borrow().connected_ns.is_none() {
                return Tick::Wait(None);
            }
            self.sending = true;
            self.pacer.hold(now);
            self.resolve_pts(rtc);
        }
        if self.send_due(rtc, now) {
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                self.fail(e.to_string());
                return Tick::Stop;
            }
            return Tick::Wrote;
        }
        Tick::Wait(self.pacer.next_due())
    }

    fn admit(&mut self, _source: SocketAddr, datagram: &[u8]) -> bool {
        self.recv_ns = now_ns();
        let len = datagram.len() as u64;
        let inside = self.shared.window.contains(self.recv_ns);
        if inside {
            self.report.offered_bytes += len;
        }
        let passes = self
            .cap
            .as_mut()
            .is_none_or(|cap| cap.admit(Instant::now(), datagram.len()));
        if !passes && inside {
            self.report.dropped_by_cap += 1;
            self.report.dropped_bytes_by_cap += len;
        }
        if !passes {
            return false;
        }
        let Some(sampler) = self.sampler.as_mut() else {
            return true;
        };
        let sampling = self.shared.window.opened(self.recv_ns);
        match sampler.admit(datagram, sampling) {
            Verdict::Feed => true,
            Verdict::Counted(probe) => {
                if let Some((probe, bytes)) = probe {
                    self.shared.received.fetch_add(1, Ordering::Relaxed);
                    self.report
                        .reception
                        .record_counted(&probe, bytes, &self.shared.window);
                }
                false
            }
        }
    }

    fn send_failed(&mut self) {
        self.report.send_failures += 1;
    }

    fn on_error(&mut self, error: RtcError, _stage: Stage) -> Flow {
        self.fail(error.to_string());
        Flow::Stop
    }

    fn on_event(&mut self, rtc: &mut Rtc, e: Event) {
        let recv_ns = self.recv_ns;
        match e {
            Event::Connected => {
                self.milestones.send_modify(|m| {
                    m.connected_ns.get_or_insert(now_ns());
                });
            }
            Event::RtpPacket(p) => {
                if let Some(sampler) = self.sampler.as_mut() {
                    // str0m would NACK the gaps the packets only counted leave.
                    if let Some(rx) = rtc.direct_api().stream_rx(&p.header.ssrc) {
                        rx.suppress_nack(true);
                    }
                    if let Some(probe) = Probe::parse(&p.payload) {
                        sampler.learn(
                            *p.header.ssrc,
                            p.header.sequence_number,
                            p.header.timestamp,
                            p.payload.len(),
                            probe,
                        );
                    }
                }
                let Some(probe) = Probe::parse(&p.payload) else {
                    return;
                };
                self.shared.received.fetch_add(1, Ordering::Relaxed);
                self.report
                    .reception
                    .record(&probe, p.payload.len(), recv_ns, &self.shared.window);
                self.on_probe(&probe, recv_ns);
            }
            Event::KeyframeRequest(r) => self.keyframe_requested(r.rid),
            Event::MediaIngressStats(s) => {
                self.ingress.insert(s.mid, (s.nacks, s.plis));
            }
            Event::MediaEgressStats(s) => {
                self.egress.insert(s.mid, s.nacks);
            }
            _ => {}
        }
    }

    async fn next_command(&mut self) -> Command {
        tokio::select! {
            offer = self.offers.recv(), if self.offers_open => Command::Offer(offer),
            changed = self.stop.changed() => Command::Stop(changed.is_err() || *self.stop.borrow()),
        }
    }

    async fn on_command(&mut self, peer: &mut Peer, command: Command) -> Flow {
        match command {
            Command::Offer(None) => self.offers_open = false,
            Command::Offer(Some(sdp)) => match accept_offer(&mut peer.rtc, &sdp) {
                Ok(answer) => {
                    let _ = self.answers.send(answer);
                }
                Err(e) => {
                    self.fail(e.to_string());
                    return Flow::Stop;
                }
            },
            Command::Stop(true) => return Flow::Stop,
            Command::Stop(false) => {}
        }
        Flow::Continue
    }
}

//! A str0m peer on a UDP socket, and the run loop that drives it.
//!
//! The loop is the str0m contract made concrete: drain the peer's output (datagrams leave on the
//! socket, events go to the [`Handler`]), let the handler write the media that is due, then
//! wait for whichever comes first: a datagram, a command for the handler, or the peer's next
//! timeout. Datagrams that are already waiting are read in a batch, with the peer drained after
//! each, so a busy receiver does not pay one wake-up per packet (the load generator decrypts
//! every packet it receives; this loop is its hot path).
//!
//! What a client sends, what it counts, and what its commands are belong to the [`Handler`]:
//! the load generator's clients and sori-net's test clients are two handlers of this one loop.
//! [`Pacer`] keeps the audio and video clocks and the keyframe schedule they share.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;

/// Datagrams read per wake-up before the loop looks at its other inputs.
const RECV_BATCH: usize = 32;

/// The codecs every Sori test client speaks: Opus and VP8, nothing else.
pub fn config() -> RtcConfig {
    RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
}

/// A str0m peer with a host candidate on a UDP socket of its own.
pub struct Peer {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    /// The socket's address (the peer's one candidate).
    pub local: SocketAddr,
}

/// The first offer a [`Peer`] makes, and the m-lines it sends on.
pub struct Offer {
    pub sdp: String,
    pub pending: SdpPendingOffer,
    pub audio: Option<Mid>,
    pub video: Option<Mid>,
}

impl Peer {
    /// Binds a UDP socket on `ip` (a free port) and builds the peer from `config`.
    pub async fn bind(ip: IpAddr, config: RtcConfig) -> io::Result<Peer> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        let mut rtc = config.build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(io::Error::other)?;
        rtc.add_local_candidate(candidate);
        Ok(Peer { rtc, socket, local })
    }

    /// The first offer: send-only audio and video as asked, or one receive-only audio line for
    /// a peer that only receives (an offer needs at least one m-line).
    pub fn offer(&mut self, audio: bool, video: bool) -> Option<Offer> {
        self.offer_simulcast(audio, video, &[])
    }

    /// As [`Peer::offer`], the video sent as one simulcast encoding per `rid`, in the order
    /// given (none: one encoding without simulcast). In RTP mode each encoding is written with
    /// `direct_api().stream_tx_by_mid(mid, Some(rid))`.
    pub fn offer_simulcast(&mut self, audio: bool, video: bool, rids: &[&str]) -> Option<Offer> {
        let simulcast = (!rids.is_empty()).then(|| Simulcast {
            send: rids.iter().map(|r| SimulcastLayer::new(r)).collect(),
            recv: Vec::new(),
        });
        let mut api = self.rtc.sdp_api();
        let audio =
            audio.then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let video = video
            .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
        if audio.is_none() && video.is_none() {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply()?;
        Some(Offer {
            sdp: offer.to_sdp_string(),
            pending,
            audio,
            video,
        })
    }
}

/// The audio and video clocks of a publishing client and its keyframe schedule: a keyframe
/// first, then one every `keyframe_interval` and one on each request.
#[derive(Debug, Clone)]
pub struct Pacer {
    audio_interval: Option<Duration>,
    video_interval: Option<Duration>,
    keyframe_interval: Duration,
    next_audio: Instant,
    next_video: Instant,
    last_keyframe: Instant,
    force_keyframe: bool,
}

/// A video frame that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub keyframe: bool,
    /// A keyframe was owed (the first frame, or a request) when this frame fell due.
    pub requested: bool,
}

impl Pacer {
    /// Clocks for the streams that have an interval (`None`: that stream is not sent).
    pub fn new(
        audio_interval: Option<Duration>,
        video_interval: Option<Duration>,
        keyframe_interval: Duration,
        now: Instant,
    ) -> Pacer {
        Pacer {
            audio_interval,
            video_interval,
            keyframe_interval,
            next_audio: now,
            next_video: now,
            last_keyframe: now,
            force_keyframe: true,
        }
    }

    /// Not sending (yet): the first packets are due as soon as sending starts.
    pub fn hold(&mut self, now: Instant) {
        self.next_audio = now;
        self.next_video = now;
    }

    /// Whether an audio packet is due at `now` (then the next one is scheduled).
    pub fn audio_due(&mut self, now: Instant) -> bool {
        let Some(interval) = self.audio_interval else {
            return false;
        };
        let due = now >= self.next_audio;
        if due {
            self.next_audio += interval;
        }
        due
    }

    /// The video frame due at `now`, if one is (then the next one is scheduled).
    pub fn video_due(&mut self, now: Instant) -> Option<Frame> {
        let interval = self.video_interval?;
        if now < self.next_video {
            return None;
        }
        let requested = self.force_keyframe;
        let keyframe =
            requested || now.duration_since(self.last_keyframe) >= self.keyframe_interval;
        if keyframe {
            self.force_keyframe = false;
            self.last_keyframe = now;
        }
        self.next_video += interval;
        Some(Frame {
            keyframe,
            requested,
        })
    }

    /// The next video frame is a keyframe.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// When the next packet of any stream is due.
    pub fn next_due(&self) -> Option<Instant> {
        let audio = self.audio_interval.map(|_| self.next_audio);
        let video = self.video_interval.map(|_| self.next_video);
        match (audio, video) {
            (Some(a), Some(v)) => Some(a.min(v)),
            (a, v) => a.or(v),
        }
    }
}

/// What the loop does after a [`Handler::tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Media was written: drain the peer and tick again.
    Wrote,
    /// Nothing to write; wake no later than this (besides the peer's own timeout).
    Wait(Option<Instant>),
    /// The client is done.
    Stop,
}

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Where the peer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Taking a datagram or a timeout.
    Input,
    /// Producing output.
    Output,
}

/// A client's part in the loop.
pub trait Handler: Send {
    /// What the client's own inputs bring (signaling, test commands, other transports).
    type Command: Send;

    /// Called after every drain: write what is due at `now`. A tick that gives the peer input
    /// returns [`Tick::Wrote`], so the loop drains the peer's output.
    fn tick(&mut self, rtc: &mut Rtc, now: Instant) -> Tick;

    /// One of the peer's events.
    fn on_event(&mut self, rtc: &mut Rtc, event: Event);

    /// `datagram` arrived from `source`; false drops it (simulated loss, a bandwidth cap, a
    /// firewall, a foreign sender). Called as each datagram is read, before the peer sees it.
    fn admit(&mut self, _source: SocketAddr, _datagram: &[u8]) -> bool {
        true
    }

    /// A datagram the peer wants sent: given back, it leaves on the UDP socket; `None` when the
    /// handler dropped it or sent it another way.
    fn route(&mut self, transmit: Transmit) -> Option<Transmit> {
        Some(transmit)
    }

    /// The socket refused a datagram (a full send buffer drops it, as the network would).
    fn send_failed(&mut self) {}

    /// The peer failed; the loop stops if this says so (always after a [`Stage::Output`]
    /// failure).
    fn on_error(&mut self, error: RtcError, stage: Stage) -> Flow;

    /// The next command; the loop drops this future when another input comes first, so it
    /// must be cancel-safe (channel receives are).
    fn next_command(&mut self) -> impl Future<Output = Self::Command> + Send;

    /// Acts on a command.
    fn on_command(
        &mut self,
        peer: &mut Peer,
        command: Self::Command,
    ) -> impl Future<Output = Flow> + Send;
}

/// Drives `peer` until the handler stops it.
pub async fn run<H: Handler>(peer: &mut Peer, handler: &mut H) {
    let mut buf = vec![0u8; 2048];
    // The peer's next timeout; it only changes when the peer is given input, so a wake-up whose
    // datagrams the handler all dropped needs no drain.
    let mut timeout = Instant::now();
    let mut fed = true;
    loop {
        if fed {
            match drain(peer, handler) {
                Some(t) => timeout = t,
                None => break,
            }
        }
        fed = true;
        let wake = match handler.tick(&mut peer.rtc, Instant::now()) {
            Tick::Stop => break,
            Tick::Wrote => continue,
            Tick::Wait(due) => due.map_or(timeout, |d| d.min(timeout)),
        };
        let flow = tokio::select! {
            r = peer.socket.recv_from(&mut buf) => match r {
                Ok((n, source)) => {
                    let (flow, any) = receive_batch(peer, handler, &mut buf, (n, source));
                    fed = any;
                    flow
                }
                Err(_) => Flow::Continue,
            },
            command = handler.next_command() => handler.on_command(peer, command).await,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                input(peer, handler, Input::Timeout(Instant::now()))
            }
        };
        if flow == Flow::Stop {
            break;
        }
    }
}

/// Gives the peer `first` and up to a batch of datagrams already waiting, draining it after
/// each it took (str0m wants its output drained after every input); also says whether the
/// peer took any (the handler may drop them all).
fn receive_batch<H: Handler>(
    peer: &mut Peer,
    handler: &mut H,
    buf: &mut [u8],
    first: (usize, SocketAddr),
) -> (Flow, bool) {
    let (mut n, mut source) = first;
    let mut fed = false;
    let mut undrained = false;
    for i in 0..RECV_BATCH {
        if i > 0 {
            if undrained && drain(peer, handler).is_none() {
                return (Flow::Stop, fed);
            }
            undrained = false;
            match peer.socket.try_recv_from(buf) {
                Ok(got) => (n, source) = got,
                Err(_) => break,
            }
        }
        if !handler.admit(source, &buf[..n]) {
            continue;
        }
        // Datagrams that are not STUN, DTLS, RTP or RTCP are not for the peer.
        let Ok(recv) = Receive::new(Protocol::Udp, source, peer.local, &buf[..n]) else {
            continue;
        };
        fed = true;
        undrained = true;
        if input(peer, handler, Input::Receive(Instant::now(), recv)) == Flow::Stop {
            return (Flow::Stop, fed);
        }
    }
    (Flow::Continue, fed)
}

fn input<H: Handler>(peer: &mut Peer, handler: &mut H, input: Input) -> Flow {
    match peer.rtc.handle_input(input) {
        Ok(()) => Flow::Continue,
        Err(e) => handler.on_error(e, Stage::Input),
    }
}

/// Drains the peer's output; returns its next timeout, or `None` when the peer failed.
fn drain<H: Handler>(peer: &mut Peer, handler: &mut H) -> Option<Instant> {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => return Some(t),
            Ok(Output::Transmit(t)) => {
                if let Some(t) = handler.route(t) {
                    if peer.socket.try_send_to(&t.contents, t.destination).is_err() {
                        handler.send_failed();
                    }
                }
            }
            Ok(Output::Event(e)) => handler.on_event(&mut peer.rtc, e),
            // A peer that fails to produce output is broken: the loop ends.
            Err(e) => {
                handler.on_error(e, Stage::Output);
                return None;
            }
        }
    }
}

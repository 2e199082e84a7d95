//! The virtual-time harness: the core and str0m clients, joined by links with seeded loss and
//! delay. [`Harness::step`] moves `now` to the next deadline — the core's `poll_timeout`, a
//! client's timeout or a datagram's arrival — and handles everything due then, so a test
//! observes each instant at which something happens, and only those.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sori_sfu::{Forwarding, PeerId, Sfu, SfuConfig, SfuEvent};
use sori_testkit::Rng;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, Input, Output, RtcConfig};

use super::{
    answer, client, client_with, ice_ufrag, sfu_with, try_join_answered, write, write_layer,
    Client, SERVER,
};

/// One direction between a client and the core.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Share of datagrams lost, drawn from the harness's seeded generator.
    pub loss: f64,
    /// How long a datagram takes.
    pub delay: Duration,
    /// Datagrams put on the link.
    pub sent: u64,
    /// Of those, lost.
    pub lost: u64,
    /// A bottleneck: bits per second the link carries (`None`: unlimited). Datagrams queue
    /// behind each other; one that would wait longer than [`QUEUE_LIMIT`] is dropped.
    pub rate: Option<u64>,
    /// When the bottleneck is free again.
    busy_until: Option<Instant>,
    /// Of the datagrams lost, those the full queue dropped.
    pub dropped: u64,
}

/// The longest a datagram waits in a bottleneck's queue before it is dropped instead.
pub const QUEUE_LIMIT: Duration = Duration::from_millis(250);

impl Link {
    pub fn new(loss: f64, delay: Duration) -> Link {
        Link {
            loss,
            delay,
            sent: 0,
            lost: 0,
            rate: None,
            busy_until: None,
            dropped: 0,
        }
    }

    /// Lossless, 10 ms, carrying at most `bps` bits per second.
    pub fn capped(bps: u64) -> Link {
        Link {
            rate: Some(bps),
            ..Link::default()
        }
    }

    /// When a datagram of `len` bytes put on the link at `now` arrives, or `None` when the
    /// bottleneck's queue is full.
    fn arrival(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.rate else {
            return Some(now + self.delay);
        };
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start - now > QUEUE_LIMIT {
            self.dropped += 1;
            return None;
        }
        let wire = Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / rate);
        self.busy_until = Some(start + wire);
        Some(start + wire + self.delay)
    }
}

impl Default for Link {
    /// Lossless, 10 ms.
    fn default() -> Link {
        Link::new(0.0, Duration::from_millis(10))
    }
}

/// A client of the harness and its two links.
pub struct Member {
    pub client: Client,
    pub peer: PeerId,
    /// Client → core.
    pub up: Link,
    /// Core → client.
    pub down: Link,
    /// When the client's str0m session wants `handle_input(Timeout)`.
    timeout: Instant,
    /// Gone without a word: sends nothing, receives nothing, is not driven.
    pub vanished: bool,
    /// When the core last received a datagram from it.
    pub last_heard: Option<Instant>,
    /// When str0m reported ICE and DTLS up.
    pub connected_at: Option<Instant>,
    /// Video frames written so far, and which of them were keyframes.
    pub frames_sent: u64,
    pub keyframes_sent: Vec<u64>,
    /// Keyframe requests answered (by the next frame being a keyframe).
    answered: usize,
    /// Simulcast: what was sent in each layer, lowest first.
    pub layers: Vec<LayerSent>,
    /// The core's ICE ufrag in the last answer it gave this client.
    pub server_ufrag: String,
    /// A NAT in front of the client: the address the core sees it at (`None`: its own).
    pub mapped: Option<SocketAddr>,
}

impl Member {
    /// The address the core sees this client at.
    pub fn seen_at(&self) -> SocketAddr {
        self.mapped.unwrap_or(self.client.addr)
    }
}

/// What a simulcast publisher sent in one layer.
pub struct LayerSent {
    pub rid: String,
    /// Every frame written, in order.
    pub frames: Vec<Vec<u8>>,
    /// Indexes (into `frames`) of its keyframes.
    pub keyframes: Vec<usize>,
    /// Keyframe requests for this layer answered.
    answered: usize,
}

impl LayerSent {
    fn new(rid: &str) -> LayerSent {
        LayerSent {
            rid: rid.to_string(),
            frames: Vec::new(),
            keyframes: Vec::new(),
            answered: 0,
        }
    }
}

/// A datagram on a link.
struct InFlight {
    at: Instant,
    /// Sending order, to keep datagrams of equal arrival time in order.
    seq: u64,
    /// `None`: to the core; `Some(i)`: to member `i`.
    to: Option<usize>,
    /// The member it came from (for datagrams to the core).
    from: usize,
    contents: Vec<u8>,
}

/// The core, its clients and the links between them, on virtual time.
pub struct Harness {
    pub now: Instant,
    pub sfu: Sfu,
    pub members: Vec<Member>,
    /// Every core event, with the instant it came out.
    pub events: Vec<(Instant, SfuEvent)>,
    rng: Rng,
    flight: Vec<InFlight>,
    sent: u64,
    /// Steps in a row that found something due without time passing.
    stalled: u32,
}

/// The payload of video frame `n`: a VP8 keyframe or interframe of `size` bytes, tagged with
/// its number.
pub fn vp8_frame(n: u64, key: bool, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size.max(16)];
    // VP8 payload header: bit 0 clear marks a keyframe.
    data[0] = if key { 0x10 } else { 0x11 };
    data[3..11].copy_from_slice(&n.to_be_bytes()[..8]);
    data
}

/// The frame number [`vp8_frame`] wrote into `data`.
pub fn frame_number(data: &[u8]) -> u64 {
    u64::from_be_bytes(data[3..11].try_into().unwrap())
}

impl Harness {
    /// The video track member `publisher` published.
    pub fn video_track(&self, publisher: usize) -> sori_sfu::TrackId {
        let peer = self.members[publisher].peer;
        self.events
            .iter()
            .find_map(|(_, e)| match e {
                SfuEvent::TrackPublished {
                    peer: p,
                    track,
                    kind: sori_sfu::MediaKind::Video,
                } if *p == peer => Some(*track),
                _ => None,
            })
            .expect("the video track is published")
    }

    /// A core configured as `config` (with the harness's server candidate); `seed` drives every
    /// loss.
    pub fn new(config: SfuConfig, seed: u64) -> Harness {
        Harness {
            now: Instant::now(),
            sfu: sfu_with(config),
            members: Vec::new(),
            events: Vec::new(),
            rng: Rng::new(seed),
            flight: Vec::new(),
            sent: 0,
            stalled: 0,
        }
    }

    /// A new client joins `room`, sending audio and video, over the links `up` and `down`;
    /// returns its index. The core's offers are answered at once.
    pub fn join(&mut self, room: &str, up: Link, down: Link) -> usize {
        self.join_simulcast(room, &[], up, down)
    }

    /// As [`Harness::join`], the video offered as one simulcast encoding per `rid`.
    pub fn join_simulcast(&mut self, room: &str, rids: &[&str], up: Link, down: Link) -> usize {
        let c = client(self.members.len() as u8, self.now);
        self.join_client(c, room, rids, up, down)
    }

    /// As [`Harness::join`], with a client whose session negotiates no transport-wide
    /// congestion control (no transport sequence numbers, no feedback).
    pub fn join_without_transport_cc(&mut self, room: &str, up: Link, down: Link) -> usize {
        let i = self.members.len() as u8;
        let mut exts = ExtensionMap::empty();
        for (id, e) in ExtensionMap::standard().iter() {
            if e.as_uri() != Extension::TransportSequenceNumber.as_uri() {
                exts.set(id, e.clone());
            }
        }
        let config = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_extension_map(exts);
        let c = client_with(i, config, self.now);
        self.join_client(c, room, &[], up, down)
    }

    /// A viewer joins `room` as a WHEP player does: it offers to receive one video and one
    /// audio m-line, sends nothing, and the core never renegotiates with it (its m-lines are
    /// fed with [`Sfu::feed`]).
    pub fn join_viewer(&mut self, room: &str, up: Link, down: Link) -> usize {
        let mut c = client(self.members.len() as u8, self.now);
        let mut api = c.rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let (peer, answer) = self
            .sfu
            .join_as(
                room,
                &offer.to_sdp_string(),
                Forwarding::Automatic,
                false,
                self.now,
            )
            .expect("join");
        c.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.add_member(c, peer, &answer, &[], up, down)
    }

    /// Client `c` joins `room` (its video offered as one simulcast encoding per `rid`).
    fn join_client(
        &mut self,
        mut c: Client,
        room: &str,
        rids: &[&str],
        up: Link,
        down: Link,
    ) -> usize {
        let (peer, answer) =
            try_join_answered(&mut self.sfu, &mut c, room, rids, self.now).expect("join");
        self.add_member(c, peer, &answer, rids, up, down)
    }

    fn add_member(
        &mut self,
        c: Client,
        peer: PeerId,
        answer: &str,
        rids: &[&str],
        up: Link,
        down: Link,
    ) -> usize {
        let i = self.members.len();
        self.members.push(Member {
            client: c,
            peer,
            up,
            down,
            timeout: self.now,
            vanished: false,
            last_heard: None,
            connected_at: None,
            frames_sent: 0,
            keyframes_sent: Vec::new(),
            answered: 0,
            layers: rids.iter().map(|r| LayerSent::new(r)).collect(),
            server_ufrag: ice_ufrag(answer),
            mapped: None,
        });
        self.drain();
        i
    }

    /// The member whose peer is `peer`.
    pub fn member(&self, peer: PeerId) -> &Member {
        self.members.iter().find(|m| m.peer == peer).unwrap()
    }

    /// Runs until `t`: every deadline up to it is handled, then `now` is `t`.
    pub fn run_until(&mut self, t: Instant) {
        loop {
            self.drain();
            if self.next_deadline().is_none_or(|next| next > t) {
                break;
            }
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Steps until `done` holds, for at most `limit` of virtual time.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&Harness) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not within {limit:?}");
            self.step();
        }
    }

    /// Moves `now` to the next deadline and handles everything due at it.
    pub fn step(&mut self) {
        self.drain();
        let next = self.next_deadline().expect("nothing is scheduled");
        // str0m asks for "now" with an instant in the past.
        if next <= self.now {
            self.stalled += 1;
            assert!(
                self.stalled < 10_000,
                "a deadline stays due at {:?}",
                self.now
            );
        } else {
            self.stalled = 0;
            self.now = next;
        }
        let now = self.now;
        while let Some(i) = self.next_arrival(now) {
            let d = self.flight.swap_remove(i);
            self.deliver(d);
        }
        for m in self.members.iter_mut().filter(|m| !m.vanished) {
            if m.timeout <= now {
                m.client.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        self.drain();
    }

    /// The earliest of the core's timeout, the clients' timeouts and the datagrams' arrivals.
    pub fn next_deadline(&self) -> Option<Instant> {
        let clients = self
            .members
            .iter()
            .filter(|m| !m.vanished)
            .map(|m| m.timeout);
        let arrivals = self.flight.iter().map(|d| d.at);
        self.sfu
            .poll_timeout()
            .into_iter()
            .chain(clients)
            .chain(arrivals)
            .min()
    }

    /// Member `i` writes its next video frame (`size` bytes): a keyframe if it is the first
    /// or a keyframe request came since the last keyframe, else an interframe.
    pub fn write_video(&mut self, i: usize, size: usize) {
        let now = self.now;
        let m = &mut self.members[i];
        let n = m.frames_sent;
        let key = n == 0 || m.answered < m.client.keyframe_requests.len();
        if key {
            m.answered = m.client.keyframe_requests.len();
            m.keyframes_sent.push(n);
        }
        let ts = MediaTime::new(n * 3000, Frequency::NINETY_KHZ);
        write(
            &mut m.client,
            MediaKind::Video,
            now,
            ts,
            &vp8_frame(n, key, size),
        );
        m.frames_sent += 1;
        self.drain();
    }

    /// Simulcast member `i` writes its next frame in every layer, `sizes[l]` bytes in layer
    /// `l`: a keyframe in a layer whose keyframe was asked for (or the first frame).
    pub fn write_layers(&mut self, i: usize, sizes: &[usize]) {
        let now = self.now;
        let m = &mut self.members[i];
        let n = m.frames_sent;
        let ts = MediaTime::new(n * 3000, Frequency::NINETY_KHZ);
        for (l, size) in sizes.iter().enumerate() {
            let layer = &mut m.layers[l];
            let asked = m
                .client
                .keyframe_rids
                .iter()
                .filter(|r| r.is_some_and(|r| *r == layer.rid))
                .count();
            let key = n == 0 || layer.answered < asked;
            layer.answered = asked;
            let mut data = vp8_frame(n, key, *size);
            data[11] = l as u8;
            if key {
                layer.keyframes.push(layer.frames.len());
            }
            layer.frames.push(data.clone());
            let rid = layer.rid.clone();
            write_layer(&mut m.client, MediaKind::Video, Some(&rid), now, ts, &data);
        }
        m.frames_sent += 1;
        self.drain();
    }

    /// Simulcast member `i` streams every layer at 30 frames a second until `t`.
    pub fn stream_layers_until(&mut self, i: usize, sizes: &[usize], t: Instant) {
        let frame = Duration::from_micros(33_333);
        while self.now + frame <= t {
            self.write_layers(i, sizes);
            self.run_for(frame);
        }
        self.run_until(t);
    }

    /// Member `i` streams video at 30 frames a second until `t`.
    pub fn stream_until(&mut self, i: usize, size: usize, t: Instant) {
        let frame = Duration::from_micros(33_333);
        while self.now + frame <= t {
            self.write_video(i, size);
            self.run_for(frame);
        }
        self.run_until(t);
    }

    /// Member `i` asks for a keyframe on the video it receives on `mid` (a PLI, as a browser
    /// sends when it lost a picture).
    pub fn client_requests_keyframe(&mut self, i: usize, mid: &str) {
        let rtc = &mut self.members[i].client.rtc;
        let mut api = rtc.direct_api();
        let rx = api
            .stream_rx_by_mid(Mid::from(mid), None)
            .expect("a receiving stream on the m-line");
        rx.request_keyframe(KeyframeRequestKind::Pli);
        self.drain();
    }

    /// Member `i` restarts ICE as a browser does (`restartIce()`): its offer with new
    /// credentials goes to the core and the core's answer back. With `moved_to`, the client
    /// has moved: its old address is gone and it checks from the new one. Returns the core's
    /// ICE ufrag before and after.
    pub fn ice_restart(&mut self, i: usize, moved_to: Option<SocketAddr>) -> (String, String) {
        let now = self.now;
        let m = &mut self.members[i];
        let mut api = m.client.rtc.sdp_api();
        api.ice_restart(moved_to.is_none());
        let (offer, pending) = api.apply().expect("an offer");
        let before = m.server_ufrag.clone();
        let answer = self
            .sfu
            .accept_offer(m.peer, &offer.to_sdp_string(), now)
            .expect("the core answers an ICE restart");
        m.server_ufrag = ice_ufrag(&answer);
        m.client
            .rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        if let Some(addr) = moved_to {
            m.client.addr = addr;
            m.client
                .rtc
                .add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        let after = m.server_ufrag.clone();
        self.drain();
        (before, after)
    }

    /// Member `i` closes its session (RTCP BYE, DTLS close_notify) and is gone after.
    pub fn close(&mut self, i: usize) {
        self.members[i].client.rtc.close().unwrap();
        self.drain();
        self.members[i].vanished = true;
    }

    /// Member `i` goes silent: nothing more is sent or received, its session stops.
    pub fn vanish(&mut self, i: usize) {
        self.members[i].vanished = true;
    }

    /// The video frame numbers member `i` received, in order.
    pub fn video_frames(&self, i: usize) -> Vec<u64> {
        self.members[i]
            .client
            .received
            .iter()
            .filter(|d| d.params.spec().codec.is_video())
            .map(|d| frame_number(&d.data))
            .collect()
    }

    /// When the core reported `peer` connected.
    pub fn core_connected_at(&self, peer: PeerId) -> Option<Instant> {
        self.events.iter().find_map(|(t, e)| match e {
            SfuEvent::Connected { peer: p } if *p == peer => Some(*t),
            _ => None,
        })
    }

    /// Core events of `peer`'s removal: the instant and the event.
    pub fn removal_of(&self, peer: PeerId) -> Option<(Instant, &SfuEvent)> {
        self.events.iter().find_map(|(t, e)| match e {
            SfuEvent::PeerRemoved { peer: p, .. } if *p == peer => Some((*t, e)),
            _ => None,
        })
    }

    /// Moves every output of the clients and the core onto the links or into `events`, and
    /// answers the core's offers, until nothing more comes out.
    fn drain(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.members.len() {
                busy |= self.drain_client(i);
            }
            while let Some(t) = self.sfu.poll_transmit() {
                busy = true;
                if let Some(i) = self
                    .members
                    .iter()
                    .position(|m| m.seen_at() == t.destination)
                {
                    self.send(Some(i), i, t.contents);
                }
            }
            while let Some(e) = self.sfu.poll_event() {
                busy = true;
                self.on_event(e);
            }
            if !busy {
                return;
            }
        }
    }

    /// Polls member `i`'s session; returns whether anything came out.
    fn drain_client(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut busy = false;
        loop {
            let m = &mut self.members[i];
            if m.vanished {
                return busy;
            }
            match m.client.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    m.timeout = t;
                    return busy;
                }
                Output::Transmit(t) => {
                    busy = true;
                    self.send(None, i, t.contents.into());
                }
                Output::Event(e) => {
                    busy = true;
                    match e {
                        Event::Connected => {
                            m.client.connected = true;
                            m.connected_at = Some(now);
                        }
                        Event::MediaData(d) => m.client.received.push(d),
                        Event::KeyframeRequest(r) => {
                            m.client.keyframe_requests.push(now);
                            m.client.keyframe_rids.push(r.rid);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_event(&mut self, e: SfuEvent) {
        if let SfuEvent::Offer { peer, sdp } = &e {
            if let Some(m) = self
                .members
                .iter_mut()
                .find(|m| m.peer == *peer && !m.vanished)
            {
                let ans = answer(&mut m.client, sdp);
                self.sfu.accept_answer(*peer, &ans, self.now).unwrap();
            }
        }
        self.events.push((self.now, e));
    }

    /// Puts a datagram on member `member`'s link: `to` `None` is toward the core.
    fn send(&mut self, to: Option<usize>, member: usize, contents: Vec<u8>) {
        let m = &mut self.members[member];
        if m.vanished {
            return;
        }
        let link = if to.is_none() { &mut m.up } else { &mut m.down };
        link.sent += 1;
        if self.rng.chance(link.loss) {
            link.lost += 1;
            return;
        }
        let Some(at) = link.arrival(self.now, contents.len()) else {
            link.lost += 1;
            return;
        };
        self.sent += 1;
        self.flight.push(InFlight {
            at,
            seq: self.sent,
            to,
            from: member,
            contents,
        });
    }

    /// The index of the first datagram (by arrival, then sending order) due at `now`.
    fn next_arrival(&self, now: Instant) -> Option<usize> {
        self.flight
            .iter()
            .enumerate()
            .filter(|(_, d)| d.at <= now)
            .min_by_key(|(_, d)| (d.at, d.seq))
            .map(|(i, _)| i)
    }

    fn deliver(&mut self, d: InFlight) {
        let now = self.now;
        match d.to {
            None => {
                let from: SocketAddr = self.members[d.from].seen_at();
                self.members[d.from].last_heard = Some(now);
                self.sfu.handle_datagram(now, from, SERVER, &d.contents);
            }
            Some(i) => {
                let m = &mut self.members[i];
                if m.vanished {
                    return;
                }
                let r = Receive::new(Protocol::Udp, SERVER, m.client.addr, &d.contents).unwrap();
                m.client.rtc.handle_input(Input::Receive(now, r)).unwrap();
            }
        }
        self.drain();
    }
}

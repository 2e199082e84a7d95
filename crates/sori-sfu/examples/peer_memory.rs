//! Measures the media core's memory per connected peer.
//!
//! `cargo run --release -p sori-sfu --example peer_memory -- [PEERS] [ROOM_SIZE] [SECONDS] [RTX_MS]`
//!
//! Because the core is sans-IO, the measurement runs in one process on virtual time: PEERS str0m
//! clients join rooms of ROOM_SIZE, connect (ICE, DTLS), and each sends Opus and VP8 (about
//! 300 kbit/s, a keyframe every 2 s) for SECONDS virtual seconds (default 5), so every forwarding
//! path and retransmission cache is in use. A counting allocator attributes heap bytes to the
//! core by counting allocations made inside its calls; the core's heap is reported once all
//! peers are connected (before any media) and at the end, when the retransmission caches hold
//! their full history (a run longer than that history shows the steady state). RTX_MS sets
//! [`SfuConfig::rtx_history`] in milliseconds (default: the core's default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sori_sfu::{Sfu, SfuConfig, SfuEvent};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

struct Counting;

static CORE_BYTES: AtomicI64 = AtomicI64::new(0);
thread_local! {
    static IN_CORE: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IN_CORE.with(|c| c.get()) {
            CORE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if IN_CORE.with(|c| c.get()) {
            CORE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` with its allocations counted as the core's.
fn core<R>(f: impl FnOnce() -> R) -> R {
    IN_CORE.with(|c| c.set(true));
    let r = f();
    IN_CORE.with(|c| c.set(false));
    r
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    send: HashMap<MediaKind, Mid>,
    connected: bool,
}

/// The test clients, and how the core's datagrams and offers find them.
struct Clients {
    list: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    by_peer: HashMap<sori_sfu::PeerId, usize>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let room_size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rtx_history = args
        .next()
        .and_then(|a| a.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(sori_sfu::DEFAULT_RTX_HISTORY);
    let server_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    let t0 = Instant::now();
    let mut now = t0;
    let mut sfu = core(|| {
        Sfu::new(SfuConfig {
            candidates: vec![server_addr],
            ice_timeout: Duration::from_secs(3600),
            rtx_history,
            ..SfuConfig::default()
        })
    });
    let rss_before = rss_bytes();
    let core_before = CORE_BYTES.load(Ordering::Relaxed);
    let mut clients = join(&mut sfu, peers, room_size, now);

    let step = Duration::from_millis(10);
    let media_for = Duration::from_secs(seconds);
    let mut media_started: Option<Instant> = None;
    let mut frame = 0u64;
    loop {
        exchange(&mut sfu, &mut clients, server_addr, now);
        let all_connected = clients.list.iter().all(|c| c.connected);
        if all_connected && media_started.is_none() {
            media_started = Some(now);
            let connected_bytes = CORE_BYTES.load(Ordering::Relaxed) - core_before;
            println!(
                "{peers} peers connected after {:?} of virtual time; core heap before media: \
                 {:.1} KiB per peer",
                now - t0,
                connected_bytes as f64 / peers as f64 / 1024.0
            );
        }
        if let Some(started) = media_started {
            if now - started >= media_for {
                break;
            }
            frame += 1;
            send_media(&mut clients.list, frame, now);
        }
        now += step;
        for c in clients.list.iter_mut() {
            let _ = c.rtc.handle_input(Input::Timeout(now));
        }
        core(|| sfu.handle_timeout(now));
        if now - t0 > Duration::from_secs(120) {
            panic!("peers did not connect");
        }
    }
    let core_bytes = CORE_BYTES.load(Ordering::Relaxed) - core_before;
    let rss = rss_bytes().saturating_sub(rss_before);
    let counters = sfu.counters();
    let state = sfu.state();
    println!(
        "{peers} peers in rooms of {room_size}, {seconds} s of media, {} ms of RTX history: {} tracks, {} subscriptions, {} RTP packets forwarded",
        rtx_history.as_millis(),
        state.tracks,
        state.subscriptions,
        counters.rtp_forwarded_packets
    );
    println!(
        "core heap: {:.1} KiB per peer ({:.1} MiB total)",
        core_bytes as f64 / peers as f64 / 1024.0,
        core_bytes as f64 / 1048576.0
    );
    println!(
        "process RSS growth (core and the {peers} test clients together): {:.1} KiB per peer",
        rss as f64 / peers as f64 / 1024.0
    );
}

/// `peers` clients, each sending audio and video, join rooms of `room_size`.
fn join(sfu: &mut Sfu, peers: usize, room_size: usize, now: Instant) -> Clients {
    let mut clients = Clients {
        list: Vec::new(),
        by_addr: HashMap::new(),
        by_peer: HashMap::new(),
    };
    for i in 0..peers {
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1)),
            5000,
        );
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let room = format!("room-{}", i / room_size);
        let (peer, answer) = core(|| sfu.join(&room, &offer.to_sdp_string(), now)).expect("join");
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        clients.by_addr.insert(addr, i);
        clients.by_peer.insert(peer, i);
        clients.list.push(Client {
            rtc,
            addr,
            send: HashMap::from([(MediaKind::Audio, a), (MediaKind::Video, v)]),
            connected: false,
        });
    }
    clients
}

/// Carries everything waiting at `now`: the clients' datagrams to the core, the core's to the
/// clients, and the core's renegotiation offers, answered.
fn exchange(sfu: &mut Sfu, clients: &mut Clients, server_addr: SocketAddr, now: Instant) {
    for c in clients.list.iter_mut() {
        loop {
            match c.rtc.poll_output().expect("client rtc") {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let contents: Vec<u8> = t.contents.into();
                    core(|| sfu.handle_datagram(now, c.addr, server_addr, &contents));
                }
                Output::Event(Event::Connected) => c.connected = true,
                Output::Event(_) => {}
            }
        }
    }
    while let Some(t) = core(|| sfu.poll_transmit()) {
        if let Some(&i) = clients.by_addr.get(&t.destination) {
            let c = &mut clients.list[i];
            if let Ok(r) = Receive::new(Protocol::Udp, server_addr, c.addr, &t.contents) {
                let _ = c.rtc.handle_input(Input::Receive(now, r));
            }
        }
        core(|| drop(t));
    }
    while let Some(e) = core(|| sfu.poll_event()) {
        if let SfuEvent::Offer { peer, sdp } = e {
            let i = clients.by_peer[&peer];
            let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
            let answer = clients.list[i]
                .rtc
                .sdp_api()
                .accept_offer(offer)
                .unwrap()
                .to_sdp_string();
            core(|| sfu.accept_answer(peer, &answer, now)).expect("answer");
        }
    }
}

/// One 10 ms tick of media from every client: audio every 20 ms, video every 40 ms (a
/// keyframe every 2 s).
fn send_media(clients: &mut [Client], frame: u64, now: Instant) {
    for c in clients.iter_mut() {
        let mut write = |kind: MediaKind, ts: MediaTime, data: Vec<u8>| {
            let mid = c.send[&kind];
            if let Some(w) = c.rtc.writer(mid) {
                let pt = w.payload_params().next().unwrap().pt();
                let _ = w.write(pt, now, ts, data);
            }
        };
        if frame.is_multiple_of(2) {
            write(
                MediaKind::Audio,
                MediaTime::new(frame * 480, Frequency::FORTY_EIGHT_KHZ),
                vec![7; 80],
            );
        }
        if frame.is_multiple_of(4) {
            let key = frame.is_multiple_of(200);
            let mut data = vec![if key { 0x10 } else { 0x11 }, 0, 0];
            data.resize(if key { 12_000 } else { 1_500 }, 9);
            write(
                MediaKind::Video,
                MediaTime::new(frame * 900, Frequency::NINETY_KHZ),
                data,
            );
        }
    }
}

//! In-memory test harness: str0m clients and the core exchange datagrams through function
//! calls, on virtual time.
//!
//! Two ways to drive them: the round-based [`pump`] and [`settle`] (fixed 10 ms rounds, no
//! loss), and the [`Harness`], which moves time to the next deadline and carries datagrams
//! over links with seeded loss and delay (see `harness.rs`).
#![allow(dead_code)]

mod harness;

#[allow(unused_imports)]
pub use harness::{frame_number as harness_frame_number, vp8_frame, Harness, Link};

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sori_sfu::{PeerId, Sfu, SfuConfig, SfuEvent};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{
    Direction, MediaData, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

/// A core whose one candidate is [`SERVER`], otherwise configured as `config` says.
pub fn sfu_with(config: SfuConfig) -> Sfu {
    Sfu::new(SfuConfig {
        candidates: vec![SERVER],
        ..config
    })
}

/// A core with the default configuration and [`SERVER`] as its candidate.
pub fn sfu() -> Sfu {
    sfu_with(SfuConfig::default())
}

pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub connected: bool,
    /// Media frames received.
    pub received: Vec<MediaData>,
    /// The m-lines it sends on.
    pub send: Vec<(MediaKind, Mid)>,
    /// When keyframe requests (PLI/FIR) reached it.
    pub keyframe_requests: Vec<Instant>,
    /// The simulcast `rid` each of those asked for (`None`: no simulcast).
    pub keyframe_rids: Vec<Option<Rid>>,
    /// The sending streams whose retransmissions are no longer capped (see [`write_layer`]).
    uncapped: Vec<(Mid, Option<Rid>)>,
}

/// A client with str0m's default Opus and VP8 configuration.
pub fn client(i: u8, now: Instant) -> Client {
    client_with(
        i,
        RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true),
        now,
    )
}

/// A client built from `config`.
pub fn client_with(i: u8, config: RtcConfig, now: Instant) -> Client {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i)), 5000);
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    Client {
        rtc,
        addr,
        connected: false,
        received: Vec::new(),
        send: Vec::new(),
        keyframe_requests: Vec::new(),
        keyframe_rids: Vec::new(),
        uncapped: Vec::new(),
    }
}

/// Publishes audio and video in `room`; returns the peer id.
pub fn join(sfu: &mut Sfu, c: &mut Client, room: &str, now: Instant) -> PeerId {
    try_join(sfu, c, room, now).expect("join")
}

/// Publishes audio and video in `room`, or returns the core's refusal.
pub fn try_join(
    sfu: &mut Sfu,
    c: &mut Client,
    room: &str,
    now: Instant,
) -> Result<PeerId, sori_sfu::SfuError> {
    try_join_simulcast(sfu, c, room, &[], now)
}

/// Publishes audio and video in `room`, the video as one encoding per `rid` (none: one
/// encoding without simulcast), or returns the core's refusal.
pub fn try_join_simulcast(
    sfu: &mut Sfu,
    c: &mut Client,
    room: &str,
    rids: &[&str],
    now: Instant,
) -> Result<PeerId, sori_sfu::SfuError> {
    try_join_answered(sfu, c, room, rids, now).map(|(peer, _)| peer)
}

/// [`try_join_simulcast`], also returning the core's answer.
pub fn try_join_answered(
    sfu: &mut Sfu,
    c: &mut Client,
    room: &str,
    rids: &[&str],
    now: Instant,
) -> Result<(PeerId, String), sori_sfu::SfuError> {
    let simulcast = (!rids.is_empty()).then(|| Simulcast {
        send: rids.iter().map(|r| SimulcastLayer::new(r)).collect(),
        recv: Vec::new(),
    });
    let mut api = c.rtc.sdp_api();
    let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
    let (offer, pending) = api.apply().unwrap();
    let (peer, answer) = sfu.join(room, &offer.to_sdp_string(), now)?;
    c.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    c.send = vec![(MediaKind::Audio, a), (MediaKind::Video, v)];
    Ok((peer, answer))
}

/// The `a=ice-ufrag` of a session description.
pub fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("an ICE ufrag")
        .to_string()
}

/// A STUN binding request whose USERNAME is `local_ufrag:remote_ufrag`, as an ICE agent
/// checking `local_ufrag`'s owner sends (no integrity: enough to be routed, not answered).
pub fn binding_request(local_ufrag: &str) -> Vec<u8> {
    let username = format!("{local_ufrag}:client");
    let padded = username.len().div_ceil(4) * 4;
    let mut m = Vec::with_capacity(20 + 4 + padded);
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&0x0006u16.to_be_bytes());
    m.extend_from_slice(&(username.len() as u16).to_be_bytes());
    m.extend_from_slice(username.as_bytes());
    m.resize(20 + 4 + padded, 0);
    m
}

/// Moves datagrams both ways and advances virtual time; returns the core's events.
pub fn pump(
    sfu: &mut Sfu,
    clients: &mut HashMap<PeerId, Client>,
    now: &mut Instant,
    rounds: usize,
) -> Vec<SfuEvent> {
    let mut events = Vec::new();
    for _ in 0..rounds {
        for c in clients.values_mut() {
            loop {
                match c.rtc.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => sfu.handle_datagram(*now, c.addr, SERVER, &t.contents),
                    Output::Event(Event::Connected) => c.connected = true,
                    Output::Event(Event::MediaData(d)) => c.received.push(d),
                    Output::Event(Event::KeyframeRequest(r)) => {
                        c.keyframe_requests.push(*now);
                        c.keyframe_rids.push(r.rid);
                    }
                    Output::Event(_) => {}
                }
            }
        }
        while let Some(t) = sfu.poll_transmit() {
            if let Some(c) = clients.values_mut().find(|c| c.addr == t.destination) {
                let r = Receive::new(Protocol::Udp, SERVER, c.addr, &t.contents).unwrap();
                c.rtc.handle_input(Input::Receive(*now, r)).unwrap();
            }
        }
        events.extend(std::iter::from_fn(|| sfu.poll_event()));
        *now += Duration::from_millis(10);
        for c in clients.values_mut() {
            c.rtc.handle_input(Input::Timeout(*now)).unwrap();
        }
        sfu.handle_timeout(*now);
    }
    events
}

pub fn offers_to(events: &[SfuEvent], peer: PeerId) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::Offer { peer: p, sdp } if *p == peer => Some(sdp.clone()),
            _ => None,
        })
        .collect()
}

pub fn answer(c: &mut Client, sdp: &str) -> String {
    let offer = SdpOffer::from_sdp_string(sdp).unwrap();
    c.rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
}

/// Answers every core offer in `events`, pumping until the core has nothing more to offer.
pub fn settle(
    sfu: &mut Sfu,
    clients: &mut HashMap<PeerId, Client>,
    now: &mut Instant,
    mut events: Vec<SfuEvent>,
) {
    for _ in 0..10 {
        let offers: Vec<(PeerId, String)> = events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::Offer { peer, sdp } => Some((*peer, sdp.clone())),
                _ => None,
            })
            .collect();
        if offers.is_empty() {
            return;
        }
        for (peer, sdp) in offers {
            let ans = answer(clients.get_mut(&peer).unwrap(), &sdp);
            sfu.accept_answer(peer, &ans, *now).unwrap();
        }
        events = pump(sfu, clients, now, 5);
    }
    panic!("negotiation did not settle");
}

/// Writes one frame on the client's sending m-line of `kind`.
pub fn write(c: &mut Client, kind: MediaKind, now: Instant, ts: MediaTime, data: &[u8]) {
    write_layer(c, kind, None, now, ts, data)
}

/// Writes one frame on the client's sending m-line of `kind`, in the simulcast layer `rid`.
pub fn write_layer(
    c: &mut Client,
    kind: MediaKind,
    rid: Option<&str>,
    now: Instant,
    ts: MediaTime,
    data: &[u8],
) {
    let (_, mid) = *c
        .send
        .iter()
        .find(|(k, _)| *k == kind)
        .expect("a sending m-line of that kind");
    let rid_ = rid.map(Rid::from);
    if !c.uncapped.contains(&(mid, rid_)) {
        // As a browser, it answers every NACK while its bitrate allows (str0m drops queued
        // retransmissions while they exceed 15 % of the stream's bytes, which a 10 % loss
        // reaches now and then). Set before the stream's first packet: this replaces its cache.
        if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mid, rid_) {
            tx.set_rtx_cache(1024, Duration::from_secs(3), None);
            c.uncapped.push((mid, rid_));
        }
    }
    let mut w = c.rtc.writer(mid).unwrap();
    if let Some(rid) = rid {
        w = w.rid(Rid::from(rid));
    }
    let pt = w.payload_params().next().unwrap().pt();
    w.write(pt, now, ts, data.to_vec()).unwrap();
}

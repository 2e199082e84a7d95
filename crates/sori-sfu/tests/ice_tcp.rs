//! ICE-TCP in the core: every peer offers a passive TCP candidate below its UDP one, and a
//! client that can only use TCP connects through frames handed in as `Proto::Tcp`, with every
//! answer going back on TCP. Routes are per transport: the same address over UDP is a stranger.

mod common;

use std::time::{Duration, Instant};

use common::SERVER;
use sori_sfu::{Proto, SfuConfig, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, RtcConfig};

/// `(transport, tcptype, priority)` of every `a=candidate` line.
fn candidates(sdp: &str) -> Vec<(String, Option<String>, u32)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let tcptype = f
                .iter()
                .position(|x| *x == "tcptype")
                .map(|i| f[i + 1].to_string());
            (f[2].to_lowercase(), tcptype, f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_tcp_only_client_connects_over_tcp_frames() {
    let mut now = Instant::now();
    let mut sfu = common::sfu_with(SfuConfig {
        tcp_candidates: vec![SERVER],
        ..SfuConfig::default()
    });
    let client_addr = "127.0.0.1:50123".parse().unwrap();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    rtc.add_local_candidate(
        Candidate::builder()
            .tcp()
            .host(client_addr)
            .tcptype(TcpType::Active)
            .build()
            .unwrap(),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let (peer, answer) = sfu.join("tcp", &offer.to_sdp_string(), now).unwrap();

    let cands = candidates(&answer);
    assert_eq!(cands.len(), 2, "one UDP and one TCP candidate: {cands:?}");
    let udp = cands
        .iter()
        .find(|c| c.0 == "udp")
        .expect("a UDP candidate");
    let tcp = cands
        .iter()
        .find(|c| c.0 == "tcp")
        .expect("a TCP candidate");
    assert_eq!(tcp.1.as_deref(), Some("passive"));
    assert_eq!(udp.1, None);
    assert!(tcp.2 < udp.2, "TCP ranks below UDP: {cands:?}");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();

    let mut connected = false;
    let mut server_connected = false;
    let mut frames_out = 0;
    for _ in 0..300 {
        loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    assert_eq!(t.proto, Protocol::Tcp);
                    assert_eq!(t.destination, SERVER);
                    sfu.handle_receive(now, Proto::Tcp, client_addr, SERVER, &t.contents);
                }
                Output::Event(Event::Connected) => connected = true,
                Output::Event(_) => {}
            }
        }
        while let Some(t) = sfu.poll_transmit() {
            assert_eq!(t.proto, Proto::Tcp, "every answer goes back on TCP");
            assert_eq!(t.destination, client_addr);
            frames_out += 1;
            let r = Receive::new(Protocol::Tcp, SERVER, client_addr, &t.contents).unwrap();
            rtc.handle_input(Input::Receive(now, r)).unwrap();
        }
        while let Some(e) = sfu.poll_event() {
            server_connected |= e == SfuEvent::Connected { peer };
        }
        if connected && server_connected {
            break;
        }
        now += Duration::from_millis(10);
        rtc.handle_input(Input::Timeout(now)).unwrap();
        sfu.handle_timeout(now);
    }
    assert!(connected && server_connected, "ICE and DTLS up over TCP");
    assert!(frames_out > 0);
    assert_eq!(sfu.state().addr_routes, 1);

    // The same address over UDP knows no credentials: unroutable, no new route.
    let before = sfu.counters().datagrams_unroutable;
    sfu.handle_datagram(now, client_addr, SERVER, &[0x80; 40]);
    assert_eq!(sfu.counters().datagrams_unroutable, before + 1);
    assert_eq!(sfu.state().addr_routes, 1);
}

//! A WebRtcEndpoint's life as its events tell it, with a real (str0m) client over UDP on
//! loopback: ICE, connection and media-state events once connected, media flowing out of the
//! endpoint while the client sends, and not flowing once it stops.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{endpoint, pipeline, server_with, Client, LOCALHOST, WAIT};
use serde_json::{json, Value};
use sori_kurento::KurentoConfig;
use str0m::change::SdpAnswer;
use str0m::media::Mid;
use str0m::media::{Direction, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

/// Runs the client's session over the socket until `done` says so (bounded by [`WAIT`]).
async fn drive(rtc: &mut Rtc, socket: &UdpSocket, mut done: impl FnMut(&Rtc) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 2000];
    while !done(rtc) {
        assert!(
            Instant::now() < deadline,
            "the client did not get there in time"
        );
        let timeout = loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    socket.send_to(&t.contents, t.destination).await.unwrap();
                }
                Output::Event(_) => {}
            }
        };
        let wake = timeout.min(Instant::now() + Duration::from_millis(20));
        let wait = wake.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                let local = socket.local_addr().unwrap();
                if let Ok(r) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), r)).unwrap();
                }
            }
            _ => rtc.handle_input(Input::Timeout(Instant::now())).unwrap(),
        }
    }
}

fn states(events: &[Value], ty: &str, field: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["params"]["value"]["type"] == json!(ty))
        .map(|e| {
            e["params"]["value"]["data"][field]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn connection_and_flow_events_follow_the_media() {
    let s = server_with(KurentoConfig {
        flow_idle: Duration::from_millis(300),
        ..KurentoConfig::default()
    })
    .await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    for ty in [
        "IceComponentStateChanged",
        "NewCandidatePairSelected",
        "ConnectionStateChanged",
        "MediaStateChanged",
        "MediaSessionStarted",
        "MediaFlowOutStateChanged",
        "IceGatheringDone",
        "TrackPublished",
    ] {
        c.ok("subscribe", json!({"object": w, "type": ty})).await;
    }
    let (mut rtc, socket, audio) = connect_client(&mut c, &w).await;
    connection_events_are_raised(&mut c, &w).await;
    send_audio_until_it_flows(&mut c, &mut rtc, &socket, audio).await;
    let flowing = c.event(&w, "MediaFlowOutStateChanged").await;
    let data = &flowing["params"]["value"]["data"];
    assert_eq!(
        (data["state"].clone(), data["mediaType"].clone()),
        (json!("FLOWING"), json!("AUDIO"))
    );
    assert_eq!(data["padName"], "default");
    assert_eq!(
        c.invoke(&w, "isMediaFlowingOut", json!({"mediaType": "AUDIO"}))
            .await,
        true
    );
    // Sori's extension: the track that arrives, under the id receivers see it by.
    let track = c.event(&w, "TrackPublished").await;
    let data = &track["params"]["value"]["data"];
    assert_eq!(data["mediaType"], "AUDIO");
    let id = data["trackId"].as_str().unwrap();
    assert!(
        id.strip_prefix("track-")
            .is_some_and(|n| n.parse::<u64>().is_ok()),
        "{id}"
    );

    // It stops sending (the connection stays up): not flowing after the idle time.
    let quiet = Instant::now() + Duration::from_millis(100);
    drive(&mut rtc, &socket, |_| Instant::now() >= quiet).await;
    let stopped = c.event(&w, "MediaFlowOutStateChanged").await;
    assert_eq!(stopped["params"]["value"]["data"]["state"], "NOT_FLOWING");
    let stats = c.invoke(&w, "getStats", Value::Null).await;
    assert!(stats["inbound-AUDIO"]["packetsReceived"].as_u64().unwrap() > 0);
}

/// A str0m client sending audio, connected to the endpoint `w` through processOffer.
async fn connect_client(c: &mut Client, w: &str) -> (Rtc, UdpSocket, Mid) {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let local: SocketAddr = socket.local_addr().unwrap();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = c
        .invoke(w, "processOffer", json!({"offer": offer.to_sdp_string()}))
        .await;
    c.invoke(w, "gatherCandidates", Value::Null).await;
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(answer.as_str().unwrap()).unwrap(),
        )
        .unwrap();
    drive(&mut rtc, &socket, |r| r.is_connected()).await;

    (rtc, socket, audio)
}

/// Connected: the endpoint says so, with ICE states, the pair selected and the session.
async fn connection_events_are_raised(c: &mut Client, w: &str) {
    // Connected: the endpoint says so.
    let connected = c.event(w, "ConnectionStateChanged").await;
    assert_eq!(
        connected["params"]["value"]["data"]["newState"],
        "CONNECTED"
    );
    assert_eq!(
        connected["params"]["value"]["data"]["oldState"],
        "DISCONNECTED"
    );
    let media = c.event(w, "MediaStateChanged").await;
    assert_eq!(media["params"]["value"]["data"]["newState"], "CONNECTED");
    let pair = c.event(w, "NewCandidatePairSelected").await;
    let pair = &pair["params"]["value"]["data"]["candidatePair"];
    assert_eq!(pair["__type__"], "IceCandidatePair");
    assert!(pair["localCandidate"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1"));
    c.event(w, "MediaSessionStarted").await;
    c.event(w, "IceGatheringDone").await;
    let ice: Vec<String> = {
        let mut seen = Vec::new();
        while let Some(i) = c
            .events
            .iter()
            .position(|e| e["params"]["value"]["type"] == json!("IceComponentStateChanged"))
        {
            seen.push(c.events.remove(i).unwrap());
        }
        states(&seen, "IceComponentStateChanged", "state")
    };
    for state in ["GATHERING", "CONNECTING", "CONNECTED", "READY"] {
        assert!(ice.contains(&state.to_string()), "{state} in {ice:?}");
    }
}

/// The client sends audio until media flows out of the endpoint into the pipeline.
async fn send_audio_until_it_flows(c: &mut Client, rtc: &mut Rtc, socket: &UdpSocket, audio: Mid) {
    let start = Instant::now();
    let mut sent = 0u64;
    while c
        .events
        .iter()
        .all(|e| e["params"]["value"]["type"] != json!("MediaFlowOutStateChanged"))
    {
        assert!(start.elapsed() < WAIT, "no MediaFlowOutStateChanged");
        let w = rtc.writer(audio).unwrap();
        let pt = w.payload_params().next().unwrap().pt();
        w.write(
            pt,
            Instant::now(),
            MediaTime::from_90khz(sent * 1800),
            vec![0xf8, 0xff, 0xfe],
        )
        .unwrap();
        sent += 1;
        let until = Instant::now() + Duration::from_millis(20);
        drive(rtc, socket, |_| Instant::now() >= until).await;
        // Pick up events without blocking on the socket for long.
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(1), c.recv()).await {
            c.events.push_back(v);
        }
    }
}

#[tokio::test]
async fn a_renegotiating_endpoint_says_which_track_arrives_and_when_it_goes() {
    let s = server_with(KurentoConfig::default()).await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let created = c
        .ok(
            "create",
            json!({"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": p},
                   "properties": {"renegotiation": true}}),
        )
        .await;
    let w = created["value"].as_str().unwrap().to_string();
    for ty in [
        "MediaFlowOutStateChanged",
        "TrackPublished",
        "TrackUnpublished",
    ] {
        c.ok("subscribe", json!({"object": w, "type": ty})).await;
    }
    let (mut rtc, socket, audio) = connect_client(&mut c, &w).await;
    send_audio_until_it_flows(&mut c, &mut rtc, &socket, audio).await;
    let published = c.event(&w, "TrackPublished").await;
    let published = &published["params"]["value"]["data"];
    assert_eq!(published["mediaType"], "AUDIO");

    // The browser stops sending it: its m-line goes inactive in a new offer.
    let mut api = rtc.sdp_api();
    api.set_direction(audio, Direction::Inactive);
    let (offer, pending) = api.apply().unwrap();
    let answer = c
        .invoke(&w, "processOffer", json!({"offer": offer.to_sdp_string()}))
        .await;
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(answer.as_str().unwrap()).unwrap(),
        )
        .unwrap();
    let gone = c.event(&w, "TrackUnpublished").await;
    assert_eq!(
        gone["params"]["value"]["data"]["trackId"],
        published["trackId"]
    );
}

#[tokio::test]
async fn an_endpoint_says_how_loud_its_browser_is() {
    let s = server_with(KurentoConfig::default()).await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    c.ok("subscribe", json!({"object": w, "type": "AudioLevels"}))
        .await;
    let (mut rtc, socket, audio) = connect_client(&mut c, &w).await;
    // The browser's audio at -20 dBov (RFC 6464): each packet's loudness is 127 - 20.
    let start = Instant::now();
    let mut sent = 0u64;
    let levels = loop {
        assert!(start.elapsed() < WAIT, "no AudioLevels");
        let wr = rtc.writer(audio).unwrap().audio_level(-20, true);
        let pt = wr.payload_params().next().unwrap().pt();
        let at = MediaTime::from_90khz(sent * 1800);
        wr.write(pt, Instant::now(), at, vec![0xf8, 0xff, 0xfe])
            .unwrap();
        sent += 1;
        let until = Instant::now() + Duration::from_millis(20);
        drive(&mut rtc, &socket, |_| Instant::now() >= until).await;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(1), c.recv()).await {
            if v["params"]["value"]["type"] == json!("AudioLevels") {
                break v;
            }
        }
    };
    let data = &levels["params"]["value"]["data"];
    assert_eq!(levels["params"]["value"]["object"], json!(w));
    let packets = data["packets"].as_u64().unwrap();
    assert!(packets >= 1, "{data}");
    assert_eq!(data["sum"].as_u64().unwrap(), 107 * packets, "{data}");
}

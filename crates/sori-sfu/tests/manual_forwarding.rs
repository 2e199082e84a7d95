//! Manual forwarding: the application feeds tracks into the m-lines a client negotiated for
//! receiving, with no renegotiation — a viewer answered before its source exists, loopback,
//! and a source switch that keeps the outgoing stream continuous.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{client, pump, write, write_layer, Client};
use sori_sfu::{Forwarding, MediaKind as Kind, PeerId, Sfu, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Simulcast, SimulcastLayer};

/// Joins a manual room with one audio and one video m-line in `direction`.
fn join_manual(sfu: &mut Sfu, c: &mut Client, direction: Direction, now: Instant) -> PeerId {
    join_manual_simulcast(sfu, c, direction, None, now)
}

/// As [`join_manual`], the video sent as the given simulcast layers.
fn join_manual_simulcast(
    sfu: &mut Sfu,
    c: &mut Client,
    direction: Direction,
    simulcast: Option<Simulcast>,
    now: Instant,
) -> PeerId {
    let mut api = c.rtc.sdp_api();
    let a = api.add_media(MediaKind::Audio, direction, None, None, None);
    let v = api.add_media(MediaKind::Video, direction, None, None, simulcast);
    let (offer, pending) = api.apply().unwrap();
    let (peer, answer) = sfu
        .join_with("pipeline", &offer.to_sdp_string(), Forwarding::Manual, now)
        .expect("join");
    c.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    if direction.is_sending() {
        c.send = vec![(MediaKind::Audio, a), (MediaKind::Video, v)];
    }
    peer
}

/// Sends `frames` video frames (the first a keyframe) and audio frames from `from`, each
/// marked with `tag`.
fn send_frames(
    sfu: &mut Sfu,
    clients: &mut HashMap<PeerId, Client>,
    from: PeerId,
    tag: u8,
    frames: u64,
    now: &mut Instant,
) {
    for i in 0..frames {
        let key = i == 0;
        let video = vec![if key { 0x10 } else { 0x11 }, 0, 0, tag, i as u8];
        let c = clients.get_mut(&from).unwrap();
        let ts = MediaTime::new(i * 3000, Frequency::NINETY_KHZ);
        write(c, MediaKind::Video, *now, ts, &video);
        let ts = MediaTime::new(i * 960, Frequency::FORTY_EIGHT_KHZ);
        write(c, MediaKind::Audio, *now, ts, &[tag, i as u8]);
        pump(sfu, clients, now, 3);
    }
    pump(sfu, clients, now, 10);
}

fn video_tags(c: &Client) -> Vec<(u8, u8)> {
    c.received
        .iter()
        .filter(|d| d.data.len() == 5)
        .map(|d| (d.data[3], d.data[4]))
        .collect()
}

fn line(sfu: &Sfu, peer: PeerId, kind: Kind) -> sori_sfu::MediaLine {
    sfu.media(peer)
        .unwrap()
        .into_iter()
        .find(|l| l.kind == kind)
        .unwrap()
}

#[test]
fn a_viewer_negotiated_before_its_source_receives_it_without_renegotiation() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();

    let mut viewer = client(1, now);
    let pv = join_manual(&mut sfu, &mut viewer, Direction::RecvOnly, now);
    let mut presenter = client(0, now);
    let pp = join_manual(&mut sfu, &mut presenter, Direction::SendOnly, now);
    clients.insert(pp, presenter);
    clients.insert(pv, viewer);
    let events = pump(&mut sfu, &mut clients, &mut now, 10);
    assert!(clients.values().all(|c| c.connected));

    // Manual rooms never offer on their own.
    send_frames(&mut sfu, &mut clients, pp, 1, 5, &mut now);
    assert!(
        !events.iter().any(|e| matches!(e, SfuEvent::Offer { .. })),
        "no renegotiation"
    );
    assert!(clients[&pv].received.is_empty(), "nothing before a feed");

    for kind in [Kind::Audio, Kind::Video] {
        let source = line(&sfu, pp, kind).published.expect("published");
        let sink = line(&sfu, pv, kind);
        assert!(sink.sends && sink.published.is_none());
        sfu.feed(pv, &sink.mid, Some(source), now).unwrap();
        // Feeding the same source again is harmless.
        sfu.feed(pv, &sink.mid, Some(source), now).unwrap();
        assert_eq!(line(&sfu, pv, kind).fed_by, Some(source));
    }
    let events = {
        send_frames(&mut sfu, &mut clients, pp, 2, 20, &mut now);
        pump(&mut sfu, &mut clients, &mut now, 5)
    };
    assert!(!events.iter().any(|e| matches!(e, SfuEvent::Offer { .. })));
    let got = video_tags(&clients[&pv]);
    let expected: Vec<(u8, u8)> = (0..20).map(|i| (2, i)).collect();
    assert_eq!(got, expected, "every video frame from the keyframe on");
    let audio = clients[&pv]
        .received
        .iter()
        .filter(|d| d.data.len() == 2)
        .count();
    assert_eq!(audio, 20, "every audio frame");
    let flow = sfu.flow(pv).unwrap();
    assert!(flow.video_out > 0 && flow.audio_out == 20 && flow.video_in == 0);

    // Unfed: nothing more arrives.
    let video_mid = line(&sfu, pv, Kind::Video).mid;
    sfu.feed(pv, &video_mid, None, now).unwrap();
    let before = video_tags(&clients[&pv]).len();
    send_frames(&mut sfu, &mut clients, pp, 3, 5, &mut now);
    assert_eq!(video_tags(&clients[&pv]).len(), before);
}

/// Kurento's API has no simulcast: a fed m-line (a WebRtcEndpoint's sink) whose link carries
/// every layer takes the highest one of a simulcast source, as one stream.
#[test]
fn a_simulcast_source_feeds_its_highest_layer() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();
    let mut viewer = client(1, now);
    let pv = join_manual(&mut sfu, &mut viewer, Direction::RecvOnly, now);
    let mut presenter = client(0, now);
    let layers = Simulcast {
        send: ["q", "h", "f"].map(SimulcastLayer::new).to_vec(),
        recv: Vec::new(),
    };
    let pp = join_manual_simulcast(
        &mut sfu,
        &mut presenter,
        Direction::SendOnly,
        Some(layers),
        now,
    );
    clients.insert(pp, presenter);
    clients.insert(pv, viewer);
    pump(&mut sfu, &mut clients, &mut now, 10);
    let source = line(&sfu, pp, Kind::Video).published.expect("published");
    let sink = line(&sfu, pv, Kind::Video);
    sfu.feed(pv, &sink.mid, Some(source), now).unwrap();
    for i in 0..30u8 {
        let ts = MediaTime::new(u64::from(i) * 3000, Frequency::NINETY_KHZ);
        for (l, rid) in ["q", "h", "f"].iter().enumerate() {
            let key = i == 0;
            let frame = [if key { 0x10 } else { 0x11 }, 0, 0, l as u8, i];
            let c = clients.get_mut(&pp).unwrap();
            write_layer(c, MediaKind::Video, Some(rid), now, ts, &frame);
        }
        pump(&mut sfu, &mut clients, &mut now, 3);
    }
    pump(&mut sfu, &mut clients, &mut now, 10);
    let got = video_tags(&clients[&pv]);
    assert!(got.len() >= 20, "{} frames", got.len());
    assert!(got.iter().all(|(layer, _)| *layer == 2), "{got:?}");
}

#[test]
fn loopback_sends_a_peer_its_own_media_back() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();
    let mut c = client(0, now);
    let p = join_manual(&mut sfu, &mut c, Direction::SendRecv, now);
    clients.insert(p, c);
    pump(&mut sfu, &mut clients, &mut now, 10);
    for kind in [Kind::Audio, Kind::Video] {
        let l = line(&sfu, p, kind);
        sfu.feed(p, &l.mid, l.published, now).unwrap();
    }
    send_frames(&mut sfu, &mut clients, p, 7, 10, &mut now);
    let expected: Vec<(u8, u8)> = (0..10).map(|i| (7, i)).collect();
    assert_eq!(video_tags(&clients[&p]), expected);
}

#[test]
fn switching_the_source_keeps_the_stream_continuous() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();
    let mut a = client(0, now);
    let pa = join_manual(&mut sfu, &mut a, Direction::SendOnly, now);
    let mut b = client(1, now);
    let pb = join_manual(&mut sfu, &mut b, Direction::SendOnly, now);
    let mut v = client(2, now);
    let pv = join_manual(&mut sfu, &mut v, Direction::RecvOnly, now);
    for (p, c) in [(pa, a), (pb, b), (pv, v)] {
        clients.insert(p, c);
    }
    pump(&mut sfu, &mut clients, &mut now, 10);
    let mid = line(&sfu, pv, Kind::Video).mid;
    sfu.feed(pv, &mid, line(&sfu, pa, Kind::Video).published, now)
        .unwrap();
    send_frames(&mut sfu, &mut clients, pa, 1, 10, &mut now);
    sfu.feed(pv, &mid, line(&sfu, pb, Kind::Video).published, now)
        .unwrap();
    // The old source goes on but no longer reaches the viewer.
    send_frames(&mut sfu, &mut clients, pa, 1, 3, &mut now);
    send_frames(&mut sfu, &mut clients, pb, 2, 10, &mut now);
    let mut expected: Vec<(u8, u8)> = (0..10).map(|i| (1, i)).collect();
    expected.extend((0..10).map(|i| (2, i)));
    assert_eq!(video_tags(&clients[&pv]), expected);

    // A feed of the wrong kind, into a line that only sends, or from a stranger is refused.
    let audio = line(&sfu, pa, Kind::Audio).published;
    assert!(sfu.feed(pv, &mid, audio, now).is_err());
    let pa_video = line(&sfu, pa, Kind::Video).mid;
    assert!(sfu.feed(pa, &pa_video, audio, now).is_err());
    assert!(sfu.feed(pv, "nope", None, now).is_err());
    assert_eq!(
        video_tags(&clients[&pv]).len(),
        20,
        "refused feeds changed nothing"
    );
}

#[test]
fn a_room_keeps_its_forwarding() {
    let now = Instant::now();
    let mut sfu = common::sfu();
    let mut a = client(0, now);
    join_manual(&mut sfu, &mut a, Direction::SendOnly, now);
    let mut b = client(1, now);
    let mut api = b.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    let err = sfu
        .join("pipeline", &offer.to_sdp_string(), now)
        .unwrap_err();
    assert!(err.to_string().contains("Manual"), "{err}");
    assert_eq!(sfu.state().peers, 1);
}

#[test]
fn a_session_the_core_offers_publishes_and_receives_once_answered() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();
    let lines = [Kind::Audio, Kind::Video].map(|kind| sori_sfu::OfferLine {
        kind,
        receive: true,
        send: true,
    });
    let (p, offer) = sfu
        .offer_with("pipeline", Forwarding::Manual, &lines, now)
        .unwrap();
    let mut c = client(0, now);
    let answer = common::answer(&mut c, &offer);
    c.send = sfu
        .media(p)
        .unwrap()
        .iter()
        .map(|l| {
            let kind = match l.kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            };
            (kind, l.mid.as_str().into())
        })
        .collect();
    sfu.accept_answer(p, &answer, now).unwrap();
    clients.insert(p, c);
    pump(&mut sfu, &mut clients, &mut now, 10);
    for kind in [Kind::Audio, Kind::Video] {
        let l = line(&sfu, p, kind);
        assert!(l.published.is_some(), "the answered m-line publishes");
        sfu.feed(p, &l.mid, l.published, now).unwrap();
    }
    send_frames(&mut sfu, &mut clients, p, 9, 10, &mut now);
    let expected: Vec<(u8, u8)> = (0..10).map(|i| (9, i)).collect();
    assert_eq!(video_tags(&clients[&p]), expected);
}

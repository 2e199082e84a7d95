//! Payload types are translated per subscriber: a receiver that numbers its codecs differently
//! from the sender still gets every frame, on its own payload types.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{client, client_with, join, pump, settle, write};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, MediaTime};
use str0m::RtcConfig;

#[test]
fn a_receiver_with_other_payload_type_numbers_gets_every_frame_on_its_own_numbers() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();

    let mut a = client(0, now);
    let pa = join(&mut sfu, &mut a, "pt", now);
    let sender_pts: Vec<u8> = a
        .rtc
        .codec_config()
        .params()
        .iter()
        .map(|p| *p.pt())
        .collect();

    let mut config = RtcConfig::new().clear_codecs();
    config.codec_config().add_config(
        109.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    config.codec_config().add_config(
        120.into(),
        Some(121.into()),
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        FormatParams::default(),
    );
    let mut b = client_with(1, config, now);
    let pb = join(&mut sfu, &mut b, "pt", now);
    assert!(
        !sender_pts.contains(&109) && !sender_pts.contains(&120),
        "the two number codecs differently"
    );
    clients.insert(pa, a);
    clients.insert(pb, b);
    let events = pump(&mut sfu, &mut clients, &mut now, 5);
    settle(&mut sfu, &mut clients, &mut now, events);
    assert!(clients.values().all(|c| c.connected));

    let mut sent = Vec::new();
    for i in 0..40u64 {
        let key = i == 0;
        let mut video = vec![if key { 0x10 } else { 0x11 }, 0, 0];
        video.extend((0..1500).map(|j| (i * 7 + j) as u8));
        let audio: Vec<u8> = (0..60).map(|j| (i * 3 + j) as u8).collect();
        let a = clients.get_mut(&pa).unwrap();
        write(
            a,
            MediaKind::Video,
            now,
            MediaTime::new(i * 3000, Frequency::NINETY_KHZ),
            &video,
        );
        write(
            a,
            MediaKind::Audio,
            now,
            MediaTime::new(i * 960, Frequency::FORTY_EIGHT_KHZ),
            &audio,
        );
        sent.push((video, audio));
        pump(&mut sfu, &mut clients, &mut now, 3);
    }
    // Until every frame is through: the pacer may hold some back, as the pump's 10 ms rounds
    // deliver datagrams in bursts, which the delay-based estimator reads as a slower link.
    for _ in 0..300 {
        let frames = clients[&pb]
            .received
            .iter()
            .filter(|d| *d.pt == 120)
            .count();
        if frames >= 40 {
            break;
        }
        pump(&mut sfu, &mut clients, &mut now, 1);
    }
    pump(&mut sfu, &mut clients, &mut now, 5);

    let b = &clients[&pb];
    let video: Vec<&[u8]> = b
        .received
        .iter()
        .filter(|d| *d.pt == 120)
        .map(|d| &d.data[..])
        .collect();
    let audio: Vec<&[u8]> = b
        .received
        .iter()
        .filter(|d| *d.pt == 109)
        .map(|d| &d.data[..])
        .collect();
    assert_eq!(
        b.received.len(),
        video.len() + audio.len(),
        "nothing arrived on another payload type"
    );
    assert_eq!(video.len(), 40, "every video frame on PT 120");
    assert_eq!(audio.len(), 40, "every audio frame on PT 109");
    for (i, (v, a)) in sent.iter().enumerate() {
        assert_eq!(video[i], &v[..], "video frame {i} intact");
        assert_eq!(audio[i], &a[..], "audio frame {i} intact");
    }
}

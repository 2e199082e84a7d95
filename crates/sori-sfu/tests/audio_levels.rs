//! Who is talking starts in the core: the `ssrc-audio-level` extension of each audio packet a
//! publisher sends is summed and reported ([`SfuEvent::AudioLevels`]) every level interval,
//! only while audio with levels arrives; a server-muted publisher reports nothing. Silent
//! audio is not forwarded, and the receiver sees no gap for it. Virtual time.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{client, join, pump, settle, Client};
use sori_sfu::{MediaKind as Kind, PeerId, Sfu, SfuConfig, SfuEvent};
use str0m::media::{Frequency, MediaKind, MediaTime};

/// One Opus frame every 20 ms from `c` at `level` (-dBov) for `frames` frames.
fn speak(
    sfu: &mut Sfu,
    clients: &mut HashMap<PeerId, Client>,
    who: PeerId,
    level: i8,
    frames: u64,
    now: &mut Instant,
    seq: &mut u64,
) -> Vec<SfuEvent> {
    let mut events = Vec::new();
    for _ in 0..frames {
        let c = clients.get_mut(&who).unwrap();
        let (_, mid) = *c.send.iter().find(|(k, _)| *k == MediaKind::Audio).unwrap();
        let w = c.rtc.writer(mid).unwrap().audio_level(level, level > -127);
        let pt = w.payload_params().next().unwrap().pt();
        let ts = MediaTime::new(*seq * 960, Frequency::FORTY_EIGHT_KHZ);
        *seq += 1;
        w.write(pt, *now, ts, vec![0xf8, 0xff, 0xfe]).unwrap();
        events.extend(pump(sfu, clients, now, 2));
    }
    events
}

/// Two clients publishing in `room`, connected, every offer answered.
fn two_connected(sfu: &mut Sfu, room: &str) -> (HashMap<PeerId, Client>, PeerId, PeerId, Instant) {
    let mut now = Instant::now();
    let mut clients = HashMap::new();
    let mut a = client(1, now);
    let mut b = client(2, now);
    let pa = join(sfu, &mut a, room, now);
    let pb = join(sfu, &mut b, room, now);
    clients.insert(pa, a);
    clients.insert(pb, b);
    let events = pump(sfu, &mut clients, &mut now, 50);
    settle(sfu, &mut clients, &mut now, events);
    assert!(clients.values().all(|c| c.connected));
    (clients, pa, pb, now)
}

fn levels_of(events: &[SfuEvent], who: PeerId) -> Vec<(u64, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::AudioLevels { peer, sum, packets } if *peer == who => Some((*sum, *packets)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_publishers_levels_are_reported_twenty_times_a_second_while_its_audio_arrives() {
    let mut sfu = common::sfu();
    let (mut clients, pa, pb, mut now) = two_connected(&mut sfu, "levels");

    // One second of speech at -30 dBov: loudness 97 per packet, 50 packets.
    let mut seq = 0;
    let start = now;
    let events = speak(&mut sfu, &mut clients, pa, -30, 50, &mut now, &mut seq);
    let elapsed = now - start;
    let reports = levels_of(&events, pa);
    let packets: u32 = reports.iter().map(|r| r.1).sum();
    let sum: u64 = reports.iter().map(|r| r.0).sum();
    assert!(
        (14..=21).contains(&reports.len()),
        "{} reports in {elapsed:?}: {reports:?}",
        reports.len()
    );
    assert!(packets >= 40, "{packets} packets reported of 50 sent");
    assert_eq!(sum, u64::from(packets) * 97, "each packet counts 127 - 30");
    assert!(
        levels_of(&events, pb).is_empty(),
        "the silent one reports nothing"
    );

    // Silence (the sender stops): the reports stop after the last packets went out.
    let events = pump(&mut sfu, &mut clients, &mut now, 100);
    assert!(
        levels_of(&events, pa).len() <= 1,
        "{:?}",
        levels_of(&events, pa)
    );

    // A moderator's mute: nothing of it counts.
    sfu.set_muted(pa, Kind::Audio, true, now).unwrap();
    let events = speak(&mut sfu, &mut clients, pa, -10, 50, &mut now, &mut seq);
    assert!(
        levels_of(&events, pa).is_empty(),
        "{:?}",
        levels_of(&events, pa)
    );
}

/// A room of two where Ada speaks for a second, switches her microphone off (digital silence,
/// -127 dBov, as a browser sends for a disabled track) for a second, then speaks again at
/// -40: what Bo receives of her audio, as (sequence number, RTP time in 48 kHz ticks, level).
fn bo_hears_ada(config: SfuConfig) -> (Vec<(u64, u64, Option<i8>)>, u64) {
    let mut sfu = common::sfu_with(config);
    let (mut clients, pa, pb, mut now) = two_connected(&mut sfu, "silence");
    let mut seq = 0;
    speak(&mut sfu, &mut clients, pa, -30, 50, &mut now, &mut seq);
    speak(&mut sfu, &mut clients, pa, -127, 50, &mut now, &mut seq);
    speak(&mut sfu, &mut clients, pa, -40, 50, &mut now, &mut seq);
    pump(&mut sfu, &mut clients, &mut now, 20);
    let heard = clients[&pb]
        .received
        .iter()
        .filter(|d| d.params.spec().codec == str0m::format::Codec::Opus)
        .map(|d| {
            (
                **d.seq_range.start(),
                d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer(),
                d.ext_vals.audio_level,
            )
        })
        .collect();
    (heard, sfu.counters().rtp_silence_not_forwarded)
}

#[test]
fn silent_audio_is_not_forwarded_and_the_receiver_sees_a_pause_not_a_loss() {
    let (heard, not_forwarded) = bo_hears_ada(SfuConfig::default());
    let levels: Vec<i8> = heard.iter().filter_map(|h| h.2).collect();
    assert_eq!(
        heard.len(),
        100,
        "the two seconds of speech, not the silence"
    );
    assert_eq!(levels.len(), 100);
    assert!(levels[..50].iter().all(|&l| l == -30), "{levels:?}");
    assert!(levels[50..].iter().all(|&l| l == -40), "{levels:?}");
    assert_eq!(not_forwarded, 50);
    for pair in heard.windows(2) {
        let ((s0, t0, _), (s1, t1, _)) = (pair[0], pair[1]);
        assert_eq!(s1, s0 + 1, "no gap in the sequence numbers: {pair:?}");
        let step = t1 - t0;
        if pair[1].2 == Some(-40) && pair[0].2 == Some(-30) {
            // The second of silence: 51 frames from the last spoken to the next.
            assert_eq!(step, 51 * 960, "the pause shows in the timestamps");
        } else {
            assert_eq!(step, 960, "{pair:?}");
        }
    }

    // Off: every packet goes out, the silent ones too.
    let (heard, not_forwarded) = bo_hears_ada(SfuConfig {
        silence_dbov: None,
        ..SfuConfig::default()
    });
    assert_eq!(heard.len(), 150);
    assert_eq!(heard.iter().filter(|h| h.2 == Some(-127)).count(), 50);
    assert_eq!(not_forwarded, 0);
}

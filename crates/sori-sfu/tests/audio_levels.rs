//! Who is talking starts in the core: the `ssrc-audio-level` extension of each audio packet a
//! publisher sends is summed and reported ([`SfuEvent::AudioLevels`]) every level interval,
//! only while audio with levels arrives; a server-muted publisher reports nothing. Virtual
//! time.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{client, join, pump, settle, Client};
use sori_sfu::{MediaKind as Kind, PeerId, Sfu, SfuEvent};
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
    let mut now = Instant::now();
    let mut clients = HashMap::new();
    let mut a = client(1, now);
    let mut b = client(2, now);
    let pa = join(&mut sfu, &mut a, "levels", now);
    let pb = join(&mut sfu, &mut b, "levels", now);
    clients.insert(pa, a);
    clients.insert(pb, b);
    let events = pump(&mut sfu, &mut clients, &mut now, 50);
    settle(&mut sfu, &mut clients, &mut now, events);
    assert!(clients.values().all(|c| c.connected));

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

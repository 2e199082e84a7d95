//! Last-N: a receiver's video set limits which videos it is forwarded. The others pause
//! without renegotiation (no offer), and one that comes back into the set resumes at a
//! keyframe asked for it. Virtual time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{harness_frame_number as frame_number, Harness, Link};
use sori_sfu::{SfuConfig, SfuEvent, TrackId};

/// Frame sizes tell the publishers apart at the receiver.
const SIZES: [usize; 3] = [900, 1000, 1100];

/// The three publishers stream for `secs` seconds, 30 frames a second each.
fn stream(h: &mut Harness, secs: u64) {
    let frame = Duration::from_micros(33_333);
    let until = h.now + Duration::from_secs(secs);
    while h.now + frame <= until {
        for (i, size) in SIZES.iter().enumerate() {
            h.write_video(i, *size);
        }
        h.run_for(frame);
    }
    h.run_until(until);
}

/// The video frames member `i` received so far, as (publisher, frame number, keyframe).
fn received(h: &Harness, i: usize) -> Vec<(usize, u64, bool)> {
    h.members[i]
        .client
        .received
        .iter()
        .filter(|d| d.params.spec().codec.is_video())
        .map(|d| {
            let from = SIZES
                .iter()
                .position(|s| *s == d.data.len())
                .expect("a known size");
            // VP8: the first byte's lowest bit is 0 on a keyframe.
            (from, frame_number(&d.data), d.data[0] & 1 == 0)
        })
        .collect()
}

#[test]
fn a_receiver_gets_only_its_video_set_and_a_participant_coming_back_starts_on_a_keyframe() {
    let config = SfuConfig {
        initial_estimate: None,
        ..SfuConfig::default()
    };
    let mut h = Harness::new(config, 7);
    for _ in 0..3 {
        h.join("lastn", Link::default(), Link::default());
    }
    let viewer = h.join("lastn", Link::default(), Link::default());
    stream(&mut h, 2);
    let from = |h: &Harness, since: usize| -> BTreeSet<usize> {
        received(h, viewer)[since..].iter().map(|r| r.0).collect()
    };
    assert_eq!(from(&h, 0), BTreeSet::from([0, 1, 2]), "all three before");

    let peer = h.members[viewer].peer;
    let tracks: Vec<TrackId> = (0..3).map(|i| h.video_track(i)).collect();
    let offers = |h: &Harness| {
        h.events
            .iter()
            .filter(|(_, e)| matches!(e, SfuEvent::Offer { peer: p, .. } if *p == peer))
            .count()
    };
    let offers_before = offers(&h);

    // Only publisher 0.
    h.sfu
        .set_video_set(peer, Some(BTreeSet::from([tracks[0]])), h.now)
        .unwrap();
    // Frames in flight may still land: look from a moment later.
    stream(&mut h, 1);
    let mark = received(&h, viewer).len();
    stream(&mut h, 2);
    assert_eq!(
        from(&h, mark),
        BTreeSet::from([0]),
        "only publisher 0 while the set is {{0}}"
    );
    assert!(
        received(&h, viewer)[mark..].len() >= 50,
        "publisher 0 keeps coming"
    );

    // Publisher 2 comes in, 0 goes out: 2 resumes on a keyframe, 0 stops.
    h.sfu
        .set_video_set(peer, Some(BTreeSet::from([tracks[2]])), h.now)
        .unwrap();
    let switched = received(&h, viewer).len();
    stream(&mut h, 2);
    let after: Vec<(usize, u64, bool)> = received(&h, viewer)[switched..]
        .iter()
        .copied()
        .filter(|r| r.0 == 2)
        .collect();
    assert!(
        after.len() >= 40,
        "publisher 2 is back: {} frames",
        after.len()
    );
    assert!(
        after[0].2,
        "the first frame of publisher 2 after the change is a keyframe"
    );
    let tail = received(&h, viewer).len() - 10;
    assert_eq!(from(&h, tail), BTreeSet::from([2]));

    // Everyone again.
    h.sfu.set_video_set(peer, None, h.now).unwrap();
    let mark = received(&h, viewer).len();
    stream(&mut h, 2);
    assert_eq!(from(&h, mark), BTreeSet::from([0, 1, 2]));

    assert_eq!(offers(&h), offers_before, "no renegotiation for any of it");
}

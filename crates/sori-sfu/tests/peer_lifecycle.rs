//! Peers leave by saying so, by closing DTLS, or by vanishing; the others renegotiate and the
//! core keeps nothing of them. Virtual time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Harness, Link};
use sori_sfu::{CoreState, PeerId, RemoveReason, SfuConfig, SfuEvent};
use str0m::media::Mid;

const FRAME: usize = 1000;

/// Everyone streams video for `d`, in 33 ms frames.
fn all_stream(h: &mut Harness, d: Duration) {
    let end = h.now + d;
    let frame = Duration::from_micros(33_333);
    while h.now + frame <= end {
        for i in 0..h.members.len() {
            if !h.members[i].vanished {
                h.write_video(i, FRAME);
            }
        }
        h.run_for(frame);
    }
}

/// The m-lines on which member `i` received video and still receives.
fn video_lines(h: &Harness, i: usize) -> usize {
    let c = &h.members[i].client;
    let mids: BTreeSet<Mid> = c.received.iter().map(|d| d.mid).collect();
    let receiving = |m: &Mid| {
        c.rtc
            .media(*m)
            .is_some_and(|m| m.direction().is_receiving())
    };
    mids.iter().filter(|m| receiving(m)).count()
}

fn removal(h: &Harness, peer: PeerId) -> (std::time::Instant, RemoveReason) {
    match h.removal_of(peer) {
        Some((t, SfuEvent::PeerRemoved { reason, .. })) => (t, reason.clone()),
        _ => panic!("{peer} was not removed"),
    }
}

#[test]
fn a_peer_that_leaves_is_removed_at_once_and_the_others_keep_each_other() {
    let mut h = Harness::new(SfuConfig::default(), 5);
    let [a, b, c] = [0, 1, 2].map(|_| h.join("leave", Link::default(), Link::default()));
    all_stream(&mut h, Duration::from_secs(2));
    let pc = h.members[c].peer;
    assert_eq!(video_lines(&h, a), 2);

    let left_at = h.now;
    h.sfu.leave(pc, left_at).unwrap();
    h.vanish(c);
    all_stream(&mut h, Duration::from_secs(1));
    assert_eq!(removal(&h, pc), (left_at, RemoveReason::Left));
    assert_eq!((video_lines(&h, a), video_lines(&h, b)), (1, 1));
    let s = h.sfu.state();
    assert_eq!(
        (s.peers, s.tracks, s.subscriptions, s.ufrag_routes),
        (2, 4, 4, 2)
    );

    // The two that stayed still see each other.
    let before = h.video_frames(a).len();
    all_stream(&mut h, Duration::from_secs(1));
    assert!(h.video_frames(a).len() >= before + 29);
}

#[test]
fn a_peer_that_closes_dtls_is_removed_when_its_close_arrives() {
    let mut h = Harness::new(SfuConfig::default(), 6);
    let up = Link::new(0.0, Duration::from_millis(12));
    let a = h.join("dtls", Link::default(), Link::default());
    let b = h.join("dtls", up, Link::default());
    all_stream(&mut h, Duration::from_secs(2));
    let pb = h.members[b].peer;

    let closed_at = h.now;
    h.close(b);
    all_stream(&mut h, Duration::from_secs(1));
    assert_eq!(
        removal(&h, pb),
        (
            closed_at + Duration::from_millis(12),
            RemoveReason::DtlsClosed
        )
    );
    assert_eq!(video_lines(&h, a), 0);
    let s = h.sfu.state();
    assert_eq!((s.peers, s.tracks, s.subscriptions), (1, 2, 0));
}

#[test]
fn a_peer_that_vanishes_is_removed_exactly_at_the_ice_timeout_and_nothing_of_it_remains() {
    let ice_timeout = Duration::from_secs(5);
    let config = SfuConfig {
        ice_timeout,
        ..SfuConfig::default()
    };
    let mut h = Harness::new(config, 7);
    let a = h.join("vanish", Link::default(), Link::default());
    let b = h.join("vanish", Link::default(), Link::default());
    all_stream(&mut h, Duration::from_secs(2));
    let s = h.sfu.state();
    assert_eq!((s.peers, s.ufrag_routes, s.addr_routes), (2, 2, 2));
    let (pa, pb) = (h.members[a].peer, h.members[b].peer);

    h.vanish(b);
    // Its datagrams still on the link arrive; the timeout counts from the last of them.
    h.run_for(Duration::from_millis(100));
    let last = h.members[b].last_heard.unwrap();
    let due = last + ice_timeout;
    while h.removal_of(pb).is_none() {
        assert!(h.now < due, "not removed at {due:?}");
        assert_eq!(h.sfu.state().peers, 2, "removed before the timeout");
        h.step();
    }
    assert_eq!(removal(&h, pb), (due, RemoveReason::IceTimeout));
    assert_eq!(h.sfu.counters().peers_removed, 1);
    let s = h.sfu.state();
    assert_eq!(
        (s.peers, s.rooms, s.tracks, s.subscriptions),
        (1, 1, 2, 0),
        "only a's state remains"
    );
    assert_eq!((s.ufrag_routes, s.addr_routes, s.timers), (1, 1, 1));

    h.sfu.leave(pa, h.now).unwrap();
    assert_eq!(h.sfu.state(), CoreState::default(), "the core is empty");
}

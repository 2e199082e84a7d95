//! ICE restarts and moved clients, on virtual time: a client that restarts ICE (new
//! credentials, maybe from a new address) stays the same peer with every subscription and
//! track, what it receives keeps continuous sequence numbers, the others see nothing, and the
//! old credentials stop routing once the restart completes. A silent peer is reported once per
//! silence so that its client restarts ICE before the ICE timeout removes it.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{binding_request, Harness, Link};
use sori_sfu::{PeerId, SfuConfig, SfuEvent};
use str0m::media::MediaData;

const FRAME: usize = 1200;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, last)), 6000)
}

/// A publisher (0) streaming to a subscriber (1) for two seconds.
fn call() -> Harness {
    let mut h = Harness::new(SfuConfig::default(), 7);
    let delay = Duration::from_millis(20);
    h.join("r", Link::new(0.0, delay), Link::new(0.0, delay));
    h.join("r", Link::new(0.0, delay), Link::new(0.0, delay));
    let t = h.now + Duration::from_secs(2);
    h.stream_until(0, FRAME, t);
    assert!(
        h.video_frames(1).len() > 40,
        "video flows before the restart"
    );
    h
}

/// The video frames member `i` received.
fn video(h: &Harness, i: usize) -> Vec<&MediaData> {
    h.members[i]
        .client
        .received
        .iter()
        .filter(|d| d.params.spec().codec.is_video())
        .collect()
}

/// Every received frame starts at the sequence number after the previous one ended: the
/// core's rewriter left no gap and no jump.
fn assert_continuous(frames: &[&MediaData]) {
    for w in frames.windows(2) {
        let (end, start) = (*w[0].seq_range.end(), *w[1].seq_range.start());
        assert_eq!(
            *end + 1,
            *start,
            "sequence numbers jump from {end} to {start}"
        );
    }
}

/// The core's offers to `peer` among its events from index `from` on.
fn offers_to(h: &Harness, from: usize, peer: PeerId) -> usize {
    h.events[from..]
        .iter()
        .filter(|(_, e)| matches!(e, SfuEvent::Offer { peer: p, .. } if *p == peer))
        .count()
}

fn removals(h: &Harness) -> usize {
    h.events
        .iter()
        .filter(|(_, e)| matches!(e, SfuEvent::PeerRemoved { .. }))
        .count()
}

#[test]
fn a_restart_keeps_the_subscriber_its_video_and_continuous_sequence_numbers() {
    let mut h = call();
    let (publisher, subscriber) = (h.members[0].peer, h.members[1].peer);
    let before = h.events.len();
    let received_before = video(&h, 1).len();
    let state_before = h.sfu.state();

    let (old, new) = h.ice_restart(1, None);
    assert_ne!(old, new, "the core answers with new credentials");
    // Until the restart completes, both route to the same peer.
    assert_eq!(
        h.sfu.binding_request_peer(&binding_request(&new)),
        Some(subscriber)
    );
    assert_eq!(
        h.sfu.binding_request_peer(&binding_request(&old)),
        Some(subscriber)
    );

    let t = h.now + Duration::from_secs(3);
    h.stream_until(0, FRAME, t);
    h.run_for(Duration::from_millis(500));

    let frames = video(&h, 1);
    assert!(
        frames.len() >= received_before + 85,
        "video went on: {} frames after the restart",
        frames.len() - received_before
    );
    assert_continuous(&frames);
    let numbers = h.video_frames(1);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order");
    let sent = h.members[0].frames_sent;
    let missing = (numbers[0]..sent).count() - numbers.len();
    assert!(missing <= 3, "{missing} frames missing across the restart");

    assert_eq!(h.sfu.binding_request_peer(&binding_request(&old)), None);
    assert_eq!(
        h.sfu.binding_request_peer(&binding_request(&new)),
        Some(subscriber)
    );
    assert_eq!(removals(&h), 0, "no one left");
    assert_eq!(
        offers_to(&h, before, publisher),
        0,
        "the publisher renegotiated nothing"
    );
    assert_eq!(h.sfu.counters().ice_restarts, 1);
    let state = h.sfu.state();
    assert_eq!(state.ufrag_routes, 2, "one ufrag per peer again");
    assert_eq!(
        state.subscriptions, state_before.subscriptions,
        "every subscription kept"
    );
    assert_eq!(state.tracks, state_before.tracks, "every track kept");
}

#[test]
fn a_publisher_that_moved_restarts_ice_from_its_new_address_and_its_video_goes_on() {
    let mut h = call();
    let subscriber = h.members[1].peer;
    let before = h.events.len();
    let received_before = video(&h, 1).len();

    h.ice_restart(0, Some(addr(50)));
    let t = h.now + Duration::from_secs(3);
    h.stream_until(0, FRAME, t);
    h.run_for(Duration::from_millis(500));

    let frames = video(&h, 1);
    assert!(
        frames.len() >= received_before + 85,
        "the moved publisher's video reached the subscriber: {} frames",
        frames.len() - received_before
    );
    assert_continuous(&frames);
    assert_eq!(removals(&h), 0, "no one left");
    assert_eq!(
        offers_to(&h, before, subscriber),
        0,
        "the subscriber renegotiated nothing"
    );
}

/// The core's [`SfuEvent::IceStalled`] reports of `peer`, by instant.
fn stalls(h: &Harness, peer: PeerId) -> Vec<std::time::Instant> {
    h.events
        .iter()
        .filter_map(|(t, e)| match e {
            SfuEvent::IceStalled { peer: p } if *p == peer => Some(*t),
            _ => None,
        })
        .collect()
}

/// A NAT that gives the subscriber a new public address: its checks and media now arrive from
/// there with the same credentials. The core's ICE agent (ICE-lite, controlled) keeps sending
/// mostly to the nominated old address (both pairs are nominated and the old one still counts
/// as valid), and hears the client all the while, so the core reports nothing either (a path
/// that looks asymmetric is often fine: a browser moving its sending to a better pair). The
/// client sees its media stop and restarts ICE (the web client does after 1.2 s); the restart
/// brings the video to the new address for good.
#[test]
fn after_a_nat_rebinding_the_clients_ice_restart_brings_the_video_back() {
    let mut h = call();
    let subscriber = h.members[1].peer;
    h.members[1].mapped = Some(addr(60));
    let received_before = video(&h, 1).len();
    let t = h.now + Duration::from_secs(2);
    h.stream_until(0, FRAME, t);
    // The core's ICE agent moves its sending to the new address only now and then.
    let moved = video(&h, 1).len() - received_before;
    assert!(moved < 30, "{moved} of 60 frames reached the new address");
    assert!(
        stalls(&h, subscriber).is_empty(),
        "the core heard the client throughout"
    );

    let sent_before = h.members[0].frames_sent;
    let received_before = video(&h, 1).len();
    h.ice_restart(1, None);
    let t = h.now + Duration::from_secs(3);
    h.stream_until(0, FRAME, t);
    let frames = h.video_frames(1);
    let after: Vec<u64> = frames[received_before..].to_vec();
    assert!(
        after.iter().any(|n| *n >= sent_before),
        "video reached the new address after the restart: {} frames",
        after.len()
    );
    assert!(
        after.len() >= 80,
        "and keeps coming: {} frames in 3 s",
        after.len()
    );
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "in order");
    // What went to the old address is lost; a second after the restart, nothing is.
    let settled: Vec<&MediaData> = video(&h, 1)
        .into_iter()
        .filter(|d| common::harness_frame_number(&d.data) >= sent_before + 30)
        .collect();
    assert!(
        settled.len() >= 55,
        "{} frames in the last 2 s",
        settled.len()
    );
    assert_continuous(&settled);
    assert_eq!(removals(&h), 0, "no one left");
    assert_eq!(h.sfu.counters().ice_restarts, 1);
}

#[test]
fn a_silent_peer_is_reported_stalled_once_per_silence_before_it_times_out() {
    let mut h = call();
    let subscriber = h.members[1].peer;
    let stalls = |h: &Harness| stalls(h, subscriber);
    // Nothing from the subscriber for 6 s, then it is heard again.
    let silent_from = h.now;
    h.members[1].up.loss = 1.0;
    let last_heard = h.members[1].last_heard.unwrap();
    h.stream_until(0, FRAME, silent_from + Duration::from_secs(6));
    let first = stalls(&h);
    assert_eq!(first.len(), 1, "reported once: {first:?}");
    let at = first[0] - last_heard;
    assert!(
        at >= Duration::from_secs(4) && at < Duration::from_millis(4300),
        "reported {at:?} after it was last heard"
    );
    h.members[1].up.loss = 0.0;
    h.stream_until(0, FRAME, h.now + Duration::from_secs(3));
    assert_eq!(stalls(&h).len(), 1, "heard again: nothing more");
    // Silent again, this time for good: reported again, then removed at the ICE timeout.
    h.members[1].up.loss = 1.0;
    h.stream_until(0, FRAME, h.now + Duration::from_secs(16));
    assert_eq!(stalls(&h).len(), 2, "the second silence is reported too");
    let (_, removed) = h
        .removal_of(subscriber)
        .expect("removed at the ICE timeout");
    assert!(matches!(
        removed,
        SfuEvent::PeerRemoved {
            reason: sori_sfu::RemoveReason::IceTimeout,
            ..
        }
    ));
}

/// The publisher's path is cut for 6 s (both ways) and restored: the receivers' keyframe
/// requests went into the silence, so the core asks the publisher for a keyframe as soon as
/// it hears from it again, and the subscriber's video resumes on it.
#[test]
fn a_publisher_heard_again_after_a_stall_is_asked_for_a_keyframe_at_once() {
    let mut h = call();
    let publisher = h.members[0].peer;
    h.members[0].up.loss = 1.0;
    h.members[0].down.loss = 1.0;
    h.stream_until(0, FRAME, h.now + Duration::from_secs(6));
    assert_eq!(stalls(&h, publisher).len(), 1, "the publisher stalled");
    let requests_before = h.members[0].client.keyframe_requests.len();
    h.members[0].up.loss = 0.0;
    h.members[0].down.loss = 0.0;
    let restored = h.now;
    h.stream_until(0, FRAME, h.now + Duration::from_secs(2));
    let asked = h.members[0].client.keyframe_requests[requests_before..].to_vec();
    assert!(!asked.is_empty(), "a keyframe request after the restore");
    let first = asked[0] - restored;
    // A frame's time (33 ms) for the first datagram to arrive, and the link's 10 ms each way.
    assert!(
        first <= Duration::from_millis(100),
        "asked {first:?} after the restore"
    );
    let frames = h.video_frames(1);
    let keyframes = &h.members[0].keyframes_sent;
    assert!(
        frames.iter().any(|n| keyframes.contains(n) && *n > 0),
        "the subscriber got a keyframe sent after the restore"
    );
}

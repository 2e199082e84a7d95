//! A subscriber's keyframe requests reach the publisher at most once per interval: the first at
//! once, one made inside the interval exactly when the interval ends. Virtual time.

mod common;

use std::time::Duration;

use common::{Harness, Link};
use sori_sfu::SfuConfig;

const FRAME: usize = 1000;

/// The m-line on which member `to` receives video.
fn video_mid(h: &Harness, to: usize) -> String {
    let received = &h.members[to].client.received;
    let frame = received
        .iter()
        .find(|d| d.params.spec().codec.is_video())
        .expect("video arrived");
    frame.mid.to_string()
}

#[test]
fn a_second_request_inside_the_interval_goes_out_exactly_when_the_interval_ends() {
    let config = SfuConfig::default();
    let interval = config.keyframe_request_interval;
    let mut h = Harness::new(config, 1);
    let ms = Duration::from_millis;
    let (up, down) = (Link::new(0.0, ms(10)), Link::new(0.0, ms(15)));
    let publisher = h.join("pli", up, down);
    let subscriber = h.join("pli", up, down);
    let t = h.now + Duration::from_secs(3);
    h.stream_until(publisher, FRAME, t);
    assert!(h.video_frames(subscriber).len() >= 10, "video flows");
    let before = h.members[publisher].client.keyframe_requests.len();
    let sent_before = h.sfu.counters().keyframe_requests_sent;

    // Two requests 200 ms apart; the publisher answers the first with a keyframe.
    let mid = video_mid(&h, subscriber);
    let t0 = h.now;
    h.client_requests_keyframe(subscriber, &mid);
    let t = h.now + ms(200);
    h.stream_until(publisher, FRAME, t);
    h.client_requests_keyframe(subscriber, &mid);
    let t = h.now + Duration::from_secs(2);
    h.stream_until(publisher, FRAME, t);

    let requests = &h.members[publisher].client.keyframe_requests[before..];
    // Up to the core 10 ms, down to the publisher 15 ms.
    let first = t0 + ms(25);
    assert_eq!(requests, [first, first + interval], "two in, two out");
    assert_eq!(h.sfu.counters().keyframe_requests_sent, sent_before + 2);
}

#[test]
fn requests_from_two_subscribers_inside_one_interval_reach_the_publisher_once_more() {
    let config = SfuConfig::default();
    let interval = config.keyframe_request_interval;
    let mut h = Harness::new(config, 2);
    let publisher = h.join("pli2", Link::default(), Link::default());
    let a = h.join("pli2", Link::default(), Link::default());
    let b = h.join("pli2", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(3);
    h.stream_until(publisher, FRAME, t);
    let before = h.members[publisher].client.keyframe_requests.len();

    let t0 = h.now;
    let (mid_a, mid_b) = (video_mid(&h, a), video_mid(&h, b));
    h.client_requests_keyframe(a, &mid_a);
    h.client_requests_keyframe(b, &mid_b);
    let t = h.now + Duration::from_millis(100);
    h.stream_until(publisher, FRAME, t);
    h.client_requests_keyframe(a, &mid_a);
    let t = h.now + Duration::from_secs(2);
    h.stream_until(publisher, FRAME, t);

    // 10 ms up, 10 ms down; the two later requests coalesce into one at the interval's end.
    let first = t0 + Duration::from_millis(20);
    let requests = &h.members[publisher].client.keyframe_requests[before..];
    assert_eq!(requests, [first, first + interval]);
}

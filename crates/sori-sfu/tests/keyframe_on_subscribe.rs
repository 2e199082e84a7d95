//! A new subscriber's first video frame is a keyframe the core asked the publisher for the
//! moment the subscriber connected; so is a second subscriber's soon after, once the first
//! request was answered. Virtual time.

mod common;

use std::time::Duration;

use common::{Harness, Link};
use sori_sfu::SfuConfig;

const FRAME: usize = 1000;

#[test]
fn a_late_subscriber_starts_on_a_keyframe_requested_when_it_connects() {
    let mut h = Harness::new(SfuConfig::default(), 3);
    let down = Link::new(0.0, Duration::from_millis(15));
    let publisher = h.join("late", Link::default(), down);
    let t = h.now + Duration::from_secs(2);
    h.stream_until(publisher, FRAME, t);
    assert!(h.members[publisher].frames_sent >= 60);
    assert!(h.members[publisher].client.keyframe_requests.is_empty());

    let late = h.join("late", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(2);
    h.stream_until(publisher, FRAME, t);

    // The core asks the moment it sees the subscriber connected; the publisher hears it 15 ms
    // later.
    let connected = h.core_connected_at(h.members[late].peer).unwrap();
    let p = &h.members[publisher];
    assert_eq!(
        p.client.keyframe_requests[0],
        connected + Duration::from_millis(15)
    );
    let frames = h.video_frames(late);
    assert_eq!(
        frames[0], p.keyframes_sent[1],
        "the first frame shown is the requested keyframe, not the publisher's first"
    );
    let expected: Vec<u64> = (frames[0]..p.frames_sent).collect();
    assert_eq!(frames, expected, "every frame after it, in order");
}

#[test]
fn a_second_subscriber_soon_after_the_first_asks_at_once_once_that_was_answered() {
    let config = SfuConfig {
        keyframe_request_on_start_interval: Duration::from_millis(500),
        ..SfuConfig::default()
    };
    let gap = config.keyframe_request_on_start_interval;
    assert!(gap < config.keyframe_request_interval);
    let mut h = Harness::new(config, 4);
    let publisher = h.join("storm", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_until(publisher, FRAME, t);

    let first = h.join("storm", Link::default(), Link::default());
    h.run_until_true(Duration::from_secs(5), |h| {
        !h.members[publisher].client.keyframe_requests.is_empty()
    });
    let t1 = h.members[publisher].client.keyframe_requests[0];
    // The second joins once the first shows a picture: that keyframe does not answer it.
    for _ in 0..100 {
        if !h.video_frames(first).is_empty() {
            break;
        }
        let t = h.now + Duration::from_millis(34);
        h.stream_until(publisher, FRAME, t);
    }
    let second = h.join("storm", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(2);
    h.stream_until(publisher, FRAME, t);

    // The first request left the core 10 ms before it reached the publisher.
    let connected = h.core_connected_at(h.members[second].peer).unwrap();
    assert!(
        connected + Duration::from_millis(10) < t1 + gap,
        "the second connected inside the start interval of the first request"
    );
    let p = &h.members[publisher].client;
    assert_eq!(p.keyframe_requests.len(), 2);
    assert_eq!(
        p.keyframe_requests[1],
        connected + Duration::from_millis(10),
        "asked the moment it connected: the first request was answered"
    );
    for s in [first, second] {
        let frames = h.video_frames(s);
        assert!(h.members[publisher].keyframes_sent.contains(&frames[0]));
    }
}

//! A new subscriber's first video frame is a keyframe, obtained by asking the publisher for one.

mod common;

use std::time::Duration;

use common::{start_server, Client, ClientOptions, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_starts_on_a_requested_keyframe() {
    let server = start_server(Duration::from_secs(15)).await;
    // Only the very first frame is an unrequested keyframe.
    let publisher = Client::join(
        &server,
        ClientOptions {
            keyframe_interval: Duration::from_secs(600),
            ..ClientOptions::new(0, "late")
        },
    )
    .await;
    publisher
        .wait_for("60 video frames sent", Duration::from_secs(20), |s| {
            s.sent_video >= 60
        })
        .await;
    assert!(publisher.state().keyframe_requests.is_empty());

    let late = Client::join(
        &server,
        ClientOptions {
            publish: false,
            ..ClientOptions::new(1, "late")
        },
    )
    .await;
    let s = late
        .wait_for("video from the publisher", Duration::from_secs(20), |s| {
            s.frames(0, Kind::Video).len() >= 10
        })
        .await;
    let frames = s.frames(0, Kind::Video);
    assert!(frames[0].keyframe, "first forwarded frame is a keyframe");
    assert!(
        frames[0].seq >= 60,
        "the keyframe is a fresh one, not the publisher's first frame"
    );
    assert!(frames.iter().all(|f| f.intact));
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, frames[0].seq + i as u32);
    }
    let p = publisher.state();
    assert!(
        !p.keyframe_requests.is_empty(),
        "the server asked the publisher for a keyframe"
    );
    assert!(p.sent_keyframes.contains(&frames[0].seq));
}

/// Two subscribers starting in quick succession: the second's keyframe request goes upstream
/// after the short start gap (200 ms by default), not after the one-second repair interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscriber_soon_after_the_first_waits_the_start_gap_not_a_second() {
    let server = start_server(Duration::from_secs(15)).await;
    let publisher = Client::join(
        &server,
        ClientOptions {
            keyframe_interval: Duration::from_secs(600),
            ..ClientOptions::new(0, "storm")
        },
    )
    .await;
    publisher
        .wait_for("30 video frames sent", Duration::from_secs(20), |s| {
            s.sent_video >= 30
        })
        .await;
    let first = Client::join(
        &server,
        ClientOptions {
            publish: false,
            ..ClientOptions::new(1, "storm")
        },
    )
    .await;
    let p = publisher
        .wait_for(
            "the first subscriber's request",
            Duration::from_secs(10),
            |s| !s.keyframe_requests.is_empty(),
        )
        .await;
    let t1 = p.keyframe_requests[0];
    // The first subscriber's keyframe has arrived: the second one's request is not answered
    // by it.
    first
        .wait_for(
            "the first subscriber's keyframe",
            Duration::from_secs(10),
            |s| !s.frames(0, Kind::Video).is_empty(),
        )
        .await;
    let second = Client::join(
        &server,
        ClientOptions {
            publish: false,
            ..ClientOptions::new(2, "storm")
        },
    )
    .await;
    for (name, c) in [("first", &first), ("second", &second)] {
        let s = c
            .wait_for(name, Duration::from_secs(10), |s| {
                !s.frames(0, Kind::Video).is_empty()
            })
            .await;
        assert!(s.frames(0, Kind::Video)[0].keyframe);
    }
    let p = publisher.state();
    assert!(
        p.keyframe_requests.len() >= 2,
        "the second subscriber started on a keyframe of its own request"
    );
    let gap = p.keyframe_requests[1] - t1;
    assert!(
        gap >= Duration::from_millis(150) && gap < Duration::from_millis(900),
        "second request {gap:?} after the first: expected the 200 ms start gap"
    );
    println!("second subscriber's keyframe request {gap:?} after the first");
}

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

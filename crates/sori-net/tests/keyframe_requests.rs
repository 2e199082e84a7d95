//! Subscribers' keyframe requests reach the publisher, at most one per second.

mod common;

use std::time::{Duration, Instant};

use common::{start_server, Client, ClientOptions, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_reaches_the_publisher_within_a_second_and_a_second_pli_waits_its_turn() {
    let server = start_server(Duration::from_secs(15)).await;
    let publisher = Client::join(
        &server,
        ClientOptions {
            keyframe_interval: Duration::from_secs(600),
            ..ClientOptions::new(0, "pli")
        },
    )
    .await;
    let subscriber = Client::join(
        &server,
        ClientOptions {
            publish: false,
            ..ClientOptions::new(1, "pli")
        },
    )
    .await;
    subscriber
        .wait_for("video from the publisher", Duration::from_secs(20), |s| {
            s.frames(0, Kind::Video).len() >= 10
        })
        .await;
    // Let the throttle window of the subscription's own keyframe request pass.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = publisher.state().keyframe_requests.len();

    let t0 = Instant::now();
    subscriber.request_keyframe(publisher.peer);
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscriber.request_keyframe(publisher.peer);

    let s = publisher
        .wait_for("the first PLI", Duration::from_secs(2), |s| {
            s.keyframe_requests.len() > before
        })
        .await;
    let t1 = s.keyframe_requests[before];
    assert!(
        t1 - t0 < Duration::from_secs(1),
        "first PLI took {:?}",
        t1 - t0
    );

    let s = publisher
        .wait_for("the coalesced second PLI", Duration::from_secs(3), |s| {
            s.keyframe_requests.len() > before + 1
        })
        .await;
    let t2 = s.keyframe_requests[before + 1];
    assert!(
        t2 - t1 >= Duration::from_millis(900),
        "second PLI came {:?} after the first; the throttle allows one per second",
        t2 - t1
    );
    assert_eq!(
        s.keyframe_requests.len(),
        before + 2,
        "two requests in, exactly two out"
    );
    println!(
        "first PLI after {:?}; the held second one {:?} after the first",
        t1 - t0,
        t2 - t1
    );
}

//! With 5% random loss between a publisher and the SFU, NACK/RTX keeps at least 99% of video
//! frames complete at the subscriber.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{start_server, Client, ClientOptions, Kind};

/// Share of the window's video frames the subscriber decoded complete.
async fn complete_share(publisher_loss: f64, subscriber_loss: f64, room: &str) -> f64 {
    let server = start_server(Duration::from_secs(15)).await;
    let publisher = Client::join(
        &server,
        ClientOptions {
            loss: publisher_loss,
            ..ClientOptions::new(0, room)
        },
    )
    .await;
    let subscriber = Client::join(
        &server,
        ClientOptions {
            publish: false,
            loss: subscriber_loss,
            ..ClientOptions::new(1, room)
        },
    )
    .await;
    let s = subscriber
        .wait_for("first video", Duration::from_secs(20), |s| {
            !s.frames(0, Kind::Video).is_empty()
        })
        .await;
    let first = s.frames(0, Kind::Video)[0].seq;
    // Wait until frames well past the window arrive, so late retransmissions had their chance.
    let s = subscriber
        .wait_for("frames past the window", Duration::from_secs(40), |s| {
            s.frames(0, Kind::Video)
                .iter()
                .any(|f| f.seq >= first + WINDOW + 30)
        })
        .await;
    let complete: BTreeSet<u32> = s
        .frames(0, Kind::Video)
        .iter()
        .filter(|f| f.intact && f.seq >= first && f.seq < first + WINDOW)
        .map(|f| f.seq)
        .collect();
    let missing: Vec<u32> = (first..first + WINDOW)
        .filter(|q| !complete.contains(q))
        .collect();
    println!("{room}: frames missing: {missing:?}");
    let dropped = publisher.state().dropped + subscriber.state().dropped;
    let sent = s.frames(0, Kind::Video).len() as u32;
    println!("{dropped} datagrams dropped on the lossy leg while {sent} video frames arrived");
    assert!(dropped > sent / 10, "the lossy leg really lost packets");
    complete.len() as f64 / WINDOW as f64
}

const WINDOW: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_upstream_still_delivers_99_percent_of_frames() {
    let share = complete_share(0.05, 0.0, "loss-up").await;
    println!(
        "complete video frames at 5% loss publisher-SFU: {:.1}%",
        share * 100.0
    );
    assert!(
        share >= 0.99,
        "only {:.1}% of frames complete",
        share * 100.0
    );
}

/// Downstream loss is repaired from the subscriber's own retransmission cache in the core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_downstream_still_delivers_99_percent_of_frames() {
    let share = complete_share(0.0, 0.05, "loss-down").await;
    println!(
        "complete video frames at 5% loss SFU-subscriber: {:.1}%",
        share * 100.0
    );
    assert!(
        share >= 0.99,
        "only {:.1}% of frames complete",
        share * 100.0
    );
}

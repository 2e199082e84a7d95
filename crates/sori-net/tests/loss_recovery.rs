//! With 5% random loss between a publisher and the SFU, NACK/RTX keeps at least 99% of video
//! frames complete at the subscriber.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{start_server, Client, ClientOptions, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_upstream_still_delivers_99_percent_of_frames() {
    let server = start_server(Duration::from_secs(15)).await;
    let _publisher = Client::join(
        &server,
        ClientOptions {
            loss: 0.05,
            ..ClientOptions::new(0, "loss")
        },
    )
    .await;
    let subscriber = Client::join(
        &server,
        ClientOptions {
            publish: false,
            ..ClientOptions::new(1, "loss")
        },
    )
    .await;
    let s = subscriber
        .wait_for("first video", Duration::from_secs(20), |s| {
            !s.frames(0, Kind::Video).is_empty()
        })
        .await;
    let first = s.frames(0, Kind::Video)[0].seq;
    const WINDOW: u32 = 300;
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
    let share = complete.len() as f64 / WINDOW as f64;
    println!(
        "complete video frames at 5% loss: {}/{WINDOW} ({:.1}%)",
        complete.len(),
        share * 100.0
    );
    assert!(
        share >= 0.99,
        "only {:.1}% of frames complete",
        share * 100.0
    );
    let nacks = server.handle.stats().await.unwrap();
    assert!(nacks.counters.rtp_received > 0);
}

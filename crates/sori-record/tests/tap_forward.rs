//! The bridge from a tap to a recording: every packet reaches the file, and it stops when the
//! recording is over.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sori_record::mkv::Container;
use sori_record::{forward, Recording, RecordingConfig};
use support::*;
use tokio::sync::mpsc::unbounded_channel;

#[tokio::test]
async fn a_tap_feeds_a_recording_until_it_finishes() {
    let path = std::env::temp_dir().join(format!("sori-tap-forward-{}.webm", std::process::id()));
    let recording = Recording::start(RecordingConfig {
        path: path.clone(),
        container: Container::WebM,
        audio: true,
        video: false,
    })
    .unwrap();
    let feed = recording.sender();
    let (tap, rx) = unbounded_channel();
    let arrived = Arc::new(AtomicU64::new(0));
    let counted = arrived.clone();
    let bridge = tokio::spawn(forward(rx, recording.sender(), move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    }));
    let t0 = Instant::now();
    for n in 0..50 {
        tap.send(opus(t0, n)).unwrap();
    }
    drop(tap);
    bridge.await.unwrap();
    assert_eq!(arrived.load(Ordering::Relaxed), 50);
    let summary = tokio::task::spawn_blocking(move || recording.stop())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((summary.audio_frames, summary.dropped_packets), (50, 0));
    let mkv = Mkv::parse(&std::fs::read(&path).unwrap());
    assert_eq!(mkv.numbers(1), (0..50).collect::<Vec<u8>>());
    std::fs::remove_file(&path).unwrap();

    // The recording is over: a bridge still holding its feed ends at the next packet.
    let (tap, rx) = unbounded_channel();
    tap.send(opus(t0, 50)).unwrap();
    forward(rx, feed, |_| {}).await;
    assert!(tap.is_closed(), "the bridge let go of the tap");
}

//! Video starts on a keyframe, and after a loss nothing is written until the next one.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn frames_after_a_loss_wait_for_the_next_keyframe() {
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(false, true));
    // Frame 5 is lost on the way; 8 is the next keyframe.
    let frames = (0..=10).filter(|n| *n != 5);
    feed(&mut rec, frames.map(|n| vp8(t0, n, n == 0 || n == 8)));
    let (summary, mkv) = finish(rec, t0 + Duration::from_secs(1));
    let video = mkv.track("V_VP8");
    let written = [0, 1, 2, 3, 4, 8, 9, 10];
    assert_eq!(mkv.numbers(video), written.map(|n| n as u8));
    assert_eq!(mkv.times(video), written.map(video_ms));
    let keys: Vec<bool> = mkv.blocks.iter().map(|b| b.key).collect();
    assert_eq!(keys, [true, false, false, false, false, true, false, false]);
    assert_eq!(summary.video_frames, 8);
}

#[test]
fn video_starts_at_its_first_keyframe() {
    let t0 = Instant::now();
    let (mut rec, out) = recorder(profile(false, true));
    feed(&mut rec, (0..4).map(|n| vp8(t0, n, false)));
    assert!(out.bytes().is_empty(), "nothing to write before a keyframe");
    feed(&mut rec, (4..8).map(|n| vp8(t0, n, n == 4)));
    let (_, mkv) = finish(rec, t0 + Duration::from_secs(1));
    let video = mkv.track("V_VP8");
    assert_eq!(mkv.numbers(video), [4, 5, 6, 7]);
    assert_eq!(mkv.times(video), [0, 1, 2, 3].map(video_ms));
}

#[test]
fn a_duplicate_packet_is_written_once() {
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(false, true));
    feed(&mut rec, [0, 1, 1, 2].map(|n| vp8(t0, n, n == 0)));
    let (_, mkv) = finish(rec, t0 + Duration::from_secs(1));
    assert_eq!(mkv.numbers(mkv.track("V_VP8")), [0, 1, 2]);
}

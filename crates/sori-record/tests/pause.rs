//! Paused time is left out of the file: it goes on where it stopped, video at a keyframe.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::*;

#[test]
fn the_paused_span_leaves_no_gap() {
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(true, false));
    feed(&mut rec, (0..50).map(|n| opus(t0, n)));
    rec.pause(t0 + Duration::from_secs(1));
    feed(&mut rec, (50..150).map(|n| opus(t0, n)));
    rec.resume(t0 + Duration::from_secs(3));
    feed(&mut rec, (150..200).map(|n| opus(t0, n)));
    let (summary, mkv) = finish(rec, t0 + Duration::from_secs(4));
    let audio = mkv.track("A_OPUS");
    let kept: Vec<u8> = (0..50).chain(150..200).collect();
    assert_eq!(mkv.numbers(audio), kept);
    assert_eq!(
        mkv.times(audio),
        (0..100).map(|n| n * AUDIO_MS).collect::<Vec<_>>()
    );
    assert_eq!((summary.audio_frames, summary.duration_ms), (100, 1980));
}

#[test]
fn video_resumes_at_its_next_keyframe() {
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(false, true));
    feed(&mut rec, (0..30).map(|n| vp8(t0, n, n == 0)));
    rec.pause(t0 + Duration::from_secs(1));
    feed(&mut rec, (30..60).map(|n| vp8(t0, n, false)));
    rec.resume(t0 + Duration::from_secs(2));
    // Delta frames right after the resume would decode against a picture that is not in the
    // file: the recorder waits for frame 66, a keyframe.
    feed(&mut rec, (60..70).map(|n| vp8(t0, n, n == 66)));
    let (_, mkv) = finish(rec, t0 + Duration::from_secs(3));
    let video = mkv.track("V_VP8");
    let written: Vec<u64> = (0..30).chain(66..70).collect();
    let numbers: Vec<u8> = written.iter().map(|n| *n as u8).collect();
    assert_eq!(mkv.numbers(video), numbers);
    let times: Vec<u64> = (0..30)
        .map(video_ms)
        .chain((66..70).map(|n| video_ms(n) - 1000))
        .collect();
    assert_eq!(mkv.times(video), times);
}

#[test]
fn the_start_is_the_wall_time_of_the_first_frame() {
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(true, false));
    feed(&mut rec, (0..10).map(|n| opus(t0, n)));
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (summary, _) = rec.finish(t0 + Duration::from_secs(5), wall).unwrap();
    assert_eq!(summary.start, Some(wall - Duration::from_secs(5)));
}

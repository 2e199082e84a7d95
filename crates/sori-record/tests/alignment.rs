//! Audio and video with known timestamps come out of the file with aligned times.

mod support;

use std::time::{Duration, Instant, SystemTime};

use sori_sfu::TapPacket;
use support::*;

/// 2 s of audio from `t0` and 2 s of video from `t0 + video_late`, in arrival order.
fn call(t0: Instant, video_late: Duration, reports: bool) -> Vec<TapPacket> {
    // The sender's clock: RTP time 0 of both tracks was captured at this wall time.
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let audio = (0..100).map(|n| opus(t0, n));
    let video = (0..60).map(|n| vp8(t0 + video_late, n, n == 0));
    let mut packets: Vec<TapPacket> = audio.chain(video).collect();
    for p in &mut packets {
        p.sender_report = reports.then_some((wall, 0));
    }
    packets.sort_by_key(|p| p.arrival);
    packets
}

#[test]
fn audio_and_video_captured_together_start_together() {
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(true, true));
    feed(&mut rec, call(t0, Duration::ZERO, false));
    let (summary, mkv) = finish(rec, t0 + Duration::from_secs(2));
    assert_eq!(mkv.doc_type, "webm");
    let (audio, video) = (mkv.track("A_OPUS"), mkv.track("V_VP8"));
    assert_eq!(
        mkv.times(audio),
        (0..100).map(|n| n * AUDIO_MS).collect::<Vec<_>>()
    );
    assert_eq!(mkv.times(video), (0..60).map(video_ms).collect::<Vec<_>>());
    assert_eq!((summary.audio_frames, summary.video_frames), (100, 60));
    assert_eq!(summary.duration_ms, 1980);
    assert_eq!(mkv.duration_ms, Some(1980.0));
}

#[test]
fn sender_reports_line_up_video_that_arrived_late() {
    // The video's packets take 80 ms longer on the way, but the sender reports say that its
    // frame 0 was captured with audio packet 0: both are placed at 0.
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(true, true));
    feed(&mut rec, call(t0, Duration::from_millis(80), true));
    let (_, mkv) = finish(rec, t0 + Duration::from_secs(3));
    let (audio, video) = (mkv.track("A_OPUS"), mkv.track("V_VP8"));
    assert_eq!(
        mkv.times(audio),
        (0..100).map(|n| n * AUDIO_MS).collect::<Vec<_>>()
    );
    assert_eq!(mkv.times(video), (0..60).map(video_ms).collect::<Vec<_>>());
}

#[test]
fn without_sender_reports_the_file_starts_at_the_first_keyframe_s_arrival() {
    // No sender reports: arrival times are all there is. Audio from before the first keyframe
    // is left out, so that both tracks start together.
    let t0 = Instant::now();
    let (mut rec, _) = recorder(profile(true, true));
    feed(&mut rec, call(t0, Duration::from_millis(80), false));
    let (_, mkv) = finish(rec, t0 + Duration::from_secs(3));
    let (audio, video) = (mkv.track("A_OPUS"), mkv.track("V_VP8"));
    assert_eq!(mkv.numbers(audio), (4..100).collect::<Vec<u8>>());
    assert_eq!(
        mkv.times(audio),
        (4..100).map(|n| n * AUDIO_MS - 80).collect::<Vec<_>>()
    );
    assert_eq!(mkv.times(video), (0..60).map(video_ms).collect::<Vec<_>>());
}

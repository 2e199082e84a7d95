//! Nothing is written until every expected kind has a frame, or the wait for them is over.

mod support;

use std::time::{Duration, Instant};

use sori_record::TRACK_WAIT;
use support::*;

#[test]
fn writing_starts_once_every_expected_kind_is_there() {
    let t0 = Instant::now();
    let (mut rec, out) = recorder(profile(true, true));
    feed(&mut rec, (0..25).map(|n| opus(t0, n)));
    assert!(out.bytes().is_empty(), "waiting for video");
    assert_eq!(rec.poll_timeout(), Some(t0 + TRACK_WAIT));
    // The video's first keyframe at 500 ms: the header goes out at once.
    let late = t0 + Duration::from_millis(500);
    feed(&mut rec, [vp8(late, 0, true)]);
    let header = Mkv::parse(&out.bytes());
    let codecs: Vec<&str> = header.tracks.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(codecs, ["A_OPUS", "V_VP8"]);
    assert_eq!(rec.poll_timeout(), None, "nothing left to wait for");
}

#[test]
fn a_kind_that_never_comes_is_left_out_after_the_wait() {
    let t0 = Instant::now();
    let (mut rec, out) = recorder(profile(true, true));
    feed(&mut rec, (0..50).map(|n| opus(t0, n)));
    rec.handle_timeout(t0 + TRACK_WAIT - Duration::from_millis(1))
        .unwrap();
    assert!(out.bytes().is_empty(), "still waiting for video");
    rec.handle_timeout(t0 + TRACK_WAIT).unwrap();
    let header = Mkv::parse(&out.bytes());
    assert_eq!(header.tracks, [(1, "A_OPUS".to_string())]);
    // Audio goes on; video that turns up now has no track to go to.
    let late = t0 + TRACK_WAIT + Duration::from_millis(100);
    feed(&mut rec, (50..150).map(|n| opus(t0, n)));
    feed(&mut rec, (0..10).map(|n| vp8(late, n, n == 0)));
    let (summary, mkv) = finish(rec, t0 + Duration::from_secs(3));
    assert_eq!(mkv.tracks, [(1, "A_OPUS".to_string())]);
    assert_eq!(
        mkv.times(1),
        (0..150).map(|n| n * AUDIO_MS).collect::<Vec<_>>()
    );
    assert_eq!(mkv.blocks.len(), 150);
    assert_eq!((summary.audio_frames, summary.video_frames), (150, 0));
}

#[test]
fn a_recording_that_got_nothing_is_a_valid_empty_file() {
    let t0 = Instant::now();
    let (rec, _) = recorder(profile(true, true));
    assert_eq!(rec.poll_timeout(), None);
    let (summary, mkv) = finish(rec, t0);
    assert_eq!(mkv.doc_type, "webm");
    assert!(mkv.tracks.is_empty() && mkv.blocks.is_empty());
    assert_eq!(summary.duration_ms, 0);
    assert_eq!(summary.start, None);
}

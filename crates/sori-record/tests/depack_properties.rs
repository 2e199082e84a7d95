//! Properties of the RTP depacketizer, through the recorder that uses it: whatever the
//! payloads (VP8, VP9, H.264 descriptors and NAL units, Opus), the recorder never panics, writes
//! no more frames than packets that end one, and a file no larger than what it was given plus
//! its framing; well-formed keyframes are written whole, each one.
//!
//! Bounded runs; `SORI_PROPTEST_CASES=10000 cargo test -p sori-record --test depack_properties`
//! runs longer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sori_record::mkv::Container;
use sori_record::{Input, Recording, RecordingConfig, Summary};
use sori_sfu::{MediaKind, TapId, TapPacket, VideoCodec};
use sori_testkit::{mutate, prop, Rng};

/// Panics of the recorder's thread: [`Recording::stop`] reports one as an empty recording, so
/// they are counted here.
static RECORDER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_recorder_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("sori-record") {
                RECORDER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// One packet as the core taps it; the caller fills in what varies.
#[derive(Debug, Clone)]
struct Packet {
    payload: Vec<u8>,
    /// Added to the previous sequence number (0 repeats it, more than 1 loses packets).
    seq_step: u64,
    /// Whether the RTP timestamp moves on from the previous packet's.
    next_frame: bool,
    marker: bool,
    keyframe: bool,
}

fn packet(payload: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Packet> {
    (
        payload,
        0u64..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(payload, seq_step, next_frame, marker, keyframe)| Packet {
            payload,
            seq_step,
            next_frame,
            marker,
            keyframe,
        })
}

fn path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("sori-depack-{}-{n}.mkv", std::process::id()))
}

/// Records `packets` of one track; returns the summary and the file.
fn record(kind: MediaKind, codec: Option<VideoCodec>, packets: &[Packet]) -> (Summary, Vec<u8>) {
    count_recorder_panics();
    let path = path();
    let recording = Recording::start(RecordingConfig {
        path: path.clone(),
        container: Container::Matroska,
        audio: kind == MediaKind::Audio,
        video: kind == MediaKind::Video,
    })
    .expect("the temporary file opens");
    let tx = recording.sender();
    let start = Instant::now();
    let (mut seq, mut rtp_time) = (1000u64, 90_000u32);
    for (i, p) in packets.iter().enumerate() {
        seq += p.seq_step;
        if p.next_frame {
            rtp_time = rtp_time.wrapping_add(3000);
        }
        let packet = TapPacket {
            tap: TapId(1),
            kind,
            codec,
            clock_rate: if kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            },
            seq,
            rtp_time,
            marker: p.marker,
            keyframe: p.keyframe,
            arrival: start + Duration::from_millis(33 * i as u64),
            sender_report: None,
            payload: Arc::from(p.payload.as_slice()),
        };
        tx.send(Input::Packet(packet)).unwrap();
    }
    let summary = recording.stop().expect("the file is written");
    let file = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        RECORDER_PANICS.load(Ordering::SeqCst),
        0,
        "the recorder panicked"
    );
    (summary, file)
}

/// What every recording satisfies, whatever it was given.
fn check(kind: MediaKind, packets: &[Packet], summary: &Summary, file: &[u8]) {
    let ends = match kind {
        MediaKind::Audio => packets.len(),
        MediaKind::Video => packets.iter().filter(|p| p.marker).count(),
    };
    let frames = summary.audio_frames + summary.video_frames;
    assert!(
        frames as usize <= ends,
        "{frames} frames from {ends} frame ends"
    );
    let given: usize = packets.iter().map(|p| p.payload.len()).sum();
    // Headers, cues, and a block header per frame (H.264 adds a length prefix per NAL unit).
    let framing = 4096 + 64 * packets.len() + 2 * given;
    assert!(
        file.len() <= given + framing,
        "{} bytes from {given}",
        file.len()
    );
}

fn codec() -> impl Strategy<Value = VideoCodec> {
    prop_oneof![
        Just(VideoCodec::Vp8),
        Just(VideoCodec::Vp9),
        Just(VideoCodec::H264)
    ]
}

/// A VP8 payload descriptor (start of a partition, optional extensions) and a keyframe of
/// `w`x`h` whose data is `data`.
fn vp8_keyframe(w: u16, h: u16, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    frame.extend_from_slice(&w.to_le_bytes());
    frame.extend_from_slice(&h.to_le_bytes());
    frame.extend_from_slice(data);
    let mut payload = vec![0x90, 0x80, 0x05];
    payload.extend_from_slice(&frame);
    (payload, frame)
}

proptest! {
    #![proptest_config(prop::config(400))]

    #[test]
    fn arbitrary_video_payloads_never_panic_and_stay_bounded(
        codec in codec(),
        packets in proptest::collection::vec(packet(proptest::collection::vec(any::<u8>(), 0..300)), 0..40),
    ) {
        let (summary, file) = record(MediaKind::Video, Some(codec), &packets);
        check(MediaKind::Video, &packets, &summary, &file);
    }

    #[test]
    fn arbitrary_audio_payloads_never_panic_and_stay_bounded(
        packets in proptest::collection::vec(packet(proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
    ) {
        let (summary, file) = record(MediaKind::Audio, None, &packets);
        check(MediaKind::Audio, &packets, &summary, &file);
    }

    #[test]
    fn whole_vp8_keyframes_are_written_each_one(
        frames in proptest::collection::vec(
            (1u16..4000, 1u16..4000, proptest::collection::vec(any::<u8>(), 16..200)), 1..12),
    ) {
        let mut packets = Vec::new();
        let mut written = Vec::new();
        for (w, h, data) in &frames {
            let (payload, frame) = vp8_keyframe(*w, *h, data);
            packets.push(Packet { payload, seq_step: 1, next_frame: true, marker: true, keyframe: true });
            written.push(frame);
        }
        let (summary, file) = record(MediaKind::Video, Some(VideoCodec::Vp8), &packets);
        prop_assert_eq!(summary.video_frames, frames.len() as u64);
        for frame in &written {
            prop_assert!(file.windows(frame.len()).any(|w| w == frame.as_slice()));
        }
    }

    #[test]
    fn mutated_vp8_streams_never_panic_and_stay_bounded(seed in any::<u64>(), n in 1usize..20) {
        let mut rng = Rng::new(seed);
        let mut packets = Vec::new();
        for i in 0..n {
            let (payload, _) = vp8_keyframe(640, 480, &[i as u8; 40]);
            let payload = if rng.chance(0.5) { mutate::bytes(&payload, &mut rng) } else { payload };
            let marker = rng.chance(0.7);
            packets.push(Packet { payload, seq_step: 1, next_frame: true, marker, keyframe: i == 0 });
        }
        let (summary, file) = record(MediaKind::Video, Some(VideoCodec::Vp8), &packets);
        check(MediaKind::Video, &packets, &summary, &file);
    }
}

//! CPU cost of recording one 720p participant: N s (default 60) of synthetic media shaped like a 720p
//! camera (VP8 at 30 fps and 2.5 Mbit/s in ~1,150-byte packets, a keyframe every 3 s, Opus at
//! 50 packets/s) pushed through a [`Recorder`] writing a file, as fast as it takes them; the
//! process's CPU time divided by the media time is the share of one core recording needs in
//! real time.
//!
//! `cargo run --release -p sori-record --example record_cost -- 600`

use std::sync::Arc;
use std::time::{Duration, Instant};

use sori_record::mkv::Container;
use sori_record::{Profile, Recorder};
use sori_sfu::{MediaKind, TapId, TapPacket, VideoCodec};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let path = std::env::temp_dir().join(format!("sori-record-cost-{}.webm", std::process::id()));
    let base = Instant::now();
    let mut packets = Vec::new();
    let (fps, bitrate, mtu) = (30u64, 2_500_000u64, 1150usize);
    let frame_bytes = (bitrate / 8 / fps) as usize;
    let mut seq = 0u64;
    for f in 0..seconds * fps {
        let key = f % (3 * fps) == 0;
        let mut frame = vec![0u8; frame_bytes];
        if key {
            frame[..10]
                .copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]);
        } else {
            frame[0] = 0x11;
        }
        let chunks: Vec<&[u8]> = frame.chunks(mtu).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut payload = vec![if i == 0 { 0x10 } else { 0x00 }];
            payload.extend_from_slice(c);
            packets.push(TapPacket {
                tap: TapId(1),
                kind: MediaKind::Video,
                codec: Some(VideoCodec::Vp8),
                clock_rate: 90_000,
                seq,
                rtp_time: (f * 3000) as u32,
                marker: i + 1 == chunks.len(),
                keyframe: key && i == 0,
                arrival: base + Duration::from_millis(f * 1000 / fps),
                sender_report: None,
                payload: Arc::from(payload),
            });
            seq += 1;
        }
    }
    for a in 0..seconds * 50 {
        packets.push(TapPacket {
            tap: TapId(2),
            kind: MediaKind::Audio,
            codec: None,
            clock_rate: 48_000,
            seq: a,
            rtp_time: (a * 960) as u32,
            marker: false,
            keyframe: false,
            arrival: base + Duration::from_millis(a * 20),
            sender_report: None,
            payload: Arc::from(vec![0xfc; 100]),
        });
    }
    packets.sort_by_key(|p| p.arrival);
    let n = packets.len();

    let cpu0 = cpu_seconds();
    let wall = Instant::now();
    let file = std::fs::File::create(&path).expect("temporary file");
    let mut recorder = Recorder::new(
        file,
        Profile {
            container: Container::WebM,
            audio: true,
            video: true,
        },
    );
    for p in packets {
        // Each packet is handled at its arrival: media time, not the benchmark's clock.
        recorder
            .handle_packet(p.arrival, p)
            .expect("recording writes");
    }
    let end = base + Duration::from_secs(seconds);
    let (summary, file) = recorder
        .finish(end, std::time::SystemTime::now())
        .expect("recording finishes");
    file.sync_all().expect("recording syncs");
    let cpu = cpu_seconds() - cpu0;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    println!(
        "{seconds} s of 720p-shaped media ({n} packets, {} video + {} audio frames, {size} bytes) \
         recorded in {:.3} s wall, {cpu:.3} s CPU: {:.2}% of one core in real time",
        summary.video_frames,
        summary.audio_frames,
        wall.elapsed().as_secs_f64(),
        cpu / seconds as f64 * 100.0
    );
}

//! Four peers each publish Opus and VP8; each receives the other three's audio and video,
//! every frame byte-identical to what was sent, none missing.

mod common;

use std::time::Duration;

use common::{start_server, Client, ClientOptions, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_receive_each_others_audio_and_video_intact() {
    let server = start_server(Duration::from_secs(15)).await;
    let mut clients = Vec::new();
    for i in 0..4u8 {
        clients.push(Client::join(&server, ClientOptions::new(i, "four")).await);
    }
    // 90 video frames (3 s) and 150 audio frames from each of the other three.
    for c in &clients {
        let me = c.index;
        c.wait_for(
            "media from all three others",
            Duration::from_secs(30),
            |s| {
                (0..4u8).filter(|i| *i != me).all(|i| {
                    s.frames(i, Kind::Video).len() >= 90 && s.frames(i, Kind::Audio).len() >= 150
                })
            },
        )
        .await;
    }
    for c in &clients {
        let s = c.state();
        assert_eq!(
            s.active_recv_mids(),
            6,
            "client {} receives 3 × (audio + video)",
            c.index
        );
        for sender in (0..4u8).filter(|i| *i != c.index) {
            for kind in [Kind::Audio, Kind::Video] {
                let frames = s.frames(sender, kind);
                let bad: Vec<u32> = frames.iter().filter(|f| !f.intact).map(|f| f.seq).collect();
                assert!(
                    bad.is_empty(),
                    "client {} got corrupted {kind:?} frames from {sender}: {bad:?}",
                    c.index
                );
                // Nothing missing: consecutive sequence numbers from the first one received.
                let first = frames[0].seq;
                for (i, f) in frames.iter().enumerate() {
                    assert_eq!(
                        f.seq,
                        first + i as u32,
                        "client {} {kind:?} from {sender}: gap or reorder",
                        c.index
                    );
                }
                if kind == Kind::Video {
                    assert!(
                        frames[0].keyframe,
                        "client {}: first video frame from {sender} is a keyframe",
                        c.index
                    );
                }
            }
        }
    }
    let stats = server.handle.stats().await.unwrap();
    assert_eq!(stats.state.peers, 4);
    assert_eq!(stats.state.tracks, 8);
    assert_eq!(stats.state.subscriptions, 24);
    assert!(stats.counters.rtp_forwarded_packets > 0);
}

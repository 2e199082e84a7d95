//! Simulcast signaling: a participant's `view` of each video it receives reaches the media
//! server (and a bad one reaches nothing), `stats` come every 2 s once its media is connected,
//! and the media server's wish for fewer layers reaches the publisher as `layers` (and its
//! report of a silent media path reaches the participant as `ice-restart`). The media
//! server is a stand-in (`common::stub`) that says on cue what the in-process core says only
//! once simulcast media flows (the browser suites cover that path end to end).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stub::{self, StubMedia, UNKNOWN_TRACK};
use common::{flush, offer, Client};
use serde_json::{json, Value};
use sori_media::sori_sfu::{
    MediaKind, Priority, Quality, ReceiverStats, TrackId, TrackLayer, View,
};
use sori_media::{PeerRef, PeerSignal};
use sori_signal::{Limits, SignalConfig};

/// Joins `room` (SFU) and connects media at the stub; the stub calls this peer `stub-<n>`.
async fn with_media(url: &str, room: &str, name: &str) -> Client {
    let (mut c, _) = Client::join(url, room, name).await;
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    c
}

/// Sends `ping` and returns what arrives before its `pong`: since the server handles a socket's
/// messages in order, everything sent before has been acted on.
async fn until_pong(c: &mut Client) -> Vec<Value> {
    c.send(json!({"type": "ping"}));
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == "pong" {
            return before;
        }
        before.push(v);
    }
}

fn view(width: u32, height: u32, visible: bool, quality: Quality) -> View {
    View {
        width,
        height,
        visible,
        quality,
    }
}

async fn stub_server(stats: Option<ReceiverStats>, limits: Limits) -> (Arc<StubMedia>, String) {
    let stub = StubMedia::new(stats);
    let config = SignalConfig {
        limits,
        ..SignalConfig::default()
    };
    let (url, _) = stub::server(&stub, config).await;
    (stub, url)
}

#[tokio::test]
async fn views_reach_the_media_server_and_bad_ones_change_nothing() {
    let (stub, url) = stub_server(None, Limits::default()).await;
    let mut c = with_media(&url, "views", "Ada").await;
    let me = PeerRef::Remote("stub-1".into());

    c.send(json!({"type": "view", "tracks": {
        "track-5": {"width": 640, "height": 360, "visible": true, "quality": "auto"},
        "track-7": {"visible": false, "quality": "low"},
    }}));
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());
    let taken = vec![
        (me.clone(), TrackId(5), view(640, 360, true, Quality::Auto)),
        (me.clone(), TrackId(7), view(0, 0, false, Quality::Low)),
    ];
    assert_eq!(stub.views(), taken);

    let too_many: serde_json::Map<String, Value> = (0..257)
        .map(|i| (format!("track-{i}"), json!({"width": 10, "height": 10})))
        .collect();
    for (tracks, says) in [
        (Value::Object(too_many), "257 tracks"),
        (
            json!({"track-5": {}, "video-1": {}}),
            "\"video-1\" is not a track id",
        ),
        (
            json!({"track-5": {"quality": "ultra"}}),
            "unknown variant `ultra`",
        ),
        (
            json!({"track-5": {"width": 100000, "height": 1}}),
            "100000x1",
        ),
    ] {
        c.send(json!({"type": "view", "tracks": tracks}));
        let replies = until_pong(&mut c).await;
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0]["code"], "bad-message", "{replies:?}");
        let message = replies[0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert_eq!(stub.views(), taken, "a refused view changes nothing");
    }

    // A track the media server does not send this participant is skipped, quietly; the rest
    // of the message still applies.
    c.send(json!({"type": "view", "tracks": {
        UNKNOWN_TRACK.to_string(): {"width": 1, "height": 1},
        "track-5": {"width": 320, "height": 180, "quality": "high"},
    }}));
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());
    let last = (me, TrackId(5), view(320, 180, true, Quality::High));
    assert_eq!(stub.views()[2..], [last]);
}

#[tokio::test]
async fn views_in_a_p2p_room_are_checked_and_go_nowhere() {
    let (stub, url) = stub_server(None, Limits::default()).await;
    let (mut p, _) = Client::connect_and_join(&url, "views-p2p", "P", "p2p").await;
    p.send(json!({"type": "view", "tracks": {"track-1": {"width": 640, "height": 360}}}));
    assert_eq!(until_pong(&mut p).await, Vec::<Value>::new());
    p.send(json!({"type": "view", "tracks": {"track-1": {"width": 640.5}}}));
    assert_eq!(until_pong(&mut p).await[0]["code"], "bad-message");
    assert_eq!(stub.views(), vec![]);
}

#[tokio::test]
async fn views_past_the_rate_limit_are_dropped() {
    // A burst of three and no refill: the count is exact, whatever the machine's speed.
    let limits = Limits {
        views_per_sec: 0.0,
        views_burst: 3.0,
        ..Limits::default()
    };
    let (stub, url) = stub_server(None, limits).await;
    let mut c = with_media(&url, "views-rate", "Ada").await;
    for width in 1..=6 {
        c.send(json!({"type": "view", "tracks": {"track-5": {"width": width, "height": 90}}}));
    }
    let replies = until_pong(&mut c).await;
    // One error however many were dropped (at most one a second).
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["code"], "rate-limited");
    assert!(replies[0]["message"]
        .as_str()
        .unwrap()
        .contains("view updates"));
    let widths: Vec<u32> = stub.views().iter().map(|(_, _, v)| v.width).collect();
    assert_eq!(widths, [1, 2, 3]);
    // Chat has a budget of its own.
    c.send(json!({"type": "chat", "text": "still heard"}));
    assert_eq!(c.expect("chat").await["text"], "still heard");
}

#[tokio::test]
async fn stats_come_every_two_seconds_once_media_is_connected() {
    let stats = ReceiverStats {
        estimate_bps: Some(1_800_000),
        tracks: vec![TrackLayer {
            track: TrackId(5),
            rid: Some("h".into()),
            spatial: 1,
            layers: 3,
            temporal: Some(2),
            height: Some(360),
            bitrate_bps: 500_000,
            paused: false,
        }],
    };
    let (stub, url) = stub_server(Some(stats), Limits::default()).await;
    let mut c = with_media(&url, "stats", "Ada").await;
    assert_eq!(stub.stats_asked(), 0, "no stats before the media connects");

    stub.signal(0, PeerSignal::Connected);
    let first = c.expect("stats").await;
    let at = Instant::now();
    let second = c.expect("stats").await;
    let gap = at.elapsed();
    let want = json!({"type": "stats", "estimate_bps": 1_800_000, "tracks": {
        "track-5": {"rid": "h", "spatial": 1, "layers": 3, "temporal": 2, "height": 360,
                    "bitrate_bps": 500_000, "paused": false},
    }});
    assert_eq!(first, want);
    assert_eq!(second, want);
    // Not a flood: the next one waits its period.
    assert!(gap >= Duration::from_millis(1900), "{gap:?}");
}

#[tokio::test]
async fn a_media_server_without_stats_sends_none() {
    let (stub, url) = stub_server(None, Limits::default()).await;
    let mut c = with_media(&url, "no-stats", "Ada").await;
    stub.signal(0, PeerSignal::Connected);
    // Asked twice: the first answer (nothing) was acted on before the second was asked.
    stub.wait_until("stats asked twice", |s| s.stats_asked() >= 2)
        .await;
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());
}

#[tokio::test]
async fn layers_go_to_the_publisher_alone() {
    let (stub, url) = stub_server(None, Limits::default()).await;
    let mut a = with_media(&url, "layers", "Ada").await;
    let mut b = with_media(&url, "layers", "Grace").await;
    let active = [("q", true), ("h", true), ("f", false)]
        .map(|(rid, on)| (rid.to_string(), on))
        .to_vec();
    stub.signal(
        0,
        PeerSignal::Layers {
            mid: "1".into(),
            active,
        },
    );
    assert_eq!(
        a.expect("layers").await,
        json!({"type": "layers", "mid": "1", "active": {"q": true, "h": true, "f": false}})
    );
    let seen = flush(&mut b, "after the layers").await;
    assert!(seen.iter().all(|m| m["type"] != "layers"), "{seen:?}");
}

/// The media server heard nothing from a participant's media path: that participant alone is
/// asked to restart ICE.
#[tokio::test]
async fn a_stalled_media_path_asks_its_participant_alone_for_an_ice_restart() {
    let (stub, url) = stub_server(None, Limits::default()).await;
    let mut a = with_media(&url, "stall", "Ada").await;
    let mut b = with_media(&url, "stall", "Grace").await;
    stub.signal(0, PeerSignal::IceStalled);
    assert_eq!(
        a.expect("ice-restart").await,
        json!({"type": "ice-restart"})
    );
    let seen = flush(&mut b, "after the stall").await;
    assert!(seen.iter().all(|m| m["type"] != "ice-restart"), "{seen:?}");
}

#[tokio::test]
async fn a_published_screen_share_gets_the_screen_priority() {
    let (stub, url) = stub_server(None, Limits::default()).await;
    let (mut c, _) = Client::join(&url, "priority", "Ada").await;
    // The browser's one video m-line is its screen share.
    let sdp = offer();
    let video = sdp.split("m=video").nth(1).unwrap();
    let mid = video
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap();
    c.send(json!({"type": "offer", "sdp": sdp, "roles": {mid: "screen"}}));
    c.expect("answer").await;
    stub.signal(
        0,
        PeerSignal::Published {
            track: TrackId(3),
            kind: MediaKind::Video,
        },
    );
    stub.wait_until("a priority", |s| !s.priorities().is_empty())
        .await;
    assert_eq!(stub.priorities(), [(TrackId(3), Priority::Screen)]);

    // A camera keeps the default: nothing is set for it (Ada sees Grace's track as a camera).
    with_media(&url, "priority", "Grace").await;
    stub.signal(
        1,
        PeerSignal::Published {
            track: TrackId(4),
            kind: MediaKind::Video,
        },
    );
    loop {
        let updated = c.expect("participant-updated").await;
        if let Some(tracks) = updated["participant"].get("tracks") {
            assert_eq!(tracks, &json!({"track-4": "camera"}));
            break;
        }
    }
    assert_eq!(stub.priorities(), [(TrackId(3), Priority::Screen)]);
}

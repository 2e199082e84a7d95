//! Simulcast in the core: a publisher sends three layers (`q`, `h`, `f`); each receiver gets
//! one of them — the one its view asks for — as one continuous stream, byte for byte what the
//! publisher sent in that layer, moving between layers only at a keyframe. Virtual time,
//! str0m clients.

mod common;

use std::time::Duration;

use common::{Harness, Link};
use sori_sfu::{Priority, SfuConfig, SfuEvent, TrackId, View};
use str0m::media::MediaData;

/// Bytes per frame in each layer (30 frames a second: ~50, ~190 and ~580 kbit/s).
const SIZES: [usize; 3] = [200, 800, 2400];

/// Bandwidth estimation off: the views alone decide the layers.
fn views_only() -> SfuConfig {
    SfuConfig {
        initial_estimate: None,
        ..SfuConfig::default()
    }
}

/// A view of a tile `height` lines high (16:9).
fn tile(height: u32) -> View {
    View {
        width: height * 16 / 9,
        height,
        ..View::default()
    }
}

/// The video frames member `i` received since frame index `from` of its received media.
fn video(h: &Harness, i: usize) -> Vec<&MediaData> {
    h.members[i]
        .client
        .received
        .iter()
        .filter(|d| d.params.spec().codec.is_video())
        .collect()
}

/// Checks a receiver's frames: each is byte for byte a frame the publisher sent in the layer
/// it names, sequence numbers run on without a gap, and the layer changes only at a keyframe
/// of the new layer. Returns the layer of each frame.
fn check_stream(h: &Harness, publisher: usize, frames: &[&MediaData]) -> Vec<u8> {
    check_frames(h, publisher, frames, true)
}

/// As [`check_stream`]; over a lossy link (`lossless` false) a frame may be missing, so the
/// sequence numbers may jump, and a layer may start after a gap rather than at its keyframe.
fn check_frames(h: &Harness, publisher: usize, frames: &[&MediaData], lossless: bool) -> Vec<u8> {
    let sent = &h.members[publisher].layers;
    let mut layers = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let layer = f.data[11];
        let n = common::harness_frame_number(&f.data);
        let original = &sent[layer as usize].frames[n as usize];
        assert_eq!(
            &f.data[..],
            &original[..],
            "frame {k}: not what was sent in layer {layer}"
        );
        if k > 0 && lossless {
            let prev = frames[k - 1];
            assert_eq!(
                *f.seq_range.start(),
                (**prev.seq_range.end() + 1).into(),
                "frame {k}: the sequence numbers jump"
            );
            assert!(f.contiguous, "frame {k} is not contiguous");
        }
        // Over a lossy link the new layer's keyframe itself may be lost: the first frame
        // after a gap says nothing about where the switch happened.
        if k > 0 && layers[k - 1] != layer && (lossless || f.contiguous) {
            let key = sent[layer as usize].keyframes.contains(&(n as usize));
            assert!(key, "frame {k}: moved to layer {layer} without a keyframe");
        }
        layers.push(layer);
    }
    layers
}

/// Asserts that member `i`'s last ten seconds of video (`layers`, one per frame) all came
/// from layer `want`; otherwise shows the layers it went through.
fn assert_settled(i: usize, layers: &[u8], want: u8) {
    let tail = &layers[layers.len() - 300..];
    let mut runs = layers.to_vec();
    runs.dedup();
    assert!(
        tail.iter().all(|l| *l == want),
        "member {i} should be on layer {want}: {runs:?}"
    );
}

/// The m-line on which member `i` (a viewer) receives video, to feed by hand.
fn video_line(h: &Harness, i: usize) -> String {
    h.sfu
        .media(h.members[i].peer)
        .unwrap()
        .into_iter()
        .find(|l| l.kind == sori_sfu::MediaKind::Video && l.sends)
        .expect("a video m-line to feed")
        .mid
}

/// Streams until member `viewer` receives `layer` of the publisher's video (the core says so,
/// and a frame of it arrived); returns how long that took. Fails after `limit`.
fn stream_until_on(
    h: &mut Harness,
    publisher: usize,
    viewer: usize,
    layer: u8,
    limit: Duration,
) -> Duration {
    let start = h.now;
    let peer = h.members[viewer].peer;
    loop {
        let on = h.sfu.receiver_stats(peer, h.now).unwrap().tracks[0].spatial == layer;
        let last = video(h, viewer).last().map(|f| f.data[11]);
        if on && last == Some(layer) {
            return h.now - start;
        }
        assert!(
            h.now - start < limit,
            "not on layer {layer} within {limit:?}"
        );
        let t = h.now + Duration::from_millis(100);
        h.stream_layers_until(publisher, &SIZES, t);
    }
}

#[test]
fn each_receiver_gets_the_layer_its_view_asks_for_byte_for_byte() {
    let mut h = Harness::new(views_only(), 1);
    let publisher = h.join_simulcast("sim", &["q", "h", "f"], Link::default(), Link::default());
    let small = h.join("sim", Link::default(), Link::default());
    let medium = h.join("sim", Link::default(), Link::default());
    let large = h.join("sim", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    let track = h.video_track(publisher);
    for (i, height) in [(small, 180), (medium, 360), (large, 720)] {
        let peer = h.members[i].peer;
        h.sfu.set_view(peer, track, tile(height), h.now).unwrap();
    }
    let t = h.now + Duration::from_secs(6);
    h.stream_layers_until(publisher, &SIZES, t);

    for (i, want) in [(small, 0), (medium, 1), (large, 2)] {
        let frames = video(&h, i);
        let layers = check_stream(&h, publisher, &frames);
        assert!(frames.len() > 150, "member {i}: {} frames", frames.len());
        // Settled on its layer: the last three seconds all come from it.
        let tail = &layers[layers.len() - 90..];
        assert!(
            tail.iter().all(|l| *l == want),
            "member {i} should be on layer {want}: {tail:?}"
        );
    }
}

#[test]
fn three_receivers_capped_differently_each_get_the_layer_their_link_carries() {
    let mut h = Harness::new(SfuConfig::default(), 4);
    let publisher = h.join_simulcast("cap", &["q", "h", "f"], Link::default(), Link::default());
    let narrow = h.join("cap", Link::default(), Link::capped(150_000));
    let middle = h.join("cap", Link::default(), Link::capped(450_000));
    let wide = h.join("cap", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(30);
    h.stream_layers_until(publisher, &SIZES, t);
    for (i, want) in [(narrow, 0), (middle, 1), (wide, 2)] {
        let frames = video(&h, i);
        let layers = check_frames(&h, publisher, &frames, false);
        let peer = h.members[i].peer;
        let stats = h.sfu.receiver_stats(peer, h.now).unwrap();
        eprintln!(
            "member {i}: estimate {:?} bit/s, {} datagrams dropped at its bottleneck",
            stats.estimate_bps, h.members[i].down.dropped
        );
        // The last ten seconds come from the layer the link carries.
        assert_settled(i, &layers, want);
    }
    // The cap is lifted: the middle receiver climbs to the top layer.
    h.members[middle].down.rate = None;
    let took = stream_until_on(&mut h, publisher, middle, 2, Duration::from_secs(15));
    eprintln!("back on the top layer {took:?} after the cap was lifted");
}

#[test]
fn a_screen_share_gets_the_bandwidth_before_a_camera() {
    let mut h = Harness::new(SfuConfig::default(), 6);
    let camera = h.join_simulcast("prio", &["q", "h", "f"], Link::default(), Link::default());
    let screen = h.join_simulcast("prio", &["q", "h", "f"], Link::default(), Link::default());
    let viewer = h.join("prio", Link::default(), Link::capped(1_100_000));
    let t = h.now + Duration::from_secs(1);
    stream_both(&mut h, camera, screen, t);
    let screen_track = h.video_track(screen);
    h.sfu
        .set_priority(screen_track, Priority::Screen, h.now)
        .unwrap();
    let t = h.now + Duration::from_secs(30);
    stream_both(&mut h, camera, screen, t);
    let peer = h.members[viewer].peer;
    let stats = h.sfu.receiver_stats(peer, h.now).unwrap();
    let layer_of = |track: TrackId| {
        stats
            .tracks
            .iter()
            .find(|t| t.track == track)
            .map(|t| t.spatial)
    };
    let camera_track = h.video_track(camera);
    // 1.1 Mbit/s carries f (~610) of one track and h (~190) of the other: the screen share
    // is the one at the top.
    assert_eq!(layer_of(screen_track), Some(2), "{stats:?}");
    assert!(layer_of(camera_track) < Some(2), "{stats:?}");
}

/// Two simulcast publishers stream every layer until `t`.
fn stream_both(h: &mut Harness, a: usize, b: usize, t: std::time::Instant) {
    let frame = Duration::from_micros(33_333);
    while h.now + frame <= t {
        h.write_layers(a, &SIZES);
        h.write_layers(b, &SIZES);
        h.run_for(frame);
    }
    h.run_until(t);
}

#[test]
fn a_tap_takes_the_highest_layer_as_one_stream() {
    let mut h = Harness::new(SfuConfig::default(), 5);
    let publisher = h.join_simulcast("tap", &["q", "h", "f"], Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    let track = h.video_track(publisher);
    let tap = h.sfu.tap(track, h.now).unwrap();
    let t = h.now + Duration::from_secs(3);
    h.stream_layers_until(publisher, &SIZES, t);
    let packets: Vec<_> = std::iter::from_fn(|| h.sfu.poll_tap())
        .filter(|p| p.tap == tap)
        .collect();
    assert!(packets.len() > 100, "{} packets tapped", packets.len());
    // One stream: consecutive sequence numbers, starting at a keyframe.
    assert!(packets[0].keyframe);
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    // Only f: its frames are 2400 bytes, split into packets of at most ~1200; the q and h
    // frames (200 and 800 bytes) would show as packets of ~200 and ~800 bytes alone.
    let frame_bytes: usize = packets
        .iter()
        .take_while(|p| !p.marker)
        .map(|p| p.payload.len())
        .sum::<usize>()
        + packets
            .iter()
            .find(|p| p.marker)
            .map_or(0, |p| p.payload.len());
    assert!(
        frame_bytes >= 2400,
        "the first tapped frame has {frame_bytes} bytes"
    );
}

#[test]
fn a_tap_records_what_arrives_until_the_top_layer_comes() {
    let mut h = Harness::new(SfuConfig::default(), 7);
    let publisher = h.join_simulcast("tap2", &["q", "h", "f"], Link::default(), Link::default());
    // The publisher sends q and h only (its top layer paused, or not encoded yet).
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES[..2], t);
    let track = h.video_track(publisher);
    let tap = h.sfu.tap(track, h.now).unwrap();
    let t = h.now + Duration::from_secs(2);
    h.stream_layers_until(publisher, &SIZES[..2], t);
    // f starts: the tap moves to it at its first keyframe.
    let t = h.now + Duration::from_secs(3);
    h.stream_layers_until(publisher, &SIZES, t);
    let packets: Vec<_> = std::iter::from_fn(|| h.sfu.poll_tap())
        .filter(|p| p.tap == tap)
        .collect();
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "one stream");
    }
    // Frame sizes: h frames (800 bytes) first, f frames (2400) at the end.
    let frames: Vec<usize> = packets
        .split_inclusive(|p| p.marker)
        .map(|f| f.iter().map(|p| p.payload.len()).sum())
        .collect();
    let first_f = frames.iter().position(|b| *b >= 2400).expect("f reached");
    assert!(first_f > 10, "h was recorded first: {frames:?}");
    assert!(
        frames[..first_f].iter().all(|b| (800..2400).contains(b)),
        "{frames:?}"
    );
    assert!(frames[first_f..].iter().all(|b| *b >= 2400), "{frames:?}");
}

#[test]
fn a_receiver_moves_between_layers_at_keyframes_without_a_gap() {
    let mut h = Harness::new(views_only(), 2);
    let publisher = h.join_simulcast("sim2", &["q", "h", "f"], Link::default(), Link::default());
    let viewer = h.join("sim2", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    let track = h.video_track(publisher);
    let peer = h.members[viewer].peer;
    let mut reached = Vec::new();
    for (height, layer) in [(180, 0), (720, 2), (360, 1), (180, 0), (720, 2)] {
        h.sfu.set_view(peer, track, tile(height), h.now).unwrap();
        let took = stream_until_on(&mut h, publisher, viewer, layer, Duration::from_secs(15));
        reached.push((height, took));
        // Stay a while on it.
        let t = h.now + Duration::from_secs(2);
        h.stream_layers_until(publisher, &SIZES, t);
    }
    let frames = video(&h, viewer);
    let layers = check_stream(&h, publisher, &frames);
    let mut runs: Vec<u8> = layers.clone();
    runs.dedup();
    // Up from the start layer, then the five views in order.
    assert!(runs.ends_with(&[0, 2, 1, 0, 2]), "layers {runs:?}");
    eprintln!("time to reach each view's layer: {reached:?}");
    let switches = h.sfu.counters().layer_switches;
    assert!(switches >= 5, "{switches} switches");
}

#[test]
fn a_hidden_tile_gets_no_video_and_its_layer_is_paused_at_the_publisher() {
    let mut h = Harness::new(views_only(), 3);
    let publisher = h.join_simulcast("sim3", &["q", "h", "f"], Link::default(), Link::default());
    let viewer = h.join("sim3", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    let track = h.video_track(publisher);
    let peer = h.members[viewer].peer;
    let pub_peer = h.members[publisher].peer;
    let wanted = |h: &Harness| -> Option<Vec<(String, bool)>> {
        h.events.iter().rev().find_map(|(_, e)| match e {
            SfuEvent::LayersWanted { peer, active, .. } if *peer == pub_peer => {
                Some(active.clone())
            }
            _ => None,
        })
    };
    h.sfu.set_view(peer, track, tile(180), h.now).unwrap();
    let t = h.now + Duration::from_secs(12);
    h.stream_layers_until(publisher, &SIZES, t);
    // Nobody has taken h or f for 10 s: the publisher may stop them; q stays.
    let on = |v: &[(String, bool)], rid: &str| v.iter().any(|(r, a)| r == rid && *a);
    let w = wanted(&h).expect("the publisher is told which layers are wanted");
    assert!(on(&w, "q") && !on(&w, "h") && !on(&w, "f"), "{w:?}");

    let hidden = View {
        visible: false,
        ..tile(180)
    };
    h.sfu.set_view(peer, track, hidden, h.now).unwrap();
    let before = video(&h, viewer).len();
    let t = h.now + Duration::from_secs(2);
    h.stream_layers_until(publisher, &SIZES, t);
    assert_eq!(
        video(&h, viewer).len(),
        before,
        "video went to a hidden tile"
    );

    // Shown large again: the estimate allows f, so f is wanted and flows.
    h.sfu.set_view(peer, track, tile(720), h.now).unwrap();
    stream_until_on(&mut h, publisher, viewer, 2, Duration::from_secs(15));
    let w = wanted(&h).unwrap();
    assert!(on(&w, "f"), "{w:?}");
    let frames = video(&h, viewer);
    let layers = check_stream(&h, publisher, &frames);
    assert_eq!(layers.last(), Some(&2));
}

#[test]
fn a_receiver_without_transport_cc_is_not_held_to_the_starting_estimate() {
    // No feedback comes from it, so no estimate: were everything toward it paced at the
    // starting 1 Mbit/s, a 2 Mbit/s video would fall seconds behind and lose frames.
    let mut h = Harness::new(SfuConfig::default(), 9);
    let a = h.join("no-twcc", Link::default(), Link::default());
    let b = h.join_without_transport_cc("no-twcc", Link::default(), Link::default());
    h.run_for(Duration::from_secs(1));
    let end = h.now + Duration::from_secs(6);
    h.stream_until(a, 8_000, end);
    h.run_for(Duration::from_millis(100));
    let sent = h.members[a].frames_sent;
    let got = h.video_frames(b);
    let last = got.iter().copied().max().unwrap_or(0);
    assert!(
        got.len() as u64 >= sent * 95 / 100,
        "{} of {sent} frames (8 kB at 30/s, ~1.9 Mbit/s) reached the receiver",
        got.len()
    );
    assert!(
        last + 3 >= sent,
        "the receiver is {} frames behind the publisher",
        sent - last
    );
}

#[test]
fn a_viewer_fed_by_hand_gets_the_layer_its_link_carries_without_renegotiation() {
    // A WHEP player: its own receive-only m-line is fed the publisher's video; the layer
    // follows its estimate and moves at keyframes, as for a track the room feeds it.
    let mut h = Harness::new(SfuConfig::default(), 6);
    let publisher = h.join_simulcast("whep", &["q", "h", "f"], Link::default(), Link::default());
    let narrow = h.join_viewer("whep", Link::default(), Link::capped(450_000));
    let wide = h.join_viewer("whep", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    let track = h.video_track(publisher);
    for i in [narrow, wide] {
        let (peer, mid) = (h.members[i].peer, video_line(&h, i));
        h.sfu.feed(peer, &mid, Some(track), h.now).unwrap();
    }
    let t = h.now + Duration::from_secs(30);
    h.stream_layers_until(publisher, &SIZES, t);
    for (i, want) in [(narrow, 1), (wide, 2)] {
        let frames = video(&h, i);
        let layers = check_frames(&h, publisher, &frames, false);
        assert!(frames.len() > 600, "member {i}: {} frames", frames.len());
        assert_settled(i, &layers, want);
        let peer = h.members[i].peer;
        let offers = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, SfuEvent::Offer { peer: p, .. } if *p == peer))
            .count();
        assert_eq!(offers, 0, "member {i} was offered a renegotiation");
    }
}

#[test]
fn a_fed_viewer_emptied_then_fed_another_publisher_sees_one_continuous_stream() {
    // A WHEP viewer following a participant who leaves and comes back (a new publisher): its
    // m-line is emptied, then fed the newcomer. The numbering goes on where it stopped; one
    // started anew (at the newcomer's own numbers) could run behind the old one, and the
    // client would drop it all as old packets.
    let mut h = Harness::new(SfuConfig::default(), 7);
    let first = h.join("relay", Link::default(), Link::default());
    let viewer = h.join_viewer("relay", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_until(first, 1000, t);
    let (peer, mid) = (h.members[viewer].peer, video_line(&h, viewer));
    let track = h.video_track(first);
    h.sfu.feed(peer, &mid, Some(track), h.now).unwrap();
    let t = h.now + Duration::from_secs(2);
    h.stream_until(first, 1000, t);
    let before = video(&h, viewer).len();
    assert!(before > 30, "{before} frames");
    let gone = h.members[first].peer;
    h.sfu.leave(gone, h.now).unwrap();
    h.sfu.feed(peer, &mid, None, h.now).unwrap();
    let second = h.join("relay", Link::default(), Link::default());
    let t = h.now + Duration::from_millis(300);
    h.stream_until(second, 1000, t);
    let track = h.video_track(second);
    h.sfu.feed(peer, &mid, Some(track), h.now).unwrap();
    let t = h.now + Duration::from_secs(3);
    h.stream_until(second, 1000, t);
    let frames = video(&h, viewer);
    assert!(frames.len() > before + 60, "{before} then {}", frames.len());
    let (last, next) = (frames[before - 1], frames[before]);
    assert_eq!(
        *next.seq_range.start(),
        (**last.seq_range.end() + 1).into(),
        "the newcomer's stream does not continue the numbering"
    );
}

#[test]
fn a_receiver_on_a_layer_its_publisher_stops_is_moved_down_within_a_few_frames() {
    // A publisher whose bandwidth estimate falls stops encoding its top layer (a browser does
    // not say so): its receivers are moved to the layer below at its next keyframe, well
    // before the top layer's last packet is 1.5 s old.
    let mut h = Harness::new(views_only(), 2);
    let publisher = h.join_simulcast(
        "sim-stop",
        &["q", "h", "f"],
        Link::default(),
        Link::default(),
    );
    let viewer = h.join("sim-stop", Link::default(), Link::default());
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    let track = h.video_track(publisher);
    let peer = h.members[viewer].peer;
    h.sfu.set_view(peer, track, tile(720), h.now).unwrap();
    stream_until_on(&mut h, publisher, viewer, 2, Duration::from_secs(5));
    let t = h.now + Duration::from_secs(1);
    h.stream_layers_until(publisher, &SIZES, t);
    // The top layer stops; the two below go on.
    let stopped = h.now;
    let moved = loop {
        let last = video(&h, viewer).last().map(|f| f.data[11]);
        if last == Some(1) {
            break h.now - stopped;
        }
        assert!(
            h.now - stopped < Duration::from_secs(3),
            "not moved to layer 1 within 3 s"
        );
        // One frame at a time.
        let t = h.now + Duration::from_micros(33_334);
        h.stream_layers_until(publisher, &SIZES[..2], t);
    };
    eprintln!("on layer 1 {moved:?} after the top layer stopped");
    assert!(
        moved < Duration::from_millis(800),
        "moved down {moved:?} after the top layer stopped"
    );
    // And it stays there while the top layer stays away, then goes back up when it returns.
    let t = h.now + Duration::from_secs(2);
    h.stream_layers_until(publisher, &SIZES[..2], t);
    let back = stream_until_on(&mut h, publisher, viewer, 2, Duration::from_secs(5));
    eprintln!("back on layer 2 {back:?} after it returned");
    // (Not `check_stream`: the top layer's frames are numbered with the others' here.)
    let mut runs: Vec<u8> = video(&h, viewer).iter().map(|f| f.data[11]).collect();
    runs.dedup();
    assert!(runs.ends_with(&[2, 1, 2]), "layers {runs:?}");
}

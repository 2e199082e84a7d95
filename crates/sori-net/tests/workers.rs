//! Two media workers on one port: a room whose receivers, and publishers, sit on both. Every
//! receiver gets every frame of both publishers, byte-identical and in sequence; a packet
//! crosses to the other worker once, not once per receiver there; an ICE restart, a leave and
//! a recording tap work on either worker.

mod common;

use std::time::Duration;

use common::{assert_complete, start_server_workers, Client, ClientOptions, ClientState, Kind};
use sori_net::workers::worker_of;

const PUBLISHERS: [u8; 2] = [0, 6];

/// Frames from both publishers (other than itself) in order, intact, from a keyframe on.
fn check(c: &Client, s: &ClientState) {
    for sender in PUBLISHERS.into_iter().filter(|p| *p != c.index) {
        assert_complete(c.index, s, sender);
    }
}

async fn both_publishers(c: &Client, video: usize) -> ClientState {
    let me = c.index;
    c.wait_for("media from both publishers", Duration::from_secs(30), |s| {
        PUBLISHERS.into_iter().filter(|p| *p != me).all(|p| {
            s.frames(p, Kind::Video).len() >= video && s.frames(p, Kind::Audio).len() >= video
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_on_two_workers_reaches_every_receiver_on_both() {
    let server = start_server_workers(2).await;
    let mut clients = Vec::new();
    for i in 0..8u8 {
        let mut o = ClientOptions::new(i, "big");
        o.publish = PUBLISHERS.contains(&i);
        clients.push(Client::join(&server, o).await);
    }
    let on = |c: &Client| worker_of(c.peer.0, 2);
    // A small room stays on one worker; the sixth participant and later go to the other.
    let placed: Vec<usize> = clients.iter().map(on).collect();
    assert_eq!(placed, [0, 0, 0, 0, 0, 1, 1, 1], "placement");

    for c in &clients {
        let s = both_publishers(c, 90).await;
        check(c, &s);
    }
    let stats = server.handle.stats().await.unwrap();
    assert_eq!(stats.state.peers, 8);
    assert_eq!(stats.rooms, vec![("big".to_string(), 8)]);
    // Each packet is received once from its publisher and relayed once into the other worker:
    // about twice the frames sent in all (a keyframe takes two packets). Relayed once per
    // receiver there, it would be 4 times publisher 0's and 6 times publisher 6's.
    let sent: u64 = PUBLISHERS
        .iter()
        .map(|p| {
            let s = clients[*p as usize].state();
            u64::from(s.sent_audio + s.sent_video)
        })
        .sum();
    assert!(
        stats.counters.rtp_received < 3 * sent,
        "{} packets in for {sent} sent",
        stats.counters.rtp_received
    );
    assert!(
        stats.counters.rtp_received > sent,
        "the other worker got them too"
    );

    // A receiver on worker 1 restarts ICE and goes on receiving.
    let mover = &clients[7];
    let before = mover.state();
    mover.ice_restart();
    let seen = before.frames(0, Kind::Video).len() + 60;
    let s = mover
        .wait_for("frames after the restart", Duration::from_secs(30), |s| {
            s.ice_restarts == 1 && s.frames(0, Kind::Video).len() >= seen
        })
        .await;
    check(mover, &s);

    // Recording taps on a track of each worker.
    for p in PUBLISHERS {
        let peer = clients[p as usize].peer;
        let lines = server.handle.media(peer).await.unwrap();
        let video = lines
            .iter()
            .filter_map(|l| l.published)
            .find(|t| worker_of(t.0, 2) == on(&clients[p as usize]))
            .expect("a published track of the publisher's worker");
        let (_tap, mut packets) = server.handle.tap(video).await.unwrap();
        let mut got = 0;
        while got < 30 {
            let p = tokio::time::timeout(Duration::from_secs(10), packets.recv())
                .await
                .expect("tapped packets within 10 s")
                .expect("the tap stays open");
            if got == 0 && p.kind == sori_sfu::MediaKind::Video {
                assert!(p.keyframe, "a tap starts at a keyframe");
            }
            got += 1;
        }
    }

    // Everyone on worker 1 but the publisher leaves; the others go on receiving.
    for c in &clients[5..6] {
        c.leave();
    }
    clients[7].leave();
    let s = both_publishers(
        &clients[1],
        clients[1].state().frames(6, Kind::Video).len() + 30,
    )
    .await;
    check(&clients[1], &s);
    server.handle.shutdown();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("the workers stop")
        .unwrap();
}

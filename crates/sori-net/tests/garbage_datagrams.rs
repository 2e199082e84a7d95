//! 10,000 garbage datagrams on the media port during a call change nothing for the call.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{start_server, Client, ClientOptions, Kind, LOCALHOST};
use sori_testkit::Rng;
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_strangers_and_from_a_participant_changes_nothing() {
    let server = start_server(Duration::from_secs(15)).await;
    let a = Client::join(&server, ClientOptions::new(0, "garbage")).await;
    let b = Client::join(&server, ClientOptions::new(1, "garbage")).await;
    for (c, other) in [(&a, 1u8), (&b, 0u8)] {
        c.wait_for("video", Duration::from_secs(20), |s| {
            s.frames(other, Kind::Video).len() >= 10
        })
        .await;
    }
    let before = server.handle.stats().await.unwrap();

    // 5,000 from an unknown address: random bytes, STUN-looking headers with random
    // usernames, RTP- and DTLS-looking first bytes; in batches the socket buffers can hold.
    let stranger = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    for batch in 0..100 {
        for i in 0..50 {
            let len = 1 + rng.below(1400);
            let mut g = rng.bytes(len);
            match (batch * 50 + i) % 4 {
                0 if len >= 20 => {
                    // Binding request header, magic cookie, then a USERNAME attribute.
                    g[..8].copy_from_slice(&[0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42]);
                    g.truncate(20);
                    g.extend_from_slice(&[0, 6, 0, 8]);
                    g.extend_from_slice(format!("{:04x}:abc", rng.next_u64() as u16).as_bytes());
                }
                1 => g[0] = 0x80,
                2 => g[0] = 22,
                _ => {}
            }
            stranger.send_to(&g, server.candidates[0]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 5,000 from a participant's own address, which routes them to its session.
    for _ in 0..100 {
        a.send_garbage(50);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let counts = |c: &Client, other: u8| c.state().frames(other, Kind::Video).len();
    let (na, nb) = (counts(&a, 1), counts(&b, 0));
    a.wait_for("video after the garbage", Duration::from_secs(10), |s| {
        s.frames(1, Kind::Video).len() >= na + 60
    })
    .await;
    b.wait_for("video after the garbage", Duration::from_secs(10), |s| {
        s.frames(0, Kind::Video).len() >= nb + 60
    })
    .await;
    for (c, other) in [(&a, 1u8), (&b, 0u8)] {
        let s = c.state();
        for kind in [Kind::Audio, Kind::Video] {
            let frames = s.frames(other, kind);
            assert!(
                frames.iter().all(|f| f.intact),
                "client {} {kind:?}: corrupted frame",
                c.index
            );
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(
                    f.seq,
                    frames[0].seq + i as u32,
                    "client {} {kind:?}: gap",
                    c.index
                );
            }
        }
        assert!(s.removed.is_none());
    }
    let after = server.handle.stats().await.unwrap();
    assert_eq!(after.state.peers, 2);
    assert_eq!(after.counters.peers_removed, 0);
    // Loopback may still drop a few datagrams of a burst before the core reads them.
    let received = after.counters.datagrams_received - before.counters.datagrams_received;
    assert!(
        received >= 9_500,
        "the core saw the garbage: {received} datagrams"
    );
    let unroutable = after.counters.datagrams_unroutable - before.counters.datagrams_unroutable;
    assert!(
        (4_750..=5_000).contains(&unroutable),
        "the stranger's datagrams were dropped unrouted: {unroutable}"
    );
    assert_eq!(after.state.addr_routes, 2, "garbage created no routes");
}

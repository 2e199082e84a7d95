//! Bad ICE-TCP connections are closed, one by one, while a UDP call goes on untouched: random
//! bytes, an oversize length prefix, a well-formed binding request for an unknown ufrag,
//! silence past the admission timeout, and connections beyond the cap of pending ones.

mod common;

use std::time::Duration;

use common::{start_server_with, Client, ClientOptions, Kind};
use sori_net::TcpConfig;
use sori_testkit::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until the server closes `stream` (EOF or reset), failing after `limit`.
async fn closed_within(stream: &mut TcpStream, what: &str, limit: Duration) {
    let mut buf = [0u8; 256];
    let waited = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: still open after {limit:?}");
}

/// A STUN binding request (RFC 5389 header, USERNAME attribute only) for `username`.
fn binding_request(username: &str) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend_from_slice(b"sori-tcp-txn");
    msg.extend_from_slice(&attr);
    msg
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut f = (packet.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(packet);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tcp_connections_are_closed_and_the_call_goes_on() {
    let tcp = TcpConfig {
        auth_timeout: AUTH_TIMEOUT,
        max_pending: 4,
        ..TcpConfig::default()
    };
    let server = start_server_with(Duration::from_secs(15), Some(tcp)).await;
    let tcp_addr = server.tcp_candidates[0];
    let a = Client::join(&server, ClientOptions::new(0, "garbage")).await;
    let b = Client::join(&server, ClientOptions::new(1, "garbage")).await;
    for (c, other) in [(&a, 1u8), (&b, 0u8)] {
        c.wait_for("video", Duration::from_secs(20), |s| {
            s.frames(other, Kind::Video).len() >= 10
        })
        .await;
    }
    let fast = Duration::from_secs(1);

    // Random bytes: whatever length the first two announce, it is not a binding request
    // (or too long to be one), so the server closes before the admission timeout.
    let random = Rng::new(0x0bad_cafe_1234_5678).bytes(1600);
    let mut s = TcpStream::connect(tcp_addr).await.unwrap();
    s.write_all(&random).await.unwrap();
    closed_within(&mut s, "random bytes", fast).await;

    // A length prefix no binding request has, without the bytes it announces.
    let mut s = TcpStream::connect(tcp_addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    closed_within(&mut s, "oversize length prefix", fast).await;

    // A well-formed binding request for a ufrag no peer has.
    let mut s = TcpStream::connect(tcp_addr).await.unwrap();
    s.write_all(&framed(&binding_request("nosuchufrag:client")))
        .await
        .unwrap();
    closed_within(&mut s, "unknown ufrag", fast).await;

    // Silence: closed at the admission timeout. Four of them fill the pending slots, so a
    // fifth connection is closed at once.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(tcp_addr).await.unwrap());
    }
    // The server accepts in order, so the fourth is counted before the fifth arrives.
    let mut fifth = TcpStream::connect(tcp_addr).await.unwrap();
    closed_within(&mut fifth, "a connection beyond the pending cap", fast).await;
    for s in &mut silent {
        closed_within(s, "a silent connection", AUTH_TIMEOUT * 3).await;
    }

    let stats = server.handle.stats().await.unwrap();
    assert_eq!(stats.tcp.accepted, 7);
    assert_eq!(stats.tcp.refused, 1);
    assert_eq!(stats.tcp.rejected, 7);
    assert_eq!((stats.tcp.open, stats.tcp.pending), (0, 0));
    assert_eq!(stats.state.peers, 2);
    assert_eq!(stats.state.addr_routes, 2, "garbage created no routes");
    assert_eq!(stats.counters.peers_removed, 0);

    // The call never noticed.
    for (c, other) in [(&a, 1u8), (&b, 0u8)] {
        let before = c.state().frames(other, Kind::Video).len();
        let s = c
            .wait_for("video after the garbage", Duration::from_secs(10), |s| {
                s.frames(other, Kind::Video).len() >= before + 30
            })
            .await;
        for kind in [Kind::Audio, Kind::Video] {
            let frames = s.frames(other, kind);
            assert!(frames.iter().all(|f| f.intact));
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(f.seq, frames[0].seq + i as u32, "client {}: gap", c.index);
            }
        }
        assert!(s.removed.is_none());
    }
}

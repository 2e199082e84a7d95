//! The relay refuses peers in loopback, private and link-local ranges unless allowed, and
//! nothing reaches them; the server's own relay addresses stay reachable.

mod common;

use std::net::SocketAddr;

use common::*;
use stun::agent::TransactionId;
use stun::message::{Message, MessageType, Setter, CLASS_INDICATION, METHOD_SEND};
use tokio::net::UdpSocket;
use turn::proto::data::Data;
use turn::proto::peeraddr::PeerAddress;
use webrtc_util::Conn;

/// Loopback is not allowed, but this one address is.
const ALLOWED: &str = "127.0.0.2/32";

/// A raw Send indication toward `peer`, bypassing the client's own permission handling.
fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
        Box::new(PeerAddress {
            ip: peer.ip(),
            port: peer.port(),
        }),
        Box::new(Data(data.to_vec())),
    ];
    let mut m = Message::new();
    m.build(&setters).unwrap();
    m.raw
}

#[tokio::test]
async fn forbidden_peers_get_403_and_receive_nothing() {
    let server = server(&[ALLOWED]).await;
    let conn = udp().await;
    let client = client(server.local_addr(), conn.clone(), &credential("p1")).await;
    let relay = client.allocate().await.expect("allocation succeeds");

    let forbidden = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forbidden_addr = forbidden.local_addr().unwrap();
    assert!(!RELAY_PORTS.contains(&forbidden_addr.port()));
    for peer in [
        forbidden_addr,
        "10.1.2.3:5000".parse().unwrap(),
        "169.254.1.1:5000".parse().unwrap(),
    ] {
        let e = tokio::time::timeout(WAIT, relay.send_to(b"secret", peer))
            .await
            .expect("the server answers")
            .expect_err("a permission toward a forbidden peer is refused");
        assert!(e.to_string().contains("error 403"), "{peer}: {e}");
    }

    // A Send indication without a permission is dropped too.
    let raw = send_indication(forbidden_addr, b"sneaky");
    conn.send_to(&raw, server.local_addr()).await.unwrap();

    // The server handles one client's datagrams in order and loopback delivery is immediate:
    // once the allowed peer has its datagram, anything sent to the forbidden one would be there.
    let allowed = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    round_trip(&relay, &allowed, b"marker").await;
    let mut buf = [0u8; 64];
    let leaked = forbidden.try_recv_from(&mut buf);
    assert!(
        matches!(&leaked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the forbidden peer received {leaked:?}"
    );
    // What /metrics shows: the one allocation, and three permissions plus one Send refused
    // (more only if a request was retransmitted).
    let monitor = server.monitor();
    let stats = monitor.stats().await.expect("the server runs");
    assert_eq!(stats.allocations, 1, "{stats:?}");
    assert!(stats.peers_refused >= 4, "{stats:?}");
    client.close().await.unwrap();
    server.shutdown().await;
    assert_eq!(
        monitor.stats().await,
        None,
        "a stopped server reports nothing"
    );
}

#[tokio::test]
async fn two_allocations_on_the_server_reach_each_other() {
    // Loopback is not allowed here: the relays reach each other as the server's own addresses.
    let server = server(&[]).await;
    let a = client(server.local_addr(), udp().await, &credential("p1")).await;
    let b = client(server.local_addr(), udp().await, &credential("p2")).await;
    let relay_a = a.allocate().await.expect("allocation a");
    let relay_b = b.allocate().await.expect("allocation b");
    let (addr_a, addr_b) = (relay_a.local_addr().unwrap(), relay_b.local_addr().unwrap());
    // Each side permits the other before data flows, as ICE does.
    relay_b.send_to(b"hello a", addr_a).await.expect("b → a");
    relay_a.send_to(b"hello b", addr_b).await.expect("a → b");
    let (got, from) = recv(&relay_b).await;
    assert_eq!((got.as_slice(), from), (&b"hello b"[..], addr_a));
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    relay_b.send_to(&payload, addr_a).await.expect("b → a");
    // "hello a" reached a's relay before a's permission for b existed: dropped, unless a's
    // relay read it only after that permission; either way the payload comes next.
    let (mut got, mut from) = recv(&relay_a).await;
    if got == b"hello a" {
        (got, from) = recv(&relay_a).await;
    }
    assert_eq!((got, from), (payload, addr_b));
    a.close().await.unwrap();
    b.close().await.unwrap();
    server.shutdown().await;
}

//! A participant that left has its credentials revoked: its allocations end at once, it cannot
//! allocate again (401), and everyone else relays on.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use tokio::net::UdpSocket;
use webrtc_util::Conn;

#[tokio::test]
async fn a_revoked_credential_loses_its_relay_and_cannot_allocate_while_others_can() {
    let server = server(&["127.0.0.0/8"]).await;
    let monitor = server.monitor();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (left, stays) = (credential("left"), credential("stays"));
    let leaving = client(server.local_addr(), udp().await, &left).await;
    let left_relay = leaving.allocate().await.expect("allocation before leaving");
    let staying = client(server.local_addr(), udp().await, &stays).await;
    let stays_relay = staying.allocate().await.expect("allocation of another");
    let freed = left_relay.local_addr().unwrap();

    monitor
        .revoke("left", SystemTime::now() + Duration::from_secs(600))
        .await;
    // Its allocation is gone, relay port included.
    assert_eq!(monitor.stats().await.unwrap().allocations, 1);
    UdpSocket::bind(freed)
        .await
        .expect("the revoked allocation's relay port is free");
    // Releasing what is left still works (a closing TCP connection does the same).
    left_relay.close().await.expect("a release passes");

    let again = client(server.local_addr(), udp().await, &left).await;
    let e = match again.allocate().await {
        Ok(r) => panic!("the revoked credential allocated {:?}", r.local_addr()),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("error 401"), "{e}");

    round_trip(&stays_relay, &peer, b"unaffected").await;
    let fresh = client(server.local_addr(), udp().await, &stays).await;
    fresh
        .allocate()
        .await
        .expect("an unrevoked credential allocates");
    let stats = monitor.stats().await.unwrap();
    assert_eq!((stats.revoked_refused, stats.revocations), (1, 1));
    for c in [leaving, staying, again, fresh] {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_revocation_ends_with_the_credentials_it_covers() {
    let server = server(&["127.0.0.0/8"]).await;
    let monitor = server.monitor();
    monitor
        .revoke("gone", SystemTime::now() + Duration::from_secs(1))
        .await;
    assert_eq!(monitor.stats().await.unwrap().revocations, 1);
    // A credential expiring after the revocation's horizon was never covered by it.
    let later =
        sori_turn::credentials::issue(SECRET, "gone", Duration::from_secs(600), SystemTime::now());
    let c = client(server.local_addr(), udp().await, &later).await;
    c.allocate()
        .await
        .expect("a credential outliving the revocation");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(monitor.stats().await.unwrap().revocations, 0);
    c.close().await.unwrap();
    server.shutdown().await;
}

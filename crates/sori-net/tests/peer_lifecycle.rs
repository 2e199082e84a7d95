//! Peers leave by saying so, by closing DTLS, or by vanishing; the others renegotiate and the
//! core keeps nothing of them.

mod common;

use std::time::Duration;

use common::{start_server, Client, ClientOptions, Kind};

async fn all_receiving(clients: &[&Client]) {
    let n = clients.len() as u8;
    for c in clients {
        let me = c.index;
        c.wait_for(
            "video from every other peer",
            Duration::from_secs(20),
            |s| {
                (0..n)
                    .filter(|i| *i != me)
                    .all(|i| s.frames(i, Kind::Video).len() >= 10)
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_disappears_at_the_others() {
    let server = start_server(Duration::from_secs(15)).await;
    let a = Client::join(&server, ClientOptions::new(0, "leave")).await;
    let b = Client::join(&server, ClientOptions::new(1, "leave")).await;
    let c = Client::join(&server, ClientOptions::new(2, "leave")).await;
    all_receiving(&[&a, &b, &c]).await;
    assert_eq!(a.state().active_recv_mids(), 4);

    c.leave();
    for x in [&a, &b] {
        x.wait_for(
            "the leaver's m-lines stopped",
            Duration::from_secs(10),
            |s| s.active_recv_mids() == 2,
        )
        .await;
    }
    let stats = server.handle.stats().await.unwrap();
    assert_eq!(
        (
            stats.state.peers,
            stats.state.tracks,
            stats.state.subscriptions
        ),
        (2, 4, 4)
    );
    assert_eq!(stats.state.ufrag_routes, 2);

    // The two that stayed still hear each other.
    let before = a.state().frames(1, Kind::Video).len();
    a.wait_for("more video from b", Duration::from_secs(10), |s| {
        s.frames(1, Kind::Video).len() >= before + 30
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_dtls_is_removed() {
    let server = start_server(Duration::from_secs(15)).await;
    let a = Client::join(&server, ClientOptions::new(0, "dtls")).await;
    let b = Client::join(&server, ClientOptions::new(1, "dtls")).await;
    all_receiving(&[&a, &b]).await;

    b.close_dtls();
    a.wait_for("b's m-lines stopped", Duration::from_secs(10), |s| {
        s.active_recv_mids() == 0
    })
    .await;
    let stats = server.handle.stats().await.unwrap();
    assert_eq!(
        (
            stats.state.peers,
            stats.state.tracks,
            stats.state.subscriptions
        ),
        (1, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_is_removed_after_the_ice_timeout_and_nothing_of_it_remains() {
    let timeout = Duration::from_secs(2);
    let server = start_server(timeout).await;
    let a = Client::join(&server, ClientOptions::new(0, "vanish")).await;
    let b = Client::join(&server, ClientOptions::new(1, "vanish")).await;
    all_receiving(&[&a, &b]).await;
    let full = server.handle.stats().await.unwrap().state;
    assert_eq!((full.peers, full.ufrag_routes, full.addr_routes), (2, 2, 2));

    let gone = std::time::Instant::now();
    b.vanish().await;
    a.wait_for("b's m-lines stopped", Duration::from_secs(10), |s| {
        s.active_recv_mids() == 0
    })
    .await;
    // b's last datagram left a few milliseconds before `gone`; the timeout counts from it.
    let waited = gone.elapsed();
    assert!(
        waited + Duration::from_millis(100) >= timeout,
        "removed only after the ICE timeout, not {waited:?}"
    );
    let s = server.handle.stats().await.unwrap();
    assert_eq!(s.counters.peers_removed, 1);
    let st = s.state;
    assert_eq!(
        (
            st.peers,
            st.rooms,
            st.tracks,
            st.subscriptions,
            st.ufrag_routes,
            st.addr_routes,
            st.timers
        ),
        (1, 1, 2, 0, 1, 1, 1),
        "only a's state remains"
    );

    a.leave();
    a.wait_for("leave done", Duration::from_secs(5), |s| s.finished)
        .await;
    let st = server.handle.stats().await.unwrap().state;
    assert_eq!(st, Default::default(), "the core is empty");
}

//! A media port bound to `0.0.0.0` that advertises an address other than the one its route
//! back would pick (here 127.0.0.2, while clients sit on 127.0.0.1): every reply must still come
//! from the advertised address, or no connectivity check succeeds.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{start_server_at, Client, ClientOptions, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_connect_and_exchange_media_through_a_secondary_address() {
    let secondary = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let server = start_server_at(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        vec![secondary],
        Duration::from_secs(15),
        None,
    )
    .await;
    assert_eq!(server.candidates[0].ip(), secondary);
    let a = Client::join(&server, ClientOptions::new(0, "secondary")).await;
    let b = Client::join(&server, ClientOptions::new(1, "secondary")).await;
    for (c, other) in [(&a, 1u8), (&b, 0u8)] {
        c.wait_for("the other's media", Duration::from_secs(20), |s| {
            s.frames(other, Kind::Video).len() >= 30 && s.frames(other, Kind::Audio).len() >= 50
        })
        .await;
        assert_eq!(
            c.state().foreign_datagrams,
            0,
            "every datagram came from 127.0.0.2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_and_an_ipv6_client_meet_on_one_dual_stack_port() {
    let v4 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let server = start_server_at(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        vec![v4, v6],
        Duration::from_secs(15),
        None,
    )
    .await;
    assert!(
        server.local_addr.is_ipv6(),
        "an IPv6 candidate makes the socket dual-stack"
    );
    let a = Client::join(&server, ClientOptions::new(0, "dual")).await;
    let b = Client::join(
        &server,
        ClientOptions {
            candidate: 1,
            ..ClientOptions::new(1, "dual")
        },
    )
    .await;
    assert!(b.addr.is_ipv6());
    for (c, other) in [(&a, 1u8), (&b, 0u8)] {
        c.wait_for("the other's media", Duration::from_secs(20), |s| {
            s.frames(other, Kind::Video).len() >= 30 && s.frames(other, Kind::Audio).len() >= 50
        })
        .await;
        assert_eq!(c.state().foreign_datagrams, 0);
    }
}

//! An allocation made with a Sori-issued credential relays data both ways, over UDP and TCP;
//! one made over TCP ends with its connection.

mod common;

use common::*;
use webrtc_util::Conn;

#[tokio::test]
async fn udp_allocation_relays_both_ways_byte_equal() {
    let server = server(&["127.0.0.0/8"]).await;
    let conn = udp().await;
    let client = client(server.local_addr(), conn, &credential("p1")).await;
    let relay = client.allocate().await.expect("allocation succeeds");
    let relay_addr = relay.local_addr().unwrap();
    assert!(RELAY_PORTS.contains(&relay_addr.port()), "{relay_addr}");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [1, 5, 160, 1200] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        round_trip(&relay, &peer, &data).await;
    }
    client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_allocation_relays_both_ways_byte_equal() {
    let server = server(&["127.0.0.0/8"]).await;
    let conn = TcpClient::connect(server.local_addr()).await;
    let client = client(server.local_addr(), conn, &credential("p2")).await;
    let relay = client
        .allocate()
        .await
        .expect("allocation over TCP succeeds");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // 5 and 161 bytes: ChannelData and Data frames that need padding on the stream.
    for size in [5, 161, 1200] {
        let data: Vec<u8> = (0..size).map(|i| (i * 3 + size) as u8).collect();
        round_trip(&relay, &peer, &data).await;
    }
    client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn closing_a_tcp_connection_releases_its_allocation_and_no_other() {
    let server = server(&["127.0.0.0/8"]).await;
    let monitor = server.monitor();
    let udp_client = client(server.local_addr(), udp().await, &credential("stays")).await;
    let udp_relay = udp_client.allocate().await.expect("allocation over UDP");
    let conn = TcpClient::connect(server.local_addr()).await;
    let tcp_client = client(server.local_addr(), conn.clone(), &credential("leaves")).await;
    let tcp_relay = tcp_client.allocate().await.expect("allocation over TCP");
    let released = tcp_relay.local_addr().unwrap();
    assert_eq!(monitor.stats().await.unwrap().allocations, 2);

    conn.hang_up().await;
    // The server reports no event for this; its count is polled, within WAIT.
    let deadline = tokio::time::Instant::now() + WAIT;
    while monitor.stats().await.unwrap().allocations != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TCP allocation is still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Its relay port is free again; the UDP allocation still relays.
    tokio::net::UdpSocket::bind(released)
        .await
        .expect("the released relay port can be bound");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    round_trip(&udp_relay, &peer, b"still here").await;
    assert_eq!(monitor.stats().await.unwrap().allocations, 1);
    // The TCP listener itself still serves new clients.
    let again = TcpClient::connect(server.local_addr()).await;
    let again_client = client(server.local_addr(), again, &credential("returns")).await;
    let again_relay = again_client
        .allocate()
        .await
        .expect("a new allocation over TCP");
    round_trip(&again_relay, &peer, b"back").await;
    udp_client.close().await.unwrap();
    tcp_client.close().await.unwrap();
    again_client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_released_tcp_allocation_leaves_the_listener_serving_others() {
    let server = server(&["127.0.0.0/8"]).await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let conn = TcpClient::connect(server.local_addr()).await;
    let first = client(server.local_addr(), conn, &credential("first")).await;
    let relay = first.allocate().await.expect("allocation over TCP");
    let conn = TcpClient::connect(server.local_addr()).await;
    let second = client(server.local_addr(), conn, &credential("second")).await;
    let other = second
        .allocate()
        .await
        .expect("another allocation over TCP");
    // The first client releases its allocation itself (Refresh, lifetime 0), as a browser does
    // when it closes its connection.
    relay.close().await.expect("the allocation is released");
    round_trip(&other, &peer, b"unaffected").await;
    let conn = TcpClient::connect(server.local_addr()).await;
    let third = client(server.local_addr(), conn, &credential("third")).await;
    let relay = third.allocate().await.expect("a new allocation over TCP");
    round_trip(&relay, &peer, b"new").await;
    for c in [first, second, third] {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn stun_binding_answers_the_mapped_address_on_udp() {
    let server = server(&[]).await;
    let conn = udp().await;
    let local = conn.local_addr().unwrap();
    let client = client(server.local_addr(), conn, &credential("p3")).await;
    let mapped = tokio::time::timeout(WAIT, client.send_binding_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapped, local);
    client.close().await.unwrap();
    server.shutdown().await;
}

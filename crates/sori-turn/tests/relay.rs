//! An allocation made with a Sori-issued credential relays data both ways, over UDP and TCP.

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

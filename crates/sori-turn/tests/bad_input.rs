//! Garbage on either transport changes nothing: the server keeps serving everyone else.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc_util::Conn;

#[tokio::test]
async fn garbage_on_udp_and_tcp_leaves_the_server_serving() {
    let server = server(&["127.0.0.0/8"]).await;
    let addr = server.local_addr();

    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut truncated_stun = vec![0x00, 0x03, 0x00, 0x40, 0x21, 0x12, 0xa4, 0x42];
    truncated_stun.extend_from_slice(&[7; 12]);
    for datagram in [
        &[][..],
        &[0xff; 3][..],
        &[0x40, 0x00, 0xff, 0xff, 1, 2][..], // ChannelData claiming more than it holds
        &truncated_stun[..],
        &[0u8; 1400][..],
    ] {
        junk.send_to(datagram, addr).await.unwrap();
    }

    // A stream that is neither STUN nor ChannelData is closed by the server.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    let client = client(addr, udp().await, &credential("p1")).await;
    let relay = client.allocate().await.expect("allocation still succeeds");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    round_trip(&relay, &peer, b"still here").await;
    assert!(relay.local_addr().is_ok());
    client.close().await.unwrap();
    server.shutdown().await;
}

//! TURN bound to `0.0.0.0`, asked on a secondary address of its host (127.0.0.2) by a client
//! whose route back leaves from another (127.0.0.1): the answer comes from the address asked,
//! or the client would not take it as the answer.

use std::net::SocketAddr;
use std::time::Duration;

use sori_turn::{AllocationLimits, TurnConfig, TurnServer};
use tokio::net::UdpSocket;

#[tokio::test]
async fn a_binding_request_is_answered_from_the_address_it_was_sent_to() {
    let server = TurnServer::start(TurnConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        relay_bind: "127.0.0.1".parse().unwrap(),
        relay_ip: "127.0.0.1".parse().unwrap(),
        relay_ports: 62_500..=62_599,
        secret: "addressed-test-secret".into(),
        realm: "sori.test".into(),
        allow: Vec::new(),
        own: Vec::new(),
        tls: None,
        limits: AllocationLimits::default(),
    })
    .await
    .unwrap();
    let asked: SocketAddr =
        SocketAddr::new("127.0.0.2".parse().unwrap(), server.local_addr().port());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for txid in [*b"sori-second1", *b"sori-second2"] {
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&txid);
        client.send_to(&request, asked).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
            .await
            .expect("an answer within the wait")
            .unwrap();
        assert_eq!(from, asked, "answered from the address asked");
        assert!(
            n >= 20 && buf[..2] == [0x01, 0x01],
            "a Binding success response"
        );
        assert_eq!(&buf[8..20], &txid);
    }
    server.shutdown().await;
}

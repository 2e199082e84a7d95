//! One credential, or one client address, cannot hold more than its cap of allocations: the
//! next Allocate gets 486 while everyone else keeps allocating, and a slot is free again once
//! its allocation is released, closed with its TCP connection, or expired.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sori_turn::{AllocationLimits, Credential, TurnServer};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{Getter, Message, MessageType, Setter, CLASS_REQUEST, METHOD_ALLOCATE};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use turn::client::Client;
use turn::proto::lifetime::Lifetime;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;
use webrtc_util::Conn;

async fn capped(per_username: usize, per_ip: usize) -> TurnServer {
    server_with(
        &["127.0.0.0/8"],
        None,
        AllocationLimits {
            per_username,
            per_ip,
        },
    )
    .await
}

/// A client of `server` on its own UDP socket, bound to `ip`, with `credential`.
async fn udp_client(server: &TurnServer, ip: &str, credential: &Credential) -> Client {
    let socket = Arc::new(UdpSocket::bind((ip, 0)).await.unwrap());
    client(server.local_addr(), socket, credential).await
}

/// The error an Allocate of `client` gets; panics when it succeeds.
async fn refusal(client: &Client) -> String {
    match tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("the server answers")
    {
        Ok(relay) => panic!("allocated {:?}", relay.local_addr()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_username_past_its_cap_gets_486_while_another_still_allocates() {
    let server = capped(2, 0).await;
    let farmed = credential("farmer");
    let mut clients = Vec::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let c = udp_client(&server, "127.0.0.1", &farmed).await;
        relays.push(c.allocate().await.expect("allocation within the cap"));
        clients.push(c);
    }
    let over = udp_client(&server, "127.0.0.1", &farmed).await;
    let e = refusal(&over).await;
    assert!(e.contains("error 486"), "{e}");

    let honest = udp_client(&server, "127.0.0.1", &credential("honest")).await;
    let relay = honest.allocate().await.expect("another username allocates");
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    round_trip(&relay, &peer, b"still relaying").await;
    round_trip(&relays[0], &peer, b"and so do the first two").await;
    let stats = server.monitor().stats().await.unwrap();
    assert_eq!((stats.allocations, stats.quota_refused), (3, 1));

    for c in clients.iter().chain([&over, &honest]) {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_address_past_its_cap_gets_486_while_another_address_still_allocates() {
    let server = capped(0, 2).await;
    let a = udp_client(&server, "127.0.0.1", &credential("a")).await;
    let b = udp_client(&server, "127.0.0.1", &credential("b")).await;
    let _relay_a = a
        .allocate()
        .await
        .expect("first allocation from the address");
    let _relay_b = b
        .allocate()
        .await
        .expect("second allocation from the address");
    // A fresh username does not help: the address holds its cap.
    let c = udp_client(&server, "127.0.0.1", &credential("c")).await;
    let e = refusal(&c).await;
    assert!(e.contains("error 486"), "{e}");

    // 127.0.0.2 is loopback too, but another client address.
    let elsewhere = udp_client(&server, "127.0.0.2", &credential("c")).await;
    elsewhere
        .allocate()
        .await
        .expect("another address allocates");
    for c in [a, b, c, elsewhere] {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn released_and_disconnected_allocations_free_their_slots() {
    let server = capped(1, 0).await;
    let monitor = server.monitor();
    let cred = credential("one");
    let first = udp_client(&server, "127.0.0.1", &cred).await;
    let relay = first.allocate().await.expect("the one allocation");
    let second = udp_client(&server, "127.0.0.1", &cred).await;
    assert!(refusal(&second).await.contains("error 486"));

    // Released by the client (Refresh, lifetime 0): the slot is free.
    relay.close().await.expect("the allocation is released");
    let third = udp_client(&server, "127.0.0.1", &cred).await;
    let relay = third
        .allocate()
        .await
        .expect("the freed slot is taken again");

    // Over TCP: a hung-up connection ends its allocation, and frees its slot.
    relay.close().await.expect("released again");
    let conn = TcpClient::connect(server.local_addr()).await;
    let tcp = client(server.local_addr(), conn.clone(), &cred).await;
    let _relay = tcp.allocate().await.expect("allocation over TCP");
    conn.hang_up().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while monitor.stats().await.unwrap().allocations != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still allocated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fourth = udp_client(&server, "127.0.0.1", &cred).await;
    fourth
        .allocate()
        .await
        .expect("the TCP connection's slot is free");
    for c in [first, second, third, tcp, fourth] {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

/// Allocates on `socket` with `lifetime`, the way a client does (an unauthenticated request,
/// then one answering the challenge); returns the error code, if any.
async fn raw_allocate(
    socket: &UdpSocket,
    server: &TurnServer,
    credential: &Credential,
    lifetime: Duration,
) -> Option<u16> {
    let request = |extra: Vec<Box<dyn Setter>>| {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
            Box::new(Lifetime(lifetime)),
        ];
        setters.extend(extra);
        let mut m = Message::new();
        m.build(&setters).unwrap();
        m.raw
    };
    let answer = |raw: Vec<u8>| {
        let mut m = Message::new();
        m.raw = raw;
        m.decode().unwrap();
        m
    };
    socket
        .send_to(&request(Vec::new()), server.local_addr())
        .await
        .unwrap();
    let challenge = answer(recv(socket).await.0);
    let nonce = TextAttribute::get_from_as(&challenge, ATTR_NONCE).expect("a nonce");
    let key = turn::auth::generate_auth_key(&credential.username, REALM, &credential.password);
    let signed = request(vec![
        Box::new(TextAttribute::new(
            ATTR_USERNAME,
            credential.username.clone(),
        )),
        Box::new(TextAttribute::new(ATTR_REALM, REALM.into())),
        Box::new(nonce),
        Box::new(MessageIntegrity(key)),
    ]);
    socket.send_to(&signed, server.local_addr()).await.unwrap();
    let reply = answer(recv(socket).await.0);
    let mut code = ErrorCodeAttribute::default();
    code.get_from(&reply).ok().map(|_| code.code.0)
}

#[tokio::test]
async fn an_expired_allocation_frees_its_slot() {
    let server = capped(1, 0).await;
    let cred = credential("brief");
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        raw_allocate(&a, &server, &cred, Duration::from_secs(1)).await,
        None
    );
    assert_eq!(
        raw_allocate(&b, &server, &cred, Duration::from_secs(1)).await,
        Some(486)
    );
    // Nobody refreshes it: the allocation expires after its second, and so does its slot.
    let monitor = server.monitor();
    let deadline = tokio::time::Instant::now() + WAIT;
    while monitor.stats().await.unwrap().allocations != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still allocated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        raw_allocate(&b, &server, &cred, Duration::from_secs(60)).await,
        None
    );
    server.shutdown().await;
}

//! TURN credentials belong to admitted participants: `joined` carries one, it is renewed while
//! the participant stays, and the embedded TURN server refuses it once the participant left.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{server_with, Client, LOCALHOST, WAIT};
use serde_json::{json, Value};
use sori_signal::{SignalConfig, TurnAccess};
use sori_turn::{AllocationLimits, TurnConfig, TurnServer};
use tokio::net::UdpSocket;
use turn::client::{Client as TurnClient, ClientConfig};

const SECRET: &str = "turn-credentials-test-secret";
const REALM: &str = "sori.test";

/// Allocates a relay with the credential of `ice`; whether the server granted it.
async fn allocates(server: std::net::SocketAddr, ice: &Value) -> bool {
    let conn = Arc::new(UdpSocket::bind((LOCALHOST, 0)).await.unwrap());
    let client = TurnClient::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: ice["username"].as_str().unwrap().to_string(),
        password: ice["credential"].as_str().unwrap().to_string(),
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let granted = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("an answer within the wait")
        .is_ok();
    let _ = client.close().await;
    granted
}

async fn turn_server() -> TurnServer {
    TurnServer::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_bind: LOCALHOST,
        relay_ip: LOCALHOST,
        relay_ports: 62_000..=62_999,
        secret: SECRET.into(),
        realm: REALM.into(),
        allow: Vec::new(),
        own: Vec::new(),
        tls: None,
        limits: AllocationLimits::default(),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_who_left_can_no_longer_relay() {
    let turn = turn_server().await;
    let addr = turn.local_addr();
    let s = server_with(SignalConfig {
        turn: Some(TurnAccess {
            urls: vec![format!("turn:{addr}?transport=udp")],
            secret: SECRET.into(),
            ttl: Duration::from_secs(600),
        }),
        turn_monitor: Some(turn.monitor()),
        ..SignalConfig::default()
    })
    .await;
    let (ada, joined_a) = Client::join(&s.url, "t", "Ada").await;
    let (_bo, joined_b) = Client::join(&s.url, "t", "Bo").await;
    let ada_ice = joined_a["ice_servers"][0].clone();
    let bo_ice = joined_b["ice_servers"][0].clone();
    assert!(
        allocates(addr, &ada_ice).await,
        "Ada's credential works while she is here"
    );
    // Closing waits until the server let her go.
    ada.close().await;
    assert!(!allocates(addr, &ada_ice).await, "refused once she left");
    assert!(allocates(addr, &bo_ice).await, "Bo's still works");
    turn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_renewed_while_the_participant_stays() {
    let s = server_with(SignalConfig {
        turn: Some(TurnAccess {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret: SECRET.into(),
            ttl: Duration::from_secs(2),
        }),
        ..SignalConfig::default()
    })
    .await;
    let (mut ada, joined) = Client::join(&s.url, "t", "Ada").await;
    let first = joined["ice_servers"][0]["username"].clone();
    let renewed = ada.expect("ice-servers").await;
    let server = &renewed["ice_servers"][0];
    assert_eq!(server["urls"], json!(["turn:127.0.0.1:3478?transport=udp"]));
    assert_ne!(server["username"], first, "a later expiry");
    assert_eq!(
        server["credential"].as_str().unwrap(),
        sori_turn::credentials::password(SECRET, server["username"].as_str().unwrap())
    );
}

//! TURN over TLS: the same allocations and relaying as over TCP, after a handshake; streams that
//! are not TLS, or never finish the handshake, are closed without disturbing anyone else.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sori_turn::rustls::pki_types::{CertificateDer, ServerName};
use sori_turn::{tls, TlsError, TurnServer, TurnTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc_util::Conn;

async fn tls_server() -> (TurnServer, CertificateDer<'static>) {
    let (cert, key) = self_signed();
    let config = tls::server_config(vec![cert.clone()], key).expect("a usable certificate");
    let server = server_with_tls(
        &["127.0.0.0/8"],
        Some(TurnTls {
            listen: "127.0.0.1:0".parse().unwrap(),
            config,
        }),
    )
    .await;
    (server, cert)
}

/// Allocates over a TLS connection checked for `host` and relays a few sizes both ways.
async fn allocate_and_relay(
    server: &TurnServer,
    host: &str,
    cert: &CertificateDer<'static>,
    id: &str,
) {
    let tls_addr = server.tls_addr().expect("TLS is on");
    let conn = TcpClient::connect_tls(tls_addr, host, cert).await;
    let client = client(tls_addr, conn, &credential(id)).await;
    let relay = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("the allocation answers in time")
        .expect("allocation over TLS succeeds");
    assert!(RELAY_PORTS.contains(&relay.local_addr().unwrap().port()));
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [5, 161, 1200] {
        let data: Vec<u8> = (0..size).map(|i| (i * 5 + size) as u8).collect();
        round_trip(&relay, &peer, &data).await;
    }
    client.close().await.unwrap();
}

/// Reads until the server closes the connection; panics if it has not within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) {
    let mut buf = [0u8; 512];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // e.g. a TLS alert before the close
            }
        }
    })
    .await
    .expect("the server closes the connection");
}

#[tokio::test]
async fn tls_allocation_relays_both_ways_byte_equal() {
    let (server, cert) = tls_server().await;
    assert_ne!(server.tls_addr(), Some(server.local_addr()));
    // The certificate names both; browsers check the host of the turns: URL against it.
    allocate_and_relay(&server, "localhost", &cert, "p1").await;
    allocate_and_relay(&server, "127.0.0.1", &cert, "p2").await;
    server.shutdown().await;
}

#[tokio::test]
async fn plaintext_stun_on_the_tls_port_is_closed_and_the_server_keeps_serving() {
    let (server, cert) = tls_server().await;
    let tls_addr = server.tls_addr().unwrap();
    // A STUN Binding request, as a client configured with turn: instead of turns: would send.
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend_from_slice(&[9; 12]);
    let mut plain = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    plain.write_all(&binding).await.unwrap();
    closed_within(&mut plain, WAIT).await;

    allocate_and_relay(&server, "localhost", &cert, "p3").await;
    // Plain TCP on the main port is unaffected too.
    let conn = TcpClient::connect(server.local_addr()).await;
    let client = client(server.local_addr(), conn, &credential("p4")).await;
    client
        .allocate()
        .await
        .expect("allocation over TCP succeeds");
    client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_closed_after_the_timeout() {
    let (server, cert) = tls_server().await;
    let tls_addr = server.tls_addr().unwrap();
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    // Meanwhile others complete theirs.
    allocate_and_relay(&server, "localhost", &cert, "p5").await;
    closed_within(&mut silent, WAIT).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "closed after {waited:?}, before the 5 s handshake timeout"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_gets_no_connection() {
    let (server, _) = tls_server().await;
    let (other, _) = self_signed();
    let stream = tokio::net::TcpStream::connect(server.tls_addr().unwrap())
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(&other));
    let name = ServerName::try_from("localhost").unwrap();
    let result = tokio::time::timeout(WAIT, connector.connect(name, stream))
        .await
        .expect("the handshake ends in time");
    assert!(result.is_err(), "a certificate the client does not trust");
    server.shutdown().await;
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sori-turn-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn pem_files_load_and_errors_name_the_file() {
    let dir = TempDir::new("pem");
    let (cert, key) = self_signed();
    let cert_pem = dir.write("cert.pem", &pem("CERTIFICATE", &cert));
    let key_pem = dir.write("key.pem", &pem("PRIVATE KEY", key.secret_der()));

    // A loaded pair serves: a client trusting the certificate allocates and relays.
    let config = tls::load_pem(&cert_pem, &key_pem).expect("the PEM files load");
    let server = server_with_tls(
        &["127.0.0.0/8"],
        Some(TurnTls {
            listen: "127.0.0.1:0".parse().unwrap(),
            config: Arc::clone(&config),
        }),
    )
    .await;
    allocate_and_relay(&server, "localhost", &cert, "p6").await;
    server.shutdown().await;

    let missing = dir.0.join("missing.pem");
    let e = tls::load_pem(&missing, &key_pem).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");

    let garbage = dir.write("garbage.pem", "not a certificate\n");
    let e = tls::load_pem(&garbage, &key_pem).unwrap_err();
    assert!(e.to_string().contains("garbage.pem"), "{e}");
    let e = tls::load_pem(&cert_pem, &garbage).unwrap_err();
    assert!(e.to_string().contains("garbage.pem"), "{e}");
    // Certificate and key swapped.
    let e = tls::load_pem(&key_pem, &cert_pem).unwrap_err();
    assert!(e.to_string().contains("key.pem"), "{e}");

    let (_, other_key) = self_signed();
    let other = dir.write("other-key.pem", &pem("PRIVATE KEY", other_key.secret_der()));
    let e = tls::load_pem(&cert_pem, &other).unwrap_err();
    assert!(e.to_string().contains("other-key.pem"), "{e}");
}

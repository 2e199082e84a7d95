//! A TURN server on 127.0.0.1 and clients of the `turn` crate, over UDP, TCP or TLS.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sori_turn::rustls;
use sori_turn::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sori_turn::{credentials, AllocationLimits, Credential, TurnConfig, TurnServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

pub const SECRET: &str = "test-secret";
pub const REALM: &str = "sori";
/// Above Linux's ephemeral ports (32768–60999), so test peers never land in it.
pub const RELAY_PORTS: std::ops::RangeInclusive<u16> = 61000..=61999;
/// Every wait in these tests ends by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn server(allow: &[&str]) -> TurnServer {
    server_with_tls(allow, None).await
}

/// A TURN server that also speaks TLS on a port of its own when `tls` is given.
pub async fn server_with_tls(allow: &[&str], tls: Option<sori_turn::TurnTls>) -> TurnServer {
    server_with(allow, tls, AllocationLimits::default()).await
}

/// A TURN server with allocation caps `limits`.
pub async fn server_with(
    allow: &[&str],
    tls: Option<sori_turn::TurnTls>,
    limits: AllocationLimits,
) -> TurnServer {
    TurnServer::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_bind: "127.0.0.1".parse().unwrap(),
        relay_ip: "127.0.0.1".parse().unwrap(),
        relay_ports: RELAY_PORTS,
        secret: SECRET.into(),
        realm: REALM.into(),
        allow: allow.iter().map(|p| p.parse().unwrap()).collect(),
        own: Vec::new(),
        tls,
        limits,
    })
    .await
    .expect("the TURN server starts")
}

/// A credential as the session server issues it.
pub fn credential(participant: &str) -> Credential {
    credentials::issue(
        SECRET,
        participant,
        Duration::from_secs(600),
        SystemTime::now(),
    )
}

/// A listening client of `server` over `conn`.
pub async fn client(
    server: SocketAddr,
    conn: Arc<dyn Conn + Send + Sync>,
    credential: &Credential,
) -> Client {
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: credential.username.clone(),
        password: credential.password.clone(),
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("client listens");
    client
}

/// A UDP client socket on loopback.
pub async fn udp() -> Arc<UdpSocket> {
    Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
}

/// Receives one datagram within [`WAIT`].
pub async fn recv(conn: &(impl Conn + ?Sized)) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, conn.recv_from(&mut buf))
        .await
        .expect("a datagram arrives in time")
        .expect("receive");
    buf.truncate(n);
    (buf, from)
}

/// Sends `data` through `relay` to `peer` and back; asserts both arrive byte-equal.
pub async fn round_trip(relay: &(impl Conn + ?Sized), peer: &UdpSocket, data: &[u8]) {
    let peer_addr = peer.local_addr().unwrap();
    let relay_addr = relay.local_addr().unwrap();
    relay.send_to(data, peer_addr).await.expect("relay send");
    let (got, from) = recv(peer).await;
    assert_eq!(got, data, "client → peer");
    assert_eq!(from, relay_addr, "the peer sees the relayed address");
    let back: Vec<u8> = data.iter().rev().copied().collect();
    peer.send_to(&back, relay_addr).await.unwrap();
    let (got, from) = recv(relay).await;
    assert_eq!(got, back, "peer → client");
    assert_eq!(from, peer_addr);
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its PKCS#8 key.
pub fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen makes a certificate");
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    (generated.cert.der().clone(), key)
}

/// `der` as a PEM block of `label` (e.g. "CERTIFICATE", "PRIVATE KEY").
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A TLS client configuration trusting `cert` only.
pub fn tls_client_config(cert: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A client's TCP (or TLS) connection to the TURN server, framed as RFC 5766 §2.1 says.
pub struct TcpClient {
    server: SocketAddr,
    local: SocketAddr,
    reader: tokio::sync::Mutex<Reader>,
    writer: tokio::sync::Mutex<Writer>,
}

impl TcpClient {
    pub async fn connect(server: SocketAddr) -> Arc<TcpClient> {
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        Self::over(stream, server, local)
    }

    /// A TLS connection to `server`, checked against `cert` for the name `host`.
    pub async fn connect_tls(
        server: SocketAddr,
        host: &str,
        cert: &CertificateDer<'static>,
    ) -> Arc<TcpClient> {
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls_client_config(cert));
        let name = ServerName::try_from(host.to_string()).unwrap();
        let stream = tokio::time::timeout(WAIT, connector.connect(name, stream))
            .await
            .expect("the TLS handshake ends in time")
            .expect("the TLS handshake succeeds");
        Self::over(stream, server, local)
    }

    /// Ends the connection from this side (FIN), as a browser does when it leaves, without
    /// releasing the allocation first.
    pub async fn hang_up(&self) {
        let _ = self.writer.lock().await.shutdown().await;
    }

    fn over(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        server: SocketAddr,
        local: SocketAddr,
    ) -> Arc<TcpClient> {
        let (reader, writer) = tokio::io::split(stream);
        Arc::new(TcpClient {
            server,
            local,
            reader: tokio::sync::Mutex::new(Box::new(reader)),
            writer: tokio::sync::Mutex::new(Box::new(writer)),
        })
    }
}

#[async_trait]
impl Conn for TcpClient {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut reader = self.reader.lock().await;
        let mut header = [0u8; 4];
        reader.read_exact(&mut header).await?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let total = if header[0] & 0xc0 == 0x40 {
            4 + len.div_ceil(4) * 4
        } else {
            20 + len
        };
        buf[..4].copy_from_slice(&header);
        reader.read_exact(&mut buf[4..total]).await?;
        Ok((total, self.server))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        let mut writer = self.writer.lock().await;
        writer.write_all(buf).await?;
        writer.flush().await?;
        Ok(buf.len())
    }
    async fn send_to(&self, buf: &[u8], _: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

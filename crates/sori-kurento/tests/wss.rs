//! `sori signal --media wss://…`: the remote media client speaks TLS, trusting the system's
//! roots — here a test certificate given through `SSL_CERT_FILE` — and joins a room through a
//! TLS front of the control API.

mod common;

use std::sync::Arc;

use common::{offer, server, LOCALHOST};
use rustls::pki_types::PrivateKeyDer;
use sori_kurento_client::RemoteMedia;
use str0m::media::Direction;
use tokio::net::{TcpListener, TcpStream};

/// `der` as a PEM certificate.
fn pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn remote_media_joins_through_wss() {
    let s = server().await;
    let backend = s
        .url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sori-kurento-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem(generated.cert.der())).unwrap();
    // This test is alone in its process: nothing else reads the environment meanwhile.
    std::env::set_var("SSL_CERT_FILE", &ca);

    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let front = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = front.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = front.accept().await {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });

    let media = RemoteMedia::connect(&format!("wss://localhost:{port}/kurento"))
        .await
        .unwrap();
    let joined = media
        .join("room", &offer(Direction::SendRecv))
        .await
        .unwrap();
    assert!(joined.answer.starts_with("v=0"), "{}", joined.answer);
    let (_, pipelines, elements) = s.kurento.counts().await;
    assert_eq!((pipelines, elements), (1, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

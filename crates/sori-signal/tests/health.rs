//! `/healthz` tells the truth: 200 only when the media server answers a round trip; a media
//! server that fails or does not answer (frozen) makes it 503 within its 2 s wait.

mod common;

use std::time::Instant;

use common::stub::{self, Health, StubMedia};
use common::{http_get, WAIT};

/// `GET /healthz`: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = http_get(addr, path, &[]).await;
    (r.status, String::from_utf8_lossy(&r.body).to_string())
}
use sori_signal::SignalConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_from_the_media_server() {
    let stub = StubMedia::new(None);
    let (_, http) = stub::server(&stub, SignalConfig::default()).await;
    assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_string()));

    stub.set_health(Health::Fails);
    let (status, body) = get(http, "/healthz").await;
    assert_eq!(status, 503);
    assert!(body.contains("the media task stopped"), "{body}");

    // A frozen media server: no answer, and the check says so after its wait.
    stub.set_health(Health::Hangs);
    let asked = Instant::now();
    let (status, body) = get(http, "/healthz").await;
    assert_eq!(status, 503);
    assert!(body.contains("did not answer"), "{body}");
    assert!(asked.elapsed() < WAIT, "answered in {:?}", asked.elapsed());

    stub.set_health(Health::Answers);
    assert_eq!(get(http, "/healthz").await.0, 200);
}

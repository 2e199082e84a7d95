//! An offer that failed because the media server could not be reached is made again once it
//! answers: the browser gets `mode` and its next offer starts new media. An offer refused by a
//! media server that answers is not sent round again.

mod common;

use common::stub::{self, Health, StubMedia};
use common::{offer, Client};
use serde_json::{json, Value};
use sori_media::PeerRef;
use sori_signal::SignalConfig;

/// Sends `ping` and returns what arrives before its `pong`.
async fn until_pong(c: &mut Client) -> Vec<Value> {
    c.send(json!({"type": "ping"}));
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == "pong" {
            return before;
        }
        before.push(v);
    }
}

#[tokio::test]
async fn an_offer_lost_to_an_unreachable_media_server_is_made_again_once_it_answers() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);

    stub.set_unreachable(true);
    stub.set_health(Health::Fails);
    c.send(json!({"type": "offer", "sdp": offer()}));
    let e = c.expect("error").await;
    assert_eq!(e["code"], "media-error", "{e}");
    // Asked at once, then again while it fails: no `mode` meanwhile.
    stub.wait_until("health asked twice", |s| s.health_asked() >= 2)
        .await;
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());

    stub.set_unreachable(false);
    stub.set_health(Health::Answers);
    let mode = c.expect("mode").await;
    assert_eq!(mode["mode"], "sfu");
    // The browser's new peer connection: the old media goes, new media is joined.
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert_eq!(stub.left(), vec![PeerRef::Remote("stub-1".into())]);
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert_eq!(
        stub.left().len(),
        1,
        "a later offer renegotiates the new media"
    );
}

#[tokio::test]
async fn an_offer_refused_by_a_media_server_that_answers_is_not_sent_round() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    stub.set_unreachable(true);
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("error").await["code"], "media-error");
    stub.wait_until("health asked", |s| s.health_asked() >= 1)
        .await;
    // The media server answered its health check: nothing to wait for.
    stub.set_unreachable(false);
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert!(stub.left().is_empty());
}

//! A join (the first offer) that failed because the media server could not be reached is made
//! again once it answers: the browser gets `mode` and its next offer starts new media. An
//! offer refused by a media server that answers, and a failed renegotiation, are not sent
//! round again. A participant whose socket waits for a
//! media server that does not answer can still be resumed on a new socket.

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
async fn a_join_lost_to_an_unreachable_media_server_is_made_again_once_it_answers() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
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
    // The browser's new peer connection joins; its later offers renegotiate that media.
    let sdp = offer();
    c.send(json!({"type": "offer", "sdp": sdp}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    c.send(json!({"type": "offer", "sdp": sdp}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert!(stub.left().is_empty(), "{:?}", stub.left());
}

/// A renegotiation (an ICE restart during an outage) that fails is not sent round: the media
/// it was for may have outlived the outage, and the browser offers again by itself.
#[tokio::test]
async fn a_renegotiation_lost_to_an_unreachable_media_server_is_not_sent_round() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    let sdp = offer();
    c.send(json!({"type": "offer", "sdp": sdp}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    stub.set_unreachable(true);
    stub.set_health(Health::Fails);
    c.send(json!({"type": "offer", "sdp": sdp}));
    assert_eq!(c.expect("error").await["code"], "media-error");
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());
    assert_eq!(stub.health_asked(), 0, "no wait for the media server");
    stub.set_unreachable(false);
    c.send(json!({"type": "offer", "sdp": sdp}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert!(stub.left().is_empty(), "the same media, renegotiated");
}

/// The media server thaws while the first health check after the failure waits for it: it
/// answers that check late, so it was not up when the offer failed, and the offer is made again.
#[tokio::test]
async fn a_join_lost_to_a_media_server_that_thaws_during_the_check_is_made_again() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    stub.set_unreachable(true);
    stub.set_health(Health::Thaws(std::time::Duration::from_millis(700)));
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("error").await["code"], "media-error");
    stub.set_unreachable(false);
    assert_eq!(c.expect("mode").await["mode"], "sfu");
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
}

/// The media server answered no join (its connection was lost, or the reply came too late)
/// and is back by the first health check: the join is made again all the same.
#[tokio::test]
async fn a_join_that_got_no_answer_is_made_again_when_the_media_server_answers_at_once() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    stub.set_unreachable(true);
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("error").await["code"], "media-error");
    stub.set_unreachable(false);
    assert_eq!(c.expect("mode").await["mode"], "sfu");
    assert_eq!(stub.health_asked(), 1);
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
}

#[tokio::test]
async fn an_offer_refused_by_a_media_server_that_answers_is_not_sent_round() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    stub.set_refusing(true);
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("error").await["code"], "media-error");
    stub.wait_until("health asked", |s| s.health_asked() >= 1)
        .await;
    // The media server answered its health check: nothing to wait for.
    stub.set_refusing(false);
    assert_eq!(until_pong(&mut c).await, Vec::<Value>::new());
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert!(stub.left().is_empty());
}

/// The web client moves to a new socket when its media stops arriving, which happens when the
/// media server froze, and then the old socket's connection is waiting for an offer's answer.
/// The resume takes the participant at once; the offer the old socket never finished is the
/// client's to send again.
#[tokio::test]
async fn a_resume_takes_a_participant_whose_socket_waits_for_a_frozen_media_server() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, joined) = Client::join(&url, "r", "Ada").await;
    let sdp = offer();
    c.send(json!({"type": "offer", "sdp": sdp}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);

    stub.set_offers_hang(true);
    let calls = stub.calls();
    c.send(json!({"type": "offer", "sdp": sdp, "seq": 1}));
    stub.wait_until("the offer reached the media server", |s| s.calls() > calls)
        .await;
    let started = std::time::Instant::now();
    let mut c2 = Client::connect(&url).await;
    let secret = joined["resume"].as_str().unwrap();
    c2.send(json!({"type": "resume", "v": 1, "secret": secret, "received": c.last_seq()}));
    let resumed = c2.recv().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(
        resumed["received"], 0,
        "the hanging offer was not processed"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "resumed in {:?}",
        started.elapsed()
    );
    let rest = c.close().await;
    assert!(
        rest.iter()
            .any(|m| m["type"] == "error" && m["code"] == "replaced"),
        "{rest:?}"
    );
    c2.expect("ice-servers").await;
    // Sent again on the new socket, it is answered once the media server is back.
    stub.set_offers_hang(false);
    c2.send(json!({"type": "offer", "sdp": sdp, "seq": 1}));
    assert_eq!(c2.expect("answer").await["sdp"], stub::ANSWER);
}

/// A browser that made a new peer connection (after `mode`, or after its media was lost) sends
/// an offer with another DTLS fingerprint: it gets new media, and the old goes; an offer with
/// the same fingerprint renegotiates the media it has.
#[tokio::test]
async fn an_offer_from_a_new_peer_connection_gets_new_media() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    let first = offer();
    c.send(json!({"type": "offer", "sdp": first}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    c.send(json!({"type": "offer", "sdp": first}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert!(stub.left().is_empty(), "the same connection renegotiates");

    let line = first
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .expect("the test offer has a fingerprint");
    let other = first.replace(line, "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF");
    c.send(json!({"type": "offer", "sdp": other}));
    assert_eq!(c.expect("answer").await["sdp"], stub::ANSWER);
    assert_eq!(stub.left(), vec![PeerRef::Remote("stub-1".into())]);
}

/// An error names the numbered message it refuses (`re`): with an offer and an answer out at
/// once, a client knows which of the two failed.
#[tokio::test]
async fn an_error_names_the_message_it_refuses() {
    let stub = StubMedia::new(None);
    let (url, _) = stub::server(&stub, SignalConfig::default()).await;
    let (mut c, _) = Client::join(&url, "r", "Ada").await;
    stub.set_refusing(true);
    c.send(json!({"type": "answer", "sdp": offer(), "seq": 1}));
    c.send(json!({"type": "offer", "sdp": offer(), "seq": 2}));
    let first = c.expect("error").await;
    assert_eq!(
        (&first["code"], &first["re"]),
        (&json!("bad-target"), &json!(1)),
        "{first}"
    );
    let second = c.expect("error").await;
    assert_eq!(
        (&second["code"], &second["re"]),
        (&json!("media-error"), &json!(2)),
        "{second}"
    );
    // A message without a number: the error names none.
    c.send(json!({"type": "answer", "sdp": offer()}));
    let third = c.expect("error").await;
    assert_eq!(third["code"], "bad-target", "{third}");
    assert!(third.get("re").is_none(), "{third}");
}

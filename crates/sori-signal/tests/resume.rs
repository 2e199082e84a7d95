//! Session resume: a participant whose socket drops stays in its room for the grace period
//! (the others see nothing), and a new socket presenting its secret takes it back with every
//! message it missed; a wrong secret, another identity's token or a late resume is refused.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{flush, server_with, Client, Server, WAIT};
use serde_json::{json, Value};
use sori_signal::auth::{sign, Claims, Keys, VideoGrant};
use sori_signal::SignalConfig;

fn grace(secs: u64) -> SignalConfig {
    SignalConfig {
        resume_grace: Duration::from_secs(secs),
        ..SignalConfig::default()
    }
}

/// Opens a socket and sends `resume`; returns the client and the first reply.
async fn resume(s: &Server, secret: &str, received: u64, token: Option<&str>) -> (Client, Value) {
    let mut c = Client::connect(&s.url).await;
    let mut m = json!({"type": "resume", "v": 1, "secret": secret, "received": received});
    if let Some(t) = token {
        m["token"] = json!(t);
    }
    c.send(m);
    let first = c.recv().await;
    (c, first)
}

/// Waits until `/metrics` counts `n` participants waiting for a resume.
async fn reconnecting(s: &Server, n: u64) {
    let deadline = Instant::now() + WAIT;
    while s.metric("sori_participants_reconnecting").await != n {
        assert!(
            Instant::now() < deadline,
            "not {n} reconnecting within the wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_with_what_it_missed_and_the_others_see_nothing() {
    let s = server_with(grace(20)).await;
    let (mut a, ja) = Client::join(&s.url, "r", "Ada").await;
    let (mut b, _) = Client::join(&s.url, "r", "Bo").await;
    a.expect("participant-joined").await;
    let secret = ja["resume"]
        .as_str()
        .expect("joined gives a resume secret")
        .to_string();
    assert!(secret.len() >= 40, "a secret of 32 random bytes: {secret}");
    let id = ja["id"].clone();
    // Ada's client numbers a message; the server will say it had it.
    a.send(json!({"type": "chat", "text": "before", "seq": 1}));
    a.expect("chat").await;
    b.expect("chat").await;
    let last = a.last_seq();
    a.sever().await;
    reconnecting(&s, 1).await;

    // Meanwhile Bo talks, and sees no one leave.
    let before = flush(&mut b, "while Ada was away").await;
    assert!(before.is_empty(), "Bo saw {before:?}");

    let (mut a2, first) = resume(&s, &secret, last, None).await;
    assert_eq!(
        first,
        json!({"type": "resumed", "id": id, "room": "r", "received": 1})
    );
    // What Ada missed comes first, numbered after her last.
    let missed = a2.recv().await;
    assert_eq!(missed["type"], "chat", "{missed}");
    assert_eq!(missed["text"], "while Ada was away");
    // Then fresh TURN credentials (none here), the first message after what she missed.
    assert_eq!(a2.recv().await["type"], "ice-servers");
    assert_eq!(
        a2.last_seq(),
        last + 2,
        "numbering carries on from her last message"
    );
    reconnecting(&s, 0).await;
    // The same participant, live: her chat reaches Bo from her id.
    a2.send(json!({"type": "chat", "text": "back", "seq": 2}));
    let got = b.expect("chat").await;
    assert_eq!(
        (got["from"].clone(), got["text"].clone()),
        (id.clone(), json!("back"))
    );
    // A message sent again after the resume that the server already had is not repeated.
    a2.send(json!({"type": "chat", "text": "back", "seq": 2}));
    let after = flush(&mut b, "nothing in between").await;
    assert!(after.is_empty(), "Bo saw {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_the_participant_from_a_socket_that_still_looks_alive() {
    let s = server_with(grace(20)).await;
    let (mut a, ja) = Client::join(&s.url, "r", "Ada").await;
    let (mut b, _) = Client::join(&s.url, "r", "Bo").await;
    a.expect("participant-joined").await;
    let secret = ja["resume"].as_str().unwrap().to_string();
    let (_a2, first) = resume(&s, &secret, a.last_seq(), None).await;
    assert_eq!(first["type"], "resumed", "{first}");
    // The old socket is told, then closed.
    let rest = a.close().await;
    assert!(
        rest.iter()
            .any(|m| m["type"] == "error" && m["code"] == "replaced"),
        "{rest:?}"
    );
    let before = flush(&mut b, "still two of us").await;
    assert!(before.is_empty(), "Bo saw {before:?}");
}

/// A client that moves sockets twice in a row (its network dropped, then its media stalled):
/// the second resume takes the participant from the first resumed socket, still alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_resume_takes_the_participant_from_the_first_resumed_socket() {
    let s = server_with(grace(20)).await;
    let (a, ja) = Client::join(&s.url, "r", "Ada").await;
    let secret = ja["resume"].as_str().unwrap().to_string();
    let last = a.last_seq();
    a.sever().await;
    reconnecting(&s, 1).await;
    let (a2, first) = resume(&s, &secret, last, None).await;
    assert_eq!(first["type"], "resumed", "{first}");
    let started = Instant::now();
    let (_a3, second) = resume(&s, &secret, a2.last_seq(), None).await;
    assert_eq!(second["type"], "resumed", "{second}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let rest = a2.close().await;
    assert!(
        rest.iter()
            .any(|m| m["type"] == "error" && m["code"] == "replaced"),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_and_late_resumes_are_refused_and_the_others_see_a_timeout() {
    let s = server_with(grace(1)).await;
    let (a, ja) = Client::join(&s.url, "r", "Ada").await;
    let (mut b, _) = Client::join(&s.url, "r", "Bo").await;
    let secret = ja["resume"].as_str().unwrap().to_string();
    let id = ja["id"].clone();
    let last = a.last_seq();
    a.sever().await;
    reconnecting(&s, 1).await;
    for bad in ["", "not-the-secret", &secret[1..]] {
        let (_c, first) = resume(&s, bad, last, None).await;
        assert_eq!(first["code"], "resume-failed", "{bad:?}: {first}");
    }
    // No resume within the grace period: Ada leaves, and her secret is worth nothing.
    let left = b.expect("participant-left").await;
    assert_eq!(
        left,
        json!({"type": "participant-left", "id": id, "reason": "timeout"})
    );
    let (_c, first) = resume(&s, &secret, last, None).await;
    assert_eq!(first["code"], "resume-failed", "{first}");
    reconnecting(&s, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_claiming_unsent_messages_is_refused_and_the_participant_leaves() {
    let s = server_with(grace(20)).await;
    let (a, ja) = Client::join(&s.url, "r", "Ada").await;
    let (mut b, _) = Client::join(&s.url, "r", "Bo").await;
    let secret = ja["resume"].as_str().unwrap().to_string();
    let last = a.last_seq();
    a.sever().await;
    let (mut c, first) = resume(&s, &secret, last + 100, None).await;
    assert_eq!(first["code"], "resume-failed", "{first}");
    let left = b.expect("participant-left").await;
    assert_eq!(left["reason"], "left", "{left}");
    // The socket may join again as new.
    c.send(json!({"type": "join", "v": 1, "room": "r", "name": "Ada"}));
    assert_eq!(c.recv().await["type"], "joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_in_order_without_a_close_frame_leaves_at_once() {
    // What a killed or crashed browser's system does; a network that fails sends nothing, or
    // a reset.
    let s = server_with(grace(20)).await;
    let (a, ja) = Client::join(&s.url, "r", "Ada").await;
    let (mut b, _) = Client::join(&s.url, "r", "Bo").await;
    a.vanish().await;
    let left = b.expect("participant-left").await;
    assert_eq!(
        left,
        json!({"type": "participant-left", "id": ja["id"], "reason": "left"})
    );
    assert_eq!(s.metric("sori_participants_reconnecting").await, 0);
}

const KEY: &str = "APIresume";
const SECRET: &str = "resume-test-secret-0123456789abcdef";

fn token(identity: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: KEY.into(),
        sub: Some(identity.into()),
        nbf: Some(now - 1),
        exp: Some(now + 600),
        video: Some(VideoGrant {
            room: Some("r".into()),
            room_join: Some(true),
            ..VideoGrant::default()
        }),
        ..Claims::default()
    };
    sign(&claims, SECRET).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_tokens_only_the_same_identity_resumes() {
    let s = server_with(SignalConfig {
        keys: Keys::new([(KEY.to_string(), SECRET.to_string())]),
        anonymous: false,
        ..grace(20)
    })
    .await;
    let mut a = Client::connect(&s.url).await;
    a.send(json!({"type": "join", "v": 1, "room": "r", "name": "x", "token": token("ada")}));
    let ja = a.recv().await;
    assert_eq!(ja["type"], "joined", "{ja}");
    let secret = ja["resume"].as_str().unwrap().to_string();
    let last = a.last_seq();
    a.sever().await;
    reconnecting(&s, 1).await;
    // The secret alone is not enough; another identity's token neither.
    let (_c, first) = resume(&s, &secret, last, None).await;
    assert_eq!(first["code"], "unauthorized", "{first}");
    let (_c, first) = resume(&s, &secret, last, Some(&token("mallory"))).await;
    assert_eq!(first["code"], "resume-failed", "{first}");
    reconnecting(&s, 1).await;
    let (_c, first) = resume(&s, &secret, last, Some(&token("ada"))).await;
    assert_eq!(first["type"], "resumed", "{first}");
}

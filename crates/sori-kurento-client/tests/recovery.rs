//! `RemoteMedia` against a stand-in media server that loses its connection, restarts or
//! freezes: sessions are resumed, requests wait for the connection or fail at their deadline,
//! and rooms do not wait for each other.

mod stub;

use std::time::Duration;

use sori_kurento_client::{RemoteMedia, RemoteOptions};
use sori_media::PeerSignal;
use stub::Stub;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

fn options() -> RemoteOptions {
    RemoteOptions {
        request_timeout: Duration::from_secs(2),
        keepalive: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(500),
    }
}

/// Waits until `cond` holds, checking every 20 ms; panics after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(stub: &Stub, method: &str) -> usize {
    stub.methods().iter().filter(|m| *m == method).count()
}

fn session_of(stub: &Stub) -> String {
    let s = stub.state.lock().unwrap();
    assert_eq!(s.sessions.len(), 1, "one session");
    s.sessions.iter().next().unwrap().clone()
}

#[tokio::test]
async fn a_lost_connection_resumes_the_session_and_requests_wait_for_it() {
    let stub = Stub::start().await;
    let media = RemoteMedia::connect_with(&stub.url, options())
        .await
        .unwrap();
    let mut ada = media.join("r", "v=0").await.unwrap();
    let session = session_of(&stub);

    stub.cut();
    until("the loss noticed", || !media.is_connected()).await;
    let offering = tokio::spawn({
        let (media, peer) = (media.clone(), ada.peer.clone());
        async move { media.offer(&peer, "v=0 again").await }
    });
    // The outage lasts a while: the offer waits meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !offering.is_finished(),
        "the offer waits for the connection"
    );
    stub.restore().await;

    let answer = tokio::time::timeout(WAIT, offering).await.unwrap().unwrap();
    assert!(media.is_connected());
    assert_eq!(answer.unwrap(), "v=0 answer");
    let connects = stub.connects();
    assert_eq!(connects.len(), 1, "one connect: {connects:?}");
    assert_eq!(connects[0].1, session, "naming the session");
    assert_eq!(
        connects[0].0,
        stub.connections(),
        "first on the new connection"
    );
    assert_eq!(
        ada.signals.try_recv(),
        Err(TryRecvError::Empty),
        "Ada was told nothing"
    );
    // The room is the same: a newcomer joins its pipeline and is linked with Ada.
    media.join("r", "v=0").await.unwrap();
    assert_eq!(count(&stub, "create MediaPipeline"), 1);
    assert_eq!(count(&stub, "invoke connect"), 2);
}

#[tokio::test]
async fn after_a_restart_everyone_is_told_once_the_connection_is_back_and_joins_anew() {
    let stub = Stub::start().await;
    let media = RemoteMedia::connect_with(&stub.url, options())
        .await
        .unwrap();
    let mut ada = media.join("r", "v=0").await.unwrap();
    let mut bo = media.join("r", "v=0").await.unwrap();

    stub.restart();
    for who in [&mut ada, &mut bo] {
        let signal = tokio::time::timeout(WAIT, who.signals.recv())
            .await
            .unwrap();
        assert!(
            matches!(signal, Some(PeerSignal::Removed(_))),
            "told its media was removed: {signal:?}"
        );
    }
    // Told once the new connection had found the session gone, not before.
    assert_eq!(stub.connections(), 2);
    assert_eq!(stub.connects().len(), 1);

    // The old endpoint is unknown: the session server joins anew, in a new pipeline.
    let e = media.offer(&ada.peer, "v=0").await.unwrap_err();
    assert!(e.is_unknown_object(), "{e}");
    media.join("r", "v=0").await.unwrap();
    media.join("r", "v=0").await.unwrap();
    assert_eq!(count(&stub, "create MediaPipeline"), 2);
    // Each newcomer was linked with the ones there after the restart only.
    assert_eq!(count(&stub, "invoke connect"), 2 + 2);
}

#[tokio::test]
async fn a_frozen_media_server_fails_requests_at_their_deadline_then_recovers() {
    let stub = Stub::start().await;
    let media = RemoteMedia::connect_with(&stub.url, options())
        .await
        .unwrap();
    let mut ada = media.join("a", "v=0").await.unwrap();
    let session = session_of(&stub);

    stub.freeze(true);
    let started = Instant::now();
    let (in_a, in_b) = tokio::join!(media.join("a", "v=0"), media.join("b", "v=0"));
    let took = started.elapsed();
    assert!(in_a.is_err() && in_b.is_err(), "both joins fail");
    assert!(
        took < options().request_timeout + Duration::from_secs(1),
        "each fails at its own deadline, not one after the other: {took:?}"
    );
    // The silent connection was found dead and a new one tried.
    until("a new connection tried", || stub.accepted() >= 2).await;

    stub.freeze(false);
    until("the session resumed", || {
        stub.connects().iter().any(|(_, s)| *s == session)
    })
    .await;
    media.join("b", "v=0").await.unwrap();
    assert_eq!(
        ada.signals.try_recv(),
        Err(TryRecvError::Empty),
        "Ada was told nothing"
    );
    media.offer(&ada.peer, "v=0").await.unwrap();
}

#[tokio::test]
async fn a_slow_join_holds_up_its_own_room_only() {
    let stub = Stub::start().await;
    let media = RemoteMedia::connect_with(&stub.url, options())
        .await
        .unwrap();
    let slow = tokio::spawn({
        let media = media.clone();
        async move { media.join("a", "hold").await }
    });
    until("the slow offer sent", || {
        count(&stub, "invoke processOffer") == 1
    })
    .await;
    let after = tokio::spawn({
        let media = media.clone();
        async move { media.join("a", "v=0").await }
    });
    // Another room goes ahead.
    let other = tokio::time::timeout(WAIT, media.join("b", "v=0")).await;
    assert!(other.unwrap().is_ok());
    assert!(!slow.is_finished());

    stub.release_held.notify_one();
    slow.await.unwrap().unwrap();
    after.await.unwrap().unwrap();
    // The second joiner of room a came after the first, and was linked with it both ways.
    assert_eq!(count(&stub, "invoke connect"), 2);
}

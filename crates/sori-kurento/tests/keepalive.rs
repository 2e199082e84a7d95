//! Control connections are pinged: a silent one is closed and its session stays, for the
//! client to take back with `connect{sessionId}`; the session server's client resumes its
//! session through a connection cut, with every object kept.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sori_kurento::KurentoConfig;
use sori_kurento_client::{RemoteMedia, RemoteOptions};
use str0m::media::Direction;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const KEEPALIVE: Duration = Duration::from_millis(100);

async fn server_pinging() -> Server {
    server_with(KurentoConfig {
        keepalive: KEEPALIVE,
        ..KurentoConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_silent_socket_is_closed_and_its_session_resumed_on_a_new_one() {
    let s = server_pinging().await;
    let (mut silent, _) = tokio_tungstenite::connect_async(&s.url).await.unwrap();
    let create = json!({"jsonrpc": "2.0", "id": 1, "method": "create",
                        "params": {"type": "MediaPipeline"}});
    silent
        .send(Message::text(create.to_string()))
        .await
        .unwrap();
    let reply: Value = loop {
        match silent.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str(t.as_str()).unwrap(),
            _ => continue,
        }
    };
    let session = reply["result"]["sessionId"].as_str().unwrap().to_string();
    let pipeline = reply["result"]["value"].as_str().unwrap().to_string();
    let mut live = Client::connect(&s.url).await;

    // Neither reads nor answers pings for ten keepalive periods.
    tokio::time::sleep(KEEPALIVE * 10).await;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = silent.next().await {
            if let Message::Close(_) = m {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent socket was closed");
    // A client that answers pings stays.
    live.ok("ping", Value::Null).await;

    let mut again = Client::connect(&s.url).await;
    let r = again.ok("connect", json!({"sessionId": session})).await;
    assert_eq!(r["sessionId"], json!(session));
    let d = again.ok("describe", json!({"object": pipeline})).await;
    assert_eq!(d["type"], "MediaPipeline");
}

/// A TCP proxy in front of `backend` whose connections the test can cut; while cut, new
/// connections are closed at once.
struct Proxy {
    port: u16,
    cut: tokio::sync::broadcast::Sender<()>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(backend: std::net::SocketAddr) -> Proxy {
        let front = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let port = front.local_addr().unwrap().port();
        let cut = tokio::sync::broadcast::channel(4).0;
        let open = tokio::sync::watch::channel(true).0;
        let (cuts, is_open) = (cut.clone(), open.subscribe());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = front.accept().await {
                if !*is_open.borrow() {
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let mut plain = TcpStream::connect(backend).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tcp, &mut plain) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Proxy { port, cut, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
        let _ = self.cut.send(());
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

#[tokio::test]
async fn the_session_servers_client_resumes_its_session_through_a_cut() {
    let s = server_pinging().await;
    let backend: std::net::SocketAddr = s.url["ws://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Proxy::start(backend).await;
    let options = RemoteOptions {
        keepalive: KEEPALIVE,
        dead_after: KEEPALIVE * 4,
        ..RemoteOptions::default()
    };
    let url = format!("ws://127.0.0.1:{}/kurento", proxy.port);
    let media = RemoteMedia::connect_with(&url, options).await.unwrap();
    let mut ada = media
        .join("room", &offer(Direction::SendRecv))
        .await
        .unwrap();

    proxy.cut();
    let deadline = tokio::time::Instant::now() + WAIT;
    while media.is_connected() {
        assert!(tokio::time::Instant::now() < deadline, "the cut noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Made while there is no connection, it waits for the new one.
    let joining = tokio::spawn({
        let media = media.clone();
        async move { media.join("room", &offer(Direction::SendRecv)).await }
    });
    proxy.restore();
    let bo = joining.await.unwrap().unwrap();
    assert!(bo.answer.starts_with("v=0"), "{}", bo.answer);
    // Same session, same pipeline, both endpoints there; Ada was told nothing.
    assert_eq!(s.kurento.counts().await, (1, 1, 2));
    assert!(ada.signals.try_recv().is_err());
    // Ada's endpoint is still known (a fresh offer is refused for its m-lines, not for an
    // unknown object).
    if let Err(e) = media.offer(&ada.peer, &offer(Direction::SendRecv)).await {
        assert!(!e.is_unknown_object(), "{e}");
    }
}

#[tokio::test]
async fn late_frames_of_a_dead_socket_leave_the_session_on_the_new_one() {
    let s = server().await;
    let mut old = Client::connect(&s.url).await;
    let p = pipeline(&mut old).await;
    let w = endpoint(&mut old, &p).await;
    let w2 = endpoint(&mut old, &p).await;
    let sub = old
        .ok(
            "subscribe",
            json!({"object": w, "type": "ElementConnected"}),
        )
        .await;
    let session = sub["sessionId"].clone();
    old.ok(
        "subscribe",
        json!({"object": w, "type": "ElementDisconnected"}),
    )
    .await;

    let mut new = Client::connect(&s.url).await;
    new.ok("connect", json!({"sessionId": session})).await;
    // The old socket's last frame, read after the resume (a media server that was frozen),
    // does not take the session back from the newer socket: an event meanwhile goes to the
    // new one (on the old, about to close, it would be lost).
    old.ok("describe", json!({"object": w, "sessionId": session}))
        .await;
    let mut other = Client::connect(&s.url).await;
    other
        .invoke(&w, "connect", json!({"sink": w2, "mediaType": "VIDEO"}))
        .await;
    let e = new.event(&w, "ElementConnected").await;
    assert_eq!(e["params"]["value"]["data"]["sink"], json!(w2));
    old.close().await;

    // And after the old one closed, those caused by others too.
    other
        .invoke(&w, "disconnect", json!({"sink": w2, "mediaType": "VIDEO"}))
        .await;
    let e = new.event(&w, "ElementDisconnected").await;
    assert_eq!(e["params"]["value"]["data"]["sink"], json!(w2));
}

/// Sends `frames` on a new socket in one write, then (if `close`) a close frame in the same
/// write: the media server finds them all at once, as one that was stopped (SIGSTOP) while a
/// client sent them and gave up finds them when it runs again.
async fn in_one_write(url: &str, frames: &[Value], close: bool) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for f in frames {
        ws.feed(Message::text(f.to_string())).await.unwrap();
    }
    if close {
        ws.feed(Message::Close(None)).await.unwrap();
    }
    ws.flush().await.unwrap();
    if !close {
        // Held open until the media server has answered the last one.
        let last = frames.last().unwrap()["id"].clone();
        while let Some(Ok(m)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            if let Message::Text(t) = m {
                if serde_json::from_str::<Value>(&t).unwrap()["id"] == last {
                    break;
                }
            }
        }
    }
}

/// Whether the negotiation a client sent just before closing its socket was applied; a
/// `release` of a throwaway endpoint sent behind it says when its turn has passed.
async fn negotiated_then(close: bool) -> Value {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    let marker = endpoint(&mut c, &p).await;
    let session = c.ok("describe", json!({"object": w})).await;
    let session = session["sessionId"].clone();
    let frames = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "invoke", "params": {
            "object": w, "operation": "processOffer", "sessionId": session,
            "operationParams": {"offer": offer(Direction::SendRecv)}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "release", "params": {
            "object": marker, "sessionId": session}}),
    ];
    in_one_write(&s.url, &frames, close).await;
    for _ in 0..1000 {
        let r = c.call("describe", json!({"object": marker})).await;
        if r.get("error").is_some() {
            return c
                .invoke(&w, "getRemoteSessionDescriptor", Value::Null)
                .await;
        }
        tokio::task::yield_now().await;
    }
    panic!("the release sent behind the offer was not carried out");
}

#[tokio::test]
async fn a_negotiation_sent_on_a_socket_closed_behind_it_is_not_applied() {
    // The client closed the socket behind its offer: no one can read the answer.
    let dropped = negotiated_then(true).await;
    assert!(dropped.is_null(), "no remote description: {dropped}");
    // The same offer on a socket that stays open is applied.
    let applied = negotiated_then(false).await;
    assert!(
        applied.as_str().is_some_and(|sdp| sdp.contains("m=video")),
        "{applied}"
    );
}

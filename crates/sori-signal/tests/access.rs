//! Access control over `/ws` and HTTP, as an attacker and as a user would try it: tokens that
//! must not let anyone in, grants the server enforces, one identity per room, and the limits
//! that keep one client from hurting the others.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{flush, offer, server_with, Client, Server, WAIT};
use serde_json::{json, Value};
use sori_signal::auth::{sign, Claims, Keys, VideoGrant};
use sori_signal::{Limits, SignalConfig};

const KEY: &str = "APIaccess";
const SECRET: &str = "access-test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn keyed(limits: Limits) -> SignalConfig {
    SignalConfig {
        keys: Keys::new([(KEY.to_string(), SECRET.to_string())]),
        anonymous: false,
        limits,
        ..SignalConfig::default()
    }
}

fn claims(identity: &str, room: &str) -> Claims {
    Claims {
        iss: KEY.into(),
        sub: Some(identity.into()),
        name: Some(identity.to_uppercase()),
        nbf: Some(now() - 1),
        exp: Some(now() + 600),
        video: Some(VideoGrant {
            room: Some(room.into()),
            room_join: Some(true),
            ..VideoGrant::default()
        }),
        ..Claims::default()
    }
}

fn token(c: &Claims) -> String {
    sign(c, SECRET).unwrap()
}

fn with_grant(identity: &str, room: &str, f: impl FnOnce(&mut VideoGrant)) -> String {
    let mut c = claims(identity, room);
    f(c.video.as_mut().unwrap());
    token(&c)
}

async fn join_with(s: &Server, room: &str, token: Option<&str>) -> (Client, Value) {
    let mut c = Client::connect(&s.url).await;
    let mut m = json!({"type": "join", "v": 1, "room": room, "name": "someone"});
    if let Some(t) = token {
        m["token"] = json!(t);
    }
    c.send(m);
    let first = c.recv().await;
    (c, first)
}

async fn joined(s: &Server, room: &str, token: &str) -> (Client, Value) {
    let (c, first) = join_with(s, room, Some(token)).await;
    assert_eq!(first["type"], "joined", "{first}");
    (c, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_its_code_and_changes_nothing() {
    let s = server_with(keyed(Limits::default())).await;
    let (mut ada, _) = joined(&s, "r", &token(&claims("ada", "r"))).await;

    let mut expired = claims("x", "r");
    expired.exp = Some(now() - 3600);
    let mut early = claims("x", "r");
    early.nbf = Some(now() + 3600);
    let mut unknown_key = claims("x", "r");
    unknown_key.iss = "APIunknown".into();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "unauthorized"),
        ("empty token", Some(String::new()), "unauthorized"),
        ("garbage", Some("not-a-jwt".into()), "unauthorized"),
        ("expired", Some(token(&expired)), "unauthorized"),
        ("not yet valid", Some(token(&early)), "unauthorized"),
        (
            "wrong signature",
            Some(sign(&claims("x", "r"), "another-secret-0123456789abcdef!").unwrap()),
            "unauthorized",
        ),
        (
            "unknown key",
            Some(sign(&unknown_key, SECRET).unwrap()),
            "unauthorized",
        ),
        (
            "another room",
            Some(token(&claims("x", "elsewhere"))),
            "forbidden",
        ),
        (
            "no roomJoin",
            Some(with_grant("x", "r", |v| v.room_join = None)),
            "forbidden",
        ),
    ];
    for (what, t, code) in cases {
        let (mut c, first) = join_with(&s, "r", t.as_deref()).await;
        assert_eq!(first["type"], "error", "{what}: {first}");
        assert_eq!(first["code"], code, "{what}: {first}");
        assert!(!first["message"].as_str().unwrap().is_empty());
        assert_eq!(c.next().await, None, "{what}: the socket is closed");
    }
    // Ada saw no one come or go.
    assert_eq!(flush(&mut ada, "still alone").await, Vec::<Value>::new());
    assert_eq!(s.metric("sori_participants").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_comes_from_the_token_and_a_newer_socket_replaces_the_older() {
    let s = server_with(keyed(Limits::default())).await;
    let (mut bo, _) = joined(&s, "r", &token(&claims("bo", "r"))).await;
    let (mut old, j) = joined(&s, "r", &token(&claims("ada", "r"))).await;
    // The name the client asked for ("someone") lost to the token's.
    assert_eq!((&j["identity"], &j["name"]), (&json!("ada"), &json!("ADA")));
    let p = bo.expect("participant-joined").await;
    assert_eq!(p["participant"]["identity"], "ada");
    let (_new, j2) = joined(&s, "r", &token(&claims("ada", "r"))).await;
    assert_eq!(
        j2["participants"].as_array().unwrap().len(),
        1,
        "only Bo: {j2}"
    );
    let e = old.recv().await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("replaced"))
    );
    assert_eq!(old.next().await, None);
    let seen: Vec<Value> = flush(&mut bo, "who is here?").await;
    let kinds: Vec<&str> = seen.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["participant-left", "participant-joined"]);
    assert_eq!(s.metric("sori_participants").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_by_the_server() {
    let s = server_with(keyed(Limits::default())).await;
    let (mut ada, _) = joined(&s, "r", &token(&claims("ada", "r"))).await;
    let quiet = with_grant("quiet", "r", |v| {
        v.can_publish = Some(false);
        v.can_publish_data = Some(false);
    });
    let (mut q, j) = joined(&s, "r", &quiet).await;
    assert_eq!(j["permissions"]["publish"], json!([]));
    assert_eq!(j["permissions"]["chat"], false);
    ada.expect("participant-joined").await;
    // No chat, no recording, no moderation: refused, and nobody hears of it.
    for (m, code) in [
        (json!({"type": "chat", "text": "hi"}), "forbidden"),
        (json!({"type": "record", "on": true}), "forbidden"),
        (
            json!({"type": "mute-participant", "id": "p1", "audio": true}),
            "forbidden",
        ),
        (json!({"type": "lock-room", "locked": true}), "forbidden"),
        (json!({"type": "end-room"}), "forbidden"),
    ] {
        q.send(m.clone());
        let e = q.recv().await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("error"), &json!(code)),
            "{m}"
        );
    }
    // Its media offer is answered with nothing it may send.
    q.send(json!({"type": "offer", "sdp": offer()}));
    let answer = q.expect("answer").await;
    let sdp = answer["sdp"].as_str().unwrap();
    let directions: Vec<&str> = sdp
        .lines()
        .filter(|l| ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(&l.trim()))
        .collect();
    assert_eq!(directions, ["a=inactive", "a=inactive"], "{sdp}");
    assert_eq!(
        flush(&mut ada, "anything?")
            .await
            .iter()
            .filter(|v| v["type"] == "chat")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_remove_ban_and_lock() {
    let s = server_with(keyed(Limits::default())).await;
    let admin = with_grant("mod", "r", |v| v.room_admin = Some(true));
    let (mut m, _) = joined(&s, "r", &admin).await;
    let (mut bo, jb) = joined(&s, "r", &token(&claims("bo", "r"))).await;
    let bo_id = jb["id"].as_str().unwrap().to_string();
    m.expect("participant-joined").await;
    m.send(json!({"type": "remove-participant", "id": bo_id, "ban": true}));
    let removed = bo.expect("removed").await;
    assert_eq!(
        (&removed["reason"], &removed["by"]),
        (&json!("banned"), &json!("MOD"))
    );
    assert_eq!(bo.next().await, None);
    let (mut again, e) = join_with(&s, "r", Some(&token(&claims("bo", "r")))).await;
    assert_eq!(e["code"], "banned", "{e}");
    assert_eq!(again.next().await, None);
    m.send(json!({"type": "lock-room", "locked": true}));
    let (mut cy, e) = join_with(&s, "r", Some(&token(&claims("cy", "r")))).await;
    assert_eq!(e["code"], "room-locked", "{e}");
    assert_eq!(cy.next().await, None);
    let seen = flush(&mut m, "done").await;
    let actions: Vec<&Value> = seen
        .iter()
        .filter(|v| v["type"] == "moderation")
        .map(|v| &v["action"])
        .collect();
    assert_eq!(actions, [&json!("ban"), &json!("lock")]);
    assert_eq!(s.metric("sori_participants").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_flood_is_rate_limited_and_the_others_chat_in_order() {
    let s = server_with(SignalConfig::default()).await;
    let (mut ada, _) = Client::join(&s.url, "flood", "Ada").await;
    let (mut bo, _) = Client::join(&s.url, "flood", "Bo").await;
    let (mut mal, _) = Client::join(&s.url, "flood", "Mallory").await;
    ada.expect("participant-joined").await;
    ada.expect("participant-joined").await;
    bo.expect("participant-joined").await;
    let started = std::time::Instant::now();
    for i in 0..10_000 {
        mal.send(json!({"type": "chat", "text": format!("spam {i}")}));
        if i % 2000 == 0 {
            ada.send(json!({"type": "chat", "text": format!("ada {}", i / 2000)}));
            bo.send(json!({"type": "chat", "text": format!("bo {}", i / 2000)}));
        }
    }
    mal.send(json!({"type": "ping"}));
    // Mallory is told (not once per message) and stays connected.
    let mut refusals = 0;
    loop {
        let v = mal.recv().await;
        if v["type"] == "pong" {
            break;
        }
        if v["type"] == "error" {
            assert_eq!(v["code"], "rate-limited");
            refusals += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(refusals >= 1);
    assert!(
        refusals <= 2 + elapsed as usize,
        "{refusals} errors in {elapsed:.1} s"
    );
    // Ada and Bo see the same chats, in the same order, theirs all there.
    let mut logs = Vec::new();
    for c in [&mut ada, &mut bo] {
        let seen = flush(c, "end").await;
        let chat: Vec<(u64, String)> = seen
            .iter()
            .filter(|v| v["type"] == "chat")
            .map(|v| {
                (
                    v["id"].as_u64().unwrap(),
                    v["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        logs.push(chat);
    }
    let end_of = |log: &Vec<(u64, String)>| log.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    assert!(end_of(&logs[0]).windows(2).all(|w| w[0] < w[1]));
    // The one who flushed first may see the other's "end" after its own: compare the chats
    // both saw.
    let common = logs[0].len().min(logs[1].len());
    assert_eq!(logs[0][..common - 1], logs[1][..common - 1]);
    for who in ["ada", "bo"] {
        let theirs: Vec<&String> = logs[0]
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.starts_with(who))
            .collect();
        let want: Vec<String> = (0..5).map(|i| format!("{who} {i}")).collect();
        assert_eq!(theirs, want.iter().collect::<Vec<_>>());
    }
    let spam = logs[0]
        .iter()
        .filter(|(_, t)| t.starts_with("spam"))
        .count();
    // The burst of 20 and 5 a second, not 10,000.
    assert!(
        spam <= 20 + 5 * (elapsed.ceil() as usize + 1),
        "{spam} in {elapsed:.1} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_limit_are_refused_and_the_call_goes_on() {
    let limits = Limits {
        connections_per_ip: 4,
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let s = server_with(SignalConfig {
        limits,
        ..SignalConfig::default()
    })
    .await;
    let (mut ada, _) = Client::join(&s.url, "cap", "Ada").await;
    let addr = s.http;
    let (refused, timed_out) = tokio::task::spawn_blocking(move || {
        // Three more connections are admitted and sit there, half a request sent.
        let idle: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut t = TcpStream::connect(addr).unwrap();
                t.set_read_timeout(Some(WAIT)).unwrap();
                t.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
                t
            })
            .collect();
        // The fifth is closed at once, without a byte.
        let mut fifth = TcpStream::connect(addr).unwrap();
        fifth.set_read_timeout(Some(WAIT)).unwrap();
        let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 64];
        let refused = matches!(fifth.read(&mut buf), Ok(0) | Err(_));
        // The half-sent requests are cut off by the header timeout.
        let timed_out = idle.into_iter().all(|mut t| {
            let mut rest = Vec::new();
            let _ = t.read_to_end(&mut rest);
            !String::from_utf8_lossy(&rest).contains("200 OK")
        });
        (refused, timed_out)
    })
    .await
    .unwrap();
    assert!(refused, "the connection past the limit was refused");
    assert!(timed_out, "half-sent requests were closed");
    // The existing call went on, and the slots freed by the timeout take new connections.
    flush(&mut ada, "still here").await;
    assert_eq!(s.metric("sori_participants").await, 1);
}

fn http_request(addr: SocketAddr, request: String) -> (u16, String) {
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(request.as_bytes()).unwrap();
    let mut page = String::new();
    let _ = t.read_to_string(&mut page);
    let status = page
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_cannot_open_the_socket() {
    let s = server_with(SignalConfig {
        allowed_origins: vec!["https://app.example.org".into()],
        ..SignalConfig::default()
    })
    .await;
    let addr = s.http;
    // The status of an upgrade request (read up to the status line: a socket stays open).
    let upgrade = move |origin: &str| {
        let origin = if origin.is_empty() {
            String::new()
        } else {
            format!("Origin: {origin}\r\n")
        };
        let mut t = TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            t,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\n{origin}Upgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && t.read(&mut byte).unwrap() == 1 {
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line)
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0)
    };
    let cases = tokio::task::spawn_blocking(move || {
        [
            upgrade("http://evil.example"),
            upgrade(&format!("http://{addr}")),
            upgrade("https://app.example.org"),
            upgrade(""),
        ]
    })
    .await
    .unwrap();
    assert_eq!(cases, [403, 101, 101, 101]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_and_metrics_refuse_those_without_rights() {
    let dir = std::env::temp_dir().join(format!("sori-access-rec-{}", std::process::id()));
    let made = dir.join("r-20261202T000000Z");
    std::fs::create_dir_all(&made).unwrap();
    std::fs::write(
        made.join("manifest.json"),
        r#"{"room": "r", "recording": "r-20261202T000000Z", "started_unix_ms": 1, "files": []}"#,
    )
    .unwrap();
    let other = dir.join("q-20261202T000000Z");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("manifest.json"),
        r#"{"room": "q", "recording": "q-20261202T000000Z", "started_unix_ms": 2, "files": []}"#,
    )
    .unwrap();
    let mut config = keyed(Limits::default());
    config.recordings_dir = Some(dir.clone());
    config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    config.metrics_token = Some("metrics-secret".into());
    let s = server_with(config).await;
    let addr = s.http;
    let recorder = with_grant("rec", "r", |v| v.room_record = Some(true));
    let plain = token(&claims("ada", "r"));
    let get = move |path: String, auth: Option<String>, forwarded: bool| {
        let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let fwd = if forwarded {
            "X-Forwarded-For: 203.0.113.9\r\n"
        } else {
            ""
        };
        http_request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{fwd}Connection: close\r\n\r\n"),
        )
    };
    let results = tokio::task::spawn_blocking(move || {
        vec![
            get("/recordings".into(), None, false),
            get("/recordings".into(), Some(plain.clone()), false),
            get("/recordings".into(), Some(recorder.clone()), false),
            get(format!("/recordings?access_token={recorder}"), None, false),
            get(
                "/recordings/r-20261202T000000Z/manifest.json".into(),
                None,
                false,
            ),
            get(
                "/recordings/r-20261202T000000Z/manifest.json".into(),
                Some(recorder.clone()),
                false,
            ),
            get(
                "/recordings/q-20261202T000000Z/manifest.json".into(),
                Some(recorder),
                false,
            ),
            // Through a proxy on this host, /metrics is not loopback's any more.
            get("/metrics".into(), None, true),
            get("/metrics".into(), Some("metrics-secret".into()), true),
            get("/metrics".into(), None, false),
        ]
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let codes: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert_eq!(codes, [401, 403, 200, 200, 401, 200, 403, 401, 200, 200]);
    // The listing shows the token's room only.
    assert!(results[2].1.contains("r-20261202T000000Z"));
    assert!(
        !results[2].1.contains("q-20261202T000000Z"),
        "{}",
        results[2].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_flood_is_rate_limited_before_it_reaches_the_media_server() {
    let s = server_with(SignalConfig::default()).await;
    let (mut ada, _) = Client::join(&s.url, "offers", "Ada").await;
    let sdp = offer();
    for _ in 0..200 {
        ada.send(json!({"type": "offer", "sdp": sdp}));
    }
    ada.send(json!({"type": "ping"}));
    let (mut answers, mut refusals) = (0, 0);
    loop {
        let v = ada.recv().await;
        match v["type"].as_str().unwrap() {
            "pong" => break,
            "answer" => answers += 1,
            "error" if v["code"] == "rate-limited" => refusals += 1,
            // Renegotiation and media errors for offers crossing the server's own are fine.
            _ => {}
        }
    }
    // The burst (10) and what refilled meanwhile reached the media server, not 200.
    assert!((1..=15).contains(&answers), "{answers} answers");
    assert!(refusals >= 1);
    // The socket is still in the room and still answered.
    ada.send(json!({"type": "chat", "text": "after"}));
    assert_eq!(ada.expect("chat").await["text"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_and_relay_floods_are_rate_limited_too() {
    let s = server_with(SignalConfig::default()).await;
    // Mutes: the others hear of the burst, not of thousands of changes.
    let (mut ada, _) = Client::join(&s.url, "mutes", "Ada").await;
    let (mut bo, _) = Client::join(&s.url, "mutes", "Bo").await;
    ada.expect("participant-joined").await;
    for i in 0..2000 {
        bo.send(json!({"type": "mute", "audio": i % 2 == 0, "video": false}));
    }
    bo.send(json!({"type": "ping"}));
    let mut refused = false;
    loop {
        let v = bo.recv().await;
        if v["type"] == "pong" {
            break;
        }
        refused |= v["code"] == "rate-limited";
    }
    assert!(refused);
    let updates = flush(&mut ada, "mutes done").await;
    let n = updates
        .iter()
        .filter(|v| v["type"] == "participant-updated")
        .count();
    assert!((1..=40).contains(&n), "{n} updates reached Ada");

    // Relayed P2P messages: the other browser gets the burst, not a flood.
    let (mut p, _) = Client::connect_and_join(&s.url, "p2p-flood", "P", "p2p").await;
    let (mut q, jq) = Client::connect_and_join(&s.url, "p2p-flood", "Q", "p2p").await;
    let p_id = jq["participants"][0]["id"].as_str().unwrap().to_string();
    p.expect("participant-joined").await;
    let candidate = json!({"candidate": "candidate:1 1 udp 1 192.0.2.7 9 typ host", "sdpMid": "0"});
    for _ in 0..5000 {
        q.send(json!({"type": "candidate", "candidate": candidate, "to": p_id}));
    }
    q.send(json!({"type": "ping"}));
    while q.recv().await["type"] != "pong" {}
    let relayed = flush(&mut p, "relays done")
        .await
        .iter()
        .filter(|v| v["type"] == "candidate")
        .count();
    assert!(
        (200..=400).contains(&relayed),
        "{relayed} candidates relayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_the_per_address_rate_are_refused_and_the_room_goes_on() {
    let limits = Limits {
        joins_per_sec: 0.01,
        joins_burst: 3.0,
        ..Limits::default()
    };
    let s = server_with(SignalConfig {
        limits,
        ..SignalConfig::default()
    })
    .await;
    let mut inside = Vec::new();
    for name in ["A", "B", "C"] {
        inside.push(Client::join(&s.url, "rate", name).await.0);
    }
    let (mut d, e) = join_with(&s, "rate", None).await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("rate-limited")),
        "{e}"
    );
    assert_eq!(d.next().await, None, "the socket is closed");
    assert_eq!(s.metric("sori_participants").await, 3);
    let mut a = inside.remove(0);
    let seen = flush(&mut a, "still here").await;
    assert!(seen
        .iter()
        .all(|v| v["type"] != "participant-joined" || v["participant"]["name"] != "someone"));
}

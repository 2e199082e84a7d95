//! Webhook delivery as a receiver sees it: every event of a room in order, retried through
//! failures, and a receiver that hangs costs the rooms nothing (its queue stays bounded, the
//! joins take as long as without it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::stub::{self, StubMedia};
use common::{http_get, Client, WAIT};
use serde_json::{json, Value};
use sori_media::sori_sfu::{MediaKind, TrackId};
use sori_media::PeerSignal;
use sori_signal::auth::{sign, Claims, Keys, VideoGrant};
use sori_signal::{RoomTimeouts, SignalConfig, WebhookConfig};

const KEY: &str = "APIhooks";
const SECRET: &str = "webhook-test-secret-0123456789abcd";

/// How the test receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// Reads the request and never answers.
    Hang,
}

/// A webhook receiver on loopback: every request it got, in order (event JSON and the
/// `Authorization` header), answered as told.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(Value, String)>>>,
}

impl Receiver {
    fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
        let seen = got.clone();
        std::thread::spawn(move || {
            let mut requests = 0;
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some((body, auth, content_type)) = read_request(&mut reader) {
                    assert_eq!(content_type, "application/webhook+json");
                    requests += 1;
                    let mut out = stream.try_clone().unwrap();
                    match answer {
                        Answer::FailFirst(n) if requests <= n => {
                            let _ = out.write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                            );
                        }
                        Answer::FailFirst(_) => {
                            seen.lock()
                                .unwrap()
                                .push((serde_json::from_str(&body).unwrap(), auth));
                            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        }
                        Answer::Hang => {
                            seen.lock()
                                .unwrap()
                                .push((serde_json::from_str(&body).unwrap(), auth));
                            held.push(out);
                            break;
                        }
                    }
                }
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn events(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// Waits until `n` events arrived.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events: {events:#?}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One HTTP request: its body, `Authorization` and `Content-Type`.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, String, String)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let (mut len, mut auth, mut ct) = (0, String::new(), String::new());
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().ok()?,
            "authorization" => auth = value.trim().to_string(),
            "content-type" => ct = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((String::from_utf8(body).ok()?, auth, ct))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn join_token(identity: &str, room: &str) -> String {
    let claims = Claims {
        iss: KEY.into(),
        sub: Some(identity.into()),
        nbf: Some(now() - 1),
        exp: Some(now() + 600),
        video: Some(VideoGrant {
            room: Some(room.into()),
            room_join: Some(true),
            room_admin: Some(true),
            ..VideoGrant::default()
        }),
        ..Claims::default()
    };
    sign(&claims, SECRET).unwrap()
}

async fn server(urls: Vec<String>, queue: usize) -> (Arc<StubMedia>, String, SocketAddr) {
    let stub = StubMedia::new(None);
    let config = SignalConfig {
        keys: Keys::new([(KEY.to_string(), SECRET.to_string())]),
        anonymous: false,
        room_timeouts: RoomTimeouts {
            empty: Duration::from_secs(300),
            departure: Duration::from_secs(1),
        },
        webhooks: WebhookConfig {
            urls,
            queue,
            retry_for: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            ..WebhookConfig::default()
        },
        ..SignalConfig::default()
    };
    let (url, http) = stub::server(&stub, config).await;
    (stub, url, http)
}

async fn join(url: &str, identity: &str, room: &str) -> Client {
    let mut c = Client::connect(url).await;
    c.send(
        json!({"type": "join", "v": 1, "room": room, "name": identity,
        "token": join_token(identity, room)}),
    );
    let joined = c.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    c
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let who = e["participant"]["identity"].as_str().unwrap_or("");
            let event = e["event"].as_str().unwrap();
            if who.is_empty() {
                event.to_string()
            } else {
                format!("{event} {who}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_room_s_events_arrive_in_order_through_failures() {
    // The receiver fails the first two deliveries: the first event is tried three times,
    // and everything after it waits its turn.
    let receiver = Receiver::start(Answer::FailFirst(2));
    let (_stub, url, _) = server(vec![receiver.url()], 100).await;
    let mut ada = Client::connect(&url).await;
    ada.send(json!({"type": "join", "v": 1, "room": "r", "name": "ada",
        "token": join_token("ada", "r")}));
    let ada_id = ada.recv().await["id"].as_str().unwrap().to_string();
    let bo = join(&url, "bo", "r").await;
    bo.send(json!({"type": "remove-participant", "id": ada_id}));
    assert_eq!(ada.expect("removed").await["reason"], "removed");
    bo.close().await;
    // The room ends a second after Bo left (its departure timeout).
    let events = receiver.wait_for(6).await;
    assert_eq!(
        names(&events),
        [
            "room_started",
            "participant_joined ada",
            "participant_joined bo",
            "participant_left ada",
            "participant_left bo",
            "room_finished",
        ]
    );
    assert_eq!(events[3]["reason"], "removed");
    assert_eq!(
        events[3]["participant"]["disconnectReason"],
        "PARTICIPANT_REMOVED"
    );
    assert_eq!(events[4]["reason"], "left");
    for e in &events {
        assert_eq!(e["room"]["name"], "r", "{e}");
        assert!(e["id"].as_str().unwrap().starts_with("EV_"));
        let created: u64 = e["createdAt"].as_str().unwrap().parse().unwrap();
        assert!(created.abs_diff(now()) < 60);
    }
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    // camelCase, as LiveKit's event JSON.
    assert!(
        events[1]["participant"].get("joinedAt").is_some(),
        "{}",
        events[1]
    );
}

#[tokio::test]
async fn a_hanging_receiver_delays_no_join_and_its_queue_stays_bounded() {
    // Joins with no webhook and with one whose receiver never answers, alternating.
    let hanging = Receiver::start(Answer::Hang);
    let (_s1, quiet_url, _) = server(Vec::new(), 8).await;
    let (_s2, hooked_url, hooked_http) = server(vec![hanging.url()], 8).await;
    let mut times = [Vec::new(), Vec::new()];
    let mut clients = Vec::new();
    for i in 0..20 {
        for (k, url) in [&quiet_url, &hooked_url].into_iter().enumerate() {
            let t = Instant::now();
            let c = join(url, &format!("p{i}"), &format!("room{i}")).await;
            times[k].push(t.elapsed());
            clients.push(c);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (quiet, hooked) = (median(&mut times[0]), median(&mut times[1]));
    println!("join median: {quiet:?} without webhooks, {hooked:?} with a hanging receiver");
    // 40 events (room_started and participant_joined per join) for a queue of 8 behind one
    // hanging delivery: the rest were dropped and counted, not kept.
    let page = String::from_utf8(http_get(hooked_http, "/metrics", &[]).await.body).unwrap();
    let dropped: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("sori_webhook_events_total{outcome=\"dropped-queue-full\"} "))
        .unwrap_or_else(|| panic!("no dropped count on /metrics:\n{page}"))
        .parse()
        .unwrap();
    assert!(dropped >= 40 - 8 - 1, "dropped {dropped}");
    // Only the first event ever reached the receiver (tried again after each timeout).
    let reached = hanging.events();
    assert!(
        reached.iter().all(|e| e["id"] == reached[0]["id"]),
        "{reached:#?}"
    );
    // The joins did not wait for the receiver: one that did would take at least its
    // delivery timeout (2 s) once the queue filled.
    assert!(
        hooked < Duration::from_secs(1),
        "{hooked:?} against {quiet:?}"
    );
}

#[tokio::test]
async fn a_track_that_stops_is_unpublished_before_its_participant_leaves() {
    let receiver = Receiver::start(Answer::FailFirst(0));
    let (stub, url, _) = server(vec![receiver.url()], 100).await;
    let mut ada = join(&url, "ada", "t").await;
    ada.send(json!({"type": "offer", "sdp": common::offer()}));
    ada.expect("answer").await;
    for (track, kind) in [(4, MediaKind::Audio), (5, MediaKind::Video)] {
        let track = TrackId(track);
        stub.signal(0, PeerSignal::Published { track, kind });
    }
    receiver.wait_for(4).await;
    // The screen share (or camera) stops: only its track goes.
    stub.signal(0, PeerSignal::Unpublished { track: TrackId(5) });
    receiver.wait_for(5).await;
    ada.close().await;
    let events = receiver.wait_for(8).await;
    let tracks: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["track"].is_object())
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["track"]["sid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pair = |e: &str, t: &str| (e.to_string(), t.to_string());
    assert_eq!(
        tracks,
        [
            pair("track_published", "track-4"),
            pair("track_published", "track-5"),
            pair("track_unpublished", "track-5"),
            pair("track_unpublished", "track-4"),
        ]
    );
    assert_eq!(
        names(&events).last().map(String::as_str),
        Some("room_finished")
    );
    assert_eq!(events[6]["event"], "participant_left");
    assert_eq!(events[1]["track"], Value::Null);
    assert_eq!(events[2]["track"]["type"], "AUDIO");
    assert_eq!(events[3]["track"]["source"], "CAMERA");
}

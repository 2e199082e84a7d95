//! Several session servers sharing rooms over a bus (an in-memory one here; Redis in `sori`):
//! a room lives on one server, sockets on the others are relayed to it, and a server that
//! disappears ends what was relayed through it without its participants leaving.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stub::StubMedia;
use common::{flush, Client, WAIT};
use serde_json::{json, Value};
use sori_signal::bus::{BoxFuture, Incoming, Owner, SessionBus};
use sori_signal::{Signal, SignalConfig};
use tokio::sync::mpsc;

/// The nodes' shared state: which node holds which room, and the nodes alive (their inboxes).
#[derive(Default)]
struct Net {
    owners: Mutex<HashMap<String, String>>,
    inboxes: Mutex<HashMap<String, mpsc::Sender<Incoming>>>,
    /// Each room's last snapshot.
    snapshots: Mutex<HashMap<String, Vec<u8>>>,
    /// Redis is away: where rooms live cannot be asked.
    down: std::sync::atomic::AtomicBool,
}

impl Net {
    fn alive(&self, node: &str) -> bool {
        self.inboxes.lock().unwrap().contains_key(node)
    }

    /// Node `node` is gone for the others (its process died).
    fn kill(&self, node: &str) {
        self.inboxes.lock().unwrap().remove(node);
    }

    fn owner(&self, room: &str) -> Option<String> {
        self.owners.lock().unwrap().get(room).cloned()
    }
}

struct MemBus {
    node: String,
    net: Arc<Net>,
}

impl SessionBus for MemBus {
    fn node(&self) -> &str {
        &self.node
    }

    fn owner<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Owner, String>> {
        Box::pin(async move {
            if !self.net.alive(&self.node) {
                return Err("this node is dead".into());
            }
            if self.net.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("redis: connection refused".into());
            }
            let mut owners = self.net.owners.lock().unwrap();
            let held = owners.get(room).cloned();
            match held {
                Some(n) if n != self.node && self.net.alive(&n) => Ok(Owner::Node(n)),
                _ => {
                    owners.insert(room.to_string(), self.node.clone());
                    Ok(Owner::Here)
                }
            }
        })
    }

    fn keep(
        &self,
        rooms: Vec<(String, Option<Vec<u8>>)>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            if !self.net.alive(&self.node) {
                return Err("this node is dead".into());
            }
            let mut owners = self.net.owners.lock().unwrap();
            let mut lost = Vec::new();
            for (room, snapshot) in rooms {
                let holder = owners.entry(room.clone()).or_insert(self.node.clone());
                if *holder != self.node {
                    lost.push(room);
                } else if let Some(s) = snapshot {
                    self.net.snapshots.lock().unwrap().insert(room, s);
                }
            }
            Ok(lost)
        })
    }

    fn load<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { Ok(self.net.snapshots.lock().unwrap().get(room).cloned()) })
    }

    fn publish<'a>(&'a self, to: &'a str, message: Vec<u8>) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            // A node that died sends nothing more.
            if !self.net.alive(&self.node) {
                return Err("this node is dead".into());
            }
            let inbox = self.net.inboxes.lock().unwrap().get(to).cloned();
            match inbox {
                Some(inbox) => Ok(inbox.send(Incoming::Message(message)).await.is_ok()),
                None => Ok(false),
            }
        })
    }

    fn alive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.net.alive(id) })
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.net.kill(&self.node) })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            let mut nodes: Vec<String> = self.net.inboxes.lock().unwrap().keys().cloned().collect();
            nodes.sort();
            Ok(nodes)
        })
    }
}

struct Node {
    url: String,
    http: std::net::SocketAddr,
    /// Stops it as SIGTERM does.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Stops it as SIGTERM does, and waits until it has.
    async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.stopped.take().unwrap().await.unwrap();
    }
}

/// Session server `id` on `net`, with a media server of its own (a stub).
async fn node(net: &Arc<Net>, id: &str) -> Node {
    node_with(net, id, SignalConfig::default()).await
}

/// [`node`] with these settings.
async fn node_with(net: &Arc<Net>, id: &str, config: SignalConfig) -> Node {
    let (tx, rx) = mpsc::channel(1024);
    net.inboxes.lock().unwrap().insert(id.to_string(), tx);
    let bus = Arc::new(MemBus {
        node: id.to_string(),
        net: net.clone(),
    });
    let media: Arc<dyn sori_signal::MediaBackend> = StubMedia::new(None);
    let app = Signal::new(media, config).with_bus(bus, rx);
    let listener = tokio::net::TcpListener::bind((common::LOCALHOST, 0))
        .await
        .unwrap();
    let http = listener.local_addr().unwrap();
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let stopped = tokio::spawn(app.serve(listener, async move {
        let _ = stopping.await;
    }));
    Node {
        url: format!("ws://{http}/ws"),
        http,
        stop: Some(stop),
        stopped: Some(stopped),
    }
}

async fn metric(n: &Node, name: &str) -> u64 {
    let page = common::http_get(n.http, "/metrics", &[]).await;
    let body = String::from_utf8_lossy(&page.body).to_string();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not on /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "not within the wait: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn chats(got: &[Value]) -> Vec<String> {
    got.iter()
        .filter(|m| m["type"] == "chat")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_on_two_session_servers_share_a_room_and_its_chat_order() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (mut ada, ja) = Client::join(&s1.url, "r", "Ada").await;
    assert_eq!(net.owner("r").as_deref(), Some("s1"));
    let (mut bo, jb) = Client::join(&s2.url, "r", "Bo").await;
    // Bo's socket is on s2, the room on s1: he is in it, with Ada.
    assert_eq!(jb["participants"][0]["name"], "Ada", "{jb}");
    assert_ne!(ja["id"], jb["id"]);
    let joined = ada.expect("participant-joined").await;
    assert_eq!(joined["participant"]["name"], "Bo", "{joined}");
    assert_eq!(metric(&s2, "sori_relayed_sockets").await, 1);
    assert_eq!(metric(&s1, "sori_relayed_participants").await, 1);

    // Both talk at once: each sees every message, in one order.
    for i in 0..20 {
        ada.send(json!({"type": "chat", "text": format!("a{i}")}));
        bo.send(json!({"type": "chat", "text": format!("b{i}")}));
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while chats(&seen_a).len() < 40 {
        seen_a.push(ada.recv().await);
    }
    while chats(&seen_b).len() < 40 {
        seen_b.push(bo.recv().await);
    }
    assert_eq!(chats(&seen_a), chats(&seen_b), "one order for both");
    let ids_a: Vec<&Value> = seen_a
        .iter()
        .filter(|m| m["type"] == "chat")
        .map(|m| &m["id"])
        .collect();
    let ids_b: Vec<&Value> = seen_b
        .iter()
        .filter(|m| m["type"] == "chat")
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids_a, ids_b);

    // Bo leaves through s2: Ada sees it, and nothing stays relayed.
    let _ = bo.close().await;
    let left = ada.expect("participant-left").await;
    assert_eq!(left["reason"], "left", "{left}");
    until("nothing relayed", async || {
        metric(&s1, "sori_relayed_participants").await == 0
            && metric(&s2, "sori_relayed_sockets").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_another_session_server_reaches_the_participant() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (ada, ja) = Client::join(&s1.url, "r", "Ada").await;
    let (mut bo, _) = Client::join(&s1.url, "r", "Bo").await;
    let last = ada.last_seq();
    ada.sever().await;
    until("Ada waits for a resume", async || {
        metric(&s1, "sori_participants_reconnecting").await == 1
    })
    .await;
    bo.send(json!({"type": "chat", "text": "are you back?"}));
    bo.expect("chat").await;

    // Ada's new socket lands on s2, which relays it to s1.
    let mut ada = Client::connect(&s2.url).await;
    let secret = ja["resume"].as_str().unwrap();
    ada.send(json!({"type": "resume", "v": 1, "secret": secret, "received": last}));
    let resumed = ada.recv().await;
    assert_eq!(
        resumed,
        json!({"type": "resumed", "id": ja["id"], "room": "r", "received": 0})
    );
    let missed = ada.recv().await;
    assert_eq!(missed["text"], "are you back?", "{missed}");
    let quiet = flush(&mut bo, "and nobody left").await;
    assert!(quiet.is_empty(), "Bo saw {quiet:?}");
    ada.send(json!({"type": "chat", "text": "yes"}));
    assert_eq!(bo.expect("chat").await["text"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_server_that_dies_leaves_its_relayed_participants_waiting_for_a_resume() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (mut ada, _) = Client::join(&s1.url, "r", "Ada").await;
    let (bo, jb) = Client::join(&s2.url, "r", "Bo").await;
    ada.expect("participant-joined").await;
    let last = bo.last_seq();
    // s2 dies: its sockets are cut, and the others hear nothing more from it.
    net.kill("s2");
    bo.sever().await;
    until("s1 keeps Bo for a resume", async || {
        metric(&s1, "sori_participants_reconnecting").await == 1
    })
    .await;
    assert_eq!(metric(&s1, "sori_relayed_participants").await, 0);
    // Bo's client reaches s1 now, and takes his place back.
    let mut bo = Client::connect(&s1.url).await;
    let secret = jb["resume"].as_str().unwrap();
    bo.send(json!({"type": "resume", "v": 1, "secret": secret, "received": last}));
    let resumed = bo.recv().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["id"], jb["id"]);
    let quiet = flush(&mut ada, "Bo never left").await;
    assert!(quiet.is_empty(), "Ada saw {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_socket_whose_room_server_dies_is_closed_for_a_resume() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (_ada, _) = Client::join(&s1.url, "r", "Ada").await;
    let (mut bo, _) = Client::join(&s2.url, "r", "Bo").await;
    net.kill("s1");
    // s2 notices within its watch, and closes Bo's socket: his client resumes.
    loop {
        match bo.next().await {
            None => break,
            Some(m) => assert!(m["type"] != "participant-left", "{m}"),
        }
    }
    until("s2 relays nothing", async || {
        metric(&s2, "sori_relayed_sockets").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_rooms_session_server_dies_another_takes_the_room_over_and_everyone_resumes() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (mut ada, ja) = Client::join(&s1.url, "r", "Ada").await;
    let (mut bo, jb) = Client::join(&s2.url, "r", "Bo").await;
    ada.expect("participant-joined").await;
    ada.send(json!({"type": "chat", "text": "before", "seq": 1}));
    ada.expect("chat").await;
    bo.expect("chat").await;
    // s1 stores the room's snapshot within its renewal period.
    until("the snapshot has the chat", async || {
        net.snapshots
            .lock()
            .unwrap()
            .get("r")
            .is_some_and(|s| String::from_utf8_lossy(s).contains("before"))
    })
    .await;
    let (ada_seen, bo_seen) = (ada.last_seq(), bo.last_seq());

    // s1 dies with Ada's socket. Bo's socket, relayed by s2 to s1, is closed by s2.
    net.kill("s1");
    ada.sever().await;
    while let Some(m) = bo.next().await {
        assert_ne!(m["type"], "participant-left", "{m}");
    }

    // Bo resumes on s2, which takes the room over: he is the participant he was, and his
    // media is to be connected anew.
    let mut bo = Client::connect(&s2.url).await;
    let secret = jb["resume"].as_str().unwrap();
    bo.send(json!({"type": "resume", "v": 1, "secret": secret, "received": bo_seen}));
    let resumed = bo.recv().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["id"], jb["id"]);
    assert_eq!(bo.recv().await["type"], "ice-servers");
    assert_eq!(bo.recv().await, json!({"type": "mode", "mode": "sfu"}));
    // Numbered after the last message he had from s1.
    assert_eq!(bo.last_seq(), bo_seen + 2);
    assert_eq!(net.owner("r").as_deref(), Some("s2"));

    // Ada comes back on s2 too, her message counted.
    let mut ada = Client::connect(&s2.url).await;
    let secret = ja["resume"].as_str().unwrap();
    ada.send(json!({"type": "resume", "v": 1, "secret": secret, "received": ada_seen}));
    let resumed = ada.recv().await;
    assert_eq!(
        resumed,
        json!({"type": "resumed", "id": ja["id"], "room": "r", "received": 1})
    );
    // Nobody left; the room goes on with its chat.
    let quiet = flush(&mut bo, "after").await;
    assert!(quiet.is_empty(), "Bo saw {quiet:?}");
    assert_eq!(ada.recv().await["type"], "ice-servers");
    assert_eq!(ada.recv().await["type"], "mode");
    assert_eq!(ada.expect("chat").await["text"], "after");
    let (_cy, jc) = Client::join(&s2.url, "r", "Cy").await;
    let names: Vec<&str> = jc["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada", "Bo"]);
    let chat: Vec<&str> = jc["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(chat, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_taken_over_who_never_come_back_leave_after_the_grace_period() {
    let net = Arc::new(Net::default());
    let grace = SignalConfig {
        resume_grace: Duration::from_secs(2),
        ..SignalConfig::default()
    };
    let s1 = node(&net, "s1").await;
    let s2 = node_with(&net, "s2", grace).await;
    let (ada, _) = Client::join(&s1.url, "r", "Ada").await;
    let (_bo, jb) = Client::join(&s2.url, "r", "Bo").await;
    until("the snapshot has both", async || {
        net.snapshots
            .lock()
            .unwrap()
            .get("r")
            .is_some_and(|s| String::from_utf8_lossy(s).contains("Bo"))
    })
    .await;
    net.kill("s1");
    ada.sever().await;
    let mut bo = Client::connect(&s2.url).await;
    let secret = jb["resume"].as_str().unwrap();
    bo.send(json!({"type": "resume", "v": 1, "secret": secret, "received": 0}));
    assert_eq!(bo.recv().await["type"], "resumed");
    assert_eq!(bo.recv().await["type"], "ice-servers");
    assert_eq!(bo.recv().await["type"], "mode");
    // Ada never resumes: after the grace period she leaves, with reason timeout.
    let left = bo.expect("participant-left").await;
    assert_eq!(left["reason"], "timeout", "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_server_that_stops_hands_its_rooms_over_and_its_participants_resume_elsewhere() {
    let net = Arc::new(Net::default());
    let (mut s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (mut ada, ja) = Client::join(&s1.url, "r", "Ada").await;
    let (mut bo, jb) = Client::join(&s2.url, "r", "Bo").await;
    ada.expect("participant-joined").await;
    // Said just before the stop: the hand-over's snapshot has it.
    ada.send(json!({"type": "chat", "text": "last words", "seq": 1}));
    ada.expect("chat").await;
    bo.expect("chat").await;
    s1.stop().await;
    assert!(!net.alive("s1"), "s1 left the bus");
    // Both sockets closed, nobody told of a leave or a shutdown.
    for c in [&mut ada, &mut bo] {
        while let Some(m) = c.next().await {
            assert!(
                !["participant-left", "shutdown"].contains(&m["type"].as_str().unwrap()),
                "{m}"
            );
        }
    }
    let (ada_seen, bo_seen) = (ada.last_seq(), bo.last_seq());
    let mut bo = Client::connect(&s2.url).await;
    let secret = jb["resume"].as_str().unwrap();
    bo.send(json!({"type": "resume", "v": 1, "secret": secret, "received": bo_seen}));
    assert_eq!(bo.recv().await["id"], jb["id"]);
    let mut ada = Client::connect(&s2.url).await;
    let secret = ja["resume"].as_str().unwrap();
    ada.send(json!({"type": "resume", "v": 1, "secret": secret, "received": ada_seen}));
    assert_eq!(
        ada.recv().await,
        json!({"type": "resumed", "id": ja["id"], "room": "r", "received": 1})
    );
    let (_cy, jc) = Client::join(&s2.url, "r", "Cy").await;
    assert_eq!(jc["participants"].as_array().unwrap().len(), 2, "{jc}");
    assert_eq!(jc["chat"][0]["text"], "last words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_a_resume_is_put_off_and_a_join_is_served_where_it_arrives() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (ada, ja) = Client::join(&s1.url, "r", "Ada").await;
    let last = ada.last_seq();
    ada.sever().await;
    net.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // Ada's resume reaches s2, which cannot ask where her room lives: try again later.
    let mut c = Client::connect(&s2.url).await;
    let secret = ja["resume"].as_str().unwrap();
    c.send(json!({"type": "resume", "v": 1, "secret": secret, "received": last}));
    let refused = c.recv().await;
    assert_eq!(refused["code"], "shutting-down", "{refused}");
    assert_eq!(c.next().await, None, "and the socket is closed");
    // A join into a new room is served where it arrives; s1 still serves its own room.
    let (_bo, jb) = Client::join(&s2.url, "new", "Bo").await;
    assert_eq!(jb["room"], "new");
    let (_cy, jc) = Client::join(&s1.url, "r", "Cy").await;
    assert_eq!(jc["participants"][0]["name"], "Ada", "{jc}");
    // Redis back: the resume goes through.
    net.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut a = Client::connect(&s2.url).await;
    a.send(json!({"type": "resume", "v": 1, "secret": secret, "received": last}));
    assert_eq!(a.recv().await["id"], ja["id"]);
}

/// A server API call to `node`, signed with the test key; its status and JSON answer.
async fn api(
    n: &Node,
    method: &str,
    grant: sori_signal::auth::VideoGrant,
    body: Value,
) -> (u16, Value) {
    use sori_signal::auth::{sign, Claims};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: "APIkey".into(),
        nbf: Some(now - 1),
        exp: Some(now + 600),
        video: Some(grant),
        ..Claims::default()
    };
    let token = format!("Bearer {}", sign(&claims, API_SECRET).unwrap());
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", token.as_str()),
    ];
    let path = format!("/twirp/livekit.RoomService/{method}");
    let r = common::http_post(n.http, &path, &headers, body.to_string().as_bytes()).await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

const API_SECRET: &str = "session-nodes-test-secret-0123456789";

fn with_keys() -> SignalConfig {
    SignalConfig {
        keys: sori_signal::auth::Keys::new([("APIkey".to_string(), API_SECRET.to_string())]),
        anonymous: true,
        ..SignalConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_reaches_a_room_on_another_session_server_and_lists_every_room() {
    use sori_signal::auth::VideoGrant;
    let net = Arc::new(Net::default());
    let s1 = node_with(&net, "s1", with_keys()).await;
    let s2 = node_with(&net, "s2", with_keys()).await;
    let (mut ada, ja) = Client::join(&s1.url, "r", "Ada").await;
    let admin = || VideoGrant {
        room: Some("r".into()),
        room_admin: Some(true),
        ..VideoGrant::default()
    };
    // Asked of s2, answered by s1, where the room lives.
    let (status, v) = api(&s2, "ListParticipants", admin(), json!({"room": "r"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["participants"][0]["name"], "Ada", "{v}");
    // A room created through s2 lives there; s1 lists both.
    let create = VideoGrant {
        room_create: Some(true),
        ..VideoGrant::default()
    };
    let (status, v) = api(&s2, "CreateRoom", create, json!({"name": "planned"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(net.owner("planned").as_deref(), Some("s2"));
    let list = VideoGrant {
        room_list: Some(true),
        ..VideoGrant::default()
    };
    let (status, v) = api(&s1, "ListRooms", list, json!({})).await;
    assert_eq!(status, 200, "{v}");
    let mut names: Vec<&str> = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["planned", "r"]);
    // A moderation call through s2 acts on s1's participant.
    let identity = ja["identity"].as_str().unwrap();
    let (status, v) = api(
        &s2,
        "RemoveParticipant",
        admin(),
        json!({"room": "r", "identity": identity}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let removed = ada.expect("removed").await;
    assert_eq!(removed["type"], "removed");
    // Refusals come back as they are.
    let (status, v) = api(
        &s2,
        "ListParticipants",
        VideoGrant::default(),
        json!({"room": "r"}),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_encoder_reaching_another_session_server_publishes_into_the_room_where_it_lives() {
    let net = Arc::new(Net::default());
    let (s1, s2) = (node(&net, "s1").await, node(&net, "s2").await);
    let (mut ada, _) = Client::join(&s1.url, "r", "Ada").await;
    let headers = [("Content-Type", "application/sdp")];
    let r = common::http_post(
        s2.http,
        "/whip/r?name=Cam",
        &headers,
        common::offer().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with("/whip-sessions/s1~"), "{location}");
    // In the room on s1, with Ada.
    let joined = ada.expect("participant-joined").await;
    assert_eq!(joined["participant"]["name"], "Cam", "{joined}");
    // Ended through s2 too.
    let r = common::http_request(s2.http, "DELETE", &location, &[], b"").await;
    assert_eq!(r.status, 200);
    let left = ada.expect("participant-left").await;
    assert_eq!(left["reason"], "left", "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_an_addresss_rate_are_refused_before_redis_is_asked() {
    let net = Arc::new(Net::default());
    let config = SignalConfig {
        limits: sori_signal::Limits {
            joins_per_sec: 0.01,
            joins_burst: 2.0,
            ..Default::default()
        },
        ..SignalConfig::default()
    };
    let s1 = node_with(&net, "s1", config).await;
    // Two joins (the burst), each counted once although the room's server is asked.
    let (_a, _) = Client::join(&s1.url, "r1", "Ada").await;
    let (_b, _) = Client::join(&s1.url, "r2", "Bo").await;
    let mut c = Client::connect(&s1.url).await;
    c.send(json!({"type": "join", "v": 1, "room": "r3", "name": "Cy"}));
    let refused = c.recv().await;
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    assert_eq!(c.next().await, None, "and the socket is closed");
    assert_eq!(
        net.owner("r3"),
        None,
        "nothing was claimed for the refused join"
    );
    assert_eq!(net.owner("r1").as_deref(), Some("s1"));
}

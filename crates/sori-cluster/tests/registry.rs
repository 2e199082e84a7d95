//! The registry against a real Redis (Debian's `redis-server`, started here on a free loopback
//! port, without persistence): announcements, expiry of a node that stops beating, withdrawal,
//! and placement that sticks to a live node and moves off a dead one.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sori_cluster::{NodeInfo, Registry};

struct Redis {
    child: Child,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis() -> (Redis, Registry) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package) runs");
    let server = Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/0"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = Registry::connect(&server.url) {
            if r.nodes().await.is_ok() {
                return (server, r);
            }
        }
        assert!(Instant::now() < deadline, "redis-server did not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(id: &str, load: u32) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        control_url: format!("ws://127.0.0.1:1/{id}"),
        advertised: vec!["127.0.0.1".into()],
        capacity: 100,
        load,
        draining: false,
    }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn rooms_go_to_the_least_loaded_live_node_and_stay_there_while_it_lives() {
    let (_server, r) = redis().await;
    for (id, load) in [("m1", 30), ("m2", 5), ("m3", 50)] {
        r.announce(&node(id, load), LONG).await.unwrap();
    }
    let ids = |v: Vec<NodeInfo>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(r.nodes().await.unwrap()), ["m1", "m2", "m3"]);
    assert_eq!(r.place("standup", None, &[], LONG).await.unwrap().id, "m2");
    // m2 fills up: new rooms go elsewhere, the placed one stays.
    r.announce(&node("m2", 99), LONG).await.unwrap();
    assert_eq!(r.place("standup", None, &[], LONG).await.unwrap().id, "m2");
    assert_eq!(r.place("retro", None, &[], LONG).await.unwrap().id, "m1");
    // m2 stops: its room moves to the least loaded of the others.
    r.withdraw("m2").await.unwrap();
    assert_eq!(ids(r.nodes().await.unwrap()), ["m1", "m3"]);
    assert_eq!(r.place("standup", None, &[], LONG).await.unwrap().id, "m1");
    // A draining node takes nothing new.
    let mut m1 = node("m1", 0);
    m1.draining = true;
    r.announce(&m1, LONG).await.unwrap();
    assert_eq!(r.place("planning", None, &[], LONG).await.unwrap().id, "m3");
}

#[tokio::test]
async fn a_node_that_stops_beating_leaves_the_registry() {
    let (_server, r) = redis().await;
    r.announce(&node("steady", 1), LONG).await.unwrap();
    let announced = Instant::now();
    r.announce(&node("dies", 0), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(r.place("room", None, &[], LONG).await.unwrap().id, "dies");
    // Nothing renews it: it is gone once its announcement expires.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nodes = r.nodes().await.unwrap();
        if nodes.iter().all(|n| n.id != "dies") {
            break;
        }
        assert!(Instant::now() < deadline, "the dead node is still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(announced.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.place("room", None, &[], LONG).await.unwrap().id, "steady");
}

#[tokio::test]
async fn with_no_open_node_placement_says_so() {
    let (_server, r) = redis().await;
    assert!(r.place("room", None, &[], LONG).await.is_err());
    let mut full = node("full", 100);
    full.capacity = 100;
    r.announce(&full, LONG).await.unwrap();
    let e = r.place("room", None, &[], LONG).await.unwrap_err();
    assert_eq!(e.to_string(), "no media node takes new rooms");
}

#[tokio::test]
async fn a_room_leaves_a_draining_node_and_keeps_its_node_across_a_redis_that_forgot_it() {
    let (server, r) = redis().await;
    r.announce(&node("m1", 0), LONG).await.unwrap();
    r.announce(&node("m2", 10), LONG).await.unwrap();
    assert_eq!(r.place("r", None, &[], LONG).await.unwrap().id, "m1");
    // m1 drains: the room's next participant places it on m2, where it then stays.
    let mut m1 = node("m1", 0);
    m1.draining = true;
    r.announce(&m1, LONG).await.unwrap();
    assert_eq!(r.place("r", None, &[], LONG).await.unwrap().id, "m2");
    r.announce(&node("m1", 0), LONG).await.unwrap();
    assert_eq!(r.place("r", None, &[], LONG).await.unwrap().id, "m2");
    // A node the session server could not reach is skipped.
    assert_eq!(
        r.place("q", None, &["m1".into()], LONG).await.unwrap().id,
        "m2"
    );

    // Redis restarted empty: the nodes announce themselves again at their next beat, and the
    // room is placed where this session server's participants are, not on the emptier node.
    let client = redis::Client::open(server.url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    r.announce(&node("m1", 0), LONG).await.unwrap();
    r.announce(&node("m2", 10), LONG).await.unwrap();
    assert_eq!(r.place("r", Some("m2"), &[], LONG).await.unwrap().id, "m2");
    // Or the renewal writes it back first.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    r.announce(&node("m1", 0), LONG).await.unwrap();
    r.announce(&node("m2", 10), LONG).await.unwrap();
    r.keep_rooms(&[("r".into(), "m2".into())], LONG)
        .await
        .unwrap();
    assert_eq!(r.place("r", None, &[], LONG).await.unwrap().id, "m2");
    // A renewal does not take a room another server moved meanwhile.
    r.keep_rooms(&[("r".into(), "m1".into())], LONG)
        .await
        .unwrap();
    assert_eq!(r.place("r", None, &[], LONG).await.unwrap().id, "m2");
}

#[tokio::test]
async fn rooms_placed_within_one_beat_spread_over_the_nodes() {
    let (_server, r) = redis().await;
    for id in ["m1", "m2", "m3"] {
        r.announce(&node(id, 0), LONG).await.unwrap();
    }
    // No beat in between: each placement counts on its node until the next one.
    let mut placed = Vec::new();
    for room in ["a", "b", "c", "d"] {
        placed.push(r.place(room, None, &[], LONG).await.unwrap().id);
    }
    assert_eq!(placed, ["m1", "m2", "m3", "m1"]);
    // The next beat says the node's own count.
    r.announce(&node("m1", 0), LONG).await.unwrap();
    assert_eq!(r.place("e", None, &[], LONG).await.unwrap().id, "m1");
}

/// Waits until `check` holds (bounded).
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn session_nodes_hold_rooms_while_they_live_and_hear_each_other() {
    use sori_cluster::{Heard, SessionNode};
    let (server, _) = redis().await;
    let s1 = SessionNode::connect(&server.url, "s1").unwrap();
    let s2 = SessionNode::connect(&server.url, "s2").unwrap();
    // Announced but not listening yet: not alive.
    s1.announce(LONG).await.unwrap();
    assert!(!s2.alive("s1").await);
    let (tx1, mut heard1) = tokio::sync::mpsc::channel(16);
    let listening = tokio::spawn(s1.clone().listen(tx1));
    until("s1 listens", async || s2.alive("s1").await).await;
    s2.announce(LONG).await.unwrap();
    let (tx2, _heard2) = tokio::sync::mpsc::channel(16);
    tokio::spawn(s2.clone().listen(tx2));
    until("s2 listens", async || s1.alive("s2").await).await;
    assert_eq!(s1.nodes().await.unwrap(), ["s1", "s2"]);

    // The first to ask holds the room; the other is told where it is.
    assert_eq!(s1.owner("standup").await.unwrap(), "s1");
    assert_eq!(s2.owner("standup").await.unwrap(), "s1");
    let rooms = [
        ("standup".to_string(), None),
        ("retro".to_string(), Some(b"{}".to_vec())),
    ];
    assert_eq!(s2.keep(&rooms).await.unwrap(), ["standup"]);
    assert_eq!(s1.load("retro").await.unwrap().as_deref(), Some(&b"{}"[..]));
    // Another's room's snapshot is not written over.
    let mine = [("standup".to_string(), Some(b"x".to_vec()))];
    assert_eq!(s2.keep(&mine).await.unwrap(), ["standup"]);
    assert_eq!(s1.load("standup").await.unwrap(), None);
    assert_eq!(s1.owner("retro").await.unwrap(), "s2");

    // Messages arrive in order.
    for i in 0..100u8 {
        assert!(s2.publish("s1", &[i]).await.unwrap());
    }
    for i in 0..100u8 {
        match heard1.recv().await.unwrap() {
            Heard::Message(m) => assert_eq!(m, [i]),
            other => panic!("{other:?}"),
        }
    }

    // s1 stops listening (its process died): it is gone at once, and its room goes to whoever
    // asks next.
    listening.abort();
    drop(heard1);
    until("s1 gone", async || !s2.alive("s1").await).await;
    assert!(!s2.publish("s1", b"x").await.unwrap());
    assert_eq!(s2.owner("standup").await.unwrap(), "s2");
    assert_eq!(
        s1.keep(&[("standup".into(), None)]).await.unwrap(),
        ["standup"]
    );
    s2.withdraw().await.unwrap();
    assert!(!s1.alive("s2").await);
}

//! Two media nodes linked for one room: a publisher on each, receivers on both; every receiver
//! gets every frame of both publishers, intact and in sequence, the other node's through the
//! link (here a pair of in-process channels carrying the bytes a network connection would).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_complete, start_node, Client, ClientOptions, ClientState, Kind};
use sori_net::LinkMsg;
use tokio::sync::mpsc;

const PUBLISHERS: [u8; 2] = [0, 4];

async fn both_publishers(c: &Client, video: usize) -> ClientState {
    let me = c.index;
    c.wait_for("media from both publishers", Duration::from_secs(30), |s| {
        PUBLISHERS.into_iter().filter(|p| *p != me).all(|p| {
            s.frames(p, Kind::Video).len() >= video && s.frames(p, Kind::Audio).len() >= video
        })
    })
    .await
}

/// Carries what one end sends to the other end, counting the packets, and those that
/// crossed before (the same track and sequence number).
fn pump(mut from: mpsc::Receiver<LinkMsg>, to: mpsc::Sender<LinkMsg>) -> Pumped {
    let packets = Arc::new(AtomicU64::new(0));
    let again = Arc::new(AtomicU64::new(0));
    let nodes = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let (counted, twice, of) = (packets.clone(), again.clone(), nodes.clone());
    let task = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        while let Some(m) = from.recv().await {
            if let LinkMsg::Packet(p) = &m {
                counted.fetch_add(1, Ordering::Relaxed);
                if !seen.insert((p.track, *p.packet.seq_no)) {
                    twice.fetch_add(1, Ordering::Relaxed);
                }
                // The node a track is from is in its id's top 16 bits.
                of.lock().unwrap().insert(p.track.0 >> 48);
            }
            // Through the bytes a network link carries.
            let now = std::time::Instant::now();
            let m = sori_net::link_wire::decode(&sori_net::link_wire::encode(&m, now), now)
                .expect("what one end encodes the other decodes");
            if to.send(m).await.is_err() {
                break;
            }
        }
    });
    (task, packets, again, nodes)
}

/// A pump, its packets, those that crossed twice, and the nodes their tracks are from.
type Pumped = (
    tokio::task::JoinHandle<()>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_linked_across_two_media_nodes_reaches_every_receiver_on_both() {
    let a = start_node(1, 1, 4).await;
    let b = start_node(2, 2, 4).await;
    // The room is "r" on a and "r-b" on b (a pipeline's id on each node).
    let a_link = a.handle.link("r").expect("a free link on a");
    let b_link = b.handle.link("r-b").expect("a free link on b");
    let a_to_b = pump(a_link.to_remote, b_link.from_remote);
    let b_to_a = pump(b_link.to_remote, a_link.from_remote);
    // Each end says which of the other's tracks its workers took in.
    let imported = |mut events: mpsc::Receiver<sori_net::LinkEvent>| {
        tokio::spawn(async move {
            let mut n = Vec::new();
            while let Some(e) = events.recv().await {
                if let sori_net::LinkEvent::Imported(info) = e {
                    n.push(info.publisher);
                    if n.len() == 2 {
                        break;
                    }
                }
            }
            n
        })
    };
    let (a_events, b_events) = (imported(a_link.events), imported(b_link.events));

    let mut clients = Vec::new();
    for i in 0..8u8 {
        let mut o = ClientOptions::new(i, if i < 4 { "r" } else { "r-b" });
        o.publish = PUBLISHERS.contains(&i);
        // 0..4 on a, 4..8 on b.
        let node = if i < 4 { &a } else { &b };
        clients.push(Client::join(node, o).await);
    }
    for c in &clients {
        let s = both_publishers(c, 90).await;
        for sender in PUBLISHERS.into_iter().filter(|p| *p != c.index) {
            assert_complete(c.index, &s, sender);
        }
    }
    // Each node was told of the other's publisher's two tracks.
    let on_a = a_events.await.unwrap();
    let on_b = b_events.await.unwrap();
    assert_eq!(on_a, vec![clients[4].peer; 2]);
    assert_eq!(on_b, vec![clients[0].peer; 2]);
    // Ids are the nodes' own: no peer of one is a peer of the other.
    assert!(clients[..4].iter().all(|c| c.peer.0 >> 48 == 1));
    assert!(clients[4..].iter().all(|c| c.peer.0 >> 48 == 2));

    // The link carries each packet once, whatever the receivers on the other side.
    let sent = |p: u8| {
        let s = clients[p as usize].state();
        u64::from(s.sent_audio + s.sent_video)
    };
    let (ab, ba) = (
        a_to_b.1.load(Ordering::Relaxed),
        b_to_a.1.load(Ordering::Relaxed),
    );
    assert!(
        ab > 0 && ab <= sent(0) * 2,
        "{ab} packets a→b for {} sent on a",
        sent(0)
    );
    assert!(
        ba > 0 && ba <= sent(4) * 2,
        "{ba} packets b→a for {} sent on b",
        sent(4)
    );

    // The link goes (either end dropped): each node's receivers keep their own publisher's
    // media, and a new link for the room can be made.
    a_to_b.0.abort();
    b_to_a.0.abort();
    let s = both_publishers(&clients[5], clients[5].state().frames(0, Kind::Video).len()).await;
    let before = s.frames(4, Kind::Video).len();
    clients[5]
        .wait_for("b's own publisher still", Duration::from_secs(10), |s| {
            s.frames(4, Kind::Video).len() >= before + 30
        })
        .await;
    // All four of b's links free again (held here, so that none comes back meanwhile).
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.len() < 4 {
        match b.handle.link("other") {
            Some(l) => held.push(l),
            None => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "only {} links free",
                    held.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(b.handle.link("other").is_none(), "no more than four");
}

/// Links `x`'s room `rx` and `y`'s room `ry` both ways; the two pumps and their counts.
fn link_pair(
    x: &sori_net::MediaServer,
    rx: &str,
    y: &sori_net::MediaServer,
    ry: &str,
) -> [Pumped; 2] {
    let lx = x.handle.link(rx).expect("a free link");
    let ly = y.handle.link(ry).expect("a free link");
    [
        pump(lx.to_remote, ly.from_remote),
        pump(ly.to_remote, lx.from_remote),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_across_three_linked_nodes_carries_each_track_once_per_link_without_loops() {
    // Every pair of nodes linked (as a session server links a room's nodes); a publisher and
    // a receiver on each. A track crosses only from its own node: the third node's tracks
    // reach each node over that node's own link, never passed on round the triangle.
    let nodes = [
        start_node(2, 1, 4).await,
        start_node(1, 2, 4).await,
        start_node(2, 3, 4).await,
    ];
    let rooms = ["t-a", "t-b", "t-c"];
    let mut pumps = Vec::new();
    for (x, y) in [(0, 1), (1, 2), (0, 2)] {
        pumps.push(((x, y), link_pair(&nodes[x], rooms[x], &nodes[y], rooms[y])));
    }
    // Publishers 0, 2, 4 (one per node); receivers 1, 3, 5.
    let mut clients = Vec::new();
    for i in 0..6u8 {
        let n = usize::from(i / 2);
        let mut o = ClientOptions::new(i, rooms[n]);
        o.publish = i % 2 == 0;
        clients.push(Client::join(&nodes[n], o).await);
    }
    for c in &clients {
        let s = c
            .wait_for(
                "media from the three publishers",
                Duration::from_secs(30),
                |s| {
                    [0u8, 2, 4]
                        .into_iter()
                        .filter(|p| *p != c.index)
                        .all(|p| s.frames(p, Kind::Video).len() >= 60)
                },
            )
            .await;
        for p in [0u8, 2, 4].into_iter().filter(|p| *p != c.index) {
            assert_complete(c.index, &s, p);
        }
    }
    // Each link carries each packet of its two ends' own publishers once, and nothing of the
    // third node's.
    for ((x, y), [xy, yx]) in &pumps {
        for (from, to, p) in [(x, y, xy), (y, x, yx)] {
            let (n, twice) = (p.1.load(Ordering::Relaxed), p.2.load(Ordering::Relaxed));
            assert!(n > 0, "packets {from}→{to}");
            assert_eq!(twice, 0, "{twice} of {n} packets {from}→{to} crossed twice");
            let of: Vec<u64> = p.3.lock().unwrap().iter().copied().collect();
            assert_eq!(
                of,
                vec![*from as u64 + 1],
                "{from}→{to} carries {from}'s tracks only"
            );
        }
    }
}

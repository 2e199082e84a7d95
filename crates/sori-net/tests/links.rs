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

/// Carries what one end sends to the other end, counting the packets.
fn pump(
    mut from: mpsc::Receiver<LinkMsg>,
    to: mpsc::Sender<LinkMsg>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let packets = Arc::new(AtomicU64::new(0));
    let counted = packets.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = from.recv().await {
            if matches!(m, LinkMsg::Packet(_)) {
                counted.fetch_add(1, Ordering::Relaxed);
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
    (task, packets)
}

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

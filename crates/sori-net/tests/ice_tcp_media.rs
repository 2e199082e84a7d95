//! A client whose UDP is blocked publishes and receives over ICE-TCP (RFC 4571 frames on the
//! media port's TCP listener) while its room-mate uses UDP; every frame arrives intact both
//! ways. When its connection closes, the server treats it like a client whose UDP went silent.

mod common;

use std::time::Duration;

use common::{start_server_with, Client, ClientOptions, ClientState, Kind};
use sori_net::TcpConfig;
use str0m::net::Protocol;

/// Every frame from `sender` intact, consecutive from the first, at least `min` of each kind.
fn check_frames(s: &ClientState, who: u8, sender: u8, min: usize) {
    for kind in [Kind::Audio, Kind::Video] {
        let frames = s.frames(sender, kind);
        assert!(
            frames.len() >= min,
            "client {who}: {} {kind:?} frames from {sender}",
            frames.len()
        );
        assert!(
            frames.iter().all(|f| f.intact),
            "client {who}: corrupted {kind:?} frame from {sender}"
        );
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(
                f.seq,
                frames[0].seq + i as u32,
                "client {who} {kind:?} from {sender}: gap or reorder"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_udp_sends_and_receives_over_tcp() {
    let server = start_server_with(Duration::from_secs(2), Some(TcpConfig::default())).await;
    let tcp_addr = server.tcp_addr.expect("a TCP listener");
    assert_eq!(
        tcp_addr.port(),
        server.local_addr.port(),
        "same port number"
    );
    assert_eq!(server.tcp_candidates.len(), 1);

    let mut opts = ClientOptions::new(0, "tcp");
    opts.udp_blocked = true;
    let a = Client::join(&server, opts).await;
    let b = Client::join(&server, ClientOptions::new(1, "tcp")).await;
    a.wait_for("100 video frames from b", Duration::from_secs(30), |s| {
        s.frames(1, Kind::Video).len() >= 100 && s.selected.is_some()
    })
    .await;
    b.wait_for("100 video frames from a", Duration::from_secs(30), |s| {
        s.frames(0, Kind::Video).len() >= 100 && s.selected.is_some()
    })
    .await;

    let (sa, sb) = (a.state(), b.state());
    assert_eq!(sa.selected, Some(Protocol::Tcp), "a's ICE pair is TCP");
    assert_eq!(sb.selected, Some(Protocol::Udp), "b's ICE pair is UDP");
    check_frames(&sa, 0, 1, 100);
    check_frames(&sb, 1, 0, 100);
    // b got every frame a wrote since its first one, less the few still in flight.
    let sent = sa.sent_video - sb.frames(0, Kind::Video)[0].seq;
    let got = sb.frames(0, Kind::Video).len() as u32;
    assert!(sent - got <= 10, "a sent {sent} video frames, b got {got}");

    let stats = server.handle.stats().await.unwrap();
    assert_eq!(stats.tcp.open, 1);
    assert_eq!(stats.tcp.pending, 0);
    assert_eq!(stats.tcp.accepted, 1);
    assert_eq!(stats.tcp.rejected + stats.tcp.refused, 0);
    assert_eq!(stats.state.addr_routes, 2, "one TCP and one UDP route");
    let flows = server.handle.flows(vec![a.peer]).await.unwrap();
    let flow = flows[0].expect("a is in the core");
    assert!(flow.video_in >= 100 && flow.video_out >= 100, "{flow:?}");

    // a's connection goes away: after the ICE timeout a is removed and b stops receiving it.
    a.vanish().await;
    b.wait_for("a's m-lines stopped", Duration::from_secs(10), |s| {
        s.active_recv_mids() == 0
    })
    .await;
    let stats = server.handle.stats().await.unwrap();
    assert_eq!(stats.state.peers, 1);
    assert_eq!(stats.tcp.open, 0, "the connection is closed");
    assert_eq!(stats.state.addr_routes, 1);
}

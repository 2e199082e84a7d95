//! Clients that stop reading: fifty sockets join a busy room and never read a byte. Each is
//! disconnected once its bounded queue is full, the others go on talking, and the server's
//! memory returns to where it was. Alone in its file: the process's RSS is the measurement.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{flush, server_with, Client, WAIT};
use serde_json::json;
use sori_signal::{Limits, SignalConfig};

/// Opens a WebSocket by hand and joins; returns the raw stream, which the test never reads.
fn raw_join(addr: SocketAddr, room: &str, name: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A tiny receive window: what the server sends piles up at the server, as with a client
    // that stopped reading.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let payload = json!({"type": "join", "v": 1, "room": room, "name": name}).to_string();
    tcp.write_all(&masked_text_frame(payload.as_bytes()))
        .unwrap();
    tcp
}

fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_read_are_dropped_and_memory_returns() {
    let limits = Limits {
        chat_per_sec: 1e6,
        chat_burst: 1e6,
        joins_per_sec: 1e6,
        joins_burst: 1e6,
        ..Limits::default()
    };
    let s = server_with(SignalConfig {
        limits,
        ..SignalConfig::default()
    })
    .await;
    let (mut ada, _) = Client::join(&s.url, "big", "Ada").await;
    let (mut bo, _) = Client::join(&s.url, "big", "Bo").await;
    ada.expect("participant-joined").await;
    // Warm up with fifty clients that do read, through the same traffic: the allocator's
    // arenas, the runtime's threads and the connections' buffers have been there once before
    // the baseline, so what is measured is what the silent ones leave behind.
    let mut readers = Vec::new();
    for i in 0..50 {
        readers.push(Client::join(&s.url, "big", &format!("reader{i}")).await.0);
    }
    for round in 0..5 {
        for i in 0..100 {
            let text = format!("warm {round}-{i} {}", "가".repeat(1990));
            ada.send(json!({"type": "chat", "text": text}));
        }
        flush(&mut bo, &format!("warm {round}")).await;
        flush(&mut ada, &format!("warm {round} a")).await;
        // The readers read it all too (the test keeps nothing of it).
        for r in &mut readers {
            while r.recv().await["text"] != format!("warm {round} a") {}
        }
    }
    for r in readers {
        r.close().await;
    }
    let baseline = rss_kib();

    let addr = s.http;
    let silent: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..50)
            .map(|i| raw_join(addr, "big", &format!("silent{i}")))
            .collect()
    })
    .await
    .unwrap();
    // Everyone chats; the silent ones' queues fill and they are let go.
    let mut round = 0;
    while s.metric("sori_participants").await > 2 {
        round += 1;
        assert!(round < 200, "the silent sockets are still in the room");
        for i in 0..100 {
            let text = format!("{round}-{i} {}", "가".repeat(1990));
            ada.send(json!({"type": "chat", "text": text}));
        }
        // Both read everything, so the test's own buffers stay small.
        flush(&mut bo, &format!("round {round}")).await;
        flush(&mut ada, &format!("round {round} a")).await;
    }
    let page_has = |page: &str| page.contains("sori_refused_total{reason=\"slow-reader\"} 50");
    let metrics = s.metrics_page().await;
    assert!(page_has(&metrics), "{metrics}");
    // Ada and Bo are still talking.
    flush(&mut ada, "still here").await;
    drop(silent);
    flush(&mut bo, "after").await;
    let after = rss_kib();
    println!("RSS {baseline} KiB before the silent sockets, {after} KiB after");
    // Kept, the silent sockets would hold at least 50 MiB (each a full 1 MiB resume history
    // besides its queue); what the allocator keeps of freed memory in its arenas moves RSS by
    // some 20 MiB between runs (21 MiB seen once under load).
    assert!(
        after < baseline + 30 * 1024,
        "RSS {baseline} KiB before, {after} KiB after"
    );
}

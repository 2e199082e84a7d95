//! Downloads are streamed: four slow downloads of a 64 MiB recording at once do not grow the
//! server's memory by the file's size. (The server runs in this test's process, alone in this
//! file so that no other test's memory counts.)

mod common;

use std::io::{Read, Write};

use common::{server_with, TempDir, WAIT};
use sori_signal::SignalConfig;

const LEN: usize = 64 << 20;
const DOWNLOADS: usize = 4;

fn byte_at(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Reads `n` bytes of the body and checks them against the file's content from `at` on.
fn read_checked(s: &mut std::net::TcpStream, at: usize, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < n {
        let want = buf.len().min(n - done);
        let got = s.read(&mut buf[..want]).unwrap();
        assert!(got > 0, "the body ended after {} bytes", at + done);
        for (k, b) in buf[..got].iter().enumerate() {
            assert_eq!(*b, byte_at(at + done + k), "byte {}", at + done + k);
        }
        done += got;
    }
}

/// Sends the request and reads the response head; the stream is left at the body's start.
fn start_download(addr: std::net::SocketAddr, path: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {LEN}\r\n")),
        "{head}"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_downloads_of_a_big_file_keep_memory_flat() {
    let tmp = TempDir::new("download-memory");
    let rec = tmp.0.join("big-20261118T110640Z");
    std::fs::create_dir_all(&rec).unwrap();
    let mut f = std::fs::File::create(rec.join("p1-Ada.webm")).unwrap();
    for i in 0..LEN >> 20 {
        let block: Vec<u8> = (0..1 << 20).map(|k| byte_at((i << 20) + k)).collect();
        f.write_all(&block).unwrap();
    }
    drop(f);
    let server = server_with(SignalConfig {
        recordings_dir: Some(tmp.0.clone()),
        ..SignalConfig::default()
    })
    .await;
    let addr = server.http;

    tokio::task::spawn_blocking(move || {
        let before = rss();
        let mut streams: Vec<_> = (0..DOWNLOADS)
            .map(|_| start_download(addr, "/recordings/big-20261118T110640Z/p1-Ada.webm"))
            .collect();
        // Every download half read, and held there: the slow clients of the audit.
        for s in &mut streams {
            read_checked(s, 0, LEN / 2);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let grown = rss().saturating_sub(before);
        assert!(
            grown < LEN / 2,
            "memory grew by {} MiB during {DOWNLOADS} downloads of a {} MiB file",
            grown >> 20,
            LEN >> 20
        );
        for s in &mut streams {
            read_checked(s, LEN / 2, LEN / 2);
            let mut rest = [0u8; 1];
            assert_eq!(s.read(&mut rest).unwrap(), 0, "nothing after the file");
        }
    })
    .await
    .unwrap();
}

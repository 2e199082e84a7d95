//! `sori media --redis`: the node announces itself in Redis (Debian's `redis-server`, started
//! here on a free loopback port), refuses a drain without the control API's token, and on
//! `POST /drain` with it drains, withdraws from Redis and exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SORI: &str = env!("CARGO_BIN_EXE_sori");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools) runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits (bounded) until `check` holds.
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status code of `POST path` at `addr`, with `Authorization: Bearer token` when given.
fn post(addr: &str, path: &str, token: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{reply}"))
}

#[test]
fn a_media_node_announces_itself_and_drains_on_an_authorized_admin_call() {
    let port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) runs"),
    );
    until("redis-server answers", || {
        redis_cli(port, &["ping"]) == "PONG"
    });
    let dir = std::env::temp_dir().join(format!("sori-cluster-test-{}", std::process::id()));
    let token = "drain-t0ken-value";
    let mut child = Command::new(SORI)
        .args(["media", "--redis", &format!("redis://127.0.0.1:{port}/0")])
        .args(["--node-id", "drain-me", "--capacity", "40"])
        .args(["--kurento-listen", "127.0.0.1:0", "--rtc-port", "0"])
        .args(["--advertise-ip", "127.0.0.1", "--no-rtc-tcp"])
        .args(["--kurento-token", token])
        .arg("--recordings-dir")
        .arg(&dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let line = lines
        .by_ref()
        .map(|l| l.unwrap())
        .inspect(|l| seen.push(l.clone()))
        .find(|l| l.contains("control API on ws://"))
        .unwrap_or_else(|| panic!("no control API in: {seen:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    let mut child = Killed(child);
    let url = line
        .split("control API on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/kurento")
        .to_string();

    // Announced with the address it listens on (port 0 resolved), its capacity and load.
    until("the node announced", || {
        redis_cli(port, &["hget", "sori:media:drain-me", "control_url"]) == url
    });
    assert_eq!(
        redis_cli(
            port,
            &[
                "hmget",
                "sori:media:drain-me",
                "capacity",
                "load",
                "draining"
            ]
        ),
        "40\n0\n0"
    );
    assert_eq!(
        redis_cli(port, &["smembers", "sori:media:nodes"]),
        "drain-me"
    );

    // Without the token, or with another one: refused, nothing changes.
    assert_eq!(post(&addr, "/drain", None), 403);
    assert_eq!(post(&addr, "/drain", Some("not-the-token")), 403);
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    assert_eq!(
        redis_cli(port, &["hget", "sori:media:drain-me", "draining"]),
        "0"
    );

    // With it: an empty node drains at once, leaves the registry and exits cleanly.
    assert_eq!(post(&addr, "/drain", Some(token)), 202);
    let mut status = None;
    until("the node exits", || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    assert_eq!(redis_cli(port, &["exists", "sori:media:drain-me"]), "0");
    assert_eq!(redis_cli(port, &["smembers", "sori:media:nodes"]), "");
    let _ = std::fs::remove_dir_all(&dir);
}

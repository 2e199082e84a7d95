//! Operators can swap in coturn: with `use-auth-secret` and the same secret, coturn accepts the
//! credentials Sori's session server issues, relays with them, and refuses expired and forged
//! ones. Needs Debian's `coturn` (scripts/test installs it); without it the test fails under
//! CI and says why elsewhere.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use sori_turn::{credentials, Credential};
use webrtc_util::Conn;

/// coturn on 127.0.0.1 (loopback peers allowed for the test), killed on drop, its directory
/// (pid and log file) removed.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn coturn() -> Option<Coturn> {
    let found = Command::new("sh")
        .args(["-c", "command -v turnserver"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "coturn (turnserver) is not installed; scripts/test installs it"
        );
        println!("skipped: coturn (turnserver) is not installed");
        return None;
    }
    let port = free_udp_port();
    let dir = std::env::temp_dir().join(format!("sori-coturn-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--relay-ip=127.0.0.1",
            "--min-port=63000",
            "--max-port=63999",
            "--allow-loopback-peers",
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            &format!("--realm={REALM}"),
            &format!("--pidfile={}", dir.join("turnserver.pid").display()),
            &format!("--log-file={}", dir.join("turnserver.log").display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    let mut coturn = Coturn {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dir: dir.clone(),
    };
    // Ready once it answers a STUN Binding request (bounded: 100 tries, 100 ms apart).
    for _ in 0..100 {
        assert!(
            coturn.child.try_wait().unwrap().is_none(),
            "turnserver exited; its log: {}",
            log_in(&dir)
        );
        let probe = client(coturn.addr, udp().await, &credential("probe")).await;
        let answered =
            tokio::time::timeout(Duration::from_millis(100), probe.send_binding_request())
                .await
                .is_ok_and(|r| r.is_ok());
        probe.close().await.unwrap();
        if answered {
            return Some(coturn);
        }
    }
    panic!(
        "turnserver did not answer on {}; its log: {}",
        coturn.addr,
        log_in(&dir)
    );
}

/// What coturn logged in `dir` (it adds the date to the log file's name).
fn log_in(dir: &std::path::Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

#[tokio::test]
async fn coturn_relays_with_sori_credentials_and_refuses_expired_and_forged_ones() {
    let Some(coturn) = coturn().await else {
        return;
    };
    // As the session server issues it for a participant.
    let issued = credential("p1");
    let c = client(coturn.addr, udp().await, &issued).await;
    let relay = c
        .allocate()
        .await
        .expect("coturn accepts the Sori-issued credential");
    assert!((63000..=63999).contains(&relay.local_addr().unwrap().port()));
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [1, 160, 1200] {
        let data: Vec<u8> = (0..size).map(|i| (i * 5 + size) as u8).collect();
        round_trip(&relay, &peer, &data).await;
    }
    c.close().await.unwrap();

    let expired = credentials::issue(
        SECRET,
        "p2",
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(120),
    );
    let forged = Credential {
        username: issued.username.clone(),
        password: "Zm9yZ2VkLXBhc3N3b3Jk".into(),
    };
    for (name, cred) in [("expired", expired), ("forged", forged)] {
        let c = client(coturn.addr, udp().await, &cred).await;
        let refused = tokio::time::timeout(WAIT, c.allocate())
            .await
            .expect("coturn answers in time");
        assert!(refused.is_err(), "{name} credential refused by coturn");
        c.close().await.unwrap();
    }
}

//! Starting the server under test (`sori serve`, or the ceiling relay) on 127.0.0.1 with free
//! ports, optionally pinned to CPUs.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server this tool started; it is killed when dropped.
pub struct Server {
    pub pid: u32,
    /// `ws://ADDR/ws`.
    pub url: String,
    _child: Child,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {cmd}: {why}")]
    Start { cmd: String, why: String },
    #[error("{0} exited before saying where it listens")]
    Exited(String),
    #[error("{0} did not say where it listens within 30 s")]
    Timeout(String),
}

/// Starts `sori serve` from the binary at `sori` on 127.0.0.1 with free ports, with the
/// configuration file `config` if given (the flags here override it).
pub async fn sori(
    sori: &str,
    config: Option<&std::path::Path>,
    cpus: Option<&str>,
) -> Result<Server, SpawnError> {
    let config = config.map(|c| c.to_string_lossy().into_owned());
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--advertise-ip",
        "127.0.0.1",
        "--rtc-port",
        "0",
        // The benchmark measures media through the SFU; several runs may overlap.
        "--no-turn",
    ];
    if let Some(c) = &config {
        args.extend(["--config", c]);
    }
    start(sori, &args, cpus).await
}

/// Starts this tool's ceiling relay (`sori-bench relay`) on 127.0.0.1.
pub async fn ceiling(cpus: Option<&str>) -> Result<Server, SpawnError> {
    let exe = std::env::current_exe().map_err(|e| SpawnError::Start {
        cmd: "sori-bench relay".into(),
        why: e.to_string(),
    })?;
    start(
        &exe.to_string_lossy(),
        &["relay", "--listen", "127.0.0.1:0"],
        cpus,
    )
    .await
}

/// Starts `program args`, under `taskset -c CPUS` when `cpus` is set, and waits for its
/// "listening on http://ADDR" line.
async fn start(program: &str, args: &[&str], cpus: Option<&str>) -> Result<Server, SpawnError> {
    let sori = program;
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c, sori]);
            cmd
        }
        None => Command::new(sori),
    };
    cmd.args(args)
        .env("RUST_LOG", "warn,sori=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| SpawnError::Start {
        cmd: sori.to_string(),
        why: e.to_string(),
    })?;
    // taskset execs the server, so the child's pid is the server's.
    let pid = child
        .id()
        .ok_or_else(|| SpawnError::Exited(sori.to_string()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| SpawnError::Exited(sori.to_string()))?;
    let mut lines = BufReader::new(stderr).lines();
    let find = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                if let Some(addr) = rest.split_whitespace().next() {
                    return Some(addr.to_string());
                }
            }
        }
        None
    };
    let addr = match tokio::time::timeout(Duration::from_secs(30), find).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(SpawnError::Exited(sori.to_string())),
        Err(_) => return Err(SpawnError::Timeout(sori.to_string())),
    };
    // Keep reading the server's log so it never blocks on a full pipe; pass warnings on.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("WARN") || line.contains("ERROR") {
                tracing::debug!("server: {line}");
            }
        }
    });
    Ok(Server {
        pid,
        url: format!("ws://{addr}/ws"),
        _child: child,
    })
}

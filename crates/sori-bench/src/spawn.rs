//! Starting the server under test (`sori serve`, or the ceiling relay) on 127.0.0.1 with free
//! ports, optionally pinned to CPUs.
//!
//! Every client of a run joins from one address into one room, faster than a person would:
//! `sori serve` gets a configuration file whose `[limits]` let it ([`BENCH_LIMITS`]), after
//! the `--server-config` file if one is given (whose own `[limits]`, if it has them, win).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server this tool started; it is killed when dropped (and its configuration file removed).
pub struct Server {
    pub pid: u32,
    /// `ws://ADDR/ws`.
    pub url: String,
    _child: Child,
    config: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.config {
            let _ = std::fs::remove_file(c);
        }
    }
}

/// The limits of a benchmarked server: one address opens every connection, joins everyone to
/// one room, at the step's join rate.
pub const BENCH_LIMITS: &str = "[limits]
participants_per_room = 100000
connections = 100000
connections_per_ip = 100000
joins_per_sec = 100000.0
joins_burst = 100000.0
";

/// The configuration file's text: `user` (the `--server-config` file) followed by
/// [`BENCH_LIMITS`], unless `user` has a `[limits]` table of its own.
pub fn config_text(user: Option<&str>) -> String {
    let user = user.unwrap_or_default();
    let has_limits = user.lines().any(|l| l.trim() == "[limits]");
    if has_limits {
        user.to_string()
    } else if user.is_empty() {
        BENCH_LIMITS.to_string()
    } else {
        format!("{}\n\n{BENCH_LIMITS}", user.trim_end())
    }
}

/// Writes the configuration file of a server about to start, in the temporary directory.
fn write_config(user: Option<&Path>) -> Result<PathBuf, SpawnError> {
    let fail = |why: String| SpawnError::Start {
        cmd: "sori serve".into(),
        why,
    };
    let user = user
        .map(|p| std::fs::read_to_string(p).map_err(|e| fail(format!("{}: {e}", p.display()))))
        .transpose()?;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("sori-bench-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, config_text(user.as_deref()))
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok(path)
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
/// configuration file `config` if given (the flags here override it; see [`config_text`]).
pub async fn sori(
    sori: &str,
    config: Option<&Path>,
    cpus: Option<&str>,
) -> Result<Server, SpawnError> {
    let file = write_config(config)?;
    let path = file.to_string_lossy().into_owned();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--advertise-ip",
        "127.0.0.1",
        "--rtc-port",
        "0",
        // The benchmark measures media through the SFU; several runs may overlap.
        "--no-turn",
        "--config",
        &path,
    ];
    let started = start(sori, &args, cpus).await;
    match started {
        Ok(mut server) => {
            server.config = Some(file);
            Ok(server)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&file);
            Err(e)
        }
    }
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
        config: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_limits_follow_the_given_file_unless_it_has_its_own() {
        assert_eq!(config_text(None), BENCH_LIMITS);
        let nobwe = "[media]\ninitial_estimate_kbps = 0\n";
        assert_eq!(config_text(Some(nobwe)), format!("{nobwe}\n{BENCH_LIMITS}"));
        let own = "[limits]\nconnections_per_ip = 10\n";
        assert_eq!(config_text(Some(own)), own);
    }
}

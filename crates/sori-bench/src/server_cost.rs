//! The server's cost, read from /proc: CPU time of all its threads and its memory.

use std::fs;
use std::time::Instant;

/// Clock ticks per second in /proc/PID/stat (USER_HZ, fixed at 100 by the Linux ABI).
const TICKS_PER_SEC: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// User + system CPU time of every thread, in microseconds.
    pub cpu_us: u64,
    /// The same for each of Sori's media worker threads (`sori-media-N`), by name.
    pub media_threads: Vec<(String, u64)>,
    /// Proportional set size in KiB (resident size where PSS is not readable).
    pub mem_kib: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}: {why}")]
    Read { pid: u32, why: String },
    #[error("/proc/{pid}/stat has an unexpected format")]
    Format { pid: u32 },
}

/// Reads CPU time and memory of process `pid`.
pub fn sample(pid: u32) -> Result<Sample, ProcError> {
    let read = |file: &str| {
        fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| ProcError::Read {
            pid,
            why: e.to_string(),
        })
    };
    let stat = read("stat")?;
    let cpu_us = parse_stat_cpu_us(&stat).ok_or(ProcError::Format { pid })?;
    let mem_kib = match read("smaps_rollup") {
        Ok(s) => field_kib(&s, "Pss:"),
        Err(_) => None,
    }
    .or_else(|| read("status").ok().and_then(|s| field_kib(&s, "VmRSS:")))
    .unwrap_or(0);
    Ok(Sample {
        at: Instant::now(),
        cpu_us,
        mem_kib,
        media_threads: media_threads(pid),
    })
}

/// CPU time of each thread of `pid` named `sori-media-N` (none for other servers), in
/// thread-name order.
fn media_threads(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = tasks
        .flatten()
        .filter_map(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?;
            name.starts_with(MEDIA_THREAD)
                .then(|| Some((name.to_string(), parse_stat_cpu_us(&stat)?)))?
        })
        .collect();
    out.sort();
    out
}

/// The name prefix of Sori's media worker threads.
const MEDIA_THREAD: &str = "sori-media-";

/// utime + stime (fields 14 and 15) in microseconds. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last ')'.
fn parse_stat_cpu_us(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / TICKS_PER_SEC)
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was full, machine-wide
/// since boot (`RcvbufErrors` in /proc/net/snmp); `None` where it cannot be read.
pub fn udp_receive_buffer_errors() -> Option<u64> {
    parse_rcvbuf_errors(&fs::read_to_string("/proc/net/snmp").ok()?)
}

fn parse_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?.split_whitespace();
    let values = udp.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "RcvbufErrors")?
        .1
        .parse()
        .ok()
}

/// The server's cost between two samples.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// CPU time used per wall-clock second (1.0 = one core busy).
    pub cores: f64,
    pub cpu_us_per_packet: Option<f64>,
    /// Packets forwarded per second of CPU time.
    pub packets_per_core_second: Option<f64>,
    /// Cores used by each media worker thread (Sori only), by thread name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_threads: Vec<(String, f64)>,
}

pub fn cost(before: &Sample, after: &Sample, forwarded_packets: u64) -> Cost {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cpu_us = after.cpu_us.saturating_sub(before.cpu_us) as f64;
    let per_packet = (forwarded_packets > 0).then(|| cpu_us / forwarded_packets as f64);
    let cores = |us: u64| {
        if wall > 0.0 {
            us as f64 / 1e6 / wall
        } else {
            0.0
        }
    };
    let media_threads = after
        .media_threads
        .iter()
        .map(|(name, us)| {
            let was = before.media_threads.iter().find(|(n, _)| n == name);
            (
                name.clone(),
                cores(us.saturating_sub(was.map_or(0, |w| w.1))),
            )
        })
        .collect();
    Cost {
        cores: cores(after.cpu_us.saturating_sub(before.cpu_us)),
        cpu_us_per_packet: per_packet,
        packets_per_core_second: per_packet.filter(|p| *p > 0.0).map(|p| 1e6 / p),
        media_threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat =
            "4242 (sori (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat_cpu_us(stat), Some(3_250_000));
        assert_eq!(parse_stat_cpu_us("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_us("garbage"), None);
    }

    #[test]
    fn receive_buffer_errors_from_snmp() {
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 10 0 7 12 7\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(parse_rcvbuf_errors(snmp), Some(7));
        assert_eq!(parse_rcvbuf_errors("Udp: InDatagrams\nUdp: 1\n"), None);
        assert!(udp_receive_buffer_errors().is_some());
    }

    #[test]
    fn memory_fields_in_kib() {
        let s = "Rss:    2048 kB\nPss:    1500 kB\n";
        assert_eq!(field_kib(s, "Pss:"), Some(1500));
        assert_eq!(field_kib(s, "Swap:"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.mem_kib > 0);
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }

    #[test]
    fn media_threads_are_read_by_name() {
        let busy = std::thread::Builder::new()
            .name("sori-media-0".into())
            .spawn(|| {
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed().as_millis() < 50 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                std::thread::park();
            })
            .unwrap();
        // The thread has run its 50 ms loop once its CPU time shows at least 10 ms (one tick).
        let pid = std::process::id();
        let seen = (0..200).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let s = sample(pid).unwrap();
            s.media_threads
                .iter()
                .find(|(n, us)| n == "sori-media-0" && *us >= 10_000)
                .cloned()
        });
        busy.thread().unpark();
        busy.join().unwrap();
        assert!(seen.is_some(), "the busy thread's CPU time was not read");
    }
}

//! Sori's load generator.
//!
//! Clients are str0m peers in RTP mode, no browser ([`client`]). Publishers send synthetic VP8
//! and Opus whose every payload ends with a probe ([`probe`]): publisher, stream, probe sequence
//! number and send time. Receivers count probes per stream over a measurement window of send
//! times ([`measure`]), which gives loss after repair and one-way delay through any SFU. A step
//! ([`run`]) joins a scenario's participants through a target's signaling ([`sori_target`],
//! [`janus_target`]), waits until each has a decodable start from every publisher, measures a
//! steady window, and reads the server's CPU time and memory from /proc ([`server_cost`]).
//! [`report`] applies the capacity rule and draws the table and chart; [`summary`] turns the
//! result files of several contenders and rounds into the benchmarks page. [`ceiling`] is the
//! yardstick: a relay that only decrypts, re-encrypts and forwards.
//!
//! With `--simulcast` publishers send their video as three layers; receivers may carry a
//! bandwidth cap ([`cap`]); each step then reports what capped and uncapped receivers got
//! ([`classes`]) and the server's own layer counts ([`server_metrics`]).
//!
//! One client decrypts every packet it receives, so the load generator costs about as much CPU
//! per packet as a good SFU: on a small machine it, not the server, sets the largest load it can
//! measure. Each step reports the generator's own CPU next to the server's. With `--sample N`
//! ([`sample`]) a receiver decrypts 1 in N RTP packets once the window opens (its delay sample)
//! and counts every packet from its clear RTP header (loss, bytes); it negotiates no
//! transport-cc and sends no NACKs, so its loss is before repair toward it. Steps say which
//! mode ran (`receiver_mode`).

pub mod cap;
pub mod ceiling;
pub mod classes;
pub mod client;
pub mod compare;
pub mod janus_target;
pub mod measure;
pub mod probe;
pub mod report;
pub mod run;
pub mod sample;
pub mod server_cost;
pub mod server_metrics;
pub mod sori_target;
pub mod spawn;
pub mod summary;

/// The instant the tool started (the first call): `--speak` times count from it.
pub fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

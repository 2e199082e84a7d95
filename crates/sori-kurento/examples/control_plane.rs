//! Control-plane speed: how long creating and negotiating N WebRtcEndpoints takes over the
//! Kurento protocol (create + processOffer + gatherCandidates + connect each), one request
//! after another as an application waiting for each reply would send them, and pipelined.
//!
//! `cargo run --release -p sori-kurento --example control_plane -- 100`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{offer, pipeline, server, Client};
use serde_json::json;
use str0m::media::Direction;

async fn round(c: &mut Client, offers: &[String], pipelined: bool) -> Duration {
    let p = pipeline(c).await;
    let start = Instant::now();
    let mut previous: Option<String> = None;
    for (i, sdp) in offers.iter().enumerate() {
        let create = json!({"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": p},
                            "properties": {}});
        let w = c.ok("create", create).await["value"]
            .as_str()
            .unwrap()
            .to_string();
        let ops = [
            json!({"object": w, "operation": "processOffer", "operationParams": {"offer": sdp}}),
            json!({"object": w, "operation": "gatherCandidates"}),
            json!({"object": previous.clone().unwrap_or_else(|| w.clone()), "operation": "connect",
                   "operationParams": {"sink": w}}),
        ];
        if pipelined {
            let mut ids = Vec::new();
            for op in ops {
                ids.push(c.send("invoke", op).await);
            }
            for id in ids {
                let r = c.response(id).await;
                assert!(r.get("error").is_none(), "endpoint {i}: {r}");
            }
        } else {
            for op in ops {
                c.ok("invoke", op).await;
            }
        }
        previous = Some(w);
    }
    let took = start.elapsed();
    c.ok("release", json!({"object": p})).await;
    took
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let offers: Vec<String> = (0..n).map(|_| offer(Direction::SendRecv)).collect();
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    for pipelined in [false, true, false, true] {
        let took = round(&mut c, &offers, pipelined).await;
        println!(
            "{n} endpoints ({}): {:.1} ms total, {:.3} ms per endpoint",
            if pipelined {
                "pipelined"
            } else {
                "each reply awaited"
            },
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0 / n as f64
        );
    }
}

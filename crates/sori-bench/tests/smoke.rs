//! `sori-bench` as a user runs it: short runs against a real `sori serve` and against the
//! ceiling relay, each started by the tool itself on 127.0.0.1 and read back from `--json`;
//! and clear errors for bad flags.
//!
//! The `sori` binary must be built first (`cargo test --workspace` builds it for the `sori`
//! crate's own tests; `scripts/test` runs that). `SORI_BIN` overrides where it is looked for.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_sori-bench");

/// target/<profile>/sori, next to this test's own target/<profile>/deps/ directory.
fn sori_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SORI_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let sori = profile_dir.join("sori");
    assert!(
        sori.exists(),
        "{} is missing: build it first with `cargo build -p sori` (or set SORI_BIN)",
        sori.display()
    );
    sori
}

#[test]
fn fanout_through_sori_serve_arrives_whole_with_delays_and_server_cost() {
    let out = Command::new(BENCH)
        .args(["--spawn-server"])
        .arg(sori_binary())
        .args([
            "--scenario",
            "fanout",
            "--load",
            "3",
            "--video-kbps",
            "300",
            "--warmup",
            "1",
            "--duration",
            "3",
            "--quiet",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sori-bench failed\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    let json_start = stdout.find("{\n").expect("JSON after the table");
    let v: Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    let step = &v["steps"][0];
    assert_eq!(step["load"], 3);
    assert_eq!(step["publishers"], 1);
    assert_eq!(step["receivers"], 3);
    // The publisher and the three receivers.
    assert_eq!(step["joins_ok"], 4, "{step}");
    assert_eq!(step["joins_failed"], 0, "{step}");
    assert!(step["errors"].as_array().unwrap().is_empty(), "{step}");
    // 3 s of 50 audio and ~30 video packets per second, to each of 3 receivers.
    let expected = step["expected_packets"].as_u64().unwrap();
    assert!(expected > 3 * 3 * 70, "{step}");
    assert_eq!(
        step["received_packets"].as_u64().unwrap(),
        expected,
        "{step}"
    );
    assert_eq!(step["loss"].as_f64().unwrap(), 0.0);
    for q in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(step["delay"][q].as_f64().unwrap() > 0.0, "{q}: {step}");
        assert!(step["join_ready"][q].as_f64().unwrap() > 0.0, "{q}: {step}");
    }
    assert!(
        step["server"]["cpu_us_per_packet"].as_f64().is_some(),
        "{step}"
    );
    assert!(step["server_mem_kib_after"].as_u64().unwrap() > 0, "{step}");
    assert!(stdout.contains("capacity: load 3"), "{stdout}");
}

#[test]
fn meeting_through_the_ceiling_relay_arrives_whole() {
    let out = Command::new(BENCH)
        .args([
            "--target",
            "ceiling",
            "--scenario",
            "meeting",
            "--load",
            "3",
            "--video-kbps",
            "300",
            "--warmup",
            "1",
            "--duration",
            "2",
            "--quiet",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sori-bench failed\n{stdout}\n{stderr}"
    );
    let json_start = stdout.find("{\n").expect("JSON after the table");
    let v: Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    let step = &v["steps"][0];
    assert_eq!(step["publishers"], 3, "{step}");
    assert_eq!(step["joins_ok"], 3, "{step}");
    let expected = step["expected_packets"].as_u64().unwrap();
    // Each of 3 receives 2 others' audio and video for 2 s.
    assert!(expected > 3 * 2 * 2 * 70, "{step}");
    assert_eq!(
        step["received_packets"].as_u64().unwrap(),
        expected,
        "{step}"
    );
    assert!(step["delay"]["p50_ms"].as_f64().unwrap() > 0.0, "{step}");
    assert!(
        step["server"]["cpu_us_per_packet"].as_f64().is_some(),
        "{step}"
    );
}

/// Runs `sori-bench --spawn-server <sori> ARGS --quiet --json -` and returns its one step.
fn spawned_step(args: &[&str]) -> Value {
    let out = Command::new(BENCH)
        .args(["--spawn-server"])
        .arg(sori_binary())
        .args(args)
        .args(["--quiet", "--json", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sori-bench failed\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    let json_start = stdout.find("{\n").expect("JSON after the table");
    let v: Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    v["steps"][0].clone()
}

#[test]
fn with_simulcast_a_capped_receiver_gets_a_lower_layer_than_the_others() {
    // Layers of 18, 75 and 300 kbit/s: a 100 kbit/s cap leaves no room for the top one.
    let step = spawned_step(&[
        "--scenario",
        "fanout",
        "--load",
        "3",
        "--video-kbps",
        "300",
        "--simulcast",
        "--receiver-cap-kbps",
        "100",
        // Receivers that start on the top layer fall back to h within a second (the first
        // estimates follow what was sent) and climb again behind probes within ~7 s.
        "--warmup",
        "12",
        "--duration",
        "3",
    ]);
    assert_eq!(step["simulcast"], true, "{step}");
    assert_eq!(step["joins_ok"], 4, "{step}");
    let classes = step["classes"].as_array().unwrap();
    let class = |name: &str| {
        classes
            .iter()
            .find(|c| c["class"] == name)
            .unwrap_or_else(|| panic!("no {name} class: {step}"))
    };
    let (capped, free) = (class("capped"), class("uncapped"));
    assert_eq!(capped["receivers"], 1, "{step}");
    assert_eq!(free["receivers"], 2, "{step}");
    assert_eq!(capped["cap_kbps"], 100);
    // The capped receiver gets nothing of the top layer and less video than its cap.
    let share = |c: &Value, layer: &str| c["layer_share"][layer].as_f64().unwrap_or(0.0);
    assert!(
        !capped["on_layer"].as_object().unwrap().contains_key("f"),
        "{step}"
    );
    assert_eq!(share(capped, "f"), 0.0, "{step}");
    assert!(capped["video_kbps"].as_f64().unwrap() < 100.0, "{step}");
    // Most of what the others get is the top layer (an uncapped receiver may spend a while on
    // h: the server's estimate follows what it sent, close to the layer's rate), all of it.
    assert!(share(free, "f") > 0.5, "{step}");
    assert_eq!(free["video_loss"].as_f64(), Some(0.0), "{step}");
    // The server's own count (/metrics): three video deliveries, and the capped one moved.
    let server = &step["server_layers"];
    let deliveries: u64 = server["receivers_by_layer"]
        .as_object()
        .unwrap_or_else(|| panic!("no layers from the server's metrics: {step}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(deliveries, 3, "{step}");
    assert!(server["switches_total"].as_u64().unwrap() >= 1, "{step}");
}

#[test]
fn bad_flags_get_a_clear_error_and_no_panic() {
    for (args, says) in [
        (vec!["--load", "0"], "--load"),
        (vec!["--load", "x"], "invalid"),
        (vec!["--fps", "0"], "--fps"),
        (vec!["--duration=-1"], "--duration"),
        (vec!["--scenario", "meeting", "--load", "1"], "at least 2"),
        (
            vec!["--target", "ceiling", "--simulcast"],
            "--simulcast needs --target sori",
        ),
        (vec!["--receiver-cap-kbps", "5"], "--receiver-cap-kbps"),
        (vec!["--capped-receivers", "2"], "--receiver-cap-kbps"),
        (vec!["--server-config", "x.toml"], "--spawn-server"),
        (
            vec!["--url", "ws://127.0.0.1:1/ws", "--load", "1"],
            "cannot connect",
        ),
    ] {
        let out = Command::new(BENCH)
            .args(&args)
            .arg("--quiet")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Runs `sori-bench --target ceiling ARGS --quiet --json -` and returns its one step.
fn ceiling_step(args: &[&str]) -> Value {
    let out = Command::new(BENCH)
        .args(["--target", "ceiling"])
        .args(args)
        .args(["--quiet", "--json", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sori-bench failed\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    let json_start = stdout.find("{\n").expect("JSON after the table");
    let v: Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    v["steps"][0].clone()
}

#[test]
fn fanout_through_the_ceiling_relay_reports_alike_with_full_and_sampling_receivers() {
    let args = [
        "--scenario",
        "fanout",
        "--load",
        "4",
        "--video-kbps",
        "600",
        "--warmup",
        "1",
        "--duration",
        "2",
    ];
    let full = ceiling_step(&args);
    let sampled = ceiling_step(&[&args[..], &["--sample", "8"]].concat());
    assert_eq!(full["receiver_mode"], "full", "{full}");
    assert_eq!(sampled["receiver_mode"], "sampled 1/8", "{sampled}");
    for step in [&full, &sampled] {
        assert_eq!(step["joins_ok"], 5, "{step}"); // the publisher and 4 receivers
                                                   // Each of 4 receivers gets audio and video for 2 s.
        assert!(
            step["expected_packets"].as_u64().unwrap() > 4 * 2 * 100,
            "{step}"
        );
        // Nothing is lost on loopback. A counted packet's send time comes back from its RTP
        // timestamp to within one tick (11–21 µs), so one sent that close to an end of the
        // window may be placed on the wrong side of it.
        let loss = step["loss"].as_f64().unwrap();
        assert!(loss <= 0.01, "loss {loss}: {step}");
        assert_eq!(step["nacks_sent"], 0, "{step}");
    }
    // The sampled delays (1 packet in 8) agree with the full ones within 5 ms at the median.
    let p50 = |s: &Value| s["delay"]["p50_ms"].as_f64().unwrap();
    let (f, s) = (p50(&full), p50(&sampled));
    assert!(
        (f - s).abs() <= 5.0,
        "p50 delay: full {f} ms, sampled {s} ms"
    );
}

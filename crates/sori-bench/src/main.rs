//! `sori-bench`: load an SFU with str0m clients and measure delay, loss, join time and the
//! server's CPU and memory. See the crate docs in lib.rs for how it measures.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sori_bench::report;
use sori_bench::run::{run_step, Scenario, StepOptions, StepResult, Target};
use sori_bench::spawn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TargetKind {
    /// Sori's WebSocket signaling at --url (or a server started with --spawn-server).
    Sori,
    /// The ceiling: this tool's own relay that only decrypts, re-encrypts and forwards,
    /// started as a separate process (pinned with --server-cpus).
    Ceiling,
    /// A Janus VideoRoom over Janus's WebSocket API at --url (e.g. ws://127.0.0.1:8188);
    /// give --server-pid to read its cost. See scripts/bench-janus.
    Janus,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the ceiling relay (what `--target ceiling` starts) until killed.
    Relay {
        /// WebSocket address; the media port takes a free UDP port on the same IP.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Write the benchmarks page (Markdown, with SVG charts) from result files named
    /// `<scenario>-<contender>-<round>.json`: medians and ranges over rounds, capacity per
    /// round, and how Sori compares with each other contender.
    Summarize {
        /// The page to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Directory for the charts (linked from the page).
        #[arg(long, default_value = "docs/benchmarks")]
        charts: PathBuf,
        /// When the runs were made, as the page should say.
        #[arg(long)]
        date: String,
        /// One line about the machine; repeat for several.
        #[arg(long)]
        machine: Vec<String>,
        /// The command that made the runs, quoted on the page.
        #[arg(long)]
        command: String,
        /// Compare CPU cost and join time at this load (default: the middle step).
        #[arg(long)]
        reference_load: Option<usize>,
        /// Result files (--json of earlier runs).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print Markdown tables that set variants of one server side by side (e.g. simulcast off
    /// and on) from result files named `<variant>-<round>.json`: per variant and load the
    /// median over the rounds with the range, and what capped and uncapped receivers got.
    Compare {
        /// Result files (--json of earlier runs).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Load generator for Sori: str0m clients publish synthetic VP8 and Opus through an SFU;
/// receivers measure one-way delay, loss, NACKs, PLIs and join time; the server's CPU and
/// memory come from /proc.
#[derive(Debug, Parser)]
#[command(name = "sori-bench", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[arg(long, value_enum, default_value = "sori")]
    target: TargetKind,
    /// A Sori server with API keys: each participant joins with an access token signed with
    /// this key (and --api-secret).
    #[arg(long, value_name = "KEY", requires = "api_secret")]
    api_key: Option<String>,
    /// The secret of --api-key.
    #[arg(
        long,
        env = "SORI_BENCH_API_SECRET",
        hide_env_values = true,
        requires = "api_key"
    )]
    api_secret: Option<String>,
    /// The signaling WebSocket of a running server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Start `PATH serve` on 127.0.0.1 with free ports, measure it, stop it at the end.
    #[arg(long, value_name = "PATH")]
    spawn_server: Option<PathBuf>,
    /// Pin the started server (or ceiling relay) to these CPUs (taskset list, e.g. "1").
    #[arg(long, value_name = "CPUS")]
    server_cpus: Option<String>,
    /// A configuration file for the started server (`sori serve --config FILE`), e.g. one
    /// with `[media] initial_estimate_kbps = 0` to turn bandwidth estimation off.
    #[arg(long, value_name = "FILE", requires = "spawn_server")]
    server_config: Option<PathBuf>,
    /// Read the CPU time and memory of this server process (all threads) from /proc.
    #[arg(long, conflicts_with = "spawn_server")]
    server_pid: Option<u32>,
    #[arg(long, value_enum, default_value = "fanout")]
    scenario: Scenario,
    /// Receivers (fanout, audio, join-storm) or participants (meeting); several, comma
    /// separated, make a ramp that reports the capacity.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    load: Vec<usize>,
    /// Audio-only speakers in the audio scenario.
    #[arg(long, default_value_t = 10)]
    speakers: usize,
    /// Video bitrate of each publisher (with --simulcast: of its top layer).
    #[arg(long, default_value_t = 1000)]
    video_kbps: u32,
    /// Publishers send their video as three simulcast layers, rid q, h and f at 1/16, 1/4
    /// and all of --video-kbps (160×120, 320×240, 640×480), each with its own keyframes on
    /// request (--target sori).
    #[arg(long)]
    simulcast: bool,
    /// Give --capped-receivers receivers a bandwidth cap: a token bucket (100 ms deep) in
    /// their receive path drops every datagram beyond this rate, so the server's bandwidth
    /// estimate sees the loss.
    #[arg(long, value_name = "KBPS")]
    receiver_cap_kbps: Option<u32>,
    /// How many receivers (in a meeting: participants) get --receiver-cap-kbps.
    #[arg(long, default_value_t = 1, requires = "receiver_cap_kbps")]
    capped_receivers: usize,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between unrequested keyframes.
    #[arg(long, default_value_t = 2.0)]
    keyframe_interval: f64,
    /// Receivers joining per second.
    #[arg(long, default_value_t = 20.0)]
    join_rate: f64,
    /// Seconds for a publisher to connect and, once the last receiver has joined, for everyone
    /// to get a decodable start from every publisher; later counts as a failed join. (Each
    /// signaling reply has its own 10 s limit.)
    #[arg(long, default_value_t = 10.0)]
    join_timeout: f64,
    /// The room every client joins, instead of a fresh `bench-…` room per step (a ramp's
    /// steps then join it in turn). With it a browser can join the same room and see the
    /// clients: they stay from their join until --warmup, --duration and --grace have passed
    /// after the last of them was ready (the meeting scenario: one tile per participant).
    #[arg(long, value_name = "NAME")]
    room: Option<String>,
    /// Who speaks when: comma-separated `PUBLISHER@FROM-TO` (publisher numbers from 0, seconds
    /// since this tool started), e.g. `0@2-5,3@5-8`. Every publisher's Opus packets then carry
    /// the `ssrc-audio-level` extension: -30 dBov while it speaks, silence otherwise (a
    /// script for the server's speaker detection).
    #[arg(long, value_name = "SCRIPT", value_parser = parse_speech)]
    speak: Option<Speech>,
    /// Seconds of media after everyone joined, before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds receivers keep counting after the window, for packets in flight.
    #[arg(long, default_value_t = 1.0)]
    grace: f64,
    /// In a ramp, stop after the first step that fails the capacity rule.
    #[arg(long)]
    stop_on_fail: bool,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Local address of the clients' UDP sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Write the results as JSON to this file ("-" for standard output).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write an SVG chart of delay and server CPU against load to this file.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Receivers decrypt 1 in N received RTP packets during the window (their delay sample)
    /// and count every packet from its clear RTP header (loss, bytes), so one generator core
    /// receives several times more; sampling receivers negotiate no transport-cc and send no
    /// NACKs, so loss is before repair toward receivers. 1 (the default): decrypt every packet.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    sample: u32,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

/// A `--speak` script: publisher number → the spans it speaks in.
#[derive(Debug, Clone)]
struct Speech(std::collections::BTreeMap<u16, Vec<(Duration, Duration)>>);

fn parse_speech(text: &str) -> Result<Speech, String> {
    let mut out = std::collections::BTreeMap::<u16, Vec<(Duration, Duration)>>::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?}: expected PUBLISHER@FROM-TO, e.g. 0@2-5.5");
        let (who, span) = part.split_once('@').ok_or_else(bad)?;
        let (from, to) = span.split_once('-').ok_or_else(bad)?;
        let who: u16 = who.parse().map_err(|_| bad())?;
        let secs = |v: &str| -> Result<Duration, String> {
            let v: f64 = v.parse().map_err(|_| bad())?;
            Duration::try_from_secs_f64(v).map_err(|_| bad())
        };
        let (from, to) = (secs(from)?, secs(to)?);
        if to <= from {
            return Err(format!("{part:?}: the span ends before it starts"));
        }
        out.entry(who).or_default().push((from, to));
    }
    Ok(Speech(out))
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if (0.0..86_400.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "--{name} must be between 0 and 86400 seconds, not {v}"
        ))
    }
}

fn check(args: &Args) -> Result<(), String> {
    if args.server_cpus.is_some()
        && args.spawn_server.is_none()
        && args.target != TargetKind::Ceiling
    {
        return Err(
            "--server-cpus pins a server this tool starts: add --spawn-server or --target ceiling"
                .into(),
        );
    }
    if args.load.is_empty() || args.load.contains(&0) {
        return Err("--load needs one or more numbers above 0".into());
    }
    if args.load.iter().any(|&l| l > 10_000) {
        return Err("--load above 10000 is not supported".into());
    }
    if args.scenario == Scenario::Meeting && args.load.contains(&1) {
        return Err("a meeting needs at least 2 participants".into());
    }
    if args.scenario == Scenario::Audio && !(1..=1000).contains(&args.speakers) {
        return Err("--speakers must be between 1 and 1000".into());
    }
    if !(1..=120).contains(&args.fps) {
        return Err("--fps must be between 1 and 120".into());
    }
    if !(10..=50_000).contains(&args.video_kbps) {
        return Err("--video-kbps must be between 10 and 50000".into());
    }
    if args.simulcast && args.target != TargetKind::Sori {
        return Err("--simulcast needs --target sori".into());
    }
    if args
        .receiver_cap_kbps
        .is_some_and(|c| !(10..=10_000_000).contains(&c))
    {
        return Err("--receiver-cap-kbps must be between 10 and 10000000".into());
    }
    if !(args.join_rate > 0.0 && args.join_rate.is_finite()) {
        return Err("--join-rate must be above 0".into());
    }
    if args
        .room
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.chars().count() > 64 || r.chars().any(char::is_control))
    {
        return Err("--room must be 1 to 64 characters, no control characters".into());
    }
    if args.duration <= 0.0 {
        return Err("--duration must be above 0".into());
    }
    if !(1..=256).contains(&args.threads) {
        return Err("--threads must be between 1 and 256".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    // `--speak` times count from here.
    sori_bench::epoch();
    let args = Args::parse();
    if args.speak.is_some() {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        eprintln!("speech times count from {unix_ms} (Unix ms)");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            // str0m warns per packet it cannot decrypt; loss and errors are counted anyway.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,str0m=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        Some(Command::Relay { listen }) => return relay(listen),
        Some(Command::Compare { ref files }) => {
            return match compare(files) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sori-bench compare: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Summarize {
            ref out,
            ref charts,
            ref date,
            ref machine,
            ref command,
            reference_load,
            ref files,
        }) => {
            let meta = sori_bench::summary::Meta {
                date: date.clone(),
                machine: machine.clone(),
                command: command.clone(),
                reference_load,
            };
            return match summarize(out, charts, &meta, files) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sori-bench summarize: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    if let Err(e) = check(&args) {
        eprintln!("sori-bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sori-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sori-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn summarize(
    out: &std::path::Path,
    charts: &std::path::Path,
    meta: &sori_bench::summary::Meta,
    files: &[PathBuf],
) -> Result<(), String> {
    let runs = files
        .iter()
        .map(|f| sori_bench::summary::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    // Links on the page are relative to the page.
    let base = out.parent().unwrap_or(std::path::Path::new(""));
    let link = charts.strip_prefix(base).unwrap_or(charts);
    let (page, svgs) = sori_bench::summary::document(&runs, meta, &link.to_string_lossy());
    std::fs::create_dir_all(charts)
        .map_err(|e| format!("cannot create {}: {e}", charts.display()))?;
    for (name, svg) in svgs {
        let path = charts.join(name);
        std::fs::write(&path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    // The hand-written part of the page (from other runs) stays.
    let old = std::fs::read_to_string(out).ok();
    let page = sori_bench::summary::keep_hand_written(page, old.as_deref());
    std::fs::write(out, page).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("wrote {} from {} result files", out.display(), runs.len());
    Ok(())
}

fn compare(files: &[PathBuf]) -> Result<(), String> {
    let variants = files
        .iter()
        .map(|f| sori_bench::compare::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", sori_bench::compare::cost_table(&variants));
    let classes = sori_bench::compare::classes_table(&variants);
    if !classes.is_empty() {
        print!("\n{classes}");
    }
    Ok(())
}

/// The ceiling relay runs on one thread: it is the yardstick for one core.
fn relay(listen: std::net::SocketAddr) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sori-bench relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sori_bench::ceiling::serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sori-bench relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: &Args) -> Result<(), String> {
    let cpus = args.server_cpus.as_deref();
    let server = match (args.target, &args.spawn_server) {
        (TargetKind::Ceiling, _) => Some(spawn::ceiling(cpus).await.map_err(|e| e.to_string())?),
        (TargetKind::Sori, Some(path)) => Some(
            spawn::sori(&path.to_string_lossy(), args.server_config.as_deref(), cpus)
                .await
                .map_err(|e| e.to_string())?,
        ),
        (TargetKind::Sori, None) | (TargetKind::Janus, _) => None,
    };
    let url = server
        .as_ref()
        .map(|s| s.url.clone())
        .unwrap_or(args.url.clone());
    let server_pid = server.as_ref().map(|s| s.pid).or(args.server_pid);
    let metrics_url = match args.target {
        TargetKind::Sori => sori_bench::server_metrics::metrics_url(&url),
        TargetKind::Ceiling | TargetKind::Janus => None,
    };
    let target = match args.target {
        // The ceiling relay speaks the part of Sori's signaling the clients use.
        TargetKind::Sori | TargetKind::Ceiling => Target::Sori {
            url,
            key: args.api_key.clone().zip(args.api_secret.clone()),
        },
        TargetKind::Janus => Target::Janus { url },
    };
    let mut loads = args.load.clone();
    loads.sort_unstable();
    loads.dedup();
    let mut steps: Vec<StepResult> = Vec::new();
    for load in loads {
        let o = StepOptions {
            target: target.clone(),
            scenario: args.scenario,
            load,
            speakers: args.speakers,
            video_kbps: args.video_kbps,
            fps: args.fps,
            keyframe_interval: seconds("keyframe-interval", args.keyframe_interval)?,
            join_rate: args.join_rate,
            join_timeout: seconds("join-timeout", args.join_timeout)?,
            warmup: seconds("warmup", args.warmup)?,
            duration: seconds("duration", args.duration)?,
            grace: seconds("grace", args.grace)?,
            server_pid,
            bind_ip: args.bind_ip,
            progress: !args.quiet,
            simulcast: args.simulcast,
            capped_receivers: args.capped_receivers,
            receiver_cap_kbps: args.receiver_cap_kbps,
            metrics_url: metrics_url.clone(),
            sample: args.sample,
            room: args.room.clone(),
            speech: args.speak.clone().map(|s| std::sync::Arc::new(s.0)),
        };
        let step = run_step(&o).await?;
        for e in step.errors.iter().take(5) {
            eprintln!("  {e}");
        }
        if step.errors.len() > 5 {
            eprintln!("  … {} more errors", step.errors.len() - 5);
        }
        steps.push(step);
        let idle = report::idle_p95(&steps);
        if args.stop_on_fail && !report::passes(steps.last().expect("just pushed"), idle) {
            break;
        }
    }
    print!("{}", report::table(&steps));
    print!("{}", report::classes_table(&steps));
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "target": format!("{:?}", args.target).to_lowercase(),
            "scenario": args.scenario,
            "video_kbps": args.video_kbps,
            "fps": args.fps,
            "simulcast": args.simulcast,
            "receiver_mode": sori_bench::run::receiver_mode(args.sample),
            "receiver_cap_kbps": args.receiver_cap_kbps,
            "capped_receivers": args.receiver_cap_kbps.map(|_| args.capped_receivers),
            "server_config": args.server_config.as_ref().map(|p| p.display().to_string()),
            "steps": steps,
            "capacity": report::capacity(&steps).map(|s| s.load),
        });
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "{:?} {:?}: delay and server CPU against load",
            args.target, args.scenario
        );
        std::fs::write(path, report::svg(&steps, &title))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

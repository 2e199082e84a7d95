//! `sori-bench summarize`: the JSON files of a side-by-side benchmark (one per contender and
//! round, named `<scenario>-<contender>-<round>.json` as `scripts/bench-janus` writes them)
//! turned into the Markdown page `docs/benchmarks.md` and its charts: medians and ranges over
//! the rounds, the capacity per round, and sentences comparing Sori with every other contender.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::report;
pub use crate::report::lines_svg;
use crate::run::{Scenario, StepResult};

/// One run of one contender: a ramp of steps.
#[derive(Debug, Clone)]
pub struct Run {
    /// The contender as the file name gives it (`sori`, `janus`, `janus-el1`, `ceiling`).
    pub label: String,
    pub scenario: Scenario,
    pub round: u32,
    pub video_kbps: u32,
    pub fps: u32,
    pub steps: Vec<StepResult>,
}

#[derive(serde::Deserialize)]
struct RunFile {
    scenario: Scenario,
    video_kbps: u32,
    fps: u32,
    steps: Vec<StepResult>,
}

/// Reads one result file; the contender and the round come from its name.
pub fn load(path: &Path) -> Result<Run, String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a result file name", path.display()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: RunFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let scenario = serde_json::to_value(file.scenario)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let rest = name
        .strip_prefix(&format!("{scenario}-"))
        .ok_or_else(|| format!("{name}: expected {scenario}-<contender>-<round>.json"))?;
    let (label, round) = rest
        .rsplit_once('-')
        .and_then(|(l, r)| Some((l, r.parse::<u32>().ok()?)))
        .filter(|(l, _)| !l.is_empty())
        .ok_or_else(|| format!("{name}: expected {scenario}-<contender>-<round>.json"))?;
    Ok(Run {
        label: label.to_owned(),
        scenario: file.scenario,
        round,
        video_kbps: file.video_kbps,
        fps: file.fps,
        steps: file.steps,
    })
}

/// The line from which the page is written by hand (the Simulcast section, from other
/// runs): [`keep_hand_written`] carries it and what follows into the new page.
pub const HAND_WRITTEN: &str =
    "<!-- Written by hand from here on: sori-bench summarize keeps what follows. -->";

/// `page` followed by the hand-written part of `old` (from [`HAND_WRITTEN`] on), if it has one.
pub fn keep_hand_written(page: String, old: Option<&str>) -> String {
    match old.and_then(|o| o.find(HAND_WRITTEN).map(|i| &o[i..])) {
        Some(tail) => format!("{}\n\n{tail}", page.trim_end()),
        None => page,
    }
}

/// What the page says about how it was made.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// When the runs were made (UTC), as the script saw it.
    pub date: String,
    /// The machine: CPU model and count, memory, OS, kernel, compilers, peer versions.
    pub machine: Vec<String>,
    /// The command that made the runs.
    pub command: String,
    /// Load at which CPU cost and join time are compared (default: the middle step).
    pub reference_load: Option<usize>,
}

/// Median, smallest and largest of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// "11.7 (11.5–12.8)", or just "11.7" when every value rounds the same.
    fn show(&self, decimals: usize) -> String {
        let f = |x: f64| format!("{x:.decimals$}");
        if f(self.min) == f(self.max) {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// "11.7 (11.5–12.8)" for a spread, "-" for none.
pub(crate) fn show(s: Option<Spread>, decimals: usize) -> String {
    s.map(|s| s.show(decimals)).unwrap_or_else(|| "-".into())
}

/// The range alone: "0.00–11.51".
fn range(s: Option<Spread>, decimals: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) if format!("{:.decimals$}", s.min) == format!("{:.decimals$}", s.max) => {
            format!("{:.decimals$}", s.min)
        }
        Some(s) => format!("{:.decimals$}–{:.decimals$}", s.min, s.max),
    }
}

fn step_at(run: &Run, load: usize) -> Option<&StepResult> {
    run.steps.iter().find(|s| s.load == load)
}

fn nearest(run: &Run, load: f64) -> Option<&StepResult> {
    run.steps.iter().min_by(|a, b| {
        (a.load as f64 - load)
            .abs()
            .total_cmp(&(b.load as f64 - load).abs())
    })
}

/// Contenders in page order: Sori first, the ceiling last, the rest as they came.
fn labels(runs: &[&Run]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        if !out.contains(&r.label) {
            out.push(r.label.clone());
        }
    }
    out.sort_by_key(|l| match l.as_str() {
        "sori" => 0,
        "ceiling" => 2,
        _ => 1,
    });
    out
}

fn describe(label: &str) -> &str {
    match label {
        "sori" => "Sori (`sori serve`, one media worker)",
        "sori-2w" => "Sori with two media workers, its threads free to use both CPUs (the load generator's too)",
        "janus" => "Janus VideoRoom, stock threading (one media thread per handle)",
        "janus-el1" => "Janus VideoRoom with `event_loops = 1` (one media thread for all handles)",
        "ceiling" => "the ceiling relay in `sori-bench`: decrypt, re-encrypt, forward, one thread",
        other => other,
    }
}

/// Per-contender figures of one scenario.
struct Figures {
    label: String,
    capacities: Vec<Option<usize>>,
    cpu_us: Option<Spread>,
    pps_per_core: Option<Spread>,
    half_p50: Option<Spread>,
    half_p99: Option<Spread>,
    half_loads: Vec<usize>,
    join_rtp: Option<Spread>,
    join_ready: Option<Spread>,
    memory: Option<Spread>,
    max_load: usize,
    server_cores_at_max: Option<Spread>,
    generator_cores_at_max: Option<Spread>,
    /// Cores each media worker thread used at the largest step, by thread name.
    workers_at_max: Vec<(String, Spread)>,
}

fn figures(label: &str, runs: &[&Run], reference: usize) -> Figures {
    let mine: Vec<&Run> = runs.iter().copied().filter(|r| r.label == label).collect();
    let at_ref: Vec<&StepResult> = mine.iter().filter_map(|r| step_at(r, reference)).collect();
    let max_load = mine
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.load))
        .max()
        .unwrap_or(0);
    let at_max: Vec<&StepResult> = mine.iter().filter_map(|r| step_at(r, max_load)).collect();
    let mut half: Vec<&StepResult> = Vec::new();
    let mut capacities = Vec::new();
    for r in &mine {
        let cap = report::capacity(&r.steps).map(|s| s.load);
        capacities.push(cap);
        if let Some(s) = cap.and_then(|c| nearest(r, c as f64 / 2.0)) {
            half.push(s);
        }
    }
    let mut half_loads: Vec<usize> = half.iter().map(|s| s.load).collect();
    half_loads.sort_unstable();
    half_loads.dedup();
    Figures {
        label: label.to_owned(),
        capacities,
        cpu_us: Spread::of(
            at_ref
                .iter()
                .filter_map(|s| s.server.as_ref().and_then(|c| c.cpu_us_per_packet)),
        ),
        pps_per_core: Spread::of(
            at_ref
                .iter()
                .filter_map(|s| s.server.as_ref().and_then(|c| c.packets_per_core_second)),
        ),
        half_p50: Spread::of(half.iter().filter_map(|s| s.delay.p50_ms)),
        half_p99: Spread::of(half.iter().filter_map(|s| s.delay.p99_ms)),
        half_loads,
        join_rtp: Spread::of(at_ref.iter().filter_map(|s| s.join_first_rtp.p50_ms)),
        join_ready: Spread::of(at_ref.iter().filter_map(|s| s.join_ready.p50_ms)),
        memory: Spread::of(at_max.iter().filter_map(|s| s.mem_kib_per_participant)),
        max_load,
        server_cores_at_max: Spread::of(
            at_max
                .iter()
                .filter_map(|s| s.server.as_ref().map(|c| c.cores)),
        ),
        generator_cores_at_max: Spread::of(at_max.iter().filter_map(|s| s.generator_cores)),
        workers_at_max: workers(&at_max),
    }
}

/// The cores each media worker thread used over `steps`, by thread name.
fn workers(steps: &[&StepResult]) -> Vec<(String, Spread)> {
    let mut names: Vec<&str> = steps
        .iter()
        .flat_map(|s| s.server.iter().flat_map(|c| &c.media_threads))
        .map(|(n, _)| n.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let of = |s: &&StepResult| {
                let c = s.server.as_ref()?;
                c.media_threads.iter().find(|(n, _)| n == name).map(|t| t.1)
            };
            Some((name.to_string(), Spread::of(steps.iter().filter_map(of))?))
        })
        .collect()
}

fn capacities(c: &[Option<usize>]) -> String {
    c.iter()
        .map(|c| c.map(|c| c.to_string()).unwrap_or_else(|| "none".into()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median_capacity(c: &[Option<usize>]) -> Option<f64> {
    Spread::of(c.iter().map(|c| c.unwrap_or(0) as f64)).map(|s| s.median)
}

/// How many times less (or more) `theirs` costs than `ours`, as a phrase.
fn ratio(ours: f64, theirs: f64, less: &str, more: &str) -> String {
    if ours <= 0.0 || theirs <= 0.0 {
        return "not comparable".into();
    }
    let r = theirs / ours;
    if (0.95..=1.05).contains(&r) {
        "about the same".into()
    } else if r > 1.0 {
        format!("{r:.1}× {less}")
    } else {
        format!("{:.1}× {more}", 1.0 / r)
    }
}

/// The charts of one scenario: (file name, SVG).
pub fn charts(scenario: &str, runs: &[&Run]) -> Vec<(String, String)> {
    let labels = labels(runs);
    let series = |value: &dyn Fn(&StepResult) -> Option<f64>| -> Vec<(String, Vec<(usize, f64)>)> {
        labels
            .iter()
            .map(|l| {
                let mut by_load: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
                for r in runs.iter().filter(|r| &r.label == l) {
                    for s in &r.steps {
                        if let Some(v) = value(s) {
                            by_load.entry(s.load).or_default().push(v);
                        }
                    }
                }
                let pts = by_load
                    .into_iter()
                    .filter_map(|(load, v)| Spread::of(v).map(|s| (load, s.median)))
                    .collect();
                (l.clone(), pts)
            })
            .collect()
    };
    vec![
        (
            format!("{scenario}-cpu.svg"),
            lines_svg(
                &format!("{scenario}: server CPU per forwarded packet (median of rounds)"),
                "CPU-µs per forwarded packet",
                &series(&|s| s.server.as_ref().and_then(|c| c.cpu_us_per_packet)),
                false,
            ),
        ),
        (
            format!("{scenario}-delay.svg"),
            lines_svg(
                &format!("{scenario}: one-way delay p95 (median of rounds, log scale)"),
                "p95 delay (ms)",
                &series(&|s| s.delay.p95_ms),
                true,
            ),
        ),
    ]
}

/// The whole page, and the charts it links (file name, SVG), under `chart_dir` (relative to the
/// page).
pub fn document(runs: &[Run], meta: &Meta, chart_dir: &str) -> (String, Vec<(String, String)>) {
    let mut out = String::new();
    let mut files = Vec::new();
    let _ = writeln!(out, "# Sori benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `sori-bench summarize` from the result files of the command below; \
         rerun it to replace this page (it keeps the hand-written sections at the end). \
         Measured **{}**.\n",
        meta.date
    );
    let _ = writeln!(out, "**Machine**:");
    for m in &meta.machine {
        let _ = writeln!(out, "- {m}");
    }
    let _ = writeln!(out, "\n**Command**:\n\n```sh\n{}\n```\n", meta.command);
    let all: Vec<&Run> = runs.iter().collect();
    let _ = writeln!(out, "**Contenders**:");
    for l in labels(&all) {
        let rounds = runs.iter().filter(|r| r.label == l).count();
        let _ = writeln!(out, "- **{l}**: {}; {rounds} rounds.", describe(&l));
    }
    out.push_str(METHOD);

    let mut scenarios: Vec<Scenario> = runs.iter().map(|r| r.scenario).collect();
    scenarios.sort_by_key(|s| *s as u8);
    scenarios.dedup();
    for scenario in scenarios {
        let name = serde_json::to_value(scenario)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mine: Vec<&Run> = runs.iter().filter(|r| r.scenario == scenario).collect();
        scenario_section(&mut out, &name, &mine, meta);
        let charts = charts(&name, &mine);
        let _ = writeln!(out, "### Charts\n");
        for (file, _) in &charts {
            let _ = writeln!(out, "![{file}]({chart_dir}/{file})");
        }
        out.push('\n');
        files.extend(charts);
    }
    (out, files)
}

const METHOD: &str = "
**What the columns mean.** *Forwarded pkt/s*: distinct probe packets the receivers got per
second. *Loss*: share of the packets sent in the window that never arrived, after NACK repair.
*Delay*: one-way, from the publisher writing the packet to the receiver decrypting it (same
clock). *CPU-µs per forwarded packet*: the server process's user + system CPU time (all
threads, /proc/PID/stat) over the window divided by the packets forwarded in it; *per core* is
its inverse. *Join*: from the receiver's first signaling message to its first RTP packet and to
the first packet of a keyframe (p50 over the step's receivers). *Memory per participant*: the
growth of the server's PSS from before the step's joins to the end of its window, divided by the
participants. *Capacity*: the heaviest step such that it and every lighter step have loss < 0.5%,
p95 delay within 20 ms of the lowest p95 of the run, and no failed joins. Figures are the median
over the rounds with the range in brackets.

The load generator decrypts every packet it receives, so it costs about as much CPU per packet
as the server; *generator cores* shows how much of its own CPU it used. Where that nears 1.0,
the generator, not the server, limits the step. With `--sample N` receivers decrypt only 1 in
N packets (see *Sampling receivers* at the end).
";

fn scenario_section(out: &mut String, name: &str, runs: &[&Run], meta: &Meta) {
    let labels = labels(runs);
    let mut loads: Vec<usize> = runs
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.load))
        .collect();
    loads.sort_unstable();
    loads.dedup();
    let reference = meta
        .reference_load
        .filter(|l| loads.contains(l))
        .or_else(|| loads.get(loads.len() / 2).copied())
        .unwrap_or(0);
    let first = runs[0];
    let _ = writeln!(
        out,
        "\n## {name}: {}\n",
        match first.scenario {
            Scenario::Fanout => "one publisher to N receivers",
            Scenario::Meeting => "N participants, everyone publishing to everyone",
            Scenario::Audio => "audio-only speakers to N listeners",
            Scenario::JoinStorm => "N receivers joining while media flows",
        }
    );
    let senders = match first.scenario {
        Scenario::Audio => format!(
            "{} speakers send Opus at 50 packets/s each.",
            first.steps.first().map_or(0, |s| s.publishers)
        ),
        _ => format!(
            "Publishers send VP8 at {} kbit/s, {} fps, and Opus at 50 packets/s.",
            first.video_kbps, first.fps
        ),
    };
    let _ = writeln!(
        out,
        "{senders} Steps (N): {}. CPU cost and join time are compared at N = {reference}; \
         delay at half of each contender's own capacity in each round; memory at the largest \
         step.\n",
        loads
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let figs: Vec<Figures> = labels.iter().map(|l| figures(l, runs, reference)).collect();
    let max_load = figs.iter().map(|f| f.max_load).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "| | capacity per round (N) | CPU-µs per forwarded packet at {reference} | forwarded pkt/s per core at {reference} | delay p50 / p99 at half capacity (ms) | join → first RTP at {reference} (ms) | join → keyframe at {reference} (ms) | memory per participant at {max_load} (KiB) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for f in &figs {
        let half = if f.half_loads.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{} / {} (N = {})",
                show(f.half_p50, 1),
                show(f.half_p99, 1),
                f.half_loads
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            f.label,
            capacities(&f.capacities),
            show(f.cpu_us, 1),
            show(f.pps_per_core, 0),
            half,
            show(f.join_rtp, 0),
            show(f.join_ready, 0),
            show(f.memory, 0),
        );
    }
    standing(out, &figs, reference);
    steps_table(out, runs, &labels);
}

/// Sentences comparing Sori with each other contender, from the figures alone.
fn standing(out: &mut String, figs: &[Figures], reference: usize) {
    let Some(sori) = figs.iter().find(|f| f.label == "sori") else {
        return;
    };
    let _ = writeln!(out, "\n**Where Sori stands** (medians):\n");
    for f in figs.iter().filter(|f| f.label != "sori") {
        let mut parts = Vec::new();
        if let (Some(a), Some(b)) = (sori.cpu_us, f.cpu_us) {
            parts.push(format!(
                "CPU per forwarded packet at {reference}: {:.1} µs against {:.1} µs ({})",
                a.median,
                b.median,
                ratio(a.median, b.median, "less for Sori", "more for Sori")
            ));
        }
        if let (Some(a), Some(b)) = (
            median_capacity(&sori.capacities),
            median_capacity(&f.capacities),
        ) {
            parts.push(format!("capacity {a:.0} against {b:.0}"));
        }
        if let (Some(a), Some(b)) = (sori.half_p99, f.half_p99) {
            parts.push(format!(
                "p99 delay at half capacity {:.1} ms against {:.1} ms",
                a.median, b.median
            ));
        }
        if let (Some(a), Some(b)) = (sori.join_ready, f.join_ready) {
            parts.push(format!(
                "join → keyframe {:.0} ms against {:.0} ms",
                a.median, b.median
            ));
        }
        if let (Some(a), Some(b)) = (sori.memory, f.memory) {
            parts.push(format!(
                "memory per participant {:.0} KiB against {:.0} KiB",
                a.median, b.median
            ));
        }
        let _ = writeln!(out, "- **against {}**: {}.", f.label, parts.join("; "));
    }
    if let (Some(s), Some(g)) = (sori.server_cores_at_max, sori.generator_cores_at_max) {
        let _ = writeln!(
            out,
            "- At the largest step (N = {}) Sori's server used {:.2} of a core and the \
             load generator {:.2} of its own{}.",
            sori.max_load,
            s.median,
            g.median,
            if s.median < 0.8 {
                ": the server was not the limit there"
            } else {
                ""
            }
        );
    }
    for f in figs.iter().filter(|f| f.workers_at_max.len() > 1) {
        let total: f64 = f.workers_at_max.iter().map(|(_, c)| c.median).sum();
        let each: Vec<String> = f
            .workers_at_max
            .iter()
            .map(|(n, c)| format!("{n} {:.2}", c.median))
            .collect();
        let shares: Vec<String> = f
            .workers_at_max
            .iter()
            .map(|(_, c)| format!("{:.0}", 100.0 * c.median / total.max(1e-9)))
            .collect();
        let _ = writeln!(
            out,
            "- **{}** at N = {}: its media workers used {} of a core ({} %).",
            f.label,
            f.max_load,
            each.join(", "),
            shares.join(" / ")
        );
    }
    let at_top: Vec<&str> = figs
        .iter()
        .filter(|f| !f.capacities.is_empty() && f.capacities.iter().all(|c| *c == Some(f.max_load)))
        .map(|f| f.label.as_str())
        .collect();
    if !at_top.is_empty() {
        let _ = writeln!(
            out,
            "- Capacity equal to the largest step tested ({}) is a floor, not the limit: a \
             heavier ramp (and a load generator with more CPU) is needed to find it.",
            at_top.join(", ")
        );
    }
}

fn steps_table(out: &mut String, runs: &[&Run], labels: &[String]) {
    let _ = writeln!(out, "\n### Every step\n\nRange over the rounds.\n");
    let _ = writeln!(
        out,
        "| contender | N | forwarded pkt/s | loss % | delay p50 / p95 / p99 ms | server cores | CPU-µs per fwd pkt | join → keyframe p50 ms | generator cores |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for l in labels {
        let mut by_load: BTreeMap<usize, Vec<&StepResult>> = BTreeMap::new();
        for r in runs.iter().filter(|r| &r.label == l) {
            for s in &r.steps {
                by_load.entry(s.load).or_default().push(s);
            }
        }
        for (load, steps) in by_load {
            let sp = |f: &dyn Fn(&StepResult) -> Option<f64>| {
                Spread::of(steps.iter().filter_map(|s| f(s)))
            };
            let _ = writeln!(
                out,
                "| {l} | {load} | {} | {} | {} / {} / {} | {} | {} | {} | {} |",
                range(sp(&|s| Some(s.forwarded_pps)), 0),
                range(sp(&|s| Some(s.loss * 100.0)), 2),
                range(sp(&|s| s.delay.p50_ms), 1),
                range(sp(&|s| s.delay.p95_ms), 1),
                range(sp(&|s| s.delay.p99_ms), 1),
                range(sp(&|s| s.server.as_ref().map(|c| c.cores)), 2),
                range(
                    sp(&|s| s.server.as_ref().and_then(|c| c.cpu_us_per_packet)),
                    1
                ),
                range(sp(&|s| s.join_ready.p50_ms), 0),
                range(sp(&|s| s.generator_cores), 2),
            );
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_cost::Cost;

    fn step(load: usize, cpu_us: f64, p95: f64, ready: f64) -> StepResult {
        let join = report::test_step(load, 0.0, ready * 2.0, 0).delay;
        StepResult {
            join_first_rtp: report::test_step(load, 0.0, 20.0, 0).delay,
            join_ready: join,
            server: Some(Cost {
                cores: 0.5,
                cpu_us_per_packet: Some(cpu_us),
                packets_per_core_second: Some(1e6 / cpu_us),
                media_threads: Vec::new(),
            }),
            generator_cores: Some(0.3),
            mem_kib_per_participant: Some(100.0),
            ..report::test_step(load, 0.0, p95, 0)
        }
    }

    fn run(label: &str, round: u32, cpu_us: f64, ready: f64) -> Run {
        Run {
            label: label.into(),
            scenario: Scenario::Fanout,
            round,
            video_kbps: 1000,
            fps: 30,
            steps: vec![
                step(10, cpu_us, 1.0, ready),
                step(50, cpu_us, 2.0, ready),
                // Past capacity: p95 more than 20 ms above the idle one.
                step(100, cpu_us, 40.0, ready),
            ],
        }
    }

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 4.0]).unwrap().median, 2.5);
        assert_eq!(Spread::of([]), None);
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        assert_eq!(Spread::of([2.0, 2.01]).unwrap().show(1), "2.0");
    }

    #[test]
    fn the_page_compares_medians_over_rounds() {
        let runs = vec![
            run("sori", 1, 10.0, 100.0),
            run("janus", 1, 30.0, 60.0),
            run("sori", 2, 12.0, 120.0),
            run("janus", 2, 34.0, 70.0),
        ];
        let meta = Meta {
            date: "2026-11-26".into(),
            machine: vec!["2 vCPU".into()],
            command: "scripts/bench-janus".into(),
            reference_load: Some(50),
        };
        let (page, charts) = document(&runs, &meta, "benchmarks");
        // Capacity 50 in every round; Sori's median CPU 11.0 against Janus's 32.0.
        assert!(
            page.contains("| sori | 50, 50 | 11.0 (10.0–12.0) |"),
            "{page}"
        );
        assert!(
            page.contains("| janus | 50, 50 | 32.0 (30.0–34.0) |"),
            "{page}"
        );
        assert!(
            page.contains("11.0 µs against 32.0 µs (2.9× less for Sori)"),
            "{page}"
        );
        assert!(
            page.contains("join → keyframe 110 ms against 65 ms"),
            "{page}"
        );
        // Delay at half of capacity (25 → the nearest step, 10).
        assert!(page.contains("(N = 10)"), "{page}");
        // Capacity 50 is not the largest step (100): no floor sentence.
        assert!(!page.contains("is a floor"), "{page}");
        assert_eq!(charts.len(), 2);
        for (name, svg) in &charts {
            assert!(page.contains(&format!("(benchmarks/{name})")));
            assert_eq!(svg.matches("<polyline").count(), 2, "{name}");
        }
    }

    #[test]
    fn the_page_gives_the_split_between_media_workers() {
        let mut two = run("sori-2w", 1, 10.0, 100.0);
        for s in &mut two.steps {
            if let Some(c) = s.server.as_mut() {
                c.media_threads = vec![("sori-media-0".into(), 0.3), ("sori-media-1".into(), 0.2)];
            }
        }
        let runs = vec![run("sori", 1, 10.0, 100.0), two];
        let meta = Meta {
            date: "2026-12-04".into(),
            machine: vec!["2 vCPU".into()],
            command: "scripts/bench-janus".into(),
            reference_load: Some(50),
        };
        let (page, _) = document(&runs, &meta, "benchmarks");
        assert!(
            page.contains(
                "**sori-2w** at N = 100: its media workers used sori-media-0 0.30, \
                 sori-media-1 0.20 of a core (60 / 40 %)."
            ),
            "{page}"
        );
        // One worker: no split to give.
        assert!(!page.contains("**sori** at N"), "{page}");
    }

    #[test]
    fn contender_and_round_come_from_the_file_name() {
        let dir = std::env::temp_dir().join(format!("sori-bench-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = serde_json::json!({
            "target": "janus", "scenario": "fanout", "video_kbps": 1000, "fps": 30,
            "steps": [step(10, 20.0, 1.0, 50.0)], "capacity": 10,
        });
        let good = dir.join("fanout-janus-el1-3.json");
        std::fs::write(&good, json.to_string()).unwrap();
        let r = load(&good).unwrap();
        assert_eq!(
            (r.label.as_str(), r.round, r.steps.len()),
            ("janus-el1", 3, 1)
        );
        for bad in [
            "meeting-janus-1.json",
            "fanout-janus.json",
            "fanout--2.json",
        ] {
            let p = dir.join(bad);
            std::fs::write(&p, json.to_string()).unwrap();
            assert!(load(&p).is_err(), "{bad}");
        }
        std::fs::write(dir.join("fanout-x-1.json"), "{").unwrap();
        assert!(load(&dir.join("fanout-x-1.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hand_written_part_of_the_old_page_is_kept() {
        let old = format!("# old\n\nold tables\n\n{HAND_WRITTEN}\n## Simulcast\n\ntext\n");
        let page = keep_hand_written("# new\n\nnew tables\n\n".into(), Some(&old));
        assert_eq!(
            page,
            format!("# new\n\nnew tables\n\n{HAND_WRITTEN}\n## Simulcast\n\ntext\n")
        );
        assert_eq!(
            keep_hand_written("# new\n".into(), Some("# old\n")),
            "# new\n"
        );
        assert_eq!(keep_hand_written("# new\n".into(), None), "# new\n");
    }
}

//! `sori-bench compare`: Markdown tables that set variants of one server side by side, from
//! result files named `<variant>-<round>.json` (as `scripts/bench-simulcast` writes them): per
//! variant and load, the median over the rounds with the range in brackets. A second table
//! shows what each class of receivers (capped, uncapped) got of the video, where the runs
//! have classes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::run::StepResult;
use crate::summary::Spread;

/// The steps of one result file, with the variant and round its name gives.
#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    pub round: u32,
    pub steps: Vec<StepResult>,
}

#[derive(serde::Deserialize)]
struct File {
    steps: Vec<StepResult>,
}

/// Reads `<variant>-<round>.json`.
pub fn load(path: &Path) -> Result<Variant, String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a result file name", path.display()))?;
    let (label, round) = name
        .rsplit_once('-')
        .and_then(|(l, r)| Some((l, r.parse::<u32>().ok()?)))
        .filter(|(l, _)| !l.is_empty())
        .ok_or_else(|| format!("{name}: expected <variant>-<round>.json"))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: File = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Variant {
        label: label.to_string(),
        round,
        steps: file.steps,
    })
}

fn show(values: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    crate::summary::show(Spread::of(values), decimals)
}

/// The steps of each (variant, load), variants in the order they first appear.
fn groups(variants: &[Variant]) -> Vec<((String, usize), Vec<&StepResult>)> {
    let mut order: Vec<(String, usize)> = Vec::new();
    let mut by: BTreeMap<(String, usize), Vec<&StepResult>> = BTreeMap::new();
    for v in variants {
        for s in &v.steps {
            let key = (v.label.clone(), s.load);
            if !by.contains_key(&key) {
                order.push(key.clone());
            }
            by.entry(key).or_default().push(s);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let steps = by.remove(&k).unwrap_or_default();
            (k, steps)
        })
        .collect()
}

/// The cost table: forwarded packets, server CPU per packet and in cores, loss, delay, the
/// load generator's CPU.
pub fn cost_table(variants: &[Variant]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| variant | N | rounds | forwarded pkt/s | CPU-µs per forwarded packet | server cores | loss % | delay p50 / p99 ms | generator cores |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for ((label, load), steps) in groups(variants) {
        let server = |f: fn(&crate::server_cost::Cost) -> Option<f64>| {
            steps
                .iter()
                .filter_map(|s| s.server.as_ref().and_then(f))
                .collect::<Vec<_>>()
        };
        let _ = writeln!(
            out,
            "| {label} | {load} | {} | {} | {} | {} | {} | {} / {} | {} |",
            steps.len(),
            show(steps.iter().map(|s| s.forwarded_pps), 0),
            show(server(|c| c.cpu_us_per_packet), 1),
            show(server(|c| Some(c.cores)), 2),
            show(steps.iter().map(|s| s.loss * 100.0), 2),
            show(steps.iter().filter_map(|s| s.delay.p50_ms), 1),
            show(steps.iter().filter_map(|s| s.delay.p99_ms), 1),
            show(steps.iter().filter_map(|s| s.generator_cores), 2),
        );
    }
    out
}

/// The classes table: per variant, load and class of receivers, the layer they ended on (over
/// all rounds), what reached them and the video they got, loss, delay and layer switches; empty
/// when no step has classes.
pub fn classes_table(variants: &[Variant]) -> String {
    let mut out = String::new();
    if variants
        .iter()
        .all(|v| v.steps.iter().all(|s| s.classes.is_empty()))
    {
        return out;
    }
    let _ = writeln!(
        out,
        "| variant | N | class | receivers | on layer at the end (all rounds) | kbit/s reaching each receiver | video kbit/s received per stream | video loss % | delay p50 / p99 ms | layer switches seen in the window | server's layer switches in the window (all receivers) | server egress kbit/s (RTP payload, all receivers) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((label, load), steps) in groups(variants) {
        let mut names: Vec<&str> = Vec::new();
        for s in &steps {
            for c in &s.classes {
                if !names.contains(&c.class.as_str()) {
                    names.push(&c.class);
                }
            }
        }
        for name in names {
            let cs: Vec<_> = steps
                .iter()
                .filter_map(|s| s.classes.iter().find(|c| c.class == name))
                .collect();
            let mut on: BTreeMap<&str, usize> = BTreeMap::new();
            for c in &cs {
                for (l, n) in &c.on_layer {
                    *on.entry(l).or_default() += n;
                }
            }
            let on: Vec<String> = on.iter().map(|(l, n)| format!("{l}: {n}")).collect();
            let class = match cs.first().and_then(|c| c.cap_kbps) {
                Some(cap) => format!("{name} ({cap} kbit/s)"),
                None => name.to_string(),
            };
            let server: Vec<f64> = steps
                .iter()
                .filter_map(|s| s.server_layers.as_ref()?.switches_in_window)
                .map(|v| v as f64)
                .collect();
            let egress: Vec<f64> = steps
                .iter()
                .filter_map(|s| {
                    let bytes = s.server_layers.as_ref()?.forwarded_bytes_in_window?;
                    Some(bytes as f64 * 8.0 / 1000.0 / s.window_secs.max(1e-9))
                })
                .collect();
            let _ = writeln!(
                out,
                "| {label} | {load} | {class} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
                cs.first().map_or(0, |c| c.receivers),
                on.join(", "),
                show(cs.iter().map(|c| c.offered_kbps), 0),
                show(cs.iter().map(|c| c.video_kbps), 0),
                show(cs.iter().map(|c| c.video_loss * 100.0), 2),
                show(cs.iter().filter_map(|c| c.delay.p50_ms), 1),
                show(cs.iter().filter_map(|c| c.delay.p99_ms), 1),
                show(cs.iter().map(|c| c.switches_in_window as f64), 0),
                show(server, 0),
                show(egress, 0),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::ClassResult;
    use crate::report::test_step;
    use crate::server_cost::Cost;

    fn step(cpu_us: f64, on: &str) -> StepResult {
        let mut s = test_step(100, 0.0, 4.0, 0);
        s.server = Some(Cost {
            cores: cpu_us * s.forwarded_pps / 1e6,
            cpu_us_per_packet: Some(cpu_us),
            packets_per_core_second: Some(1e6 / cpu_us),
            media_threads: Vec::new(),
        });
        s.classes = vec![ClassResult {
            class: "capped".into(),
            cap_kbps: Some(500),
            receivers: 1,
            streams: 1,
            video_kbps: 260.0,
            on_layer: [(on.to_string(), 1)].into(),
            layer_share: BTreeMap::new(),
            switches_in_window: 1,
            switches: 2,
            video_loss: 0.0,
            delay: s.delay,
            offered_kbps: 400.0,
            dropped_by_cap: 0,
            dropped_share: 0.0,
        }];
        s
    }

    fn variant(label: &str, round: u32, cpu_us: f64, on: &str) -> Variant {
        Variant {
            label: label.into(),
            round,
            steps: vec![step(cpu_us, on)],
        }
    }

    #[test]
    fn variants_keep_their_order_and_rounds_give_a_median_and_range() {
        let vs = [
            variant("off", 1, 12.0, "single"),
            variant("on", 1, 14.0, "h"),
            variant("off", 2, 13.0, "single"),
            variant("on", 2, 16.0, "q"),
        ];
        let t = cost_table(&vs);
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].starts_with("| off | 100 | 2 | 17000 | 12.5 (12.0–13.0) |"),
            "{t}"
        );
        assert!(
            rows[1].starts_with("| on | 100 | 2 | 17000 | 15.0 (14.0–16.0) |"),
            "{t}"
        );
        let c = classes_table(&vs);
        assert!(
            c.contains("| on | 100 | capped (500 kbit/s) | 1 | h: 1, q: 1 | 400 | 260 |"),
            "{c}"
        );
    }

    #[test]
    fn result_file_names_give_variant_and_round() {
        let dir = std::env::temp_dir().join(format!("sori-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| {
            let p = dir.join(name);
            let json = serde_json::json!({ "steps": [step(10.0, "f")] });
            std::fs::write(&p, json.to_string()).unwrap();
            p
        };
        let v = load(&file("on-nobwe-3.json")).unwrap();
        assert_eq!(
            (v.label.as_str(), v.round, v.steps.len()),
            ("on-nobwe", 3, 1)
        );
        assert!(load(&file("on.json")).is_err());
        assert!(load(&file("-2.json")).is_err());
        assert!(load(&dir.join("missing-1.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

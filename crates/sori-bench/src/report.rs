//! Results as people read them: the capacity rule, a summary table, and an SVG chart.

use std::fmt::Write;

use crate::run::StepResult;

/// The capacity rule: loss under 0.5%, p95 delay within 20 ms of the idle p95, and no failed
/// joins.
pub const MAX_LOSS: f64 = 0.005;
pub const MAX_P95_RISE_MS: f64 = 20.0;

/// Whether a step meets the capacity rule, given the idle p95.
pub fn passes(step: &StepResult, idle_p95_ms: Option<f64>) -> bool {
    let delay_ok = match (step.delay.p95_ms, idle_p95_ms) {
        (Some(p95), Some(idle)) => p95 <= idle + MAX_P95_RISE_MS,
        (Some(_), None) => true,
        (None, _) => false,
    };
    step.loss < MAX_LOSS && delay_ok && step.joins_failed == 0 && step.received_packets > 0
}

/// The idle p95: the lowest p95 of any step, normally the lightest one's. The lowest rather
/// than the lightest step's, so one disturbed light step (another process on a shared machine)
/// does not loosen the rule for every heavier one.
pub fn idle_p95(steps: &[StepResult]) -> Option<f64> {
    steps
        .iter()
        .filter_map(|s| s.delay.p95_ms)
        .min_by(|a, b| a.total_cmp(b))
}

/// The largest load that meets the capacity rule with every lighter step meeting it too: a
/// light step that fails makes the heavier ones untrustworthy, not the capacity larger.
pub fn capacity(steps: &[StepResult]) -> Option<&StepResult> {
    let idle = idle_p95(steps);
    let mut sorted: Vec<&StepResult> = steps.iter().collect();
    sorted.sort_by_key(|s| s.load);
    sorted.into_iter().take_while(|s| passes(s, idle)).last()
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// A fixed-width table, one row per step.
pub fn table(steps: &[StepResult]) -> String {
    let idle = idle_p95(steps);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>5} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>7} {:>8} {:>6} {:>7} {:>9} {:>9} {:>6} {:>7} {:>4}",
        "scenario",
        "load",
        "fwd pps",
        "loss %",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "nacks",
        "plis",
        "joins",
        "join ms",
        "cores",
        "µs/pkt",
        "pps/core",
        "KiB/part",
        "gen",
        "rcvbuf",
        "ok"
    );
    for s in steps {
        let (cores, per_pkt, per_core) = match &s.server {
            Some(c) => (
                format!("{:.2}", c.cores),
                c.cpu_us_per_packet
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into()),
                c.packets_per_core_second
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_else(|| "-".into()),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<10} {:>5} {:>9.0} {:>7.3} {:>7} {:>7} {:>7} {:>6} {:>5} {:>7} {:>8} {:>6} {:>7} {:>9} {:>9} {:>6} {:>7} {:>4}",
            format!("{:?}", s.scenario).to_lowercase(),
            s.load,
            s.forwarded_pps,
            s.loss * 100.0,
            ms(s.delay.p50_ms),
            ms(s.delay.p95_ms),
            ms(s.delay.p99_ms),
            s.nacks_sent,
            s.plis_sent,
            format!("{}/{}", s.joins_ok, s.joins_ok + s.joins_failed),
            ms(s.join_ready.p50_ms),
            cores,
            per_pkt,
            per_core,
            s.mem_kib_per_participant
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
            s.generator_cores
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            s.udp_rcvbuf_errors
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            if passes(s, idle) { "yes" } else { "no" },
        );
    }
    match capacity(steps) {
        Some(c) => {
            let _ = writeln!(
                out,
                "capacity: load {} ({:.0} forwarded pkt/s) — it and every lighter step: loss < {}%, p95 within {} ms of idle p95 {}, no failed joins",
                c.load,
                c.forwarded_pps,
                MAX_LOSS * 100.0,
                MAX_P95_RISE_MS,
                ms(idle)
            );
        }
        None => {
            let _ = writeln!(out, "capacity: the lightest step did not meet the rule");
        }
    }
    out
}

/// What each class of receivers got of the video, one line per step and class, and the
/// server's layer switches in the window; empty when no step has classes.
pub fn classes_table(steps: &[StepResult]) -> String {
    let mut out = String::new();
    if steps.iter().all(|s| s.classes.is_empty()) {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>5} {:<9} {:>5} {:>10} {:>10} {:<18} {:<24} {:>8} {:>7} {:>7} {:>8} {:>10} {:>8}",
        "load",
        "class",
        "recv",
        "in kbps",
        "video kbps",
        "on layer",
        "packets by layer",
        "switches",
        "loss %",
        "p50 ms",
        "cap drop %",
        "srv switch",
        "srv kbps"
    );
    for s in steps {
        let server = s
            .server_layers
            .as_ref()
            .and_then(|l| l.switches_in_window)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        // What the server sent all receivers together, payload only.
        let egress = s
            .server_layers
            .as_ref()
            .and_then(|l| l.forwarded_bytes_in_window)
            .map(|b| format!("{:.0}", b as f64 * 8.0 / 1000.0 / s.window_secs.max(1e-9)))
            .unwrap_or_else(|| "-".into());
        for c in &s.classes {
            let on: Vec<String> = c.on_layer.iter().map(|(l, n)| format!("{l}:{n}")).collect();
            let share: Vec<String> = c
                .layer_share
                .iter()
                .map(|(l, v)| format!("{l}:{:.0}%", v * 100.0))
                .collect();
            let _ = writeln!(
                out,
                "{:>5} {:<9} {:>5} {:>10.0} {:>10.0} {:<18} {:<24} {:>8} {:>7.3} {:>7} {:>8} {:>10} {:>8}",
                s.load,
                c.class,
                c.receivers,
                c.offered_kbps,
                c.video_kbps,
                on.join(" "),
                share.join(" "),
                c.switches_in_window,
                c.video_loss * 100.0,
                ms(c.delay.p50_ms),
                format!("{:.1}", c.dropped_share * 100.0),
                server,
                egress,
            );
        }
    }
    out
}

/// A line chart of p50/p95 delay (left axis) and server cores (right axis) against load.
pub fn svg(steps: &[StepResult], title: &str) -> String {
    let (w, h) = (720.0, 400.0);
    let (left, right, top, bottom) = (60.0, 60.0, 40.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let mut pts: Vec<&StepResult> = steps.iter().collect();
    pts.sort_by_key(|s| s.load);
    let max_load = pts.iter().map(|s| s.load).max().unwrap_or(1).max(1) as f64;
    let max_delay = pts
        .iter()
        .filter_map(|s| s.delay.p95_ms)
        .fold(1.0f64, f64::max)
        * 1.1;
    let max_cores = pts
        .iter()
        .filter_map(|s| s.server.as_ref().map(|c| c.cores))
        .fold(0.1f64, f64::max)
        .max(1.0);
    let x = |load: usize| left + load as f64 / max_load * pw;
    let yd = |v: f64| top + ph - v / max_delay * ph;
    let yc = |v: f64| top + ph - v / max_cores * ph;
    let mut s = svg_start(w, h, w / 2.0, title);
    let geometry = Geometry {
        w,
        h,
        left,
        top,
        pw,
        ph,
        max_load,
    };
    dual_axes(&mut s, geometry, &pts, max_delay, max_cores);
    type Y<'a> = Box<dyn Fn(&StepResult) -> Option<f64> + 'a>;
    let series: [(&str, &str, Y); 3] = [
        ("p50 delay", "#1f77b4", Box::new(|p| p.delay.p50_ms.map(yd))),
        ("p95 delay", "#ff7f0e", Box::new(|p| p.delay.p95_ms.map(yd))),
        (
            "server cores",
            "#2ca02c",
            Box::new(|p| p.server.as_ref().map(|c| yc(c.cores))),
        ),
    ];
    for (i, (name, color, y)) in series.iter().enumerate() {
        let line: Vec<String> = pts
            .iter()
            .filter_map(|p| y(p).map(|y| format!("{:.1},{:.1}", x(p.load), y)))
            .collect();
        if !line.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                line.join(" ")
            );
            for pt in &line {
                let (cx, cy) = pt.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
            }
        }
        let ly = top + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            left + 10.0,
            left + 30.0,
            left + 36.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The frame of [`svg`]: both axes with their ticks, the loads, the three axis labels.
fn dual_axes(s: &mut String, g: Geometry, pts: &[&StepResult], max_delay: f64, max_cores: f64) {
    let Geometry {
        w,
        h,
        left,
        top,
        pw,
        ph,
        max_load,
    } = g;
    let x = |load: usize| left + load as f64 / max_load * pw;
    let _ = writeln!(
        s,
        r##"<path d="M{left} {top} V{} H{}" fill="none" stroke="#333"/><line x1="{}" y1="{top}" x2="{}" y2="{}" stroke="#333"/>"##,
        top + ph,
        left + pw,
        left + pw,
        left + pw,
        top + ph
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let y = top + ph - f * ph;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{:.1}</text><text x="{}" y="{}">{:.2}</text><line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
            left - 6.0,
            y + 4.0,
            f * max_delay,
            left + pw + 6.0,
            y + 4.0,
            f * max_cores,
            left + pw
        );
    }
    for p in pts {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(p.load),
            top + ph + 16.0,
            p.load
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">load</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">delay (ms)</text><text x="{}" y="{}" transform="rotate(90 {} {})" text-anchor="middle">server CPU (cores)</text>"#,
        left + pw / 2.0,
        h - 12.0,
        top + ph / 2.0,
        top + ph / 2.0,
        w - 14.0,
        top + ph / 2.0,
        w - 14.0,
        top + ph / 2.0
    );
}

/// Where [`svg`] draws.
#[derive(Clone, Copy)]
struct Geometry {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    /// Width and height of the plotting area.
    pw: f64,
    ph: f64,
    max_load: f64,
}

/// Text made safe inside SVG/XML.
/// An SVG chart's opening: the root element, a white background and `title` centred on
/// `title_x`.
pub(crate) fn svg_start(w: f64, h: f64, title_x: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{title_x}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        escape(title)
    );
    s
}

pub(crate) fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A made-up step for the tests of the report and the summary: p50/p95/p99 delay in the
/// ratio 1:2:4, the same figures for join times, no server cost.
#[cfg(test)]
pub(crate) fn test_step(load: usize, loss: f64, p95_ms: f64, joins_failed: usize) -> StepResult {
    use crate::run::{Percentiles, Scenario};
    let delay = Percentiles {
        p50_ms: Some(p95_ms / 2.0),
        p95_ms: Some(p95_ms),
        p99_ms: Some(p95_ms * 2.0),
        max_ms: Some(p95_ms * 3.0),
    };
    StepResult {
        scenario: Scenario::Fanout,
        load,
        publishers: 1,
        receivers: load,
        window_secs: 10.0,
        expected_packets: 1000,
        received_packets: 1000 - (loss * 1000.0) as u64,
        loss,
        forwarded_pps: load as f64 * 170.0,
        delay,
        nacks_sent: 0,
        plis_sent: 0,
        keyframe_requests_at_publishers: 0,
        joins_ok: load + 1 - joins_failed,
        joins_failed,
        join_first_rtp: delay,
        join_ready: delay,
        server: None,
        generator_cores: None,
        udp_rcvbuf_errors: None,
        server_mem_kib_before: None,
        server_mem_kib_after: None,
        mem_kib_per_participant: None,
        simulcast: false,
        classes: Vec::new(),
        server_layers: None,
        receiver_mode: "full".into(),
        errors: Vec::new(),
    }
}

const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
];

/// A line chart, one line per contender, of a value against load.
pub fn lines_svg(
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(usize, f64)>)],
    log: bool,
) -> String {
    let (w, h) = (720.0, 400.0);
    let plot = Plot::new(w, h, series, log);
    let mut s = svg_start(w, h, plot.left + plot.pw / 2.0, title);
    plot.grid(&mut s);
    plot.axes(&mut s, h, series, y_label);
    for (i, (name, pts)) in series.iter().enumerate() {
        plot.line(&mut s, i, name, pts);
    }
    s.push_str("</svg>\n");
    s
}

/// The plotting area of [`lines_svg`] and its scales.
struct Plot {
    left: f64,
    top: f64,
    /// Width and height of the plotting area.
    pw: f64,
    ph: f64,
    max_load: f64,
    log: bool,
    /// The value range shown (decades when `log`).
    lo: f64,
    hi: f64,
}

impl Plot {
    fn new(w: f64, h: f64, series: &[(String, Vec<(usize, f64)>)], log: bool) -> Self {
        let (left, right, top, bottom) = (70.0, 150.0, 40.0, 50.0);
        let max_load = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(l, _)| *l))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_v = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
            .fold(0.0f64, f64::max);
        // Log scale: decades from 0.1 up to the decade above the largest value.
        let (lo, hi) = if log {
            (-1.0f64, max_v.max(1.0).log10().ceil().max(0.0))
        } else {
            (0.0, (max_v * 1.1).max(1.0))
        };
        Plot {
            left,
            top,
            pw: w - left - right,
            ph: h - top - bottom,
            max_load,
            log,
            lo,
            hi,
        }
    }

    fn y(&self, v: f64) -> f64 {
        let v = if self.log { v.max(0.1).log10() } else { v };
        self.top + self.ph - (v - self.lo) / (self.hi - self.lo) * self.ph
    }

    fn x(&self, load: usize) -> f64 {
        self.left + load as f64 / self.max_load * self.pw
    }

    /// Horizontal grid lines with their values.
    fn grid(&self, s: &mut String) {
        let (left, pw, lo, hi) = (self.left, self.pw, self.lo, self.hi);
        let ticks: Vec<f64> = if self.log {
            (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=4).map(|i| hi * i as f64 / 4.0).collect()
        };
        for t in ticks {
            let y = self.y(t);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                y + 4.0,
                if t >= 10.0 || t == 0.0 {
                    format!("{t:.0}")
                } else {
                    format!("{t:.1}")
                }
            );
        }
    }

    /// The axes, the loads under the x axis, and both axis labels.
    fn axes(&self, s: &mut String, h: f64, series: &[(String, Vec<(usize, f64)>)], y_label: &str) {
        let (left, top, pw, ph) = (self.left, self.top, self.pw, self.ph);
        let _ = writeln!(
            s,
            r##"<path d="M{left} {top} V{} H{}" fill="none" stroke="#333"/>"##,
            top + ph,
            left + pw
        );
        let mut loads: Vec<usize> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(l, _)| *l))
            .collect();
        loads.sort_unstable();
        loads.dedup();
        for l in loads {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{l}</text>"#,
                self.x(l),
                top + ph + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">load (N)</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 12.0,
            top + ph / 2.0,
            top + ph / 2.0,
            escape(y_label)
        );
    }

    /// The `i`th contender's line, its points, and its entry in the legend.
    fn line(&self, s: &mut String, i: usize, name: &str, pts: &[(usize, f64)]) {
        let color = COLORS[i % COLORS.len()];
        let line: Vec<(f64, f64)> = pts.iter().map(|(l, v)| (self.x(*l), self.y(*v))).collect();
        if !line.is_empty() {
            let points: Vec<String> = line.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                points.join(" ")
            );
            for (cx, cy) in &line {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{color}"/>"#
                );
            }
        }
        let ly = self.top + 10.0 + 18.0 * i as f64;
        let legend = self.left + self.pw;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            legend + 12.0,
            legend + 32.0,
            legend + 38.0,
            ly + 4.0,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(load: usize, loss: f64, p95_ms: f64, joins_failed: usize) -> StepResult {
        test_step(load, loss, p95_ms, joins_failed)
    }

    #[test]
    fn capacity_is_the_last_step_of_an_unbroken_run_of_passes() {
        let steps = vec![
            step(100, 0.0, 5.0, 0),
            step(10, 0.0, 1.0, 0),
            step(200, 0.004, 20.9, 0),
            step(300, 0.0, 21.1, 0),
            step(400, 0.0, 2.0, 0),
        ];
        assert_eq!(idle_p95(&steps), Some(1.0));
        assert_eq!(capacity(&steps).map(|s| s.load), Some(200));
        assert!(table(&steps).contains("capacity: load 200"));

        let lossy = vec![step(10, 0.0, 1.0, 0), step(50, 0.005, 1.0, 0)];
        assert_eq!(capacity(&lossy).map(|s| s.load), Some(10));
        let failed_join = vec![step(10, 0.0, 1.0, 1), step(50, 0.0, 1.0, 0)];
        assert_eq!(capacity(&failed_join).map(|s| s.load), None);
        assert!(table(&failed_join).contains("did not meet"));
    }

    #[test]
    fn the_chart_is_one_svg_document_with_a_line_per_series() {
        let svg = svg(&[step(10, 0.0, 1.0, 0), step(50, 0.0, 3.0, 0)], "a <b> & c");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        // p50 and p95 delay; no server CPU without a server process.
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}

//! One benchmark step: join the participants of a scenario, let them settle, measure over a
//! steady window, and turn what every client counted into a [`StepResult`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::classes::{self, ClassResult, SentBy};
use crate::client::{self, Client, ClientOptions, ClientReport, Setup, Shared};
use crate::measure::Histogram;
use crate::probe::{now_ns, StreamKind};
use crate::server_cost::{self, Cost};
use crate::server_metrics::{self, ServerLayers};
use crate::{janus_target, sori_target};

/// Who publishes and who receives.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One publisher (audio + video) to N receivers.
    Fanout,
    /// N participants, each publishing audio + video and receiving everyone else.
    Meeting,
    /// Ten audio-only speakers (`--speakers`) to N listeners.
    Audio,
    /// Fanout whose N receivers all join at `--join-rate` per second while media flows;
    /// read it for join times.
    JoinStorm,
}

/// Where the clients join.
#[derive(Debug, Clone)]
pub enum Target {
    /// Sori's WebSocket signaling, `ws://HOST/ws`; with an API key and its secret, each
    /// participant joins with an access token signed with them.
    Sori {
        url: String,
        key: Option<(String, String)>,
    },
    /// A Janus VideoRoom over Janus's WebSocket API, `ws://HOST:8188`.
    Janus { url: String },
}

#[derive(Debug, Clone)]
pub struct StepOptions {
    pub target: Target,
    pub scenario: Scenario,
    /// Receivers (fanout, audio, join storm) or participants (meeting).
    pub load: usize,
    pub speakers: usize,
    pub video_kbps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub join_rate: f64,
    pub join_timeout: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    /// How long receivers keep counting after the window closes, for packets in flight.
    pub grace: Duration,
    pub server_pid: Option<u32>,
    pub bind_ip: IpAddr,
    pub progress: bool,
    /// Publishers send their video as three simulcast layers (q, h, f).
    pub simulcast: bool,
    /// This many receivers (participants in a meeting) drop what they receive beyond
    /// `receiver_cap_kbps`.
    pub capped_receivers: usize,
    pub receiver_cap_kbps: Option<u32>,
    /// The server's Prometheus page, read before and after the window for its layers.
    pub metrics_url: Option<String>,
    /// Receivers decrypt 1 in this many RTP packets in the window ([`crate::sample`]); 1: all.
    pub sample: u32,
    /// The room to join; `None`: a fresh room named after the scenario, load and time.
    pub room: Option<String>,
    /// Publishers that speak, and when (`--speak`): publisher number → spans since the start.
    pub speech: Option<Arc<Speech>>,
}

/// When publishers speak: publisher number → spans (from, to) since the tool started.
pub type Speech = BTreeMap<u16, Vec<(Duration, Duration)>>;

/// Milliseconds at p50/p95/p99 (and the largest), where anything was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `h`, in milliseconds.
    pub fn of(h: &Histogram) -> Self {
        let ms = |q| h.quantile(q).map(|us| us as f64 / 1000.0);
        Self {
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepResult {
    pub scenario: Scenario,
    pub load: usize,
    pub publishers: usize,
    pub receivers: usize,
    pub window_secs: f64,
    /// Packets the publishers sent inside the window, times the receivers that should get them.
    pub expected_packets: u64,
    /// Of those, the ones that arrived (once each, however late).
    pub received_packets: u64,
    /// Share of expected packets that never arrived (after NACK repair).
    pub loss: f64,
    /// Forwarded packets per second, counted at the receivers.
    pub forwarded_pps: f64,
    pub delay: Percentiles,
    pub nacks_sent: u64,
    pub plis_sent: u64,
    pub keyframe_requests_at_publishers: u64,
    pub joins_ok: usize,
    pub joins_failed: usize,
    /// Signaling start to the first RTP packet.
    pub join_first_rtp: Percentiles,
    /// Signaling start to the first decodable start (a keyframe; audio from an audio-only
    /// speaker), for participants that became ready in time.
    pub join_ready: Percentiles,
    pub server: Option<Cost>,
    /// CPU the load generator itself used (1.0 = one core): near the cores it has, the
    /// generator and not the server limits what is measured.
    pub generator_cores: Option<f64>,
    /// Datagrams the kernel dropped machine-wide, from the window's start to the end of the
    /// grace period, because a UDP socket's receive buffer was full (the server's or a
    /// client's): loss that happened in neither program.
    pub udp_rcvbuf_errors: Option<u64>,
    pub server_mem_kib_before: Option<u64>,
    pub server_mem_kib_after: Option<u64>,
    pub mem_kib_per_participant: Option<f64>,
    /// Publishers sent their video as simulcast layers.
    #[serde(default)]
    pub simulcast: bool,
    /// What the receivers got of the video, capped and uncapped apart.
    #[serde(default)]
    pub classes: Vec<ClassResult>,
    /// The server's own count of layer switches and layers sent (from its /metrics).
    #[serde(default)]
    pub server_layers: Option<ServerLayers>,
    /// How the receivers counted: `full` (every packet decrypted) or `sampled 1/N` (1 in N
    /// decrypted for delay, every packet counted from its RTP header for loss; no NACKs).
    #[serde(default = "full_mode")]
    pub receiver_mode: String,
    pub errors: Vec<String>,
}

struct Member {
    opts: ClientOptions,
    /// Publisher ids this member must receive a decodable start from.
    expects: BTreeSet<u16>,
    publishes: bool,
}

fn members(o: &StepOptions) -> Vec<Member> {
    let cap = |i: usize| o.receiver_cap_kbps.filter(|_| i < o.capped_receivers);
    let av = |id| ClientOptions {
        id,
        audio: true,
        video: true,
        video_kbps: o.video_kbps,
        fps: o.fps,
        keyframe_interval: o.keyframe_interval,
        simulcast: o.simulcast,
        // With a script, every publisher sends levels: silence outside its spans.
        speech: o
            .speech
            .as_ref()
            .map(|s| Arc::new(s.get(&id).cloned().unwrap_or_default())),
        ..ClientOptions::receiver(id)
    };
    let mut out: Vec<Member> = Vec::new();
    match o.scenario {
        Scenario::Fanout | Scenario::JoinStorm => {
            out.push(Member {
                opts: av(0),
                expects: BTreeSet::new(),
                publishes: true,
            });
            for i in 0..o.load {
                out.push(Member {
                    opts: ClientOptions {
                        cap_kbps: cap(i),
                        ..ClientOptions::receiver(1 + i as u16)
                    },
                    expects: [0].into(),
                    publishes: false,
                });
            }
        }
        Scenario::Meeting => {
            let ids: BTreeSet<u16> = (0..o.load as u16).collect();
            for &id in &ids {
                let mut expects = ids.clone();
                expects.remove(&id);
                out.push(Member {
                    opts: ClientOptions {
                        cap_kbps: cap(id as usize),
                        ..av(id)
                    },
                    expects,
                    publishes: true,
                });
            }
        }
        Scenario::Audio => {
            let speakers: BTreeSet<u16> = (0..o.speakers as u16).collect();
            for &id in &speakers {
                out.push(Member {
                    opts: ClientOptions {
                        audio: true,
                        ready_on_audio: true,
                        ..ClientOptions::receiver(id)
                    },
                    expects: BTreeSet::new(),
                    publishes: true,
                });
            }
            for i in 0..o.load {
                out.push(Member {
                    opts: ClientOptions {
                        ready_on_audio: true,
                        cap_kbps: cap(i),
                        ..ClientOptions::receiver((o.speakers + i) as u16)
                    },
                    expects: speakers.clone(),
                    publishes: false,
                });
            }
        }
    }
    for m in &mut out {
        if !m.expects.is_empty() {
            m.opts.sample = o.sample.max(1);
        }
    }
    out
}

struct Joined {
    client: Client,
    relay: tokio::task::JoinHandle<()>,
    signal_start_ns: u64,
}

async fn join_one(
    o: &StepOptions,
    room: &str,
    publishes: bool,
    opts: ClientOptions,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Result<Joined, String> {
    let signal_start_ns = now_ns();
    let name = format!("bench-{}", opts.id);
    let setup = Setup::new(opts, o.bind_ip)
        .await
        .map_err(|e| e.to_string())?;
    let (client, relay) = match &o.target {
        Target::Sori { url, key } => {
            sori_target::join(url, key.as_ref(), room, &name, setup, stop, shared)
                .await
                .map_err(|e| e.to_string())?
        }
        Target::Janus { url } => {
            janus_target::join(url, room, &name, publishes, setup, stop, shared)
                .await
                .map_err(|e| e.to_string())?
        }
    };
    Ok(Joined {
        client,
        relay,
        signal_start_ns,
    })
}

/// Runs one step. Errors that stop the step (no server process, the publisher cannot join)
/// come back as `Err`; failures of single receivers are counted in the result.
pub async fn run_step(o: &StepOptions) -> Result<StepResult, String> {
    if matches!(o.target, Target::Janus { .. }) && o.scenario == Scenario::Meeting {
        return Err("the meeting scenario is not supported with --target janus (Janus publishes and subscribes on separate connections)".into());
    }
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let room = match &o.room {
        Some(room) => room.clone(),
        None => format!("bench-{:?}-{}-{}", o.scenario, o.load, now_ns()).to_lowercase(),
    };
    let before_joins = match o.server_pid {
        Some(pid) => Some(server_cost::sample(pid).map_err(|e| e.to_string())?),
        None => None,
    };
    let members = members(o);
    let participants = members.len();
    let mut errors = Vec::new();

    let (pubs, recvs): (Vec<Member>, Vec<Member>) = members.into_iter().partition(|m| m.publishes);
    let party = Party {
        o,
        room: &room,
        stop: &stop_rx,
        shared: &shared,
    };
    let mut joined = party.join_publishers(pubs).await?;
    joined.extend(party.join_receivers(recvs, &mut errors).await);
    let late = wait_until_ready(o, &joined, &mut errors).await;
    let window = measure(o, &shared).await?;
    let _ = stop_tx.send(true);

    let mut reports: Vec<(Member, Option<(ClientReport, u64)>)> = Vec::new();
    for (m, j) in joined {
        match j {
            Some(j) => {
                let report = j.client.finish().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), j.relay).await;
                reports.push((m, Some((report, j.signal_start_ns))));
            }
            None => reports.push((m, None)),
        }
    }
    if o.progress {
        eprintln!();
    }
    Ok(summarize(
        o,
        Collected {
            reports,
            generator_cores: window.generator_cores,
            udp_rcvbuf_errors: window.udp_rcvbuf_errors,
            server_layers: window.server_layers,
            late,
            window_secs: window.secs,
            participants,
            errors,
            samples: before_joins.zip(window.cpu_before).zip(window.cpu_after),
        },
    ))
}

/// What every join of one step shares: the options, the room, the stop signal, the counters.
struct Party<'a> {
    o: &'a StepOptions,
    room: &'a str,
    stop: &'a watch::Receiver<bool>,
    shared: &'a Arc<Shared>,
}

impl Party<'_> {
    /// Publishers first, one at a time, so receivers find media flowing; each must connect.
    async fn join_publishers(
        &self,
        pubs: Vec<Member>,
    ) -> Result<Vec<(Member, Option<Joined>)>, String> {
        let o = self.o;
        let mut joined = Vec::new();
        for m in pubs {
            let j = join_one(
                o,
                self.room,
                true,
                m.opts.clone(),
                self.stop.clone(),
                self.shared.clone(),
            )
            .await
            .map_err(|e| format!("publisher {} cannot join: {e}", m.opts.id))?;
            let mut ms = j.client.milestones.clone();
            tokio::time::timeout(o.join_timeout, ms.wait_for(|m| m.connected_ns.is_some()))
                .await
                .map_err(|_| {
                    format!(
                        "publisher {} did not connect within {:?}",
                        m.opts.id, o.join_timeout
                    )
                })?
                .map_err(|_| format!("publisher {} stopped while connecting", m.opts.id))?;
            joined.push((m, Some(j)));
        }
        Ok(joined)
    }

    /// Receivers at the join rate, each join in its own task; one that fails is noted in
    /// `errors` and joins as `None`.
    async fn join_receivers(
        &self,
        recvs: Vec<Member>,
        errors: &mut Vec<String>,
    ) -> Vec<(Member, Option<Joined>)> {
        let o = self.o;
        let started = tokio::time::Instant::now();
        let gap = Duration::from_secs_f64(1.0 / o.join_rate.max(0.001));
        let mut tasks = Vec::new();
        for (i, m) in recvs.into_iter().enumerate() {
            let at = started + gap.mul_f64(i as f64);
            let (oo, room) = (o.clone(), self.room.to_string());
            let (stop, shared) = (self.stop.clone(), self.shared.clone());
            let opts = m.opts.clone();
            tasks.push((
                m,
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    join_one(&oo, &room, false, opts, stop, shared).await
                }),
            ));
        }
        let mut joined = Vec::new();
        for (m, t) in tasks {
            match t.await {
                Ok(Ok(j)) => joined.push((m, Some(j))),
                Ok(Err(e)) => {
                    errors.push(format!("receiver {}: {e}", m.opts.id));
                    joined.push((m, None));
                }
                Err(e) => {
                    errors.push(format!("receiver {}: {e}", m.opts.id));
                    joined.push((m, None));
                }
            }
        }
        joined
    }
}

/// Waits until everyone is ready (a decodable start from every publisher they expect), for
/// the join timeout at most; returns those who were not, each noted in `errors`.
async fn wait_until_ready(
    o: &StepOptions,
    joined: &[(Member, Option<Joined>)],
    errors: &mut Vec<String>,
) -> BTreeSet<u16> {
    let deadline = tokio::time::Instant::now() + o.join_timeout;
    let mut late = BTreeSet::new();
    for (m, j) in joined {
        let Some(j) = j else { continue };
        let mut ms = j.client.milestones.clone();
        let ready = tokio::time::timeout_at(
            deadline,
            ms.wait_for(|s| s.failed.is_some() || m.expects.is_subset(&s.ready_from)),
        )
        .await;
        if !matches!(ready, Ok(Ok(_))) {
            late.insert(m.opts.id);
            errors.push(format!(
                "participant {} not ready within {:?}",
                m.opts.id, o.join_timeout
            ));
        }
    }
    late
}

/// What the measuring window saw besides the clients' counts.
struct Window {
    secs: f64,
    cpu_before: Option<server_cost::Sample>,
    cpu_after: Option<server_cost::Sample>,
    generator_cores: Option<f64>,
    udp_rcvbuf_errors: Option<u64>,
    server_layers: Option<ServerLayers>,
}

/// The server's metrics page, if it has one that answers.
async fn metrics_page(o: &StepOptions) -> Option<String> {
    let url = o.metrics_url.as_deref()?;
    match server_metrics::fetch(url).await {
        Ok(page) => Some(page),
        Err(e) => {
            tracing::warn!("no server metrics: {e}");
            None
        }
    }
}

/// The warm-up, then the measuring window (clients count only inside it), then the grace
/// period for packets in flight.
async fn measure(o: &StepOptions, shared: &Shared) -> Result<Window, String> {
    if o.progress {
        progress(o, "warm-up", shared, None, o.warmup).await;
    } else {
        tokio::time::sleep(o.warmup).await;
    }

    let cpu_before = o
        .server_pid
        .map(server_cost::sample)
        .transpose()
        .map_err(|e| e.to_string())?;
    let own_before = server_cost::sample(std::process::id()).ok();
    let rcvbuf_before = server_cost::udp_receive_buffer_errors();
    let metrics_before = metrics_page(o).await;
    let window_start = Instant::now();
    shared.window.open(now_ns());
    if o.progress {
        progress(o, "measuring", shared, o.server_pid, o.duration).await;
    } else {
        tokio::time::sleep(o.duration).await;
    }
    shared.window.close(now_ns());
    let secs = window_start.elapsed().as_secs_f64();
    let cpu_after = o
        .server_pid
        .map(server_cost::sample)
        .transpose()
        .map_err(|e| e.to_string())?;
    let own_after = server_cost::sample(std::process::id()).ok();
    let generator_cores = own_before
        .zip(own_after)
        .map(|(b, a)| server_cost::cost(&b, &a, 0).cores);
    let server_layers = metrics_page(o)
        .await
        .and_then(|after| server_metrics::layers(metrics_before.as_deref(), &after));
    tokio::time::sleep(o.grace).await;
    let udp_rcvbuf_errors = rcvbuf_before
        .zip(server_cost::udp_receive_buffer_errors())
        .map(|(b, a)| a.saturating_sub(b));
    Ok(Window {
        secs,
        cpu_before,
        cpu_after,
        generator_cores,
        udp_rcvbuf_errors,
        server_layers,
    })
}

type Samples = (
    (server_cost::Sample, server_cost::Sample),
    server_cost::Sample,
);

/// What a step collected, for [`summarize`].
struct Collected {
    reports: Vec<(Member, Option<(ClientReport, u64)>)>,
    generator_cores: Option<f64>,
    udp_rcvbuf_errors: Option<u64>,
    server_layers: Option<ServerLayers>,
    /// Participants not ready within the join timeout.
    late: BTreeSet<u16>,
    window_secs: f64,
    participants: usize,
    errors: Vec<String>,
    samples: Option<Samples>,
}

/// The clients' counts, added up over every participant.
#[derive(Default)]
struct Tally {
    delay: Histogram,
    join_rtp: Histogram,
    join_ready: Histogram,
    expected: u64,
    received: u64,
    nacks: u64,
    plis: u64,
    kreq: u64,
    ok: usize,
    failed: usize,
    publishers: usize,
}

/// What each publisher sent in the window.
fn sent_by(reports: &[(Member, Option<(ClientReport, u64)>)]) -> SentBy {
    reports
        .iter()
        .filter_map(|(m, r)| {
            let sent = &r.as_ref()?.0.sent_in_window;
            Some((m.opts.id, (sent.audio, sent.video.clone())))
        })
        .collect()
}

impl Tally {
    fn of(
        reports: &[(Member, Option<(ClientReport, u64)>)],
        sent_by: &SentBy,
        late: &BTreeSet<u16>,
        errors: &mut Vec<String>,
    ) -> Self {
        let mut t = Tally::default();
        for (m, r) in reports {
            if m.publishes {
                t.publishers += 1;
            }
            let Some((r, start)) = r else {
                t.failed += 1;
                continue;
            };
            let ms = &r.milestones;
            if let Some(f) = &ms.failed {
                errors.push(format!("participant {}: {f}", m.opts.id));
            }
            // Ready in time: a decodable start from every publisher within the join timeout.
            let ready = ms.failed.is_none()
                && m.expects.is_subset(&ms.ready_from)
                && !late.contains(&m.opts.id);
            if ready {
                t.ok += 1;
            } else {
                t.failed += 1;
            }
            for p in &m.expects {
                let Some((audio, video)) = sent_by.get(p) else {
                    continue;
                };
                let (video, video_arrived) = match video.as_slice() {
                    [] => (0, 0),
                    sent => r.reception.video_expected(*p, sent),
                };
                t.expected += audio + video;
                t.received += r.reception.arrived(*p, StreamKind::Audio) + video_arrived;
            }
            t.delay.merge(&r.reception.delay);
            t.nacks += r.nacks_sent;
            t.plis += r.plis_sent;
            t.kreq += r.keyframe_requests_received;
            if !m.expects.is_empty() {
                if let Some(at) = ms.first_rtp_ns {
                    t.join_rtp.record(at.saturating_sub(*start) / 1000);
                }
                if ready {
                    if let Some(at) = ms.first_keyframe_ns.max(ms.first_rtp_ns) {
                        t.join_ready.record(at.saturating_sub(*start) / 1000);
                    }
                }
            }
        }
        t
    }
}

/// The receivers' classes (capped, uncapped), for steps whose publishers send video.
fn receiver_classes(o: &StepOptions, c: &Collected, sent_by: &SentBy) -> Vec<ClassResult> {
    let receivers: Vec<classes::Receiver> = c
        .reports
        .iter()
        .filter_map(|(m, r)| {
            let (report, _) = r.as_ref()?;
            (!m.expects.is_empty()).then_some(classes::Receiver {
                capped: m.opts.cap_kbps.is_some(),
                expects: &m.expects,
                report,
            })
        })
        .collect();
    if sent_by.values().all(|(_, video)| video.is_empty()) {
        return Vec::new();
    }
    classes::classes(
        &receivers,
        sent_by,
        &client::layer_names(o.simulcast),
        o.receiver_cap_kbps,
        c.window_secs,
    )
}

fn full_mode() -> String {
    "full".to_string()
}

/// The name [`StepResult::receiver_mode`] gives decrypting 1 in `sample` packets.
pub fn receiver_mode(sample: u32) -> String {
    if sample > 1 {
        format!("sampled 1/{sample}")
    } else {
        full_mode()
    }
}

fn summarize(o: &StepOptions, c: Collected) -> StepResult {
    let sent_by = sent_by(&c.reports);
    let classes = receiver_classes(o, &c, &sent_by);
    let mut errors = c.errors;
    let t = Tally::of(&c.reports, &sent_by, &c.late, &mut errors);
    let (expected, received) = (t.expected, t.received);
    let loss = if expected > 0 {
        1.0 - received.min(expected) as f64 / expected as f64
    } else {
        0.0
    };
    let server = c
        .samples
        .as_ref()
        .map(|((_, b), a)| server_cost::cost(b, a, received));
    let (mem_before, mem_after) = match &c.samples {
        Some(((before, _), after)) => (Some(before.mem_kib), Some(after.mem_kib)),
        None => (None, None),
    };
    let participants = c.participants;
    let mem_per = mem_before
        .zip(mem_after)
        .filter(|_| participants > 0)
        .map(|(b, a)| (a as f64 - b as f64) / participants as f64);
    StepResult {
        scenario: o.scenario,
        load: o.load,
        publishers: t.publishers,
        receivers: c
            .reports
            .iter()
            .filter(|(m, _)| !m.expects.is_empty())
            .count(),
        window_secs: c.window_secs,
        expected_packets: expected,
        received_packets: received,
        loss,
        forwarded_pps: received as f64 / c.window_secs.max(1e-9),
        delay: Percentiles::of(&t.delay),
        nacks_sent: t.nacks,
        plis_sent: t.plis,
        keyframe_requests_at_publishers: t.kreq,
        joins_ok: t.ok,
        joins_failed: t.failed,
        join_first_rtp: Percentiles::of(&t.join_rtp),
        join_ready: Percentiles::of(&t.join_ready),
        server,
        generator_cores: c.generator_cores,
        udp_rcvbuf_errors: c.udp_rcvbuf_errors,
        server_mem_kib_before: mem_before,
        server_mem_kib_after: mem_after,
        mem_kib_per_participant: mem_per,
        simulcast: o.simulcast,
        classes,
        server_layers: c.server_layers,
        receiver_mode: receiver_mode(o.sample),
        errors,
    }
}

/// Prints a progress line once a second for `length`.
async fn progress(
    o: &StepOptions,
    phase: &str,
    shared: &Shared,
    pid: Option<u32>,
    length: Duration,
) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_rx = shared.received.load(Ordering::Relaxed);
    let mut last_cpu = pid.and_then(|p| server_cost::sample(p).ok());
    loop {
        let left = length.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep(left) => {}
        }
        let rx = shared.received.load(Ordering::Relaxed);
        let cpu = pid.and_then(|p| server_cost::sample(p).ok());
        let cores = match (&last_cpu, &cpu) {
            (Some(a), Some(b)) => {
                format!("  server {:.2} cores", server_cost::cost(a, b, 0).cores)
            }
            _ => String::new(),
        };
        let secs = length.as_secs_f64();
        let done = start.elapsed().as_secs_f64().min(secs);
        let width = 20;
        let filled = ((done / secs.max(1e-9)) * width as f64) as usize;
        eprint!(
            "\r{:?} load {} {phase:<9} [{}{}] {:>4.0}/{:.0} s  received {:>7} pkt/s{cores}   ",
            o.scenario,
            o.load,
            "#".repeat(filled.min(width)),
            ".".repeat(width - filled.min(width)),
            done,
            secs,
            rx - last_rx
        );
        let _ = std::io::stderr().flush();
        last_rx = rx;
        last_cpu = cpu;
    }
}

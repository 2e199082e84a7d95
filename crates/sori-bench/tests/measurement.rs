//! The load generator's own measurements, checked against known impairments: a publisher and a
//! receiver connect peer to peer through a UDP relay on 127.0.0.1 that drops every tenth media
//! packet of each RTP stream, or delays every datagram by a known time. The receiver must
//! report that loss (audio has no repair, video is repaired by NACK) and that delay.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sori_bench::client::{ClientOptions, ClientReport, Setup, Shared};
use sori_bench::probe::{now_ns, StreamKind};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WINDOW: Duration = Duration::from_secs(4);
const LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy)]
struct Impairment {
    /// Drop every n-th RTP packet of each SSRC going to the receiver (0: none).
    drop_every: u32,
    /// Added to every datagram going to the receiver.
    delay: Duration,
}

/// A relay with one socket facing each side; returns (address the publisher sends to,
/// address the receiver sends to).
async fn relay(
    publisher: SocketAddr,
    receiver: SocketAddr,
    imp: Impairment,
) -> (SocketAddr, SocketAddr) {
    let a = Arc::new(UdpSocket::bind((LOCALHOST, 0)).await.unwrap());
    let b = Arc::new(UdpSocket::bind((LOCALHOST, 0)).await.unwrap());
    let addrs = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // Receiver → publisher: untouched.
    let (a2, b2) = (a.clone(), b.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = b2.recv_from(&mut buf).await {
            let _ = a2.send_to(&buf[..n], publisher).await;
        }
    });
    // Publisher → receiver: through a FIFO that holds each datagram for `delay`.
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = b.send_to(&data, receiver).await;
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut per_ssrc: HashMap<u32, u32> = HashMap::new();
        while let Ok((n, _)) = a.recv_from(&mut buf).await {
            let d = &buf[..n];
            // RTP, not RTCP (payload types 192–223 are RTCP packet types).
            let rtp = n >= 12 && (128..192).contains(&d[0]) && !(192..224).contains(&d[1]);
            if rtp && imp.drop_every > 0 {
                let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                let c = per_ssrc.entry(ssrc).or_default();
                *c += 1;
                if c.is_multiple_of(imp.drop_every) {
                    continue;
                }
            }
            let _ = tx.send((tokio::time::Instant::now() + imp.delay, d.to_vec()));
        }
    });
    addrs
}

/// Points the host candidate for `from` at `to` instead.
fn redirect(sdp: &str, from: SocketAddr, to: SocketAddr) -> String {
    let old = format!(" {} {} typ host", from.ip(), from.port());
    assert!(
        sdp.contains(&old),
        "the SDP names {from} as a host candidate"
    );
    sdp.replace(&old, &format!(" {} {} typ host", to.ip(), to.port()))
}

struct Outcome {
    publisher: ClientReport,
    receiver: ClientReport,
}

impl Outcome {
    fn loss(&self, kind: StreamKind) -> f64 {
        let sent = match kind {
            StreamKind::Audio => self.publisher.sent_in_window.audio,
            StreamKind::Video => self.publisher.sent_in_window.video.iter().sum(),
        };
        assert!(sent > 0, "the publisher sent {kind:?} in the window");
        let got = self.receiver.reception.arrived(0, kind);
        1.0 - got as f64 / sent as f64
    }

    fn p50_ms(&self) -> f64 {
        self.receiver
            .reception
            .delay
            .quantile(0.5)
            .expect("delays measured") as f64
            / 1000.0
    }
}

async fn measure(imp: Impairment) -> Outcome {
    measure_with(imp, 1).await
}

/// As [`measure`], the receiver decrypting 1 in `sample` RTP packets in the window.
async fn measure_with(imp: Impairment, sample: u32) -> Outcome {
    let shared = Arc::new(Shared::default());
    let publishing = ClientOptions {
        audio: true,
        video: true,
        video_kbps: 600,
        ..ClientOptions::receiver(0)
    };
    let mut publisher = Setup::new(publishing, LOCALHOST).await.unwrap();
    let receiving = ClientOptions {
        sample,
        ..ClientOptions::receiver(1)
    };
    let mut receiver = Setup::new(receiving, LOCALHOST).await.unwrap();
    let (pa, ra) = (publisher.local_addr(), receiver.local_addr());
    let (relay_for_publisher, relay_for_receiver) = relay(pa, ra, imp).await;

    let offer = redirect(&publisher.offer().unwrap(), pa, relay_for_receiver);
    let answer = receiver.accept_offer(&offer).unwrap();
    publisher
        .accept_answer(&redirect(&answer, ra, relay_for_publisher))
        .unwrap();

    let (stop_tx, stop) = watch::channel(false);
    let start = |s: Setup| {
        // Nothing is renegotiated here: no offers come, answers go nowhere.
        let (_, offers) = mpsc::unbounded_channel();
        let (answers, _) = mpsc::unbounded_channel();
        s.start(offers, answers, stop.clone(), shared.clone())
    };
    let publisher = start(publisher);
    let receiver = start(receiver);
    let mut ms = receiver.milestones.clone();
    tokio::time::timeout(
        LIMIT,
        ms.wait_for(|m| m.ready_from.contains(&0) || m.failed.is_some()),
    )
    .await
    .expect("the receiver gets a keyframe")
    .unwrap();
    assert_eq!(ms.borrow().failed, None);

    shared.window.open(now_ns());
    tokio::time::sleep(WINDOW).await;
    shared.window.close(now_ns());
    // Packets sent inside the window may still be on their way, or waiting for a NACK repair.
    tokio::time::sleep(imp.delay + Duration::from_millis(700)).await;
    stop_tx.send(true).unwrap();
    Outcome {
        publisher: publisher.finish().await,
        receiver: receiver.finish().await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_path_shows_no_loss() {
    let o = measure(Impairment {
        drop_every: 0,
        delay: Duration::ZERO,
    })
    .await;
    assert_eq!(o.loss(StreamKind::Audio), 0.0);
    assert_eq!(o.loss(StreamKind::Video), 0.0);
    assert_eq!(o.receiver.reception.duplicates, 0);
    assert!(o.receiver.milestones.first_rtp_ns.is_some());
    assert!(o.receiver.milestones.first_keyframe_ns.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_share_of_dropped_packets_is_reported_as_loss() {
    let o = measure(Impairment {
        drop_every: 10,
        delay: Duration::ZERO,
    })
    .await;
    let audio = o.loss(StreamKind::Audio);
    let video = o.loss(StreamKind::Video);
    eprintln!(
        "relay dropped 10%: audio loss {:.2}%, video loss after repair {:.2}%, NACKs sent {}, received by the publisher {}",
        audio * 100.0,
        video * 100.0,
        o.receiver.nacks_sent,
        o.publisher.nacks_received
    );
    // Audio has no repair: exactly every tenth packet is gone, give or take one at each end
    // of the window.
    assert!((0.08..=0.12).contains(&audio), "audio loss {audio}");
    // Video losses are NACKed and resent (a resend is dropped too now and then).
    assert!(o.receiver.nacks_sent > 0, "the receiver sent NACKs");
    assert!(video < 0.05, "video loss after repair {video}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_added_delay_shows_up_in_the_measured_delay() {
    let added = Duration::from_millis(40);
    let o = measure(Impairment {
        drop_every: 0,
        delay: added,
    })
    .await;
    let p50 = o.p50_ms();
    let p99 = o.receiver.reception.delay.quantile(0.99).unwrap() as f64 / 1000.0;
    eprintln!("relay added 40 ms: measured p50 {p50:.2} ms, p99 {p99:.2} ms");
    // The delay can never be less than what the relay added (histogram buckets are 2% wide);
    // loopback and the two peers add a few milliseconds at most.
    assert!(p50 >= 40.0 * 0.98, "p50 {p50} ms");
    assert!(p50 < 40.0 + 40.0, "p50 {p50} ms");
    assert_eq!(o.loss(StreamKind::Audio), 0.0);
}

/// The delay quantile `q` in milliseconds.
fn delay_ms(o: &Outcome, q: f64) -> f64 {
    o.receiver
        .reception
        .delay
        .quantile(q)
        .expect("delays measured") as f64
        / 1000.0
}

/// A sampling receiver (1 in 16 decrypted) next to a full one over the same path: it must
/// decrypt about a sixteenth of the window's packets, yet count every one of them for loss,
/// and its delay sample must match the full receiver's.
async fn full_and_sampled(imp: Impairment) -> (Outcome, Outcome) {
    let (full, sampled) = tokio::join!(measure_with(imp, 1), measure_with(imp, 16));
    for (name, o) in [("full", &full), ("sampled", &sampled)] {
        eprintln!(
            "{name}: audio loss {:.2}%, video loss {:.2}%, p50 {:.2} ms, p95 {:.2} ms, delays {}, NACKs sent {}, decrypted {}, counted {}",
            o.loss(StreamKind::Audio) * 100.0,
            o.loss(StreamKind::Video) * 100.0,
            delay_ms(o, 0.5),
            delay_ms(o, 0.95),
            o.receiver.reception.delay.count(),
            o.receiver.nacks_sent,
            o.receiver.rtp_decrypted,
            o.receiver.rtp_counted,
        );
    }
    // The full receiver decrypts and times every packet of the window; the sampling one times
    // about 1 in 16 (the first packet of each SSRC is decrypted, so a little more), and counts
    // the rest from their headers.
    let arrived = |o: &Outcome| {
        o.receiver.reception.arrived(0, StreamKind::Audio)
            + o.receiver.reception.arrived(0, StreamKind::Video)
    };
    assert_eq!(full.receiver.reception.delay.count(), arrived(&full));
    assert_eq!(
        (full.receiver.rtp_decrypted, full.receiver.rtp_counted),
        (0, 0)
    );
    let timed = sampled.receiver.reception.delay.count();
    assert!(timed > 0, "the sampling receiver times some packets");
    assert!(
        timed * 10 < arrived(&sampled),
        "timed {timed} of {} arrived",
        arrived(&sampled)
    );
    assert!(sampled.receiver.rtp_counted > 10 * timed);
    // No NACKs from the sampling receiver: str0m never saw the counted packets' gaps.
    assert_eq!(sampled.receiver.nacks_sent, 0);
    // Its delay sample agrees with the full receiver's within 5 ms at the median.
    agree(&full, &sampled, 0.5);
    (full, sampled)
}

/// The two receivers' delay quantile `q` within 5 ms.
fn agree(full: &Outcome, sampled: &Outcome, q: f64) {
    let (f, s) = (delay_ms(full, q), delay_ms(sampled, q));
    assert!(
        (f - s).abs() <= 5.0,
        "delay q{q}: full {f} ms, sampled {s} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_receiver_reports_what_a_full_one_does_on_a_clean_path() {
    let (full, sampled) = full_and_sampled(Impairment {
        drop_every: 0,
        delay: Duration::from_millis(10),
    })
    .await;
    assert_eq!(full.loss(StreamKind::Audio), 0.0);
    assert_eq!(full.loss(StreamKind::Video), 0.0);
    // Counted packets fall in the window by a send time estimated from the RTP timestamp:
    // a packet at either end may be placed on the other side of it (within 1%).
    for kind in [StreamKind::Audio, StreamKind::Video] {
        let loss = sampled.loss(kind);
        assert!(loss.abs() <= 0.01, "sampled {kind:?} loss {loss}");
    }
    assert_eq!(sampled.receiver.reception.duplicates, 0);
    assert!(delay_ms(&sampled, 0.5) >= 10.0 * 0.98);
    // Without repairs (whose late arrivals make the full receiver's tail) the tails agree too.
    agree(&full, &sampled, 0.95);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_receiver_reports_dropped_packets_it_never_decrypted() {
    let (full, sampled) = full_and_sampled(Impairment {
        drop_every: 10,
        delay: Duration::from_millis(10),
    })
    .await;
    // Audio has no repair: both see every tenth packet gone (give or take one at each end).
    let (fa, sa) = (
        full.loss(StreamKind::Audio),
        sampled.loss(StreamKind::Audio),
    );
    assert!((0.08..=0.12).contains(&fa), "full audio loss {fa}");
    assert!((0.08..=0.12).contains(&sa), "sampled audio loss {sa}");
    assert!(
        (fa - sa).abs() <= 0.02,
        "audio loss: full {fa}, sampled {sa}"
    );
    // Video: the full receiver NACKs and gets most of it back; the sampling one sends no
    // NACKs, so it reports the loss before repair: every tenth packet.
    let (fv, sv) = (
        full.loss(StreamKind::Video),
        sampled.loss(StreamKind::Video),
    );
    assert!(full.receiver.nacks_sent > 0);
    assert!(fv < 0.05, "full video loss after repair {fv}");
    assert!((0.08..=0.12).contains(&sv), "sampled video loss {sv}");
    // The full receiver's delay tail holds the repaired packets (a NACK round trip late); the
    // sampling receiver has none, so only the medians are compared (above).
}

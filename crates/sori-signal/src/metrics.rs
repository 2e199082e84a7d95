//! `/metrics` in the Prometheus text format.

use std::fmt::Write;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sori_media::{MediaStats, TcpStats};
use sori_turn::TurnStats;

use crate::Signal;

/// `/metrics`: for clients on loopback, or with the configured bearer token.
pub(crate) async fn page(
    State(signal): State<Signal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Behind a reverse proxy on this host every request comes from loopback: the proxy's
    // X-Forwarded-For says who is really asking.
    let client = crate::http::client_ip(peer, &headers, &signal.config.trusted_proxies);
    if !client.is_loopback() {
        let bearer = crate::http::bearer(&headers);
        let allowed = match (&signal.config.metrics_token, bearer) {
            (Some(want), Some(got)) => constant_time_eq(want.as_bytes(), got.as_bytes()),
            _ => false,
        };
        if !allowed {
            return (
                StatusCode::UNAUTHORIZED,
                "/metrics answers loopback, or a client with the metrics bearer token\n",
            )
                .into_response();
        }
    }
    open_page(State(signal)).await
}

/// `/metrics` on the separate metrics address, which the operator chose to expose.
pub(crate) async fn open_page(State(signal): State<Signal>) -> Response {
    let (rooms, participants) = {
        let hub = signal.hub();
        (hub.rooms(), hub.participants())
    };
    let turn = match &signal.config.turn_monitor {
        Some(m) => m.stats().await,
        None => None,
    };
    // A remote media server reports its own numbers; only the sessions are counted here.
    match signal.media.stats().await {
        Ok(stats) => {
            let mut page = render(rooms, participants, stats.as_ref(), turn.as_ref());
            let _ = writeln!(
                page,
                "# HELP sori_refused_total Requests, joins and messages refused, by reason.\n\
                 # TYPE sori_refused_total counter"
            );
            for (reason, n) in signal.refusals.snapshot() {
                let _ = writeln!(page, "sori_refused_total{{reason=\"{reason}\"}} {n}");
            }
            let _ = writeln!(
                page,
                "# HELP sori_api_calls_total Calls of the server API by method and outcome (ok, or the Twirp error code).\n\
                 # TYPE sori_api_calls_total counter"
            );
            for ((method, outcome), n) in signal.api_calls.snapshot() {
                let _ = writeln!(
                    page,
                    "sori_api_calls_total{{method=\"{method}\",outcome=\"{outcome}\"}} {n}"
                );
            }
            let h = &signal.hooks.stats;
            let _ = writeln!(
                page,
                "# HELP sori_webhook_events_total What became of webhook events, per receiver: delivered, a failed attempt (tried again), dropped after failing for the retry time, dropped because the receiver's queue was full.\n\
                 # TYPE sori_webhook_events_total counter"
            );
            for (outcome, n) in [
                ("delivered", &h.delivered),
                ("failed-attempt", &h.failed_attempts),
                ("dropped-failing", &h.dropped_failing),
                ("dropped-queue-full", &h.dropped_full),
            ] {
                let n = n.load(std::sync::atomic::Ordering::Relaxed);
                let _ = writeln!(
                    page,
                    "sori_webhook_events_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
            let _ = writeln!(
                page,
                "# HELP sori_dominant_speaker_changes_total Changes of a room's dominant speaker.\n\
                 # TYPE sori_dominant_speaker_changes_total counter\n\
                 sori_dominant_speaker_changes_total {}",
                signal.hub().dominant_changes()
            );
            let _ = writeln!(
                page,
                "# HELP sori_participants_reconnecting Participants whose socket dropped, kept for a resume.\n\
                 # TYPE sori_participants_reconnecting gauge\n\
                 sori_participants_reconnecting {}",
                signal.sessions.parked()
            );
            let _ = writeln!(
                page,
                "# HELP sori_whip_sessions WHIP publishers (encoders publishing into a room).\n\
                 # TYPE sori_whip_sessions gauge\n\
                 sori_whip_sessions {}\n\
                 # HELP sori_whep_sessions WHEP viewers (players watching a room).\n\
                 # TYPE sori_whep_sessions gauge\n\
                 sori_whep_sessions {}",
                signal.http_sessions.count(crate::whip::Kind::Whip),
                signal.http_sessions.count(crate::whip::Kind::Whep)
            );
            if let Some(links) = &signal.links {
                let (sockets, hosted) = links.counts();
                let _ = writeln!(
                    page,
                    "# HELP sori_relayed_sockets Sockets on this session server whose room lives on another.\n\
                     # TYPE sori_relayed_sockets gauge\n\
                     sori_relayed_sockets {sockets}\n\
                     # HELP sori_relayed_participants Participants of this session server's rooms whose socket is on another.\n\
                     # TYPE sori_relayed_participants gauge\n\
                     sori_relayed_participants {hosted}"
                );
            }
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Compares two secrets in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Renders session, TURN and media counters in the Prometheus text format (`sori media` uses it
/// with no sessions).
pub fn render(
    rooms: usize,
    participants: usize,
    stats: Option<&MediaStats>,
    turn: Option<&TurnStats>,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "sori_rooms",
        "gauge",
        "Rooms with at least one participant.",
        &[("", rooms as u64)],
    );
    metric(
        "sori_participants",
        "gauge",
        "Participants in rooms (signaling connections).",
        &[("", participants as u64)],
    );
    if let Some(t) = turn {
        turn_metrics(&mut metric, t);
    }
    let Some(stats) = stats else {
        return out;
    };
    media_metrics(&mut metric, stats);
    out
}

/// The embedded TURN server's counters.
fn turn_metrics(metric: &mut impl FnMut(&str, &str, &str, &[(&str, u64)]), t: &TurnStats) {
    metric(
        "sori_turn_allocations",
        "gauge",
        "Allocations open on the embedded TURN server.",
        &[("", t.allocations as u64)],
    );
    metric(
        "sori_turn_peers_refused_total",
        "counter",
        "TURN permissions, channel bindings and sends refused because the peer is one the relay may not reach.",
        &[("", t.peers_refused)],
    );
    metric(
        "sori_turn_quota_refused_total",
        "counter",
        "TURN allocations refused because their credential or client address held its cap.",
        &[("", t.quota_refused)],
    );
    metric(
        "sori_turn_revoked_refused_total",
        "counter",
        "TURN requests refused because their credential was revoked.",
        &[("", t.revoked_refused)],
    );
    metric(
        "sori_turn_revocations",
        "gauge",
        "Participants whose TURN credentials are revoked now.",
        &[("", t.revocations as u64)],
    );
}

/// The media server's counters and state.
fn media_metrics(metric: &mut impl FnMut(&str, &str, &str, &[(&str, u64)]), stats: &MediaStats) {
    let c = &stats.counters;
    let s = &stats.state;
    metric(
        "sori_media_rooms",
        "gauge",
        "Rooms with media at the media server.",
        &[("", s.rooms as u64)],
    );
    metric(
        "sori_media_peers",
        "gauge",
        "Peer connections at the media server.",
        &[("", s.peers as u64)],
    );
    metric(
        "sori_tracks",
        "gauge",
        "Published audio and video tracks.",
        &[("", s.tracks as u64)],
    );
    metric(
        "sori_subscriptions",
        "gauge",
        "Track deliveries (track, receiver).",
        &[("", s.subscriptions as u64)],
    );
    let l = &stats.layers;
    metric(
        "sori_video_receivers",
        "gauge",
        "Video track deliveries (track, receiver) by the simulcast layer sent: paused, low, medium, high (high also counts tracks sent without simulcast).",
        &[
            ("{layer=\"paused\"}", l.paused),
            ("{layer=\"low\"}", l.low),
            ("{layer=\"medium\"}", l.medium),
            ("{layer=\"high\"}", l.high),
        ],
    );
    metric(
        "sori_layer_switches_total",
        "counter",
        "Times a receiver's video track moved to another simulcast layer, or paused or resumed.",
        &[("", c.layer_switches)],
    );
    metric(
        "sori_rtp_received_packets_total",
        "counter",
        "RTP packets received from senders.",
        &[("", c.rtp_received)],
    );
    metric(
        "sori_rtp_forwarded_packets_total",
        "counter",
        "RTP packets forwarded to receivers.",
        &[("", c.rtp_forwarded_packets)],
    );
    metric(
        "sori_rtp_forwarded_bytes_total",
        "counter",
        "RTP payload bytes forwarded to receivers.",
        &[("", c.rtp_forwarded_bytes)],
    );
    metric(
        "sori_rtp_silent_audio_not_forwarded_total",
        "counter",
        "Silent audio packets not forwarded to receivers (media.silence_dbov).",
        &[("", c.rtp_silence_not_forwarded)],
    );
    metric(
        "sori_datagrams_received_total",
        "counter",
        "UDP datagrams and ICE-TCP frames received on the media port.",
        &[("", c.datagrams_received)],
    );
    metric(
        "sori_datagrams_dropped_total",
        "counter",
        "Datagrams dropped on the media port, by reason.",
        &[
            ("{reason=\"unroutable\"}", c.datagrams_unroutable),
            ("{reason=\"malformed\"}", c.datagrams_malformed),
            ("{reason=\"rejected\"}", c.datagrams_rejected),
        ],
    );
    ice_tcp_metrics(metric, &stats.tcp);
    metric(
        "sori_keyframe_requests_total",
        "counter",
        "Keyframe requests sent to senders.",
        &[("", c.keyframe_requests_sent)],
    );
    metric(
        "sori_participants_joined_total",
        "counter",
        "Participants that joined.",
        &[("", c.peers_joined)],
    );
    metric(
        "sori_participants_removed_total",
        "counter",
        "Participants removed, for any reason.",
        &[("", c.peers_removed)],
    );
    metric(
        "sori_ice_restarts_total",
        "counter",
        "ICE restarts participants made: a new network path on the same media connection.",
        &[("", c.ice_restarts)],
    );
    metric(
        "sori_ice_stalls_total",
        "counter",
        "Connected participants from which nothing arrived for 4 s, asked to restart ICE.",
        &[("", c.ice_stalls)],
    );
}

/// The media port's ICE-TCP connections.
fn ice_tcp_metrics(metric: &mut impl FnMut(&str, &str, &str, &[(&str, u64)]), t: &TcpStats) {
    metric(
        "sori_ice_tcp_connections",
        "gauge",
        "ICE-TCP media connections: open (answered by a peer) or pending.",
        &[
            ("{state=\"open\"}", t.open as u64),
            ("{state=\"pending\"}", t.pending as u64),
        ],
    );
    metric(
        "sori_ice_tcp_connections_total",
        "counter",
        "ICE-TCP connections, by outcome: accepted, refused (over the pending cap), rejected (bad or no binding request).",
        &[
            ("{outcome=\"accepted\"}", t.accepted),
            ("{outcome=\"refused\"}", t.refused),
            ("{outcome=\"rejected\"}", t.rejected),
        ],
    );
    metric(
        "sori_ice_tcp_frames_dropped_total",
        "counter",
        "Frames not sent because an ICE-TCP connection's send queue was full.",
        &[("", t.send_dropped)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page for [`distinct_stats`] with 7 rooms and 8 participants: scrapers and dashboards
    /// depend on every name, help text, label and the order.
    const PAGE: &str = "\
# HELP sori_rooms Rooms with at least one participant.
# TYPE sori_rooms gauge
sori_rooms 7
# HELP sori_participants Participants in rooms (signaling connections).
# TYPE sori_participants gauge
sori_participants 8
# HELP sori_turn_allocations Allocations open on the embedded TURN server.
# TYPE sori_turn_allocations gauge
sori_turn_allocations 401
# HELP sori_turn_peers_refused_total TURN permissions, channel bindings and sends refused because the peer is one the relay may not reach.
# TYPE sori_turn_peers_refused_total counter
sori_turn_peers_refused_total 402
# HELP sori_turn_quota_refused_total TURN allocations refused because their credential or client address held its cap.
# TYPE sori_turn_quota_refused_total counter
sori_turn_quota_refused_total 403
# HELP sori_turn_revoked_refused_total TURN requests refused because their credential was revoked.
# TYPE sori_turn_revoked_refused_total counter
sori_turn_revoked_refused_total 404
# HELP sori_turn_revocations Participants whose TURN credentials are revoked now.
# TYPE sori_turn_revocations gauge
sori_turn_revocations 405
# HELP sori_media_rooms Rooms with media at the media server.
# TYPE sori_media_rooms gauge
sori_media_rooms 202
# HELP sori_media_peers Peer connections at the media server.
# TYPE sori_media_peers gauge
sori_media_peers 201
# HELP sori_tracks Published audio and video tracks.
# TYPE sori_tracks gauge
sori_tracks 203
# HELP sori_subscriptions Track deliveries (track, receiver).
# TYPE sori_subscriptions gauge
sori_subscriptions 204
# HELP sori_video_receivers Video track deliveries (track, receiver) by the simulcast layer sent: paused, low, medium, high (high also counts tracks sent without simulcast).
# TYPE sori_video_receivers gauge
sori_video_receivers{layer=\"paused\"} 501
sori_video_receivers{layer=\"low\"} 502
sori_video_receivers{layer=\"medium\"} 503
sori_video_receivers{layer=\"high\"} 504
# HELP sori_layer_switches_total Times a receiver's video track moved to another simulcast layer, or paused or resumed.
# TYPE sori_layer_switches_total counter
sori_layer_switches_total 111
# HELP sori_rtp_received_packets_total RTP packets received from senders.
# TYPE sori_rtp_received_packets_total counter
sori_rtp_received_packets_total 105
# HELP sori_rtp_forwarded_packets_total RTP packets forwarded to receivers.
# TYPE sori_rtp_forwarded_packets_total counter
sori_rtp_forwarded_packets_total 106
# HELP sori_rtp_forwarded_bytes_total RTP payload bytes forwarded to receivers.
# TYPE sori_rtp_forwarded_bytes_total counter
sori_rtp_forwarded_bytes_total 107
# HELP sori_rtp_silent_audio_not_forwarded_total Silent audio packets not forwarded to receivers (media.silence_dbov).
# TYPE sori_rtp_silent_audio_not_forwarded_total counter
sori_rtp_silent_audio_not_forwarded_total 114
# HELP sori_datagrams_received_total UDP datagrams and ICE-TCP frames received on the media port.
# TYPE sori_datagrams_received_total counter
sori_datagrams_received_total 101
# HELP sori_datagrams_dropped_total Datagrams dropped on the media port, by reason.
# TYPE sori_datagrams_dropped_total counter
sori_datagrams_dropped_total{reason=\"unroutable\"} 102
sori_datagrams_dropped_total{reason=\"malformed\"} 103
sori_datagrams_dropped_total{reason=\"rejected\"} 104
# HELP sori_ice_tcp_connections ICE-TCP media connections: open (answered by a peer) or pending.
# TYPE sori_ice_tcp_connections gauge
sori_ice_tcp_connections{state=\"open\"} 301
sori_ice_tcp_connections{state=\"pending\"} 302
# HELP sori_ice_tcp_connections_total ICE-TCP connections, by outcome: accepted, refused (over the pending cap), rejected (bad or no binding request).
# TYPE sori_ice_tcp_connections_total counter
sori_ice_tcp_connections_total{outcome=\"accepted\"} 303
sori_ice_tcp_connections_total{outcome=\"refused\"} 304
sori_ice_tcp_connections_total{outcome=\"rejected\"} 305
# HELP sori_ice_tcp_frames_dropped_total Frames not sent because an ICE-TCP connection's send queue was full.
# TYPE sori_ice_tcp_frames_dropped_total counter
sori_ice_tcp_frames_dropped_total 306
# HELP sori_keyframe_requests_total Keyframe requests sent to senders.
# TYPE sori_keyframe_requests_total counter
sori_keyframe_requests_total 108
# HELP sori_participants_joined_total Participants that joined.
# TYPE sori_participants_joined_total counter
sori_participants_joined_total 109
# HELP sori_participants_removed_total Participants removed, for any reason.
# TYPE sori_participants_removed_total counter
sori_participants_removed_total 110
# HELP sori_ice_restarts_total ICE restarts participants made: a new network path on the same media connection.
# TYPE sori_ice_restarts_total counter
sori_ice_restarts_total 112
# HELP sori_ice_stalls_total Connected participants from which nothing arrived for 4 s, asked to restart ICE.
# TYPE sori_ice_stalls_total counter
sori_ice_stalls_total 113
";

    /// Every field the page shows, each with a value of its own.
    fn distinct_stats() -> (MediaStats, TurnStats) {
        let mut stats = MediaStats::default();
        let c = &mut stats.counters;
        c.datagrams_received = 101;
        c.datagrams_unroutable = 102;
        c.datagrams_malformed = 103;
        c.datagrams_rejected = 104;
        c.rtp_received = 105;
        c.rtp_forwarded_packets = 106;
        c.rtp_forwarded_bytes = 107;
        c.keyframe_requests_sent = 108;
        c.peers_joined = 109;
        c.peers_removed = 110;
        c.layer_switches = 111;
        c.ice_restarts = 112;
        c.ice_stalls = 113;
        c.rtp_silence_not_forwarded = 114;
        let s = &mut stats.state;
        s.peers = 201;
        s.rooms = 202;
        s.tracks = 203;
        s.subscriptions = 204;
        let t = &mut stats.tcp;
        t.open = 301;
        t.pending = 302;
        t.accepted = 303;
        t.refused = 304;
        t.rejected = 305;
        t.send_dropped = 306;
        let l = &mut stats.layers;
        l.paused = 501;
        l.low = 502;
        l.medium = 503;
        l.high = 504;
        let turn = TurnStats {
            allocations: 401,
            peers_refused: 402,
            quota_refused: 403,
            revoked_refused: 404,
            revocations: 405,
        };
        (stats, turn)
    }

    #[test]
    fn the_page_keeps_its_exact_text() {
        let (stats, turn) = distinct_stats();
        assert_eq!(render(7, 8, Some(&stats), Some(&turn)), PAGE);
    }

    #[test]
    fn every_sample_line_parses_as_name_labels_value() {
        let mut stats = MediaStats::default();
        stats.counters.rtp_forwarded_packets = 42;
        stats.counters.datagrams_malformed = 3;
        stats.state.rooms = 1;
        stats.tcp.open = 2;
        stats.tcp.rejected = 5;
        stats.layers.medium = 6;
        stats.counters.layer_switches = 9;
        let turn = TurnStats {
            allocations: 4,
            peers_refused: 7,
            quota_refused: 5,
            revoked_refused: 2,
            revocations: 1,
        };
        let text = render(2, 3, Some(&stats), Some(&turn));
        let sessions_only = render(2, 3, None, None);
        assert!(sessions_only.contains("sori_participants 3\n"));
        assert!(!sessions_only.contains("sori_media_rooms"));
        assert!(!sessions_only.contains("sori_turn_"));
        assert!(text.contains("sori_turn_allocations 4\n"));
        assert!(text.contains("sori_turn_peers_refused_total 7\n"));
        assert!(text.contains("sori_turn_quota_refused_total 5\n"));
        assert!(text.contains("sori_turn_revoked_refused_total 2\n"));
        assert!(text.contains("sori_turn_revocations 1\n"));
        assert!(text.contains("sori_rtp_forwarded_packets_total 42\n"));
        assert!(text.contains("sori_datagrams_dropped_total{reason=\"malformed\"} 3\n"));
        assert!(text.contains("sori_rooms 2\n"));
        assert!(text.contains("sori_participants 3\n"));
        assert!(text.contains("sori_media_rooms 1\n"));
        assert!(text.contains("sori_ice_tcp_connections{state=\"open\"} 2\n"));
        assert!(text.contains("sori_ice_tcp_connections_total{outcome=\"rejected\"} 5\n"));
        assert!(text.contains("sori_video_receivers{layer=\"medium\"} 6\n"));
        assert!(text.contains("sori_video_receivers{layer=\"paused\"} 0\n"));
        assert!(text.contains("sori_layer_switches_total 9\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("sori_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }
}

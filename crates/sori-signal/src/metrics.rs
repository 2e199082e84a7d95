//! `/metrics` in the Prometheus text format.

use std::fmt::Write;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sori_net::MediaStats;
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
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
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
    let Some(stats) = stats else {
        return out;
    };
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
    let t = &stats.tcp;
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_parses_as_name_labels_value() {
        let mut stats = MediaStats::default();
        stats.counters.rtp_forwarded_packets = 42;
        stats.counters.datagrams_malformed = 3;
        stats.state.rooms = 1;
        stats.tcp.open = 2;
        stats.tcp.rejected = 5;
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
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("sori_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }
}

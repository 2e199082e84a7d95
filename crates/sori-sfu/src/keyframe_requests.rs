//! Keyframe requests toward publishers: every request for a track passes its throttle
//! ([`crate::throttle`]); one the throttle holds back goes out when the peer's keyframe timer
//! fires.

use std::collections::HashMap;
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, Mid, Rid};

use crate::error::SfuError;
use crate::id::{MediaKind, PeerId, TrackId};
use crate::output::{RemoveReason, SfuEvent};
use crate::peer::Peer;
use crate::report::Counters;
use crate::room::Track;
use crate::routing::Switchboard;
use crate::sfu::Sfu;
use crate::throttle::Urgency;
use crate::timers::Timer;

impl Sfu {
    /// Asks the sources of every video track `peer` receives for a keyframe (throttled like
    /// every other request).
    pub fn request_keyframe(&mut self, peer: PeerId, now: Instant) -> Result<(), SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer(peer))?;
        let sources: Vec<(TrackId, u8)> = p
            .out
            .values()
            .filter(|o| o.kind == MediaKind::Video)
            .filter_map(|o| Some((o.source, o.gate.target?)))
            .collect();
        for (track, layer) in sources {
            self.request_keyframe_of(track, layer, KeyframeRequestKind::Pli, Urgency::Repair, now);
        }
        self.process(now);
        Ok(())
    }

    /// A keyframe is wanted on `layer` of `track`; goes upstream at most once per interval
    /// (per layer).
    pub(crate) fn request_keyframe_of(
        &mut self,
        track_id: TrackId,
        layer: u8,
        kind: KeyframeRequestKind,
        urgency: Urgency,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        if track.imported {
            // The core that has the publisher throttles again and keeps what it holds back;
            // a request held here is asked again by the receiver still waiting.
            if track
                .layers
                .get_mut(layer as usize)
                .is_some_and(|source| source.throttle.request(urgency, now))
            {
                self.events.push_back(SfuEvent::RelayKeyframeRequest {
                    track: track_id,
                    layer,
                    urgency,
                });
            }
            return;
        }
        let Some(publisher) = self.peers.get_mut(&track.publisher) else {
            return;
        };
        let mid = track.mid;
        let Some(source) = track.layers.get_mut(layer as usize) else {
            return;
        };
        if source.throttle.request(urgency, now) {
            send_keyframe_request(
                publisher,
                (mid, source.rid),
                kind,
                &mut self.board,
                &mut self.counters,
            );
        } else if let Some(due) = source.throttle.poll_timeout() {
            arm_keyframe_retry(publisher, due);
            if let Some(at) = publisher.timers.next() {
                self.board.timers.set(publisher.id, at);
            }
        }
    }
}

fn send_keyframe_request(
    peer: &mut Peer,
    (mid, rid): (Mid, Option<Rid>),
    kind: KeyframeRequestKind,
    board: &mut Switchboard,
    counters: &mut Counters,
) {
    let sent = peer.mutate(|rtc| match rtc.direct_api().stream_rx_by_mid(mid, rid) {
        Some(rx) => {
            rx.request_keyframe(kind);
            true
        }
        None => false,
    });
    match sent {
        Ok(true) => {
            tracing::debug!(id = %peer.id, %mid, ?rid, ?kind, "keyframe request");
            counters.keyframe_requests_sent += 1
        }
        Ok(false) => {}
        Err(e) => board.doomed.push((peer.id, RemoveReason::Failed(e))),
    }
    board.settle(peer);
}

/// The peer's keyframe retry timer fired: each of its tracks whose throttle now lets a held
/// request through sends it; the others arm the timer again. The peer is settled by the caller.
pub(crate) fn retry_keyframe_requests(
    peer: &mut Peer,
    tracks: &mut HashMap<TrackId, Track>,
    board: &mut Switchboard,
    counters: &mut Counters,
    now: Instant,
) {
    if !peer.timers.is_expired(Timer::KeyframeRetry, now) {
        return;
    }
    peer.timers.stop(Timer::KeyframeRetry);
    let published: Vec<(Mid, TrackId)> = peer.published.iter().map(|(m, t)| (*m, *t)).collect();
    for (mid, track_id) in published {
        let Some(track) = tracks.get_mut(&track_id) else {
            continue;
        };
        for layer in &mut track.layers {
            if layer.throttle.handle_timeout(now) {
                let stream = (mid, layer.rid);
                send_keyframe_request(peer, stream, KeyframeRequestKind::Pli, board, counters);
            } else if let Some(due) = layer.throttle.poll_timeout() {
                arm_keyframe_retry(peer, due);
            }
        }
    }
}

/// Makes the peer's keyframe retry timer fire by `due`.
fn arm_keyframe_retry(peer: &mut Peer, due: Instant) {
    let at = peer
        .timers
        .get(Timer::KeyframeRetry)
        .map_or(due, |t| t.min(due));
    peer.timers.set(Timer::KeyframeRetry, at);
}

//! Negotiation: a peer's first offer or the core's, the client's later offers and answers, and
//! the core's own offers that bring a peer's m-lines in line with the tracks it should receive.

use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, Mid};

use crate::error::{codec_error, SfuError};
use crate::id::{MediaKind, PeerId, TrackId};
use crate::keyframe::VideoCodec;
use crate::output::{RemoveReason, SfuEvent};
use crate::peer::{OutTrack, Peer, PendingOffer};
use crate::room::Forwarding;
use crate::sdp::video_offer;
use crate::sfu::Sfu;
use crate::throttle::Urgency;

/// One m-line of an offer the core makes ([`Sfu::offer_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferLine {
    /// Audio or video.
    pub kind: MediaKind,
    /// The core receives the client's media on it.
    pub receive: bool,
    /// The core sends media to the client on it.
    pub send: bool,
}

impl Sfu {
    /// A new peer joins `room` with its first SDP offer; returns its id and the answer.
    ///
    /// The peer then receives every track of the room; the core's offer for them follows as
    /// an [`SfuEvent::Offer`], to be delivered after this answer.
    pub fn join(
        &mut self,
        room: &str,
        offer: &str,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.join_with(room, offer, Forwarding::Automatic, now)
    }

    /// [`Sfu::join`] into a room with the given forwarding; a room keeps the forwarding of
    /// its first peer, and a join asking for the other one is refused.
    pub fn join_with(
        &mut self,
        room: &str,
        offer: &str,
        forwarding: Forwarding,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.join_as(room, offer, forwarding, true, now)
    }

    /// [`Sfu::join_with`] for a peer that receives the room's tracks only when `receive` is
    /// true; a peer that may not subscribe is never offered anything.
    pub fn join_as(
        &mut self,
        room: &str,
        offer: &str,
        forwarding: Forwarding,
        receive: bool,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.check_forwarding(room, forwarding)?;
        let room_video = self.rooms.get(room).and_then(|r| r.video);
        let (codecs, chosen) = self.video_codecs_for(room_video, offer)?;
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;

        let id = PeerId(self.next_id);
        let mut peer = Peer::new(id, room.to_string(), &codecs, &self.cert, &self.config, now);
        peer.receives = receive;
        let answer = match peer.mutate(|rtc| rtc.sdp_api().accept_offer(parsed)) {
            Ok(Ok(answer)) => {
                let sdp = answer.to_sdp_string();
                record_lines(&mut peer, &sdp);
                peer.note_congestion_control(&sdp, now);
                sdp
            }
            Ok(Err(e)) => return Err(SfuError::Rejected(e.to_string())),
            Err(e) => return Err(SfuError::Rejected(e)),
        };
        self.admit(peer, forwarding, chosen);
        tracing::debug!(%id, room, "peer joined");
        self.renegotiate.insert(id);
        self.process(now);
        Ok((id, answer))
    }

    /// A new peer whose session the core offers: one m-line per entry of `lines` (`receive`:
    /// the core receives the client's media on it; `send`: it sends media to the client). The
    /// client's answer goes to [`Sfu::accept_answer`]. The offer names one video codec: the
    /// room's, or the first configured one for a new room.
    pub fn offer_with(
        &mut self,
        room: &str,
        forwarding: Forwarding,
        lines: &[OfferLine],
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        self.check_forwarding(room, forwarding)?;
        let video = self
            .rooms
            .get(room)
            .and_then(|r| r.video)
            .or_else(|| self.config.video_codecs.first().copied())
            .ok_or_else(|| SfuError::Rejected("no video codec is configured".into()))?;
        let id = PeerId(self.next_id);
        let mut peer = Peer::new(
            id,
            room.to_string(),
            &[video],
            &self.cert,
            &self.config,
            now,
        );
        let result = peer.mutate(|rtc| {
            let mut api = rtc.sdp_api();
            for line in lines {
                let direction = match (line.receive, line.send) {
                    (true, true) => Direction::SendRecv,
                    (true, false) => Direction::RecvOnly,
                    (false, true) => Direction::SendOnly,
                    (false, false) => Direction::Inactive,
                };
                api.add_media(line.kind.into(), direction, None, None, None);
            }
            api.apply()
        });
        let (offer, pending) = match result {
            Ok(Some(pair)) => pair,
            Ok(None) => {
                return Err(SfuError::Rejected(
                    "an offer needs at least one m-line".into(),
                ))
            }
            Err(e) => return Err(SfuError::Rejected(e)),
        };
        let sdp = offer.to_sdp_string();
        record_lines(&mut peer, &sdp);
        peer.pending = Some(PendingOffer {
            pending,
            added: Vec::new(),
        });
        let has_video = lines.iter().any(|l| l.kind == MediaKind::Video);
        self.admit(peer, forwarding, has_video.then_some(video));
        tracing::debug!(%id, room, "peer offered");
        self.process(now);
        Ok((id, sdp))
    }

    /// A new offer from an existing peer (it added or stopped tracks). If the core's own
    /// offer was outstanding, it is dropped (the core is the polite side) and made again.
    pub fn accept_offer(
        &mut self,
        id: PeerId,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let peer = self.peers.get(&id).ok_or(SfuError::UnknownPeer(id))?;
        let room_video = self.rooms.get(&peer.room).and_then(|r| r.video);
        if let Some(video) = room_video {
            let offered = video_offer(offer);
            if offered.has_video && !offered.codecs.contains(&video) {
                return Err(codec_error(&[video], &offered.codecs));
            }
        }
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        if peer.pending.take().is_some() {
            tracing::debug!(%id, "offer collision: dropping the core's offer");
        }
        let result = peer.mutate(|rtc| rtc.sdp_api().accept_offer(parsed));
        self.board.settle(peer);
        self.renegotiate.insert(id);
        let answer = match result {
            Ok(Ok(answer)) => {
                let sdp = answer.to_sdp_string();
                record_lines(peer, &sdp);
                peer.note_congestion_control(&sdp, now);
                // New credentials in the offer: the client restarted ICE, and str0m answered
                // with new local ones. Requests naming them reach this same peer.
                let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
                if ufrag != peer.ufrag {
                    tracing::debug!(%id, "ICE restart");
                    self.counters.ice_restarts += 1;
                    self.by_ufrag.insert(ufrag.clone(), id);
                    let old = std::mem::replace(&mut peer.ufrag, ufrag);
                    if let Some(older) = peer.retired_ufrag.replace(old) {
                        self.by_ufrag.remove(&older);
                    }
                }
                Ok(sdp)
            }
            Ok(Err(e)) => Err(SfuError::Rejected(e.to_string())),
            Err(e) => {
                self.board
                    .doomed
                    .push((id, RemoveReason::Failed(e.clone())));
                Err(SfuError::Rejected(e))
            }
        };
        self.process(now);
        answer
    }

    /// The peer's answer to the core's last [`SfuEvent::Offer`].
    pub fn accept_answer(
        &mut self,
        id: PeerId,
        answer: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        if peer.pending.is_none() {
            return Err(SfuError::NoPendingOffer);
        }
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // Checked above; the unwrap cannot fail.
        let PendingOffer { pending, added } = peer.pending.take().expect("pending offer");
        let result = peer.mutate(|rtc| rtc.sdp_api().accept_answer(pending, parsed));
        self.board.settle(peer);
        // Whatever happened, the core brings the peer to its desired state again.
        self.renegotiate.insert(id);
        let outcome = match result {
            Ok(Ok(())) => {
                peer.note_congestion_control(answer, now);
                Ok(())
            }
            Ok(Err(e)) => Err(SfuError::Rejected(e.to_string())),
            Err(e) => {
                self.board
                    .doomed
                    .push((id, RemoveReason::Failed(e.clone())));
                Err(SfuError::Rejected(e))
            }
        };
        if outcome.is_ok() {
            for (mid, track_id) in added {
                self.start_subscription(id, mid, track_id, now);
            }
            // m-lines the core itself offered for receiving raise no MediaAdded: they are
            // published here.
            let receiving: Vec<(Mid, MediaKind)> = self
                .peers
                .get(&id)
                .map(|p| {
                    p.lines
                        .iter()
                        .filter(|(mid, _)| {
                            !p.published.contains_key(mid)
                                && !p.out.contains_key(mid)
                                && p.rtc
                                    .media(*mid)
                                    .is_some_and(|m| m.direction().is_receiving())
                        })
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for (mid, kind) in receiving {
                self.publish(id, mid, kind);
            }
        }
        self.process(now);
        outcome
    }

    /// Video codecs the new peer's session offers, and the room codec its offer settles on.
    pub(crate) fn video_codecs_for(
        &self,
        room_video: Option<VideoCodec>,
        offer: &str,
    ) -> Result<(Vec<VideoCodec>, Option<VideoCodec>), SfuError> {
        let offered = video_offer(offer);
        match room_video {
            Some(v) if offered.has_video && !offered.codecs.contains(&v) => {
                Err(codec_error(&[v], &offered.codecs))
            }
            Some(v) => Ok((vec![v], Some(v))),
            None if offered.has_video => {
                let choice = self
                    .config
                    .video_codecs
                    .iter()
                    .find(|c| offered.codecs.contains(c));
                match choice {
                    Some(v) => Ok((vec![*v], Some(*v))),
                    None => Err(codec_error(&self.config.video_codecs, &offered.codecs)),
                }
            }
            // No video sent and no room codec yet: able to receive any of them.
            None => Ok((self.config.video_codecs.clone(), None)),
        }
    }

    /// Brings the peer's outgoing m-lines in line with the tracks it should receive, with a
    /// new offer when anything changed. Waits while an offer is outstanding.
    pub(crate) fn negotiate(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.pending.is_some() {
            return;
        }
        let tracks = &self.tracks;
        peer.desired.retain(|t| tracks.contains_key(t));
        let stale: Vec<Mid> = peer
            .out
            .iter()
            .filter(|(_, o)| !o.pinned && !peer.desired.contains(&o.source))
            .map(|(mid, _)| *mid)
            .collect();
        let missing: Vec<(TrackId, MediaKind, PeerId)> = peer
            .desired
            .iter()
            .filter(|t| !peer.out.values().any(|o| !o.pinned && o.source == **t))
            .filter_map(|t| tracks.get(t).map(|tr| (*t, tr.kind, tr.publisher)))
            .collect();
        if stale.is_empty() && missing.is_empty() {
            return;
        }
        for mid in &stale {
            if let Some(out) = peer.out.remove(mid) {
                if let Some(t) = self.tracks.get_mut(&out.source) {
                    t.subscribers.retain(|(p, _)| *p != id);
                }
            }
        }
        let result = peer.mutate(|rtc| {
            let mut api = rtc.sdp_api();
            for mid in &stale {
                api.stop_media(*mid);
            }
            let added: Vec<(Mid, TrackId)> = missing
                .iter()
                .map(|(track, kind, publisher)| {
                    let mid = api.add_media(
                        (*kind).into(),
                        Direction::SendOnly,
                        Some(publisher.to_string()),
                        Some(track.to_string()),
                        None,
                    );
                    (mid, *track)
                })
                .collect();
            api.apply()
                .map(|(offer, pending)| (offer.to_sdp_string(), PendingOffer { pending, added }))
        });
        match result {
            Ok(Some((sdp, pending))) => {
                peer.pending = Some(pending);
                self.events.push_back(SfuEvent::Offer { peer: id, sdp });
            }
            Ok(None) => {}
            Err(e) => self.board.doomed.push((id, RemoveReason::Failed(e))),
        }
        self.board.settle(peer);
    }

    /// An m-line the peer accepted starts carrying `track`.
    pub(crate) fn start_subscription(
        &mut self,
        id: PeerId,
        mid: Mid,
        track_id: TrackId,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            // The track went while the offer was out; the next negotiation stops the m-line.
            peer.out
                .insert(mid, OutTrack::new(track_id, MediaKind::Audio));
            return;
        };
        peer.out.insert(mid, OutTrack::new(track_id, track.kind));
        if peer.desired.contains(&track_id) {
            track.subscribers.push((id, mid));
            if track.kind == MediaKind::Video {
                self.allocate_layers(id, now);
                let layer = self
                    .peers
                    .get(&id)
                    .filter(|p| p.connected)
                    .and_then(|p| p.out.get(&mid)?.gate.target);
                if let Some(layer) = layer {
                    let pli = KeyframeRequestKind::Pli;
                    self.request_keyframe_of(track_id, layer, pli, Urgency::Start, now);
                }
            }
        }
    }
}

/// Notes the m-lines of a session description the peer agreed to, in order (str0m reports them
/// only once the peer connects).
pub(crate) fn record_lines(peer: &mut Peer, sdp: &str) {
    let mut kind = None;
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            kind = match m.split(' ').next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
        } else if let (Some(mid), Some(k)) = (line.strip_prefix("a=mid:"), kind) {
            let mid = Mid::from(mid);
            if !peer.lines.iter().any(|(m, _)| *m == mid) {
                peer.lines.push((mid, k));
            }
        }
    }
}

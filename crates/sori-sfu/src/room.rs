//! Rooms and their tracks: peers come in and go, tracks are published and unpublished, and
//! in a room with automatic forwarding every member subscribes to every other member's tracks.

use std::collections::BTreeSet;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt, Rid, Rids};

use crate::error::SfuError;
use crate::id::{MediaKind, PeerId, TapId, TrackId};
use crate::keyframe::VideoCodec;
use crate::output::{RemoveReason, SfuEvent};
use crate::peer::Peer;
use crate::relay::RelayId;
use crate::rewrite::StreamRewriter;
use crate::sfu::Sfu;
use crate::simulcast::gate::LayerGate;
use crate::simulcast::policy::Priority;
use crate::simulcast::source::{rank_rids, SourceLayer, MAX_LAYERS};
use crate::throttle::KeyframeThrottle;

/// How a room decides who receives what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// Every peer receives every other peer's tracks; the core adds m-lines and offers them.
    #[default]
    Automatic,
    /// Nobody receives anything until the application feeds a track into one of the
    /// receiver's own m-lines with [`Sfu::feed`]; the core never renegotiates on its own.
    Manual,
}

pub(crate) struct Room {
    pub(crate) forwarding: Forwarding,
    pub(crate) peers: BTreeSet<PeerId>,
    pub(crate) tracks: BTreeSet<TrackId>,
    pub(crate) video: Option<VideoCodec>,
}

pub(crate) struct Track {
    /// Its publisher; for an imported track, a peer of the core it came from.
    pub(crate) publisher: PeerId,
    /// The track's packets come from another core ([`Sfu::import`]), not from a local peer.
    pub(crate) imported: bool,
    /// Cores this track's packets go to ([`Sfu::export`]).
    pub(crate) exports: Vec<RelayId>,
    pub(crate) room: String,
    pub(crate) mid: Mid,
    pub(crate) kind: MediaKind,
    pub(crate) codec: Option<VideoCodec>,
    pub(crate) subscribers: Vec<(PeerId, Mid)>,
    pub(crate) taps: Vec<TrackTap>,
    /// Its encodings, lowest first: one, or one per simulcast `rid`.
    pub(crate) layers: Vec<SourceLayer>,
    /// Receivers' bandwidth goes to screen shares first.
    pub(crate) priority: Priority,
    pub(crate) params: Vec<(Pt, PayloadParams)>,
}

/// A tap on a track: one layer of it (the highest that arrives), numbered as one stream.
pub(crate) struct TrackTap {
    pub(crate) id: TapId,
    pub(crate) gate: LayerGate,
    pub(crate) rewriter: StreamRewriter,
}

impl Track {
    /// The index of the layer sent with `rid` (a packet without one belongs to the lowest).
    pub(crate) fn layer_of(&self, rid: Option<Rid>) -> Option<u8> {
        match rid {
            None => Some(0),
            Some(rid) => self
                .layers
                .iter()
                .position(|l| l.rid == Some(rid))
                .map(|i| i as u8),
        }
    }

    /// The highest layer.
    pub(crate) fn top(&self) -> u8 {
        self.layers.len().saturating_sub(1) as u8
    }

    /// Whether packets of layer `layer` arrive now ([`crate::simulcast::source::arrives`]).
    pub(crate) fn arrives(&self, layer: u8, now: Instant) -> bool {
        crate::simulcast::source::arrives(&self.layers, layer as usize, now)
    }
}

impl Sfu {
    pub(crate) fn check_forwarding(
        &self,
        room: &str,
        forwarding: Forwarding,
    ) -> Result<(), SfuError> {
        match self.rooms.get(room) {
            Some(r) if r.forwarding != forwarding => Err(SfuError::Rejected(format!(
                "room {room} uses {:?} forwarding",
                r.forwarding
            ))),
            _ => Ok(()),
        }
    }

    /// Puts a new peer into its room (created with `forwarding` if new; its video codec set
    /// from `video` if it has none yet) and into the routing tables.
    pub(crate) fn admit(
        &mut self,
        mut peer: Peer,
        forwarding: Forwarding,
        video: Option<VideoCodec>,
    ) {
        let id = peer.id;
        self.next_id += 1;
        self.counters.peers_joined += 1;
        let room_state = self.rooms.entry(peer.room.clone()).or_insert_with(|| Room {
            forwarding,
            peers: BTreeSet::new(),
            tracks: BTreeSet::new(),
            video: None,
        });
        if room_state.video.is_none() {
            room_state.video = video;
        }
        room_state.peers.insert(id);
        if forwarding == Forwarding::Automatic && peer.receives {
            peer.desired = room_state.tracks.clone();
        }
        self.by_ufrag.insert(peer.ufrag.clone(), id);
        self.board.settle(&mut peer);
        self.peers.insert(id, peer);
    }

    /// The peer leaves; it is removed at once and the others renegotiate.
    pub fn leave(&mut self, id: PeerId, now: Instant) -> Result<(), SfuError> {
        if !self.peers.contains_key(&id) {
            return Err(SfuError::UnknownPeer(id));
        }
        self.board.doomed.push((id, RemoveReason::Left));
        self.process(now);
        Ok(())
    }

    /// Makes `id` receive `track` (rooms do this for every track automatically).
    pub fn subscribe(&mut self, id: PeerId, track: TrackId, now: Instant) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        let t = self
            .tracks
            .get(&track)
            .ok_or_else(|| SfuError::Rejected(format!("unknown {track}")))?;
        if t.publisher == id || t.room != peer.room {
            return Err(SfuError::Rejected(format!(
                "{id} cannot subscribe to {track}"
            )));
        }
        if peer.desired.insert(track) {
            self.renegotiate.insert(id);
            self.process(now);
        }
        Ok(())
    }

    /// Stops `track` toward `id`: forwarding stops now, the m-line goes in the next offer.
    pub fn unsubscribe(
        &mut self,
        id: PeerId,
        track: TrackId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer(id))?;
        if peer.desired.remove(&track) {
            if let Some(t) = self.tracks.get_mut(&track) {
                t.subscribers.retain(|(p, _)| *p != id);
            }
            self.renegotiate.insert(id);
            self.process(now);
        }
        Ok(())
    }

    pub(crate) fn publish(&mut self, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&peer.room) else {
            return;
        };
        if peer.published.contains_key(&mid) {
            return;
        }
        let track = TrackId(self.next_id);
        self.next_id += 1;
        peer.published.insert(mid, track);
        room.tracks.insert(track);
        let automatic = room.forwarding == Forwarding::Automatic;
        let codec = (kind == MediaKind::Video).then_some(room.video).flatten();
        let rids: Vec<Rid> = match peer.rtc.media(mid).map(|m| m.rids_rx()) {
            Some(Rids::Specific(rids)) if kind == MediaKind::Video => rank_rids(rids),
            _ => Vec::new(),
        };
        let throttle = || {
            KeyframeThrottle::new(
                self.config.keyframe_request_interval,
                self.config.keyframe_request_on_start_interval,
            )
        };
        let layers: Vec<SourceLayer> = if rids.is_empty() {
            vec![SourceLayer::new(None, throttle())]
        } else {
            rids.into_iter()
                .take(MAX_LAYERS)
                .map(|r| SourceLayer::new(Some(r), throttle()))
                .collect()
        };
        self.tracks.insert(
            track,
            Track {
                publisher: id,
                imported: false,
                exports: Vec::new(),
                room: peer.room.clone(),
                mid,
                kind,
                codec,
                subscribers: Vec::new(),
                taps: Vec::new(),
                layers,
                priority: Priority::Camera,
                params: Vec::new(),
            },
        );
        tracing::debug!(%id, %track, ?kind, layers = self.tracks[&track].layers.len(), "track published");
        self.events.push_back(SfuEvent::TrackPublished {
            peer: id,
            track,
            kind,
        });
        for other in room.peers.iter().filter(|p| automatic && **p != id) {
            if let Some(p) = self.peers.get_mut(other).filter(|p| p.receives) {
                p.desired.insert(track);
                self.renegotiate.insert(*other);
            }
        }
    }

    pub(crate) fn unpublish(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        if let Some(publisher) = self.peers.get_mut(&track.publisher) {
            publisher.published.remove(&track.mid);
            publisher.rx_tracks.retain(|_, (t, _)| *t != track_id);
        }
        if let Some(room) = self.rooms.get_mut(&track.room) {
            room.tracks.remove(&track_id);
            for p in &room.peers {
                if let Some(peer) = self.peers.get_mut(p) {
                    if peer.desired.remove(&track_id) {
                        self.renegotiate.insert(*p);
                    }
                }
            }
        }
        self.events.push_back(SfuEvent::TrackUnpublished {
            peer: track.publisher,
            track: track_id,
        });
    }

    pub(crate) fn remove_peer(&mut self, id: PeerId, reason: RemoveReason) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        tracing::info!(%id, room = peer.room, %reason, "peer removed");
        if reason == RemoveReason::Left {
            // Say goodbye (RTCP BYE, DTLS close_notify) before the session is dropped.
            if peer.mutate(|rtc| rtc.close()).is_ok() {
                self.board.settle(&mut peer);
            }
        }
        self.by_ufrag.remove(&peer.ufrag);
        if let Some(old) = &peer.retired_ufrag {
            self.by_ufrag.remove(old);
        }
        for addr in &peer.addrs {
            if self.board.by_addr.get(addr) == Some(&id) {
                self.board.by_addr.remove(addr);
            }
        }
        self.board.timers.remove(id);
        self.board.work.retain(|(p, _)| *p != id);
        self.board.doomed.retain(|(p, _)| *p != id);
        self.renegotiate.remove(&id);
        let published: Vec<TrackId> = peer.published.values().copied().collect();
        for track in published {
            self.unpublish(track);
        }
        for out in peer.out.values() {
            if let Some(t) = self.tracks.get_mut(&out.source) {
                t.subscribers.retain(|(p, _)| *p != id);
            }
        }
        if let Some(room) = self.rooms.get_mut(&peer.room) {
            room.peers.remove(&id);
            if room.peers.is_empty() {
                // Tracks imported for the room's peers here go with it.
                let imported: Vec<TrackId> = room
                    .tracks
                    .iter()
                    .filter(|t| self.tracks.get(t).is_some_and(|t| t.imported))
                    .copied()
                    .collect();
                for track in imported {
                    self.unpublish(track);
                }
                self.rooms.remove(&peer.room);
            }
        }
        self.counters.peers_removed += 1;
        self.events
            .push_back(SfuEvent::PeerRemoved { peer: id, reason });
    }
}

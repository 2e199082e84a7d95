//! Relays: a track crosses from one core to another, once per core, whatever the number of
//! its receivers there. The core that has the publisher **exports** the track to a relay; the
//! other core **imports** it and forwards it to its own peers of the room as if the publisher
//! were one of them (receivers pick their layers, get keyframes held and requested, are
//! rewritten and paced by their own sessions there).
//!
//! ```text
//!   core A (publisher)                         core B (receivers)
//!   export(track, relay B) ──► poll_relay() ─► relay_in(packet) ─► its subscribers
//!   request_track_keyframe ◄── SfuEvent::RelayKeyframeRequest ◄── a receiver needs one
//! ```
//!
//! The application moves [`RelayPacket`]s and keyframe requests between the cores (another
//! thread, later another machine) and tells each core which tracks to export and import; a
//! core never knows where a relay leads. An exported track sends every layer (the other core
//! picks per receiver), so its publisher keeps encoding every layer while it is exported.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, Rid};
use str0m::rtp::rtcp::SenderInfo;
use str0m::rtp::{RtpHeader, RtpPacket, SeqNo};

use crate::error::SfuError;
use crate::id::{MediaKind, PeerId, TrackId};
use crate::keyframe::VideoCodec;
use crate::output::SfuEvent;
use crate::room::{Forwarding, Track};
use crate::sfu::Sfu;
use crate::simulcast::policy::Priority;
use crate::simulcast::source::{SourceLayer, MAX_LAYERS};
use crate::throttle::{KeyframeThrottle, Urgency};

/// Where exported packets go: a link to another core, named by the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u32);

/// What another core needs to import a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The track (ids are unique across cores: [`SfuConfig::first_id`](crate::SfuConfig::first_id)).
    pub track: TrackId,
    /// Its publisher, a peer of the exporting core.
    pub publisher: PeerId,
    /// The room.
    pub room: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The room's video codec (video only).
    pub codec: Option<VideoCodec>,
    /// Its layers, lowest first: `None` for a single encoding, else each simulcast `rid`.
    pub rids: Vec<Option<Rid>>,
    /// Its priority for receivers' bandwidth.
    pub priority: Priority,
}

/// An RTP packet of a published track as the core forwards it: what it keeps of the packet
/// the publisher's session received.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// Extended sequence number (no wrap-around), as the publisher numbered it.
    pub seq_no: SeqNo,
    /// The RTP header.
    pub header: RtpHeader,
    /// The payload, shared by every copy.
    pub payload: Arc<[u8]>,
    /// When the publisher's packet arrived.
    pub timestamp: Instant,
    /// The publisher's latest sender report for the stream.
    pub last_sender_info: Option<SenderInfo>,
}

impl From<RtpPacket> for MediaPacket {
    fn from(p: RtpPacket) -> Self {
        MediaPacket {
            seq_no: p.seq_no,
            header: p.header,
            payload: p.payload,
            timestamp: p.timestamp,
            last_sender_info: p.last_sender_info,
        }
    }
}

/// One packet of an exported track on its way to the core that imported it.
#[derive(Debug, Clone)]
pub struct RelayPacket {
    /// The relay it goes to.
    pub to: RelayId,
    /// The track.
    pub track: TrackId,
    /// Its layer (index into [`TrackInfo::rids`]).
    pub layer: u8,
    /// The payload type's negotiated parameters at the publisher.
    pub params: PayloadParams,
    /// The packet as the publisher sent it.
    pub packet: MediaPacket,
}

impl Sfu {
    /// What another core needs to import `track` (`None`: not a track of this core's).
    pub fn track_info(&self, track: TrackId) -> Option<TrackInfo> {
        let t = self.tracks.get(&track)?;
        Some(TrackInfo {
            track,
            publisher: t.publisher,
            room: t.room.clone(),
            kind: t.kind,
            codec: t.codec,
            rids: t.layers.iter().map(|l| l.rid).collect(),
            priority: t.priority,
        })
    }

    /// Sends every packet of `track`, every layer, to relay `to` from now on ([`Sfu::poll_relay`]),
    /// and asks its publisher for a keyframe on each layer so that the other side can start.
    pub fn export(&mut self, track: TrackId, to: RelayId, now: Instant) -> Result<(), SfuError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or_else(|| SfuError::Rejected(format!("unknown {track}")))?;
        if t.exports.contains(&to) {
            return Ok(());
        }
        t.exports.push(to);
        let layers = t.layers.len() as u8;
        // Its publisher is told to encode every layer at the next layer tick (`dynacast`).
        for layer in 0..layers {
            self.request_keyframe_of(track, layer, KeyframeRequestKind::Pli, Urgency::Start, now);
        }
        self.process(now);
        Ok(())
    }

    /// Stops sending `track` to relay `to` (unknown tracks and relays are fine).
    pub fn unexport(&mut self, track: TrackId, to: RelayId, now: Instant) {
        if let Some(t) = self.tracks.get_mut(&track) {
            t.exports.retain(|r| *r != to);
            self.process(now);
        }
    }

    /// The next packet for another core.
    pub fn poll_relay(&mut self) -> Option<RelayPacket> {
        self.relayed.pop_front()
    }

    /// Makes a track of another core one of this core's, in its room, which must have a peer
    /// here: every peer of a room with automatic forwarding subscribes to it (and is offered
    /// it), the application may feed it or tap it. Its packets arrive with
    /// [`Sfu::relay_in`]. Importing a track already known changes nothing.
    pub fn import(&mut self, info: TrackInfo, now: Instant) -> Result<(), SfuError> {
        if self.tracks.contains_key(&info.track) {
            return Ok(());
        }
        let Some(room) = self.rooms.get_mut(&info.room) else {
            return Err(SfuError::Rejected(format!(
                "no peer of room {} here to import {}",
                info.room, info.track
            )));
        };
        if info.kind == MediaKind::Video {
            match (room.video, info.codec) {
                (Some(ours), Some(theirs)) if ours != theirs => {
                    return Err(SfuError::Rejected(format!(
                        "{} is {theirs:?}; room {} here is {ours:?}",
                        info.track, info.room
                    )))
                }
                (None, Some(theirs)) => room.video = Some(theirs),
                _ => {}
            }
        }
        if info.rids.is_empty() || info.rids.len() > MAX_LAYERS {
            return Err(SfuError::Rejected(format!(
                "{} has {} layers",
                info.track,
                info.rids.len()
            )));
        }
        room.tracks.insert(info.track);
        let automatic = room.forwarding == Forwarding::Automatic;
        let throttle = || {
            KeyframeThrottle::new(
                self.config.keyframe_request_interval,
                self.config.keyframe_request_on_start_interval,
            )
        };
        let layers = info
            .rids
            .iter()
            .map(|rid| SourceLayer::new(*rid, throttle()))
            .collect();
        self.tracks.insert(
            info.track,
            Track {
                publisher: info.publisher,
                imported: true,
                exports: Vec::new(),
                room: info.room.clone(),
                mid: str0m::media::Mid::from("relay"),
                kind: info.kind,
                codec: info.codec.filter(|_| info.kind == MediaKind::Video),
                subscribers: Vec::new(),
                taps: Vec::new(),
                layers,
                priority: info.priority,
                params: Vec::new(),
            },
        );
        tracing::debug!(track = %info.track, room = info.room, "track imported");
        self.events.push_back(SfuEvent::TrackPublished {
            peer: info.publisher,
            track: info.track,
            kind: info.kind,
        });
        if automatic {
            for p in &room.peers {
                if let Some(peer) = self.peers.get_mut(p).filter(|p| p.receives) {
                    peer.desired.insert(info.track);
                    self.renegotiate.insert(*p);
                }
            }
        }
        self.process(now);
        Ok(())
    }

    /// Removes an imported track, as its publisher's leaving would (unknown tracks are fine;
    /// a track of this core's own is not removed).
    pub fn unimport(&mut self, track: TrackId, now: Instant) {
        if self.tracks.get(&track).is_some_and(|t| t.imported) {
            self.unpublish(track);
            self.process(now);
        }
    }

    /// A packet of an imported track, from the core that exported it.
    pub fn relay_in(&mut self, now: Instant, packet: RelayPacket) {
        let known = self
            .tracks
            .get(&packet.track)
            .is_some_and(|t| t.imported && (packet.layer as usize) < t.layers.len());
        if !known {
            self.counters.relay_unknown += 1;
            return;
        }
        self.counters.rtp_received += 1;
        self.forward_track(
            packet.track,
            packet.layer,
            packet.params,
            packet.packet,
            now,
        );
        self.process(now);
    }

    /// A receiver on another core wants a keyframe of `layer` of `track`
    /// ([`SfuEvent::RelayKeyframeRequest`]): it goes to the publisher through the track's
    /// throttle like a local receiver's.
    pub fn request_track_keyframe(
        &mut self,
        track: TrackId,
        layer: u8,
        urgency: Urgency,
        now: Instant,
    ) -> Result<(), SfuError> {
        if !self.tracks.contains_key(&track) {
            return Err(SfuError::Rejected(format!("unknown {track}")));
        }
        self.request_keyframe_of(track, layer, KeyframeRequestKind::Pli, urgency, now);
        self.process(now);
        Ok(())
    }
}

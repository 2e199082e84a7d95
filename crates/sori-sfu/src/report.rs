//! What the application reads about the core: running totals, the sizes of its state, a peer's
//! m-lines and packet flow, the rooms.

use std::collections::BTreeMap;

use crate::id::{MediaKind, PeerId, TrackId};
use crate::sfu::Sfu;

/// One m-line of a peer's session, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// The m-line's `a=mid`.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The core sends on it (the client receives).
    pub sends: bool,
    /// The track the client publishes on it, if it sends.
    pub published: Option<TrackId>,
    /// The track the core forwards into it.
    pub fed_by: Option<TrackId>,
    /// The core added it to carry a subscription (not one of the client's own m-lines).
    pub managed: bool,
}

/// RTP packets a peer sent to the core and received from it, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerFlow {
    /// From the peer: audio packets.
    pub audio_in: u64,
    /// From the peer: video packets.
    pub video_in: u64,
    /// To the peer: audio packets.
    pub audio_out: u64,
    /// To the peer: video packets.
    pub video_out: u64,
}

/// Running totals, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handed to [`Sfu::handle_datagram`].
    pub datagrams_received: u64,
    /// Dropped: from an unknown address and not a binding request for a known peer.
    pub datagrams_unroutable: u64,
    /// Relayed packets dropped: their track is not imported here (any more).
    pub relay_unknown: u64,
    /// Dropped: not STUN, DTLS, RTP or RTCP.
    pub datagrams_malformed: u64,
    /// Routed to a peer whose session rejected them.
    pub datagrams_rejected: u64,
    /// RTP packets received from publishers.
    pub rtp_received: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded_packets: u64,
    /// Payload bytes of those packets.
    pub rtp_forwarded_bytes: u64,
    /// Video packets not sent to a subscriber still waiting for a keyframe.
    pub rtp_held_for_keyframe: u64,
    /// Packets a subscriber could not take (it negotiated no matching codec).
    pub rtp_codec_mismatch: u64,
    /// Packets of a publisher the server muted, forwarded to no one.
    pub rtp_dropped_muted: u64,
    /// Silent audio packets not forwarded ([`crate::SfuConfig::silence_dbov`]), counted once
    /// per packet (not per receiver).
    pub rtp_silence_not_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Times a receiver's video track moved to another simulcast layer (or paused, or
    /// resumed).
    pub layer_switches: u64,
    /// Peers that joined.
    pub peers_joined: u64,
    /// Peers removed, for any reason.
    pub peers_removed: u64,
    /// ICE restarts the clients made (offers with new credentials).
    pub ice_restarts: u64,
    /// Connected peers reported silent ([`crate::SfuEvent::IceStalled`]).
    pub ice_stalls: u64,
}

/// Sizes of the core's state, to check that nothing outlives its peer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoreState {
    /// Peers.
    pub peers: usize,
    /// Rooms with at least one peer.
    pub rooms: usize,
    /// Published tracks.
    pub tracks: usize,
    /// (track, subscriber) forwarding entries.
    pub subscriptions: usize,
    /// ICE ufrag routing entries.
    pub ufrag_routes: usize,
    /// Remote-address routing entries.
    pub addr_routes: usize,
    /// Scheduled deadlines.
    pub timers: usize,
}

impl Counters {
    /// Adds another core's counters to these (cores side by side: one total).
    pub fn absorb(&mut self, other: &Counters) {
        self.datagrams_received += other.datagrams_received;
        self.datagrams_unroutable += other.datagrams_unroutable;
        self.relay_unknown += other.relay_unknown;
        self.datagrams_malformed += other.datagrams_malformed;
        self.datagrams_rejected += other.datagrams_rejected;
        self.rtp_received += other.rtp_received;
        self.rtp_forwarded_packets += other.rtp_forwarded_packets;
        self.rtp_forwarded_bytes += other.rtp_forwarded_bytes;
        self.rtp_held_for_keyframe += other.rtp_held_for_keyframe;
        self.rtp_codec_mismatch += other.rtp_codec_mismatch;
        self.rtp_dropped_muted += other.rtp_dropped_muted;
        self.rtp_silence_not_forwarded += other.rtp_silence_not_forwarded;
        self.keyframe_requests_sent += other.keyframe_requests_sent;
        self.layer_switches += other.layer_switches;
        self.peers_joined += other.peers_joined;
        self.peers_removed += other.peers_removed;
        self.ice_restarts += other.ice_restarts;
        self.ice_stalls += other.ice_stalls;
    }
}

impl CoreState {
    /// Adds another core's sizes to these.
    pub fn absorb(&mut self, other: &CoreState) {
        self.peers += other.peers;
        self.rooms += other.rooms;
        self.tracks += other.tracks;
        self.subscriptions += other.subscriptions;
        self.ufrag_routes += other.ufrag_routes;
        self.addr_routes += other.addr_routes;
        self.timers += other.timers;
    }
}

impl Sfu {
    /// The m-lines of `peer`'s session, in order.
    pub fn media(&self, peer: PeerId) -> Option<Vec<MediaLine>> {
        let p = self.peers.get(&peer)?;
        let lines = p
            .lines
            .iter()
            .map(|(mid, kind)| MediaLine {
                mid: mid.to_string(),
                kind: *kind,
                sends: p
                    .rtc
                    .media(*mid)
                    .is_some_and(|m| m.direction().is_sending()),
                published: p.published.get(mid).copied(),
                fed_by: p.out.get(mid).map(|o| o.source),
                managed: p.out.get(mid).is_some_and(|o| !o.pinned),
            })
            .collect();
        Some(lines)
    }

    /// RTP packets `peer` sent and received so far.
    pub fn flow(&self, peer: PeerId) -> Option<PeerFlow> {
        let p = self.peers.get(&peer)?;
        Some(PeerFlow {
            audio_in: p.packets_in[0],
            video_in: p.packets_in[1],
            audio_out: p.packets_out[0],
            video_out: p.packets_out[1],
        })
    }

    /// Running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Sizes of the core's state.
    pub fn state(&self) -> CoreState {
        CoreState {
            peers: self.peers.len(),
            rooms: self.rooms.len(),
            tracks: self.tracks.len(),
            subscriptions: self.tracks.values().map(|t| t.subscribers.len()).sum(),
            ufrag_routes: self.by_ufrag.len(),
            addr_routes: self.board.by_addr.len(),
            timers: self.board.timers.len(),
        }
    }

    /// Peers per room, for metrics and listings.
    pub fn rooms(&self) -> BTreeMap<String, usize> {
        self.rooms
            .iter()
            .map(|(name, r)| (name.clone(), r.peers.len()))
            .collect()
    }
}

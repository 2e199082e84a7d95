//! The `Sfu`: the state over all peers, its constructor, the output it hands out and the loop
//! that processes the work peers' sessions leave. The rest of its methods live with what they
//! do: [`crate::routing`], [`crate::room`], [`crate::negotiation`], [`crate::forwarding`],
//! [`crate::keyframe_requests`], [`crate::timers`] and [`crate::report`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use str0m::config::DtlsCert;
use str0m::media::KeyframeRequestKind;
use str0m::{Event, IceConnectionState};

use crate::config::SfuConfig;
use crate::id::{MediaKind, PeerId, TrackId};
use crate::output::{RemoveReason, SfuEvent, Transmit};
use crate::peer::Peer;
use crate::relay::RelayPacket;
use crate::report::Counters;
use crate::room::{Room, Track};
use crate::routing::Switchboard;
use crate::throttle::Urgency;
use crate::timers::Timer;

/// The media core. See the crate documentation for the run loop.
pub struct Sfu {
    pub(crate) config: SfuConfig,
    pub(crate) cert: DtlsCert,
    pub(crate) peers: HashMap<PeerId, Peer>,
    pub(crate) rooms: HashMap<String, Room>,
    pub(crate) tracks: HashMap<TrackId, Track>,
    /// Routes a new peer's first binding request by the ICE ufrag it names.
    pub(crate) by_ufrag: HashMap<String, PeerId>,
    /// Peers whose m-lines may need a new offer.
    pub(crate) renegotiate: BTreeSet<PeerId>,
    pub(crate) events: VecDeque<SfuEvent>,
    pub(crate) board: Switchboard,
    pub(crate) counters: Counters,
    pub(crate) next_id: u64,
    /// Packets of exported tracks, for the cores that imported them.
    pub(crate) relayed: VecDeque<RelayPacket>,
}

impl Sfu {
    /// A core with one freshly generated DTLS certificate for all its peers.
    pub fn new(config: SfuConfig) -> Self {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs crypto provider generates certificates");
        let next_id = config.first_id;
        Self {
            config,
            cert,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            tracks: HashMap::new(),
            by_ufrag: HashMap::new(),
            renegotiate: BTreeSet::new(),
            events: VecDeque::new(),
            board: Switchboard::default(),
            counters: Counters::default(),
            next_id,
            relayed: VecDeque::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.board.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// When [`Sfu::handle_timeout`] must be called next (`None`: no peer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.board.timers.next()
    }

    /// Runs queued work until none is left: peer events, removals, renegotiations.
    pub(crate) fn process(&mut self, now: Instant) {
        loop {
            if let Some((id, event)) = self.board.work.pop_front() {
                self.handle_rtc_event(id, event, now);
            } else if let Some((id, reason)) = self.board.doomed.pop() {
                self.remove_peer(id, reason);
            } else if let Some(id) = self.renegotiate.pop_first() {
                self.negotiate(id);
            } else {
                break;
            }
        }
    }

    fn handle_rtc_event(&mut self, id: PeerId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, packet, now),
            Event::KeyframeRequest(req) => {
                let source = self
                    .peers
                    .get(&id)
                    .and_then(|p| p.out.get(&req.mid))
                    .and_then(|o| Some((o.source, o.gate.target?)));
                if let Some((track, layer)) = source {
                    self.request_keyframe_of(track, layer, req.kind, Urgency::Repair, now);
                }
            }
            Event::Connected => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                peer.connected = true;
                // From now on a silence is reported after `ice_stall`.
                peer.stalled = false;
                peer.timers
                    .set(Timer::Idle, peer.last_input + self.config.ice_stall);
                if let Some(at) = peer.timers.next() {
                    self.board.timers.set(id, at);
                }
                tracing::debug!(%id, "connected");
                self.events.push_back(SfuEvent::Connected { peer: id });
                let video: Vec<(TrackId, u8)> = peer
                    .out
                    .values()
                    .filter(|o| o.kind == MediaKind::Video)
                    .filter_map(|o| Some((o.source, o.gate.target?)))
                    .collect();
                for (track, layer) in video {
                    let pli = KeyframeRequestKind::Pli;
                    self.request_keyframe_of(track, layer, pli, Urgency::Start, now);
                }
            }
            Event::MediaAdded(added) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    if !peer.lines.iter().any(|(m, _)| *m == added.mid) {
                        peer.lines.push((added.mid, added.kind.into()));
                    }
                }
                if added.direction.is_receiving() {
                    self.publish(id, added.mid, added.kind.into());
                }
            }
            Event::MediaChanged(changed) => {
                let Some(peer) = self.peers.get(&id) else {
                    return;
                };
                let published = peer.published.get(&changed.mid).copied();
                let kind = peer
                    .rtc
                    .media(changed.mid)
                    .map(|m| MediaKind::from(m.kind()));
                match (changed.direction.is_receiving(), published, kind) {
                    (true, None, Some(kind))
                        if peer.out.get(&changed.mid).is_none_or(|o| o.pinned) =>
                    {
                        self.publish(id, changed.mid, kind)
                    }
                    (false, Some(track), _) => self.unpublish(track),
                    _ => {}
                }
            }
            Event::EgressBitrateEstimate(kind) => self.estimate_event(id, kind, now),
            Event::PeerStats(stats) => self.estimate_stats(id, stats.bwe_tx, now),
            Event::Closed => self.board.doomed.push((id, RemoveReason::DtlsClosed)),
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(%id, ?state, "ICE state");
                let done = matches!(
                    state,
                    IceConnectionState::Connected | IceConnectionState::Completed
                );
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                // A restart completed: the old credentials route nothing any more.
                if let Some(old) = peer.retired_ufrag.take_if(|_| done) {
                    if self.by_ufrag.get(&old) == Some(&id) {
                        self.by_ufrag.remove(&old);
                    }
                }
            }
            _ => {}
        }
    }
}

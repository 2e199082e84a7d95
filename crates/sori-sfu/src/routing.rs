//! Routing: a datagram goes to the peer whose ICE agent answered its source address, or, as a
//! STUN binding request, to the peer whose ICE ufrag it names; a drained peer's output goes to
//! the queues, and the addresses its ICE agent answers enter the routing table.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::media::KeyframeRequestKind;
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input};

use crate::deadline::Deadlines;
use crate::id::{MediaKind, PeerId};
use crate::output::{Proto, RemoveReason, TapPacket, Transmit};
use crate::peer::{Drained, Learned, Peer};
use crate::sfu::Sfu;
use crate::stun;
use crate::throttle::Urgency;
use crate::timers::Timer;

/// Where a drained peer's session output goes and what it changes: the queues of datagrams to
/// send, tapped packets, session events and removals waiting for the core's loop; the table
/// routing remote addresses to peers; and the schedule of every peer's next timer. Kept apart
/// from `peers` and `tracks` so forwarding can hold a track while it drives its subscribers.
#[derive(Default)]
pub(crate) struct Switchboard {
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) tapped: VecDeque<TapPacket>,
    /// Remote address → the peer whose ICE agent answered it.
    pub(crate) by_addr: HashMap<(Proto, SocketAddr), PeerId>,
    /// Each peer's earliest timer.
    pub(crate) timers: Deadlines<PeerId>,
    /// Session events still to be processed.
    pub(crate) work: VecDeque<(PeerId, Event)>,
    /// Peers to remove.
    pub(crate) doomed: Vec<(PeerId, RemoveReason)>,
    scratch_tx: Vec<(Proto, SocketAddr, SocketAddr, Vec<u8>)>,
    scratch_ev: Vec<Event>,
}

impl Switchboard {
    /// Drains `peer` after a mutation and files its output.
    pub(crate) fn settle(&mut self, peer: &mut Peer) {
        let drained = peer.drain(&mut self.scratch_tx, &mut self.scratch_ev);
        for (proto, source, destination, contents) in self.scratch_tx.drain(..) {
            // The ICE agent only answers addresses that proved they know the credentials.
            match peer.learn_addr((proto, destination)) {
                Learned::Known => {}
                Learned::Added => {
                    self.by_addr.entry((proto, destination)).or_insert(peer.id);
                }
                Learned::Replaced(old) => {
                    if self.by_addr.get(&old) == Some(&peer.id) {
                        self.by_addr.remove(&old);
                    }
                    self.by_addr.entry((proto, destination)).or_insert(peer.id);
                }
            }
            self.transmits.push_back(Transmit {
                proto,
                source,
                destination,
                contents,
            });
        }
        for e in self.scratch_ev.drain(..) {
            self.work.push_back((peer.id, e));
        }
        if let Some(at) = peer.timers.next() {
            self.timers.set(peer.id, at);
        }
        if let Drained::Failed(why) = drained {
            self.doomed.push((peer.id, RemoveReason::Failed(why)));
        }
    }
}

impl Sfu {
    /// A datagram arrived on the media port.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.handle_receive(now, Proto::Udp, source, destination, buf);
    }

    /// A datagram, or one frame of an ICE-TCP connection, arrived. For TCP, `source` is the
    /// connection's remote address and `destination` the TCP candidate it was made to.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Proto,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.counters.datagrams_received += 1;
        let (id, known_addr) = match self.board.by_addr.get(&(proto, source)) {
            Some(id) => (*id, true),
            None => match stun::binding_request_ufrag(buf).and_then(|u| self.by_ufrag.get(u)) {
                Some(id) => (*id, false),
                None => {
                    self.counters.datagrams_unroutable += 1;
                    return;
                }
            },
        };
        let protocol = match proto {
            Proto::Udp => Protocol::Udp,
            Proto::Tcp => Protocol::Tcp,
        };
        let Ok(recv) = Receive::new(protocol, source, destination, buf) else {
            self.counters.datagrams_malformed += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.counters.datagrams_unroutable += 1;
            return;
        };
        let mut back = Vec::new();
        if known_addr {
            peer.last_input = now;
            if peer.stalled {
                // Heard from again: the next silence is reported anew.
                peer.stalled = false;
                peer.timers.set(Timer::Idle, now + self.config.ice_stall);
                // Its receivers' keyframe requests went into the silence: every receiver of
                // its video needs a keyframe to show it again, asked for now.
                back.extend(peer.published.values().copied());
            }
        }
        match peer.mutate(|rtc| rtc.handle_input(Input::Receive(now, recv))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.counters.datagrams_rejected += 1;
                tracing::trace!(%id, "datagram rejected: {e}");
            }
            Err(e) => self.board.doomed.push((id, RemoveReason::Failed(e))),
        }
        self.board.settle(peer);
        for track in back {
            let layers = match self.tracks.get(&track) {
                Some(t) if t.kind == MediaKind::Video => t.top(),
                _ => continue,
            };
            for layer in 0..=layers {
                let pli = KeyframeRequestKind::Pli;
                self.request_keyframe_of(track, layer, pli, Urgency::Start, now);
            }
        }
        self.process(now);
    }

    /// The peer a STUN binding request is addressed to (by the ICE ufrag of its USERNAME), if
    /// it is one and the peer exists. Only routing: the peer's ICE agent still checks it.
    pub fn binding_request_peer(&self, buf: &[u8]) -> Option<PeerId> {
        stun::binding_request_ufrag(buf).and_then(|u| self.by_ufrag.get(u).copied())
    }
}

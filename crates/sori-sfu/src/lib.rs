//! # sori-sfu — Sori's media core
//!
//! A selective forwarding unit as a sans-IO state machine, in the style of the str0m `Rtc` it
//! is built on: it owns no socket, thread, task or clock. Everything goes in through method
//! calls carrying an [`Instant`](std::time::Instant), everything comes out through `poll_*`:
//!
//! ```text
//!   join / accept_offer / accept_answer / leave      (signaling, from the session server)
//!   handle_datagram(now, from, to, bytes)            (the one UDP port, from sori-net)
//!   handle_receive(now, Tcp, from, to, frame)        (an ICE-TCP connection's frame)
//!   handle_timeout(now)                              (when poll_timeout() said so)
//!        │
//!        ▼
//!   poll_transmit() → datagrams to send   poll_event() → offers, peer removals, …
//!   poll_timeout()  → when to call handle_timeout next
//! ```
//!
//! After every call, drain `poll_transmit` and `poll_event`, then wait for the next datagram,
//! command or deadline. `sori-net` is the driver that does this with a real UDP socket; the
//! tests drive it the same way.
//!
//! ## What it does
//! - One server-side str0m `Rtc` per peer: ICE-lite, RTP mode, one DTLS certificate for all.
//! - One UDP port for every peer: a new peer's first STUN binding request is routed by the
//!   ICE ufrag it is addressed to; once the peer's ICE agent answered an address, datagrams
//!   from that address go straight to the peer. Anything else is dropped and counted.
//! - ICE restarts: a client's offer with new ICE credentials ([`Sfu::accept_offer`]) gets an
//!   answer with new ones, and their ufrag routes to the same peer; its tracks, subscriptions
//!   and outgoing sequence numbers stay. The old ufrag routes until ICE is connected again. A
//!   connected peer from which nothing arrives for [`SfuConfig::ice_stall`] (an outage, a
//!   network change) is reported with [`SfuEvent::IceStalled`], so that its client restarts
//!   ICE.
//! - ICE-TCP (RFC 6544): with [`SfuConfig::tcp_candidates`] every peer also offers passive TCP
//!   host candidates. The driver hands each RFC 4571 frame in as [`Proto::Tcp`] with the
//!   connection's remote address, routed the same way, and writes [`Transmit`]s whose `proto`
//!   is TCP back on the connection with that remote address.
//! - Rooms: each peer's audio and video tracks are forwarded to every other peer of its room
//!   (automatic subscription); [`Sfu::subscribe`] and [`Sfu::unsubscribe`] change that.
//! - Forwarding per subscriber: payload types mapped to what the subscriber negotiated, header
//!   extensions re-serialized with its extension ids ([`rewrite`] keeps sequence numbers and
//!   timestamps continuous), NACKs answered from the subscriber's own RTX cache (str0m keeps
//!   one per outgoing stream; [`SfuConfig::rtx_history`] sets how long it holds video, the
//!   payloads shared with the other subscribers), keyframe requests coalesced to one per second
//!   upstream ([`throttle`]), and video to a new subscriber held back until a keyframe
//!   ([`keyframe`]).
//! - Renegotiation: when tracks come and go the core offers (see [`SfuEvent::Offer`]). The core
//!   is the **polite** side of perfect negotiation: when a client's offer crosses one of its
//!   own, it drops its offer, answers the client's, and offers again afterwards. Clients can
//!   therefore ignore a server offer that arrives while their own is outstanding.
//! - Lifecycle: a peer is removed on [`Sfu::leave`], when DTLS closes, and when nothing has been
//!   received from it for [`SfuConfig::ice_timeout`]; all of its state goes with it.
//! - Timers: each peer has a table of named timers (its session's, the ICE idle check, held
//!   keyframe requests); the core keeps every peer's earliest one in one ordered structure
//!   ([`deadline`]), so no call scans every peer.
//!
//! A room keeps to one video codec every member can receive: the first video publisher's offer
//! chooses it from [`SfuConfig::video_codecs`], and a later peer that cannot use it is refused
//! with [`SfuError::VideoCodecUnsupported`]. Media is never transcoded.

//! ## Where things are
//! - [`Sfu`] (`sfu.rs`): the state over all peers, the `poll_*` outputs and the work loop;
//!   its other methods live with what they do: `routing.rs` (datagrams in, by address or ICE
//!   ufrag; a drained peer's output out), `room.rs` (rooms, publish, unpublish, removal),
//!   `negotiation.rs` (offers and answers), `forwarding.rs` (packets to subscribers and taps,
//!   feeds, mutes), `keyframe_requests.rs` (throttled requests upstream), `timers.rs` (each
//!   peer's named timers) and `report.rs` (counters and state for the application).
//! - `peer.rs`: one peer's str0m session and the out-tracks it writes forwarded packets on.
//! - Public types: `id.rs`, `config.rs`, `output.rs` (transmits, events, tapped packets),
//!   `error.rs`; pure policies with their own tests: [`keyframe`], [`rewrite`], [`throttle`],
//!   [`deadline`], [`stun`].

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod deadline;
pub mod keyframe;
pub mod rewrite;
pub mod speakers;
pub mod stun;
pub mod throttle;

mod config;
mod error;
mod forwarding;
mod id;
mod keyframe_requests;
mod layers;
mod negotiation;
mod output;
mod peer;
mod relay;
mod report;
mod room;
mod routing;
mod sdp;
mod sfu;
mod timers;

pub mod simulcast;

pub use config::{SfuConfig, DEFAULT_RTX_HISTORY, DEFAULT_SILENCE_DBOV};
pub use error::SfuError;
pub use id::{MediaKind, PeerId, TapId, TrackId};
pub use keyframe::VideoCodec;
pub use negotiation::OfferLine;
pub use output::{Proto, RemoveReason, SfuEvent, TapPacket, Transmit};
pub use relay::{MediaPacket, RelayId, RelayPacket, TrackInfo};
pub use report::{CoreState, Counters, MediaLine, PeerFlow};
pub use room::Forwarding;
pub use sfu::Sfu;
pub use simulcast::policy::Priority;
pub use simulcast::{LayerCensus, Quality, ReceiverStats, TrackLayer, View};

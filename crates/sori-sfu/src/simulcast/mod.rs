//! Simulcast: a publisher sends one track as several encodings (layers, told apart by their
//! `rid`), and each receiver gets the one layer its link and its screen can take.
//!
//! The public types here are what the application says about a receiver ([`View`]) and what
//! it reads back ([`ReceiverStats`], [`LayerCensus`]). [`policy`] decides the layer per
//! (receiver, track) without any IO.

pub(crate) mod gate;
pub mod policy;
pub(crate) mod source;
pub(crate) mod vp8;

use crate::id::TrackId;

/// What a receiver does with one track it receives: the size of the tile it shows it in, and
/// whether that tile is visible. The core sends the smallest layer that fills the tile (and
/// nothing while it is hidden), as far as the receiver's bandwidth estimate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The tile's width in device pixels (0: unknown, no limit).
    pub width: u32,
    /// The tile's height in device pixels (0: unknown, no limit).
    pub height: u32,
    /// Shown at all; a hidden tile gets no video (`paused`).
    pub visible: bool,
    /// A quality the receiver pinned, instead of the one its tile size implies.
    pub quality: Quality,
}

impl Default for View {
    fn default() -> Self {
        Self {
            width: 0,
            height: 0,
            visible: true,
            quality: Quality::Auto,
        }
    }
}

/// A quality a receiver may pin for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Quality {
    /// Decided by the tile size and the bandwidth estimate.
    #[default]
    Auto,
    /// The lowest layer.
    Low,
    /// The middle layer (of three; the lowest of two).
    Medium,
    /// The highest layer the estimate allows.
    High,
}

/// What one receiver gets of one video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackLayer {
    /// The track.
    pub track: TrackId,
    /// The `rid` of the layer it gets (`None`: the publisher sends one encoding).
    pub rid: Option<String>,
    /// The layer's index, 0 the lowest.
    pub spatial: u8,
    /// How many layers the publisher sends.
    pub layers: u8,
    /// The highest temporal layer forwarded (`None`: all of them).
    pub temporal: Option<u8>,
    /// The frame height of that layer, when the core has seen a keyframe of it.
    pub height: Option<u32>,
    /// The layer's measured bitrate at the publisher, bits per second.
    pub bitrate_bps: u64,
    /// Nothing is forwarded: the tile is hidden, or the estimate is below even the lowest layer's
    /// floor.
    pub paused: bool,
}

/// What one receiver gets: its bandwidth estimate and the layer of each video track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverStats {
    /// The core's estimate of the bandwidth toward the receiver (TWCC), bits per second;
    /// `None` until the first estimate.
    pub estimate_bps: Option<u64>,
    /// Each video track it receives.
    pub tracks: Vec<TrackLayer>,
}

/// How many (receiver, video track) pairs get which layer, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerCensus {
    /// Nothing forwarded (hidden tile, no estimate room).
    pub paused: u64,
    /// The lowest layer of a simulcast track.
    pub low: u64,
    /// A middle layer.
    pub medium: u64,
    /// The highest layer (or the one layer of a track sent without simulcast).
    pub high: u64,
}

impl LayerCensus {
    /// Adds another core's census to this one.
    pub fn absorb(&mut self, other: &LayerCensus) {
        self.paused += other.paused;
        self.low += other.low;
        self.medium += other.medium;
        self.high += other.high;
    }
}

//! Layer selection for one receiver: a pure policy object (no IO, no clock; time comes in).
//!
//! PLACEHOLDER: the interface is final, the decision below is not (it picks the highest layer
//! the view asks for and never probes). Being replaced by the real allocator.

use std::time::{Duration, Instant};

use super::{Quality, View};
use crate::id::TrackId;

/// The policy's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// An upgrade waits until the estimate has allowed it for this long.
    pub hold: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(5),
        }
    }
}

/// Which tracks get bandwidth first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A screen share: served first.
    Screen,
    /// A camera.
    Camera,
}

/// One spatial layer of a track as the core measures it at the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layer {
    /// Its bitrate, bits per second (measured, or the last measured while it is paused at the
    /// publisher, or a default before any measurement).
    pub bitrate_bps: u64,
    /// Its frame height, once a keyframe of it was seen.
    pub height: Option<u32>,
    /// Cumulative bitrates of its temporal layers: entry `t` is the rate of temporal layers
    /// `0..=t`. Empty when the layer has no temporal layers (or they are not known).
    pub temporal_bps: Vec<u64>,
}

/// What one receiver gets of one video track, as input to the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// The track.
    pub track: TrackId,
    /// Screen share or camera.
    pub priority: Priority,
    /// The track's spatial layers, lowest first (one entry: no simulcast).
    pub layers: Vec<Layer>,
    /// What the receiver does with it.
    pub view: View,
}

/// The layer chosen for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The spatial layer, 0 the lowest.
    pub spatial: u8,
    /// The highest temporal layer forwarded; `None`: all of them.
    pub temporal: Option<u8>,
}

/// A request to the bandwidth estimator: keep sending at least `minimum_bps` (media plus
/// padding) and probe toward `desired_bps` (str0m's `bwe().set_bitrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Bits per second to sustain.
    pub minimum_bps: u64,
    /// Bits per second to discover.
    pub desired_bps: u64,
}

/// The policy's output for one receiver.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Allocation {
    /// Each demanded track, in the order of the demands: its layer, or `None` (paused: the
    /// tile is hidden).
    pub choices: Vec<(TrackId, Option<Choice>)>,
    /// What the estimator should aim for.
    pub probe: Option<Probe>,
}

/// The layer policy of one receiver.
#[derive(Debug, Clone)]
pub struct Allocator {
    #[allow(dead_code)]
    config: PolicyConfig,
    estimate: Option<u64>,
}

impl Allocator {
    /// A receiver's policy with no estimate yet.
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            estimate: None,
        }
    }

    /// A new bandwidth estimate toward the receiver.
    pub fn estimate(&mut self, bps: u64, _now: Instant) {
        self.estimate = Some(bps);
    }

    /// The receiver's layers, given its demands now.
    pub fn allocate(&mut self, demands: &[Demand], _now: Instant) -> Allocation {
        let choices = demands
            .iter()
            .map(|d| {
                if !d.view.visible {
                    return (d.track, None);
                }
                let top = d.layers.len().saturating_sub(1) as u8;
                let spatial = match d.view.quality {
                    Quality::Low => 0,
                    Quality::Medium => top.min(1),
                    _ => top,
                };
                (
                    d.track,
                    Some(Choice {
                        spatial,
                        temporal: None,
                    }),
                )
            })
            .collect();
        Allocation {
            choices,
            probe: None,
        }
    }

    /// When [`Allocator::allocate`] should run again though nothing changed (a hold ends).
    pub fn next_check(&self) -> Option<Instant> {
        None
    }
}

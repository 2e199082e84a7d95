//! Layer selection for one receiver: a pure policy object (no IO, no clock; time comes in).
//!
//! One [`Allocator`] per receiver. The core hands it each new bandwidth estimate
//! ([`Allocator::estimate`]) and asks it for the receiver's layers ([`Allocator::allocate`])
//! whenever a demand, a view or the estimate changed, and at [`Allocator::next_check`].
//!
//! # The ladder of a track
//! Each visible track climbs a ladder of steps, cheapest first: spatial layer 0 with only its
//! lowest temporal layers (when its cumulative `temporal_bps` are known), spatial 0 with all
//! of them, then each higher spatial layer with all temporal layers. A step costs the rate the
//! core measured at the publisher (never less than the step below it). The lowest step is the
//! track's **floor**: every visible track gets it whatever the estimate, so nobody goes black;
//! a hidden tile gets nothing (`None`).
//!
//! The top of the ladder (the **cap**) comes from the view: the smallest spatial layer whose
//! height is at least the tile's height (the top layer when none is, or when the tile height
//! is 0). A layer's unknown height is taken as half of the next known height above it, or, with
//! none known, the top layer as 720 lines and each lower one half of the next. The tile's width
//! is not used. A pinned quality replaces the tile's cap: `Low` is spatial 0 (all temporal
//! layers), `Medium` spatial 1 (the top of fewer layers), `High` the top layer.
//!
//! # Sharing the estimate
//! The fill: every track at its floor, then screen shares raised, then cameras, each within its
//! class one step per round in demand order (round robin: two cameras end up on equal footing
//! rather than one high and one starved), while the total stays within the budget. A step that
//! does not fit is skipped, so a cheaper step of a later track may still take what is left.
//!
//! - **Keep.** The current layers stay as long as their total is at most the estimate plus
//!   [`PolicyConfig::downgrade_margin_percent`] (measured rates jitter by a few percent).
//! - **Dip.** Beyond that margin but within [`PolicyConfig::dip_margin_percent`], the current
//!   layers stay for up to [`PolicyConfig::dip_grace`]: the estimator answers a single overuse
//!   with 0.85 × the rate the receiver acknowledged, a layer's rate jitters by ±10 % over its
//!   window, and together they cross the margin on a healthy link now and then; the estimate
//!   comes back within a second or two. Congestion that lasts takes the estimate further down.
//! - **Downgrade.** Beyond the dip margin for [`PolicyConfig::drop_confirm`] (a single probe's
//!   result can be far off, and the next one corrects it), or a dip that outlasted its grace:
//!   the current layers are refilled within the estimate, in the same `allocate` call: cameras
//!   give way before screen shares.
//! - **New tracks** (new demands, tiles shown again) start where a fill of the plain estimate
//!   puts them (no headroom, no hold), the current layers as ceilings for the others; a screen
//!   share thus displaces cameras at once.
//! - **Upgrade.** The **target** is what the estimate allows now: raising tracks one step at a
//!   time in fill order while a fill of the estimate divided by
//!   [`PolicyConfig::upgrade_headroom_percent`] (ceilings: the current layers plus that step)
//!   contains the step. A screen share's step may push cameras down. The receiver moves to the
//!   target in one go once the estimate has covered the target's total times the headroom
//!   continuously for the hold: a climbing estimate makes one switch (one keyframe), not one
//!   per step.
//! - **Probe.** Every allocation with a visible track asks the estimator to probe toward every
//!   track at its cap (that total times the headroom, and a quarter more; the chosen total when
//!   every track is at its cap), and, only while a target waits, to sustain the target's need
//!   (the **trial**: padding makes the link carry it, so an estimate that a short probe
//!   produced on a link that cannot carry the rate falls before the hold ends). Otherwise
//!   nothing is padded: the layers' rates are peaks (an encoder's rate swings), and padding up
//!   to them would send a receiver a fifth more than its media for nothing. The trial
//!   outlives a dip of the estimate below the need by up to [`TRIAL`], while the estimate stays
//!   above the target's total: the estimator grows to at most 1.5 × the rate acknowledged, so a
//!   probe's estimate falls back unless the rate is carried.
//!
//! # The hold
//! The hold starts at [`PolicyConfig::hold`]. A downgrade (driven by the estimate or the
//! measured rates, not by a view change or a new track) within [`PolicyConfig::flap_window`]
//! of the last upgrade is a flap: the hold is multiplied by [`PolicyConfig::hold_growth`], up
//! to [`PolicyConfig::max_hold`]. It then halves for every [`PolicyConfig::hold_decay`] without
//! another flap, back down to the base hold, and is the base hold again once the estimate has
//! covered twice the total that flapped for the base hold (the link changed). With the
//! defaults a receiver climbs from the lowest to the top of three layers one base hold after
//! the estimate covers the top, and an estimate swinging ±10 % across a layer boundary, at any
//! period from 1 s to 30 s, switches layers at most about once per 30 s.
//!
//! # Settings and defaults
//! | [`PolicyConfig`] field | default | meaning |
//! |---|---|---|
//! | `hold` | 2.5 s | an upgrade's base hold |
//! | `max_hold` | 10 s | the longest hold after flaps |
//! | `hold_growth` | ×3 | the hold's growth per flap |
//! | `flap_window` | 30 s | a downgrade this soon after an upgrade is a flap |
//! | `hold_decay` | 20 s | the hold halves per this long without a flap |
//! | `upgrade_headroom_percent` | 115 % | an upgrade needs the estimate at 115 % of the new total |
//! | `downgrade_margin_percent` | 20 % | a downgrade when the total exceeds the estimate by 20 % (the estimator answers a brief overuse, such as a probe that overshot, with 0.85 × the acknowledged rate; a smaller margin would downgrade on every such dip) |
//! | `dip_margin_percent` | 50 % | a total up to 50 % above the estimate (the estimate at two thirds of it) is a dip |
//! | `dip_grace` | 3 s | how long a dip keeps the layers |
//! | `drop_confirm` | 250 ms | how long an estimate beyond the dip margin must last for a downgrade |
//! | `initial_estimate_bps` | 0 | the estimate assumed before the first one |
//!
//! Before the first estimate the allocator fills `initial_estimate_bps` (by default: every
//! track starts at its floor) and upgrades nothing: an upgrade needs estimates covering it for
//! the hold. A receiver that starts low and climbs costs one keyframe when its link is good; one
//! that starts above what its link carries freezes until its estimate has fallen far enough to
//! move it down (seconds, on a link held to less than the layer).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Quality, View};
use crate::id::TrackId;

/// The policy's settings (see the module documentation for how they play together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// An upgrade waits until the estimate has allowed it for this long (the base hold, before
    /// any flap lengthened it).
    pub hold: Duration,
    /// The longest the hold grows to after flaps.
    pub max_hold: Duration,
    /// The hold is multiplied by this after each flap (a downgrade soon after an upgrade).
    pub hold_growth: u32,
    /// A downgrade within this time after an upgrade is a flap.
    pub flap_window: Duration,
    /// A lengthened hold halves for every this long without a flap.
    pub hold_decay: Duration,
    /// An upgrade needs the estimate at this percentage of the new total (115: 15 % headroom).
    pub upgrade_headroom_percent: u64,
    /// The current layers are kept until their total exceeds the estimate by this percentage.
    pub downgrade_margin_percent: u64,
    /// A total beyond the margin but within this percentage of the estimate is a dip: kept
    /// for up to [`PolicyConfig::dip_grace`] before the downgrade.
    pub dip_margin_percent: u64,
    /// How long a dip may last before the downgrade.
    pub dip_grace: Duration,
    /// How long an estimate beyond the dip margin must last before the downgrade (a single
    /// probe's result can be far off and is corrected by the next one).
    pub drop_confirm: Duration,
    /// The estimate assumed until the first one arrives, bits per second.
    pub initial_estimate_bps: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            hold: Duration::from_millis(2500),
            max_hold: Duration::from_secs(10),
            hold_growth: 3,
            flap_window: Duration::from_secs(30),
            hold_decay: Duration::from_secs(20),
            upgrade_headroom_percent: 115,
            downgrade_margin_percent: 20,
            dip_margin_percent: 50,
            dip_grace: Duration::from_secs(3),
            drop_confirm: Duration::from_millis(250),
            initial_estimate_bps: 0,
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
    /// What the estimator should aim for; `None` when no track is visible.
    pub probe: Option<Probe>,
}

/// The layer policy of one receiver.
#[derive(Debug, Clone)]
pub struct Allocator {
    config: PolicyConfig,
    history: History,
    /// The visible tracks' layers as last allocated.
    current: Vec<(TrackId, Choice)>,
    /// Their total and the total of their floors, bits per second.
    allocated_bps: u64,
    floor_bps: u64,
    /// The total the next upgrade needs covered (headroom included).
    pending_bps: Option<u64>,
    /// The rate the link is made to carry while an upgrade waits (the pending total, kept for
    /// up to [`TRIAL`] while the estimate dips), and since when.
    trial: Option<(u64, Instant)>,
    /// When the last trial ended.
    trial_ended: Option<Instant>,
    /// An estimate below the allocation arrived at this time, since the last `allocate`.
    downgrade_due: Option<Instant>,
    /// Since when the current layers have been beyond the margin, and since when beyond the
    /// dip margin.
    dip_since: Option<Instant>,
    drop_since: Option<Instant>,
    last_upgrade: Option<Instant>,
    /// The hold set by the last flap.
    penalty: Option<Penalty>,
    /// A visible track is below the layer its tile could use (as last allocated).
    below_cap: bool,
}

/// A lengthened hold after a flap.
#[derive(Debug, Clone, Copy)]
struct Penalty {
    hold: Duration,
    /// When the flap happened.
    since: Instant,
    /// The total that could not be kept (the layers the receiver was moved down from).
    level_bps: u64,
}

impl Allocator {
    /// A receiver's policy with no estimate yet.
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            history: History::default(),
            current: Vec::new(),
            allocated_bps: 0,
            floor_bps: 0,
            pending_bps: None,
            trial: None,
            trial_ended: None,
            downgrade_due: None,
            dip_since: None,
            drop_since: None,
            last_upgrade: None,
            penalty: None,
            below_cap: false,
        }
    }

    /// A new bandwidth estimate toward the receiver (video only), bits per second.
    pub fn estimate(&mut self, bps: u64, now: Instant) {
        let keep = self.config.max_hold.max(self.config.hold);
        self.history.push(bps, now, keep);
        let kept = self.allocated_bps <= self.with_margin(bps);
        if kept {
            self.dip_since = None;
            self.drop_since = None;
        } else if self.allocated_bps > self.floor_bps {
            self.downgrade_due.get_or_insert(now);
            self.dip_since.get_or_insert(now);
            if self.allocated_bps > self.with_dip_margin(bps) {
                self.drop_since.get_or_insert(now);
            } else {
                self.drop_since = None;
            }
        }
    }

    /// The receiver's layers, given its demands now.
    pub fn allocate(&mut self, demands: &[Demand], now: Instant) -> Allocation {
        let ladders: Vec<Ladder> = demands
            .iter()
            .enumerate()
            .filter(|(_, d)| d.view.visible)
            .map(|(i, d)| Ladder::new(i, d))
            .collect();
        let estimate = self
            .history
            .latest()
            .unwrap_or(self.config.initial_estimate_bps);
        let existing: Vec<Option<usize>> = ladders
            .iter()
            .map(|l| {
                let (_, choice) = self.current.iter().find(|(t, _)| *t == l.track)?;
                Some(l.step_of(*choice).min(l.cap))
            })
            .collect();
        let fit = self.keep_or_downgrade(&ladders, &existing, estimate, now);
        // After a downgrade nothing is pending (no padding on a link that just fell short):
        // the next allocation looks for an upgrade again.
        let at;
        (self.pending_bps, at) = match fit {
            Fit::Downgraded(at) => {
                self.trial = None;
                (None, at)
            }
            Fit::Kept(at) => {
                let at = self.upgrade(&ladders, at, estimate, now);
                let pending = self
                    .history
                    .latest()
                    .and_then(|_| self.target(&ladders, &at, estimate))
                    .map(|(_, needs)| needs);
                (pending, at)
            }
        };
        let trial = self.next_trial(&ladders, &at, estimate, now);
        if self.trial.is_some() && trial.is_none() {
            self.trial_ended = Some(now);
        }
        self.trial = trial;
        self.record(&ladders, &at);
        self.output(demands, &ladders, &at)
    }

    /// The padding trial after this allocation: the pending total while there is one; kept
    /// while the estimate dips below it (but not below the total without headroom) for up to
    /// [`TRIAL`] from its start. An estimate raised by a short probe falls back to what the
    /// link carries (the estimator grows at most to 1.5 × the rate acknowledged): carried for
    /// real, a higher rate holds long enough to be covered for the hold. With no target, a
    /// step that fits the estimate without the headroom starts a trial too (the estimate can
    /// only grow into the headroom while the link carries more than the media), at most once
    /// per [`TRIAL_EVERY`].
    fn next_trial(
        &self,
        ladders: &[Ladder],
        at: &[usize],
        estimate: u64,
        now: Instant,
    ) -> Option<(u64, Instant)> {
        if let Some(needs) = self.pending_bps {
            return Some((needs, self.trial.map_or(now, |(_, since)| since)));
        }
        if self.downgrade_due.is_some() || self.history.latest().is_none() {
            return None;
        }
        let kept = self.trial.filter(|&(needs, since)| {
            let raw = self.without_headroom(needs);
            now.saturating_duration_since(since) < TRIAL
                && estimate >= raw
                && total(ladders, at) < raw
        });
        if kept.is_some() {
            return kept;
        }
        let due = self
            .trial_ended
            .is_none_or(|t| now.saturating_duration_since(t) >= TRIAL_EVERY);
        if self.trial.is_some() || !due {
            return None;
        }
        let (_, needs) = self.target(ladders, at, self.with_headroom(estimate))?;
        Some((needs, now))
    }

    /// Whether a visible track gets less than its tile could use (the estimate holds it
    /// back), as last allocated.
    pub fn below_cap(&self) -> bool {
        self.below_cap
    }

    /// When [`Allocator::allocate`] should run again though nothing changed: when a pending
    /// upgrade's hold ends (the estimate having covered it since), or, if an estimate since the
    /// last allocation no longer covers it, that estimate's time (a downgrade is due).
    pub fn next_check(&self) -> Option<Instant> {
        let upgrade = self.pending_bps.and_then(|bps| self.hold_ends(bps));
        let dip_ends = self
            .dip_since
            .and_then(|t| t.checked_add(self.config.dip_grace));
        let drop_confirmed = self
            .drop_since
            .and_then(|t| t.checked_add(self.config.drop_confirm));
        [self.downgrade_due, upgrade, dip_ends, drop_confirmed]
            .into_iter()
            .flatten()
            .min()
    }

    /// The current layers if their total is within the margin and no track is new; otherwise
    /// a fill of the estimate below the current layers (new tracks up to their caps).
    fn keep_or_downgrade(
        &mut self,
        ladders: &[Ladder],
        existing: &[Option<usize>],
        estimate: u64,
        now: Instant,
    ) -> Fit {
        let new_track = existing.iter().any(Option::is_none);
        let at: Vec<usize> = existing.iter().map(|e| e.unwrap_or(0)).collect();
        let sum = total(ladders, &at);
        if !new_track && sum <= self.with_margin(estimate) {
            self.dip_since = None;
            self.drop_since = None;
            return Fit::Kept(at);
        }
        // A dip: the estimator answers one overuse with 0.85 × the rate acknowledged, which
        // the layers' jitter can take past the margin; it comes back within a second or two.
        // Beyond the dip margin, a drop: confirmed by the estimates of a moment.
        let dip_since = *self.dip_since.get_or_insert(now);
        let dipped = now.saturating_duration_since(dip_since) >= self.config.dip_grace;
        let dropped = if sum > self.with_dip_margin(estimate) {
            let since = *self.drop_since.get_or_insert(now);
            now.saturating_duration_since(since) >= self.config.drop_confirm
        } else {
            self.drop_since = None;
            false
        };
        if !new_track && !dipped && !dropped {
            return Fit::Kept(at);
        }
        self.dip_since = None;
        self.drop_since = None;
        let ceilings: Vec<usize> = existing
            .iter()
            .zip(ladders)
            .map(|(e, l)| e.unwrap_or(l.cap))
            .collect();
        let fitted = fill(ladders, &ceilings, estimate);
        let downgraded = fitted.iter().zip(&at).any(|(f, a)| f < a);
        if !downgraded || new_track {
            return Fit::Kept(fitted);
        }
        let flap = self
            .last_upgrade
            .is_some_and(|t| now.saturating_duration_since(t) <= self.config.flap_window);
        if flap {
            let grown = self
                .hold_at(now)
                .saturating_mul(self.config.hold_growth.max(1));
            self.penalty = Some(Penalty {
                hold: grown.min(self.config.max_hold),
                since: now,
                level_bps: total(ladders, &at),
            });
            self.last_upgrade = None;
        }
        Fit::Downgraded(fitted)
    }

    /// Moves to the layers the estimate allows now (its [`Allocator::target`]) once the
    /// estimate has covered them, with headroom, for the hold; until then keeps `at`. A target
    /// that moves up while the estimate climbs restarts the wait: one switch instead of one per
    /// step.
    fn upgrade(
        &mut self,
        ladders: &[Ladder],
        at: Vec<usize>,
        estimate: u64,
        now: Instant,
    ) -> Vec<usize> {
        match self.target(ladders, &at, estimate) {
            Some((target, needs)) if self.history.covered_for(needs, now) >= self.hold_for(now) => {
                self.last_upgrade = Some(now);
                target
            }
            _ => at,
        }
    }

    /// The layers above `at` that a fill of the estimate without the headroom reaches, raising
    /// one step at a time in fill order (a screen share's step may push cameras down), and the
    /// estimate they need (with headroom); `None` when no step fits.
    fn target(&self, ladders: &[Ladder], at: &[usize], estimate: u64) -> Option<(Vec<usize>, u64)> {
        let budget = self.upgrade_budget(estimate);
        let order = fill_order(ladders);
        let mut at = at.to_vec();
        let mut frozen = vec![false; ladders.len()];
        let mut any = false;
        // Every pass raises a track or ends; the bound only guards against a cycle of raises
        // pushing each other down.
        let passes: usize = ladders.iter().map(|l| l.steps.len()).sum();
        for _ in 0..=passes {
            let mut raised = false;
            for &i in &order {
                if frozen[i] || at[i] >= ladders[i].cap {
                    continue;
                }
                let mut ceilings = at.clone();
                ceilings[i] += 1;
                let next = fill(ladders, &ceilings, budget);
                if next[i] > at[i] {
                    at = next;
                    raised = true;
                } else {
                    frozen[i] = true;
                }
            }
            any |= raised;
            if !raised {
                break;
            }
        }
        any.then(|| {
            let needs = self.with_headroom(total(ladders, &at));
            (at, needs)
        })
    }

    fn record(&mut self, ladders: &[Ladder], at: &[usize]) {
        self.current = ladders
            .iter()
            .zip(at)
            .map(|(l, &s)| (l.track, l.steps[s].choice))
            .collect();
        self.allocated_bps = total(ladders, at);
        self.floor_bps = total(ladders, &vec![0; ladders.len()]);
        self.below_cap = ladders.iter().zip(at).any(|(l, &s)| s < l.cap);
        self.downgrade_due = None;
    }

    fn output(&self, demands: &[Demand], ladders: &[Ladder], at: &[usize]) -> Allocation {
        let mut choices: Vec<(TrackId, Option<Choice>)> =
            demands.iter().map(|d| (d.track, None)).collect();
        for (l, &s) in ladders.iter().zip(at) {
            choices[l.demand].1 = Some(l.steps[s].choice);
        }
        let probe = (!ladders.is_empty()).then(|| {
            // Probe toward every track at its cap: one probe finds a link that has room for
            // the top layers, rather than one per step.
            let below_cap = ladders.iter().zip(at).any(|(l, &s)| s < l.cap);
            let caps = ladders
                .iter()
                .fold(0u64, |sum, l| sum.saturating_add(l.steps[l.cap].bps));
            // A quarter above what the caps need: a probe finds about the rate it aims at, and
            // an estimate just at the need would flicker across it.
            let desired_bps = if below_cap {
                (self.with_headroom(caps).saturating_mul(5) / 4).max(self.allocated_bps)
            } else {
                self.allocated_bps
            };
            // While an upgrade is held, the link carries what it needs for real (padding
            // makes up what the media lacks): an estimate that only a short probe burst
            // produced, on a link that cannot sustain the rate, falls again before the hold
            // ends, and nobody switched. Nothing else is padded.
            Probe {
                minimum_bps: self.trial.map_or(0, |(bps, _)| bps),
                desired_bps,
            }
        });
        Allocation { choices, probe }
    }

    fn with_margin(&self, bps: u64) -> u64 {
        bps.saturating_add(bps.saturating_mul(self.config.downgrade_margin_percent) / 100)
    }

    fn with_dip_margin(&self, bps: u64) -> u64 {
        bps.saturating_add(bps.saturating_mul(self.config.dip_margin_percent) / 100)
    }

    fn without_headroom(&self, bps: u64) -> u64 {
        bps.saturating_mul(100) / self.config.upgrade_headroom_percent.max(1)
    }

    /// The most an upgrade's fill may use: the estimate without the headroom.
    fn upgrade_budget(&self, estimate: u64) -> u64 {
        estimate.saturating_mul(100) / self.config.upgrade_headroom_percent.max(1)
    }

    fn with_headroom(&self, bps: u64) -> u64 {
        bps.saturating_mul(self.config.upgrade_headroom_percent) / 100
    }

    /// The hold an upgrade needs at `now`: [`Allocator::hold_at`], or the base hold once the
    /// estimate has stayed at twice the total that flapped for that long (the link changed: an
    /// estimate wavering around a boundary does not double).
    fn hold_for(&self, now: Instant) -> Duration {
        let base = self.config.hold;
        match self.penalty {
            Some(p) if self.history.covered_for(p.level_bps.saturating_mul(2), now) < base => {
                self.hold_at(now)
            }
            _ => base,
        }
    }

    /// The hold at `now` by the last flap alone: the base, or the flap's hold halved per decay
    /// period since.
    fn hold_at(&self, now: Instant) -> Duration {
        let base = self.config.hold;
        let Some(Penalty { hold, since, .. }) = self.penalty else {
            return base;
        };
        let halvings = now.saturating_duration_since(since).as_nanos() / self.decay().as_nanos();
        let halved = u32::try_from(halvings)
            .ok()
            .and_then(|h| 1u32.checked_shl(h))
            .map_or(Duration::ZERO, |d| hold / d);
        halved.max(base)
    }

    /// The hold's halving period (never zero).
    fn decay(&self) -> Duration {
        self.config.hold_decay.max(Duration::from_millis(1))
    }

    /// When the estimate will have covered `bps` for the hold, if it covers it now.
    fn hold_ends(&self, bps: u64) -> Option<Instant> {
        let since = self.history.covered_since(bps)?;
        let Some(penalty) = self.penalty else {
            return since.checked_add(self.config.hold);
        };
        let decayed = self.decayed_hold_ends(since, penalty.since);
        // The link changed: the base hold from when the estimate reached twice the flapped total.
        let changed = self
            .history
            .covered_since(penalty.level_bps.saturating_mul(2))
            .and_then(|t| t.max(since).checked_add(self.config.hold));
        match (decayed, changed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When a hold that started at `since` ends, the hold shrinking after the flap at `flap`.
    fn decayed_hold_ends(&self, since: Instant, flap: Instant) -> Option<Instant> {
        // The hold shrinks stepwise; find the first decay period in which it has passed.
        let decay = self.decay();
        let mut start = since;
        loop {
            let hold = self.hold_at(start);
            let ends = since.checked_add(hold)?.max(start);
            let k = start.saturating_duration_since(flap).as_nanos() / decay.as_nanos();
            let periods = u32::try_from(k + 1).ok()?;
            let next_period = flap.checked_add(decay.checked_mul(periods)?)?;
            if hold <= self.config.hold || ends < next_period {
                return Some(ends);
            }
            start = next_period;
        }
    }
}

/// The longest a padding trial outlives the target that started it (or lasts, started by a
/// step that fits the estimate without its headroom).
const TRIAL: Duration = Duration::from_secs(5);
/// A trial toward a step that fits only without the headroom starts at most this often.
const TRIAL_EVERY: Duration = Duration::from_secs(10);

/// The result of the keep/downgrade stage.
enum Fit {
    /// Kept (or new tracks placed): upgrades may follow.
    Kept(Vec<usize>),
    /// The estimate forced a downgrade: no upgrade in the same call.
    Downgraded(Vec<usize>),
}

/// One step of a track's ladder: a choice and its rate.
#[derive(Debug, Clone, Copy)]
struct Step {
    choice: Choice,
    bps: u64,
}

/// A visible track's ladder, cheapest step first, and how high it may go.
#[derive(Debug)]
struct Ladder {
    /// The index of its demand.
    demand: usize,
    track: TrackId,
    screen: bool,
    steps: Vec<Step>,
    /// The highest step the view allows.
    cap: usize,
}

impl Ladder {
    fn new(demand: usize, d: &Demand) -> Self {
        let layers = &d.layers[..d.layers.len().min(usize::from(u8::MAX) + 1)];
        let mut steps = Vec::new();
        if let Some(base) = layers.first() {
            let partial = base.temporal_bps.len().saturating_sub(1);
            for (t, &bps) in base.temporal_bps[..partial].iter().enumerate().take(255) {
                let temporal = Some(t as u8); // t < 255 (take above)
                steps.push(Step {
                    choice: Choice {
                        spatial: 0,
                        temporal,
                    },
                    bps,
                });
            }
        }
        let spatial_from = steps.len();
        for (s, layer) in layers.iter().enumerate() {
            steps.push(Step {
                choice: Choice {
                    spatial: s as u8, // s <= u8::MAX (layers truncated above)
                    temporal: None,
                },
                bps: layer.bitrate_bps,
            });
        }
        if steps.is_empty() {
            steps.push(Step {
                choice: Choice {
                    spatial: 0,
                    temporal: None,
                },
                bps: 0,
            });
        }
        // A step never costs less than the one below it.
        for i in 1..steps.len() {
            steps[i].bps = steps[i].bps.max(steps[i - 1].bps);
        }
        let cap = (spatial_from + spatial_cap(layers, &d.view)).min(steps.len() - 1);
        Self {
            demand,
            track: d.track,
            screen: d.priority == Priority::Screen,
            steps,
            cap,
        }
    }

    /// The highest step not above `choice` (a choice from before the layers changed).
    fn step_of(&self, choice: Choice) -> usize {
        let key = |c: Choice| (c.spatial, c.temporal.map_or(u16::MAX, u16::from));
        self.steps
            .iter()
            .rposition(|s| key(s.choice) <= key(choice))
            .unwrap_or(0)
    }
}

/// The highest spatial layer the view makes useful.
fn spatial_cap(layers: &[Layer], view: &View) -> usize {
    let top = layers.len().saturating_sub(1);
    match view.quality {
        Quality::Low => 0,
        Quality::Medium => top.min(1),
        Quality::High => top,
        Quality::Auto if view.height == 0 => top,
        Quality::Auto => (0..=top)
            .find(|&i| height_of(layers, i) >= view.height)
            .unwrap_or(top),
    }
}

/// Layer `i`'s height: measured, or half of the next known height above it per layer, or
/// with none known the top at 720 lines and each lower layer half of the next.
fn height_of(layers: &[Layer], i: usize) -> u32 {
    if let Some(h) = layers[i].height {
        return h;
    }
    let above = layers
        .iter()
        .enumerate()
        .skip(i + 1)
        .find_map(|(j, l)| l.height.map(|h| (j, h)));
    let (j, h) = above.unwrap_or((layers.len(), 1440));
    let halvings = u32::try_from(j - i).unwrap_or(u32::MAX);
    h.checked_shr(halvings).unwrap_or(0)
}

/// Ladder indices in fill order: screen shares, then cameras, each in demand order.
fn fill_order(ladders: &[Ladder]) -> Vec<usize> {
    let screens = (0..ladders.len()).filter(|&i| ladders[i].screen);
    let cameras = (0..ladders.len()).filter(|&i| !ladders[i].screen);
    screens.chain(cameras).collect()
}

/// The total rate of the ladders at the given steps.
fn total(ladders: &[Ladder], at: &[usize]) -> u64 {
    ladders
        .iter()
        .zip(at)
        .fold(0u64, |sum, (l, &s)| sum.saturating_add(l.steps[s].bps))
}

/// Every track at its floor, then screen shares, then cameras raised one step per round (round
/// robin in demand order), none above its ceiling, while the total stays within `budget`.
fn fill(ladders: &[Ladder], ceilings: &[usize], budget: u64) -> Vec<usize> {
    let mut at = vec![0; ladders.len()];
    let mut sum = total(ladders, &at);
    for screen in [true, false] {
        loop {
            let mut raised = false;
            for (i, l) in ladders.iter().enumerate() {
                if l.screen != screen || at[i] >= ceilings[i].min(l.cap) {
                    continue;
                }
                let extra = l.steps[at[i] + 1].bps - l.steps[at[i]].bps;
                if sum.saturating_add(extra) <= budget {
                    at[i] += 1;
                    sum += extra;
                    raised = true;
                }
            }
            if !raised {
                break;
            }
        }
    }
    at
}

/// The estimates that matter for "covered since", over the last `max_hold`.
///
/// The estimate is a step function of time (each value holds until the next). Only samples
/// lower than every later one are kept (a later lower sample supersedes them), with the time
/// the next sample replaced them: a level is covered since the end of the last kept sample
/// below it.
#[derive(Debug, Clone, Default)]
struct History {
    /// The kept samples, oldest (and lowest) first.
    minima: VecDeque<Sample>,
    /// Levels above no kept sample are covered since this time.
    since: Option<Instant>,
    /// The latest estimate and its time.
    latest: Option<(u64, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    bps: u64,
    /// When the next estimate replaced it (`None`: the latest).
    until: Option<Instant>,
}

/// At most this many kept samples (a steady climb sampled often); beyond it the oldest two
/// merge into one, which only makes levels look covered for less long.
const MAX_SAMPLES: usize = 256;

impl History {
    fn push(&mut self, bps: u64, now: Instant, keep: Duration) {
        // Time never runs backwards here: an out-of-order estimate counts as arriving now.
        let now = self.latest.map_or(now, |(_, t)| now.max(t));
        if let Some(last) = self.minima.back_mut() {
            last.until = Some(now);
        }
        while self.minima.back().is_some_and(|s| s.bps >= bps) {
            self.minima.pop_back();
        }
        self.minima.push_back(Sample { bps, until: None });
        self.since.get_or_insert(now);
        self.latest = Some((bps, now));
        let horizon = now.checked_sub(keep);
        while let (Some(front), Some(horizon)) = (self.minima.front(), horizon) {
            match front.until {
                Some(until) if until < horizon => {
                    self.since = self.since.map(|s| s.max(until));
                    self.minima.pop_front();
                }
                _ => break,
            }
        }
        while self.minima.len() > MAX_SAMPLES {
            // Two entries at least follow, so neither of the two merged is the latest.
            let lowest = self.minima.pop_front().map_or(0, |s| s.bps);
            if let Some(next) = self.minima.front_mut() {
                next.bps = lowest;
            }
        }
    }

    fn latest(&self) -> Option<u64> {
        self.latest.map(|(bps, _)| bps)
    }

    /// Since when every estimate has been at least `bps` (`None`: the latest is below).
    fn covered_since(&self, bps: u64) -> Option<Instant> {
        if self.latest()? < bps {
            return None;
        }
        let below = self.minima.partition_point(|s| s.bps < bps);
        match below.checked_sub(1) {
            None => self.since,
            // Not the latest sample (that one is at least `bps`), so it has an end.
            Some(i) => self.minima[i].until,
        }
    }

    fn covered_for(&self, bps: u64, now: Instant) -> Duration {
        self.covered_since(bps)
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests;

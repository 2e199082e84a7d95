//! Timers. Each peer has a table of named timers ([`Timer`], [`TimerTable`]); the core keeps
//! each peer's earliest one in an ordered schedule ([`crate::deadline::Deadlines`]), so
//! `handle_timeout` visits only the peers that are due.

use std::time::Instant;

use str0m::Input;

use crate::id::PeerId;
use crate::keyframe_requests::retry_keyframe_requests;
use crate::output::{RemoveReason, SfuEvent};
use crate::sfu::Sfu;

/// A peer's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The peer's str0m session wants `handle_input(Timeout)`.
    Rtc = 0,
    /// Time to check whether anything arrived from the peer within the ICE timeout.
    Idle = 1,
    /// A keyframe request the throttle held back on one of the peer's tracks may go out.
    KeyframeRetry = 2,
    /// Time to look at the peer's simulcast layers again ([`crate::layers`]).
    Layers = 3,
    /// The audio levels summed since the last report go out ([`SfuEvent::AudioLevels`]).
    Levels = 4,
}

/// When each [`Timer`] of a peer fires (`None`: not armed).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; 5],
}

impl TimerTable {
    /// Arms (or moves) `timer` to fire at `at`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    /// When `timer` fires, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// Whether `timer` is armed and due at `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.at[timer as usize].is_some_and(|at| now >= at)
    }

    /// The earliest armed timer's instant.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

impl Sfu {
    /// Time passed: call when [`Sfu::poll_timeout`] is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.board.timers.pop_due(now) {
            self.peer_timeout(id, now);
        }
        self.process(now);
    }

    /// Fires the peer's due timers.
    fn peer_timeout(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.timers.is_expired(Timer::Idle, now) {
            let idle = now.saturating_duration_since(peer.last_input);
            if idle >= self.config.ice_timeout {
                self.board.doomed.push((id, RemoveReason::IceTimeout));
                return;
            }
            let stall = self.config.ice_stall;
            if peer.connected && !peer.stalled && idle >= stall {
                peer.stalled = true;
                self.counters.ice_stalls += 1;
                tracing::debug!(%id, ?idle, "nothing heard: ICE stalled");
                self.events.push_back(SfuEvent::IceStalled { peer: id });
            }
            let timeout = peer.last_input + self.config.ice_timeout;
            let next = if peer.connected && !peer.stalled {
                timeout.min(peer.last_input + stall)
            } else {
                timeout
            };
            peer.timers.set(Timer::Idle, next);
        }
        retry_keyframe_requests(
            peer,
            &mut self.tracks,
            &mut self.board,
            &mut self.counters,
            now,
        );
        if peer.timers.is_expired(Timer::Rtc, now) {
            match peer.mutate(|rtc| rtc.handle_input(Input::Timeout(now))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self
                    .board
                    .doomed
                    .push((id, RemoveReason::Failed(e.to_string()))),
                Err(e) => self.board.doomed.push((id, RemoveReason::Failed(e))),
            }
        }
        if peer.timers.is_expired(Timer::Levels, now) {
            peer.timers.stop(Timer::Levels);
            let (sum, packets) = std::mem::take(&mut peer.levels);
            self.events.push_back(SfuEvent::AudioLevels {
                peer: id,
                sum,
                packets,
            });
        }
        self.board.settle(peer);
        self.layer_tick(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    pub(crate) fn the_next_timer_is_the_earliest_armed_one() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Idle, t + ms(30));
        table.set(Timer::Rtc, t + ms(20));
        table.set(Timer::KeyframeRetry, t + ms(10));
        assert_eq!(table.next(), Some(t + ms(10)));
        table.stop(Timer::KeyframeRetry);
        assert_eq!(table.get(Timer::KeyframeRetry), None);
        assert_eq!(table.next(), Some(t + ms(20)));
        assert!(!table.is_expired(Timer::Idle, t + ms(29)));
        assert!(table.is_expired(Timer::Idle, t + ms(30)));
        assert!(!table.is_expired(Timer::KeyframeRetry, t + ms(30)));
    }
}

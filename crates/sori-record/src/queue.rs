//! The bounded queue between the network and a recording's writer thread.
//!
//! Packets beyond [`QUEUE_PACKETS`] waiting are dropped and counted ([`Feed::dropped`],
//! [`crate::Summary::dropped_packets`]): a writer held up by a slow disk costs at most that
//! many packets of memory, and the recorder treats the hole like any packet loss (video
//! resumes at the next keyframe). Commands (pause, resume, stop) are never dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::Input;

/// Packets a recording's queue holds at most: about three seconds of a 720p camera and its
/// microphone (≈ 1.2 MB), time enough for a disk to catch up.
pub const QUEUE_PACKETS: usize = 1024;

/// The recording has finished: nothing more can be fed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the recording has finished")]
pub struct Closed;

#[derive(Default)]
struct State {
    items: VecDeque<Input>,
    packets: usize,
    closed: bool,
}

pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            ready: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue's data consistent (push and pop
        // are single operations): carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, input: Input) -> Result<(), Closed> {
        let mut state = self.lock();
        if state.closed {
            return Err(Closed);
        }
        if matches!(input, Input::Packet(_)) {
            if state.packets >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            state.packets += 1;
        }
        state.items.push_back(input);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next input, waiting at most `timeout` for one.
    pub(crate) fn pop(&self, timeout: Duration) -> Option<Input> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.items.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        let input = state.items.pop_front()?;
        if matches!(input, Input::Packet(_)) {
            state.packets -= 1;
        }
        Some(input)
    }

    /// The writer is done: feeders are told, and what still waits is let go.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.items.clear();
        state.packets = 0;
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where a recording's packets and commands go; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Feed(pub(crate) Arc<Queue>);

impl Feed {
    /// Queues `input`. A packet that finds the queue full is dropped and counted, and this
    /// still answers `Ok`; `Err` means the recording has finished (stop feeding it).
    pub fn send(&self, input: Input) -> Result<(), Closed> {
        self.0.push(input)
    }

    /// Packets dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sori_sfu::{MediaKind, TapId, TapPacket};
    use std::time::Instant;

    fn packet(seq: u64) -> Input {
        Input::Packet(TapPacket {
            tap: TapId(1),
            kind: MediaKind::Audio,
            codec: None,
            clock_rate: 48_000,
            seq,
            rtp_time: 0,
            marker: false,
            keyframe: false,
            arrival: Instant::now(),
            sender_report: None,
            payload: Arc::from(vec![0xfc]),
        })
    }

    fn seq(input: Option<Input>) -> Option<u64> {
        match input? {
            Input::Packet(p) => Some(p.seq),
            _ => None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_packets_but_keeps_commands() {
        let feed = Feed(Queue::new(2));
        for s in 0..5 {
            assert_eq!(feed.send(packet(s)), Ok(()));
        }
        assert_eq!(feed.send(Input::Stop), Ok(()));
        assert_eq!(feed.dropped(), 3);
        let q = &feed.0;
        assert_eq!(seq(q.pop(Duration::ZERO)), Some(0));
        assert_eq!(seq(q.pop(Duration::ZERO)), Some(1));
        assert!(matches!(q.pop(Duration::ZERO), Some(Input::Stop)));
        assert!(q.pop(Duration::ZERO).is_none());
        // Room again: the next packet is queued.
        assert_eq!(feed.send(packet(9)), Ok(()));
        assert_eq!(seq(q.pop(Duration::ZERO)), Some(9));
        assert_eq!(feed.dropped(), 3);
    }

    #[test]
    fn a_closed_queue_refuses_everything() {
        let feed = Feed(Queue::new(2));
        assert_eq!(feed.send(packet(0)), Ok(()));
        feed.0.close();
        assert_eq!(feed.send(packet(1)), Err(Closed));
        assert_eq!(feed.send(Input::Pause(true)), Err(Closed));
        assert!(feed.0.pop(Duration::ZERO).is_none());
    }
}

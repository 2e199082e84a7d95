//! The timer structure: one deadline per key, ordered, so the next due key is found without
//! scanning every peer.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Deadlines keyed by `K`, at most one per key.
#[derive(Debug)]
pub struct Deadlines<K> {
    ordered: BTreeSet<(Instant, K)>,
    by_key: HashMap<K, Instant>,
}

impl<K: Ord + Hash + Copy> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            ordered: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Copy> Deadlines<K> {
    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            if old == at {
                return;
            }
            self.ordered.remove(&(old, key));
        }
        self.ordered.insert((at, key));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.ordered.remove(&(old, key));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.ordered.first().map(|(t, _)| *t)
    }

    /// Removes and returns a key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.ordered.first()?;
        if at > now {
            return None;
        }
        self.ordered.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_keys_come_out_in_order_and_moves_replace() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        d.set(1u32, t + ms(30));
        d.set(2, t + ms(10));
        d.set(3, t + ms(20));
        d.set(1, t + ms(5));
        d.remove(3);
        assert_eq!(d.len(), 2);
        assert_eq!(d.next(), Some(t + ms(5)));
        assert_eq!(d.pop_due(t), None);
        assert_eq!(d.pop_due(t + ms(40)), Some(1));
        assert_eq!(d.pop_due(t + ms(40)), Some(2));
        assert_eq!(d.pop_due(t + ms(40)), None);
        assert!(d.is_empty());
    }
}

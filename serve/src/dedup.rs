//! Counting each tracking notice once: a bounded memory of the notices seen recently.

use std::collections::HashSet;
use std::sync::Mutex;

/// Remembers up to two generations of keys; when the current one is full it becomes the previous
/// one and the oldest is forgotten. Tokens expire, so only recent notices can repeat.
pub struct Dedup {
    generations: Mutex<(HashSet<u64>, HashSet<u64>)>,
    entries_max: usize,
}

impl Dedup {
    pub fn new(entries_max: usize) -> Dedup {
        Dedup { generations: Mutex::new((HashSet::new(), HashSet::new())), entries_max: entries_max.max(1) }
    }

    /// Whether `key` is new (and remembers it).
    pub fn first_time(&self, key: u64) -> bool {
        let mut guard = self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (current, previous) = &mut *guard;
        if current.contains(&key) || previous.contains(&key) {
            return false;
        }
        if current.len() >= self.entries_max {
            *previous = std::mem::take(current);
        }
        current.insert(key);
        true
    }

    /// Forgets `key`, so that its next notice counts: for a notice whose event could not be
    /// written, which the sender will retry.
    pub fn forget(&self, key: u64) {
        let mut guard = self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.0.remove(&key);
        guard.1.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_count_once_and_memory_stays_bounded() {
        let dedup = Dedup::new(2);
        assert!(dedup.first_time(1));
        assert!(!dedup.first_time(1));
        assert!(dedup.first_time(2));
        assert!(dedup.first_time(3)); // 1 and 2 move to the previous generation.
        assert!(!dedup.first_time(1));
        assert!(dedup.first_time(4));
        assert!(dedup.first_time(5)); // 3 and 4 are previous; 1 and 2 are forgotten.
        assert!(dedup.first_time(1));
        dedup.forget(1);
        assert!(dedup.first_time(1));
    }
}

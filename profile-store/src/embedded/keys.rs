//! The key filter: a concurrent Bloom filter of every user the store holds, so that a read for a
//! user never seen (a large share of ad requests) answers "absent" without a disk read.
//!
//! It is filled from disk by a background thread at open; until that pass is done it answers
//! "maybe" for every key. The writer adds each user it creates. Users removed by the TTL stay
//! in the filter: that only costs a disk read, never a wrong answer.

use std::sync::atomic::{AtomicBool, Ordering};

use fastbloom::AtomicBloomFilter;

use crate::profile::UserKey;

/// False positives at the configured number of users.
const FALSE_POSITIVE_RATE: f64 = 0.01;

pub struct KeyFilter {
    bloom: AtomicBloomFilter,
    ready: AtomicBool,
}

impl KeyFilter {
    pub fn new(users_max: u64) -> KeyFilter {
        let users_max = usize::try_from(users_max.max(1)).unwrap_or(usize::MAX);
        let bloom = AtomicBloomFilter::with_false_pos(FALSE_POSITIVE_RATE).expected_items(users_max);
        KeyFilter { bloom, ready: AtomicBool::new(false) }
    }

    /// Keys are xxh3 hashes already: they go into the filter as they are.
    pub fn insert(&self, key: UserKey) {
        self.bloom.insert_hash(key.0);
    }

    /// Called once every key on disk has been inserted.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// False only when the store certainly holds no profile for `key`.
    pub fn may_contain(&self, key: UserKey) -> bool {
        !self.is_ready() || self.bloom.contains_hash(key.0)
    }

    pub fn bytes(&self) -> usize {
        self.bloom.num_bits() / 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_few_false_positives_and_maybe_until_ready() {
        let filter = KeyFilter::new(10_000);
        let key = |i: u64| UserKey(xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()));
        for i in 0..10_000 {
            filter.insert(key(i));
        }
        assert!(filter.may_contain(key(1_000_000)), "not ready: everything may be there");
        filter.set_ready();
        assert!((0..10_000).all(|i| filter.may_contain(key(i))));
        let n_false = (10_000..110_000).filter(|&i| filter.may_contain(key(i))).count();
        assert!(n_false < 2_000, "{n_false} false positives in 100000");
    }
}

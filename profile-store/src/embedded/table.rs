//! One shard's map from user key to entry: open addressing with linear probing over 32-byte
//! slots, two to a cache line. A look-up reads the line its key names and, now and then, the
//! next one. hashbrown, used before, keeps its control bytes apart from its entries, so each
//! look-up there waited for two cache misses before it reached the profile. Keys are xxh3
//! hashes, spread evenly, so their low bits pick the slot; the memory layer picks the shard
//! from the top bits.

use std::mem;

/// Slots of a table once it holds anything.
const SLOTS_MIN: usize = 16;
/// The table grows (doubles) before more than this share of its slots would be taken: linear
/// probing's runs stay short up to three quarters full.
const LOAD_NUM: usize = 3;
const LOAD_DEN: usize = 4;

pub(super) struct Table<V> {
    /// A power of two long, or empty.
    slots: Box<[Slot<V>]>,
    len: usize,
}

/// Where a table's slots start and the mask of its length (for an empty table: a dangling
/// pointer and a mask of all ones, which only a prefetch may use).
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub slots: *const u8,
    pub mask: usize,
}

#[repr(align(32))]
struct Slot<V> {
    key: u64,
    /// `None`: the slot is free.
    value: Option<V>,
}

impl<V> Slot<V> {
    const FREE: Slot<V> = Slot { key: 0, value: None };
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table { slots: Box::new([]), len: 0 }
    }
}

impl<V> Table<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots, taken or free: positions run from 0 to this.
    #[cfg(test)]
    fn n_slots(&self) -> usize {
        self.slots.len()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot a look-up of `key` reads first. Only for a non-empty table.
    fn home(&self, key: u64) -> usize {
        key as usize & self.mask()
    }

    /// The position of `key`'s slot. Every run of taken slots ends in a free one, as the table
    /// is never more than three quarters full.
    fn find(&self, key: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut pos = self.home(key);
        loop {
            let slot = &self.slots[pos];
            match slot.value {
                None => return None,
                Some(_) if slot.key == key => return Some(pos),
                Some(_) => pos = (pos + 1) & self.mask(),
            }
        }
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        self.find(key).and_then(|pos| self.slots[pos].value.as_ref())
    }

    /// Where the slots are and the mask that picks one: what [`Table::first_read`] needs,
    /// for a reader that keeps a copy outside the lock.
    pub fn layout(&self) -> Layout {
        Layout { slots: self.slots.as_ptr().cast(), mask: self.mask() }
    }

    /// The address a look-up of `key` reads first in a table laid out as `layout` says, for a
    /// prefetch: computed without dereferencing anything, so a stale layout is harmless.
    pub fn first_read(layout: Layout, key: u64) -> *const u8 {
        // Wrapping: an empty table's mask is all ones, and a prefetch never faults wherever it points.
        layout.slots.wrapping_add((key as usize & layout.mask).wrapping_mul(mem::size_of::<Slot<V>>()))
    }

    /// Sets `key`'s value; returns the value it replaced.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if let Some(pos) = self.find(key) {
            return self.slots[pos].value.replace(value);
        }
        if (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow();
        }
        self.place(key, value);
        self.len += 1;
        None
    }

    /// Puts a key known to be absent into the first free slot of its run.
    fn place(&mut self, key: u64, value: V) {
        let mut pos = self.home(key);
        while self.slots[pos].value.is_some() {
            pos = (pos + 1) & self.mask();
        }
        self.slots[pos] = Slot { key, value: Some(value) };
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(SLOTS_MIN);
        let old = mem::replace(&mut self.slots, (0..n).map(|_| Slot::FREE).collect());
        for slot in old.into_vec() {
            if let Some(value) = slot.value {
                self.place(slot.key, value);
            }
        }
    }

    /// Removes `key`; returns its value. The slots after it in its run move back into the gap
    /// where that keeps them reachable from their home (backward-shift deletion), so no
    /// look-up ever meets a tombstone.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let mut gap = self.find(key)?;
        let value = self.slots[gap].value.take();
        self.len -= 1;
        let mask = self.mask();
        let mut pos = gap;
        loop {
            pos = (pos + 1) & mask;
            if self.slots[pos].value.is_none() {
                break;
            }
            // The entry at `pos` may fill the gap when the gap lies between its home and `pos`.
            let from_home = pos.wrapping_sub(self.home(self.slots[pos].key)) & mask;
            let from_gap = pos.wrapping_sub(gap) & mask;
            if from_home >= from_gap {
                self.slots.swap(gap, pos);
                gap = pos;
            }
        }
        value
    }

    /// Every entry with its position and key, from position `start` round to just before it.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = (usize, u64, &V)> {
        let start = if self.slots.is_empty() { 0 } else { start % self.slots.len() };
        let (tail, head) = self.slots.split_at(start);
        let positions = (start..self.slots.len()).chain(0..start);
        positions
            .zip(head.iter().chain(tail))
            .filter_map(|(pos, slot)| Some((pos, slot.key, slot.value.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Get(u64),
    }

    /// Keys from a small set, with low bits that collide on purpose: long runs, runs that wrap
    /// round the end of the table, and removals in their middle.
    fn key() -> impl Strategy<Value = u64> {
        (0u64..64, 0u64..4).prop_map(|(low, high)| (high << 60) | low)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => key().prop_map(Op::Remove),
            2 => key().prop_map(Op::Get),
        ]
    }

    /// Every entry is reachable from its home without crossing a free slot.
    fn check_runs(table: &Table<u32>) {
        for (pos, key, _) in table.iter_from(0) {
            let mut at = table.home(key);
            while at != pos {
                assert!(table.slots[at].value.is_some(), "key {key:#x} at {pos} is cut off from its home");
                at = (at + 1) & table.mask();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_table_answers_like_a_hash_map(ops in proptest::collection::vec(op(), 1..300)) {
            let (mut table, mut model) = (Table::default(), HashMap::new());
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(table.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(table.remove(k), model.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(table.get(k), model.get(&k)),
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.len() * LOAD_DEN <= table.n_slots() * LOAD_NUM);
                check_runs(&table);
            }
            let mut seen: Vec<(u64, u32)> = table.iter_from(5).map(|(_, k, v)| (k, *v)).collect();
            let mut expected: Vec<(u64, u32)> = model.into_iter().collect();
            seen.sort();
            expected.sort();
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn iteration_from_a_position_visits_every_entry_once_in_slot_order() {
        let mut table = Table::default();
        for k in 0..40u64 {
            table.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), k as u32);
        }
        for start in [0, 1, 17, table.n_slots() - 1, table.n_slots() + 3] {
            let positions: Vec<usize> = table.iter_from(start).map(|(pos, _, _)| pos).collect();
            assert_eq!(positions.len(), 40);
            let first = start % table.n_slots();
            let rotated: Vec<usize> =
                positions.iter().map(|p| (p + table.n_slots() - first) % table.n_slots()).collect();
            assert!(rotated.windows(2).all(|w| w[0] < w[1]), "from {start}: {positions:?}");
        }
        assert_eq!(Table::<u32>::default().iter_from(3).count(), 0);
        // An empty table's layout gives some address, without overflowing.
        let _ = Table::<u32>::first_read(Table::<u32>::default().layout(), u64::MAX);
    }

    #[test]
    fn a_slot_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot<super::super::memory::Entry>>(), 32);
    }
}

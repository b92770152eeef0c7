//! The per-user counters of the streaming pass: an open-addressing hash table keyed by (group,
//! user key) with each key beside its counters, fed through a short queue that prefetches each
//! update's slot before applying it.
//!
//! Why not `HashMap`: with millions of users every update is a cache miss, and a SwissTable
//! takes two (the control bytes, then the entry). Here a slot holds its key, so an update is one
//! miss, and the queue lets [`PREFETCH_DEPTH`] of those misses be in flight at once instead of
//! one after another. Measured with `adsnap-bench abtest` (see ARCHITECTURE.md).

use adsnap_events::EventKind;

/// Updates queued between the prefetch of a slot and its update: enough to cover a memory
/// round trip at the rate updates arrive.
pub const PREFETCH_DEPTH: usize = 16;
/// Slots of a new table.
const SLOTS_INITIAL: usize = 1 << 12;
/// The table doubles when more than this share of it (in tenths) is taken: linear probing stays
/// short below about 70%.
const LOAD_TENTHS_MAX: usize = 7;

/// One user's counters in one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounters {
    pub revenue_micros: i64,
    pub requests: u32,
    pub filled: u32,
    pub impressions: u32,
    pub clicks: u32,
    pub installs: u32,
}

impl UserCounters {
    fn add(&mut self, update: &Update) {
        let bump = |n: &mut u32| *n = n.saturating_add(1);
        match update.kind {
            EventKind::Decision => {
                bump(&mut self.requests);
                self.filled = self.filled.saturating_add(u32::from(update.filled));
            }
            EventKind::Impression => bump(&mut self.impressions),
            EventKind::Click => bump(&mut self.clicks),
            EventKind::Install => bump(&mut self.installs),
            EventKind::Win | EventKind::Bill | EventKind::Loss => {}
        }
        self.revenue_micros = self.revenue_micros.saturating_add(update.revenue_micros);
    }
}

/// What one event adds to its user.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub group: u16,
    pub user_key: u64,
    pub kind: EventKind,
    pub filled: bool,
    pub revenue_micros: i64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    user_key: u64,
    /// The group plus one; 0 marks an empty slot.
    group_plus_one: u32,
    counters: UserCounters,
}

/// The table and its prefetch queue.
pub struct UserTable {
    slots: Vec<Slot>,
    n_used: usize,
    queue: [Option<(u64, Update)>; PREFETCH_DEPTH],
    queue_head: usize,
}

impl Default for UserTable {
    fn default() -> Self {
        UserTable {
            slots: vec![Slot::default(); SLOTS_INITIAL],
            n_used: 0,
            queue: [None; PREFETCH_DEPTH],
            queue_head: 0,
        }
    }
}

/// Mixes the key so both the group and every bit of the user key reach the high bits, which
/// pick the slot. User keys are xxh3 hashes already; the multiply only folds the group in.
fn hash(group: u16, user_key: u64) -> u64 {
    (user_key ^ u64::from(group).wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

impl UserTable {
    fn slot_idx(&self, hash: u64) -> usize {
        // The high bits of the hash, as many as the (power of two) table needs.
        (hash >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// Queues an update: prefetches its slot now and applies the update queued
    /// `PREFETCH_DEPTH` updates ago, whose slot has had time to arrive.
    pub fn push(&mut self, update: Update) {
        let hash = hash(update.group, update.user_key);
        prefetch(self.slots.as_ptr().wrapping_add(self.slot_idx(hash)));
        let head = self.queue_head;
        self.queue_head = (head + 1) % PREFETCH_DEPTH;
        if let Some((hash, earlier)) = self.queue[head].replace((hash, update)) {
            self.apply(hash, &earlier);
        }
    }

    /// Applies every queued update.
    pub fn flush(&mut self) {
        for idx in 0..PREFETCH_DEPTH {
            let slot = (self.queue_head + idx) % PREFETCH_DEPTH;
            if let Some((hash, update)) = self.queue[slot].take() {
                self.apply(hash, &update);
            }
        }
    }

    fn apply(&mut self, hash: u64, update: &Update) {
        if (self.n_used + 1) * 10 > self.slots.len() * LOAD_TENTHS_MAX {
            self.grow();
        }
        let group_plus_one = u32::from(update.group) + 1;
        let mask = self.slots.len() - 1;
        let mut idx = self.slot_idx(hash);
        loop {
            let slot = &mut self.slots[idx];
            if slot.group_plus_one == group_plus_one && slot.user_key == update.user_key {
                slot.counters.add(update);
                return;
            }
            if slot.group_plus_one == 0 {
                *slot = Slot { user_key: update.user_key, group_plus_one, counters: UserCounters::default() };
                slot.counters.add(update);
                self.n_used += 1;
                return;
            }
            idx = (idx + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n_slots = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n_slots]);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.group_plus_one != 0) {
            let group = (slot.group_plus_one - 1) as u16;
            let mut idx = self.slot_idx(hash(group, slot.user_key));
            while self.slots[idx].group_plus_one != 0 {
                idx = (idx + 1) & mask;
            }
            self.slots[idx] = slot;
        }
    }

    /// Every (group, counters) in the table; queued updates must be flushed first.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &UserCounters)> {
        self.slots
            .iter()
            .filter(|s| s.group_plus_one != 0)
            .map(|s| ((s.group_plus_one - 1) as u16, &s.counters))
    }

    #[cfg(test)]
    pub fn n_users(&self) -> usize {
        self.n_used
    }
}

/// Asks for the cache line of `slot` ahead of its use; a hint that never faults.
#[inline(always)]
fn prefetch(slot: *const Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program, cannot fault, and is
    // defined for any address, so it needs no valid pointer.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn kind(code: u8) -> EventKind {
        EventKind::ALL[usize::from(code) % EventKind::ALL.len()]
    }

    proptest! {
        /// The table, through its queue and growth, holds exactly what a HashMap would.
        #[test]
        fn matches_a_hash_map(updates in prop::collection::vec((0u16..4, 0u64..3000, 0u8..7, any::<bool>(), -5i64..100), 0..6000)) {
            let mut table = UserTable::default();
            let mut reference: HashMap<(u16, u64), UserCounters> = HashMap::new();
            for &(group, user, kind_code, filled, revenue_micros) in &updates {
                // Spread users over the whole key space, as xxh3 keys are.
                let user_key = user.wrapping_mul(0x2545_f491_4f6c_dd1d);
                let update = Update { group, user_key, kind: kind(kind_code), filled, revenue_micros };
                table.push(update);
                reference.entry((group, user_key)).or_default().add(&update);
            }
            table.flush();
            prop_assert_eq!(table.n_users(), reference.len());
            let mut seen: Vec<(u16, UserCounters)> = table.iter().map(|(g, c)| (g, *c)).collect();
            let mut expected: Vec<(u16, UserCounters)> = reference.iter().map(|((g, _), c)| (*g, *c)).collect();
            let order = |v: &mut Vec<(u16, UserCounters)>| v.sort_by_key(|(g, c)| (*g, c.requests, c.filled, c.impressions, c.clicks, c.installs, c.revenue_micros));
            order(&mut seen);
            order(&mut expected);
            prop_assert_eq!(seen, expected);
        }
    }
}

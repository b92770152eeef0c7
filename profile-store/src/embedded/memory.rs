//! The memory layer: decoded profiles (and remembered absences) by user key, in shards behind
//! read-write locks, with a byte budget enforced by second-chance (CLOCK) eviction.
//!
//! Only the writer thread replaces entries or evicts; readers only add what they read from disk,
//! and only if nothing is there yet and no eviction ran in their shard meanwhile (the shard's
//! epoch). That is what keeps a reader from putting back a copy older than the writer's.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::table::{Layout, Table};
use crate::profile::{Profile, UserKey};

/// Shards of the memory layer: enough that a reader rarely meets the writer in the same one.
const SHARDS_LEN: usize = 256;
/// Eviction starts above this share of the budget and brings the layer down to the next one.
/// Readers add entries only while their shard is under its share of the whole budget, so the
/// gap between the two is where newly active users come in.
const EVICT_ABOVE_PERCENT: usize = 95;
pub const EVICT_TO_PERCENT: usize = 90;
/// Victims removed under one write lock: bounds how long a reader can wait for the writer.
const EVICT_CHUNK_LEN: usize = 256;
/// What an entry costs beyond the profile's own fields and lists: the map slot and key, the Arc
/// header, and the allocator's rounding and headers of the four allocations (measured: a 10M
/// user run held about 1.3x the bytes counted with 64 here).
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// What the memory layer knows about a user.
#[derive(Clone, Debug)]
pub enum Cached {
    Present(Arc<Profile>),
    /// The store has no profile for this user (as of the last read or write).
    Absent,
}

impl Cached {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD_BYTES
            + match self {
                Cached::Present(profile) => profile.heap_bytes(),
                Cached::Absent => 0,
            }
    }
}

pub(super) struct Entry {
    value: Cached,
    /// Set by readers, cleared by the eviction scan: a second chance for recently read entries.
    touched: AtomicBool,
}

#[derive(Default)]
struct ShardMap {
    map: Table<Entry>,
}

#[derive(Default)]
struct Shard {
    map: RwLock<ShardMap>,
    /// Bumped by every eviction in this shard; see the module comment.
    epoch: AtomicU64,
    bytes: AtomicUsize,
    /// The CLOCK hand: where the next eviction scan starts, in the map's iteration order.
    hand: AtomicUsize,
    /// The table's slots and mask (`table::Layout`), stored under the write lock after every
    /// insert (the only change that moves them), so that `prefetch` takes no lock. A prefetch
    /// reads nothing the program sees and never faults, so a stale copy costs a wasted hint.
    slots: AtomicPtr<u8>,
    slots_mask: AtomicUsize,
}

impl Shard {
    fn publish_layout(&self, map: &ShardMap) {
        let layout = map.map.layout();
        self.slots.store(layout.slots.cast_mut(), Ordering::Relaxed);
        self.slots_mask.store(layout.mask, Ordering::Relaxed);
    }
}

/// The sharded map. Cheap to read from any thread.
pub struct MemoryLayer {
    shards: Box<[Shard]>,
    bytes_max: usize,
}

impl MemoryLayer {
    pub fn new(bytes_max: u64) -> MemoryLayer {
        let shards = (0..SHARDS_LEN).map(|_| Shard::default()).collect();
        MemoryLayer { shards, bytes_max: usize::try_from(bytes_max).unwrap_or(usize::MAX) }
    }

    fn shard_idx(key: UserKey) -> usize {
        // Keys are xxh3 hashes, so the top bits spread evenly; the table uses the low ones.
        (key.0 >> 56) as usize % SHARDS_LEN
    }

    fn shard(&self, key: UserKey) -> &Shard {
        &self.shards[Self::shard_idx(key)]
    }

    /// The entry for `key`, marking it recently used. Takes a read lock and clones an Arc.
    pub fn get(&self, key: UserKey) -> Option<Cached> {
        let map = self.shard(key).map.read();
        let entry = map.map.get(key.0)?;
        if !entry.touched.load(Ordering::Relaxed) {
            entry.touched.store(true, Ordering::Relaxed);
        }
        Some(entry.value.clone())
    }

    /// Asks the CPU to bring the slot a `get(key)` reads first into cache, so that its miss
    /// overlaps with what the caller does meanwhile. Changes nothing a look-up sees.
    pub fn prefetch(&self, key: UserKey) {
        let shard = self.shard(key);
        let layout = Layout {
            slots: shard.slots.load(Ordering::Relaxed),
            mask: shard.slots_mask.load(Ordering::Relaxed),
        };
        prefetch_read(Table::<Entry>::first_read(layout, key.0));
    }

    /// The shard's epoch, to pass to `insert_read` after a disk read.
    pub fn epoch(&self, key: UserKey) -> u64 {
        self.shard(key).epoch.load(Ordering::Acquire)
    }

    /// Every shard's epoch now: a long scan of the disk passes `epoch_in(&epochs, key)` to
    /// `insert_read`, so that it adds nothing to a shard where an eviction ran since it began.
    pub fn epochs(&self) -> Box<[u64]> {
        self.shards.iter().map(|s| s.epoch.load(Ordering::Acquire)).collect()
    }

    pub fn epoch_in(epochs: &[u64], key: UserKey) -> u64 {
        epochs[Self::shard_idx(key)]
    }

    /// Whether the layer holds less than `percent` of its budget.
    pub fn is_below(&self, percent: usize) -> bool {
        self.bytes() < self.bytes_max / 100 * percent
    }

    /// Adds what a reader found on disk, unless the writer has an entry for it or evicted in
    /// this shard since `epoch` (the disk copy may then be older than what was evicted... and
    /// persisted, but also maybe older than the writer's). Returns what the layer now holds.
    pub fn insert_read(&self, key: UserKey, value: Cached, epoch: u64) -> Cached {
        let shard = self.shard(key);
        let mut map = shard.map.write();
        if let Some(entry) = map.map.get(key.0) {
            return entry.value.clone();
        }
        if shard.epoch.load(Ordering::Acquire) != epoch {
            return value;
        }
        if shard.bytes.load(Ordering::Relaxed) + value.bytes() > self.bytes_max / SHARDS_LEN {
            return value;
        }
        shard.bytes.fetch_add(value.bytes(), Ordering::Relaxed);
        map.map.insert(key.0, Entry { value: value.clone(), touched: AtomicBool::new(true) });
        shard.publish_layout(&map);
        value
    }

    /// Sets the entry for `key` (writer only).
    pub fn put(&self, key: UserKey, value: Cached) {
        let shard = self.shard(key);
        let added = value.bytes();
        let mut map = shard.map.write();
        let old = map.map.insert(key.0, Entry { value, touched: AtomicBool::new(true) });
        shard.publish_layout(&map);
        drop(map);
        shard.bytes.fetch_add(added, Ordering::Relaxed);
        if let Some(old) = old {
            shard.bytes.fetch_sub(old.value.bytes(), Ordering::Relaxed);
        }
    }

    /// Removes the entry for `key` (writer only).
    #[cfg(test)]
    pub fn remove(&self, key: UserKey) {
        let shard = self.shard(key);
        let mut map = shard.map.write();
        shard.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(old) = map.map.remove(key.0) {
            shard.bytes.fetch_sub(old.value.bytes(), Ordering::Relaxed);
        }
    }

    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.map.read().map.len()).sum()
    }

    /// Evicts entries not read recently until the layer is under 90% of its budget, never a
    /// `pinned` one (not yet on disk: an evicted entry is read again from disk). Writer only.
    /// Returns the number of entries evicted.
    pub fn evict_if_over_budget(&self, pinned: &dyn Fn(UserKey) -> bool) -> usize {
        if self.bytes() <= self.bytes_max / 100 * EVICT_ABOVE_PERCENT {
            return 0;
        }
        let shard_target = self.bytes_max / 100 * EVICT_TO_PERCENT / SHARDS_LEN;
        self.shards.iter().map(|shard| evict_shard(shard, shard_target, pinned)).sum()
    }
}

/// A hint to the CPU to load the cache line at `ptr`; never faults, whatever `ptr` is.
#[inline]
fn prefetch_read(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Second-chance eviction in one shard: untouched entries go, touched ones lose their mark.
/// Victims are chosen under the read lock (readers keep going) and removed in short chunks.
fn evict_shard(shard: &Shard, target_bytes: usize, pinned: &dyn Fn(UserKey) -> bool) -> usize {
    let mut n_evicted = 0;
    // Two passes at most: the first clears every mark, so the second finds victims.
    for _ in 0..2 {
        let excess = shard.bytes.load(Ordering::Relaxed).saturating_sub(target_bytes);
        if excess == 0 {
            break;
        }
        let victims = choose_victims(shard, excess, pinned);
        for chunk in victims.chunks(EVICT_CHUNK_LEN) {
            let mut map = shard.map.write();
            shard.epoch.fetch_add(1, Ordering::AcqRel);
            for key in chunk {
                if let Some(old) = map.map.remove(*key) {
                    shard.bytes.fetch_sub(old.value.bytes(), Ordering::Relaxed);
                    n_evicted += 1;
                }
            }
        }
    }
    n_evicted
}

/// Sweeps from the hand, clearing marks and picking unmarked entries until `excess_bytes` are
/// chosen; the hand stays where the sweep stopped, so every entry gets its turn.
fn choose_victims(shard: &Shard, excess_bytes: usize, pinned: &dyn Fn(UserKey) -> bool) -> Vec<u64> {
    let map = shard.map.read();
    let start = shard.hand.load(Ordering::Relaxed);
    let (mut victims, mut freed, mut stop) = (Vec::new(), 0, start);
    for (pos, key, entry) in map.map.iter_from(start) {
        stop = pos + 1;
        if entry.touched.swap(false, Ordering::Relaxed) || pinned(UserKey(key)) {
            continue;
        }
        freed += entry.value.bytes();
        victims.push(key);
        if freed >= excess_bytes {
            break;
        }
    }
    shard.hand.store(stop, Ordering::Relaxed);
    victims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileFields;

    fn profile(n_segments: u32) -> Cached {
        let fields = ProfileFields { segments: (0..n_segments).collect(), ..Default::default() };
        Cached::Present(Arc::new(Profile::from_fields(fields).unwrap()))
    }

    fn key(i: u64) -> UserKey {
        UserKey(xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()))
    }

    #[test]
    fn a_reader_does_not_overwrite_the_writer_nor_resurrect_after_eviction() {
        let layer = MemoryLayer::new(1 << 20);
        let epoch = layer.epoch(key(1));
        layer.put(key(1), profile(3));
        let held = layer.insert_read(key(1), Cached::Absent, epoch);
        assert!(matches!(held, Cached::Present(p) if p.segments().len() == 3));
        let epoch = layer.epoch(key(1));
        layer.remove(key(1));
        layer.insert_read(key(1), profile(1), epoch);
        assert!(layer.get(key(1)).is_none(), "a read from before the removal must not be kept");
        let epoch = layer.epoch(key(1));
        layer.insert_read(key(1), profile(1), epoch);
        assert!(layer.get(key(1)).is_some());
    }

    #[test]
    fn eviction_keeps_the_budget_and_prefers_entries_not_read() {
        let per_entry = profile(8).bytes();
        let layer = MemoryLayer::new((per_entry * 2000) as u64);
        for i in 0..4000 {
            layer.put(key(i), profile(8));
        }
        assert_eq!(layer.bytes(), per_entry * 4000);
        // Clear every mark, then read a hot set: it must survive.
        layer.evict_if_over_budget(&|_| false);
        let before = layer.len();
        for i in 0..4000 {
            layer.put(key(i), profile(8));
        }
        for _ in 0..2 {
            layer.shards.iter().for_each(|s| {
                s.map
                    .read()
                    .map
                    .iter_from(0)
                    .for_each(|(_, _, entry)| entry.touched.store(false, Ordering::Relaxed))
            });
        }
        for i in 0..100 {
            layer.get(key(i));
        }
        let n_evicted = layer.evict_if_over_budget(&|k| k == key(3_999));
        assert!(n_evicted >= 2000, "evicted {n_evicted}");
        assert!(layer.bytes() <= per_entry * 2000, "{} bytes", layer.bytes());
        assert!(before <= 2000);
        let hot_kept = (0..100).filter(|&i| layer.get(key(i)).is_some()).count();
        assert!(hot_kept >= 90, "only {hot_kept} of 100 hot entries kept");
        assert!(layer.get(key(3_999)).is_some(), "a pinned entry was evicted");
    }

    #[test]
    fn the_layout_prefetch_reads_follows_the_table_as_it_grows() {
        let layer = MemoryLayer::new(1 << 30);
        let published_is_live = |k: UserKey| {
            let shard = layer.shard(k);
            let live = shard.map.read().map.layout();
            assert_eq!(shard.slots.load(Ordering::Relaxed).cast_const(), live.slots);
            assert_eq!(shard.slots_mask.load(Ordering::Relaxed), live.mask);
        };
        for i in 0..6000 {
            if i % 2 == 0 {
                layer.put(key(i), profile(1));
            } else {
                layer.insert_read(key(i), Cached::Absent, layer.epoch(key(i)));
            }
            published_is_live(key(i));
            layer.prefetch(key(i));
            assert!(layer.get(key(i)).is_some());
        }
    }
}

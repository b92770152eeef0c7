//! The writer thread: the only code that changes profiles. It applies queued updates to the
//! memory layer at once (copy on write, so readers keep the version they hold), collects the
//! changed profiles, and persists them to disk in one batch per interval. See STATE.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::memory::Cached;
use super::Core;
use crate::error::{ProfileError, RecordError};
use crate::metrics::Dropped;
use crate::profile::{Profile, ProfileUpdate, UserKey};

/// Work for the writer other than updates; each carries its reply, so at most one is pending
/// per caller and the channel needs no bound of its own.
pub enum Control {
    /// Apply every update queued before this message, persist, and reply.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Replace these profiles (bulk import), persist, and reply.
    Import(Vec<(UserKey, Profile)>, oneshot::Sender<Result<usize, String>>),
}

/// What the writer knows about a user before applying an update.
enum Current {
    Present(Arc<Profile>),
    Absent,
    Unreadable(RecordError),
    DiskFailed(ProfileError),
}

pub struct Writer {
    core: Arc<Core>,
    /// Changed profiles not yet on disk; `None` is a removal.
    dirty: FxHashMap<UserKey, Option<Arc<Profile>>>,
    last_persist: Instant,
    /// The last persist error, shown by health until a persist succeeds.
    pub last_error: Arc<Mutex<Option<String>>>,
}

impl Writer {
    pub fn new(core: Arc<Core>, last_error: Arc<Mutex<Option<String>>>) -> Writer {
        Writer { core, dirty: FxHashMap::default(), last_persist: Instant::now(), last_error }
    }

    /// Runs until both channels are closed (the store was dropped), then persists what is left.
    pub fn run(mut self, updates: Receiver<ProfileUpdate>, control: Receiver<Control>) {
        let interval = Duration::from_millis(self.core.config.embedded.persist_interval_ms.max(1));
        loop {
            let wait = interval.saturating_sub(self.last_persist.elapsed());
            select! {
                recv(updates) -> update => match update {
                    Ok(update) => self.apply(&update),
                    Err(_) => break,
                },
                recv(control) -> message => match message {
                    Ok(message) => self.control(message, &updates),
                    Err(_) => break,
                },
                default(wait) => {}
            }
            self.core.metrics.write_queue_len.set(updates.len() as i64);
            let batch_full = self.dirty.len() >= self.core.config.embedded.persist_batch_len_max;
            if batch_full || self.last_persist.elapsed() >= interval {
                // A failed persist keeps the batch and tries again next interval.
                let _ = self.persist();
            }
        }
        for update in updates.try_iter() {
            self.apply(&update);
        }
        if let Err(error) = self.persist() {
            tracing::error!(%error, "profile writer: last persist before shutdown failed");
        }
    }

    fn control(&mut self, message: Control, updates: &Receiver<ProfileUpdate>) {
        match message {
            Control::Flush(reply) => {
                // Only what was queued before the flush: under load the queue never empties.
                for update in updates.try_iter().take(updates.len()) {
                    self.apply(&update);
                }
                let _ = reply.send(self.persist().map_err(|e| e.to_string()));
            }
            Control::Import(profiles, reply) => {
                let n = profiles.len();
                for (key, profile) in profiles {
                    self.set(key, Arc::new(profile));
                }
                let _ = reply.send(self.persist().map(|()| n).map_err(|e| e.to_string()));
            }
        }
    }

    fn current(&self, key: UserKey) -> Current {
        if let Some(dirty) = self.dirty.get(&key) {
            return dirty.clone().map_or(Current::Absent, Current::Present);
        }
        if let Some(cached) = self.core.memory.get(key) {
            return match cached {
                Cached::Present(profile) => Current::Present(profile),
                Cached::Absent => Current::Absent,
            };
        }
        match self.core.disk.get(key) {
            Ok(None) => Current::Absent,
            Ok(Some(bytes)) => match crate::record::decode(&bytes) {
                Ok(profile) => Current::Present(Arc::new(profile)),
                Err(error) => Current::Unreadable(error),
            },
            Err(error) => Current::DiskFailed(error),
        }
    }

    /// Applies one update to the user's current profile (or a new one).
    pub fn apply(&mut self, update: &ProfileUpdate) {
        let key = update.key();
        let now_unix_s = update.now_unix_s();
        if !self.dirty.contains_key(&key) && self.dirty.len() >= self.core.config.embedded.dirty_len_max {
            self.core.metrics.dropped(Dropped::BacklogFull);
            return;
        }
        let mut profile = match self.current(key) {
            Current::Present(p) if !p.is_idle(self.core.config.idle_ttl_s, now_unix_s) => Profile::clone(&p),
            Current::Present(_) | Current::Absent => Profile::default(),
            Current::Unreadable(RecordError::UnknownVersion { found }) => {
                tracing::warn!(
                    user_key = key.0,
                    version = found,
                    "profile update skipped: record of a newer layout"
                );
                self.core.metrics.dropped(Dropped::UnknownVersion);
                return;
            }
            Current::Unreadable(error) => {
                tracing::warn!(user_key = key.0, %error, "unreadable profile replaced by a new one");
                self.core.metrics.records_replaced.inc();
                Profile::default()
            }
            Current::DiskFailed(error) => {
                tracing::warn!(user_key = key.0, %error, "profile update dropped: disk read failed");
                self.core.metrics.dropped(Dropped::WriteFailed);
                return;
            }
        };
        if !update.apply(&mut profile) {
            self.core.metrics.dropped(Dropped::ListFull);
        }
        self.set(key, Arc::new(profile));
        self.core.metrics.updates_applied.inc();
    }

    fn set(&mut self, key: UserKey, profile: Arc<Profile>) {
        self.core.memory.put(key, Cached::Present(profile.clone()));
        self.dirty.insert(key, Some(profile));
    }

    /// Writes every changed profile in one batch and syncs it; then, with nothing unwritten in
    /// memory, evicts down to the budget.
    pub fn persist(&mut self) -> Result<(), ProfileError> {
        self.last_persist = Instant::now();
        if self.dirty.is_empty() {
            self.publish_memory();
            return Ok(());
        }
        let mut puts = Vec::with_capacity(self.dirty.len());
        let mut removes = Vec::new();
        for (key, profile) in &self.dirty {
            match profile {
                Some(profile) => puts.push((*key, crate::record::encode(profile))),
                None => removes.push(*key),
            }
        }
        match self.core.disk.write(&puts, &removes) {
            Ok(()) => {
                self.dirty.clear();
                self.core.metrics.writes.inc();
                *self.last_error.lock() = None;
                let n_evicted = self.core.memory.evict_if_over_budget();
                self.core.metrics.evicted.inc_by(n_evicted as u64);
                self.publish_memory();
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, n_profiles = self.dirty.len(), "persisting profiles failed; will retry");
                self.core.metrics.write_failures.inc();
                *self.last_error.lock() = Some(error.to_string());
                Err(error)
            }
        }
    }

    fn publish_memory(&self) {
        self.core.metrics.memory_bytes.set(self.core.memory.bytes() as i64);
        self.core.metrics.memory_entries.set(self.core.memory.len() as i64);
    }
}

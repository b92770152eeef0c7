//! The writer thread: the only code that changes profiles. It applies queued updates to the
//! memory layer at once (copy on write, so readers keep the version they hold) and collects the
//! changed profiles; a persister thread writes each collected batch to disk and syncs it while
//! the writer goes on applying updates. See STATE.md.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
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
    /// Apply every update queued before this message, then delete these users' profiles,
    /// persist, and reply with how many existed.
    Forget(Vec<UserKey>, oneshot::Sender<Result<usize, String>>),
}

/// What the writer knows about a user before applying an update.
enum Current {
    Present(Arc<Profile>),
    Absent,
    Unreadable(RecordError),
    DiskFailed(ProfileError),
}

/// A user's change not yet on disk: the new profile, or `None` for a deleted one.
type Change = Option<Arc<Profile>>;
type Batch = Arc<FxHashMap<UserKey, Change>>;

/// How long a busy writer lets updates gather before applying them: the delay before a
/// reader sees an update (frequency caps are counted a tick late at most).
const APPLY_TICK: Duration = Duration::from_millis(1);

pub struct Writer {
    core: Arc<Core>,
    /// Changed profiles not yet handed to the persister.
    dirty: FxHashMap<UserKey, Change>,
    /// The batch the persister is writing: at most one, so the disk is never more than one
    /// batch behind and a failed batch can be merged back under newer changes.
    in_flight: Option<Batch>,
    to_persister: Option<Sender<Batch>>,
    from_persister: Receiver<Result<(), ProfileError>>,
    persister: Option<JoinHandle<()>>,
    last_dispatch: Instant,
    /// The last persist error, shown by health until a persist succeeds.
    last_error: Arc<Mutex<Option<String>>>,
}

/// Writes batches as they come (blocking: encode, one fjall batch, fdatasync).
fn persist_loop(core: Arc<Core>, batches: Receiver<Batch>, results: Sender<Result<(), ProfileError>>) {
    for batch in batches {
        let started = Instant::now();
        let records: Vec<(UserKey, Option<Vec<u8>>)> = batch
            .iter()
            .map(|(key, profile)| (*key, profile.as_deref().map(crate::record::encode)))
            .collect();
        let written = core.disk.write(&records);
        let elapsed = started.elapsed();
        core.metrics.persist_duration_s.observe(elapsed.as_secs_f64());
        tracing::debug!(
            n_profiles = records.len(),
            elapsed_us = elapsed.as_micros() as u64,
            "profiles persisted"
        );
        if results.send(written).is_err() {
            return;
        }
    }
}

impl Writer {
    pub fn new(core: Arc<Core>, last_error: Arc<Mutex<Option<String>>>) -> Result<Writer, ProfileError> {
        let (to_persister, batches) = crossbeam_channel::bounded(1);
        let (results, from_persister) = crossbeam_channel::bounded(1);
        let persister_core = core.clone();
        let persister = std::thread::Builder::new()
            .name("profile-persist".into())
            .spawn(move || persist_loop(persister_core, batches, results))
            .map_err(|e| ProfileError::Config(format!("cannot start the profile persister thread: {e}")))?;
        Ok(Writer {
            core,
            dirty: FxHashMap::default(),
            in_flight: None,
            to_persister: Some(to_persister),
            from_persister,
            persister: Some(persister),
            last_dispatch: Instant::now(),
            last_error,
        })
    }

    /// Runs until both channels are closed (the store was dropped), then persists what is left.
    ///
    /// While updates keep coming, the writer takes them a tick (`APPLY_TICK`) at a time instead
    /// of being woken for each: under load a wake-up per request would cost the request path's
    /// core more than applying the update. Once a tick finds the queue empty it waits on the
    /// queue again, so an idle store sleeps and a lone update is applied at once.
    pub fn run(mut self, updates: Receiver<ProfileUpdate>, control: Receiver<Control>) {
        let interval = Duration::from_millis(self.core.config.embedded.persist_interval_ms.max(1));
        let from_persister = self.from_persister.clone();
        let (mut busy, never) = (false, crossbeam_channel::never());
        loop {
            let wait = interval.saturating_sub(self.last_dispatch.elapsed());
            // Busy: no waiting on the queue, a tick's sleep at most, then what gathered.
            let (queue, timeout) = if busy { (&never, wait.min(APPLY_TICK)) } else { (&updates, wait) };
            let woken_by_update = select! {
                recv(queue) -> update => match update {
                    Ok(update) => {
                        self.apply(&update);
                        true
                    }
                    Err(_) => break,
                },
                recv(control) -> message => match message {
                    Ok(message) => {
                        self.control(message, &updates);
                        false
                    }
                    Err(_) => break,
                },
                recv(from_persister) -> result => match result {
                    Ok(result) => {
                        self.persisted(result);
                        false
                    }
                    Err(_) => break,
                },
                default(timeout) => false,
            };
            busy = if busy {
                // At most what is queued now, so control messages wait no longer than a tick.
                self.apply_queued(&updates) > 0
            } else {
                woken_by_update
            };
            self.core.metrics.write_queue_len.set(updates.len() as i64);
            let batch_full = self.dirty.len() >= self.core.config.embedded.persist_batch_len_max;
            if batch_full || self.last_dispatch.elapsed() >= interval {
                self.dispatch();
            }
        }
        for update in updates.try_iter() {
            self.apply(&update);
        }
        if let Err(error) = self.persist_all() {
            tracing::error!(%error, "profile writer: last persist before shutdown failed");
        }
        self.to_persister.take();
        if let Some(persister) = self.persister.take() {
            let _ = persister.join();
        }
    }

    fn control(&mut self, message: Control, updates: &Receiver<ProfileUpdate>) {
        match message {
            Control::Flush(reply) => {
                // Only what was queued before the flush: under load the queue never empties.
                self.apply_queued(updates);
                let _ = reply.send(self.persist_all().map_err(|e| e.to_string()));
            }
            Control::Forget(keys, reply) => {
                self.apply_queued(updates);
                let n = keys.into_iter().filter(|&key| self.forget(key)).count();
                let _ = reply.send(self.persist_all().map(|()| n).map_err(|e| e.to_string()));
            }
            Control::Import(profiles, reply) => {
                let n = profiles.len();
                for (key, profile) in profiles {
                    self.set(key, Arc::new(profile));
                }
                let _ = reply.send(self.persist_all().map(|()| n).map_err(|e| e.to_string()));
            }
        }
    }

    /// Applies the updates queued now (not those that arrive meanwhile); returns how many.
    fn apply_queued(&mut self, updates: &Receiver<ProfileUpdate>) -> usize {
        let n_queued = updates.len();
        for update in updates.try_iter().take(n_queued) {
            self.apply(&update);
        }
        n_queued
    }

    fn current(&self, key: UserKey) -> Current {
        if let Some(dirty) = self.dirty.get(&key) {
            return dirty.clone().map_or(Current::Absent, Current::Present);
        }
        // Profiles in flight are pinned in memory, so memory has them.
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
            Current::Present(p) if update.is_redundant(&p, self.core.config.seen_refresh_s) => {
                self.core.metrics.updates_unchanged.inc();
                return;
            }
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
        self.core.keys.insert(key);
        self.core.memory.put(key, Cached::Present(profile.clone()));
        self.dirty.insert(key, Some(profile));
    }

    /// Deletes the user's profile; returns whether there was one. The key filter keeps the
    /// key (a Bloom filter cannot remove): the user's next read finds the absence on disk.
    fn forget(&mut self, key: UserKey) -> bool {
        let existed = matches!(self.current(key), Current::Present(_) | Current::Unreadable(_));
        self.core.memory.put(key, Cached::Absent);
        self.dirty.insert(key, None);
        existed
    }

    /// Hands the changed profiles to the persister, unless it is still writing the last batch.
    fn dispatch(&mut self) {
        self.last_dispatch = Instant::now();
        if self.in_flight.is_some() {
            return;
        }
        if self.dirty.is_empty() {
            // Readers fill the layer too: a read-only workload must be held to the budget.
            self.evict();
            return;
        }
        let Some(to_persister) = &self.to_persister else { return };
        let batch: Batch = Arc::new(std::mem::take(&mut self.dirty));
        if to_persister.send(batch.clone()).is_ok() {
            self.in_flight = Some(batch);
        }
    }

    /// The persister's answer for the batch in flight.
    fn persisted(&mut self, result: Result<(), ProfileError>) {
        let Some(batch) = self.in_flight.take() else { return };
        match result {
            Ok(()) => {
                self.core.metrics.writes.inc();
                *self.last_error.lock() = None;
                self.evict();
            }
            Err(error) => {
                tracing::error!(%error, n_profiles = batch.len(), "persisting profiles failed; will retry");
                self.core.metrics.write_failures.inc();
                *self.last_error.lock() = Some(error.to_string());
                // Changes made since the batch left are newer: they win.
                for (key, profile) in batch.iter() {
                    self.dirty.entry(*key).or_insert_with(|| profile.clone());
                }
            }
        }
    }

    /// Writes everything changed so far and waits until it is on disk (flush, import, shutdown).
    fn persist_all(&mut self) -> Result<(), ProfileError> {
        loop {
            if self.in_flight.is_some() {
                let result = self.from_persister.recv().map_err(|_| ProfileError::WriterStopped)?;
                let failed = result.as_ref().err().map(|e| ProfileError::Persist { message: e.to_string() });
                self.persisted(result);
                if let Some(error) = failed {
                    return Err(error);
                }
            }
            if self.dirty.is_empty() {
                return Ok(());
            }
            self.dispatch();
            if self.in_flight.is_none() {
                return Err(ProfileError::WriterStopped);
            }
        }
    }

    /// Evicts down to the budget, never a profile not yet on disk (it would be read back stale).
    fn evict(&self) {
        let dirty = &self.dirty;
        let n_evicted = self.core.memory.evict_if_over_budget(&|key| dirty.contains_key(&key));
        self.core.metrics.evicted.inc_by(n_evicted as u64);
        self.core.observe_memory();
    }
}

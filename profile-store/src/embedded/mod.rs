//! The embedded backend: a memory layer that answers most reads without waiting, over an fjall
//! LSM tree on local disk, with one writer thread that owns every change. See STATE.md.

mod disk;
mod keys;
mod memory;
mod table;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use adsnap_events::threads::{check_background_nice, lower_this_thread_priority};
use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use disk::now_unix_s;
use disk::Disk;
use keys::KeyFilter;
use memory::{Cached, MemoryLayer};
use writer::{Control, Writer};

use crate::config::ProfilesConfig;
use crate::error::{MissReason, ProfileError};
use crate::metrics::{Dropped, ProfilesHealth, StoreMetrics};
use crate::profile::{Profile, ProfileUpdate, UserKey};
use crate::ProfileRead;

/// What readers and the writer share.
pub struct Core {
    config: ProfilesConfig,
    memory: MemoryLayer,
    disk: Disk,
    metrics: StoreMetrics,
    disk_reads_in_flight: AtomicUsize,
    keys: KeyFilter,
    /// Tells the key filter's fill thread to stop (the store is closing).
    closing: AtomicBool,
}

/// The open embedded store. Dropping it stops the writer after a last persist and closes the
/// database, so the folder can be opened again at once.
pub struct EmbeddedStore {
    core: Arc<Core>,
    updates: Option<Sender<ProfileUpdate>>,
    control: Option<Sender<Control>>,
    writer: Option<JoinHandle<()>>,
    key_filler: Option<JoinHandle<()>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store; blocking: recovery can read the whole journal.
    ///
    /// The opening runs on a thread of its own at `background_nice`, so every thread the store
    /// starts there (the writer, the persister and fjall's flush and compaction workers)
    /// inherits that priority and yields the core to the threads answering requests. The scan at
    /// open starts from the caller's thread, at its priority: until it has warmed the memory
    /// layer, requests read the disk, so finishing it soon is what serves them best.
    pub fn open_blocking(
        config: &ProfilesConfig,
        metrics: StoreMetrics,
    ) -> Result<EmbeddedStore, ProfileError> {
        // The kernel would clamp a larger value and a negative one is ignored: a typo would run
        // the store at a priority nobody chose.
        check_background_nice("embedded.background_nice", config.embedded.background_nice)
            .map_err(ProfileError::Config)?;
        let config = config.clone();
        let mut store = std::thread::Builder::new()
            .name("profile-open".into())
            .spawn(move || {
                lower_this_thread_priority(config.embedded.background_nice, "the profile store's threads");
                EmbeddedStore::open_here(&config, metrics)
            })
            .map_err(|e| ProfileError::Config(format!("cannot start the profile store's thread: {e}")))?
            .join()
            .map_err(|_| ProfileError::Config("opening the profile store panicked".into()))??;
        let filler_core = store.core.clone();
        let key_filler = std::thread::Builder::new()
            .name("profile-keys".into())
            .spawn(move || filler_core.fill_key_filter_and_warm())
            .map_err(|e| ProfileError::Config(format!("cannot start the key filter thread: {e}")))?;
        store.key_filler = Some(key_filler);
        Ok(store)
    }

    fn open_here(config: &ProfilesConfig, metrics: StoreMetrics) -> Result<EmbeddedStore, ProfileError> {
        let disk = Disk::open(&config.embedded, config.idle_ttl_s, metrics.expired_removed.clone())?;
        let core = Arc::new(Core {
            config: config.clone(),
            memory: MemoryLayer::new(config.embedded.memory_bytes_max),
            disk,
            metrics,
            disk_reads_in_flight: AtomicUsize::new(0),
            keys: KeyFilter::new(config.embedded.key_filter_users_max),
            closing: AtomicBool::new(false),
        });
        let (updates_tx, updates_rx) = crossbeam_channel::bounded(config.write_queue_len_max.max(1));
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let last_error = Arc::new(Mutex::new(None));
        let writer = Writer::new(core.clone(), last_error.clone())?;
        let handle = std::thread::Builder::new()
            .name("profile-writer".into())
            .spawn(move || writer.run(updates_rx, control_rx))
            .map_err(|e| ProfileError::Config(format!("cannot start the profile writer thread: {e}")))?;
        tracing::info!(path = %config.embedded.path.display(), n_records = core.disk.approximate_len(), "profile store open");
        Ok(EmbeddedStore {
            core,
            updates: Some(updates_tx),
            control: Some(control_tx),
            writer: Some(handle),
            key_filler: None,
            last_error,
        })
    }

    /// Brings the memory layer's slot for `key` into the CPU's cache ahead of a `get`.
    pub fn prefetch(&self, key: UserKey) {
        self.core.memory.prefetch(key);
    }

    /// The answer without waiting, if there is one: from the memory layer, or "absent" when
    /// the key filter knows the user was never stored.
    pub fn get_cached(&self, key: UserKey) -> Option<ProfileRead> {
        if let Some(cached) = self.core.memory.get(key) {
            return Some(self.core.answer(cached));
        }
        if !self.core.keys.may_contain(key) {
            return Some(self.core.answer(Cached::Absent));
        }
        None
    }

    /// Reads the profile: from memory without waiting, else from disk within the deadline.
    pub async fn get(&self, key: UserKey) -> ProfileRead {
        if let Some(read) = self.get_cached(key) {
            return read;
        }
        self.read_disk(key).await
    }

    async fn read_disk(&self, key: UserKey) -> ProfileRead {
        let core = &self.core;
        let max = core.config.embedded.disk_reads_in_flight_max;
        if core.disk_reads_in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            core.disk_reads_in_flight.fetch_sub(1, Ordering::AcqRel);
            return core.unknown(MissReason::Overloaded);
        }
        let deadline = Duration::from_millis(core.config.read_deadline_ms);
        let epoch = core.memory.epoch(key);
        let task_core = core.clone();
        // A read that misses its deadline still finishes and fills the memory layer, so the
        // user's next request finds the profile in memory.
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let read = task_core.load(key, epoch);
            task_core.metrics.backend_read_duration_s.observe(started.elapsed().as_secs_f64());
            task_core.disk_reads_in_flight.fetch_sub(1, Ordering::AcqRel);
            read
        });
        core.metrics.backend_reads.inc();
        let started = Instant::now();
        let result = tokio::time::timeout(deadline, task).await;
        // The timer fires on a 1 ms tick, so a read can come back a little after its deadline;
        // it is late all the same, and the contract is that late answers are misses.
        if started.elapsed() > deadline {
            return core.unknown(MissReason::Deadline);
        }
        match result {
            Ok(Ok(Ok(cached))) => core.answer(cached),
            Ok(Ok(Err(reason))) => core.unknown(reason),
            Ok(Err(_)) => core.unknown(MissReason::Unavailable),
            Err(_) => core.unknown(MissReason::Deadline),
        }
    }

    pub fn record(&self, update: ProfileUpdate) {
        let Some(updates) = &self.updates else { return };
        match updates.try_send(update) {
            Ok(()) => {
                self.core.metrics.updates_queued.inc();
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.core.metrics.dropped(Dropped::QueueFull)
            }
        };
    }

    async fn ask<T>(&self, message: impl FnOnce(oneshot::Sender<T>) -> Control) -> Result<T, ProfileError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let control = self.control.as_ref().ok_or(ProfileError::WriterStopped)?;
        control.send(message(reply_tx)).map_err(|_| ProfileError::WriterStopped)?;
        reply_rx.await.map_err(|_| ProfileError::WriterStopped)
    }

    /// Applies every update queued so far and makes it durable.
    pub async fn flush(&self) -> Result<(), ProfileError> {
        self.ask(Control::Flush).await?.map_err(|message| ProfileError::Persist { message })
    }

    /// Deletes these users' profiles (after every update queued before) and makes that
    /// durable; returns how many existed.
    pub async fn forget(&self, keys: Vec<UserKey>) -> Result<usize, ProfileError> {
        self.ask(|reply| Control::Forget(keys, reply))
            .await?
            .map_err(|message| ProfileError::Persist { message })
    }

    /// Replaces these profiles and makes them durable; returns how many.
    pub async fn import(&self, profiles: Vec<(UserKey, Profile)>) -> Result<usize, ProfileError> {
        self.ask(|reply| Control::Import(profiles, reply))
            .await?
            .map_err(|message| ProfileError::Persist { message })
    }

    pub fn health(&self) -> ProfilesHealth {
        let mut health =
            ProfilesHealth::from_metrics("embedded", &self.core.metrics, self.last_error.lock().clone());
        health.key_filter_ready = Some(self.core.keys.is_ready());
        health
    }

    /// Records on disk (an estimate) and the disk space the store takes.
    pub fn disk_stats(&self) -> (usize, u64) {
        (self.core.disk.approximate_len(), self.core.disk.disk_bytes())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.core.closing.store(true, Ordering::Relaxed);
        if let Some(filler) = self.key_filler.take() {
            let _ = filler.join();
        }
        self.updates.take();
        self.control.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Core {
    /// Inserts every key on disk into the key filter, then marks it ready; on the way, fills
    /// the memory layer with the records it reads until the layer holds `warm_budget_percent` of
    /// its budget, so that a restarted server answers its users from memory at once (blocking).
    fn fill_key_filter_and_warm(&self) {
        let started = Instant::now();
        let (mut n_keys, mut n_warmed) = (0u64, 0u64);
        // Taken before the scan's view of the disk, so a copy older than one the writer
        // evicted is never put back (see the memory layer's epochs).
        let epochs = self.memory.epochs();
        // Capped below the share at which eviction starts, so newly active users find room.
        let warm_percent =
            usize::from(self.config.embedded.warm_budget_percent).min(memory::EVICT_TO_PERCENT);
        let warming = || warm_percent > 0 && self.memory.is_below(warm_percent);
        let scanned = self.disk.for_each_record(warming, |key, record| {
            self.keys.insert(key);
            n_keys += 1;
            if let Some(Ok(profile)) = record.map(crate::record::decode) {
                let cached = Cached::Present(Arc::new(profile));
                self.memory.insert_read(key, cached, MemoryLayer::epoch_in(&epochs, key));
                n_warmed += 1;
            }
            !self.closing.load(Ordering::Relaxed)
        });
        match scanned {
            Ok(()) if !self.closing.load(Ordering::Relaxed) => {
                self.keys.set_ready();
                self.observe_memory();
                tracing::info!(
                    n_keys,
                    n_warmed,
                    memory_bytes = self.memory.bytes(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    filter_bytes = self.keys.bytes(),
                    "profile key filter ready, memory layer warmed"
                );
            }
            Ok(()) => {}
            // Without the filter every memory miss reads the disk: slower, still correct.
            Err(error) => {
                tracing::error!(%error, "profile key filter not built; absent users will be read from disk")
            }
        }
    }

    /// Sets the memory layer's gauges to what it holds now.
    fn observe_memory(&self) {
        self.metrics.memory_bytes.set(self.memory.bytes() as i64);
        self.metrics.memory_entries.set(self.memory.len() as i64);
    }

    /// Reads a profile from disk and adds it to the memory layer (blocking).
    fn load(&self, key: UserKey, epoch: u64) -> Result<Cached, MissReason> {
        let cached = match self.disk.get(key) {
            Ok(None) => Cached::Absent,
            Ok(Some(bytes)) => match crate::record::decode(&bytes) {
                Ok(profile) => Cached::Present(Arc::new(profile)),
                Err(error) => {
                    tracing::warn!(user_key = key.0, %error, "unreadable profile record");
                    return Err(MissReason::of_record(&error));
                }
            },
            Err(error) => {
                tracing::warn!(%error, "profile disk read failed");
                return Err(MissReason::Unavailable);
            }
        };
        Ok(self.memory.insert_read(key, cached, epoch))
    }

    fn answer(&self, cached: Cached) -> ProfileRead {
        match cached {
            Cached::Present(profile) if !profile.is_idle(self.config.idle_ttl_s, now_unix_s()) => {
                self.metrics.found();
                ProfileRead::Found(profile)
            }
            Cached::Present(_) | Cached::Absent => {
                self.metrics.absent();
                ProfileRead::Absent
            }
        }
    }

    fn unknown(&self, reason: MissReason) -> ProfileRead {
        self.metrics.miss(reason);
        ProfileRead::Unknown(reason)
    }
}

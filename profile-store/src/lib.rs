//! adsnap user profiles: everything the server knows about a user between requests.
//!
//! One read per ad request with a hard deadline (past it the answer is "unknown" and the decision
//! goes on without the profile), and updates that leave the request path at once through a
//! bounded queue. Two backends behind one handle, [`Profiles`]: an embedded store (a memory
//! layer over an fjall LSM tree, the default) and Aerospike (cargo feature `aerospike`).
//! The record layout is in `docs/profiles.md`; the embedded store's states in `STATE.md`.

#[cfg(feature = "aerospike")]
pub mod aerospike;
pub mod config;
pub mod embedded;
pub mod error;
pub mod gen;
pub mod json;
pub mod metrics;
pub mod profile;
pub mod record;

use std::future::Future;
use std::sync::Arc;

pub use config::{AerospikeConfig, Backend, EmbeddedConfig, ProfilesConfig};
pub use error::{MissReason, ProfileError, RecordError, Retry};
pub use metrics::ProfilesHealth;
pub use profile::{FrequencyCounter, Profile, ProfileFields, ProfileUpdate, UserKey};

use embedded::EmbeddedStore;
use metrics::StoreMetrics;

/// The answer to a profile read.
#[derive(Clone, Debug)]
pub enum ProfileRead {
    Found(Arc<Profile>),
    /// The store has no profile for this user (or it was idle past its TTL).
    Absent,
    /// No answer in time or no usable answer: decide without the profile. Counted by reason.
    Unknown(MissReason),
}

impl ProfileRead {
    /// The profile, if one was found.
    pub fn profile(&self) -> Option<&Profile> {
        match self {
            ProfileRead::Found(profile) => Some(profile),
            _ => None,
        }
    }
}

/// What every backend offers the server.
pub trait ProfileStore: Send + Sync {
    /// Reads one profile; never takes longer than the configured deadline.
    fn get(&self, key: UserKey) -> impl Future<Output = ProfileRead> + Send;
    /// Enqueues an update and returns at once; a full queue drops it and counts it.
    fn record(&self, update: ProfileUpdate);
    /// Drains the write queue and makes every write durable.
    fn flush(&self) -> impl Future<Output = Result<(), ProfileError>> + Send;
    fn health(&self) -> ProfilesHealth;
}

enum Store {
    Embedded(EmbeddedStore),
    #[cfg(feature = "aerospike")]
    Aerospike(aerospike::AerospikeStore),
}

struct Inner {
    store: Store,
    metrics: StoreMetrics,
    seen_refresh_s: u32,
}

/// A cheap-to-clone handle to the configured backend (an `Arc` inside), `Send + Sync`.
#[derive(Clone)]
pub struct Profiles {
    inner: Arc<Inner>,
}

impl Profiles {
    /// Opens the configured backend. The embedded store opens on a blocking thread (recovery
    /// reads its journal); Aerospike connects to its seed hosts.
    pub async fn open(config: &ProfilesConfig) -> Result<Profiles, ProfileError> {
        let metrics = StoreMetrics::default();
        let store = match config.backend {
            Backend::Embedded => {
                let (config, metrics) = (config.clone(), metrics.clone());
                let open =
                    tokio::task::spawn_blocking(move || EmbeddedStore::open_blocking(&config, metrics));
                Store::Embedded(
                    open.await.map_err(|e| ProfileError::Config(format!("opening panicked: {e}")))??,
                )
            }
            #[cfg(feature = "aerospike")]
            Backend::Aerospike => {
                Store::Aerospike(aerospike::AerospikeStore::open(config, metrics.clone()).await?)
            }
            #[cfg(not(feature = "aerospike"))]
            Backend::Aerospike => return Err(ProfileError::BackendNotBuilt(Backend::Aerospike)),
        };
        Ok(Profiles { inner: Arc::new(Inner { store, metrics, seen_refresh_s: config.seen_refresh_s }) })
    }

    /// Never takes longer than the configured deadline; past it, `Unknown(Deadline)`, counted.
    /// The embedded store answers from memory without awaiting anything when it can.
    pub async fn get(&self, key: UserKey) -> ProfileRead {
        match &self.inner.store {
            Store::Embedded(store) => store.get(key).await,
            #[cfg(feature = "aerospike")]
            Store::Aerospike(store) => store.get(key).await,
        }
    }

    /// A hint that `get(key)` follows soon (embedded only): the memory layer's slot for `key` is
    /// brought into the CPU's cache now, so that its cache miss overlaps with the caller's work
    /// in between rather than stalling the look-up. Reads nothing and changes nothing.
    pub fn prefetch(&self, key: UserKey) {
        match &self.inner.store {
            Store::Embedded(store) => store.prefetch(key),
            #[cfg(feature = "aerospike")]
            Store::Aerospike(_) => {}
        }
    }

    /// The answer without waiting, if there is one (embedded only): a profile or an absence
    /// from the memory layer, or an absence the key filter is sure of. `None`: call `get`.
    pub fn get_cached(&self, key: UserKey) -> Option<ProfileRead> {
        match &self.inner.store {
            Store::Embedded(store) => store.get_cached(key),
            #[cfg(feature = "aerospike")]
            Store::Aerospike(_) => None,
        }
    }

    /// Enqueues and returns at once; a full queue drops the update and counts it.
    pub fn record(&self, update: ProfileUpdate) {
        match &self.inner.store {
            Store::Embedded(store) => store.record(update),
            #[cfg(feature = "aerospike")]
            Store::Aerospike(store) => store.record(update),
        }
    }

    /// Like `record`, but an update that would change nothing in `current` (the profile the
    /// caller just read) is counted and not queued: see [`ProfileUpdate::is_redundant`].
    pub fn record_given(&self, update: ProfileUpdate, current: Option<&Profile>) {
        if current.is_some_and(|profile| update.is_redundant(profile, self.inner.seen_refresh_s)) {
            self.inner.metrics.updates_unchanged.inc();
            return;
        }
        self.record(update);
    }

    /// Replaces whole profiles (bulk import) and makes them durable; returns how many.
    pub async fn import(&self, profiles: Vec<(UserKey, Profile)>) -> Result<usize, ProfileError> {
        match &self.inner.store {
            Store::Embedded(store) => store.import(profiles).await,
            #[cfg(feature = "aerospike")]
            Store::Aerospike(store) => store.import(profiles).await,
        }
    }

    /// Deletes these users' profiles for good (an erasure request), after every update
    /// queued before; returns how many existed. Updates recorded later start new profiles.
    pub async fn forget(&self, keys: Vec<UserKey>) -> Result<usize, ProfileError> {
        match &self.inner.store {
            Store::Embedded(store) => store.forget(keys).await,
            #[cfg(feature = "aerospike")]
            Store::Aerospike(store) => store.forget(keys).await,
        }
    }

    /// For the server's `/health` JSON.
    pub fn health(&self) -> ProfilesHealth {
        match &self.inner.store {
            Store::Embedded(store) => store.health(),
            #[cfg(feature = "aerospike")]
            Store::Aerospike(store) => store.health(),
        }
    }

    /// Registers the store's metrics (prefix `profile_`) in the server's registry.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }

    /// Drains the write queue and makes writes durable (server shutdown, tests).
    pub async fn flush(&self) -> Result<(), ProfileError> {
        match &self.inner.store {
            Store::Embedded(store) => store.flush().await,
            #[cfg(feature = "aerospike")]
            Store::Aerospike(store) => store.flush().await,
        }
    }

    /// The backend this handle talks to.
    pub fn backend(&self) -> Backend {
        match &self.inner.store {
            Store::Embedded(_) => Backend::Embedded,
            #[cfg(feature = "aerospike")]
            Store::Aerospike(_) => Backend::Aerospike,
        }
    }

    /// Embedded only: records on disk (an estimate) and bytes the store takes on disk.
    pub fn disk_stats(&self) -> Option<(usize, u64)> {
        match &self.inner.store {
            Store::Embedded(store) => Some(store.disk_stats()),
            #[cfg(feature = "aerospike")]
            Store::Aerospike(_) => None,
        }
    }
}

impl ProfileStore for Profiles {
    fn get(&self, key: UserKey) -> impl Future<Output = ProfileRead> + Send {
        Profiles::get(self, key)
    }

    fn record(&self, update: ProfileUpdate) {
        Profiles::record(self, update)
    }

    fn flush(&self) -> impl Future<Output = Result<(), ProfileError>> + Send {
        Profiles::flush(self)
    }

    fn health(&self) -> ProfilesHealth {
        Profiles::health(self)
    }
}

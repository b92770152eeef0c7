//! The durable layer: one fjall keyspace of profile records keyed by big-endian user key, with a
//! compaction filter that drops profiles idle past their TTL as the LSM tree rewrites them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::compaction::filter::{
    CompactionFilter, CompactionFilterResult, Context, Factory, ItemAccessor, Verdict,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use prometheus_client::metrics::counter::Counter;

use crate::config::EmbeddedConfig;
use crate::error::ProfileError;
use crate::profile::UserKey;
use crate::record::{peek_last_seen_unix_s, store_key};

const KEYSPACE: &str = "profiles";
const TTL_FILTER: &str = "adsnap-profile-ttl";

/// The fjall database and its one keyspace.
#[derive(Clone)]
pub struct Disk {
    db: Database,
    profiles: Keyspace,
}

pub fn now_unix_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Drops records idle past the TTL during compaction. Records it cannot read are kept: they are
/// reported (and replaced) when read, never silently removed.
struct TtlFilter {
    idle_ttl_s: i64,
    expired_removed: Counter,
}

impl CompactionFilter for TtlFilter {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> CompactionFilterResult {
        let value = item.value()?;
        Ok(match peek_last_seen_unix_s(&value) {
            Some(last_seen) if now_unix_s().saturating_sub(last_seen) > self.idle_ttl_s => {
                self.expired_removed.inc();
                Verdict::Remove
            }
            _ => Verdict::Keep,
        })
    }
}

struct TtlFactory {
    idle_ttl_s: i64,
    expired_removed: Counter,
}

impl Factory for TtlFactory {
    fn name(&self) -> &str {
        TTL_FILTER
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        Box::new(TtlFilter { idle_ttl_s: self.idle_ttl_s, expired_removed: self.expired_removed.clone() })
    }
}

fn embedded(context: &'static str) -> impl FnOnce(fjall::Error) -> ProfileError {
    move |source| ProfileError::Embedded { context, source }
}

impl Disk {
    pub fn open(
        config: &EmbeddedConfig,
        idle_ttl_s: u64,
        expired_removed: Counter,
    ) -> Result<Disk, ProfileError> {
        let idle_ttl_s = i64::try_from(idle_ttl_s).unwrap_or(i64::MAX);
        let factory: Arc<dyn Factory> = Arc::new(TtlFactory { idle_ttl_s, expired_removed });
        let db = Database::builder(&config.path)
            .cache_size(config.block_cache_bytes)
            // The writer persists on its own schedule; see `persist`.
            .manual_journal_persist(true)
            .with_compaction_filter_factories(Arc::new(move |name| {
                (name == KEYSPACE).then(|| factory.clone())
            }))
            .open()
            .map_err(|source| ProfileError::OpenEmbedded { path: config.path.clone(), source })?;
        let profiles = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(embedded("opening the keyspace"))?;
        Ok(Disk { db, profiles })
    }

    /// The stored bytes of a user's profile.
    pub fn get(&self, key: UserKey) -> Result<Option<fjall::Slice>, ProfileError> {
        self.profiles.get(store_key(key)).map_err(embedded("reading a profile"))
    }

    /// Writes a batch of records (`None`: delete the user's) atomically, then syncs the
    /// journal to disk.
    pub fn write(&self, records: &[(UserKey, Option<Vec<u8>>)]) -> Result<(), ProfileError> {
        let mut batch = self.db.batch();
        for (key, record) in records {
            match record {
                Some(record) => batch.insert(&self.profiles, store_key(*key), record.as_slice()),
                None => batch.remove(&self.profiles, store_key(*key)),
            }
        }
        batch.commit().map_err(embedded("writing profiles"))?;
        self.db.persist(PersistMode::SyncData).map_err(embedded("syncing the journal"))
    }

    /// Records on disk (fjall's estimate: updates not yet compacted count twice).
    pub fn approximate_len(&self) -> usize {
        self.profiles.approximate_len()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// Calls `visit` with every stored user key, in key order, until it returns false; with
    /// the key's record while `with_records` answers true (a keys-only scan copies less).
    /// The scan reads the tree as it was when the scan began.
    pub fn for_each_record(
        &self,
        with_records: impl Fn() -> bool,
        mut visit: impl FnMut(UserKey, Option<&[u8]>) -> bool,
    ) -> Result<(), ProfileError> {
        for guard in self.profiles.iter() {
            let (key, record) = if with_records() {
                let (key, record) = guard.into_inner().map_err(embedded("scanning profiles"))?;
                (key, Some(record))
            } else {
                (guard.key().map_err(embedded("scanning profile keys"))?, None)
            };
            if let Some(user) = crate::record::user_key_of(&key) {
                if !visit(user, record.as_deref()) {
                    break;
                }
            }
        }
        Ok(())
    }
}

//! The `[profiles]` configuration: which backend, the read deadline, the write queue, and each
//! backend's own settings. Every field has a default, so an empty table is a working config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where profiles live.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process: a memory layer over an fjall LSM tree on local disk.
    #[default]
    Embedded,
    /// An Aerospike cluster (needs the `aerospike` cargo feature).
    Aerospike,
}

/// The `[profiles]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilesConfig {
    /// `embedded` (default) or `aerospike`.
    pub backend: Backend,
    /// A read that has not answered after this long returns "unknown" and is counted. The
    /// embedded store answers from memory without waiting; the deadline bounds its disk reads.
    pub read_deadline_ms: u64,
    /// Updates waiting for the writer; past it, `record` drops the update and counts it.
    pub write_queue_len_max: usize,
    /// Profiles idle (no update) for longer than this are treated as absent and removed.
    pub idle_ttl_s: u64,
    /// A user's last-seen time is rewritten at most this often (unless the request's country,
    /// language or OS changed): a request from a user seen less than this long ago writes
    /// nothing. Last-seen serves the idle TTL, so it is accurate to this much.
    pub seen_refresh_s: u32,
    pub embedded: EmbeddedConfig,
    pub aerospike: AerospikeConfig,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig {
            backend: Backend::Embedded,
            read_deadline_ms: 2,
            write_queue_len_max: 65_536,
            idle_ttl_s: 30 * 86_400,
            seen_refresh_s: 600,
            embedded: EmbeddedConfig::default(),
            aerospike: AerospikeConfig::default(),
        }
    }
}

/// The `[profiles.embedded]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The store's folder; created if missing. Only one process may open it at a time.
    pub path: PathBuf,
    /// Budget of the memory layer (decoded profiles and remembered absences). Past it, the
    /// writer evicts profiles not read recently, down to 90% of the budget. A profile takes
    /// about 370 bytes here (generated population), so the default holds 10 million users.
    pub memory_bytes_max: u64,
    /// At open, a background scan of the disk (the one that builds the key filter) also fills
    /// the memory layer with stored profiles up to this share of `memory_bytes_max`, so that a
    /// restarted server answers its users from memory; 0 turns it off.
    pub warm_budget_percent: u8,
    /// Nice value (0 to 19) of the store's background threads (writer, persister, fjall's flush
    /// and compaction): above 0 they give way to the threads answering requests on a busy core,
    /// so a compaction does not stall requests. 0: normal priority. The scan at open keeps the
    /// opener's priority: requests read the disk until it has warmed the memory layer. A value
    /// outside 0 to 19 is refused at open.
    pub background_nice: i8,
    /// fjall's block cache, which serves reads that miss the memory layer.
    pub block_cache_bytes: u64,
    /// Users the key filter is sized for. The filter (about 1.2 bytes per user) answers "absent"
    /// for users the store has never seen without a disk read; past this many users its false
    /// positives (reads that go to disk for nothing) grow above 1%.
    pub key_filter_users_max: u64,
    /// Disk reads (memory-layer misses) in flight at once; past it a miss answers "unknown"
    /// (overloaded) at once instead of queueing behind a slow disk.
    pub disk_reads_in_flight_max: usize,
    /// The writer persists changed profiles at least this often (a crash loses at most this
    /// much of counter updates; `flush` persists at once).
    pub persist_interval_ms: u64,
    /// ... or as soon as this many profiles have changed.
    pub persist_batch_len_max: usize,
    /// Changed profiles the writer holds while the disk refuses writes; past it, updates are
    /// dropped and counted until the disk takes writes again.
    pub dirty_len_max: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            path: PathBuf::from("adsnap-profiles"),
            memory_bytes_max: 4 << 30,
            warm_budget_percent: 80,
            background_nice: 10,
            block_cache_bytes: 64 << 20,
            key_filter_users_max: 20_000_000,
            disk_reads_in_flight_max: 64,
            persist_interval_ms: 200,
            persist_batch_len_max: 50_000,
            dirty_len_max: 1_000_000,
        }
    }
}

/// The `[profiles.aerospike]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AerospikeConfig {
    /// Seed hosts, `host:port` separated by commas (the client discovers the rest).
    pub hosts: String,
    pub namespace: String,
    pub set: String,
    /// Connections per node.
    pub connections_per_node_max: usize,
    /// Connecting to the cluster at start-up.
    pub connect_timeout_ms: u64,
    /// Socket timeout of one read attempt (the read deadline bounds the whole call).
    pub read_socket_timeout_ms: u64,
    /// Total timeout of one write (an operate() call).
    pub write_timeout_ms: u64,
    /// Retries of a read; reads are idempotent. Writes are increments, so they are never
    /// retried: a retry after a timeout could count an impression twice.
    pub read_retries_max: usize,
    /// Writes in flight at once from the writer task.
    pub writes_in_flight_max: usize,
    /// Talk only to the seed hosts, never to the addresses nodes advertise (a cluster behind a
    /// proxy or NAT).
    pub seed_only_cluster: bool,
}

impl Default for AerospikeConfig {
    fn default() -> Self {
        AerospikeConfig {
            hosts: "127.0.0.1:3000".to_string(),
            namespace: "adsnap".to_string(),
            set: "profiles".to_string(),
            connections_per_node_max: 64,
            connect_timeout_ms: 2_000,
            read_socket_timeout_ms: 2,
            write_timeout_ms: 50,
            read_retries_max: 1,
            writes_in_flight_max: 256,
            seed_only_cluster: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_lists_every_default() {
        let text = include_str!("../../docs/profiles.example.toml");
        let table: toml::Table = toml::from_str(text).unwrap();
        let config: ProfilesConfig = table["profiles"].clone().try_into().unwrap();
        assert_eq!(config, ProfilesConfig::default());
        // Every field appears in the file, not only those whose default is written out.
        let expected = toml::Value::try_from(ProfilesConfig::default()).unwrap();
        assert_eq!(table["profiles"], expected);
    }

    #[test]
    fn an_empty_table_is_the_default_and_unknown_keys_are_refused() {
        let empty: ProfilesConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ProfilesConfig::default());
        let aerospike: ProfilesConfig =
            serde_json::from_str(r#"{"backend":"aerospike","aerospike":{"hosts":"10.0.0.1:3000"}}"#).unwrap();
        assert_eq!(aerospike.backend, Backend::Aerospike);
        assert_eq!(aerospike.aerospike.namespace, "adsnap");
        assert!(serde_json::from_str::<ProfilesConfig>(r#"{"read_deadline":2}"#).is_err());
        assert!(serde_json::from_str::<ProfilesConfig>(r#"{"backend":"redis"}"#).is_err());
    }
}

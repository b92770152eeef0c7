//! The store's counters: every read outcome, every dropped update, every write to the backend.
//! Series are made up front so that counting is an array index, never a label hash and a lock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::error::MissReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Why an update was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The write queue was full when the request path recorded it.
    QueueFull,
    /// The backend has refused writes for long enough that the writer holds its limit of
    /// changed profiles.
    BacklogFull,
    /// The stored record has a newer layout; writing would destroy what a newer build wrote.
    UnknownVersion,
    /// The backend refused the write.
    WriteFailed,
    /// A list was full (installed apps); the counters were updated but the item not kept.
    ListFull,
}

impl Dropped {
    const ALL: [Dropped; 5] = [
        Dropped::QueueFull,
        Dropped::BacklogFull,
        Dropped::UnknownVersion,
        Dropped::WriteFailed,
        Dropped::ListFull,
    ];

    fn name(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::BacklogFull => "backlog_full",
            Dropped::UnknownVersion => "unknown_version",
            Dropped::WriteFailed => "write_failed",
            Dropped::ListFull => "list_full",
        }
    }
}

const READ_FOUND: usize = 0;
const READ_ABSENT: usize = 1;
const READ_MISS_BASE: usize = 2;

/// Every metric of the store. Cheap to share: each metric is an `Arc` inside.
#[derive(Clone)]
pub struct StoreMetrics {
    reads: Family<ResultLabels, Counter>,
    read_series: Vec<Counter>,
    updates_dropped: Family<ResultLabels, Counter>,
    dropped_series: Vec<Counter>,
    pub updates_queued: Counter,
    pub updates_applied: Counter,
    /// Updates that would have changed nothing (a repeat visit within `seen_refresh_s`).
    pub updates_unchanged: Counter,
    /// Reads the memory layer could not answer (went to disk or the network).
    pub backend_reads: Counter,
    pub backend_read_duration_s: Histogram,
    /// Records that failed their checks when the writer loaded them and were replaced.
    pub records_replaced: Counter,
    pub writes: Counter,
    pub write_failures: Counter,
    /// Embedded: time of one persist (encode, batch write, fdatasync).
    pub persist_duration_s: Histogram,
    pub expired_removed: Counter,
    pub evicted: Counter,
    pub memory_bytes: Gauge,
    pub memory_entries: Gauge,
    pub write_queue_len: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let reads = Family::<ResultLabels, Counter>::default();
        let mut names = vec!["found", "absent"];
        names.extend(MissReason::ALL.iter().map(|r| r.name()));
        let read_series =
            names.iter().map(|&result| reads.get_or_create(&ResultLabels { result }).clone()).collect();
        let updates_dropped = Family::<ResultLabels, Counter>::default();
        let dropped_series = Dropped::ALL
            .iter()
            .map(|d| updates_dropped.get_or_create(&ResultLabels { result: d.name() }).clone())
            .collect();
        StoreMetrics {
            reads,
            read_series,
            updates_dropped,
            dropped_series,
            updates_queued: Counter::default(),
            updates_applied: Counter::default(),
            updates_unchanged: Counter::default(),
            backend_reads: Counter::default(),
            // 1 µs to about 65 ms.
            backend_read_duration_s: Histogram::new(exponential_buckets(0.000_001, 2.0, 17)),
            records_replaced: Counter::default(),
            writes: Counter::default(),
            write_failures: Counter::default(),
            // 100 µs to about 3 s.
            persist_duration_s: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            expired_removed: Counter::default(),
            evicted: Counter::default(),
            memory_bytes: Gauge::default(),
            memory_entries: Gauge::default(),
            write_queue_len: Gauge::default(),
        }
    }
}

impl StoreMetrics {
    pub fn found(&self) {
        self.read_series[READ_FOUND].inc();
    }

    pub fn absent(&self) {
        self.read_series[READ_ABSENT].inc();
    }

    pub fn miss(&self, reason: MissReason) {
        let idx = MissReason::ALL.iter().position(|&r| r == reason).unwrap_or(0);
        self.read_series[READ_MISS_BASE + idx].inc();
    }

    pub fn dropped(&self, why: Dropped) {
        let idx = Dropped::ALL.iter().position(|&d| d == why).unwrap_or(0);
        self.dropped_series[idx].inc();
    }

    pub fn dropped_count(&self, why: Dropped) -> u64 {
        let idx = Dropped::ALL.iter().position(|&d| d == why).unwrap_or(0);
        self.dropped_series[idx].get()
    }

    pub fn miss_count(&self, reason: MissReason) -> u64 {
        let idx = MissReason::ALL.iter().position(|&r| r == reason).unwrap_or(0);
        self.read_series[READ_MISS_BASE + idx].get()
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("profile");
        r.register("reads", "Profile reads by result (found, absent, or why unknown)", self.reads.clone());
        r.register("updates_queued", "Updates accepted into the write queue", self.updates_queued.clone());
        r.register("updates_applied", "Updates the writer applied", self.updates_applied.clone());
        r.register(
            "updates_unchanged",
            "Updates skipped because they would change nothing (a repeat visit)",
            self.updates_unchanged.clone(),
        );
        r.register("updates_dropped", "Updates not applied, by reason", self.updates_dropped.clone());
        r.register("backend_reads", "Reads the memory layer could not answer", self.backend_reads.clone());
        r.register(
            "backend_read_duration_seconds",
            "Time of reads that went past the memory layer",
            self.backend_read_duration_s.clone(),
        );
        r.register(
            "records_replaced",
            "Unreadable records replaced by a fresh profile",
            self.records_replaced.clone(),
        );
        r.register("writes", "Batches (embedded) or operations (aerospike) written", self.writes.clone());
        r.register("write_failures", "Writes the backend refused", self.write_failures.clone());
        r.register(
            "persist_duration_seconds",
            "Time of one embedded persist (encode, batch write, sync)",
            self.persist_duration_s.clone(),
        );
        r.register("expired_removed", "Idle profiles removed past their TTL", self.expired_removed.clone());
        r.register("evicted", "Profiles evicted from the memory layer", self.evicted.clone());
        r.register("memory_bytes", "Bytes held by the memory layer", self.memory_bytes.clone());
        r.register("memory_entries", "Entries in the memory layer", self.memory_entries.clone());
        r.register("write_queue_len", "Updates waiting for the writer", self.write_queue_len.clone());
    }

    pub fn reads_summary(&self) -> ReadsHealth {
        let found = self.read_series[READ_FOUND].get();
        let absent = self.read_series[READ_ABSENT].get();
        let unknown: u64 = MissReason::ALL.iter().map(|&r| self.miss_count(r)).sum();
        ReadsHealth {
            found,
            absent,
            unknown,
            deadline: self.miss_count(MissReason::Deadline),
            unavailable: self.miss_count(MissReason::Unavailable),
            overloaded: self.miss_count(MissReason::Overloaded),
            bad_record: self.miss_count(MissReason::Corrupt)
                + self.miss_count(MissReason::Foreign)
                + self.miss_count(MissReason::Oversized)
                + self.miss_count(MissReason::UnknownVersion),
        }
    }
}

/// Read counts since start, for `/health`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReadsHealth {
    pub found: u64,
    pub absent: u64,
    pub unknown: u64,
    pub deadline: u64,
    pub unavailable: u64,
    pub overloaded: u64,
    pub bad_record: u64,
}

/// The store's part of the server's `/health` JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ProfilesHealth {
    /// `embedded` or `aerospike`.
    pub backend: &'static str,
    /// `ok`, or `degraded` when the last write to the backend failed or reads time out.
    pub status: &'static str,
    /// The last backend error, if the last write failed.
    pub last_error: Option<String>,
    pub reads: ReadsHealth,
    /// Reads the memory layer could not answer (embedded: disk reads; aerospike: every read).
    pub backend_reads: u64,
    pub updates_queued: u64,
    pub updates_applied: u64,
    /// Updates skipped because they would have changed nothing (a repeat visit).
    pub updates_unchanged: u64,
    /// Updates not applied, for any reason (a full queue, a failed write, ...).
    pub updates_dropped: u64,
    /// Of those, the ones the request path dropped because the queue was full.
    pub updates_dropped_queue_full: u64,
    pub write_queue_len: i64,
    pub memory_bytes: i64,
    pub memory_entries: i64,
    /// Embedded: whether the key filter (absent users answered without a disk read) is built.
    pub key_filter_ready: Option<bool>,
}

impl ProfilesHealth {
    pub(crate) fn from_metrics(
        backend: &'static str,
        metrics: &StoreMetrics,
        last_error: Option<String>,
    ) -> Self {
        ProfilesHealth {
            backend,
            status: if last_error.is_some() { "degraded" } else { "ok" },
            last_error,
            reads: metrics.reads_summary(),
            backend_reads: metrics.backend_reads.get(),
            updates_queued: metrics.updates_queued.get(),
            updates_applied: metrics.updates_applied.get(),
            updates_unchanged: metrics.updates_unchanged.get(),
            updates_dropped: Dropped::ALL.iter().map(|&d| metrics.dropped_count(d)).sum(),
            updates_dropped_queue_full: metrics.dropped_count(Dropped::QueueFull),
            write_queue_len: metrics.write_queue_len.get(),
            memory_bytes: metrics.memory_bytes.get(),
            memory_entries: metrics.memory_entries.get(),
            key_filter_ready: None,
        }
    }
}

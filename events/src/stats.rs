//! The log's counters and gauges: plain atomics updated where things happen, read together
//! for `/health` ([`crate::EventLogHealth`]) and, at each scrape, for Prometheus.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::log::{EventLog, EventLogHealth, Inner, RecoveryReport};
use crate::shipper::ShipperHealth;

#[derive(Debug)]
pub(crate) struct Stats {
    /// Sequence number the next event gets; every event below it is in the page cache.
    pub committed_seq: AtomicU64,
    pub start_seq: u64,
    /// Every event below this has been fsynced.
    pub synced_seq: AtomicU64,
    pub writable: AtomicBool,
    pub refused: AtomicU64,
    pub user_keys_withheld: AtomicU64,
    pub sync_errors: AtomicU64,
    pub bytes_on_disk: AtomicU64,
    pub n_segments: AtomicU64,
    /// A segment was created or deleted since the folder was last fsynced.
    pub dir_dirty: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub recovery: RecoveryReport,
}

impl Stats {
    pub fn new(next_seq: u64, recovery: RecoveryReport) -> Stats {
        Stats {
            committed_seq: AtomicU64::new(next_seq),
            start_seq: next_seq,
            synced_seq: AtomicU64::new(next_seq),
            writable: AtomicBool::new(true),
            refused: AtomicU64::new(0),
            user_keys_withheld: AtomicU64::new(0),
            sync_errors: AtomicU64::new(0),
            bytes_on_disk: AtomicU64::new(0),
            n_segments: AtomicU64::new(0),
            dir_dirty: AtomicBool::new(false),
            last_error: Mutex::new(None),
            recovery,
        }
    }

    pub fn note_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub fn health(&self, inner: &Inner, shipper: Option<ShipperHealth>) -> EventLogHealth {
        let writable = self.writable.load(Ordering::Acquire);
        let next_seq = self.committed_seq.load(Ordering::Acquire);
        EventLogHealth {
            status: if writable { "ok" } else { "refusing" },
            writable,
            error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            dir: inner.dir.clone(),
            log_id: format!("{:016x}", inner.log_id),
            next_seq,
            synced_seq: self.synced_seq.load(Ordering::Acquire).min(next_seq),
            appended_since_start: next_seq - self.start_seq,
            refused_total: self.refused.load(Ordering::Relaxed),
            n_segments: self.n_segments.load(Ordering::Acquire),
            bytes_on_disk: self.bytes_on_disk.load(Ordering::Acquire),
            log_bytes_max: inner.config.log_bytes_max,
            recovery: self.recovery.clone(),
            shipper,
        }
    }
}

/// Reads the log's state at each scrape, so the append path pays for no metric.
#[derive(Debug)]
pub(crate) struct LogCollector {
    pub log: EventLog,
}

pub(crate) fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

pub(crate) fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for LogCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = self.log.health();
        let stats = &self.log.inner.stats;
        counter(
            &mut e,
            "adsnap_events_appended",
            "Events appended to the local log since start",
            h.appended_since_start,
        )?;
        counter(
            &mut e,
            "adsnap_events_refused",
            "Appends refused (disk full, backlog full, folder unwritable)",
            h.refused_total,
        )?;
        counter(
            &mut e,
            "adsnap_events_user_keys_withheld",
            "User keys dropped at append because the event's privacy bits forbid one",
            stats.user_keys_withheld.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "adsnap_events_sync_errors",
            "Failed fsync or sealing rounds",
            stats.sync_errors.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "adsnap_events_log_writable",
            "1 when the log accepts appends, 0 when it refuses them",
            h.writable as i64,
        )?;
        gauge(
            &mut e,
            "adsnap_events_unsynced",
            "Events appended but not yet fsynced",
            (h.next_seq - h.synced_seq) as i64,
        )?;
        gauge(
            &mut e,
            "adsnap_events_log_bytes",
            "Bytes of segments in the log folder",
            h.bytes_on_disk as i64,
        )?;
        gauge(
            &mut e,
            "adsnap_events_log_bytes_max",
            "Limit on the segments' bytes (log_bytes_max)",
            h.log_bytes_max as i64,
        )?;
        gauge(&mut e, "adsnap_events_log_segments", "Segment files in the log folder", h.n_segments as i64)?;
        gauge(&mut e, "adsnap_events_next_seq", "Sequence number of the next event", h.next_seq as i64)?;
        counter(
            &mut e,
            "adsnap_events_recovery_torn_bytes",
            "Bytes of torn tails cut at open",
            h.recovery.torn_bytes_cut,
        )?;
        counter(
            &mut e,
            "adsnap_events_recovery_corrupt_records",
            "Damaged records found at open",
            h.recovery.n_corrupt_records,
        )?;
        if let Some(s) = &h.shipper {
            crate::shipper::encode_metrics(&mut e, s, h.next_seq)?;
        }
        Ok(())
    }
}

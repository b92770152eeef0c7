//! Configuration of the local log and its shipper, as serde structs with documented defaults
//! (every key also has an `ADSNAP_EVENTS_*` flag where the binary exposes it).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EventsError;

/// The smallest segment the log accepts: a few records must fit after the header.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Segments are mapped whole; one must stay well inside a 32-bit offset.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// The local durable log.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventLogConfig {
    /// Folder holding the segments and the shipper's state; created if missing.
    pub dir: PathBuf,
    /// Size of one segment file, preallocated when it is created; the log rolls to a new segment
    /// when the next record would not fit (64 KiB to 1 GiB).
    pub segment_bytes_max: u64,
    /// Period of the group fsync: appends reach the page cache at once (surviving a killed
    /// process) and the disk within this many milliseconds (surviving a machine crash).
    pub fsync_interval_ms: u64,
    /// The most bytes of segments the folder may hold. Segments are deleted once shipped; when
    /// the log cluster is unreachable they pile up, and past this limit appends are refused
    /// (the server sheds load) instead of filling the disk.
    pub log_bytes_max: u64,
    /// After the disk was full or the folder unwritable, how long to wait before trying to
    /// create a segment again (appends are refused in between at no cost).
    pub unwritable_retry_ms: u64,
    /// Nice value (0–19) of the fsync thread: it writes back and faults in pages every
    /// `fsync_interval_ms`, and gives way to the threads answering requests (0: normal priority).
    pub background_nice: i8,
    /// Replication to NATS JetStream; `None` keeps the log local (and never deletes segments).
    pub nats: Option<ShipperConfig>,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        EventLogConfig {
            dir: PathBuf::from("adsnap-events"),
            segment_bytes_max: 64 * 1024 * 1024,
            fsync_interval_ms: 50,
            log_bytes_max: 16 * 1024 * 1024 * 1024,
            unwritable_retry_ms: 1000,
            background_nice: 10,
            nats: None,
        }
    }
}

impl EventLogConfig {
    pub fn validate(&self) -> Result<(), EventsError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes_max) {
            return Err(EventsError::Config(format!(
                "segment_bytes_max = {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes_max
            )));
        }
        if self.log_bytes_max < 2 * self.segment_bytes_max {
            return Err(EventsError::Config(format!(
                "log_bytes_max = {} must hold at least two segments of {} bytes",
                self.log_bytes_max, self.segment_bytes_max
            )));
        }
        if self.fsync_interval_ms == 0 {
            return Err(EventsError::Config("fsync_interval_ms must be at least 1".into()));
        }
        crate::threads::check_background_nice("background_nice", self.background_nice)
            .map_err(EventsError::Config)?;
        if let Some(nats) = &self.nats {
            nats.validate()?;
        }
        Ok(())
    }

    pub(crate) fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }
}

/// Replication of the local log to a NATS JetStream stream.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShipperConfig {
    /// Server URLs of the cluster, e.g. `nats://10.0.0.1:4222`; the client fails over between them.
    pub urls: Vec<String>,
    /// The JetStream stream events are published to.
    pub stream: String,
    /// The subject batches are published on (the stream must capture it).
    pub subject: String,
    /// Create the stream (file storage, `replicas`, `duplicate_window_s`) when it does not exist.
    pub create_stream: bool,
    /// Replicas of the stream when this shipper creates it.
    pub replicas: usize,
    /// How long the stream remembers message ids to drop resends; must exceed the longest
    /// outage after which a batch may be sent again.
    pub duplicate_window_s: u64,
    /// Events per published message at most.
    pub batch_events_max: usize,
    /// Bytes per published message at most (NATS refuses messages over its max_payload, 1 MiB by default).
    pub batch_bytes_max: usize,
    /// Publishes awaiting their acknowledgement at once.
    pub acks_in_flight_max: usize,
    /// How long one acknowledgement may take before the batch is sent again (same message id).
    pub ack_timeout_ms: u64,
    /// First wait after a failed publish; doubles up to `retry_backoff_ms_max`.
    pub retry_backoff_ms_min: u64,
    pub retry_backoff_ms_max: u64,
    /// When the shipper has caught up, how often it looks for new events.
    pub poll_interval_ms: u64,
    /// How often the acknowledged position is made durable (fsync) and shipped segments deleted.
    pub position_sync_interval_ms: u64,
    /// Connection attempts time out after this long (the client keeps retrying in the background).
    pub connect_timeout_ms: u64,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        ShipperConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            stream: "ADSNAP_EVENTS".into(),
            subject: "adsnap.events".into(),
            create_stream: true,
            replicas: 3,
            duplicate_window_s: 3600,
            batch_events_max: 2000,
            batch_bytes_max: 512 * 1024,
            acks_in_flight_max: 64,
            ack_timeout_ms: 5000,
            retry_backoff_ms_min: 50,
            retry_backoff_ms_max: 2000,
            poll_interval_ms: 5,
            position_sync_interval_ms: 200,
            connect_timeout_ms: 2000,
        }
    }
}

impl ShipperConfig {
    /// Events per message, bytes per message and acks in flight that a NATS server accepts.
    pub const BATCH_EVENTS_LIMIT: usize = 100_000;
    pub const BATCH_BYTES_LIMIT: usize = 8 * 1024 * 1024;
    pub const ACKS_IN_FLIGHT_LIMIT: usize = 4096;

    pub fn validate(&self) -> Result<(), EventsError> {
        let bad = |what: String| Err(EventsError::Config(what));
        if self.urls.is_empty() {
            return bad("nats.urls is empty".into());
        }
        if self.stream.is_empty() || self.stream.contains(['.', ' ', '*', '>']) {
            return bad(format!("nats.stream {:?} is not a valid stream name", self.stream));
        }
        if self.subject.is_empty() || self.subject.contains([' ', '*', '>']) {
            return bad(format!("nats.subject {:?} is not a literal subject", self.subject));
        }
        if !(1..=Self::BATCH_EVENTS_LIMIT).contains(&self.batch_events_max) {
            return bad(format!("nats.batch_events_max must be 1..={}", Self::BATCH_EVENTS_LIMIT));
        }
        if !(1024..=Self::BATCH_BYTES_LIMIT).contains(&self.batch_bytes_max) {
            return bad(format!("nats.batch_bytes_max must be 1024..={}", Self::BATCH_BYTES_LIMIT));
        }
        if !(1..=Self::ACKS_IN_FLIGHT_LIMIT).contains(&self.acks_in_flight_max) {
            return bad(format!("nats.acks_in_flight_max must be 1..={}", Self::ACKS_IN_FLIGHT_LIMIT));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("nats.replicas must be 1..=5".into());
        }
        if self.retry_backoff_ms_min == 0 || self.retry_backoff_ms_min > self.retry_backoff_ms_max {
            return bad(
                "nats.retry_backoff_ms_min must be at least 1 and at most retry_backoff_ms_max".into()
            );
        }
        if self.ack_timeout_ms == 0 || self.poll_interval_ms == 0 || self.position_sync_interval_ms == 0 {
            return bad(
                "nats.ack_timeout_ms, poll_interval_ms and position_sync_interval_ms must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_refused() {
        EventLogConfig::default().validate().unwrap();
        let with_nats = EventLogConfig { nats: Some(ShipperConfig::default()), ..Default::default() };
        with_nats.validate().unwrap();
        let err = serde_json::from_str::<EventLogConfig>(r#"{"segment_bytes": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let partial: EventLogConfig = serde_json::from_str(r#"{"nats": {"urls": ["nats://h:1"]}}"#).unwrap();
        assert_eq!(partial.nats.unwrap().replicas, 3);
    }

    #[test]
    fn limits_are_checked() {
        let small = EventLogConfig { segment_bytes_max: 10, ..Default::default() };
        assert!(matches!(small.validate(), Err(EventsError::Config(_))));
        for nice in [-1, 20] {
            let config = EventLogConfig { background_nice: nice, ..Default::default() };
            assert!(matches!(config.validate(), Err(EventsError::Config(_))), "{nice}");
        }
        let nats = ShipperConfig { batch_bytes_max: 0, ..Default::default() };
        assert!(nats.validate().is_err());
        let nats = ShipperConfig { stream: "a.b".into(), ..Default::default() };
        assert!(nats.validate().is_err());
    }
}

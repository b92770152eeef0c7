//! The crate's error types: [`EventsError`] for opening, syncing, reading, shipping and exporting,
//! and [`AppendError`], the small, cheap error the request path acts on.

use std::io;
use std::path::PathBuf;

/// Everything that can fail outside the append path. Each variant says where it happened and,
/// for calls to other systems, whether trying again can help ([`EventsError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("event log folder {dir}: {source} (check that it exists or can be created and is writable)")]
    Folder { dir: PathBuf, source: io::Error },
    #[error("event log segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    #[error("event log segment {path} is not a segment: {reason}")]
    NotASegment { path: PathBuf, reason: String },
    #[error("event log segment {path} has format version {found}; this build reads version {expected}")]
    SegmentVersion { path: PathBuf, found: u16, expected: u16 },
    #[error("corrupt record in {path} at byte {offset}: {reason}")]
    CorruptRecord { path: PathBuf, offset: u64, reason: String },
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
    #[error("position {requested} is no longer in the local log, which starts at {first_available}")]
    PositionGone { requested: u64, first_available: u64 },
    #[error("shipper state file {path}: {source}")]
    ShipperState { path: PathBuf, source: io::Error },
    #[error(
        "event log folder {dir} is in use by another writer (its `lock` file is held); one log, one writer"
    )]
    Locked { dir: PathBuf },
    #[error("invalid event log configuration: {0}")]
    Config(String),
    #[error("nats ({context}): {message} (retryable: {retryable})")]
    Nats { context: &'static str, message: String, retryable: bool },
    #[error("stream message {stream_seq} is not an event batch: {reason}")]
    BadBatch { stream_seq: u64, reason: String },
    #[error("parquet export to {path}: {message}")]
    Export { path: PathBuf, message: String },
    #[error("{path} is not a Parquet file: {reason}")]
    NotParquet { path: PathBuf, reason: String },
    #[error(
        "{path} is not an adsnap event export: column {column:?} {reason} (see docs/events.md, Parquet)"
    )]
    ParquetSchema { path: PathBuf, column: String, reason: String },
    #[error("{path}, row {row}: column {column:?} {reason}, which no event can hold")]
    ParquetValue { path: PathBuf, row: u64, column: &'static str, reason: String },
    #[error("reading Parquet {path}: {reason}")]
    ParquetRead { path: PathBuf, reason: String },
    #[error("the event log has no tokio runtime to run its shipper on (open it inside a runtime)")]
    NoRuntime,
}

impl EventsError {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            EventsError::Nats { retryable, .. } => *retryable,
            EventsError::Folder { source, .. } | EventsError::Segment { source, .. } => {
                matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::Interrupted)
            }
            _ => false,
        }
    }

    pub(crate) fn nats(context: &'static str, err: impl std::fmt::Display, retryable: bool) -> EventsError {
        EventsError::Nats { context, message: err.to_string(), retryable }
    }
}

/// Why an event could not be appended. The server answers these with 503 (shed load) rather than
/// dropping the event: see docs/events.md, "When the disk is full".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The file system said ENOSPC when the log needed a new segment.
    #[error("event log refuses appends: the disk is full")]
    DiskFull,
    /// The segments waiting to be shipped reached `log_bytes_max` (the log cluster is probably
    /// unreachable): more would fill the disk.
    #[error("event log refuses appends: unshipped segments reached log_bytes_max")]
    BacklogFull,
    /// The folder or a new segment could not be written (permissions, read-only mount, I/O error).
    #[error("event log refuses appends: the log folder is not writable ({0:?})")]
    Unwritable(io::ErrorKind),
    /// The event's strings are longer than the format allows.
    #[error("event too large for one record: {bytes} bytes, at most {bytes_max}")]
    TooLarge { bytes: usize, bytes_max: usize },
}

impl AppendError {
    /// Whether the condition is about this log rather than this event: the caller should shed
    /// load (503) until health says the log is writable again.
    pub fn is_log_unavailable(&self) -> bool {
        !matches!(self, AppendError::TooLarge { .. })
    }
}

/// A record whose bytes are not a valid event of a known format version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {needed} bytes its version needs")]
    Short { len: usize, needed: usize },
    #[error("format version {0} is unknown (this build writes {current})", current = crate::codec::FORMAT_VERSION)]
    Version(u8),
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("unknown channel {0}")]
    Channel(u8),
    #[error("unknown flag bits {0:#04x}")]
    Flags(u8),
    #[error("the test field holds {0}, not 0 or 1")]
    Test(u8),
    #[error("{field} is not UTF-8")]
    Utf8 { field: &'static str },
    #[error("a user key is present although the privacy bits {0:#04x} forbid one")]
    UserKeyForbidden(u8),
}

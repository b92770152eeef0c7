//! The analysis' one error type: every way a report can fail, with a message a user can act on.

use std::path::PathBuf;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("invalid report setting {field} = {value}: must be {rule}")]
    InvalidConfig { field: &'static str, value: f64, rule: &'static str },
    #[error(
        "no events in the range [{from_unix_ms}, {to_unix_ms}) ms: {n_events_read} events read, \
         {n_events_bad_assignment} of those in range with a bad assignment code; check the range and the input"
    )]
    EmptyRange { from_unix_ms: i64, to_unix_ms: i64, n_events_read: u64, n_events_bad_assignment: u64 },
    #[error("the time range is empty: from ({from_unix_ms} ms) must be before to ({to_unix_ms} ms)")]
    BadRange { from_unix_ms: i64, to_unix_ms: i64 },
    #[error(
        "{n_events} events come from {n_ids} snapshot id(s) not given to the report: {ids}; \
         pass every snapshot that served in the range (production and staging)"
    )]
    UnknownSnapshots { n_events: u64, n_ids: usize, ids: String },
    #[error("reading events from {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: not an event: {source}", path.display())]
    BadEvent { path: PathBuf, line: u64, source: serde_json::Error },
    #[error("{}:{line}: line longer than {limit_bytes} bytes", path.display())]
    LineTooLong { path: PathBuf, line: u64, limit_bytes: usize },
}

//! The crate's error type and the reasons a read can come back without an answer.

use std::path::PathBuf;

use serde::Serialize;

pub use crate::profile::FieldsError;
pub use crate::record::RecordError;

/// Why a read answered "unknown": the decision goes on without the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// The read did not answer within `read_deadline_ms`.
    Deadline,
    /// The backend cannot be reached or refused the read.
    Unavailable,
    /// Too many reads already waiting on the backend; answered at once instead of queueing.
    Overloaded,
    /// The stored record failed its checks (checksum, lengths, order).
    Corrupt,
    /// The stored bytes are not a profile record at all.
    Foreign,
    /// The stored record is larger than any valid record.
    Oversized,
    /// The stored record has a layout version this build does not read.
    UnknownVersion,
}

impl MissReason {
    pub const ALL: [MissReason; 7] = [
        MissReason::Deadline,
        MissReason::Unavailable,
        MissReason::Overloaded,
        MissReason::Corrupt,
        MissReason::Foreign,
        MissReason::Oversized,
        MissReason::UnknownVersion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MissReason::Deadline => "deadline",
            MissReason::Unavailable => "unavailable",
            MissReason::Overloaded => "overloaded",
            MissReason::Corrupt => "corrupt",
            MissReason::Foreign => "foreign",
            MissReason::Oversized => "oversized",
            MissReason::UnknownVersion => "unknown_version",
        }
    }

    pub(crate) fn of_record(error: &RecordError) -> MissReason {
        match error {
            RecordError::Foreign { .. } => MissReason::Foreign,
            RecordError::UnknownVersion { .. } => MissReason::UnknownVersion,
            RecordError::Oversized { .. } => MissReason::Oversized,
            RecordError::Corrupt { .. } => MissReason::Corrupt,
        }
    }
}

/// Whether trying the same call again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The condition may pass (a network fault, a server starting).
    MayHelp,
    /// The same call will fail the same way (bad configuration, bad data).
    WillNotHelp,
}

/// Everything that can go wrong in the profile store outside a read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("opening the embedded profile store in {path}: {source} (is another adsnap process using it?)")]
    OpenEmbedded { path: PathBuf, source: fjall::Error },
    #[error("the embedded profile store: {context}: {source}")]
    Embedded { context: &'static str, source: fjall::Error },
    #[error("the {0:?} backend is not in this build (rebuild with `--features aerospike`)")]
    BackendNotBuilt(crate::config::Backend),
    #[error("aerospike ({context}): {message}")]
    Aerospike { context: &'static str, message: String, retry: Retry },
    #[error("persisting profiles: {message}")]
    Persist { message: String },
    #[error("the profile writer has stopped; updates can no longer be written")]
    WriterStopped,
    #[error("profile for user key {key:016x}: {source}")]
    Record { key: u64, source: RecordError },
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ProfileError {
    /// Whether the same call may succeed if tried again.
    pub fn retry(&self) -> Retry {
        match self {
            ProfileError::Aerospike { retry, .. } => *retry,
            ProfileError::Embedded { .. } | ProfileError::Persist { .. } | ProfileError::WriterStopped => {
                Retry::MayHelp
            }
            _ => Retry::WillNotHelp,
        }
    }
}

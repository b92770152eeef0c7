//! The crate's one error type: a variant per failure point, each saying what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while publishing, following or handing over a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum DistributeError {
    #[error("reading or writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a key file ({reason}); make one with `adsnap keygen`")]
    BadKey { path: PathBuf, reason: String },
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    ManifestFormat(#[from] serde_json::Error),
    #[error("manifest signature does not verify against any configured publisher key (key {key_hex})")]
    BadSignature { key_hex: String },
    #[error("manifest field {field} is invalid: {reason}")]
    ManifestField { field: &'static str, reason: String },
    #[error(
        "snapshot version {version} is not newer than {newest}; publish a newer build, or pass --rollback \
         to go back on purpose"
    )]
    StaleVersion { version: u64, newest: u64 },
    #[error("snapshot {path} failed verification: {source}")]
    Snapshot { path: PathBuf, source: adsnap_snapshot::Error },
    #[error("downloaded snapshot does not match its manifest: {what}")]
    Mismatch { what: String },
    #[error("snapshot of {size_bytes} bytes does not fit the disk budget of {budget_bytes} bytes")]
    DiskBudget { size_bytes: u64, budget_bytes: u64 },
    #[error("bittorrent session: {0:#}; retrying may help if it was a network error")]
    Torrent(anyhow::Error),
    #[error("http request to {url} failed: {reason}; it is retried on the next poll")]
    Http { url: String, reason: String },
    #[error("hand-over to the server failed: {reason}")]
    Handover { reason: String, retry: bool },
    #[error("tracker whitelist reload command {command:?} failed: {reason}")]
    TrackerReload { command: Vec<String>, reason: String },
    #[error("config: {0}")]
    Config(String),
}

impl DistributeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DistributeError {
        let path = path.into();
        move |source| DistributeError::Io { path, source }
    }
}

pub type Result<T, E = DistributeError> = std::result::Result<T, E>;

//! What the server refuses, as a 4xx with a JSON body that says what is wrong.

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the body is not valid JSON for this endpoint: {0}")]
    Json(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("no ad unit {0:?} in the current snapshot")]
    UnknownAdUnit(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body, decompressed ({coding}), is larger than {max} bytes")]
    TooLargeDecoded { coding: &'static str, max: usize },
    #[error("Content-Encoding {0} is not supported: send the body as it is, or with gzip or deflate")]
    UnsupportedEncoding(String),
    #[error("the body is not valid {coding}: {reason}")]
    Undecodable { coding: &'static str, reason: String },
    #[error("{0}")]
    Token(String),
    /// The event log refuses appends (disk full, backlog full, unwritable): the request is shed
    /// rather than answered without its event.
    #[error("the server cannot record events right now and sheds this request: {0}")]
    EventsRefused(String),
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::TooLarge(_) | RequestError::TooLargeDecoded { .. } => 413,
            RequestError::UnsupportedEncoding(_) => 415,
            RequestError::UnknownAdUnit(_) => 404,
            RequestError::Token(_) => 403,
            RequestError::EventsRefused(_) => 503,
            _ => 400,
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Snapshot(#[from] adsnap_snapshot::Error),
    #[error("cannot open the profile store: {0}")]
    Profiles(#[from] adsnap_profile_store::ProfileError),
    #[error("cannot open the event log: {0}")]
    Events(#[from] adsnap_events::EventsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("cannot move the snapshot file {path}: {source}")]
    Slot { path: std::path::PathBuf, source: std::io::Error },
    #[error("refused {path}: {reason}")]
    Refused { path: std::path::PathBuf, reason: String },
    #[error("there is no staging snapshot to promote")]
    NoStaging,
    #[error("there is no previous snapshot to roll back to ({0} does not exist)")]
    NoPrevious(std::path::PathBuf),
}

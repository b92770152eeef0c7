//! Everything that can go wrong reading or writing a snapshot, each naming the file and the problem.

use std::io;
use std::path::PathBuf;

/// A snapshot that cannot be opened or written. Opening never yields a half-open snapshot: any of
/// these means the file was not mapped for serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read snapshot {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error("cannot write snapshot {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("{} is not an adsnap snapshot: its first bytes are {found:02x?}, a snapshot starts with {expected:02x?}", path.display())]
    NotASnapshot { path: PathBuf, found: Vec<u8>, expected: [u8; 8] },

    #[error("{} is truncated: {len} bytes, shorter than the {header_len}-byte header", path.display())]
    TooShort { path: PathBuf, len: u64, header_len: usize },

    #[error("{} has a corrupt header: its checksum is {found:016x} but the header bytes hash to {computed:016x}", path.display())]
    HeaderChecksum { path: PathBuf, found: u64, computed: u64 },

    #[error("{} is snapshot format version {found}; this build reads versions {oldest} to {newest}, rebuild the snapshot with a matching builder", path.display())]
    UnsupportedVersion { path: PathBuf, found: u32, oldest: u32, newest: u32 },

    #[error("{} has a header length of {found} bytes; format version {version} uses {expected}", path.display())]
    HeaderLength { path: PathBuf, found: u32, expected: u32, version: u32 },

    #[error("{} is truncated: the header promises {expected} payload bytes, the file holds {actual}", path.display())]
    Truncated { path: PathBuf, expected: u64, actual: u64 },

    #[error("{} has {extra} unexpected bytes after its payload", path.display())]
    TrailingBytes { path: PathBuf, extra: u64 },

    #[error("{} is {len} bytes, over the snapshot size limit of {max} bytes", path.display())]
    TooLarge { path: PathBuf, len: u64, max: u64 },

    #[error("{} payload is corrupt: it hashes to xxh3-128 {computed:032x}, the header says {expected:032x}", path.display())]
    PayloadChecksum { path: PathBuf, expected: u128, computed: u128 },

    #[error("{} payload is not a valid snapshot archive: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },

    #[error("{} breaks a snapshot invariant: {reason}", path.display())]
    Invariant { path: PathBuf, reason: String },

    #[error("cannot serialize snapshot {}: {reason}", path.display())]
    Serialize { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

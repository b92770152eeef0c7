//! The adsnap snapshot: the one immutable file that holds everything an ad server needs to decide.
//!
//! A snapshot is a fixed [`Header`] followed by an rkyv archive of [`schema::Payload`] (format
//! version 2), which holds version 1's whole root, [`schema::Snapshot`], and what version 2 adds;
//! a version 1 file is read through the same types ([`Snapshot::archive`]). The
//! builder writes it with [`write_atomic`]; servers [`Snapshot::open`] it, which maps the file
//! read-only and checks it completely once (header, xxh3-128 checksum, rkyv validation, then the
//! format's own invariants). After that every access is a zero-copy read of the mapping.
//!
//! The safety contract of the mapping: a snapshot file is never modified in place. Builders and
//! the distributor write a new file and rename it over the old name, which leaves existing
//! mappings untouched.

mod codes;
mod error;
mod header;
mod heap;
mod invariants;
mod open;
pub mod placeholder;
pub mod schema;
pub mod vast;
mod write;

pub use codes::*;
pub use error::{Error, Result};
pub use header::{Header, FORMAT_VERSION, FORMAT_VERSION_OLDEST, HEADER_LEN, MAGIC};
pub use heap::StringHeap;
pub use open::{verify, verify_with, Counts, OpenOptions, Pages, Snapshot, SNAPSHOT_BYTES_MAX};
pub use schema::{BidType, CampaignStatus, Format, MarkupKind, Os};
pub use write::{write_atomic, WriteOptions};

/// Candidates scanned per request when the experiment table does not say otherwise.
pub const CANDIDATES_SCANNED_MAX_DEFAULT: u32 = 256;
/// At most this many concurrent experiments, each in its own slot of the production buckets.
pub const EXPERIMENT_SLOTS: u8 = 3;

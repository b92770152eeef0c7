//! Opening a snapshot: map it, verify it once, then hand out zero-copy views.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use rkyv::rancor;
use rkyv::vec::ArchivedVec;
use xxhash_rust::xxh3::xxh3_128;

use crate::codes::key_hash;
use crate::error::{Error, Result};
use crate::header::{Header, HEADER_LEN};
use crate::invariants;
use crate::schema::*;

/// The largest snapshot this build maps (64 GiB): far above any real catalog, low enough that a
/// corrupt length can never ask for the impossible.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;

/// An open, verified snapshot. Cheap to share behind an `Arc`; dropping the last reference unmaps it.
pub struct Snapshot {
    path: PathBuf,
    header: Header,
    mmap: Mmap,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Record counts, for `adsnap inspect` and health endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    pub n_advertisers: usize,
    pub n_campaigns: usize,
    pub n_creatives: usize,
    pub n_apps: usize,
    pub n_ad_units: usize,
    pub n_segments: usize,
    pub n_experiments: usize,
    pub n_candidates: usize,
    pub n_index_slots_used: usize,
    pub string_bytes: u64,
}

impl Snapshot {
    /// Maps `path` read-only and verifies it completely: header, payload checksum, archive
    /// structure and format invariants. Runs in time linear in the file size; call it off any
    /// request path.
    pub fn open(path: &Path) -> Result<Snapshot> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len > SNAPSHOT_BYTES_MAX {
            return Err(Error::TooLarge {
                path: path.to_owned(),
                len,
                max: SNAPSHOT_BYTES_MAX,
            });
        }
        if len == 0 {
            return Err(Error::TooShort {
                path: path.to_owned(),
                len: 0,
                header_len: HEADER_LEN,
            });
        }
        // SAFETY: the map is read-only, and snapshot files are never modified in place (see the
        // crate docs); the bytes are verified below before any typed access.
        let mmap = unsafe { MmapOptions::new().populate().map(&file) }.map_err(io_err)?;
        let header = verify(&mmap, path)?;
        Ok(Snapshot {
            path: path.to_owned(),
            header,
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The archived payload.
    pub fn archive(&self) -> &ArchivedSnapshot {
        // SAFETY: `verify` ran rkyv's full validation over exactly these bytes when the snapshot
        // was opened, and the mapping is immutable for the life of `self`.
        unsafe { rkyv::access_unchecked::<ArchivedSnapshot>(&self.mmap[HEADER_LEN..]) }
    }

    /// The string a [`StrRef`] names. Every reference was checked at open to lie inside the heap
    /// on character boundaries, so the empty fallback never happens in a verified snapshot.
    pub fn str(&self, s: &ArchivedStrRef) -> &str {
        heap_str(self.archive().strings.as_slice(), s).unwrap_or_default()
    }

    pub fn pool_u16(&self, span: &ArchivedSpan) -> &[rkyv::Archived<u16>] {
        self.archive()
            .pool_u16
            .get(span.range())
            .unwrap_or_default()
    }

    pub fn pool_u32(&self, span: &ArchivedSpan) -> &[rkyv::Archived<u32>] {
        self.archive()
            .pool_u32
            .get(span.range())
            .unwrap_or_default()
    }

    pub fn pool_u64(&self, span: &ArchivedSpan) -> &[rkyv::Archived<u64>] {
        self.archive()
            .pool_u64
            .get(span.range())
            .unwrap_or_default()
    }

    pub fn pool_str(&self, span: &ArchivedSpan) -> &[ArchivedStrRef] {
        self.archive()
            .pool_str
            .get(span.range())
            .unwrap_or_default()
    }

    /// The candidates of one index slot, best first.
    pub fn candidates(&self, format: Format, country_key: u16, os: Os) -> &[ArchivedCandidate] {
        let index = &self.archive().index;
        if country_key as usize >= N_COUNTRY_KEYS {
            return &[];
        }
        let span = &index.slots[slot_idx(format, country_key, os)];
        index.candidates.get(span.range()).unwrap_or_default()
    }

    pub fn campaign_by_id(&self, id: u32) -> Option<(usize, &ArchivedCampaign)> {
        let campaigns = &self.archive().campaigns;
        let idx = campaigns
            .binary_search_by_key(&id, |c| c.id.to_native())
            .ok()?;
        Some((idx, &campaigns[idx]))
    }

    pub fn creative_by_id(&self, id: u32) -> Option<(usize, &ArchivedCreative)> {
        let archive = self.archive();
        let entry = archive
            .creative_ids
            .binary_search_by_key(&id, |e| e.id.to_native())
            .ok()?;
        let idx = archive.creative_ids[entry].idx.to_native() as usize;
        Some((idx, &archive.creatives[idx]))
    }

    /// The creatives of a campaign.
    pub fn creatives_of(&self, campaign: &ArchivedCampaign) -> &[ArchivedCreative] {
        self.archive()
            .creatives
            .get(campaign.creatives.range())
            .unwrap_or_default()
    }

    pub fn ad_unit_by_id(&self, id: &str) -> Option<(usize, &ArchivedAdUnit)> {
        let archive = self.archive();
        let idx = find_by_hash(&archive.ad_unit_ids, id, |idx| {
            self.str(&archive.ad_units[idx].id)
        })?;
        Some((idx, &archive.ad_units[idx]))
    }

    pub fn app_by_id(&self, id: &str) -> Option<(usize, &ArchivedPublisherApp)> {
        let archive = self.archive();
        let idx = find_by_hash(&archive.app_ids, id, |idx| self.str(&archive.apps[idx].id))?;
        Some((idx, &archive.apps[idx]))
    }

    pub fn app_by_bundle(&self, bundle: &str) -> Option<(usize, &ArchivedPublisherApp)> {
        let archive = self.archive();
        let idx = find_by_hash(&archive.app_bundles, bundle, |idx| {
            self.str(&archive.apps[idx].bundle)
        })?;
        Some((idx, &archive.apps[idx]))
    }

    pub fn segment_by_id(&self, id: u32) -> Option<&ArchivedSegment> {
        let segments = &self.archive().segments;
        let idx = segments
            .binary_search_by_key(&id, |s| s.id.to_native())
            .ok()?;
        Some(&segments[idx])
    }

    pub fn counts(&self) -> Counts {
        let a = self.archive();
        Counts {
            n_advertisers: a.advertisers.len(),
            n_campaigns: a.campaigns.len(),
            n_creatives: a.creatives.len(),
            n_apps: a.apps.len(),
            n_ad_units: a.ad_units.len(),
            n_segments: a.segments.len(),
            n_experiments: a.experiments.experiments.len(),
            n_candidates: a.index.candidates.len(),
            n_index_slots_used: a.index.slots.iter().filter(|s| !s.is_empty()).count(),
            string_bytes: a.strings.len() as u64,
        }
    }
}

/// Resolves a string reference inside a heap; `None` when it points outside the heap or between
/// the bytes of one character.
///
/// Only call this on a heap already checked to be UTF-8 (by `invariants::check`).
pub(crate) fn heap_str<'a>(heap: &'a [u8], s: &ArchivedStrRef) -> Option<&'a str> {
    let start = usize::try_from(s.offset.to_native()).ok()?;
    let end = start.checked_add(s.len.to_native() as usize)?;
    let bytes = heap.get(start..end)?;
    if !is_char_boundary(heap, start) || !is_char_boundary(heap, end) {
        return None;
    }
    // SAFETY: the whole heap is valid UTF-8 (checked once at open, immutable since), and a slice
    // of valid UTF-8 cut at character boundaries is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Whether `idx` starts a character (or is the end) of UTF-8 text: continuation bytes are
/// `0b10xx_xxxx`.
fn is_char_boundary(text: &[u8], idx: usize) -> bool {
    idx == text.len() || (text[idx] as i8) >= -0x40
}

/// Binary-searches a hash table for `key`, confirming the match by comparing the key itself
/// (neighbours with an equal hash are scanned too).
fn find_by_hash<'a>(
    table: &ArchivedVec<ArchivedHashEntry>,
    key: &str,
    key_of: impl Fn(usize) -> &'a str,
) -> Option<usize> {
    let hash = key_hash(key);
    let first = table.partition_point(|e| e.hash.to_native() < hash);
    table[first..]
        .iter()
        .take_while(|e| e.hash.to_native() == hash)
        .map(|e| e.idx.to_native() as usize)
        .find(|&idx| key_of(idx) == key)
}

/// Checks raw snapshot bytes completely and returns the header. Used by [`Snapshot::open`] and by
/// fuzzers, which hand in arbitrary bytes.
pub fn verify(bytes: &[u8], path: &Path) -> Result<Header> {
    let header = Header::decode(bytes, path)?;
    let actual = (bytes.len() - HEADER_LEN) as u64;
    if actual < header.payload_len {
        return Err(Error::Truncated {
            path: path.to_owned(),
            expected: header.payload_len,
            actual,
        });
    }
    if actual > header.payload_len {
        return Err(Error::TrailingBytes {
            path: path.to_owned(),
            extra: actual - header.payload_len,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    let computed = xxh3_128(payload);
    if computed != header.payload_xxh3_128 {
        return Err(Error::PayloadChecksum {
            path: path.to_owned(),
            expected: header.payload_xxh3_128,
            computed,
        });
    }
    let archive =
        rkyv::access::<ArchivedSnapshot, rancor::Error>(payload).map_err(|err| Error::Archive {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    invariants::check(archive).map_err(|reason| Error::Invariant {
        path: path.to_owned(),
        reason,
    })?;
    Ok(header)
}

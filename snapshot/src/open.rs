//! Opening a snapshot: map it, verify it once, then hand out zero-copy views.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, MmapOptions};
use rkyv::rancor;
use rkyv::vec::ArchivedVec;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

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
    /// Bytes of the mapping the kernel mapped with 2 MiB pages once it was read in.
    huge_page_bytes: Option<u64>,
    /// Where in the mapping the [`ArchivedSnapshot`] lies: version 1's root, or version 2's
    /// `base`, as validation found it at open, so that [`Snapshot::archive`], read many times
    /// per request, is one addition whatever the version.
    base_offset: usize,
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
        Snapshot::open_with(path, &OpenOptions::default())
    }

    /// [`Snapshot::open`] with explicit options.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Snapshot> {
        let io_err = |source| Error::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len > SNAPSHOT_BYTES_MAX {
            return Err(Error::TooLarge { path: path.to_owned(), len, max: SNAPSHOT_BYTES_MAX });
        }
        if len == 0 {
            return Err(Error::TooShort { path: path.to_owned(), len: 0, header_len: HEADER_LEN });
        }
        if options.pages == Pages::Huge {
            drop_cached_pages(&file);
        }
        // SAFETY: the map is read-only, and snapshot files are never modified in place (see the
        // crate docs); the bytes are verified below before any typed access.
        let mmap = unsafe { MmapOptions::new().map(&file) }.map_err(io_err)?;
        // Advice only: a kernel without it maps what it maps, and verification faults it in.
        let advice = match options.pages {
            Pages::Kernel => None,
            Pages::Huge => Some(Advice::HugePage),
            Pages::Small => Some(Advice::NoHugePage),
        };
        if let Some(advice) = advice {
            let _ = mmap.advise(advice);
        }
        let _ = mmap.advise(Advice::PopulateRead);
        let (header, base_offset) = verify_finding_base(&mmap, path, options)?;
        let huge_page_bytes = huge_page_bytes(&mmap);
        Ok(Snapshot { path: path.to_owned(), header, mmap, huge_page_bytes, base_offset })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many bytes of the mapping the kernel mapped with 2 MiB pages, as `/proc/self/smaps`
    /// said right after open (`FilePmdMapped`); `None` where that cannot be read.
    pub fn huge_page_bytes(&self) -> Option<u64> {
        self.huge_page_bytes
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The archived payload: version 1's root, or version 2's `base`.
    pub fn archive(&self) -> &ArchivedSnapshot {
        // SAFETY: `base_offset` is where `verify_finding_base` found the archive it validated
        // over exactly these bytes (rkyv checked its bounds and alignment), and the mapping is
        // immutable for the life of `self`.
        unsafe { &*(self.mmap.as_ptr().add(self.base_offset) as *const ArchivedSnapshot) }
    }

    /// Version 2's root, with what it adds to version 1; `None` for a version 1 file.
    fn additions(&self) -> Option<&ArchivedPayload> {
        // SAFETY: `verify` ran rkyv's full validation over exactly these bytes, as the root of
        // the header's format version, when the snapshot was opened, and the mapping is
        // immutable for the life of `self`.
        (self.header.format_version >= 2)
            .then(|| unsafe { rkyv::access_unchecked::<ArchivedPayload>(&self.mmap[HEADER_LEN..]) })
    }

    /// The IAB creative attributes of the creative at `creative_idx`, bit `n` for attribute `n`
    /// (see [`Payload::creative_attrs`]); none in a version 1 file, which cannot hold them.
    pub fn creative_attrs(&self, creative_idx: usize) -> u32 {
        self.additions()
            .and_then(|payload| payload.creative_attrs.get(creative_idx))
            .map_or(0, |attrs| attrs.to_native())
    }

    /// The creative attributes the ad unit at `ad_unit_idx` blocks, as the same mask (see
    /// [`Payload::ad_unit_blocked_attrs`]); none in a version 1 file.
    pub fn ad_unit_blocked_attrs(&self, ad_unit_idx: usize) -> u32 {
        self.additions()
            .and_then(|payload| payload.ad_unit_blocked_attrs.get(ad_unit_idx))
            .map_or(0, |attrs| attrs.to_native())
    }

    /// The string a [`StrRef`] names. Every reference was checked at open to lie inside the heap
    /// on character boundaries, so the empty fallback never happens in a verified snapshot.
    pub fn str(&self, s: &ArchivedStrRef) -> &str {
        heap_str(self.archive().strings.as_slice(), s).unwrap_or_default()
    }

    pub fn pool_u16(&self, span: &ArchivedSpan) -> &[rkyv::Archived<u16>] {
        self.archive().pool_u16.get(span.range()).unwrap_or_default()
    }

    pub fn pool_u32(&self, span: &ArchivedSpan) -> &[rkyv::Archived<u32>] {
        self.archive().pool_u32.get(span.range()).unwrap_or_default()
    }

    pub fn pool_u64(&self, span: &ArchivedSpan) -> &[rkyv::Archived<u64>] {
        self.archive().pool_u64.get(span.range()).unwrap_or_default()
    }

    pub fn pool_str(&self, span: &ArchivedSpan) -> &[ArchivedStrRef] {
        self.archive().pool_str.get(span.range()).unwrap_or_default()
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
        let idx = campaigns.binary_search_by_key(&id, |c| c.id.to_native()).ok()?;
        Some((idx, &campaigns[idx]))
    }

    pub fn creative_by_id(&self, id: u32) -> Option<(usize, &ArchivedCreative)> {
        let archive = self.archive();
        let entry = archive.creative_ids.binary_search_by_key(&id, |e| e.id.to_native()).ok()?;
        let idx = archive.creative_ids[entry].idx.to_native() as usize;
        // The id table's targets are checked at open to be in bounds; that each names the right
        // creative is confirmed here, on use.
        let creative = archive.creatives.get(idx).filter(|c| c.id == id)?;
        Some((idx, creative))
    }

    /// The creatives of a campaign.
    pub fn creatives_of(&self, campaign: &ArchivedCampaign) -> &[ArchivedCreative] {
        self.archive().creatives.get(campaign.creatives.range()).unwrap_or_default()
    }

    pub fn ad_unit_by_id(&self, id: &str) -> Option<(usize, &ArchivedAdUnit)> {
        let archive = self.archive();
        let idx = find_by_hash(&archive.ad_unit_ids, id, |idx| self.str(&archive.ad_units[idx].id))?;
        Some((idx, &archive.ad_units[idx]))
    }

    pub fn app_by_id(&self, id: &str) -> Option<(usize, &ArchivedPublisherApp)> {
        let archive = self.archive();
        let idx = find_by_hash(&archive.app_ids, id, |idx| self.str(&archive.apps[idx].id))?;
        Some((idx, &archive.apps[idx]))
    }

    pub fn app_by_bundle(&self, bundle: &str) -> Option<(usize, &ArchivedPublisherApp)> {
        let archive = self.archive();
        let idx = find_by_hash(&archive.app_bundles, bundle, |idx| self.str(&archive.apps[idx].bundle))?;
        Some((idx, &archive.apps[idx]))
    }

    pub fn segment_by_id(&self, id: u32) -> Option<&ArchivedSegment> {
        let segments = &self.archive().segments;
        let idx = segments.binary_search_by_key(&id, |s| s.id.to_native()).ok()?;
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

/// Finds `key` in a hash table sorted by hash, confirming the match by comparing the key itself
/// (neighbours with an equal hash are scanned too).
///
/// xxh3 spreads hashes evenly, so the position of a hash is close to `hash / 2^64 * len`: the
/// search starts there and widens exponentially, touching a handful of cache lines where a plain
/// binary search over a large table would miss the cache at every step.
fn find_by_hash<'a>(
    table: &ArchivedVec<ArchivedHashEntry>,
    key: &str,
    key_of: impl Fn(usize) -> &'a str,
) -> Option<usize> {
    let hash = key_hash(key);
    let hash_at = |i: usize| table[i].hash.to_native();
    let n = table.len();
    if n == 0 {
        return None;
    }
    let guess = ((hash as u128 * n as u128) >> 64) as usize;
    // Widen [lo, hi) around the guess until it brackets the first entry with this hash.
    let (mut lo, mut hi, mut step) = (guess, guess + 1, 1);
    while lo > 0 && hash_at(lo) >= hash {
        lo = lo.saturating_sub(step);
        step *= 2;
    }
    step = 1;
    while hi < n && hash_at(hi - 1) < hash {
        hi = (hi + step).min(n);
        step *= 2;
    }
    let first = lo + table[lo..hi].partition_point(|e| e.hash.to_native() < hash);
    table[first..]
        .iter()
        .take_while(|e| e.hash.to_native() == hash)
        .map(|e| e.idx.to_native() as usize)
        .find(|&idx| key_of(idx) == key)
}

/// Checks raw snapshot bytes completely and returns the header. Used by [`Snapshot::open`] and by
/// fuzzers, which hand in arbitrary bytes.
pub fn verify(bytes: &[u8], path: &Path) -> Result<Header> {
    verify_with(bytes, path, &OpenOptions::default())
}

/// [`verify`] with explicit options.
pub fn verify_with(bytes: &[u8], path: &Path, options: &OpenOptions) -> Result<Header> {
    verify_finding_base(bytes, path, options).map(|(header, _)| header)
}

/// [`verify_with`], which also gives where in `bytes` the validated [`ArchivedSnapshot`] lies
/// (version 1's root, or version 2's `base`), for [`Snapshot::archive`].
fn verify_finding_base(bytes: &[u8], path: &Path, options: &OpenOptions) -> Result<(Header, usize)> {
    let header = Header::decode(bytes, path)?;
    let actual = (bytes.len() - HEADER_LEN) as u64;
    if actual < header.payload_len {
        return Err(Error::Truncated { path: path.to_owned(), expected: header.payload_len, actual });
    }
    if actual > header.payload_len {
        return Err(Error::TrailingBytes { path: path.to_owned(), extra: actual - header.payload_len });
    }
    let payload = &bytes[HEADER_LEN..];
    let checksum_error = |computed: u128| Error::PayloadChecksum {
        path: path.to_owned(),
        expected: header.payload_xxh3_128,
        computed,
    };
    // Structure first: rkyv's validation is made for untrusted bytes, and it tells where the
    // string heap is, so that the one checksum pass can check the heap's UTF-8 on the way while
    // each chunk is in cache, instead of reading the heap a second time.
    let root = if header.format_version >= 2 {
        rkyv::access::<ArchivedPayload, rancor::Error>(payload).map(Root::Payload)
    } else {
        rkyv::access::<ArchivedSnapshot, rancor::Error>(payload).map(Root::Snapshot)
    };
    let root = match root {
        Ok(root) => root,
        // A corrupt file fails both; the checksum names the cause better.
        Err(err) => {
            let computed = xxh3_128(payload);
            if computed != header.payload_xxh3_128 {
                return Err(checksum_error(computed));
            }
            return Err(Error::Archive { path: path.to_owned(), reason: err.to_string() });
        }
    };
    let archive = root.base();
    let heap = archive.strings.as_slice();
    let heap_start = heap.as_ptr() as usize - payload.as_ptr() as usize;
    let heap_range = heap_start..heap_start + heap.len();
    // The checksum pass and the invariant pass read different things and share nothing: with a
    // second core they run side by side. Invariants of a payload that then fails its checksum
    // are never reported; the checksum error comes first.
    let ((computed, heap_is_utf8), invariants) = if options.parallel {
        std::thread::scope(|scope| {
            let checksum = scope.spawn(|| hash_checking_utf8(payload, heap_range));
            let invariants = invariants::check(archive).and_then(|()| root.check_additions());
            (checksum.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), invariants)
        })
    } else {
        let checksum = hash_checking_utf8(payload, heap_range);
        if checksum.0 != header.payload_xxh3_128 {
            return Err(checksum_error(checksum.0));
        }
        (checksum, invariants::check(archive).and_then(|()| root.check_additions()))
    };
    if computed != header.payload_xxh3_128 {
        return Err(checksum_error(computed));
    }
    let invariant = |reason: String| Error::Invariant { path: path.to_owned(), reason };
    if !heap_is_utf8 {
        return Err(invariant("the string heap is not valid UTF-8".into()));
    }
    invariants.map_err(invariant)?;
    Ok((header, archive as *const ArchivedSnapshot as usize - bytes.as_ptr() as usize))
}

/// The validated root of a payload, by format version.
enum Root<'a> {
    Snapshot(&'a ArchivedSnapshot),
    Payload(&'a ArchivedPayload),
}

impl Root<'_> {
    fn base(&self) -> &ArchivedSnapshot {
        match self {
            Root::Snapshot(base) => base,
            Root::Payload(payload) => &payload.base,
        }
    }

    /// The invariants of what version 2 adds: one attribute mask per creative and per ad unit,
    /// bit 0 clear in each.
    fn check_additions(&self) -> std::result::Result<(), String> {
        let Root::Payload(payload) = self else { return Ok(()) };
        let masks = |name: &str, masks: &[rkyv::Archived<u32>], n_records: usize, records: &str| {
            if masks.len() != n_records {
                return Err(format!("{name} has {} entries for {n_records} {records}", masks.len()));
            }
            match masks.iter().position(|mask| mask.to_native() & 1 != 0) {
                Some(idx) => Err(format!("{name}[{idx}] sets bit 0, which is no attribute")),
                None => Ok(()),
            }
        };
        let base = &payload.base;
        masks("creative_attrs", &payload.creative_attrs, base.creatives.len(), "creatives")?;
        masks("ad_unit_blocked_attrs", &payload.ad_unit_blocked_attrs, base.ad_units.len(), "ad units")
    }
}

/// How to verify a snapshot when opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Run the checksum pass on a second thread beside the invariant pass. On by default when
    /// the machine has more than one core: opening happens off the request path, and it makes
    /// the open close to one read of the file.
    pub parallel: bool,
    /// The size of the pages the snapshot is mapped with.
    pub pages: Pages,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let n_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        OpenOptions { parallel: n_cores > 1, pages: Pages::Kernel }
    }
}

/// Which pages a snapshot is mapped with. A decision's look-ups land on records spread over the
/// whole file, and on 4 KiB pages most of them also miss the TLB (`adsnap-bench decide` measures
/// the two sizes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pages {
    /// No advice: the kernel's own choice. Opening leaves the page cache as it was.
    #[default]
    Kernel,
    /// 2 MiB pages where the kernel can: what the server asks for. Linux maps a file with them
    /// when its page cache holds 2 MiB folios (file systems with large folios, ext4 and XFS
    /// among them) and the mapping asks for huge pages. So the file's cached pages that no
    /// mapping holds are dropped first, and the mapping, advised `MADV_HUGEPAGE`, reads the file
    /// back in 2 MiB folios: one read of the file from disk at open.
    Huge,
    /// 4 KiB pages (`MADV_NOHUGEPAGE`).
    Small,
}

/// Drops the file's cached pages that no mapping holds (`POSIX_FADV_DONTNEED`), so that the next
/// read fills the page cache afresh. Advice only: pages another mapping holds stay, as they are.
fn drop_cached_pages(file: &File) {
    // SAFETY: only integer arguments and a descriptor that `file` keeps open.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// `FilePmdMapped` of the mapping that starts at `map`'s first byte, from `/proc/self/smaps`.
fn huge_page_bytes(map: &Mmap) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    pmd_mapped_bytes(&smaps, map.as_ptr() as usize)
}

/// `FilePmdMapped` of the mapping starting at `start` in the text of a smaps file.
fn pmd_mapped_bytes(smaps: &str, start: usize) -> Option<u64> {
    let header = format!("{start:08x}-");
    let lines = smaps.lines().skip_while(|line| !line.starts_with(&header)).skip(1);
    // The mapping's fields come before the next mapping's header, which starts with an address
    // range rather than a `Name:` field.
    let kib = lines
        .take_while(|line| line.split_whitespace().next().is_some_and(|word| word.ends_with(':')))
        .find_map(|line| line.strip_prefix("FilePmdMapped:"))?;
    kib.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|kib| kib * 1024)
}

/// Bytes hashed per step of the checksum pass: small enough that a chunk is still in cache when
/// its UTF-8 is checked.
const CHECKSUM_CHUNK_BYTES: usize = 256 << 10;

/// xxh3-128 of `payload`, and whether `payload[heap]` is valid UTF-8, in one pass.
fn hash_checking_utf8(payload: &[u8], heap: std::ops::Range<usize>) -> (u128, bool) {
    let mut hasher = Xxh3::new();
    let mut utf8_ok = true;
    // Where the heap's UTF-8 has been checked up to; chunks of it are cut at character
    // boundaries, and UTF-8 text cut at boundaries is valid exactly when every piece is.
    let mut checked = heap.start;
    let mut at = 0;
    while at < payload.len() {
        let end = (at + CHECKSUM_CHUNK_BYTES).min(payload.len());
        hasher.update(&payload[at..end]);
        let mut upto = end.clamp(heap.start, heap.end);
        while upto > checked && upto < heap.end && (payload[upto] as i8) < -0x40 {
            upto -= 1;
        }
        if utf8_ok && upto > checked {
            utf8_ok = simdutf8::basic::from_utf8(&payload[checked..upto]).is_ok();
            checked = upto;
        }
        at = end;
    }
    (hasher.digest128(), utf8_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload whose heap (from `heap_start`) holds two- and three-byte characters, so that
    /// chunk ends fall inside characters.
    fn payload(heap_start: usize) -> Vec<u8> {
        let mut bytes = vec![7u8; heap_start];
        while bytes.len() < heap_start + 3 * CHECKSUM_CHUNK_BYTES {
            bytes.extend_from_slice("é€a".as_bytes());
        }
        bytes.extend_from_slice(&[0xff; 1000]);
        bytes
    }

    #[test]
    fn the_fused_pass_hashes_everything_and_checks_utf8_across_chunk_ends() {
        for heap_start in [0, 1, 5, 1000, CHECKSUM_CHUNK_BYTES - 1] {
            let bytes = payload(heap_start);
            let heap_end = bytes.len() - 1000;
            let (hash, ok) = hash_checking_utf8(&bytes, heap_start..heap_end);
            assert_eq!(hash, xxh3_128(&bytes));
            assert!(ok, "heap at {heap_start}");
            for bad in [heap_start, heap_start + CHECKSUM_CHUNK_BYTES + 1, heap_end - 1] {
                let mut broken = bytes.clone();
                broken[bad] = 0xff;
                assert!(!hash_checking_utf8(&broken, heap_start..heap_end).1, "byte {bad}");
            }
        }
    }

    /// A payload of no records, with `creative_attrs` as given.
    fn empty_payload(creative_attrs: Vec<u32>, ad_unit_blocked_attrs: Vec<u32>) -> Payload {
        let base = crate::schema::Snapshot {
            meta: Meta {
                catalog_name: "empty".into(),
                catalog_format_version: 1,
                currency: "USD".into(),
                reference_unix_s: 0,
            },
            advertisers: Vec::new(),
            campaigns: Vec::new(),
            creatives: Vec::new(),
            creative_ids: Vec::new(),
            apps: Vec::new(),
            app_ids: Vec::new(),
            app_bundles: Vec::new(),
            ad_units: Vec::new(),
            ad_unit_ids: Vec::new(),
            segments: Vec::new(),
            experiments: Experiments::default(),
            index: Index { slots: vec![Span::default(); N_INDEX_SLOTS], candidates: Vec::new() },
            pool_u16: Vec::new(),
            pool_u32: Vec::new(),
            pool_u64: Vec::new(),
            pool_str: Vec::new(),
            strings: crate::StringHeap::Memory(Vec::new()),
        };
        Payload { base, creative_attrs, ad_unit_blocked_attrs }
    }

    #[test]
    fn a_version_2_payload_needs_one_attribute_mask_per_creative_and_ad_unit() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            crate::WriteOptions { snapshot_version: 1, created_unix_ms: 0, builder_version: "test".into() };
        let good = dir.path().join("good.snap");
        crate::write_atomic(&good, &empty_payload(Vec::new(), Vec::new()), &options)
            .expect("an empty payload is valid");
        assert_eq!(Snapshot::open(&good).unwrap().header().format_version, 2);
        let bad = dir.path().join("bad.snap");
        let err = crate::write_atomic(&bad, &empty_payload(vec![1 << 6], Vec::new()), &options).unwrap_err();
        assert!(err.to_string().contains("creative_attrs has 1 entries for 0 creatives"), "{err}");
        let err = crate::write_atomic(&bad, &empty_payload(Vec::new(), vec![1]), &options).unwrap_err();
        assert!(err.to_string().contains("ad_unit_blocked_attrs has 1 entries for 0 ad units"), "{err}");
        assert!(!bad.exists());
    }

    #[test]
    fn the_pmd_mapped_bytes_of_one_mapping_are_read_from_smaps() {
        let smaps = "\
00400000-00452000 r-xp 00000000 fd:01 12 /usr/bin/adsnap
Size:                328 kB
FilePmdMapped:         4 kB
VmFlags: rd ex mr mw me dw
7f0000000000-7f0006f1f000 r--s 00000000 fd:01 34 /srv/live.snap
Size:             113788 kB
Rss:              113788 kB
FilePmdMapped:    112640 kB
VmFlags: rd sh mr mw me ms hg
7f0007000000-7f0007001000 r--s 00000000 fd:01 35 /srv/other.snap
Size:                  4 kB
VmFlags: rd sh mr mw me ms
";
        assert_eq!(pmd_mapped_bytes(smaps, 0x7f0000000000), Some(112640 * 1024));
        assert_eq!(pmd_mapped_bytes(smaps, 0x400000), Some(4 * 1024));
        // A mapping without the field does not borrow the next one's.
        assert_eq!(pmd_mapped_bytes(smaps, 0x7f0007000000), None);
        assert_eq!(pmd_mapped_bytes(smaps, 0x1234), None);
    }
}

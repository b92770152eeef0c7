//! Segment files: the 64-byte header, naming (`{first_seq:020}.seg`), creation with the whole
//! size reserved on disk, listing, and the recovery scan that finds the last whole record.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::EventsError;
use crate::record::{self, Frame};

pub const MAGIC: [u8; 8] = *b"ADSNEVLG";
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
pub const HEADER_BYTES: usize = 64;
pub const EXTENSION: &str = "seg";

/// What a segment's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub log_id: u64,
    pub first_seq: u64,
    /// The size the file was created with; a file still this long was never sealed.
    pub capacity_bytes: u64,
    pub created_unix_ms: i64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
        out[16..24].copy_from_slice(&self.log_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        out[32..40].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        out[40..48].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        let sum = xxh3_64(&out[..56]);
        out[56..64].copy_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SegmentHeader, EventsError> {
        let not = |reason: &str| EventsError::NotASegment { path: path.to_owned(), reason: reason.into() };
        if bytes.len() < HEADER_BYTES {
            return Err(not("shorter than the 64-byte header"));
        }
        if bytes[0..8] != MAGIC {
            return Err(not("wrong magic bytes"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if u64_at(56) != xxh3_64(&bytes[..56]) {
            return Err(not("header checksum mismatch"));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(EventsError::SegmentVersion {
                path: path.to_owned(),
                found: version,
                expected: SEGMENT_FORMAT_VERSION,
            });
        }
        Ok(SegmentHeader {
            log_id: u64_at(16),
            first_seq: u64_at(24),
            capacity_bytes: u64_at(32),
            created_unix_ms: u64_at(40) as i64,
        })
    }
}

pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{EXTENSION}")
}

/// Segments in `dir` by first sequence number, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, EventsError> {
    let folder_err = |source| EventsError::Folder { dir: dir.to_owned(), source };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(folder_err)? {
        let path = entry.map_err(folder_err)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Some(first_seq) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()) else {
            continue;
        };
        out.push((first_seq, path));
    }
    out.sort();
    Ok(out)
}

/// Creates a segment of `header.capacity_bytes` with every block reserved, so that writing
/// through a mapping can never meet a full disk (which would kill the process with SIGBUS).
/// It is prepared under a temporary name and renamed into place, replacing an empty sealed
/// segment of the same first sequence number if recovery left one.
pub fn create(dir: &Path, header: &SegmentHeader) -> io::Result<(PathBuf, File)> {
    let path = dir.join(file_name(header.first_seq));
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
    let prepared = reserve(&file, header.capacity_bytes)
        .and_then(|()| file.write_all_at(&header.encode(), 0))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(err) = prepared {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    Ok((path, file))
}

fn reserve(file: &File, bytes: u64) -> io::Result<()> {
    // SAFETY: posix_fallocate only reads its integer arguments and the descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The outcome of scanning one segment's bytes from the header on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Offset just after the last whole record.
    pub valid_end: u64,
    pub n_records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Damaged records stepped over (their neighbours were whole).
    pub n_corrupt: u64,
    /// Non-zero bytes after `valid_end`: a torn tail, cut by recovery.
    pub torn_bytes: u64,
}

/// Scans `bytes` (a whole segment file). A damaged record whose length is plausible and which
/// is followed by a whole record is stepped over; anything else ends the valid data.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan { valid_end: HEADER_BYTES as u64, ..Scan::default() };
    let mut at = HEADER_BYTES;
    loop {
        match record::parse(bytes, at) {
            Frame::Record { seq, next, .. } => {
                scan.first_seq.get_or_insert(seq);
                scan.last_seq = Some(seq);
                scan.n_records += 1;
                at = next;
                scan.valid_end = next as u64;
            }
            Frame::BadChecksum { next, .. } if matches!(record::parse(bytes, next), Frame::Record { .. }) => {
                scan.n_corrupt += 1;
                at = next;
            }
            _ => break,
        }
    }
    let tail = &bytes[(scan.valid_end as usize).min(bytes.len())..];
    scan.torn_bytes = tail.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1);
    scan
}

/// Reads a whole segment file.
pub fn read_all(path: &Path) -> Result<Vec<u8>, EventsError> {
    fs::read(path).map_err(|source| EventsError::Segment { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_damage_is_refused() {
        let header =
            SegmentHeader { log_id: 9, first_seq: 1234, capacity_bytes: 1 << 20, created_unix_ms: 5 };
        let bytes = header.encode();
        let path = Path::new("x.seg");
        assert_eq!(SegmentHeader::parse(path, &bytes).unwrap(), header);
        for at in 0..HEADER_BYTES {
            let mut bad = bytes;
            bad[at] ^= 0x10;
            assert!(SegmentHeader::parse(path, &bad).is_err(), "byte {at}");
        }
    }

    #[test]
    fn scan_finds_the_valid_end_and_counts_the_torn_tail() {
        let mut bytes = vec![0u8; HEADER_BYTES];
        for seq in 10..15 {
            record::push_frame(&mut bytes, seq, &[seq as u8; 30]);
        }
        let valid_end = bytes.len() as u64;
        // A torn record: payload written, header not.
        bytes.extend_from_slice(&[0u8; 20]);
        bytes.extend_from_slice(&[7u8; 25]);
        bytes.extend_from_slice(&[0u8; 100]);
        let scan = scan(&bytes);
        assert_eq!(
            (scan.valid_end, scan.n_records, scan.first_seq, scan.last_seq),
            (valid_end, 5, Some(10), Some(14))
        );
        assert_eq!(scan.torn_bytes, 45);
    }

    #[test]
    fn scan_steps_over_a_damaged_record_between_whole_ones() {
        let mut bytes = vec![0u8; HEADER_BYTES];
        for seq in 0..3 {
            record::push_frame(&mut bytes, seq, &[1u8; 30]);
        }
        bytes[HEADER_BYTES + 50 + 25] ^= 1;
        let scan = scan(&bytes);
        assert_eq!((scan.n_records, scan.n_corrupt, scan.torn_bytes), (2, 1, 0));
        assert_eq!(scan.valid_end, bytes.len() as u64);
    }
}

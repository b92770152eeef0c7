//! The shipper's journal (`shipper.journal` in the log folder): the acknowledged position and the
//! batches planned but not yet acknowledged, so that a restarted shipper resends exactly the
//! same batches under the same message ids and the stream drops the copies.
//!
//! Fixed 32-byte entries: tag (1 acked, 2 planned) and 7 zero bytes, two `u64`s, and the xxh3 of
//! the first 24 bytes. A torn last entry is cut when the journal is loaded.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::EventsError;

pub const JOURNAL_FILE: &str = "shipper.journal";
const ENTRY_BYTES: usize = 32;
const TAG_ACKED: u8 = 1;
const TAG_PLANNED: u8 = 2;
/// The journal is rewritten with only what is still needed once it grows past this.
pub const JOURNAL_BYTES_MAX: u64 = 1024 * 1024;

/// What the journal says at load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalState {
    /// Every event below this sequence number is acknowledged by the stream.
    pub acked_seq: u64,
    /// Batches sent (or about to be) and not known to be acknowledged: first → last sequence
    /// number, inclusive.
    pub planned: BTreeMap<u64, u64>,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
}

fn entry(tag: u8, a: u64, b: u64) -> [u8; ENTRY_BYTES] {
    let mut out = [0u8; ENTRY_BYTES];
    out[0] = tag;
    out[8..16].copy_from_slice(&a.to_le_bytes());
    out[16..24].copy_from_slice(&b.to_le_bytes());
    let sum = xxh3_64(&out[..24]);
    out[24..32].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Reads the entries of a journal, stopping at the first damaged one.
pub fn parse(bytes: &[u8]) -> (JournalState, u64) {
    let mut state = JournalState::default();
    let mut valid = 0u64;
    for chunk in bytes.chunks(ENTRY_BYTES) {
        if chunk.len() < ENTRY_BYTES || xxh3_64(&chunk[..24]).to_le_bytes() != chunk[24..32] {
            break;
        }
        let a = u64::from_le_bytes(chunk[8..16].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(chunk[16..24].try_into().expect("8 bytes"));
        match chunk[0] {
            TAG_ACKED => state.acked_seq = state.acked_seq.max(a),
            TAG_PLANNED => {
                state.planned.insert(a, b);
            }
            _ => break,
        }
        valid += ENTRY_BYTES as u64;
    }
    let acked = state.acked_seq;
    state.planned.retain(|_, last| *last >= acked);
    (state, valid)
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, cutting a torn last entry.
    pub fn open(dir: &Path) -> Result<(Journal, JournalState), EventsError> {
        let path = dir.join(JOURNAL_FILE);
        let err = |source| EventsError::ShipperState { path: path.clone(), source };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let (state, valid) = parse(&bytes);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(err)?;
        if valid < bytes.len() as u64 {
            tracing::warn!(journal = %path.display(), cut_bytes = bytes.len() as u64 - valid, "cut a torn journal entry");
            file.set_len(valid).map_err(err)?;
        }
        let mut journal = Journal { path, file, bytes: valid };
        journal.seek_end()?;
        Ok((journal, state))
    }

    fn seek_end(&mut self) -> Result<(), EventsError> {
        use std::io::Seek;
        self.file
            .seek(std::io::SeekFrom::Start(self.bytes))
            .map(|_| ())
            .map_err(|source| EventsError::ShipperState { path: self.path.clone(), source })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), EventsError> {
        self.file
            .write_all(bytes)
            .map_err(|source| EventsError::ShipperState { path: self.path.clone(), source })?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Records a batch before it is published (into the page cache: it survives the process).
    pub fn planned(&mut self, first_seq: u64, last_seq: u64) -> Result<(), EventsError> {
        self.write(&entry(TAG_PLANNED, first_seq, last_seq))
    }

    /// Records the acknowledged position and makes the journal durable; afterwards segments
    /// below the position may be deleted. Compacts the journal when it has grown.
    pub fn acked(&mut self, acked_seq: u64, outstanding: &BTreeMap<u64, u64>) -> Result<(), EventsError> {
        if self.bytes >= JOURNAL_BYTES_MAX {
            return self.compact(acked_seq, outstanding);
        }
        self.write(&entry(TAG_ACKED, acked_seq, 0))?;
        self.file.sync_data().map_err(|source| EventsError::ShipperState { path: self.path.clone(), source })
    }

    /// Rewrites the journal with the position and the outstanding plans only (temporary file,
    /// fsync, rename, fsync of the folder).
    fn compact(&mut self, acked_seq: u64, outstanding: &BTreeMap<u64, u64>) -> Result<(), EventsError> {
        let err = |source| EventsError::ShipperState { path: self.path.clone(), source };
        let tmp = self.path.with_extension("journal.tmp");
        let mut bytes = Vec::with_capacity((outstanding.len() + 1) * ENTRY_BYTES);
        bytes.extend_from_slice(&entry(TAG_ACKED, acked_seq, 0));
        for (first, last) in outstanding.range(acked_seq..) {
            bytes.extend_from_slice(&entry(TAG_PLANNED, *first, *last));
        }
        fs::write(&tmp, &bytes).map_err(err)?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            crate::segment::sync_dir(dir).map_err(err)?;
        }
        self.file = OpenOptions::new().read(true).write(true).open(&self.path).map_err(err)?;
        self.bytes = bytes.len() as u64;
        self.seek_end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_and_positions_survive_reopening_and_a_torn_entry_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, state) = Journal::open(dir.path()).unwrap();
        assert_eq!(state, JournalState::default());
        journal.planned(0, 99).unwrap();
        journal.planned(100, 149).unwrap();
        journal.acked(100, &BTreeMap::new()).unwrap();
        journal.planned(150, 150).unwrap();
        drop(journal);
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[TAG_PLANNED, 0, 0, 0, 9]);
        fs::write(&path, &bytes).unwrap();

        let (_journal, state) = Journal::open(dir.path()).unwrap();
        assert_eq!(state.acked_seq, 100);
        assert_eq!(state.planned.into_iter().collect::<Vec<_>>(), vec![(100, 149), (150, 150)]);
        assert_eq!(fs::metadata(&path).unwrap().len() % ENTRY_BYTES as u64, 0);
    }

    #[test]
    fn compaction_keeps_what_is_outstanding() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        let mut outstanding = BTreeMap::new();
        let mut seq = 0;
        while journal.bytes < JOURNAL_BYTES_MAX {
            journal.planned(seq, seq + 9).unwrap();
            seq += 10;
        }
        outstanding.insert(seq - 10, seq - 1);
        journal.acked(seq - 10, &outstanding).unwrap();
        assert_eq!(journal.bytes, 2 * ENTRY_BYTES as u64);
        journal.planned(seq, seq + 5).unwrap();
        drop(journal);
        let (_, state) = Journal::open(dir.path()).unwrap();
        assert_eq!(state.acked_seq, seq - 10);
        assert_eq!(state.planned.into_iter().collect::<Vec<_>>(), vec![(seq - 10, seq - 1), (seq, seq + 5)]);
    }
}

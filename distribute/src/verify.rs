//! Checks a downloaded file against its manifest: size, whole-file xxh3-128, then the snapshot's
//! own verification (header, payload checksum, archive, invariants).

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3Default;

use crate::error::{DistributeError, Result};
use crate::manifest::Manifest;

/// Read size for the checksum pass.
const CHECKSUM_READ_BYTES: usize = 1 << 20;

/// xxh3-128 of a whole file, as 32 hex digits. Blocking.
pub fn file_xxh3_128(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(DistributeError::io(path))?;
    let mut hasher = Xxh3Default::new();
    let mut buf = vec![0u8; CHECKSUM_READ_BYTES];
    let mut n_bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(DistributeError::io(path))?;
        if n == 0 {
            break;
        }
        n_bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((n_bytes, format!("{:032x}", hasher.digest128())))
}

/// Blocking: every check a follower runs before it hands a file to its server.
pub fn check_download(path: &Path, manifest: &Manifest) -> Result<()> {
    let (size_bytes, checksum) = file_xxh3_128(path)?;
    if size_bytes != manifest.size_bytes {
        return Err(DistributeError::Mismatch {
            what: format!("{size_bytes} bytes, manifest says {}", manifest.size_bytes),
        });
    }
    if checksum != manifest.file_xxh3_128 {
        return Err(DistributeError::Mismatch {
            what: format!("xxh3-128 {checksum}, manifest says {}", manifest.file_xxh3_128),
        });
    }
    let snapshot = adsnap_snapshot::Snapshot::open(path)
        .map_err(|source| DistributeError::Snapshot { path: path.to_owned(), source })?;
    let header = snapshot.header();
    if header.id_hex() != manifest.snapshot_id || header.snapshot_version != manifest.snapshot_version {
        return Err(DistributeError::Mismatch {
            what: format!(
                "snapshot {} version {}, manifest says {} version {}",
                header.id_hex(),
                header.snapshot_version,
                manifest.snapshot_id,
                manifest.snapshot_version
            ),
        });
    }
    Ok(())
}

//! The fixed 128-byte header in front of every snapshot's rkyv payload.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `\x89ADSNAP\n` |
//! | 8 | 4 | format version (u32 LE) |
//! | 12 | 4 | header length, 128 (u32 LE) |
//! | 16 | 8 | snapshot id (u64 LE) |
//! | 24 | 8 | snapshot version (u64 LE), grows with each publish |
//! | 32 | 8 | creation time, ms since the Unix epoch (i64 LE) |
//! | 40 | 8 | payload length in bytes (u64 LE) |
//! | 48 | 16 | xxh3-128 of the payload (u128 LE) |
//! | 64 | 32 | builder version, UTF-8, NUL-padded |
//! | 96 | 24 | reserved, zero |
//! | 120 | 8 | xxh3-64 of bytes 0..120 (u64 LE) |
//!
//! The magic's first byte has the high bit set and it ends in a newline, so a file mangled by a
//! 7-bit or line-ending-converting transfer is caught before any checksum is computed.

use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

pub const MAGIC: [u8; 8] = *b"\x89ADSNAP\n";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads: servers are upgraded before builders, so a server
/// reads the version the builders still running write (see `docs/snapshot-format.md`).
pub const FORMAT_VERSION_OLDEST: u32 = 1;
/// Length of the header; the payload starts here, 16-byte aligned for rkyv.
pub const HEADER_LEN: usize = 128;
const BUILDER_VERSION_LEN: usize = 32;
const CHECKSUMMED_LEN: usize = 120;

/// The decoded header of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format_version: u32,
    pub snapshot_id: u64,
    pub snapshot_version: u64,
    pub created_unix_ms: i64,
    pub payload_len: u64,
    pub payload_xxh3_128: u128,
    pub builder_version: String,
}

impl Header {
    /// The whole file's length: this header and the payload it describes.
    pub fn file_bytes(&self) -> u64 {
        HEADER_LEN as u64 + self.payload_len
    }

    /// The snapshot id as operators see it: 16 hex digits.
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.snapshot_id)
    }

    /// Derives the snapshot id from what makes a snapshot unique: its content, version and time.
    pub fn derive_id(payload_xxh3_128: u128, snapshot_version: u64, created_unix_ms: i64) -> u64 {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&payload_xxh3_128.to_le_bytes());
        bytes[16..24].copy_from_slice(&snapshot_version.to_le_bytes());
        bytes[24..].copy_from_slice(&created_unix_ms.to_le_bytes());
        xxh3_64(&bytes)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.snapshot_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.snapshot_version.to_le_bytes());
        out[32..40].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        out[40..48].copy_from_slice(&self.payload_len.to_le_bytes());
        out[48..64].copy_from_slice(&self.payload_xxh3_128.to_le_bytes());
        let version = self.builder_version.as_bytes();
        let n = truncate_utf8(&self.builder_version, BUILDER_VERSION_LEN);
        out[64..64 + n].copy_from_slice(&version[..n]);
        let checksum = xxh3_64(&out[..CHECKSUMMED_LEN]);
        out[CHECKSUMMED_LEN..].copy_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Decodes and checks a header: magic, header checksum, format version and header length.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Header> {
        if bytes.len() < HEADER_LEN {
            if !bytes.is_empty() && !MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
                return Err(not_a_snapshot(bytes, path));
            }
            return Err(Error::TooShort {
                path: path.to_owned(),
                len: bytes.len() as u64,
                header_len: HEADER_LEN,
            });
        }
        if bytes[..8] != MAGIC {
            return Err(not_a_snapshot(bytes, path));
        }
        let found = u64_at(bytes, CHECKSUMMED_LEN);
        let computed = xxh3_64(&bytes[..CHECKSUMMED_LEN]);
        if found != computed {
            return Err(Error::HeaderChecksum { path: path.to_owned(), found, computed });
        }
        let format_version = u32_at(bytes, 8);
        if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&format_version) {
            return Err(Error::UnsupportedVersion {
                path: path.to_owned(),
                found: format_version,
                oldest: FORMAT_VERSION_OLDEST,
                newest: FORMAT_VERSION,
            });
        }
        let header_len = u32_at(bytes, 12);
        if header_len != HEADER_LEN as u32 {
            return Err(Error::HeaderLength {
                path: path.to_owned(),
                found: header_len,
                expected: HEADER_LEN as u32,
                version: format_version,
            });
        }
        let version_bytes = &bytes[64..64 + BUILDER_VERSION_LEN];
        let version_len = version_bytes.iter().position(|&b| b == 0).unwrap_or(BUILDER_VERSION_LEN);
        Ok(Header {
            format_version,
            snapshot_id: u64_at(bytes, 16),
            snapshot_version: u64_at(bytes, 24),
            created_unix_ms: u64_at(bytes, 32) as i64,
            payload_len: u64_at(bytes, 40),
            payload_xxh3_128: u128::from_le_bytes(bytes[48..64].try_into().expect("16 bytes")),
            builder_version: String::from_utf8_lossy(&version_bytes[..version_len]).into_owned(),
        })
    }
}

fn not_a_snapshot(bytes: &[u8], path: &Path) -> Error {
    Error::NotASnapshot {
        path: path.to_owned(),
        found: bytes[..bytes.len().min(8)].to_vec(),
        expected: MAGIC,
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> usize {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            snapshot_id: 0x0123_4567_89ab_cdef,
            snapshot_version: 42,
            created_unix_ms: 1_790_000_000_000,
            payload_len: 4096,
            payload_xxh3_128: 0xdead_beef_u128 << 64 | 0x1234,
            builder_version: "adsnap-builder 0.1.0".into(),
        }
    }

    #[test]
    fn header_round_trips() {
        let header = sample();
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes, Path::new("x")).unwrap(), header);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = sample().encode();
        for bit in 0..HEADER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = Header::decode(&flipped, Path::new("x")).unwrap_err();
            if bit < 64 {
                assert!(matches!(err, Error::NotASnapshot { .. }), "bit {bit}: {err}");
            } else {
                assert!(matches!(err, Error::HeaderChecksum { .. }), "bit {bit}: {err}");
            }
        }
    }

    #[test]
    fn long_builder_versions_are_cut_on_a_character_boundary() {
        let mut header = sample();
        header.builder_version = "é".repeat(20);
        let decoded = Header::decode(&header.encode(), Path::new("x")).unwrap();
        assert_eq!(decoded.builder_version, "é".repeat(16));
    }
}

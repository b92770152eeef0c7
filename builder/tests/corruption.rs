//! A snapshot that is truncated, bit-flipped, of another format version or not a snapshot at all
//! is refused with the error that names its problem: never a panic, never a half-open snapshot.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use adsnap_snapshot::{Error, Header, OpenOptions, Snapshot, FORMAT_VERSION, HEADER_LEN};
use xxhash_rust::xxh3::xxh3_128;

/// Builds the minimal fixture once per test into its own folder; returns the folder and the bytes.
fn built() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.snap");
    common::build_to(&common::fixture("minimal"), &path).expect("fixture builds");
    let bytes = fs::read(&path).unwrap();
    (dir, bytes)
}

/// Opens `bytes` as a file, verifying serially and in parallel: both must agree.
fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<Snapshot, Error> {
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).unwrap();
    let serial = Snapshot::open_with(&path, &OpenOptions { parallel: false, ..OpenOptions::default() });
    let parallel = Snapshot::open_with(&path, &OpenOptions { parallel: true, ..OpenOptions::default() });
    match (&serial, &parallel) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "{a} / {b}"),
        _ => panic!("serial and parallel verification disagree: {serial:?} / {parallel:?}"),
    }
    parallel
}

/// Re-seals a payload edit: fixes the payload checksum and the header checksum, so that only the
/// archive and invariant checks stand between the edit and the server.
fn reseal(bytes: &mut [u8]) {
    let mut header = Header::decode(&bytes[..HEADER_LEN], Path::new("x")).unwrap();
    header.payload_xxh3_128 = xxh3_128(&bytes[HEADER_LEN..]);
    bytes[..HEADER_LEN].copy_from_slice(&header.encode());
}

#[test]
fn the_unmodified_file_opens() {
    let (dir, bytes) = built();
    let snapshot = open_bytes(dir.path(), "same.snap", &bytes).unwrap();
    assert_eq!(snapshot.header().snapshot_version, 7);
    assert_eq!(snapshot.counts().n_campaigns, 3);
}

#[test]
fn truncation_at_any_length_is_refused() {
    let (dir, bytes) = built();
    let lengths = (0..HEADER_LEN + 64).chain((HEADER_LEN + 64..bytes.len()).step_by(61));
    for len in lengths {
        let err = open_bytes(dir.path(), "cut.snap", &bytes[..len]).unwrap_err();
        if len < HEADER_LEN {
            assert!(matches!(err, Error::TooShort { .. }), "length {len}: {err}");
        } else {
            assert!(matches!(err, Error::Truncated { .. }), "length {len}: {err}");
        }
    }
}

#[test]
fn bit_flips_in_the_header_are_refused() {
    let (dir, bytes) = built();
    for bit in 0..HEADER_LEN * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let err = open_bytes(dir.path(), "flip.snap", &flipped).unwrap_err();
        match bit / 8 {
            0..8 => assert!(matches!(err, Error::NotASnapshot { .. }), "bit {bit}: {err}"),
            _ => assert!(matches!(err, Error::HeaderChecksum { .. }), "bit {bit}: {err}"),
        }
    }
}

#[test]
fn bit_flips_in_the_payload_are_refused() {
    let (dir, bytes) = built();
    for byte in (HEADER_LEN..bytes.len()).step_by(37) {
        for bit in [0, 3, 7] {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << bit;
            let err = open_bytes(dir.path(), "flip.snap", &flipped).unwrap_err();
            assert!(matches!(err, Error::PayloadChecksum { .. }), "byte {byte} bit {bit}: {err}");
        }
    }
}

#[test]
fn resealed_payload_corruption_never_panics_and_is_refused_or_harmless() {
    let (dir, bytes) = built();
    let mut n_refused = 0;
    for byte in (HEADER_LEN..bytes.len()).step_by(11) {
        let mut edited = bytes.clone();
        edited[byte] ^= 0xff;
        reseal(&mut edited);
        match open_bytes(dir.path(), "sealed.snap", &edited) {
            Ok(snapshot) => {
                // A flip in a plain number (a bid, a budget) leaves a well-formed snapshot; it must
                // still answer look-ups without panicking.
                let _ = snapshot.counts();
                let _ = snapshot.ad_unit_by_id("words-inter");
            }
            Err(Error::Archive { .. } | Error::Invariant { .. }) => n_refused += 1,
            Err(other) => panic!("byte {byte}: unexpected {other}"),
        }
    }
    assert!(n_refused > 0, "no resealed corruption was caught by the archive or invariant checks");
}

#[test]
fn another_format_version_is_refused_by_name() {
    let (dir, bytes) = built();
    for version in [0, FORMAT_VERSION + 1] {
        let mut header = Header::decode(&bytes[..HEADER_LEN], Path::new("x")).unwrap();
        header.format_version = version;
        let mut edited = bytes.clone();
        edited[..HEADER_LEN].copy_from_slice(&header.encode());
        let err = open_bytes(dir.path(), "other.snap", &edited).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { found, oldest: 1, newest: FORMAT_VERSION, .. } if found == version),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("version {version};")), "{err}");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let (dir, mut bytes) = built();
    bytes.extend_from_slice(b"extra");
    let err = open_bytes(dir.path(), "long.snap", &bytes).unwrap_err();
    assert!(matches!(err, Error::TrailingBytes { extra: 5, .. }), "{err}");
}

#[test]
fn a_header_promising_more_than_the_file_holds_is_refused() {
    let (dir, bytes) = built();
    let mut header = Header::decode(&bytes[..HEADER_LEN], Path::new("x")).unwrap();
    header.payload_len += 1 << 40;
    let mut edited = bytes.clone();
    edited[..HEADER_LEN].copy_from_slice(&header.encode());
    let err = open_bytes(dir.path(), "promise.snap", &edited).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}

#[test]
fn foreign_files_are_not_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let this_test_binary = fs::read(std::env::current_exe().unwrap()).unwrap();
    let catalog_json = fs::read(common::fixture("minimal").join("catalog.json")).unwrap();
    for (name, bytes) in
        [("elf", &this_test_binary[..]), ("json", &catalog_json[..]), ("zeros", &[0u8; 4096][..])]
    {
        let err = open_bytes(dir.path(), name, bytes).unwrap_err();
        assert!(matches!(err, Error::NotASnapshot { .. }), "{name}: {err}");
    }
    let err = open_bytes(dir.path(), "empty", b"").unwrap_err();
    assert!(matches!(err, Error::TooShort { len: 0, .. }), "{err}");
    let err = Snapshot::open(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

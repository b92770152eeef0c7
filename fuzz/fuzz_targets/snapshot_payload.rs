//! Arbitrary bytes as a snapshot payload behind a valid header, so that the checksum does not
//! stop the input and rkyv's validation and the format's invariants see it.
#![no_main]

use std::path::Path;

use adsnap_snapshot::{Header, FORMAT_VERSION, HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;

fuzz_target!(|payload: &[u8]| {
    let header = Header {
        format_version: FORMAT_VERSION,
        snapshot_id: 1,
        snapshot_version: 1,
        created_unix_ms: 0,
        payload_len: payload.len() as u64,
        payload_xxh3_128: xxhash_rust::xxh3::xxh3_128(payload),
        builder_version: "fuzz".into(),
    };
    let mut bytes = AlignedVec::<16>::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&header.encode());
    bytes.extend_from_slice(payload);
    let _ = adsnap_snapshot::verify(&bytes, Path::new("fuzz"));
});

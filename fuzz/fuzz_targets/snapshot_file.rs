//! Arbitrary bytes as a whole snapshot file: every input is refused or accepted, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;

fuzz_target!(|data: &[u8]| {
    // A mapped file is page-aligned; give the verifier the same alignment.
    let mut bytes = AlignedVec::<16>::with_capacity(data.len());
    bytes.extend_from_slice(data);
    let _ = adsnap_snapshot::verify(&bytes, Path::new("fuzz"));
});

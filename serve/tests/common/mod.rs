//! What several test binaries of this crate build: the example catalog's snapshot.

use std::path::Path;

use adsnap_builder::{build, BuildOptions};

/// Builds `examples/catalog` into a snapshot at `out`.
pub fn build_example(out: &Path) {
    let options = BuildOptions {
        catalog_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog"),
        out_path: out.to_owned(),
        snapshot_version: 1,
        now_unix_s: 1_795_305_600,
        created_unix_ms: 0,
        progress: indicatif::ProgressBar::hidden(),
    };
    build(&options).unwrap();
}

//! Helpers shared by the builder's integration tests: fixture catalogs copied into temporary
//! folders, edited, and built with a fixed clock.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use adsnap_builder::{build, BuildError, BuildOptions, BuildSummary};
use indicatif::ProgressBar;

/// The clock every test builds for: 2026-11-22T00:00:00Z.
pub const NOW_UNIX_S: i64 = 1_795_305_600;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Copies a fixture catalog into a new temporary folder.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in fs::read_dir(fixture(name)).expect("fixture exists") {
        let entry = entry.expect("fixture entry");
        fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy fixture file");
    }
    dir
}

pub fn options(catalog: &Path, out: &Path) -> BuildOptions {
    BuildOptions {
        catalog_dir: catalog.to_owned(),
        out_path: out.to_owned(),
        snapshot_version: 7,
        now_unix_s: NOW_UNIX_S,
        created_unix_ms: NOW_UNIX_S * 1000,
        progress: ProgressBar::hidden(),
    }
}

/// Builds `catalog` into `out`.
pub fn build_to(catalog: &Path, out: &Path) -> Result<BuildSummary, BuildError> {
    build(&options(catalog, out))
}

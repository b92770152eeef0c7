//! What several test binaries of this crate build: the example catalog's snapshot, and copies
//! of catalogs to edit.

use std::path::Path;

use adsnap_builder::{build, BuildOptions};

/// The example catalog's folder.
#[allow(dead_code)] // Not every test binary that shares this module uses each helper.
pub fn example_catalog() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog")
}

/// Builds `examples/catalog` into a snapshot at `out`.
#[allow(dead_code)]
pub fn build_example(out: &Path) {
    build_catalog(&example_catalog(), out);
}

/// Builds the catalog in `catalog_dir` into a snapshot at `out`, on the example's reference day.
#[allow(dead_code)]
pub fn build_catalog(catalog_dir: &Path, out: &Path) {
    let options = BuildOptions {
        catalog_dir: catalog_dir.to_owned(),
        out_path: out.to_owned(),
        snapshot_version: 1,
        now_unix_s: 1_795_305_600,
        created_unix_ms: 0,
        progress: indicatif::ProgressBar::hidden(),
    };
    build(&options).unwrap();
}

/// Copies the files of a flat directory (a catalog) into a new one.
#[allow(dead_code)]
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

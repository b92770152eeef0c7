//! Opening and releasing snapshots off the request threads.

use std::path::Path;
use std::time::{Duration, Instant};

use adsnap_events::threads::nice_of_threads_named;
use adsnap_serve::served::{Prepare, Served};

mod common;
use common::build_example;

fn mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|line| line.ends_with(path.to_str().unwrap()))
}

/// The opener thread hands back a verified, prepared snapshot; dropping the last `Arc` hands it
/// to the releasing thread, which unmaps it.
#[test]
fn a_dropped_snapshot_is_unmapped_by_the_releasing_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.snap");
    build_example(&path);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let prepare = Prepare { nice: 10, escaped_markup_bytes_max: 1 << 20 };
    let served = runtime.block_on(Served::open(&path, prepare)).unwrap();
    assert!(served.escaped_markup(0).is_some());
    assert!(mapped(&path), "the open snapshot is mapped");

    // The releasing thread starts with the first opened snapshot and lowers its own priority.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nice_of_threads_named("snapshot-unmap").unwrap() != [10] {
        assert!(Instant::now() < deadline, "no releasing thread at nice 10");
        std::thread::yield_now();
    }
    drop(served);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mapped(&path) {
        assert!(Instant::now() < deadline, "the dropped snapshot is still mapped after 10 s");
        std::thread::yield_now();
    }
}

/// A file that does not verify is refused by the opener thread with the snapshot's own error.
#[test]
fn the_opener_refuses_a_file_that_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.snap");
    build_example(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let prepare = Prepare { nice: 10, escaped_markup_bytes_max: 1 << 20 };
    let err = runtime.block_on(Served::open(&path, prepare)).err().expect("a corrupt file is refused");
    assert!(matches!(err, adsnap_serve::ServeError::Snapshot(_)), "{err}");
}

/// Every creative of a generated catalog loads over https (its VAST names its namespace with an
/// `http://` URI, which nothing fetches), every VAST one is VAST 4.0 inline, and every native one
/// offers the assets its markup has.
#[test]
fn a_generated_catalogs_creatives_are_secure() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    let options = adsnap_builder::gen::GenOptions { n_campaigns: 200, ..Default::default() };
    adsnap_builder::gen::generate(&options, &catalog, &|_| {}).unwrap();
    let out = dir.path().join("gen.snap");
    let build = adsnap_builder::BuildOptions {
        catalog_dir: catalog,
        out_path: out.clone(),
        snapshot_version: 1,
        now_unix_s: options.now_unix_s,
        created_unix_ms: 0,
        progress: indicatif::ProgressBar::hidden(),
    };
    adsnap_builder::build(&build).unwrap();
    let served = Served::prepare(
        adsnap_snapshot::Snapshot::open(&out).unwrap(),
        Prepare { nice: 0, escaped_markup_bytes_max: 0 },
    );
    let creatives = &served.archive().creatives;
    assert!(creatives.len() > 200);
    let mut n_native = 0;
    for (idx, creative) in creatives.iter().enumerate() {
        assert!(served.creative_is_secure(idx as u32), "creative {}", creative.id.to_native());
        if creative.markup_kind.get() == adsnap_snapshot::MarkupKind::Vast {
            assert_eq!(
                served.vast_protocol(idx as u32),
                7,
                "VAST 4.0 inline: creative {}",
                creative.id.to_native()
            );
        }
        if creative.markup_kind.get() == adsnap_snapshot::MarkupKind::NativeJson {
            n_native += 1;
            assert!(!served.native_assets(idx as u32).is_empty(), "creative {}", creative.id.to_native());
        }
    }
    assert!(n_native > 0);
}

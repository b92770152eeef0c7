//! Opening and releasing snapshots off the request threads.

use std::path::Path;
use std::time::{Duration, Instant};

use adsnap_builder::{build, BuildOptions};
use adsnap_serve::served::{Prepare, Served};

fn build_example(out: &Path) {
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

fn mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|line| line.ends_with(path.to_str().unwrap()))
}

/// The nice value of every thread of this process named `name`, from /proc (field 19 of
/// `stat`, counted after the parenthesised name).
fn nice_of_threads_named(name: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue;
        };
        if comm.trim() == name {
            nice.push(stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    nice
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
    while nice_of_threads_named("snapshot-unmap") != [10] {
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

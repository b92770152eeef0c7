//! The `adsnap` binary end to end: gen, build and inspect as an operator runs them.

use std::path::Path;
use std::process::{Command, Output};

fn adsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adsnap")).args(args).output().expect("adsnap runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example_catalog() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog").display().to_string()
}

#[test]
fn build_then_inspect_the_example_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("example.snap").display().to_string();
    let out = adsnap(&[
        "build",
        &example_catalog(),
        "--out",
        &snap,
        "--quiet",
        "--now",
        "2026-11-22T00:00:00Z",
        "--snapshot-version",
        "42",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("campaigns         8 (6 served"), "{summary}");

    let out = adsnap(&["inspect", &snap, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["snapshot_version"], 42);
    assert_eq!(report["counts"]["campaigns"], 8);
    assert_eq!(report["counts"]["creatives"], 17);
    assert_eq!(report["counts"]["experiments"], 3);
    assert_eq!(report["format_version"], 2);
    assert_eq!(report["counts"]["creatives_with_attrs"], 1);
    assert_eq!(report["counts"]["ad_units_blocking_attrs"], 1);
    assert_eq!(report["catalog_name"], "example-ua-network");
}

#[test]
fn inspect_into_a_closed_pipe_ends_on_sigpipe_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let snap = Path::new(env!("CARGO_MANIFEST_DIR")).join("builder/tests/fixtures/format-v1/example.snap");
    // The reading end is closed before adsnap writes a byte, as `| head -0` would leave it.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_adsnap"))
        .args(["inspect", &snap.display().to_string()])
        .stdout(writer)
        .output()
        .expect("adsnap runs");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {}", out.status, text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

#[test]
fn a_bad_catalog_exits_2_with_every_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    for entry in std::fs::read_dir(example_catalog()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), catalog.join(entry.file_name())).unwrap();
    }
    let campaigns = std::fs::read_to_string(catalog.join("campaigns.jsonl")).unwrap();
    std::fs::write(catalog.join("campaigns.jsonl"), campaigns.replace("\"US\"", "\"UK\"")).unwrap();
    let snap = dir.path().join("bad.snap");
    let out =
        adsnap(&["build", &catalog.display().to_string(), "--out", &snap.display().to_string(), "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    let errors = text(&out.stderr);
    let n_us = campaigns.matches("\"US\"").count();
    assert_eq!(errors.matches("is not an ISO 3166-1 alpha-2 country code").count(), n_us, "{errors}");
    assert!(errors.contains("campaigns.jsonl:1: targeting.countries["), "{errors}");
    assert!(errors.contains("no snapshot was written"), "{errors}");
    assert!(!snap.exists());
}

#[test]
fn inspect_names_what_is_wrong_with_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("x.snap");
    std::fs::write(&snap, b"definitely not a snapshot, just some text of sufficient length to pass").unwrap();
    let out = adsnap(&["inspect", &snap.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not an adsnap snapshot"), "{}", text(&out.stderr));
}

#[test]
fn gen_writes_a_catalog_that_builds() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("gen").display().to_string();
    let out = adsnap(&["gen", "--out", &catalog, "--campaigns", "300", "--seed", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrote 300 campaigns, 900 creatives"), "{}", text(&out.stdout));
    let snap = dir.path().join("gen.snap").display().to_string();
    let out = adsnap(&["build", &catalog, "--out", &snap, "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A second gen into the same folder is refused rather than mixing two catalogs.
    let out = adsnap(&["gen", "--out", &catalog, "--campaigns", "300"]);
    assert!(!out.status.success());
}

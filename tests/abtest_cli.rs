//! `adsnap abtest` end to end: a real snapshot of the example catalog, simulated events for its
//! split, and the report as an operator runs it (formats, exit status, bad input).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn adsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adsnap")).args(args).output().expect("adsnap runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn build_snapshot(dir: &Path, version: &str) -> String {
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog");
    let snap = dir.join(format!("v{version}.snap")).display().to_string();
    let out = adsnap(&[
        "build",
        &catalog.display().to_string(),
        "--out",
        &snap,
        "--quiet",
        "--now",
        "2026-11-22T00:00:00Z",
        "--snapshot-version",
        version,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    snap
}

fn simulate(production: &str, staging: &str, out: &Path, staging_ctr: &str) {
    let out = adsnap(&[
        "abtest",
        "simulate",
        "--snapshot",
        production,
        "--staging-snapshot",
        staging,
        "--out",
        &out.display().to_string(),
        "--users",
        "8000",
        "--requests",
        "60000",
        "--staging-ctr-multiplier",
        staging_ctr,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    production: String,
    staging: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let production = build_snapshot(&path, "42");
    let staging = build_snapshot(&path, "43");
    Setup { _dir: dir, dir: path, production, staging }
}

#[test]
fn report_in_every_format_with_a_quiet_staging() {
    let s = setup();
    let events = s.dir.join("events.jsonl");
    simulate(&s.production, &s.staging, &events, "1.0");
    let events = events.display().to_string();
    let snapshots = format!("{},{}", s.production, s.staging);
    let range = ["--from", "2026-11-22T00:00:00Z", "--to", "2026-11-23T00:00:00Z"];

    let out = adsnap(
        &[
            &["abtest", "report", "--events", &events, "--snapshot", &snapshots, "--format", "json"][..],
            &range,
        ]
        .concat(),
    );
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["experiments"].as_array().unwrap().len(), 3);
    assert_eq!(report["srm_failed"], false);
    assert_eq!(report["staging_alarm"], false);
    assert_eq!(report["snapshots"].as_array().unwrap().len(), 2);
    assert!(report["input"]["n_events_in_range"].as_u64().unwrap() > 60_000);

    let out =
        adsnap(&[&["abtest", "report", "--events", &events, "--snapshot", &snapshots][..], &range].concat());
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(table.contains("experiment 1 \"bid shading 0.9\": sample ratio ok"), "{table}");
    assert!(table.contains("staging vs production control"), "{table}");

    let html = s.dir.join("report.html");
    let html_arg = html.display().to_string();
    let out = adsnap(
        &[
            &[
                "abtest",
                "report",
                "--events",
                &events,
                "--snapshot",
                &snapshots,
                "--format",
                "html",
                "--out",
                &html_arg,
            ][..],
            &range,
        ]
        .concat(),
    );
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.matches("<svg").count() >= 8,
        "one chart per arm and staging"
    );
}

#[test]
fn staging_beyond_the_threshold_exits_with_the_alarm_status() {
    let s = setup();
    let events = s.dir.join("events.jsonl");
    simulate(&s.production, &s.staging, &events, "3.0");
    let events = events.display().to_string();
    let snapshots = format!("{},{}", s.production, s.staging);
    let out =
        adsnap(&["abtest", "report", "--events", &events, "--snapshot", &snapshots, "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["staging_alarm"], true);
    assert_eq!(report["staging"]["alarm_metrics"][0], "ctr");
    // A threshold beyond the difference silences it.
    let out = adsnap(&[
        "abtest",
        "report",
        "--events",
        &events,
        "--snapshot",
        &snapshots,
        "--staging-alarm-relative",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn bad_input_gets_a_clear_message() {
    let s = setup();
    let events = s.dir.join("events.jsonl");
    simulate(&s.production, &s.staging, &events, "1.0");
    let events = events.display().to_string();

    let out = adsnap(&["abtest", "report", "--events", &events, "--snapshot", &s.production]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("snapshot id(s) not given to the report"), "{stderr}");

    let out = adsnap(&["abtest", "report", "--events", &events, "--from", "2030-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no events in the range"), "{}", text(&out.stderr));

    let out = adsnap(&["abtest", "report", "--events", &events, "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--from"), "{}", text(&out.stderr));

    let out = adsnap(&["abtest", "report", "--events", &events, "--alpha", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("alpha"), "{}", text(&out.stderr));

    let missing = s.dir.join("missing.jsonl").display().to_string();
    let out = adsnap(&["abtest", "report", "--events", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.jsonl"), "{}", text(&out.stderr));
}

#[test]
fn the_event_log_and_json_lines_give_the_same_report() {
    let s = setup();
    let events = s.dir.join("events.jsonl");
    simulate(&s.production, &s.staging, &events, "1.0");
    let log = s.dir.join("log").display().to_string();
    let out = adsnap(&[
        "abtest",
        "simulate",
        "--snapshot",
        &s.production,
        "--staging-snapshot",
        &s.staging,
        "--log",
        &log,
        "--users",
        "8000",
        "--requests",
        "60000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let snapshots = format!("{},{}", s.production, s.staging);
    let from_file = adsnap(&[
        "abtest",
        "report",
        "--events",
        &events.display().to_string(),
        "--snapshot",
        &snapshots,
        "--format",
        "json",
        "--from",
        "2026-11-22T06:00:00Z",
    ]);
    let from_log = adsnap(&[
        "abtest",
        "report",
        "--log",
        &log,
        "--snapshot",
        &snapshots,
        "--format",
        "json",
        "--from",
        "2026-11-22T06:00:00Z",
    ]);
    assert!(from_file.status.success() && from_log.status.success(), "{}", text(&from_log.stderr));
    let (file_report, log_report): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&from_file.stdout).unwrap(),
        serde_json::from_slice(&from_log.stdout).unwrap(),
    );
    assert!(file_report["input"]["n_events_in_range"].as_u64().unwrap() > 40_000);
    assert_eq!(file_report["experiments"], log_report["experiments"]);
    assert_eq!(file_report["staging"], log_report["staging"]);
    assert_eq!(file_report["input"]["n_events_in_range"], log_report["input"]["n_events_in_range"]);
}

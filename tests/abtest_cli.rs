//! `adsnap abtest` end to end: a real snapshot of the example catalog, simulated events for its
//! split, and the report as an operator runs it (formats, exit status, bad input), from every
//! kind of source: JSON Lines, the local log, its Parquet export, and the stream it was shipped
//! to on a real 3-node NATS JetStream cluster.

#[allow(dead_code)]
#[path = "../events/tests/common/cluster.rs"]
mod nats_cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adsnap_events::{read_log, Event, EventLog, EventLogConfig, Position};
use nats_cluster::{wait_for_async, NatsCluster};

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
    let log = simulate_log(&s, "log");
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

/// Simulates the standard day into a new log folder `name` under the setup's folder.
fn simulate_log(s: &Setup, name: &str) -> String {
    let log = s.dir.join(name).display().to_string();
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
    log
}

/// How long one report may take before the test fails (rather than hangs).
const REPORT_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `adsnap args`, its standard output and error going to files beside `out_base`; kills it
/// and fails if it has not ended within [`REPORT_DEADLINE`]. Returns the exit status and stderr.
fn adsnap_within_deadline(args: &[&str], out_base: &Path) -> (std::process::ExitStatus, String) {
    let stderr_path = out_base.with_extension("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_adsnap"))
        .args(args)
        .stdout(std::fs::File::create(out_base.with_extension("stdout")).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > REPORT_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{args:?} did not end within {REPORT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&stderr_path).unwrap())
}

/// The JSON report from `source` (flags naming the events), which must succeed in time.
fn json_report(s: &Setup, source: &[&str], range: &[&str]) -> serde_json::Value {
    static N_REPORTS: AtomicU64 = AtomicU64::new(0);
    let out = s.dir.join(format!("report-{}.json", N_REPORTS.fetch_add(1, Ordering::Relaxed)));
    let snapshots = format!("{},{}", s.production, s.staging);
    let out_arg = out.display().to_string();
    let args = [
        &["abtest", "report", "--snapshot", &snapshots, "--format", "json", "--out", &out_arg][..],
        source,
        range,
    ]
    .concat();
    let (status, stderr) = adsnap_within_deadline(&args, &out);
    assert!(status.success(), "{args:?}: exit {:?}: {stderr}", status.code());
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn the_parquet_export_and_the_log_give_the_same_report() {
    let s = setup();
    let log = simulate_log(&s, "log");
    let parquet = s.dir.join("parquet").display().to_string();
    let out = adsnap(&["events", "export", "--dir", &log, "--out", &parquet]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let from_log = json_report(&s, &["--log", &log], &[]);
    let from_parquet = json_report(&s, &["--parquet", &parquet], &[]);
    assert!(from_log["input"]["n_events_in_range"].as_u64().unwrap() > 60_000);
    assert_eq!(from_parquet, from_log);

    // Within a range each source reads what it must (the log from the range's start to its end,
    // the export only the partitions the range touches), so only the counts of events read differ.
    let range = ["--from", "2026-11-22T06:30:00Z", "--to", "2026-11-22T18:00:00Z"];
    let mut from_log = json_report(&s, &["--log", &log], &range);
    let mut from_parquet = json_report(&s, &["--parquet", &parquet], &range);
    assert!(from_parquet["input"]["n_events_read"].as_u64() < from_log["input"]["n_events_read"].as_u64());
    for report in [&mut from_log, &mut from_parquet] {
        let input = report["input"].as_object_mut().unwrap();
        input.remove("n_events_read");
        input.remove("n_events_out_of_range");
    }
    assert_eq!(from_parquet, from_log);
    // An hour partition named alone, and named twice, counts once.
    let hour = format!("{parquet}/hour=2026-11-22T07");
    let once = json_report(&s, &["--parquet", &hour], &[]);
    let twice = json_report(&s, &["--parquet", &format!("{hour},{hour}")], &[]);
    assert_eq!(once, twice);
    let n_hour = once["input"]["n_events_in_range"].as_u64().unwrap();
    assert!(n_hour > 0 && n_hour < 10_000, "one hour of a day: {n_hour}");
}

#[test]
fn bad_parquet_input_and_mixed_sources_get_a_clear_message() {
    let s = setup();
    let log = simulate_log(&s, "log");
    let parquet = s.dir.join("parquet").display().to_string();
    assert!(adsnap(&["events", "export", "--dir", &log, "--out", &parquet]).status.success());

    let notes = s.dir.join("notes.parquet");
    std::fs::write(&notes, "this is not parquet\n").unwrap();
    let out = adsnap(&["abtest", "report", "--parquet", &notes.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a Parquet file"), "{}", text(&out.stderr));

    let out = adsnap(&["abtest", "report", "--parquet", &parquet, "--from", "2030-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no events in the range"), "{}", text(&out.stderr));

    let empty = s.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = adsnap(&["abtest", "report", "--parquet", &empty.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no Parquet files"), "{}", text(&out.stderr));

    // One kind of source per report: the same events in two kinds would count twice.
    let out = adsnap(&["abtest", "report", "--log", &log, "--parquet", &parquet]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot be used with"), "{}", text(&out.stderr));
    let out = adsnap(&["abtest", "report"]);
    assert_eq!(out.status.code(), Some(2), "a source is required: {}", text(&out.stderr));
    // The same log twice, by another name, is refused too.
    let same = format!("{log},{}/../log", s.dir.join("parquet").display());
    let out = adsnap(&["abtest", "report", "--log", &same]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("are the same log"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicated_stream_and_the_log_give_the_same_report() {
    let s = setup();
    let log = simulate_log(&s, "log");
    // Shipping deletes acknowledged segments, so the log's report comes first.
    let from_log = tokio::task::block_in_place(|| json_report(&s, &["--log", &log], &[]));
    let replays: Vec<Event<'static>> =
        read_log(Path::new(&log), Position::Start).unwrap().take(1000).map(Result::unwrap).collect();

    let cluster = NatsCluster::start(3);
    let config = EventLogConfig {
        dir: log.clone().into(),
        nats: Some(cluster.shipper_config("ABTEST")),
        ..EventLogConfig::default()
    };
    let shipping = EventLog::open(&config).unwrap();
    let n_events = shipping.next_seq();
    assert!(n_events > 60_000);
    wait_for_async(
        Duration::from_secs(60),
        || shipping.health().shipper.is_some_and(|h| h.acked_seq >= n_events),
        "the stream to acknowledge the simulated log",
    )
    .await;

    let urls = cluster.urls().join(",");
    let source = ["--nats-urls", &urls, "--stream", "ABTEST"];
    let from_stream = tokio::task::block_in_place(|| json_report(&s, &source, &[]));
    assert_eq!(from_stream, from_log);
    // A range reads from its start; the report still ends at the stream's end.
    let range = ["--from", "2026-11-22T00:00:00Z", "--to", "2026-11-23T00:00:00Z"];
    let ranged = tokio::task::block_in_place(|| json_report(&s, &source, &range));
    assert_eq!(ranged["experiments"], from_log["experiments"]);
    assert_eq!(ranged["input"]["n_events_in_range"], from_log["input"]["n_events_in_range"]);

    // While a server keeps shipping, a report still ends: at the message last when it started.
    let stop = AtomicBool::new(false);
    let (report, n_appended) = std::thread::scope(|scope| {
        let appender = scope.spawn(|| keep_appending(&shipping, &replays, &stop));
        // Stops the appender even when the report fails.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stopping = Stop(&stop);
        let report = json_report(&s, &source, &[]);
        drop(stopping);
        (report, appender.join().unwrap())
    });
    let (n_before, n_read) = (
        from_log["input"]["n_events_in_range"].as_u64().unwrap(),
        report["input"]["n_events_in_range"].as_u64().unwrap(),
    );
    assert!(n_appended > 0 && n_read >= n_before && n_read <= n_before + n_appended, "{n_read}");
    shipping.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Appends `events` over and over to `log` (shipping them) until `stop`, at most
/// `APPENDS_MAX`; returns how many were appended.
fn keep_appending(log: &EventLog, events: &[Event<'static>], stop: &AtomicBool) -> u64 {
    const APPENDS_MAX: u64 = 400_000;
    const APPENDS_PER_PAUSE: u64 = 200;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < APPENDS_MAX {
        log.append(&events[n as usize % events.len()]).unwrap();
        n += 1;
        if n % APPENDS_PER_PAUSE == 0 {
            // Paces the load (about 20 000 events a second), like a busy server, not a flood.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    n
}

//! `adsnap events replay|tail|export` against a real local log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use adsnap_events::{Channel, Event, EventKind, EventLog, EventLogConfig, Privacy};

fn adsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adsnap")).args(args).output().expect("adsnap runs")
}

fn event(n: u64) -> Event<'static> {
    Event {
        event_id: 0xe0 << 100 | n as u128,
        kind: if n.is_multiple_of(2) { EventKind::Decision } else { EventKind::Impression },
        // Two hours of events, one every 7.2 seconds, starting on the hour.
        time_unix_ms: 1_795_003_200_000 + n as i64 * 7200,
        request_id: n as u128,
        snapshot_id: 7,
        assignment_code: 0,
        channel: Channel::Sdk,
        app_id: format!("app{n}").into(),
        ad_unit_id: "unit".into(),
        campaign_id: n as u32,
        creative_id: 1,
        price_micros: 1_000_000,
        revenue_micros: 1000,
        currency: *b"EUR",
        country: 1,
        os: 2,
        user_key: Some(n),
        privacy: Privacy(0),
        no_fill_reason: 0,
        test: false,
    }
}

fn log_with(dir: &Path, n: u64) -> EventLog {
    let log = EventLog::open(&EventLogConfig { dir: dir.to_owned(), ..EventLogConfig::default() }).unwrap();
    for i in 0..n {
        log.append(&event(i)).unwrap();
    }
    log
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn replay_prints_json_lines_from_a_position_or_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 1000);
    let d = log.dir().display().to_string();

    let all = lines(&adsnap(&["events", "replay", "--dir", &d]));
    assert_eq!(all.len(), 1000);
    assert_eq!(all[5]["seq"], 5);
    assert_eq!(all[5]["kind"], "impression");
    assert_eq!(all[5]["app_id"], "app5");
    assert_eq!(all[5]["currency"], "EUR");
    assert_eq!(all[5]["event_id"], format!("{:032x}", event(5).event_id));
    assert_eq!(all[5]["log_id"], format!("{:016x}", log.log_id()));

    let tail = lines(&adsnap(&["events", "replay", "--dir", &d, "--from-seq", "990"]));
    assert_eq!(
        tail.iter().map(|v| v["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        (990..1000).collect::<Vec<_>>()
    );

    // Event 500 is the first of the second hour.
    let second_hour =
        lines(&adsnap(&["events", "replay", "--dir", &d, "--from-time", "2026-11-18T13:00:00Z"]));
    assert_eq!(second_hour.first().unwrap()["time"], "2026-11-18T13:00:00.000Z");
    assert_eq!(second_hour.len(), 500);

    let capped = lines(&adsnap(&["events", "replay", "--dir", &d, "--max-events", "3"]));
    assert_eq!(capped.len(), 3);
}

#[test]
fn tail_follows_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10);
    let mut child = Command::new(env!("CARGO_BIN_EXE_adsnap"))
        .args(["events", "tail", "--dir", &log.dir().display().to_string(), "--max-events", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Append until the tail has printed three events that came after it started.
    let start = Instant::now();
    let mut n = 10;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            got.push(serde_json::from_str::<serde_json::Value>(&line).unwrap()["seq"].as_u64().unwrap());
            line.clear();
        }
        got
    });
    while !reader.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(30), "tail printed nothing");
        log.append(&event(n)).unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(got.len(), 3);
    assert!(got[0] >= 10, "tail starts at the end: {got:?}");
    assert_eq!(got[1], got[0] + 1);
    assert_eq!(got[2], got[0] + 2);
}

#[test]
fn export_writes_hourly_parquet_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), 1000);
    let out_dir = dir.path().join("parquet");
    let out = adsnap(&[
        "events",
        "export",
        "--dir",
        &log.dir().display().to_string(),
        "--out",
        &out_dir.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 1000 events into 2 files"));
    let mut hours: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    hours.sort();
    assert_eq!(hours, vec!["hour=2026-11-18T12", "hour=2026-11-18T13"]);
}

//! The local log against crashes and damage: a writer process killed with SIGKILL, torn tails,
//! flipped bits, damaged headers, a folder that disappears, a full backlog.

mod common;

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adsnap_events::codec::{self, permitted_user_key};
use adsnap_events::record::{self, FRAME_HEADER_BYTES};
use adsnap_events::segment::{self, HEADER_BYTES};
use adsnap_events::{read_log, AppendError, Event, EventLog, EventsError, Position};
use common::{event, index_of, local_config};

const SEGMENT_BYTES: u64 = 64 * 1024;

/// The event as a reader gets it back (no user key where privacy forbids one).
fn stored(n: u64) -> Event<'static> {
    let e = event(n);
    Event { user_key: permitted_user_key(&e), ..e }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

fn fill(dir: &Path, n: u64) -> EventLog {
    let log = EventLog::open(&local_config(dir, SEGMENT_BYTES)).unwrap();
    for i in 0..n {
        log.append(&event(i)).unwrap();
    }
    log.sync().unwrap();
    log
}

/// Reads the whole log, splitting events from errors.
fn read_all(dir: &Path) -> (Vec<u64>, Vec<EventsError>) {
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    for item in read_log(dir, Position::Start).unwrap() {
        match item {
            Ok(e) => {
                assert_eq!(e, stored(index_of(&e)));
                ok.push(index_of(&e));
            }
            Err(err) => errors.push(err),
        }
    }
    (ok, errors)
}

/// Offset just after the last whole record of a segment.
fn valid_end(path: &Path) -> u64 {
    segment::scan(&fs::read(path).unwrap()).valid_end
}

/// A test event's frame: its last byte (the `test` flag) is not zero, so a tail cut just before
/// it differs from the zeroed space a segment holds past its end.
fn frame_of(n: u64, seq: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    record::push_frame(&mut frame, seq, &codec::encode(&Event { test: true, ..event(n) }));
    frame
}

/// Writes `tail` after the last whole record of the active segment of a closed log, reopens,
/// and checks that exactly the torn bytes were cut and that the log goes on.
fn check_torn_tail(name: &str, tail: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 100));
    let active = segments(dir.path()).pop().unwrap();
    let file = OpenOptions::new().write(true).open(&active).unwrap();
    file.write_all_at(tail, valid_end(&active)).unwrap();
    drop(file);

    let log = EventLog::open(&local_config(dir.path(), SEGMENT_BYTES)).unwrap();
    let expected_cut = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1);
    let recovery = log.health().recovery;
    assert_eq!(recovery.torn_bytes_cut, expected_cut, "{name}: {recovery:?}");
    assert_eq!(recovery.n_segments_torn, (expected_cut > 0) as u64, "{name}");
    assert_eq!(log.next_seq(), 100, "{name}");
    log.append(&event(100)).unwrap();
    let (ok, errors) = read_all(dir.path());
    assert!(errors.is_empty(), "{name}: {errors:?}");
    assert_eq!(ok, (0..=100).collect::<Vec<_>>(), "{name}");
}

#[test]
fn torn_tails_are_cut_and_counted() {
    let frame = frame_of(100, 100);
    let mut payload_only = frame.clone();
    payload_only[..FRAME_HEADER_BYTES].fill(0);
    let mut bad_sum = frame.clone();
    *bad_sum.last_mut().unwrap() ^= 0xff;
    let mut header_only = frame.clone();
    header_only[FRAME_HEADER_BYTES..].fill(0);
    check_torn_tail("nothing", &[]);
    check_torn_tail("length only", &frame[..4]);
    check_torn_tail("header only", &frame[..FRAME_HEADER_BYTES]);
    check_torn_tail("header and half the payload", &frame[..frame.len() / 2]);
    check_torn_tail("all but the last byte", &frame[..frame.len() - 1]);
    check_torn_tail("payload without header", &payload_only);
    check_torn_tail("header without payload", &header_only);
    check_torn_tail("whole frame, wrong checksum", &bad_sum);
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_costs_one_record_reported_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 1000));
    let sealed = segments(dir.path())[1].clone();
    let mut bytes = fs::read(&sealed).unwrap();
    let at = HEADER_BYTES + 3 * frame_of(0, 0).len() + FRAME_HEADER_BYTES + 40;
    bytes[at] ^= 0x08;
    fs::write(&sealed, &bytes).unwrap();

    let (ok, errors) = read_all(dir.path());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(&errors[0], EventsError::CorruptRecord { path, .. } if *path == sealed), "{errors:?}");
    assert_eq!(ok.len(), 999);
}

#[test]
fn a_flipped_length_loses_the_rest_of_that_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 1000));
    let all = segments(dir.path());
    let sealed = all[1].clone();
    let file = OpenOptions::new().read(true).write(true).open(&sealed).unwrap();
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, HEADER_BYTES as u64).unwrap();
    len[3] ^= 0x40;
    file.write_all_at(&len, HEADER_BYTES as u64).unwrap();
    let n_in_segment = segment::scan(&fs::read(&all[1]).unwrap()).n_records;
    drop(file);

    let (ok, errors) = read_all(dir.path());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(n_in_segment, 0, "the segment no longer frames");
    let first_of_next = segment::list(dir.path()).unwrap()[2].0;
    let first_of_damaged = segment::list(dir.path()).unwrap()[1].0;
    let expected: Vec<u64> = (0..first_of_damaged).chain(first_of_next..1000).collect();
    assert_eq!(ok, expected);
}

#[test]
fn a_flipped_bit_in_the_active_segment_is_stepped_over_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 10));
    let active = segments(dir.path()).pop().unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&active).unwrap();
    let at = HEADER_BYTES as u64 + 2 * frame_of(0, 0).len() as u64 + 30;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 1], at).unwrap();
    drop(file);

    let log = EventLog::open(&local_config(dir.path(), SEGMENT_BYTES)).unwrap();
    let recovery = log.health().recovery;
    assert_eq!(
        (recovery.n_corrupt_records, recovery.torn_bytes_cut, recovery.n_records_recovered),
        (1, 0, 9)
    );
    assert_eq!(log.next_seq(), 10);
    let (ok, errors) = read_all(dir.path());
    assert_eq!(errors.len(), 1);
    assert_eq!(ok, vec![0, 1, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_segment_with_a_damaged_header_is_quarantined_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 1000));
    let all = segments(dir.path());
    let file = OpenOptions::new().write(true).open(&all[0]).unwrap();
    file.write_all_at(b"XX", 0).unwrap();
    drop(file);
    let first_of_next = segment::list(dir.path()).unwrap()[1].0;

    let log = EventLog::open(&local_config(dir.path(), SEGMENT_BYTES)).unwrap();
    assert_eq!(log.health().recovery.n_segments_quarantined, 1);
    assert!(all[0].with_extension("corrupt").exists());
    assert_eq!(log.next_seq(), 1000);
    let (ok, errors) = read_all(dir.path());
    assert!(errors.is_empty());
    assert_eq!(ok, (first_of_next..1000).collect::<Vec<_>>());
}

#[test]
fn a_full_backlog_refuses_appends_loudly_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = adsnap_events::EventLogConfig {
        log_bytes_max: 3 * SEGMENT_BYTES,
        ..local_config(dir.path(), SEGMENT_BYTES)
    };
    let log = EventLog::open(&config).unwrap();
    let mut accepted = 0;
    let refusal = loop {
        match log.append(&event(accepted)) {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(accepted < 10_000, "the limit was never reached");
    };
    assert_eq!(refusal, AppendError::BacklogFull);
    assert!(refusal.is_log_unavailable());
    assert_eq!(log.append(&event(accepted)), Err(AppendError::BacklogFull));
    let health = log.health();
    assert_eq!((health.status, health.writable, health.refused_total), ("refusing", false, 2));
    assert!(health.error.unwrap().contains("log_bytes_max"));
    let mut registry = prometheus_client::registry::Registry::default();
    log.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("adsnap_events_log_writable 0"), "{text}");
    assert!(text.contains("adsnap_events_refused_total 2"), "{text}");
    assert!(text.contains(&format!("adsnap_events_appended_total {accepted}")), "{text}");
    let (ok, errors) = read_all(dir.path());
    assert!(errors.is_empty());
    assert_eq!(ok, (0..accepted).collect::<Vec<_>>());
}

#[test]
fn a_vanished_folder_refuses_appends_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("events");
    let config =
        adsnap_events::EventLogConfig { unwritable_retry_ms: 20, ..local_config(&log_dir, SEGMENT_BYTES) };
    let log = EventLog::open(&config).unwrap();
    fs::remove_dir_all(&log_dir).unwrap();
    let mut n = 0;
    let refusal = loop {
        match log.append(&event(n)) {
            Ok(()) => n += 1,
            Err(err) => break err,
        }
        assert!(n < 10_000, "never refused");
    };
    assert_eq!(refusal, AppendError::Unwritable(std::io::ErrorKind::NotFound));
    let health = log.health();
    assert_eq!(health.status, "refusing");
    assert!(health.error.unwrap().contains("not writable"));

    fs::create_dir_all(&log_dir).unwrap();
    let start = Instant::now();
    while log.append(&event(n)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "appends never resumed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.health().status, "ok");
    log.sync().unwrap();
    let (ok, errors) = read_all(&log_dir);
    assert!(errors.is_empty());
    assert_eq!(ok, vec![n]);
}

#[test]
fn bad_configuration_and_oversized_events_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, b"x").unwrap();
    assert!(matches!(
        EventLog::open(&local_config(&not_a_dir, SEGMENT_BYTES)),
        Err(EventsError::Folder { .. })
    ));
    assert!(matches!(EventLog::open(&local_config(dir.path(), 100)), Err(EventsError::Config(_))));
    let log = EventLog::open(&local_config(&dir.path().join("ok"), SEGMENT_BYTES)).unwrap();
    let huge = Event { app_id: Cow::Owned("a".repeat(5000)), ..event(1) };
    assert!(matches!(log.append(&huge), Err(AppendError::TooLarge { .. })));
    assert_eq!(log.health().status, "ok");
}

const WRITER_ENV: &str = "ADSNAP_EVENTS_TEST_WRITER_DIR";

/// The child's role: append events as fast as it can, reporting each one after `append`
/// returned, until killed.
fn writer_child(dir: &str) {
    use std::io::Write;
    let log = EventLog::open(&local_config(Path::new(dir), SEGMENT_BYTES)).unwrap();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for n in 0..5_000_000 {
        log.append(&event(n)).unwrap();
        writeln!(out, "acked {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_of_a_writer_loses_no_acknowledged_event() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        return writer_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill_9_of_a_writer_loses_no_acknowledged_event", "--nocapture"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            if let Some(n) = line.unwrap().strip_prefix("acked ") {
                acked = Some(n.parse::<u64>().unwrap());
                if acked >= Some(5000 + round * 3000) {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = acked.expect("the writer acknowledged events");

        // Every round starts its numbering at 0 again; the log keeps counting.
        let log = EventLog::open(&local_config(dir.path(), SEGMENT_BYTES)).unwrap();
        let recovery = log.health().recovery;
        drop(log);
        let mut reader = read_log(dir.path(), Position::Start).unwrap();
        let mut this_round = Vec::new();
        let mut previous_rounds = 0;
        while let Some(item) = reader.next_with_seq() {
            let (_, e) = item.unwrap();
            if index_of(&e) == 0 && !this_round.is_empty() {
                previous_rounds += this_round.len();
                this_round.clear();
            }
            assert_eq!(e, stored(index_of(&e)));
            this_round.push(index_of(&e));
        }
        assert!(previous_rounds > 0 || round == 0);
        assert!(
            this_round.len() as u64 > acked,
            "round {round}: acknowledged {acked}, found {}",
            this_round.len()
        );
        assert_eq!(
            this_round,
            (0..this_round.len() as u64).collect::<Vec<_>>(),
            "round {round}: {recovery:?}"
        );
    }
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&local_config(dir.path(), SEGMENT_BYTES)).unwrap();
    let second = EventLog::open(&local_config(dir.path(), SEGMENT_BYTES));
    assert!(matches!(second, Err(EventsError::Locked { .. })), "{second:?}");
    drop(log);
    let start = Instant::now();
    // The flusher thread may hold the log for one more round after the last handle is dropped.
    let reopened = loop {
        match EventLog::open(&local_config(dir.path(), SEGMENT_BYTES)) {
            Ok(log) => break log,
            Err(EventsError::Locked { .. }) if start.elapsed() < Duration::from_secs(10) => continue,
            Err(err) => panic!("{err}"),
        }
    };
    reopened.append(&event(1)).unwrap();
}

//! `cargo bench -p adsnap-events --bench events`: the event pipeline's figures, each beside a
//! baseline measured in the same run.
//!
//! 1. Append cost on the request path, call by call (p50 / p99 / p99.9), against the timer's
//!    own cost, encoding alone, and a `pwrite` of the same bytes per event (the design not taken).
//! 2. Local log throughput on one thread, against encoding alone and `pwrite` per event.
//! 3. Shipping throughput to a real 3-node JetStream cluster on loopback: one event per message
//!    awaiting each ack (the naive baseline), batches awaiting each ack, batches with a window.
//!
//! Arguments (after `--`): `append`, `throughput`, `ship` to run one part; all by default.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use adsnap_events::{codec, Event, EventLog, EventLogConfig, ShipperConfig};
use common::cluster::NatsCluster;
use common::event;

const APPEND_SAMPLES: usize = 2_000_000;
const THROUGHPUT_EVENTS: u64 = 5_000_000;
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    if wants("append") {
        append_cost();
    }
    if wants("throughput") {
        throughput();
    }
    if wants("ship") {
        shipping();
    }
}

fn events(n: usize) -> Vec<Event<'static>> {
    (0..n as u64).map(event).collect()
}

fn local_log(dir: &std::path::Path) -> EventLog {
    let config = EventLogConfig {
        dir: dir.to_owned(),
        segment_bytes_max: SEGMENT_BYTES,
        log_bytes_max: 64 * SEGMENT_BYTES,
        ..EventLogConfig::default()
    };
    EventLog::open(&config).unwrap()
}

/// Times `op` once per sample; returns the sorted durations in nanoseconds.
fn sample(samples: usize, mut op: impl FnMut(usize)) -> Vec<u64> {
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        op(i);
        out.push(start.elapsed().as_nanos() as u64);
    }
    out.sort_unstable();
    out
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn row(name: &str, sorted: &[u64], baseline: Option<&[u64]>) {
    let ratio =
        baseline.map_or(String::new(), |b| format!("{:>8.3}x", pct(sorted, 0.5) as f64 / pct(b, 0.5) as f64));
    println!(
        "  {name:<34} {:>8} {:>8} {:>9} {ratio}",
        pct(sorted, 0.5),
        pct(sorted, 0.99),
        pct(sorted, 0.999)
    );
}

/// A busy server's rate of events on one log (a 2-core server answers ~50k requests/s, each
/// a decision and often an impression).
const PACED_EVENTS_PER_S: u64 = 200_000;
const PACED_SAMPLES: usize = 600_000;

/// Appends at a steady rate, spinning between calls, and times each call.
fn paced_appends(log: &EventLog, batch: &[Event<'static>]) -> Vec<u64> {
    let gap = Duration::from_nanos(1_000_000_000 / PACED_EVENTS_PER_S);
    let mut next = Instant::now();
    let mut out = Vec::with_capacity(PACED_SAMPLES);
    for i in 0..PACED_SAMPLES {
        next += gap;
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        log.append(&batch[i % batch.len()]).unwrap();
        out.push(start.elapsed().as_nanos() as u64);
    }
    out.sort_unstable();
    out
}

fn append_cost() {
    let dir = tempfile::tempdir().unwrap();
    let log = local_log(dir.path());
    let batch = events(4096);
    // Warm up: page in code and the first pages of the segment.
    for e in batch.iter().cycle().take(100_000) {
        log.append(e).unwrap();
    }
    let timer = sample(APPEND_SAMPLES, |_| {
        black_box(());
    });
    let mut buf = vec![0u8; codec::EVENT_BYTES_MAX];
    let encode = sample(APPEND_SAMPLES, |i| {
        let e = &batch[i % batch.len()];
        let len = codec::encoded_len(e).unwrap();
        codec::encode_into(e, &mut buf[..len]);
        black_box(&buf);
    });
    let append = sample(APPEND_SAMPLES, |i| log.append(&batch[i % batch.len()]).unwrap());
    let paced = paced_appends(&log, &batch);
    let file = File::create(dir.path().join("pwrite.bin")).unwrap();
    let mut offset = 0u64;
    let pwrite = sample(APPEND_SAMPLES / 4, |i| {
        let e = &batch[i % batch.len()];
        let len = codec::encoded_len(e).unwrap();
        codec::encode_into(e, &mut buf[..len]);
        file.write_all_at(&buf[..len], offset).unwrap();
        offset += len as u64;
    });
    println!(
        "append cost, ns per call ({APPEND_SAMPLES} calls; ratio: p50 against encode + pwrite per event)"
    );
    println!("  {:<34} {:>8} {:>8} {:>9} {:>9}", "", "p50", "p99", "p99.9", "ratio");
    row("timer alone", &timer, None);
    row("encode alone (the floor)", &encode, Some(&pwrite));
    row("encode + pwrite per event (base)", &pwrite, Some(&pwrite));
    row("EventLog::append (mmap)", &append, Some(&pwrite));
    row(&format!("  paced at {}k events/s", PACED_EVENTS_PER_S / 1000), &paced, Some(&pwrite));
    drop(log);
}

fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let log = local_log(dir.path());
    let batch = events(4096);
    let n = THROUGHPUT_EVENTS as usize;
    let start = Instant::now();
    for e in batch.iter().cycle().take(n) {
        log.append(e).unwrap();
    }
    let append_s = start.elapsed().as_secs_f64();
    log.sync().unwrap();
    let bytes = log.health().bytes_on_disk;
    let mut buf = vec![0u8; codec::EVENT_BYTES_MAX];
    let start = Instant::now();
    for e in batch.iter().cycle().take(n) {
        let len = codec::encoded_len(e).unwrap();
        codec::encode_into(e, &mut buf[..len]);
        black_box(&buf);
    }
    let encode_s = start.elapsed().as_secs_f64();
    let file = File::create(dir.path().join("pwrite.bin")).unwrap();
    let n_pwrite = n / 5;
    let mut offset = 0u64;
    let start = Instant::now();
    for e in batch.iter().cycle().take(n_pwrite) {
        let len = codec::encoded_len(e).unwrap();
        codec::encode_into(e, &mut buf[..len]);
        file.write_all_at(&buf[..len], offset).unwrap();
        offset += len as u64;
    }
    let pwrite_s = start.elapsed().as_secs_f64();
    let rate = |n: usize, s: f64| n as f64 / s;
    let base = rate(n_pwrite, pwrite_s);
    println!(
        "local log throughput, one thread ({n} events, {} MiB of segments; ratio against pwrite)",
        bytes >> 20
    );
    println!("  {:<34} {:>14} {:>9}", "", "events/s", "ratio");
    println!(
        "  {:<34} {:>14.0} {:>8.2}x",
        "encode alone (the ceiling)",
        rate(n, encode_s),
        rate(n, encode_s) / base
    );
    println!("  {:<34} {:>14.0} {:>8.2}x", "encode + pwrite per event (base)", base, 1.0);
    println!(
        "  {:<34} {:>14.0} {:>8.2}x",
        "EventLog::append (mmap)",
        rate(n, append_s),
        rate(n, append_s) / base
    );
}

struct ShipRun {
    name: &'static str,
    n_events: u64,
    batch_events_max: usize,
    acks_in_flight_max: usize,
}

fn shipping() {
    let cluster = NatsCluster::start(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let runs = [
        ShipRun {
            name: "1 event/message, await each ack",
            n_events: 5_000,
            batch_events_max: 1,
            acks_in_flight_max: 1,
        },
        ShipRun {
            name: "1 event/message, window 256",
            n_events: 50_000,
            batch_events_max: 1,
            acks_in_flight_max: 256,
        },
        ShipRun {
            name: "2000 events/message, await each",
            n_events: 1_000_000,
            batch_events_max: 2000,
            acks_in_flight_max: 1,
        },
        ShipRun {
            name: "2000 events/message, window 64",
            n_events: 1_000_000,
            batch_events_max: 2000,
            acks_in_flight_max: 64,
        },
    ];
    let mut results = Vec::new();
    for (idx, run) in runs.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        // Fill the log first, then time the shipper alone from connection to the last ack.
        drop(filled_log(dir.path(), run.n_events));
        let shipper = ShipperConfig {
            batch_events_max: run.batch_events_max,
            acks_in_flight_max: run.acks_in_flight_max,
            ..common::cluster::shipper_config_for(cluster.urls(), &format!("BENCH{idx}"))
        };
        let config = EventLogConfig {
            nats: Some(shipper),
            dir: dir.path().to_owned(),
            segment_bytes_max: SEGMENT_BYTES,
            log_bytes_max: 64 * SEGMENT_BYTES,
            ..EventLogConfig::default()
        };
        let elapsed = runtime.block_on(async {
            let start = Instant::now();
            let log = EventLog::open(&config).unwrap();
            let deadline = start + Duration::from_secs(300);
            while log.health().shipper.unwrap().acked_seq < run.n_events {
                assert!(Instant::now() < deadline, "{} did not finish", run.name);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let elapsed = start.elapsed();
            let health = log.health().shipper.unwrap();
            assert_eq!(health.publish_failures_total, 0, "{health:?}");
            log.shutdown(Duration::from_secs(5)).await.unwrap();
            elapsed
        });
        results.push((run, elapsed));
    }
    let rate = |run: &ShipRun, d: &Duration| run.n_events as f64 / d.as_secs_f64();
    let base = rate(results[0].0, &results[0].1);
    println!("shipping to a 3-node JetStream cluster on loopback (file storage, replicas 3)");
    println!("  {:<34} {:>10} {:>12} {:>12} {:>9}", "", "events", "events/s", "messages/s", "ratio");
    for (run, elapsed) in &results {
        let messages = run.n_events.div_ceil(run.batch_events_max as u64) as f64 / elapsed.as_secs_f64();
        println!(
            "  {:<34} {:>10} {:>12.0} {:>12.0} {:>8.1}x",
            run.name,
            run.n_events,
            rate(run, elapsed),
            messages,
            rate(run, elapsed) / base
        );
    }
}

fn filled_log(dir: &std::path::Path, n: u64) -> EventLog {
    let log = local_log(dir);
    for i in 0..n {
        log.append(&event(i)).unwrap();
    }
    log.sync().unwrap();
    log
}

//! Replication to a real 3-node NATS JetStream cluster on loopback: every event arrives exactly
//! once, also when a node dies mid-stream, when the whole cluster is down for a while, and when
//! the shipper process is killed (-9) and restarted; and the stream reads back, every time, while
//! a node is down.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use adsnap_events::{read_log, Event, EventLog, EventLogConfig, Position, StreamPosition, StreamReader};
use common::cluster::{wait_for_async, NatsCluster};
use common::stream::{stream_events, stream_leader};
use common::{event, index_of, local_config};

const SHIP_DEADLINE: Duration = Duration::from_secs(90);

fn shipping_config(cluster: &NatsCluster, dir: &std::path::Path, stream: &str) -> EventLogConfig {
    EventLogConfig { nats: Some(cluster.shipper_config(stream)), ..local_config(dir, 256 * 1024) }
}

/// Asserts that `events` are exactly the events `expected` made by `common::event`, each once.
fn assert_exactly_once(events: &[Event<'_>], expected: std::ops::Range<u64>) {
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for e in events {
        *counts.entry(index_of(e)).or_default() += 1;
        assert_eq!(e.app_id, event(index_of(e)).app_id, "event {} arrived changed", index_of(e));
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).take(10).collect();
    assert!(duplicated.is_empty(), "events arrived more than once: {duplicated:?}");
    let missing: Vec<_> = expected.clone().filter(|n| !counts.contains_key(n)).take(10).collect();
    assert!(missing.is_empty(), "events missing from the stream: {missing:?}");
    assert_eq!(counts.len() as u64, expected.end - expected.start, "unexpected events in the stream");
}

async fn wait_acked(log: &EventLog, n: u64) {
    wait_for_async(
        SHIP_DEADLINE,
        || log.health().shipper.is_some_and(|s| s.acked_seq >= n),
        &format!("the stream to acknowledge {n} events"),
    )
    .await;
}

/// Appends the events `events` and waits until the stream has acknowledged them all.
async fn ship(log: &EventLog, events: std::ops::Range<u64>) {
    for i in events.clone() {
        log.append(&event(i)).unwrap();
    }
    wait_acked(log, events.end).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_exactly_once_and_shipped_segments_are_deleted() {
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&shipping_config(&cluster, dir.path(), "ONCE")).unwrap();
    let n = 20_000;
    ship(&log, 0..n).await;
    let health = log.health();
    assert!(health.n_segments > 0);
    wait_for_async(SHIP_DEADLINE, || log.health().n_segments == 1, "shipped segments to be deleted").await;

    let (events, n_messages) = stream_events(&cluster.urls(), "ONCE").await;
    assert_exactly_once(&events, 0..n);
    assert!(n_messages <= n / 100, "{n} events should travel in batches, not {n_messages} messages");

    // Reading from a stream position or a time gives the tail of the same messages.
    let mut from_seq =
        StreamReader::open(&cluster.urls(), "ONCE", StreamPosition::Seq(3), false).await.unwrap();
    let first = from_seq.next_batch().await.unwrap().unwrap();
    assert_eq!(first.stream_seq, 3);
    assert_eq!(first.log_id, Some(log.log_id()));
    let mut n_after = first.events.len() as u64;
    while let Some(batch) = from_seq.next_batch().await {
        n_after += batch.unwrap().events.len() as u64;
    }
    assert_eq!(n_after, n - first.events[0].0);
    let tomorrow = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        as i64
        + 86_400_000;
    let future = StreamPosition::TimeUnixMs(tomorrow);
    assert!(StreamReader::open(&cluster.urls(), "ONCE", future, false)
        .await
        .unwrap()
        .next_batch()
        .await
        .is_none());

    let client = async_nats::connect(cluster.urls()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client).get_stream("ONCE").await.unwrap();
    let config = &stream.info().await.unwrap().config;
    assert_eq!(config.num_replicas, 3);
    assert_eq!(config.storage, async_nats::jetstream::stream::StorageType::File);
    log.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&shipping_config(&cluster, dir.path(), "LEADER")).unwrap();
    let n = 30_000;
    for i in 0..n / 3 {
        log.append(&event(i)).unwrap();
    }
    wait_acked(&log, 1).await;
    let leader = stream_leader(&cluster.urls(), "LEADER").await.expect("the stream has a leader");
    let leader_idx = cluster.node_index(&leader).unwrap();
    for i in n / 3..2 * n / 3 {
        log.append(&event(i)).unwrap();
    }
    cluster.kill_node(leader_idx);
    for i in 2 * n / 3..n {
        log.append(&event(i)).unwrap();
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_acked(&log, n).await;
    eprintln!("after the leader died: {:?}", log.health().shipper);
    let urls = cluster.urls_except(leader_idx);
    let (events, _) = stream_events(&urls, "LEADER").await;
    assert_exactly_once(&events, 0..n);
    let new_leader = stream_leader(&urls, "LEADER").await.expect("a new leader was elected");
    assert_ne!(new_leader, leader);
    log.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Readings in a row that must each succeed while a node is down.
const READS_WITH_A_NODE_DOWN: usize = 10;

/// An ordered consumer is one replica. nats-server 2.9.10 (Debian's) places it on any of the
/// stream's peers, a dead one included, and then never answers the request that creates it; so
/// before `StreamReader` tried again, about one reading in three timed out with a node down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reads_back_every_time_while_one_node_is_down() {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&shipping_config(&cluster, dir.path(), "DOWN")).unwrap();
    let n = 1000;
    ship(&log, 0..n).await;
    let leader = stream_leader(&cluster.urls(), "DOWN").await.expect("the stream has a leader");
    let down = (cluster.node_index(&leader).unwrap() + 1) % 3;
    cluster.kill_node(down);
    let urls = cluster.urls_except(down);
    // The first reading may wait for a new meta leader, if the dead node was it.
    stream_events(&urls, "DOWN").await;
    for reading in 0..READS_WITH_A_NODE_DOWN {
        let mut reader = StreamReader::open(&urls, "DOWN", StreamPosition::Start, false)
            .await
            .unwrap_or_else(|e| panic!("reading {reading} with {} down: {e}", cluster.nodes[down].name));
        let mut events = Vec::new();
        while let Some(batch) = reader.next_batch().await {
            events.extend(batch.unwrap().events.into_iter().map(|(_, e)| e));
        }
        assert_exactly_once(&events, 0..n);
    }
    log.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_on_disk_while_the_whole_cluster_is_down_then_flow() {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&shipping_config(&cluster, dir.path(), "OUTAGE")).unwrap();
    ship(&log, 0..1000).await;
    for idx in 0..3 {
        cluster.kill_node(idx);
    }
    let n = 8000;
    for i in 1000..n {
        log.append(&event(i)).unwrap();
    }
    log.sync().unwrap();
    wait_for_async(SHIP_DEADLINE, || !log.health().shipper.unwrap().connected, "the shipper to notice").await;
    let health = log.health().shipper.unwrap();
    assert_eq!((health.acked_seq, health.backlog_events), (1000, n - 1000), "{health:?}");
    // The backlog is on disk: readable from the local log while the cluster is away.
    let waiting: Vec<u64> =
        read_log(dir.path(), Position::Seq(1000)).unwrap().map(|e| index_of(&e.unwrap())).collect();
    assert_eq!(waiting, (1000..n).collect::<Vec<_>>());

    for idx in 0..3 {
        cluster.start_node(idx);
    }
    wait_acked(&log, n).await;
    eprintln!("after the outage: {:?}", log.health().shipper);
    let (events, _) = stream_events(&cluster.urls(), "OUTAGE").await;
    assert_exactly_once(&events, 0..n);
    log.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_its_cluster_ships_once_the_cluster_is_up() {
    let mut cluster = NatsCluster::start(3);
    for idx in 0..3 {
        cluster.kill_node(idx);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&shipping_config(&cluster, dir.path(), "LATE")).unwrap();
    let n = 3000;
    for i in 0..n {
        log.append(&event(i)).unwrap();
    }
    let health = log.health().shipper.unwrap();
    assert!(!health.stream_ready && health.acked_seq == 0, "{health:?}");
    for idx in 0..3 {
        cluster.start_node(idx);
    }
    wait_acked(&log, n).await;
    let (events, _) = stream_events(&cluster.urls(), "LATE").await;
    assert_exactly_once(&events, 0..n);
    log.shutdown(Duration::from_secs(5)).await.unwrap();
}

const ROLE_ENV: &str = "ADSNAP_EVENTS_TEST_SHIPPER_DIR";
const URLS_ENV: &str = "ADSNAP_EVENTS_TEST_URLS";
/// Events the child appends at most, and per burst between reports.
const CHILD_EVENTS_MAX: u64 = 400_000;
const CHILD_BURST: u64 = 200;

/// The child's role: a server process that appends events (reporting how many) and ships them,
/// until it is killed.
fn appending_and_shipping_child(dir: &str) {
    let urls: Vec<String> = std::env::var(URLS_ENV).unwrap().split(',').map(String::from).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut shipper = common::cluster::shipper_config_for(urls, "KILLED");
        shipper.acks_in_flight_max = 8;
        shipper.batch_events_max = 50;
        let config =
            EventLogConfig { nats: Some(shipper), ..local_config(std::path::Path::new(dir), 256 * 1024) };
        let log = EventLog::open(&config).unwrap();
        let mut n = 0;
        while n < CHILD_EVENTS_MAX {
            for i in n..n + CHILD_BURST {
                log.append(&event(i)).unwrap();
            }
            n += CHILD_BURST;
            println!("appended {n}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

#[test]
fn a_shipper_killed_mid_stream_resumes_without_loss_or_duplicates() {
    if let Ok(dir) = std::env::var(ROLE_ENV) {
        return appending_and_shipping_child(&dir);
    }
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_shipper_killed_mid_stream_resumes_without_loss_or_duplicates", "--nocapture"])
        .env(ROLE_ENV, dir.path())
        .env(URLS_ENV, cluster.urls().join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut reported = 0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until the stream holds events and the child has appended well past them.
    let deadline = std::time::Instant::now() + SHIP_DEADLINE;
    loop {
        let line = lines.next().expect("the child reports").unwrap();
        if let Some(n) = line.strip_prefix("appended ") {
            reported = n.parse().unwrap();
        }
        if reported >= 20_000 && reported % 2000 == 0 {
            let (events, _) = runtime.block_on(stream_events(&cluster.urls(), "KILLED"));
            if events.len() >= 5000 {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the child did not ship in time");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (at_kill, _) = runtime.block_on(stream_events(&cluster.urls(), "KILLED"));
    let appended = read_log_next_seq(dir.path());
    assert!(appended >= reported && appended < CHILD_EVENTS_MAX, "killed mid-stream: {appended} appended");
    assert!((at_kill.len() as u64) < appended, "killed before everything was shipped");

    runtime.block_on(async {
        let mut shipper = cluster.shipper_config("KILLED");
        shipper.acks_in_flight_max = 8;
        let config = EventLogConfig { nats: Some(shipper), ..local_config(dir.path(), 256 * 1024) };
        let log = EventLog::open(&config).unwrap();
        assert_eq!(log.next_seq(), appended);
        wait_acked(&log, appended).await;
        eprintln!("after restart: {:?}", log.health().shipper);
        let (events, _) = stream_events(&cluster.urls(), "KILLED").await;
        assert_exactly_once(&events, 0..appended);
        log.shutdown(Duration::from_secs(5)).await.unwrap();
    });
}

/// The next sequence number of a log folder, read without opening it for writing.
fn read_log_next_seq(dir: &std::path::Path) -> u64 {
    let mut reader = read_log(dir, Position::Start).unwrap();
    let mut last = None;
    while let Some(item) = reader.next_with_seq() {
        last = Some(item.unwrap().0);
    }
    last.map_or(0, |s| s + 1)
}

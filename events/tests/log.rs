//! The local log end to end in one process: append, reopen, read back, roll, refuse.

mod common;

use adsnap_events::{read_log, EventLog, Position};
use common::{event, index_of, local_config};

#[test]
fn appended_events_read_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(dir.path(), 64 * 1024);
    let log = EventLog::open(&config).unwrap();
    for n in 0..2000 {
        log.append(&event(n)).unwrap();
    }
    log.sync().unwrap();
    let health = log.health();
    assert!(health.n_segments > 3, "2000 events of ~170 bytes span several 64 KiB segments: {health:?}");
    assert_eq!((health.next_seq, health.synced_seq), (2000, 2000));
    drop(log);

    let log = EventLog::open(&config).unwrap();
    assert_eq!(log.health().recovery.torn_bytes_cut, 0);
    for n in 2000..2100 {
        log.append(&event(n)).unwrap();
    }
    let events: Vec<_> = read_log(dir.path(), Position::Start).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(events.len(), 2100);
    for (n, e) in events.iter().enumerate() {
        let expected = event(n as u64);
        let expected = adsnap_events::Event {
            user_key: adsnap_events::codec::permitted_user_key(&expected),
            ..expected
        };
        assert_eq!(e, &expected);
    }
}

#[test]
fn reading_from_a_position_or_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&local_config(dir.path(), 64 * 1024)).unwrap();
    for n in 0..1000 {
        log.append(&event(n)).unwrap();
    }
    let from_seq: Vec<u64> =
        read_log(dir.path(), Position::Seq(777)).unwrap().map(|e| index_of(&e.unwrap())).collect();
    assert_eq!(from_seq, (777..1000).collect::<Vec<_>>());
    let t = event(900).time_unix_ms;
    let from_time: Vec<u64> =
        read_log(dir.path(), Position::TimeUnixMs(t)).unwrap().map(|e| index_of(&e.unwrap())).collect();
    assert_eq!(from_time, (900..1000).collect::<Vec<_>>());
    let mut follow = read_log(dir.path(), Position::End).unwrap();
    assert!(follow.next().is_none());
    log.append(&event(5000)).unwrap();
    assert_eq!(index_of(&follow.next().unwrap().unwrap()), 5000);
}

#[test]
fn appends_from_many_threads_each_land_once_in_one_sequence() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<EventLog>();
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&local_config(dir.path(), 64 * 1024)).unwrap();
    let (n_threads, per_thread) = (4u64, 5000u64);
    std::thread::scope(|scope| {
        for t in 0..n_threads {
            let log = log.clone();
            scope.spawn(move || {
                for i in 0..per_thread {
                    log.append(&event(t * per_thread + i)).unwrap();
                }
            });
        }
    });
    assert_eq!(log.next_seq(), n_threads * per_thread);
    let mut reader = read_log(dir.path(), Position::Start).unwrap();
    let mut seen = vec![false; (n_threads * per_thread) as usize];
    let mut expected_seq = 0;
    while let Some(item) = reader.next_with_seq() {
        let (seq, e) = item.unwrap();
        assert_eq!(seq, expected_seq, "sequence numbers are consecutive");
        expected_seq += 1;
        assert!(!std::mem::replace(&mut seen[index_of(&e) as usize], true), "event {} twice", index_of(&e));
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn the_segment_appended_to_is_mapped_for_random_access() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&local_config(dir.path(), 64 * 1024)).unwrap();
    for n in 0..1000 {
        log.append(&event(n)).unwrap();
    }
    assert!(log.health().n_segments > 1, "the appends rolled to a new segment");
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    let active = segments.last().unwrap().to_str().unwrap().to_owned();
    // The kernel lists each mapping's advice in smaps: `rr` is MADV_RANDOM.
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut lines = smaps.lines().skip_while(|line| !line.ends_with(&active));
    assert!(lines.next().is_some(), "{active} is mapped");
    let flags = lines.find_map(|line| line.strip_prefix("VmFlags:")).unwrap();
    assert!(flags.split_whitespace().any(|flag| flag == "rr"), "{active}'s flags: {flags}");
    drop(log);
}

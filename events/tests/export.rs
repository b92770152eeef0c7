//! Parquet export: one file per hour under `hour=…` folders, every event once, values intact.

mod common;

use std::collections::BTreeMap;
use std::fs::File;

use adsnap_events::export::{hour_of, HourlyParquet};
use adsnap_events::{read_log, Event, EventLog, Position};
use arrow_array::{Array, FixedSizeBinaryArray, StringArray, UInt64Array};
use common::{event, local_config};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Event `n` of a stream that spans three hours.
fn spread(n: u64) -> Event<'static> {
    Event { time_unix_ms: 1_795_000_000_000 + n as i64 * 1000, ..event(n) }
}

#[test]
fn export_partitions_by_hour_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&local_config(&dir.path().join("log"), 1 << 20)).unwrap();
    let n = 3 * 3600;
    for i in 0..n {
        log.append(&spread(i)).unwrap();
    }
    let out = dir.path().join("out");
    let mut export = HourlyParquet::new(&out).unwrap();
    let mut reader = read_log(log.dir(), Position::Start).unwrap();
    while let Some(item) = reader.next_with_seq() {
        let (seq, e) = item.unwrap();
        export.push(Some(log.log_id()), seq, e).unwrap();
    }
    let summary = export.finish().unwrap();
    assert_eq!(summary.n_events, n);

    let mut per_hour: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = vec![false; n as usize];
    for path in &summary.files {
        let hour = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_prefix("hour=")
            .unwrap()
            .to_owned();
        for batch in
            ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap()
        {
            let batch = batch.unwrap();
            let seqs = batch.column_by_name("seq").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap();
            let ids = batch
                .column_by_name("event_id")
                .unwrap()
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap();
            let apps =
                batch.column_by_name("app_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            let keys =
                batch.column_by_name("user_key").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap();
            for row in 0..batch.num_rows() {
                let i = seqs.value(row);
                let expected = spread(i);
                assert_eq!(hour, hour_of(expected.time_unix_ms));
                assert_eq!(u128::from_be_bytes(ids.value(row).try_into().unwrap()), expected.event_id);
                assert_eq!(apps.value(row), expected.app_id);
                assert_eq!(
                    keys.is_null(row),
                    !expected.privacy.allows_user_key() || expected.user_key.is_none()
                );
                assert!(!seen[i as usize], "event {i} exported twice");
                seen[i as usize] = true;
            }
            *per_hour.entry(hour.clone()).or_default() += batch.num_rows() as u64;
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(per_hour.len(), 4, "three hours of events starting mid-hour touch four hours: {per_hour:?}");
}

//! Parquet export: one file per hour under `hour=…` folders, every event once, values intact;
//! and reading it back: the exact events, partitions outside a range never opened, and a typed
//! error (never a panic) for files that are not an export.

mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adsnap_events::export::{hour_of, read_parquet, ExportedEvent, HourlyParquet, ParquetReader};
use adsnap_events::{read_log, Channel, Event, EventKind, EventLog, EventsError, Position, Privacy};
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use common::{event, local_config};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use proptest::prelude::*;

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

const HOUR_MS: i64 = 3_600_000;
/// The start of an hour in November 2026.
const HOUR0: i64 = 1_795_003_200_000;

/// Exports `rows` (log id, seq, event) into `out` and returns the files written.
fn export(out: &Path, rows: &[(Option<u64>, u64, Event<'static>)]) -> Vec<PathBuf> {
    let mut export = HourlyParquet::new(out).unwrap();
    for (log_id, seq, e) in rows {
        export.push(*log_id, *seq, e.clone()).unwrap();
    }
    export.finish().unwrap().files
}

/// Every row of `reader`, sorted by sequence number (partitions are read in name order, not
/// in the order the events were pushed).
fn read_all(reader: ParquetReader) -> Vec<ExportedEvent> {
    let mut reader = reader;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_exported() {
        rows.push(row.unwrap());
    }
    rows.sort_by_key(|r| r.seq);
    rows
}

/// What the log would hold for `e`: no user key where the privacy bits forbid one.
fn as_logged(e: &Event<'static>) -> Event<'static> {
    Event { user_key: e.user_key.filter(|_| e.privacy.allows_user_key()), ..e.clone() }
}

/// Events covering every kind and channel, each optional field set and unset, extreme values of
/// every number, empty, non-ASCII and longest strings, and times before 1970.
fn varied_events() -> Vec<Event<'static>> {
    let channels = [Channel::Sdk, Channel::OpenRtb, Channel::Partner];
    let mut events = Vec::new();
    for (idx, kind) in EventKind::ALL.into_iter().enumerate() {
        for (c, channel) in channels.into_iter().enumerate() {
            for variant in 0..4u64 {
                let n = (idx * 100 + c * 10) as u64 + variant;
                let privacy = match variant {
                    0 => Privacy(0),
                    1 => Privacy(Privacy::LIMIT_AD_TRACKING | Privacy::US_PRIVACY_OPT_OUT),
                    2 => Privacy(Privacy::COPPA),
                    _ => Privacy(u8::MAX),
                };
                events.push(Event {
                    event_id: if variant == 3 { u128::MAX - n as u128 } else { n as u128 },
                    kind,
                    channel,
                    time_unix_ms: HOUR0 + (n as i64 * 997_331) % (5 * HOUR_MS),
                    request_id: (n as u128) << 100,
                    snapshot_id: if variant == 3 { u64::MAX } else { n },
                    assignment_code: u128::MAX >> (n % 128),
                    app_id: match variant {
                        0 => Cow::Borrowed(""),
                        1 => Cow::Owned("com.例え.game🎮".to_owned()),
                        _ => Cow::Owned("a".repeat(1024)),
                    },
                    ad_unit_id: Cow::Owned(format!("unit-{n}")),
                    campaign_id: if variant == 3 { u32::MAX } else { n as u32 },
                    creative_id: (variant as u32) * 7,
                    price_micros: [0, i64::MAX, i64::MIN, -5][variant as usize],
                    revenue_micros: [0, -1, i64::MAX, 1500][variant as usize],
                    currency: [*b"USD", *b"EUR", *b"JPY", *b"XXX"][variant as usize],
                    country: [0, u16::MAX, 0x5553, 1][variant as usize],
                    os: [0, 1, 2, u8::MAX][variant as usize],
                    user_key: match variant {
                        0 => Some(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                        1 => None,
                        2 => Some(u64::MAX), // forbidden by COPPA: never written
                        _ => Some(0),        // forbidden too
                    },
                    privacy,
                    no_fill_reason: [0, 1, 7, u8::MAX][variant as usize],
                    test: variant == 2,
                });
            }
        }
    }
    // Before 1970 the export files events under 1970's first hour.
    events.push(Event { time_unix_ms: -1, ..event(1) });
    events.push(Event { time_unix_ms: i64::MIN / 1_000_000, ..event(2) });
    events.push(Event { time_unix_ms: 0, user_key: None, ..event(3) });
    events
}

#[test]
fn export_then_read_gives_back_every_event_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let events = varied_events();
    let rows: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (if i % 5 == 0 { None } else { Some(0xabc0 + (i as u64 % 3)) }, i as u64, e.clone()))
        .collect();
    let files = export(dir.path(), &rows);
    assert!(files.len() >= 6, "five hours and 1970: {files:?}");
    let read = read_all(read_parquet(dir.path(), i64::MIN..i64::MAX).unwrap());
    assert_eq!(read.len(), rows.len());
    for (got, (log_id, seq, e)) in read.iter().zip(&rows) {
        assert_eq!((got.log_id, got.seq), (*log_id, *seq));
        assert_eq!(got.event, as_logged(e), "event {seq}");
    }
    // One file named directly, and the same file named twice, reads once.
    let one = &files[files.len() / 2];
    let n_in_file = read_all(read_parquet(one, i64::MIN..i64::MAX).unwrap()).len();
    let twice = ParquetReader::open(&[one.clone(), one.parent().unwrap().to_owned()], i64::MIN..i64::MAX);
    assert_eq!(read_all(twice.unwrap()).len(), n_in_file);
}

#[test]
fn reading_streams_batches_across_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    // More rows than a row group and than a read batch, in one hour.
    let n = 40_000u64;
    let rows: Vec<_> =
        (0..n).map(|i| (Some(7), i, Event { time_unix_ms: HOUR0 + i as i64 * 50, ..event(i) })).collect();
    let files = export(dir.path(), &rows);
    assert_eq!(files.len(), 1);
    let read = read_all(read_parquet(dir.path(), i64::MIN..i64::MAX).unwrap());
    assert_eq!(read.len() as u64, n);
    assert!(read.iter().zip(&rows).all(|(got, (_, _, e))| got.event == as_logged(e)));
}

/// Events every 10 s over three hours from `HOUR0`.
fn three_hours(out: &Path) -> Vec<(Option<u64>, u64, Event<'static>)> {
    let rows: Vec<_> = (0..1080u64)
        .map(|i| (Some(1), i, Event { time_unix_ms: HOUR0 + i as i64 * 10_000, ..event(i) }))
        .collect();
    export(out, &rows);
    rows
}

#[test]
fn a_range_skips_whole_partitions_and_filters_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows = three_hours(dir.path());
    // A damaged file in the first hour: reading a range after that hour never opens it.
    std::fs::write(dir.path().join(format!("hour={}/zz.parquet", hour_of(HOUR0))), b"not parquet").unwrap();
    let (from, to) = (HOUR0 + HOUR_MS + 30 * 60_000, HOUR0 + 2 * HOUR_MS + 60_000);
    let reader = read_parquet(dir.path(), from..to).unwrap();
    assert_eq!((reader.n_files(), reader.n_files_skipped()), (2, 2), "second and third hour read");
    let read = read_all(reader);
    let expected: Vec<_> = rows.iter().filter(|(_, _, e)| (from..to).contains(&e.time_unix_ms)).collect();
    assert_eq!(read.len(), expected.len());
    assert!(read.iter().zip(&expected).all(|(got, (_, seq, e))| got.seq == *seq && got.event == *e));
    // An empty range reads nothing and opens nothing.
    let mut empty = read_parquet(dir.path(), HOUR0 + 10 * HOUR_MS..HOUR0 + 11 * HOUR_MS).unwrap();
    assert_eq!(empty.n_files(), 0);
    assert!(empty.next().is_none());
    // The whole range reaches the damaged file.
    let err = read_parquet(dir.path(), i64::MIN..i64::MAX).unwrap().find_map(Result::err);
    assert!(matches!(err, Some(EventsError::NotParquet { .. })), "{err:?}");
}

/// The first file of a fresh export, and its first batch.
fn a_real_batch(dir: &Path) -> (PathBuf, RecordBatch) {
    let rows: Vec<_> =
        (0..10u64).map(|i| (Some(1), i, Event { time_unix_ms: HOUR0 + i as i64, ..event(i) })).collect();
    let files = export(&dir.join("good"), &rows);
    let batch = ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0]).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    (files[0].clone(), batch)
}

/// A column's name and its new values.
type Replacement = (&'static str, ArrayRef);

/// `batch` with column `name` replaced by `array` (whose type and nullability it takes).
fn with_column(batch: &RecordBatch, name: &str, array: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    let idx = schema.index_of(name).unwrap();
    fields[idx] = Field::new(name, array.data_type().clone(), array.null_count() > 0);
    columns[idx] = array;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Writes `batch` as `hour=<HOUR0>/<name>` under `dir` and returns the first error reading it.
fn read_error(dir: &Path, name: &str, batch: &RecordBatch) -> EventsError {
    let folder = dir.join(name).join(format!("hour={}", hour_of(HOUR0)));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("events.parquet");
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    let reader = read_parquet(&dir.join(name), i64::MIN..i64::MAX).unwrap();
    reader.into_iter().find_map(Result::err).expect("an error")
}

#[test]
fn foreign_files_schemas_and_values_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (good, batch) = a_real_batch(dir.path());

    let text = dir.path().join("notes.parquet");
    std::fs::write(&text, "time,kind\n1,decision\n").unwrap();
    let err = read_parquet(&text, i64::MIN..i64::MAX).unwrap().next().unwrap().unwrap_err();
    assert!(matches!(err, EventsError::NotParquet { .. }), "{err}");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_parquet(&truncated, i64::MIN..i64::MAX).unwrap().next().unwrap().unwrap_err();
    assert!(matches!(err, EventsError::NotParquet { .. }), "{err}");
    let mut bad_footer = bytes.clone();
    let at = bad_footer.len() - 20;
    bad_footer[at..at + 8].fill(0xff);
    let damaged = dir.path().join("damaged.parquet");
    std::fs::write(&damaged, &bad_footer).unwrap();
    let err = read_parquet(&damaged, i64::MIN..i64::MAX).unwrap().next().unwrap().unwrap_err();
    assert!(matches!(err, EventsError::ParquetRead { .. } | EventsError::NotParquet { .. }), "{err}");

    let foreign = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .unwrap();
    let err = read_error(dir.path(), "foreign", &foreign);
    assert!(matches!(&err, EventsError::ParquetSchema { column, .. } if column == "log_id"), "{err}");
    let seqs = Arc::new(Int64Array::from(vec![0i64; batch.num_rows()]));
    let err = read_error(dir.path(), "mistyped", &with_column(&batch, "seq", seqs));
    assert!(matches!(&err, EventsError::ParquetSchema { column, .. } if column == "seq"), "{err}");

    let strings = |values: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let n = batch.num_rows();
    let mut kinds = vec![Some("impression"); n];
    kinds[3] = Some("view");
    let timestamps = |ms: i64| -> ArrayRef {
        Arc::new(arrow_array::TimestampMillisecondArray::from(vec![ms; n]).with_timezone("UTC"))
    };
    let later = HOUR0 + 2 * HOUR_MS;
    // (case, the columns replaced, the column and row the error must name)
    let cases: Vec<(&str, Vec<Replacement>, &str, u64)> = vec![
        ("kind", vec![("kind", strings(kinds))], "kind", 3),
        ("channel", vec![("channel", strings(vec![Some("web"); n]))], "channel", 0),
        ("currency", vec![("currency", strings(vec![Some("EURO"); n]))], "currency", 0),
        (
            "null",
            vec![("currency", strings((0..n).map(|i| (i != 4).then_some("USD")).collect()))],
            "currency",
            4,
        ),
        ("time", vec![("time_unix_ms", Arc::new(Int64Array::from(vec![HOUR0 + 5; n])))], "time", 0),
        (
            "partition",
            vec![("time_unix_ms", Arc::new(Int64Array::from(vec![later; n]))), ("time", timestamps(later))],
            "time_unix_ms",
            0,
        ),
        // Row 0 of `event` has no user key; row 1 has one.
        (
            "forbidden",
            vec![("privacy", Arc::new(arrow_array::UInt8Array::from(vec![Privacy::COPPA; n])))],
            "user_key",
            1,
        ),
        ("long", vec![("app_id", strings(vec![Some(&"x".repeat(1025)); n]))], "app_id", 0),
    ];
    for (name, replaced, column_expected, row_expected) in cases {
        let bad =
            replaced.into_iter().fold(batch.clone(), |b, (column, array)| with_column(&b, column, array));
        let err = read_error(dir.path(), name, &bad);
        assert!(
            matches!(&err, EventsError::ParquetValue { column, row, .. }
                if *column == column_expected && *row == row_expected),
            "{name}: {err}"
        );
    }

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("hour=2026-11-18T11")).unwrap();
    assert!(matches!(read_parquet(&empty, i64::MIN..i64::MAX), Err(EventsError::ParquetRead { .. })));
    assert!(matches!(
        read_parquet(&dir.path().join("missing"), i64::MIN..i64::MAX),
        Err(EventsError::ParquetRead { .. })
    ));
}

fn arbitrary_event() -> impl Strategy<Value = Event<'static>> {
    let ids = (any::<u128>(), any::<u128>(), any::<u128>(), any::<u64>());
    let numbers =
        (any::<u32>(), any::<u32>(), any::<i64>(), any::<i64>(), any::<u16>(), any::<u8>(), any::<u8>());
    let rest = (
        0..7usize,
        0..3usize,
        -HOUR_MS..30 * HOUR_MS,
        "[a-zA-Z0-9._é]{0,40}",
        "[A-Z]{3}",
        proptest::option::of(any::<u64>()),
        any::<u8>(),
        any::<bool>(),
    );
    (ids, numbers, rest).prop_map(|(ids, numbers, rest)| Event {
        event_id: ids.0,
        request_id: ids.1,
        assignment_code: ids.2,
        snapshot_id: ids.3,
        campaign_id: numbers.0,
        creative_id: numbers.1,
        price_micros: numbers.2,
        revenue_micros: numbers.3,
        country: numbers.4,
        os: numbers.5,
        no_fill_reason: numbers.6,
        kind: EventKind::ALL[rest.0],
        channel: [Channel::Sdk, Channel::OpenRtb, Channel::Partner][rest.1],
        time_unix_ms: HOUR0 + rest.2,
        app_id: Cow::Owned(rest.3.clone()),
        ad_unit_id: Cow::Owned(rest.3.chars().rev().collect()),
        currency: rest.4.as_bytes().try_into().unwrap(),
        user_key: rest.5,
        privacy: Privacy(rest.6),
        test: rest.7,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn arbitrary_events_round_trip(events in proptest::collection::vec(arbitrary_event(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<_> = events.iter().enumerate().map(|(i, e)| (Some(3), i as u64, e.clone())).collect();
        export(dir.path(), &rows);
        let read = read_all(read_parquet(dir.path(), i64::MIN..i64::MAX).unwrap());
        prop_assert_eq!(read.len(), rows.len());
        for (got, (_, _, e)) in read.iter().zip(&rows) {
            prop_assert_eq!(&got.event, &as_logged(e));
        }
    }
}

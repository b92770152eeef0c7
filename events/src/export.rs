//! Parquet export for analysts and `abtest/`: events go to one file per hour of their time,
//! under Hive-style partition folders `hour=YYYY-MM-DDTHH/`, and ([`read_parquet`]) back.
//! Columns: docs/events.md.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::codec::permitted_user_key;
use crate::error::EventsError;
use crate::event::Event;
use crate::json::{channel_name, rfc3339_ms};

pub use crate::export_read::{
    hour_span, read_parquet, ExportedEvent, ParquetReader, READ_BATCH_ROWS, WALK_DEPTH_MAX,
};

/// Rows buffered per hour before they are written as one row group.
pub const ROWS_PER_GROUP: usize = 16 * 1024;
/// Hours with an open file at once; past it the hour seen longest ago is closed (a later event
/// of that hour starts a new file in the same folder).
pub const OPEN_HOURS_MAX: usize = 24;

/// The schema of every exported file.
pub fn schema() -> SchemaRef {
    let id = || DataType::FixedSizeBinary(16);
    Arc::new(Schema::new(vec![
        Field::new("log_id", DataType::UInt64, true),
        Field::new("seq", DataType::UInt64, false),
        Field::new("event_id", id(), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("time_unix_ms", DataType::Int64, false),
        Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("request_id", id(), false),
        Field::new("snapshot_id", DataType::UInt64, false),
        Field::new("assignment_code", id(), false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("app_id", DataType::Utf8, false),
        Field::new("ad_unit_id", DataType::Utf8, false),
        Field::new("campaign_id", DataType::UInt32, false),
        Field::new("creative_id", DataType::UInt32, false),
        Field::new("price_micros", DataType::Int64, false),
        Field::new("revenue_micros", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("country", DataType::UInt16, false),
        Field::new("os", DataType::UInt8, false),
        Field::new("user_key", DataType::UInt64, true),
        Field::new("privacy", DataType::UInt8, false),
        Field::new("no_fill_reason", DataType::UInt8, false),
        Field::new("test", DataType::Boolean, false),
    ]))
}

/// Columns added to the export after its first layout: a file written before has none of them,
/// and readers give their events the field's default (`test`: false).
pub const ADDED_COLUMNS: [&str; 1] = ["test"];

/// The partition an event belongs to: `YYYY-MM-DDTHH` of its time, UTC.
pub fn hour_of(time_unix_ms: i64) -> String {
    rfc3339_ms(time_unix_ms)[..13].to_owned()
}

struct Row {
    log_id: Option<u64>,
    seq: u64,
    event: Event<'static>,
}

struct HourFile {
    writer: ArrowWriter<File>,
    path: PathBuf,
    rows: Vec<Row>,
    last_used: u64,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub n_events: u64,
    pub files: Vec<PathBuf>,
}

/// Writes events into hourly Parquet files under `out`.
pub struct HourlyParquet {
    out: PathBuf,
    open: BTreeMap<String, HourFile>,
    summary: ExportSummary,
    n_pushed: u64,
}

impl HourlyParquet {
    pub fn new(out: &Path) -> Result<HourlyParquet, EventsError> {
        fs::create_dir_all(out).map_err(|e| export_err(out, e))?;
        Ok(HourlyParquet {
            out: out.to_owned(),
            open: BTreeMap::new(),
            summary: ExportSummary::default(),
            n_pushed: 0,
        })
    }

    pub fn push(&mut self, log_id: Option<u64>, seq: u64, event: Event<'static>) -> Result<(), EventsError> {
        let hour = hour_of(event.time_unix_ms);
        self.n_pushed += 1;
        if !self.open.contains_key(&hour) {
            self.close_least_recent_if_full()?;
            let file = self.open_hour(&hour, log_id, seq)?;
            self.open.insert(hour.clone(), file);
        }
        let file = self.open.get_mut(&hour).expect("opened above");
        file.last_used = self.n_pushed;
        file.rows.push(Row { log_id, seq, event });
        if file.rows.len() >= ROWS_PER_GROUP {
            write_rows(file)?;
        }
        self.summary.n_events += 1;
        Ok(())
    }

    /// Writes what is buffered and closes every file.
    pub fn finish(mut self) -> Result<ExportSummary, EventsError> {
        let hours: Vec<String> = self.open.keys().cloned().collect();
        for hour in hours {
            self.close(&hour)?;
        }
        self.summary.files.sort();
        Ok(self.summary)
    }

    fn open_hour(&self, hour: &str, log_id: Option<u64>, seq: u64) -> Result<HourFile, EventsError> {
        let dir = self.out.join(format!("hour={hour}"));
        fs::create_dir_all(&dir).map_err(|e| export_err(&dir, e))?;
        let name = match log_id {
            Some(id) => format!("events-{id:016x}-{seq:020}.parquet"),
            None => format!("events-{seq:020}.parquet"),
        };
        let path = dir.join(name);
        let file = File::create_new(&path).map_err(|e| export_err(&path, e))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| export_err(&path, e))?;
        Ok(HourFile { writer, path, rows: Vec::new(), last_used: 0 })
    }

    fn close_least_recent_if_full(&mut self) -> Result<(), EventsError> {
        if self.open.len() < OPEN_HOURS_MAX {
            return Ok(());
        }
        let oldest = self.open.iter().min_by_key(|(_, f)| f.last_used).map(|(h, _)| h.clone());
        match oldest {
            Some(hour) => self.close(&hour),
            None => Ok(()),
        }
    }

    fn close(&mut self, hour: &str) -> Result<(), EventsError> {
        let Some(mut file) = self.open.remove(hour) else { return Ok(()) };
        write_rows(&mut file)?;
        file.writer.close().map_err(|e| export_err(&file.path, e))?;
        self.summary.files.push(file.path);
        Ok(())
    }
}

fn export_err(path: &Path, err: impl std::fmt::Display) -> EventsError {
    EventsError::Export { path: path.to_owned(), message: err.to_string() }
}

fn write_rows(file: &mut HourFile) -> Result<(), EventsError> {
    if file.rows.is_empty() {
        return Ok(());
    }
    let batch = to_batch(&file.rows).map_err(|e| export_err(&file.path, e))?;
    file.writer.write(&batch).map_err(|e| export_err(&file.path, e))?;
    file.rows.clear();
    Ok(())
}

fn ids(rows: &[Row], id: impl Fn(&Event<'_>) -> u128) -> Result<ArrayRef, arrow_schema::ArrowError> {
    // Big-endian, so that the bytes sort like the numbers.
    Ok(Arc::new(FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| id(&r.event).to_be_bytes()))?))
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let col = |f: &dyn Fn(&Row) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    let strings = |f: &dyn Fn(&Event<'_>) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(|r| f(&r.event)).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(rows.iter().map(|r| r.log_id).collect::<Vec<_>>())),
        Arc::new(UInt64Array::from(col(&|r| r.seq))),
        ids(rows, |e| e.event_id)?,
        strings(&|e| e.kind.name().to_owned()),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.event.time_unix_ms).collect::<Vec<_>>())),
        Arc::new(
            TimestampMillisecondArray::from(rows.iter().map(|r| r.event.time_unix_ms).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        ids(rows, |e| e.request_id)?,
        Arc::new(UInt64Array::from(col(&|r| r.event.snapshot_id))),
        ids(rows, |e| e.assignment_code)?,
        strings(&|e| channel_name(e.channel).to_owned()),
        strings(&|e| e.app_id.to_string()),
        strings(&|e| e.ad_unit_id.to_string()),
        Arc::new(UInt32Array::from(rows.iter().map(|r| r.event.campaign_id).collect::<Vec<_>>())),
        Arc::new(UInt32Array::from(rows.iter().map(|r| r.event.creative_id).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.event.price_micros).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.event.revenue_micros).collect::<Vec<_>>())),
        strings(&|e| String::from_utf8_lossy(&e.currency).into_owned()),
        Arc::new(UInt16Array::from(rows.iter().map(|r| r.event.country).collect::<Vec<_>>())),
        Arc::new(UInt8Array::from(rows.iter().map(|r| r.event.os).collect::<Vec<_>>())),
        // As in the log: a user key the privacy bits forbid is never written.
        Arc::new(UInt64Array::from(rows.iter().map(|r| permitted_user_key(&r.event)).collect::<Vec<_>>())),
        Arc::new(UInt8Array::from(rows.iter().map(|r| r.event.privacy.0).collect::<Vec<_>>())),
        Arc::new(UInt8Array::from(rows.iter().map(|r| r.event.no_fill_reason).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(rows.iter().map(|r| r.event.test).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_utc_partitions() {
        assert_eq!(hour_of(0), "1970-01-01T00");
        assert_eq!(hour_of(1_795_000_000_000), "2026-11-18T11");
        assert_eq!(hour_of(-5), "1970-01-01T00");
    }
}

//! Reading the hourly Parquet export back into events, for `adsnap abtest report --parquet` and
//! any tool that wants the exact `Event`s an export holds: finding the files under the paths
//! given, skipping `hour=…` partitions outside a time range by their names, checking each file's
//! schema, and decoding one record batch at a time (never a whole file).
//!
//! Every check the log's decoder makes is made again here, because an export may have been
//! written, copied or rewritten by other tools: a file that is not Parquet, a schema that is not
//! the export's, or a value the `Event` cannot hold is a typed error naming the file.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, BooleanArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::codec::ID_BYTES_MAX;
use crate::error::EventsError;
use crate::event::{Event, EventKind, Privacy};
use crate::export::{hour_of, schema, ADDED_COLUMNS};
use crate::json::channel_from_name;

/// Rows decoded at once: the most of a file held in memory.
pub const READ_BATCH_ROWS: usize = 8 * 1024;
/// Folder levels searched below a path given to [`ParquetReader::open`].
pub const WALK_DEPTH_MAX: usize = 8;
/// One hour partition's span.
const HOUR_MS: i64 = 3_600_000;
/// Parquet's magic bytes, at the start and at the end of every file.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// One exported row: the event and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedEvent {
    /// The log that wrote the event (`None` if the export did not know it).
    pub log_id: Option<u64>,
    /// Its sequence number in that log.
    pub seq: u64,
    pub event: Event<'static>,
}

/// Reads the events with `time_unix_ms` in `range` from one export folder or file.
pub fn read_parquet(path: &Path, range: Range<i64>) -> Result<ParquetReader, EventsError> {
    ParquetReader::open(&[path.to_owned()], range)
}

/// A file to read and, when it lies in an `hour=…` folder, the span of that hour: every row in
/// it must be in that span, or skipping partitions by name would have lost it.
#[derive(Debug)]
struct PartFile {
    path: PathBuf,
    hour_ms: Option<Range<i64>>,
}

/// The file being read.
struct OpenFile {
    part: PartFile,
    batches: ParquetRecordBatchReader,
    /// Rows of this file before the current batch.
    n_rows_before: u64,
    batch: Option<Columns>,
    row: usize,
}

/// An iterator over the events of an export in a time range: partition by partition (in name
/// order), file by file, row by row. After an error it ends.
pub struct ParquetReader {
    files: VecDeque<PartFile>,
    range: Range<i64>,
    open: Option<OpenFile>,
    n_files: usize,
    n_partitions_skipped: usize,
    failed: bool,
}

impl ParquetReader {
    /// Finds the Parquet files under `paths` (files, export folders or partition folders, each
    /// file read once however often it is named) whose partition overlaps `range`. A path under
    /// which no Parquet file exists at all is an error; one whose files all lie outside the range
    /// gives no events.
    pub fn open(paths: &[PathBuf], range: Range<i64>) -> Result<ParquetReader, EventsError> {
        let mut found = Vec::new();
        for path in paths {
            let before = found.len();
            walk(path, hour_span_of_parent(path), WALK_DEPTH_MAX, &mut found)?;
            if found.len() == before {
                return Err(read_err(path, "no Parquet files (*.parquet) found"));
            }
        }
        let mut seen = BTreeSet::new();
        let mut files = VecDeque::new();
        let mut n_partitions_skipped = 0;
        for part in found {
            let canonical = fs::canonicalize(&part.path).map_err(|e| read_err(&part.path, e))?;
            if !seen.insert(canonical) {
                continue;
            }
            match &part.hour_ms {
                Some(hour) if hour.start >= range.end || hour.end <= range.start => n_partitions_skipped += 1,
                _ => files.push_back(part),
            }
        }
        let n_files = files.len();
        Ok(ParquetReader { files, range, open: None, n_files, n_partitions_skipped, failed: false })
    }

    /// Files that will be read (after skipping partitions outside the range).
    pub fn n_files(&self) -> usize {
        self.n_files
    }

    /// Files skipped because their hour partition lies outside the range.
    pub fn n_files_skipped(&self) -> usize {
        self.n_partitions_skipped
    }

    /// The next row in the range with its log id and sequence number.
    pub fn next_exported(&mut self) -> Option<Result<ExportedEvent, EventsError>> {
        if self.failed {
            return None;
        }
        let next = self.advance();
        if matches!(next, Some(Err(_))) {
            self.failed = true;
        }
        next
    }

    fn advance(&mut self) -> Option<Result<ExportedEvent, EventsError>> {
        loop {
            if self.open.is_none() {
                let part = self.files.pop_front()?;
                match open_file(part) {
                    Ok(file) => self.open = Some(file),
                    Err(err) => return Some(Err(err)),
                }
            }
            let file = self.open.as_mut().expect("opened above");
            match next_row(file) {
                Some(Ok(row)) if !self.range.contains(&row.event.time_unix_ms) => continue,
                Some(item) => return Some(item),
                None => self.open = None,
            }
        }
    }
}

impl Iterator for ParquetReader {
    type Item = Result<Event<'static>, EventsError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_exported().map(|row| row.map(|r| r.event))
    }
}

fn read_err(path: &Path, err: impl std::fmt::Display) -> EventsError {
    EventsError::ParquetRead { path: path.to_owned(), reason: err.to_string() }
}

/// The span of the hour partition `name` (`hour=YYYY-MM-DDTHH`), if it is one as the export
/// names them. Times before 1970 are exported into 1970's first hour, so that hour has no start.
pub fn hour_span(name: &str) -> Option<Range<i64>> {
    let hour = name.strip_prefix("hour=")?;
    let number = |range: Range<usize>| hour.get(range)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        i32::try_from(number(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?,
        u8::try_from(number(8..10)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(u8::try_from(number(11..13)?).ok()?, 0, 0).ok()?;
    let start_ms = time::PrimitiveDateTime::new(date, at).assume_utc().unix_timestamp() * 1000;
    // The round trip rejects every spelling the export would not write (signs, spaces, ...).
    if hour_of(start_ms) != hour {
        return None;
    }
    let end_ms = start_ms + HOUR_MS;
    Some(if start_ms == 0 { i64::MIN..end_ms } else { start_ms..end_ms })
}

fn hour_span_of_parent(path: &Path) -> Option<Range<i64>> {
    hour_span(path.parent()?.file_name()?.to_str()?)
}

/// Collects `*.parquet` files under `path` in name order, skipping hidden and `_`-prefixed
/// entries (other tools' markers such as `_SUCCESS`). A file named directly is taken whatever
/// its name.
fn walk(
    path: &Path,
    hour_ms: Option<Range<i64>>,
    depth_left: usize,
    out: &mut Vec<PartFile>,
) -> Result<(), EventsError> {
    let meta = fs::metadata(path).map_err(|e| read_err(path, e))?;
    if !meta.is_dir() {
        out.push(PartFile { path: path.to_owned(), hour_ms });
        return Ok(());
    }
    let hour_ms = path.file_name().and_then(|n| n.to_str()).and_then(hour_span).or(hour_ms);
    if depth_left == 0 {
        return Err(read_err(path, format!("more than {WALK_DEPTH_MAX} folder levels below the path given")));
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| read_err(path, e))? {
        let entry = entry.map_err(|e| read_err(path, e))?;
        entries.push(entry.path());
    }
    entries.sort();
    for entry in entries {
        let Some(name) = entry.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let is_dir = fs::metadata(&entry).map_err(|e| read_err(&entry, e))?.is_dir();
        if is_dir {
            walk(&entry, hour_ms.clone(), depth_left - 1, out)?;
        } else if name.ends_with(".parquet") {
            out.push(PartFile { path: entry, hour_ms: hour_ms.clone() });
        }
    }
    Ok(())
}

fn open_file(part: PartFile) -> Result<OpenFile, EventsError> {
    let path = &part.path;
    let file = File::open(path).map_err(|e| read_err(path, e))?;
    check_magic(path, &file)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read_err(path, e))?;
    check_schema(path, builder.schema())?;
    let (expected, found) = (schema(), builder.schema().clone());
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        expected
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| found.field_with_name(name).is_ok()),
    );
    let batches = builder
        .with_batch_size(READ_BATCH_ROWS)
        .with_projection(mask)
        .build()
        .map_err(|e| read_err(path, e))?;
    Ok(OpenFile { part, batches, n_rows_before: 0, batch: None, row: 0 })
}

fn check_magic(path: &Path, file: &File) -> Result<(), EventsError> {
    let not_parquet = |reason: String| EventsError::NotParquet { path: path.to_owned(), reason };
    let len = file.metadata().map_err(|e| read_err(path, e))?.len();
    if len < 2 * PARQUET_MAGIC.len() as u64 + 4 {
        return Err(not_parquet(format!("{len} bytes is too short for a Parquet file")));
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
    file.read_exact_at(&mut head, 0).map_err(|e| read_err(path, e))?;
    file.read_exact_at(&mut tail, len - 4).map_err(|e| read_err(path, e))?;
    if &head != PARQUET_MAGIC || &tail != PARQUET_MAGIC {
        return Err(not_parquet("it does not start and end with the Parquet magic bytes PAR1".into()));
    }
    Ok(())
}

/// Every column of the export must be there with its type, but for [`ADDED_COLUMNS`], which
/// files written before them lack; more columns are allowed (a later version's additions, or an
/// analyst's) and are not read.
fn check_schema(path: &Path, found: &arrow_schema::Schema) -> Result<(), EventsError> {
    for field in schema().fields() {
        let wrong = |reason: String| EventsError::ParquetSchema {
            path: path.to_owned(),
            column: field.name().clone(),
            reason,
        };
        let Ok(column) = found.field_with_name(field.name()) else {
            if ADDED_COLUMNS.contains(&field.name().as_str()) {
                continue;
            }
            return Err(wrong("is missing".into()));
        };
        if column.data_type() != field.data_type() {
            return Err(wrong(format!("is {}, expected {}", column.data_type(), field.data_type())));
        }
    }
    Ok(())
}

fn next_row(file: &mut OpenFile) -> Option<Result<ExportedEvent, EventsError>> {
    loop {
        if let Some(columns) = &file.batch {
            if file.row < columns.n_rows {
                let row = file.row;
                file.row += 1;
                let event = columns.event(row).and_then(|e| check_hour(e, &file.part, row));
                return Some(event.map_err(|e| e.at(&file.part.path, file.n_rows_before)));
            }
            file.n_rows_before += columns.n_rows as u64;
            file.batch = None;
        }
        let batch = match file.batches.next()? {
            Ok(batch) => batch,
            Err(err) => return Some(Err(read_err(&file.part.path, err))),
        };
        match Columns::of(&batch) {
            Ok(columns) => {
                file.batch = Some(columns);
                file.row = 0;
            }
            Err(err) => return Some(Err(err.at(&file.part.path, file.n_rows_before))),
        }
    }
}

fn check_hour(exported: ExportedEvent, part: &PartFile, row: usize) -> Result<ExportedEvent, BadValue> {
    match &part.hour_ms {
        Some(hour) if !hour.contains(&exported.event.time_unix_ms) => Err(BadValue {
            column: "time_unix_ms",
            reason: format!("{} lies outside the file's hour partition", exported.event.time_unix_ms),
            row: row as u64,
        }),
        _ => Ok(exported),
    }
}

/// A value the `Event` cannot hold, before the file and row are known.
#[derive(Debug)]
struct BadValue {
    column: &'static str,
    reason: String,
    /// Row offset within the batch (added to the file's row count).
    row: u64,
}

impl BadValue {
    fn new(column: &'static str, reason: String) -> BadValue {
        BadValue { column, reason, row: 0 }
    }

    fn at(self, path: &Path, rows_before: u64) -> EventsError {
        EventsError::ParquetValue {
            path: path.to_owned(),
            row: rows_before + self.row,
            column: self.column,
            reason: self.reason,
        }
    }
}

/// One batch's columns, typed. The schema was checked when the file was opened; a column that
/// still does not have its type here is reported, not unwrapped.
struct Columns {
    n_rows: usize,
    log_id: UInt64Array,
    seq: UInt64Array,
    event_id: FixedSizeBinaryArray,
    kind: StringArray,
    time_unix_ms: Int64Array,
    time: TimestampMillisecondArray,
    request_id: FixedSizeBinaryArray,
    snapshot_id: UInt64Array,
    assignment_code: FixedSizeBinaryArray,
    channel: StringArray,
    app_id: StringArray,
    ad_unit_id: StringArray,
    campaign_id: UInt32Array,
    creative_id: UInt32Array,
    price_micros: Int64Array,
    revenue_micros: Int64Array,
    currency: StringArray,
    country: UInt16Array,
    os: UInt8Array,
    user_key: UInt64Array,
    privacy: UInt8Array,
    no_fill_reason: UInt8Array,
    /// Absent from files written before the column was added.
    test: Option<BooleanArray>,
}

/// The column `name` as `A`; unless `nullable`, without nulls.
fn column<A: Array + Clone + 'static>(
    batch: &RecordBatch,
    name: &'static str,
    nullable: bool,
) -> Result<A, BadValue> {
    let array =
        batch.column_by_name(name).ok_or_else(|| BadValue::new(name, "is missing from the batch".into()))?;
    let typed = array
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| BadValue::new(name, format!("has type {}", array.data_type())))?;
    if !nullable && typed.null_count() > 0 {
        let row = (0..typed.len()).find(|&i| typed.is_null(i)).unwrap_or(0) as u64;
        return Err(BadValue { column: name, reason: "is null".into(), row });
    }
    Ok(typed.clone())
}

impl Columns {
    fn of(batch: &RecordBatch) -> Result<Columns, BadValue> {
        Ok(Columns {
            n_rows: batch.num_rows(),
            log_id: column(batch, "log_id", true)?,
            seq: column(batch, "seq", false)?,
            event_id: column(batch, "event_id", false)?,
            kind: column(batch, "kind", false)?,
            time_unix_ms: column(batch, "time_unix_ms", false)?,
            time: column(batch, "time", false)?,
            request_id: column(batch, "request_id", false)?,
            snapshot_id: column(batch, "snapshot_id", false)?,
            assignment_code: column(batch, "assignment_code", false)?,
            channel: column(batch, "channel", false)?,
            app_id: column(batch, "app_id", false)?,
            ad_unit_id: column(batch, "ad_unit_id", false)?,
            campaign_id: column(batch, "campaign_id", false)?,
            creative_id: column(batch, "creative_id", false)?,
            price_micros: column(batch, "price_micros", false)?,
            revenue_micros: column(batch, "revenue_micros", false)?,
            currency: column(batch, "currency", false)?,
            country: column(batch, "country", false)?,
            os: column(batch, "os", false)?,
            user_key: column(batch, "user_key", true)?,
            privacy: column(batch, "privacy", false)?,
            no_fill_reason: column(batch, "no_fill_reason", false)?,
            test: match batch.column_by_name("test") {
                Some(_) => Some(column(batch, "test", false)?),
                None => None,
            },
        })
    }

    fn event(&self, row: usize) -> Result<ExportedEvent, BadValue> {
        let bad = |column: &'static str, reason: String| BadValue { column, reason, row: row as u64 };
        let time_unix_ms = self.time_unix_ms.value(row);
        if self.time.value(row) != time_unix_ms {
            return Err(bad(
                "time",
                format!("{} differs from time_unix_ms {time_unix_ms}", self.time.value(row)),
            ));
        }
        let kind_name = self.kind.value(row);
        let kind = EventKind::from_name(kind_name)
            .ok_or_else(|| bad("kind", format!("{kind_name:?} is unknown")))?;
        let channel_name = self.channel.value(row);
        let channel = channel_from_name(channel_name)
            .ok_or_else(|| bad("channel", format!("{channel_name:?} is unknown")))?;
        let currency_text = self.currency.value(row);
        let currency: [u8; 3] = currency_text
            .as_bytes()
            .try_into()
            .map_err(|_| bad("currency", format!("{currency_text:?} is not 3 bytes")))?;
        let privacy = Privacy(self.privacy.value(row));
        let user_key = (!self.user_key.is_null(row)).then(|| self.user_key.value(row));
        if user_key.is_some() && !privacy.allows_user_key() {
            return Err(bad(
                "user_key",
                format!("is set although the privacy bits {:#04x} forbid one", privacy.0),
            ));
        }
        let event = Event {
            event_id: id_at(&self.event_id, row).map_err(|r| bad("event_id", r))?,
            kind,
            time_unix_ms,
            request_id: id_at(&self.request_id, row).map_err(|r| bad("request_id", r))?,
            snapshot_id: self.snapshot_id.value(row),
            assignment_code: id_at(&self.assignment_code, row).map_err(|r| bad("assignment_code", r))?,
            channel,
            app_id: string_id(&self.app_id, row).map_err(|r| bad("app_id", r))?.into(),
            ad_unit_id: string_id(&self.ad_unit_id, row).map_err(|r| bad("ad_unit_id", r))?.into(),
            campaign_id: self.campaign_id.value(row),
            creative_id: self.creative_id.value(row),
            price_micros: self.price_micros.value(row),
            revenue_micros: self.revenue_micros.value(row),
            currency,
            country: self.country.value(row),
            os: self.os.value(row),
            user_key,
            privacy,
            no_fill_reason: self.no_fill_reason.value(row),
            test: self.test.as_ref().is_some_and(|test| test.value(row)),
        };
        let log_id = (!self.log_id.is_null(row)).then(|| self.log_id.value(row));
        Ok(ExportedEvent { log_id, seq: self.seq.value(row), event })
    }
}

/// A 128-bit id stored big-endian in 16 bytes.
fn id_at(array: &FixedSizeBinaryArray, row: usize) -> Result<u128, String> {
    let bytes: [u8; 16] =
        array.value(row).try_into().map_err(|_| format!("is {} bytes, expected 16", array.value_length()))?;
    Ok(u128::from_be_bytes(bytes))
}

fn string_id(array: &StringArray, row: usize) -> Result<String, String> {
    let value = array.value(row);
    if value.len() > ID_BYTES_MAX {
        return Err(format!("is {} bytes, longer than the {ID_BYTES_MAX} an event may carry", value.len()));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_names_give_their_span_and_odd_names_none() {
        let start = 1_795_000_000_000 / HOUR_MS * HOUR_MS;
        let name = format!("hour={}", hour_of(start));
        assert_eq!(hour_span(&name), Some(start..start + HOUR_MS));
        assert_eq!(hour_span("hour=1970-01-01T00"), Some(i64::MIN..HOUR_MS));
        assert_eq!(hour_span("hour=1970-01-01T01"), Some(HOUR_MS..2 * HOUR_MS));
        for odd in [
            "hour=2026-11-18",
            "hour=2026-11-18T24",
            "hour=2026-13-01T00",
            "hour=2026-11-18T1x",
            "day=2026-11-18T11",
            "hour=+026-11-18T11",
            "hour=2026-11-18T11x",
        ] {
            assert_eq!(hour_span(odd), None, "{odd}");
        }
    }
}

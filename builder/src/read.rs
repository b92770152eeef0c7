//! Streaming readers for catalog files: JSON Lines one bounded line at a time, CSV one record at
//! a time, each reporting bytes read for the progress bar.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::de::DeserializeOwned;

use crate::diag::Diagnostics;
use crate::error::BuildError;

/// The longest JSON line accepted. Real records are a few hundred bytes; a bigger line is a
/// broken file (or a whole file on one line), and reading it whole would unbound memory.
pub const LINE_BYTES_MAX: usize = 1 << 20;
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Opens a catalog file; `Ok(None)` when an optional file is absent.
pub fn open_catalog_file(dir: &Path, name: &'static str, required: bool) -> Result<Option<File>, BuildError> {
    let path = dir.join(name);
    match File::open(&path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound && !required => Ok(None),
        Err(source) => Err(BuildError::Read { path, source }),
    }
}

/// Reads a JSON Lines file line by line. Each line is parsed into `T` and handed to `each` with its
/// line number; lines that do not parse become diagnostics (with the failing field's path), and
/// the `id` of such a line, when it can still be read, goes to `unparsed_ids` so that records
/// referring to it are not reported a second time.
pub fn for_each_json_line<T: DeserializeOwned>(
    dir: &Path,
    name: &'static str,
    required: bool,
    diags: &mut Diagnostics,
    unparsed_ids: &mut Vec<String>,
    progress: &ProgressBar,
    mut each: impl FnMut(&mut Diagnostics, u64, T) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let Some(file) = open_catalog_file(dir, name, required)? else {
        return Ok(());
    };
    let path = dir.join(name);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut buf = Vec::with_capacity(4096);
    let mut line: u64 = 0;
    loop {
        buf.clear();
        let (n_read, complete) = read_bounded_line(&mut reader, &mut buf)
            .map_err(|source| BuildError::Read { path: path.clone(), source })?;
        if n_read == 0 {
            return Ok(());
        }
        line += 1;
        progress.inc(n_read as u64);
        if !complete {
            diags.push(name, line, "", format!("line is longer than the limit of {LINE_BYTES_MAX} bytes"));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            diags.push(name, line, "", "line is not valid UTF-8");
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_json::<T>(text) {
            Ok(record) => each(diags, line, record)?,
            Err((field, reason)) => {
                diags.push(name, line, field, reason);
                unparsed_ids.extend(record_id(text));
            }
        }
    }
}

/// The `id` field of a JSON object that failed to parse as its record type, as text.
fn record_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: serde_json::Value,
    }
    match serde_json::from_str::<IdOnly>(text).ok()?.id {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses one JSON value, naming the field that failed.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        // The path is "." for the record itself and "?" where the error has no position.
        let field = if field == "." || field == "?" { String::new() } else { field };
        (field, err.into_inner().to_string())
    })?;
    de.end().map_err(|err| (String::new(), format!("trailing characters after the record: {err}")))?;
    Ok(value)
}

/// Reads up to and including the next newline, at most `LINE_BYTES_MAX` bytes into `buf`; the
/// rest of an over-long line is skipped. Returns the bytes consumed and whether the line fit.
fn read_bounded_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let n = reader.by_ref().take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', buf)?;
    if buf.len() <= LINE_BYTES_MAX || buf.last() == Some(&b'\n') {
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        return Ok((n, true));
    }
    let mut skipped = n;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((skipped, false));
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                reader.consume(pos + 1);
                return Ok((skipped + pos + 1, false));
            }
            None => {
                let len = available.len();
                reader.consume(len);
                skipped += len;
            }
        }
    }
}

/// Reads a CSV file record by record into `T` (by header names), with 1-based line numbers.
pub fn for_each_csv_record<T: DeserializeOwned>(
    dir: &Path,
    name: &'static str,
    diags: &mut Diagnostics,
    progress: &ProgressBar,
    mut each: impl FnMut(&mut Diagnostics, u64, T) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let Some(file) = open_catalog_file(dir, name, false)? else {
        return Ok(());
    };
    let path: PathBuf = dir.join(name);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // Rows with the wrong number of fields get this module's own diagnostic.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::with_capacity(READ_BUFFER_BYTES, file));
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(err) => {
            diags.push(name, 1, "", format!("cannot read the header row: {err}"));
            return Ok(());
        }
    };
    let mut record = csv::StringRecord::new();
    let mut last_offset = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let offset = record.position().map_or(0, |p| p.byte());
                progress.inc(offset.saturating_sub(last_offset));
                last_offset = offset;
                if !record.is_empty() && record.len() != headers.len() {
                    let reason = format!("has {} fields, the header has {}", record.len(), headers.len());
                    diags.push(name, line, "", reason);
                    continue;
                }
                match record.deserialize::<T>(Some(&headers)) {
                    Ok(value) => each(diags, line, value)?,
                    Err(err) => {
                        let field = csv_error_field(&err, &headers);
                        diags.push(name, line, field, csv_error_reason(&err));
                    }
                }
            }
            Err(err) if err.is_io_error() => {
                let source = match err.into_kind() {
                    csv::ErrorKind::Io(e) => e,
                    _ => io::Error::other("csv reader failed"),
                };
                return Err(BuildError::Read { path, source });
            }
            Err(err) => {
                let line = err.position().map_or(0, |p| p.line());
                diags.push(name, line, "", err.to_string());
            }
        }
    }
    Ok(())
}

fn csv_error_field(err: &csv::Error, headers: &csv::StringRecord) -> String {
    match err.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            err.field().and_then(|i| headers.get(i as usize)).unwrap_or_default().to_string()
        }
        _ => String::new(),
    }
}

fn csv_error_reason(err: &csv::Error) -> String {
    match err.kind() {
        csv::ErrorKind::Deserialize { err, .. } => err.kind().to_string(),
        _ => err.to_string(),
    }
}

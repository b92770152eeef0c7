//! Events from JSON Lines (one `adsnap_events::Event` per line, as `adsnap events tail` writes
//! them), read one bounded line at a time.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use adsnap_events::Event;

use super::AnalysisError;

/// Longest line accepted. An event is a few hundred bytes; the limit only stops a corrupt or
/// binary file from being buffered whole.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// The events of a JSON Lines stream, in order. Blank lines are skipped; anything else that is
/// not an event ends the stream with an error naming the line (`path` is only for messages).
pub fn read_json_lines<R: BufRead>(reader: R, path: &Path) -> JsonLines<R> {
    JsonLines { reader, path: path.to_path_buf(), line: 0, buf: Vec::new(), failed: false }
}

pub struct JsonLines<R> {
    reader: R,
    path: PathBuf,
    line: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl<R: BufRead> JsonLines<R> {
    fn next_line(&mut self) -> Result<bool, AnalysisError> {
        self.buf.clear();
        self.line += 1;
        let limit = (LINE_BYTES_MAX + 1) as u64;
        let n = std::io::Read::take(&mut self.reader, limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| AnalysisError::Read { path: self.path.clone(), source })?;
        if n as u64 == limit && self.buf.last() != Some(&b'\n') {
            return Err(AnalysisError::LineTooLong {
                path: self.path.clone(),
                line: self.line,
                limit_bytes: LINE_BYTES_MAX,
            });
        }
        Ok(n > 0)
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = Result<Event<'static>, AnalysisError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            match self.next_line() {
                Ok(false) => return None,
                Ok(true) if self.buf.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(true) => {
                    let parsed = serde_json::from_slice::<Event<'_>>(&self.buf).map(Event::into_owned);
                    self.failed = parsed.is_err();
                    let line = self.line;
                    return Some(parsed.map_err(|source| AnalysisError::BadEvent {
                        path: self.path.clone(),
                        line,
                        source,
                    }));
                }
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            }
        }
        None
    }
}

//! Reading the local log back: a chunked, checksum-verifying cursor over one segment file (also
//! used by the shipper), and [`read_log`], the iterator over a whole folder from a position or
//! a time, for replay, tests and the A/B analysis.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::EventsError;
use crate::event::Event;
use crate::record::{self, Frame, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use crate::segment::{self, SegmentHeader, HEADER_BYTES};

/// Bytes read from a segment at once.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Events carry the server's clock and segments their creation time; a segment is skipped when
/// seeking by time only if the next one was created this much before the time sought.
pub const TIME_SKEW_MS: i64 = 60_000;

/// Where reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The oldest event still in the folder.
    Start,
    /// The event with this sequence number (or the first after it).
    Seq(u64),
    /// The first events whose `time_unix_ms` is at or after this (events before it are skipped).
    TimeUnixMs(i64),
    /// Only events appended from now on (for following).
    End,
}

/// One frame found by a [`SegmentCursor`].
#[derive(Debug)]
pub enum CursorItem {
    /// A verified frame: its sequence number and where its bytes lie in [`SegmentCursor::bytes`].
    Frame { seq: u64, start: usize, end: usize },
    /// A damaged frame stepped over (its length was plausible).
    Corrupt { offset: u64 },
    /// Damage after which nothing in this segment can be framed.
    Unframeable { offset: u64 },
}

/// Reads one segment file frame by frame through a buffer, picking up frames written after it
/// was opened when asked to look again.
#[derive(Debug)]
pub struct SegmentCursor {
    path: PathBuf,
    file: File,
    pub header: SegmentHeader,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// Next frame's index in `buf`.
    pos: usize,
    at_eof: bool,
    dead: bool,
}

impl SegmentCursor {
    pub fn open(path: &Path) -> Result<SegmentCursor, EventsError> {
        let seg_err = |source| EventsError::Segment { path: path.to_owned(), source };
        let file = File::open(path).map_err(seg_err)?;
        let mut head = [0u8; HEADER_BYTES];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| EventsError::NotASegment { path: path.to_owned(), reason: e.to_string() })?;
        let header = SegmentHeader::parse(path, &head)?;
        Ok(SegmentCursor {
            path: path.to_owned(),
            file,
            header,
            buf: Vec::new(),
            buf_offset: HEADER_BYTES as u64,
            pos: 0,
            at_eof: false,
            dead: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    /// The buffered bytes frames point into; valid until the next call to `next_item`.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Goes back to a frame returned before (at file offset `offset`, from [`Self::offset`]
    /// taken before the call that returned it).
    pub fn rewind_to(&mut self, offset: u64) {
        debug_assert!(offset >= self.buf_offset && offset <= self.buf_offset + self.buf.len() as u64);
        self.pos = offset.saturating_sub(self.buf_offset).min(self.buf.len() as u64) as usize;
        self.dead = false;
    }

    /// Forgets what was buffered past the next frame, so that frames appended since are seen.
    pub fn look_again(&mut self) {
        self.buf_offset += self.pos as u64;
        self.buf.clear();
        self.pos = 0;
        self.at_eof = false;
    }

    /// The next frame, or `None` at the end of what is written so far.
    pub fn next_item(&mut self) -> Result<Option<CursorItem>, EventsError> {
        if self.dead {
            return Ok(None);
        }
        self.fill()?;
        let offset = self.offset();
        match record::parse(&self.buf, self.pos) {
            Frame::Record { seq, next, .. } => {
                let start = self.pos;
                self.pos = next;
                Ok(Some(CursorItem::Frame { seq, start, end: next }))
            }
            Frame::BadChecksum { next, .. } => {
                self.pos = next;
                Ok(Some(CursorItem::Corrupt { offset }))
            }
            Frame::BadLength { .. } => {
                self.dead = true;
                Ok(Some(CursorItem::Unframeable { offset }))
            }
            // A frame cut short at the end of the file is a torn tail that recovery will trim,
            // or one being written right now: either way, nothing more to read yet.
            Frame::End | Frame::Incomplete { .. } => Ok(None),
        }
    }

    /// Makes sure the buffer holds a whole frame's worth from `pos` on, or all the file has.
    fn fill(&mut self) -> Result<(), EventsError> {
        let wanted = FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX;
        if self.at_eof || self.buf.len() - self.pos >= wanted {
            return Ok(());
        }
        self.buf.drain(..self.pos);
        self.buf_offset += self.pos as u64;
        self.pos = 0;
        let have = self.buf.len();
        self.buf.resize(have + READ_CHUNK_BYTES, 0);
        let mut filled = have;
        while filled < self.buf.len() {
            match self.file.read_at(&mut self.buf[filled..], self.buf_offset + filled as u64) {
                Ok(0) => {
                    self.at_eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(EventsError::Segment { path: self.path.clone(), source }),
            }
        }
        self.buf.truncate(filled);
        Ok(())
    }
}

/// Reads the events of the log in `dir` from `from` on, verifying every checksum. Damaged
/// records come out as errors between the good ones; reading goes on after them.
pub fn read_log(dir: &Path, from: Position) -> Result<LogReader, EventsError> {
    LogReader::open(dir, from)
}

/// An iterator over a log folder's events. At the end of what is written it returns `None`;
/// calling `next` again later picks up events appended since (following a live log).
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    cursor: Option<SegmentCursor>,
    from_seq: u64,
    from_time_unix_ms: Option<i64>,
    /// Sequence number of the last event returned.
    last_seq: Option<u64>,
}

impl LogReader {
    pub fn open(dir: &Path, from: Position) -> Result<LogReader, EventsError> {
        let segments = segment::list(dir)?;
        let first_available = segments.first().map_or(0, |(seq, _)| *seq);
        let (from_seq, from_time) = match from {
            Position::Start => (first_available, None),
            Position::Seq(seq) if seq < first_available => {
                return Err(EventsError::PositionGone { requested: seq, first_available });
            }
            Position::Seq(seq) => (seq, None),
            Position::TimeUnixMs(t) => (first_segment_for_time(&segments, t)?, Some(t)),
            Position::End => (next_seq_of(&segments)?, None),
        };
        let mut reader = LogReader {
            dir: dir.to_owned(),
            cursor: None,
            from_seq,
            from_time_unix_ms: from_time,
            last_seq: None,
        };
        reader.cursor = reader.segment_holding(from_seq)?;
        Ok(reader)
    }

    /// Sequence number of the last event returned.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The next event with its sequence number.
    pub fn next_with_seq(&mut self) -> Option<Result<(u64, Event<'static>), EventsError>> {
        loop {
            let Some(cursor) = self.cursor.as_mut() else {
                match self.segment_holding(self.from_seq) {
                    Ok(Some(cursor)) => {
                        self.cursor = Some(cursor);
                        continue;
                    }
                    Ok(None) => return None,
                    Err(err) => return Some(Err(err)),
                }
            };
            let item = match cursor.next_item() {
                Ok(item) => item,
                Err(err) => return Some(Err(err)),
            };
            match item {
                Some(CursorItem::Frame { seq, start, end }) => {
                    if seq < self.from_seq {
                        continue;
                    }
                    self.from_seq = seq + 1;
                    let payload = &cursor.bytes()[start + FRAME_HEADER_BYTES..end];
                    if let Some(t) = self.from_time_unix_ms {
                        if codec::peek_time_unix_ms(payload).is_some_and(|time| time < t) {
                            continue;
                        }
                    }
                    self.last_seq = Some(seq);
                    return Some(codec::decode(payload).map(|e| (seq, e)).map_err(EventsError::from));
                }
                Some(CursorItem::Corrupt { offset }) | Some(CursorItem::Unframeable { offset }) => {
                    return Some(Err(EventsError::CorruptRecord {
                        path: cursor.path().to_owned(),
                        offset,
                        reason: "checksum mismatch or impossible length".into(),
                    }));
                }
                None => match self.advance() {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(err) => return Some(Err(err)),
                },
            }
        }
    }

    /// At the end of the current segment: moves to the next one if there is one.
    fn advance(&mut self) -> Result<bool, EventsError> {
        let current = self.cursor.as_ref().map_or(0, |c| c.header.first_seq);
        let segments = segment::list(&self.dir)?;
        match segments.iter().find(|(seq, _)| *seq > current) {
            Some((next_first, path)) => {
                // Everything of the current segment has been read: a later segment exists, so the
                // current one was sealed before it was created.
                self.from_seq = self.from_seq.max(*next_first);
                self.cursor = Some(SegmentCursor::open(path)?);
                Ok(true)
            }
            None => {
                if let Some(cursor) = self.cursor.as_mut() {
                    cursor.look_again();
                }
                Ok(false)
            }
        }
    }

    /// The segment holding `seq`: the last one starting at or before it.
    fn segment_holding(&self, seq: u64) -> Result<Option<SegmentCursor>, EventsError> {
        let segments = segment::list(&self.dir)?;
        let found = segments.iter().rev().find(|(first, _)| *first <= seq).or(segments.first());
        found.map(|(_, path)| SegmentCursor::open(path)).transpose()
    }
}

impl Iterator for LogReader {
    type Item = Result<Event<'static>, EventsError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with_seq().map(|r| r.map(|(_, e)| e))
    }
}

/// First sequence number of the earliest segment that can hold events at or after `t`.
fn first_segment_for_time(segments: &[(u64, PathBuf)], t: i64) -> Result<u64, EventsError> {
    let mut chosen = segments.first().map_or(0, |(seq, _)| *seq);
    for pair in segments.windows(2) {
        let next = SegmentCursor::open(&pair[1].1)?;
        if next.header.created_unix_ms < t.saturating_sub(TIME_SKEW_MS) {
            chosen = pair[1].0;
        } else {
            break;
        }
    }
    Ok(chosen)
}

/// The sequence number the next appended event will get, as the folder shows it.
fn next_seq_of(segments: &[(u64, PathBuf)]) -> Result<u64, EventsError> {
    let Some((first, path)) = segments.last() else { return Ok(0) };
    let mut cursor = SegmentCursor::open(path)?;
    let mut next = *first;
    while let Some(item) = cursor.next_item()? {
        if let CursorItem::Frame { seq, .. } = item {
            next = seq + 1;
        }
    }
    Ok(next)
}

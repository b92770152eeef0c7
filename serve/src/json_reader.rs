//! Reading JSON request bodies of a fixed shape by hand: the ad request (`POST /v1/ad`).
//!
//! serde_json's derive spent about 8,300 instructions (some 700 ns) on a 300-byte ad request,
//! going through its visitor layers for each of some twenty fields: a third of the handler. The
//! ad request is a few objects of strings and booleans with unknown fields refused, so a reader
//! that knows the shape reads it straight. It accepts what serde_json's derive accepts for such a
//! body, with one exception: serde also takes a struct written as an array of its fields in
//! order, which no SDK sends; this reader wants an object. A property test holds it to
//! serde_json as the oracle (`tests/json_reader.rs`).
//!
//! Errors name what was expected and where (`at line 1 column 40`), like serde_json's.

use std::borrow::Cow;
use std::fmt;

use crate::json::{next_special_byte, next_special_or_wide_byte};

/// A JSON document being read, front to back. It is bytes, not `str`: the reader checks the
/// UTF-8 of what it hands out (strings) itself, so a body needs no separate pass for it.
pub struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

/// What is wrong with a body, and where. Boxed: every reading step returns a `Result`, which
/// stays a pointer wide on the common path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(Box<ErrorAt>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorAt {
    message: String,
    line: usize,
    column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ErrorAt { message, line, column } = &*self.0;
        write!(f, "{message} at line {line} column {column}")
    }
}

impl std::error::Error for JsonError {}

/// The fields of one object seen so far, to refuse a field given twice (serde's derive does).
#[derive(Default)]
pub struct Seen(u64);

impl Seen {
    /// Marks field number `field_idx` (below 64) seen; false if it already was.
    pub fn first(&mut self, field_idx: u32) -> bool {
        let bit = 1u64 << field_idx;
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }

    pub fn has(&self, field_idx: u32) -> bool {
        self.0 & (1u64 << field_idx) != 0
    }
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Reader { text, at: 0 }
    }

    /// An error at the reader's position.
    #[cold]
    #[inline(never)]
    pub fn error(&self, message: impl fmt::Display) -> JsonError {
        let before = &self.text[..self.at.min(self.text.len())];
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        JsonError(Box::new(ErrorAt {
            message: message.to_string(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column: self.at - line_start + 1,
        }))
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text;
        // Whitespace is at most a space: one comparison for a compact body.
        if let Some(&b) = bytes.get(self.at).filter(|&&b| b > b' ') {
            return Some(b);
        }
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// An error for a value of the wrong type (or no value) where `expected` should be.
    #[cold]
    #[inline(never)]
    fn unexpected(&mut self, expected: &str) -> JsonError {
        let found = match self.peek() {
            None => return self.error(format!("EOF while parsing a value, expected {expected}")),
            Some(b'"') => "string",
            Some(b't' | b'f') => "boolean",
            Some(b'n') => "null",
            Some(b'-' | b'0'..=b'9') => "number",
            Some(b'[') => "sequence",
            Some(b'{') => "map",
            Some(_) => return self.error(format!("expected value, expected {expected}")),
        };
        self.error(format!("invalid type: {found}, expected {expected}"))
    }

    /// Consumes `literal` (`true`, `false`, `null`) at the current byte.
    fn literal(&mut self, literal: &str) -> Result<(), JsonError> {
        match self.text.get(self.at..self.at + literal.len()) {
            Some(bytes) if bytes == literal.as_bytes() => {
                self.at += literal.len();
                Ok(())
            }
            _ => Err(self.error("expected ident")),
        }
    }

    pub fn bool(&mut self) -> Result<bool, JsonError> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.unexpected("a boolean")),
        }
    }

    /// A boolean, or `None` for `null`.
    pub fn optional_bool(&mut self) -> Result<Option<bool>, JsonError> {
        if self.null()? {
            return Ok(None);
        }
        self.bool().map(Some)
    }

    /// Consumes a `null` if one is next.
    pub fn null(&mut self) -> Result<bool, JsonError> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal("null").map(|()| true)
    }

    /// A string, borrowed from the body unless it has escapes. Inlined: a call's prologue and its
    /// returned `Cow` cost more than the read of a short string.
    #[inline(always)]
    pub fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected("a string"));
        }
        let start = self.at + 1;
        self.at = next_special_or_wide_byte(self.text, start);
        if self.text.get(self.at) == Some(&b'"') {
            let ascii = &self.text[start..self.at];
            // SAFETY: the scan stopped at the first byte that is not ASCII or is special, and
            // that byte is the closing quote: every byte before it is ASCII, which is UTF-8.
            let text = unsafe { std::str::from_utf8_unchecked(ascii) };
            self.at += 1;
            return Ok(Cow::Borrowed(text));
        }
        self.rest_of_string(start)
    }

    /// The rest of a string whose text starts at `start`, from the first byte at `self.at` that
    /// does not end it as plain ASCII: a byte past ASCII, an escape, a control character or the
    /// end of the body. Still borrowed when it has no escape. Out of line: ids and codes are
    /// rarely anything but plain ASCII, and the common path stays small.
    #[cold]
    #[inline(never)]
    fn rest_of_string(&mut self, start: usize) -> Result<Cow<'a, str>, JsonError> {
        let bytes = self.text;
        self.at = next_special_byte(bytes, self.at);
        if bytes.get(self.at) == Some(&b'"') {
            let text = self.utf8(start, self.at)?;
            self.at += 1;
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(self.at - start + 16);
        let mut run = start;
        loop {
            match bytes.get(self.at) {
                None => return Err(self.error("EOF while parsing a string")),
                Some(b'"') => {
                    out.push_str(self.utf8(run, self.at)?);
                    self.at += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    out.push_str(self.utf8(run, self.at)?);
                    self.at += 1;
                    self.escape(&mut out)?;
                    run = self.at;
                    self.at = next_special_byte(bytes, run);
                }
                Some(_) => {
                    return Err(self.error("control character (\\u0000-\\u001F) found while parsing a string"))
                }
            }
        }
    }

    /// The body's bytes `from..to` (a run of a string between escapes) as text, if UTF-8. A run
    /// is cut at ASCII bytes only, so a character is never split between runs.
    fn utf8(&self, from: usize, to: usize) -> Result<&'a str, JsonError> {
        std::str::from_utf8(&self.text[from..to]).map_err(|e| {
            Reader { text: self.text, at: from + e.valid_up_to() }.error("invalid UTF-8 in a string")
        })
    }

    /// One escape, after its backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let Some(&b) = self.text.get(self.at) else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.at += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => {
                self.at -= 1;
                return Err(self.error("invalid escape"));
            }
        };
        out.push(c);
        Ok(())
    }

    /// The character of a `\u` escape (after the `u`), joining a surrogate pair; a lone
    /// surrogate is an error, as serde_json makes it for a string.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                let bytes = self.text;
                if bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                char::from_u32(c).ok_or_else(|| self.error("invalid unicode code point"))
            }
            0xDC00..=0xDFFF => Err(self.error("lone leading surrogate in hex escape")),
            _ => char::from_u32(first).ok_or_else(|| self.error("invalid unicode code point")),
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut value = 0;
        for _ in 0..4 {
            let Some(&b) = self.text.get(self.at) else {
                return Err(self.error("EOF while parsing a string"));
            };
            let digit = (b as char).to_digit(16).ok_or_else(|| self.error("invalid escape"))?;
            value = value * 16 + digit;
            self.at += 1;
        }
        Ok(value)
    }

    /// A string, or `None` for `null`.
    #[inline(always)]
    pub fn optional_string(&mut self) -> Result<Option<Cow<'a, str>>, JsonError> {
        if self.null()? {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// An object: calls `member` with each key, the reader at its value, which `member` must
    /// read. `what` names the object in errors ("struct Device").
    pub fn object(
        &mut self,
        what: &str,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        if self.peek() != Some(b'{') {
            return Err(self.unexpected(what));
        }
        self.at += 1;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("key must be a string"));
            }
            let key = self.string()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.at += 1;
            member(self, &key)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                None => return Err(self.error("EOF while parsing an object")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// The end of the document: only whitespace may follow the value.
    pub fn finish(mut self) -> Result<(), JsonError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// The error for a key the object does not have.
    #[cold]
    #[inline(never)]
    pub fn unknown_field(&self, key: &str, fields: &[&str]) -> JsonError {
        let expected = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
        self.error(format!("unknown field `{key}`, expected one of {expected}"))
    }

    #[cold]
    #[inline(never)]
    pub fn duplicate_field(&self, field: &str) -> JsonError {
        self.error(format!("duplicate field `{field}`"))
    }

    #[cold]
    #[inline(never)]
    pub fn missing_field(&self, field: &str) -> JsonError {
        self.error(format!("missing field `{field}`"))
    }
}

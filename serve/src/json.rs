//! JSON text written by hand on the request path: the `POST /v1/ad` answer. serde's generic
//! serializer escapes a string byte by byte, and the answer's markup (kilobytes of HTML or VAST,
//! full of quotes and newlines) was first rendered into a string of its own; here the markup is
//! rendered straight into the body, escaped eight bytes at a time.

use std::fmt;

/// Appends `text` escaped as the contents of a JSON string (RFC 8259 §7: quotation mark,
/// reverse solidus and the control characters; everything else, UTF-8 included, as it is).
/// Writes what `serde_json` writes for the same string.
///
/// Eight bytes are looked at and copied at a time: a word with a byte to escape is copied whole
/// and cut back to the bytes before it. Markup has an escape every 20–30 bytes (its quotes and
/// newlines), and copying each run between escapes as a slice of its own length cost a `memcpy`
/// call per run.
pub fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 8);
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let word: &[u8; 8] = word.try_into().unwrap_or(&[0; 8]);
        let hits = escape_hits(u64::from_le_bytes(*word));
        out.extend_from_slice(word);
        if hits == 0 {
            at += 8;
            continue;
        }
        let clean = (hits.trailing_zeros() / 8) as usize;
        out.truncate(out.len() - (8 - clean));
        push_escape(out, bytes[at + clean]);
        at += clean + 1;
    }
    for &byte in &bytes[at..] {
        if needs_escape(byte) {
            push_escape(out, byte);
        } else {
            out.push(byte);
        }
    }
}

/// Appends `text` as a JSON string, quotes included.
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A `fmt::Write` that appends what it is given escaped (see [`push_escaped`]): markup is
/// rendered through it into the body.
pub struct Escaped<'a>(pub &'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that JSON escapes is set, and possibly of bytes above the
/// first: the lowest set bit marks the first byte to escape.
fn escape_hits(x: u64) -> u64 {
    // A byte's high bit is set where it is below 0x20, a quote or a backslash; borrows only
    // flag bytes above a true hit.
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    (control | zero_bytes(x ^ (ONES * u64::from(b'"'))) | zero_bytes(x ^ (ONES * u64::from(b'\\')))) & HIGHS
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// High bits set (before the `HIGHS` mask) at the zero bytes of `x`, and possibly above them.
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x
}

fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// A JSON object written member by member. Keys are written as given: they are literals of this
/// crate, none of which needs escaping.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_str(self.out, value);
        self
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_u64(self.out, value);
        self
    }

    /// A string member whose contents `write` appends through an [`Escaped`] writer.
    pub fn str_with(&mut self, key: &str, write: impl FnOnce(&mut Escaped)) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        write(&mut Escaped(self.out));
        self.out.push(b'"');
        self
    }

    /// A member whose value is an object; close it before going on with this one.
    pub fn object(&mut self, key: &str) -> Object<'_> {
        self.key(key);
        Object::open(self.out)
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_ascii_byte_is_escaped_as_serde_json_does_at_every_offset() {
        for byte in 0u8..0x80 {
            for offset in 0..17 {
                let text = format!("{}{}{}", "a".repeat(offset), byte as char, "é<b>".repeat(3));
                assert_eq!(
                    escaped(&text),
                    serde_json::to_string(&text).unwrap(),
                    "byte {byte:#x} at {offset}"
                );
            }
        }
    }

    #[test]
    fn markup_with_many_escapes_matches_serde_json() {
        let text = "<?xml version=\"1.0\"?>\n<VAST>\t<Ad id=\"1\">\\ ✓ \u{1f}\u{7f}\r\n</Ad></VAST>\n";
        for n in [0, 1, 7, 8, 9, 100] {
            let long = text.repeat(n);
            assert_eq!(escaped(&long), serde_json::to_string(&long).unwrap());
        }
    }

    #[test]
    fn an_object_is_valid_json_with_its_members_in_order() {
        let mut out = Vec::new();
        let mut object = Object::open(&mut out);
        object.str("a", "x\"y").u64("n", u64::MAX);
        let mut inner = object.object("inner");
        inner.str_with("markup", |w| {
            let _ = fmt::Write::write_str(w, "<a href=\"");
            let _ = fmt::Write::write_fmt(w, format_args!("{}", 42));
        });
        inner.close();
        object.u64("last", 0);
        object.close();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"a":"x\"y","n":18446744073709551615,"inner":{"markup":"<a href=\"42"},"last":0}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["inner"]["markup"], "<a href=\"42");
    }
}

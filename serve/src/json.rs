//! JSON text written by hand on the request path: the `POST /v1/ad` answer. serde's generic
//! serializer escapes a string byte by byte, and the answer's markup (kilobytes of HTML or VAST,
//! full of quotes and newlines) was first rendered into a string of its own; here the markup is
//! rendered straight into the body, escaped sixteen bytes at a time.

/// Appends `text` escaped as the contents of a JSON string (RFC 8259 §7: quotation mark,
/// reverse solidus and the control characters; everything else, UTF-8 included, as it is).
/// Writes what `serde_json` writes for the same string.
///
/// Sixteen bytes are looked at (with SSE2 on x86_64) and copied at a time: a block with a byte
/// to escape is copied whole and cut back to the bytes before it. Markup has an escape every
/// 20–30 bytes (its quotes and newlines); copying each run between escapes as a slice of its own
/// length cost a `memcpy` call per run, and looking at one byte (or word) at a time dominated
/// the answer's cost.
pub fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + BLOCK);
    let mut at = 0;
    while let Some(block) = bytes.get(at..at + BLOCK) {
        let block: &[u8; BLOCK] = block.try_into().unwrap_or(&[0; BLOCK]);
        let mask = escape_mask(block);
        out.extend_from_slice(block);
        if mask == 0 {
            at += BLOCK;
            continue;
        }
        let clean = mask.trailing_zeros() as usize;
        out.truncate(out.len() - (BLOCK - clean));
        push_escape(out, bytes[at + clean]);
        at += clean + 1;
    }
    // The last bytes, fewer than a block (all of most values): padded with spaces (which need no
    // escape) to a block, then copied like the blocks above, sixteen bytes at a time and cut back
    // to the tail's length, rather than in runs of their own lengths, each a `memcpy` call.
    let tail = &bytes[at..];
    let mut padded = [b' '; 2 * BLOCK];
    padded[..tail.len()].copy_from_slice(tail);
    let mut mask = escape_mask(padded[..BLOCK].try_into().unwrap_or(&[0; BLOCK]));
    let mut from = 0;
    loop {
        let run: &[u8; BLOCK] = padded[from..from + BLOCK].try_into().unwrap_or(&[0; BLOCK]);
        out.extend_from_slice(run);
        let end = match mask {
            0 => tail.len(),
            _ => mask.trailing_zeros() as usize,
        };
        out.truncate(out.len() - BLOCK + (end - from));
        if mask == 0 {
            return;
        }
        push_escape(out, tail[end]);
        from = end + 1;
        mask &= mask - 1;
    }
}

const BLOCK: usize = 16;

/// Bit `i` set where `block[i]` is a byte JSON escapes.
#[cfg(target_arch = "x86_64")]
fn escape_mask(block: &[u8; BLOCK]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, so these are always available; the unaligned
    // load reads exactly the sixteen bytes of `block`.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        // Below 0x20 exactly where the unsigned minimum with 0x1f is the byte itself.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(control, _mm_or_si128(quote, backslash))) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn escape_mask(block: &[u8; BLOCK]) -> u32 {
    escape_mask_portable(block)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn escape_mask_portable(block: &[u8; BLOCK]) -> u32 {
    block.iter().enumerate().fold(0, |mask, (i, &byte)| mask | u32::from(needs_escape(byte)) << i)
}

/// The index of the first byte at or after `from` that JSON escapes in a string (a quote, a
/// reverse solidus or a control character), else `bytes.len()`: where a string being read ends
/// or has an escape. Looks at sixteen bytes at a time, like [`push_escaped`].
pub(crate) fn next_special_byte(bytes: &[u8], from: usize) -> usize {
    next_byte_where(bytes, from, escape_mask)
}

/// As [`next_special_byte`], stopping at a byte that is not ASCII too: where a string being read
/// stops being plain ASCII text, which needs no UTF-8 check.
#[inline]
pub(crate) fn next_special_or_wide_byte(bytes: &[u8], from: usize) -> usize {
    next_byte_where(bytes, from, |block| escape_mask(block) | wide_mask(block))
}

#[inline(always)]
fn next_byte_where(bytes: &[u8], from: usize, mask_of: impl Fn(&[u8; BLOCK]) -> u32) -> usize {
    let mut at = from;
    while let Some(block) = bytes.get(at..at + BLOCK) {
        let block: &[u8; BLOCK] = block.try_into().unwrap_or(&[0; BLOCK]);
        let mask = mask_of(block);
        if mask != 0 {
            return at + mask.trailing_zeros() as usize;
        }
        at += BLOCK;
    }
    let tail = &bytes[at..];
    let mut block = [b' '; BLOCK];
    block[..tail.len()].copy_from_slice(tail);
    match mask_of(&block) {
        0 => bytes.len(),
        mask => at + mask.trailing_zeros() as usize,
    }
}

/// Bit `i` set where `block[i]` is not ASCII (its high bit is set).
#[cfg(target_arch = "x86_64")]
fn wide_mask(block: &[u8; BLOCK]) -> u32 {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8};
    // SAFETY: as in `escape_mask`: SSE2 is baseline on x86_64 and the load reads `block` only.
    unsafe { _mm_movemask_epi8(_mm_loadu_si128(block.as_ptr().cast())) as u32 }
}

#[cfg(not(target_arch = "x86_64"))]
fn wide_mask(block: &[u8; BLOCK]) -> u32 {
    block.iter().enumerate().fold(0, |mask, (i, &byte)| mask | u32::from(!byte.is_ascii()) << i)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Appends `text` as a JSON string, quotes included.
#[inline]
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// Appends `n` in decimal.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `text`, which this server made and which needs no escaping (checked in debug builds),
/// as it is: tracking URLs, numbers, names of its own.
#[inline]
pub fn push_plain(out: &mut Vec<u8>, text: &str) {
    debug_assert_eq!(next_special_byte(text.as_bytes(), 0), text.len(), "{text:?}");
    out.extend_from_slice(text.as_bytes());
}

/// The JSON body as markup is rendered into it (`render::Out`): text escaped with
/// [`push_escaped`], the server's own values with [`push_plain`].
pub struct Escaped<'a>(pub &'a mut Vec<u8>);

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
            for offset in 0..40 {
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
    fn two_bytes_to_escape_anywhere_in_a_short_string_are_escaped_as_serde_json_does() {
        for len in 2..36 {
            for first in 0..len {
                for second in first + 1..len {
                    let mut text = vec![b'x'; len];
                    (text[first], text[second]) = (b'"', b'\n');
                    let text = String::from_utf8(text).unwrap();
                    assert_eq!(escaped(&text), serde_json::to_string(&text).unwrap(), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_next_special_byte_is_found_at_every_offset_and_in_every_tail() {
        for len in 0..40 {
            for special in [b'"', b'\\', b'\n', 0x1f] {
                for at in 0..=len {
                    let mut bytes = vec![b'a'; len];
                    if at < len {
                        bytes[at] = special;
                    }
                    for from in 0..=at {
                        assert_eq!(next_special_byte(&bytes, from), at, "len {len} at {at} from {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_next_special_or_wide_byte_is_found_at_every_offset_and_in_every_tail() {
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x1f, 0x80, 0xc3, 0xff] {
                for at in 0..=len {
                    // A byte 0x7f (ASCII, not special) before the stop must not stop the scan.
                    let mut bytes = vec![0x7f; len];
                    if at < len {
                        bytes[at] = stop;
                    }
                    for from in 0..=at {
                        let found = next_special_or_wide_byte(&bytes, from);
                        assert_eq!(found, at, "len {len} stop {stop:#x} at {at} from {from}");
                        if stop >= 0x80 && at < len {
                            assert_eq!(next_special_byte(&bytes, from), len, "a wide byte is not special");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_block_mask_flags_exactly_the_bytes_to_escape_at_every_position() {
        for byte in 0u8..=0xff {
            for at in 0..BLOCK {
                let mut block = [b'a'; BLOCK];
                block[at] = byte;
                let expected = if needs_escape(byte) { 1 << at } else { 0 };
                assert_eq!(escape_mask(&block), expected, "byte {byte:#x} at {at}");
                assert_eq!(escape_mask_portable(&block), expected, "byte {byte:#x} at {at}");
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
}

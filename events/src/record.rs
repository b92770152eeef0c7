//! The frame around each encoded event in a segment and in a shipped batch: payload length,
//! sequence number and an xxh3 checksum that covers all three.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// `u32` payload length, `u64` sequence number, `u64` checksum.
pub const FRAME_HEADER_BYTES: usize = 20;
/// Largest payload a frame may carry. Far above today's largest event so that later format
/// versions can grow; a length above it can only be damage.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// The checksum of a frame. Length and sequence number go into the seed, so a flipped bit in
/// either is caught as surely as one in the payload.
#[inline]
pub fn checksum(seq: u64, payload: &[u8]) -> u64 {
    xxh3_64_with_seed(payload, seq ^ (payload.len() as u64).rotate_right(24))
}

/// Writes a frame into `out` (exactly `FRAME_HEADER_BYTES + payload_len` bytes) whose payload
/// the caller has already placed after the header. The header goes in last so that a process
/// killed half way leaves a zero length behind, which readers take as the end of the data.
#[inline]
pub fn seal_frame(out: &mut [u8], seq: u64) {
    let payload_len = out.len() - FRAME_HEADER_BYTES;
    let sum = checksum(seq, &out[FRAME_HEADER_BYTES..]);
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..20].copy_from_slice(&sum.to_le_bytes());
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
}

/// Appends a whole frame to a vector (tests and tools).
pub fn push_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let start = out.len();
    out.resize(start + FRAME_HEADER_BYTES, 0);
    out.extend_from_slice(payload);
    seal_frame(&mut out[start..], seq);
}

/// What lies at an offset of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'b> {
    /// A whole, verified frame, and the offset just after it.
    Record { seq: u64, payload: &'b [u8], next: usize },
    /// A zero length (never written) or the end of the bytes: nothing more here yet.
    End,
    /// The frame continues past the bytes given (read more, or it is torn).
    Incomplete { needed: usize },
    /// A plausible length whose checksum fails: a damaged record that can be stepped over.
    BadChecksum { seq: u64, next: usize },
    /// A length no frame can have: the bytes from here on cannot be framed.
    BadLength { len: usize },
}

/// Parses the frame at `at`.
pub fn parse(bytes: &[u8], at: usize) -> Frame<'_> {
    let Some(rest) = bytes.get(at..) else { return Frame::End };
    if rest.len() < 4 {
        return if rest.iter().all(|&b| b == 0) { Frame::End } else { Frame::Incomplete { needed: 4 } };
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Frame::End;
    }
    if len > FRAME_PAYLOAD_BYTES_MAX {
        return Frame::BadLength { len };
    }
    let total = FRAME_HEADER_BYTES + len;
    if rest.len() < total {
        return Frame::Incomplete { needed: total };
    }
    let seq = u64::from_le_bytes(rest[4..12].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(rest[12..20].try_into().expect("8 bytes"));
    let payload = &rest[FRAME_HEADER_BYTES..total];
    if checksum(seq, payload) != sum {
        return Frame::BadChecksum { seq, next: at + total };
    }
    Frame::Record { seq, payload, next: at + total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_every_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        push_frame(&mut bytes, 7, b"hello events");
        assert_eq!(parse(&bytes, 0), Frame::Record { seq: 7, payload: b"hello events", next: bytes.len() });
        assert_eq!(parse(&bytes, bytes.len()), Frame::End);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(parse(&flipped, 0), Frame::Record { .. }), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn torn_and_unwritten_frames() {
        let mut bytes = Vec::new();
        push_frame(&mut bytes, 1, &[5; 100]);
        assert_eq!(parse(&bytes[..60], 0), Frame::Incomplete { needed: 120 });
        assert_eq!(parse(&[0u8; 64], 0), Frame::End);
        let mut huge = vec![0u8; 64];
        huge[..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
        assert_eq!(parse(&huge, 0), Frame::BadLength { len: 1 << 30 });
    }
}

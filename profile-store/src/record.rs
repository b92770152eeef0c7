//! The byte layout of one stored profile (docs/profiles.md): encoding, and decoding that turns
//! every foreign, corrupt, oversized or future record into a typed error.

use crate::profile::{
    FrequencyCounter, Profile, UserKey, CODE_LIMIT, CODE_UNKNOWN, FREQUENCY_COUNTERS_MAX, INSTALLED_MAX,
    SEGMENTS_MAX,
};

/// The first four bytes of every profile record.
pub const RECORD_MAGIC: [u8; 4] = *b"APRF";
/// The record layout this build writes and reads. Readers accept exactly this version.
pub const RECORD_VERSION: u8 = 1;
/// Bytes before the lists.
pub const HEADER_BYTES: usize = 40;
/// The xxh3_64 checksum after the lists.
pub const CHECKSUM_BYTES: usize = 8;
const COUNTER_BYTES: usize = 20;
/// The largest record a reader accepts; a full profile at every list limit fits.
pub const RECORD_BYTES_MAX: usize = 32 * 1024;
const _: () = assert!(
    HEADER_BYTES
        + SEGMENTS_MAX * 4
        + INSTALLED_MAX * 8
        + FREQUENCY_COUNTERS_MAX * COUNTER_BYTES
        + CHECKSUM_BYTES
        <= RECORD_BYTES_MAX
);

/// Why stored bytes are not a profile this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a profile record (magic {found:02x?}, expected {RECORD_MAGIC:02x?})")]
    Foreign { found: Vec<u8> },
    #[error("profile record version {found}; this build reads version {RECORD_VERSION} (written by a newer or older adsnap)")]
    UnknownVersion { found: u8 },
    #[error("profile record of {n_bytes} bytes, larger than the {RECORD_BYTES_MAX} bytes allowed")]
    Oversized { n_bytes: usize },
    #[error("corrupt profile record: {reason}")]
    Corrupt { reason: &'static str },
}

/// The store key of a user: its hash in big-endian bytes, so keys sort by hash.
pub fn store_key(key: UserKey) -> [u8; 8] {
    key.0.to_be_bytes()
}

/// The user a store key belongs to, if it is one.
pub fn user_key_of(bytes: &[u8]) -> Option<UserKey> {
    Some(UserKey(u64::from_be_bytes(bytes.try_into().ok()?)))
}

/// The encoded length of a profile.
pub fn encoded_len(profile: &Profile) -> usize {
    HEADER_BYTES
        + profile.segments.len() * 4
        + profile.installed.len() * 8
        + profile.frequency.len() * COUNTER_BYTES
        + CHECKSUM_BYTES
}

/// Appends the record of `profile` to `out`.
pub fn encode_into(profile: &Profile, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(encoded_len(profile));
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(RECORD_VERSION);
    out.push(profile.os);
    out.extend_from_slice(&profile.country.to_le_bytes());
    out.extend_from_slice(&profile.language.to_le_bytes());
    // The list limits fit in u16, which Profile's constructors and updates enforce.
    out.extend_from_slice(&(profile.segments.len() as u16).to_le_bytes());
    out.extend_from_slice(&(profile.installed.len() as u16).to_le_bytes());
    out.extend_from_slice(&(profile.frequency.len() as u16).to_le_bytes());
    out.extend_from_slice(&profile.last_seen_unix_s.to_le_bytes());
    out.extend_from_slice(&profile.n_impressions.to_le_bytes());
    out.extend_from_slice(&profile.n_clicks.to_le_bytes());
    out.extend_from_slice(&profile.n_installs.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for segment in &profile.segments {
        out.extend_from_slice(&segment.to_le_bytes());
    }
    for bundle in &profile.installed {
        out.extend_from_slice(&bundle.to_le_bytes());
    }
    for counter in &profile.frequency {
        out.extend_from_slice(&counter.campaign_id.to_le_bytes());
        out.extend_from_slice(&counter.period_s.to_le_bytes());
        out.extend_from_slice(&counter.window_start_unix_s.to_le_bytes());
        out.extend_from_slice(&counter.n_impressions.to_le_bytes());
    }
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[start..]);
    out.extend_from_slice(&checksum.to_le_bytes());
}

/// The record of `profile`.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(profile));
    encode_into(profile, &mut out);
    out
}

/// A little-endian reader over a record whose length has been checked.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
}

/// Checks the envelope (magic, size, version, length, checksum) of a record and returns the
/// bytes the checksum covers.
fn check_envelope(bytes: &[u8]) -> Result<&[u8], RecordError> {
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(RecordError::Oversized { n_bytes: bytes.len() });
    }
    if bytes.len() < RECORD_MAGIC.len() || bytes[..4] != RECORD_MAGIC {
        return Err(RecordError::Foreign { found: bytes[..bytes.len().min(4)].to_vec() });
    }
    if bytes.len() < 5 {
        return Err(RecordError::Corrupt { reason: "truncated before the version" });
    }
    if bytes[4] != RECORD_VERSION {
        return Err(RecordError::UnknownVersion { found: bytes[4] });
    }
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(RecordError::Corrupt { reason: "shorter than a header and a checksum" });
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != checksum {
        return Err(RecordError::Corrupt { reason: "checksum mismatch" });
    }
    Ok(body)
}

/// The last-seen time of a record, read from its header only (for compaction-time expiry).
pub fn peek_last_seen_unix_s(bytes: &[u8]) -> Option<i64> {
    if bytes.len() < HEADER_BYTES || bytes[..4] != RECORD_MAGIC || bytes[4] != RECORD_VERSION {
        return None;
    }
    Some(i64::from_le_bytes(bytes[16..24].try_into().ok()?))
}

/// Decodes and checks a record: every list within its limit, sorted and without duplicates.
pub fn decode(bytes: &[u8]) -> Result<Profile, RecordError> {
    let body = check_envelope(bytes)?;
    let mut fields = Fields { bytes: body, at: 5 };
    let os = fields.take::<1>()[0];
    let country = fields.u16();
    let language = fields.u16();
    let n_segments = usize::from(fields.u16());
    let n_installed = usize::from(fields.u16());
    let n_counters = usize::from(fields.u16());
    let last_seen_unix_s = fields.i64();
    let n_impressions = fields.u32();
    let n_clicks = fields.u32();
    let n_installs = fields.u32();
    if fields.u32() != 0 {
        return Err(RecordError::Corrupt { reason: "reserved header bytes are not zero" });
    }
    if n_segments > SEGMENTS_MAX || n_installed > INSTALLED_MAX || n_counters > FREQUENCY_COUNTERS_MAX {
        return Err(RecordError::Corrupt { reason: "a list is longer than its limit" });
    }
    if HEADER_BYTES + n_segments * 4 + n_installed * 8 + n_counters * COUNTER_BYTES != body.len() {
        return Err(RecordError::Corrupt { reason: "list lengths do not match the record length" });
    }
    if os > crate::profile::os::MAX {
        return Err(RecordError::Corrupt { reason: "unknown os code" });
    }
    if [country, language].iter().any(|&c| c >= CODE_LIMIT && c != CODE_UNKNOWN) {
        return Err(RecordError::Corrupt { reason: "country or language code out of range" });
    }
    let segments: Vec<u32> = (0..n_segments).map(|_| fields.u32()).collect();
    let installed: Vec<u64> = (0..n_installed).map(|_| fields.u64()).collect();
    let frequency: Vec<FrequencyCounter> = (0..n_counters)
        .map(|_| FrequencyCounter {
            campaign_id: fields.u32(),
            period_s: fields.u32(),
            window_start_unix_s: fields.i64(),
            n_impressions: fields.u32(),
        })
        .collect();
    let sorted_counters =
        frequency.windows(2).all(|w| (w[0].campaign_id, w[0].period_s) < (w[1].campaign_id, w[1].period_s));
    if !segments.windows(2).all(|w| w[0] < w[1])
        || !installed.windows(2).all(|w| w[0] < w[1])
        || !sorted_counters
    {
        return Err(RecordError::Corrupt { reason: "a list is not sorted or has duplicates" });
    }
    Ok(Profile {
        country,
        language,
        os,
        last_seen_unix_s,
        n_impressions,
        n_clicks,
        n_installs,
        segments,
        installed,
        frequency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileFields;
    use proptest::prelude::*;

    fn sample() -> Profile {
        Profile::from_fields(ProfileFields {
            country: Some(300),
            language: Some(40),
            os: 2,
            last_seen_unix_s: 1_795_000_000,
            n_impressions: 12,
            n_clicks: 2,
            n_installs: 1,
            segments: vec![3, 17],
            installed: vec![u64::MAX, 5],
            frequency: vec![FrequencyCounter {
                campaign_id: 9,
                period_s: 86_400,
                window_start_unix_s: 1_794_960_000,
                n_impressions: 4,
            }],
        })
        .unwrap()
    }

    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let n = bytes.len() - CHECKSUM_BYTES;
        let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[..n]);
        bytes[n..].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    fn check(bytes: &[u8], expected: RecordError) {
        assert_eq!(decode(bytes), Err(expected), "bytes {bytes:02x?}");
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let bytes = encode(&sample());
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * 4 + 2 * 8 + COUNTER_BYTES + CHECKSUM_BYTES);
        assert_eq!(&bytes[0..4], b"APRF");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 2);
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 300);
        assert_eq!(peek_last_seen_unix_s(&bytes), Some(1_795_000_000));
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 3);
        assert_eq!(decode(&bytes), Ok(sample()));
    }

    #[test]
    fn bad_records_give_typed_errors() {
        let good = encode(&sample());
        check(b"", RecordError::Foreign { found: vec![] });
        check(b"{\"json\":1}", RecordError::Foreign { found: b"{\"js".to_vec() });
        check(&vec![0u8; RECORD_BYTES_MAX + 1], RecordError::Oversized { n_bytes: RECORD_BYTES_MAX + 1 });
        let mut future = good.clone();
        future[4] = 2;
        check(&future, RecordError::UnknownVersion { found: 2 });
        check(&good[..good.len() - 1], RecordError::Corrupt { reason: "checksum mismatch" });
        check(&good[..20], RecordError::Corrupt { reason: "shorter than a header and a checksum" });
        let mut flipped = good.clone();
        flipped[45] ^= 0x10;
        check(&flipped, RecordError::Corrupt { reason: "checksum mismatch" });
        let mut lying = good.clone();
        lying[10] = 3;
        check(&reseal(lying), RecordError::Corrupt { reason: "list lengths do not match the record length" });
        let mut unsorted = good.clone();
        unsorted[40..44].copy_from_slice(&99u32.to_le_bytes());
        check(&reseal(unsorted), RecordError::Corrupt { reason: "a list is not sorted or has duplicates" });
        let mut os = good;
        os[5] = 9;
        check(&reseal(os), RecordError::Corrupt { reason: "unknown os code" });
    }

    fn arb_profile() -> impl Strategy<Value = Profile> {
        let counter = (any::<u32>(), any::<u32>(), any::<i64>(), any::<u32>()).prop_map(|(c, p, w, n)| {
            FrequencyCounter { campaign_id: c, period_s: p, window_start_unix_s: w, n_impressions: n }
        });
        (
            (
                proptest::option::of(0..CODE_LIMIT),
                proptest::option::of(0..CODE_LIMIT),
                0u8..=2,
                any::<i64>(),
                any::<[u32; 3]>(),
            ),
            proptest::collection::vec(any::<u32>(), 0..40),
            proptest::collection::vec(any::<u64>(), 0..40),
            proptest::collection::vec(counter, 0..20),
        )
            .prop_map(
                |((country, language, os, last_seen, n), segments, installed, mut frequency)| {
                    frequency.sort_by_key(|c| (c.campaign_id, c.period_s));
                    frequency.dedup_by_key(|c| (c.campaign_id, c.period_s));
                    Profile::from_fields(ProfileFields {
                        country,
                        language,
                        os,
                        last_seen_unix_s: last_seen,
                        n_impressions: n[0],
                        n_clicks: n[1],
                        n_installs: n[2],
                        segments,
                        installed,
                        frequency,
                    })
                    .unwrap()
                },
            )
    }

    proptest! {
        #[test]
        fn records_round_trip(profile in arb_profile()) {
            let bytes = encode(&profile);
            prop_assert_eq!(bytes.len(), encoded_len(&profile));
            prop_assert_eq!(decode(&bytes), Ok(profile));
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn a_flipped_bit_never_decodes(profile in arb_profile(), bit in any::<usize>()) {
            let mut bytes = encode(&profile);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bytes).is_err());
        }
    }
}

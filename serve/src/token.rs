//! Signed tracking tokens: every tracking URL carries one, binding what was served to whom and
//! when with a keyed BLAKE3 MAC, so that forged, altered or expired notices are refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Layout version of the tokens this server signs. Version 3 packs the assignment code in
/// eleven bytes, so the fields fit one 64-byte BLAKE3 block (version 2's sixteen took two).
const TOKEN_VERSION: u8 = 3;
/// Bytes of the assignment code in a version 3 token.
const ASSIGNMENT_BYTES: usize = 11;
const _: () = assert!(adsnap_abtest::ASSIGNMENT_CODE_BITS as usize <= ASSIGNMENT_BYTES * 8);
const FIELDS_LEN: usize = fields_len(ASSIGNMENT_BYTES);
const _: () = assert!(FIELDS_LEN <= 64, "the fields fit one BLAKE3 block");
const MAC_LEN: usize = 16;
/// Encoded length of a token (base64url without padding).
pub const TOKEN_CHARS: usize = encoded_len(FIELDS_LEN + MAC_LEN);

/// Version 2, signed before version 3 (a full sixteen-byte assignment code): still verified, so
/// that notices and install postbacks carrying tokens signed before an upgrade still count.
const V2: u8 = 2;
const V2_ASSIGNMENT_BYTES: usize = 16;
const V2_TOKEN_CHARS: usize = encoded_len(fields_len(V2_ASSIGNMENT_BYTES) + MAC_LEN);

/// Version, request hash, campaign, creative, price, assignment, issue time, user key,
/// snapshot id, and channel, test flag and privacy in one byte.
const fn fields_len(assignment_bytes: usize) -> usize {
    1 + 8 + 4 + 4 + 8 + assignment_bytes + 8 + 8 + 8 + 1
}

const fn encoded_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// What a tracking URL vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `xxh3_64` of the request id.
    pub request_hash: u64,
    pub campaign_id: u32,
    pub creative_id: u32,
    pub price_micros: u64,
    /// The request's assignment (staging, experiment arm or control), as `Assignment::code`.
    pub assignment: u128,
    pub issued_unix_s: i64,
    /// The hashed user key the decision was made for, for frequency caps and installs; 0 when
    /// there was none or privacy forbids keeping one.
    pub user_key: u64,
    /// The snapshot the decision came from (its header's id).
    pub snapshot_id: u64,
    /// `adsnap_events::Channel` of the request, as its code (below 8).
    pub channel: u8,
    /// The request was a test (OpenRTB `test` 1): its notices earn nothing.
    pub test: bool,
    /// `adsnap_events::Privacy` bits of the request (below 16).
    pub privacy: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the tracking token is malformed")]
    Malformed,
    #[error("the tracking token's signature does not match")]
    Forged,
    #[error("the tracking token expired")]
    Expired,
}

/// A signed token as URLs carry it: base64url without padding, held inline (a request signs one
/// and writes it into several URLs). Only [`TokenKey::sign`] makes one, so its bytes are always
/// characters of base64url's alphabet.
#[derive(Clone, Copy)]
pub struct Token([u8; TOKEN_CHARS]);

impl Token {
    pub fn as_str(&self) -> &str {
        debug_assert!(self.0.is_ascii());
        // SAFETY: the bytes were written by `encode_base64url` from its alphabet, which is ASCII
        // (the field is private and `sign` is the only constructor). Checking them cost about
        // 115 instructions per answer, for 103 bytes known to pass.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Signs and checks tokens with one key.
#[derive(Clone)]
pub struct TokenKey {
    key: [u8; 32],
    ttl_s: i64,
}

impl TokenKey {
    pub fn new(key: [u8; 32], ttl_s: i64) -> TokenKey {
        TokenKey { key, ttl_s }
    }

    pub fn sign(&self, c: &Claims) -> Token {
        let mut bytes = [0u8; FIELDS_LEN + MAC_LEN];
        let (fields, mac) = bytes.split_at_mut(FIELDS_LEN);
        let assignment = c.assignment.to_le_bytes();
        let mut at = 0;
        let mut put = |value: &[u8]| {
            fields[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        };
        put(&[TOKEN_VERSION]);
        put(&c.request_hash.to_le_bytes());
        put(&c.campaign_id.to_le_bytes());
        put(&c.creative_id.to_le_bytes());
        put(&c.price_micros.to_le_bytes());
        // Codes use ASSIGNMENT_CODE_BITS bits (asserted above); the bytes left out are zero.
        debug_assert_eq!(c.assignment >> (ASSIGNMENT_BYTES * 8), 0, "not an assignment code");
        put(&assignment[..ASSIGNMENT_BYTES]);
        put(&c.issued_unix_s.to_le_bytes());
        put(&c.user_key.to_le_bytes());
        put(&c.snapshot_id.to_le_bytes());
        // The channel fits in three bits and privacy in four; sharing a byte with the test flag
        // keeps tracking URLs short. Tokens signed before the flag have the bit clear: not tests.
        put(&[(c.channel & 0x07) | (c.test as u8) << 3 | (c.privacy << 4)]);
        mac.copy_from_slice(&blake3::keyed_hash(&self.key, fields).as_bytes()[..MAC_LEN]);
        let mut token = [0u8; TOKEN_CHARS];
        encode_base64url(&bytes, &mut token);
        Token(token)
    }

    /// Checks a token's signature and age at `now_unix_s` and returns what it vouches for.
    pub fn verify(&self, token: &str, now_unix_s: i64) -> Result<Claims, TokenError> {
        self.verify_within(token, now_unix_s, self.ttl_s)
    }

    /// As [`TokenKey::verify`], with another longest age: an install may be attributed to a
    /// click for days after the click's own notice expired.
    pub fn verify_within(&self, token: &str, now_unix_s: i64, age_s_max: i64) -> Result<Claims, TokenError> {
        let (version, assignment_bytes) = match token.len() {
            TOKEN_CHARS => (TOKEN_VERSION, ASSIGNMENT_BYTES),
            V2_TOKEN_CHARS => (V2, V2_ASSIGNMENT_BYTES),
            _ => return Err(TokenError::Malformed),
        };
        let fields_len = fields_len(assignment_bytes);
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Malformed)?;
        if bytes.len() != fields_len + MAC_LEN || bytes[0] != version {
            return Err(TokenError::Malformed);
        }
        let (fields, mac) = bytes.split_at(fields_len);
        // Compare as BLAKE3 hashes: their equality is constant-time.
        let expected = blake3::keyed_hash(&self.key, fields);
        let mut given = *expected.as_bytes();
        given[..MAC_LEN].copy_from_slice(mac);
        if blake3::Hash::from_bytes(given) != expected {
            return Err(TokenError::Forged);
        }
        let u64_at = |at: usize, n: usize| {
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(&fields[at..at + n]);
            u64::from_le_bytes(le)
        };
        let mut assignment = [0u8; 16];
        assignment[..assignment_bytes].copy_from_slice(&fields[25..25 + assignment_bytes]);
        let after = 25 + assignment_bytes;
        let claims = Claims {
            request_hash: u64_at(1, 8),
            campaign_id: u64_at(9, 4) as u32,
            creative_id: u64_at(13, 4) as u32,
            price_micros: u64_at(17, 8),
            assignment: u128::from_le_bytes(assignment),
            issued_unix_s: u64_at(after, 8) as i64,
            user_key: u64_at(after + 8, 8),
            snapshot_id: u64_at(after + 16, 8),
            channel: fields[after + 24] & 0x07,
            test: fields[after + 24] & 0x08 != 0,
            privacy: fields[after + 24] >> 4,
        };
        if now_unix_s - claims.issued_unix_s > age_s_max || claims.issued_unix_s > now_unix_s + 60 {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// base64url (RFC 4648 §5) without padding of `bytes` into `out`, which holds exactly
/// `encoded_len(bytes.len())` characters: three bytes to four characters, by table.
fn encode_base64url(bytes: &[u8], out: &mut [u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let char_at = |group: u32, shift: u32| ALPHABET[(group >> shift & 0x3f) as usize];
    let (mut groups, mut chars) = (bytes.chunks_exact(3), out.chunks_exact_mut(4));
    for (group, four) in groups.by_ref().zip(chars.by_ref()) {
        let group = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        four.copy_from_slice(&[char_at(group, 18), char_at(group, 12), char_at(group, 6), char_at(group, 0)]);
    }
    let rest = groups.remainder();
    let tail = chars.into_remainder();
    if let Some(&first) = rest.first() {
        let second = rest.get(1).copied().unwrap_or(0);
        let group = u32::from(first) << 16 | u32::from(second) << 8;
        let all = [char_at(group, 18), char_at(group, 12), char_at(group, 6)];
        tail.copy_from_slice(&all[..tail.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            request_hash: 0x1234_5678_9abc_def0,
            campaign_id: 101,
            creative_id: 1002,
            price_micros: 2_500_000,
            // An experiment's arm, anonymous: a code with every field set.
            assignment: 2 | 2 << 3 | 1 << 11 | 7 << 19 | 3 << 51 | 4,
            issued_unix_s: 1_795_305_600,
            user_key: 0xfeed_beef,
            snapshot_id: 0x0123_4567_89ab_cdef,
            channel: 1,
            test: false,
            privacy: 0b0100,
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_every_alteration() {
        let key = TokenKey::new([7; 32], 3600);
        let token = key.sign(&claims()).to_string();
        assert_eq!(token.len(), TOKEN_CHARS);
        assert_eq!(key.verify(&token, 1_795_305_600 + 10), Ok(claims()));
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 1;
            let altered = URL_SAFE_NO_PAD.encode(altered);
            let err = key.verify(&altered, 1_795_305_600).unwrap_err();
            if i == 0 {
                assert_eq!(err, TokenError::Malformed);
            } else {
                assert_eq!(err, TokenError::Forged, "byte {i}");
            }
        }
        assert_eq!(TokenKey::new([8; 32], 3600).verify(&token, 1_795_305_600), Err(TokenError::Forged));
        assert_eq!(key.verify(&token, 1_795_305_600 + 3601), Err(TokenError::Expired));
        assert_eq!(key.verify_within(&token, 1_795_305_600 + 3601, 7200), Ok(claims()));
        assert_eq!(key.verify_within(&token, 1_795_305_600 + 7201, 7200), Err(TokenError::Expired));
        assert_eq!(key.verify(&token.as_str()[1..], 1_795_305_600), Err(TokenError::Malformed));
        assert_eq!(key.verify("not a token", 0), Err(TokenError::Malformed));
        assert_eq!(key.verify(&"A".repeat(500), 0), Err(TokenError::Malformed));
    }

    #[test]
    fn a_test_auctions_token_says_so() {
        let key = TokenKey::new([7; 32], 3600);
        let test = Claims { channel: 2, test: true, privacy: 0b1111, ..claims() };
        assert_eq!(key.verify(key.sign(&test).as_str(), 1_795_305_600), Ok(test));
    }

    #[test]
    fn the_longest_assignment_code_round_trips() {
        let key = TokenKey::new([7; 32], 3600);
        let longest = (1u128 << adsnap_abtest::ASSIGNMENT_CODE_BITS) - 2;
        assert!(adsnap_abtest::Assignment::from_code(longest).is_some());
        let c = Claims { assignment: longest, ..claims() };
        assert_eq!(key.verify(key.sign(&c).as_str(), 1_795_305_600), Ok(c));
    }

    /// Version 2 tokens, signed before the fields were packed into one BLAKE3 block, still
    /// verify: this one was signed by that version, with key `[7; 32]`.
    #[test]
    fn tokens_of_version_2_still_verify_and_refuse_alteration() {
        const V2_TOKEN: &str = "AvDevJp4VjQSZQAAAOoDAACgJSYAAAAAABYIOAAAABgAAAAAAAAAAACAMAJrAAAAAO--7f4AAAAA782riWdFIwFBP_pNh79sqZXe6P9EOqCcWg";
        assert_eq!(V2_TOKEN.len(), V2_TOKEN_CHARS);
        let key = TokenKey::new([7; 32], 3600);
        assert_eq!(key.verify(V2_TOKEN, 1_795_305_600 + 10), Ok(claims()));
        let mut raw = URL_SAFE_NO_PAD.decode(V2_TOKEN).unwrap();
        raw[30] ^= 1;
        assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(&raw), 1_795_305_600), Err(TokenError::Forged));
        raw[30] ^= 1;
        raw[0] = TOKEN_VERSION;
        assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(&raw), 1_795_305_600), Err(TokenError::Malformed));
    }

    #[test]
    fn the_encoder_writes_what_the_base64_crate_writes_for_every_length() {
        let bytes: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in 0..bytes.len() {
            let mut out = vec![0u8; encoded_len(len)];
            encode_base64url(&bytes[..len], &mut out);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                URL_SAFE_NO_PAD.encode(&bytes[..len]),
                "{len} bytes"
            );
        }
    }
}

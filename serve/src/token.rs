//! Signed tracking tokens: every tracking URL carries one, binding what was served to whom and
//! when with a keyed BLAKE3 MAC, so that forged, altered or expired notices are refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Layout version of the token's fields.
const TOKEN_VERSION: u8 = 2;
const FIELDS_LEN: usize = 1 + 8 + 4 + 4 + 8 + 16 + 8 + 8 + 8 + 1;
const MAC_LEN: usize = 16;
/// Encoded length of a token (base64url without padding).
pub const TOKEN_CHARS: usize = ((FIELDS_LEN + MAC_LEN) * 4).div_ceil(3);

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
    /// `adsnap_events::Channel` of the request, as its code (below 16).
    pub channel: u8,
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

    fn mac(&self, fields: &[u8]) -> [u8; MAC_LEN] {
        let hash = blake3::keyed_hash(&self.key, fields);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&hash.as_bytes()[..MAC_LEN]);
        mac
    }

    pub fn sign(&self, c: &Claims) -> String {
        let mut bytes = [0u8; FIELDS_LEN + MAC_LEN];
        bytes[0] = TOKEN_VERSION;
        bytes[1..9].copy_from_slice(&c.request_hash.to_le_bytes());
        bytes[9..13].copy_from_slice(&c.campaign_id.to_le_bytes());
        bytes[13..17].copy_from_slice(&c.creative_id.to_le_bytes());
        bytes[17..25].copy_from_slice(&c.price_micros.to_le_bytes());
        bytes[25..41].copy_from_slice(&c.assignment.to_le_bytes());
        bytes[41..49].copy_from_slice(&c.issued_unix_s.to_le_bytes());
        bytes[49..57].copy_from_slice(&c.user_key.to_le_bytes());
        bytes[57..65].copy_from_slice(&c.snapshot_id.to_le_bytes());
        // Both fit in four bits; sharing a byte keeps tracking URLs short.
        bytes[65] = (c.channel & 0x0f) | (c.privacy << 4);
        let mac = self.mac(&bytes[..FIELDS_LEN]);
        bytes[FIELDS_LEN..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks a token's signature and age at `now_unix_s` and returns what it vouches for.
    pub fn verify(&self, token: &str, now_unix_s: i64) -> Result<Claims, TokenError> {
        self.verify_within(token, now_unix_s, self.ttl_s)
    }

    /// As [`TokenKey::verify`], with another longest age: an install may be attributed to a
    /// click for days after the click's own notice expired.
    pub fn verify_within(&self, token: &str, now_unix_s: i64, age_s_max: i64) -> Result<Claims, TokenError> {
        if token.len() != TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Malformed)?;
        if bytes.len() != FIELDS_LEN + MAC_LEN || bytes[0] != TOKEN_VERSION {
            return Err(TokenError::Malformed);
        }
        let (fields, mac) = bytes.split_at(FIELDS_LEN);
        // Compare as BLAKE3 hashes: their equality is constant-time.
        let expected = blake3::keyed_hash(&self.key, fields);
        let mut given = *expected.as_bytes();
        given[..MAC_LEN].copy_from_slice(mac);
        if blake3::Hash::from_bytes(given) != expected {
            return Err(TokenError::Forged);
        }
        let u64_at = |at: usize| u64::from_le_bytes(fields[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(fields[at..at + 4].try_into().expect("4 bytes"));
        let claims = Claims {
            request_hash: u64_at(1),
            campaign_id: u32_at(9),
            creative_id: u32_at(13),
            price_micros: u64_at(17),
            assignment: u128::from_le_bytes(fields[25..41].try_into().expect("16 bytes")),
            issued_unix_s: u64_at(41) as i64,
            user_key: u64_at(49),
            snapshot_id: u64_at(57),
            channel: fields[65] & 0x0f,
            privacy: fields[65] >> 4,
        };
        if now_unix_s - claims.issued_unix_s > age_s_max || claims.issued_unix_s > now_unix_s + 60 {
            return Err(TokenError::Expired);
        }
        Ok(claims)
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
            assignment: 7 << 90 | 5,
            issued_unix_s: 1_795_305_600,
            user_key: 0xfeed_beef,
            snapshot_id: 0x0123_4567_89ab_cdef,
            channel: 1,
            privacy: 0b0100,
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_every_alteration() {
        let key = TokenKey::new([7; 32], 3600);
        let token = key.sign(&claims());
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
        assert_eq!(key.verify("not a token", 0), Err(TokenError::Malformed));
        assert_eq!(key.verify(&"A".repeat(500), 0), Err(TokenError::Malformed));
    }
}

//! The binary encoding of one [`Event`]: a version byte, a fixed little-endian block, the two
//! string ids with 16-bit lengths, then the fields later versions appended (version 2: whether
//! the request was a test). docs/events.md holds the byte layout and the evolution rules.

use std::borrow::Cow;

use crate::error::DecodeError;
use crate::event::{Channel, Event, EventKind, Privacy};

/// The version this build writes. Readers accept every version from 1 on: later versions only
/// append fields, which older readers skip.
pub const FORMAT_VERSION: u8 = 2;
/// Bytes before the strings in version 1.
pub const FIXED_BYTES_V1: usize = 116;
/// Bytes after the strings in version 2: `test`.
pub const APPENDED_BYTES_V2: usize = 1;
/// Longest `app_id` or `ad_unit_id` accepted, in bytes.
pub const ID_BYTES_MAX: usize = 1024;
/// Longest encoded event.
pub const EVENT_BYTES_MAX: usize = FIXED_BYTES_V1 + 2 * ID_BYTES_MAX + APPENDED_BYTES_V2;

const FLAG_USER_KEY: u8 = 1;
const FLAGS_KNOWN: u8 = FLAG_USER_KEY;

/// Bytes `event` takes encoded, or `TooLarge` if a string is over [`ID_BYTES_MAX`].
pub fn encoded_len(event: &Event<'_>) -> Result<usize, usize> {
    let (app, unit) = (event.app_id.len(), event.ad_unit_id.len());
    let len = FIXED_BYTES_V1 + app + unit + APPENDED_BYTES_V2;
    if app > ID_BYTES_MAX || unit > ID_BYTES_MAX {
        return Err(len);
    }
    Ok(len)
}

/// The user key that may be written: none where the privacy bits forbid one, whatever the
/// caller passed (the second line of defence; the server should not have set it).
pub fn permitted_user_key(event: &Event<'_>) -> Option<u64> {
    event.user_key.filter(|_| event.privacy.allows_user_key())
}

/// Writes `event` into `out`, which must be exactly [`encoded_len`] bytes.
pub fn encode_into(event: &Event<'_>, out: &mut [u8]) {
    let user_key = permitted_user_key(event);
    let mut w = Writer { out, at: 0 };
    w.put(&[
        FORMAT_VERSION,
        event.kind.code(),
        event.channel as u8,
        event.privacy.0,
        event.os,
        event.no_fill_reason,
        if user_key.is_some() { FLAG_USER_KEY } else { 0 },
        0,
    ]);
    w.put(&event.country.to_le_bytes());
    w.put(&event.currency);
    w.put(&[0; 3]);
    w.put(&event.time_unix_ms.to_le_bytes());
    w.put(&event.event_id.to_le_bytes());
    w.put(&event.request_id.to_le_bytes());
    w.put(&event.snapshot_id.to_le_bytes());
    w.put(&event.assignment_code.to_le_bytes());
    w.put(&event.campaign_id.to_le_bytes());
    w.put(&event.creative_id.to_le_bytes());
    w.put(&event.price_micros.to_le_bytes());
    w.put(&event.revenue_micros.to_le_bytes());
    w.put(&user_key.unwrap_or(0).to_le_bytes());
    debug_assert_eq!(w.at, FIXED_BYTES_V1 - 4);
    w.put(&(event.app_id.len() as u16).to_le_bytes());
    w.put(&(event.ad_unit_id.len() as u16).to_le_bytes());
    w.put(event.app_id.as_bytes());
    w.put(event.ad_unit_id.as_bytes());
    w.put(&[event.test as u8]);
    debug_assert_eq!(w.at, w.out.len());
}

/// Encodes into a new vector (tests, tools; the log encodes in place).
pub fn encode(event: &Event<'_>) -> Vec<u8> {
    let len = encoded_len(event).unwrap_or_else(|len| len);
    let mut out = vec![0; len];
    encode_into(event, &mut out);
    out
}

struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// Decodes one record. Bytes after the fields this version knows (a later version's additions)
/// are ignored.
pub fn decode(bytes: &[u8]) -> Result<Event<'static>, DecodeError> {
    if bytes.len() < FIXED_BYTES_V1 {
        return Err(DecodeError::Short { len: bytes.len(), needed: FIXED_BYTES_V1 });
    }
    let mut r = Reader { bytes, at: 0 };
    let head: [u8; 8] = r.array();
    if head[0] == 0 {
        return Err(DecodeError::Version(0));
    }
    let kind = EventKind::from_code(head[1]).ok_or(DecodeError::Kind(head[1]))?;
    let channel = channel_from_code(head[2]).ok_or(DecodeError::Channel(head[2]))?;
    let privacy = Privacy(head[3]);
    let flags = head[6];
    if flags & !FLAGS_KNOWN != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let country = u16::from_le_bytes(r.array());
    let currency: [u8; 3] = r.array();
    let _pad: [u8; 3] = r.array();
    let time_unix_ms = i64::from_le_bytes(r.array());
    let event_id = u128::from_le_bytes(r.array());
    let request_id = u128::from_le_bytes(r.array());
    let snapshot_id = u64::from_le_bytes(r.array());
    let assignment_code = u128::from_le_bytes(r.array());
    let campaign_id = u32::from_le_bytes(r.array());
    let creative_id = u32::from_le_bytes(r.array());
    let price_micros = i64::from_le_bytes(r.array());
    let revenue_micros = i64::from_le_bytes(r.array());
    let raw_user_key = u64::from_le_bytes(r.array());
    let user_key = (flags & FLAG_USER_KEY != 0).then_some(raw_user_key);
    if user_key.is_some() && !privacy.allows_user_key() {
        return Err(DecodeError::UserKeyForbidden(privacy.0));
    }
    let app_len = u16::from_le_bytes(r.array()) as usize;
    let unit_len = u16::from_le_bytes(r.array()) as usize;
    let appended = if head[0] >= 2 { APPENDED_BYTES_V2 } else { 0 };
    let needed = FIXED_BYTES_V1 + app_len + unit_len + appended;
    if bytes.len() < needed {
        return Err(DecodeError::Short { len: bytes.len(), needed });
    }
    let app_id = utf8(r.take(app_len), "app_id")?;
    let ad_unit_id = utf8(r.take(unit_len), "ad_unit_id")?;
    // Version 1 records predate the field: none was a test.
    let test = match r.take(appended) {
        [] | [0] => false,
        [1] => true,
        [other, ..] => return Err(DecodeError::Test(*other)),
    };
    Ok(Event {
        event_id,
        kind,
        time_unix_ms,
        request_id,
        snapshot_id,
        assignment_code,
        channel,
        app_id: Cow::Owned(app_id),
        ad_unit_id: Cow::Owned(ad_unit_id),
        campaign_id,
        creative_id,
        price_micros,
        revenue_micros,
        currency,
        country,
        os: head[4],
        user_key,
        privacy,
        no_fill_reason: head[5],
        test,
    })
}

/// Reads only the time of an encoded event (for seeking by time without decoding strings).
pub fn peek_time_unix_ms(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?))
}

/// Reads only the event id of an encoded event (message ids of batches).
pub fn peek_event_id(bytes: &[u8]) -> Option<u128> {
    Some(u128::from_le_bytes(bytes.get(24..40)?.try_into().ok()?))
}

pub fn channel_from_code(code: u8) -> Option<Channel> {
    match code {
        1 => Some(Channel::Sdk),
        2 => Some(Channel::OpenRtb),
        3 => Some(Channel::Partner),
        _ => None,
    }
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::Utf8 { field })
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    /// Callers check the length first; the fixed block is read only after that check.
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let out = self.bytes[self.at..self.at + N].try_into().expect("length checked before reading");
        self.at += N;
        out
    }

    fn take(&mut self, n: usize) -> &'b [u8] {
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample(n: u64) -> Event<'static> {
        Event {
            event_id: 0x1234_5678_9abc_def0_0000_0000_0000_0000 | n as u128,
            kind: EventKind::ALL[(n % 7) as usize],
            time_unix_ms: 1_795_000_000_000 + n as i64,
            request_id: (n as u128) << 64 | 7,
            snapshot_id: 42,
            assignment_code: 3,
            channel: Channel::Sdk,
            app_id: Cow::Owned(format!("app-{}", n % 13)),
            ad_unit_id: Cow::Borrowed("unit-interstitial"),
            campaign_id: n as u32,
            creative_id: 9,
            price_micros: 1_500_000,
            revenue_micros: 1500,
            currency: *b"USD",
            country: 0x5553,
            os: 1,
            user_key: Some(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            privacy: Privacy(0),
            no_fill_reason: 0,
            test: n % 5 == 4,
        }
    }

    #[test]
    fn fixed_block_has_the_documented_size() {
        let event = sample(1);
        let bytes = encode(&event);
        assert_eq!(bytes.len(), FIXED_BYTES_V1 + 5 + 17 + APPENDED_BYTES_V2);
        assert_eq!(peek_time_unix_ms(&bytes), Some(event.time_unix_ms));
        assert_eq!(peek_event_id(&bytes), Some(event.event_id));
    }

    #[test]
    fn privacy_strips_the_user_key_and_decoding_refuses_one() {
        let mut event = sample(2);
        event.privacy = Privacy(Privacy::COPPA);
        let mut bytes = encode(&event);
        assert_eq!(decode(&bytes).unwrap().user_key, None);
        bytes[6] = FLAG_USER_KEY;
        assert_eq!(decode(&bytes), Err(DecodeError::UserKeyForbidden(Privacy::COPPA)));
    }

    #[test]
    fn later_versions_with_appended_fields_still_decode() {
        let event = sample(4);
        assert!(event.test);
        let mut bytes = encode(&event);
        bytes[0] = FORMAT_VERSION + 1;
        bytes.extend_from_slice(&[0xaa; 9]);
        assert_eq!(decode(&bytes).unwrap(), event);
    }

    #[test]
    fn version_1_records_decode_as_live_traffic() {
        let event = Event { test: false, ..sample(3) };
        let mut bytes = encode(&event);
        bytes[0] = 1;
        bytes.pop();
        assert_eq!(decode(&bytes).unwrap(), event);
        // A version 1 record with bytes after its strings: the bytes are not read as `test`.
        bytes.push(1);
        assert_eq!(decode(&bytes).unwrap(), event);
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        let bytes = encode(&sample(4));
        assert!(matches!(decode(&bytes[..50]), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Short { .. })));
        let mut b = bytes.clone();
        b[1] = 99;
        assert_eq!(decode(&b), Err(DecodeError::Kind(99)));
        let mut b = bytes.clone();
        b[2] = 0;
        assert_eq!(decode(&b), Err(DecodeError::Channel(0)));
        let mut b = bytes.clone();
        b[0] = 0;
        assert_eq!(decode(&b), Err(DecodeError::Version(0)));
        let mut b = bytes.clone();
        b[6] = 0x80;
        assert_eq!(decode(&b), Err(DecodeError::Flags(0x80)));
        let mut b = bytes;
        *b.last_mut().unwrap() = 2;
        assert_eq!(decode(&b), Err(DecodeError::Test(2)));
    }

    fn arb_event() -> impl Strategy<Value = Event<'static>> {
        (
            (any::<u128>(), 0usize..7, any::<i64>(), any::<u128>(), any::<u64>(), any::<u128>(), 1u8..=3),
            ("[a-z0-9é._-]{0,40}", "\\PC{0,20}", any::<u32>(), any::<u32>(), any::<i64>(), any::<i64>()),
            (any::<[u8; 3]>(), any::<u16>(), any::<u8>(), any::<Option<u64>>(), any::<u8>(), any::<u8>()),
            any::<bool>(),
        )
            .prop_map(|(a, b, c, test)| Event {
                event_id: a.0,
                kind: EventKind::ALL[a.1],
                time_unix_ms: a.2,
                request_id: a.3,
                snapshot_id: a.4,
                assignment_code: a.5,
                channel: channel_from_code(a.6).unwrap(),
                app_id: Cow::Owned(b.0),
                ad_unit_id: Cow::Owned(b.1),
                campaign_id: b.2,
                creative_id: b.3,
                price_micros: b.4,
                revenue_micros: b.5,
                currency: c.0,
                country: c.1,
                os: c.2,
                user_key: c.3,
                privacy: Privacy(c.4),
                no_fill_reason: c.5,
                test,
            })
    }

    proptest! {
        #[test]
        fn every_event_round_trips(event in arb_event()) {
            let bytes = encode(&event);
            prop_assert_eq!(bytes.len(), encoded_len(&event).unwrap());
            let expected = Event { user_key: permitted_user_key(&event), ..event.clone() };
            prop_assert_eq!(decode(&bytes).unwrap(), expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}

//! Reads what the privacy rules need of an IAB TCF v2 consent string (the "TC string"): the
//! purposes consented to, whether one vendor was consented to, and the publisher's restrictions
//! on that vendor. The string is read in place, bit by bit, without decoding it whole.
//!
//! Written here because neither Rust crate for it reads every valid string right:
//! - `iab_gpp` 0.1 reads the publisher restrictions' vendor ids as the GPP section table
//!   describes them (a 16-bit maximum, then a bit field or ranges), not as the TCF v2 string lays
//!   them out (a 12-bit count of ranges), so it misreads every string that carries a restriction;
//! - `lib_tcstring` 0.5 panics (an index out of bounds) on a string cut short, which any client
//!   can send, and refuses a string padded to whole base64 characters, as GPP pads its sections,
//!   rather than to whole bytes, as the TCF specification does.
//!
//! This reader takes either padding, and a string cut short is `None`.

/// What a readable TC string says of one vendor and the purposes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcString {
    /// Bit `n - 1` is purpose `n`'s consent (purposes 1 to 24).
    pub purpose_consents: u32,
    /// The vendor asked about is in the vendor consents.
    pub vendor_consent: bool,
    /// Bit `n - 1`: the publisher restricts the vendor on purpose `n` other than by requiring
    /// consent (not allowed at all, or on legitimate interest only).
    pub vendor_restricted: u64,
}

impl TcString {
    /// Whether the user consented to `purpose` (1 to 24).
    pub fn purpose(&self, purpose: u8) -> bool {
        (1..=24).contains(&purpose) && self.purpose_consents >> (purpose - 1) & 1 == 1
    }

    /// Whether the publisher keeps the vendor from `purpose` on consent.
    pub fn restricted(&self, purpose: u8) -> bool {
        (1..=64).contains(&purpose) && self.vendor_restricted >> (purpose - 1) & 1 == 1
    }
}

/// Bits of the core segment before the purpose consents: version 6, created 36, last updated
/// 36, CMP id 12, CMP version 12, consent screen 6, consent language 12, vendor list version 12,
/// policy version 6, service specific 1, non-standard texts 1, special features 12.
const PURPOSE_CONSENTS_AT: usize = 152;

/// Bits from the purpose consents to the vendor consents: purpose consents 24, purposes on
/// legitimate interest 24, purpose one treatment 1, publisher country 12.
const PURPOSES_BITS: usize = 61;

/// Reads `tc`'s core segment, asking about `vendor` (0 asks about none). `None` when the string
/// is not a readable TC string of version 2: not base64url, another version, or cut short.
pub fn read(tc: &str, vendor: u16) -> Option<TcString> {
    let core = tc.split('.').next().unwrap_or_default();
    // Every character, the fields skipped over included: a string with another in it is not one.
    if !core.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return None;
    }
    let mut bits = Bits { chars: core.as_bytes(), at: 0 };
    if bits.read(6)? != 2 {
        return None;
    }
    bits.at = PURPOSE_CONSENTS_AT;
    // Purpose 1 comes first: the most significant of the 24 bits read.
    let purpose_consents = (bits.read(24)? as u32).reverse_bits() >> 8;
    bits.at += PURPOSES_BITS - 24;
    let vendor_consent = bits.vendor_section(vendor)?;
    bits.vendor_section(0)?; // vendors on legitimate interest
    let mut vendor_restricted = 0u64;
    for _ in 0..bits.read(12)? {
        let purpose = bits.read(6)?;
        let kind = bits.read(2)?;
        let names_vendor = bits.ranges(vendor)?;
        // Type 1 requires consent, which is asked for anyway; 0 forbids, 2 allows only
        // legitimate interest, 3 is undefined: each keeps the purpose from resting on consent.
        if names_vendor && kind != 1 && (1..=64).contains(&purpose) {
            vendor_restricted |= 1 << (purpose - 1);
        }
    }
    Some(TcString { purpose_consents, vendor_consent, vendor_restricted })
}

/// A cursor over the bits of base64url text, most significant bit of each character first.
struct Bits<'a> {
    chars: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    /// The next `n` bits (at most 36) as a number; `None` past the end or on a character that
    /// is not base64url.
    fn read(&mut self, n: usize) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..n {
            value = value << 1 | u64::from(self.bit(self.at)?);
            self.at += 1;
        }
        Some(value)
    }

    /// Bit `at` of the text.
    fn bit(&self, at: usize) -> Option<bool> {
        let sextet = match *self.chars.get(at / 6)? {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'a'..=b'z' => c - b'a' + 26,
            c @ b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(sextet >> (5 - at % 6) & 1 == 1)
    }

    /// Reads a vendor section (a 16-bit maximum vendor id, then a bit field or ranges) and says
    /// whether `vendor` is in it.
    fn vendor_section(&mut self, vendor: u16) -> Option<bool> {
        let max = self.read(16)? as usize;
        if self.read(1)? == 1 {
            return self.ranges(vendor);
        }
        let field = self.at;
        // The whole field must be there, as a well-formed string has it.
        if max > 0 {
            self.bit(field + max - 1)?;
        }
        self.at = field + max;
        Some(vendor != 0 && usize::from(vendor) <= max && self.bit(field + usize::from(vendor) - 1)?)
    }

    /// Reads a 12-bit count of entries, each a vendor id or a range of them, and says whether
    /// `vendor` is among them.
    fn ranges(&mut self, vendor: u16) -> Option<bool> {
        let mut found = false;
        for _ in 0..self.read(12)? {
            let is_range = self.read(1)? == 1;
            let start = self.read(16)?;
            let end = if is_range { self.read(16)? } else { start };
            found |= vendor != 0 && (start..=end).contains(&u64::from(vendor));
        }
        Some(found)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    /// A TCF v2 consent string (core segment only) in which the user consents to `purposes`
    /// and to `vendors`, and the publisher restricts `(purpose, restriction type, vendor)`:
    /// the fields as the TCF specification lays them out, bit by bit.
    pub(crate) fn tc_string(purposes: &[u16], vendors: &[u16], restrictions: &[(u8, u8, u16)]) -> String {
        encode(purposes, vendors, restrictions, false, false)
    }

    /// As [`tc_string`], the vendor consents as a bit field or, with `ranges`, as one range
    /// entry per vendor; padded to whole base64 characters, as GPP pads, or with `whole_bytes`
    /// to whole bytes, as the TCF specification pads.
    pub(crate) fn encode(
        purposes: &[u16],
        vendors: &[u16],
        restrictions: &[(u8, u8, u16)],
        ranges: bool,
        whole_bytes: bool,
    ) -> String {
        let mut bits = Vec::new();
        let mut put = |value: u64, n: u32| bits.extend((0..n).rev().map(|i| value >> i & 1 == 1));
        put(2, 6); // version
        put(16_000_000_000, 36); // created, in deciseconds
        put(16_000_000_000, 36); // last updated
        put(10, 12); // CMP id
        put(1, 12); // CMP version
        put(1, 6); // consent screen
        put(4 * 64 + 13, 12); // consent language, "EN"
        put(100, 12); // vendor list version
        put(4, 6); // policy version
        put(0, 2); // service specific, non-standard texts
        put(0, 12); // special features
        (1..=24).for_each(|p| put(u64::from(purposes.contains(&p)), 1));
        put(0, 24); // purposes on legitimate interest
        put(0, 1); // purpose one treatment
        put(3 * 64 + 4, 12); // publisher country, "DE"
        let max = vendors.iter().copied().max().unwrap_or(0);
        put(u64::from(max), 16);
        put(u64::from(ranges), 1);
        if ranges {
            put(vendors.len() as u64, 12);
            for &v in vendors {
                put(0, 1); // a single vendor
                put(u64::from(v), 16);
            }
        } else {
            (1..=max).for_each(|v| put(u64::from(vendors.contains(&v)), 1));
        }
        put(0, 17); // no vendor on legitimate interest
        put(restrictions.len() as u64, 12);
        for &(purpose, kind, vendor) in restrictions {
            put(u64::from(purpose), 6);
            put(u64::from(kind), 2);
            put(1, 12); // one entry
            put(0, 1); // a single vendor
            put(u64::from(vendor), 16);
        }
        if whole_bytes {
            bits.resize(bits.len().next_multiple_of(8), false);
        }
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        bits.chunks(6)
            .map(|c| (0..6).fold(0, |n, i| n << 1 | usize::from(c.get(i) == Some(&true))))
            .map(|n| char::from(ALPHABET[n]))
            .collect()
    }

    /// The purposes and vendors `iab_gpp` reads from a string, for strings without publisher
    /// restrictions (which it misreads).
    fn by_iab_gpp(tc: &str, vendor: u16) -> TcString {
        let parsed = iab_gpp::sections::tcfeuv2::TcfEuV2::from_str(tc).unwrap();
        let purpose_consents = parsed.core.purpose_consents.iter().fold(0, |bits, &p| bits | 1 << (p - 1));
        TcString {
            purpose_consents,
            vendor_consent: parsed.core.vendor_consents.contains(&vendor),
            vendor_restricted: 0,
        }
    }

    #[test]
    fn purposes_and_vendors_read_as_iab_gpp_reads_them() {
        let strings = [
            (vec![1, 3, 4], vec![42], false),
            (vec![], vec![], false),
            ((1..=24).collect(), (1..=700).collect(), false),
            (vec![2, 24], vec![1, 41, 43, 755, 1500], false),
            (vec![1, 3, 4], vec![42, 755], true),
            (vec![1, 10], vec![41, 43], true),
        ];
        for ((purposes, vendors, ranges), whole_bytes) in strings.iter().flat_map(|s| [(s, false), (s, true)])
        {
            let tc = encode(purposes, vendors, &[], *ranges, whole_bytes);
            for vendor in [1, 41, 42, 43, 755, 1500, 1501, 65535] {
                assert_eq!(read(&tc, vendor), Some(by_iab_gpp(&tc, vendor)), "{tc} for vendor {vendor}");
            }
            for p in 1..=24u8 {
                assert_eq!(read(&tc, 0).unwrap().purpose(p), purposes.contains(&u16::from(p)), "{tc}: {p}");
            }
        }
        // The crate's documented example, with its optional segments after the core.
        let tc = "CPXuQIAPXuQIAAfKABENB-CgACAAAAAAAAYgF5wAQF5gAAAA.YAAAAAAAAAAA";
        assert_eq!(read(tc, 755), Some(by_iab_gpp(tc, 755)));
        assert!(read(tc, 755).unwrap().vendor_consent);
    }

    #[test]
    fn publisher_restrictions_name_the_vendor_and_purpose() {
        let restrictions = [(3, 0, 42), (4, 2, 42), (1, 1, 42), (2, 0, 7)];
        for whole_bytes in [false, true] {
            let tc = encode(&[1, 3, 4], &[42], &restrictions, false, whole_bytes);
            let read = read(&tc, 42).unwrap();
            assert!(read.restricted(3) && read.restricted(4), "{tc}");
            assert!(!read.restricted(1) && !read.restricted(2), "{tc}");
            assert!(read.vendor_consent && read.purpose(1), "{tc}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any text a client sends, and any cut of or change to a valid string, is read or
        /// refused, never a panic.
        #[test]
        fn any_text_is_read_or_refused(
            text in "[A-Za-z0-9_.+/=-]{0,120}",
            vendors in proptest::collection::vec(1u16..2000, 0..8),
            cut in 0usize..200,
            flip in 0usize..200,
            vendor in 0u16..2100,
        ) {
            let _ = read(&text, vendor);
            let tc = encode(&[1, 3], &vendors, &[(1, 0, 5), (3, 2, 1999)], vendor % 2 == 0, vendor % 3 == 0);
            let _ = read(&tc[..cut.min(tc.len())], vendor);
            let mut changed = tc.into_bytes();
            let at = flip % changed.len();
            changed[at] = if changed[at] == b'A' { b'_' } else { b'A' };
            let _ = read(std::str::from_utf8(&changed).unwrap(), vendor);
        }
    }

    #[test]
    fn unreadable_strings_read_as_none() {
        let good = tc_string(&[1], &[42], &[(1, 0, 42)]);
        assert!(read(&good, 42).is_some());
        // Every cut of it short of its last character is cut short; the last character may
        // hold only padding.
        for len in 0..good.len() - 1 {
            assert_eq!(read(&good[..len], 42), None, "{}", &good[..len]);
        }
        // A character outside base64url in a field the reader skips (the creation time).
        let mut skipped = good.clone();
        skipped.replace_range(3..4, "+");
        assert_eq!(read(&skipped, 42), None);
        for bad in [
            "",
            "not a consent string!",
            "C+++",
            "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA",
            "DPXuQIAPXuQIAAfKABENB",
        ] {
            assert_eq!(read(bad, 42), None, "{bad}");
        }
    }
}

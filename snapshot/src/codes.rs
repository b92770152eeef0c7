//! Codes shared by the catalog, the snapshot and requests: countries, languages, OS versions,
//! device and connection types, and how each packs into a number.

/// ISO 3166-1 alpha-2 country codes, plus `XK` (Kosovo), which exchanges send too.
pub const COUNTRY_CODES: [&str; 250] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA",
    "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV",
    "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU",
    "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES",
    "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM",
    "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE",
    "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM",
    "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
    "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT",
    "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU",
    "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA",
    "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM",
    "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL",
    "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE",
    "VG", "VI", "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW",
];

/// ISO 639-1 language codes.
pub const LANGUAGE_CODES: [&str; 184] = [
    "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bi", "bm",
    "bn", "bo", "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da", "de", "dv", "dz",
    "ee", "el", "en", "eo", "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr", "fy", "ga", "gd", "gl",
    "gn", "gu", "gv", "ha", "he", "hi", "ho", "hr", "ht", "hu", "hy", "hz", "ia", "id", "ie", "ig", "ii",
    "ik", "io", "is", "it", "iu", "ja", "jv", "ka", "kg", "ki", "kj", "kk", "kl", "km", "kn", "ko", "kr",
    "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln", "lo", "lt", "lu", "lv", "mg", "mh", "mi",
    "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb", "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv",
    "ny", "oc", "oj", "om", "or", "os", "pa", "pi", "pl", "ps", "pt", "qu", "rm", "rn", "ro", "ru", "rw",
    "sa", "sc", "sd", "se", "sg", "sh", "si", "sk", "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su",
    "sv", "sw", "ta", "te", "tg", "th", "ti", "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug",
    "uk", "ur", "uz", "ve", "vi", "vo", "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu",
];

/// ISO 3166-1 alpha-3 codes (as OpenRTB sends them in `device.geo.country`) and their alpha-2
/// twins, sorted by alpha-3.
const COUNTRY_ALPHA3: [(&str, &str); 250] = [
    ("ABW", "AW"),
    ("AFG", "AF"),
    ("AGO", "AO"),
    ("AIA", "AI"),
    ("ALA", "AX"),
    ("ALB", "AL"),
    ("AND", "AD"),
    ("ARE", "AE"),
    ("ARG", "AR"),
    ("ARM", "AM"),
    ("ASM", "AS"),
    ("ATA", "AQ"),
    ("ATF", "TF"),
    ("ATG", "AG"),
    ("AUS", "AU"),
    ("AUT", "AT"),
    ("AZE", "AZ"),
    ("BDI", "BI"),
    ("BEL", "BE"),
    ("BEN", "BJ"),
    ("BES", "BQ"),
    ("BFA", "BF"),
    ("BGD", "BD"),
    ("BGR", "BG"),
    ("BHR", "BH"),
    ("BHS", "BS"),
    ("BIH", "BA"),
    ("BLM", "BL"),
    ("BLR", "BY"),
    ("BLZ", "BZ"),
    ("BMU", "BM"),
    ("BOL", "BO"),
    ("BRA", "BR"),
    ("BRB", "BB"),
    ("BRN", "BN"),
    ("BTN", "BT"),
    ("BVT", "BV"),
    ("BWA", "BW"),
    ("CAF", "CF"),
    ("CAN", "CA"),
    ("CCK", "CC"),
    ("CHE", "CH"),
    ("CHL", "CL"),
    ("CHN", "CN"),
    ("CIV", "CI"),
    ("CMR", "CM"),
    ("COD", "CD"),
    ("COG", "CG"),
    ("COK", "CK"),
    ("COL", "CO"),
    ("COM", "KM"),
    ("CPV", "CV"),
    ("CRI", "CR"),
    ("CUB", "CU"),
    ("CUW", "CW"),
    ("CXR", "CX"),
    ("CYM", "KY"),
    ("CYP", "CY"),
    ("CZE", "CZ"),
    ("DEU", "DE"),
    ("DJI", "DJ"),
    ("DMA", "DM"),
    ("DNK", "DK"),
    ("DOM", "DO"),
    ("DZA", "DZ"),
    ("ECU", "EC"),
    ("EGY", "EG"),
    ("ERI", "ER"),
    ("ESH", "EH"),
    ("ESP", "ES"),
    ("EST", "EE"),
    ("ETH", "ET"),
    ("FIN", "FI"),
    ("FJI", "FJ"),
    ("FLK", "FK"),
    ("FRA", "FR"),
    ("FRO", "FO"),
    ("FSM", "FM"),
    ("GAB", "GA"),
    ("GBR", "GB"),
    ("GEO", "GE"),
    ("GGY", "GG"),
    ("GHA", "GH"),
    ("GIB", "GI"),
    ("GIN", "GN"),
    ("GLP", "GP"),
    ("GMB", "GM"),
    ("GNB", "GW"),
    ("GNQ", "GQ"),
    ("GRC", "GR"),
    ("GRD", "GD"),
    ("GRL", "GL"),
    ("GTM", "GT"),
    ("GUF", "GF"),
    ("GUM", "GU"),
    ("GUY", "GY"),
    ("HKG", "HK"),
    ("HMD", "HM"),
    ("HND", "HN"),
    ("HRV", "HR"),
    ("HTI", "HT"),
    ("HUN", "HU"),
    ("IDN", "ID"),
    ("IMN", "IM"),
    ("IND", "IN"),
    ("IOT", "IO"),
    ("IRL", "IE"),
    ("IRN", "IR"),
    ("IRQ", "IQ"),
    ("ISL", "IS"),
    ("ISR", "IL"),
    ("ITA", "IT"),
    ("JAM", "JM"),
    ("JEY", "JE"),
    ("JOR", "JO"),
    ("JPN", "JP"),
    ("KAZ", "KZ"),
    ("KEN", "KE"),
    ("KGZ", "KG"),
    ("KHM", "KH"),
    ("KIR", "KI"),
    ("KNA", "KN"),
    ("KOR", "KR"),
    ("KWT", "KW"),
    ("LAO", "LA"),
    ("LBN", "LB"),
    ("LBR", "LR"),
    ("LBY", "LY"),
    ("LCA", "LC"),
    ("LIE", "LI"),
    ("LKA", "LK"),
    ("LSO", "LS"),
    ("LTU", "LT"),
    ("LUX", "LU"),
    ("LVA", "LV"),
    ("MAC", "MO"),
    ("MAF", "MF"),
    ("MAR", "MA"),
    ("MCO", "MC"),
    ("MDA", "MD"),
    ("MDG", "MG"),
    ("MDV", "MV"),
    ("MEX", "MX"),
    ("MHL", "MH"),
    ("MKD", "MK"),
    ("MLI", "ML"),
    ("MLT", "MT"),
    ("MMR", "MM"),
    ("MNE", "ME"),
    ("MNG", "MN"),
    ("MNP", "MP"),
    ("MOZ", "MZ"),
    ("MRT", "MR"),
    ("MSR", "MS"),
    ("MTQ", "MQ"),
    ("MUS", "MU"),
    ("MWI", "MW"),
    ("MYS", "MY"),
    ("MYT", "YT"),
    ("NAM", "NA"),
    ("NCL", "NC"),
    ("NER", "NE"),
    ("NFK", "NF"),
    ("NGA", "NG"),
    ("NIC", "NI"),
    ("NIU", "NU"),
    ("NLD", "NL"),
    ("NOR", "NO"),
    ("NPL", "NP"),
    ("NRU", "NR"),
    ("NZL", "NZ"),
    ("OMN", "OM"),
    ("PAK", "PK"),
    ("PAN", "PA"),
    ("PCN", "PN"),
    ("PER", "PE"),
    ("PHL", "PH"),
    ("PLW", "PW"),
    ("PNG", "PG"),
    ("POL", "PL"),
    ("PRI", "PR"),
    ("PRK", "KP"),
    ("PRT", "PT"),
    ("PRY", "PY"),
    ("PSE", "PS"),
    ("PYF", "PF"),
    ("QAT", "QA"),
    ("REU", "RE"),
    ("ROU", "RO"),
    ("RUS", "RU"),
    ("RWA", "RW"),
    ("SAU", "SA"),
    ("SDN", "SD"),
    ("SEN", "SN"),
    ("SGP", "SG"),
    ("SGS", "GS"),
    ("SHN", "SH"),
    ("SJM", "SJ"),
    ("SLB", "SB"),
    ("SLE", "SL"),
    ("SLV", "SV"),
    ("SMR", "SM"),
    ("SOM", "SO"),
    ("SPM", "PM"),
    ("SRB", "RS"),
    ("SSD", "SS"),
    ("STP", "ST"),
    ("SUR", "SR"),
    ("SVK", "SK"),
    ("SVN", "SI"),
    ("SWE", "SE"),
    ("SWZ", "SZ"),
    ("SXM", "SX"),
    ("SYC", "SC"),
    ("SYR", "SY"),
    ("TCA", "TC"),
    ("TCD", "TD"),
    ("TGO", "TG"),
    ("THA", "TH"),
    ("TJK", "TJ"),
    ("TKL", "TK"),
    ("TKM", "TM"),
    ("TLS", "TL"),
    ("TON", "TO"),
    ("TTO", "TT"),
    ("TUN", "TN"),
    ("TUR", "TR"),
    ("TUV", "TV"),
    ("TWN", "TW"),
    ("TZA", "TZ"),
    ("UGA", "UG"),
    ("UKR", "UA"),
    ("UMI", "UM"),
    ("URY", "UY"),
    ("USA", "US"),
    ("UZB", "UZ"),
    ("VAT", "VA"),
    ("VCT", "VC"),
    ("VEN", "VE"),
    ("VGB", "VG"),
    ("VIR", "VI"),
    ("VNM", "VN"),
    ("VUT", "VU"),
    ("WLF", "WF"),
    ("WSM", "WS"),
    ("XKX", "XK"),
    ("YEM", "YE"),
    ("ZAF", "ZA"),
    ("ZMB", "ZM"),
    ("ZWE", "ZW"),
];

/// The alpha-2 code of an ISO 3166-1 alpha-3 country code (`"USA"` → `"US"`).
pub fn country_alpha3_to_alpha2(alpha3: &str) -> Option<&'static str> {
    COUNTRY_ALPHA3.binary_search_by_key(&alpha3, |(a3, _)| a3).ok().map(|i| COUNTRY_ALPHA3[i].1)
}

/// The alpha-3 code of an ISO 3166-1 alpha-2 country code (`"US"` → `"USA"`), as OpenRTB's
/// `geo.country` has it.
pub fn country_alpha2_to_alpha3(alpha2: &str) -> Option<&'static str> {
    COUNTRY_ALPHA3.iter().find(|(_, a2)| *a2 == alpha2).map(|(a3, _)| *a3)
}

/// Packs a two-letter code of the given case into `0..676`, or `None` if it is not two ASCII
/// letters of that case.
fn pack_two_letters(code: &str, base: u8) -> Option<u16> {
    let bytes = code.as_bytes();
    if bytes.len() != 2 {
        return None;
    }
    let hi = bytes[0].wrapping_sub(base);
    let lo = bytes[1].wrapping_sub(base);
    if hi >= 26 || lo >= 26 {
        return None;
    }
    Some(u16::from(hi) * 26 + u16::from(lo))
}

fn unpack_two_letters(packed: u16, base: u8) -> Option<[u8; 2]> {
    if packed >= 26 * 26 {
        return None;
    }
    Some([base + (packed / 26) as u8, base + (packed % 26) as u8])
}

/// Packs an uppercase ISO 3166-1 alpha-2 code (`"US"`) into `0..676`. Only the shape is checked;
/// [`is_country_code`] checks that the code exists.
pub fn pack_country(code: &str) -> Option<u16> {
    pack_two_letters(code, b'A')
}

/// The two letters of a packed country code.
pub fn unpack_country(packed: u16) -> Option<[u8; 2]> {
    unpack_two_letters(packed, b'A')
}

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code (or `XK`).
pub fn is_country_code(code: &str) -> bool {
    COUNTRY_CODES.binary_search(&code).is_ok()
}

/// Packs a lowercase ISO 639-1 code (`"en"`) into `0..676`.
pub fn pack_language(code: &str) -> Option<u16> {
    pack_two_letters(code, b'a')
}

/// The two letters of a packed language code.
pub fn unpack_language(packed: u16) -> Option<[u8; 2]> {
    unpack_two_letters(packed, b'a')
}

/// Whether `code` is an ISO 639-1 language code.
pub fn is_language_code(code: &str) -> bool {
    LANGUAGE_CODES.binary_search(&code).is_ok()
}

/// Parses an OS version such as `"14"`, `"14.2"` or `"14.2.1"` into `major << 16 | minor << 8 |
/// patch`, so that versions compare as numbers. Parts wider than their field saturate; anything
/// that is not one to three dot-separated decimal numbers is `None`.
pub fn pack_os_version(version: &str) -> Option<u32> {
    let mut parts = [0u32; 3];
    for (n_parts, part) in version.split('.').enumerate() {
        if n_parts == 3 || part.is_empty() || part.len() > 9 {
            return None;
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts[n_parts] = part.parse().ok()?;
    }
    let major = parts[0].min(0xffff);
    let minor = parts[1].min(0xff);
    let patch = parts[2].min(0xff);
    Some(major << 16 | minor << 8 | patch)
}

/// Formats a packed OS version back into `major.minor.patch`.
pub fn format_os_version(packed: u32) -> String {
    format!("{}.{}.{}", packed >> 16, (packed >> 8) & 0xff, packed & 0xff)
}

/// Declares a small enum of named flags that targeting keeps as a bit mask.
macro_rules! flag_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $bit:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($variant = $bit,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name used in the catalog and the API.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }

            /// This value's bit in a mask.
            pub fn bit(self) -> u8 {
                1 << (self as u8)
            }
        }
    };
}

flag_enum! {
    /// The kind of device a request comes from.
    DeviceType {
        Phone = 0 => "phone",
        Tablet = 1 => "tablet",
        ConnectedTv = 2 => "connected_tv",
    }
}

flag_enum! {
    /// How the device is connected.
    ConnectionType {
        Wifi = 0 => "wifi",
        Ethernet = 1 => "ethernet",
        Cellular2g = 2 => "cellular_2g",
        Cellular3g = 3 => "cellular_3g",
        Cellular4g = 4 => "cellular_4g",
        Cellular5g = 5 => "cellular_5g",
        CellularUnknown = 6 => "cellular_unknown",
    }
}

/// Highest tier-1 IAB content category (IAB1 to IAB26 in the IAB content taxonomy 1.0/2.x
/// codes exchanges send in `bcat` and `cat`).
pub const IAB_TIER1_MAX: u16 = 26;
/// Highest subcategory number a packed category can hold.
pub const IAB_TIER2_MAX: u16 = 999;

/// Packs an IAB content category (`IAB9` or `IAB9-30`) into `tier1 * 1000 + tier2` (tier2 is 0
/// for a tier-1 category), so that a category and its parent are one division apart.
pub fn pack_iab_category(code: &str) -> Option<u16> {
    let rest = code.strip_prefix("IAB")?;
    let (tier1, tier2) = match rest.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let number = |s: &str, max_digits: usize| -> Option<u16> {
        if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let tier1 = number(tier1, 2)?;
    if tier1 == 0 || tier1 > IAB_TIER1_MAX {
        return None;
    }
    let tier2 = match tier2 {
        Some(b) => number(b, 3).filter(|&b| b > 0)?,
        None => 0,
    };
    Some(tier1 * 1000 + tier2)
}

/// Whether `packed` came out of [`pack_iab_category`].
pub fn is_packed_iab_category(packed: u16) -> bool {
    let tier1 = packed / 1000;
    (1..=IAB_TIER1_MAX).contains(&tier1)
}

/// The tier-1 parent of a packed category (itself for a tier-1 category).
pub fn iab_parent(packed: u16) -> u16 {
    packed - packed % 1000
}

/// Formats a packed IAB category back into its code.
pub fn format_iab_category(packed: u16) -> String {
    match packed % 1000 {
        0 => format!("IAB{}", packed / 1000),
        sub => format!("IAB{}-{sub}", packed / 1000),
    }
}

/// `xxh3_64` of a string key: bundle ids, domains and string ids are looked up by this hash.
pub fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_tables_are_sorted_and_well_formed() {
        assert!(COUNTRY_CODES.windows(2).all(|w| w[0] < w[1]));
        assert!(LANGUAGE_CODES.windows(2).all(|w| w[0] < w[1]));
        assert!(COUNTRY_CODES.iter().all(|c| pack_country(c).is_some()));
        assert!(LANGUAGE_CODES.iter().all(|c| pack_language(c).is_some()));
    }

    #[test]
    fn alpha3_codes_map_to_alpha2() {
        assert!(COUNTRY_ALPHA3.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(COUNTRY_ALPHA3.iter().all(|(_, a2)| is_country_code(a2)));
        assert_eq!(country_alpha3_to_alpha2("USA"), Some("US"));
        assert_eq!(country_alpha3_to_alpha2("DEU"), Some("DE"));
        assert_eq!(country_alpha3_to_alpha2("usa"), None);
        assert_eq!(country_alpha3_to_alpha2("US"), None);
        for (a3, a2) in COUNTRY_ALPHA3 {
            assert_eq!(country_alpha2_to_alpha3(a2), Some(a3), "every alpha-2 code has one alpha-3");
        }
        assert_eq!(country_alpha2_to_alpha3("USA"), None);
    }

    #[test]
    fn countries_pack_and_unpack() {
        assert_eq!(pack_country("AA"), Some(0));
        assert_eq!(pack_country("ZZ"), Some(675));
        assert_eq!(unpack_country(pack_country("US").unwrap()), Some(*b"US"));
        assert_eq!(unpack_language(pack_language("ja").unwrap()), Some(*b"ja"));
        assert_eq!(unpack_language(676), None);
        for bad in ["", "U", "USA", "us", "U1", "ÜS"] {
            assert_eq!(pack_country(bad), None, "{bad:?}");
        }
        assert!(is_country_code("DE"));
        assert!(!is_country_code("UK"));
    }

    #[test]
    fn iab_categories_pack_with_their_parent_one_division_away() {
        assert_eq!(pack_iab_category("IAB9"), Some(9000));
        assert_eq!(pack_iab_category("IAB9-30"), Some(9030));
        assert_eq!(pack_iab_category("IAB26-4"), Some(26004));
        assert_eq!(iab_parent(9030), 9000);
        assert_eq!(format_iab_category(9030), "IAB9-30");
        assert_eq!(format_iab_category(9000), "IAB9");
        for bad in
            ["", "IAB", "IAB0", "IAB27", "IAB9-", "IAB9-0", "IAB9-1000", "iab9", "IAB-9", "IAB9-3x", "IAB09x"]
        {
            assert_eq!(pack_iab_category(bad), None, "{bad:?}");
        }
        assert!(is_packed_iab_category(9030));
        assert!(!is_packed_iab_category(27000));
        assert!(!is_packed_iab_category(999));
    }

    #[test]
    fn os_versions_compare_as_numbers() {
        let check = |v: &str, expected: Option<u32>| assert_eq!(pack_os_version(v), expected, "{v}");
        check("14", Some(14 << 16));
        check("14.2", Some(14 << 16 | 2 << 8));
        check("14.2.1", Some(14 << 16 | 2 << 8 | 1));
        check("9.300.1", Some(9 << 16 | 255 << 8 | 1));
        for bad in ["", "14.", ".1", "1.2.3.4", "a", "14.x", "-1", "99999999999"] {
            check(bad, None);
        }
        assert!(pack_os_version("10.0").unwrap() > pack_os_version("9.9.9").unwrap());
        assert_eq!(format_os_version(pack_os_version("17.4.1").unwrap()), "17.4.1");
    }
}

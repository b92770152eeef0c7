//! The privacy signals of a request and the one set of rules both endpoints apply to them:
//! what may be read and written about the user, what may target them, and what events keep.
//!
//! | signal | profile read/write, user key in events | segments and installed apps | assignment by device id |
//! |---|---|---|---|
//! | COPPA (request or app) | no | no | no |
//! | GDPR applies, no consent to purpose 1 | no | no | yes, not kept |
//! | GDPR applies, consent to purpose 1 but not to both 3 and 4 | yes (frequency caps) | no | yes |
//! | limit ad tracking (or ATT short of authorised) | yes, by the publisher's user id only | no | no |
//! | US opt-out (sale, sharing or targeted advertising) | yes (frequency caps; nothing is sold) | no | yes |
//!
//! A zeroed advertising id is no id ([`is_zeroed_ifa`]).
//!
//! GDPR applies where the request says it does; a request that does not say is placed by its
//! device's country: GDPR applies in the European Economic Area and the United Kingdom
//! ([`GDPR_COUNTRIES`]), as the vendor must judge whether it applies.
//!
//! GDPR consent is read from the IAB TCF v2 consent string (see [`tcf_consent`]): purpose 1
//! (store and access information on a device) allows the profile; purposes 3 and 4 (create and
//! use a personalised ads profile) allow targeting on it. With `tcf_vendor_id` configured, the
//! string must also give this vendor consent and no publisher restriction may refuse it those
//! purposes. A missing, empty or unreadable string (a TCF v1 string included) is no consent.
//!
//! The US opt-out comes from the IAB US privacy string (`1?Y?`) or from a GPP string: its US
//! privacy section, the national or any state's section (sale, sharing or targeted advertising
//! opted out), or the Global Privacy Control those sections carry. A GPP string's EU TCF section
//! is read as a TCF consent string; when both are sent, consent is what both grant. A GPP string
//! that cannot be read is taken as an opt-out.

use std::num::NonZeroU16;
use std::str::FromStr;

use adsnap_events::Privacy;
use iab_gpp::sections::us_common::OptOut;
use iab_gpp::sections::{usnat, uspv1, Section, SectionId};
use iab_gpp::v1::GPPString;

/// What a request said about privacy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivacySignals {
    pub coppa: bool,
    pub gdpr_applies: bool,
    /// The TCF consent string gives purpose 1: the profile may be read and written.
    pub gdpr_consent: bool,
    /// The TCF consent string gives purposes 1, 3 and 4: the profile may target the user.
    pub gdpr_personalised_ads: bool,
    pub limit_ad_tracking: bool,
    /// The user opted out of sale, sharing or targeted advertising under US law: the IAB US
    /// privacy string (`1?Y?`) or the GPP string says so (see [`gpp_signals`]).
    pub us_privacy_opt_out: bool,
}

/// A request's privacy fields as sent, before they are read into [`PrivacySignals`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivacyFields<'a> {
    pub coppa: bool,
    /// Whether GDPR applies, as the request says; `None` when it does not say.
    pub gdpr_applies: Option<bool>,
    /// The device's country (ISO 3166-1 alpha-2), which decides whether GDPR applies when the
    /// request does not say.
    pub country: Option<&'a str>,
    pub tcf_consent: Option<&'a str>,
    pub us_privacy: Option<&'a str>,
    pub gpp: Option<&'a str>,
    pub limit_ad_tracking: bool,
    /// This server's vendor id in the IAB Global Vendor List (`tcf_vendor_id`): when set, a
    /// TCF string must give this vendor consent too.
    pub tcf_vendor_id: Option<NonZeroU16>,
}

impl PrivacySignals {
    /// The signals a request's fields carry; GPP and TCF strings are decoded here, once per
    /// request, and a TCF string only when GDPR applies.
    pub fn read(f: PrivacyFields<'_>) -> PrivacySignals {
        let vendor = f.tcf_vendor_id;
        let gpp = f.gpp.filter(|g| !g.is_empty()).map(|g| gpp_signals_cached(g, vendor)).unwrap_or_default();
        let gdpr_applies = f.gdpr_applies.unwrap_or_else(|| f.country.is_some_and(in_gdpr_area));
        let tcf = if gdpr_applies {
            let field = f.tcf_consent.filter(|c| !c.is_empty()).map(|c| tcf_consent_cached(c, vendor));
            match (field, gpp.tcf) {
                (Some(field), Some(section)) => field.and(section),
                (field, section) => field.or(section).unwrap_or_default(),
            }
        } else {
            TcfConsent::default()
        };
        PrivacySignals {
            coppa: f.coppa,
            gdpr_applies,
            gdpr_consent: tcf.storage,
            gdpr_personalised_ads: tcf.personalised_ads,
            limit_ad_tracking: f.limit_ad_tracking,
            us_privacy_opt_out: f.us_privacy.is_some_and(us_privacy_opts_out) || gpp.us_opt_out,
        }
    }

    /// Whether a profile may be read or written and a user key kept in events.
    pub fn profile_allowed(&self) -> bool {
        !self.coppa && (!self.gdpr_applies || self.gdpr_consent)
    }

    /// Whether what is known of the user (segments, installed apps) may target them.
    pub fn personalised(&self) -> bool {
        self.profile_allowed()
            && (!self.gdpr_applies || self.gdpr_personalised_ads)
            && !self.limit_ad_tracking
            && !self.us_privacy_opt_out
    }

    /// The id the user is known by: the publisher's user id, else the advertising id when
    /// device-level tracking is allowed and the id is a real one (see [`is_zeroed_ifa`]).
    pub fn stable_id<'a>(&self, user_id: Option<&'a str>, ifa: Option<&'a str>) -> Option<&'a str> {
        let device_allowed = !self.limit_ad_tracking && !self.coppa;
        user_id
            .filter(|id| !id.is_empty())
            .or(ifa.filter(|id| device_allowed && !id.is_empty() && !is_zeroed_ifa(id)))
    }

    /// The hashed key of the user's profile and events, when one may be kept.
    pub fn user_key(&self, user_id: Option<&str>, ifa: Option<&str>) -> Option<u64> {
        let id = self.stable_id(user_id, ifa).filter(|_| self.profile_allowed())?;
        Some(xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
    }

    /// The signals as events record them.
    pub fn bits(&self) -> Privacy {
        let mut bits = 0;
        for (on, bit) in [
            (self.coppa, Privacy::COPPA),
            (self.gdpr_applies && !self.gdpr_consent, Privacy::GDPR_NO_CONSENT),
            (self.limit_ad_tracking, Privacy::LIMIT_AD_TRACKING),
            (self.us_privacy_opt_out, Privacy::US_PRIVACY_OPT_OUT),
        ] {
            if on {
                bits |= bit;
            }
        }
        Privacy(bits)
    }
}

/// Countries where GDPR, or the United Kingdom's version of it, applies: the European Economic
/// Area and the United Kingdom (ISO 3166-1 alpha-2, sorted).
pub const GDPR_COUNTRIES: [&str; 31] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR", "HU", "IE", "IS",
    "IT", "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// Whether GDPR applies in `country` (ISO 3166-1 alpha-2).
pub fn in_gdpr_area(country: &str) -> bool {
    GDPR_COUNTRIES.binary_search(&country).is_ok()
}

/// Whether an advertising id is the zeroed one (`00000000-0000-0000-0000-000000000000`, with or
/// without dashes) that iOS sends without App Tracking Transparency consent and Android once
/// the user deletes or limits the id. It names no one: keyed on it, every such user would share
/// one profile, one set of frequency caps and one experiment arm.
pub fn is_zeroed_ifa(ifa: &str) -> bool {
    ifa.bytes().all(|b| b == b'0' || b == b'-')
}

/// Whether an IAB US privacy string (`1YNN`: version, notice, opt-out of sale, LSPA) opts out.
pub fn us_privacy_opts_out(us_privacy: &str) -> bool {
    us_privacy.len() == 4 && us_privacy.as_bytes()[2].eq_ignore_ascii_case(&b'y')
}

/// What a TCF v2 consent string allows this server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcfConsent {
    /// Purpose 1, store and access information on a device: the profile may be kept.
    pub storage: bool,
    /// Purposes 1, 3 and 4, create and use a personalised ads profile: it may target the user.
    pub personalised_ads: bool,
}

impl TcfConsent {
    /// What two strings both allow.
    fn and(self, other: TcfConsent) -> TcfConsent {
        TcfConsent {
            storage: self.storage && other.storage,
            personalised_ads: self.personalised_ads && other.personalised_ads,
        }
    }
}

/// Reads an IAB TCF v2 consent string (the TC string a consent tool writes, `CO5rKAAO5rKA...`).
/// A purpose counts when the user consented to it and, with `vendor` given, consented to that
/// vendor and no publisher restriction refuses the vendor the purpose or moves it off consent.
/// A string that cannot be read (a TCF v1 string among them) allows nothing: the most protective
/// reading. Purpose one treatment (purpose 1 not disclosed) is not taken as consent to it.
pub fn tcf_consent(tc: &str, vendor: Option<NonZeroU16>) -> TcfConsent {
    let Some(tcf) = crate::tcf::read(tc, vendor.map_or(0, NonZeroU16::get)) else {
        return TcfConsent::default();
    };
    // Restrictions name vendors, so none restricts when no vendor is asked about.
    let vendor_ok = vendor.is_none() || tcf.vendor_consent;
    let granted = |purpose: u8| tcf.purpose(purpose) && vendor_ok && !tcf.restricted(purpose);
    let storage = granted(1);
    TcfConsent { storage, personalised_ads: storage && granted(3) && granted(4) }
}

/// What a GPP string says that the rules above use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GppSignals {
    /// A US section, or the Global Privacy Control, opts out of sale, sharing or targeted
    /// advertising; or the string could not be read.
    pub us_opt_out: bool,
    /// The string's EU TCF v2 section, read as a TCF consent string.
    pub tcf: Option<TcfConsent>,
}

/// Reads an IAB GPP string (`DBABLA~BVQqAAAAAgA.QA`). An empty one says nothing. One that cannot
/// be read, or a US section of it that cannot, is taken as an opt-out: the user's choice cannot
/// be known, so the most protective reading is the one kept. `vendor` is as for [`tcf_consent`].
pub fn gpp_signals(gpp: &str, vendor: Option<NonZeroU16>) -> GppSignals {
    if gpp.is_empty() {
        return GppSignals::default();
    }
    let Ok(parsed) = GPPString::from_str(gpp) else {
        return GppSignals { us_opt_out: true, tcf: None };
    };
    let mut signals = GppSignals::default();
    for &id in parsed.section_ids() {
        match id {
            SectionId::TcfEuV2 => signals.tcf = parsed.section(id).map(|tc| tcf_consent(tc, vendor)),
            SectionId::TcfEuV1 | SectionId::TcfCaV1 => {}
            _ => signals.us_opt_out |= parsed.decode_section(id).map_or(true, |s| us_opts_out(&s)),
        }
    }
    signals
}

/// Slots of each per-thread cache of decoded strings.
const CONSENT_CACHE_SLOTS: usize = 256;

/// One per-thread cache of decoded consent strings, keyed by the string's length and its
/// 64-bit hash seeded with the vendor id.
type ConsentCache<T> = std::cell::RefCell<[Option<(u64, usize, T)>; CONSENT_CACHE_SLOTS]>;

/// `decode(s)` through `cache`. Decoding a GPP or TCF string costs thousands of instructions
/// (callgrind: about 6,000 for a GPP string's national section, a quarter of a whole ad
/// request); most requests carry one of a few strings (a consent tool's defaults), which the
/// cache answers for the cost of hashing them.
fn cached<T: Copy + 'static>(
    cache: &'static std::thread::LocalKey<ConsentCache<T>>,
    s: &str,
    vendor: Option<NonZeroU16>,
    decode: impl FnOnce() -> T,
) -> T {
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(s.as_bytes(), vendor.map_or(0, |v| u64::from(v.get())));
    let slot = hash as usize % CONSENT_CACHE_SLOTS;
    cache.with_borrow_mut(|cache| match cache[slot] {
        Some((h, len, value)) if h == hash && len == s.len() => value,
        _ => {
            let value = decode();
            cache[slot] = Some((hash, s.len(), value));
            value
        }
    })
}

thread_local! {
    static GPP_CACHE: ConsentCache<GppSignals> = const { std::cell::RefCell::new([None; CONSENT_CACHE_SLOTS]) };
    static TCF_CACHE: ConsentCache<TcfConsent> = const { std::cell::RefCell::new([None; CONSENT_CACHE_SLOTS]) };
}

/// [`gpp_signals`] through a per-thread cache.
pub fn gpp_signals_cached(gpp: &str, vendor: Option<NonZeroU16>) -> GppSignals {
    cached(&GPP_CACHE, gpp, vendor, || gpp_signals(gpp, vendor))
}

/// [`tcf_consent`] through a per-thread cache.
pub fn tcf_consent_cached(tc: &str, vendor: Option<NonZeroU16>) -> TcfConsent {
    cached(&TCF_CACHE, tc, vendor, || tcf_consent(tc, vendor))
}

/// Whether a decoded GPP section opts out of sale, sharing or targeted advertising: its own
/// fields or the Global Privacy Control it carries. Sections of other regions say nothing here.
fn us_opts_out(section: &Section) -> bool {
    macro_rules! any_opted_out {
        ($core:expr; $($field:ident),+) => { $($core.$field == OptOut::OptedOut)||+ };
    }
    let gpc = |gpc: Option<bool>| gpc == Some(true);
    match section {
        Section::UspV1(s) => s.opt_out_sale == uspv1::Flag::Yes,
        Section::UsNat(s) => {
            gpc(s.gpc)
                || match &s.core {
                    usnat::Core::V1(c) => {
                        any_opted_out!(c; sale_opt_out, sharing_opt_out, targeted_advertising_opt_out)
                    }
                    usnat::Core::V2(c) => {
                        any_opted_out!(c; sale_opt_out, sharing_opt_out, targeted_advertising_opt_out)
                    }
                    // A later version this build cannot read: the most protective reading.
                    _ => true,
                }
        }
        Section::UsCa(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, sharing_opt_out),
        Section::UsCo(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsCt(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsDe(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsIa(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsMn(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsMt(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsNe(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsNh(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsNj(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsOr(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsTn(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsTx(s) => gpc(s.gpc) || any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        // These three sections carry no Global Privacy Control.
        Section::UsFl(s) => any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsUt(s) => any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        Section::UsVa(s) => any_opted_out!(s.core; sale_opt_out, targeted_advertising_opt_out),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcf::tests::tc_string;

    fn check(signals: PrivacySignals, profile: bool, personalised: bool, key_from_ifa_only: bool) {
        assert_eq!(signals.profile_allowed(), profile, "{signals:?}");
        assert_eq!(signals.personalised(), personalised, "{signals:?}");
        assert_eq!(signals.user_key(None, Some("ifa")).is_some(), key_from_ifa_only, "{signals:?}");
        assert_eq!(signals.user_key(Some("u"), Some("ifa")).is_some(), profile, "{signals:?}");
        assert_eq!(signals.bits().allows_user_key(), profile, "{signals:?}");
    }

    #[test]
    fn the_rules_of_the_table() {
        let none = PrivacySignals::default();
        check(none, true, true, true);
        check(PrivacySignals { coppa: true, ..none }, false, false, false);
        check(PrivacySignals { gdpr_applies: true, ..none }, false, false, false);
        check(PrivacySignals { gdpr_applies: true, gdpr_consent: true, ..none }, true, false, true);
        let consented =
            PrivacySignals { gdpr_applies: true, gdpr_consent: true, gdpr_personalised_ads: true, ..none };
        check(consented, true, true, true);
        check(PrivacySignals { limit_ad_tracking: true, ..none }, true, false, false);
        check(PrivacySignals { us_privacy_opt_out: true, ..none }, true, false, true);
    }

    #[test]
    fn stable_ids_prefer_the_publishers_and_skip_empty_and_zeroed_ones() {
        let none = PrivacySignals::default();
        assert_eq!(none.stable_id(Some("u"), Some("i")), Some("u"));
        assert_eq!(none.stable_id(Some(""), Some("i")), Some("i"));
        for zeroed in ["00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000"] {
            assert_eq!(none.stable_id(None, Some(zeroed)), None);
            assert_eq!(none.user_key(None, Some(zeroed)), None);
            assert_eq!(none.stable_id(Some("u"), Some(zeroed)), Some("u"));
        }
        let real = "00000000-0000-0000-0000-000000000001";
        assert_eq!(none.stable_id(None, Some(real)), Some(real));
        let lat = PrivacySignals { limit_ad_tracking: true, ..none };
        assert_eq!(lat.stable_id(None, Some("i")), None);
        assert_eq!(lat.stable_id(Some("u"), Some("i")), Some("u"));
    }

    const VENDOR: Option<NonZeroU16> = NonZeroU16::new(42);

    #[test]
    fn tcf_strings() {
        let none = TcfConsent::default();
        let storage = TcfConsent { storage: true, personalised_ads: false };
        let all = TcfConsent { storage: true, personalised_ads: true };
        let cases = [
            // Purposes alone, no vendor configured.
            (tc_string(&[1, 2, 3, 4, 7], &[], &[]), None, all),
            (tc_string(&[1, 2, 7], &[], &[]), None, storage),
            (tc_string(&[1, 3], &[], &[]), None, storage),
            (tc_string(&[2, 3, 4], &[], &[]), None, none),
            (tc_string(&[], &[], &[]), None, none),
            // With a vendor: its consent is needed too.
            (tc_string(&[1, 3, 4], &[7, 42], &[]), VENDOR, all),
            (tc_string(&[1, 3, 4], &[7, 41, 43], &[]), VENDOR, none),
            (tc_string(&[1, 3, 4], &[7, 41, 43], &[]), None, all),
            // Publisher restrictions: not allowed (0) and legitimate interest only (2) refuse a
            // purpose, consent required (1) does not; on another vendor, nothing.
            (tc_string(&[1, 3, 4], &[42], &[(3, 0, 42)]), VENDOR, storage),
            (tc_string(&[1, 3, 4], &[42], &[(1, 2, 42)]), VENDOR, none),
            (tc_string(&[1, 3, 4], &[42], &[(1, 1, 42)]), VENDOR, all),
            (tc_string(&[1, 3, 4], &[42], &[(1, 0, 7)]), VENDOR, all),
            // Unreadable: empty, cut short, not base64, a TCF v1 string.
            (String::new(), None, none),
            (tc_string(&[1, 3, 4], &[], &[])[..20].to_owned(), None, none),
            ("not a consent string!".to_owned(), None, none),
            ("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA".to_owned(), None, none),
        ];
        for (tc, vendor, expected) in &cases {
            assert_eq!(tcf_consent(tc, *vendor), *expected, "{tc:?} for {vendor:?}");
        }
        // Through the cache, twice over: the same answers, the vendor part of the key.
        for (tc, vendor, expected) in cases.iter().chain(cases.iter()) {
            assert_eq!(tcf_consent_cached(tc, *vendor), *expected, "{tc:?} for {vendor:?}");
        }
    }

    #[test]
    fn a_string_from_the_tcf_documentation_reads_as_it_does_there() {
        // The iab_gpp crate's example: consent to purpose 3 and to vendor 755.
        let tc = "CPXuQIAPXuQIAAfKABENB-CgACAAAAAAAAYgF5wAQF5gAAAA";
        let parsed = iab_gpp::sections::tcfeuv2::TcfEuV2::from_str(tc).unwrap();
        assert!(parsed.core.purpose_consents.contains(&3) && parsed.core.vendor_consents.contains(&755));
        let expected = tcf_consent(tc, None);
        let with_vendor = |v| tcf_consent(tc, NonZeroU16::new(v));
        assert_eq!(with_vendor(755), expected);
        assert_eq!(with_vendor(756), TcfConsent::default());
    }

    /// GPP strings with one section each, built from the specification's examples.
    const US_NATIONAL: &str = "DBABLA~BVQqAAAAAgA";
    /// The same with sale, sharing and targeted advertising opted out.
    const US_NATIONAL_OPTED_OUT: &str = "DBABLA~BVQVAAAAAgA";

    #[test]
    fn gpp_strings() {
        let nothing = GppSignals::default();
        let opt_out = GppSignals { us_opt_out: true, tcf: None };
        let all = TcfConsent { storage: true, personalised_ads: true };
        let tcf_eu = format!("DBABMA~{}", tc_string(&[1, 3, 4], &[42], &[]));
        let cases = [
            ("".to_owned(), nothing),
            (US_NATIONAL.to_owned(), nothing),
            // Global Privacy Control off, then on.
            ("DBABLA~BVQqAAAAAgA.QA".to_owned(), nothing),
            ("DBABBg~BAAAAACA.YA".to_owned(), opt_out),
            (US_NATIONAL_OPTED_OUT.to_owned(), opt_out),
            // California: no opt-out, sale opted out, sharing opted out.
            ("DBABBg~BAAAAACA".to_owned(), nothing),
            ("DBABBg~BAQAAACA".to_owned(), opt_out),
            ("DBABBg~BAEAAACA".to_owned(), opt_out),
            // The US privacy string as a section.
            ("DBABTA~1YNN".to_owned(), nothing),
            ("DBABTA~1YYN".to_owned(), opt_out),
            (tcf_eu.clone(), GppSignals { us_opt_out: false, tcf: Some(all) }),
            // A TCF section that grants nothing is still a TCF section.
            (
                format!("DBABMA~{}", tc_string(&[], &[], &[])),
                GppSignals { tcf: Some(TcfConsent::default()), ..nothing },
            ),
            // Two sections: TCF and the US privacy string.
            (
                format!("{}~1YNN", tcf_eu.replace("DBABMA", "DBACNY")),
                GppSignals { tcf: Some(all), ..nothing },
            ),
            // Unreadable: not a GPP header, a TCF string where the GPP one goes, a cut section.
            ("garbage".to_owned(), opt_out),
            (tc_string(&[1], &[], &[]), opt_out),
            ("DBABLA~BV".to_owned(), opt_out),
        ];
        for (gpp, expected) in &cases {
            assert_eq!(gpp_signals(gpp, VENDOR), *expected, "{gpp:?}");
        }
        // Through the cache, twice over, the answers are the same.
        for (gpp, expected) in cases.iter().chain(cases.iter()) {
            assert_eq!(gpp_signals_cached(gpp, VENDOR), *expected, "{gpp:?}");
        }
        // The vendor is part of the cache's key: without the vendor's consent, nothing.
        let no_vendor = gpp_signals_cached(&tcf_eu, NonZeroU16::new(7));
        assert_eq!(no_vendor.tcf, Some(TcfConsent::default()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any GPP text a client sends, and any cut of or change to a valid string, is read or
        /// taken as an opt-out, never a panic.
        #[test]
        fn any_gpp_text_is_read_or_refused(
            text in "[A-Za-z0-9_.~+/=-]{0,120}",
            which in 0usize..5,
            cut in 0usize..200,
            flip in 0usize..200,
        ) {
            let _ = gpp_signals(&text, VENDOR);
            let valid = [
                US_NATIONAL.to_owned(),
                "DBABLA~BVQqAAAAAgA.QA".to_owned(),
                "DBABBg~BAQAAACA".to_owned(),
                "DBABTA~1YNN".to_owned(),
                format!("DBACNY~{}~1YNN", tc_string(&[1, 3, 4], &[42], &[(2, 0, 42)])),
            ];
            let gpp = &valid[which];
            let _ = gpp_signals(&gpp[..cut.min(gpp.len())], VENDOR);
            let mut changed = gpp.clone().into_bytes();
            let at = flip % changed.len();
            changed[at] = if changed[at] == b'A' { b'_' } else { b'A' };
            let _ = gpp_signals(std::str::from_utf8(&changed).unwrap(), VENDOR);
        }
    }

    #[test]
    fn consent_comes_from_both_tcf_places_and_only_under_gdpr() {
        let gdpr =
            PrivacyFields { gdpr_applies: Some(true), tcf_vendor_id: VENDOR, ..PrivacyFields::default() };
        let read = |tcf: Option<&str>, gpp: Option<&str>| {
            let s = PrivacySignals::read(PrivacyFields { tcf_consent: tcf, gpp, ..gdpr });
            (s.profile_allowed(), s.personalised())
        };
        let all = tc_string(&[1, 3, 4], &[42], &[]);
        let storage = tc_string(&[1], &[42], &[]);
        let other_vendor = tc_string(&[1, 3, 4], &[7], &[]);
        let in_gpp = |tc: &str| format!("DBABMA~{tc}");
        assert_eq!(read(None, None), (false, false));
        assert_eq!(read(Some(""), None), (false, false));
        assert_eq!(read(Some(&all), None), (true, true));
        assert_eq!(read(Some(&storage), None), (true, false));
        assert_eq!(read(Some(&other_vendor), None), (false, false));
        assert_eq!(read(None, Some(&in_gpp(&all))), (true, true));
        assert_eq!(read(None, Some(&in_gpp(&storage))), (true, false));
        // Both sent: what both grant.
        assert_eq!(read(Some(&all), Some(&in_gpp(&all))), (true, true));
        assert_eq!(read(Some(&all), Some(&in_gpp(&storage))), (true, false));
        assert_eq!(read(Some(&storage), Some(&in_gpp(&all))), (true, false));
        assert_eq!(read(Some(&all), Some(&in_gpp(&other_vendor))), (false, false));
        // Where GDPR does not apply, the string changes nothing.
        let outside = PrivacyFields { gdpr_applies: Some(false), tcf_consent: Some(&other_vendor), ..gdpr };
        let outside = PrivacySignals::read(outside);
        assert!(outside.profile_allowed() && outside.personalised() && outside.bits().allows_user_key());
    }

    #[test]
    fn gdpr_applies_where_the_request_says_else_by_the_device_country() {
        let applies = |gdpr_applies: Option<bool>, country: Option<&str>| {
            PrivacySignals::read(PrivacyFields { gdpr_applies, country, ..PrivacyFields::default() })
                .gdpr_applies
        };
        assert!(applies(None, Some("DE")) && applies(None, Some("GB")) && applies(None, Some("NO")));
        assert!(!applies(None, Some("US")) && !applies(None, Some("CH")) && !applies(None, None));
        assert!(!applies(Some(false), Some("DE")));
        assert!(applies(Some(true), Some("US")) && applies(Some(true), None));
        assert!(GDPR_COUNTRIES.is_sorted(), "in_gdpr_area searches them");
        assert!(GDPR_COUNTRIES.iter().all(|c| in_gdpr_area(c)));
    }

    #[test]
    fn a_gpp_string_adds_to_the_other_fields() {
        let us =
            PrivacySignals::read(PrivacyFields { gpp: Some(US_NATIONAL_OPTED_OUT), ..Default::default() });
        assert!(us.us_privacy_opt_out && us.profile_allowed() && !us.personalised());
        // An opt-out in either field holds: GPP does not undo the US privacy string.
        let both = PrivacyFields { us_privacy: Some("1YYN"), gpp: Some(US_NATIONAL), ..Default::default() };
        assert!(PrivacySignals::read(both).us_privacy_opt_out);
    }

    #[test]
    fn us_privacy_strings() {
        assert!(us_privacy_opts_out("1YYN"));
        assert!(!us_privacy_opts_out("1YNN"));
        assert!(!us_privacy_opts_out("1---"));
        assert!(!us_privacy_opts_out("garbage"));
    }
}

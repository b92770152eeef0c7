//! The privacy signals of a request and the one set of rules both endpoints apply to them:
//! what may be read and written about the user, what may target them, and what events keep.
//!
//! | signal | profile read/write, user key in events | segments and installed apps | assignment by device id |
//! |---|---|---|---|
//! | COPPA (request or app) | no | no | no |
//! | GDPR applies, no consent string | no | no | yes, not kept |
//! | limit ad tracking | yes, by the publisher's user id only | no | no |
//! | US opt-out (sale, sharing or targeted advertising) | yes (frequency caps; nothing is sold) | no | yes |
//!
//! The US opt-out comes from the IAB US privacy string (`1?Y?`) or from a GPP string: its US
//! privacy section, the national or any state's section (sale, sharing or targeted advertising
//! opted out), or the Global Privacy Control those sections carry. A GPP string's EU TCF section
//! counts as a TCF consent string. A GPP string that cannot be read is taken as an opt-out.

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
    /// A non-empty TCF consent string was sent.
    pub gdpr_consent: bool,
    pub limit_ad_tracking: bool,
    /// The user opted out of sale, sharing or targeted advertising under US law: the IAB US
    /// privacy string (`1?Y?`) or the GPP string says so (see [`gpp_signals`]).
    pub us_privacy_opt_out: bool,
}

/// A request's privacy fields as sent, before they are read into [`PrivacySignals`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivacyFields<'a> {
    pub coppa: bool,
    pub gdpr_applies: bool,
    pub tcf_consent: Option<&'a str>,
    pub us_privacy: Option<&'a str>,
    pub gpp: Option<&'a str>,
    pub limit_ad_tracking: bool,
}

impl PrivacySignals {
    /// The signals a request's fields carry; a GPP string is decoded here, once per request.
    pub fn read(f: PrivacyFields<'_>) -> PrivacySignals {
        let gpp = f.gpp.map(gpp_signals_cached).unwrap_or_default();
        PrivacySignals {
            coppa: f.coppa,
            gdpr_applies: f.gdpr_applies,
            gdpr_consent: f.tcf_consent.is_some_and(|c| !c.is_empty()) || gpp.tcf_consent,
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
        self.profile_allowed() && !self.limit_ad_tracking && !self.us_privacy_opt_out
    }

    /// The id the user is known by: the publisher's user id, else the advertising id when
    /// device-level tracking is allowed.
    pub fn stable_id<'a>(&self, user_id: Option<&'a str>, ifa: Option<&'a str>) -> Option<&'a str> {
        let device_allowed = !self.limit_ad_tracking && !self.coppa;
        user_id.filter(|id| !id.is_empty()).or(ifa.filter(|id| device_allowed && !id.is_empty()))
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

/// Whether an IAB US privacy string (`1YNN`: version, notice, opt-out of sale, LSPA) opts out.
pub fn us_privacy_opts_out(us_privacy: &str) -> bool {
    us_privacy.len() == 4 && us_privacy.as_bytes()[2].eq_ignore_ascii_case(&b'y')
}

/// What a GPP string says that the rules above use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GppSignals {
    /// A US section, or the Global Privacy Control, opts out of sale, sharing or targeted
    /// advertising; or the string could not be read.
    pub us_opt_out: bool,
    /// The string carries an EU TCF v2 section: a consent string, as `tcf_consent` is.
    pub tcf_consent: bool,
}

/// Reads an IAB GPP string (`DBABLA~BVQqAAAAAgA.QA`). An empty one says nothing. One that cannot
/// be read, or a US section of it that cannot, is taken as an opt-out: the user's choice cannot
/// be known, so the most protective reading is the one kept.
pub fn gpp_signals(gpp: &str) -> GppSignals {
    if gpp.is_empty() {
        return GppSignals::default();
    }
    let Ok(parsed) = GPPString::from_str(gpp) else {
        return GppSignals { us_opt_out: true, tcf_consent: false };
    };
    let mut signals = GppSignals::default();
    for &id in parsed.section_ids() {
        match id {
            SectionId::TcfEuV2 => signals.tcf_consent |= parsed.section(id).is_some_and(|s| !s.is_empty()),
            SectionId::TcfEuV1 | SectionId::TcfCaV1 => {}
            _ => signals.us_opt_out |= parsed.decode_section(id).map_or(true, |s| us_opts_out(&s)),
        }
    }
    signals
}

/// Slots of the per-thread cache of [`gpp_signals_cached`].
const GPP_CACHE_SLOTS: usize = 256;

/// [`gpp_signals`] through a small per-thread cache, keyed by the string's length and 64-bit
/// hash. Decoding a GPP string costs about 6,000 instructions (callgrind, the national section),
/// a quarter of a whole ad request; most requests carry one of a few strings (a consent tool's
/// defaults), which the cache answers for the cost of hashing them.
pub fn gpp_signals_cached(gpp: &str) -> GppSignals {
    type Slot = Option<(u64, usize, GppSignals)>;
    thread_local! {
        static CACHE: std::cell::RefCell<[Slot; GPP_CACHE_SLOTS]> =
            const { std::cell::RefCell::new([None; GPP_CACHE_SLOTS]) };
    }
    let hash = xxhash_rust::xxh3::xxh3_64(gpp.as_bytes());
    let slot = hash as usize % GPP_CACHE_SLOTS;
    CACHE.with_borrow_mut(|cache| match cache[slot] {
        Some((h, len, signals)) if h == hash && len == gpp.len() => signals,
        _ => {
            let signals = gpp_signals(gpp);
            cache[slot] = Some((hash, gpp.len(), signals));
            signals
        }
    })
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
        check(PrivacySignals { gdpr_applies: true, gdpr_consent: true, ..none }, true, true, true);
        check(PrivacySignals { limit_ad_tracking: true, ..none }, true, false, false);
        check(PrivacySignals { us_privacy_opt_out: true, ..none }, true, false, true);
    }

    #[test]
    fn stable_ids_prefer_the_publishers_and_skip_empty_ones() {
        let none = PrivacySignals::default();
        assert_eq!(none.stable_id(Some("u"), Some("i")), Some("u"));
        assert_eq!(none.stable_id(Some(""), Some("i")), Some("i"));
        let lat = PrivacySignals { limit_ad_tracking: true, ..none };
        assert_eq!(lat.stable_id(None, Some("i")), None);
        assert_eq!(lat.stable_id(Some("u"), Some("i")), Some("u"));
    }

    /// GPP strings with one section each, built from the specification's examples.
    const TCF_EU: &str = "DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";
    const US_NATIONAL: &str = "DBABLA~BVQqAAAAAgA";
    /// The same with sale, sharing and targeted advertising opted out.
    const US_NATIONAL_OPTED_OUT: &str = "DBABLA~BVQVAAAAAgA";

    #[test]
    fn gpp_strings() {
        let nothing = GppSignals::default();
        let opt_out = GppSignals { us_opt_out: true, tcf_consent: false };
        let cases = [
            ("", nothing),
            (US_NATIONAL, nothing),
            // Global Privacy Control off, then on.
            ("DBABLA~BVQqAAAAAgA.QA", nothing),
            ("DBABBg~BAAAAACA.YA", opt_out),
            (US_NATIONAL_OPTED_OUT, opt_out),
            // California: no opt-out, sale opted out, sharing opted out.
            ("DBABBg~BAAAAACA", nothing),
            ("DBABBg~BAQAAACA", opt_out),
            ("DBABBg~BAEAAACA", opt_out),
            // The US privacy string as a section.
            ("DBABTA~1YNN", nothing),
            ("DBABTA~1YYN", opt_out),
            (TCF_EU, GppSignals { us_opt_out: false, tcf_consent: true }),
            // Two sections: TCF and the US privacy string.
            (
                "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN",
                GppSignals { tcf_consent: true, ..nothing },
            ),
            // Unreadable: not a GPP header, a TCF string where the GPP one goes, a cut section.
            ("garbage", opt_out),
            ("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", opt_out),
            ("DBABLA~BV", opt_out),
        ];
        for (gpp, expected) in cases {
            assert_eq!(gpp_signals(gpp), expected, "{gpp:?}");
        }
        // Through the cache, twice over, the answers are the same.
        for (gpp, expected) in cases.iter().chain(cases.iter()) {
            assert_eq!(gpp_signals_cached(gpp), *expected, "{gpp:?}");
        }
    }

    #[test]
    fn a_gpp_string_adds_to_the_other_fields() {
        let fields = PrivacyFields { gdpr_applies: true, ..PrivacyFields::default() };
        assert!(!PrivacySignals::read(fields).profile_allowed());
        let with_tcf = PrivacySignals::read(PrivacyFields { gpp: Some(TCF_EU), ..fields });
        assert!(with_tcf.profile_allowed() && with_tcf.personalised());
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

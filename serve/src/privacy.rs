//! The privacy signals of a request and the one set of rules both endpoints apply to them:
//! what may be read and written about the user, what may target them, and what events keep.
//!
//! | signal | profile read/write, user key in events | segments and installed apps | assignment by device id |
//! |---|---|---|---|
//! | COPPA (request or app) | no | no | no |
//! | GDPR applies, no consent string | no | no | yes, not kept |
//! | limit ad tracking | yes, by the publisher's user id only | no | no |
//! | US privacy opt-out of sale | yes (nothing is sold) | yes | yes |

use adsnap_events::Privacy;

/// What a request said about privacy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivacySignals {
    pub coppa: bool,
    pub gdpr_applies: bool,
    /// A non-empty TCF consent string was sent.
    pub gdpr_consent: bool,
    pub limit_ad_tracking: bool,
    /// The IAB US privacy string says the user opted out of sale (`1?Y?`).
    pub us_privacy_opt_out: bool,
}

impl PrivacySignals {
    /// Whether a profile may be read or written and a user key kept in events.
    pub fn profile_allowed(&self) -> bool {
        !self.coppa && (!self.gdpr_applies || self.gdpr_consent)
    }

    /// Whether what is known of the user (segments, installed apps) may target them.
    pub fn personalised(&self) -> bool {
        self.profile_allowed() && !self.limit_ad_tracking
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
        check(PrivacySignals { us_privacy_opt_out: true, ..none }, true, true, true);
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

    #[test]
    fn us_privacy_strings() {
        assert!(us_privacy_opts_out("1YYN"));
        assert!(!us_privacy_opts_out("1YNN"));
        assert!(!us_privacy_opts_out("1---"));
        assert!(!us_privacy_opts_out("garbage"));
    }
}

//! The event: one compact record per decision, notice or install. Its fields are the contract
//! between the server that writes events and the analysts (and `abtest`) who read them.
//!
//! Money is in micros of `currency` (1 USD = 1 000 000). Ids are the catalog's; `0` means
//! "none" for the numeric ids and `""` for the string ids (a no-fill decision has no campaign;
//! a tracking notice knows its campaign and creative from its token, not the app it ran in).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum EventKind {
    /// The server answered an ad request or one OpenRTB impression: filled (a campaign) or not.
    Decision = 1,
    /// The ad was shown (the SDK's impression URL, or an exchange's `burl` for billing).
    Impression = 2,
    Click = 3,
    /// OpenRTB win notice (`nurl`).
    Win = 4,
    /// OpenRTB billing notice (`burl`).
    Bill = 5,
    /// OpenRTB loss notice (`lurl`).
    Loss = 6,
    /// An install postback from the measurement partner.
    Install = 7,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Decision,
        EventKind::Impression,
        EventKind::Click,
        EventKind::Win,
        EventKind::Bill,
        EventKind::Loss,
        EventKind::Install,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The kind [`EventKind::name`] names.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Impression => "impression",
            EventKind::Click => "click",
            EventKind::Win => "win",
            EventKind::Bill => "bill",
            EventKind::Loss => "loss",
            EventKind::Install => "install",
        }
    }
}

/// Where the request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Channel {
    /// `POST /v1/ad` from a publisher's SDK.
    Sdk = 1,
    /// `POST /openrtb2/bid` from an exchange.
    OpenRtb = 2,
    /// A postback from a measurement partner.
    Partner = 3,
}

/// The privacy signals the request carried, as bits. Where `COPPA` or `GDPR_NO_CONSENT` is set,
/// the event carries no user key at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Privacy(pub u8);

impl Privacy {
    pub const COPPA: u8 = 1;
    pub const GDPR_NO_CONSENT: u8 = 1 << 1;
    pub const LIMIT_AD_TRACKING: u8 = 1 << 2;
    pub const US_PRIVACY_OPT_OUT: u8 = 1 << 3;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Whether a user key may be recorded at all.
    pub fn allows_user_key(self) -> bool {
        !self.has(Privacy::COPPA) && !self.has(Privacy::GDPR_NO_CONSENT)
    }
}

/// One event. The string ids borrow from the snapshot when the server writes and are owned
/// when a reader decodes, hence the `Cow`s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Unique, and the same when the same event is sent again (a retried notice, a resend after
    /// a crash): replication deduplicates on it. Derived from the request id and the impression
    /// for decisions, from the signed token for notices, from the partner's id for installs.
    pub event_id: u128,
    pub kind: EventKind,
    pub time_unix_ms: i64,
    /// The ad request this event belongs to: the decision's id, carried by its tracking tokens.
    pub request_id: u128,
    /// The snapshot the decision was made from (the header's `snapshot_id`).
    pub snapshot_id: u64,
    /// `adsnap_abtest::Assignment::code()`: staging, control, or experiment and arm, and
    /// whether the user was anonymous (assigned per request).
    pub assignment_code: u128,
    pub channel: Channel,
    pub app_id: Cow<'a, str>,
    pub ad_unit_id: Cow<'a, str>,
    pub campaign_id: u32,
    pub creative_id: u32,
    /// The price this event is about: the bid (eCPM) for a decision, the clearing price for a
    /// win or bill notice.
    pub price_micros: i64,
    /// What this event earns: a CPM impression its eCPM / 1000, a CPC click or CPI install its
    /// bid, an OpenRTB bill notice the clearing price / 1000; zero otherwise. Summing it over
    /// events gives revenue without double counting.
    pub revenue_micros: i64,
    /// ISO 4217, upper case.
    pub currency: [u8; 3],
    /// `adsnap_snapshot::codes::pack_country`, 0 when unknown.
    pub country: u16,
    /// `adsnap_snapshot::schema::Os as u8 + 1` (1 Android, 2 iOS), 0 when unknown.
    pub os: u8,
    /// xxh3-64 of the user or device id; `None` when there was none or privacy forbids it.
    pub user_key: Option<u64>,
    pub privacy: Privacy,
    /// For a decision without a campaign, why (the server's no-fill reason code); else 0.
    pub no_fill_reason: u8,
    /// The request was a test (an exchange's OpenRTB `test` 1): nothing in it is billable,
    /// its events earn no revenue, and analyses leave them out. False in version 1 records (and
    /// when absent from JSON written before the field).
    #[serde(default)]
    pub test: bool,
}

impl Event<'_> {
    /// The same event owning its strings, for keeping past the snapshot it borrows from.
    pub fn into_owned(self) -> Event<'static> {
        Event {
            app_id: Cow::Owned(self.app_id.into_owned()),
            ad_unit_id: Cow::Owned(self.ad_unit_id.into_owned()),
            ..self
        }
    }

    /// Whether this decision filled.
    pub fn filled(&self) -> bool {
        self.kind == EventKind::Decision && self.campaign_id != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_round_trip_and_reject_unknown() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_code(kind.code()), Some(kind));
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(EventKind::from_code(0), None);
        assert_eq!(EventKind::from_code(8), None);
        assert_eq!(EventKind::from_name("Decision"), None);
    }

    #[test]
    fn privacy_withholds_user_key_for_coppa_and_missing_consent() {
        assert!(Privacy(0).allows_user_key());
        assert!(Privacy(Privacy::LIMIT_AD_TRACKING).allows_user_key());
        assert!(!Privacy(Privacy::COPPA).allows_user_key());
        assert!(!Privacy(Privacy::GDPR_NO_CONSENT).allows_user_key());
    }

    #[test]
    fn json_names_are_snake_case() {
        let json = serde_json::to_string(&EventKind::Impression).unwrap();
        assert_eq!(json, "\"impression\"");
        assert_eq!(serde_json::to_string(&Channel::OpenRtb).unwrap(), "\"open_rtb\"");
    }
}

//! The JSON Lines form of a profile: what `adsnap profiles load` reads, and `get` and `gen`
//! print. Codes are written as text (`"US"`, `"en"`, `"ios"`), installed apps as bundle ids
//! (hashed on import) or as hashes (what a stored profile can give back).

use adsnap_snapshot::{key_hash, pack_country, pack_language, unpack_country, unpack_language};
use serde::{Deserialize, Serialize};

use crate::profile::{os, FieldsError, FrequencyCounter, Profile, ProfileFields, UserKey};

/// One line of a profiles file.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileLine {
    /// The raw user or device id; hashed with xxh3_64 on import and never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user key as 16 hex digits, for profiles whose raw id is not at hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// ISO 3166-1 alpha-2, uppercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// ISO 639-1, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `android` or `ios`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<u32>,
    /// Installed app bundle ids (`com.example.game`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<String>,
    /// Installed apps as `key_hash(bundle)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed_hashes: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frequency: Vec<CounterLine>,
    /// Absent: the time of the import (an imported profile counts as seen then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_unix_s: Option<i64>,
    #[serde(default)]
    pub n_impressions: u32,
    #[serde(default)]
    pub n_clicks: u32,
    #[serde(default)]
    pub n_installs: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CounterLine {
    pub campaign_id: u32,
    /// 0 for a lifetime counter.
    pub period_s: u32,
    pub window_start_unix_s: i64,
    pub impressions: u32,
}

/// Why a line is not a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("{0}")]
    Json(String),
    #[error("needs exactly one of `user` (a raw id) and `user_key` (16 hex digits)")]
    NoUser,
    #[error("user_key {0:?} is not 16 hex digits")]
    UserKey(String),
    #[error("country {0:?} is not an ISO 3166-1 alpha-2 code")]
    Country(String),
    #[error("language {0:?} is not an ISO 639-1 code")]
    Language(String),
    #[error("os {0:?} is not `android` or `ios`")]
    Os(String),
    #[error("{0}")]
    Fields(#[from] FieldsError),
}

/// Parses one line of a profiles file; a line without `last_seen_unix_s` is seen at `now_unix_s`.
pub fn parse_line(line: &str, now_unix_s: i64) -> Result<(UserKey, Profile), LineError> {
    let parsed: ProfileLine = serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    parsed.into_profile(now_unix_s)
}

fn parse_os(name: &str) -> Result<u8, LineError> {
    match name {
        "android" => Ok(os::ANDROID),
        "ios" => Ok(os::IOS),
        "unknown" => Ok(os::UNKNOWN),
        other => Err(LineError::Os(other.to_string())),
    }
}

fn os_name(code: u8) -> Option<String> {
    match code {
        os::ANDROID => Some("android".into()),
        os::IOS => Some("ios".into()),
        _ => None,
    }
}

impl ProfileLine {
    pub fn key(&self) -> Result<UserKey, LineError> {
        match (&self.user, &self.user_key) {
            (Some(user), None) => Ok(UserKey::of_id(user)),
            (None, Some(hex)) if hex.len() == 16 => {
                u64::from_str_radix(hex, 16).map(UserKey).map_err(|_| LineError::UserKey(hex.clone()))
            }
            (None, Some(hex)) => Err(LineError::UserKey(hex.clone())),
            _ => Err(LineError::NoUser),
        }
    }

    pub fn into_profile(self, now_unix_s: i64) -> Result<(UserKey, Profile), LineError> {
        let key = self.key()?;
        let country = match &self.country {
            Some(c) if adsnap_snapshot::is_country_code(c) => pack_country(c),
            Some(c) => return Err(LineError::Country(c.clone())),
            None => None,
        };
        let language = match &self.language {
            Some(l) if adsnap_snapshot::is_language_code(l) => pack_language(l),
            Some(l) => return Err(LineError::Language(l.clone())),
            None => None,
        };
        let os = self.os.as_deref().map(parse_os).transpose()?.unwrap_or(os::UNKNOWN);
        let mut installed = self.installed_hashes;
        installed.extend(self.installed.iter().map(|bundle| key_hash(bundle)));
        let frequency = self
            .frequency
            .iter()
            .map(|c| FrequencyCounter {
                campaign_id: c.campaign_id,
                period_s: c.period_s,
                window_start_unix_s: c.window_start_unix_s,
                n_impressions: c.impressions,
            })
            .collect();
        let fields = ProfileFields {
            country,
            language,
            os,
            last_seen_unix_s: self.last_seen_unix_s.unwrap_or(now_unix_s),
            n_impressions: self.n_impressions,
            n_clicks: self.n_clicks,
            n_installs: self.n_installs,
            segments: self.segments,
            installed,
            frequency,
        };
        Ok((key, Profile::from_fields(fields)?))
    }

    /// The line for a stored profile (installed apps as hashes: bundle ids are not stored).
    pub fn from_profile(key: UserKey, profile: &Profile) -> ProfileLine {
        let letters = |packed: Option<[u8; 2]>| String::from_utf8(packed?.to_vec()).ok();
        ProfileLine {
            user: None,
            user_key: Some(format!("{:016x}", key.0)),
            country: letters(profile.country().and_then(unpack_country)),
            language: letters(profile.language().and_then(unpack_language)),
            os: os_name(profile.os()),
            segments: profile.segments().to_vec(),
            installed: Vec::new(),
            installed_hashes: profile.installed().to_vec(),
            frequency: profile
                .frequency_counters()
                .iter()
                .map(|c| CounterLine {
                    campaign_id: c.campaign_id,
                    period_s: c.period_s,
                    window_start_unix_s: c.window_start_unix_s,
                    impressions: c.n_impressions,
                })
                .collect(),
            last_seen_unix_s: Some(profile.last_seen_unix_s()),
            n_impressions: profile.n_impressions(),
            n_clicks: profile.n_clicks(),
            n_installs: profile.n_installs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    fn check(line: &str, expected: Result<(), LineError>) {
        assert_eq!(parse_line(line, NOW).map(|_| ()), expected, "{line}");
    }

    #[test]
    fn lines_parse_or_say_why_not() {
        check(
            r#"{"user":"gaid-1","country":"US","language":"en","os":"android","segments":[3,1],"installed":["com.a"]}"#,
            Ok(()),
        );
        check(r#"{"user_key":"00000000000000ff"}"#, Ok(()));
        check(r#"{}"#, Err(LineError::NoUser));
        check(r#"{"user":"a","user_key":"00000000000000ff"}"#, Err(LineError::NoUser));
        check(r#"{"user_key":"ff"}"#, Err(LineError::UserKey("ff".into())));
        check(r#"{"user":"a","country":"ZZ"}"#, Err(LineError::Country("ZZ".into())));
        check(r#"{"user":"a","language":"EN"}"#, Err(LineError::Language("EN".into())));
        check(r#"{"user":"a","os":"symbian"}"#, Err(LineError::Os("symbian".into())));
        assert!(
            matches!(parse_line(r#"{"user":"a","colour":1}"#, NOW), Err(LineError::Json(m)) if m.contains("colour"))
        );
        let many: Vec<u32> = (0..2000).collect();
        let line = serde_json::json!({ "user": "a", "segments": many }).to_string();
        assert!(matches!(
            parse_line(&line, NOW),
            Err(LineError::Fields(FieldsError::TooManySegments { .. }))
        ));
    }

    #[test]
    fn a_printed_profile_loads_back_to_the_same_profile() {
        let line = r#"{"user":"idfa-9","country":"FR","language":"fr","os":"ios","segments":[7],"installed":["com.b","com.a"],
            "frequency":[{"campaign_id":4,"period_s":3600,"window_start_unix_s":7200,"impressions":2}],"last_seen_unix_s":9000,"n_impressions":5}"#;
        let (key, profile) = parse_line(line, NOW).unwrap();
        assert_eq!(profile.last_seen_unix_s(), 9000);
        assert_eq!(parse_line(r#"{"user":"b"}"#, NOW).unwrap().1.last_seen_unix_s(), NOW);
        assert_eq!(key, UserKey::of_id("idfa-9"));
        assert!(profile.has_installed(key_hash("com.a")));
        let printed = serde_json::to_string(&ProfileLine::from_profile(key, &profile)).unwrap();
        assert!(printed.contains(r#""country":"FR""#) && printed.contains(r#""language":"fr""#), "{printed}");
        assert_eq!(parse_line(&printed, NOW).unwrap(), (key, profile));
    }
}

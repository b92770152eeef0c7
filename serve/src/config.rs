//! The server's configuration: a TOML file, each key overridable by a flag and an `ADSNAP_*`
//! variable (the binary maps those). `docs/serve.example.toml` lists every key with its default.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ServeError;

/// Longest `public_base_url`: every tracking URL is this, a path and a token of about a hundred
/// characters.
pub const PUBLIC_BASE_URL_BYTES_MAX: usize = 256;

/// Longest `openrtb_seat`.
pub const OPENRTB_SEAT_BYTES_MAX: usize = 64;

/// Shortest `header_read_timeout_ms`: connections are checked every half of it.
pub const HEADER_READ_TIMEOUT_MS_MIN: u64 = 10;

/// Longest `header_read_timeout_ms`: a day.
pub const HEADER_READ_TIMEOUT_MS_MAX: u64 = 86_400_000;

/// Longest `tracking_token_ttl_s` and `install_attribution_window_s`: 366 days.
pub const TOKEN_AGE_S_MAX: u64 = 366 * 86_400;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// Address of the admin endpoints (install, promote, rollback); keep it on loopback.
    pub admin_listen_addr: SocketAddr,
    /// The production snapshot.
    pub snapshot_path: PathBuf,
    /// The staging snapshot, served to the staging slice. Absent: `<snapshot_path>.staging`
    /// when that file exists, else staging is decided from production.
    pub staging_snapshot_path: Option<PathBuf>,
    /// Base of the tracking URLs put in responses, as clients reach this server: `http://` or
    /// `https://`, a host, and an optional path, at most [`PUBLIC_BASE_URL_BYTES_MAX`] bytes of
    /// the characters [`ServeConfig::public_base_url`] names. `https://` in production: apps
    /// refuse cleartext by default, so the server warns at start about an `http://` base when it
    /// listens beyond loopback.
    pub public_base_url: String,
    /// Largest request body accepted, as sent and, when it comes compressed, once decompressed.
    pub request_body_bytes_max: usize,
    /// Most request headers accepted.
    pub request_headers_max: usize,
    /// Open client connections at most; more wait in the listen backlog.
    pub connections_max: usize,
    /// Time a client has to send a request, headers and body, once the connection opens or its
    /// previous answer is ready; and to take each answer. A connection that makes no progress
    /// for it is closed (after up to half as long again: it is checked every half of it).
    /// Between [`HEADER_READ_TIMEOUT_MS_MIN`] and [`HEADER_READ_TIMEOUT_MS_MAX`].
    pub header_read_timeout_ms: u64,
    /// Key of the tracking-token MAC, 64 hex digits. Every server of a fleet shares it; absent:
    /// a random key for this process (tracking URLs then die with it).
    pub tracking_key_hex: Option<String>,
    /// How long a tracking URL stays valid: at least `ad_ttl_s`, so that an ad shown at the end
    /// of its time to live is still counted; at most [`TOKEN_AGE_S_MAX`].
    pub tracking_token_ttl_s: u64,
    /// How long after its click an install is attributed to an ad (the click token's age limit
    /// for `/v1/install`), at most [`TOKEN_AGE_S_MAX`].
    pub install_attribution_window_s: u64,
    /// How long an SDK may cache an ad before showing it, and an exchange a bid before its
    /// impression (the bid's `exp`): 1 to `tracking_token_ttl_s`.
    pub ad_ttl_s: u32,
    /// This ad network's vendor id in the IAB TCF Global Vendor List (1 to 65535). Set, a TCF
    /// consent string must give this vendor consent for its purposes to count; absent, only the
    /// purposes are read. Set it in production under GDPR.
    pub tcf_vendor_id: Option<NonZeroU16>,
    /// The buyer seat adsnap bids as over OpenRTB (`seatbid.seat`), as the exchanges know it:
    /// a request whose `wseat` leaves it out, or whose `bseat` names it, gets no bid. Letters,
    /// digits and `-_.:`, at most [`OPENRTB_SEAT_BYTES_MAX`] bytes.
    pub openrtb_seat: String,
    /// Tracking tokens remembered to count duplicates once (per generation; two are kept).
    pub tracking_dedup_entries_max: usize,
    /// Nice value (0 to 19) of the threads that open, verify and release snapshots, so that a
    /// hot swap gives way to the threads answering requests.
    pub background_nice: i8,
    /// Bytes of creative markup kept escaped for JSON answers, per snapshot (below 4 GiB), and
    /// of answer parts (each creative's head, each campaign's tail) within what the markup
    /// leaves; markup and parts past it are written on every answer instead. Up to three
    /// snapshots are held at once during a swap (production, staging and the incoming one).
    pub escaped_markup_bytes_max: u64,
    /// Read user profiles (segments, installed apps, frequency caps) and keep them up to date.
    /// Off, every request is decided as for a user without a profile.
    pub profiles_enabled: bool,
    /// The profile store (`[profiles]`; docs/profiles.md).
    pub profiles: adsnap_profile_store::ProfilesConfig,
    /// Write an event for every decision, notice and install. Off only for measurements and
    /// tests: without events nothing is billed or analysed.
    pub events_enabled: bool,
    /// The local event log and its replication (`[events]`; docs/events.md).
    pub events: adsnap_events::EventLogConfig,
    /// Decide as of this time (seconds since the Unix epoch) instead of the clock's: for replays
    /// and tests. Absent in production.
    pub fixed_now_unix_s: Option<i64>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            snapshot_path: PathBuf::from("adsnap.snap"),
            staging_snapshot_path: None,
            public_base_url: "http://127.0.0.1:8080".into(),
            request_body_bytes_max: 64 << 10,
            request_headers_max: 64,
            connections_max: 10_000,
            header_read_timeout_ms: 5_000,
            tracking_key_hex: None,
            tracking_token_ttl_s: 86_400,
            install_attribution_window_s: 7 * 86_400,
            ad_ttl_s: 300,
            tcf_vendor_id: None,
            openrtb_seat: "adsnap".into(),
            tracking_dedup_entries_max: 1_000_000,
            background_nice: 10,
            escaped_markup_bytes_max: 128 << 20,
            profiles_enabled: true,
            profiles: adsnap_profile_store::ProfilesConfig::default(),
            events_enabled: true,
            events: adsnap_events::EventLogConfig::default(),
            fixed_now_unix_s: None,
        }
    }
}

/// How old a tracking token may be, in seconds: [`ServeConfig::token_ages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenAges {
    /// Any tracking URL's.
    pub tracking_s: i64,
    /// A click's, for an install postback.
    pub install_window_s: i64,
}

impl ServeConfig {
    /// Reads a TOML configuration file.
    pub fn from_toml(text: &str) -> Result<ServeConfig, ServeError> {
        toml::from_str(text).map_err(|e| ServeError::Config(e.to_string()))
    }

    /// What preparing a snapshot may use; refuses values outside their ranges.
    pub fn prepare(&self) -> Result<crate::served::Prepare, ServeError> {
        adsnap_events::threads::check_background_nice("background_nice", self.background_nice)
            .map_err(ServeError::Config)?;
        let escaped_markup_bytes_max = u32::try_from(self.escaped_markup_bytes_max).map_err(|_| {
            ServeError::Config(format!(
                "escaped_markup_bytes_max = {} is 4 GiB or more",
                self.escaped_markup_bytes_max
            ))
        })?;
        Ok(crate::served::Prepare { nice: self.background_nice, escaped_markup_bytes_max })
    }

    /// The public base URL without its trailing slashes, once checked. Tracking URLs go into
    /// JSON strings, HTML attributes and XML `CDATA` sections unescaped, so it may hold only
    /// letters, digits and `-._~:/@%+!$,;=[]` (no quote, angle bracket, backslash, space,
    /// `?`, `#` or `&`: a query or fragment would swallow the paths appended to it).
    pub fn public_base_url(&self) -> Result<&str, ServeError> {
        let url = self.public_base_url.trim_end_matches('/');
        let bad = |why: String| ServeError::Config(format!("public_base_url {url:?}: {why}"));
        let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        let Some(host) = host.filter(|rest| !rest.is_empty() && !rest.starts_with('/')) else {
            return Err(bad("expected http:// or https:// and a host".into()));
        };
        if url.len() > PUBLIC_BASE_URL_BYTES_MAX {
            return Err(bad(format!("longer than {PUBLIC_BASE_URL_BYTES_MAX} bytes")));
        }
        match host.chars().find(|&c| !(c.is_ascii_alphanumeric() || "-._~:/@%+!$,;=[]".contains(c))) {
            Some(c) => Err(bad(format!("{c:?} is not allowed (letters, digits and -._~:/@%+!$,;=[] are)"))),
            None => Ok(url),
        }
    }

    /// `openrtb_seat`, once checked.
    pub fn openrtb_seat(&self) -> Result<&str, ServeError> {
        let seat = self.openrtb_seat.as_str();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
        if seat.is_empty() || seat.len() > OPENRTB_SEAT_BYTES_MAX || !seat.chars().all(allowed) {
            return Err(ServeError::Config(format!(
                "openrtb_seat {seat:?}: expected 1 to {OPENRTB_SEAT_BYTES_MAX} letters, digits and -_.:"
            )));
        }
        Ok(seat)
    }

    /// `header_read_timeout_ms`, once checked.
    pub fn header_read_timeout(&self) -> Result<Duration, ServeError> {
        let ms = self.header_read_timeout_ms;
        if !(HEADER_READ_TIMEOUT_MS_MIN..=HEADER_READ_TIMEOUT_MS_MAX).contains(&ms) {
            return Err(ServeError::Config(format!(
                "header_read_timeout_ms = {ms} is outside {HEADER_READ_TIMEOUT_MS_MIN}..={HEADER_READ_TIMEOUT_MS_MAX}"
            )));
        }
        Ok(Duration::from_millis(ms))
    }

    /// `tracking_token_ttl_s` and `install_attribution_window_s` as token ages, once checked
    /// against each other and `ad_ttl_s`: an ad may not outlive its tracking URLs.
    pub fn token_ages(&self) -> Result<TokenAges, ServeError> {
        let (ad, tracking) = (u64::from(self.ad_ttl_s), self.tracking_token_ttl_s);
        if ad == 0 || ad > tracking {
            return Err(ServeError::Config(format!(
                "ad_ttl_s = {ad} is outside 1..=tracking_token_ttl_s ({tracking}): an ad shown before it \
                 expires would have expired tracking URLs"
            )));
        }
        for (name, s) in [
            ("tracking_token_ttl_s", tracking),
            ("install_attribution_window_s", self.install_attribution_window_s),
        ] {
            if s > TOKEN_AGE_S_MAX {
                return Err(ServeError::Config(format!(
                    "{name} = {s} is longer than {TOKEN_AGE_S_MAX} (366 days)"
                )));
            }
        }
        Ok(TokenAges {
            tracking_s: tracking as i64,
            install_window_s: self.install_attribution_window_s as i64,
        })
    }

    /// The tracking key, parsed.
    pub fn tracking_key(&self) -> Result<Option<[u8; 32]>, ServeError> {
        let Some(hex) = &self.tracking_key_hex else { return Ok(None) };
        let bad = || ServeError::Config("tracking_key_hex must be 64 hex digits".into());
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_lists_the_defaults() {
        let text = include_str!("../../docs/serve.example.toml");
        assert_eq!(ServeConfig::from_toml(text).unwrap(), ServeConfig::default());
    }

    #[test]
    fn bad_files_and_keys_are_refused_by_name() {
        let err = ServeConfig::from_toml("listen_adr = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listen_adr"), "{err}");
        let config = ServeConfig { tracking_key_hex: Some("zz".repeat(32)), ..ServeConfig::default() };
        assert!(config.tracking_key().is_err());
        let config = ServeConfig { tracking_key_hex: Some("é".repeat(32)), ..ServeConfig::default() };
        assert!(config.tracking_key().is_err());
        let config = ServeConfig { tracking_key_hex: Some("ab".repeat(32)), ..ServeConfig::default() };
        assert_eq!(config.tracking_key().unwrap(), Some([0xab; 32]));
        for ms in [0, HEADER_READ_TIMEOUT_MS_MIN - 1, HEADER_READ_TIMEOUT_MS_MAX + 1, u64::MAX] {
            let config = ServeConfig { header_read_timeout_ms: ms, ..ServeConfig::default() };
            assert!(config.header_read_timeout().unwrap_err().to_string().contains("header_read_timeout_ms"));
        }
        let config =
            ServeConfig { header_read_timeout_ms: HEADER_READ_TIMEOUT_MS_MIN, ..ServeConfig::default() };
        assert_eq!(config.header_read_timeout().unwrap(), Duration::from_millis(HEADER_READ_TIMEOUT_MS_MIN));
        let err = ServeConfig::from_toml("tcf_vendor_id = 0").unwrap_err().to_string();
        assert!(err.contains("tcf_vendor_id") && err.contains("nonzero"), "{err}");
        let err = ServeConfig::from_toml("tcf_vendor_id = 65536").unwrap_err().to_string();
        assert!(err.contains("tcf_vendor_id"), "{err}");
        assert_eq!(
            ServeConfig::from_toml("tcf_vendor_id = 755").unwrap().tcf_vendor_id,
            NonZeroU16::new(755)
        );
        for bad in ["", "a b", "seat\"", &"s".repeat(OPENRTB_SEAT_BYTES_MAX + 1)] {
            let config = ServeConfig { openrtb_seat: bad.into(), ..ServeConfig::default() };
            assert!(config.openrtb_seat().unwrap_err().to_string().contains("openrtb_seat"), "{bad:?}");
        }
        let config = ServeConfig { openrtb_seat: "dsp-7.us:east_1".into(), ..ServeConfig::default() };
        assert_eq!(config.openrtb_seat().unwrap(), "dsp-7.us:east_1");
        let config = ServeConfig { background_nice: 20, ..ServeConfig::default() };
        assert!(config.prepare().unwrap_err().to_string().contains("background_nice"));
        let config = ServeConfig { escaped_markup_bytes_max: 1 << 32, ..ServeConfig::default() };
        assert!(config.prepare().unwrap_err().to_string().contains("escaped_markup_bytes_max"));
        let config = ServeConfig { escaped_markup_bytes_max: u64::from(u32::MAX), ..ServeConfig::default() };
        assert_eq!(config.prepare().unwrap().escaped_markup_bytes_max, u32::MAX);
    }

    #[test]
    fn an_ad_may_not_outlive_its_tracking_urls() {
        let ages = |tracking_token_ttl_s, ad_ttl_s, install_attribution_window_s| {
            ServeConfig {
                tracking_token_ttl_s,
                ad_ttl_s,
                install_attribution_window_s,
                ..ServeConfig::default()
            }
            .token_ages()
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            ages(86_400, 300, 604_800),
            Ok(TokenAges { tracking_s: 86_400, install_window_s: 604_800 })
        );
        assert_eq!(ages(300, 300, 0), Ok(TokenAges { tracking_s: 300, install_window_s: 0 }));
        for (tracking, ad, install, named) in [
            (299, 300, 0, "ad_ttl_s = 300"),
            (86_400, 0, 0, "ad_ttl_s = 0"),
            (0, 1, 0, "ad_ttl_s = 1"),
            (TOKEN_AGE_S_MAX + 1, 300, 0, "tracking_token_ttl_s"),
            (u64::MAX, 300, 0, "tracking_token_ttl_s"),
            (86_400, 300, TOKEN_AGE_S_MAX + 1, "install_attribution_window_s"),
            (86_400, 300, u64::MAX, "install_attribution_window_s"),
        ] {
            let err = ages(tracking, ad, install).unwrap_err();
            assert!(err.contains(named), "{tracking} {ad} {install}: {err}");
        }
        assert!(ages(TOKEN_AGE_S_MAX, 300, TOKEN_AGE_S_MAX).is_ok());
    }

    #[test]
    fn the_public_base_url_must_be_safe_to_write_unescaped() {
        let check = |url: &str| ServeConfig { public_base_url: url.into(), ..ServeConfig::default() };
        for good in [
            "http://127.0.0.1:8080",
            "https://ads.example.com/",
            "http://[::1]:8080/t//",
            "https://x.io/a-b_c~d%20",
        ] {
            assert_eq!(check(good).public_base_url().unwrap(), good.trim_end_matches('/'), "{good}");
        }
        let long = format!("https://{}.com", "a".repeat(PUBLIC_BASE_URL_BYTES_MAX));
        for (bad, why) in [
            ("ads.example.com", "http:// or https://"),
            ("http://", "a host"),
            ("https:///path", "a host"),
            ("ftp://ads.example.com", "http:// or https://"),
            ("http://ads.example.com/a\"b", "'\"'"),
            ("http://ads.example.com/<x>", "'<'"),
            ("http://ads.example.com/?q=1", "'?'"),
            ("http://ads.example.com/#f", "'#'"),
            ("http://ads.example.com/a b", "' '"),
            ("http://ads.example.com/\\", "'\\\\'"),
            ("http://ads.example.com/é", "'é'"),
            (long.as_str(), "longer than 256 bytes"),
        ] {
            let err = check(bad).public_base_url().unwrap_err().to_string();
            assert!(err.contains("public_base_url") && err.contains(why), "{bad}: {err}");
        }
    }
}

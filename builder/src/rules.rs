//! Field rules shared by every record type, and the limits they enforce.

use std::time::UNIX_EPOCH;

/// Longest string field accepted anywhere in a catalog.
pub const STRING_BYTES_MAX: usize = 64 << 10;
/// Longest string id (apps, ad units, templates) and catalog name.
pub const ID_BYTES_MAX: usize = 128;
/// Longest advertiser name.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest URL.
pub const URL_BYTES_MAX: usize = 2048;
/// Longest domain name (RFC 1035).
pub const DOMAIN_BYTES_MAX: usize = 253;
/// Highest bid: one million currency units.
pub const BID_MICROS_MAX: u64 = 1_000_000_000_000;
/// Longest frequency-cap window: 30 days.
pub const FREQUENCY_CAP_PERIOD_S_MAX: u32 = 30 * 86_400;
/// Longest video.
pub const VIDEO_DURATION_S_MAX: u16 = 180;
/// Asset URLs per creative.
pub const ASSETS_MAX: usize = 8;
/// The IAB creative attribute codes (the OpenRTB and AdCOM list "Creative Attributes") run from 1
/// to this; a catalog names no other.
pub const CREATIVE_ATTR_CODE_MAX: u8 = 17;
/// Arms per experiment.
pub const ARMS_MAX: usize = 8;
/// Largest staging slice, in basis points.
pub const STAGING_SHARE_BP_MAX: u16 = 5_000;
/// Largest bid or floor multiplier an arm may set.
pub const MULTIPLIER_MAX: f64 = 10.0;
/// Most candidates an arm may ask the server to scan per request.
pub const CANDIDATES_SCANNED_MAX: u32 = 4_096;
/// MIME types a creative may have.
pub const MIME_TYPES: [&str; 8] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "text/html",
    "application/json",
];

/// Why a string is unacceptable, if it is.
pub fn check_text(s: &str, max: usize) -> Option<String> {
    if s.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > max {
        return Some(format!("is {} bytes, over the limit of {max}", s.len()));
    }
    None
}

/// A lowercase DNS name with at least one dot: `studio.example.com`.
pub fn check_domain(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= DOMAIN_BYTES_MAX
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    (!ok).then(|| format!("{s:?} is not a lowercase domain name such as \"studio.example.com\""))
}

/// An absolute http(s) URL without whitespace.
pub fn check_url(s: &str, https_only: bool) -> Option<String> {
    let scheme_ok = s.starts_with("https://") || (!https_only && s.starts_with("http://"));
    let host_ok = s.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if !scheme_ok || !host_ok {
        let want = if https_only { "an https:// URL" } else { "an http(s):// URL" };
        return Some(format!("{s:?} is not {want}"));
    }
    if s.len() > URL_BYTES_MAX {
        return Some(format!("is {} bytes, over the URL limit of {URL_BYTES_MAX}", s.len()));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("{s:?} contains whitespace"));
    }
    None
}

/// Parses an RFC 3339 UTC time (`2026-11-01T00:00:00Z`) into seconds since the Unix epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339(s).map_err(|err| {
        format!("{s:?} is not an RFC 3339 UTC time such as \"2026-11-01T00:00:00Z\" ({err})")
    })?;
    let secs = time.duration_since(UNIX_EPOCH).map_err(|_| format!("{s:?} is before 1970"))?.as_secs();
    i64::try_from(secs).map_err(|_| format!("{s:?} is too far in the future"))
}

/// A probability in `[low, 1]`, `low_inclusive` saying whether `low` itself is allowed.
pub fn check_rate(value: f64, low_inclusive: bool) -> Option<String> {
    let ok = value.is_finite() && value <= 1.0 && if low_inclusive { value >= 0.0 } else { value > 0.0 };
    let range = if low_inclusive { "[0, 1]" } else { "(0, 1]" };
    (!ok).then(|| format!("{value} is not in {range}"))
}

/// Why a creative's markup cannot serve its kind, if it cannot. VAST must name a version
/// OpenRTB lists (1.0 to 4.3) in its root `<VAST version=…>` and hold an `<InLine>` or
/// `<Wrapper>` ad: otherwise no player that lists the versions it plays takes it. Native markup
/// must be JSON with a non-empty `assets` array (at its root, or under `native` as in 1.0) once
/// its placeholders are filled as the server fills them: otherwise no native request can be
/// answered from it. HTML is not read.
pub fn check_markup(kind: adsnap_snapshot::MarkupKind, markup: &str) -> Option<String> {
    use adsnap_snapshot::MarkupKind;
    match kind {
        MarkupKind::Html => None,
        MarkupKind::Vast => (adsnap_snapshot::vast::protocol_of(markup) == 0).then(|| {
            "VAST needs a root <VAST version=\"…\"> of a version OpenRTB lists (1.0 to 4.3) and an \
             <InLine> or <Wrapper> ad"
                .into()
        }),
        MarkupKind::NativeJson => {
            // Filled as the server fills them, with `0`, which reads as JSON both inside a
            // string and as a number; a name that is no placeholder stays as it is, as it
            // would when served.
            let filled = adsnap_snapshot::placeholder::fill(markup, |_| "0");
            let why = match serde_json::from_str::<serde_json::Value>(&filled) {
                Err(e) => format!("is not JSON once its placeholders are filled: {e}"),
                Ok(value) => {
                    let root = value.get("native").unwrap_or(&value);
                    match root.get("assets").and_then(serde_json::Value::as_array) {
                        Some(assets) if !assets.is_empty() => return None,
                        _ => "native markup needs a non-empty \"assets\" array".into(),
                    }
                }
            };
            Some(why)
        }
    }
}

/// Converts a multiplier to parts per million.
pub fn to_ppm(value: f64) -> u32 {
    (value * adsnap_snapshot::schema::PPM_ONE as f64).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_must_serve_its_kind() {
        use adsnap_snapshot::MarkupKind::{Html, NativeJson, Vast};
        assert_eq!(check_markup(Html, "<p>{{anything"), None);
        assert_eq!(check_markup(Vast, r#"<VAST version="4.0"><Ad><InLine><Duration>{{duration_hms}}"#), None);
        assert_eq!(check_markup(Vast, r#"<VAST version="2.0"><Ad><Wrapper>"#), None);
        for bad in [
            r#"<VAST version="5.0"><Ad><InLine>"#,
            "<VAST><Ad><InLine>",
            r#"<VAST version="4.0"></VAST>"#,
            "<html>",
        ] {
            assert!(check_markup(Vast, bad).unwrap().contains("version"), "{bad}");
        }
        let native =
            r#"{"native":{"assets":[{"id":1,"img":{"url":"{{asset_url}}","w":{{width}},"h":{{height}}}}]}}"#;
        assert_eq!(check_markup(NativeJson, native), None);
        assert_eq!(check_markup(NativeJson, r#"{"assets":[{"id":1,"title":{"text":"{{x"}}]}"#), None);
        assert!(check_markup(NativeJson, r#"{"assets":[{"id":1,"img":{"w":{{width}</"#)
            .unwrap()
            .contains("not JSON"));
        for empty in [r#"{"assets":[]}"#, r#"{"native":{"ver":"1.2"}}"#, "[1]"] {
            assert!(check_markup(NativeJson, empty).unwrap().contains("assets"), "{empty}");
        }
        // A misspelt placeholder is no placeholder: served, it stays as text, so here too.
        let misspelt = r#"{"assets":[{"id":1,"img":{"url":"{{asset_url}}","w":{{widht}},"h":50}}]}"#;
        assert!(check_markup(NativeJson, misspelt).unwrap().contains("not JSON"));
        assert_eq!(check_markup(NativeJson, &misspelt.replace("widht", "width")), None);
    }

    #[test]
    fn domains() {
        for good in ["a.co", "studio-1.example.com", "x.y.z"] {
            assert_eq!(check_domain(good), None, "{good}");
        }
        for bad in ["", "example", "Example.com", "-a.com", "a..com", "a.com.", "exa mple.com", "ä.com"] {
            assert!(check_domain(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(check_url("https://play.google.com/store/apps/details?id=a.b", true), None);
        assert_eq!(check_url("http://cdn.example.com/a.png", false), None);
        for bad in [
            "http://cdn.example.com/a.png",
            "https://",
            "https:///x",
            "ftp://a",
            "https://a b",
            "play.google.com",
        ] {
            assert!(check_url(bad, true).is_some(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("2026-11-01T00:00:00Z"), Ok(1_793_491_200));
        assert!(parse_time("2026-11-01").is_err());
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(check_rate(0.5, false), None);
        assert_eq!(check_rate(0.0, true), None);
        assert!(check_rate(0.0, false).is_some());
        assert!(check_rate(1.5, true).is_some());
        assert!(check_rate(f64::NAN, true).is_some());
    }
}

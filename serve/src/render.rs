//! Fills a creative's markup: the `{{placeholders}}` of `docs/catalog.md`, in one pass.

use std::fmt::Write;

use adsnap_snapshot::schema::ArchivedCreative;
use adsnap_snapshot::Snapshot;

/// What the server adds to a creative's own fields.
pub struct Fill<'a> {
    pub click_url: &'a str,
    pub impression_url: &'a str,
    pub campaign_id: u32,
}

/// Longest placeholder name; a `{{` not closed within it is copied as text.
const PLACEHOLDER_BYTES_MAX: usize = 32;

/// Renders `creative`'s markup into `out`: a `String`, or the JSON body through
/// [`crate::json::Escaped`]. Unknown placeholders are left as they are, so a template never
/// loses text it did not mean to hand to the server.
pub fn render(s: &Snapshot, creative: &ArchivedCreative, fill: &Fill, out: &mut impl Write) {
    let mut rest = s.str(&creative.markup);
    // Writing to a String or a Vec cannot fail.
    // A one-byte search (memchr) finds candidates far faster than a two-byte pattern search.
    while let Some(open) = find_open(rest) {
        let _ = out.write_str(&rest[..open]);
        let after = &rest[open + 2..];
        let window = &after.as_bytes()[..after.len().min(PLACEHOLDER_BYTES_MAX + 2)];
        match window.windows(2).position(|w| w == b"}}") {
            Some(end) if value(s, creative, fill, &after[..end], out) => rest = &after[end + 2..],
            _ => {
                let _ = out.write_str("{{");
                rest = after;
            }
        }
    }
    let _ = out.write_str(rest);
}

/// Bytes reserved for a rendered markup beyond its template: the placeholders' values (URLs with
/// tokens) usually fit.
pub const RENDER_GROWTH_BYTES: usize = 768;

/// Writes the value of placeholder `name`; false when it is not one. Strings and numbers are
/// written directly, not through `write!`'s formatting machinery (a request renders a dozen).
fn value(s: &Snapshot, c: &ArchivedCreative, fill: &Fill, name: &str, out: &mut impl Write) -> bool {
    let assets = s.pool_str(&c.assets);
    let asset = |n: usize| assets.get(n).map(|a| s.str(a)).unwrap_or_default();
    let duration_s = c.video_duration_s.to_native();
    let mut number = itoa::Buffer::new();
    let _ = match name {
        "asset_url" => out.write_str(asset(0)),
        "click_url" => out.write_str(fill.click_url),
        "impression_url" => out.write_str(fill.impression_url),
        "duration" => out.write_str(number.format(duration_s)),
        "duration_hms" => write_hms(duration_s.into(), out),
        "mime" => out.write_str(s.str(&c.mime)),
        "width" => out.write_str(number.format(c.width.to_native())),
        "height" => out.write_str(number.format(c.height.to_native())),
        "creative_id" => out.write_str(number.format(c.id.to_native())),
        "campaign_id" => out.write_str(number.format(fill.campaign_id)),
        _ => match name.strip_prefix("asset_url_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n >= 1 => out.write_str(asset(n - 1)),
            _ => return false,
        },
    };
    true
}

/// `seconds` as `HH:MM:SS` (VAST's duration); hours take more digits past 99.
fn write_hms(seconds: u32, out: &mut impl Write) -> std::fmt::Result {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 99 {
        return write!(out, "{hours}:{minutes:02}:{seconds:02}");
    }
    let digit = |n: u32| b'0' + n as u8;
    let hms = [
        digit(hours / 10),
        digit(hours % 10),
        b':',
        digit(minutes / 10),
        digit(minutes % 10),
        b':',
        digit(seconds / 10),
        digit(seconds % 10),
    ];
    out.write_str(std::str::from_utf8(&hms).unwrap_or_default())
}

/// The position of the next `{{` in `text`.
fn find_open(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find('{') {
        let at = from + at;
        if bytes.get(at + 1) == Some(&b'{') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::write_hms;

    #[test]
    fn durations_are_written_as_vast_hh_mm_ss() {
        for (seconds, hms) in [
            (0, "00:00:00"),
            (59, "00:00:59"),
            (3599, "00:59:59"),
            (3661, "01:01:01"),
            (u32::from(u16::MAX), "18:12:15"),
            (99 * 3600 + 3599, "99:59:59"),
            (100 * 3600 + 61, "100:01:01"),
        ] {
            let mut out = String::new();
            write_hms(seconds, &mut out).unwrap();
            assert_eq!(out, hms);
        }
    }
}

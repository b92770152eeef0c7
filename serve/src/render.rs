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

/// Writes the value of placeholder `name`; false when it is not one.
fn value(s: &Snapshot, c: &ArchivedCreative, fill: &Fill, name: &str, out: &mut impl Write) -> bool {
    let assets = s.pool_str(&c.assets);
    let asset = |n: usize| assets.get(n).map(|a| s.str(a)).unwrap_or_default();
    let duration_s = c.video_duration_s.to_native();
    let _ = match name {
        "asset_url" => write!(out, "{}", asset(0)),
        "click_url" => write!(out, "{}", fill.click_url),
        "impression_url" => write!(out, "{}", fill.impression_url),
        "duration" => write!(out, "{duration_s}"),
        "duration_hms" => {
            write!(out, "{:02}:{:02}:{:02}", duration_s / 3600, duration_s / 60 % 60, duration_s % 60)
        }
        "mime" => write!(out, "{}", s.str(&c.mime)),
        "width" => write!(out, "{}", c.width),
        "height" => write!(out, "{}", c.height),
        "creative_id" => write!(out, "{}", c.id),
        "campaign_id" => write!(out, "{}", fill.campaign_id),
        _ => match name.strip_prefix("asset_url_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n >= 1 => write!(out, "{}", asset(n - 1)),
            _ => return false,
        },
    };
    true
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

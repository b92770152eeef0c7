//! Fills a creative's markup: the `{{placeholders}}` of `docs/catalog.md`, in one pass.

use std::fmt::Write;

use adsnap_snapshot::schema::ArchivedCreative;
use adsnap_snapshot::Snapshot;

use crate::json::{push_escaped, Escaped};

/// What the server adds to a creative's own fields.
pub struct Fill<'a> {
    pub click_url: &'a str,
    pub impression_url: &'a str,
    pub campaign_id: u32,
}

/// Where markup is rendered: the template's own text goes through [`MarkupOut::literal`], the
/// placeholders' values through `write_str`.
pub trait MarkupOut: Write {
    fn literal(&mut self, text: &str) {
        // Writing to a String or a Vec cannot fail.
        let _ = self.write_str(text);
    }
}

impl MarkupOut for String {}

/// Everything escaped as it is written: the template's text and the values.
impl MarkupOut for Escaped<'_> {}

/// For a template already escaped as JSON string contents ([`crate::served::EscapedMarkup`]):
/// its text is copied as it is, the values are escaped.
pub struct PreEscaped<'a>(pub &'a mut Vec<u8>);

impl Write for PreEscaped<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

impl MarkupOut for PreEscaped<'_> {
    fn literal(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }
}

/// Longest placeholder name; a `{{` not closed within it is copied as text.
const PLACEHOLDER_BYTES_MAX: usize = 32;

/// Renders `creative`'s markup into `out`: a `String`, or the JSON body through
/// [`crate::json::Escaped`]. Unknown placeholders are left as they are, so a template never
/// loses text it did not mean to hand to the server.
pub fn render(s: &Snapshot, creative: &ArchivedCreative, fill: &Fill, out: &mut impl MarkupOut) {
    fill_template(s.str(&creative.markup), out, |name, out| value(s, creative, fill, name, out));
}

/// Renders `creative`'s markup from `escaped`, its template already escaped as JSON string
/// contents, into a JSON body: the same bytes as [`render`] through [`crate::json::Escaped`],
/// with only the placeholders' values escaped per request. Escaping leaves every placeholder as
/// it was (names are ASCII letters, digits and `_`; escapes add no braces), and turns no other
/// text into one.
pub fn render_escaped(
    s: &Snapshot,
    creative: &ArchivedCreative,
    fill: &Fill,
    escaped: &str,
    out: &mut Vec<u8>,
) {
    fill_template(escaped, &mut PreEscaped(out), |name, out| value(s, creative, fill, name, out));
}

/// Copies `template` to `out` with each `{{name}}` for which `value` writes something replaced
/// by what it wrote.
fn fill_template<O: MarkupOut>(template: &str, out: &mut O, mut value: impl FnMut(&str, &mut O) -> bool) {
    let mut rest = template;
    // A one-byte search (memchr) finds candidates far faster than a two-byte pattern search.
    while let Some(open) = find_open(rest) {
        out.literal(&rest[..open]);
        let after = &rest[open + 2..];
        let window = &after.as_bytes()[..after.len().min(PLACEHOLDER_BYTES_MAX + 2)];
        match window.windows(2).position(|w| w == b"}}") {
            Some(end) if value(&after[..end], out) => rest = &after[end + 2..],
            _ => {
                out.literal("{{");
                rest = after;
            }
        }
    }
    out.literal(rest);
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
    use proptest::prelude::*;

    use super::*;

    /// The values of a few placeholders, with text JSON escapes in them.
    fn test_value(name: &str, out: &mut impl Write) -> bool {
        let text = match name {
            "click_url" => "https://t.example/c?t=\"q\"\\",
            "asset_url" => "a\nb\u{1}é",
            "width" => "320",
            _ => return false,
        };
        let _ = out.write_str(text);
        true
    }

    proptest! {
        /// Rendering the escaped template writes exactly the escaped rendering of the template:
        /// for text made of placeholders, near-placeholders, braces and bytes JSON escapes.
        #[test]
        fn rendering_an_escaped_template_escapes_the_rendering(
            parts in proptest::collection::vec(prop_oneof![
                Just("{{click_url}}"), Just("{{asset_url}}"), Just("{{width}}"), Just("{{nope}}"),
                Just("{{"), Just("}}"), Just("{"), Just("}"), Just("\""), Just("\\"), Just("\n"),
                Just("\u{0}"), Just("\u{1f}"), Just("é"), Just("<a href=x>"), Just("{{click_"),
                Just("url}}"), Just("{{\"}}"), Just("{{a\nb}}"),
            ], 0..40),
        ) {
            let template: String = parts.concat();
            let mut rendered = String::new();
            fill_template(&template, &mut rendered, test_value);
            let mut expected = Vec::new();
            push_escaped(&mut expected, &rendered);

            let mut escaped_template = Vec::new();
            push_escaped(&mut escaped_template, &template);
            let escaped_template = String::from_utf8(escaped_template).unwrap();
            let mut body = Vec::new();
            fill_template(&escaped_template, &mut PreEscaped(&mut body), test_value);
            prop_assert_eq!(String::from_utf8(body).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

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

//! Fills a creative's markup: the `{{placeholders}}` of `docs/catalog.md`, in one pass.

pub use adsnap_snapshot::placeholder::Placeholder;
use adsnap_snapshot::placeholder::{split, Part};
use adsnap_snapshot::schema::ArchivedCreative;
use adsnap_snapshot::Snapshot;

use crate::json::{push_escaped, push_plain, Escaped};

/// What the server adds to a creative's own fields.
#[derive(Clone, Copy)]
pub struct Fill<'a> {
    pub click_url: TrackingUrl<'a>,
    pub impression_url: TrackingUrl<'a>,
    pub campaign_id: u32,
}

/// A tracking URL in its three parts, written out part by part where it goes rather than
/// assembled first (every answer has two or more). Written as it is, even into JSON, because
/// nothing in it needs escaping: `ServeConfig::public_base_url` checks the base, the rest is a
/// path and a base64url token.
#[derive(Clone, Copy, Debug)]
pub struct TrackingUrl<'a> {
    /// The public base URL, without a trailing slash.
    pub base: &'a str,
    /// The endpoint's path and query key, as `/v1/click?t=`.
    pub path: &'a str,
    pub token: &'a str,
}

impl TrackingUrl<'_> {
    pub fn write(&self, out: &mut impl Out) {
        out.plain(self.base);
        out.plain(self.path);
        out.plain(self.token);
    }
}

impl std::fmt::Display for TrackingUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.base, self.path, self.token)
    }
}

/// Where markup is rendered: a `String` (OpenRTB's `adm`, escaped later as a whole), or the
/// JSON body through [`Escaped`].
pub trait Out {
    /// Appends `text`, escaped as the output needs.
    fn text(&mut self, text: &str);
    /// Appends `text`, which needs no JSON escaping (numbers, tracking URLs): as it is.
    fn plain(&mut self, text: &str);
}

impl Out for String {
    fn text(&mut self, text: &str) {
        self.push_str(text);
    }

    fn plain(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl Out for Escaped<'_> {
    fn text(&mut self, text: &str) {
        push_escaped(self.0, text);
    }

    fn plain(&mut self, text: &str) {
        push_plain(self.0, text);
    }
}

/// Writes `placeholder`'s value. Strings and numbers are written directly, not through `write!`'s
/// formatting machinery (a request renders a dozen); the server's own values (numbers, tracking
/// URLs) as [`Out::plain`].
fn write_value(
    placeholder: Placeholder,
    s: &Snapshot,
    c: &ArchivedCreative,
    fill: &Fill,
    out: &mut impl Out,
) {
    let duration_s = c.video_duration_s.to_native();
    let mut number = itoa::Buffer::new();
    match placeholder {
        Placeholder::AssetUrl(idx) => {
            let assets = s.pool_str(&c.assets);
            out.text(assets.get(idx as usize).map(|a| s.str(a)).unwrap_or_default())
        }
        Placeholder::ClickUrl => fill.click_url.write(out),
        Placeholder::ImpressionUrl => fill.impression_url.write(out),
        Placeholder::Duration => out.plain(number.format(duration_s)),
        Placeholder::DurationHms => write_hms(duration_s.into(), out),
        Placeholder::Mime => out.text(s.str(&c.mime)),
        Placeholder::Width => out.plain(number.format(c.width.to_native())),
        Placeholder::Height => out.plain(number.format(c.height.to_native())),
        Placeholder::CreativeId => out.plain(number.format(c.id.to_native())),
        Placeholder::CampaignId => out.plain(number.format(fill.campaign_id)),
    }
}

/// Renders `creative`'s markup into `out`: a `String`, or the JSON body through
/// [`crate::json::Escaped`]. Unknown placeholders are left as they are.
pub fn render(s: &Snapshot, creative: &ArchivedCreative, fill: &Fill, out: &mut impl Out) {
    let template = s.str(&creative.markup);
    split(template, |part| match part {
        Part::Text(range) => out.text(&template[range]),
        Part::Placeholder(placeholder) => write_value(placeholder, s, creative, fill, out),
    });
}

/// A run of escaped template text followed by a placeholder (none after the last run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Byte range of the text in the escaped text it was compiled into.
    text_start: u32,
    text_end: u32,
    then: Option<Placeholder>,
}

/// Size of a compiled [`Piece`], for memory budgets.
pub const PIECE_BYTES: usize = std::mem::size_of::<Piece>();

/// Appends `template` escaped as JSON string contents to `text` and its pieces to `pieces`,
/// text ranges pointing into `text`; false, with both left as they were, when `text` would grow
/// past `u32::MAX` bytes. Escaping leaves every placeholder as it was (names are ASCII letters,
/// digits and `_`; escapes add no braces) and turns no other text into one, so rendering the
/// pieces writes exactly what escaping the rendered template would.
pub fn compile_escaped(template: &str, text: &mut Vec<u8>, pieces: &mut Vec<Piece>) -> bool {
    let (base, n_pieces) = (text.len(), pieces.len());
    push_escaped(text, template);
    let Ok(escaped) = std::str::from_utf8(&text[base..]) else {
        text.truncate(base);
        return false;
    };
    let mut fits = u32::try_from(text.len()).is_ok();
    split(escaped, |part| match part {
        Part::Text(range) => pieces.push(Piece {
            text_start: (base + range.start) as u32,
            text_end: (base + range.end) as u32,
            then: None,
        }),
        Part::Placeholder(placeholder) => match pieces.last_mut() {
            Some(piece) => piece.then = Some(placeholder),
            None => fits = false,
        },
    });
    if !fits {
        text.truncate(base);
        pieces.truncate(n_pieces);
    }
    fits
}

/// Renders compiled `pieces` of `creative`'s markup, their text in `text`, into a JSON body:
/// the same bytes as [`render`] through [`Escaped`], the text copied as it is and only the
/// placeholders' values escaped per request.
pub fn render_compiled(
    s: &Snapshot,
    creative: &ArchivedCreative,
    fill: &Fill,
    (text, pieces): (&[u8], &[Piece]),
    out: &mut Vec<u8>,
) {
    write_pieces(text, pieces, out, |placeholder, out| write_value(placeholder, s, creative, fill, out));
}

fn write_pieces(
    text: &[u8],
    pieces: &[Piece],
    out: &mut Vec<u8>,
    mut value: impl FnMut(Placeholder, &mut Escaped),
) {
    for piece in pieces {
        out.extend_from_slice(
            text.get(piece.text_start as usize..piece.text_end as usize).unwrap_or_default(),
        );
        if let Some(placeholder) = piece.then {
            value(placeholder, &mut Escaped(out));
        }
    }
}

/// Bytes reserved for a rendered markup beyond its template: the placeholders' values (URLs with
/// tokens) usually fit.
pub const RENDER_GROWTH_BYTES: usize = 768;

/// `seconds` as `HH:MM:SS` (VAST's duration); hours take more digits past 99.
fn write_hms(seconds: u32, out: &mut impl Out) {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let digit = |n: u32| b'0' + n as u8;
    // At most seven digits of hours (u32::MAX seconds), a colon and four digits more.
    let mut hms = [0u8; 16];
    let mut buffer = itoa::Buffer::new();
    let hours = buffer.format(hours).as_bytes();
    let pad = usize::from(hours.len() < 2);
    hms[0] = b'0';
    hms[pad..pad + hours.len()].copy_from_slice(hours);
    let at = pad + hours.len();
    hms[at..at + 6].copy_from_slice(&[
        b':',
        digit(minutes / 10),
        digit(minutes % 10),
        b':',
        digit(seconds / 10),
        digit(seconds % 10),
    ]);
    out.plain(std::str::from_utf8(&hms[..at + 6]).unwrap_or_default());
}

/// The position of the next `{{` in `text` at or after `from`. A one-byte search (memchr) finds
/// candidates far faster than a two-byte pattern search.
#[cfg(test)]
mod tests {
    use adsnap_snapshot::placeholder::PLACEHOLDER_BYTES_MAX;
    use proptest::prelude::*;

    use super::*;

    /// Values for a few placeholders, with text JSON escapes in them.
    fn test_value(placeholder: Placeholder) -> &'static str {
        match placeholder {
            Placeholder::ClickUrl => "https://t.example/c?t=\"q\"\\",
            Placeholder::AssetUrl(0) => "a\nb\u{1}é",
            Placeholder::AssetUrl(_) => "",
            _ => "320",
        }
    }

    /// The rule of `docs/catalog.md`, written the plain way: at each `{{`, a known name closed
    /// by `}}` within the name limit is replaced; anything else leaves the `{{` as text.
    fn oracle(template: &str) -> String {
        let (mut out, mut rest) = (String::new(), template);
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let window = &after.as_bytes()[..after.len().min(PLACEHOLDER_BYTES_MAX + 2)];
            match window
                .windows(2)
                .position(|w| w == b"}}")
                .and_then(|end| Some((Placeholder::parse(&after[..end])?, end)))
            {
                Some((placeholder, end)) => {
                    out.push_str(test_value(placeholder));
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out + rest
    }

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        push_escaped(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    proptest! {
        /// Parsing finds what the plain rule finds, and rendering the compiled escaped template
        /// writes exactly the escaped rendering: for text made of placeholders, near-placeholders,
        /// braces and bytes JSON escapes.
        #[test]
        fn compiled_escaped_templates_render_the_escaped_rendering(
            parts in proptest::collection::vec(prop_oneof![
                Just("{{click_url}}"), Just("{{asset_url}}"), Just("{{asset_url_3}}"), Just("{{width}}"),
                Just("{{nope}}"), Just("{{"), Just("}}"), Just("{"), Just("}"), Just("\""), Just("\\"),
                Just("\n"), Just("\u{0}"), Just("\u{1f}"), Just("é"), Just("<a href=x>"), Just("{{click_"),
                Just("url}}"), Just("{{\"}}"), Just("{{a\nb}}"), Just("                                "),
            ], 0..40),
        ) {
            let template: String = parts.concat();
            let expected = oracle(&template);
            let rendered = adsnap_snapshot::placeholder::fill(&template, test_value);
            prop_assert_eq!(&rendered, &expected);

            let (mut text, mut pieces) = (b"before".to_vec(), Vec::new());
            prop_assert!(compile_escaped(&template, &mut text, &mut pieces));
            let mut body = Vec::new();
            write_pieces(&text, &pieces, &mut body, |placeholder, out| out.text(test_value(placeholder)));
            prop_assert_eq!(String::from_utf8(body).unwrap(), escaped(&expected));
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
            (u32::MAX, "1193046:28:15"),
        ] {
            let mut out = String::new();
            write_hms(seconds, &mut out);
            assert_eq!(out, hms);
        }
    }
}

//! The `{{placeholders}}` of a creative's markup (`docs/catalog.md`): which names are
//! placeholders and where they are in a template. One grammar for the builder, which checks
//! markup with its placeholders filled, and the server, which fills them.

use std::ops::Range;

/// Longest placeholder name; a `{{` not closed within it is copied as text.
pub const PLACEHOLDER_BYTES_MAX: usize = 32;

/// A placeholder of `docs/catalog.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `asset_url` (index 0) and `asset_url_N` (index N - 1): empty past the creative's assets.
    AssetUrl(u32),
    ClickUrl,
    ImpressionUrl,
    Duration,
    DurationHms,
    Mime,
    Width,
    Height,
    CreativeId,
    CampaignId,
}

impl Placeholder {
    /// The placeholder called `name`, if it is one.
    pub fn parse(name: &str) -> Option<Placeholder> {
        Some(match name {
            "asset_url" => Placeholder::AssetUrl(0),
            "click_url" => Placeholder::ClickUrl,
            "impression_url" => Placeholder::ImpressionUrl,
            "duration" => Placeholder::Duration,
            "duration_hms" => Placeholder::DurationHms,
            "mime" => Placeholder::Mime,
            "width" => Placeholder::Width,
            "height" => Placeholder::Height,
            "creative_id" => Placeholder::CreativeId,
            "campaign_id" => Placeholder::CampaignId,
            _ => match name.strip_prefix("asset_url_").and_then(|n| n.parse::<usize>().ok()) {
                // An index past u32 names no asset either way: it renders empty.
                Some(n) if n >= 1 => Placeholder::AssetUrl(u32::try_from(n - 1).unwrap_or(u32::MAX)),
                _ => return None,
            },
        })
    }
}

/// One part of a template, as [`split`] finds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text to copy: a byte range of the template.
    Text(Range<usize>),
    Placeholder(Placeholder),
}

/// Splits `template` into text and placeholders, in order: text before every placeholder (empty
/// when there is none) and after the last. A `{{name}}` that is no placeholder stays text, so a
/// template never loses text it did not mean to hand to the server.
pub fn split(template: &str, mut part: impl FnMut(Part)) {
    let bytes = template.as_bytes();
    let (mut text_start, mut from) = (0, 0);
    while let Some(open) = find_open(template, from) {
        let after = open + 2;
        let window = &bytes[after..bytes.len().min(after + PLACEHOLDER_BYTES_MAX + 2)];
        let found = window.windows(2).position(|w| w == b"}}");
        match found.and_then(|end| Some((Placeholder::parse(&template[after..after + end])?, end))) {
            Some((placeholder, end)) => {
                part(Part::Text(text_start..open));
                part(Part::Placeholder(placeholder));
                from = after + end + 2;
                text_start = from;
            }
            None => from = after,
        }
    }
    part(Part::Text(text_start..template.len()));
}

/// `template` with each placeholder replaced by `value(placeholder)`, the rest as it is.
pub fn fill(template: &str, mut value: impl FnMut(Placeholder) -> &'static str) -> String {
    let mut filled = String::with_capacity(template.len());
    split(template, |part| match part {
        Part::Text(range) => filled.push_str(&template[range]),
        Part::Placeholder(placeholder) => filled.push_str(value(placeholder)),
    });
    filled
}

/// Where the next `{{` starts, from byte `from` on.
fn find_open(text: &str, mut from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
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
    use super::*;

    #[test]
    fn placeholder_names_parse_as_the_catalog_documents() {
        assert_eq!(Placeholder::parse("asset_url"), Some(Placeholder::AssetUrl(0)));
        assert_eq!(Placeholder::parse("asset_url_1"), Some(Placeholder::AssetUrl(0)));
        assert_eq!(Placeholder::parse("asset_url_12"), Some(Placeholder::AssetUrl(11)));
        assert_eq!(Placeholder::parse("asset_url_99999999999"), Some(Placeholder::AssetUrl(u32::MAX)));
        assert_eq!(Placeholder::parse("asset_url_0"), None);
        assert_eq!(Placeholder::parse("asset_url_"), None);
        assert_eq!(Placeholder::parse("duration_hms"), Some(Placeholder::DurationHms));
        assert_eq!(Placeholder::parse("Width"), None);
    }

    #[test]
    fn only_known_names_are_filled() {
        let value = |p| if p == Placeholder::Width { "320" } else { "x" };
        assert_eq!(
            fill("a{{width}}b{{widht}}c{{asset_url_2}}{{{{w\"}}{{", value),
            "a320b{{widht}}cx{{{{w\"}}{{"
        );
        // A name longer than the limit is text, even when it closes.
        let long = format!("{{{{{}}}}}", "a".repeat(PLACEHOLDER_BYTES_MAX + 1));
        assert_eq!(fill(&long, value), long);
        // Each `{{` is read once, from where it opens: `{{{` opens with the first two braces.
        assert_eq!(fill("{{{width}}}", value), "{{{width}}}");
        assert_eq!(fill("{ {{width}}}", value), "{ 320}");
    }
}

//! Which VAST a creative's markup is, in the codes of OpenRTB's list of protocols, and whether a
//! video player that lists the protocols it plays (`imp.video.protocols`) can play it; what else
//! the markup holds (linear or not, VPAID, skip offset, length, media types). The builder checks
//! a VAST creative's version with it, and the server reads the rest once per snapshot.

/// VAST versions in OpenRTB's protocol list: (code, major, minor, wrapper). DAAST (9, 10) is
/// audio, which adsnap does not serve.
const PROTOCOLS: [(u8, u8, u8, bool); 14] = [
    (1, 1, 0, false),
    (2, 2, 0, false),
    (3, 3, 0, false),
    (4, 1, 0, true),
    (5, 2, 0, true),
    (6, 3, 0, true),
    (7, 4, 0, false),
    (8, 4, 0, true),
    (11, 4, 1, false),
    (12, 4, 1, true),
    (13, 4, 2, false),
    (14, 4, 2, true),
    (15, 4, 3, false),
    (16, 4, 3, true),
];

/// The protocol code of VAST markup, from its root's `version` attribute and whether its ad is a
/// `<Wrapper>` or `<InLine>`; 0 when it is not VAST of a version OpenRTB lists.
pub fn protocol_of(markup: &str) -> u8 {
    let Some(root) = markup.find("<VAST").map(|at| &markup[at..]) else { return 0 };
    let tag = &root[..root.find('>').unwrap_or(root.len())];
    let Some(version) = attribute(tag, "version") else { return 0 };
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    let (Ok(major), Ok(minor)) = (major.parse::<u8>(), minor.parse::<u8>()) else { return 0 };
    let wrapper = match (root.find("<Wrapper"), root.find("<InLine")) {
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(i)) => w < i,
        (None, None) => return 0,
    };
    PROTOCOLS
        .iter()
        .find(|&&(_, ma, mi, wr)| (ma, mi, wr) == (major, minor, wrapper))
        .map_or(0, |&(code, ..)| code)
}

/// In [`shape`]: the VAST has a linear ad (`<Linear>`), played before, between or after content
/// or on its own, as interstitial and rewarded video are.
pub const LINEAR: u8 = 1;
/// In [`shape`]: the VAST has a non-linear ad (`<NonLinear>`), an overlay beside the content.
pub const NON_LINEAR: u8 = 1 << 1;
/// In [`shape`]: every media file is VPAID (`apiFramework="VPAID"`), so only a player that runs
/// VPAID plays it.
pub const ONLY_VPAID: u8 = 1 << 2;
/// In [`shape`]: a `<Linear>` has a `skipoffset`, so the ad offers its own skip button (IAB
/// creative attribute 16, "Ad Provides Skip Button", listed or not).
pub const SKIPPABLE: u8 = 1 << 3;

/// What VAST markup holds, as [`LINEAR`], [`NON_LINEAR`], [`ONLY_VPAID`] and [`SKIPPABLE`] bits.
/// A wrapper that names neither kind of ad has neither bit: its kind is in the VAST it wraps.
pub fn shape(markup: &str) -> u8 {
    let tags = |name| start_tags(markup, name);
    let mut shape = 0;
    for linear in tags("<Linear") {
        shape |= LINEAR;
        if attribute(linear, "skipoffset").is_some() {
            shape |= SKIPPABLE;
        }
    }
    if tags("<NonLinear").next().is_some() {
        shape |= NON_LINEAR;
    }
    let mut media = tags("<MediaFile").peekable();
    if media.peek().is_some()
        && media
            .all(|tag| attribute(tag, "apiFramework").is_some_and(|api| api.eq_ignore_ascii_case("VPAID")))
    {
        shape |= ONLY_VPAID;
    }
    shape
}

/// The start tags of `markup` named exactly `name` (`<MediaFile`, not `<MediaFiles`), each up
/// to its `>`.
fn start_tags<'m>(markup: &'m str, name: &'static str) -> impl Iterator<Item = &'m str> + 'm {
    markup
        .match_indices(name)
        .map(|(at, _)| &markup[at..])
        .filter(move |tag| {
            tag[name.len()..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        })
        .map(|tag| &tag[..tag.find('>').unwrap_or(tag.len())])
}

/// The MIME types of VAST markup's media files (their `type` attributes), in order.
pub fn media_types(markup: &str) -> impl Iterator<Item = &str> {
    start_tags(markup, "<MediaFile").filter_map(|tag| attribute(tag, "type"))
}

/// The length of VAST markup's first linear ad, in whole seconds, from its `<Duration>`
/// (`HH:MM:SS` or `HH:MM:SS.mmm`); 0 when it has none that reads, as a wrapper has none.
pub fn duration_s(markup: &str) -> u16 {
    let Some(at) = markup.find("<Duration>") else { return 0 };
    let text = &markup[at + "<Duration>".len()..];
    let text = text[..text.find('<').unwrap_or(text.len())].trim();
    let text = text.split_once('.').map_or(text, |(whole, _)| whole);
    let mut parts = text.split(':').map(|p| p.parse::<u32>().ok().filter(|_| p.len() == 2));
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(h)), Some(Some(m)), Some(Some(sec)), None) if m < 60 && sec < 60 => {
            (h * 3600 + m * 60 + sec).min(u16::MAX as u32) as u16
        }
        _ => 0,
    }
}

/// Whether a player whose impression asks for `linearity` (OpenRTB: 1 linear, 2 non-linear, 0
/// any) and runs VPAID or not plays VAST of this [`shape`]. A shape without either kind (a
/// wrapper) is taken at its word.
pub fn fits_player(shape: u8, linearity: u8, runs_vpaid: bool) -> bool {
    let kind_ok = match linearity {
        1 => shape & LINEAR != 0 || shape & (LINEAR | NON_LINEAR) == 0,
        2 => shape & NON_LINEAR != 0 || shape & (LINEAR | NON_LINEAR) == 0,
        _ => true,
    };
    kind_ok && (runs_vpaid || shape & ONLY_VPAID == 0)
}

/// The value of attribute `name` in a start tag (quoted with `"` or `'`).
fn attribute<'t>(tag: &'t str, name: &str) -> Option<&'t str> {
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + name.len()..].trim_start();
        rest = &rest[at + name.len()..];
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let Some(value) = after.strip_prefix('=').map(str::trim_start) else { continue };
        let quote = value.chars().next()?;
        if quote != '"' && quote != '\'' {
            continue;
        }
        let value = &value[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

/// Whether a player listing `protocols` plays VAST of protocol `code`: it lists that code, or a
/// later minor version of the same major VAST of the same kind (a VAST 4.2 player plays 4.0, a
/// VAST 3 player does not play 4.0). Unknown VAST (`code` 0) plays nowhere that lists protocols.
pub fn plays(protocols: impl IntoIterator<Item = u16>, code: u8) -> bool {
    let Some(&(_, major, minor, wrapper)) = PROTOCOLS.iter().find(|p| p.0 == code) else { return false };
    protocols.into_iter().any(|listed| {
        PROTOCOLS
            .iter()
            .any(|&(c, ma, mi, wr)| u16::from(c) == listed && ma == major && mi >= minor && wr == wrapper)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_offset_on_a_linear_is_a_skip_button() {
        let skippable = |markup: &str| shape(markup) & SKIPPABLE != 0;
        assert!(skippable(r#"<Creative><Linear skipoffset="00:00:05"><Duration>"#));
        assert!(skippable(r#"<Linear>x</Linear><Linear  skipoffset='25%'>"#));
        assert!(!skippable("<Linear><Duration>00:00:30</Duration></Linear>"));
        assert!(!skippable(r#"<Linear data-skipoffset="5">"#));
        assert!(!skippable(r#"<NonLinear skipoffset="5">"#));
    }

    #[test]
    fn linear_non_linear_and_vpaid_only_ads_go_to_players_that_take_them() {
        let mp4 = r#"<MediaFile type="video/mp4">a.mp4</MediaFile>"#;
        let vpaid = r#"<MediaFile type="application/javascript" apiFramework="vpaid">v.js</MediaFile>"#;
        let linear = shape(&format!("<Linear><MediaFiles>{mp4}</MediaFiles></Linear>"));
        assert_eq!(linear, LINEAR);
        let overlay = shape("<NonLinearAds><NonLinear><StaticResource/></NonLinear></NonLinearAds>");
        assert_eq!(overlay, NON_LINEAR);
        assert_eq!(shape(&format!("<Linear><MediaFiles>{vpaid}</MediaFiles></Linear>")), LINEAR | ONLY_VPAID);
        assert_eq!(shape(&format!("<Linear><MediaFiles>{vpaid}{mp4}</MediaFiles></Linear>")), LINEAR);
        let wrapper = shape("<Wrapper><VASTAdTagURI>https://x</VASTAdTagURI></Wrapper>");
        assert_eq!(wrapper, 0);

        assert!(fits_player(linear, 1, false) && fits_player(linear, 0, false));
        assert!(!fits_player(linear, 2, true) && !fits_player(overlay, 1, true));
        assert!(fits_player(overlay, 2, false) && fits_player(wrapper, 2, false));
        assert!(!fits_player(LINEAR | ONLY_VPAID, 1, false) && fits_player(LINEAR | ONLY_VPAID, 1, true));
    }

    #[test]
    fn the_version_and_kind_give_the_code() {
        let inline =
            |version: &str| format!(r#"<?xml version="1.0"?><VAST {version} xmlns="x"><Ad><InLine>"#);
        assert_eq!(protocol_of(&inline(r#"version="4.0""#)), 7);
        assert_eq!(protocol_of(&inline("version='4.2'")), 13);
        assert_eq!(protocol_of(&inline(r#"version = "3.0""#)), 3);
        assert_eq!(protocol_of(&inline(r#"version="2""#)), 2);
        assert_eq!(protocol_of(r#"<VAST version="4.1"><Ad><Wrapper><VASTAdTagURI>"#), 12);
        for unknown in [
            inline(r#"version="5.0""#),
            inline(r#"xversion="4.0""#),
            inline(""),
            r#"<VAST version="4.0"></VAST>"#.to_owned(),
            "<html>".to_owned(),
        ] {
            assert_eq!(protocol_of(&unknown), 0, "{unknown}");
        }
    }

    #[test]
    fn a_player_plays_its_versions_and_earlier_minors_of_them() {
        assert!(plays([2, 3, 7], 7));
        assert!(plays([13], 7), "a 4.2 player plays 4.0");
        assert!(plays([15, 16], 11));
        assert!(!plays([2, 3, 5, 6], 7), "a VAST 3 player does not play 4.0");
        assert!(!plays([7], 11), "a 4.0 player does not play 4.1");
        assert!(!plays([8], 7), "a wrapper-only player");
        assert!(!plays([7, 8], 0));
        assert!(!plays([], 7));
    }

    #[test]
    fn durations_and_media_types_are_read() {
        let linear = |duration: &str| format!("<Linear><Duration>{duration}</Duration></Linear>");
        assert_eq!(duration_s(&linear("00:00:15")), 15);
        assert_eq!(duration_s(&linear(" 00:01:30.500 ")), 90);
        assert_eq!(duration_s(&linear("01:00:00")), 3600);
        for bad in ["0:15", "00:00:75", "00:60:00", "aa:bb:cc", "00:00:15:00", ""] {
            assert_eq!(duration_s(&linear(bad)), 0, "{bad}");
        }
        assert_eq!(duration_s("<Wrapper><VASTAdTagURI>https://x</VASTAdTagURI></Wrapper>"), 0);
        let media = r#"<MediaFiles><MediaFile type="video/mp4">a</MediaFile><MediaFile delivery="progressive" type='video/webm'>b</MediaFile><MediaFile>c</MediaFile></MediaFiles>"#;
        assert_eq!(media_types(media).collect::<Vec<_>>(), ["video/mp4", "video/webm"]);
    }
}

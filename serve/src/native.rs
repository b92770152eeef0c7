//! OpenRTB Dynamic Native Ads 1.0 to 1.2: the assets a native impression asks for, the assets a
//! creative's native markup holds, and the answer's assets renumbered with the request's ids.
//!
//! A native answer must give each asset the id the request gave it, and hold every asset the
//! request requires. The catalog's native markup numbers its assets as it likes, so the request
//! is matched against the markup's assets: by kind (a title, an image of a type, a data element of
//! a type), within the lengths and the image sizes the request sets. Required assets are matched
//! first, then the optional ones, as a bipartite matching ([`assign`]): each takes the first
//! asset of the markup that fits and is free, or one whose holder can move to another; markup
//! assets the request does not ask for are left out of the answer. A video asset is VAST in the
//! markup's `vasttag`: it fits a requested video by its media files' MIME types, its length and
//! its VAST version (as [`crate::vast`] reads them).
//! Limits: the first [`NATIVE_ASSETS_MAX`] assets of a request and of a creative are read.

use serde_json::Value;

/// Assets read from a native request, and from a creative's markup, at most.
pub const NATIVE_ASSETS_MAX: usize = 32;
/// Entries read from a video asset's `mimes` and `protocols` at most.
pub const VIDEO_LIST_MAX: usize = 16;
const _: () = assert!(NATIVE_ASSETS_MAX <= 32, "assign marks offered assets in a u32");

/// What an asset is. Image types: 1 icon, 2 logo, 3 main; data types 1 to 12 and any
/// exchange-specific one (500 and up) as the specification lists them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    Title,
    /// An image of this type; 0 when the request or the markup does not say.
    Image(u16),
    Data(u16),
    /// A video: VAST, in the markup's `vasttag`.
    Video,
    /// Anything else: an asset of none of the kinds above.
    #[default]
    Other,
}

/// The video MIME types a video asset's mask names, bit `n` for entry `n`. A type outside the
/// list matches nothing: a request listing only such types takes no video asset, and a media
/// file of such a type answers no request that lists its types.
pub const VIDEO_MIMES: [&str; 10] = [
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/3gpp",
    "video/quicktime",
    "video/x-m4v",
    "application/x-mpegurl",
    "application/vnd.apple.mpegurl",
    "application/dash+xml",
    "application/javascript",
];

/// A mask that takes every video MIME type: the request lists none.
pub const ANY_MIME: u16 = u16::MAX;
/// A mask that takes every VAST protocol: the request lists none.
pub const ANY_PROTOCOL: u32 = u32::MAX;

pub(crate) fn mime_bit(mime: &str) -> u16 {
    VIDEO_MIMES.iter().position(|m| m.eq_ignore_ascii_case(mime.trim())).map_or(0, |i| 1 << i)
}

/// One asset a native impression asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub id: u64,
    pub required: bool,
    pub kind: Kind,
    /// Longest title or data value, in characters; 0: any.
    pub len: u32,
    /// Smallest image, in pixels; 0: any.
    pub wmin: u32,
    pub hmin: u32,
    /// The image's exact size, in pixels, where the request gives `w` (or `h`) without `wmin`
    /// (or `hmin`), which the specification reads as an exact requirement; 0: any.
    pub w: u32,
    pub h: u32,
    /// A video's shortest and longest length, in seconds (`minduration`, `maxduration`); 0: no
    /// bound.
    pub min_s: u16,
    pub max_s: u16,
    /// A video's MIME types, as [`VIDEO_MIMES`] bits; [`ANY_MIME`] when the request lists none.
    pub mimes: u16,
    /// A video's VAST versions, bit `n` for OpenRTB protocol code `n` (1 to 31);
    /// [`ANY_PROTOCOL`] when the request lists none.
    pub protocols: u32,
}

/// One asset of a creative's native markup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offered {
    pub kind: Kind,
    /// Characters of a title's text or a data element's value; a video's length in seconds (0
    /// when its VAST gives none, as a wrapper's does not).
    pub len: u32,
    /// An image's size, 0 when the markup does not give it.
    pub w: u32,
    pub h: u32,
    /// A video's media files' MIME types, as [`VIDEO_MIMES`] bits.
    pub mimes: u16,
    /// A video's VAST version, as an OpenRTB protocol code ([`crate::vast::protocol_of`]).
    pub protocol: u8,
}

/// What a native impression asks for: its `imp.native.request`, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeRequest {
    pub assets: Vec<Wanted>,
    /// The request had the 1.0 layout, its fields in a root `native` object: the answer takes
    /// the same layout. 1.1 and later put them at the root, in requests and answers.
    pub wrapped: bool,
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn small(n: u64) -> u32 {
    n.min(u32::MAX as u64) as u32
}

fn type_of(v: &Value) -> u16 {
    number(v, "type").min(u16::MAX as u64) as u16
}

/// Reads `imp.native.request` from a `Value`: a JSON string as the specification has it, or the
/// object itself as some exchanges send it. `None` when it holds no assets adsnap can read:
/// without the request's asset ids there is no valid answer. The server reads requests with
/// [`crate::native_reader::read`], straight from the text; this reader is the rules in their
/// plainest form, which the tests hold that one to.
#[cfg(test)]
pub(crate) fn read_request(request: &Value) -> Option<NativeRequest> {
    let parsed;
    let request = match request {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    let (root, wrapped) = match request.get("native") {
        Some(inner) if inner.is_object() => (inner, true),
        _ => (request, false),
    };
    let mut assets = Vec::new();
    for asset in root.get("assets")?.as_array()?.iter().take(NATIVE_ASSETS_MAX) {
        let id = asset.get("id")?.as_u64()?;
        let mut wanted = Wanted { id, required: number(asset, "required") == 1, ..Wanted::default() };
        if let Some(title) = asset.get("title") {
            (wanted.kind, wanted.len) = (Kind::Title, small(number(title, "len")));
        } else if let Some(img) = asset.get("img") {
            wanted.kind = Kind::Image(type_of(img));
            (wanted.wmin, wanted.hmin) = (small(number(img, "wmin")), small(number(img, "hmin")));
            // A size without its minimum is exact; with one, it is only the size preferred.
            wanted.w = if wanted.wmin == 0 { small(number(img, "w")) } else { 0 };
            wanted.h = if wanted.hmin == 0 { small(number(img, "h")) } else { 0 };
        } else if let Some(data) = asset.get("data") {
            (wanted.kind, wanted.len) = (Kind::Data(type_of(data)), small(number(data, "len")));
        } else if let Some(video) = asset.get("video") {
            // A list left out, empty or `null` sets no bound, as a video impression's do.
            let list = |key: &str| {
                let list = video.get(key).and_then(Value::as_array).filter(|l| !l.is_empty());
                list.map(|l| l.iter().take(VIDEO_LIST_MAX))
            };
            let seconds = |key: &str| number(video, key).min(u16::MAX as u64) as u16;
            wanted.kind = Kind::Video;
            (wanted.min_s, wanted.max_s) = (seconds("minduration"), seconds("maxduration"));
            wanted.mimes = list("mimes").map_or(ANY_MIME, |l| {
                l.filter_map(Value::as_str).fold(0, |mask, mime| mask | mime_bit(mime))
            });
            wanted.protocols = list("protocols").map_or(ANY_PROTOCOL, |l| {
                l.filter_map(Value::as_u64)
                    .filter(|code| (1..32).contains(code))
                    .fold(0, |mask, code| mask | 1 << code)
            });
        }
        assets.push(wanted);
    }
    (!assets.is_empty()).then_some(NativeRequest { assets, wrapped })
}

/// The assets array of native markup, in either layout.
fn markup_assets(markup: &Value) -> Option<&Vec<Value>> {
    markup.get("native").unwrap_or(markup).get("assets")?.as_array()
}

/// The assets of a creative's rendered native markup, in its order (the first
/// [`NATIVE_ASSETS_MAX`]); empty when it is not native JSON.
pub fn offered(markup: &str) -> Vec<Offered> {
    let Ok(markup) = serde_json::from_str::<Value>(markup) else { return Vec::new() };
    let Some(assets) = markup_assets(&markup) else { return Vec::new() };
    assets.iter().take(NATIVE_ASSETS_MAX).map(offered_asset).collect()
}

fn offered_asset(asset: &Value) -> Offered {
    let chars = |v: Option<&Value>| small(v.and_then(Value::as_str).map_or(0, |s| s.chars().count() as u64));
    if let Some(title) = asset.get("title") {
        return Offered { kind: Kind::Title, len: chars(title.get("text")), ..Offered::default() };
    }
    if let Some(img) = asset.get("img") {
        let (w, h) = (small(number(img, "w")), small(number(img, "h")));
        return Offered { kind: Kind::Image(type_of(img)), w, h, ..Offered::default() };
    }
    if let Some(vast) = asset.get("video").and_then(|v| v.get("vasttag")).and_then(Value::as_str) {
        return Offered {
            kind: Kind::Video,
            len: u32::from(crate::vast::duration_s(vast)),
            mimes: crate::vast::media_types(vast).fold(0, |mask, mime| mask | mime_bit(mime)),
            protocol: crate::vast::protocol_of(vast),
            ..Offered::default()
        };
    }
    match asset.get("data") {
        Some(data) if data.get("type").is_some() => {
            Offered { kind: Kind::Data(type_of(data)), len: chars(data.get("value")), ..Offered::default() }
        }
        _ => Offered::default(),
    }
}

fn fits(wanted: &Wanted, offered: &Offered) -> bool {
    let len_ok = wanted.len == 0 || offered.len <= wanted.len;
    match (wanted.kind, offered.kind) {
        (Kind::Title, Kind::Title) => len_ok,
        (Kind::Image(want), Kind::Image(have)) => {
            (want == 0 || want == have)
                && offered.w >= wanted.wmin
                && offered.h >= wanted.hmin
                && (wanted.w == 0 || offered.w == wanted.w)
                && (wanted.h == 0 || offered.h == wanted.h)
        }
        (Kind::Data(want), Kind::Data(have)) => want == have && len_ok,
        (Kind::Video, Kind::Video) => {
            (wanted.mimes == ANY_MIME || wanted.mimes & offered.mimes != 0)
                && (wanted.min_s == 0 || offered.len >= u32::from(wanted.min_s))
                && (wanted.max_s == 0 || offered.len <= u32::from(wanted.max_s))
                && (wanted.protocols == ANY_PROTOCOL
                    || crate::vast::plays(
                        (1..32u16).filter(|&code| wanted.protocols & 1 << code != 0),
                        offered.protocol,
                    ))
        }
        _ => false,
    }
}

/// Not matched, in [`assign`]'s answer.
pub const UNMATCHED: u8 = u8::MAX;

/// Matches the request's assets to the markup's: for each wanted asset, the index of the
/// offered one that answers it, or [`UNMATCHED`]. `None` when a required asset finds none, or
/// when no asset at all matches (an answer without assets shows nothing).
///
/// A bipartite matching by augmenting paths: the required assets are matched first, then the
/// optional ones, each to the first offered asset that fits, moving earlier matches to other
/// assets that fit them when that frees one. So a request whose assets can all be answered is,
/// even when a greedy choice would have taken the one asset a later request asset needed (two
/// images of different minimum sizes, for example); and a matched asset is never dropped for a
/// later one. Allocates nothing: the decision calls it for each native creative it considers.
pub fn assign(wanted: &[Wanted], offered: &[Offered]) -> Option<[u8; NATIVE_ASSETS_MAX]> {
    let (wanted, offered) =
        (&wanted[..wanted.len().min(NATIVE_ASSETS_MAX)], &offered[..offered.len().min(NATIVE_ASSETS_MAX)]);
    let mut matching =
        Matching { answer: [UNMATCHED; NATIVE_ASSETS_MAX], owner: [UNMATCHED; NATIVE_ASSETS_MAX] };
    for required in [true, false] {
        for (i, w) in wanted.iter().enumerate() {
            if w.required == required && !matching.augment(i, wanted, offered, &mut 0) && required {
                return None;
            }
        }
    }
    matching.owner.iter().any(|&i| i != UNMATCHED).then_some(matching.answer)
}

/// A matching in progress: wanted asset → offered asset and back.
struct Matching {
    answer: [u8; NATIVE_ASSETS_MAX],
    owner: [u8; NATIVE_ASSETS_MAX],
}

impl Matching {
    /// Finds wanted asset `i` an offered one: the first free one that fits, else one whose
    /// holder can move to another along an augmenting path. `seen` marks the offered assets this
    /// search has tried. Depth is at most [`NATIVE_ASSETS_MAX`].
    fn augment(&mut self, i: usize, wanted: &[Wanted], offered: &[Offered], seen: &mut u32) -> bool {
        // The offered assets that fit this one, each checked once for both passes below.
        let fit = (0..offered.len()).filter(|&j| fits(&wanted[i], &offered[j])).fold(0u32, |m, j| m | 1 << j);
        let free = (0..offered.len()).find(|&j| (fit & !*seen) & (1 << j) != 0 && self.owner[j] == UNMATCHED);
        if let Some(j) = free {
            (self.owner[j], self.answer[i]) = (i as u8, j as u8);
            return true;
        }
        for j in 0..offered.len() {
            if (fit & !*seen) & (1 << j) == 0 {
                continue;
            }
            *seen |= 1 << j;
            // Every fitting free asset was taken above, so this one has a holder.
            let holder = self.owner[j];
            if holder != UNMATCHED && self.augment(holder as usize, wanted, offered, seen) {
                (self.owner[j], self.answer[i]) = (i as u8, j as u8);
                return true;
            }
        }
        false
    }
}

/// The answer's native markup: the rendered markup with the assets the request asked for, in its
/// order and with its ids, in the request's layout. `None` when a required asset finds none, or
/// the markup is not native JSON.
pub fn answer(markup: &str, request: &NativeRequest) -> Option<String> {
    let mut markup: Value = serde_json::from_str(markup).ok()?;
    let assets = markup_assets(&markup)?;
    let offered: Vec<Offered> = assets.iter().take(NATIVE_ASSETS_MAX).map(offered_asset).collect();
    let matched = assign(&request.assets, &offered)?;
    let mut answered = Vec::with_capacity(request.assets.len());
    for (wanted, &j) in request.assets.iter().zip(matched.iter()) {
        if j == UNMATCHED {
            continue;
        }
        let mut asset = assets[j as usize].clone();
        asset.as_object_mut()?.insert("id".into(), wanted.id.into());
        answered.push(asset);
    }
    let mut root = match markup.get_mut("native").map(Value::take) {
        Some(inner) => inner,
        None => markup,
    };
    root.as_object_mut()?.insert("assets".into(), Value::Array(answered));
    let answer = if request.wrapped { serde_json::json!({ "native": root }) } else { root };
    serde_json::to_string(&answer).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKUP: &str = r#"{"native":{"ver":"1.2","assets":[
        {"id":1,"required":1,"title":{"text":"Know where your money goes"}},
        {"id":2,"required":1,"img":{"type":1,"url":"https://cdn.example/i.png","w":128,"h":128}},
        {"id":3,"required":1,"img":{"type":3,"url":"https://cdn.example/m.jpg","w":1200,"h":627}},
        {"id":4,"data":{"type":2,"value":"Budgets that keep themselves"}},
        {"id":5,"video":{"vasttag":"<VAST/>"}}],
        "link":{"url":"https://t.example/c"},"imptrackers":["https://t.example/i"]}}"#;

    /// A request as the server reads it.
    fn request(text: &str) -> NativeRequest {
        crate::native_reader::read(text).unwrap()
    }

    #[test]
    fn the_markup_assets_are_read_by_kind_and_size() {
        let offered = offered(MARKUP);
        assert_eq!(offered.len(), 5);
        assert_eq!(offered[0], Offered { kind: Kind::Title, len: 26, ..Offered::default() });
        assert_eq!(offered[2], Offered { kind: Kind::Image(3), w: 1200, h: 627, ..Offered::default() });
        assert_eq!(offered[3].kind, Kind::Data(2));
        assert_eq!(
            offered[4],
            Offered { kind: Kind::Video, ..Offered::default() },
            "VAST of no version or media"
        );
        assert!(super::offered("<html>").is_empty() && super::offered("{\"a\":1}").is_empty());
    }

    #[test]
    fn the_answer_carries_the_requests_ids_in_its_layout() {
        // A 1.2 request (no root `native`), asking for the main image and title under its own
        // ids, a sponsor name it may go without, and the description.
        let wanted = request(
            r#"{"ver":"1.2","assets":[
                {"id":7,"required":1,"img":{"type":3,"wmin":600,"hmin":300}},
                {"id":8,"required":1,"title":{"len":90}},
                {"id":9,"data":{"type":1}},
                {"id":10,"data":{"type":2,"len":140}}]}"#,
        );
        assert!(!wanted.wrapped);
        let answer: Value = serde_json::from_str(&answer(MARKUP, &wanted).unwrap()).unwrap();
        assert!(answer.get("native").is_none(), "{answer}");
        let assets = answer["assets"].as_array().unwrap();
        let ids: Vec<u64> = assets.iter().map(|a| a["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [7, 8, 10]);
        assert_eq!(assets[0]["img"]["w"], 1200);
        assert_eq!(assets[1]["title"]["text"], "Know where your money goes");
        assert_eq!(answer["link"]["url"], "https://t.example/c");
        assert_eq!(answer["imptrackers"][0], "https://t.example/i");

        // The 1.0 layout is answered in the 1.0 layout.
        let wrapped =
            request(r#"{"native":{"ver":"1.0","assets":[{"id":1,"required":1,"title":{"len":25}}]}}"#);
        assert!(wrapped.wrapped);
        // A 26-character title does not fit a length of 25.
        assert_eq!(super::answer(MARKUP, &wrapped), None);
        let wrapped =
            request(r#"{"native":{"ver":"1.0","assets":[{"id":4,"required":1,"title":{"len":26}}]}}"#);
        let answer: Value = serde_json::from_str(&super::answer(MARKUP, &wrapped).unwrap()).unwrap();
        assert_eq!(answer["native"]["assets"][0]["id"], 4, "{answer}");
        assert_eq!(answer["native"]["assets"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn required_assets_are_matched_first_and_each_once() {
        let offered = offered(MARKUP);
        let wanted = |json: &str| request(json).assets;
        // An optional icon listed first does not take the only icon from a required one.
        let two_icons =
            wanted(r#"{"assets":[{"id":1,"img":{"type":1}},{"id":2,"required":1,"img":{"type":1}}]}"#);
        let matched = assign(&two_icons, &offered).unwrap();
        assert_eq!((matched[0], matched[1]), (UNMATCHED, 1));
        // Two required icons, one in the markup: no match.
        let both = wanted(
            r#"{"assets":[{"id":1,"required":1,"img":{"type":1}},{"id":2,"required":1,"img":{"type":1}}]}"#,
        );
        assert_eq!(assign(&both, &offered), None);
        // Too small a main image, a data type the markup lacks, a video: none matches.
        for json in [
            r#"{"assets":[{"id":1,"required":1,"img":{"type":3,"wmin":1201}}]}"#,
            r#"{"assets":[{"id":1,"required":1,"data":{"type":12}}]}"#,
            r#"{"assets":[{"id":1,"required":1,"video":{"mimes":["video/mp4"]}}]}"#,
        ] {
            assert_eq!(assign(&wanted(json), &offered), None, "{json}");
        }
        // An image of no stated type takes any image.
        assert!(assign(&wanted(r#"{"assets":[{"id":1,"required":1,"img":{}}]}"#), &offered).is_some());
        // Any image first, then the icon: the first image is moved to the main image so that the
        // icon is free for the asset that takes nothing else (a greedy match found none).
        let any_then_icon =
            wanted(r#"{"assets":[{"id":1,"required":1,"img":{}},{"id":2,"required":1,"img":{"type":1}}]}"#);
        assert_eq!(assign(&any_then_icon, &offered).map(|m| (m[0], m[1])), Some((2, 1)));
        // An optional asset never takes what a required one needs, and is itself kept once
        // matched: the optional image keeps the icon, the required any-image takes the main one.
        let optional_icon_first =
            wanted(r#"{"assets":[{"id":1,"img":{"type":1}},{"id":2,"required":1,"img":{}}]}"#);
        assert_eq!(assign(&optional_icon_first, &offered).map(|m| (m[0], m[1])), Some((1, 2)));
        // Three images asked for, two in the markup: the optional third goes without.
        let three = wanted(
            r#"{"assets":[{"id":1,"required":1,"img":{}},{"id":2,"required":1,"img":{}},{"id":3,"img":{}}]}"#,
        );
        assert_eq!(assign(&three, &offered).map(|m| (m[0], m[1], m[2])), Some((1, 2, UNMATCHED)));
        // Only optional assets, none of which the markup has: nothing to show, no match.
        let nothing = wanted(r#"{"assets":[{"id":1,"data":{"type":12}},{"id":2,"img":{"type":2}}]}"#);
        assert_eq!(assign(&nothing, &offered), None);
        let something = wanted(r#"{"assets":[{"id":1,"data":{"type":12}},{"id":2,"data":{"type":2}}]}"#);
        assert_eq!(assign(&something, &offered).map(|m| (m[0], m[1])), Some((UNMATCHED, 3)));
    }

    #[test]
    fn an_image_size_without_its_minimum_is_exact() {
        let offered = offered(MARKUP);
        let matches = |img: &str| {
            let json = format!(r#"{{"assets":[{{"id":1,"required":1,"img":{{"type":3,{img}}}}}]}}"#);
            assign(&request(&json).assets, &offered).is_some()
        };
        assert!(matches(r#""w":1200,"h":627"#));
        assert!(!matches(r#""w":1200,"h":628"#) && !matches(r#""w":1000"#) && !matches(r#""h":600"#));
        // With a minimum, the size is only the one preferred.
        assert!(matches(r#""w":1000,"wmin":1000,"h":600,"hmin":600"#));
        assert!(matches(r#""w":1200,"hmin":1"#) && !matches(r#""w":1201,"hmin":1"#));
        // The icon is 128 by 128: exactly 50 by 50 is not it, exactly 128 by 128 is.
        let icon = |size: u32| {
            let json =
                format!(r#"{{"assets":[{{"id":1,"required":1,"img":{{"type":1,"w":{size},"h":{size}}}}}]}}"#);
            assign(&request(&json).assets, &offered).is_some()
        };
        assert!(!icon(50) && icon(128));
    }

    #[test]
    fn a_video_asset_fits_by_type_length_and_vast_version() {
        let vast = r#"<VAST version="4.0"><Ad><InLine><Creatives><Creative><Linear><Duration>00:00:15.000</Duration><MediaFiles><MediaFile type="video/mp4">https://cdn.example/v.mp4</MediaFile><MediaFile type="video/webm">https://cdn.example/v.webm</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>"#;
        let markup = serde_json::json!({"assets": [
            {"id": 1, "title": {"text": "Castles"}},
            {"id": 2, "video": {"vasttag": vast}},
        ]})
        .to_string();
        let offered = offered(&markup);
        assert_eq!(
            offered[1],
            Offered { kind: Kind::Video, len: 15, mimes: 0b11, protocol: 7, ..Offered::default() }
        );
        let takes = |video: &str| {
            let json = format!(r#"{{"assets":[{{"id":9,"required":1,"video":{{{video}}}}}]}}"#);
            assign(&request(&json).assets, &offered).map(|m| m[0])
        };
        assert_eq!(
            takes(r#""mimes":["video/mp4"],"minduration":5,"maxduration":30,"protocols":[2,3,7]"#),
            Some(1)
        );
        assert_eq!(takes(r#""mimes":["VIDEO/WEBM","video/x-unheard-of"]"#), Some(1), "one type of the two");
        assert_eq!(takes(""), Some(1), "no lists: any type, any version");
        assert_eq!(takes(r#""mimes":[],"protocols":null"#), Some(1), "empty lists: the same");
        for refused in [
            r#""mimes":["video/3gpp"]"#,
            r#""mimes":["video/x-unheard-of"]"#,
            r#""minduration":16"#,
            r#""maxduration":14"#,
            r#""protocols":[2,3,5,6]"#,
            r#""protocols":[8]"#,
        ] {
            assert_eq!(takes(refused), None, "{refused}");
        }
        assert_eq!(takes(r#""protocols":[13]"#), Some(1), "a VAST 4.2 player plays 4.0");
        // The answer carries the VAST under the request's id.
        let wanted = request(r#"{"assets":[{"id":9,"required":1,"video":{"mimes":["video/mp4"]}}]}"#);
        let answer: Value = serde_json::from_str(&answer(&markup, &wanted).unwrap()).unwrap();
        assert_eq!(answer["assets"], serde_json::json!([{"id": 9, "video": {"vasttag": vast}}]));
    }

    /// The largest number of wanted assets that can be answered at once with every required
    /// one answered, by trying every assignment; `None` when the required ones cannot all be.
    fn best_by_brute_force(wanted: &[Wanted], offered: &[Offered]) -> Option<usize> {
        fn go(i: usize, wanted: &[Wanted], offered: &[Offered], taken: &mut Vec<bool>) -> Option<usize> {
            let Some(w) = wanted.get(i) else { return Some(0) };
            let mut best = if w.required { None } else { go(i + 1, wanted, offered, taken) };
            for j in 0..offered.len() {
                if !taken[j] && fits(w, &offered[j]) {
                    taken[j] = true;
                    if let Some(n) = go(i + 1, wanted, offered, taken) {
                        best = best.max(Some(n + 1));
                    }
                    taken[j] = false;
                }
            }
            best
        }
        go(0, wanted, offered, &mut vec![false; offered.len()])
    }

    fn image(type_: u16, w: u32) -> Offered {
        Offered { kind: Kind::Image(type_), w, h: w, ..Offered::default() }
    }

    proptest::proptest! {
        #[test]
        fn the_matching_answers_as_many_assets_as_any_assignment_could(
            offered in proptest::collection::vec((0u16..3, 1u32..4), 0..5),
            wanted in proptest::collection::vec((0u16..3, 0u32..4, proptest::bool::ANY), 0..5),
        ) {
            let offered: Vec<Offered> = offered.into_iter().map(|(t, w)| image(t + 1, w * 100)).collect();
            let wanted: Vec<Wanted> = wanted
                .into_iter()
                .enumerate()
                .map(|(i, (t, wmin, required))| Wanted {
                    id: i as u64,
                    required,
                    kind: Kind::Image(t),
                    wmin: wmin * 100,
                    ..Wanted::default()
                })
                .collect();
            let best = best_by_brute_force(&wanted, &offered).filter(|&n| n > 0);
            let found = assign(&wanted, &offered);
            proptest::prop_assert_eq!(found.is_some(), best.is_some());
            if let Some(answer) = found {
                let matched: Vec<(usize, usize)> = (0..wanted.len())
                    .filter(|&i| answer[i] != UNMATCHED)
                    .map(|i| (i, answer[i] as usize))
                    .collect();
                proptest::prop_assert_eq!(Some(matched.len()), best);
                for &(i, j) in &matched {
                    proptest::prop_assert!(fits(&wanted[i], &offered[j]));
                    proptest::prop_assert_eq!(matched.iter().filter(|m| m.1 == j).count(), 1);
                }
                for (i, w) in wanted.iter().enumerate() {
                    proptest::prop_assert!(!w.required || answer[i] != UNMATCHED);
                }
            }
        }
    }

    #[test]
    fn requests_without_readable_assets_are_refused() {
        for bad in [
            Value::String("not json".into()),
            Value::String(r#"{"assets":[]}"#.into()),
            Value::String(r#"{"assets":[{"title":{"len":9}}]}"#.into()),
            Value::String(r#"{"ver":"1.2"}"#.into()),
            Value::Null,
            serde_json::json!(7),
        ] {
            assert_eq!(read_request(&bad), None, "{bad}");
        }
        // Sent as an object rather than a string, as some exchanges do.
        let object = serde_json::json!({"assets": [{"id": 3, "required": 1, "title": {"len": 30}}]});
        assert_eq!(read_request(&object).unwrap().assets[0].id, 3);
    }
}

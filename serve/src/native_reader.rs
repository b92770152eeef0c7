//! Reading `imp.native.request` straight from the bid request's text, without building a
//! `serde_json::Value`: a native request of a few hundred bytes cost about 2.5 µs as a `Value`,
//! more than the rest of the bid request's decision.
//!
//! It reads exactly what `native::read_request` (a test-only reader of a `Value`, the rules in
//! their plainest form) reads, which a property test holds it to: a number is read as `Value::as_u64` reads it (a non-negative
//! integer; anything else counts as absent), an asset's `title`, `img`, `data` or `video` is
//! there whatever its value (a value that is not an object holds no fields), and a list that is
//! not an array is no list. A key repeated in an object is read each time and the last one
//! stands, as in a `Value`. The strategies of the property test draw about three requests in five
//! with assets, up to past [`NATIVE_ASSETS_MAX`], and every kind of value where each field goes.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

use crate::native::{
    mime_bit, Kind, NativeRequest, Wanted, ANY_MIME, ANY_PROTOCOL, NATIVE_ASSETS_MAX, VIDEO_LIST_MAX,
};
use crate::openrtb::Text;

/// Reads a native request from JSON text: the request object, or a JSON string holding it.
/// `None` where `native::read_request` gives `None`.
pub fn read(text: &str) -> Option<NativeRequest> {
    if text.trim_start().starts_with('"') {
        let inner: Text = serde_json::from_str(text).ok()?;
        return read_object(&inner);
    }
    read_object(text)
}

/// Reads the request object (any other JSON value reads as no request).
fn read_object(text: &str) -> Option<NativeRequest> {
    let root: Root = serde_json::from_str(text).ok()?;
    let (assets, wrapped) = match root.native {
        Some(inner) => (inner.assets, true),
        None => (root.assets, false),
    };
    // The key was there and its value an array.
    let assets = assets.and_then(|list| list.0)?;
    let wanted: Option<Vec<Wanted>> = assets.iter().map(Asset::wanted).collect();
    let wanted = wanted?;
    (!wanted.is_empty()).then_some(NativeRequest { assets: wanted, wrapped })
}

/// What `expecting` says of every lenient part: any JSON value is taken.
fn any_value(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("any JSON value")
}

/// Reads whatever comes next and keeps nothing of it.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The visitor methods for the JSON values a lenient part does not read, each giving `$value`:
/// `otherwise!('de, value; u64, str, seq)` writes `visit_u64`, `visit_str` and `visit_seq`.
macro_rules! otherwise {
    ($de:lifetime, $value:expr; $($kind:ident),*) => { $(otherwise!(@one $de, $kind, $value);)* };
    (@one $de:lifetime, u64, $value:expr) => {
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok($value) }
    };
    (@one $de:lifetime, i64, $value:expr) => {
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok($value) }
    };
    (@one $de:lifetime, f64, $value:expr) => {
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok($value) }
    };
    (@one $de:lifetime, bool, $value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok($value) }
    };
    (@one $de:lifetime, str, $value:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok($value) }
    };
    (@one $de:lifetime, unit, $value:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok($value) }
    };
    (@one $de:lifetime, seq, $value:expr) => {
        fn visit_seq<A: SeqAccess<$de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| $value)
        }
    };
    (@one $de:lifetime, map, $value:expr) => {
        fn visit_map<A: MapAccess<$de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map).map(|()| $value)
        }
    };
}

/// A value read as `Value::as_u64` reads it: `Some` for a non-negative integer only.
#[derive(Clone, Copy, Default)]
struct Num(Option<u64>);

impl Num {
    fn or_zero(self) -> u64 {
        self.0.unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Num, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                any_value(f)
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(u64::try_from(v).ok()))
            }
            otherwise!('de, Num(None); f64, bool, str, unit, seq, map);
        }
        deserializer.deserialize_any(V)
    }
}

/// The fields of an object that [`Object`] reads: each key's value is read by `field`, or
/// skipped.
trait Fields<'de>: Default {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// Any JSON value: an object's fields read into `T`, or `None` for any other value (a kind's
/// value then counts as an object without fields; the root `native` counts only as an object).
struct Object<T>(Option<T>);

impl<'de, T: Fields<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Object<T>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Fields<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                any_value(f)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<T>, A::Error> {
                let mut fields = T::default();
                while let Some(key) = map.next_key::<Text>()? {
                    fields.field(&key, &mut map)?;
                }
                Ok(Object(Some(fields)))
            }
            otherwise!('de, Object(None); seq, u64, i64, f64, bool, str, unit);
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: Default> Object<T> {
    /// The fields, or the defaults for a value that was no object.
    fn or_default(self) -> T {
        self.0.unwrap_or_default()
    }
}

/// An array's first `MAX` elements, each read as `T` (the rest are skipped), or `None` for any
/// other value.
struct List<T, const MAX: usize>(Option<Vec<T>>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for List<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<List<T, MAX>, D::Error> {
        struct V<T, const MAX: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
            type Value = List<T, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                any_value(f)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T, MAX>, A::Error> {
                let mut out = Vec::new();
                while out.len() < MAX {
                    match seq.next_element::<T>()? {
                        Some(element) => out.push(element),
                        None => return Ok(List(Some(out))),
                    }
                }
                skip_seq(seq).map(|()| List(Some(out)))
            }
            otherwise!('de, List(None); map, u64, i64, f64, bool, str, unit);
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The request's assets: the first [`NATIVE_ASSETS_MAX`] are read.
type Assets = List<Asset, NATIVE_ASSETS_MAX>;

/// The request's root, and the 1.0 layout's `native` object inside it.
#[derive(Default)]
struct Root {
    native: Option<Inner>,
    assets: Option<Assets>,
}

#[derive(Default)]
struct Inner {
    assets: Option<Assets>,
}

impl<'de> Fields<'de> for Root {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "native" => self.native = map.next_value::<Object<Inner>>()?.0,
            "assets" => self.assets = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Inner {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "assets" => self.assets = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Root {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Root, D::Error> {
        Ok(Object::<Root>::deserialize(deserializer)?.or_default())
    }
}

/// One asset of the request, as read; [`Asset::wanted`] turns it into what the matching uses.
#[derive(Default)]
struct Asset {
    id: Num,
    required: Num,
    title: Option<Sub>,
    img: Option<Sub>,
    data: Option<Sub>,
    video: Option<VideoSub>,
}

/// The numbers a title, an image or a data asset may give.
#[derive(Default)]
struct Sub {
    len: Num,
    type_: Num,
    w: Num,
    h: Num,
    wmin: Num,
    hmin: Num,
}

#[derive(Default)]
struct VideoSub {
    minduration: Num,
    maxduration: Num,
    /// [`mime_bit`]s of the strings of a non-empty `mimes` array; `None` when there is none.
    mimes: Option<u16>,
    /// Protocol codes 1 to 31 of a non-empty `protocols` array, as bits.
    protocols: Option<u32>,
}

impl<'de> Fields<'de> for Asset {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "id" => self.id = map.next_value()?,
            "required" => self.required = map.next_value()?,
            "title" => self.title = Some(map.next_value::<Object<Sub>>()?.or_default()),
            "img" => self.img = Some(map.next_value::<Object<Sub>>()?.or_default()),
            "data" => self.data = Some(map.next_value::<Object<Sub>>()?.or_default()),
            "video" => self.video = Some(map.next_value::<Object<VideoSub>>()?.or_default()),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Sub {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let slot = match key {
            "len" => &mut self.len,
            "type" => &mut self.type_,
            "w" => &mut self.w,
            "h" => &mut self.h,
            "wmin" => &mut self.wmin,
            "hmin" => &mut self.hmin,
            _ => return map.next_value::<IgnoredAny>().map(|_| ()),
        };
        *slot = map.next_value()?;
        Ok(())
    }
}

/// A string of a `mimes` array, as a [`mime_bit`] (0 for a type outside the list, or a value
/// that is not a string).
struct MimeBit(u16);

impl<'de> Deserialize<'de> for MimeBit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MimeBit, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MimeBit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                any_value(f)
            }
            fn visit_str<E>(self, v: &str) -> Result<MimeBit, E> {
                Ok(MimeBit(mime_bit(v)))
            }
            otherwise!('de, MimeBit(0); u64, i64, f64, bool, unit, seq, map);
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Asset {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Asset, D::Error> {
        Ok(Object::<Asset>::deserialize(deserializer)?.or_default())
    }
}

impl<'de> Fields<'de> for VideoSub {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "minduration" => self.minduration = map.next_value()?,
            "maxduration" => self.maxduration = map.next_value()?,
            "mimes" => {
                let list = map.next_value::<List<MimeBit, VIDEO_LIST_MAX>>()?.0.filter(|l| !l.is_empty());
                self.mimes = list.map(|l| l.iter().fold(0, |mask, bit| mask | bit.0));
            }
            "protocols" => {
                let list = map.next_value::<List<Num, VIDEO_LIST_MAX>>()?.0.filter(|l| !l.is_empty());
                self.protocols = list.map(|l| {
                    l.iter()
                        .filter_map(|code| code.0.filter(|c| (1..32).contains(c)))
                        .fold(0, |mask, code| mask | 1 << code)
                });
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl Asset {
    /// The asset as the matching reads it, or `None` without an id (the request is then not
    /// read at all, as without its ids no answer is valid).
    fn wanted(&self) -> Option<Wanted> {
        let small = |n: Num| n.or_zero().min(u32::MAX as u64) as u32;
        let type_of = |n: Num| n.or_zero().min(u16::MAX as u64) as u16;
        let mut wanted =
            Wanted { id: self.id.0?, required: self.required.or_zero() == 1, ..Wanted::default() };
        if let Some(title) = &self.title {
            (wanted.kind, wanted.len) = (Kind::Title, small(title.len));
        } else if let Some(img) = &self.img {
            wanted.kind = Kind::Image(type_of(img.type_));
            (wanted.wmin, wanted.hmin) = (small(img.wmin), small(img.hmin));
            // A size without its minimum is exact; with one, it is only the size preferred.
            wanted.w = if wanted.wmin == 0 { small(img.w) } else { 0 };
            wanted.h = if wanted.hmin == 0 { small(img.h) } else { 0 };
        } else if let Some(data) = &self.data {
            (wanted.kind, wanted.len) = (Kind::Data(type_of(data.type_)), small(data.len));
        } else if let Some(video) = &self.video {
            let seconds = |n: Num| n.or_zero().min(u16::MAX as u64) as u16;
            wanted.kind = Kind::Video;
            (wanted.min_s, wanted.max_s) = (seconds(video.minduration), seconds(video.maxduration));
            wanted.mimes = video.mimes.unwrap_or(ANY_MIME);
            wanted.protocols = video.protocols.unwrap_or(ANY_PROTOCOL);
        }
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// Any value where a number goes: the numbers `Value::as_u64` reads and every kind it does
    /// not.
    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (0u64..5).prop_map(Value::from),
            2 => (0u64..2000).prop_map(Value::from),
            1 => Just(json!(u64::MAX)),
            1 => (-5i64..0).prop_map(Value::from),
            1 => Just(json!(90.0)),
            1 => Just(json!("1")),
            1 => Just(Value::Null),
            1 => Just(json!(true)),
            1 => Just(json!([1])),
            1 => Just(json!({"len": 1})),
        ]
    }

    /// An object of some of `keys`, each with a value from `value`, in any order, sometimes a
    /// key twice; or now and then not an object at all.
    fn object(keys: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        let fields = proptest::collection::vec((proptest::sample::select(keys), value), 0..6);
        prop_oneof![
            8 => fields.prop_map(|fields| {
                // Written as text so that a repeated key stays repeated.
                let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{}", json!(k), text(v))).collect();
                Value::String(format!("{{{}}}", body.join(",")))
            }),
            1 => Just(Value::Null),
            1 => Just(json!(7)),
            1 => Just(json!("x")),
            1 => Just(json!([])),
        ]
        .boxed()
    }

    fn list(element: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        prop_oneof![
            6 => proptest::collection::vec(element, 0..20).prop_map(Value::Array),
            1 => Just(Value::Null),
            1 => Just(json!("video/mp4")),
            1 => Just(json!({"a": 1})),
        ]
        .boxed()
    }

    /// Text of a JSON value whose objects may repeat keys: [`object`]'s objects are carried as
    /// strings of their text and spliced in here.
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) if s.starts_with('{') => {
                // An object written by `object`: its values are spliced texts too.
                s.clone()
            }
            Value::Array(items) => format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(",")),
            other => other.to_string(),
        }
    }

    fn asset() -> BoxedStrategy<Value> {
        let sub = object(&["len", "type", "w", "h", "wmin", "hmin", "ext"], number().boxed());
        let mimes = list(
            prop_oneof![
                Just(json!("video/mp4")),
                Just(json!("VIDEO/WEBM")),
                Just(json!("video/x-unheard-of")),
                Just(json!(3)),
                Just(Value::Null)
            ]
            .boxed(),
        );
        let video_value = prop_oneof![number(), mimes, list(number().boxed())].boxed();
        let video = object(&["minduration", "maxduration", "mimes", "protocols", "ext"], video_value);
        let kinds = proptest::sample::select(&["title", "img", "data", "video", "required", "ext"][..]);
        let field = (kinds, prop_oneof![sub.clone(), sub, video, number()]);
        // Nearly always a numeric id, first or last; the kinds' objects with any fields.
        let id = prop_oneof![9 => (0u64..1000).prop_map(Value::from), 1 => number()];
        (id, proptest::collection::vec(field, 0..4), proptest::bool::ANY)
            .prop_map(|(id, fields, id_last)| {
                let mut body: Vec<String> =
                    fields.iter().map(|(k, v)| format!("{}:{}", json!(k), text(v))).collect();
                let id = format!(r#""id":{}"#, text(&id));
                if id_last {
                    body.push(id)
                } else {
                    body.insert(0, id)
                }
                Value::String(format!("{{{}}}", body.join(",")))
            })
            .boxed()
    }

    fn request() -> BoxedStrategy<Value> {
        let assets = proptest::collection::vec(asset(), 0..6).prop_map(Value::Array);
        let big = proptest::collection::vec(asset(), 30..36).prop_map(Value::Array);
        let assets = prop_oneof![8 => assets, 1 => big, 1 => list(asset())].boxed();
        let layout = (assets, 0..4u8).prop_map(|(assets, layout)| {
            let root = format!(r#"{{"ver":"1.2","assets":{}}}"#, text(&assets));
            Value::String(match layout {
                0 | 1 => root,
                2 => format!(r#"{{"native":{root}}}"#),
                _ => format!(r#"{{"native":7,"assets":{}}}"#, text(&assets)),
            })
        });
        prop_oneof![9 => layout, 1 => object(&["native", "assets", "ver"], number().boxed())].boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn it_reads_what_the_value_reader_reads(request in request()) {
            let text = text(&request);
            let value: Value = match serde_json::from_str(&text) {
                Ok(value) => value,
                // Not JSON at all (cannot happen from the strategy, but then neither reads it).
                Err(_) => return Ok(()),
            };
            prop_assert_eq!(read(&text), crate::native::read_request(&value), "{}", text);
            // The same request sent as a JSON string, as the specification has it.
            let quoted = serde_json::to_string(&text).unwrap();
            prop_assert_eq!(read(&quoted), crate::native::read_request(&Value::String(text.clone())));
        }
    }

    #[test]
    fn the_two_layouts_and_a_quoted_request_are_read() {
        let request = r#"{"ver":"1.2","assets":[{"id":3,"required":1,"img":{"type":3,"wmin":600,"hmin":300}},
            {"id":4,"video":{"mimes":["video/mp4"],"protocols":[7,99],"maxduration":30}}]}"#;
        let read_request = read(request).unwrap();
        assert!(!read_request.wrapped);
        assert_eq!(read_request.assets[0].kind, Kind::Image(3));
        assert_eq!((read_request.assets[1].mimes, read_request.assets[1].protocols), (1, 1 << 7));
        let wrapped = format!(r#"{{"native":{request}}}"#);
        assert!(read(&wrapped).unwrap().wrapped);
        assert_eq!(read(&serde_json::to_string(&wrapped).unwrap()), read(&wrapped));
        // Repeated keys: the last stands, as in a `Value`.
        for repeated in [
            r#"{"native":{"assets":[{"id":1,"title":{}}]},"native":7,"assets":[{"id":2,"img":{}}]}"#,
            r#"{"assets":[{"id":1,"title":{}}],"assets":[{"id":2,"img":{},"img":null}]}"#,
            r#"{"assets":[{"id":1,"id":"x","title":{"len":5,"len":6.5}}]}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(repeated).unwrap();
            assert_eq!(read(repeated), crate::native::read_request(&value), "{repeated}");
        }
        // Not a request: no assets, an asset without a numeric id, not JSON.
        for bad in [r#"{"assets":[]}"#, r#"{"assets":[{"id":"1","title":{}}]}"#, "{", r#""{""#, "7"] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}

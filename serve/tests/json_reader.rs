//! The hand-written ad request reader against serde_json's derive as the oracle: on any document,
//! UTF-8 or not, both accept with the same request or both refuse.

use std::borrow::Cow;

use adsnap_serve::request::AdRequest;
use proptest::prelude::*;

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec![" ", "\n", "\t", "\r", ""]), 0..3)
        .prop_map(|parts| parts.concat())
}

/// A JSON string literal: plain text, escapes of every kind, non-ASCII text, and the broken forms
/// (raw control characters, bad escapes, lone surrogates, a missing closing quote).
fn string_literal() -> impl Strategy<Value = String> {
    let good = prop::sample::select(vec![
        "a",
        "Z",
        "9",
        "-",
        ".",
        " ",
        "é",
        "日本",
        "🦀",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\f",
        "\\n",
        "\\r",
        "\\t",
        "\\u0041",
        "\\u00e9",
        "\\ud83e\\udd80",
        "\\u0000",
        "\\uFFFF",
    ]);
    let bad = prop::sample::select(vec![
        "\\ud83e",
        "\\udd80",
        "\\ud83ex",
        "\\ud83e\\u0041",
        "\\x",
        "\\u12",
        "\u{1}",
        "\t",
    ]);
    let piece = prop_oneof![40 => good, 1 => bad];
    (prop::collection::vec(piece, 0..6), prop::bool::weighted(0.97))
        .prop_map(|(pieces, closed)| format!("\"{}{}", pieces.concat(), if closed { "\"" } else { "" }))
}

/// A string that is always valid, from text an SDK sends.
fn good_string() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["\"banner\"", "\"ios\"", "\"14.2\"", "\"u-1\"", "\"\"", "\"a\\u0062c\""])
        .prop_map(str::to_string)
}

/// A value of any type, well or badly written. Arrays only where `arrays`: serde's derive takes a
/// struct written as an array of its fields, which the reader deliberately refuses.
fn any_value(arrays: bool) -> impl Strategy<Value = String> {
    let others: &[&str] = if arrays { &["[]", "[\"x\"]", "[true]"] } else { &["{}"] };
    let mut literals = vec!["true", "false", "null", "0", "-1.5", "tru", "nul", ""];
    literals.extend(others);
    prop_oneof![
        4 => string_literal(),
        2 => good_string(),
        1 => prop::sample::select(literals).prop_map(str::to_string),
    ]
}

/// A key as written: the field's name, sometimes with its first letter escaped (serde_json
/// unescapes keys).
fn written_key(field: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        9 => Just(format!("\"{field}\"")),
        1 => Just(format!("\"\\u{:04x}{}\"", field.as_bytes()[0], &field[1..])),
    ]
}

/// A key an object does not have, or one that is not a string.
fn foreign_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["\"colour\"", "\"\"", "\"Os\"", "1", "null"]).prop_map(str::to_string)
}

/// An object of `fields` in any order, each member's value from `value`: mostly each field once,
/// sometimes one left out, given twice, or a foreign key added.
fn object(
    fields: &'static [&'static str],
    value: impl Fn(&str) -> BoxedStrategy<String> + Copy + 'static,
) -> BoxedStrategy<String> {
    // A member's value is written for the field its key names (`""` for a foreign key).
    let member = move |field: &'static str, key: BoxedStrategy<String>| {
        (key, ws(), ws(), value(field)).prop_map(|(k, w1, w2, v)| format!("{w1}{k}{w2}:{w1}{v}{w2}")).boxed()
    };
    let own: Vec<BoxedStrategy<(bool, String)>> = fields
        .iter()
        .map(|&f| (prop::bool::weighted(0.985), member(f, written_key(f).boxed())).boxed())
        .collect();
    let again = prop::sample::select(fields).prop_flat_map(move |f| member(f, written_key(f).boxed()));
    let extra = prop::option::weighted(0.06, prop_oneof![member("", foreign_key().boxed()), again]);
    (own, extra, ws(), prop::bool::weighted(0.98))
        .prop_flat_map(|(own, extra, w, closed)| {
            let mut members: Vec<String> =
                own.into_iter().filter(|(keep, _)| *keep).map(|(_, m)| m).collect();
            members.extend(extra);
            (Just(members).prop_shuffle(), Just(w), Just(closed))
        })
        .prop_map(|(members, w, closed)| {
            format!("{{{w}{}{w}{}", members.join(","), if closed { "}" } else { "" })
        })
        .boxed()
}

const APP: &[&str] = &["bundle", "version"];
const DEVICE: &[&str] =
    &["os", "os_version", "make", "model", "ifa", "lmt", "type", "connection", "country", "language"];
const USER: &[&str] = &["id"];
const PRIVACY: &[&str] = &["gdpr", "tcf_consent", "us_privacy", "gpp", "coppa"];
const REQUEST: &[&str] = &["request_id", "app", "ad_unit_id", "format", "device", "user", "privacy"];

/// The value of a field: mostly its own type, sometimes any other.
fn field_value(key: &str) -> BoxedStrategy<String> {
    let (own, is_struct): (BoxedStrategy<String>, bool) = match key {
        "app" => (object(APP, field_value), true),
        "device" => (object(DEVICE, field_value), true),
        "user" => (object(USER, field_value), true),
        "privacy" => (object(PRIVACY, field_value), true),
        "lmt" | "coppa" => {
            (prop::sample::select(vec!["true", "false"]).prop_map(str::to_string).boxed(), false)
        }
        "gdpr" => {
            (prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string).boxed(), false)
        }
        _ => (prop_oneof![3 => good_string(), 1 => string_literal()].boxed(), false),
    };
    prop_oneof![80 => own, 1 => any_value(!is_struct)].boxed()
}

fn request_document() -> impl Strategy<Value = String> {
    (
        ws(),
        object(REQUEST, field_value),
        ws(),
        prop::sample::select(vec!["", "", "", "", "", "", "", "", "x", ","]),
    )
        .prop_map(|(w1, body, w2, tail)| format!("{w1}{body}{w2}{tail}"))
}

/// A valid request, with a string of non-ASCII text.
const VALID: &str = r#"{"request_id":"r-1","app":{"bundle":"com.x","version":"2"},"ad_unit_id":"u-1","format":"banner","device":{"os":"ios","os_version":"17.1","lmt":true,"country":"US"},"user":{"id":"u\u00e9 日本"},"privacy":{"gdpr":false,"coppa":true}}"#;

/// A valid request with one character deleted, replaced or inserted.
fn mutated_document() -> impl Strategy<Value = String> {
    let valid = VALID;
    let n = valid.chars().count();
    (0..n, 0..3u8, prop::sample::select(vec!['"', '{', '}', ',', ':', '\\', 'n', '1', ' ', 'é'])).prop_map(
        move |(at, edit, c)| {
            let mut chars: Vec<char> = valid.chars().collect();
            match edit {
                0 => {
                    chars.remove(at);
                }
                1 => chars[at] = c,
                _ => chars.insert(at, c),
            }
            chars.into_iter().collect()
        },
    )
}

/// A valid request with a run of bytes written over or inserted anywhere: bytes that are not
/// UTF-8 (a lone continuation byte, a lead byte without its continuation, an overlong form, a
/// surrogate's encoding, 0xff), or a whole character cut short, inside strings and out of them.
fn mutated_bytes() -> impl Strategy<Value = Vec<u8>> {
    let n = VALID.len();
    let runs = prop::sample::select(vec![
        vec![0x80],
        vec![0xbf],
        vec![0xc3],
        vec![0xc0, 0xaf],
        vec![0xed, 0xa0, 0x80],
        vec![0xf0, 0x9f, 0xa6],
        vec![0xff],
        "é".as_bytes().to_vec(),
        "🦀".as_bytes().to_vec(),
    ]);
    (0..n, prop::bool::ANY, runs).prop_map(|(at, insert, run)| {
        let mut bytes = VALID.as_bytes().to_vec();
        if insert {
            bytes.splice(at..at, run);
        } else {
            let end = (at + run.len()).min(bytes.len());
            bytes.splice(at..end, run);
        }
        bytes
    })
}

fn check_against_serde(doc: &[u8]) -> Result<(), TestCaseError> {
    let ours = AdRequest::parse(doc);
    let oracle = serde_json::from_slice::<AdRequest>(doc);
    let text = String::from_utf8_lossy(doc);
    match (&ours, &oracle) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
        (Err(_), Err(_)) => {}
        _ => prop_assert!(false, "reader {:?}, serde_json {:?} on {}", ours, oracle, text),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn generated_documents_read_as_serde_reads_them(doc in request_document()) {
        check_against_serde(doc.as_bytes())?;
    }

    #[test]
    fn mutated_requests_read_as_serde_reads_them(doc in mutated_document()) {
        check_against_serde(doc.as_bytes())?;
    }

    #[test]
    fn requests_with_bytes_that_are_not_utf8_read_as_serde_reads_them(doc in mutated_bytes()) {
        check_against_serde(&doc)?;
    }
}

#[test]
fn strings_without_escapes_are_borrowed_from_the_body() {
    let doc = r#"{"app":{"bundle":"com.x"},"ad_unit_id":"u\u002d1","format":"banner","device":{"os":"ios"}}"#;
    let request = AdRequest::parse(doc.as_bytes()).unwrap();
    assert!(matches!(request.app.bundle, Cow::Borrowed("com.x")));
    assert!(matches!(&request.ad_unit_id, Cow::Owned(id) if id == "u-1"));
    // Text past ASCII with no escape is checked, and still borrowed.
    let doc = r#"{"app":{"bundle":"com.日本"},"ad_unit_id":"u","format":"banner","device":{"os":"ios"}}"#;
    let request = AdRequest::parse(doc.as_bytes()).unwrap();
    assert!(matches!(request.app.bundle, Cow::Borrowed("com.日本")));
}

/// Each refused document's error says what is wrong and where.
#[test]
fn errors_say_what_and_where() {
    let check = |doc: &str, expected: &str| {
        let err = AdRequest::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(expected), "{doc}: {err}");
    };
    let base = r#""app":{"bundle":"b"},"ad_unit_id":"u","format":"banner","device":{"os":"ios"}"#;
    check(&format!("{{{base},\"fromat\":\"x\"}}"), "unknown field `fromat`, expected one of `request_id`");
    check(&format!("{{{base},\"format\":\"x\"}}"), "duplicate field `format`");
    check(r#"{"app":{"bundle":"b"}}"#, "missing field `ad_unit_id`");
    check(r#"{"app":{}}"#, "missing field `bundle`");
    check(&format!("{{{base},\"user\":null}}"), "invalid type: null, expected struct RequestUser");
    check(&format!("{{{base},\"privacy\":{{\"gdpr\":1}}}}"), "invalid type: number, expected a boolean");
    check(&format!("{{{base},\"user\":[\"u\"]}}"), "invalid type: sequence, expected struct RequestUser");
    check(&format!("{{{base}}} x"), "trailing characters at line 1 column");
    check(&format!("{{{base}"), "EOF while parsing an object");
    check("{\n\"app\":\n{\"bundle\":\"\\ud800\"}}", "lone leading surrogate in hex escape at line 3 column");
    check("{\"app\":{\"bundle\":\"a\u{1}\"}}", "control character");
    check("", "EOF while parsing a value, expected struct AdRequest");
    let not_utf8 = AdRequest::parse(b"{\"app\":{\"bundle\":\"a\xff\"}}").unwrap_err().to_string();
    assert_eq!(not_utf8, "invalid UTF-8 in a string at line 1 column 20");
    let outside = AdRequest::parse(b"{\"app\":\xc3\xa9}").unwrap_err().to_string();
    assert!(outside.starts_with("expected value"), "{outside}");
}

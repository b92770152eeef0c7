//! Every kind of bad catalog input is reported with its file, line, field and reason, all at
//! once, and nothing is written.

mod common;

use std::fs;
use std::path::Path;

use adsnap_builder::{BuildError, Diagnostic};

/// A change to one file of the minimal fixture.
enum Edit<'a> {
    /// Replace 1-based `line` of `file` with `text`.
    Replace(&'a str, usize, &'a str),
    /// Append a line to `file`.
    Append(&'a str, &'a str),
    /// Replace `from` with `to` everywhere in `file`.
    Sub(&'a str, &'a str, &'a str),
    /// Write `file` with exactly these bytes.
    Write(&'a str, &'a [u8]),
}

fn apply(dir: &Path, edit: &Edit) {
    let read = |file: &str| fs::read_to_string(dir.join(file)).unwrap();
    match *edit {
        Edit::Replace(file, line, text) => {
            let mut lines: Vec<String> = read(file).lines().map(str::to_owned).collect();
            lines[line - 1] = text.to_owned();
            fs::write(dir.join(file), lines.join("\n") + "\n").unwrap();
        }
        Edit::Append(file, text) => fs::write(dir.join(file), read(file) + text + "\n").unwrap(),
        Edit::Sub(file, from, to) => {
            let old = read(file);
            assert!(old.contains(from), "{file} does not contain {from:?}");
            fs::write(dir.join(file), old.replace(from, to)).unwrap();
        }
        Edit::Write(file, bytes) => fs::write(dir.join(file), bytes).unwrap(),
    }
}

/// Applies `edits` to the minimal fixture, builds it, and checks that exactly the `expected`
/// diagnostics come out (file, line, field, and a fragment of the reason), with no snapshot written.
fn check(edits: &[Edit], expected: &[(&str, u64, &str, &str)]) {
    let dir = common::copy_fixture("minimal");
    for edit in edits {
        apply(dir.path(), edit);
    }
    let out = dir.path().join("out.snap");
    let diags = match common::build_to(dir.path(), &out) {
        Err(BuildError::Invalid { diagnostics }) => diagnostics,
        Err(other) => panic!("expected diagnostics, got {other}"),
        Ok(_) => panic!("expected diagnostics, the build succeeded"),
    };
    assert!(!out.exists(), "a snapshot was written despite errors");
    let shown: Vec<String> = diags.kept.iter().map(Diagnostic::to_string).collect();
    assert_eq!(diags.kept.len(), expected.len(), "diagnostics: {shown:#?}");
    for (file, line, field, reason) in expected {
        let found = diags
            .kept
            .iter()
            .any(|d| d.file == *file && d.line == *line && d.field == *field && d.reason.contains(reason));
        assert!(found, "missing {file}:{line}: {field}: ..{reason}..\n got {shown:#?}");
    }
}

const C: &str = "campaigns.jsonl";
const CR: &str = "creatives.jsonl";

#[test]
fn the_fixture_itself_is_valid() {
    let dir = common::copy_fixture("minimal");
    common::build_to(dir.path(), &dir.path().join("out.snap")).expect("the minimal fixture builds");
}

#[test]
fn manifest_problems() {
    let m = "catalog.json";
    check(
        &[Edit::Sub(m, "\"catalog_format_version\": 1", "\"catalog_format_version\": 2")],
        &[(m, 0, "catalog_format_version", "reads catalog format version 1")],
    );
    check(&[Edit::Sub(m, "\"USD\"", "\"usd\"")], &[(m, 0, "currency", "ISO 4217")]);
    check(&[Edit::Sub(m, "\"ctr\": 0.01", "\"ctr\": 0")], &[(m, 0, "default_rates.ctr", "not in (0, 1]")]);
    check(
        &[Edit::Sub(m, "\"staging_share_bp\": 500", "\"staging_share_bp\": 6000")],
        &[(m, 0, "staging_share_bp", "over the limit")],
    );
    check(&[Edit::Sub(m, "\"name\"", "\"nmae\"")], &[(m, 0, "nmae", "unknown field `nmae`")]);
    check(&[Edit::Write(m, b"{not json")], &[(m, 0, "", "key must be a string")]);
}

#[test]
fn advertiser_problems() {
    let a = "advertisers.jsonl";
    check(
        &[Edit::Replace(
            a,
            2,
            r#"{"id": 1, "name": "Dup", "domain": "dup.example", "iab_category": "IAB1"}"#,
        )],
        &[
            (a, 2, "id", "already defined on line 1"),
            // Campaign 102 names advertiser 2, which is now gone.
            (C, 3, "advertiser_id", "no advertiser 2"),
        ],
    );
    check(
        &[Edit::Sub(a, "\"bank.example\"", "\"Bank.Example\"")],
        &[(a, 2, "domain", "not a lowercase domain")],
    );
    check(&[Edit::Sub(a, "\"IAB13\"", "\"IAB27\"")], &[(a, 2, "iab_category", "not an IAB category")]);
    check(
        &[Edit::Sub(a, "\"id\": 2, ", "")],
        &[(a, 2, "", "missing field `id`"), (C, 3, "advertiser_id", "no advertiser 2")],
    );
}

#[test]
fn app_and_ad_unit_problems() {
    let (apps, units) = ("apps.jsonl", "ad_units.jsonl");
    check(
        &[Edit::Sub(apps, "\"com.example.kids\"", "\"com.example.words\"")],
        &[(apps, 2, "bundle", "already defined on line 1"), (units, 3, "app_id", "no app \"app-2\"")],
    );
    check(
        &[Edit::Sub(apps, "\"IAB13\"", "\"gambling\"")],
        &[(apps, 2, "blocked_categories[0]", "not an IAB category")],
    );
    check(
        &[Edit::Sub(units, "\"formats\": [\"banner\"]", "\"formats\": []")],
        &[(units, 2, "formats", "at least one format")],
    );
    check(
        &[Edit::Sub(units, "[\"interstitial\", \"rewarded_video\"]", "[\"interstitial\", \"interstitial\"]")],
        &[(units, 1, "formats[1]", "listed twice")],
    );
    check(
        &[Edit::Sub(units, "\"width\": 320, \"height\": 50, ", "")],
        &[(units, 2, "width", "needs a width and a height")],
    );
    check(
        &[Edit::Sub(units, "[\"bank.example\"]", "[\"not a domain\"]")],
        &[(units, 2, "blocked_domains[0]", "not a lowercase domain")],
    );
    check(
        &[Edit::Sub(units, "\"banner\"]", "\"popup\"]")],
        &[(units, 2, "formats[0]", "unknown variant `popup`")],
    );
}

#[test]
fn campaign_problems() {
    check(
        &[Edit::Sub(C, "\"advertiser_id\": 2", "\"advertiser_id\": 9")],
        &[(C, 3, "advertiser_id", "no advertiser 9")],
    );
    check(
        &[Edit::Sub(C, "https://apps.apple.com", "http://apps.apple.com")],
        &[(C, 3, "app.store_url", "not an https:// URL")],
    );
    check(
        &[Edit::Sub(C, "\"amount_micros\": 400000", "\"amount_micros\": 0")],
        &[(C, 3, "bid.amount_micros", "not in 1..=")],
    );
    check(
        &[Edit::Sub(C, "\"amount_micros\": 400000", "\"amount_micros\": \"400000\"")],
        &[(C, 3, "bid.amount_micros", "invalid type: string")],
    );
    check(
        &[Edit::Sub(C, "\"daily_micros\": 100000000,", "\"daily_micros\": 2000000000,")],
        &[(C, 3, "budget.daily_micros", "above the total budget")],
    );
    check(
        &[Edit::Sub(C, "\"daily_micros\": 100000000,", "\"daily_micros\": 0,")],
        &[(C, 3, "budget.daily_micros", "must be above 0")],
    );
    check(
        &[Edit::Replace(
            C,
            3,
            &fs::read_to_string(common::fixture("minimal").join(C))
                .unwrap()
                .lines()
                .nth(2)
                .unwrap()
                .replace("\"end\": \"2027-12-31T00:00:00Z\"", "\"end\": \"2025-12-31T00:00:00Z\""),
        )],
        &[(C, 3, "schedule.end", "after schedule.start")],
    );
    check(&[Edit::Sub(C, "\"start\": \"2026-01-01T00:00:00Z\", \"end\": \"2027-12-31T00:00:00Z\"}, \"targeting\": {\"countries\": [\"US\"], \"os\"", "\"start\": \"tomorrow\", \"end\": \"2027-12-31T00:00:00Z\"}, \"targeting\": {\"countries\": [\"US\"], \"os\"")], &[(C, 3, "schedule.start", "not an RFC 3339")]);
    check(
        &[Edit::Sub(C, "[\"US\", \"CA\"]", "[\"US\", \"UK\"]")],
        &[(C, 1, "targeting.countries[1]", "not an ISO 3166-1")],
    );
    check(
        &[Edit::Sub(C, "[\"US\", \"CA\"]", "[\"US\", \"US\"]")],
        &[(C, 1, "targeting.countries", "more than once")],
    );
    check(
        &[Edit::Sub(C, "\"os\": \"ios\"", "\"os\": \"android\"")],
        &[(C, 3, "targeting.os", "promoted app's platform")],
    );
    check(
        &[Edit::Sub(C, "\"min_os_version\": \"8.0\"", "\"min_os_version\": \"eight\"")],
        &[(C, 1, "targeting.min_os_version", "not a version")],
    );
    check(
        &[Edit::Sub(
            C,
            "\"min_os_version\": \"8.0\"",
            "\"min_os_version\": \"8.0\", \"device_types\": [\"watch\"], \"languages\": [\"xx\"]",
        )],
        &[
            (C, 1, "targeting.device_types[0]", "not a known value"),
            (C, 1, "targeting.languages[0]", "not an ISO 639-1"),
        ],
    );
    check(
        &[Edit::Sub(
            C,
            "\"min_os_version\": \"8.0\"",
            "\"apps_allow\": [\"com.a\"], \"apps_block\": [\"com.a\"]",
        )],
        &[(C, 1, "targeting.apps_block", "in both apps_allow and apps_block")],
    );
    check(
        &[Edit::Sub(
            C,
            "\"segments_include\": [10]",
            "\"segments_include\": [10, 99], \"segments_exclude\": [10]",
        )],
        &[
            (C, 3, "targeting.segments_include[1]", "no segment 99"),
            (C, 3, "targeting.segments_exclude", "both included and excluded"),
        ],
    );
    check(
        &[Edit::Sub(C, "\"impressions\": 3", "\"impressions\": 0")],
        &[(C, 1, "frequency_cap.impressions", "must be above 0")],
    );
    check(
        &[Edit::Sub(C, "\"period_s\": 86400", "\"period_s\": 99999999")],
        &[(C, 1, "frequency_cap.period_s", "not in 1..=")],
    );
    // A record that does not parse is reported once: the records naming it are not reported too.
    check(
        &[Edit::Sub(C, "\"budget\"", "\"budgte\"")],
        &[
            (C, 1, "budgte", "unknown field `budgte`"),
            (C, 2, "budgte", "unknown field `budgte`"),
            (C, 3, "budgte", "unknown field `budgte`"),
        ],
    );
    let first =
        fs::read_to_string(common::fixture("minimal").join(C)).unwrap().lines().next().unwrap().to_owned();
    check(&[Edit::Append(C, &first)], &[(C, 4, "id", "campaign 100 is already defined on line 1")]);
}

#[test]
fn creative_problems() {
    check(
        &[Edit::Sub(CR, "\"campaign_id\": 102", "\"campaign_id\": 999")],
        &[(CR, 4, "campaign_id", "no campaign 999")],
    );
    check(
        &[Edit::Sub(CR, "\"mime\": \"video/mp4\"", "\"mime\": \"image/png\"")],
        &[
            (CR, 1, "mime", "needs a video/* MIME type"),
            (CR, 1, "video_duration_s", "only video creatives"),
            (CR, 1, "template", "this creative needs Html"),
        ],
    );
    check(
        &[Edit::Sub(CR, "\"video_duration_s\": 30, ", "")],
        &[(CR, 1, "video_duration_s", "a video needs a duration")],
    );
    check(&[Edit::Sub(CR, "\"image/jpeg\"", "\"image/tiff\"")], &[(CR, 4, "mime", "not one of")]);
    check(
        &[Edit::Sub(CR, "[\"https://cdn.example.com/bank.jpg\"]", "[]")],
        &[(CR, 4, "assets", "has 0 URLs")],
    );
    check(
        &[Edit::Sub(CR, "https://cdn.example.com/bank.jpg", "cdn.example.com/bank.jpg")],
        &[(CR, 4, "assets[0]", "not an http(s)://")],
    );
    check(
        &[Edit::Sub(CR, "\"template\": \"vast\"", "\"template\": \"vast\", \"markup\": \"<VAST/>\"")],
        &[(CR, 1, "template", "exactly one of template and markup")],
    );
    check(
        &[Edit::Sub(CR, "\"template\": \"vast\"", "\"template\": \"vast2\"")],
        &[(CR, 1, "template", "no template \"vast2\"")],
    );
    check(
        &[Edit::Sub(CR, "\"id\": 1020", "\"id\": 1000")],
        &[(CR, 4, "id", "creative 1000 is already defined on line 1")],
    );
    check(
        &[Edit::Sub(CR, "\"width\": 320, \"height\": 50", "\"width\": 0, \"height\": 50")],
        &[(CR, 3, "width", "needs a width and a height")],
    );
    check(
        &[Edit::Sub(CR, "\"template\": \"vast\"", "\"template\": \"vast\", \"attrs\": [16, 0, 18, 16]")],
        &[
            (CR, 1, "attrs[1]", "0 is not an IAB creative attribute (1..=17)"),
            (CR, 1, "attrs[2]", "18 is not an IAB creative attribute"),
            (CR, 1, "attrs[3]", "attribute 16 is listed twice"),
        ],
    );
    let unit = r#"{"id": "u9", "app_id": "app-1", "formats": ["banner"], "width": 320, "height": 50, "floor_cpm_micros": 0, "blocked_attrs": [16, 40]}"#;
    check(
        &[Edit::Append("ad_units.jsonl", unit)],
        &[("ad_units.jsonl", 4, "blocked_attrs[1]", "40 is not an IAB")],
    );
}

#[test]
fn predicted_rate_problems() {
    let r = "predicted_rates.csv";
    check(&[Edit::Append(r, "999,US,android,0.1,0.1")], &[(r, 6, "campaign_id", "no campaign 999")]);
    check(&[Edit::Append(r, "100,XX,android,0.1,0.1")], &[(r, 6, "country", "neither \"*\" nor an ISO")]);
    check(&[Edit::Append(r, "100,DE,ios,0.1,0.1")], &[(r, 6, "os", "campaign's platform")]);
    check(&[Edit::Append(r, "100,DE,android,2,0.1")], &[(r, 6, "ctr", "not in (0, 1]")]);
    check(&[Edit::Append(r, "100,US,android,0.05,0.1")], &[(r, 6, "", "repeats the rates of line 3")]);
    check(&[Edit::Append(r, "100,DE,android,0.05")], &[(r, 6, "", "has 4 fields, the header has 5")]);
    check(&[Edit::Append(r, "100,DE,android,lots,0.1")], &[(r, 6, "ctr", "invalid float")]);
}

#[test]
fn experiment_problems() {
    let x = "experiments.jsonl";
    let exp = |id: u32, slot: u32, share: u32, arms: &str| {
        format!(
            r#"{{"id": {id}, "name": "x{id}", "slot": {slot}, "share_bp": {share}, "salt": "s{id}", "arms": {arms}}}"#
        )
    };
    let one_arm = r#"[{"id": 1, "name": "a", "weight_bp": 10000}]"#;
    check(&[Edit::Append(x, &exp(2, 3, 100, one_arm))], &[(x, 2, "slot", "not a slot")]);
    check(&[Edit::Append(x, &exp(2, 0, 100, one_arm))], &[(x, 2, "slot", "already taken")]);
    check(&[Edit::Append(x, &exp(1, 1, 100, one_arm))], &[(x, 2, "id", "already defined on line 1")]);
    check(&[Edit::Append(x, &exp(2, 2, 3333, one_arm))], &[(x, 2, "share_bp", "not in 1..=3332")]);
    check(
        &[Edit::Append(x, &exp(2, 1, 100, r#"[{"id": 1, "name": "a", "weight_bp": 5000}]"#))],
        &[(x, 2, "arms", "sum to 5000")],
    );
    check(
        &[Edit::Append(
            x,
            &exp(
                2,
                1,
                100,
                r#"[{"id": 1, "name": "a", "weight_bp": 10000, "overrides": {"bid_multiplier": 0}}]"#,
            ),
        )],
        &[(x, 2, "arms[0].overrides.bid_multiplier", "not in (0, 10]")],
    );
    check(
        &[Edit::Append(
            x,
            &exp(
                2,
                1,
                100,
                r#"[{"id": 1, "name": "a", "weight_bp": 5000}, {"id": 1, "name": "b", "weight_bp": 5000}]"#,
            ),
        )],
        &[(x, 2, "arms[1].id", "listed twice")],
    );
}

#[test]
fn file_level_problems() {
    check(
        &[Edit::Write("segments.jsonl", b"{\"id\": 10, \"name\": \"a\"}\n\xff\xfe\n")],
        &[("segments.jsonl", 2, "", "not valid UTF-8")],
    );
    let long = format!("{{\"id\": 12, \"name\": \"{}\"}}", "x".repeat(adsnap_builder::LINE_BYTES_MAX));
    check(&[Edit::Append("segments.jsonl", &long)], &[("segments.jsonl", 3, "", "longer than the limit")]);
    // Blank lines are allowed; a record split over lines is not.
    check(
        &[Edit::Append("segments.jsonl", "\n{\"id\": 12,\n\"name\": \"b\"}")],
        &[
            ("segments.jsonl", 4, "", "EOF while parsing"),
            ("segments.jsonl", 5, "", "invalid type: string \"name\""),
        ],
    );
}

#[test]
fn markup_that_cannot_serve_its_kind_is_refused() {
    // A template of a VAST version no player lists, and native creatives whose markup is not
    // JSON, or has no assets, once its placeholders are filled.
    let native = |id: u32, markup: &str| {
        format!(
            r#"{{"id": {id}, "campaign_id": 101, "format": "native", "width": 0, "height": 0, "mime": "application/json", "assets": ["https://cdn.example.com/n.png"], "markup": {}}}"#,
            serde_json::to_string(markup).unwrap()
        )
    };
    let good =
        native(1011, r#"{"assets":[{"id":1,"img":{"url":"{{asset_url}}","w":{{width}},"h":{{height}}}}]}"#);
    let not_json = native(1012, r#"{"assets":[{"id":1,"img":{"w":{{width}}"#);
    let no_assets = native(1013, r#"{"native":{"ver":"1.2","assets":[]}}"#);
    check(
        &[
            Edit::Sub("templates.jsonl", r#"<VAST version=\"4.0\">"#, r#"<VAST version=\"5.0\">"#),
            Edit::Append(CR, &good),
            Edit::Append(CR, &not_json),
            Edit::Append(CR, &no_assets),
        ],
        &[
            ("templates.jsonl", 1, "body", "of a version OpenRTB lists (1.0 to 4.3)"),
            (CR, 6, "markup", "is not JSON once its placeholders are filled"),
            (CR, 7, "markup", "a non-empty \"assets\" array"),
        ],
    );
}

#[test]
fn a_missing_required_file_is_an_error_and_optional_files_may_be_absent() {
    let dir = common::copy_fixture("minimal");
    for optional in ["segments.jsonl", "templates.jsonl", "predicted_rates.csv", "experiments.jsonl"] {
        fs::remove_file(dir.path().join(optional)).unwrap();
    }
    // Without segments and templates, the references to them are now errors; with the references
    // removed too, the catalog builds.
    apply(dir.path(), &Edit::Sub(C, ", \"segments_include\": [10]", ""));
    let creatives = fs::read_to_string(dir.path().join(CR)).unwrap();
    let inline = creatives
        .replace("\"template\": \"vast\"", r#""markup": "<VAST version=\"4.0\"><Ad><InLine/></Ad></VAST>""#)
        .replace("\"template\": \"banner\"", "\"markup\": \"<a></a>\"");
    fs::write(dir.path().join(CR), inline).unwrap();
    common::build_to(dir.path(), &dir.path().join("out.snap")).expect("builds without optional files");

    fs::remove_file(dir.path().join("apps.jsonl")).unwrap();
    let err = common::build_to(dir.path(), &dir.path().join("out2.snap")).unwrap_err();
    assert!(matches!(err, BuildError::Read { .. }), "{err}");
    assert!(err.to_string().contains("apps.jsonl"), "{err}");
}

#[test]
fn every_problem_is_reported_in_one_run() {
    check(
        &[
            Edit::Sub("advertisers.jsonl", "\"IAB13\"", "\"IAB99\""),
            Edit::Sub(C, "[\"US\", \"CA\"]", "[\"US\", \"UK\"]"),
            Edit::Sub(CR, "\"image/jpeg\"", "\"image/tiff\""),
            Edit::Append("predicted_rates.csv", "100,DE,android,2,0.1"),
        ],
        &[
            ("advertisers.jsonl", 2, "iab_category", "not an IAB category"),
            (C, 1, "targeting.countries[1]", "not an ISO 3166-1"),
            (CR, 4, "mime", "not one of"),
            ("predicted_rates.csv", 6, "ctr", "not in (0, 1]"),
        ],
    );
}

//! The catalog's three descriptions agree: `docs/catalog.schema.json`, the example catalog in
//! `examples/catalog/` and the Rust types of `adsnap_builder::catalog`. Every example record is
//! valid against its schema entry and deserializes into its Rust type; the Rust type serialized
//! back is valid again; and the schema rejects the mistakes it can express.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use adsnap_builder::catalog::files::{
    ADVERTISERS, AD_UNITS, APPS, CAMPAIGNS, CREATIVES, EXPERIMENTS, MANIFEST, PREDICTED_RATES, SEGMENTS,
    TEMPLATES,
};
use adsnap_builder::catalog::{
    AdUnit, Advertiser, App, Campaign, Creative, Experiment, Manifest, PredictedRate, Segment, Template,
    CATALOG_FORMAT_VERSION,
};
use jsonschema::ValidatorMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

static SCHEMA: LazyLock<Value> = LazyLock::new(|| read_json(&repo_dir().join("docs/catalog.schema.json")));

static VALIDATORS: LazyLock<ValidatorMap> =
    LazyLock::new(|| jsonschema::validator_map_for(&SCHEMA).expect("docs/catalog.schema.json compiles"));

/// Record types and their `$defs` entries, one per file; `catalog.json` and the CSV table are
/// handled on their own because they are not JSON Lines.
type CheckRecord = fn(&str, &Value, &str);
const JSONL_FILES: [(&str, &str, CheckRecord); 8] = [
    (ADVERTISERS, "advertiser", check_record::<Advertiser>),
    (SEGMENTS, "segment", check_record::<Segment>),
    (TEMPLATES, "template", check_record::<Template>),
    (APPS, "app", check_record::<App>),
    (AD_UNITS, "ad_unit", check_record::<AdUnit>),
    (CAMPAIGNS, "campaign", check_record::<Campaign>),
    (CREATIVES, "creative", check_record::<Creative>),
    (EXPERIMENTS, "experiment", check_record::<Experiment>),
];

const PREDICTED_RATES_HEADER: [&str; 5] = ["campaign_id", "country", "os", "ctr", "cvr"];

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example_dir() -> PathBuf {
    repo_dir().join("examples/catalog")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Validates `json` against `#/$defs/{def}` and asserts the outcome.
fn check(def: &str, json: &Value, expect_valid: bool) {
    let pointer = format!("#/$defs/{def}");
    let validator = VALIDATORS.get(&pointer).unwrap_or_else(|| panic!("the schema has no {pointer}"));
    let errors: Vec<String> =
        validator.iter_errors(json).map(|e| format!("  at {:?}: {e}", e.instance_path().as_str())).collect();
    if expect_valid {
        assert!(errors.is_empty(), "{def} rejects {json}:\n{}", errors.join("\n"));
    } else {
        assert!(!errors.is_empty(), "{def} accepts {json}");
    }
}

/// Checks one example record against the schema and the Rust type `T`, then checks that `T`
/// serialized back is still valid, so a field renamed on one side only fails here.
fn check_record<T: DeserializeOwned + Serialize>(def: &str, json: &Value, place: &str) {
    check(def, json, true);
    let record: T =
        serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{place}: does not deserialize: {e}"));
    let round_trip = serde_json::to_value(&record).expect("catalog records serialize");
    check(def, &round_trip, true);
}

/// The JSON values of a JSON Lines example file, with their `file:line` for messages.
fn jsonl_lines(file: &str) -> Vec<(String, Value)> {
    jsonl_lines_in(&example_dir(), file)
}

/// The JSON values of a JSON Lines file of the catalog in `dir`.
fn jsonl_lines_in(dir: &Path, file: &str) -> Vec<(String, Value)> {
    let path = dir.join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(idx, line)| {
            let place = format!("{file}:{}", idx + 1);
            let json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{place}: {e}"));
            (place, json)
        })
        .collect()
}

/// The `n`-th line (from 1) of an example file, as JSON, to derive negative cases from.
fn example_line(file: &str, n: usize) -> Value {
    jsonl_lines(file).swap_remove(n - 1).1
}

/// `json` with the member at `pointer` set to `value`, or removed when `value` is `None`.
fn edited(mut json: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let object = json
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} is not an object"));
    match value {
        Some(value) => object.insert(key.to_owned(), value),
        None => object.remove(key),
    };
    json
}

#[test]
fn example_jsonl_records_match_schema_and_types() {
    for (file, def, check_record) in JSONL_FILES {
        let lines = jsonl_lines(file);
        assert!(!lines.is_empty(), "{file} is empty");
        for (place, json) in &lines {
            check_record(def, json, place);
        }
    }
}

#[test]
fn generated_catalogs_match_schema_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let options = adsnap_builder::gen::GenOptions { n_campaigns: 600, seed: 11, ..Default::default() };
    adsnap_builder::gen::generate(&options, dir.path(), &|_| ()).expect("generates");
    for (file, def, check_record) in JSONL_FILES {
        for (place, json) in &jsonl_lines_in(dir.path(), file) {
            check_record(def, json, place);
        }
    }
    let manifest = read_json(&dir.path().join(MANIFEST));
    check_record::<Manifest>("manifest", &manifest, MANIFEST);
    let rates = fs::read_to_string(dir.path().join(PREDICTED_RATES)).unwrap();
    assert!(check_predicted_rates(&rates, PREDICTED_RATES) > 0);
}

#[test]
fn example_manifest_matches_schema_and_type() {
    let json = read_json(&example_dir().join(MANIFEST));
    check_record::<Manifest>("manifest", &json, MANIFEST);
    assert_eq!(json["catalog_format_version"], CATALOG_FORMAT_VERSION);
}

#[test]
fn example_predicted_rates_match_schema_and_type() {
    let path = example_dir().join(PREDICTED_RATES);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(check_predicted_rates(&text, PREDICTED_RATES) > 0);
}

/// Checks every row of a `predicted_rates.csv` text and returns the number of rows.
fn check_predicted_rates(text: &str, file: &str) -> usize {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("the table has a header").clone();
    assert_eq!(header.iter().collect::<Vec<_>>(), PREDICTED_RATES_HEADER);
    let mut n_rows = 0;
    for (idx, row) in reader.records().enumerate() {
        // Line 1 is the header.
        let place = format!("{file}:{}", idx + 2);
        let row = row.unwrap_or_else(|e| panic!("{place}: {e}"));
        // The builder reads rows straight into the Rust type; the schema sees them as JSON.
        row.deserialize::<PredictedRate>(Some(&header)).unwrap_or_else(|e| panic!("{place}: {e}"));
        let number =
            |s: &str| -> Value { serde_json::from_str(s).unwrap_or_else(|e| panic!("{place}: {s:?}: {e}")) };
        let json = json!({
            "campaign_id": number(&row[0]),
            "country": &row[1],
            "os": &row[2],
            "ctr": number(&row[3]),
            "cvr": number(&row[4]),
        });
        check_record::<PredictedRate>("predicted_rate", &json, &place);
        n_rows += 1;
    }
    n_rows
}

/// Every example in `docs/catalog.md` is valid: each `## <file>` section's code block is
/// checked as a record of that file.
#[test]
fn doc_examples_match_schema_and_types() {
    let path = repo_dir().join("docs/catalog.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut section = "";
    let mut n_checked = 0;
    let mut lines = text.lines().enumerate();
    while let Some((idx, line)) = lines.next() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading;
            continue;
        }
        let Some(lang) = line.strip_prefix("```").filter(|l| *l == "json" || *l == "csv") else {
            continue;
        };
        let place = format!("docs/catalog.md:{}", idx + 1);
        let block: Vec<&str> = lines.by_ref().map(|(_, l)| l).take_while(|l| *l != "```").collect();
        if lang == "csv" {
            assert_eq!(section, PREDICTED_RATES, "{place}: a CSV block outside its section");
            check_predicted_rates(&block.join("\n"), &place);
        } else if section == MANIFEST {
            let json = serde_json::from_str(&block.join("\n")).unwrap_or_else(|e| panic!("{place}: {e}"));
            check_record::<Manifest>("manifest", &json, &place);
        } else {
            let (_, def, check_record) = JSONL_FILES
                .into_iter()
                .find(|(file, _, _)| *file == section)
                .unwrap_or_else(|| panic!("{place}: a JSON block outside a file's section"));
            for line in block {
                let json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{place}: {e}"));
                check_record(def, &json, &place);
            }
        }
        n_checked += 1;
    }
    // One example per file.
    assert_eq!(n_checked, 10);
}

#[test]
fn schema_is_valid_draft_2020_12() {
    jsonschema::meta::validate(&SCHEMA).expect("the schema is a valid JSON Schema");
    assert_eq!(SCHEMA["$schema"], "https://json-schema.org/draft/2020-12/schema");
    for def in [
        "manifest",
        "advertiser",
        "segment",
        "template",
        "app",
        "ad_unit",
        "campaign",
        "creative",
        "predicted_rate",
        "experiment",
    ] {
        assert!(SCHEMA["$defs"].get(def).is_some(), "no $defs entry {def}");
    }
}

/// The schema's code lists are the snapshot crate's tables, which the builder validates with.
#[test]
fn schema_code_lists_match_snapshot_tables() {
    let names = |def: &str| -> Vec<String> {
        let list = SCHEMA["$defs"][def]["enum"].as_array();
        let list = list.unwrap_or_else(|| panic!("$defs/{def} has no enum"));
        list.iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let owned = |names: &[&str]| -> Vec<String> { names.iter().map(|s| s.to_string()).collect() };
    assert_eq!(names("country"), owned(&adsnap_snapshot::COUNTRY_CODES));
    assert_eq!(names("language"), owned(&adsnap_snapshot::LANGUAGE_CODES));
    let devices: Vec<&str> = adsnap_snapshot::DeviceType::ALL.iter().map(|d| d.name()).collect();
    assert_eq!(names("device_type"), owned(&devices));
    let connections: Vec<&str> = adsnap_snapshot::ConnectionType::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names("connection_type"), owned(&connections));
}

#[test]
fn schema_rejects_what_it_can_express() {
    let campaign = example_line(CAMPAIGNS, 1);
    let image = example_line(CREATIVES, 1);
    let video = example_line(CREATIVES, 2);
    let native = example_line(CREATIVES, 10);
    let banner_unit = example_line(AD_UNITS, 1);
    let slot_2 = example_line(EXPERIMENTS, 3);
    let manifest = read_json(&example_dir().join(MANIFEST));
    let set = |base: &Value, pointer: &str, value: Value| edited(base.clone(), pointer, Some(value));
    let unset = |base: &Value, pointer: &str| edited(base.clone(), pointer, None);
    let advertiser = |domain: &str, iab_category: &str| json!({"id": 9, "name": "A", "domain": domain, "iab_category": iab_category});
    #[rustfmt::skip]
    let cases = [
        ("campaign", set(&campaign, "/budget_micros", json!(1)), false),
        ("campaign", set(&campaign, "/targeting/countries", json!(["UK"])), false),
        ("campaign", set(&campaign, "/targeting/countries", json!(["us"])), false),
        ("campaign", set(&campaign, "/targeting/countries", json!(["US", "US"])), false),
        ("campaign", set(&campaign, "/targeting/countries", json!(["XK"])), true),
        ("campaign", set(&campaign, "/targeting/os", json!("ios")), false),
        ("campaign", unset(&campaign, "/targeting/os"), true),
        ("campaign", unset(&campaign, "/targeting"), true),
        ("campaign", set(&campaign, "/targeting/min_os_version", json!("8.0.1.2")), false),
        ("campaign", set(&campaign, "/schedule/end", json!("2027-12-31T00:00:00+01:00")), false),
        ("campaign", set(&campaign, "/app/store_url", json!("http://example.com")), false),
        ("campaign", set(&campaign, "/bid/amount_micros", json!(0)), false),
        ("campaign", set(&campaign, "/frequency_cap", json!({"impressions": 1, "period_s": 2_592_001})), false),
        ("creative", unset(&unset(&image, "/template"), "/markup"), false),
        ("creative", set(&image, "/markup", json!("<img>")), false),
        ("creative", set(&image, "/format", json!("rewarded_video")), false),
        ("creative", set(&image, "/width", json!(0)), false),
        ("creative", set(&image, "/assets", json!([])), false),
        ("creative", set(&image, "/assets", json!(["ftp://cdn.example.net/a.png"])), false),
        ("creative", unset(&video, "/video_duration_s"), false),
        ("creative", set(&video, "/video_duration_s", json!(181)), false),
        ("creative", set(&native, "/width", json!(0)), true),
        ("ad_unit", unset(&banner_unit, "/width"), false),
        ("ad_unit", set(&banner_unit, "/formats", json!(["banner", "banner"])), false),
        ("experiment", set(&slot_2, "/share_bp", json!(3333)), false),
        ("experiment", set(&slot_2, "/slot", json!(1)), true),
        ("experiment", set(&slot_2, "/slot", json!(3)), false),
        ("manifest", set(&manifest, "/catalog_format_version", json!(2)), false),
        ("manifest", set(&manifest, "/currency", json!("usd")), false),
        ("manifest", set(&manifest, "/staging_share_bp", json!(5001)), false),
        ("manifest", set(&manifest, "/default_rates/ctr", json!(0)), false),
        ("advertiser", advertiser("a.example", "IAB9"), true),
        ("advertiser", advertiser("Example.com", "IAB9-30"), false),
        ("advertiser", advertiser("localhost", "IAB9-30"), false),
        ("advertiser", advertiser("a..example", "IAB9-30"), false),
        ("advertiser", advertiser("a.example", "IAB123"), false),
        ("advertiser", advertiser("a.example", "IAB27"), false),
        ("advertiser", advertiser("a.example", "IAB9-0"), false),
        ("advertiser", advertiser("a.example", "IAB26-999"), true),
        ("advertiser", set(&advertiser("a.example", "IAB9"), "/id", json!(0)), false),
    ];
    for (def, json, expect_valid) in &cases {
        check(def, json, *expect_valid);
    }
}

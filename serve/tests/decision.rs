//! What an experiment arm's overrides change in a decision, on the example catalog's own arms.

use adsnap_serve::decision::{decide, Decision, NoFill, User};
use adsnap_serve::openrtb::BidRequest;
use adsnap_serve::served::{Prepare, Served};
use adsnap_snapshot::schema::ArchivedOverrides;
use adsnap_snapshot::Snapshot;

mod common;
use common::{build_catalog, copy_dir, example_catalog};

/// The example catalog, with the interstitial unit's floor raised from 1.00 to 1.30 CPM:
/// under the 1.435 CPM that campaign 101's interstitial bids for an Android user in the US, and over
/// it once multiplied by 1.2.
fn served() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    copy_dir(&example_catalog(), &catalog);
    let units = std::fs::read_to_string(catalog.join("ad_units.jsonl")).unwrap();
    let from = r#""formats": ["interstitial"], "floor_cpm_micros": 1000000"#;
    assert!(units.contains(from));
    let units = units.replacen(from, r#""formats": ["interstitial"], "floor_cpm_micros": 1300000"#, 1);
    std::fs::write(catalog.join("ad_units.jsonl"), units).unwrap();
    let path = dir.path().join("arms.snap");
    build_catalog(&catalog, &path);
    let snapshot = Snapshot::open(&path).unwrap();
    Served::prepare(snapshot, Prepare { nice: 0, escaped_markup_bytes_max: 0 })
}

/// The parameters of the example's arm named `name`.
fn arm<'s>(s: &'s Served, name: &str) -> &'s ArchivedOverrides {
    let experiments = &s.archive().experiments.experiments;
    let mut arms = experiments.iter().flat_map(|x| x.arms.iter());
    let found = arms.find(|arm| arm.name.as_str() == name);
    &found.unwrap_or_else(|| panic!("no arm {name:?}")).params
}

/// Decides an interstitial impression of an Android app in the US, with `imp_fields` added to
/// the impression, under `params`.
fn decide_imp(s: &Served, imp_fields: &str, params: &ArchivedOverrides) -> Decision {
    let request = format!(
        r#"{{"id": "a", "imp": [{{"id": "1", "instl": 1, "banner": {{}} {imp_fields}}}],
            "app": {{"bundle": "com.example.stride"}},
            "device": {{"os": "android", "osv": "14", "geo": {{"country": "USA"}}}}}}"#
    );
    let request: BidRequest = serde_json::from_str(&request).unwrap();
    let now = s.archive().meta.reference_unix_s.to_native();
    let mut impressions = request.resolve(s, request.signals(None), now, 7).unwrap();
    let mut impression = impressions.impression(s, &request.imp[0], "USD").unwrap();
    let query = impressions.query(&mut impression, 0);
    decide(s, query, params, User { profile: None, personalised: true })
}

#[test]
fn an_arms_overrides_change_the_decision() {
    let s = served();
    let control = &s.archive().experiments.control;
    let won = |d: Decision| {
        d.outcome.map(|w| (s.archive().creatives[w.creative_idx as usize].id.to_native(), w.ecpm_micros))
    };
    assert_eq!(won(decide_imp(&s, "", control)), Ok((1001, 1_435_000)));

    // Bid shading: every eCPM times 0.9, the order kept.
    let shaded = arm(&s, "bids x0.9");
    assert_eq!(won(decide_imp(&s, "", shaded)), Ok((1001, 1_291_500)));

    // The arm's floor multiplier moves the ad unit's floor: 1.30 x 1.2 = 1.56, over the bid.
    let floors = arm(&s, "floors x1.2");
    let unit = r#", "tagid": "wordsmith-android-interstitial""#;
    assert_eq!(won(decide_imp(&s, unit, control)), Ok((1001, 1_435_000)));
    assert_eq!(won(decide_imp(&s, unit, floors)), Err(NoFill::BelowFloor));
    // It leaves the exchange's floor alone: a bid over `bidfloor` stays one.
    let exchange_floor = r#", "bidfloor": 1.3"#;
    assert_eq!(won(decide_imp(&s, exchange_floor, floors)), Ok((1001, 1_435_000)));
    assert_eq!(won(decide_imp(&s, r#", "bidfloor": 1.5"#, control)), Err(NoFill::BelowFloor));
    // With both floors, the higher holds.
    let both = r#", "tagid": "wordsmith-android-interstitial", "bidfloor": 1.0"#;
    assert_eq!(won(decide_imp(&s, both, floors)), Err(NoFill::BelowFloor));
    let both = r#", "tagid": "wordsmith-android-interstitial", "bidfloor": 1.44"#;
    assert_eq!(won(decide_imp(&s, both, control)), Err(NoFill::BelowFloor));
}

//! Generated catalogs of any shape build cleanly, and their snapshots have the traffic shape the
//! generator promises: fill comes from targeting, not from a setting.

mod common;

use adsnap_builder::gen::{generate, GenOptions};
use adsnap_snapshot::schema::COUNTRY_ANY;
use adsnap_snapshot::{pack_country, Format, Os, Snapshot};

fn build_generated(
    n_campaigns: u64,
    seed: u64,
    creatives_per_campaign: u32,
) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    let options = GenOptions { n_campaigns, seed, creatives_per_campaign, now_unix_s: common::NOW_UNIX_S };
    generate(&options, &catalog, &|_| ()).expect("generates");
    let out = dir.path().join("gen.snap");
    let summary = common::build_to(&catalog, &out).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_eq!(summary.counts.n_campaigns as u64, n_campaigns);
    assert_eq!(summary.counts.n_creatives as u64, n_campaigns * creatives_per_campaign as u64);
    assert!(summary.index.n_campaigns_served > 0);
    (dir, Snapshot::open(&out).unwrap())
}

#[test]
fn generated_catalogs_of_many_shapes_build_without_diagnostics() {
    for (n, seed, creatives) in [(100, 1, 1), (100, 2, 20), (3_000, 3, 3), (777, 4, 2)] {
        build_generated(n, seed, creatives);
    }
}

#[test]
fn the_big_markets_have_deep_candidate_lists() {
    let (_dir, snapshot) = build_generated(5_000, 9, 3);
    let depth =
        |format, country: &str, os| snapshot.candidates(format, pack_country(country).unwrap(), os).len();
    // The top markets hold many more candidates than a small one.
    let us = depth(Format::Interstitial, "US", Os::Ios);
    let small = depth(Format::Interstitial, "IS", Os::Ios);
    assert!(us > 10 * small.max(1), "US {us} vs IS {small}");
    assert!(!snapshot.candidates(Format::RewardedVideo, COUNTRY_ANY, Os::Android).is_empty());
}

#[test]
fn every_ad_unit_and_app_is_found_by_its_key_and_nothing_else_is() {
    let (_dir, s) = build_generated(4_000, 12, 1);
    let a = s.archive();
    assert!(a.ad_units.len() > 1_000);
    for (idx, unit) in a.ad_units.iter().enumerate() {
        let id = s.str(&unit.id);
        assert_eq!(s.ad_unit_by_id(id).map(|(i, _)| i), Some(idx), "{id}");
        assert!(s.ad_unit_by_id(&format!("{id}-x")).is_none());
    }
    for (idx, app) in a.apps.iter().enumerate() {
        assert_eq!(s.app_by_id(s.str(&app.id)).map(|(i, _)| i), Some(idx));
        assert_eq!(s.app_by_bundle(s.str(&app.bundle)).map(|(i, _)| i), Some(idx));
    }
    assert!(s.ad_unit_by_id("").is_none());
}

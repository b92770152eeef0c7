//! Round trip: a random catalog, built and opened, answers every question the way the catalog
//! says it should: records, strings, look-ups, and each index slot's candidates and order.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use adsnap_builder::catalog::{self, files};
use adsnap_builder::ecpm_micros;
use adsnap_snapshot::schema::COUNTRY_ANY;
use adsnap_snapshot::{pack_country, BidType, Format, OpenOptions, Os, Pages, Snapshot};
use proptest::prelude::*;

const COUNTRIES: [&str; 4] = ["US", "DE", "JP", "BR"];
const DEFAULT_RATES: catalog::Rates = catalog::Rates { ctr: 0.01, cvr: 0.05 };

#[derive(Clone, Debug)]
struct CampaignSpec {
    platform: catalog::Platform,
    bid_type: catalog::BidType,
    bid_micros: u64,
    countries: Vec<&'static str>,
    status: catalog::CampaignStatus,
    exhausted: bool,
    formats: Vec<catalog::Format>,
    /// Global rates, if the model has them.
    global: Option<(f64, f64)>,
    /// Per-country rates.
    by_country: Vec<(&'static str, f64, f64)>,
}

fn rate() -> impl Strategy<Value = (f64, f64)> {
    (1u32..=1000, 0u32..=1000).prop_map(|(ctr, cvr)| (ctr as f64 / 10_000.0, cvr as f64 / 1000.0))
}

fn campaign_spec() -> impl Strategy<Value = CampaignSpec> {
    let platform = prop_oneof![Just(catalog::Platform::Android), Just(catalog::Platform::Ios)];
    let bid_type =
        prop_oneof![Just(catalog::BidType::Cpm), Just(catalog::BidType::Cpc), Just(catalog::BidType::Cpi)];
    let status = prop_oneof![
        8 => Just(catalog::CampaignStatus::Active),
        1 => Just(catalog::CampaignStatus::Paused),
        1 => Just(catalog::CampaignStatus::Archived),
    ];
    let format = prop_oneof![
        Just(catalog::Format::Banner),
        Just(catalog::Format::Interstitial),
        Just(catalog::Format::RewardedVideo),
        Just(catalog::Format::Native),
    ];
    let countries = proptest::sample::subsequence(COUNTRIES.to_vec(), 0..=3);
    let by_country =
        proptest::collection::btree_map(proptest::sample::select(COUNTRIES.to_vec()), rate(), 0..=2)
            .prop_map(|m| m.into_iter().map(|(c, (ctr, cvr))| (c, ctr, cvr)).collect::<Vec<_>>());
    (
        platform,
        bid_type,
        1u64..5_000_000,
        countries,
        status,
        proptest::bool::weighted(0.1),
        proptest::collection::vec(format, 1..=3),
        proptest::option::of(rate()),
        by_country,
    )
        .prop_map(
            |(platform, bid_type, bid_micros, countries, status, exhausted, formats, global, by_country)| {
                CampaignSpec {
                    platform,
                    bid_type,
                    bid_micros,
                    countries,
                    status,
                    exhausted,
                    formats,
                    global,
                    by_country,
                }
            },
        )
}

fn write_jsonl<T: serde::Serialize>(dir: &Path, name: &str, records: &[T]) {
    let mut out = fs::File::create(dir.join(name)).unwrap();
    for r in records {
        serde_json::to_writer(&mut out, r).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

fn campaign_id(i: usize) -> u32 {
    // Ids out of file order, so that sorting by id is exercised.
    ((i * 7919) % 10_007 + 1) as u32
}

fn creative_id(i: usize, j: usize) -> u32 {
    campaign_id(i) * 10 + j as u32
}

/// Writes a catalog for `specs` into `dir`.
fn write_catalog(dir: &Path, specs: &[CampaignSpec]) {
    let manifest = catalog::Manifest {
        catalog_format_version: 1,
        name: "roundtrip".into(),
        currency: "EUR".into(),
        default_rates: DEFAULT_RATES,
        staging_share_bp: 500,
        assignment_salt: "rt".into(),
    };
    fs::write(dir.join(files::MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let advertiser = catalog::Advertiser {
        id: 1,
        name: "Studio ü".into(),
        domain: "studio.example".into(),
        iab_category: "IAB9-30".into(),
    };
    write_jsonl(dir, files::ADVERTISERS, &[advertiser]);
    let app = catalog::App {
        id: "app-1".into(),
        bundle: "com.example.host".into(),
        name: "Host".into(),
        platform: catalog::Platform::Android,
        iab_category: "IAB9".into(),
        coppa: false,
        blocked_domains: vec![],
        blocked_categories: vec![],
    };
    write_jsonl(dir, files::APPS, &[app]);
    let unit = catalog::AdUnit {
        id: "unit-1".into(),
        app_id: "app-1".into(),
        formats: vec![catalog::Format::Interstitial],
        width: 0,
        height: 0,
        floor_cpm_micros: 10,
        blocked_domains: vec![],
        blocked_categories: vec![],
        blocked_attrs: vec![16, 1],
    };
    write_jsonl(dir, files::AD_UNITS, &[unit]);
    let campaigns: Vec<catalog::Campaign> = specs.iter().enumerate().map(|(i, s)| campaign(i, s)).collect();
    write_jsonl(dir, files::CAMPAIGNS, &campaigns);
    // Written last first, so that the builder's grouping by campaign has to move every creative
    // and what is kept beside each (its attributes) has to move with it.
    let mut creatives: Vec<catalog::Creative> = specs
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.formats.iter().enumerate().map(move |(j, f)| creative(i, j, *f)))
        .collect();
    creatives.reverse();
    write_jsonl(dir, files::CREATIVES, &creatives);
    let mut csv = String::from("campaign_id,country,os,ctr,cvr\n");
    for (i, s) in specs.iter().enumerate() {
        if let Some((ctr, cvr)) = s.global {
            csv += &format!("{},*,*,{ctr},{cvr}\n", campaign_id(i));
        }
        for (country, ctr, cvr) in &s.by_country {
            csv += &format!("{},{country},*,{ctr},{cvr}\n", campaign_id(i));
        }
    }
    fs::write(dir.join(files::PREDICTED_RATES), csv).unwrap();
}

fn campaign(i: usize, s: &CampaignSpec) -> catalog::Campaign {
    let total = 1_000_000_000;
    catalog::Campaign {
        id: campaign_id(i),
        advertiser_id: 1,
        name: format!("campaign «{i}»"),
        status: s.status,
        app: catalog::PromotedApp {
            bundle: format!("com.example.c{i}"),
            store_url: format!("https://play.google.com/store/apps/details?id=com.example.c{i}"),
            platform: s.platform,
        },
        bid: catalog::Bid { bid_type: s.bid_type, amount_micros: s.bid_micros },
        budget: catalog::Budget {
            daily_micros: total / 10,
            total_micros: total,
            spent_micros: if s.exhausted { total } else { 0 },
        },
        schedule: catalog::Schedule {
            start: "2026-01-01T00:00:00Z".into(),
            end: "2027-01-01T00:00:00Z".into(),
        },
        targeting: catalog::Targeting {
            countries: s.countries.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        },
        frequency_cap: None,
    }
}

fn creative(i: usize, j: usize, format: catalog::Format) -> catalog::Creative {
    let video = format == catalog::Format::RewardedVideo;
    catalog::Creative {
        id: creative_id(i, j),
        campaign_id: campaign_id(i),
        format,
        width: 320,
        height: 480,
        mime: if video { "video/mp4" } else { "image/png" }.into(),
        assets: vec![format!("https://cdn.example.com/{i}/{j}")],
        video_duration_s: video.then_some(15),
        template: None,
        markup: Some(markup(i, j, format)),
        attrs: attrs(i, j),
    }
}

/// Inline markup of the creative's kind, distinct for each creative.
fn markup(i: usize, j: usize, format: catalog::Format) -> String {
    match format {
        catalog::Format::RewardedVideo => {
            format!(r#"<VAST version="4.0"><Ad><InLine><AdTitle>{i}/{j} ✓</AdTitle></InLine></Ad></VAST>"#)
        }
        catalog::Format::Native => format!(r#"{{"assets":[{{"id":1,"title":{{"text":"{i}/{j} ✓"}}}}]}}"#),
        _ => format!("<markup {i}/{j} ✓>"),
    }
}

/// Creative attributes that differ from creative to creative, none for some.
fn attrs(i: usize, j: usize) -> Vec<u8> {
    (1..=17).filter(|code| (i * 7 + j * 3 + *code as usize).is_multiple_of(5)).collect()
}

fn format_of(f: catalog::Format) -> Format {
    match f {
        catalog::Format::Banner => Format::Banner,
        catalog::Format::Interstitial => Format::Interstitial,
        catalog::Format::RewardedVideo => Format::RewardedVideo,
        catalog::Format::Native => Format::Native,
    }
}

fn bid_type_of(b: catalog::BidType) -> BidType {
    match b {
        catalog::BidType::Cpm => BidType::Cpm,
        catalog::BidType::Cpc => BidType::Cpc,
        catalog::BidType::Cpi => BidType::Cpi,
    }
}

type Slot = (Format, u16, Os);
/// (eCPM, campaign id, creative id) in the order the index must hold them.
type Entries = Vec<(u64, u32, u32)>;

/// What every index slot should hold, computed straight from the specs.
fn expected_index(specs: &[CampaignSpec]) -> BTreeMap<Slot, Entries> {
    let mut slots: BTreeMap<Slot, Entries> = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        if s.status != catalog::CampaignStatus::Active || s.exhausted {
            continue;
        }
        let os = if s.platform == catalog::Platform::Android { Os::Android } else { Os::Ios };
        let global = s.global.unwrap_or((DEFAULT_RATES.ctr, DEFAULT_RATES.cvr));
        let ecpm = |(ctr, cvr): (f64, f64)| ecpm_micros(bid_type_of(s.bid_type), s.bid_micros, ctr, cvr);
        let country_rate = |c: &str| s.by_country.iter().find(|r| r.0 == c).map(|r| (r.1, r.2));
        for (j, f) in s.formats.iter().enumerate() {
            let mut add = |country: u16, e: u64| {
                slots.entry((format_of(*f), country, os)).or_default().push((
                    e,
                    campaign_id(i),
                    creative_id(i, j),
                ));
            };
            if s.countries.is_empty() {
                add(COUNTRY_ANY, ecpm(global));
                for (c, ctr, cvr) in &s.by_country {
                    add(pack_country(c).unwrap(), ecpm((*ctr, *cvr)));
                }
            } else {
                for c in &s.countries {
                    add(pack_country(c).unwrap(), ecpm(country_rate(c).unwrap_or(global)));
                }
            }
        }
    }
    for entries in slots.values_mut() {
        entries.sort_by_key(|&(e, c, cr)| (std::cmp::Reverse(e), c, cr));
    }
    slots
}

fn check_index(snapshot: &Snapshot, specs: &[CampaignSpec]) {
    let expected = expected_index(specs);
    let a = snapshot.archive();
    let keys =
        COUNTRIES.iter().map(|c| pack_country(c).unwrap()).chain([COUNTRY_ANY, pack_country("FR").unwrap()]);
    for country in keys {
        for format in Format::ALL {
            for os in Os::ALL {
                let got: Entries = snapshot
                    .candidates(format, country, os)
                    .iter()
                    .map(|c| {
                        let campaign = &a.campaigns[c.campaign_idx.to_native() as usize];
                        let creative = &a.creatives[c.creative_idx.to_native() as usize];
                        (c.ecpm_micros.to_native(), campaign.id.to_native(), creative.id.to_native())
                    })
                    .collect();
                let want = expected.get(&(format, country, os)).cloned().unwrap_or_default();
                assert_eq!(got, want, "slot {format:?}/{country}/{os:?}");
            }
        }
    }
}

fn check_records(snapshot: &Snapshot, specs: &[CampaignSpec]) {
    for (i, s) in specs.iter().enumerate() {
        let (_, c) = snapshot.campaign_by_id(campaign_id(i)).expect("every campaign is kept");
        assert_eq!(snapshot.str(&c.name), format!("campaign «{i}»"));
        assert_eq!(snapshot.str(&c.app_bundle), format!("com.example.c{i}"));
        assert_eq!(c.bid_micros.to_native(), s.bid_micros);
        let countries: Vec<u16> =
            snapshot.pool_u16(&c.targeting.countries).iter().map(|v| v.to_native()).collect();
        let mut want: Vec<u16> = s.countries.iter().map(|c| pack_country(c).unwrap()).collect();
        want.sort();
        assert_eq!(countries, want);
        let creatives = snapshot.creatives_of(c);
        assert_eq!(creatives.len(), s.formats.len());
        for (j, f) in s.formats.iter().enumerate() {
            let (idx, cr) = snapshot.creative_by_id(creative_id(i, j)).expect("creative by id");
            assert_eq!(cr.format.get(), format_of(*f));
            let mask = attrs(i, j).iter().fold(0u32, |mask, &code| mask | 1 << code);
            assert_eq!(snapshot.creative_attrs(idx), mask, "creative {i}/{j}");
            assert_eq!(snapshot.str(&cr.markup), markup(i, j, *f));
            let assets: Vec<&str> = snapshot.pool_str(&cr.assets).iter().map(|s| snapshot.str(s)).collect();
            assert_eq!(assets, [format!("https://cdn.example.com/{i}/{j}")]);
        }
    }
    let (idx, unit) = snapshot.ad_unit_by_id("unit-1").expect("ad unit by id");
    assert_eq!(unit.floor_cpm_micros.to_native(), 10);
    assert_eq!(snapshot.ad_unit_blocked_attrs(idx), 1 << 16 | 1 << 1);
    assert!(snapshot.ad_unit_by_id("unit-2").is_none());
    assert!(snapshot.app_by_bundle("com.example.host").is_some());
    assert_eq!(snapshot.archive().meta.currency.as_str(), "EUR");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_built_catalog_answers_like_the_catalog(specs in proptest::collection::vec(campaign_spec(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        write_catalog(dir.path(), &specs);
        let out = dir.path().join("rt.snap");
        let summary = common::build_to(dir.path(), &out).unwrap_or_else(|e| panic!("{e}"));
        let snapshot = Snapshot::open(&out).unwrap();
        prop_assert_eq!(&summary.header, snapshot.header());
        check_records(&snapshot, &specs);
        check_index(&snapshot, &specs);
    }
}

#[test]
fn building_twice_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.snap"), dir.path().join("b.snap"));
    common::build_to(&common::fixture("minimal"), &a).unwrap();
    common::build_to(&common::fixture("minimal"), &b).unwrap();
    assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap());
}

#[test]
fn a_snapshot_reads_the_same_on_either_page_size_and_says_how_much_has_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.snap");
    common::build_to(&common::fixture("minimal"), &path).unwrap();
    let open = |pages| Snapshot::open_with(&path, &OpenOptions { pages, ..OpenOptions::default() }).unwrap();
    // Both mappings at once: the second open drops no page the first one holds.
    let (huge, small, kernel) = (open(Pages::Huge), open(Pages::Small), open(Pages::Kernel));
    assert_eq!(huge.counts(), small.counts());
    assert_eq!(huge.counts(), kernel.counts());
    let len = fs::metadata(&path).unwrap().len();
    // Whether the kernel grants 2 MiB pages depends on its configuration and the file system,
    // and this file is smaller than one; the figure must still be read for each mapping.
    assert!(huge.huge_page_bytes().expect("smaps names the mapping") <= len);
    assert_eq!(small.huge_page_bytes(), Some(0), "MADV_NOHUGEPAGE maps 4 KiB pages");
}

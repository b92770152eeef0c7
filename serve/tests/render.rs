//! Markup rendering against the example catalog's templates and inline markup.

use std::path::{Path, PathBuf};

use adsnap_abtest::Slice;
use adsnap_serve::answer::{ad_body, Answer};
use adsnap_serve::json::Escaped;
use adsnap_serve::render::{render, render_compiled, Fill, TrackingUrl};
use adsnap_serve::served::{Prepare, Served};
use adsnap_snapshot::Snapshot;

mod common;
use common::build_example;

/// The example catalog built into a snapshot file in `dir`.
fn example_file(dir: &Path) -> PathBuf {
    let out = dir.join("example.snap");
    build_example(&out);
    out
}

fn example_snapshot(dir: &Path) -> Snapshot {
    Snapshot::open(&example_file(dir)).unwrap()
}

/// Tracking URLs as the server makes them: nothing in them needs escaping.
const FILL: Fill = Fill {
    click_url: TrackingUrl { base: "https://t.example", path: "/c?t=", token: "X-_1" },
    impression_url: TrackingUrl { base: "https://t.example", path: "/i?t=", token: "Y" },
    campaign_id: 77,
};

#[test]
fn every_example_creative_renders_without_leftover_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let s = example_snapshot(dir.path());
    let fill = FILL;
    for creative in s.archive().creatives.iter() {
        let mut markup = String::new();
        render(&s, creative, &fill, &mut markup);
        assert!(!markup.contains("{{"), "creative {}: {markup}", creative.id);
        let template = s.str(&creative.markup);
        if template.contains("{{click_url}}") {
            assert!(markup.contains(&fill.click_url.to_string()));
        }
        if template.contains("{{duration_hms}}") {
            let d = creative.video_duration_s.to_native();
            let hms = format!("<Duration>00:{:02}:{:02}</Duration>", d / 60, d % 60);
            assert!(markup.contains(&hms), "creative {}: {markup}", creative.id);
        }
        if template.contains("{{asset_url}}") {
            let first = s.str(&s.pool_str(&creative.assets)[0]);
            assert!(markup.contains(first));
        }
    }
}

/// The JSON text an answer carries for `creative`'s markup, escaped per request.
fn escaped_per_request(s: &Snapshot, creative: &adsnap_snapshot::schema::ArchivedCreative) -> Vec<u8> {
    let mut body = Vec::new();
    render(s, creative, &FILL, &mut Escaped(&mut body));
    body
}

#[test]
fn markup_escaped_once_per_snapshot_renders_the_same_bytes_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = example_file(dir.path());
    let open = || Snapshot::open(&out).unwrap();
    let creatives_markup_bytes: usize =
        open().archive().creatives.iter().map(|c| c.markup.len.to_native() as usize).sum();
    let all = Served::prepare(open(), Prepare { nice: 0, escaped_markup_bytes_max: u32::MAX });
    let all_bytes = all.escaped_markup_bytes() as u32;
    drop(all);
    for budget in [0, all_bytes / 2, all_bytes, u32::MAX] {
        let s = Served::prepare(open(), Prepare { nice: 0, escaped_markup_bytes_max: budget });
        assert!(s.escaped_markup_bytes() <= budget as usize);
        let mut n_kept = 0;
        for (idx, creative) in s.archive().creatives.iter().enumerate() {
            let Some(compiled) = s.escaped_markup(idx as u32) else { continue };
            n_kept += 1;
            let mut body = Vec::new();
            render_compiled(&s, creative, &FILL, compiled, &mut body);
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(escaped_per_request(&s, creative)).unwrap(),
                "creative {}",
                creative.id
            );
        }
        let n_creatives = s.archive().creatives.len();
        match budget {
            0 => assert_eq!(n_kept, 0),
            _ if budget >= all_bytes => {
                assert_eq!(n_kept, n_creatives);
                // Shared templates are kept once.
                assert!(s.escaped_markup_bytes() < creatives_markup_bytes * 2);
            }
            _ => assert!(n_kept > 0 && n_kept < n_creatives, "{n_kept} of {n_creatives} kept in {budget}"),
        }
        assert!(s.escaped_markup(n_creatives as u32).is_none());
    }
}

/// An answer is the same bytes whether its creative's head and tail were prepared with the
/// snapshot or are written per answer, it is JSON, and it carries the creative's fields.
#[test]
fn answers_are_the_same_bytes_with_or_without_prepared_parts() {
    let dir = tempfile::tempdir().unwrap();
    let out = example_file(dir.path());
    let open = || Snapshot::open(&out).unwrap();
    let prepared = |budget| Served::prepare(open(), Prepare { nice: 0, escaped_markup_bytes_max: budget });
    let per_answer = prepared(0);
    assert_eq!(per_answer.answer_parts_bytes(), 0);
    let all = prepared(u32::MAX);
    let some_budget = (all.escaped_markup_bytes() + all.answer_parts_bytes() / 2) as u32;
    let slice = Slice::Experiment { experiment_idx: 0, arm_idx: 1, experiment_id: 12, arm_id: 3 };
    for (budget, s) in [(u32::MAX, all), (some_budget, prepared(some_budget))] {
        let n_creatives = s.archive().creatives.len();
        let mut n_kept = 0;
        for (idx, creative) in s.archive().creatives.iter().enumerate() {
            n_kept += usize::from(s.answer_head(idx as u32).is_some());
            let answer = Answer {
                request_id: "req \"7\"",
                slice: &slice,
                creative_idx: idx as u32,
                impression_url: FILL.impression_url,
                click_url: FILL.click_url,
                price_micros: 1_234_567,
                ttl_s: 300,
            };
            let body = ad_body(&s, &answer);
            assert_eq!(body, ad_body(&per_answer, &answer), "creative {}", creative.id);

            let a = s.archive();
            let campaign = &a.campaigns[creative.campaign_idx.to_native() as usize];
            let advertiser = &a.advertisers[campaign.advertiser_idx.to_native() as usize];
            let mut markup = String::new();
            render(&s, creative, &Fill { campaign_id: campaign.id.to_native(), ..FILL }, &mut markup);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let expected = serde_json::json!({
                "request_id": "req \"7\"",
                "snapshot_id": s.id_hex(),
                "assignment": "experiment-12/arm-3",
                "ad": {
                    "campaign_id": campaign.id.to_native(),
                    "creative_id": creative.id.to_native(),
                    "format": creative.format.get().name(),
                    "width": creative.width.to_native(),
                    "height": creative.height.to_native(),
                    "mime": s.str(&creative.mime),
                    "markup_kind": adsnap_serve::answer::markup_kind_name(creative.markup_kind.get()),
                    "markup": markup,
                    "impression_url": FILL.impression_url.to_string(),
                    "click_url": FILL.click_url.to_string(),
                    "advertiser_domain": s.str(&advertiser.domain),
                    "bundle": s.str(&campaign.app_bundle),
                    "price_micros": 1_234_567,
                    "currency": a.meta.currency.as_str(),
                    "ttl_s": 300,
                },
            });
            assert_eq!(v, expected, "creative {}", creative.id);
        }
        assert!(s.escaped_markup_bytes() + s.answer_parts_bytes() <= budget as usize);
        match budget {
            u32::MAX => {
                assert_eq!(n_kept, n_creatives);
                assert!((0..s.archive().campaigns.len() as u32).all(|idx| s.answer_tail(idx).is_some()));
            }
            _ => assert!(n_kept > 0 && n_kept < n_creatives, "{n_kept} of {n_creatives} kept in {budget}"),
        }
        assert!(s.answer_head(n_creatives as u32).is_none());
        assert!(s.answer_tail(s.archive().campaigns.len() as u32).is_none());
    }
}

//! Markup rendering against the example catalog's templates and inline markup.

use std::path::Path;

use adsnap_serve::json::Escaped;
use adsnap_serve::render::{render, render_compiled, Fill};
use adsnap_serve::served::{Prepare, Served};
use adsnap_snapshot::Snapshot;

mod common;
use common::build_example;

fn example_snapshot(dir: &Path) -> Snapshot {
    let out = dir.join("example.snap");
    build_example(&out);
    Snapshot::open(&out).unwrap()
}

/// Tracking URLs as the server makes them: nothing in them needs escaping.
const FILL: Fill = Fill {
    click_url: "https://t.example/c?t=X-_1",
    impression_url: "https://t.example/i?t=Y",
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
            assert!(markup.contains(fill.click_url));
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
    let out = dir.path().join("example.snap");
    build_example(&out);
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

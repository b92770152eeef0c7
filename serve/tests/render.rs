//! Markup rendering against the example catalog's templates and inline markup.

use std::path::Path;

use adsnap_builder::{build, BuildOptions};
use adsnap_serve::render::{render, Fill};
use adsnap_snapshot::Snapshot;

#[test]
fn every_example_creative_renders_without_leftover_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("example.snap");
    let options = BuildOptions {
        catalog_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog"),
        out_path: out.clone(),
        snapshot_version: 1,
        now_unix_s: 1_795_305_600,
        created_unix_ms: 0,
        progress: indicatif::ProgressBar::hidden(),
    };
    build(&options).unwrap();
    let s = Snapshot::open(&out).unwrap();
    let fill = Fill {
        click_url: "https://t.example/c?t=X",
        impression_url: "https://t.example/i?t=Y",
        campaign_id: 77,
    };
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

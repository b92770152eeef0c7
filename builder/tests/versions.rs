//! Servers are upgraded before builders, so a server reads the snapshot format version the
//! builders still running write. `fixtures/format-v1/example.snap` is the example catalog as it
//! stood before format version 2, built by a version 1 builder for the tests' clock with snapshot
//! version 7; it must read as the same catalog built today, except for what version 2 added.

mod common;

use std::path::Path;

use adsnap_snapshot::{Snapshot, FORMAT_VERSION, FORMAT_VERSION_OLDEST};

fn example_catalog() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog")
}

#[test]
fn a_version_1_file_reads_as_the_catalog_built_today_without_attributes() {
    let old = Snapshot::open(&common::fixture("format-v1/example.snap")).expect("a version 1 file opens");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("example.snap");
    common::build_to(&example_catalog(), &out).expect("the example catalog builds");
    let new = Snapshot::open(&out).unwrap();
    assert_eq!((old.header().format_version, new.header().format_version), (FORMAT_VERSION_OLDEST, 2));
    assert_eq!(FORMAT_VERSION, 2, "a new format version needs a fixture of version 2 beside this one");

    let (a, b) = (old.archive(), new.archive());
    assert_eq!(old.counts(), new.counts());
    assert_eq!(a.strings.as_slice(), b.strings.as_slice(), "the string heaps");
    assert_eq!(a.meta.catalog_name.as_str(), b.meta.catalog_name.as_str());
    assert_eq!(a.meta.reference_unix_s, b.meta.reference_unix_s);
    for (x, y) in a.campaigns.iter().zip(b.campaigns.iter()) {
        let key = |c: &adsnap_snapshot::schema::ArchivedCampaign| {
            (
                c.id.to_native(),
                c.bid_micros.to_native(),
                c.creatives.start.to_native(),
                c.creatives.len.to_native(),
            )
        };
        assert_eq!(key(x), key(y));
    }
    let mut n_with_attrs = 0;
    for (idx, (x, y)) in a.creatives.iter().zip(b.creatives.iter()).enumerate() {
        assert_eq!(x.id, y.id);
        assert_eq!((x.format.get(), x.width, x.height), (y.format.get(), y.width, y.height));
        assert_eq!(old.str(&x.markup), new.str(&y.markup));
        assert_eq!(old.str(&x.mime), new.str(&y.mime));
        let assets = |s: &Snapshot, c: &adsnap_snapshot::schema::ArchivedCreative| -> Vec<String> {
            s.pool_str(&c.assets).iter().map(|url| s.str(url).to_owned()).collect()
        };
        assert_eq!(assets(&old, x), assets(&new, y));
        assert_eq!(old.creative_attrs(idx), 0, "version 1 holds no attributes");
        if new.creative_attrs(idx) != 0 {
            n_with_attrs += 1;
            assert_eq!((y.id.to_native(), new.creative_attrs(idx)), (1008, 1 << 13), "the playable");
        }
    }
    assert_eq!(n_with_attrs, 1);
    let candidates = |a: &adsnap_snapshot::schema::ArchivedSnapshot| -> Vec<(u64, u32, u32)> {
        a.index
            .candidates
            .iter()
            .map(|c| (c.ecpm_micros.to_native(), c.campaign_idx.to_native(), c.creative_idx.to_native()))
            .collect()
    };
    assert_eq!(candidates(a), candidates(b));
    let slots = |a: &adsnap_snapshot::schema::ArchivedSnapshot| -> Vec<(u32, u32)> {
        a.index.slots.iter().map(|s| (s.start.to_native(), s.len.to_native())).collect()
    };
    assert_eq!(slots(a), slots(b));
    let unit = "wordsmith-android-banner";
    assert_eq!(old.ad_unit_by_id(unit).map(|(idx, _)| idx), new.ad_unit_by_id(unit).map(|(idx, _)| idx));
    assert!(old.ad_unit_by_id(unit).is_some());
    let blocking: Vec<(usize, u32)> = (0..b.ad_units.len())
        .map(|idx| (idx, new.ad_unit_blocked_attrs(idx)))
        .filter(|&(_, attrs)| attrs != 0)
        .collect();
    let rewarded = new.ad_unit_by_id("wordsmith-android-rewarded").unwrap().0;
    assert_eq!(blocking, [(rewarded, 1 << 16)], "only the Android rewarded unit blocks skip buttons");
    assert!((0..a.ad_units.len()).all(|idx| old.ad_unit_blocked_attrs(idx) == 0));
}

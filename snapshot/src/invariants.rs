//! The format's own invariants, checked once when a snapshot is opened, after rkyv has validated
//! the archive's structure: every index, span and string reference points where it may, every
//! table that is binary-searched is sorted, and every index slot is ordered best first.
//!
//! rkyv's validation makes typed access safe; these checks make the server's answers right and
//! let it index without bounds surprises on the request path.

use crate::codes::{is_packed_iab_category, key_hash};
use crate::open::heap_str;
use crate::schema::*;

type Check = Result<(), String>;

/// Runs every check; the first broken invariant is returned as a sentence.
pub(crate) fn check(a: &ArchivedSnapshot) -> Check {
    let heap = a.strings.as_slice();
    simdutf8::basic::from_utf8(heap)
        .map_err(|_| "the string heap is not valid UTF-8".to_string())?;
    let c = Checker { a, heap };
    c.pool_str()?;
    c.advertisers()?;
    c.campaigns()?;
    c.creatives()?;
    c.apps()?;
    c.ad_units()?;
    c.segments()?;
    c.index()?;
    c.experiments()
}

struct Checker<'a> {
    a: &'a ArchivedSnapshot,
    heap: &'a [u8],
}

fn fail<T>(what: impl Into<String>) -> Result<T, String> {
    Err(what.into())
}

/// Checks that `items` is strictly increasing by `key`.
fn strictly_sorted<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K, what: &str) -> Check {
    match items.windows(2).position(|w| key(&w[0]) >= key(&w[1])) {
        Some(pos) => fail(format!(
            "{what} are not sorted and unique at position {}",
            pos + 1
        )),
        None => Ok(()),
    }
}

impl Checker<'_> {
    fn str(&self, s: &ArchivedStrRef, what: &dyn Fn() -> String) -> Check {
        match heap_str(self.heap, s) {
            Some(_) => Ok(()),
            None => fail(format!(
                "{} points outside the string heap or inside a character ({} bytes at {})",
                what(),
                s.len,
                s.offset
            )),
        }
    }

    fn span(&self, span: &ArchivedSpan, pool_len: usize, what: &dyn Fn() -> String) -> Check {
        let end = span.start.to_native() as u64 + span.len.to_native() as u64;
        if end > pool_len as u64 {
            return fail(format!(
                "{} ends at {end}, past the {pool_len} entries it indexes",
                what()
            ));
        }
        Ok(())
    }

    /// A span of `pool_u16` whose values must all be below `bound`, sorted and unique.
    fn u16_list(&self, span: &ArchivedSpan, bound: usize, what: &dyn Fn() -> String) -> Check {
        self.span(span, self.a.pool_u16.len(), what)?;
        let values = &self.a.pool_u16[span.range()];
        strictly_sorted(values, |v| v.to_native(), &what())?;
        if let Some(v) = values.iter().find(|v| v.to_native() as usize >= bound) {
            return fail(format!("{} holds {v}, not below {bound}", what()));
        }
        Ok(())
    }

    fn u32_list(&self, span: &ArchivedSpan, what: &dyn Fn() -> String) -> Check {
        self.span(span, self.a.pool_u32.len(), what)?;
        strictly_sorted(&self.a.pool_u32[span.range()], |v| v.to_native(), &what())
    }

    fn u64_list(&self, span: &ArchivedSpan, what: &dyn Fn() -> String) -> Check {
        self.span(span, self.a.pool_u64.len(), what)?;
        strictly_sorted(&self.a.pool_u64[span.range()], |v| v.to_native(), &what())
    }

    fn pool_str(&self) -> Check {
        for (i, s) in self.a.pool_str.iter().enumerate() {
            self.str(s, &|| format!("string pool entry {i}"))?;
        }
        Ok(())
    }

    fn category(&self, packed: u16, what: &dyn Fn() -> String) -> Check {
        if !is_packed_iab_category(packed) {
            return fail(format!(
                "{} has {packed}, not a packed IAB category",
                what()
            ));
        }
        Ok(())
    }

    /// A span of `pool_u16` holding sorted, unique packed IAB categories.
    fn category_list(&self, span: &ArchivedSpan, what: &dyn Fn() -> String) -> Check {
        self.u16_list(span, u16::MAX as usize, what)?;
        for v in &self.a.pool_u16[span.range()] {
            self.category(v.to_native(), what)?;
        }
        Ok(())
    }

    fn advertisers(&self) -> Check {
        strictly_sorted(&self.a.advertisers, |x| x.id.to_native(), "advertisers")?;
        for adv in self.a.advertisers.iter() {
            let what = || format!("advertiser {}", adv.id);
            self.str(&adv.name, &what)?;
            self.str(&adv.domain, &what)?;
            self.category(adv.category.to_native(), &what)?;
            let domain = heap_str(self.heap, &adv.domain).unwrap_or_default();
            if key_hash(domain) != adv.domain_hash.to_native() {
                return fail(format!(
                    "{}'s domain hash does not match its domain",
                    what()
                ));
            }
        }
        Ok(())
    }

    fn campaigns(&self) -> Check {
        let a = self.a;
        strictly_sorted(&a.campaigns, |x| x.id.to_native(), "campaigns")?;
        for (idx, c) in a.campaigns.iter().enumerate() {
            let what = || format!("campaign {}", c.id);
            if c.advertiser_idx.to_native() as usize >= a.advertisers.len() {
                return fail(format!("{} names a missing advertiser", what()));
            }
            for s in [&c.name, &c.app_bundle, &c.store_url] {
                self.str(s, &what)?;
            }
            if c.pacing_throttle_ppm.to_native() > PPM_ONE {
                return fail(format!("{} has a pacing throttle above one", what()));
            }
            let t = &c.targeting;
            self.u16_list(&t.countries, 26 * 26, &|| format!("{}'s countries", what()))?;
            self.u16_list(&t.languages, 26 * 26, &|| format!("{}'s languages", what()))?;
            self.category_list(&t.app_categories, &|| {
                format!("{}'s app categories", what())
            })?;
            self.u16_list(&c.country_overrides, 26 * 26, &|| {
                format!("{}'s country overrides", what())
            })?;
            self.u64_list(&t.app_allow, &|| format!("{}'s app allow list", what()))?;
            self.u64_list(&t.app_block, &|| format!("{}'s app block list", what()))?;
            self.u32_list(&t.segments_include, &|| {
                format!("{}'s included segments", what())
            })?;
            self.u32_list(&t.segments_exclude, &|| {
                format!("{}'s excluded segments", what())
            })?;
            self.span(&c.creatives, a.creatives.len(), &|| {
                format!("{}'s creatives", what())
            })?;
            if let Some(cr) = a.creatives[c.creatives.range()]
                .iter()
                .find(|cr| cr.campaign_idx.to_native() as usize != idx)
            {
                return fail(format!(
                    "{}'s creatives include creative {} of another campaign",
                    what(),
                    cr.id
                ));
            }
        }
        Ok(())
    }

    fn creatives(&self) -> Check {
        let a = self.a;
        strictly_sorted(
            &a.creatives,
            |x| (x.campaign_idx.to_native(), x.id.to_native()),
            "creatives by campaign and id",
        )?;
        for cr in a.creatives.iter() {
            let what = || format!("creative {}", cr.id);
            let Some(campaign) = a.campaigns.get(cr.campaign_idx.to_native() as usize) else {
                return fail(format!("{} names a missing campaign", what()));
            };
            let idx = (cr as *const ArchivedCreative as usize - a.creatives.as_ptr() as usize)
                / std::mem::size_of::<ArchivedCreative>();
            if !campaign.creatives.range().contains(&idx) {
                return fail(format!(
                    "{} is outside its campaign's creative range",
                    what()
                ));
            }
            self.str(&cr.mime, &what)?;
            self.str(&cr.markup, &what)?;
            self.span(&cr.assets, a.pool_str.len(), &|| {
                format!("{}'s assets", what())
            })?;
        }
        strictly_sorted(&a.creative_ids, |e| e.id.to_native(), "creative ids")?;
        if a.creative_ids.len() != a.creatives.len() {
            return fail("the creative id table and the creatives differ in length");
        }
        for e in a.creative_ids.iter() {
            match a.creatives.get(e.idx.to_native() as usize) {
                Some(cr) if cr.id == e.id => {}
                _ => {
                    return fail(format!(
                        "creative id entry {} points at another creative",
                        e.id
                    ))
                }
            }
        }
        Ok(())
    }

    fn hash_table(
        &self,
        table: &[ArchivedHashEntry],
        n_records: usize,
        key_of: impl Fn(usize) -> Option<u64>,
        what: &str,
    ) -> Check {
        if table.windows(2).any(|w| w[0].hash > w[1].hash) {
            return fail(format!("the {what} table is not sorted by hash"));
        }
        if table.len() != n_records {
            return fail(format!(
                "the {what} table has {} entries for {n_records} records",
                table.len()
            ));
        }
        for e in table {
            let idx = e.idx.to_native() as usize;
            if idx >= n_records || key_of(idx) != Some(e.hash.to_native()) {
                return fail(format!(
                    "the {what} table points at a record with another key"
                ));
            }
        }
        Ok(())
    }

    fn blocklists(
        &self,
        domains: &ArchivedSpan,
        categories: &ArchivedSpan,
        what: &dyn Fn() -> String,
    ) -> Check {
        self.u64_list(domains, &|| format!("{}'s blocked domains", what()))?;
        self.category_list(categories, &|| format!("{}'s blocked categories", what()))
    }

    fn apps(&self) -> Check {
        let a = self.a;
        for (i, app) in a.apps.iter().enumerate() {
            let what = || format!("publisher app {i}");
            self.str(&app.id, &what)?;
            self.str(&app.bundle, &what)?;
            self.category(app.category.to_native(), &what)?;
            self.blocklists(&app.blocked_domains, &app.blocked_categories, &what)?;
        }
        let key = |idx: usize, s: &dyn Fn(&ArchivedPublisherApp) -> &ArchivedStrRef| {
            heap_str(self.heap, s(&a.apps[idx])).map(key_hash)
        };
        self.hash_table(
            &a.app_ids,
            a.apps.len(),
            |i| key(i, &|app| &app.id),
            "app id",
        )?;
        self.hash_table(
            &a.app_bundles,
            a.apps.len(),
            |i| key(i, &|app| &app.bundle),
            "app bundle",
        )?;
        for app in a.apps.iter() {
            if app.bundle_hash.to_native()
                != key_hash(heap_str(self.heap, &app.bundle).unwrap_or_default())
            {
                return fail("a publisher app's bundle hash does not match its bundle");
            }
        }
        Ok(())
    }

    fn ad_units(&self) -> Check {
        let a = self.a;
        for (i, unit) in a.ad_units.iter().enumerate() {
            let what = || format!("ad unit {i}");
            self.str(&unit.id, &what)?;
            if unit.app_idx.to_native() as usize >= a.apps.len() {
                return fail(format!("{} names a missing app", what()));
            }
            self.blocklists(&unit.blocked_domains, &unit.blocked_categories, &what)?;
        }
        self.hash_table(
            &a.ad_unit_ids,
            a.ad_units.len(),
            |i| heap_str(self.heap, &a.ad_units[i].id).map(key_hash),
            "ad unit id",
        )
    }

    fn segments(&self) -> Check {
        strictly_sorted(&self.a.segments, |s| s.id.to_native(), "segments")?;
        for s in self.a.segments.iter() {
            self.str(&s.name, &|| format!("segment {}", s.id))?;
        }
        Ok(())
    }

    fn index(&self) -> Check {
        let a = self.a;
        let index = &a.index;
        if index.slots.len() != N_INDEX_SLOTS {
            return fail(format!(
                "the index has {} slots, the format has {N_INDEX_SLOTS}",
                index.slots.len()
            ));
        }
        for format in Format::ALL {
            for country_key in 0..N_COUNTRY_KEYS as u16 {
                for os in Os::ALL {
                    let span = &index.slots[slot_idx(format, country_key, os)];
                    let what =
                        || format!("index slot {}/{country_key}/{}", format.name(), os.name());
                    self.span(span, index.candidates.len(), &what)?;
                    self.slot(&index.candidates[span.range()], format, os, &what)?;
                }
            }
        }
        Ok(())
    }

    fn slot(
        &self,
        candidates: &[ArchivedCandidate],
        format: Format,
        os: Os,
        what: &dyn Fn() -> String,
    ) -> Check {
        let a = self.a;
        let order = |c: &ArchivedCandidate| {
            (
                std::cmp::Reverse(c.ecpm_micros.to_native()),
                c.campaign_idx.to_native(),
                c.creative_idx.to_native(),
            )
        };
        if candidates.windows(2).any(|w| order(&w[0]) >= order(&w[1])) {
            return fail(format!("{} is not ordered best first", what()));
        }
        for cand in candidates {
            let creative = a.creatives.get(cand.creative_idx.to_native() as usize);
            let campaign = a.campaigns.get(cand.campaign_idx.to_native() as usize);
            match (creative, campaign) {
                (Some(cr), Some(c)) if cr.campaign_idx == cand.campaign_idx => {
                    if cr.format.get() != format || c.platform.get() != os {
                        return fail(format!(
                            "{} holds creative {} of another format or OS",
                            what(),
                            cr.id
                        ));
                    }
                }
                _ => {
                    return fail(format!(
                        "{} holds a candidate with a missing or mismatched creative",
                        what()
                    ))
                }
            }
        }
        Ok(())
    }

    fn experiments(&self) -> Check {
        let e = &self.a.experiments;
        if e.staging_share_bp.to_native() > BUCKETS {
            return fail("the staging share is above 100%");
        }
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for x in e.experiments.iter() {
            let (start, end) = (x.bucket_start.to_native(), x.bucket_end.to_native());
            if start >= end || end > BUCKETS || x.slot >= crate::EXPERIMENT_SLOTS {
                return fail(format!(
                    "experiment {} has an invalid bucket range or slot",
                    x.id
                ));
            }
            if ranges.iter().any(|&(s, e)| start < e && s < end) {
                return fail(format!(
                    "experiment {} overlaps another experiment's buckets",
                    x.id
                ));
            }
            ranges.push((start, end));
            let mut next = 0;
            for arm in x.arms.iter() {
                if arm.bucket_start.to_native() != next || arm.bucket_end.to_native() <= next {
                    return fail(format!(
                        "experiment {}'s arms do not tile its buckets",
                        x.id
                    ));
                }
                next = arm.bucket_end.to_native();
            }
            if next != BUCKETS {
                return fail(format!(
                    "experiment {}'s arms do not cover all of its buckets",
                    x.id
                ));
            }
        }
        Ok(())
    }
}

//! The format's own invariants, checked once when a snapshot is opened, after rkyv has validated
//! the archive's structure: every index, span and string reference points where it may, every
//! table that is binary-searched is sorted, and every index slot is ordered best first and holds
//! creatives of its format and OS.
//!
//! rkyv's validation makes typed access safe; these checks make the server's answers right and
//! its look-ups free of bounds surprises. They are written to run at memory speed: a pass reads
//! each table in order and never follows a reference into the string heap or into another table
//! at random. Two checks are therefore left to the accessors, which make them in O(1) on every
//! use: that a string reference ends on character boundaries (`Snapshot::str`), and that a hash
//! or id table entry names the record with that key (the look-ups compare the key itself).

use crate::codes::{is_packed_iab_category, key_hash};
use crate::open::heap_str;
use crate::schema::*;

type Check = Result<(), String>;

/// Runs every check but the heap's UTF-8 (see `open::verify`); the first broken invariant is
/// returned as a sentence.
pub(crate) fn check(a: &ArchivedSnapshot) -> Check {
    let heap = a.strings.as_slice();
    simdutf8::basic::from_utf8(heap).map_err(|_| "the string heap is not valid UTF-8".to_string())?;
    let c = Checker { a, heap_len: heap.len() as u64, heap };
    c.pool_str()?;
    c.advertisers()?;
    c.campaigns()?;
    let creative_keys = c.creatives()?;
    c.apps()?;
    c.ad_units()?;
    c.segments()?;
    c.index(&creative_keys)?;
    c.experiments()
}

struct Checker<'a> {
    a: &'a ArchivedSnapshot,
    heap: &'a [u8],
    heap_len: u64,
}

fn fail<T>(what: impl Into<String>) -> Result<T, String> {
    Err(what.into())
}

/// Checks that `items` is strictly increasing by `key`. `what` names them lazily: this runs on
/// every list of a snapshot, and only a failure needs a name.
fn strictly_sorted<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K, what: &dyn Fn() -> String) -> Check {
    match items.windows(2).position(|w| key(&w[0]) >= key(&w[1])) {
        Some(pos) => fail(format!("{} are not sorted and unique at position {}", what(), pos + 1)),
        None => Ok(()),
    }
}

/// Checks that the `idx` fields of a table name each of `n_records` records exactly once.
fn permutation(idxs: impl ExactSizeIterator<Item = usize>, n_records: usize, what: &str) -> Check {
    if idxs.len() != n_records {
        return fail(format!("the {what} table has {} entries for {n_records} records", idxs.len()));
    }
    let mut seen = vec![false; n_records];
    for idx in idxs {
        match seen.get_mut(idx) {
            Some(s) if !*s => *s = true,
            _ => return fail(format!("the {what} table names record {idx} twice or past the end")),
        }
    }
    Ok(())
}

impl Checker<'_> {
    /// A string reference lies inside the heap (its boundaries are checked on every access).
    fn str(&self, s: &ArchivedStrRef, what: &dyn Fn() -> String) -> Check {
        let end = s.offset.to_native().checked_add(s.len.to_native() as u64);
        if end.is_none_or(|end| end > self.heap_len) {
            let (len, offset) = (s.len, s.offset);
            return fail(format!("{} points outside the string heap ({len} bytes at {offset})", what()));
        }
        Ok(())
    }

    fn span(&self, span: &ArchivedSpan, pool_len: usize, what: &dyn Fn() -> String) -> Check {
        let end = span.start.to_native() as u64 + span.len.to_native() as u64;
        if end > pool_len as u64 {
            return fail(format!("{} ends at {end}, past the {pool_len} entries it indexes", what()));
        }
        Ok(())
    }

    /// A span of `pool_u16` whose values must all be below `bound`, sorted and unique.
    fn u16_list(&self, span: &ArchivedSpan, bound: usize, what: &dyn Fn() -> String) -> Check {
        self.span(span, self.a.pool_u16.len(), what)?;
        let values = &self.a.pool_u16[span.range()];
        strictly_sorted(values, |v| v.to_native(), what)?;
        if let Some(v) = values.iter().find(|v| v.to_native() as usize >= bound) {
            return fail(format!("{} holds {v}, not below {bound}", what()));
        }
        Ok(())
    }

    fn u32_list(&self, span: &ArchivedSpan, what: &dyn Fn() -> String) -> Check {
        self.span(span, self.a.pool_u32.len(), what)?;
        strictly_sorted(&self.a.pool_u32[span.range()], |v| v.to_native(), what)
    }

    fn u64_list(&self, span: &ArchivedSpan, what: &dyn Fn() -> String) -> Check {
        self.span(span, self.a.pool_u64.len(), what)?;
        strictly_sorted(&self.a.pool_u64[span.range()], |v| v.to_native(), what)
    }

    fn category(&self, packed: u16, what: &dyn Fn() -> String) -> Check {
        if !is_packed_iab_category(packed) {
            return fail(format!("{} has {packed}, not a packed IAB category", what()));
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

    fn pool_str(&self) -> Check {
        for (i, s) in self.a.pool_str.iter().enumerate() {
            self.str(s, &|| format!("string pool entry {i}"))?;
        }
        Ok(())
    }

    fn advertisers(&self) -> Check {
        strictly_sorted(&self.a.advertisers, |x| x.id.to_native(), &|| "advertisers".into())?;
        for adv in self.a.advertisers.iter() {
            let what = || format!("advertiser {}", adv.id);
            self.str(&adv.name, &what)?;
            self.str(&adv.domain, &what)?;
            self.category(adv.category.to_native(), &what)?;
            // Blocklists match this hash against the request's domains: it must be right.
            let domain = heap_str(self.heap, &adv.domain).unwrap_or_default();
            if key_hash(domain) != adv.domain_hash.to_native() {
                return fail(format!("{}'s domain hash does not match its domain", what()));
            }
        }
        Ok(())
    }

    fn campaigns(&self) -> Check {
        let a = self.a;
        strictly_sorted(&a.campaigns, |x| x.id.to_native(), &|| "campaigns".into())?;
        let mut creatives_end = 0;
        for c in a.campaigns.iter() {
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
            self.targeting(&c.targeting, &what)?;
            self.u16_list(&c.country_overrides, 26 * 26, &|| format!("{}'s country overrides", what()))?;
            // Campaigns own consecutive, non-overlapping ranges of creatives, in campaign order;
            // `creatives()` checks that each creative names the campaign whose range holds it.
            let range = c.creatives.range();
            if !c.creatives.is_empty() && range.start < creatives_end {
                return fail(format!("{}'s creatives overlap the previous campaign's", what()));
            }
            self.span(&c.creatives, a.creatives.len(), &|| format!("{}'s creatives", what()))?;
            creatives_end = creatives_end.max(range.end);
        }
        Ok(())
    }

    fn targeting(&self, t: &ArchivedTargeting, what: &dyn Fn() -> String) -> Check {
        self.u16_list(&t.countries, 26 * 26, &|| format!("{}'s countries", what()))?;
        self.u16_list(&t.languages, 26 * 26, &|| format!("{}'s languages", what()))?;
        self.category_list(&t.app_categories, &|| format!("{}'s app categories", what()))?;
        self.u64_list(&t.app_allow, &|| format!("{}'s app allow list", what()))?;
        self.u64_list(&t.app_block, &|| format!("{}'s app block list", what()))?;
        self.u32_list(&t.segments_include, &|| format!("{}'s included segments", what()))?;
        self.u32_list(&t.segments_exclude, &|| format!("{}'s excluded segments", what()))
    }

    /// Checks the creatives and returns, per creative, what the index check needs of it packed in
    /// four bytes (see `creative_key`): small enough that the index check's random reads of it
    /// mostly hit the cache.
    fn creatives(&self) -> Result<Vec<u32>, String> {
        let a = self.a;
        if a.campaigns.len() > CAMPAIGN_IDX_LIMIT {
            return fail(format!(
                "{} campaigns, more than the {CAMPAIGN_IDX_LIMIT} this format indexes",
                a.campaigns.len()
            ));
        }
        strictly_sorted(&a.creatives, |x| (x.campaign_idx.to_native(), x.id.to_native()), &|| {
            "creatives by campaign and id".into()
        })?;
        let mut keys = Vec::with_capacity(a.creatives.len());
        for (idx, cr) in a.creatives.iter().enumerate() {
            let what = || format!("creative {}", cr.id);
            let campaign_idx = cr.campaign_idx.to_native();
            let Some(campaign) = a.campaigns.get(campaign_idx as usize) else {
                return fail(format!("{} names a missing campaign", what()));
            };
            if !campaign.creatives.range().contains(&idx) {
                return fail(format!("{} is outside its campaign's creative range", what()));
            }
            self.str(&cr.mime, &what)?;
            self.str(&cr.markup, &what)?;
            self.span(&cr.assets, a.pool_str.len(), &|| format!("{}'s assets", what()))?;
            keys.push(creative_key(campaign_idx, slot_key(cr.format.get(), campaign.platform.get())));
        }
        strictly_sorted(&a.creative_ids, |e| e.id.to_native(), &|| "creative ids".into())?;
        permutation(
            a.creative_ids.iter().map(|e| e.idx.to_native() as usize),
            a.creatives.len(),
            "creative id",
        )?;
        Ok(keys)
    }

    /// A hash table is sorted by hash and names every record once. Whether an entry's hash is its
    /// record's key is confirmed by every look-up, which compares the key itself.
    fn hash_table(&self, table: &[ArchivedHashEntry], n_records: usize, what: &str) -> Check {
        if table.windows(2).any(|w| w[0].hash > w[1].hash) {
            return fail(format!("the {what} table is not sorted by hash"));
        }
        permutation(table.iter().map(|e| e.idx.to_native() as usize), n_records, what)
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
        self.hash_table(&a.app_ids, a.apps.len(), "app id")?;
        self.hash_table(&a.app_bundles, a.apps.len(), "app bundle")
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
        self.hash_table(&a.ad_unit_ids, a.ad_units.len(), "ad unit id")
    }

    fn segments(&self) -> Check {
        strictly_sorted(&self.a.segments, |s| s.id.to_native(), &|| "segments".into())?;
        for s in self.a.segments.iter() {
            self.str(&s.name, &|| format!("segment {}", s.id))?;
        }
        Ok(())
    }

    /// Every slot lies inside the candidates, is ordered best first, and holds only creatives of
    /// its own format and OS whose campaign is the one the candidate names. `creative_keys` (from
    /// `creatives()`) keeps this a scan of a small table rather than of the records.
    fn index(&self, creative_keys: &[u32]) -> Check {
        let index = &self.a.index;
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
                    let what = || format!("index slot {}/{country_key}/{}", format.name(), os.name());
                    self.span(span, index.candidates.len(), &what)?;
                    slot(&index.candidates[span.range()], slot_key(format, os), creative_keys, &what)?;
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
                return fail(format!("experiment {} has an invalid bucket range or slot", x.id));
            }
            if ranges.iter().any(|&(s, e)| start < e && s < end) {
                return fail(format!("experiment {} overlaps another experiment's buckets", x.id));
            }
            ranges.push((start, end));
            let mut next = 0;
            for arm in x.arms.iter() {
                if arm.bucket_start.to_native() != next || arm.bucket_end.to_native() <= next {
                    return fail(format!("experiment {}'s arms do not tile its buckets", x.id));
                }
                next = arm.bucket_end.to_native();
            }
            if next != BUCKETS {
                return fail(format!("experiment {}'s arms do not cover all of its buckets", x.id));
            }
        }
        Ok(())
    }
}

/// Format and OS in three bits.
fn slot_key(format: Format, os: Os) -> u32 {
    (format as u32) << 1 | os as u32
}

/// Campaign indexes fit above the three bits of a slot key in a `u32`.
const CAMPAIGN_IDX_LIMIT: usize = 1 << 29;

fn creative_key(campaign_idx: u32, slot_key: u32) -> u32 {
    campaign_idx << 3 | slot_key
}

fn slot(
    candidates: &[ArchivedCandidate],
    key: u32,
    creative_keys: &[u32],
    what: &dyn Fn() -> String,
) -> Check {
    let order = |c: &ArchivedCandidate| {
        (std::cmp::Reverse(c.ecpm_micros.to_native()), c.campaign_idx.to_native(), c.creative_idx.to_native())
    };
    if candidates.windows(2).any(|w| order(&w[0]) >= order(&w[1])) {
        return fail(format!("{} is not ordered best first", what()));
    }
    for cand in candidates {
        // Campaign indexes past the limit were refused in `creatives()`, so the shift loses no bits.
        let expected = creative_key(cand.campaign_idx.to_native(), key);
        if creative_keys.get(cand.creative_idx.to_native() as usize) != Some(&expected) {
            return fail(format!("{} holds a creative of another campaign, format or OS", what()));
        }
    }
    Ok(())
}

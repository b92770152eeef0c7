//! The compiler's state and the records that are small in number: manifest, advertisers,
//! segments, templates, publisher apps and ad units. Campaigns and creatives are in
//! `campaigns.rs`, rates and the index in `market.rs`, experiments in `experiments.rs`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use adsnap_snapshot::schema::{self, Span, StrRef};
use adsnap_snapshot::{key_hash, pack_iab_category, Format, Os};
use indicatif::ProgressBar;

use crate::catalog::{self, files, CATALOG_FORMAT_VERSION};
use crate::diag::Diagnostics;
use crate::error::BuildError;
use crate::heap::HeapWriter;
use crate::read::{for_each_json_line, parse_json};
use crate::rules::*;

/// Variable-length lists, referenced from records by [`Span`].
#[derive(Default)]
pub struct Pools {
    pub u16s: Vec<u16>,
    pub u32s: Vec<u32>,
    pub u64s: Vec<u64>,
    pub strs: Vec<StrRef>,
}

fn span(start: usize, end: usize) -> Result<Span, BuildError> {
    let too_big = || BuildError::Limit { what: "a pool larger than 2^32 entries".into() };
    Ok(Span {
        start: u32::try_from(start).map_err(|_| too_big())?,
        len: u32::try_from(end - start).map_err(|_| too_big())?,
    })
}

impl Pools {
    /// Appends a list that the caller already sorted and deduplicated.
    pub fn push_u16(&mut self, values: &[u16]) -> Result<Span, BuildError> {
        let start = self.u16s.len();
        self.u16s.extend_from_slice(values);
        span(start, self.u16s.len())
    }

    pub fn push_u32(&mut self, values: &[u32]) -> Result<Span, BuildError> {
        let start = self.u32s.len();
        self.u32s.extend_from_slice(values);
        span(start, self.u32s.len())
    }

    pub fn push_u64(&mut self, values: &[u64]) -> Result<Span, BuildError> {
        let start = self.u64s.len();
        self.u64s.extend_from_slice(values);
        span(start, self.u64s.len())
    }

    pub fn push_strs(&mut self, values: &[StrRef]) -> Result<Span, BuildError> {
        let start = self.strs.len();
        self.strs.extend_from_slice(values);
        span(start, self.strs.len())
    }
}

/// Where a record came from, for diagnostics.
#[derive(Clone, Copy)]
pub struct At {
    pub file: &'static str,
    pub line: u64,
}

impl At {
    pub fn err(self, diags: &mut Diagnostics, field: &str, reason: impl Into<String>) {
        diags.push(self.file, self.line, field, reason);
    }

    /// Reports `problem` (if any) against `field`; returns whether the field was fine.
    pub fn check(self, diags: &mut Diagnostics, field: &str, problem: Option<String>) -> bool {
        match problem {
            Some(reason) => {
                self.err(diags, field, reason);
                false
            }
            None => true,
        }
    }
}

/// Everything read so far. Fixed-size records stay in memory; strings are in the spill file.
pub struct Compiler<'a> {
    pub dir: &'a Path,
    pub progress: &'a ProgressBar,
    pub now_unix_s: i64,
    pub diags: Diagnostics,
    pub heap: HeapWriter,
    pub pools: Pools,
    pub manifest: Option<catalog::Manifest>,
    pub advertisers: Vec<schema::Advertiser>,
    pub advertiser_lines: HashMap<u32, u64>,
    pub segments: Vec<schema::Segment>,
    pub segment_lines: HashMap<u32, u64>,
    pub templates: HashMap<String, (StrRef, catalog::MarkupKind, u64)>,
    pub apps: Vec<schema::PublisherApp>,
    pub app_lines: HashMap<String, u64>,
    pub app_bundle_lines: HashMap<String, u64>,
    pub app_idx_by_id: HashMap<String, u32>,
    /// `key_hash` of each app's id, parallel to `apps`.
    pub app_id_hashes: Vec<u64>,
    /// `key_hash` of each ad unit's id, parallel to `ad_units`.
    pub ad_unit_id_hashes: Vec<u64>,
    pub ad_units: Vec<schema::AdUnit>,
    /// Creative attributes each ad unit blocks, as a mask, parallel to `ad_units`.
    pub ad_unit_blocked_attrs: Vec<u32>,
    pub ad_unit_lines: HashMap<String, u64>,
    pub campaigns: Vec<schema::Campaign>,
    /// Line of each campaign, parallel to `campaigns`.
    pub campaign_lines: Vec<u64>,
    pub creatives: Vec<schema::Creative>,
    pub creative_lines: Vec<u64>,
    /// IAB creative attributes of each creative as a mask, parallel to `creatives`.
    pub creative_attrs: Vec<u32>,
    pub creative_ids: Vec<schema::IdEntry>,
    pub rates: Vec<crate::market::RateRow>,
    pub experiments: schema::Experiments,
    /// Ids of lines that did not parse, by file: references to them are not reported again.
    pub unparsed: HashMap<&'static str, HashSet<String>>,
}

pub fn os_of(platform: catalog::Platform) -> Os {
    match platform {
        catalog::Platform::Android => Os::Android,
        catalog::Platform::Ios => Os::Ios,
    }
}

pub fn format_of(format: catalog::Format) -> Format {
    match format {
        catalog::Format::Banner => Format::Banner,
        catalog::Format::Interstitial => Format::Interstitial,
        catalog::Format::RewardedVideo => Format::RewardedVideo,
        catalog::Format::Native => Format::Native,
    }
}

impl<'a> Compiler<'a> {
    pub fn new(
        dir: &'a Path,
        spill_dir: &Path,
        progress: &'a ProgressBar,
        now_unix_s: i64,
    ) -> Result<Self, BuildError> {
        Ok(Compiler {
            dir,
            progress,
            now_unix_s,
            diags: Diagnostics::default(),
            heap: HeapWriter::new(spill_dir)?,
            pools: Pools::default(),
            manifest: None,
            advertisers: Vec::new(),
            advertiser_lines: HashMap::new(),
            segments: Vec::new(),
            segment_lines: HashMap::new(),
            templates: HashMap::new(),
            apps: Vec::new(),
            app_lines: HashMap::new(),
            app_bundle_lines: HashMap::new(),
            app_idx_by_id: HashMap::new(),
            app_id_hashes: Vec::new(),
            ad_unit_id_hashes: Vec::new(),
            ad_units: Vec::new(),
            ad_unit_blocked_attrs: Vec::new(),
            ad_unit_lines: HashMap::new(),
            campaigns: Vec::new(),
            campaign_lines: Vec::new(),
            creatives: Vec::new(),
            creative_lines: Vec::new(),
            creative_attrs: Vec::new(),
            creative_ids: Vec::new(),
            rates: Vec::new(),
            experiments: schema::Experiments::default(),
            unparsed: HashMap::new(),
        })
    }

    /// Reads the whole catalog, file by file, in dependency order.
    pub fn read_all(&mut self) -> Result<(), BuildError> {
        self.read_manifest()?;
        self.read_advertisers()?;
        self.read_segments()?;
        self.read_templates()?;
        self.read_apps()?;
        self.read_ad_units()?;
        self.read_campaigns()?;
        self.read_creatives()?;
        self.read_rates()?;
        self.read_experiments()
    }

    fn read_manifest(&mut self) -> Result<(), BuildError> {
        let path = self.dir.join(files::MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Read { path, source })?;
        self.progress.inc(text.len() as u64);
        let at = At { file: files::MANIFEST, line: 0 };
        let manifest: catalog::Manifest = match parse_json(&text) {
            Ok(m) => m,
            Err((field, reason)) => {
                at.err(&mut self.diags, &field, reason);
                return Ok(());
            }
        };
        let d = &mut self.diags;
        if manifest.catalog_format_version != CATALOG_FORMAT_VERSION {
            let reason = format!(
                "is {}; this builder reads catalog format version {CATALOG_FORMAT_VERSION}",
                manifest.catalog_format_version
            );
            at.err(d, "catalog_format_version", reason);
        }
        at.check(d, "name", check_text(&manifest.name, ID_BYTES_MAX));
        let currency_ok =
            manifest.currency.len() == 3 && manifest.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            at.err(d, "currency", format!("{:?} is not an ISO 4217 code such as \"USD\"", manifest.currency));
        }
        at.check(d, "default_rates.ctr", check_rate(manifest.default_rates.ctr, false));
        at.check(d, "default_rates.cvr", check_rate(manifest.default_rates.cvr, true));
        if manifest.staging_share_bp > STAGING_SHARE_BP_MAX {
            let reason =
                format!("is {}, over the limit of {STAGING_SHARE_BP_MAX}", manifest.staging_share_bp);
            at.err(d, "staging_share_bp", reason);
        }
        at.check(d, "assignment_salt", check_text(&manifest.assignment_salt, ID_BYTES_MAX));
        self.experiments.staging_share_bp = manifest.staging_share_bp;
        self.experiments.salt = key_hash(&manifest.assignment_salt);
        self.manifest = Some(manifest);
        Ok(())
    }

    /// Packs an IAB category, reporting it when it is not one.
    pub fn category(d: &mut Diagnostics, at: At, field: &str, code: &str) -> u16 {
        pack_iab_category(code).unwrap_or_else(|| {
            at.err(
                d,
                field,
                format!("{code:?} is not an IAB category such as \"IAB9\" or \"IAB9-30\" (IAB1 to IAB26)"),
            );
            0
        })
    }

    /// Reports a repeated key; returns whether it was new.
    pub fn first_seen<K: std::hash::Hash + Eq>(
        lines: &mut HashMap<K, u64>,
        key: K,
        d: &mut Diagnostics,
        at: At,
        field: &str,
        shown: &dyn std::fmt::Display,
    ) -> bool {
        if let Some(first) = lines.get(&key) {
            at.err(d, field, format!("{shown} is already defined on line {first}"));
            return false;
        }
        lines.insert(key, at.line);
        true
    }

    /// Streams one JSON Lines file into `each`. Diagnostics go to the `&mut Diagnostics` handed to
    /// `each` (the compiler's own list is moved there while the file is read).
    pub fn read_records<T: serde::de::DeserializeOwned>(
        &mut self,
        file: &'static str,
        required: bool,
        mut each: impl FnMut(&mut Self, &mut Diagnostics, At, T) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let mut diags = std::mem::take(&mut self.diags);
        let mut unparsed = Vec::new();
        let (dir, progress) = (self.dir, self.progress);
        let result = for_each_json_line(
            dir,
            file,
            required,
            &mut diags,
            &mut unparsed,
            progress,
            |d, line, record| each(self, d, At { file, line }, record),
        );
        self.diags = diags;
        self.unparsed.entry(file).or_default().extend(unparsed);
        result
    }

    /// Reports a reference to a record that does not exist, unless the record is there but did
    /// not parse (its line was reported already).
    pub fn missing_reference(
        &self,
        d: &mut Diagnostics,
        at: At,
        field: &str,
        file: &'static str,
        id: &dyn std::fmt::Display,
        what: &str,
    ) {
        let id_text = id.to_string();
        if self.unparsed.get(file).is_some_and(|ids| ids.contains(&id_text)) {
            return;
        }
        at.err(d, field, format!("no {what} {id} in {file}"));
    }

    fn read_advertisers(&mut self) -> Result<(), BuildError> {
        self.read_records(files::ADVERTISERS, true, Self::advertiser)?;
        self.advertisers.sort_unstable_by_key(|a| a.id);
        Ok(())
    }

    fn advertiser(&mut self, d: &mut Diagnostics, at: At, a: catalog::Advertiser) -> Result<(), BuildError> {
        if a.id == 0 {
            at.err(d, "id", "must be above 0");
        }
        if !Self::first_seen(&mut self.advertiser_lines, a.id, d, at, "id", &format!("advertiser {}", a.id)) {
            return Ok(());
        }
        at.check(d, "name", check_text(&a.name, NAME_BYTES_MAX));
        at.check(d, "domain", check_domain(&a.domain));
        let category = Self::category(d, at, "iab_category", &a.iab_category);
        self.advertisers.push(schema::Advertiser {
            id: a.id,
            name: self.heap.push(&a.name)?,
            domain: self.heap.push(&a.domain)?,
            domain_hash: key_hash(&a.domain),
            category,
        });
        Ok(())
    }

    fn read_segments(&mut self) -> Result<(), BuildError> {
        self.read_records(files::SEGMENTS, false, Self::segment)?;
        self.segments.sort_unstable_by_key(|s| s.id);
        Ok(())
    }

    fn segment(&mut self, d: &mut Diagnostics, at: At, s: catalog::Segment) -> Result<(), BuildError> {
        if s.id == 0 {
            at.err(d, "id", "must be above 0");
        }
        if !Self::first_seen(&mut self.segment_lines, s.id, d, at, "id", &format!("segment {}", s.id)) {
            return Ok(());
        }
        at.check(d, "name", check_text(&s.name, NAME_BYTES_MAX));
        self.segments.push(schema::Segment { id: s.id, name: self.heap.push(&s.name)? });
        Ok(())
    }

    fn read_templates(&mut self) -> Result<(), BuildError> {
        self.read_records(files::TEMPLATES, false, Self::template)
    }

    fn template(&mut self, d: &mut Diagnostics, at: At, t: catalog::Template) -> Result<(), BuildError> {
        at.check(d, "id", check_text(&t.id, ID_BYTES_MAX));
        at.check(d, "body", check_text(&t.body, STRING_BYTES_MAX));
        at.check(d, "body", check_markup(crate::campaigns::markup_kind(t.kind), &t.body));
        if let Some((_, _, first)) = self.templates.get(&t.id) {
            at.err(d, "id", format!("template {:?} is already defined on line {first}", t.id));
            return Ok(());
        }
        let body = self.heap.push(&t.body)?;
        self.templates.insert(t.id, (body, t.kind, at.line));
        Ok(())
    }

    fn read_apps(&mut self) -> Result<(), BuildError> {
        self.read_records(files::APPS, true, Self::app)
    }

    fn app(&mut self, d: &mut Diagnostics, at: At, a: catalog::App) -> Result<(), BuildError> {
        at.check(d, "id", check_text(&a.id, ID_BYTES_MAX));
        at.check(d, "bundle", check_text(&a.bundle, ID_BYTES_MAX));
        at.check(d, "name", check_text(&a.name, NAME_BYTES_MAX));
        let new_id =
            Self::first_seen(&mut self.app_lines, a.id.clone(), d, at, "id", &format!("app {:?}", a.id));
        let new_bundle = Self::first_seen(
            &mut self.app_bundle_lines,
            a.bundle.clone(),
            d,
            at,
            "bundle",
            &format!("bundle {:?}", a.bundle),
        );
        if !new_id || !new_bundle {
            return Ok(());
        }
        let category = Self::category(d, at, "iab_category", &a.iab_category);
        let (blocked_domains, blocked_categories) =
            self.blocklists(d, at, &a.blocked_domains, &a.blocked_categories)?;
        self.app_idx_by_id.insert(a.id.clone(), self.apps.len() as u32);
        self.app_id_hashes.push(key_hash(&a.id));
        self.apps.push(schema::PublisherApp {
            id: self.heap.push(&a.id)?,
            bundle: self.heap.push(&a.bundle)?,
            bundle_hash: key_hash(&a.bundle),
            platform: os_of(a.platform),
            category,
            coppa: a.coppa,
            blocked_domains,
            blocked_categories,
        });
        Ok(())
    }

    /// Validates and stores a pair of blocklists: advertiser domains and IAB categories.
    fn blocklists(
        &mut self,
        d: &mut Diagnostics,
        at: At,
        domains: &[String],
        categories: &[String],
    ) -> Result<(Span, Span), BuildError> {
        let mut hashes = Vec::with_capacity(domains.len());
        for (i, domain) in domains.iter().enumerate() {
            if at.check(d, &format!("blocked_domains[{i}]"), check_domain(domain)) {
                hashes.push(key_hash(domain));
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        let mut packed: Vec<u16> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| Self::category(d, at, &format!("blocked_categories[{i}]"), c))
            .collect();
        packed.sort_unstable();
        packed.dedup();
        Ok((self.pools.push_u64(&hashes)?, self.pools.push_u16(&packed)?))
    }

    fn read_ad_units(&mut self) -> Result<(), BuildError> {
        self.read_records(files::AD_UNITS, true, Self::ad_unit)
    }

    fn ad_unit(&mut self, d: &mut Diagnostics, at: At, u: catalog::AdUnit) -> Result<(), BuildError> {
        at.check(d, "id", check_text(&u.id, ID_BYTES_MAX));
        if !Self::first_seen(
            &mut self.ad_unit_lines,
            u.id.clone(),
            d,
            at,
            "id",
            &format!("ad unit {:?}", u.id),
        ) {
            return Ok(());
        }
        let app_idx = self.app_idx_by_id.get(&u.app_id).copied();
        if app_idx.is_none() {
            self.missing_reference(d, at, "app_id", files::APPS, &format!("{:?}", u.app_id), "app");
        }
        if u.formats.is_empty() {
            at.err(d, "formats", "must list at least one format");
        }
        let mut formats = 0u8;
        for (i, f) in u.formats.iter().enumerate() {
            let bit = format_of(*f).bit();
            if formats & bit != 0 {
                at.err(d, &format!("formats[{i}]"), format!("{} is listed twice", format_of(*f).name()));
            }
            formats |= bit;
        }
        if formats & Format::Banner.bit() != 0 && (u.width == 0 || u.height == 0) {
            at.err(d, "width", "a banner ad unit needs a width and a height above 0");
        }
        let (blocked_domains, blocked_categories) =
            self.blocklists(d, at, &u.blocked_domains, &u.blocked_categories)?;
        self.ad_unit_id_hashes.push(key_hash(&u.id));
        self.ad_unit_blocked_attrs.push(crate::campaigns::attrs_mask(
            d,
            at,
            "blocked_attrs",
            &u.blocked_attrs,
        ));
        self.ad_units.push(schema::AdUnit {
            id: self.heap.push(&u.id)?,
            app_idx: app_idx.unwrap_or(0),
            formats,
            width: u.width,
            height: u.height,
            floor_cpm_micros: u.floor_cpm_micros,
            blocked_domains,
            blocked_categories,
        });
        Ok(())
    }
}

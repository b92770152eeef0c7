//! Campaigns and their creatives: the bulk of a catalog, validated and stored as fixed-size
//! records while their strings stream to the spill file.

use adsnap_snapshot::schema::{self, IdEntry, MarkupKind, Span};
use adsnap_snapshot::{
    is_country_code, is_language_code, key_hash, pack_country, pack_language, pack_os_version,
    ConnectionType, DeviceType, Format,
};

use crate::catalog::{self, files};
use crate::compile::{format_of, os_of, At, Compiler};
use crate::diag::Diagnostics;
use crate::error::BuildError;
use crate::market::pacing_throttle_ppm;
use crate::rules::*;

impl Compiler<'_> {
    pub(crate) fn read_campaigns(&mut self) -> Result<(), BuildError> {
        self.read_records(files::CAMPAIGNS, true, Self::campaign)?;
        self.sort_campaigns();
        Ok(())
    }

    fn campaign(&mut self, d: &mut Diagnostics, at: At, c: catalog::Campaign) -> Result<(), BuildError> {
        if c.id == 0 {
            at.err(d, "id", "must be above 0");
        }
        let advertiser_idx = match self.advertisers.binary_search_by_key(&c.advertiser_id, |a| a.id) {
            Ok(idx) => idx as u32,
            Err(_) => {
                self.missing_reference(
                    d,
                    at,
                    "advertiser_id",
                    files::ADVERTISERS,
                    &c.advertiser_id,
                    "advertiser",
                );
                0
            }
        };
        at.check(d, "name", check_text(&c.name, NAME_BYTES_MAX));
        at.check(d, "app.bundle", check_text(&c.app.bundle, ID_BYTES_MAX));
        at.check(d, "app.store_url", check_url(&c.app.store_url, true));
        if c.bid.amount_micros == 0 || c.bid.amount_micros > BID_MICROS_MAX {
            at.err(d, "bid.amount_micros", format!("{} is not in 1..={BID_MICROS_MAX}", c.bid.amount_micros));
        }
        check_budget(d, at, &c.budget);
        let (start_unix_s, end_unix_s) = check_schedule(d, at, &c.schedule);
        let targeting = self.targeting(d, at, &c.targeting, c.app.platform)?;
        let (frequency_cap_impressions, frequency_cap_period_s) =
            check_frequency_cap(d, at, c.frequency_cap.as_ref());
        let mut record = schema::Campaign {
            id: c.id,
            advertiser_idx,
            name: self.heap.push(&c.name)?,
            status: match c.status {
                catalog::CampaignStatus::Active => schema::CampaignStatus::Active,
                catalog::CampaignStatus::Paused => schema::CampaignStatus::Paused,
                catalog::CampaignStatus::Archived => schema::CampaignStatus::Archived,
            },
            platform: os_of(c.app.platform),
            app_bundle: self.heap.push(&c.app.bundle)?,
            app_bundle_hash: key_hash(&c.app.bundle),
            store_url: self.heap.push(&c.app.store_url)?,
            bid_type: match c.bid.bid_type {
                catalog::BidType::Cpm => schema::BidType::Cpm,
                catalog::BidType::Cpc => schema::BidType::Cpc,
                catalog::BidType::Cpi => schema::BidType::Cpi,
            },
            bid_micros: c.bid.amount_micros,
            daily_budget_micros: c.budget.daily_micros,
            total_budget_micros: c.budget.total_micros,
            spend_micros: c.budget.spent_micros,
            start_unix_s,
            end_unix_s,
            pacing_throttle_ppm: 0,
            targeting,
            frequency_cap_impressions,
            frequency_cap_period_s,
            creatives: Span::EMPTY,
            country_overrides: Span::EMPTY,
        };
        record.pacing_throttle_ppm = pacing_throttle_ppm(&record, self.now_unix_s);
        self.campaigns.push(record);
        self.campaign_lines.push(at.line);
        Ok(())
    }

    fn targeting(
        &mut self,
        d: &mut Diagnostics,
        at: At,
        t: &catalog::Targeting,
        platform: catalog::Platform,
    ) -> Result<schema::Targeting, BuildError> {
        let countries = codes(
            d,
            at,
            "targeting.countries",
            &t.countries,
            |c| pack_country(c).filter(|_| is_country_code(c)),
            "an ISO 3166-1 alpha-2 country code such as \"US\"",
        );
        let languages = codes(
            d,
            at,
            "targeting.languages",
            &t.languages,
            |l| pack_language(l).filter(|_| is_language_code(l)),
            "an ISO 639-1 language code such as \"en\"",
        );
        if t.os.is_some_and(|os| os != platform) {
            at.err(d, "targeting.os", "must be the promoted app's platform");
        }
        let min_os_version = match &t.min_os_version {
            None => 0,
            Some(v) => pack_os_version(v).unwrap_or_else(|| {
                at.err(d, "targeting.min_os_version", format!("{v:?} is not a version such as \"14.2\""));
                0
            }),
        };
        let device_types = flags(d, at, "targeting.device_types", &t.device_types, |n| {
            DeviceType::from_name(n).map(DeviceType::bit)
        });
        let connection_types = flags(d, at, "targeting.connection_types", &t.connection_types, |n| {
            ConnectionType::from_name(n).map(ConnectionType::bit)
        });
        let app_allow = bundle_hashes(d, at, "targeting.apps_allow", &t.apps_allow);
        let app_block = bundle_hashes(d, at, "targeting.apps_block", &t.apps_block);
        if let Some(both) = t.apps_allow.iter().find(|b| t.apps_block.contains(b)) {
            at.err(d, "targeting.apps_block", format!("{both:?} is in both apps_allow and apps_block"));
        }
        let mut app_categories: Vec<u16> = t
            .app_categories
            .iter()
            .enumerate()
            .map(|(i, c)| Self::category(d, at, &format!("targeting.app_categories[{i}]"), c))
            .collect();
        app_categories.sort_unstable();
        app_categories.dedup();
        let segments_include = self.segment_ids(d, at, "targeting.segments_include", &t.segments_include);
        let segments_exclude = self.segment_ids(d, at, "targeting.segments_exclude", &t.segments_exclude);
        if let Some(both) = t.segments_include.iter().find(|s| t.segments_exclude.contains(s)) {
            at.err(d, "targeting.segments_exclude", format!("segment {both} is both included and excluded"));
        }
        let p = &mut self.pools;
        Ok(schema::Targeting {
            countries: p.push_u16(&countries)?,
            min_os_version,
            device_types,
            connection_types,
            languages: p.push_u16(&languages)?,
            app_allow: p.push_u64(&app_allow)?,
            app_block: p.push_u64(&app_block)?,
            app_categories: p.push_u16(&app_categories)?,
            segments_include: p.push_u32(&segments_include)?,
            segments_exclude: p.push_u32(&segments_exclude)?,
        })
    }

    fn segment_ids(&self, d: &mut Diagnostics, at: At, field: &str, ids: &[u32]) -> Vec<u32> {
        for (i, id) in ids.iter().enumerate() {
            if self.segments.binary_search_by_key(id, |s| s.id).is_err() {
                self.missing_reference(d, at, &format!("{field}[{i}]"), files::SEGMENTS, id, "segment");
            }
        }
        sorted_unique(d, at, field, ids.to_vec(), &|id: &u32| format!("segment {id}"))
    }

    /// Sorts campaigns by id (the order the snapshot keeps them in) and reports repeated ids.
    fn sort_campaigns(&mut self) {
        let mut order: Vec<u32> = (0..self.campaigns.len() as u32).collect();
        order.sort_by_key(|&i| (self.campaigns[i as usize].id, self.campaign_lines[i as usize]));
        let mut campaigns = Vec::with_capacity(order.len());
        let mut lines = Vec::with_capacity(order.len());
        for i in order {
            let (campaign, line) = (&self.campaigns[i as usize], self.campaign_lines[i as usize]);
            if let Some(previous) = campaigns.last().filter(|p: &&schema::Campaign| p.id == campaign.id) {
                let first = lines[lines.len() - 1];
                let reason = format!("campaign {} is already defined on line {first}", previous.id);
                self.diags.push(files::CAMPAIGNS, line, "id", reason);
                continue;
            }
            campaigns.push(campaign.clone());
            lines.push(line);
        }
        self.campaigns = campaigns;
        self.campaign_lines = lines;
    }

    pub(crate) fn read_creatives(&mut self) -> Result<(), BuildError> {
        self.read_records(files::CREATIVES, true, Self::creative)?;
        self.sort_creatives()
    }

    fn creative(&mut self, d: &mut Diagnostics, at: At, c: catalog::Creative) -> Result<(), BuildError> {
        if c.id == 0 {
            at.err(d, "id", "must be above 0");
        }
        let campaign_idx = match self.campaigns.binary_search_by_key(&c.campaign_id, |x| x.id) {
            Ok(idx) => idx as u32,
            Err(_) => {
                self.missing_reference(d, at, "campaign_id", files::CAMPAIGNS, &c.campaign_id, "campaign");
                return Ok(());
            }
        };
        let format = format_of(c.format);
        if format != Format::Native && (c.width == 0 || c.height == 0) {
            at.err(d, "width", format!("a {} creative needs a width and a height above 0", format.name()));
        }
        let kind = self.check_media(d, at, &c, format);
        let markup = self.markup(d, at, &c, kind)?;
        let mut assets = Vec::with_capacity(c.assets.len());
        for (i, url) in c.assets.iter().enumerate() {
            at.check(d, &format!("assets[{i}]"), check_url(url, false));
            assets.push(self.heap.push(url)?);
        }
        self.creatives.push(schema::Creative {
            id: c.id,
            campaign_idx,
            format,
            width: c.width,
            height: c.height,
            video_duration_s: c.video_duration_s.unwrap_or(0),
            mime: self.heap.intern(&c.mime)?,
            assets: self.pools.push_strs(&assets)?,
            markup_kind: kind,
            markup,
        });
        self.creative_lines.push(at.line);
        self.creative_attrs.push(attrs_mask(d, at, "attrs", &c.attrs));
        Ok(())
    }

    /// Checks MIME type, assets and duration; returns the markup kind the creative needs.
    fn check_media(&self, d: &mut Diagnostics, at: At, c: &catalog::Creative, format: Format) -> MarkupKind {
        if !MIME_TYPES.contains(&c.mime.as_str()) {
            at.err(d, "mime", format!("{:?} is not one of {}", c.mime, MIME_TYPES.join(", ")));
        }
        let is_video = c.mime.starts_with("video/");
        if format == Format::RewardedVideo && !is_video {
            at.err(d, "mime", "a rewarded_video creative needs a video/* MIME type");
        }
        match (is_video, c.video_duration_s) {
            (true, Some(s)) if (1..=VIDEO_DURATION_S_MAX).contains(&s) => {}
            (true, _) => at.err(
                d,
                "video_duration_s",
                format!("a video needs a duration in 1..={VIDEO_DURATION_S_MAX} seconds"),
            ),
            (false, Some(_)) => at.err(d, "video_duration_s", "only video creatives have a duration"),
            (false, None) => {}
        }
        if c.assets.is_empty() || c.assets.len() > ASSETS_MAX {
            at.err(d, "assets", format!("has {} URLs; a creative has 1 to {ASSETS_MAX}", c.assets.len()));
        }
        if is_video {
            MarkupKind::Vast
        } else if format == Format::Native {
            MarkupKind::NativeJson
        } else {
            MarkupKind::Html
        }
    }

    fn markup(
        &mut self,
        d: &mut Diagnostics,
        at: At,
        c: &catalog::Creative,
        kind: MarkupKind,
    ) -> Result<schema::StrRef, BuildError> {
        match (&c.template, &c.markup) {
            (Some(id), None) => {
                match self.templates.get(id) {
                    Some((body, template_kind, _)) => {
                        if markup_kind(*template_kind) != kind {
                            at.err(d, "template", format!("template {id:?} is {template_kind:?} markup, this creative needs {kind:?}"));
                        }
                        Ok(*body)
                    }
                    None => {
                        at.err(d, "template", format!("no template {id:?} in {}", files::TEMPLATES));
                        Ok(schema::StrRef::default())
                    }
                }
            }
            (None, Some(markup)) => {
                at.check(d, "markup", check_text(markup, STRING_BYTES_MAX));
                at.check(d, "markup", check_markup(kind, markup));
                self.heap.push(markup)
            }
            _ => {
                at.err(d, "template", "a creative has exactly one of template and markup");
                Ok(schema::StrRef::default())
            }
        }
    }

    /// Groups creatives by campaign (sorted by id inside), reports repeated ids, builds the
    /// creative id table and each campaign's creative span.
    fn sort_creatives(&mut self) -> Result<(), BuildError> {
        let n = u32::try_from(self.creatives.len())
            .map_err(|_| BuildError::Limit { what: "more than 2^32 creatives".into() })?;
        let mut order: Vec<u32> = (0..n).collect();
        order.sort_by_key(|&i| {
            let c = &self.creatives[i as usize];
            (c.campaign_idx, c.id, self.creative_lines[i as usize])
        });
        self.creatives = order.iter().map(|&i| self.creatives[i as usize].clone()).collect();
        self.creative_lines = order.iter().map(|&i| self.creative_lines[i as usize]).collect();
        self.creative_attrs = order.iter().map(|&i| self.creative_attrs[i as usize]).collect();
        let mut ids: Vec<IdEntry> =
            self.creatives.iter().enumerate().map(|(idx, c)| IdEntry { id: c.id, idx: idx as u32 }).collect();
        ids.sort_by_key(|e| (e.id, self.creative_lines[e.idx as usize]));
        for pair in ids.windows(2).filter(|w| w[0].id == w[1].id) {
            let (first, again) =
                (self.creative_lines[pair[0].idx as usize], self.creative_lines[pair[1].idx as usize]);
            let reason = format!("creative {} is already defined on line {first}", pair[0].id);
            self.diags.push(files::CREATIVES, again, "id", reason);
        }
        let mut start = 0;
        while start < self.creatives.len() {
            let campaign_idx = self.creatives[start].campaign_idx;
            let end =
                start + self.creatives[start..].iter().take_while(|c| c.campaign_idx == campaign_idx).count();
            self.campaigns[campaign_idx as usize].creatives =
                Span { start: start as u32, len: (end - start) as u32 };
            start = end;
        }
        self.creative_ids = ids;
        Ok(())
    }
}

/// IAB creative attribute codes (field `field`) as the snapshot's mask, bit `n` for code `n`;
/// codes outside `1..=CREATIVE_ATTR_CODE_MAX` and repeated codes are reported.
pub(crate) fn attrs_mask(d: &mut Diagnostics, at: At, field: &str, codes: &[u8]) -> u32 {
    let mut mask = 0u32;
    for (i, &code) in codes.iter().enumerate() {
        if !(1..=CREATIVE_ATTR_CODE_MAX).contains(&code) {
            let reason = format!("{code} is not an IAB creative attribute (1..={CREATIVE_ATTR_CODE_MAX})");
            at.err(d, &format!("{field}[{i}]"), reason);
        } else if mask & 1 << code != 0 {
            at.err(d, &format!("{field}[{i}]"), format!("attribute {code} is listed twice"));
        } else {
            mask |= 1 << code;
        }
    }
    mask
}

pub fn markup_kind(kind: catalog::MarkupKind) -> MarkupKind {
    match kind {
        catalog::MarkupKind::Html => MarkupKind::Html,
        catalog::MarkupKind::Vast => MarkupKind::Vast,
        catalog::MarkupKind::NativeJson => MarkupKind::NativeJson,
    }
}

fn check_budget(d: &mut Diagnostics, at: At, b: &catalog::Budget) {
    if b.total_micros == 0 {
        at.err(d, "budget.total_micros", "must be above 0");
    }
    if b.daily_micros == 0 {
        at.err(d, "budget.daily_micros", "must be above 0");
    }
    if b.daily_micros > b.total_micros {
        at.err(
            d,
            "budget.daily_micros",
            format!("{} is above the total budget {}", b.daily_micros, b.total_micros),
        );
    }
}

fn check_schedule(d: &mut Diagnostics, at: At, s: &catalog::Schedule) -> (i64, i64) {
    let start = parse_time(&s.start).unwrap_or_else(|reason| {
        at.err(d, "schedule.start", reason);
        0
    });
    let end = parse_time(&s.end).unwrap_or_else(|reason| {
        at.err(d, "schedule.end", reason);
        0
    });
    if start != 0 && end != 0 && end <= start {
        at.err(d, "schedule.end", "must be after schedule.start");
    }
    (start, end)
}

fn check_frequency_cap(d: &mut Diagnostics, at: At, cap: Option<&catalog::FrequencyCap>) -> (u32, u32) {
    let Some(cap) = cap else { return (0, 0) };
    if cap.impressions == 0 {
        at.err(d, "frequency_cap.impressions", "must be above 0");
    }
    if cap.period_s == 0 || cap.period_s > FREQUENCY_CAP_PERIOD_S_MAX {
        at.err(
            d,
            "frequency_cap.period_s",
            format!("{} is not in 1..={FREQUENCY_CAP_PERIOD_S_MAX}", cap.period_s),
        );
    }
    (cap.impressions, cap.period_s)
}

/// Packs a list of two-letter codes, reporting bad and repeated ones; sorted for the snapshot.
fn codes(
    d: &mut Diagnostics,
    at: At,
    field: &str,
    values: &[String],
    pack: impl Fn(&str) -> Option<u16>,
    what: &str,
) -> Vec<u16> {
    let mut packed = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match pack(v) {
            Some(p) => packed.push(p),
            None => at.err(d, &format!("{field}[{i}]"), format!("{v:?} is not {what}")),
        }
    }
    sorted_unique(d, at, field, packed, &|_| "a code".to_string())
}

fn flags(d: &mut Diagnostics, at: At, field: &str, names: &[String], bit: impl Fn(&str) -> Option<u8>) -> u8 {
    let mut mask = 0;
    for (i, name) in names.iter().enumerate() {
        match bit(name) {
            Some(b) => mask |= b,
            None => at.err(d, &format!("{field}[{i}]"), format!("{name:?} is not a known value")),
        }
    }
    mask
}

fn bundle_hashes(d: &mut Diagnostics, at: At, field: &str, bundles: &[String]) -> Vec<u64> {
    for (i, b) in bundles.iter().enumerate() {
        at.check(d, &format!("{field}[{i}]"), check_text(b, ID_BYTES_MAX));
    }
    let hashes = bundles.iter().map(|b| key_hash(b)).collect();
    sorted_unique(d, at, field, hashes, &|_| "a bundle".to_string())
}

/// Sorts `values` and reports any value listed twice.
fn sorted_unique<T: Ord + Copy>(
    d: &mut Diagnostics,
    at: At,
    field: &str,
    mut values: Vec<T>,
    shown: &dyn Fn(&T) -> String,
) -> Vec<T> {
    values.sort_unstable();
    if let Some(w) = values.windows(2).find(|w| w[0] == w[1]) {
        at.err(d, field, format!("lists {} more than once", shown(&w[0])));
        values.dedup();
    }
    values
}

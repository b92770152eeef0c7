//! The snapshot's data as plain owned Rust values with serde: what a server that kept its ad data
//! as JSON would deserialize at start-up. The open benchmark compares against loading this.

use adsnap_snapshot::schema::{ArchivedSpan, N_COUNTRY_KEYS};
use adsnap_snapshot::{Format, Os, Snapshot};
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct JsonSnapshot {
    pub catalog_name: String,
    pub currency: String,
    pub advertisers: Vec<JsonAdvertiser>,
    pub campaigns: Vec<JsonCampaign>,
    pub creatives: Vec<JsonCreative>,
    /// Markup shared by many creatives (templates), referenced by index, as a JSON server would
    /// keep it.
    pub templates: Vec<String>,
    pub apps: Vec<JsonApp>,
    pub ad_units: Vec<JsonAdUnit>,
    pub index: Vec<JsonSlot>,
}

#[derive(Serialize, Deserialize)]
pub struct JsonAdvertiser {
    pub id: u32,
    pub name: String,
    pub domain: String,
    pub category: u16,
}

#[derive(Serialize, Deserialize)]
pub struct JsonCampaign {
    pub id: u32,
    pub advertiser_idx: u32,
    pub name: String,
    pub status: u8,
    pub platform: u8,
    pub app_bundle: String,
    pub store_url: String,
    pub bid_type: u8,
    pub bid_micros: u64,
    pub daily_budget_micros: u64,
    pub total_budget_micros: u64,
    pub spend_micros: u64,
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    pub pacing_throttle_ppm: u32,
    pub countries: Vec<u16>,
    pub min_os_version: u32,
    pub device_types: u8,
    pub connection_types: u8,
    pub languages: Vec<u16>,
    pub app_allow: Vec<u64>,
    pub app_block: Vec<u64>,
    pub app_categories: Vec<u16>,
    pub segments_include: Vec<u32>,
    pub segments_exclude: Vec<u32>,
    pub frequency_cap_impressions: u32,
    pub frequency_cap_period_s: u32,
    pub creatives: (u32, u32),
    pub country_overrides: Vec<u16>,
}

#[derive(Serialize, Deserialize)]
pub struct JsonCreative {
    pub id: u32,
    pub campaign_idx: u32,
    pub format: u8,
    pub width: u16,
    pub height: u16,
    pub video_duration_s: u16,
    pub mime: String,
    pub assets: Vec<String>,
    pub markup_kind: u8,
    /// Inline markup, or empty when `template` names shared markup.
    pub markup: String,
    pub template: Option<u32>,
}

#[derive(Serialize, Deserialize)]
pub struct JsonApp {
    pub id: String,
    pub bundle: String,
    pub platform: u8,
    pub category: u16,
    pub coppa: bool,
    pub blocked_domains: Vec<u64>,
    pub blocked_categories: Vec<u16>,
}

#[derive(Serialize, Deserialize)]
pub struct JsonAdUnit {
    pub id: String,
    pub app_idx: u32,
    pub formats: u8,
    pub floor_cpm_micros: u64,
    pub blocked_domains: Vec<u64>,
    pub blocked_categories: Vec<u16>,
}

/// One non-empty index slot: (eCPM, campaign index, creative index), best first.
#[derive(Serialize, Deserialize)]
pub struct JsonSlot {
    pub format: u8,
    pub country: u16,
    pub os: u8,
    pub candidates: Vec<(u64, u32, u32)>,
}

fn u16s(s: &Snapshot, span: &ArchivedSpan) -> Vec<u16> {
    s.pool_u16(span).iter().map(|v| v.to_native()).collect()
}

fn u32s(s: &Snapshot, span: &ArchivedSpan) -> Vec<u32> {
    s.pool_u32(span).iter().map(|v| v.to_native()).collect()
}

fn u64s(s: &Snapshot, span: &ArchivedSpan) -> Vec<u64> {
    s.pool_u64(span).iter().map(|v| v.to_native()).collect()
}

/// Copies everything a server reads out of a snapshot into owned values.
pub fn mirror(s: &Snapshot) -> JsonSnapshot {
    let a = s.archive();
    let mut uses: HashMap<u64, u32> = HashMap::new();
    for c in a.creatives.iter() {
        *uses.entry(c.markup.offset.to_native()).or_default() += 1;
    }
    let mut templates: HashMap<u64, u32> = HashMap::new();
    let mut template_bodies = Vec::new();
    for c in a.creatives.iter() {
        let offset = c.markup.offset.to_native();
        if uses[&offset] > 1 && !templates.contains_key(&offset) {
            templates.insert(offset, template_bodies.len() as u32);
            template_bodies.push(s.str(&c.markup).to_string());
        }
    }
    JsonSnapshot {
        catalog_name: a.meta.catalog_name.to_string(),
        currency: a.meta.currency.to_string(),
        advertisers: a
            .advertisers
            .iter()
            .map(|x| JsonAdvertiser {
                id: x.id.to_native(),
                name: s.str(&x.name).into(),
                domain: s.str(&x.domain).into(),
                category: x.category.to_native(),
            })
            .collect(),
        campaigns: a.campaigns.iter().map(|c| campaign(s, c)).collect(),
        creatives: a.creatives.iter().map(|c| creative(s, c, &templates)).collect(),
        templates: template_bodies,
        apps: a
            .apps
            .iter()
            .map(|x| JsonApp {
                id: s.str(&x.id).into(),
                bundle: s.str(&x.bundle).into(),
                platform: x.platform.get() as u8,
                category: x.category.to_native(),
                coppa: x.coppa,
                blocked_domains: u64s(s, &x.blocked_domains),
                blocked_categories: u16s(s, &x.blocked_categories),
            })
            .collect(),
        ad_units: a
            .ad_units
            .iter()
            .map(|x| JsonAdUnit {
                id: s.str(&x.id).into(),
                app_idx: x.app_idx.to_native(),
                formats: x.formats,
                floor_cpm_micros: x.floor_cpm_micros.to_native(),
                blocked_domains: u64s(s, &x.blocked_domains),
                blocked_categories: u16s(s, &x.blocked_categories),
            })
            .collect(),
        index: index(s),
    }
}

fn campaign(s: &Snapshot, c: &adsnap_snapshot::schema::ArchivedCampaign) -> JsonCampaign {
    let t = &c.targeting;
    JsonCampaign {
        id: c.id.to_native(),
        advertiser_idx: c.advertiser_idx.to_native(),
        name: s.str(&c.name).into(),
        status: c.status.get() as u8,
        platform: c.platform.get() as u8,
        app_bundle: s.str(&c.app_bundle).into(),
        store_url: s.str(&c.store_url).into(),
        bid_type: c.bid_type.get() as u8,
        bid_micros: c.bid_micros.to_native(),
        daily_budget_micros: c.daily_budget_micros.to_native(),
        total_budget_micros: c.total_budget_micros.to_native(),
        spend_micros: c.spend_micros.to_native(),
        start_unix_s: c.start_unix_s.to_native(),
        end_unix_s: c.end_unix_s.to_native(),
        pacing_throttle_ppm: c.pacing_throttle_ppm.to_native(),
        countries: u16s(s, &t.countries),
        min_os_version: t.min_os_version.to_native(),
        device_types: t.device_types,
        connection_types: t.connection_types,
        languages: u16s(s, &t.languages),
        app_allow: u64s(s, &t.app_allow),
        app_block: u64s(s, &t.app_block),
        app_categories: u16s(s, &t.app_categories),
        segments_include: u32s(s, &t.segments_include),
        segments_exclude: u32s(s, &t.segments_exclude),
        frequency_cap_impressions: c.frequency_cap_impressions.to_native(),
        frequency_cap_period_s: c.frequency_cap_period_s.to_native(),
        creatives: (c.creatives.start.to_native(), c.creatives.len.to_native()),
        country_overrides: u16s(s, &c.country_overrides),
    }
}

fn creative(
    s: &Snapshot,
    c: &adsnap_snapshot::schema::ArchivedCreative,
    templates: &HashMap<u64, u32>,
) -> JsonCreative {
    let template = templates.get(&c.markup.offset.to_native()).copied();
    JsonCreative {
        id: c.id.to_native(),
        campaign_idx: c.campaign_idx.to_native(),
        format: c.format.get() as u8,
        width: c.width.to_native(),
        height: c.height.to_native(),
        video_duration_s: c.video_duration_s.to_native(),
        mime: s.str(&c.mime).into(),
        assets: s.pool_str(&c.assets).iter().map(|a| s.str(a).to_string()).collect(),
        markup_kind: c.markup_kind.get() as u8,
        markup: if template.is_some() { String::new() } else { s.str(&c.markup).into() },
        template,
    }
}

fn index(s: &Snapshot) -> Vec<JsonSlot> {
    let mut slots = Vec::new();
    for format in Format::ALL {
        for country in 0..N_COUNTRY_KEYS as u16 {
            for os in Os::ALL {
                let candidates = s.candidates(format, country, os);
                if candidates.is_empty() {
                    continue;
                }
                slots.push(JsonSlot {
                    format: format as u8,
                    country,
                    os: os as u8,
                    candidates: candidates
                        .iter()
                        .map(|c| {
                            (
                                c.ecpm_micros.to_native(),
                                c.campaign_idx.to_native(),
                                c.creative_idx.to_native(),
                            )
                        })
                        .collect(),
                });
            }
        }
    }
    slots
}

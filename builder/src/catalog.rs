//! The catalog: what campaign managers write, one folder of JSON Lines files plus one CSV table.
//! These types are the input format's reference; `docs/catalog.md` and
//! `docs/catalog.schema.json` describe the same thing for people and tools.
//!
//! Every record type rejects unknown fields, so a misspelt key is an error, not a silent default.

use serde::{Deserialize, Serialize};

/// The catalog format version this builder reads.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

/// File names inside a catalog folder.
pub mod files {
    pub const MANIFEST: &str = "catalog.json";
    pub const ADVERTISERS: &str = "advertisers.jsonl";
    pub const SEGMENTS: &str = "segments.jsonl";
    pub const TEMPLATES: &str = "templates.jsonl";
    pub const APPS: &str = "apps.jsonl";
    pub const AD_UNITS: &str = "ad_units.jsonl";
    pub const CAMPAIGNS: &str = "campaigns.jsonl";
    pub const CREATIVES: &str = "creatives.jsonl";
    pub const PREDICTED_RATES: &str = "predicted_rates.csv";
    pub const EXPERIMENTS: &str = "experiments.jsonl";
}

/// `catalog.json`: the catalog's name, currency and defaults.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub catalog_format_version: u32,
    pub name: String,
    /// ISO 4217 code; every `*_micros` amount is in millionths of it.
    pub currency: String,
    /// Rates for campaigns and markets the model has no prediction for.
    pub default_rates: Rates,
    /// Share of all traffic served from the staging snapshot, in basis points (500 = 5%).
    #[serde(default = "default_staging_share_bp")]
    pub staging_share_bp: u16,
    /// Salt of the traffic-assignment hash; changing it reshuffles every user.
    pub assignment_salt: String,
}

fn default_staging_share_bp() -> u16 {
    500
}

/// Predicted rates: clicks per impression and installs per click.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub ctr: f64,
    pub cvr: f64,
}

/// `advertisers.jsonl`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Advertiser {
    pub id: u32,
    pub name: String,
    /// The advertiser's domain, as exchanges list it in `adomain` and `badv`.
    pub domain: String,
    /// IAB content category, e.g. `IAB9-30`.
    pub iab_category: String,
}

/// `segments.jsonl`: audiences that user profiles refer to by id.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub id: u32,
    pub name: String,
}

/// What kind of markup a template or creative produces.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MarkupKind {
    Html,
    Vast,
    NativeJson,
}

/// `templates.jsonl`: markup shared by many creatives, with `{{placeholders}}` the server fills.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub id: String,
    pub kind: MarkupKind,
    pub body: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Android,
    Ios,
}

/// `apps.jsonl`: publisher apps that show ads.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub id: String,
    pub bundle: String,
    pub name: String,
    pub platform: Platform,
    pub iab_category: String,
    /// Directed at children: every request from it is treated as COPPA.
    #[serde(default)]
    pub coppa: bool,
    #[serde(default)]
    pub blocked_domains: Vec<String>,
    #[serde(default)]
    pub blocked_categories: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Banner,
    Interstitial,
    RewardedVideo,
    Native,
}

/// `ad_units.jsonl`: placements inside publisher apps.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdUnit {
    pub id: String,
    pub app_id: String,
    pub formats: Vec<Format>,
    #[serde(default)]
    pub width: u16,
    #[serde(default)]
    pub height: u16,
    pub floor_cpm_micros: u64,
    #[serde(default)]
    pub blocked_domains: Vec<String>,
    #[serde(default)]
    pub blocked_categories: Vec<String>,
    /// IAB creative attributes this placement shows no creative with (a rewarded placement
    /// blocking `16`, a skip button, for example).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_attrs: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Active,
    Paused,
    Archived,
}

/// The app a user-acquisition campaign promotes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromotedApp {
    pub bundle: String,
    pub store_url: String,
    pub platform: Platform,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BidType {
    Cpm,
    Cpc,
    Cpi,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bid {
    #[serde(rename = "type")]
    pub bid_type: BidType,
    pub amount_micros: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub daily_micros: u64,
    pub total_micros: u64,
    #[serde(default)]
    pub spent_micros: u64,
}

/// Start and end in RFC 3339, UTC (`2026-11-01T00:00:00Z`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub start: String,
    pub end: String,
}

/// Who may see the campaign. An absent or empty list means "no restriction".
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
    /// Must be the promoted app's platform when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Publisher app bundles: only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps_allow: Vec<String>,
    /// Publisher app bundles: never these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps_block: Vec<String>,
    /// IAB categories of the publisher app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments_include: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments_exclude: Vec<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub impressions: u32,
    pub period_s: u32,
}

/// `campaigns.jsonl`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: u32,
    pub advertiser_id: u32,
    pub name: String,
    pub status: CampaignStatus,
    pub app: PromotedApp,
    pub bid: Bid,
    pub budget: Budget,
    pub schedule: Schedule,
    #[serde(default)]
    pub targeting: Targeting,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<FrequencyCap>,
}

/// `creatives.jsonl`: exactly one of `template` and `markup`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Creative {
    pub id: u32,
    pub campaign_id: u32,
    pub format: Format,
    pub width: u16,
    pub height: u16,
    pub mime: String,
    pub assets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_duration_s: Option<u16>,
    /// Id of a template in `templates.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Inline markup: HTML, VAST XML or native JSON, by format and MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markup: Option<String>,
    /// IAB creative attributes (the OpenRTB and AdCOM list "Creative Attributes"), as the
    /// creative's audit found them: `6` in-banner video that plays on its own, `16` a skip
    /// button, and so on. Bid requests block creatives by them (`battr`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<u8>,
}

/// One row of `predicted_rates.csv`. `country` and `os` may be `*` for "every".
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PredictedRate {
    pub campaign_id: u32,
    pub country: String,
    pub os: String,
    pub ctr: f64,
    pub cvr: f64,
}

/// The decision parameters an arm may change; absent means "as control".
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_scanned_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_caps_enabled: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    pub id: u32,
    pub name: String,
    /// Share of the experiment's users, in basis points; an experiment's arms sum to 10000.
    pub weight_bp: u16,
    #[serde(default)]
    pub overrides: Overrides,
}

/// `experiments.jsonl`: at most three A/B tests, each in its own slot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub id: u32,
    pub name: String,
    /// 0, 1 or 2: each slot is a third of production traffic.
    pub slot: u8,
    /// Share of production traffic, in basis points (2000 = 20%), at most a slot's width.
    pub share_bp: u16,
    /// Salt of the hash that splits the experiment's users between its arms.
    pub salt: String,
    pub arms: Vec<Arm>,
}

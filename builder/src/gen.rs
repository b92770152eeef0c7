//! The seeded catalog generator behind `adsnap gen`: writes a complete, valid, realistically
//! shaped catalog folder of any size (100 to 10,000,000 campaigns) for demos and benchmarks.
//!
//! It streams. Campaigns are generated one at a time, and each campaign's advertiser (on its
//! first campaign), creatives and predicted rates are written in the same loop, so memory stays
//! flat however large the catalog is. Facts that several records must agree on (a publisher
//! app's bundle and platform, an advertiser's domain) are pure functions of the seed and an
//! index rather than remembered tables.
//!
//! The same options always give byte-identical files: every random choice comes from a ChaCha8
//! stream seeded by `seed` (one stream per group of files), and nothing depends on the clock,
//! hash order or threads.

use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use adsnap_snapshot::COUNTRY_CODES;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::catalog::Format::{Banner, Interstitial, Native, RewardedVideo};
use crate::catalog::{
    files, AdUnit, Advertiser, App, Arm, Bid, BidType, Budget, Campaign, CampaignStatus, Creative,
    Experiment, Format, FrequencyCap, Manifest, MarkupKind, Overrides, Platform, PredictedRate, PromotedApp,
    Rates, Schedule, Segment, Targeting, Template, CATALOG_FORMAT_VERSION,
};

/// The largest catalog the generator writes; creative ids (`u32`) stay far from overflowing.
pub const CAMPAIGNS_MAX: u64 = 10_000_000;
pub const CREATIVES_PER_CAMPAIGN_MAX: u32 = 20;
/// 2026-11-22T00:00:00Z: a fixed default so that default catalogs never change.
pub const DEFAULT_NOW_UNIX_S: i64 = 1_795_305_600;

const APPS_MIN: u64 = 50;
const APPS_MAX: u64 = 200_000;
const SEGMENTS_MIN: u64 = 50;
const SEGMENTS_MAX: u64 = 1_000;
/// One more audience segment per this many campaigns, above `SEGMENTS_MIN`.
const CAMPAIGNS_PER_EXTRA_SEGMENT: u64 = 20_000;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
const PROGRESS_EVERY_CAMPAIGNS: u32 = 4_096;
const HOUR_S: i64 = 3_600;
/// 9999-12-31T23:59:59Z: RFC 3339 years have four digits.
const RFC3339_UNIX_S_MAX: i64 = 253_402_300_799;
const MICROS_PER_DOLLAR: f64 = 1_000_000.0;
const CENT_MICROS: u64 = 10_000;
const DOLLAR_MICROS: u64 = 1_000_000;
const VIDEO_DURATION_S_MIN: u16 = 15;
const VIDEO_DURATION_S_MAX: u16 = 30;
/// How many draws `pick_distinct` spends per wanted value before settling for fewer.
const DISTINCT_DRAW_ATTEMPTS: usize = 8;
/// Where creative assets and tracking links point; `.net` of a name nobody serves.
const CDN_URL: &str = "https://cdn.adsnap-demo.net";
const CLICK_URL: &str = "https://track.adsnap-demo.net/click";
const PLAY_STORE_URL: &str = "https://play.google.com/store/apps/details?id=";
const APP_STORE_URL: &str = "https://apps.apple.com/app/id";

// Advertisers: campaigns per advertiser follow a Pareto law (a few studios run thousands of
// campaigns, many run one), which puts the mean near ten.
const SINGLE_CAMPAIGN_ADVERTISER_SHARE: f64 = 0.3;
const ADVERTISER_CAMPAIGNS_SCALE: f64 = 3.0;
const ADVERTISER_CAMPAIGNS_TAIL_INDEX: f64 = 1.2;
/// No advertiser takes more than 1/this of the catalog, so 100 campaigns still give 5 advertisers.
const ADVERTISER_CAMPAIGN_SHARE_DIVISOR: u64 = 5;
/// An advertiser promotes one title per this many campaigns, up to `TITLES_PER_ADVERTISER_MAX`.
const CAMPAIGNS_PER_TITLE: u64 = 8;
const TITLES_PER_ADVERTISER_MAX: u64 = 12;

// Campaign targeting.
const WORLDWIDE_CAMPAIGN_SHARE: f64 = 0.10;
const ANDROID_SHARE_US_CAMPAIGNS: f64 = 0.42;
const ANDROID_SHARE_OTHER_CAMPAIGNS: f64 = 0.85;
const ANDROID_APPS_PERCENT: u64 = 68;
const OS_TARGETED_SHARE: f64 = 0.85;
const MIN_OS_VERSION_SHARE: f64 = 0.30;
const DEVICE_TYPES_SHARE: f64 = 0.15;
const CONNECTION_TYPES_SHARE: f64 = 0.08;
const LANGUAGES_SHARE: f64 = 0.10;
const APPS_ALLOW_SHARE: f64 = 0.02;
const APPS_BLOCK_SHARE: f64 = 0.05;
const APP_CATEGORIES_SHARE: f64 = 0.04;
const SEGMENTS_INCLUDE_SHARE: f64 = 0.08;
const SEGMENTS_EXCLUDE_SHARE: f64 = 0.05;
const FREQUENCY_CAP_SHARE: f64 = 0.12;
/// Popular publisher apps have low indexes: an index is `n * u^this` for uniform `u`.
const APP_POPULARITY_EXPONENT: i32 = 4;
/// App Store ids have ten digits; publisher apps get one per stride, promoted apps any.
const IOS_APP_ID_MIN: u64 = 1_000_000_000;
const IOS_APP_ID_STRIDE: u64 = 1_000;
const IOS_APP_IDS: u64 = 9_000_000_000;

// Budgets and schedules.
const DAILY_BUDGET_DOLLARS_MIN: f64 = 50.0;
const DAILY_BUDGET_DOLLARS_MAX: f64 = 50_000.0;
const BUDGET_DAYS_MIN: u64 = 7;
const BUDGET_DAYS_MAX: u64 = 120;
const EXHAUSTED_BUDGET_SHARE: f64 = 0.08;

// Creatives and predicted rates.
const INLINE_MARKUP_SHARE: f64 = 0.03;
const CTR_MEDIAN: f64 = 0.015;
const CTR_SIGMA: f64 = 0.55;
const CTR_RANGE: (f64, f64) = (0.002, 0.10);
const CVR_MEDIAN: f64 = 0.06;
const CVR_SIGMA: f64 = 0.70;
const CVR_RANGE: (f64, f64) = (0.005, 0.35);
const COUNTRY_RATE_SHARE: f64 = 0.5;
const COUNTRY_RATE_SIGMA: f64 = 0.25;
/// A market's rates stay within these factors of the campaign's worldwide rates.
const COUNTRY_RATE_FACTOR_RANGE: (f64, f64) = (0.2, 5.0);
/// For markets and campaigns the model has not seen.
const DEFAULT_RATES: Rates = Rates { ctr: 0.01, cvr: 0.05 };
const STAGING_SHARE_BP: u16 = 500;
/// Rates keep five decimals, which is finer than any model's precision.
const RATE_SCALE: f64 = 100_000.0;

// App publishers.
const COPPA_APP_SHARE: f64 = 0.03;
const APP_BLOCKED_DOMAINS_SHARE: f64 = 0.10;
const APP_BLOCKED_CATEGORIES_SHARE: f64 = 0.08;
const AD_UNIT_BLOCKS_SHARE: f64 = 0.02;
const FREE_FLOOR_SHARE: f64 = 0.40;

/// Independent random streams, one per group of files, so that e.g. the app list does not
/// change when campaign generation draws one more number.
#[derive(Clone, Copy)]
enum Stream {
    Segments = 1,
    Apps = 2,
    Campaigns = 3,
}

/// Domains of the pure per-index derivations (`key`), kept apart from each other.
#[derive(Clone, Copy)]
enum KeyDomain {
    App = 1,
    Advertiser = 2,
    Title = 3,
    StoreId = 4,
    Salt = 5,
}

const GAMES_CATEGORY: &str = "IAB9-30";
/// IAB content categories of advertisers and publisher apps; video games dominate mobile UA.
const CATEGORIES: &[(&str, u32)] = &[
    (GAMES_CATEGORY, 66),
    ("IAB1", 4),
    ("IAB1-6", 3),
    ("IAB3", 2),
    ("IAB7", 3),
    ("IAB8", 2),
    ("IAB12", 3),
    ("IAB13", 3),
    ("IAB14", 2),
    ("IAB17", 3),
    ("IAB19", 4),
    ("IAB20", 2),
    ("IAB22", 3),
];
/// Categories publishers commonly refuse (non-standard, illegal, dating, ...).
const SENSITIVE_CATEGORIES: &[&str] = &["IAB25", "IAB26", "IAB14-1", "IAB7-39", "IAB11-4"];

/// Markets with their weight in country targeting and main language. The first ten are the
/// mobile user-acquisition top ten; every other country weighs `LONG_TAIL_COUNTRY_WEIGHT`.
const MARKETS: &[(&str, u32, &str)] = &[
    ("US", 600, "en"),
    ("JP", 240, "ja"),
    ("KR", 140, "ko"),
    ("GB", 160, "en"),
    ("DE", 160, "de"),
    ("FR", 120, "fr"),
    ("BR", 140, "pt"),
    ("IN", 140, "hi"),
    ("CA", 100, "en"),
    ("AU", 100, "en"),
    ("MX", 15, "es"),
    ("ID", 15, "id"),
    ("TR", 15, "tr"),
    ("RU", 15, "ru"),
    ("IT", 15, "it"),
    ("ES", 15, "es"),
    ("TW", 15, "zh"),
    ("SA", 15, "ar"),
    ("TH", 15, "th"),
    ("PH", 15, "tl"),
    ("VN", 15, "vi"),
];
pub(crate) const TOP_MARKETS: usize = 10;
const LONG_TAIL_COUNTRY_WEIGHT: u32 = 2;
const COUNTRIES_PER_CAMPAIGN: &[(usize, u32)] = &[(1, 45), (2, 20), (3, 15), (4, 10), (5, 10)];
const TIER_ONE_MARKETS: &[&str] = &["US", "JP", "KR"];
const TIER_TWO_MARKETS: &[&str] = &["GB", "DE", "FR", "CA", "AU"];

const BID_TYPES: &[(BidType, u32)] = &[(BidType::Cpi, 70), (BidType::Cpm, 20), (BidType::Cpc, 10)];
const STATUSES: &[(CampaignStatus, u32)] =
    &[(CampaignStatus::Active, 85), (CampaignStatus::Paused, 10), (CampaignStatus::Archived, 5)];
const ANDROID_VERSIONS: &[&str] = &["7.0", "8.0", "9.0", "10.0", "11.0", "12.0", "13.0"];
const IOS_VERSIONS: &[&str] = &["13.0", "14.0", "14.5", "15.0", "16.0", "17.0", "17.2"];
const DEVICE_TYPE_SETS: &[(&[&str], u32)] =
    &[(&["phone"], 60), (&["phone", "tablet"], 30), (&["tablet"], 8), (&["connected_tv"], 2)];
const CONNECTION_TYPE_SETS: &[(&[&str], u32)] =
    &[(&["wifi"], 60), (&["wifi", "cellular_4g", "cellular_5g"], 30), (&["wifi", "ethernet"], 10)];
const FREQUENCY_CAP_IMPRESSIONS: &[u32] = &[1, 2, 3, 5, 10];
const FREQUENCY_CAP_PERIODS_S: &[u32] = &[3_600, 86_400, 604_800];

const STUDIO_WORDS: &[&str] = &[
    "pixel", "lunar", "iron", "candy", "rocket", "tiny", "happy", "blue", "wild", "royal", "magic", "golden",
    "silver", "neon", "cosmic", "brave", "lucky", "red", "jolly", "mighty", "clever", "sunny", "frost",
    "ember", "swift", "crystal", "dragon", "panda", "fox", "owl", "tiger", "whale",
];
#[rustfmt::skip]
const STUDIO_SUFFIXES: &[&str] = &[
    "games", "studio", "labs", "interactive", "play", "mobile", "apps", "works", "digital", "fun",
];
const TLDS: &[&str] = &["com", "com", "com", "com", "io", "net", "co", "games"];
#[rustfmt::skip]
const GAME_ADJECTIVES: &[&str] = &[
    "merge", "idle", "tap", "puzzle", "royal", "empire", "farm", "word", "solitaire", "racing",
    "zombie", "castle", "galaxy", "ocean", "bubble", "block", "hero", "candy", "tower", "dungeon",
];
const GAME_NOUNS: &[&str] = &[
    "kingdom", "quest", "saga", "legends", "tycoon", "blast", "rush", "wars", "match", "mania", "story",
    "clash", "run", "craft", "heroes", "city", "island", "dash", "party", "master",
];
const APP_ADJECTIVES: &[&str] =
    &["smart", "daily", "easy", "pocket", "swift", "fresh", "quick", "true", "bright", "simple"];
const APP_NOUNS: &[&str] =
    &["shop", "wallet", "news", "fit", "chat", "photo", "music", "food", "travel", "deals", "bank", "learn"];
#[rustfmt::skip]
const SEGMENT_KINDS: &[&str] = &[
    "payers", "non_payers", "lapsed", "high_ltv", "lookalike", "installers", "churn_risk",
    "whales", "new_users", "engaged",
];
const SEGMENT_WINDOWS: &[&str] = &["1d", "7d", "30d", "90d"];

const TEMPLATE_VAST: &str = "vast4-inline-endcard";
const TEMPLATE_BANNER: &str = "html-banner-v2";
const TEMPLATE_INTERSTITIAL: &str = "html-interstitial-v3";
const TEMPLATE_IFRAME: &str = "html5-iframe-v1";
const TEMPLATE_NATIVE: &str = "native-app-install-v1";

/// What a creative looks like; each shape names the template that renders it.
#[derive(Clone, Copy)]
struct Shape {
    format: Format,
    width: u16,
    height: u16,
    mime: &'static str,
    /// Asset file names, the first being the one `{{asset_url}}` points at.
    files: &'static [&'static str],
    template: &'static str,
}

/// A weighted [`Shape`], written compactly.
const fn shape(
    weight: u32,
    format: Format,
    (width, height): (u16, u16),
    mime: &'static str,
    files: &'static [&'static str],
    template: &'static str,
) -> (Shape, u32) {
    let shape = Shape { format, width, height, mime, files, template };
    (shape, weight)
}

const MP4: &[&str] = &["video.mp4", "endcard.jpg"];
const WEBM: &[&str] = &["video.webm", "endcard.jpg"];
const PLAYABLE: &[&str] = &["index.html", "preview.png"];
/// The IAB creative attribute of playable ads: "User Interactive (e.g., Embedded Games)".
const ATTR_USER_INTERACTIVE: u8 = 13;
/// The IAB creative attribute of ads with their own skip button: "Ad Provides Skip Button".
const ATTR_SKIP_BUTTON: u8 = 16;
const NATIVE_PNG: &[&str] = &["icon.png", "main.png"];
const NATIVE_JPEG: &[&str] = &["icon.jpg", "main.jpg"];
/// Interstitials and rewarded video dominate game advertising; banners and native follow.
#[rustfmt::skip]
const SHAPES: &[(Shape, u32)] = &[
    shape(18, RewardedVideo, (720, 1280), "video/mp4", MP4, TEMPLATE_VAST),
    shape(12, RewardedVideo, (1280, 720), "video/mp4", MP4, TEMPLATE_VAST),
    shape(5, RewardedVideo, (720, 1280), "video/webm", WEBM, TEMPLATE_VAST),
    shape(10, Interstitial, (720, 1280), "video/mp4", MP4, TEMPLATE_VAST),
    shape(4, Interstitial, (1280, 720), "video/mp4", MP4, TEMPLATE_VAST),
    shape(8, Interstitial, (320, 480), "image/jpeg", &["image.jpg"], TEMPLATE_INTERSTITIAL),
    shape(4, Interstitial, (768, 1024), "image/png", &["image.png"], TEMPLATE_INTERSTITIAL),
    shape(5, Interstitial, (320, 480), "text/html", PLAYABLE, TEMPLATE_IFRAME),
    shape(7, Banner, (320, 50), "image/png", &["banner.png"], TEMPLATE_BANNER),
    shape(3, Banner, (320, 50), "image/gif", &["banner.gif"], TEMPLATE_BANNER),
    shape(2, Banner, (320, 50), "image/webp", &["banner.webp"], TEMPLATE_BANNER),
    shape(5, Banner, (300, 250), "image/jpeg", &["banner.jpg"], TEMPLATE_BANNER),
    shape(2, Banner, (300, 250), "text/html", &["index.html"], TEMPLATE_IFRAME),
    shape(2, Banner, (728, 90), "image/png", &["banner.png"], TEMPLATE_BANNER),
    shape(5, Native, (1200, 627), "image/png", NATIVE_PNG, TEMPLATE_NATIVE),
    shape(3, Native, (0, 0), "image/jpeg", NATIVE_JPEG, TEMPLATE_NATIVE),
];

/// A kind of publisher placement, with the floor price range it asks for.
#[derive(Clone, Copy)]
struct UnitShape {
    name: &'static str,
    formats: &'static [Format],
    width: u16,
    height: u16,
    floor_dollars: (f64, f64),
}

/// A weighted [`UnitShape`], written compactly.
const fn unit(
    weight: u32,
    name: &'static str,
    formats: &'static [Format],
    (width, height): (u16, u16),
    floor_dollars: (f64, f64),
) -> (UnitShape, u32) {
    let unit = UnitShape { name, formats, width, height, floor_dollars };
    (unit, weight)
}

/// Full-screen placements (width and height 0) earn the most; banners are the most numerous.
#[rustfmt::skip]
const UNIT_SHAPES: &[(UnitShape, u32)] = &[
    unit(25, "banner", &[Banner], (320, 50), (0.05, 1.0)),
    unit(5, "leaderboard", &[Banner], (728, 90), (0.1, 1.5)),
    unit(8, "mrec", &[Banner, Native], (300, 250), (0.2, 3.0)),
    unit(20, "interstitial", &[Interstitial], (0, 0), (0.5, 8.0)),
    unit(10, "fullscreen", &[Interstitial, RewardedVideo], (0, 0), (0.5, 10.0)),
    unit(25, "rewarded", &[RewardedVideo], (0, 0), (1.0, 15.0)),
    unit(7, "native", &[Native], (0, 0), (0.2, 4.0)),
];
const AD_UNITS_PER_APP: &[(u32, u32)] = &[(1, 40), (2, 30), (3, 20), (4, 10)];

/// The version of what the generator writes for given options: bumped whenever a change here
/// changes the catalogs it writes, so that callers that keep generated catalogs (the benchmarks)
/// know theirs is stale. 2: playable creatives carry attribute 13, rewarded ad units block 16.
pub const GENERATOR_VERSION: u32 = 2;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenOptions {
    pub n_campaigns: u64,
    pub seed: u64,
    pub creatives_per_campaign: u32,
    /// Reference time: schedules are placed around it (most running, some ended, some ahead).
    pub now_unix_s: i64,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self { n_campaigns: 1_000, seed: 1, creatives_per_campaign: 3, now_unix_s: DEFAULT_NOW_UNIX_S }
    }
}

/// What was written: records per file, and the total size of the folder's files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub n_advertisers: u64,
    pub n_campaigns: u64,
    pub n_creatives: u64,
    pub n_apps: u64,
    pub n_ad_units: u64,
    pub n_segments: u64,
    pub n_rates: u64,
    pub n_experiments: u64,
    pub bytes_written: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("n_campaigns must be in 1..={}, not {}", CAMPAIGNS_MAX, .0)]
    CampaignCount(u64),
    #[error("creatives_per_campaign must be in 1..={}, not {}", CREATIVES_PER_CAMPAIGN_MAX, .0)]
    CreativesPerCampaign(u32),
    #[error(
        "{} already holds a catalog ({}); refusing to overwrite it",
        .0.display(),
        files::MANIFEST
    )]
    CatalogExists(PathBuf),
    #[error("cannot write {}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot write {}", .path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {}", .path.display())]
    Csv { path: PathBuf, source: csv::Error },
}

/// Writes a complete catalog for `options` into `out_dir`, creating it if needed, and calls
/// `progress` with the number of campaigns written every few thousand campaigns and at the end.
pub fn generate(
    options: &GenOptions,
    out_dir: &Path,
    progress: &dyn Fn(u64),
) -> Result<GenSummary, GenError> {
    let world = World::new(options)?;
    prepare_dir(out_dir)?;
    let segments = write_segments(&world, out_dir)?;
    let templates = write_templates(out_dir)?;
    let (apps, ad_units) = write_apps(&world, out_dir)?;
    let mut campaigns = CampaignGen::new(&world, out_dir)?;
    campaigns.run(progress)?;
    let [advertisers, campaigns, creatives, rates] = campaigns.finish()?;
    let experiments = write_experiments(&world, out_dir)?;
    // The manifest goes last: a folder holding one is a complete catalog.
    let manifest = write_manifest(&world, out_dir)?;
    let all = [
        segments,
        templates,
        apps,
        ad_units,
        advertisers,
        campaigns,
        creatives,
        rates,
        experiments,
        manifest,
    ];
    Ok(GenSummary {
        n_advertisers: advertisers.records,
        n_campaigns: campaigns.records,
        n_creatives: creatives.records,
        n_apps: apps.records,
        n_ad_units: ad_units.records,
        n_segments: segments.records,
        n_rates: rates.records,
        n_experiments: experiments.records,
        bytes_written: all.iter().map(|written| written.bytes).sum(),
    })
}

fn prepare_dir(out_dir: &Path) -> Result<(), GenError> {
    fs::create_dir_all(out_dir).map_err(|source| GenError::Io { path: out_dir.to_path_buf(), source })?;
    let manifest = out_dir.join(files::MANIFEST);
    match manifest.try_exists() {
        Ok(false) => Ok(()),
        Ok(true) => Err(GenError::CatalogExists(out_dir.to_path_buf())),
        Err(source) => Err(GenError::Io { path: manifest, source }),
    }
}

/// Records and bytes written to one file.
#[derive(Clone, Copy, Debug)]
struct Written {
    records: u64,
    bytes: u64,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> GenError + '_ {
    move |source| GenError::Io { path: path.to_path_buf(), source }
}

fn create_file(dir: &Path, name: &str) -> Result<(PathBuf, File), GenError> {
    let path = dir.join(name);
    let file = File::create(&path).map_err(io_error(&path))?;
    Ok((path, file))
}

fn file_len(path: &Path) -> Result<u64, GenError> {
    Ok(fs::metadata(path).map_err(io_error(path))?.len())
}

/// What an output file holds once its final flush (`flush`) went through.
fn flushed(flush: io::Result<()>, path: &Path, records: u64) -> Result<Written, GenError> {
    flush.map_err(io_error(path))?;
    Ok(Written { records, bytes: file_len(path)? })
}

/// A JSON Lines output file.
struct JsonLines {
    path: PathBuf,
    out: BufWriter<File>,
    records: u64,
}

impl JsonLines {
    fn create(dir: &Path, name: &str) -> Result<Self, GenError> {
        let (path, file) = create_file(dir, name)?;
        let out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        Ok(Self { path, out, records: 0 })
    }

    fn line<T: Serialize>(&mut self, record: &T) -> Result<(), GenError> {
        serde_json::to_writer(&mut self.out, record)
            .map_err(|source| GenError::Json { path: self.path.clone(), source })?;
        self.out.write_all(b"\n").map_err(io_error(&self.path))?;
        self.records += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Written, GenError> {
        flushed(self.out.flush(), &self.path, self.records)
    }
}

/// `predicted_rates.csv`; the header comes from `PredictedRate`'s field names.
struct RatesCsv {
    path: PathBuf,
    out: csv::Writer<File>,
    records: u64,
}

impl RatesCsv {
    fn create(dir: &Path) -> Result<Self, GenError> {
        let (path, file) = create_file(dir, files::PREDICTED_RATES)?;
        let out = csv::WriterBuilder::new().buffer_capacity(WRITE_BUFFER_BYTES).from_writer(file);
        Ok(Self { path, out, records: 0 })
    }

    fn row(&mut self, rate: &PredictedRate) -> Result<(), GenError> {
        self.out.serialize(rate).map_err(|source| GenError::Csv { path: self.path.clone(), source })?;
        self.records += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Written, GenError> {
        flushed(self.out.flush(), &self.path, self.records)
    }
}

/// The validated options and the sizes derived from them.
struct World {
    seed: u64,
    now_unix_s: i64,
    n_campaigns: u32,
    creatives_per_campaign: u32,
    n_apps: u64,
    n_segments: u64,
    /// Running sums of country weights in `COUNTRY_CODES` order, for weighted draws.
    country_cumulative: Vec<u32>,
}

impl World {
    fn new(options: &GenOptions) -> Result<Self, GenError> {
        let n_campaigns = match u32::try_from(options.n_campaigns) {
            Ok(n) if (1..=CAMPAIGNS_MAX).contains(&options.n_campaigns) => n,
            _ => return Err(GenError::CampaignCount(options.n_campaigns)),
        };
        let cpc = options.creatives_per_campaign;
        if !(1..=CREATIVES_PER_CAMPAIGN_MAX).contains(&cpc) {
            return Err(GenError::CreativesPerCampaign(cpc));
        }
        let n = options.n_campaigns;
        Ok(Self {
            seed: options.seed,
            now_unix_s: options.now_unix_s,
            n_campaigns,
            creatives_per_campaign: cpc,
            n_apps: (n / 2).clamp(APPS_MIN, APPS_MAX),
            n_segments: (SEGMENTS_MIN + n / CAMPAIGNS_PER_EXTRA_SEGMENT).min(SEGMENTS_MAX),
            country_cumulative: country_cumulative_weights(),
        })
    }

    fn rng(&self, stream: Stream) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream as u64);
        rng
    }

    fn key(&self, domain: KeyDomain, index: u64) -> u64 {
        key(self.seed, domain, index)
    }
}

fn country_cumulative_weights() -> Vec<u32> {
    let mut total = 0;
    COUNTRY_CODES
        .iter()
        .map(|code| {
            total += MARKETS
                .iter()
                .find(|market| market.0 == *code)
                .map_or(LONG_TAIL_COUNTRY_WEIGHT, |market| market.1);
            total
        })
        .collect()
}

/// SplitMix64's finalizer: a good 64-bit mix, so `key` values look independent.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A pseudo-random number that depends only on the seed, a domain and an index: what lets
/// records agree on derived facts without the generator remembering them.
fn key(seed: u64, domain: KeyDomain, index: u64) -> u64 {
    mix64(seed ^ mix64(((domain as u64) << 56) ^ index))
}

/// Picks one of a few words from the key's bits starting at `shift`.
fn word(words: &[&'static str], key: u64, shift: u32) -> &'static str {
    words[((key >> shift) % words.len() as u64) as usize]
}

/// Writing to a `String` cannot fail.
fn put(out: &mut String, args: fmt::Arguments) {
    let _ = out.write_fmt(args);
}

fn put_capitalized(out: &mut String, word: &str) {
    let mut chars = word.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|entry| entry.1).sum();
    pick_at(table, rng.random_range(0..total))
}

/// The entry of a weighted table at `x` in `0..total weight`.
fn pick_at<T: Copy>(table: &[(T, u32)], mut x: u32) -> T {
    for &(item, weight) in table {
        if x < weight {
            return item;
        }
        x -= weight;
    }
    table[table.len() - 1].0
}

/// With probability `share`, a count drawn from `range`; otherwise 0.
fn sometimes(rng: &mut ChaCha8Rng, share: f64, range: RangeInclusive<usize>) -> usize {
    if rng.random_bool(share) {
        rng.random_range(range)
    } else {
        0
    }
}

/// With probability `share`, one of the lists in `table`; otherwise the empty list.
fn sometimes_pick<'a>(rng: &mut ChaCha8Rng, share: f64, table: &[(&'a [&'a str], u32)]) -> &'a [&'a str] {
    if rng.random_bool(share) {
        pick(rng, table)
    } else {
        &[]
    }
}

fn pick_one<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Fills `picks` with up to `n` distinct values from `draw`, settling for fewer when the values
/// keep repeating (tiny domains).
fn pick_distinct(picks: &mut Vec<usize>, n: usize, mut draw: impl FnMut() -> usize) {
    picks.clear();
    for _ in 0..n * DISTINCT_DRAW_ATTEMPTS {
        if picks.len() == n {
            break;
        }
        let value = draw();
        if !picks.contains(&value) {
            picks.push(value);
        }
    }
}

fn log_uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    let u: f64 = rng.random();
    (lo.ln() + u * (hi.ln() - lo.ln())).exp()
}

/// `median * e^(sigma * N(0, 1))`, clamped to `range`.
fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64, range: (f64, f64)) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    (median * (sigma * z).exp()).clamp(range.0, range.1)
}

/// Dollars to micros, rounded to a multiple of `step_micros` and at least one step.
fn micros(dollars: f64, step_micros: u64) -> u64 {
    let steps = (dollars * MICROS_PER_DOLLAR / step_micros as f64).round() as u64;
    steps.max(1) * step_micros
}

/// A heavy-tailed index in `0..n`: low indexes are the popular apps.
fn popular_index(rng: &mut ChaCha8Rng, n: u64) -> usize {
    let u: f64 = rng.random();
    ((u.powi(APP_POPULARITY_EXPONENT) * n as f64) as u64).min(n - 1) as usize
}

/// Makes `dst` hold `n` strings written by `write(i, string)`, reusing the strings it holds.
fn fill_strings(dst: &mut Vec<String>, n: usize, mut write: impl FnMut(usize, &mut String)) {
    dst.resize_with(n, String::new);
    for (i, s) in dst.iter_mut().enumerate() {
        s.clear();
        write(i, s);
    }
}

fn set_strings(dst: &mut Vec<String>, src: &[&str]) {
    fill_strings(dst, src.len(), |i, s| s.push_str(src[i]));
}

fn set_option_str(slot: &mut Option<String>, value: Option<&str>) {
    match value {
        Some(value) => {
            let s = slot.get_or_insert_with(String::new);
            s.clear();
            s.push_str(value);
        }
        None => *slot = None,
    }
}

fn put_rfc3339(out: &mut String, unix_s: i64) {
    let secs = unix_s.clamp(0, RFC3339_UNIX_S_MAX) as u64;
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    put(out, format_args!("{}", humantime::format_rfc3339_seconds(time)));
}

fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Android => "android",
        Platform::Ios => "ios",
    }
}

// ---------------------------------------------------------------------------------------------
// Segments, templates, experiments, manifest: small fixed-size files.

fn write_segments(world: &World, dir: &Path) -> Result<Written, GenError> {
    let mut rng = world.rng(Stream::Segments);
    let mut out = JsonLines::create(dir, files::SEGMENTS)?;
    let mut segment = Segment { id: 0, name: String::new() };
    for id in 1..=world.n_segments {
        segment.id = id as u32;
        segment.name.clear();
        let kind = pick_one(&mut rng, SEGMENT_KINDS);
        let window = pick_one(&mut rng, SEGMENT_WINDOWS);
        put(&mut segment.name, format_args!("{kind}_{window}_{id}"));
        out.line(&segment)?;
    }
    out.finish()
}

/// VAST 4 inline linear video with the end card (second asset) as a companion. Placeholders are
/// listed in `docs/catalog.md`; `{{duration_hms}}` is VAST's `HH:MM:SS` form of `{{duration}}`.
const VAST_BODY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.0" xmlns="http://www.iab.com/VAST">
  <Ad id="{{creative_id}}">
    <InLine>
      <AdSystem version="1">adsnap</AdSystem>
      <AdServingId>{{campaign_id}}-{{creative_id}}</AdServingId>
      <AdTitle>campaign {{campaign_id}}</AdTitle>
      <Impression id="adsnap"><![CDATA[{{impression_url}}]]></Impression>
      <Creatives>
        <Creative id="{{creative_id}}">
          <UniversalAdId idRegistry="adsnap">{{creative_id}}</UniversalAdId>
          <Linear>
            <Duration>{{duration_hms}}</Duration>
            <MediaFiles>
              <MediaFile delivery="progressive" type="{{mime}}"
                         width="{{width}}" height="{{height}}"><![CDATA[{{asset_url}}]]></MediaFile>
            </MediaFiles>
            <VideoClicks>
              <ClickThrough><![CDATA[{{click_url}}]]></ClickThrough>
            </VideoClicks>
          </Linear>
        </Creative>
        <Creative>
          <CompanionAds>
            <Companion width="{{width}}" height="{{height}}">
              <StaticResource creativeType="image/jpeg"><![CDATA[{{asset_url_2}}]]></StaticResource>
              <CompanionClickThrough><![CDATA[{{click_url}}]]></CompanionClickThrough>
            </Companion>
          </CompanionAds>
        </Creative>
      </Creatives>
      <Extensions>
        <Extension type="adsnap"><DurationSeconds>{{duration}}</DurationSeconds></Extension>
      </Extensions>
    </InLine>
  </Ad>
</VAST>
"#;

const HTML_BANNER_BODY: &str = r#"<!doctype html>
<html><head><meta name="viewport" content="width=device-width,initial-scale=1">
<style>html,body{margin:0;padding:0}img{display:block;width:100%;height:auto}</style></head>
<body><a href="{{click_url}}" target="_blank">
<img src="{{asset_url}}" width="{{width}}" height="{{height}}" alt=""></a>
<img src="{{impression_url}}" width="1" height="1" alt="" style="position:absolute;left:-9px">
</body></html>
"#;
const HTML_INTERSTITIAL_BODY: &str = r#"<!doctype html>
<html><head><meta name="viewport" content="width=device-width,initial-scale=1">
<style>html,body{margin:0;height:100%;background:#000}
a{display:flex;height:100%;align-items:center;justify-content:center}
img{max-width:100%;max-height:100%}</style></head>
<body><a href="{{click_url}}" target="_blank"><img src="{{asset_url}}" alt=""></a>
<img src="{{impression_url}}" width="1" height="1" alt="" style="position:absolute;left:-9px">
</body></html>
"#;
/// Playable and HTML5 creatives: the asset is a page of its own.
const HTML_IFRAME_BODY: &str = r#"<!doctype html>
<html><head><meta name="viewport" content="width=device-width,initial-scale=1">
<style>html,body,iframe{margin:0;border:0;width:100%;height:100%}</style></head>
<body><iframe src="{{asset_url}}" sandbox="allow-scripts" data-click="{{click_url}}"></iframe>
<img src="{{impression_url}}" width="1" height="1" alt="" style="position:absolute;left:-9px">
</body></html>
"#;
/// An OpenRTB Native 1.2 response: the icon is the first asset, the main image the second.
const NATIVE_BODY: &str = r#"{"native":{"ver":"1.2","assets":[
{"id":1,"required":1,"img":{"type":1,"url":"{{asset_url_1}}","w":128,"h":128}},
{"id":2,"required":1,"img":{"type":3,"url":"{{asset_url_2}}","w":{{width}},"h":{{height}}}},
{"id":3,"data":{"type":12,"value":"Install"}}],
"link":{"url":"{{click_url}}"},"imptrackers":["{{impression_url}}"]}}"#;

fn templates() -> [Template; 5] {
    let template = |id: &str, kind, body: &str| Template { id: id.to_owned(), kind, body: body.to_owned() };
    [
        template(TEMPLATE_VAST, MarkupKind::Vast, VAST_BODY),
        template(TEMPLATE_BANNER, MarkupKind::Html, HTML_BANNER_BODY),
        template(TEMPLATE_INTERSTITIAL, MarkupKind::Html, HTML_INTERSTITIAL_BODY),
        template(TEMPLATE_IFRAME, MarkupKind::Html, HTML_IFRAME_BODY),
        template(TEMPLATE_NATIVE, MarkupKind::NativeJson, NATIVE_BODY),
    ]
}

fn write_templates(dir: &Path) -> Result<Written, GenError> {
    let mut out = JsonLines::create(dir, files::TEMPLATES)?;
    for template in templates() {
        out.line(&template)?;
    }
    out.finish()
}

fn arm(id: u32, name: &str, weight_bp: u16, overrides: Overrides) -> Arm {
    Arm { id, name: name.to_owned(), weight_bp, overrides }
}

/// Three experiments taking 20%, 20% and 10% of production traffic.
fn experiments(world: &World) -> [Experiment; 3] {
    let experiment = |id: u32, name: &str, slot: u8, share_bp: u16, arms: Vec<Arm>| Experiment {
        id,
        name: name.to_owned(),
        slot,
        share_bp,
        salt: format!("{name}-{:08x}", world.key(KeyDomain::Salt, u64::from(id)) as u32),
        arms,
    };
    let bid = |m| Overrides { bid_multiplier: Some(m), ..Overrides::default() };
    let floor = |m| Overrides { floor_multiplier: Some(m), ..Overrides::default() };
    let scan = Overrides {
        candidates_scanned_max: Some(1_024),
        pacing_enabled: Some(false),
        ..Overrides::default()
    };
    [
        experiment(
            1,
            "bid_shading",
            0,
            2_000,
            vec![arm(1, "control", 5_000, Overrides::default()), arm(2, "bid_x0.90", 5_000, bid(0.9))],
        ),
        experiment(
            2,
            "floor_relax",
            1,
            2_000,
            vec![
                arm(3, "control", 3_400, Overrides::default()),
                arm(4, "floor_x0.80", 3_300, floor(0.8)),
                arm(5, "floor_x0.60", 3_300, floor(0.6)),
            ],
        ),
        experiment(
            3,
            "wide_scan",
            2,
            1_000,
            vec![arm(6, "control", 5_000, Overrides::default()), arm(7, "scan_1024_no_pacing", 5_000, scan)],
        ),
    ]
}

fn write_experiments(world: &World, dir: &Path) -> Result<Written, GenError> {
    let mut out = JsonLines::create(dir, files::EXPERIMENTS)?;
    for experiment in experiments(world) {
        out.line(&experiment)?;
    }
    out.finish()
}

fn write_manifest(world: &World, dir: &Path) -> Result<Written, GenError> {
    let manifest = Manifest {
        catalog_format_version: CATALOG_FORMAT_VERSION,
        name: format!("generated-{}-seed-{}", world.n_campaigns, world.seed),
        currency: "USD".to_owned(),
        default_rates: DEFAULT_RATES,
        staging_share_bp: STAGING_SHARE_BP,
        assignment_salt: format!("{:016x}", world.key(KeyDomain::Salt, 0)),
    };
    let (path, file) = create_file(dir, files::MANIFEST)?;
    let mut out = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, &manifest)
        .map_err(|source| GenError::Json { path: path.clone(), source })?;
    out.write_all(b"\n").map_err(io_error(&path))?;
    out.flush().map_err(io_error(&path))?;
    Ok(Written { records: 1, bytes: file_len(&path)? })
}

// ---------------------------------------------------------------------------------------------
// Publisher apps and their ad units.

fn app_platform(seed: u64, index: u64) -> Platform {
    if key(seed, KeyDomain::App, index) % 100 < ANDROID_APPS_PERCENT {
        Platform::Android
    } else {
        Platform::Ios
    }
}

/// A publisher app's bundle as exchanges send it: a package name on Android, the App Store id on
/// iOS. Both embed the index, which keeps them unique.
fn put_app_bundle(out: &mut String, seed: u64, index: u64) {
    let k = key(seed, KeyDomain::App, index);
    if app_platform(seed, index) == Platform::Ios {
        let store_id = IOS_APP_ID_MIN + index * IOS_APP_ID_STRIDE + (k >> 8) % IOS_APP_ID_STRIDE;
        put(out, format_args!("{store_id}"));
        return;
    }
    let studio = word(STUDIO_WORDS, k, 8);
    let suffix = word(STUDIO_SUFFIXES, k, 16);
    let [adjective, noun] = app_name_words(seed, index);
    put(out, format_args!("com.{studio}{suffix}.{adjective}{noun}{index}"));
}

/// A publisher app's category, a pure function of its index like its bundle and name.
fn app_category(seed: u64, index: u64) -> &'static str {
    let total: u32 = CATEGORIES.iter().map(|entry| entry.1).sum();
    let k = key(seed, KeyDomain::App, index);
    pick_at(CATEGORIES, ((k >> 40) % u64::from(total)) as u32)
}

fn title_words(category: &str) -> (&'static [&'static str], &'static [&'static str]) {
    if category == GAMES_CATEGORY {
        (GAME_ADJECTIVES, GAME_NOUNS)
    } else {
        (APP_ADJECTIVES, APP_NOUNS)
    }
}

/// Android bundles embed the app's name: `com.{studio}{suffix}.{adjective}{noun}{index}`.
fn app_name_words(seed: u64, index: u64) -> [&'static str; 2] {
    let k = key(seed, KeyDomain::App, index);
    let (adjectives, nouns) = title_words(app_category(seed, index));
    [word(adjectives, k, 24), word(nouns, k, 32)]
}

fn put_app_name(out: &mut String, seed: u64, index: u64) {
    let [adjective, noun] = app_name_words(seed, index);
    put_capitalized(out, adjective);
    out.push(' ');
    put_capitalized(out, noun);
}

fn write_apps(world: &World, dir: &Path) -> Result<(Written, Written), GenError> {
    let mut rng = world.rng(Stream::Apps);
    let mut apps = JsonLines::create(dir, files::APPS)?;
    let mut units = JsonLines::create(dir, files::AD_UNITS)?;
    let mut app = App {
        id: String::new(),
        bundle: String::new(),
        name: String::new(),
        platform: Platform::Android,
        iab_category: String::new(),
        coppa: false,
        blocked_domains: Vec::new(),
        blocked_categories: Vec::new(),
    };
    let mut unit = AdUnit {
        id: String::new(),
        app_id: String::new(),
        formats: Vec::new(),
        width: 0,
        height: 0,
        floor_cpm_micros: 0,
        blocked_domains: Vec::new(),
        blocked_categories: Vec::new(),
        blocked_attrs: Vec::new(),
    };
    for index in 0..world.n_apps {
        fill_app(&mut rng, world, index, &mut app);
        apps.line(&app)?;
        for k in 1..=pick(&mut rng, AD_UNITS_PER_APP) {
            fill_ad_unit(&mut rng, world, &app.id, k, &mut unit);
            units.line(&unit)?;
        }
    }
    Ok((apps.finish()?, units.finish()?))
}

fn fill_app(rng: &mut ChaCha8Rng, world: &World, index: u64, app: &mut App) {
    app.id.clear();
    put(&mut app.id, format_args!("app-{}", index + 1));
    app.bundle.clear();
    put_app_bundle(&mut app.bundle, world.seed, index);
    app.name.clear();
    put_app_name(&mut app.name, world.seed, index);
    app.platform = app_platform(world.seed, index);
    app.iab_category.clear();
    app.iab_category.push_str(app_category(world.seed, index));
    app.coppa = rng.random_bool(COPPA_APP_SHARE);
    fill_blocks(
        rng,
        world,
        APP_BLOCKED_DOMAINS_SHARE,
        APP_BLOCKED_CATEGORIES_SHARE,
        &mut app.blocked_domains,
        &mut app.blocked_categories,
    );
}

/// Blocked advertiser domains (competitors, usually) and sensitive categories.
fn fill_blocks(
    rng: &mut ChaCha8Rng,
    world: &World,
    domains_share: f64,
    categories_share: f64,
    domains: &mut Vec<String>,
    categories: &mut Vec<String>,
) {
    // Advertiser ids below this exist in practically every catalog of this size.
    let advertisers_likely = (u64::from(world.n_campaigns) / 20).max(1);
    let n_domains = sometimes(rng, domains_share, 1..=3);
    let mut ids = [0u64; 3];
    let mut n_ids = 0;
    for _ in 0..n_domains {
        let id = rng.random_range(1..=advertisers_likely);
        // Distinct ids give distinct domains: the id is part of the domain.
        if !ids[..n_ids].contains(&id) {
            ids[n_ids] = id;
            n_ids += 1;
        }
    }
    fill_strings(domains, n_ids, |i, s| put_advertiser_domain(s, world.seed, ids[i]));
    let n_categories = sometimes(rng, categories_share, 1..=2);
    let first = rng.random_range(0..SENSITIVE_CATEGORIES.len());
    fill_strings(categories, n_categories, |i, s| {
        s.push_str(SENSITIVE_CATEGORIES[(first + i) % SENSITIVE_CATEGORIES.len()]);
    });
}

fn fill_ad_unit(rng: &mut ChaCha8Rng, world: &World, app_id: &str, k: u32, unit: &mut AdUnit) {
    let shape = pick(rng, UNIT_SHAPES);
    unit.id.clear();
    put(&mut unit.id, format_args!("{app_id}-{}-{k}", shape.name));
    unit.app_id.clear();
    unit.app_id.push_str(app_id);
    unit.formats.clear();
    unit.formats.extend_from_slice(shape.formats);
    unit.width = shape.width;
    unit.height = shape.height;
    unit.floor_cpm_micros = if rng.random_bool(FREE_FLOOR_SHARE) {
        0
    } else {
        micros(log_uniform(rng, shape.floor_dollars), CENT_MICROS)
    };
    fill_blocks(
        rng,
        world,
        AD_UNIT_BLOCKS_SHARE,
        AD_UNIT_BLOCKS_SHARE,
        &mut unit.blocked_domains,
        &mut unit.blocked_categories,
    );
    // A reward is for watching to the end: rewarded placements take no ad with a skip button.
    unit.blocked_attrs.clear();
    if shape.formats.contains(&Format::RewardedVideo) {
        unit.blocked_attrs.push(ATTR_SKIP_BUTTON);
    }
}

// ---------------------------------------------------------------------------------------------
// Advertisers, campaigns, creatives and predicted rates, written in one streaming pass.

/// The words of an advertiser's name and domain: two studio words, a suffix and a top-level
/// domain, e.g. `lunarfoxgames42.com` for advertiser 42.
fn advertiser_domain_parts(seed: u64, id: u64) -> [&'static str; 4] {
    let k = key(seed, KeyDomain::Advertiser, id);
    [word(STUDIO_WORDS, k, 8), word(STUDIO_WORDS, k, 16), word(STUDIO_SUFFIXES, k, 24), word(TLDS, k, 32)]
}

fn put_advertiser_domain(out: &mut String, seed: u64, id: u64) {
    let [first, second, suffix, tld] = advertiser_domain_parts(seed, id);
    put(out, format_args!("{first}{second}{suffix}{id}.{tld}"));
}

/// What the current advertiser's next campaigns need to know about it.
struct AdvertiserState {
    id: u32,
    campaigns_left: u64,
    n_titles: u64,
    category: &'static str,
}

/// Campaigns per advertiser: heavy-tailed, at most `cap`.
fn advertiser_campaigns(rng: &mut ChaCha8Rng, cap: u64) -> u64 {
    if rng.random_bool(SINGLE_CAMPAIGN_ADVERTISER_SHARE) {
        return 1;
    }
    // Inverse-transform Pareto draw; 1 - u lies in (0, 1], so the power is finite.
    let u: f64 = rng.random();
    let draw = ADVERTISER_CAMPAIGNS_SCALE * (1.0 - u).powf(-1.0 / ADVERTISER_CAMPAIGNS_TAIL_INDEX);
    (draw.min(cap as f64) as u64).clamp(1, cap)
}

struct CampaignGen<'w> {
    world: &'w World,
    rng: ChaCha8Rng,
    advertisers: JsonLines,
    campaigns: JsonLines,
    creatives: JsonLines,
    rates: RatesCsv,
    advertiser: AdvertiserState,
    next_creative_id: u32,
    // Records reused for every line, so their strings are allocated once.
    advertiser_record: Advertiser,
    campaign: Campaign,
    creative: Creative,
    rate: PredictedRate,
    picks: Vec<usize>,
}

impl<'w> CampaignGen<'w> {
    fn new(world: &'w World, dir: &Path) -> Result<Self, GenError> {
        Ok(Self {
            world,
            rng: world.rng(Stream::Campaigns),
            advertisers: JsonLines::create(dir, files::ADVERTISERS)?,
            campaigns: JsonLines::create(dir, files::CAMPAIGNS)?,
            creatives: JsonLines::create(dir, files::CREATIVES)?,
            rates: RatesCsv::create(dir)?,
            advertiser: AdvertiserState { id: 0, campaigns_left: 0, n_titles: 1, category: GAMES_CATEGORY },
            next_creative_id: 1,
            advertiser_record: Advertiser {
                id: 0,
                name: String::new(),
                domain: String::new(),
                iab_category: String::new(),
            },
            campaign: empty_campaign(),
            creative: empty_creative(),
            rate: PredictedRate {
                campaign_id: 0,
                country: String::new(),
                os: String::new(),
                ctr: 0.0,
                cvr: 0.0,
            },
            picks: Vec::new(),
        })
    }

    fn run(&mut self, progress: &dyn Fn(u64)) -> Result<(), GenError> {
        let n = self.world.n_campaigns;
        for id in 1..=n {
            if self.advertiser.campaigns_left == 0 {
                self.start_advertiser(u64::from(n - id + 1))?;
            }
            self.advertiser.campaigns_left -= 1;
            fill_campaign(
                &mut self.rng,
                self.world,
                &self.advertiser,
                id,
                &mut self.campaign,
                &mut self.picks,
            );
            self.campaigns.line(&self.campaign)?;
            self.write_creatives()?;
            self.write_rates()?;
            if id % PROGRESS_EVERY_CAMPAIGNS == 0 {
                progress(u64::from(id));
            }
        }
        progress(u64::from(n));
        Ok(())
    }

    fn finish(self) -> Result<[Written; 4], GenError> {
        Ok([
            self.advertisers.finish()?,
            self.campaigns.finish()?,
            self.creatives.finish()?,
            self.rates.finish()?,
        ])
    }

    /// Opens the next advertiser, writing its record, when the current one has no campaigns left.
    fn start_advertiser(&mut self, campaigns_remaining: u64) -> Result<(), GenError> {
        let cap = (u64::from(self.world.n_campaigns) / ADVERTISER_CAMPAIGN_SHARE_DIVISOR).max(1);
        let campaigns = advertiser_campaigns(&mut self.rng, cap).min(campaigns_remaining);
        let category = pick(&mut self.rng, CATEGORIES);
        let id = self.advertiser.id + 1;
        self.advertiser = AdvertiserState {
            id,
            campaigns_left: campaigns,
            n_titles: (1 + campaigns / CAMPAIGNS_PER_TITLE).min(TITLES_PER_ADVERTISER_MAX),
            category,
        };
        let record = &mut self.advertiser_record;
        record.id = id;
        let [first, second, suffix, _] = advertiser_domain_parts(self.world.seed, id.into());
        record.name.clear();
        for (i, part) in [first, second, suffix].into_iter().enumerate() {
            if i > 0 {
                record.name.push(' ');
            }
            put_capitalized(&mut record.name, part);
        }
        record.domain.clear();
        put_advertiser_domain(&mut record.domain, self.world.seed, id.into());
        record.iab_category.clear();
        record.iab_category.push_str(category);
        self.advertisers.line(&self.advertiser_record)
    }

    fn write_creatives(&mut self) -> Result<(), GenError> {
        for _ in 0..self.world.creatives_per_campaign {
            let id = self.next_creative_id;
            self.next_creative_id += 1;
            fill_creative(&mut self.rng, &self.campaign, id, &mut self.creative);
            self.creatives.line(&self.creative)?;
        }
        Ok(())
    }

    /// A worldwide row for every campaign, then rows for some of its markets.
    fn write_rates(&mut self) -> Result<(), GenError> {
        let ctr = log_normal(&mut self.rng, CTR_MEDIAN, CTR_SIGMA, CTR_RANGE);
        let cvr = log_normal(&mut self.rng, CVR_MEDIAN, CVR_SIGMA, CVR_RANGE);
        let campaign = &self.campaign;
        let os = platform_name(campaign.app.platform);
        self.rate.campaign_id = campaign.id;
        set_rate(&mut self.rate, "*", "*", ctr, cvr);
        self.rates.row(&self.rate)?;
        let countries = &campaign.targeting.countries;
        if countries.is_empty() {
            let n = sometimes(&mut self.rng, COUNTRY_RATE_SHARE, 1..=3);
            let rng = &mut self.rng;
            pick_distinct(&mut self.picks, n, || rng.random_range(0..TOP_MARKETS));
        } else {
            let rng = &mut self.rng;
            self.picks.clear();
            self.picks.extend((0..countries.len()).filter(|_| rng.random_bool(COUNTRY_RATE_SHARE)));
        }
        for i in 0..self.picks.len() {
            let country = if countries.is_empty() {
                MARKETS[self.picks[i]].0
            } else {
                countries[self.picks[i]].as_str()
            };
            let factors = COUNTRY_RATE_FACTOR_RANGE;
            let ctr_factor = log_normal(&mut self.rng, 1.0, COUNTRY_RATE_SIGMA, factors);
            let cvr_factor = log_normal(&mut self.rng, 1.0, COUNTRY_RATE_SIGMA, factors);
            let ctr = (ctr * ctr_factor).clamp(CTR_RANGE.0, CTR_RANGE.1);
            let cvr = (cvr * cvr_factor).clamp(CVR_RANGE.0, CVR_RANGE.1);
            set_rate(&mut self.rate, country, os, ctr, cvr);
            self.rates.row(&self.rate)?;
        }
        Ok(())
    }
}

fn round_rate(rate: f64) -> f64 {
    (rate * RATE_SCALE).round() / RATE_SCALE
}

fn set_rate(rate: &mut PredictedRate, country: &str, os: &str, ctr: f64, cvr: f64) {
    rate.country.clear();
    rate.country.push_str(country);
    rate.os.clear();
    rate.os.push_str(os);
    rate.ctr = round_rate(ctr);
    rate.cvr = round_rate(cvr);
}

fn empty_campaign() -> Campaign {
    Campaign {
        id: 0,
        advertiser_id: 0,
        name: String::new(),
        status: CampaignStatus::Active,
        app: PromotedApp { bundle: String::new(), store_url: String::new(), platform: Platform::Android },
        bid: Bid { bid_type: BidType::Cpi, amount_micros: 0 },
        budget: Budget { daily_micros: 0, total_micros: 0, spent_micros: 0 },
        schedule: Schedule { start: String::new(), end: String::new() },
        targeting: Targeting::default(),
        frequency_cap: None,
    }
}

fn empty_creative() -> Creative {
    Creative {
        id: 0,
        campaign_id: 0,
        format: Format::Banner,
        width: 0,
        height: 0,
        mime: String::new(),
        assets: Vec::new(),
        video_duration_s: None,
        template: None,
        markup: None,
        attrs: Vec::new(),
    }
}

/// How much a market's users are worth: 1 (US, JP, KR), 2 (other rich markets, or worldwide)
/// or 3.
fn market_tier(countries: &[String]) -> usize {
    let any_of = |markets: &[&str]| countries.iter().any(|c| markets.contains(&c.as_str()));
    if any_of(TIER_ONE_MARKETS) {
        1
    } else if countries.is_empty() || any_of(TIER_TWO_MARKETS) {
        2
    } else {
        3
    }
}

/// Bid ranges in dollars by type, for tiers 1, 2 and 3.
fn bid_range_dollars(bid_type: BidType, tier: usize) -> (f64, f64) {
    let ranges = match bid_type {
        BidType::Cpi => [(2.0, 8.0), (1.0, 5.0), (0.5, 2.0)],
        BidType::Cpc => [(0.2, 1.0), (0.1, 0.6), (0.05, 0.3)],
        BidType::Cpm => [(5.0, 20.0), (2.0, 12.0), (0.5, 5.0)],
    };
    ranges[tier - 1]
}

fn fill_campaign(
    rng: &mut ChaCha8Rng,
    world: &World,
    advertiser: &AdvertiserState,
    id: u32,
    c: &mut Campaign,
    picks: &mut Vec<usize>,
) {
    c.id = id;
    c.advertiser_id = advertiser.id;
    c.status = pick(rng, STATUSES);
    fill_countries(rng, world, &mut c.targeting.countries, picks);
    let us = c.targeting.countries.iter().any(|country| country == "US");
    let android_share = if us { ANDROID_SHARE_US_CAMPAIGNS } else { ANDROID_SHARE_OTHER_CAMPAIGNS };
    let platform = if rng.random_bool(android_share) { Platform::Android } else { Platform::Ios };
    let title = fill_promoted_app(rng, world, advertiser, platform, &mut c.app);
    let bid_type = pick(rng, BID_TYPES);
    let range = bid_range_dollars(bid_type, market_tier(&c.targeting.countries));
    c.bid = Bid { bid_type, amount_micros: micros(log_uniform(rng, range), CENT_MICROS) };
    let (start_s, end_s) = pick_schedule(rng, world.now_unix_s);
    c.schedule.start.clear();
    put_rfc3339(&mut c.schedule.start, start_s);
    c.schedule.end.clear();
    put_rfc3339(&mut c.schedule.end, end_s);
    c.budget = pick_budget(rng, world.now_unix_s, start_s, end_s);
    fill_targeting(rng, world, platform, &mut c.targeting, picks);
    c.frequency_cap = rng.random_bool(FREQUENCY_CAP_SHARE).then(|| FrequencyCap {
        impressions: *pick_one(rng, FREQUENCY_CAP_IMPRESSIONS),
        period_s: *pick_one(rng, FREQUENCY_CAP_PERIODS_S),
    });
    fill_campaign_name(&mut c.name, title, &c.targeting.countries, bid_type, platform);
}

/// Worldwide (empty) for some campaigns, else one to five distinct countries, mostly the top ten.
fn fill_countries(rng: &mut ChaCha8Rng, world: &World, countries: &mut Vec<String>, picks: &mut Vec<usize>) {
    let n = if rng.random_bool(WORLDWIDE_CAMPAIGN_SHARE) { 0 } else { pick(rng, COUNTRIES_PER_CAMPAIGN) };
    let cumulative = &world.country_cumulative;
    let total = cumulative[cumulative.len() - 1];
    pick_distinct(picks, n, || {
        let x = rng.random_range(0..total);
        cumulative.partition_point(|&sum| sum <= x)
    });
    fill_strings(countries, picks.len(), |i, s| s.push_str(COUNTRY_CODES[picks[i]]));
}

/// Fills the promoted app from one of the advertiser's titles; returns the title's two words.
fn fill_promoted_app(
    rng: &mut ChaCha8Rng,
    world: &World,
    advertiser: &AdvertiserState,
    platform: Platform,
    app: &mut PromotedApp,
) -> [&'static str; 2] {
    let title_index =
        u64::from(advertiser.id) * TITLES_PER_ADVERTISER_MAX + rng.random_range(0..advertiser.n_titles);
    let k = world.key(KeyDomain::Title, title_index);
    let (adjectives, nouns) = title_words(advertiser.category);
    let title = [word(adjectives, k, 8), word(nouns, k, 16)];
    app.platform = platform;
    app.bundle.clear();
    app.store_url.clear();
    match platform {
        Platform::Android => {
            let [first, second, suffix, tld] = advertiser_domain_parts(world.seed, advertiser.id.into());
            let [adjective, noun] = title;
            let id = advertiser.id;
            put(&mut app.bundle, format_args!("{tld}.{first}{second}{suffix}{id}.{adjective}{noun}"));
            put(&mut app.store_url, format_args!("{PLAY_STORE_URL}{}", app.bundle));
        }
        Platform::Ios => {
            let store_id = IOS_APP_ID_MIN + world.key(KeyDomain::StoreId, title_index) % IOS_APP_IDS;
            put(&mut app.bundle, format_args!("{store_id}"));
            put(&mut app.store_url, format_args!("{APP_STORE_URL}{store_id}"));
        }
    }
    title
}

/// Mostly running at `now_s`; some ended, some not started yet. Times fall on whole hours.
fn pick_schedule(rng: &mut ChaCha8Rng, now_s: i64) -> (i64, i64) {
    let hour = now_s - now_s.rem_euclid(HOUR_S);
    let percentile = rng.random_range(0..100u32);
    let mut hours = |days_lo: i64, days_hi: i64| rng.random_range(days_lo * 24..=days_hi * 24) * HOUR_S;
    match percentile {
        // Running: three campaigns in four.
        0..=74 => (hour - hours(1, 120), hour + hours(1, 180)),
        // Ended.
        75..=89 => {
            let end = hour - hours(1, 60);
            (end - hours(7, 90), end)
        }
        // Not started yet.
        _ => {
            let start = hour + hours(1, 30);
            (start, start + hours(14, 120))
        }
    }
}

/// Daily and total budgets, and spend so far: proportional to the schedule's elapsed share,
/// with some campaigns having exhausted their budget (or overspent it slightly, as pacing does).
fn pick_budget(rng: &mut ChaCha8Rng, now_s: i64, start_s: i64, end_s: i64) -> Budget {
    let daily = micros(log_uniform(rng, (DAILY_BUDGET_DOLLARS_MIN, DAILY_BUDGET_DOLLARS_MAX)), DOLLAR_MICROS);
    let total = daily * rng.random_range(BUDGET_DAYS_MIN..=BUDGET_DAYS_MAX);
    let elapsed = ((now_s - start_s) as f64 / (end_s - start_s) as f64).clamp(0.0, 1.0);
    let spent = if now_s <= start_s {
        0
    } else if rng.random_bool(EXHAUSTED_BUDGET_SHARE) {
        total + rng.random_range(0..=daily / 100)
    } else {
        let pace: f64 = rng.random_range(0.5..1.0);
        (total as f64 * elapsed * pace) as u64 / CENT_MICROS * CENT_MICROS
    };
    Budget { daily_micros: daily, total_micros: total, spent_micros: spent }
}

/// Targeting beyond countries: each restriction is used by a minority of campaigns.
fn fill_targeting(
    rng: &mut ChaCha8Rng,
    world: &World,
    platform: Platform,
    t: &mut Targeting,
    picks: &mut Vec<usize>,
) {
    t.os = rng.random_bool(OS_TARGETED_SHARE).then_some(platform);
    let versions = if platform == Platform::Android { ANDROID_VERSIONS } else { IOS_VERSIONS };
    let min_os_version = rng.random_bool(MIN_OS_VERSION_SHARE).then(|| *pick_one(rng, versions));
    set_option_str(&mut t.min_os_version, min_os_version);
    let devices = sometimes_pick(rng, DEVICE_TYPES_SHARE, DEVICE_TYPE_SETS);
    set_strings(&mut t.device_types, devices);
    let connections = sometimes_pick(rng, CONNECTION_TYPES_SHARE, CONNECTION_TYPE_SETS);
    set_strings(&mut t.connection_types, connections);
    fill_languages(rng, &t.countries, &mut t.languages);
    fill_app_lists(rng, world, platform, t, picks);
    let categories: &[&str] = if rng.random_bool(APP_CATEGORIES_SHARE) { &[GAMES_CATEGORY] } else { &[] };
    set_strings(&mut t.app_categories, categories);
    fill_segments(rng, world, t, picks);
}

/// The main language of the first targeted market, plus English where that differs.
fn fill_languages(rng: &mut ChaCha8Rng, countries: &[String], languages: &mut Vec<String>) {
    if !rng.random_bool(LANGUAGES_SHARE) {
        languages.clear();
        return;
    }
    let first = countries.first().map_or("US", String::as_str);
    let main = MARKETS.iter().find(|m| m.0 == first).map_or("en", |m| m.2);
    let with_english = main != "en" && rng.random_bool(0.5);
    if with_english {
        set_strings(languages, &[main, "en"]);
    } else {
        set_strings(languages, &[main]);
    }
}

/// An allow list or a block list (never both) of popular same-platform publisher apps.
fn fill_app_lists(
    rng: &mut ChaCha8Rng,
    world: &World,
    platform: Platform,
    t: &mut Targeting,
    picks: &mut Vec<usize>,
) {
    let roll: f64 = rng.random();
    let (n, allow) = if roll < APPS_ALLOW_SHARE {
        (rng.random_range(2..=10), true)
    } else if roll < APPS_ALLOW_SHARE + APPS_BLOCK_SHARE {
        (rng.random_range(1..=8), false)
    } else {
        (0, false)
    };
    pick_distinct(picks, n, || popular_index(rng, world.n_apps));
    picks.retain(|&index| app_platform(world.seed, index as u64) == platform);
    let (list, other) =
        if allow { (&mut t.apps_allow, &mut t.apps_block) } else { (&mut t.apps_block, &mut t.apps_allow) };
    fill_strings(list, picks.len(), |i, s| put_app_bundle(s, world.seed, picks[i] as u64));
    other.clear();
}

/// Included and excluded audience segments, distinct from each other.
fn fill_segments(rng: &mut ChaCha8Rng, world: &World, t: &mut Targeting, picks: &mut Vec<usize>) {
    let n_include = sometimes(rng, SEGMENTS_INCLUDE_SHARE, 1..=2);
    let n_exclude = usize::from(rng.random_bool(SEGMENTS_EXCLUDE_SHARE));
    let n_segments = world.n_segments as usize;
    pick_distinct(picks, n_include + n_exclude, || rng.random_range(1..=n_segments));
    let n_include = n_include.min(picks.len());
    t.segments_include.clear();
    t.segments_include.extend(picks[..n_include].iter().map(|&id| id as u32));
    t.segments_exclude.clear();
    t.segments_exclude.extend(picks[n_include..].iter().map(|&id| id as u32));
}

/// E.g. `Merge Kingdom | US+2 | CPI | iOS`.
fn fill_campaign_name(
    name: &mut String,
    title: [&str; 2],
    countries: &[String],
    bid_type: BidType,
    platform: Platform,
) {
    name.clear();
    put_capitalized(name, title[0]);
    name.push(' ');
    put_capitalized(name, title[1]);
    match countries {
        [] => name.push_str(" | WW"),
        [only] => put(name, format_args!(" | {only}")),
        [first, rest @ ..] => put(name, format_args!(" | {first}+{}", rest.len())),
    }
    name.push_str(match bid_type {
        BidType::Cpi => " | CPI",
        BidType::Cpc => " | CPC",
        BidType::Cpm => " | CPM",
    });
    name.push_str(match platform {
        Platform::Android => " | Android",
        Platform::Ios => " | iOS",
    });
}

fn fill_creative(rng: &mut ChaCha8Rng, campaign: &Campaign, id: u32, cr: &mut Creative) {
    let shape = pick(rng, SHAPES);
    cr.id = id;
    cr.campaign_id = campaign.id;
    cr.format = shape.format;
    cr.width = shape.width;
    cr.height = shape.height;
    cr.mime.clear();
    cr.mime.push_str(shape.mime);
    let advertiser_id = campaign.advertiser_id;
    fill_strings(&mut cr.assets, shape.files.len(), |i, s| {
        put(s, format_args!("{CDN_URL}/{advertiser_id}/{id}/{}", shape.files[i]));
    });
    cr.attrs.clear();
    if shape.files == PLAYABLE {
        cr.attrs.push(ATTR_USER_INTERACTIVE);
    }
    let video = shape.mime.starts_with("video/");
    cr.video_duration_s = video.then(|| rng.random_range(VIDEO_DURATION_S_MIN..=VIDEO_DURATION_S_MAX));
    if rng.random_bool(INLINE_MARKUP_SHARE) {
        cr.template = None;
        let markup = cr.markup.get_or_insert_with(String::new);
        markup.clear();
        put_inline_markup(markup, &shape, id, &cr.assets[0], cr.video_duration_s.unwrap_or(0));
    } else {
        cr.markup = None;
        set_option_str(&mut cr.template, Some(shape.template));
    }
}

/// Markup of the same kind the shape's template would produce, written out in full as a
/// third-party ad server's tag would be.
fn put_inline_markup(out: &mut String, shape: &Shape, id: u32, asset: &str, duration_s: u16) {
    let (w, h) = (shape.width, shape.height);
    if shape.mime.starts_with("video/") {
        put_inline_vast(out, shape, id, asset, duration_s);
    } else if shape.format == Format::Native {
        out.push_str(r#"{"native":{"ver":"1.2","assets":[{"id":1,"img":{"type":1,"url":""#);
        put(out, format_args!(r#"{asset}"}}}}],"link":{{"url":"{CLICK_URL}?cr={id}"}}}}}}"#));
    } else if shape.mime == "text/html" {
        let frame = format_args!(r#"<iframe src="{asset}" width="{w}" height="{h}"></iframe>"#);
        put(out, format_args!("{frame}"));
    } else {
        let img = format_args!(r#"<img src="{asset}" width="{w}" height="{h}" alt="">"#);
        put(out, format_args!(r#"<a href="{CLICK_URL}?cr={id}" target="_blank">{img}</a>"#));
    }
}

fn put_inline_vast(out: &mut String, shape: &Shape, id: u32, asset: &str, duration_s: u16) {
    let (mime, w, h) = (shape.mime, shape.width, shape.height);
    out.push_str(r#"<VAST version="4.0"><Ad><InLine><AdSystem>adsnap</AdSystem>"#);
    put(out, format_args!("<AdTitle>creative {id}</AdTitle><Creatives><Creative><Linear>"));
    put(out, format_args!("<Duration>00:00:{duration_s:02}</Duration><MediaFiles>"));
    put(out, format_args!(r#"<MediaFile delivery="progressive" type="{mime}" "#));
    put(out, format_args!(r#"width="{w}" height="{h}"><![CDATA[{asset}]]></MediaFile>"#));
    out.push_str("</MediaFiles><VideoClicks><ClickThrough><![CDATA[");
    put(out, format_args!("{CLICK_URL}?cr={id}]]></ClickThrough></VideoClicks></Linear>"));
    out.push_str("</Creative></Creatives></InLine></Ad></VAST>");
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use adsnap_snapshot::{is_country_code, is_language_code, pack_os_version, ConnectionType, DeviceType};
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;

    use super::*;

    fn options(n_campaigns: u64, seed: u64, creatives_per_campaign: u32) -> GenOptions {
        GenOptions { n_campaigns, seed, creatives_per_campaign, ..GenOptions::default() }
    }

    fn generate_temp(options: &GenOptions) -> (tempfile::TempDir, GenSummary) {
        let dir = tempfile::tempdir().expect("temp dir");
        let summary = generate(options, dir.path(), &|_| {}).expect("generate");
        (dir, summary)
    }

    /// Everything in a generated folder, parsed into the catalog types.
    struct Loaded {
        manifest: Manifest,
        advertisers: Vec<Advertiser>,
        segments: Vec<Segment>,
        templates: Vec<Template>,
        apps: Vec<App>,
        ad_units: Vec<AdUnit>,
        campaigns: Vec<Campaign>,
        creatives: Vec<Creative>,
        rates: Vec<PredictedRate>,
        experiments: Vec<Experiment>,
    }

    fn read_jsonl<T: DeserializeOwned>(dir: &Path, name: &str) -> Vec<T> {
        let text = fs::read_to_string(dir.join(name)).expect("read");
        assert!(text.ends_with('\n'), "{name} ends with a newline");
        let parse = |(i, line): (usize, &str)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", i + 1))
        };
        text.lines().enumerate().map(parse).collect()
    }

    fn read_rates(dir: &Path) -> Vec<PredictedRate> {
        let mut reader = csv::Reader::from_path(dir.join(files::PREDICTED_RATES)).expect("open");
        let header = reader.headers().expect("header").clone();
        assert_eq!(header.iter().collect::<Vec<_>>(), ["campaign_id", "country", "os", "ctr", "cvr"]);
        reader.deserialize().map(|row| row.expect("rate row")).collect()
    }

    fn load(dir: &Path) -> Loaded {
        let manifest = fs::read_to_string(dir.join(files::MANIFEST)).expect("manifest");
        Loaded {
            manifest: serde_json::from_str(&manifest).expect("manifest parses"),
            advertisers: read_jsonl(dir, files::ADVERTISERS),
            segments: read_jsonl(dir, files::SEGMENTS),
            templates: read_jsonl(dir, files::TEMPLATES),
            apps: read_jsonl(dir, files::APPS),
            ad_units: read_jsonl(dir, files::AD_UNITS),
            campaigns: read_jsonl(dir, files::CAMPAIGNS),
            creatives: read_jsonl(dir, files::CREATIVES),
            rates: read_rates(dir),
            experiments: read_jsonl(dir, files::EXPERIMENTS),
        }
    }

    /// `^IAB[0-9]{1,2}(-[0-9]{1,3})?$`
    fn is_iab(s: &str) -> bool {
        let digits =
            |t: &str, max: usize| (1..=max).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
        match s.strip_prefix("IAB").map(|rest| rest.split_once('-')) {
            Some(Some((main, sub))) => digits(main, 2) && digits(sub, 3),
            Some(None) => digits(&s[3..], 2),
            None => false,
        }
    }

    fn is_domain(s: &str) -> bool {
        s.contains('.')
            && s.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    }

    fn is_url(s: &str) -> bool {
        (s.starts_with("https://") || s.starts_with("http://")) && !s.contains(char::is_whitespace)
    }

    fn all_unique<T: Eq + std::hash::Hash>(items: impl IntoIterator<Item = T>) -> bool {
        let mut seen = HashSet::new();
        items.into_iter().all(|item| seen.insert(item))
    }

    fn check_manifest_and_small_files(c: &Loaded) {
        let m = &c.manifest;
        assert_eq!(m.catalog_format_version, 1);
        assert!(!m.name.is_empty() && !m.assignment_salt.is_empty());
        assert_eq!((m.currency.as_str(), m.staging_share_bp), ("USD", 500));
        assert!(m.default_rates.ctr > 0.0 && m.default_rates.ctr <= 1.0);
        assert!((0.0..=1.0).contains(&m.default_rates.cvr));
        assert!(c.segments.iter().all(|s| s.id > 0 && !s.name.is_empty()));
        assert!(all_unique(c.segments.iter().map(|s| s.id)));
        assert!(all_unique(c.templates.iter().map(|t| &t.id)));
        for t in &c.templates {
            assert!(!t.id.is_empty() && t.id.len() <= 128);
            assert!(!t.body.is_empty() && t.body.len() <= 64 << 10);
        }
        for a in &c.advertisers {
            assert!(a.id > 0 && !a.name.is_empty(), "{a:?}");
            assert!(is_domain(&a.domain) && is_iab(&a.iab_category), "{a:?}");
        }
        assert!(all_unique(c.advertisers.iter().map(|a| a.id)));
    }

    fn check_publishers(c: &Loaded) {
        assert!(all_unique(c.apps.iter().map(|a| &a.id)));
        assert!(all_unique(c.apps.iter().map(|a| &a.bundle)));
        let app_ids: HashSet<&str> = c.apps.iter().map(|a| a.id.as_str()).collect();
        for app in &c.apps {
            assert!(!app.id.is_empty() && app.id.len() <= 128 && is_iab(&app.iab_category));
            assert!(app.blocked_domains.iter().all(|d| is_domain(d)), "{app:?}");
            assert!(app.blocked_categories.iter().all(|cat| is_iab(cat)), "{app:?}");
        }
        assert!(all_unique(c.ad_units.iter().map(|u| &u.id)));
        for unit in &c.ad_units {
            assert!(app_ids.contains(unit.app_id.as_str()) && unit.id.len() <= 128);
            assert!(!unit.formats.is_empty() && all_unique(&unit.formats), "{unit:?}");
            if unit.formats.contains(&Format::Banner) {
                assert!(unit.width > 0 && unit.height > 0, "{unit:?}");
            }
            assert!(unit.blocked_domains.iter().all(|d| is_domain(d)));
            assert!(unit.blocked_categories.iter().all(|cat| is_iab(cat)));
        }
    }

    fn check_campaign(c: &Campaign, advertisers: &HashSet<u32>) {
        assert!(advertisers.contains(&c.advertiser_id), "{c:?}");
        let url = &c.app.store_url;
        match c.app.platform {
            Platform::Android => {
                assert_eq!(*url, format!("https://play.google.com/store/apps/details?id={}", c.app.bundle))
            }
            Platform::Ios => {
                let digits = url.strip_prefix("https://apps.apple.com/app/id").expect(url);
                assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
                assert_eq!(digits, c.app.bundle, "iOS bundles are App Store ids");
            }
        }
        assert!((1..=1_000_000_000_000).contains(&c.bid.amount_micros), "{c:?}");
        let b = &c.budget;
        assert!(b.total_micros > 0 && b.daily_micros > 0 && b.daily_micros <= b.total_micros);
        let start = humantime::parse_rfc3339(&c.schedule.start).expect("start");
        let end = humantime::parse_rfc3339(&c.schedule.end).expect("end");
        assert!(c.schedule.start.ends_with('Z') && end > start, "{:?}", c.schedule);
        if let Some(cap) = &c.frequency_cap {
            assert!(cap.impressions > 0 && (1..=2_592_000).contains(&cap.period_s));
        }
    }

    fn check_targeting(c: &Campaign, bundles: &HashSet<&str>, segments: &HashSet<u32>) {
        let t = &c.targeting;
        assert!(t.countries.iter().all(|code| is_country_code(code)), "{t:?}");
        assert!(all_unique(&t.countries) && all_unique(&t.languages), "{t:?}");
        assert!(t.os.is_none_or(|os| os == c.app.platform), "{c:?}");
        let version_ok = |v: &String| v.contains('.') && pack_os_version(v).is_some();
        assert!(t.min_os_version.as_ref().is_none_or(version_ok), "{t:?}");
        assert!(t.device_types.iter().all(|d| DeviceType::from_name(d).is_some()));
        assert!(t.connection_types.iter().all(|d| ConnectionType::from_name(d).is_some()));
        assert!(t.languages.iter().all(|l| is_language_code(l)), "{t:?}");
        let listed = t.apps_allow.iter().chain(&t.apps_block);
        assert!(all_unique(listed.clone()), "{t:?}");
        assert!(listed.into_iter().all(|b| bundles.contains(b.as_str())), "{t:?}");
        assert!(t.app_categories.iter().all(|cat| is_iab(cat)));
        let segment_ids = t.segments_include.iter().chain(&t.segments_exclude);
        assert!(all_unique(segment_ids.clone()), "{t:?}");
        assert!(segment_ids.into_iter().all(|id| segments.contains(id)), "{t:?}");
    }

    fn check_campaigns(c: &Loaded) {
        assert!(all_unique(c.campaigns.iter().map(|c| c.id)));
        let advertisers: HashSet<u32> = c.advertisers.iter().map(|a| a.id).collect();
        let bundles: HashSet<&str> = c.apps.iter().map(|a| a.bundle.as_str()).collect();
        let segments: HashSet<u32> = c.segments.iter().map(|s| s.id).collect();
        for campaign in &c.campaigns {
            assert!(campaign.id > 0);
            check_campaign(campaign, &advertisers);
            check_targeting(campaign, &bundles, &segments);
        }
    }

    fn check_creatives(c: &Loaded) {
        assert!(all_unique(c.creatives.iter().map(|cr| cr.id)));
        let campaigns: HashSet<u32> = c.campaigns.iter().map(|c| c.id).collect();
        let kinds: HashMap<&str, MarkupKind> = c.templates.iter().map(|t| (t.id.as_str(), t.kind)).collect();
        for cr in &c.creatives {
            assert!(cr.id > 0 && campaigns.contains(&cr.campaign_id), "{cr:?}");
            assert!(cr.format == Format::Native || (cr.width > 0 && cr.height > 0));
            assert!(adsnap_mime(&cr.mime), "{cr:?}");
            assert!((1..=8).contains(&cr.assets.len()) && cr.assets.iter().all(|a| is_url(a)));
            let video = cr.mime.starts_with("video/");
            if cr.format == Format::RewardedVideo {
                assert!(video && cr.video_duration_s.is_some_and(|d| (1..=180).contains(&d)));
            }
            assert!(cr.template.is_some() != cr.markup.is_some(), "{cr:?}");
            let expected = match (video, cr.format) {
                (true, _) => MarkupKind::Vast,
                (false, Format::Native) => MarkupKind::NativeJson,
                (false, _) => MarkupKind::Html,
            };
            if let Some(template) = &cr.template {
                assert_eq!(kinds.get(template.as_str()), Some(&expected), "{cr:?}");
            }
            if let Some(markup) = &cr.markup {
                check_markup(markup, expected);
            }
        }
    }

    fn check_markup(markup: &str, kind: MarkupKind) {
        match kind {
            MarkupKind::Vast => {
                assert!(markup.starts_with("<VAST ") && markup.ends_with("</VAST>"))
            }
            MarkupKind::NativeJson => {
                let json: serde_json::Value = serde_json::from_str(markup).expect(markup);
                assert!(json["native"]["assets"].is_array(), "{markup}");
            }
            MarkupKind::Html => assert!(markup.starts_with('<') && markup.ends_with('>')),
        }
    }

    fn adsnap_mime(mime: &str) -> bool {
        let mimes = ["image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4"];
        mimes.contains(&mime) || ["video/webm", "text/html", "application/json"].contains(&mime)
    }

    fn check_rates(c: &Loaded) {
        let platforms: HashMap<u32, Platform> = c.campaigns.iter().map(|c| (c.id, c.app.platform)).collect();
        let keys = c.rates.iter().map(|r| (r.campaign_id, &r.country, &r.os));
        assert!(all_unique(keys), "duplicate (campaign_id, country, os) rows");
        for r in &c.rates {
            let platform = platforms.get(&r.campaign_id).expect("campaign exists");
            assert!(r.country == "*" || is_country_code(&r.country), "{r:?}");
            assert!(r.os == "*" || r.os == platform_name(*platform), "{r:?}");
            assert!(r.ctr > 0.0 && r.ctr <= 1.0 && (0.0..=1.0).contains(&r.cvr), "{r:?}");
        }
        let global: HashSet<u32> =
            c.rates.iter().filter(|r| r.country == "*").map(|r| r.campaign_id).collect();
        assert_eq!(global.len(), c.campaigns.len(), "a `*` row per campaign");
    }

    fn check_experiments(c: &Loaded) {
        assert!(c.experiments.len() <= 3);
        assert!(all_unique(c.experiments.iter().map(|e| e.slot)));
        for e in &c.experiments {
            let share_max = if e.slot == 2 { 3_332 } else { 3_334 };
            assert!(e.slot <= 2 && (1..=share_max).contains(&e.share_bp), "{e:?}");
            assert!((1..=8).contains(&e.arms.len()) && all_unique(e.arms.iter().map(|a| a.id)));
            assert!(e.arms.iter().all(|a| a.weight_bp > 0));
            assert_eq!(e.arms.iter().map(|a| u32::from(a.weight_bp)).sum::<u32>(), 10_000);
            for o in e.arms.iter().map(|a| &a.overrides) {
                assert!(o.bid_multiplier.is_none_or(|m| m > 0.0 && m <= 10.0));
                assert!(o.floor_multiplier.is_none_or(|m| (0.0..=10.0).contains(&m)));
                assert!(o.candidates_scanned_max.is_none_or(|n| (1..=4_096).contains(&n)));
            }
        }
        let shares: Vec<_> = c.experiments.iter().map(|e| (e.slot, e.share_bp)).collect();
        assert_eq!(shares, [(0, 2_000), (1, 2_000), (2, 1_000)]);
    }

    fn check_all(c: &Loaded) {
        check_manifest_and_small_files(c);
        check_publishers(c);
        check_campaigns(c);
        check_creatives(c);
        check_rates(c);
        check_experiments(c);
    }

    fn count_lines(path: &Path) -> u64 {
        let text = fs::read_to_string(path).expect("read");
        text.lines().count() as u64
    }

    #[test]
    fn same_options_give_byte_identical_files() {
        let options = options(700, 42, 3);
        let (a, _) = generate_temp(&options);
        let (b, _) = generate_temp(&options);
        let mut names: Vec<_> =
            fs::read_dir(a.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        assert_eq!(names.len(), 10, "{names:?}");
        for name in names {
            let left = fs::read(a.path().join(&name)).expect("read");
            let right = fs::read(b.path().join(&name)).expect("read");
            assert!(left == right, "{name:?} differs between runs");
        }
        let (other, _) = generate_temp(&GenOptions { seed: 43, ..options });
        let campaigns = |dir: &Path| fs::read(dir.join(files::CAMPAIGNS)).expect("read");
        assert_ne!(campaigns(a.path()), campaigns(other.path()), "the seed matters");
    }

    #[test]
    fn every_line_parses_and_summary_counts_match_the_files() {
        let (dir, summary) = generate_temp(&options(500, 7, 4));
        let c = load(dir.path());
        let lines = |name: &str| count_lines(&dir.path().join(name));
        assert_eq!(summary.n_advertisers, c.advertisers.len() as u64);
        assert_eq!(summary.n_advertisers, lines(files::ADVERTISERS));
        assert_eq!(summary.n_campaigns, 500);
        assert_eq!(summary.n_campaigns, lines(files::CAMPAIGNS));
        assert_eq!(summary.n_creatives, 2_000);
        assert_eq!(summary.n_creatives, lines(files::CREATIVES));
        assert_eq!(summary.n_apps, lines(files::APPS));
        assert_eq!(summary.n_ad_units, lines(files::AD_UNITS));
        assert_eq!(summary.n_segments, lines(files::SEGMENTS));
        assert_eq!(summary.n_rates, lines(files::PREDICTED_RATES) - 1, "minus the header");
        assert_eq!(summary.n_rates, c.rates.len() as u64);
        assert_eq!(summary.n_experiments, lines(files::EXPERIMENTS));
        let on_disk: u64 = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").metadata().expect("metadata").len())
            .sum();
        assert_eq!(summary.bytes_written, on_disk);
        assert_eq!((c.apps.len(), c.segments.len()), (250, SEGMENTS_MIN as usize));
    }

    #[test]
    fn bad_options_and_existing_catalogs_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |options: &GenOptions| generate(options, dir.path(), &|_| {});
        assert!(matches!(run(&options(0, 1, 3)), Err(GenError::CampaignCount(0))));
        let too_many = CAMPAIGNS_MAX + 1;
        assert!(matches!(run(&options(too_many, 1, 3)), Err(GenError::CampaignCount(_))));
        assert!(matches!(run(&options(100, 1, 0)), Err(GenError::CreativesPerCampaign(0))));
        assert!(matches!(run(&options(100, 1, 21)), Err(GenError::CreativesPerCampaign(21))));
        run(&options(100, 1, 1)).expect("first run");
        let err = run(&options(100, 1, 1)).expect_err("second run refuses");
        assert!(matches!(err, GenError::CatalogExists(_)));
        assert!(err.to_string().contains("catalog.json"), "{err}");
    }

    #[test]
    fn progress_ends_at_the_campaign_count_and_nested_dirs_are_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("a/b");
        let seen = std::cell::RefCell::new(Vec::new());
        let n = u64::from(PROGRESS_EVERY_CAMPAIGNS) + 10;
        generate(&options(n, 3, 1), &out, &|done| seen.borrow_mut().push(done)).expect("generate");
        let seen = seen.into_inner();
        assert_eq!(seen, [u64::from(PROGRESS_EVERY_CAMPAIGNS), n]);
        assert!(out.join(files::MANIFEST).exists());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let mut s = String::new();
        put_rfc3339(&mut s, DEFAULT_NOW_UNIX_S);
        assert_eq!(s, "2026-11-22T00:00:00Z");
        s.clear();
        put_rfc3339(&mut s, -5);
        assert_eq!(s, "1970-01-01T00:00:00Z", "clamped to what RFC 3339 and the builder accept");
    }

    fn share(part: usize, whole: usize) -> f64 {
        part as f64 / whole as f64
    }

    fn is_android(c: &&Campaign) -> bool {
        c.app.platform == Platform::Android
    }

    /// Android leads overall but iOS leads in the US; the top ten markets carry most targeting.
    fn check_platforms_and_markets(c: &Loaded) {
        let n = c.campaigns.len();
        let android = share(c.campaigns.iter().filter(is_android).count(), n);
        assert!((0.6..=0.8).contains(&android), "android {android}");
        let targets_us = |c: &&Campaign| c.targeting.countries.iter().any(|k| k == "US");
        let us: Vec<&Campaign> = c.campaigns.iter().filter(targets_us).collect();
        let us_android = share(us.iter().copied().filter(is_android).count(), us.len());
        assert!(us_android < 0.5, "android among US campaigns {us_android}");
        let worldwide = c.campaigns.iter().filter(|c| c.targeting.countries.is_empty()).count();
        assert!((0.07..=0.13).contains(&share(worldwide, n)), "worldwide {worldwide}");
        let top: HashSet<&str> = MARKETS[..TOP_MARKETS].iter().map(|m| m.0).collect();
        let targeted: Vec<&str> =
            c.campaigns.iter().flat_map(|c| c.targeting.countries.iter().map(String::as_str)).collect();
        let in_top = targeted.iter().filter(|k| top.contains(*k)).count();
        assert!(share(in_top, targeted.len()) > 0.6, "top ten {in_top}/{}", targeted.len());
        let distinct: HashSet<&str> = targeted.into_iter().collect();
        assert!(distinct.len() > 150, "{} countries used", distinct.len());
    }

    /// Games dominate, CPI and active campaigns dominate, and advertisers are heavy-tailed.
    fn check_business_mix(c: &Loaded) {
        let n = c.campaigns.len();
        let games = |category: &str| category == GAMES_CATEGORY;
        let game_advertisers = c.advertisers.iter().filter(|a| games(&a.iab_category)).count();
        assert!(share(game_advertisers, c.advertisers.len()) > 0.5);
        let game_apps = c.apps.iter().filter(|a| games(&a.iab_category)).count();
        assert!(share(game_apps, c.apps.len()) > 0.5);
        let cpi = c.campaigns.iter().filter(|c| c.bid.bid_type == BidType::Cpi).count();
        assert!((0.65..=0.75).contains(&share(cpi, n)), "cpi {cpi}");
        let active = c.campaigns.iter().filter(|c| c.status == CampaignStatus::Active).count();
        assert!((0.8..=0.9).contains(&share(active, n)), "active {active}");
        let n_advertisers = c.advertisers.len();
        assert!((n / 20..=n / 5).contains(&n_advertisers), "{n_advertisers} advertisers");
        let mut per_advertiser: HashMap<u32, usize> = HashMap::new();
        for campaign in &c.campaigns {
            *per_advertiser.entry(campaign.advertiser_id).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_advertiser.into_values().collect();
        counts.sort_unstable();
        let (median, max) = (counts[counts.len() / 2], counts[counts.len() - 1]);
        assert!(max >= 20 * median, "heavy tail: median {median}, max {max}");
    }

    /// Schedules mostly running now, a few exhausted budgets, full-screen creatives dominate.
    fn check_delivery_mix(c: &Loaded, now_s: i64) {
        let n = c.campaigns.len();
        let time = |s: &str| humantime::parse_rfc3339(s).expect("time");
        let now = UNIX_EPOCH + Duration::from_secs(now_s as u64);
        let is_running = |c: &&Campaign| time(&c.schedule.start) <= now && now < time(&c.schedule.end);
        let running = c.campaigns.iter().filter(is_running).count();
        assert!((0.7..=0.8).contains(&share(running, n)), "running {running}");
        let is_exhausted = |c: &&Campaign| c.budget.spent_micros >= c.budget.total_micros;
        let exhausted = c.campaigns.iter().filter(is_exhausted).count();
        assert!(exhausted > 0 && share(exhausted, n) < 0.15, "exhausted {exhausted}");
        let full_screen = |cr: &&Creative| matches!(cr.format, Format::Interstitial | Format::RewardedVideo);
        let n_full_screen = c.creatives.iter().filter(full_screen).count();
        assert!(share(n_full_screen, c.creatives.len()) > 0.6, "{n_full_screen} full screen");
        let inline = c.creatives.iter().filter(|cr| cr.markup.is_some()).count();
        assert!(inline > 0 && share(inline, c.creatives.len()) < 0.1, "inline {inline}");
        let mut ctrs: Vec<f64> = c.rates.iter().map(|r| r.ctr).collect();
        ctrs.sort_by(f64::total_cmp);
        let median_ctr = ctrs[ctrs.len() / 2];
        assert!((0.005..=0.05).contains(&median_ctr), "median ctr {median_ctr}");
    }

    #[test]
    fn distributions_have_realistic_shapes() {
        let options = options(20_000, 11, 3);
        let (dir, _) = generate_temp(&options);
        let c = load(dir.path());
        check_platforms_and_markets(&c);
        check_business_mix(&c);
        check_delivery_mix(&c, options.now_unix_s);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]

        #[test]
        fn generated_catalogs_follow_the_validation_rules(
            n_campaigns in 100u64..1_500,
            seed in any::<u64>(),
            creatives_per_campaign in 1u32..=20,
        ) {
            let (dir, _) = generate_temp(&options(n_campaigns, seed, creatives_per_campaign));
            check_all(&load(dir.path()));
        }
    }
}

//! The rkyv schema of a snapshot's payload: every record the server reads, in the shape it reads it.
//!
//! Records are flat and fixed-size. Variable-length data lives in shared pools and is referenced by
//! ranges: lists of numbers in `pool_u16` / `pool_u32` / `pool_u64`, lists of strings in
//! `pool_str`, and the bytes of every string in one UTF-8 heap (`strings`). This keeps validation at
//! open time close to a linear scan, keeps the builder's memory to the fixed-size records (strings
//! are streamed to disk as they are read), and lets a request touch only the cache lines it needs.
//!
//! Codes packed into numbers:
//! - a country is its ISO 3166-1 alpha-2 code packed as `(c0 - 'A') * 26 + (c1 - 'A')`, so
//!   `0..676`; [`COUNTRY_ANY`] (676) is the index key for campaigns that target every country;
//! - a language is its ISO 639-1 code packed the same way from lowercase letters;
//! - an OS version is `major << 16 | minor << 8 | patch` (each part saturating at its width);
//! - an IAB content category `IABa` or `IABa-b` is `a * 1000 + b` (see [`pack_iab_category`](crate::pack_iab_category));
//! - money is in micros of the catalog's currency; probabilities are parts per million.

use rkyv::{Archive, Serialize};

use crate::heap::StringHeap;

/// Number of country keys in the index: every packed ISO code plus [`COUNTRY_ANY`].
pub const N_COUNTRY_KEYS: usize = 26 * 26 + 1;
/// Index key of campaigns that target every country.
pub const COUNTRY_ANY: u16 = 26 * 26;
/// Number of ad formats ([`Format`]).
pub const N_FORMATS: usize = 4;
/// Number of operating systems ([`Os`]).
pub const N_OS: usize = 2;
/// Number of index slots: one per format × country key × OS.
pub const N_INDEX_SLOTS: usize = N_FORMATS * N_COUNTRY_KEYS * N_OS;
/// Parts per million that mean 1.0 (pacing throttles, multipliers).
pub const PPM_ONE: u32 = 1_000_000;
/// Basis points that mean 100% of traffic (experiment shares, bucket space).
pub const BUCKETS: u16 = 10_000;

/// Converts between a native enum and its archived twin, which rkyv derives with the same
/// variants; the server reads the native one.
macro_rules! archived_enum {
    ($native:ident, $archived:ident, [$($variant:ident),+ $(,)?]) => {
        impl From<&$archived> for $native {
            fn from(value: &$archived) -> Self {
                match value {
                    $($archived::$variant => $native::$variant,)+
                }
            }
        }
        impl $archived {
            /// The native value of this archived one.
            pub fn get(&self) -> $native {
                $native::from(self)
            }
        }
    };
}

/// An ad format, as SDKs and ad units name it.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum Format {
    Banner = 0,
    Interstitial = 1,
    RewardedVideo = 2,
    Native = 3,
}
archived_enum!(Format, ArchivedFormat, [Banner, Interstitial, RewardedVideo, Native]);

impl Format {
    pub const ALL: [Format; N_FORMATS] =
        [Format::Banner, Format::Interstitial, Format::RewardedVideo, Format::Native];

    /// The catalog's and the API's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Banner => "banner",
            Format::Interstitial => "interstitial",
            Format::RewardedVideo => "rewarded_video",
            Format::Native => "native",
        }
    }

    /// Parses the catalog's and the API's name of a format.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// This format's bit in a format mask (ad units list the formats they accept as a mask).
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A mobile operating system.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum Os {
    Android = 0,
    Ios = 1,
}
archived_enum!(Os, ArchivedOs, [Android, Ios]);

impl Os {
    pub const ALL: [Os; N_OS] = [Os::Android, Os::Ios];

    pub fn name(self) -> &'static str {
        match self {
            Os::Android => "android",
            Os::Ios => "ios",
        }
    }

    pub fn from_name(name: &str) -> Option<Os> {
        Os::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// What the advertiser pays for.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum BidType {
    /// Per thousand impressions.
    Cpm = 0,
    /// Per click.
    Cpc = 1,
    /// Per install.
    Cpi = 2,
}
archived_enum!(BidType, ArchivedBidType, [Cpm, Cpc, Cpi]);

/// A campaign's state as its manager set it. Only `Active` campaigns are indexed.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum CampaignStatus {
    Active = 0,
    Paused = 1,
    Archived = 2,
}
archived_enum!(CampaignStatus, ArchivedCampaignStatus, [Active, Paused, Archived]);

/// How a creative's markup is produced.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum MarkupKind {
    /// HTML returned as is (banners, interstitials).
    Html = 0,
    /// A VAST 4 XML template; the server fills in the tracking macros.
    Vast = 1,
    /// A native ad's JSON assets.
    NativeJson = 2,
}
archived_enum!(MarkupKind, ArchivedMarkupKind, [Html, Vast, NativeJson]);

/// A half-open range `[start, start + len)` into one of the pools or tables.
#[derive(Archive, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub const EMPTY: Span = Span { start: 0, len: 0 };
}

impl ArchivedSpan {
    /// The native `start..end` of this span.
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = self.start.to_native() as usize;
        start..start + self.len.to_native() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len.to_native() == 0
    }
}

/// A string in the heap: `len` bytes at `offset`, always on UTF-8 character boundaries.
#[derive(Archive, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StrRef {
    pub offset: u64,
    pub len: u32,
}

/// Facts about the build that are not in the fixed header.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Meta {
    /// The catalog's own name (its `catalog.json`).
    pub catalog_name: String,
    /// Version of the catalog format the snapshot was built from.
    pub catalog_format_version: u32,
    /// ISO 4217 code of the currency every `*_micros` amount is in.
    pub currency: String,
    /// The time pacing and schedules were computed for (seconds since the Unix epoch).
    pub reference_unix_s: i64,
}

/// An advertiser: whose ads these are, for blocklists and reporting.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Advertiser {
    pub id: u32,
    pub name: StrRef,
    /// Lowercase domain, as exchanges send it in `badv` and `adomain`.
    pub domain: StrRef,
    /// `xxh3_64` of `domain`, for blocklist look-ups.
    pub domain_hash: u64,
    /// Packed IAB category.
    pub category: u16,
}

/// Who a campaign may be shown to. Every list is sorted; an empty list means "no restriction".
#[derive(Archive, Serialize, Debug, Clone, Default)]
pub struct Targeting {
    /// Packed country codes in `pool_u16`. Empty: every country.
    pub countries: Span,
    /// Packed minimum OS version; 0 means any.
    pub min_os_version: u32,
    /// Mask of [`DeviceType`](crate::DeviceType) bits; 0 means any.
    pub device_types: u8,
    /// Mask of [`ConnectionType`](crate::ConnectionType) bits; 0 means any.
    pub connection_types: u8,
    /// Packed language codes in `pool_u16`.
    pub languages: Span,
    /// `xxh3_64` of publisher app bundles in `pool_u64`: only these apps.
    pub app_allow: Span,
    /// `xxh3_64` of publisher app bundles in `pool_u64`: never these apps.
    pub app_block: Span,
    /// Packed IAB categories in `pool_u16`: only apps of these categories (a tier-1 category
    /// also matches its subcategories).
    pub app_categories: Span,
    /// Segment ids in `pool_u32`: the user must be in at least one.
    pub segments_include: Span,
    /// Segment ids in `pool_u32`: the user must be in none.
    pub segments_exclude: Span,
}

/// A campaign, with what serving needs precomputed.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Campaign {
    pub id: u32,
    pub advertiser_idx: u32,
    pub name: StrRef,
    pub status: CampaignStatus,
    /// The promoted app.
    pub platform: Os,
    pub app_bundle: StrRef,
    /// `xxh3_64` of `app_bundle`, to skip users who already installed it.
    pub app_bundle_hash: u64,
    pub store_url: StrRef,
    pub bid_type: BidType,
    pub bid_micros: u64,
    pub daily_budget_micros: u64,
    pub total_budget_micros: u64,
    pub spend_micros: u64,
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    /// Share of eligible requests this campaign may bid on, from its budget, spend and remaining
    /// time; `PPM_ONE` means every request.
    pub pacing_throttle_ppm: u32,
    pub targeting: Targeting,
    /// At most this many impressions per user per `frequency_cap_period_s`; 0 means no cap.
    pub frequency_cap_impressions: u32,
    pub frequency_cap_period_s: u32,
    /// This campaign's creatives: a range of `Snapshot::creatives`.
    pub creatives: Span,
    /// Packed countries (in `pool_u16`) where a campaign that targets every country has its own
    /// index entries with a market-specific price; its [`COUNTRY_ANY`] entry does not apply there.
    pub country_overrides: Span,
}

/// One creative of a campaign.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Creative {
    pub id: u32,
    pub campaign_idx: u32,
    pub format: Format,
    pub width: u16,
    pub height: u16,
    /// Video length in seconds; 0 for static creatives.
    pub video_duration_s: u16,
    pub mime: StrRef,
    /// Asset URLs: a span of `pool_str`.
    pub assets: Span,
    pub markup_kind: MarkupKind,
    /// The markup or the VAST template (templates are shared between creatives).
    pub markup: StrRef,
}

/// A publisher app that shows our ads.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct PublisherApp {
    pub id: StrRef,
    pub bundle: StrRef,
    pub bundle_hash: u64,
    pub platform: Os,
    /// Packed IAB category.
    pub category: u16,
    /// The app is directed at children (COPPA) whatever the request says.
    pub coppa: bool,
    /// `xxh3_64` of advertiser domains in `pool_u64`.
    pub blocked_domains: Span,
    /// Packed IAB categories in `pool_u16` (a tier-1 category blocks its subcategories too).
    pub blocked_categories: Span,
}

/// A placement inside a publisher app.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct AdUnit {
    pub id: StrRef,
    pub app_idx: u32,
    /// Mask of [`Format::bit`]s this unit accepts.
    pub formats: u8,
    pub width: u16,
    pub height: u16,
    pub floor_cpm_micros: u64,
    /// `xxh3_64` of advertiser domains in `pool_u64`.
    pub blocked_domains: Span,
    /// Packed IAB categories in `pool_u16` (a tier-1 category blocks its subcategories too).
    pub blocked_categories: Span,
}

/// A user segment defined in the catalog (profiles carry segment ids).
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Segment {
    pub id: u32,
    pub name: StrRef,
}

/// A key hash and the index of the record it names, for look-ups by string id.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct HashEntry {
    pub hash: u64,
    pub idx: u32,
}

/// A numeric id and the index of the record it names.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct IdEntry {
    pub id: u32,
    pub idx: u32,
}

/// One index entry: a creative eligible for a (format, country, OS) slot, with its expected
/// revenue per mille in that market. Slots are sorted by `ecpm_micros` descending, then by
/// campaign and creative index ascending (the deterministic tie-break).
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Candidate {
    pub ecpm_micros: u64,
    pub campaign_idx: u32,
    pub creative_idx: u32,
}

/// The targeting index: for each (format, country key, OS) slot, a span of `candidates`.
#[derive(Archive, Serialize, Debug, Clone, Default)]
pub struct Index {
    /// `N_INDEX_SLOTS` spans, laid out by [`slot_idx`].
    pub slots: Vec<Span>,
    pub candidates: Vec<Candidate>,
}

/// The decision parameters an experiment arm may change. Control uses the defaults.
#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Overrides {
    /// Multiplies every candidate's eCPM (bid shading tests); `PPM_ONE` is neutral.
    pub bid_multiplier_ppm: u32,
    /// Multiplies every ad unit's floor; `PPM_ONE` is neutral.
    pub floor_multiplier_ppm: u32,
    /// Candidates scanned per request at most.
    pub candidates_scanned_max: u32,
    /// Whether the pacing throttle applies.
    pub pacing_enabled: bool,
    /// Whether users' frequency caps apply.
    pub frequency_caps_enabled: bool,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            bid_multiplier_ppm: PPM_ONE,
            floor_multiplier_ppm: PPM_ONE,
            candidates_scanned_max: crate::CANDIDATES_SCANNED_MAX_DEFAULT,
            pacing_enabled: true,
            frequency_caps_enabled: true,
        }
    }
}

/// One arm of an experiment: a bucket range inside the experiment and its resolved parameters.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Arm {
    pub id: u32,
    pub name: String,
    /// Bucket range within the experiment's own `0..BUCKETS` space.
    pub bucket_start: u16,
    pub bucket_end: u16,
    /// Every parameter, defaults filled in.
    pub params: Overrides,
}

/// An A/B test over a share of production traffic.
#[derive(Archive, Serialize, Debug, Clone)]
pub struct Experiment {
    pub id: u32,
    pub name: String,
    /// One of `EXPERIMENT_SLOTS` fixed slots of the production bucket space; resizing one
    /// experiment never moves users of another.
    pub slot: u8,
    /// Production bucket range `[bucket_start, bucket_end)` this experiment takes.
    pub bucket_start: u16,
    pub bucket_end: u16,
    /// Salt for the hash that splits the experiment's users between its arms.
    pub salt: u64,
    pub arms: Vec<Arm>,
}

/// The traffic split: staging slice, experiments, and control as the remainder.
#[derive(Archive, Serialize, Debug, Clone, Default)]
pub struct Experiments {
    /// Share of all traffic decided by the staging snapshot, in basis points.
    pub staging_share_bp: u16,
    /// Salt of the production-bucket hash.
    pub salt: u64,
    pub experiments: Vec<Experiment>,
    /// Parameters of control (and of staging): the defaults.
    pub control: Overrides,
}

/// The whole payload of a snapshot.
#[derive(Archive, Serialize)]
pub struct Snapshot {
    pub meta: Meta,
    /// Sorted by id.
    pub advertisers: Vec<Advertiser>,
    /// Sorted by id.
    pub campaigns: Vec<Campaign>,
    /// Grouped by campaign index, then sorted by id.
    pub creatives: Vec<Creative>,
    /// Creative id → index, sorted by id.
    pub creative_ids: Vec<IdEntry>,
    /// In catalog order.
    pub apps: Vec<PublisherApp>,
    /// `xxh3_64` of the app id → app index, sorted by hash.
    pub app_ids: Vec<HashEntry>,
    /// `xxh3_64` of the app bundle → app index, sorted by hash.
    pub app_bundles: Vec<HashEntry>,
    pub ad_units: Vec<AdUnit>,
    /// `xxh3_64` of the ad unit id → ad unit index, sorted by hash.
    pub ad_unit_ids: Vec<HashEntry>,
    /// Sorted by id.
    pub segments: Vec<Segment>,
    pub experiments: Experiments,
    pub index: Index,
    pub pool_u16: Vec<u16>,
    pub pool_u32: Vec<u32>,
    pub pool_u64: Vec<u64>,
    pub pool_str: Vec<StrRef>,
    /// Every string's bytes, UTF-8, streamed in from the builder's spill file.
    pub strings: StringHeap,
}

/// The payload of format version 2: version 1's whole payload, unchanged, and what version 2 adds
/// beside it. rkyv lays `base` out inside this root exactly as it lays out a version 1 root, so a
/// server reads both versions through [`ArchivedSnapshot`]; a version 1 file only lacks the
/// additions, which then read as their defaults.
#[derive(Archive, Serialize)]
pub struct Payload {
    pub base: Snapshot,
    /// Per creative, in `base.creatives` order: its IAB creative attributes (the OpenRTB and
    /// AdCOM list "Creative Attributes"), bit `n` for attribute `n`. Bit 0 is never set.
    pub creative_attrs: Vec<u32>,
    /// Per ad unit, in `base.ad_units` order: the creative attributes it shows no creative
    /// with, as the same mask.
    pub ad_unit_blocked_attrs: Vec<u32>,
}

/// The highest creative attribute code a snapshot can hold (bit 31 of a `creative_attrs` mask).
pub const CREATIVE_ATTR_MAX: u8 = 31;

/// The position of a (format, country key, OS) slot in `Index::slots`.
pub fn slot_idx(format: Format, country_key: u16, os: Os) -> usize {
    debug_assert!((country_key as usize) < N_COUNTRY_KEYS);
    ((format as usize) * N_COUNTRY_KEYS + country_key as usize) * N_OS + os as usize
}

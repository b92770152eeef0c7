//! The SDK's ad request (`POST /v1/ad`): its wire format and its validation into a [`Query`]
//! the decision engine reads.

use adsnap_snapshot::{
    pack_country, pack_language, pack_os_version, ConnectionType, DeviceType, Format, MarkupKind, Os,
    Snapshot,
};
use std::borrow::Cow;
use std::num::NonZeroU16;

use serde::Deserialize;

use crate::privacy::{PrivacyFields, PrivacySignals};

use crate::error::RequestError;
use crate::json_reader::{JsonError, Reader, Seen};

/// Longest id accepted in a request (user id, IFA, request id, app or ad unit id).
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// The SDK's ad request. [`AdRequest::parse`] reads it; the serde derives are its schema's
/// reference, which the reader is tested against (`tests/json_reader.rs`).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdRequest<'a> {
    /// The SDK's id for this request; echoed in the response and in tracking.
    #[serde(default, borrow)]
    pub request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub app: RequestApp<'a>,
    #[serde(borrow)]
    pub ad_unit_id: Cow<'a, str>,
    #[serde(borrow)]
    pub format: Cow<'a, str>,
    #[serde(borrow)]
    pub device: RequestDevice<'a>,
    #[serde(default, borrow)]
    pub user: RequestUser<'a>,
    #[serde(default, borrow)]
    pub privacy: Privacy<'a>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestApp<'a> {
    #[serde(borrow)]
    pub bundle: Cow<'a, str>,
    #[serde(default, borrow)]
    pub version: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDevice<'a> {
    #[serde(borrow)]
    pub os: Cow<'a, str>,
    #[serde(default, borrow)]
    pub os_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub make: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    /// The advertising id (GAID / IDFA).
    #[serde(default, borrow)]
    pub ifa: Option<Cow<'a, str>>,
    /// Limit ad tracking (or ATT not authorized).
    #[serde(default)]
    pub lmt: bool,
    #[serde(default, borrow, rename = "type")]
    pub device_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub connection: Option<Cow<'a, str>>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, borrow)]
    pub country: Option<Cow<'a, str>>,
    /// ISO 639-1.
    #[serde(default, borrow)]
    pub language: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestUser<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy<'a> {
    /// GDPR applies to this request; absent (or `null`), it applies when `device.country` is in
    /// the EEA or the United Kingdom.
    #[serde(default)]
    pub gdpr: Option<bool>,
    /// The IAB TCF consent string; under GDPR, none means no consent.
    #[serde(default, borrow)]
    pub tcf_consent: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub us_privacy: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub gpp: Option<Cow<'a, str>>,
    #[serde(default)]
    pub coppa: bool,
}

impl<'a> AdRequest<'a> {
    /// Reads an ad request body: the same documents serde's derive accepts (see [`json_reader`]),
    /// UTF-8 checked as it is read.
    pub fn parse(body: &'a [u8]) -> Result<Self, JsonError> {
        let mut r = Reader::new(body);
        let mut request = AdRequest::default();
        read_ad_request(&mut r, &mut request)?;
        r.finish()?;
        Ok(request)
    }
}

// The readers fill a request in place (its strings start empty): returning each part by value
// copied hundreds of bytes per level, a third of the reading.

/// Defines the [`FieldTable`] of one object: its name in errors, its required fields, its field
/// names in order and the look-up of a field's index by name, one `match` the compiler turns
/// into a comparison of lengths and then of bytes.
macro_rules! fields {
    ($table:ident, $what:literal, required $required:expr, $($idx:literal $name:literal),+ $(,)?) => {
        const $table: FieldTable = FieldTable {
            what: $what,
            names: &[$($name),+],
            required: &$required,
            lookup: |key| match key {
                $($name => Some($idx),)+
                _ => None,
            },
        };
    };
}

/// The fields of one object of the request.
struct FieldTable {
    /// The object's name in errors ("struct RequestDevice", as serde names it).
    what: &'static str,
    names: &'static [&'static str],
    /// Indexes of the fields that must be present.
    required: &'static [u32],
    lookup: fn(&str) -> Option<u32>,
}

impl FieldTable {
    /// Reads an object of these fields: `member` reads the value of the field with the given
    /// index. Unknown, repeated and missing required fields are errors. Inlined with its table,
    /// the look-up is a direct call the compiler can unroll into comparisons of the key's words.
    #[inline(always)]
    fn read<'a>(
        &self,
        r: &mut Reader<'a>,
        mut member: impl FnMut(&mut Reader<'a>, u32) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        let mut seen = Seen::default();
        r.object(self.what, |r, key| {
            let idx = self.index(r, key, &mut seen)?;
            member(r, idx)
        })?;
        self.check_required(r, &seen)
    }

    /// The index of `key`, else the error serde's `deny_unknown_fields` gives; a field given
    /// twice is an error too.
    #[inline(always)]
    fn index(&self, r: &Reader<'_>, key: &str, seen: &mut Seen) -> Result<u32, JsonError> {
        let idx = (self.lookup)(key).ok_or_else(|| r.unknown_field(key, self.names))?;
        if !seen.first(idx) {
            return Err(r.duplicate_field(self.names[idx as usize]));
        }
        Ok(idx)
    }

    /// The error for the first required field not `seen`.
    fn check_required(&self, r: &Reader<'_>, seen: &Seen) -> Result<(), JsonError> {
        match self.required.iter().find(|&&idx| !seen.has(idx)) {
            Some(&idx) => Err(r.missing_field(self.names[idx as usize])),
            None => Ok(()),
        }
    }
}

fields!(AD_REQUEST_FIELDS, "struct AdRequest", required [1, 2, 3, 4],
    0 "request_id", 1 "app", 2 "ad_unit_id", 3 "format", 4 "device", 5 "user", 6 "privacy");

fn read_ad_request<'a>(r: &mut Reader<'a>, q: &mut AdRequest<'a>) -> Result<(), JsonError> {
    AD_REQUEST_FIELDS.read(r, |r, idx| {
        match idx {
            0 => q.request_id = r.optional_string()?,
            1 => APP_FIELDS.read(r, |r, idx| {
                match idx {
                    0 => q.app.bundle = r.string()?,
                    _ => q.app.version = r.optional_string()?,
                }
                Ok(())
            })?,
            2 => q.ad_unit_id = r.string()?,
            3 => q.format = r.string()?,
            4 => read_device(r, &mut q.device)?,
            5 => USER_FIELDS.read(r, |r, _| {
                q.user.id = r.optional_string()?;
                Ok(())
            })?,
            _ => read_privacy(r, &mut q.privacy)?,
        }
        Ok(())
    })
}

fields!(APP_FIELDS, "struct RequestApp", required [0], 0 "bundle", 1 "version");
fields!(USER_FIELDS, "struct RequestUser", required [], 0 "id");
fields!(DEVICE_FIELDS, "struct RequestDevice", required [0],
    0 "os", 1 "os_version", 2 "make", 3 "model", 4 "ifa", 5 "lmt", 6 "type", 7 "connection", 8 "country",
    9 "language");

fn read_device<'a>(r: &mut Reader<'a>, d: &mut RequestDevice<'a>) -> Result<(), JsonError> {
    DEVICE_FIELDS.read(r, |r, idx| {
        match idx {
            0 => d.os = r.string()?,
            1 => d.os_version = r.optional_string()?,
            2 => d.make = r.optional_string()?,
            3 => d.model = r.optional_string()?,
            4 => d.ifa = r.optional_string()?,
            5 => d.lmt = r.bool()?,
            6 => d.device_type = r.optional_string()?,
            7 => d.connection = r.optional_string()?,
            8 => d.country = r.optional_string()?,
            _ => d.language = r.optional_string()?,
        }
        Ok(())
    })
}

fields!(PRIVACY_FIELDS, "struct Privacy", required [], 0 "gdpr", 1 "tcf_consent", 2 "us_privacy", 3 "gpp", 4 "coppa");

fn read_privacy<'a>(r: &mut Reader<'a>, p: &mut Privacy<'a>) -> Result<(), JsonError> {
    PRIVACY_FIELDS.read(r, |r, idx| {
        match idx {
            0 => p.gdpr = r.optional_bool()?,
            1 => p.tcf_consent = r.optional_string()?,
            2 => p.us_privacy = r.optional_string()?,
            3 => p.gpp = r.optional_string()?,
            _ => p.coppa = r.bool()?,
        }
        Ok(())
    })
}

/// A validated request, in the snapshot's terms.
#[derive(Clone, Debug)]
pub struct Query {
    pub format: Format,
    pub os: Os,
    /// Packed; 0 when unknown.
    pub os_version: u32,
    pub country: Option<u16>,
    pub language: Option<u16>,
    pub device_type: Option<DeviceType>,
    pub connection: Option<ConnectionType>,
    /// Our ad unit and publisher app, when the request names ones the snapshot knows (SDK
    /// requests always do; exchange requests may come from apps we do not know).
    pub ad_unit_idx: Option<usize>,
    pub app_idx: Option<usize>,
    /// `xxh3_64` of the requesting app's bundle.
    pub app_bundle_hash: u64,
    /// The requesting app's packed IAB category, if known.
    pub app_category: Option<u16>,
    /// The lowest price per mille the request itself accepts, in micros (OpenRTB `bidfloor`; 0
    /// for SDK requests).
    pub floor_cpm_micros: u64,
    /// The ad unit's floor, in micros (0 without a unit); the arm's multiplier scales it, not
    /// `floor_cpm_micros`. Read here, while resolving touches the unit anyway.
    pub unit_floor_cpm_micros: u64,
    /// What the slot takes of a creative besides its format.
    pub fit: Fit,
    /// Request-level blocklists (OpenRTB `bcat`, `badv`, `bapp`), sorted: packed IAB
    /// categories, and `xxh3_64` of advertiser domains and of promoted app bundles.
    pub blocked_categories: Vec<u16>,
    pub blocked_domains: Vec<u64>,
    pub blocked_bundles: Vec<u64>,
    /// The request's privacy signals (COPPA includes the app's own flag).
    pub privacy: PrivacySignals,
    /// The hashed key of the user's profile, when privacy allows one.
    pub user_key: Option<u64>,
    pub now_unix_s: i64,
    /// A per-request draw in parts per million, for pacing.
    pub pacing_draw_ppm: u32,
    /// A test request (OpenRTB `test` 1): decided and answered as any other, but its events are
    /// marked as tests and earn nothing, and it changes no user's profile.
    pub test: bool,
}

/// Banner sizes a slot takes at most (an OpenRTB impression's `w`/`h` and `format`; further
/// sizes are not read).
pub const SLOT_SIZES_MAX: usize = 8;

/// The banner sizes a slot takes: exact sizes, (width, height), at most [`SLOT_SIZES_MAX`],
/// flexible ones by aspect ratio, at most [`SLOT_RATIOS_MAX`], and a range of sizes (OpenRTB
/// 2.5's `wmin`/`wmax`/`hmin`/`hmax`); none of these: any size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    list: [(u16, u16); SLOT_SIZES_MAX],
    n: u8,
    ratios: [Ratio; SLOT_RATIOS_MAX],
    n_ratios: u8,
    range: Option<SizeRange>,
}

/// Every banner size from `min` to `max`, (width, height), bounds included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeRange {
    pub min: (u16, u16),
    pub max: (u16, u16),
}

/// At most this many flexible banner sizes of a slot are read (OpenRTB `format` entries with
/// `wratio` and `hratio`).
pub const SLOT_RATIOS_MAX: usize = 4;

/// A flexible banner size: any banner of this aspect ratio at least `wmin` wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ratio {
    pub w: u16,
    pub h: u16,
    pub wmin: u16,
}

impl Sizes {
    /// One size; 0 by 0 is any size.
    pub fn of(width: u16, height: u16) -> Sizes {
        let mut sizes = Sizes::default();
        if (width, height) != (0, 0) {
            sizes.add(width, height);
        }
        sizes
    }

    /// Adds a size; past [`SLOT_SIZES_MAX`], or a size already in, nothing.
    pub fn add(&mut self, width: u16, height: u16) {
        let n = self.n as usize;
        if n < SLOT_SIZES_MAX && !self.as_slice().contains(&(width, height)) {
            self.list[n] = (width, height);
            self.n += 1;
        }
    }

    /// Adds a flexible size (a ratio of 0 is none); past [`SLOT_RATIOS_MAX`], nothing.
    pub fn add_ratio(&mut self, ratio: Ratio) {
        let n = self.n_ratios as usize;
        if n < SLOT_RATIOS_MAX && ratio.w > 0 && ratio.h > 0 {
            self.ratios[n] = ratio;
            self.n_ratios += 1;
        }
    }

    /// Adds a range of sizes, in place of any added before.
    pub fn set_range(&mut self, range: SizeRange) {
        self.range = Some(range);
    }

    pub fn as_slice(&self) -> &[(u16, u16)] {
        &self.list[..self.n as usize]
    }

    /// Whether a banner of this size fits: it is one of the sizes, of one of the ratios and at
    /// least as wide as its minimum, or within the range.
    pub fn take(&self, width: u16, height: u16) -> bool {
        let ratios = &self.ratios[..self.n_ratios as usize];
        (self.n == 0 && ratios.is_empty() && self.range.is_none())
            || self.as_slice().contains(&(width, height))
            || self.range.is_some_and(|r| {
                (r.min.0..=r.max.0).contains(&width) && (r.min.1..=r.max.1).contains(&height)
            })
            || ratios.iter().any(|r| {
                width >= r.wmin && u32::from(width) * u32::from(r.h) == u32::from(height) * u32::from(r.w)
            })
    }
}

/// What a slot takes of a creative besides its format. The default takes anything.
#[derive(Clone, Debug, Default)]
pub struct Fit {
    /// Banner sizes; other formats adapt to the screen.
    pub sizes: Sizes,
    /// The markup the slot takes (OpenRTB video slots take VAST only); `None`: any.
    pub markup_kind: Option<MarkupKind>,
    /// Video MIME types the player plays (OpenRTB `video.mimes`); empty: any.
    pub video_mimes: Vec<String>,
    /// The shortest and longest video, in seconds (`minduration`, `maxduration`); 0: no bound.
    pub video_min_s: u16,
    pub video_max_s: u16,
    /// The only video lengths the slot takes, in seconds (OpenRTB 2.6 `rqddurs`); empty: any.
    pub video_lengths_s: Vec<u16>,
    /// The VAST versions the player plays, as OpenRTB protocol codes; empty: any.
    pub video_protocols: Vec<u16>,
    /// Linear (1) or non-linear (2) video only (OpenRTB `video.linearity`); 0: either.
    pub video_linearity: u8,
    /// The video player does not run VPAID (OpenRTB `video.api` lists neither VPAID 1 nor 2).
    pub no_vpaid: bool,
    /// The assets a native slot asks for (OpenRTB `imp.native.request`); `None`: any native.
    pub native: Option<crate::native::NativeRequest>,
    /// Only creatives whose markup and assets load over https (OpenRTB `imp.secure`).
    pub secure: bool,
    /// Creative attributes the slot blocks (OpenRTB `battr`, and the ad unit's
    /// `blocked_attrs`), bit `n` for attribute `n`.
    pub blocked_attrs: u32,
    /// Banner types the slot blocks (OpenRTB `banner.btype`), bit `n` for type `n`
    /// ([`crate::served::html_facts`]).
    pub blocked_banner_types: u32,
    /// The slot's container does not offer MRAID (OpenRTB `banner.api` lists none of MRAID 1 to
    /// 3), so HTML that loads `mraid.js` cannot run in it.
    pub no_mraid: bool,
}

impl Fit {
    /// Whether a video of this MIME type and length plays in the slot.
    pub fn takes_video(&self, mime: &str, length_s: u16) -> bool {
        (self.video_mimes.is_empty() || self.video_mimes.iter().any(|m| m.eq_ignore_ascii_case(mime)))
            && (self.video_min_s == 0 || length_s >= self.video_min_s)
            && (self.video_max_s == 0 || length_s <= self.video_max_s)
            && (self.video_lengths_s.is_empty() || self.video_lengths_s.contains(&length_s))
    }
}

/// A request's pacing draw in parts per million, from its hash; every endpoint draws the same way.
pub fn pacing_draw_ppm(request_hash: u64) -> u32 {
    ((request_hash >> 32) % 1_000_000) as u32
}

fn bad(field: &str, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid { field: field.to_string(), reason: reason.into() }
}

fn check_len(field: &str, value: &str) -> Result<(), RequestError> {
    if value.is_empty() || value.len() > REQUEST_ID_BYTES_MAX {
        return Err(bad(field, format!("must be 1 to {REQUEST_ID_BYTES_MAX} bytes")));
    }
    Ok(())
}

impl AdRequest<'_> {
    /// The privacy signals the request itself carries; `tcf_vendor_id` as configured.
    pub fn signals(&self, tcf_vendor_id: Option<NonZeroU16>) -> PrivacySignals {
        let p = &self.privacy;
        PrivacySignals::read(PrivacyFields {
            coppa: p.coppa,
            gdpr_applies: p.gdpr,
            country: self.device.country.as_deref(),
            tcf_consent: p.tcf_consent.as_deref(),
            us_privacy: p.us_privacy.as_deref(),
            gpp: p.gpp.as_deref(),
            limit_ad_tracking: self.device.lmt,
            tcf_vendor_id,
        })
    }

    /// Checks the request against the snapshot and resolves it into a [`Query`]; `signals` are
    /// [`AdRequest::signals`], read once by the caller.
    pub fn resolve(
        &self,
        snapshot: &Snapshot,
        signals: PrivacySignals,
        now_unix_s: i64,
        request_hash: u64,
    ) -> Result<Query, RequestError> {
        check_len("ad_unit_id", &self.ad_unit_id)?;
        check_len("app.bundle", &self.app.bundle)?;
        for (field, value) in
            [("request_id", &self.request_id), ("user.id", &self.user.id), ("device.ifa", &self.device.ifa)]
        {
            if let Some(v) = value {
                check_len(field, v)?;
            }
        }
        let format = Format::from_name(&self.format)
            .ok_or_else(|| bad("format", "must be banner, interstitial, rewarded_video or native"))?;
        let os = Os::from_name(&self.device.os).ok_or_else(|| bad("device.os", "must be android or ios"))?;
        let (ad_unit_idx, unit) = snapshot
            .ad_unit_by_id(&self.ad_unit_id)
            .ok_or_else(|| RequestError::UnknownAdUnit(self.ad_unit_id.to_string()))?;
        if unit.formats & format.bit() == 0 {
            return Err(bad(
                "format",
                format!("ad unit {:?} does not accept {}", self.ad_unit_id, format.name()),
            ));
        }
        let os_version = match &self.device.os_version {
            Some(v) => {
                pack_os_version(v).ok_or_else(|| bad("device.os_version", "must look like \"14.2\""))?
            }
            None => 0,
        };
        let country = self.device.country.as_deref().map(|c| {
            pack_country(c)
                .ok_or_else(|| bad("device.country", "must be an uppercase ISO 3166-1 alpha-2 code"))
        });
        let language = self.device.language.as_deref().map(|l| {
            pack_language(l).ok_or_else(|| bad("device.language", "must be a lowercase ISO 639-1 code"))
        });
        let device_type = self.device.device_type.as_deref().map(|t| {
            DeviceType::from_name(t)
                .ok_or_else(|| bad("device.type", "must be phone, tablet or connected_tv"))
        });
        let connection = self.device.connection.as_deref().map(|c| {
            ConnectionType::from_name(c)
                .ok_or_else(|| bad("device.connection", "is not a known connection type"))
        });
        let app = &snapshot.archive().apps[unit.app_idx.to_native() as usize];
        let privacy = PrivacySignals { coppa: signals.coppa || app.coppa, ..signals };
        Ok(Query {
            format,
            os,
            os_version,
            country: country.transpose()?,
            language: language.transpose()?,
            device_type: device_type.transpose()?,
            connection: connection.transpose()?,
            ad_unit_idx: Some(ad_unit_idx),
            app_idx: Some(unit.app_idx.to_native() as usize),
            app_bundle_hash: adsnap_snapshot::key_hash(&self.app.bundle),
            app_category: Some(app.category.to_native()),
            floor_cpm_micros: 0,
            unit_floor_cpm_micros: unit.floor_cpm_micros.to_native(),
            fit: Fit {
                sizes: Sizes::of(unit.width.to_native(), unit.height.to_native()),
                blocked_attrs: snapshot.ad_unit_blocked_attrs(ad_unit_idx),
                ..Fit::default()
            },
            blocked_categories: Vec::new(),
            blocked_domains: Vec::new(),
            blocked_bundles: Vec::new(),
            privacy,
            user_key: privacy.user_key(self.user.id.as_deref(), self.device.ifa.as_deref()),
            now_unix_s,
            pacing_draw_ppm: pacing_draw_ppm(request_hash),
            test: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_table_finds_every_field_at_its_own_index_and_nothing_else() {
        for table in [AD_REQUEST_FIELDS, APP_FIELDS, DEVICE_FIELDS, USER_FIELDS, PRIVACY_FIELDS] {
            for (idx, name) in table.names.iter().enumerate() {
                assert_eq!((table.lookup)(name), Some(idx as u32), "{name}");
                assert_eq!((table.lookup)(&name[1..]), None, "{name}");
            }
            assert!(table.names.len() <= 64, "Seen holds 64 fields");
        }
    }
}

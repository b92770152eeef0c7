//! OpenRTB 2.5/2.6 for mobile in-app inventory: the bid request's parts adsnap reads, and how an
//! impression becomes a [`Query`]. Unknown fields are ignored, as the specification asks of
//! bidders, so any valid request from an exchange parses.

use adsnap_snapshot::{
    country_alpha3_to_alpha2, key_hash, pack_country, pack_iab_category, pack_language, pack_os_version,
    ConnectionType, DeviceType, Format, MarkupKind, Os, Snapshot,
};
use serde::Deserialize;
use std::borrow::Cow;
use std::num::NonZeroU16;

use crate::privacy::{PrivacyFields, PrivacySignals};
use crate::request::{Fit, Query, Ratio, SizeRange, Sizes};

/// Impressions answered per request at most; the rest get no bid.
pub const IMPS_MAX: usize = 16;
/// Entries read from each request-level blocklist at most.
pub const BLOCKLIST_ENTRIES_MAX: usize = 512;
/// Entries read from a video's `mimes` and `rqddurs`, and from `wseat` and `bseat`, at most.
pub const SLOT_LIST_MAX: usize = 16;

/// A JSON string of the request: borrowed from the body where it holds no escapes, as nearly
/// every one does, else read into a string of its own. A bid request is read without copying
/// its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A list sent as `null`, as some exchanges do for an empty one, read as empty rather than
/// refused.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A field where OpenRTB 2.6 puts it, else where 2.5 exchanges put it, in the object's `ext`.
fn own_or_ext<'a, T, E>(
    own: Option<T>,
    ext: &'a Option<E>,
    of_ext: impl FnOnce(&'a E) -> Option<T>,
) -> Option<T> {
    own.or_else(|| ext.as_ref().and_then(of_ext))
}

#[derive(Debug, Deserialize)]
pub struct BidRequest<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub imp: Vec<Imp<'a>>,
    #[serde(borrow, default)]
    pub app: Option<App<'a>>,
    #[serde(borrow, default)]
    pub device: Option<Device<'a>>,
    #[serde(borrow, default)]
    pub user: Option<User<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub bcat: Vec<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub badv: Vec<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub bapp: Vec<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub cur: Vec<Text<'a>>,
    #[serde(borrow, default)]
    pub regs: Option<Regs<'a>>,
    #[serde(default)]
    pub tmax: Option<u64>,
    /// 1: a test auction, not billable.
    #[serde(default)]
    pub test: Option<u8>,
    /// Buyer seats allowed to bid (`wseat`) and blocked (`bseat`), at most one of them sent.
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub wseat: Vec<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub bseat: Vec<Text<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Imp<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(default)]
    pub banner: Option<Banner>,
    #[serde(borrow, default)]
    pub video: Option<Video<'a>>,
    #[serde(borrow, default)]
    pub native: Option<Native<'a>>,
    #[serde(default)]
    pub instl: Option<u8>,
    /// 2.6: the user is rewarded for watching.
    #[serde(default)]
    pub rwdd: Option<u8>,
    #[serde(default)]
    pub bidfloor: Option<f64>,
    #[serde(borrow, default)]
    pub bidfloorcur: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub tagid: Option<Text<'a>>,
    /// 1: creative markup and assets must load over https. Absent: unknown, http allowed.
    #[serde(default)]
    pub secure: Option<u8>,
    #[serde(default)]
    pub pmp: Option<Pmp>,
}

/// A native impression: what it asks for is in `request`, a JSON string of the Native Ads
/// specification (or the object itself, as some exchanges send it), kept as the body's text
/// until a slot reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Native<'a> {
    #[serde(borrow, default)]
    pub request: Option<&'a serde_json::value::RawValue>,
    /// Blocked creative attributes (codes of the list "Creative Attributes").
    #[serde(default, deserialize_with = "null_as_empty")]
    pub battr: Vec<u32>,
}

/// A private marketplace: with `private_auction` 1, only the deals it lists may bid.
#[derive(Debug, Default, Deserialize)]
pub struct Pmp {
    #[serde(default)]
    pub private_auction: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Banner {
    #[serde(default)]
    pub w: Option<u32>,
    #[serde(default)]
    pub h: Option<u32>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub format: Vec<BannerFormat>,
    /// OpenRTB 2.5's range of sizes (removed in 2.6 for `format`): any banner from `wmin` by
    /// `hmin` to `wmax` by `hmax`; a bound left out is `w` (or `h`), else open.
    #[serde(default)]
    pub wmin: Option<u32>,
    #[serde(default)]
    pub hmin: Option<u32>,
    #[serde(default)]
    pub wmax: Option<u32>,
    #[serde(default)]
    pub hmax: Option<u32>,
    /// Blocked creative attributes (codes of the list "Creative Attributes").
    #[serde(default, deserialize_with = "null_as_empty")]
    pub battr: Vec<u32>,
    /// Blocked banner types: 1 XHTML text, 2 XHTML banner, 3 JavaScript, 4 iframe.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub btype: Vec<u32>,
    /// The API frameworks the container offers (list "API Frameworks"); one not listed is not
    /// offered.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub api: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct BannerFormat {
    #[serde(default)]
    pub w: Option<u32>,
    #[serde(default)]
    pub h: Option<u32>,
    /// A flexible size: any banner of aspect ratio `wratio`:`hratio`, at least `wmin` wide.
    #[serde(default)]
    pub wratio: Option<u32>,
    #[serde(default)]
    pub hratio: Option<u32>,
    #[serde(default)]
    pub wmin: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Video<'a> {
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub mimes: Vec<Text<'a>>,
    #[serde(default)]
    pub minduration: Option<u32>,
    #[serde(default)]
    pub maxduration: Option<u32>,
    /// 2.6: the only lengths the slot takes, in seconds.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rqddurs: Vec<u32>,
    /// The VAST versions the player plays (protocol codes).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub protocols: Vec<u16>,
    /// 2.5's single protocol, before `protocols`.
    #[serde(default)]
    pub protocol: Option<u16>,
    /// Blocked creative attributes (codes of the list "Creative Attributes").
    #[serde(default, deserialize_with = "null_as_empty")]
    pub battr: Vec<u32>,
    /// 1: linear ads only; 2: non-linear (overlay) ads only.
    #[serde(default)]
    pub linearity: Option<u32>,
    /// The API frameworks the player runs (list "API Frameworks"); one not listed is not run.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub api: Vec<u32>,
    #[serde(default)]
    pub w: Option<u32>,
    #[serde(default)]
    pub h: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct App<'a> {
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub bundle: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub cat: Vec<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Device<'a> {
    #[serde(borrow, default)]
    pub os: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub osv: Option<Text<'a>>,
    #[serde(default)]
    pub devicetype: Option<u32>,
    #[serde(default)]
    pub connectiontype: Option<u32>,
    #[serde(borrow, default)]
    pub ifa: Option<Text<'a>>,
    #[serde(default)]
    pub lmt: Option<u8>,
    #[serde(borrow, default)]
    pub geo: Option<Geo<'a>>,
    #[serde(borrow, default)]
    pub language: Option<Text<'a>>,
    #[serde(default)]
    pub ext: Option<DeviceExt>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeviceExt {
    /// iOS App Tracking Transparency status (the IAB extension): 0 not determined, 1 restricted,
    /// 2 denied, 3 authorised.
    #[serde(default)]
    pub atts: Option<u8>,
}

impl Device<'_> {
    /// Limit ad tracking, or an App Tracking Transparency status other than authorised.
    fn limits_tracking(&self) -> bool {
        self.lmt == Some(1) || self.ext.as_ref().and_then(|e| e.atts).is_some_and(|atts| atts < 3)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Geo<'a> {
    /// ISO 3166-1 alpha-3.
    #[serde(borrow, default)]
    pub country: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct User<'a> {
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    /// The user's home, where the device's location is not given.
    #[serde(borrow, default)]
    pub geo: Option<Geo<'a>>,
    #[serde(borrow, default)]
    pub consent: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub ext: Option<UserExt<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserExt<'a> {
    #[serde(borrow, default)]
    pub consent: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Regs<'a> {
    #[serde(default)]
    pub coppa: Option<u8>,
    #[serde(default)]
    pub gdpr: Option<u8>,
    /// OpenRTB 2.6 puts the US privacy string here; 2.5 exchanges put it in `ext`.
    #[serde(borrow, default)]
    pub us_privacy: Option<Text<'a>>,
    /// The GPP string (2.6; 2.5 exchanges put it in `ext`). Its `gpp_sid` is not needed: the
    /// string's header lists its sections.
    #[serde(borrow, default)]
    pub gpp: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub ext: Option<RegsExt<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegsExt<'a> {
    #[serde(default)]
    pub gdpr: Option<u8>,
    #[serde(borrow, default)]
    pub us_privacy: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub gpp: Option<Text<'a>>,
}

/// Why an impression gets no bid without a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Nothing adsnap serves: audio, or no banner, video or native object.
    Format,
    /// A native impression whose `request` lists no asset adsnap can read (each needs its id).
    NativeRequest,
    /// The floor is in a currency other than the snapshot's (`bidfloorcur`, which OpenRTB
    /// defaults to USD), or the request's `cur` leaves the snapshot's out.
    Currency,
    /// The device's OS is neither Android nor iOS.
    Os,
    /// `pmp.private_auction` 1: only the deals listed may bid, and adsnap holds none.
    PrivateAuction,
    /// `secure` 1 while `public_base_url` is plain http: the tracking URLs would not load.
    InsecureTracking,
    /// `wseat` leaves out adsnap's seat, or `bseat` names it.
    Seat,
    /// Past the first [`IMPS_MAX`] impressions of the request.
    ImpsMax,
}

impl Skip {
    pub const ALL: [Skip; 8] = [
        Skip::Format,
        Skip::NativeRequest,
        Skip::Currency,
        Skip::Os,
        Skip::PrivateAuction,
        Skip::InsecureTracking,
        Skip::Seat,
        Skip::ImpsMax,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::Format => "format",
            Skip::NativeRequest => "native_request",
            Skip::Currency => "currency",
            Skip::Os => "os",
            Skip::PrivateAuction => "private_auction",
            Skip::InsecureTracking => "insecure_tracking",
            Skip::Seat => "seat",
            Skip::ImpsMax => "imps_max",
        }
    }
}

/// The slot of an impression, as the bid answers it; what it takes of a creative is its [`Fit`].
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub format: Format,
    /// The slot's size as the impression gives it (a banner's first size); 0 when not given.
    pub width: u16,
    pub height: u16,
    /// OpenRTB `mtype`: 1 banner, 2 video, 4 native.
    pub mtype: u8,
}

/// A size from OpenRTB's `w` and `h`, each capped to `u16`.
fn size(w: Option<u32>, h: Option<u32>) -> (u16, u16) {
    let side = |v: Option<u32>| v.unwrap_or(0).min(u16::MAX as u32) as u16;
    (side(w), side(h))
}

/// A length in seconds from OpenRTB, capped to `u16`.
fn seconds(s: u32) -> u16 {
    s.min(u16::MAX as u32) as u16
}

/// The slots an impression offers, each with what it takes, in the order adsnap prefers them:
/// video (rewarded when `rwdd`), then banner (full screen when `instl`), then native. An exchange
/// that sends more than one object takes any of them, so each is decided and the best bid wins.
/// [`Skip::Format`]: nothing adsnap serves (audio, or an empty impression);
/// [`Skip::NativeRequest`]: only a native object, without a readable request.
///
/// A video slot takes VAST of the MIME types and lengths it lists; a banner slot takes a creative
/// of its `w` by `h` or of any size in `format` (the first [`SLOT_SIZES_MAX`](crate::request::SLOT_SIZES_MAX)). `secure` 1 takes
/// only creatives that load over https.
pub fn slots(imp: &Imp) -> Result<Vec<(Slot, Fit)>, Skip> {
    let secure = imp.secure == Some(1);
    let mut slots = Vec::with_capacity(1);
    if let Some(video) = &imp.video {
        slots.push(video_slot(imp, video, secure));
    }
    if let Some(banner) = &imp.banner {
        slots.push(banner_slot(imp, banner, secure));
    }
    let native = imp
        .native
        .as_ref()
        .map(|native| (native, native.request.and_then(|raw| crate::native_reader::read(raw.get()))));
    match native {
        Some((native, Some(request))) => slots.push((
            Slot { format: Format::Native, width: 0, height: 0, mtype: 4 },
            Fit {
                markup_kind: Some(MarkupKind::NativeJson),
                native: Some(request),
                blocked_attrs: code_mask(&native.battr),
                secure,
                ..Fit::default()
            },
        )),
        Some((_, None)) if slots.is_empty() => return Err(Skip::NativeRequest),
        _ => {}
    }
    if slots.is_empty() {
        return Err(Skip::Format);
    }
    Ok(slots)
}

fn video_slot(imp: &Imp, video: &Video, secure: bool) -> (Slot, Fit) {
    let format = if imp.rwdd == Some(1) { Format::RewardedVideo } else { Format::Interstitial };
    let (width, height) = size(video.w, video.h);
    let fit = Fit {
        markup_kind: Some(MarkupKind::Vast),
        video_mimes: video.mimes.iter().take(SLOT_LIST_MAX).map(|m| m.to_string()).collect(),
        video_min_s: seconds(video.minduration.unwrap_or(0)),
        video_max_s: seconds(video.maxduration.unwrap_or(0)),
        video_lengths_s: video.rqddurs.iter().take(SLOT_LIST_MAX).map(|&s| seconds(s)).collect(),
        video_protocols: video.protocols.iter().take(SLOT_LIST_MAX).copied().chain(video.protocol).collect(),
        blocked_attrs: code_mask(&video.battr),
        video_linearity: match video.linearity {
            Some(kind @ (1 | 2)) => kind as u8,
            _ => 0,
        },
        no_vpaid: !video.api.iter().any(|api| VPAID_APIS.contains(api)),
        secure,
        ..Fit::default()
    };
    (Slot { format, width, height, mtype: 2 }, fit)
}

fn banner_slot(imp: &Imp, banner: &Banner, secure: bool) -> (Slot, Fit) {
    let html = |fit: Fit| Fit {
        markup_kind: Some(MarkupKind::Html),
        blocked_attrs: code_mask(&banner.battr),
        blocked_banner_types: code_mask(&banner.btype),
        no_mraid: !banner.api.iter().any(|api| MRAID_APIS.contains(api)),
        secure,
        ..fit
    };
    if imp.instl == Some(1) {
        return (Slot { format: Format::Interstitial, width: 0, height: 0, mtype: 1 }, html(Fit::default()));
    }
    let mut sizes = Sizes::default();
    let given = (banner.w.is_some() && banner.h.is_some()).then(|| size(banner.w, banner.h));
    let listed = banner.format.iter().map(|f| size(f.w, f.h));
    for (w, h) in given.into_iter().chain(listed).filter(|&(w, h)| w > 0 && h > 0) {
        sizes.add(w, h);
    }
    for format in &banner.format {
        let (w, h) = size(format.wratio, format.hratio);
        sizes.add_ratio(Ratio { w, h, wmin: size(format.wmin, None).0 });
    }
    let bounds = [banner.wmin, banner.hmin, banner.wmax, banner.hmax];
    if bounds.iter().any(Option::is_some) {
        let bound = |given: Option<u32>, side: Option<u32>, open: u16| {
            given.or(side).map_or(open, |v| size(Some(v), None).0)
        };
        sizes.set_range(SizeRange {
            min: (bound(banner.wmin, banner.w, 0), bound(banner.hmin, banner.h, 0)),
            max: (bound(banner.wmax, banner.w, u16::MAX), bound(banner.hmax, banner.h, u16::MAX)),
        });
    }
    let (width, height) = sizes.as_slice().first().copied().unwrap_or((0, 0));
    (Slot { format: Format::Banner, width, height, mtype: 1 }, html(Fit { sizes, ..Fit::default() }))
}

/// VPAID 1.0 and 2.0 in OpenRTB's list "API Frameworks".
const VPAID_APIS: [u32; 2] = [1, 2];
/// MRAID 1.0, 2.0 and 3.0 in OpenRTB's list "API Frameworks".
const MRAID_APIS: [u32; 3] = [3, 5, 6];

/// Codes of an OpenRTB list as a mask, bit `n` for code `n`. Codes the mask cannot hold (0 and
/// above 31) name nothing adsnap serves, so they block nothing.
fn code_mask(codes: &[u32]) -> u32 {
    codes.iter().filter(|&&code| (1..32).contains(&code)).fold(0, |mask, &code| mask | 1 << code)
}

fn device_type(code: u32) -> Option<DeviceType> {
    // OpenRTB list: Device Types. 1 mobile/tablet, 4 phone, 5 tablet, 3 connected TV, 7 set-top box.
    match code {
        1 | 4 => Some(DeviceType::Phone),
        5 => Some(DeviceType::Tablet),
        3 | 7 => Some(DeviceType::ConnectedTv),
        _ => None,
    }
}

fn connection_type(code: u32) -> Option<ConnectionType> {
    // OpenRTB list: Connection Types.
    match code {
        1 => Some(ConnectionType::Ethernet),
        2 => Some(ConnectionType::Wifi),
        3 => Some(ConnectionType::CellularUnknown),
        4 => Some(ConnectionType::Cellular2g),
        5 => Some(ConnectionType::Cellular3g),
        6 => Some(ConnectionType::Cellular4g),
        7 => Some(ConnectionType::Cellular5g),
        _ => None,
    }
}

fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort_unstable();
    values.dedup();
    values
}

impl BidRequest<'_> {
    /// Whether the user may be targeted on what we know of them; `tcf_vendor_id` as configured.
    pub fn signals(&self, tcf_vendor_id: Option<NonZeroU16>) -> PrivacySignals {
        let regs = self.regs.as_ref();
        let user = self.user.as_ref();
        PrivacySignals::read(PrivacyFields {
            coppa: regs.and_then(|r| r.coppa) == Some(1),
            gdpr_applies: regs.and_then(|r| own_or_ext(r.gdpr, &r.ext, |e| e.gdpr)).map(|gdpr| gdpr != 0),
            country: self.country(),
            tcf_consent: user
                .and_then(|u| own_or_ext(u.consent.as_deref(), &u.ext, |e| e.consent.as_deref())),
            us_privacy: regs
                .and_then(|r| own_or_ext(r.us_privacy.as_deref(), &r.ext, |e| e.us_privacy.as_deref())),
            gpp: regs.and_then(|r| own_or_ext(r.gpp.as_deref(), &r.ext, |e| e.gpp.as_deref())),
            limit_ad_tracking: self.device.as_ref().is_some_and(Device::limits_tracking),
            tcf_vendor_id,
        })
    }

    /// The device's country, from `device.geo.country` (ISO 3166-1 alpha-3) as alpha-2, else the
    /// user's home country (`user.geo.country`).
    fn country(&self) -> Option<&'static str> {
        let of = |geo: Option<&Geo>| country_alpha3_to_alpha2(geo?.country.as_deref()?);
        of(self.device.as_ref().and_then(|d| d.geo.as_ref()))
            .or_else(|| of(self.user.as_ref().and_then(|u| u.geo.as_ref())))
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user.as_ref()?.id.as_deref()
    }

    pub fn ifa(&self) -> Option<&str> {
        self.device.as_ref()?.ifa.as_deref()
    }

    /// The OS of the device; `None` for anything but Android and iOS (no bid).
    pub fn os(&self) -> Option<Os> {
        let os = self.device.as_ref()?.os.as_deref()?;
        let is = |name: &str| os.eq_ignore_ascii_case(name);
        if is("android") {
            Some(Os::Android)
        } else if is("ios") || is("ipados") {
            Some(Os::Ios)
        } else {
            None
        }
    }

    /// Whether the request's seat lists let `seat` bid: named in `wseat` when it is sent, not
    /// named in `bseat`.
    pub fn seat_allowed(&self, seat: &str) -> bool {
        let named = |list: &[Text]| list.iter().take(SLOT_LIST_MAX).any(|s| &**s == seat);
        (self.wseat.is_empty() || named(&self.wseat)) && !named(&self.bseat)
    }

    /// What every impression of the request shares, read once: the device, the app, the user
    /// and the blocklists. A child-directed app, known from the snapshot, puts the request under
    /// COPPA whatever `regs` says, as an SDK request's app does in `AdRequest::resolve`.
    /// [`Skip::Os`] when the device runs neither Android nor iOS.
    pub fn resolve(
        &self,
        s: &Snapshot,
        signals: PrivacySignals,
        now_unix_s: i64,
        request_hash: u64,
    ) -> Result<Impressions, Skip> {
        let os = self.os().ok_or(Skip::Os)?;
        let device = self.device.as_ref();
        let bundle = self.app.as_ref().and_then(|a| a.bundle.as_deref()).unwrap_or_default();
        let known_app = s.app_by_bundle(bundle);
        let privacy =
            PrivacySignals { coppa: signals.coppa || known_app.is_some_and(|(_, app)| app.coppa), ..signals };
        let app_category = known_app
            .map(|(_, app)| app.category.to_native())
            .or_else(|| self.app.as_ref()?.cat.iter().find_map(|c| pack_iab_category(c)));
        // Domains hash as the catalog's do, in lower case; one buffer serves them all.
        let mut lower = String::new();
        let mut domain_hash = |domain: &str| {
            lower.clear();
            lower.extend(domain.chars().map(|c| c.to_ascii_lowercase()));
            key_hash(&lower)
        };
        let query = Query {
            // The impression's own: set by `Impressions::query`.
            format: Format::Banner,
            ad_unit_idx: None,
            floor_cpm_micros: 0,
            unit_floor_cpm_micros: 0,
            fit: Fit::default(),
            os,
            os_version: device.and_then(|d| pack_os_version(d.osv.as_deref()?)).unwrap_or(0),
            country: self.country().and_then(pack_country),
            language: device.and_then(|d| pack_language(d.language.as_deref()?.get(..2)?)),
            device_type: device.and_then(|d| device_type(d.devicetype?)),
            connection: device.and_then(|d| connection_type(d.connectiontype?)),
            app_idx: known_app.map(|(i, _)| i),
            app_bundle_hash: key_hash(bundle),
            app_category,
            privacy,
            user_key: privacy.user_key(self.user_id(), self.ifa()),
            now_unix_s,
            pacing_draw_ppm: crate::request::pacing_draw_ppm(request_hash),
            test: self.test == Some(1),
            blocked_categories: sorted(
                self.bcat.iter().take(BLOCKLIST_ENTRIES_MAX).filter_map(|c| pack_iab_category(c)).collect(),
            ),
            blocked_domains: sorted(
                self.badv.iter().take(BLOCKLIST_ENTRIES_MAX).map(|d| domain_hash(d)).collect(),
            ),
            blocked_bundles: sorted(
                self.bapp.iter().take(BLOCKLIST_ENTRIES_MAX).map(|b| key_hash(b)).collect(),
            ),
        };
        Ok(Impressions { query })
    }
}

/// A bid request's query, resolved once ([`BidRequest::resolve`]) and fitted to each impression
/// in turn ([`Impressions::query`]).
pub struct Impressions {
    query: Query,
}

impl Impressions {
    /// The request's privacy signals, the app's COPPA flag in.
    pub fn privacy(&self) -> PrivacySignals {
        self.query.privacy
    }

    /// The hashed key of the user's profile, when privacy allows one.
    pub fn user_key(&self) -> Option<u64> {
        self.query.user_key
    }

    /// The query's parts every impression shares (the device, the app, the user); the
    /// impression's own parts are those of the last impression queried, if any.
    pub fn shared(&self) -> &Query {
        &self.query
    }

    /// What one impression asks, or why adsnap gets no decision for it: its slots
    /// ([`slots`]), its floor and the ad unit its `tagid` names.
    pub fn impression(&self, s: &Snapshot, imp: &Imp, currency: &str) -> Result<Impression, Skip> {
        let mut slots = slots(imp)?;
        let priced = imp.bidfloor.is_some_and(|f| f.is_finite() && f > 0.0);
        if priced && !imp.bidfloorcur.as_deref().unwrap_or("USD").eq_ignore_ascii_case(currency) {
            return Err(Skip::Currency);
        }
        if imp.pmp.as_ref().is_some_and(|p| p.private_auction == Some(1)) {
            return Err(Skip::PrivateAuction);
        }
        let floor = imp.bidfloor.filter(|f| f.is_finite() && *f >= 0.0).unwrap_or(0.0);
        let unit = imp.tagid.as_deref().and_then(|t| s.ad_unit_by_id(t));
        if let Some((idx, _)) = unit {
            let blocked = s.ad_unit_blocked_attrs(idx);
            slots.iter_mut().for_each(|(_, fit)| fit.blocked_attrs |= blocked);
        }
        Ok(Impression {
            slots,
            ad_unit_idx: unit.map(|(idx, _)| idx),
            floor_cpm_micros: (floor * 1e6).round() as u64,
            unit_floor_cpm_micros: unit.map_or(0, |(_, u)| u.floor_cpm_micros.to_native()),
        })
    }

    /// The query for slot `slot_idx` of `impression`. Every part of the query that is the
    /// impression's own is set anew, so none carries over from the last; the slot's [`Fit`] is
    /// lent to the query until the next call ([`Impressions::give_back`] returns it).
    pub fn query(&mut self, impression: &mut Impression, slot_idx: usize) -> &Query {
        let q = &mut self.query;
        let (slot, fit) = &mut impression.slots[slot_idx];
        q.format = slot.format;
        q.ad_unit_idx = impression.ad_unit_idx;
        q.floor_cpm_micros = impression.floor_cpm_micros;
        q.unit_floor_cpm_micros = impression.unit_floor_cpm_micros;
        std::mem::swap(&mut q.fit, fit);
        q
    }

    /// Decides each slot `impression` offers (video, banner, native) and returns the slot whose
    /// bid is highest, the first on a tie, with its decision; without a bid, the first slot's.
    /// `None` only for an impression without slots, which [`Impressions::impression`] never
    /// returns.
    pub fn decide(
        &mut self,
        s: &crate::served::Served,
        impression: &mut Impression,
        params: &adsnap_snapshot::schema::ArchivedOverrides,
        user: crate::decision::User<'_>,
    ) -> Option<(usize, crate::decision::Decision)> {
        let mut chosen: Option<(usize, crate::decision::Decision)> = None;
        for slot_idx in 0..impression.slots.len() {
            let decision = crate::decision::decide(s, self.query(impression, slot_idx), params, user);
            self.give_back(impression, slot_idx);
            let better = match (&chosen, &decision.outcome) {
                (None, _) => true,
                (Some((_, best)), Ok(winner)) => {
                    best.outcome.as_ref().map_or(true, |b| winner.ecpm_micros > b.ecpm_micros)
                }
                (Some(_), Err(_)) => false,
            };
            if better {
                chosen = Some((slot_idx, decision));
            }
        }
        chosen
    }

    /// Returns the [`Fit`] lent by [`Impressions::query`] for slot `slot_idx` to `impression`.
    pub fn give_back(&mut self, impression: &mut Impression, slot_idx: usize) {
        std::mem::swap(&mut self.query.fit, &mut impression.slots[slot_idx].1);
    }
}

/// One impression of a bid request, read: [`Impressions::impression`].
pub struct Impression {
    /// The slots it offers, best first ([`slots`]); at least one.
    pub slots: Vec<(Slot, Fit)>,
    ad_unit_idx: Option<usize>,
    floor_cpm_micros: u64,
    unit_floor_cpm_micros: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(regs_and_user: &str) -> PrivacySignals {
        let request = format!(
            r#"{{"id": "a", "imp": [{{"id": "1", "banner": {{"w": 320, "h": 50}}}}], {regs_and_user}}}"#
        );
        serde_json::from_str::<BidRequest>(&request).unwrap().signals(None)
    }

    fn slot_of(imp: &str) -> (Slot, Fit) {
        slots(&serde_json::from_str::<Imp>(imp).unwrap()).unwrap().swap_remove(0)
    }

    #[test]
    fn a_slot_takes_the_sizes_lengths_and_types_its_impression_lists() {
        let (banner, fit) = slot_of(
            r#"{"id": "1", "secure": 1, "banner": {"w": 320, "h": 50,
                "format": [{"w": 300, "h": 250}, {"w": 320, "h": 50}, {"w": 0, "h": 90}, {"w": 728}]}}"#,
        );
        assert_eq!(fit.sizes.as_slice(), [(320, 50), (300, 250)]);
        assert_eq!((banner.width, banner.height, fit.secure), (320, 50, true));
        assert!(fit.sizes.take(300, 250) && !fit.sizes.take(728, 90));
        let many: Vec<String> = (1..=20).map(|w| format!(r#"{{"w": {w}, "h": 50}}"#)).collect();
        let many = slot_of(&format!(r#"{{"id": "1", "banner": {{"format": [{}]}}}}"#, many.join(",")));
        assert_eq!(many.1.sizes.as_slice().len(), crate::request::SLOT_SIZES_MAX);
        assert!(slot_of(r#"{"id": "1", "banner": {}}"#).1.sizes.take(728, 90), "no size: any size");
        // Flexible sizes: a 6.4:1 ratio takes 320x50 and 640x100, not 300x250; with a minimum
        // width of 400, only the larger.
        let flexible = slot_of(
            r#"{"id": "1", "banner": {"format": [{"wratio": 32, "hratio": 5}, {"wratio": 0, "hratio": 1}]}}"#,
        )
        .1;
        assert!(
            flexible.sizes.take(320, 50) && flexible.sizes.take(640, 100) && !flexible.sizes.take(300, 250)
        );
        let wide = slot_of(r#"{"id": "1", "banner": {"format": [{"wratio": 32, "hratio": 5, "wmin": 400}, {"w": 300, "h": 250}]}}"#).1;
        assert!(!wide.sizes.take(320, 50) && wide.sizes.take(640, 100) && wide.sizes.take(300, 250));
        // OpenRTB 2.5's range: a bound left out is the impression's own side, else open.
        let range = slot_of(r#"{"id": "1", "banner": {"wmin": 300, "wmax": 480, "hmin": 50, "hmax": 80}}"#).1;
        let takes = |sizes: &Sizes, list: &[(u16, u16)]| {
            list.iter().map(|&(w, h)| sizes.take(w, h)).collect::<Vec<_>>()
        };
        let probes =
            [(300, 50), (480, 80), (320, 50), (299, 50), (481, 50), (320, 49), (320, 81), (300, 250)];
        assert_eq!(takes(&range.sizes, &probes), [true, true, true, false, false, false, false, false]);
        let desired = slot_of(r#"{"id": "1", "banner": {"w": 320, "h": 50, "wmax": 480}}"#).1;
        assert_eq!(
            takes(&desired.sizes, &[(320, 50), (480, 50), (300, 50), (480, 60), (728, 90)]),
            [true, true, false, false, false]
        );
        let open = slot_of(r#"{"id": "1", "banner": {"wmin": 400}}"#).1;
        assert_eq!(takes(&open.sizes, &[(400, 1), (1024, 768), (399, 50)]), [true, true, false]);
        let empty = slot_of(r#"{"id": "1", "banner": {"wmin": 500, "wmax": 400}}"#).1;
        assert_eq!(
            takes(&empty.sizes, &[(450, 50), (320, 50)]),
            [false, false],
            "an empty range takes nothing"
        );

        let video = slot_of(
            r#"{"id": "1", "video": {"mimes": ["video/mp4"], "minduration": 5, "maxduration": 100000, "rqddurs": [15, 30]}}"#,
        );
        let fit = &video.1;
        assert_eq!((fit.video_min_s, fit.video_max_s, fit.secure), (5, u16::MAX, false));
        assert!(fit.takes_video("video/mp4", 15) && fit.takes_video("Video/MP4", 30));
        assert!(!fit.takes_video("video/mp4", 20) && !fit.takes_video("video/webm", 15));
        let short = slot_of(r#"{"id": "1", "video": {"maxduration": 20}}"#).1;
        assert!(short.takes_video("video/webm", 20) && !short.takes_video("video/mp4", 21));
        let long = slot_of(r#"{"id": "1", "video": {"minduration": 20}}"#).1;
        assert!(long.takes_video("video/mp4", 60) && !long.takes_video("video/mp4", 19));
    }

    #[test]
    fn blocked_codes_become_masks_and_codes_past_the_mask_block_nothing() {
        assert_eq!(code_mask(&[]), 0);
        assert_eq!(code_mask(&[1, 6, 16, 6]), 1 << 1 | 1 << 6 | 1 << 16);
        assert_eq!(code_mask(&[0, 32, 500, u32::MAX, 31]), 1 << 31);
        let (_, fit) = slot_of(r#"{"id": "1", "banner": {"w": 320, "h": 50, "battr": [6], "btype": [4]}}"#);
        assert_eq!((fit.blocked_attrs, fit.blocked_banner_types), (1 << 6, 1 << 4));
        let (_, fit) =
            slot_of(r#"{"id": "1", "video": {"battr": [16], "mimes": null}, "banner": {"btype": [4]}}"#);
        assert_eq!((fit.blocked_attrs, fit.blocked_banner_types), (1 << 16, 0), "the video's lists");
    }

    #[test]
    fn strings_are_borrowed_from_the_body_unless_escaped() {
        let body = br#"{"id": "plain", "imp": [{"id": "1\u0032", "tagid": "a\/b"}], "cur": ["USD"]}"#;
        let request: BidRequest = serde_json::from_slice(body).unwrap();
        assert!(matches!(request.id.0, Cow::Borrowed("plain")));
        assert!(matches!(request.cur[0].0, Cow::Borrowed("USD")));
        assert_eq!((&*request.imp[0].id, request.imp[0].tagid.as_deref()), ("12", Some("a/b")));
        assert!(matches!(request.imp[0].id.0, Cow::Owned(_)));
        let err = serde_json::from_slice::<BidRequest>(br#"{"id": 7, "imp": []}"#).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn seats_and_skip_reasons() {
        let allowed = |seats: &str| {
            let text = format!(r#"{{"id": "a", "imp": [], {seats}}}"#);
            serde_json::from_str::<BidRequest>(&text).unwrap().seat_allowed("adsnap")
        };
        assert!(allowed(r#""wseat": ["x", "adsnap"]"#));
        assert!(!allowed(r#""wseat": ["x"]"#));
        assert!(!allowed(r#""bseat": ["adsnap"]"#));
        assert!(allowed(r#""bseat": ["x"], "wseat": []"#));
        // `Metrics::skipped` indexes its series by the reason's discriminant.
        for (idx, skip) in Skip::ALL.into_iter().enumerate() {
            assert_eq!(skip as usize, idx, "{skip:?}");
        }
    }

    #[test]
    fn lists_sent_as_null_read_as_empty() {
        let request = r#"{"id": "a", "bcat": null, "badv": null, "bapp": null, "cur": null,
            "wseat": null, "bseat": null, "app": {"bundle": "b", "cat": null},
            "imp": [{"id": "1", "banner": {"w": 320, "h": 50, "format": null},
                     "video": {"mimes": null, "rqddurs": null}}]}"#;
        let parsed: BidRequest = serde_json::from_str(request).unwrap();
        assert!(
            parsed.bcat.is_empty()
                && parsed.badv.is_empty()
                && parsed.bapp.is_empty()
                && parsed.cur.is_empty()
        );
        assert!(parsed.app.unwrap().cat.is_empty());
        assert!(parsed.imp[0].banner.as_ref().unwrap().format.is_empty());
        assert!(parsed.imp[0].video.as_ref().unwrap().mimes.is_empty());
        // A list of the wrong type is still refused.
        assert!(serde_json::from_str::<BidRequest>(r#"{"id": "a", "imp": [], "bcat": "IAB1"}"#).is_err());
    }

    #[test]
    fn privacy_is_read_where_2_5_and_2_6_exchanges_put_it() {
        let opted_out = "DBABLA~BVQVAAAAAgA";
        assert!(signals(&format!(r#""regs": {{"gpp": "{opted_out}", "gpp_sid": [7]}}"#)).us_privacy_opt_out);
        assert!(signals(&format!(r#""regs": {{"ext": {{"gpp": "{opted_out}"}}}}"#)).us_privacy_opt_out);
        assert!(signals(r#""regs": {"us_privacy": "1YYN"}"#).us_privacy_opt_out);
        assert!(signals(r#""regs": {"ext": {"us_privacy": "1YYN"}}"#).us_privacy_opt_out);
        assert!(
            !signals(r#""regs": {"gpp": "DBABLA~BVQqAAAAAgA", "us_privacy": "1YNN"}"#).us_privacy_opt_out
        );
        // GDPR applies where regs says so, else where the device is.
        assert!(signals(r#""device": {"geo": {"country": "DEU"}}"#).gdpr_applies);
        assert!(!signals(r#""device": {"geo": {"country": "USA"}}"#).gdpr_applies);
        assert!(!signals(r#""device": {"geo": {"country": "DEU"}}, "regs": {"gdpr": 0}"#).gdpr_applies);
        assert!(
            !signals(r#""device": {"geo": {"country": "DEU"}}, "regs": {"ext": {"gdpr": 0}}"#).gdpr_applies
        );
        assert!(signals(r#""device": {"geo": {"country": "USA"}}, "regs": {"gdpr": 1}"#).gdpr_applies);
        // Limited tracking from lmt or an App Tracking Transparency status short of authorised.
        let device = |device: &str| signals(&format!(r#""device": {device}"#)).limit_ad_tracking;
        assert!(device(r#"{"lmt": 1}"#));
        assert!(!device(r#"{"lmt": 0}"#));
        for atts in 0..3 {
            assert!(device(&format!(r#"{{"lmt": 0, "ext": {{"atts": {atts}}}}}"#)), "{atts}");
        }
        assert!(!device(r#"{"lmt": 0, "ext": {"atts": 3}}"#));
        assert!(device(r#"{"lmt": 1, "ext": {"atts": 3}}"#));
        // GDPR consent from user.consent (2.6), user.ext.consent (2.5) or a GPP TCF section.
        let tcf = crate::tcf::tests::tc_string(&[1, 3, 4], &[], &[]);
        assert!(!signals(r#""regs": {"gdpr": 1}"#).profile_allowed());
        let refused = crate::tcf::tests::tc_string(&[], &[], &[]);
        assert!(!signals(&format!(r#""regs": {{"gdpr": 1}}, "user": {{"consent": "{refused}"}}"#))
            .profile_allowed());
        assert!(
            signals(&format!(r#""regs": {{"gdpr": 1}}, "user": {{"consent": "{tcf}"}}"#)).profile_allowed()
        );
        assert!(signals(&format!(
            r#""regs": {{"ext": {{"gdpr": 1}}}}, "user": {{"ext": {{"consent": "{tcf}"}}}}"#
        ))
        .profile_allowed());
        assert!(signals(&format!(r#""regs": {{"gdpr": 1, "gpp": "DBABMA~{tcf}", "gpp_sid": [2]}}"#))
            .profile_allowed());
    }
}

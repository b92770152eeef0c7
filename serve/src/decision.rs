//! The decision: candidates from the snapshot's index, filters, and the first eligible candidate
//! in expected-revenue order. Everything is a look-up in the mapped snapshot; nothing allocates.

use std::cmp::Ordering;

use adsnap_snapshot::schema::{
    ArchivedAdUnit, ArchivedCampaign, ArchivedCandidate, ArchivedCreative, ArchivedOverrides,
    ArchivedPublisherApp, ArchivedSpan, CampaignStatus, COUNTRY_ANY, PPM_ONE,
};
use adsnap_snapshot::{iab_parent, Format, MarkupKind, Snapshot};

use crate::request::Query;
use crate::served::Served;

/// What the server knows of the user from their profile, as the decision asks it.
pub trait UserFacts {
    fn in_segment(&self, segment_id: u32) -> bool;
    /// Whether the user already installed the app with this bundle hash (`key_hash`).
    fn has_installed(&self, bundle_hash: u64) -> bool;
    /// Impressions of the campaign the user saw in the current window of `period_s`.
    fn impressions_in_window(&self, campaign_id: u32, period_s: u32, now_unix_s: i64) -> u32;
}

impl UserFacts for adsnap_profile_store::Profile {
    fn in_segment(&self, segment_id: u32) -> bool {
        adsnap_profile_store::Profile::in_segment(self, segment_id)
    }

    fn has_installed(&self, bundle_hash: u64) -> bool {
        adsnap_profile_store::Profile::has_installed(self, bundle_hash)
    }

    fn impressions_in_window(&self, campaign_id: u32, period_s: u32, now_unix_s: i64) -> u32 {
        adsnap_profile_store::Profile::impressions_in_window(self, campaign_id, period_s, now_unix_s)
    }
}

/// The user a decision is for: their profile when one was read in time, and whether privacy
/// allows targeting on it (segments, installed apps). Frequency caps apply whenever a profile
/// was read: they limit, they do not target.
#[derive(Clone, Copy, Default)]
pub struct User<'a> {
    pub profile: Option<&'a dyn UserFacts>,
    pub personalised: bool,
}

/// The winning candidate of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winner {
    pub campaign_idx: u32,
    pub creative_idx: u32,
    /// Expected revenue per mille after the arm's bid multiplier.
    pub ecpm_micros: u64,
}

/// Why a request got no ad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoFill {
    /// The index has nothing for this format, market and OS.
    NoCandidates,
    /// Every candidate scanned was filtered out.
    Filtered,
    /// The best remaining candidates pay less than the floor (the ad unit's or the request's).
    BelowFloor,
    /// The scan limit was reached before an eligible candidate.
    ScanLimit,
}

impl NoFill {
    pub fn name(self) -> &'static str {
        match self {
            NoFill::NoCandidates => "no_candidates",
            NoFill::Filtered => "filtered",
            NoFill::BelowFloor => "below_floor",
            NoFill::ScanLimit => "scan_limit",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Result<Winner, NoFill>,
    pub n_scanned: u32,
}

fn scale_ppm(value: u64, ppm: u32) -> u64 {
    (value as u128 * ppm as u128 / PPM_ONE as u128) as u64
}

/// The deterministic order of the index: eCPM descending, then campaign and creative index.
fn order(c: &ArchivedCandidate) -> (std::cmp::Reverse<u64>, u32, u32) {
    (std::cmp::Reverse(c.ecpm_micros.to_native()), c.campaign_idx.to_native(), c.creative_idx.to_native())
}

/// Decides one request with the parameters of its assignment.
pub fn decide(s: &Served, q: &Query, params: &ArchivedOverrides, user: User<'_>) -> Decision {
    let a = s.archive();
    let unit = q.ad_unit_idx.and_then(|i| a.ad_units.get(i));
    let app = q.app_idx.and_then(|i| a.apps.get(i));
    // The arm's multiplier moves the ad unit's floor, never the floor the request itself sets:
    // an exchange refuses a bid under its `bidfloor`.
    let unit_floor = scale_ppm(q.unit_floor_cpm_micros, params.floor_multiplier_ppm.to_native());
    let floor_micros = q.floor_cpm_micros.max(unit_floor);
    let bid_ppm = params.bid_multiplier_ppm.to_native();
    let limit = params.candidates_scanned_max.to_native();
    let country_slot = q.country.map_or(&[][..], |c| s.candidates(q.format, c, q.os));
    let any_slot = s.candidates(q.format, COUNTRY_ANY, q.os);
    if country_slot.is_empty() && any_slot.is_empty() {
        return Decision { outcome: Err(NoFill::NoCandidates), n_scanned: 0 };
    }
    let (mut i, mut j, mut n_scanned) = (0, 0, 0u32);
    loop {
        // Merge the two slots, both sorted best first.
        let next = match (country_slot.get(i), any_slot.get(j)) {
            (None, None) => return Decision { outcome: Err(NoFill::Filtered), n_scanned },
            (Some(x), Some(y)) if order(x).cmp(&order(y)) == Ordering::Greater => {
                j += 1;
                (y, true)
            }
            (Some(x), _) => {
                i += 1;
                (x, false)
            }
            (None, Some(y)) => {
                j += 1;
                (y, true)
            }
        };
        let (candidate, from_any) = next;
        if n_scanned == limit {
            return Decision { outcome: Err(NoFill::ScanLimit), n_scanned };
        }
        n_scanned += 1;
        let ecpm_micros = scale_ppm(candidate.ecpm_micros.to_native(), bid_ppm);
        if ecpm_micros < floor_micros {
            // Both slots are sorted: nothing after this pays more.
            return Decision { outcome: Err(NoFill::BelowFloor), n_scanned };
        }
        let campaign = &a.campaigns[candidate.campaign_idx.to_native() as usize];
        if from_any && q.country.is_some_and(|c| contains_u16(s, &campaign.country_overrides, c)) {
            // This campaign has its own, market-priced entry in the country's slot.
            continue;
        }
        let creative_idx = candidate.creative_idx.to_native();
        let creative = &a.creatives[creative_idx as usize];
        let ctx = Eligibility { s, q, unit, app, params, user };
        if ctx.campaign(campaign) && ctx.creative(creative_idx, creative) {
            let winner = Winner {
                campaign_idx: candidate.campaign_idx.to_native(),
                creative_idx: candidate.creative_idx.to_native(),
                ecpm_micros,
            };
            return Decision { outcome: Ok(winner), n_scanned };
        }
    }
}

fn contains_u16(s: &Snapshot, span: &ArchivedSpan, value: u16) -> bool {
    !span.is_empty() && s.pool_u16(span).binary_search_by_key(&value, |v| v.to_native()).is_ok()
}

fn contains_u64(s: &Snapshot, span: &ArchivedSpan, value: u64) -> bool {
    !span.is_empty() && s.pool_u64(span).binary_search_by_key(&value, |v| v.to_native()).is_ok()
}

/// A packed IAB category is in a list when it or its tier-1 parent is.
fn contains_category(s: &Snapshot, span: &ArchivedSpan, category: u16) -> bool {
    contains_u16(s, span, category) || contains_u16(s, span, iab_parent(category))
}

struct Eligibility<'a> {
    s: &'a Served,
    q: &'a Query,
    unit: Option<&'a ArchivedAdUnit>,
    app: Option<&'a ArchivedPublisherApp>,
    params: &'a ArchivedOverrides,
    user: User<'a>,
}

impl Eligibility<'_> {
    fn campaign(&self, c: &ArchivedCampaign) -> bool {
        let (s, q) = (self.s, self.q);
        let t = &c.targeting;
        let schedule_ok = c.status.get() == CampaignStatus::Active
            && c.start_unix_s.to_native() <= q.now_unix_s
            && q.now_unix_s < c.end_unix_s.to_native();
        let min_os = t.min_os_version.to_native();
        let device_ok = match (t.device_types, q.device_type) {
            (0, _) => true,
            (mask, Some(d)) => mask & d.bit() != 0,
            (_, None) => false,
        };
        let connection_ok = match (t.connection_types, q.connection) {
            (0, _) => true,
            (mask, Some(c)) => mask & c.bit() != 0,
            (_, None) => false,
        };
        let language_ok =
            t.languages.is_empty() || q.language.is_some_and(|l| contains_u16(s, &t.languages, l));
        let app_ok = (t.app_allow.is_empty() || contains_u64(s, &t.app_allow, q.app_bundle_hash))
            && !contains_u64(s, &t.app_block, q.app_bundle_hash)
            && (t.app_categories.is_empty()
                || q.app_category.is_some_and(|c| contains_category(s, &t.app_categories, c)))
            && q.blocked_bundles.binary_search(&c.app_bundle_hash.to_native()).is_err();
        schedule_ok
            && (min_os == 0 || q.os_version >= min_os)
            && device_ok
            && connection_ok
            && language_ok
            && app_ok
            && self.user_allows(c)
            && self.advertiser_allowed(c)
            && self.paced(c)
    }

    /// Segments, apps already installed and frequency caps. Without a profile, or where privacy
    /// forbids targeting on it, a campaign that needs a segment cannot be shown; exclusions and
    /// installs cannot be known and do not exclude.
    fn user_allows(&self, c: &ArchivedCampaign) -> bool {
        let t = &c.targeting;
        let targetable = self.user.profile.filter(|_| self.user.personalised);
        let segments_ok = match targetable {
            None => t.segments_include.is_empty(),
            Some(p) => {
                let mut include = self.s.pool_u32(&t.segments_include).iter();
                let mut exclude = self.s.pool_u32(&t.segments_exclude).iter();
                (t.segments_include.is_empty() || include.any(|id| p.in_segment(id.to_native())))
                    && !exclude.any(|id| p.in_segment(id.to_native()))
                    && !p.has_installed(c.app_bundle_hash.to_native())
            }
        };
        let cap = c.frequency_cap_impressions.to_native();
        let capped = cap > 0
            && self.params.frequency_caps_enabled
            && self.user.profile.is_some_and(|p| {
                p.impressions_in_window(
                    c.id.to_native(),
                    c.frequency_cap_period_s.to_native(),
                    self.q.now_unix_s,
                ) >= cap
            });
        segments_ok && !capped
    }

    fn advertiser_allowed(&self, c: &ArchivedCampaign) -> bool {
        let s = self.s;
        let advertiser = &s.archive().advertisers[c.advertiser_idx.to_native() as usize];
        let (domain, category) = (advertiser.domain_hash.to_native(), advertiser.category.to_native());
        let q = self.q;
        let request_ok = q.blocked_domains.binary_search(&domain).is_err()
            && q.blocked_categories.binary_search(&category).is_err()
            && q.blocked_categories.binary_search(&iab_parent(category)).is_err();
        let unit_ok = self.unit.is_none_or(|u| {
            !contains_u64(s, &u.blocked_domains, domain)
                && !contains_category(s, &u.blocked_categories, category)
        });
        let app_ok = self.app.is_none_or(|app| {
            !contains_u64(s, &app.blocked_domains, domain)
                && !contains_category(s, &app.blocked_categories, category)
        });
        request_ok && unit_ok && app_ok
    }

    /// The pacing throttle: a campaign bids on a request when the request's draw, mixed with the
    /// campaign id so that campaigns are throttled independently, is under its throttle.
    fn paced(&self, c: &ArchivedCampaign) -> bool {
        if !self.params.pacing_enabled {
            return true;
        }
        let throttle = c.pacing_throttle_ppm.to_native();
        if throttle >= PPM_ONE {
            return true;
        }
        let mixed = xxhash_rust::xxh3::xxh3_64_with_seed(
            &c.id.to_native().to_le_bytes(),
            self.q.pacing_draw_ppm as u64,
        );
        ((mixed >> 11) % PPM_ONE as u64) < throttle as u64
    }

    fn creative(&self, creative_idx: u32, cr: &ArchivedCreative) -> bool {
        let fit = &self.q.fit;
        // A banner must be one of its slot's sizes exactly; full-screen and native formats adapt.
        let size_ok =
            cr.format.get() != Format::Banner || fit.sizes.take(cr.width.to_native(), cr.height.to_native());
        let video_ok = cr.markup_kind.get() != MarkupKind::Vast
            || (fit.takes_video(self.s.str(&cr.mime), cr.video_duration_s.to_native())
                && (fit.video_protocols.is_empty()
                    || crate::vast::plays(
                        fit.video_protocols.iter().copied(),
                        self.s.vast_protocol(creative_idx),
                    ))
                && ((fit.video_linearity == 0 && !fit.no_vpaid)
                    || crate::vast::fits_player(
                        self.s.vast_shape(creative_idx),
                        fit.video_linearity,
                        !fit.no_vpaid,
                    )));
        let native_ok = cr.markup_kind.get() != MarkupKind::NativeJson
            || fit.native.as_ref().is_none_or(|request| {
                crate::native::assign(&request.assets, self.s.native_assets(creative_idx)).is_some()
            });
        size_ok
            && video_ok
            && native_ok
            && fit.markup_kind.is_none_or(|kind| cr.markup_kind.get() == kind)
            && (!fit.secure || self.s.creative_is_secure(creative_idx))
            // Each look-up below touches a table of its own, so it is made only when the slot
            // asks (SDK requests never do).
            && (fit.blocked_attrs == 0 || fit.blocked_attrs & self.s.creative_attrs(creative_idx) == 0)
            && (fit.blocked_banner_types == 0
                || fit.blocked_banner_types & self.s.banner_types(creative_idx) == 0)
            && !(fit.no_mraid && self.s.loads_mraid(creative_idx))
    }
}

//! Markets: predicted rates, expected revenue per mille, pacing, and the targeting index that
//! turns a decision into table look-ups.

use std::cmp::Reverse;

use adsnap_snapshot::schema::{self, slot_idx, Candidate, Span, COUNTRY_ANY, N_INDEX_SLOTS, PPM_ONE};
use adsnap_snapshot::{is_country_code, pack_country, Os};

use crate::catalog::{self, files};
use crate::compile::{At, Compiler};
use crate::diag::Diagnostics;
use crate::error::BuildError;
use crate::read::for_each_csv_record;
use crate::rules::check_rate;

/// The lowest throttle pacing sets: a campaign far ahead of its budget still bids on one request
/// in a hundred, so that it keeps learning and can recover when traffic changes.
pub const PACING_THROTTLE_PPM_MIN: u32 = 10_000;
/// Spend is only trusted to measure a campaign's pace after it has run this long.
const PACING_ELAPSED_S_MIN: i64 = 3_600;
const DAY_S: f64 = 86_400.0;

/// One row of `predicted_rates.csv`, resolved.
#[derive(Clone, Copy, Debug)]
pub struct RateRow {
    pub campaign_idx: u32,
    /// Packed country, or [`COUNTRY_ANY`] for `*`.
    pub country: u16,
    pub ctr: f64,
    pub cvr: f64,
    pub line: u64,
}

/// Expected revenue per thousand impressions, in micros.
pub fn ecpm_micros(bid_type: schema::BidType, bid_micros: u64, ctr: f64, cvr: f64) -> u64 {
    let per_impression = match bid_type {
        schema::BidType::Cpm => return bid_micros,
        schema::BidType::Cpc => bid_micros as f64 * ctr,
        schema::BidType::Cpi => bid_micros as f64 * ctr * cvr,
    };
    (per_impression * 1000.0).round() as u64
}

/// The share of requests a campaign should bid on so that it spends its remaining budget evenly
/// over its remaining time, never more than its daily budget a day.
///
/// The pace it spent at so far is measured as spend over elapsed time; that pace was reached
/// under some earlier throttle, so this is a first-order correction that the next snapshot
/// refines. A campaign with no spend history bids on everything.
pub fn pacing_throttle_ppm(c: &schema::Campaign, now_unix_s: i64) -> u32 {
    if c.spend_micros >= c.total_budget_micros || c.end_unix_s <= now_unix_s {
        return 0;
    }
    let elapsed_s = now_unix_s - c.start_unix_s;
    if elapsed_s < PACING_ELAPSED_S_MIN || c.spend_micros == 0 {
        return PPM_ONE;
    }
    let remaining = (c.total_budget_micros - c.spend_micros) as f64;
    let days_left = ((c.end_unix_s - now_unix_s) as f64 / DAY_S).max(1.0 / 24.0);
    let wanted_per_day = (remaining / days_left).min(c.daily_budget_micros as f64);
    let observed_per_day = c.spend_micros as f64 / (elapsed_s as f64 / DAY_S);
    let share = (wanted_per_day / observed_per_day).clamp(0.0, 1.0);
    ((share * PPM_ONE as f64).round() as u32).clamp(PACING_THROTTLE_PPM_MIN, PPM_ONE)
}

/// Why a campaign is not in the index, if it is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unserved {
    NotActive,
    BudgetSpent,
    Ended,
    NoCreatives,
}

pub fn unserved_reason(c: &schema::Campaign, now_unix_s: i64) -> Option<Unserved> {
    if c.status != schema::CampaignStatus::Active {
        Some(Unserved::NotActive)
    } else if c.spend_micros >= c.total_budget_micros {
        Some(Unserved::BudgetSpent)
    } else if c.end_unix_s <= now_unix_s {
        Some(Unserved::Ended)
    } else if c.creatives.len == 0 {
        Some(Unserved::NoCreatives)
    } else {
        None
    }
}

/// Counts of campaigns left out of the index, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub n_campaigns_served: u64,
    pub n_not_active: u64,
    pub n_budget_spent: u64,
    pub n_ended: u64,
    pub n_no_creatives: u64,
}

impl Compiler<'_> {
    pub(crate) fn read_rates(&mut self) -> Result<(), BuildError> {
        let mut diags = std::mem::take(&mut self.diags);
        let (dir, progress) = (self.dir, self.progress);
        let result =
            for_each_csv_record(dir, files::PREDICTED_RATES, &mut diags, progress, |d, line, row| {
                self.rate(d, At { file: files::PREDICTED_RATES, line }, row);
                Ok(())
            });
        self.diags = diags;
        result?;
        self.rates.sort_by_key(|r| (r.campaign_idx, r.country, r.line));
        for w in self
            .rates
            .windows(2)
            .filter(|w| (w[0].campaign_idx, w[0].country) == (w[1].campaign_idx, w[1].country))
        {
            let reason = format!("repeats the rates of line {} for the same campaign and market", w[0].line);
            self.diags.push(files::PREDICTED_RATES, w[1].line, "", reason);
        }
        Ok(())
    }

    fn rate(&mut self, d: &mut Diagnostics, at: At, row: catalog::PredictedRate) {
        let Ok(campaign_idx) = self.campaigns.binary_search_by_key(&row.campaign_id, |c| c.id) else {
            self.missing_reference(d, at, "campaign_id", files::CAMPAIGNS, &row.campaign_id, "campaign");
            return;
        };
        let country = match row.country.as_str() {
            "*" => COUNTRY_ANY,
            code => match pack_country(code).filter(|_| is_country_code(code)) {
                Some(packed) => packed,
                None => {
                    at.err(d, "country", format!("{code:?} is neither \"*\" nor an ISO 3166-1 alpha-2 code"));
                    return;
                }
            },
        };
        let platform = self.campaigns[campaign_idx].platform;
        if row.os != "*" && Os::from_name(&row.os) != Some(platform) {
            at.err(
                d,
                "os",
                format!("{:?} is neither \"*\" nor the campaign's platform {:?}", row.os, platform.name()),
            );
        }
        let ctr_ok = at.check(d, "ctr", check_rate(row.ctr, false));
        let cvr_ok = at.check(d, "cvr", check_rate(row.cvr, true));
        if ctr_ok && cvr_ok {
            let campaign_idx = campaign_idx as u32;
            self.rates.push(RateRow { campaign_idx, country, ctr: row.ctr, cvr: row.cvr, line: at.line });
        }
    }

    /// Builds the targeting index: one posting per servable creative and market, each slot
    /// sorted best first. Also fills each worldwide campaign's `country_overrides`.
    pub(crate) fn build_index(&mut self) -> Result<(schema::Index, IndexStats), BuildError> {
        let default =
            self.manifest.as_ref().map_or(catalog::Rates { ctr: 0.0, cvr: 0.0 }, |m| m.default_rates);
        let mut postings: Vec<(u32, Candidate)> = Vec::new();
        let mut stats = IndexStats::default();
        let mut rates_at = 0;
        let mut overrides = Vec::new();
        for campaign_idx in 0..self.campaigns.len() {
            let rates_start = rates_at;
            while rates_at < self.rates.len() && self.rates[rates_at].campaign_idx as usize == campaign_idx {
                rates_at += 1;
            }
            let rates = &self.rates[rates_start..rates_at];
            let campaign = &self.campaigns[campaign_idx];
            match unserved_reason(campaign, self.now_unix_s) {
                Some(Unserved::NotActive) => stats.n_not_active += 1,
                Some(Unserved::BudgetSpent) => stats.n_budget_spent += 1,
                Some(Unserved::Ended) => stats.n_ended += 1,
                Some(Unserved::NoCreatives) => stats.n_no_creatives += 1,
                None => {
                    stats.n_campaigns_served += 1;
                    overrides.clear();
                    self.post_campaign(campaign_idx, rates, default, &mut postings, &mut overrides);
                    let span = self.pools.push_u16(&overrides)?;
                    self.campaigns[campaign_idx].country_overrides = span;
                }
            }
        }
        postings.sort_unstable_by_key(|(slot, c)| {
            (*slot, Reverse(c.ecpm_micros), c.campaign_idx, c.creative_idx)
        });
        Ok((index_from_postings(postings)?, stats))
    }

    /// Adds the postings of one servable campaign; `overrides` receives the countries where a
    /// worldwide campaign has a market-specific price.
    fn post_campaign(
        &self,
        campaign_idx: usize,
        rates: &[RateRow],
        default: catalog::Rates,
        postings: &mut Vec<(u32, Candidate)>,
        overrides: &mut Vec<u16>,
    ) {
        let c = &self.campaigns[campaign_idx];
        let global = rates
            .iter()
            .find(|r| r.country == COUNTRY_ANY)
            .map_or((default.ctr, default.cvr), |r| (r.ctr, r.cvr));
        let ecpm = |(ctr, cvr): (f64, f64)| ecpm_micros(c.bid_type, c.bid_micros, ctr, cvr);
        let rate_for =
            |country: u16| rates.iter().find(|r| r.country == country).map_or(global, |r| (r.ctr, r.cvr));
        let countries =
            &self.pools.u16s[c.targeting.countries.start as usize..][..c.targeting.countries.len as usize];
        for creative_idx in c.creatives.start..c.creatives.start + c.creatives.len {
            let format = self.creatives[creative_idx as usize].format;
            let mut post = |country: u16, ecpm_micros: u64| {
                let slot = slot_idx(format, country, c.platform) as u32;
                postings
                    .push((slot, Candidate { ecpm_micros, campaign_idx: campaign_idx as u32, creative_idx }));
            };
            if countries.is_empty() {
                post(COUNTRY_ANY, ecpm(global));
                for r in rates.iter().filter(|r| r.country != COUNTRY_ANY) {
                    post(r.country, ecpm((r.ctr, r.cvr)));
                }
            } else {
                for &country in countries {
                    post(country, ecpm(rate_for(country)));
                }
            }
        }
        if countries.is_empty() {
            overrides.extend(rates.iter().filter(|r| r.country != COUNTRY_ANY).map(|r| r.country));
        }
    }
}

fn index_from_postings(postings: Vec<(u32, Candidate)>) -> Result<schema::Index, BuildError> {
    if postings.len() > u32::MAX as usize {
        return Err(BuildError::Limit { what: format!("{} index entries, more than 2^32", postings.len()) });
    }
    let mut slots = vec![Span::EMPTY; N_INDEX_SLOTS];
    let mut candidates = Vec::with_capacity(postings.len());
    for (slot, candidate) in postings {
        let span = &mut slots[slot as usize];
        if span.len == 0 {
            span.start = candidates.len() as u32;
        }
        span.len += 1;
        candidates.push(candidate);
    }
    Ok(schema::Index { slots, candidates })
}

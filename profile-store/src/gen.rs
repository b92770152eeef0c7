//! A seeded generator of realistic profiles for benchmarks and demos: heavy-tailed activity (a
//! few users see most impressions), the top ten countries carrying most users, iOS ahead in the
//! US and Android elsewhere, popular apps installed far more often than the long tail.
//!
//! Each user is a pure function of the seed and its index, so any slice of a population can be
//! made on its own (in parallel, or again later) and comes out the same.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::profile::{os, FrequencyCounter, Profile, ProfileFields, UserKey, FREQUENCY_COUNTERS_MAX};

/// Countries with their share of users; the rest share what is left evenly.
const TOP_COUNTRIES: [(&str, &str, f64); 10] = [
    ("US", "en", 0.18),
    ("IN", "hi", 0.12),
    ("BR", "pt", 0.08),
    ("ID", "id", 0.07),
    ("RU", "ru", 0.05),
    ("MX", "es", 0.05),
    ("DE", "de", 0.04),
    ("JP", "ja", 0.04),
    ("GB", "en", 0.04),
    ("FR", "fr", 0.03),
];
/// iOS share of users in the US and elsewhere.
const IOS_SHARE_US: f64 = 0.55;
const IOS_SHARE_ELSEWHERE: f64 = 0.22;
/// Catalog segment ids drawn from `1..=SEGMENT_IDS`, popular ones more often.
pub const SEGMENT_IDS: u32 = 200;
/// Campaign ids frequency counters are drawn from.
pub const CAMPAIGN_IDS: u32 = 10_000;
/// Apps installed are drawn from this many bundles, `com.gen.app{rank}`, popular ranks first.
pub const APP_BUNDLES: u64 = 100_000;
/// The power applied to a uniform draw to make an index heavy-tailed (higher: heavier head).
const POPULARITY_EXPONENT: i32 = 4;
const DAY_S: u32 = 86_400;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct GenOptions {
    pub seed: u64,
    /// Last-seen times fall in the 30 days before this.
    pub now_unix_s: i64,
}

/// The raw id of generated user `idx`; its key is `UserKey::of_id` of it.
pub fn user_id(seed: u64, idx: u64) -> String {
    format!("gen-{seed}-{idx}")
}

/// The bundle id of generated app `rank`.
pub fn app_bundle(rank: u64) -> String {
    format!("com.gen.app{rank}")
}

fn popular(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let u: f64 = rng.random();
    ((u.powi(POPULARITY_EXPONENT) * n as f64) as u64).min(n - 1)
}

fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64, max: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    (median * (sigma * z).exp()).clamp(0.0, max)
}

fn country(rng: &mut ChaCha8Rng) -> (&'static str, &'static str) {
    let mut u: f64 = rng.random();
    for (country, language, share) in TOP_COUNTRIES {
        if u < share {
            return (country, language);
        }
        u -= share;
    }
    let codes = &adsnap_snapshot::COUNTRY_CODES;
    (codes[rng.random_range(0..codes.len())], "en")
}

/// Generated user `idx`: its key and profile.
pub fn user(options: &GenOptions, idx: u64) -> (UserKey, Profile) {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (country, language) = country(&mut rng);
    let ios_share = if country == "US" { IOS_SHARE_US } else { IOS_SHARE_ELSEWHERE };
    let os = if rng.random_bool(ios_share) { os::IOS } else { os::ANDROID };
    // Activity: a median user has seen a handful of ads, a few have seen thousands.
    let n_impressions = log_normal(&mut rng, 6.0, 1.6, 200_000.0) as u32;
    let n_clicks = (f64::from(n_impressions) * rng.random_range(0.0..0.03)) as u32;
    let n_installs = (f64::from(n_clicks) * rng.random_range(0.0..0.2)) as u32;
    let n_segments = log_normal(&mut rng, 3.0, 0.9, 40.0) as usize;
    let segments = (0..n_segments).map(|_| 1 + popular(&mut rng, u64::from(SEGMENT_IDS)) as u32).collect();
    let n_installed = log_normal(&mut rng, 10.0, 0.8, 300.0) as usize;
    let installed = (0..n_installed)
        .map(|_| adsnap_snapshot::key_hash(&app_bundle(popular(&mut rng, APP_BUNDLES))))
        .collect();
    let last_seen_unix_s =
        options.now_unix_s - (log_normal(&mut rng, 2.0 * 3600.0, 2.0, 30.0 * 86_400.0) as i64);
    let n_counters = (log_normal(&mut rng, 1.0, 1.0, 30.0) as usize).min(n_impressions as usize);
    let mut frequency: Vec<FrequencyCounter> = (0..n_counters.min(FREQUENCY_COUNTERS_MAX))
        .map(|_| FrequencyCounter {
            campaign_id: 1 + popular(&mut rng, u64::from(CAMPAIGN_IDS)) as u32,
            period_s: DAY_S,
            window_start_unix_s: crate::profile::window_start(DAY_S, last_seen_unix_s),
            n_impressions: rng.random_range(1..=5),
        })
        .collect();
    frequency.sort_unstable_by_key(|c| c.campaign_id);
    frequency.dedup_by_key(|c| c.campaign_id);
    let fields = ProfileFields {
        country: adsnap_snapshot::pack_country(country),
        language: adsnap_snapshot::pack_language(language),
        os,
        last_seen_unix_s,
        n_impressions,
        n_clicks,
        n_installs,
        segments,
        installed,
        frequency,
    };
    let profile = Profile::from_fields(fields).expect("generated profiles stay within every limit");
    (UserKey::of_id(&user_id(options.seed, idx)), profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_users_are_heavy_tailed_and_reproducible() {
        let options = GenOptions { seed: 7, now_unix_s: 1_795_000_000 };
        let users: Vec<_> = (0..20_000).map(|i| user(&options, i)).collect();
        assert_eq!(users[123], user(&options, 123));
        let mut impressions: Vec<u64> = users.iter().map(|(_, p)| u64::from(p.n_impressions())).collect();
        impressions.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = impressions.iter().sum();
        let top_5pct: u64 = impressions[..1000].iter().sum();
        assert!(top_5pct * 3 > total, "top 5% of users saw {top_5pct} of {total} impressions");
        let us = adsnap_snapshot::pack_country("US");
        let n_us = users.iter().filter(|(_, p)| p.country() == us).count();
        assert!((2800..4400).contains(&n_us), "{n_us} US users of 20000");
        let ios_us = users.iter().filter(|(_, p)| p.country() == us && p.os() == os::IOS).count();
        assert!(ios_us * 2 > n_us, "iOS leads in the US");
        let app0 = adsnap_snapshot::key_hash(&app_bundle(0));
        let app_tail = adsnap_snapshot::key_hash(&app_bundle(APP_BUNDLES - 1));
        let has = |h| users.iter().filter(|(_, p)| p.has_installed(h)).count();
        assert!(has(app0) > 10 * has(app_tail).max(1), "popular apps are installed more");
    }
}

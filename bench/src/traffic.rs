//! Realistic ad request streams for the load and decision benchmarks: heavy-tailed apps and users,
//! the top markets carrying most traffic, the OS of the requesting app, and a share of requests
//! with limited tracking, no consent or COPPA; TCF consent strings from Europe, US privacy and GPP
//! strings from the US. Fill comes out of the catalog, not a setting.

use adsnap_snapshot::{Format, Os, Snapshot, COUNTRY_CODES};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Markets and their share of requests (the rest spreads over every other country).
const TOP_COUNTRIES: [(&str, f64); 10] = [
    ("US", 0.24),
    ("JP", 0.07),
    ("KR", 0.04),
    ("GB", 0.05),
    ("DE", 0.05),
    ("FR", 0.04),
    ("BR", 0.07),
    ("IN", 0.09),
    ("CA", 0.03),
    ("AU", 0.02),
];
/// Distinct users; their ids are the profile generator's (`gen-1-IDX`), so that a store filled
/// by it holds a profile for every user the stream names.
pub const USERS: u64 = 1_000_000;
/// The profile generator's seed the user ids are made with.
pub const USER_SEED: u64 = 1;

/// Picks an index in `0..n` with weight `1 / (rank + 1)`: a Zipf-like heavy tail.
fn zipf(rng: &mut ChaCha8Rng, n: usize) -> usize {
    // Inverse of the continuous approximation of the harmonic CDF: rank = n^u - 1.
    let u: f64 = rng.random_range(0.0..1.0);
    (((n as f64 + 1.0).powf(u) - 1.0) as usize).min(n - 1)
}

fn country(rng: &mut ChaCha8Rng) -> &'static str {
    let mut draw: f64 = rng.random_range(0.0..1.0);
    for (code, share) in TOP_COUNTRIES {
        if draw < share {
            return code;
        }
        draw -= share;
    }
    COUNTRY_CODES[rng.random_range(0..COUNTRY_CODES.len())]
}

/// `n` JSON bodies for `POST /v1/ad`, deterministic for a seed.
pub fn requests(snapshot: &Snapshot, n: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A stream of its own, so that the rest of each request is what it was before these fields.
    let mut us_privacy_rng = ChaCha8Rng::seed_from_u64(seed ^ US_PRIVACY_SEED);
    let mut tcf_rng = ChaCha8Rng::seed_from_u64(seed ^ TCF_SEED);
    let a = snapshot.archive();
    let n_units = a.ad_units.len();
    (0..n)
        .map(|i| {
            let user = zipf(&mut rng, USERS as usize);
            let privacy_draw: f64 = rng.random_range(0.0..1.0);
            let (lmt, coppa, gdpr_no_consent) = (privacy_draw < 0.12, privacy_draw > 0.97, (0.9..0.95).contains(&privacy_draw));
            // A known user's requests come from one country, in one language, on one OS (those
            // of the user's generated profile); a request without an id from anywhere.
            let facts = (!lmt).then(|| user_facts(user as u64));
            let unit = unit_on(&mut rng, a, n_units, facts.as_ref().map(|f| f.2));
            let app = &a.apps[unit.app_idx.to_native() as usize];
            let formats: Vec<Format> = Format::ALL.into_iter().filter(|f| unit.formats & f.bit() != 0).collect();
            let format = formats[rng.random_range(0..formats.len())];
            let os = app.platform.get();
            let os_version = match os {
                Os::Android => ["10", "11", "12", "13", "14", "15"][rng.random_range(0..6)],
                Os::Ios => ["15.8", "16.7", "17.5", "18.1", "18.2"][rng.random_range(0..5)],
            };
            let user_json = if lmt { String::new() } else { format!(r#","user":{{"id":"{}"}}"#, adsnap_profile_store::gen::user_id(USER_SEED, user as u64)) };
            let device_type = if rng.random_bool(0.85) { "phone" } else { "tablet" };
            let connection = ["wifi", "wifi", "wifi", "cellular_4g", "cellular_4g", "cellular_5g"][rng.random_range(0..6)];
            let (country, language) = match facts {
                Some((country, language, _)) => (country, language),
                None => (country(&mut rng).to_owned(), "en".to_owned()),
            };
            let us_privacy_json = us_privacy(&mut us_privacy_rng, &country);
            let gdpr_json = match gdpr_no_consent {
                true => r#""gdpr":true"#,
                false => gdpr(&mut tcf_rng, &country),
            };
            format!(
                r#"{{"request_id":"b{seed}-{i}","app":{{"bundle":"{bundle}"}},"ad_unit_id":"{unit_id}","format":"{format}","device":{{"os":"{os}","os_version":"{os_version}","country":"{country}","language":"{language}","type":"{device_type}","connection":"{connection}","lmt":{lmt}}}{user_json},"privacy":{{"coppa":{coppa},{gdpr_json}{us_privacy_json}}}}}"#,
                bundle = snapshot.str(&app.bundle),
                unit_id = snapshot.str(&unit.id),
                format = format.name(),
                os = os.name(),
            )
        })
        .collect()
}

const US_PRIVACY_SEED: u64 = 0x6770_7573;

/// The US privacy fields of a request from `country`: from the US, 40% carry a US privacy
/// string and a GPP string with the national section, and 2% of those opt out; elsewhere none.
fn us_privacy(rng: &mut ChaCha8Rng, country: &str) -> &'static str {
    let draw: f64 = rng.random_range(0.0..1.0);
    match country {
        "US" if draw < 0.008 => r#","us_privacy":"1YYN","gpp":"DBABLA~BVQVAAAAAgA""#,
        "US" if draw < 0.4 => r#","us_privacy":"1YNN","gpp":"DBABLA~BVQqAAAAAgA""#,
        _ => "",
    }
}

const TCF_SEED: u64 = 0x7463_6632;

/// The GDPR fields of a request from `country` that did not already say GDPR applies without
/// consent: from the EEA and the UK, GDPR applies and a TCF v2 consent string comes with it,
/// 85% consenting to every purpose, 15% to purposes 1, 2 and 7 only (no personalised ads).
fn gdpr(rng: &mut ChaCha8Rng, country: &str) -> &'static str {
    let draw: f64 = rng.random_range(0.0..1.0);
    match adsnap_serve::privacy::in_gdpr_area(country) {
        true if draw < 0.15 => {
            r#""gdpr":true,"tcf_consent":"CO5rKAAO5rKAAAKABBENBkEAAMIAAAAAAAYgAVAAAAAAAQAAAAA""#
        }
        true => r#""gdpr":true,"tcf_consent":"CO5rKAAO5rKAAAKABBENBkEAAPIAAAAAAAYgAVAAAAAAAQAAAAA""#,
        false => r#""gdpr":false"#,
    }
}

/// Draws of an ad unit before one on an app of the user's OS is given up on.
const UNIT_DRAWS_MAX: usize = 64;

/// A heavy-tailed ad unit, on an app of `os` when one is found within `UNIT_DRAWS_MAX` draws.
fn unit_on<'a>(
    rng: &mut ChaCha8Rng,
    a: &'a adsnap_snapshot::schema::ArchivedSnapshot,
    n_units: usize,
    os: Option<Os>,
) -> &'a adsnap_snapshot::schema::ArchivedAdUnit {
    let mut unit = &a.ad_units[zipf(rng, n_units)];
    for _ in 1..UNIT_DRAWS_MAX {
        if os.is_none_or(|os| a.apps[unit.app_idx.to_native() as usize].platform.get() == os) {
            break;
        }
        unit = &a.ad_units[zipf(rng, n_units)];
    }
    unit
}

/// The country, language and OS of user `idx`'s generated profile.
fn user_facts(idx: u64) -> (String, String, Os) {
    use adsnap_profile_store::gen::{user, GenOptions};
    use adsnap_profile_store::profile::os;
    let (_, profile) = user(&GenOptions { seed: USER_SEED, now_unix_s: 0 }, idx);
    let letters = |packed: Option<[u8; 2]>, default: &str| {
        packed.and_then(|l| String::from_utf8(l.to_vec()).ok()).unwrap_or_else(|| default.to_owned())
    };
    let country = letters(profile.country().and_then(adsnap_snapshot::unpack_country), "US");
    let language = letters(profile.language().and_then(adsnap_snapshot::unpack_language), "en");
    let os = if profile.os() == os::IOS { Os::Ios } else { Os::Android };
    (country, language, os)
}

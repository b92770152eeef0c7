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

/// One request of the stream, drawn, before it is written for an SDK or as a bid request.
struct Draw<'s> {
    i: usize,
    bundle: &'s str,
    unit_id: &'s str,
    /// The unit's banner size (0 by 0 for other formats).
    unit_size: (u16, u16),
    format: Format,
    os: Os,
    os_version: &'static str,
    user_id: Option<String>,
    phone: bool,
    connection: &'static str,
    country: String,
    language: String,
    lmt: bool,
    coppa: bool,
    gdpr: Gdpr,
    /// A US privacy string and a GPP string, from the US.
    us_privacy: Option<(&'static str, &'static str)>,
}

/// Whether GDPR applies, and the TCF consent string that comes with it.
#[derive(Clone, Copy)]
enum Gdpr {
    NotApplicable,
    NoConsent,
    Consent(&'static str),
}

/// `n` requests drawn from the snapshot, deterministic for a seed.
fn draws(snapshot: &Snapshot, n: usize, seed: u64) -> Vec<Draw<'_>> {
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
            let (lmt, coppa, gdpr_no_consent) =
                (privacy_draw < 0.12, privacy_draw > 0.97, (0.9..0.95).contains(&privacy_draw));
            // A known user's requests come from one country, in one language, on one OS (those
            // of the user's generated profile); a request without an id from anywhere.
            let facts = (!lmt).then(|| user_facts(user as u64));
            let unit = unit_on(&mut rng, a, n_units, facts.as_ref().map(|f| f.2));
            let app = &a.apps[unit.app_idx.to_native() as usize];
            let formats: Vec<Format> =
                Format::ALL.into_iter().filter(|f| unit.formats & f.bit() != 0).collect();
            let format = formats[rng.random_range(0..formats.len())];
            let os = app.platform.get();
            let os_version = match os {
                Os::Android => ["10", "11", "12", "13", "14", "15"][rng.random_range(0..6)],
                Os::Ios => ["15.8", "16.7", "17.5", "18.1", "18.2"][rng.random_range(0..5)],
            };
            let user_id = (!lmt).then(|| adsnap_profile_store::gen::user_id(USER_SEED, user as u64));
            let phone = rng.random_bool(0.85);
            let connection =
                ["wifi", "wifi", "wifi", "cellular_4g", "cellular_4g", "cellular_5g"][rng.random_range(0..6)];
            let (country, language) = match facts {
                Some((country, language, _)) => (country, language),
                None => (country(&mut rng).to_owned(), "en".to_owned()),
            };
            let us_privacy = us_privacy(&mut us_privacy_rng, &country);
            let gdpr = match gdpr_no_consent {
                true => Gdpr::NoConsent,
                false => gdpr(&mut tcf_rng, &country),
            };
            let unit_size = (unit.width.to_native(), unit.height.to_native());
            Draw {
                i,
                bundle: snapshot.str(&app.bundle),
                unit_id: snapshot.str(&unit.id),
                unit_size,
                format,
                os,
                os_version,
                user_id,
                phone,
                connection,
                country,
                language,
                lmt,
                coppa,
                gdpr,
                us_privacy,
            }
        })
        .collect()
}

/// `n` JSON bodies for `POST /v1/ad`, deterministic for a seed.
pub fn requests(snapshot: &Snapshot, n: usize, seed: u64) -> Vec<String> {
    draws(snapshot, n, seed)
        .into_iter()
        .map(|d| {
            let user_json = d.user_id.map_or(String::new(), |id| format!(r#","user":{{"id":"{id}"}}"#));
            let gdpr_json = match d.gdpr {
                Gdpr::NotApplicable => r#""gdpr":false"#.to_owned(),
                Gdpr::NoConsent => r#""gdpr":true"#.to_owned(),
                Gdpr::Consent(tcf) => format!(r#""gdpr":true,"tcf_consent":"{tcf}""#),
            };
            let us_privacy_json =
                d.us_privacy.map_or(String::new(), |(usp, gpp)| format!(r#","us_privacy":"{usp}","gpp":"{gpp}""#));
            format!(
                r#"{{"request_id":"b{seed}-{i}","app":{{"bundle":"{bundle}"}},"ad_unit_id":"{unit_id}","format":"{format}","device":{{"os":"{os}","os_version":"{os_version}","country":"{country}","language":"{language}","type":"{device_type}","connection":"{connection}","lmt":{lmt}}}{user_json},"privacy":{{"coppa":{coppa},{gdpr_json}{us_privacy_json}}}}}"#,
                i = d.i,
                bundle = d.bundle,
                unit_id = d.unit_id,
                format = d.format.name(),
                os = d.os.name(),
                os_version = d.os_version,
                country = d.country,
                language = d.language,
                device_type = if d.phone { "phone" } else { "tablet" },
                connection = d.connection,
                lmt = d.lmt,
                coppa = d.coppa,
            )
        })
        .collect()
}

/// `n` OpenRTB 2.6 bid requests for `POST /openrtb2/bid`, deterministic for a seed: the same
/// draws as [`requests`], written as an exchange sends them. One impression each, named by the
/// ad unit's id in `tagid`, `secure`, with a floor; an interstitial offers a banner and a video,
/// as exchanges' full-screen impressions do; the device, user and regs objects carry what an
/// exchange's do, with the fields adsnap does not read (user agent, IP, make and model, the
/// supply chain) left in, so that reading costs what it costs in production.
pub fn bid_requests(snapshot: &Snapshot, n: usize, seed: u64) -> Vec<String> {
    const VIDEO: &str = r#""video":{"mimes":["video/mp4","video/webm"],"minduration":5,"maxduration":60,"protocols":[2,3,5,6,7,8],"w":720,"h":1280,"plcmt":4,"api":[7],"battr":[]}"#;
    const NATIVE: &str = r#""native":{"ver":"1.2","request":"{\"ver\":\"1.2\",\"assets\":[{\"id\":1,\"required\":1,\"img\":{\"type\":3,\"wmin\":300,\"hmin\":150}},{\"id\":2,\"img\":{\"type\":1}},{\"id\":3,\"title\":{\"len\":90}},{\"id\":4,\"data\":{\"type\":2,\"len\":140}}]}"}"#;
    draws(snapshot, n, seed)
        .into_iter()
        .map(|d| {
            let (w, h) = d.unit_size;
            let slot = match d.format {
                Format::Banner => {
                    format!(r#""banner":{{"w":{w},"h":{h},"format":[{{"w":{w},"h":{h}}}],"api":[3,5,6,7],"btype":[1]}}"#)
                }
                Format::Interstitial => {
                    format!(r#""instl":1,"banner":{{"format":[{{"w":320,"h":480}}],"api":[3,5,6,7]}},{VIDEO}"#)
                }
                Format::RewardedVideo => format!(r#""rwdd":1,{VIDEO}"#),
                Format::Native => NATIVE.to_owned(),
            };
            let floor = ["0.05", "0.25", "0.5", "1.2"][d.i % 4];
            let (os, model, ua) = match d.os {
                Os::Android => (
                    "Android",
                    r#""make":"Google","model":"Pixel 8""#,
                    "Mozilla/5.0 (Linux; Android; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
                ),
                Os::Ios => (
                    "iOS",
                    r#""make":"Apple","model":"iPhone15,2""#,
                    "Mozilla/5.0 (iPhone; CPU iPhone OS like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
                ),
            };
            let country = adsnap_snapshot::country_alpha2_to_alpha3(&d.country).unwrap_or("USA");
            let connection = match d.connection {
                "wifi" => 2,
                "cellular_4g" => 6,
                _ => 7,
            };
            let ifa = match d.lmt {
                true => "00000000-0000-0000-0000-000000000000".to_owned(),
                false => format!("6d9f0c4e-{:04x}-4a5b-9c3d-{:012x}", d.i % 0x10000, d.i),
            };
            let consent = match d.gdpr {
                Gdpr::Consent(tcf) => format!(r#","ext":{{"consent":"{tcf}"}}"#),
                _ => String::new(),
            };
            let user = match &d.user_id {
                Some(id) => format!(r#","user":{{"id":"{id}"{consent}}}"#),
                None if !consent.is_empty() => format!(r#","user":{{{}}}"#, &consent[1..]),
                None => String::new(),
            };
            let gdpr = matches!(d.gdpr, Gdpr::NoConsent | Gdpr::Consent(_)) as u8;
            let us_privacy =
                d.us_privacy.map_or(String::new(), |(usp, gpp)| format!(r#","us_privacy":"{usp}","gpp":"{gpp}","gpp_sid":[7]"#));
            format!(
                r#"{{"id":"r{seed}-{i}","at":1,"tmax":250,"cur":["USD"],"imp":[{{"id":"1","tagid":"{unit_id}","secure":1,"bidfloor":{floor},"bidfloorcur":"USD",{slot}}}],"app":{{"id":"app-{bundle}","bundle":"{bundle}","publisher":{{"id":"pub-7"}}}},"device":{{"ua":"{ua}","ip":"203.0.113.{ip}","geo":{{"country":"{country}","type":2}},"os":"{os}","osv":"{os_version}","devicetype":{devicetype},"connectiontype":{connection},"ifa":"{ifa}","lmt":{lmt},"language":"{language}",{model}}}{user},"regs":{{"coppa":{coppa},"gdpr":{gdpr}{us_privacy}}},"bcat":["IAB25","IAB26","IAB7-39"],"badv":["blocked-advertiser.example"],"source":{{"tid":"t{seed}-{i}","schain":{{"ver":"1.0","complete":1,"nodes":[{{"asi":"exchange.example","sid":"7","hp":1}}]}}}}}}"#,
                i = d.i,
                unit_id = d.unit_id,
                bundle = d.bundle,
                os_version = d.os_version,
                ip = d.i % 250 + 1,
                devicetype = if d.phone { 4 } else { 5 },
                lmt = d.lmt as u8,
                language = d.language,
                coppa = d.coppa as u8,
            )
        })
        .collect()
}

const US_PRIVACY_SEED: u64 = 0x6770_7573;

/// The US privacy fields of a request from `country`: from the US, 40% carry a US privacy
/// string and a GPP string with the national section, and 2% of those opt out; elsewhere none.
fn us_privacy(rng: &mut ChaCha8Rng, country: &str) -> Option<(&'static str, &'static str)> {
    let draw: f64 = rng.random_range(0.0..1.0);
    match country {
        "US" if draw < 0.008 => Some(("1YYN", "DBABLA~BVQVAAAAAgA")),
        "US" if draw < 0.4 => Some(("1YNN", "DBABLA~BVQqAAAAAgA")),
        _ => None,
    }
}

const TCF_SEED: u64 = 0x7463_6632;

/// The GDPR fields of a request from `country` that did not already say GDPR applies without
/// consent: from the EEA and the UK, GDPR applies and a TCF v2 consent string comes with it,
/// 85% consenting to every purpose, 15% to purposes 1, 2 and 7 only (no personalised ads).
fn gdpr(rng: &mut ChaCha8Rng, country: &str) -> Gdpr {
    let draw: f64 = rng.random_range(0.0..1.0);
    match adsnap_serve::privacy::in_gdpr_area(country) {
        true if draw < 0.15 => Gdpr::Consent("CO5rKAAO5rKAAAKABBENBkEAAMIAAAAAAAYgAVAAAAAAAQAAAAA"),
        true => Gdpr::Consent("CO5rKAAO5rKAAAKABBENBkEAAPIAAAAAAAYgAVAAAAAAAQAAAAA"),
        false => Gdpr::NotApplicable,
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

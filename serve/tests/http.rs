//! The server over real HTTP on a loopback socket: decisions, tracking, bad input, health,
//! metrics and hot swaps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adsnap_builder::{build, BuildOptions};
use adsnap_serve::{ServeConfig, State};

mod common;
use common::copy_dir;

/// The clock the test catalogs are built for; schedules in the example run 2026–2027.
const NOW_UNIX_S: i64 = 1_795_305_600;

fn example_catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog")
}

fn build_snapshot(catalog: &Path, out: &Path, version: u64) {
    let options = BuildOptions {
        catalog_dir: catalog.to_owned(),
        out_path: out.to_owned(),
        snapshot_version: version,
        now_unix_s: NOW_UNIX_S,
        created_unix_ms: NOW_UNIX_S * 1000,
        progress: indicatif::ProgressBar::hidden(),
    };
    build(&options).unwrap_or_else(|e| panic!("{e}"));
}

struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    state: Arc<State>,
    runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
    dir: tempfile::TempDir,
}

fn start() -> Running {
    start_with(|_| {})
}

fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("prod.snap");
    build_snapshot(&example_catalog(), &snapshot, 1);
    let config = ServeConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        profiles: adsnap_profile_store::ProfilesConfig {
            // A debug build's first disk read can take milliseconds; the tests are about what a
            // profile changes, not the deadline (the store's own tests cover that).
            read_deadline_ms: 2_000,
            embedded: adsnap_profile_store::config::EmbeddedConfig {
                path: dir.path().join("profiles"),
                ..Default::default()
            },
            ..Default::default()
        },
        events: adsnap_events::EventLogConfig {
            dir: dir.path().join("events"),
            ..adsnap_events::EventLogConfig::default()
        },
        snapshot_path: snapshot,
        tracking_key_hex: Some("11".repeat(32)),
        request_body_bytes_max: 4096,
        // The example's schedules are fixed dates; the test must not depend on today's.
        fixed_now_unix_s: Some(NOW_UNIX_S),
        ..ServeConfig::default()
    };
    let mut config = config;
    adjust(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, admin, state) = runtime.block_on(async {
        let listener = adsnap_serve::bind(&config).await.unwrap();
        let admin_listener = adsnap_serve::bind_admin(&config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let mut config = config;
        // Tracking URLs name this server unless the test chose a base of its own.
        if config.public_base_url == ServeConfig::default().public_base_url {
            config.public_base_url = format!("http://{addr}");
        }
        let state = State::new(config).await.unwrap();
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(adsnap_serve::serve_admin(state.clone(), admin_listener, async {
            let _ = admin_stopped.await;
        }));
        tokio::spawn(adsnap_serve::serve(state.clone(), listener, async move {
            let _ = stopped.await;
            let _ = stop_admin.send(());
        }));
        (addr, admin, state)
    });
    Running { addr, admin, state, runtime, _stop: stop, dir }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// Sends `request` on `stream` and reads the reply to the end (the request asks to close).
fn exchange(stream: &mut TcpStream, request: impl AsRef<[u8]>) -> Reply {
    stream.write_all(request.as_ref()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, headers: head.to_lowercase(), body: body.to_owned() }
}

/// One HTTP/1.1 exchange on a fresh connection. The body is bytes, UTF-8 or not.
fn http(addr: SocketAddr, method: &str, path: &str, body: impl AsRef<[u8]>) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.as_ref();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    exchange(&mut stream, [head.as_bytes(), body].concat())
}

const AD_REQUEST: &str = r#"{"request_id":"r-1","app":{"bundle":"com.example.wordsmith"},"ad_unit_id":"wordsmith-android-interstitial","format":"interstitial","device":{"os":"android","os_version":"14","country":"US","language":"en","type":"phone","connection":"wifi"},"user":{"id":"user-42"}}"#;

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

fn path_of(url: &str) -> &str {
    &url[url.find("/v1/").unwrap()..]
}

fn metric(addr: SocketAddr, line_start: &str) -> f64 {
    let text = http(addr, "GET", "/metrics", "").body;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn an_ad_request_is_filled_and_its_tracking_urls_work() {
    let server = start();
    let reply = http(server.addr, "POST", "/v1/ad", AD_REQUEST);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ad = &json(&reply)["ad"];
    // Campaign 101 pays 2.5 USD per install at a 1.4% CTR and 4.1% CVR in the US: 1.435 USD eCPM,
    // above the unit's 1 USD floor, and the best for Android interstitials there.
    assert_eq!(ad["campaign_id"], 101);
    assert_eq!(ad["price_micros"], 1_435_000);
    assert_eq!(ad["format"], "interstitial");
    let markup = ad["markup"].as_str().unwrap();
    assert!(!markup.contains("{{"), "{markup}");
    let click = ad["click_url"].as_str().unwrap();
    let impression = ad["impression_url"].as_str().unwrap();
    assert!(markup.contains(click) && markup.contains(impression));

    assert_eq!(http(server.addr, "GET", path_of(impression), "").status, 204);
    assert_eq!(http(server.addr, "GET", path_of(impression), "").status, 204);
    let counted = r#"adsnap_tracking_events_total{kind="impression",result="counted"}"#;
    let duplicate = r#"adsnap_tracking_events_total{kind="impression",result="duplicate"}"#;
    assert_eq!(metric(server.addr, counted), 1.0);
    assert_eq!(metric(server.addr, duplicate), 1.0);

    let redirect = http(server.addr, "GET", path_of(click), "");
    assert_eq!(redirect.status, 302);
    let token = &click[click.find("t=").unwrap() + 2..];
    let store = "location: https://play.google.com/store/apps/details?id=com.example.mergemeadow";
    let expected = format!("{store}&adsnap_click={}\r\n", token.to_lowercase());
    assert!(redirect.headers.contains(&expected), "{}", redirect.headers);

    // The measurement partner sends the click id back with its install postback: counted once
    // per partner event id, refused when forged or past the attribution window.
    let postback = format!("/v1/install?click={token}&event_id=mmp-1");
    let installed = http(server.addr, "GET", &postback, "");
    assert_eq!(installed.status, 200, "{}", installed.body);
    assert_eq!(json(&installed)["status"], "counted");
    assert_eq!(json(&installed)["campaign_id"], 101);
    assert_eq!(json(&http(server.addr, "GET", &postback, ""))["status"], "duplicate");
    let forged_install = format!("/v1/install?click={}AAA&event_id=mmp-2", &token[..token.len() - 3]);
    assert_eq!(http(server.addr, "GET", &forged_install, "").status, 403);
    let long_id = format!("/v1/install?click={token}&event_id={}", "x".repeat(129));
    let refused = http(server.addr, "GET", &long_id, "");
    assert_eq!((refused.status, json(&refused)["field"].as_str()), (400, Some("event_id")));
    assert_eq!(metric(server.addr, r#"adsnap_tracking_events_total{kind="install",result="counted"}"#), 1.0);
    assert_eq!(
        metric(server.addr, r#"adsnap_tracking_events_total{kind="install",result="duplicate"}"#),
        1.0
    );

    let mut forged = path_of(click).to_owned();
    forged.replace_range(forged.len() - 3.., "AAA");
    assert_eq!(http(server.addr, "GET", &forged, "").status, 403);
    assert_eq!(metric(server.addr, r#"adsnap_tracking_events_total{kind="click",result="forged"}"#), 1.0);
}

/// Every event the server wrote so far, in order.
fn events(server: &Running) -> Vec<adsnap_events::Event<'static>> {
    let log = server.state.events.as_ref().expect("events are on");
    adsnap_events::read_log(log.dir(), adsnap_events::Position::Start)
        .unwrap()
        .map(|event| event.unwrap())
        .collect()
}

#[test]
fn every_decision_and_counted_notice_is_an_event_before_the_response() {
    use adsnap_events::{Channel, EventKind};
    let server = start();
    let reply = http(server.addr, "POST", "/v1/ad", AD_REQUEST);
    let ad = &json(&reply)["ad"];
    let impression = path_of(ad["impression_url"].as_str().unwrap()).to_owned();
    let click = path_of(ad["click_url"].as_str().unwrap()).to_owned();
    let written = events(&server);
    assert_eq!(written.len(), 1, "the decision is in the log when its response arrives");
    let decision = &written[0];
    assert_eq!((decision.kind, decision.channel), (EventKind::Decision, Channel::Sdk));
    assert_eq!((decision.campaign_id, decision.price_micros), (101, 1_435_000));
    assert_eq!(
        (&*decision.app_id, &*decision.ad_unit_id),
        ("wordsmith-android", "wordsmith-android-interstitial")
    );
    assert_eq!(decision.user_key, Some(xxhash_rust::xxh3::xxh3_64(b"user-42")));
    assert_eq!(decision.snapshot_id, server.state.production.load().header().snapshot_id);
    assert_eq!(decision.time_unix_ms, NOW_UNIX_S * 1000);

    for _ in 0..2 {
        assert_eq!(http(server.addr, "GET", &impression, "").status, 204);
    }
    assert_eq!(http(server.addr, "GET", &click, "").status, 302);
    let written = events(&server);
    let kinds: Vec<_> = written.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Decision, EventKind::Impression, EventKind::Click],
        "a duplicate adds nothing"
    );
    let shown = &written[1];
    assert_eq!((shown.request_id, shown.assignment_code), (decision.request_id, decision.assignment_code));
    assert_eq!((shown.campaign_id, shown.creative_id), (decision.campaign_id, decision.creative_id));
    assert_eq!(shown.user_key, decision.user_key);
    // Campaign 101 pays per install: impressions and clicks earn nothing, the install its bid.
    assert_eq!((shown.revenue_micros, written[2].revenue_micros), (0, 0));
    let token = &click[click.find("t=").unwrap() + 2..];
    let postback = format!("/v1/install?click={token}&event_id=mmp-9");
    assert_eq!(http(server.addr, "GET", &postback, "").status, 200);
    let install = events(&server).pop().unwrap();
    assert_eq!(
        (install.kind, install.channel, install.revenue_micros),
        (EventKind::Install, Channel::Partner, 2_500_000)
    );

    // A no-fill is an event too, with its reason; a request refused as bad input is not.
    let unfillable = AD_REQUEST.replace(r#""country":"US""#, r#""country":"AQ""#);
    assert_eq!(http(server.addr, "POST", "/v1/ad", &unfillable).status, 204);
    assert_eq!(http(server.addr, "POST", "/v1/ad", "{").status, 400);
    let last = events(&server).pop().unwrap();
    assert_eq!((last.kind, last.campaign_id, last.no_fill_reason), (EventKind::Decision, 0, 1));
}

#[test]
fn a_log_that_refuses_appends_sheds_requests_and_says_so() {
    // The smallest log: two 64 KiB segments, no shipper to free them.
    let server = start_with(|config| {
        config.events.segment_bytes_max = 64 << 10;
        config.events.log_bytes_max = 128 << 10;
    });
    let mut statuses = Vec::new();
    for _ in 0..5_000 {
        let status = http(server.addr, "POST", "/v1/ad", AD_REQUEST).status;
        statuses.push(status);
        if status == 503 {
            break;
        }
    }
    let reply = http(server.addr, "POST", "/v1/ad", AD_REQUEST);
    assert_eq!(reply.status, 503, "after {} requests: {}", statuses.len(), reply.body);
    assert!(json(&reply)["error"].as_str().unwrap().contains("cannot record events"), "{}", reply.body);
    assert!(statuses[..statuses.len() - 1].iter().all(|&s| s == 200), "only the log's refusal sheds");
    let health = json(&http(server.addr, "GET", "/health", ""));
    assert_eq!(
        (health["status"].as_str(), health["event_log"]["status"].as_str()),
        (Some("degraded"), Some("refusing"))
    );
    // Every answered request has its event; none was answered without one.
    assert_eq!(events(&server).len(), statuses.len() - 1);
}

#[test]
fn privacy_signals_keep_user_keys_out_of_events() {
    let server = start();
    let coppa = AD_REQUEST
        .replace(r#""user":{"id":"user-42"}"#, r#""user":{"id":"user-42"},"privacy":{"coppa":true}"#);
    let no_consent = AD_REQUEST
        .replace(r#""user":{"id":"user-42"}"#, r#""user":{"id":"user-42"},"privacy":{"gdpr":true}"#);
    for body in [&coppa, &no_consent] {
        assert_ne!(http(server.addr, "POST", "/v1/ad", body).status, 400, "{body}");
    }
    let written = events(&server);
    assert_eq!(written.len(), 2);
    // Each signal is counted once per request that carries it.
    let signal =
        |name: &str| metric(server.addr, &format!(r#"adsnap_privacy_signals_total{{signal="{name}"}}"#));
    assert_eq!(signal("coppa"), 1.0);
    assert_eq!(signal("gdpr_applies"), 1.0);
    assert_eq!(signal("gdpr_no_consent"), 1.0);
    assert_eq!(signal("gdpr_no_personalised_ads"), 1.0);
    assert_eq!(signal("us_opt_out"), 0.0);
    assert!(written.iter().all(|e| e.user_key.is_none() && !e.privacy.allows_user_key()), "{written:?}");
}

#[test]
fn a_child_directed_app_is_under_coppa_over_openrtb_too() {
    let server = start();
    // Little Painters is marked COPPA in the catalog; the exchange does not say so.
    let request = r#"{"id": "kids-1", "imp": [{"id": "1", "instl": 1, "banner": {"format": [{"w": 320, "h": 480}]}}],
        "app": {"bundle": "6444000102"}, "user": {"id": "user-42"},
        "device": {"os": "iOS", "osv": "17.2", "devicetype": 4, "ifa": "38400000-8cf0-11bd-b23e-10b96e40000d", "geo": {"country": "USA"}}}"#;
    let reply = http(server.addr, "POST", "/openrtb2/bid", request);
    assert!([200, 204].contains(&reply.status), "{} {}", reply.status, reply.body);
    let written = events(&server);
    assert!(!written.is_empty());
    for event in &written {
        assert!(event.user_key.is_none() && !event.privacy.allows_user_key(), "{event:?}");
    }
    assert_eq!(metric(server.addr, r#"adsnap_privacy_signals_total{signal="coppa"}"#), 1.0);
}

#[test]
fn a_zeroed_advertising_id_is_no_user() {
    let server = start();
    let with_ifa = |ifa: &str| {
        AD_REQUEST
            .replace(r#","user":{"id":"user-42"}"#, "")
            .replace(r#""connection":"wifi""#, &format!(r#""connection":"wifi","ifa":"{ifa}""#))
    };
    let real = "38400000-8cf0-11bd-b23e-10b96e40000d";
    for ifa in [real, "00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000"] {
        assert_eq!(http(server.addr, "POST", "/v1/ad", with_ifa(ifa)).status, 200, "{ifa}");
    }
    let keys: Vec<_> = events(&server).iter().map(|e| e.user_key).collect();
    assert_eq!(keys, [Some(xxhash_rust::xxh3::xxh3_64(real.as_bytes())), None, None]);
}

fn import_profile(server: &Running, user_id: &str, fields: adsnap_profile_store::ProfileFields) {
    let profiles = server.state.profiles.as_ref().expect("profiles are on");
    let key = adsnap_profile_store::UserKey(xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()));
    // The store ages profiles by the real clock: seen now, so not idle.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let fields = adsnap_profile_store::ProfileFields { last_seen_unix_s: now, ..fields };
    let profile = adsnap_profile_store::Profile::from_fields(fields).unwrap();
    server.runtime.block_on(profiles.import(vec![(key, profile)])).unwrap();
}

fn campaign_served(server: &Running, body: &str) -> Option<u64> {
    let reply = http(server.addr, "POST", "/v1/ad", body);
    assert!(reply.status == 200 || reply.status == 204, "{}: {}", reply.status, reply.body);
    (reply.status == 200).then(|| json(&reply)["ad"]["campaign_id"].as_u64().unwrap())
}

#[test]
fn profiles_change_the_decision_where_privacy_allows() {
    let server = start();
    // Campaign 101 leaves out segment 5 and, like every campaign, users who have its app.
    let body = |user: &str| AD_REQUEST.replace("user-42", user);
    import_profile(
        &server,
        "in-segment-5",
        adsnap_profile_store::ProfileFields { segments: vec![5], ..Default::default() },
    );
    let installed = adsnap_snapshot::key_hash("com.example.mergemeadow");
    import_profile(
        &server,
        "has-the-app",
        adsnap_profile_store::ProfileFields { installed: vec![installed], ..Default::default() },
    );
    import_profile(
        &server,
        "in-segment-3",
        adsnap_profile_store::ProfileFields { segments: vec![3], ..Default::default() },
    );
    assert_eq!(campaign_served(&server, &body("no-profile")), Some(101));
    assert_eq!(campaign_served(&server, &body("in-segment-3")), Some(101));
    assert_ne!(campaign_served(&server, &body("in-segment-5")), Some(101));
    assert_ne!(campaign_served(&server, &body("has-the-app")), Some(101));
    // Limited ad tracking: what the profile says may not target the user.
    let lat = body("in-segment-5").replace(r#""connection":"wifi""#, r#""connection":"wifi","lmt":true"#);
    assert_eq!(campaign_served(&server, &lat), Some(101));
    // Nor when the user opted out under US law: by the US privacy string, by a GPP string's US
    // section, or by a GPP string that cannot be read. A GPP string without an opt-out changes
    // nothing.
    let privacy = |fields: &str| {
        body("in-segment-5").replace(
            r#""user":{"id":"in-segment-5"}"#,
            &format!(r#""user":{{"id":"in-segment-5"}},"privacy":{{{fields}}}"#),
        )
    };
    assert_eq!(campaign_served(&server, &privacy(r#""us_privacy":"1YYN""#)), Some(101));
    assert_eq!(campaign_served(&server, &privacy(r#""gpp":"DBABLA~BVQVAAAAAgA""#)), Some(101));
    assert_eq!(campaign_served(&server, &privacy(r#""gpp":"not-gpp""#)), Some(101));
    assert_ne!(campaign_served(&server, &privacy(r#""gpp":"DBABLA~BVQqAAAAAgA""#)), Some(101));
    assert_ne!(campaign_served(&server, &privacy(r#""us_privacy":"1YNN""#)), Some(101));
    // Nor under COPPA, where the profile is not even read.
    let coppa = body("has-the-app")
        .replace(r#""user":{"id":"has-the-app"}"#, r#""user":{"id":"has-the-app"},"privacy":{"coppa":true}"#);
    assert_eq!(campaign_served(&server, &coppa), Some(101));
    let health = json(&http(server.addr, "GET", "/health", ""));
    assert_eq!(health["profile_store"]["backend"], "embedded", "{health}");
}

/// TCF v2 consent strings for vendor 42 (built field by field as the TCF specification lays
/// them out; `tcf::tests::tc_string` in the library builds the same).
const TCF_ALL: &str = "CO5rKAAO5rKAAAKABBENBkEAAPIAAAAAAAYgAVAAAAAAAQAAAAA";
/// Purposes 1, 2 and 7: the profile may be kept, not used to personalise.
const TCF_NO_PERSONALISED_ADS: &str = "CO5rKAAO5rKAAAKABBENBkEAAMIAAAAAAAYgAVAAAAAAAQAAAAA";
/// Every purpose, to vendor 7 only.
const TCF_OTHER_VENDOR: &str = "CO5rKAAO5rKAAAKABBENBkEAAPIAAAAAAAYgADgIAAAAA";
/// Every purpose and vendor 42, whom the publisher refuses purpose 3.
const TCF_RESTRICTED: &str = "CO5rKAAO5rKAAAKABBENBkEAAPIAAAAAAAYgAVAAAAAAAQAAAAhgAIAKg";

#[test]
fn gdpr_consent_is_read_from_the_tcf_string() {
    let server = start_with(|c| c.tcf_vendor_id = std::num::NonZeroU16::new(42));
    import_profile(
        &server,
        "in-segment-5",
        adsnap_profile_store::ProfileFields { segments: vec![5], ..Default::default() },
    );
    // Campaign 101 leaves out segment 5: the user is kept from it only where the profile may
    // be read and used to personalise.
    let gdpr = |extra: &str| {
        AD_REQUEST.replace("user-42", "in-segment-5").replace(
            r#""user":{"id":"in-segment-5"}"#,
            &format!(r#""user":{{"id":"in-segment-5"}},"privacy":{{"gdpr":true{extra}}}"#),
        )
    };
    let tcf = |tc: &str| gdpr(&format!(r#","tcf_consent":"{tc}""#));
    // Without a word on GDPR, it applies where the device is: from Germany, the decision keeps
    // no user key unless the request says GDPR does not apply or consents.
    let german = AD_REQUEST.replace(r#""country":"US""#, r#""country":"DE""#);
    let german_with = |privacy: &str| {
        german.replace(
            r#""user":{"id":"user-42"}"#,
            &format!(r#""user":{{"id":"user-42"}},"privacy":{{{privacy}}}"#),
        )
    };
    let user_key_kept = |body: &str| {
        assert_ne!(http(server.addr, "POST", "/v1/ad", body).status, 400, "{body}");
        events(&server).last().expect("a decision event").user_key.is_some()
    };
    assert!(!user_key_kept(&german));
    assert!(!user_key_kept(&german_with(r#""gdpr":null"#)));
    assert!(user_key_kept(&german_with(r#""gdpr":false"#)));
    assert!(user_key_kept(&german_with(&format!(r#""tcf_consent":"{TCF_ALL}""#))));
    assert!(user_key_kept(AD_REQUEST), "in the US, GDPR does not apply unless the request says so");
    assert_ne!(campaign_served(&server, &tcf(TCF_ALL)), Some(101));
    assert_ne!(campaign_served(&server, &gdpr(&format!(r#","gpp":"DBABMA~{TCF_ALL}""#))), Some(101));
    for refused in [
        gdpr(""),
        tcf(TCF_NO_PERSONALISED_ADS),
        tcf(TCF_OTHER_VENDOR),
        tcf(TCF_RESTRICTED),
        tcf("CP-consent"),
        // Both places: what both grant.
        gdpr(&format!(r#","tcf_consent":"{TCF_ALL}","gpp":"DBABMA~{TCF_OTHER_VENDOR}""#)),
    ] {
        assert_eq!(campaign_served(&server, &refused), Some(101), "{refused}");
    }
    // The same over OpenRTB, in the 2.6 and the 2.5 places.
    let bid = |regs_and_user: &str| {
        let request = format!(
            r#"{{"id": "a", "imp": [{{"id": "1", "tagid": "wordsmith-android-interstitial", "instl": 1,
                "banner": {{"format": [{{"w": 320, "h": 480}}]}}}}],
                "app": {{"bundle": "com.example.wordsmith"}},
                "device": {{"os": "Android", "osv": "14", "geo": {{"country": "USA"}}, "language": "en"}}, {regs_and_user}}}"#
        );
        let reply = http(server.addr, "POST", "/openrtb2/bid", request);
        (reply.status == 200).then(|| json(&reply)["seatbid"][0]["bid"][0]["cid"].clone())
    };
    let served_101 = Some(serde_json::Value::from("101"));
    assert_eq!(
        bid(r#""user": {"id": "nobody"}"#),
        served_101,
        "the campaign is served to users without a profile"
    );
    for (consent, served) in [(TCF_ALL, false), (TCF_OTHER_VENDOR, true)] {
        let v26 =
            format!(r#""regs": {{"gdpr": 1}}, "user": {{"id": "in-segment-5", "consent": "{consent}"}}"#);
        let v25 = format!(
            r#""regs": {{"ext": {{"gdpr": 1}}}}, "user": {{"id": "in-segment-5", "ext": {{"consent": "{consent}"}}}}"#
        );
        for request in [v26, v25] {
            assert_eq!(bid(&request) == served_101, served, "{request}");
        }
    }
}

#[test]
fn impressions_count_against_frequency_caps() {
    let server = start();
    import_profile(
        &server,
        "ios-fan",
        adsnap_profile_store::ProfileFields { segments: vec![2], ..Default::default() },
    );
    // An exchange's interstitial on an iPhone in the US, without a floor: campaign 102 wins it
    // for a user in segment 2, at most 3 impressions a day.
    let bid_request = r#"{"id": "cap-ID", "imp": [{"id": "1", "instl": 1, "video": {"mimes": ["video/mp4"], "w": 720, "h": 1280}}],
        "app": {"bundle": "6444000101"}, "device": {"os": "iOS", "osv": "17.2", "devicetype": 4, "geo": {"country": "USA"}},
        "user": {"id": "ios-fan"}}"#;
    let n_auctions = std::cell::Cell::new(0);
    let won = || {
        n_auctions.set(n_auctions.get() + 1);
        let reply = http(
            server.addr,
            "POST",
            "/openrtb2/bid",
            bid_request.replace("ID", &n_auctions.get().to_string()),
        );
        (reply.status == 200).then(|| json(&reply)["seatbid"][0]["bid"][0].clone())
    };
    for _ in 0..3 {
        let bid = won().expect("a bid");
        assert_eq!(bid["cid"], "102", "{bid}");
        let adm = bid["adm"].as_str().unwrap();
        let impression = &adm[adm.find("/v1/imp?t=").unwrap()..];
        let token_end = impression[10..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let impression = &impression[..10 + token_end.unwrap()];
        assert_eq!(http(server.addr, "GET", impression, "").status, 204);
        // Updates leave the request path through the store's queue; let it drain.
        server.runtime.block_on(server.state.profiles.as_ref().unwrap().flush()).unwrap();
    }
    assert_ne!(
        won().map(|bid| bid["cid"].clone()),
        Some("102".into()),
        "a fourth impression today is over the cap"
    );
}

#[test]
fn requests_without_a_matching_campaign_get_no_fill() {
    let server = start();
    let japan = AD_REQUEST.replace("\"US\"", "\"JP\"");
    assert_eq!(http(server.addr, "POST", "/v1/ad", &japan).status, 204);
    let old_os = AD_REQUEST.replace("\"os_version\":\"14\"", "\"os_version\":\"4.4\"");
    let reply = http(server.addr, "POST", "/v1/ad", &old_os);
    assert!(reply.status == 204 || json(&reply)["ad"]["campaign_id"] != 101, "{}", reply.body);
}

#[test]
fn bad_input_gets_a_4xx_that_says_what_is_wrong_and_the_server_keeps_serving() {
    let server = start();
    let check = |method: &str, path: &str, body: &str, status: u16, says: &str| {
        let reply = http(server.addr, method, path, body);
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.body);
        let error = json(&reply)["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{error:?} does not say {says:?}");
    };
    check("POST", "/v1/ad", "{not json", 400, "not valid JSON");
    check("POST", "/v1/ad", &AD_REQUEST.replace("\"format\"", "\"fromat\""), 400, "unknown field `fromat`");
    check(
        "POST",
        "/v1/ad",
        &AD_REQUEST.replace("wordsmith-android-interstitial", "nope"),
        404,
        "no ad unit \"nope\"",
    );
    check(
        "POST",
        "/v1/ad",
        &AD_REQUEST.replace("\"interstitial\"", "\"banner\""),
        400,
        "does not accept banner",
    );
    check("POST", "/v1/ad", &AD_REQUEST.replace("\"US\"", "\"usa\""), 400, "device.country");
    check("POST", "/v1/ad", &AD_REQUEST.replace("\"14\"", "\"fourteen\""), 400, "device.os_version");
    check("POST", "/v1/ad", &AD_REQUEST.replace("\"android\"", "\"symbian\""), 400, "device.os");
    check("POST", "/v1/ad", &"x".repeat(5000), 413, "larger than 4096 bytes");
    // A user id with a byte that is not UTF-8.
    let body: Vec<u8> =
        AD_REQUEST.replace("user-42", "user-\u{1}").bytes().map(|b| if b == 1 { 0xff } else { b }).collect();
    let reply = http(server.addr, "POST", "/v1/ad", &body);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        json(&reply)["error"].as_str().unwrap_or_default().contains("invalid UTF-8 in a string"),
        "{}",
        reply.body
    );
    check("GET", "/v1/imp?t=garbage", "", 403, "malformed");
    check("GET", "/v1/click", "", 403, "malformed");
    check("GET", "/nope", "", 404, "no endpoint /nope");
    // A known endpoint asked with the wrong method says which one it takes.
    check("GET", "/v1/ad", "", 405, "/v1/ad takes POST, not GET");
    assert!(http(server.addr, "GET", "/openrtb2/bid", "").headers.contains("allow: post"));
    check("POST", "/v1/imp?t=garbage", "", 405, "/v1/imp takes GET, not POST");
    assert!(http(server.addr, "DELETE", "/health", "").headers.contains("allow: get, head"));
    // HEAD /health answers the head of GET /health, without its body.
    let head = http(server.addr, "HEAD", "/health", "");
    assert_eq!((head.status, head.body.as_str()), (200, ""), "{}", head.headers);
    assert!(head.headers.contains("content-type: application/json"), "{}", head.headers);
    assert_eq!(metric(server.addr, r#"adsnap_http_requests_total{endpoint="unknown",status="405"}"#), 4.0);
    assert_eq!(http(server.addr, "GET", "/health", "").status, 200);
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);
}

#[test]
fn every_path_takes_the_methods_it_lists_and_refuses_others_with_405() {
    let server = start();
    for (addr, paths) in
        [(server.addr, adsnap_serve::server::PATHS), (server.admin, adsnap_serve::server::ADMIN_PATHS)]
    {
        for &(path, allowed) in paths {
            // Exactly the methods listed are taken: the list and the routes agree.
            for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] {
                let reply = http(addr, method, path, "");
                let listed = allowed.split(", ").any(|m| m == method);
                assert_ne!(reply.status, 404, "{method} {path}: {}", reply.body);
                assert_eq!(reply.status == 405, !listed, "{method} {path}: {} {}", reply.status, reply.body);
            }
            let refused = http(addr, "PUT", path, "");
            assert_eq!(refused.status, 405, "PUT {path}: {}", refused.body);
            let allow = format!("allow: {}", allowed.to_ascii_lowercase());
            assert!(refused.headers.contains(&allow), "PUT {path}: {}", refused.headers);
            assert_eq!(json(&refused)["error"], format!("{path} takes {allowed}, not PUT"));
        }
    }
    let unknown = json(&http(server.admin, "GET", "/admin/nothing", ""));
    assert_eq!(unknown, serde_json::json!({ "error": "no admin endpoint /admin/nothing", "field": null }));
}

/// One exchange whose body is sent compressed, with `content-encoding: {coding}`.
fn http_encoded(addr: SocketAddr, path: &str, coding: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-encoding: {coding}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    exchange(&mut stream, [head.as_bytes(), body].concat())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn compressed_bodies_are_decoded_and_held_to_the_limit() {
    let server = start();
    let plain = json(&http(server.addr, "POST", "/v1/ad", AD_REQUEST));
    let reply = http_encoded(server.addr, "/v1/ad", "gzip", &gzip(AD_REQUEST.as_bytes()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(json(&reply)["ad"]["creative_id"], plain["ad"]["creative_id"]);
    // An exchange's bid request, zlib-compressed: the same bids as sent plain.
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut zlib, BID_REQUEST.as_bytes()).unwrap();
    let reply = http_encoded(server.addr, "/openrtb2/bid", "deflate", &zlib.finish().unwrap());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let plain_bid = json(&http(server.addr, "POST", "/openrtb2/bid", BID_REQUEST));
    assert_eq!(json(&reply)["seatbid"][0]["bid"][0]["crid"], plain_bid["seatbid"][0]["bid"][0]["crid"]);

    // A coding the server cannot decode: 415, naming the ones it can.
    let reply = http_encoded(server.addr, "/v1/ad", "br", AD_REQUEST.as_bytes());
    assert_eq!(reply.status, 415, "{}", reply.body);
    assert!(reply.headers.contains("accept-encoding: gzip, deflate"), "{}", reply.headers);
    assert!(json(&reply)["error"].as_str().unwrap().contains("\"br\" is not supported"), "{}", reply.body);
    // Under the limit (4096 bytes) on the wire, a mebibyte once inflated.
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096);
    let reply = http_encoded(server.addr, "/openrtb2/bid", "gzip", &bomb);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.body.contains("decompressed (gzip), is larger than 4096 bytes"), "{}", reply.body);
    // Labelled gzip, sent plain.
    let reply = http_encoded(server.addr, "/v1/ad", "gzip", AD_REQUEST.as_bytes());
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        json(&reply)["error"].as_str().unwrap().starts_with("the body is not valid gzip: "),
        "{}",
        reply.body
    );
    assert_eq!(metric(server.addr, r#"adsnap_http_requests_total{endpoint="ad",status="415"}"#), 1.0);
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);
}

/// One exchange whose body is sent with chunked transfer coding, one chunk per item.
fn http_chunked(addr: SocketAddr, path: &str, chunks: &[&str]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for chunk in chunks {
        request += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
    }
    request += "0\r\n\r\n";
    exchange(&mut stream, &request)
}

#[test]
fn a_body_in_chunks_is_joined_and_held_to_the_limit() {
    let server = start();
    let whole = json(&http(server.addr, "POST", "/v1/ad", AD_REQUEST));
    let (a, rest) = AD_REQUEST.split_at(7);
    let (b, c) = rest.split_at(100);
    let reply = http_chunked(server.addr, "/v1/ad", &[a, b, c]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let chunked = json(&reply);
    assert_eq!(chunked["ad"]["creative_id"], whole["ad"]["creative_id"]);
    assert_eq!(chunked["request_id"], "r-1");
    // No length is declared: the limit (4096 bytes) is found while reading.
    let piece = "x".repeat(1000);
    let reply = http_chunked(server.addr, "/v1/ad", &[piece.as_str(); 5]);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.body.contains("larger than 4096 bytes"), "{}", reply.body);
}

#[test]
fn health_reports_the_snapshot_and_a_hot_swap_replaces_it() {
    let server = start();
    let health = json(&http(server.addr, "GET", "/health", ""));
    assert_eq!(health["status"], "ok");
    assert_eq!(health["snapshot"]["version"], 1);
    let bytes = health["snapshot"]["bytes"].as_u64().unwrap();
    assert_eq!(bytes, std::fs::metadata(&server.state.config.snapshot_path).unwrap().len());
    // Whether the kernel grants 2 MiB pages to this small file is its choice; that it says is ours.
    assert!(health["snapshot"]["huge_page_bytes"].as_u64().unwrap() <= bytes);
    let first_id = health["snapshot"]["id"].as_str().unwrap().to_owned();

    // A new version at the same path (built elsewhere, renamed into place) is swapped in.
    let path = server.state.config.snapshot_path.clone();
    build_snapshot(&example_catalog(), &server.dir.path().join("next.snap"), 2);
    std::fs::rename(server.dir.path().join("next.snap"), &path).unwrap();
    server.runtime.block_on(server.state.reload()).unwrap();
    let health = json(&http(server.addr, "GET", "/health", ""));
    assert_eq!(health["snapshot"]["version"], 2);
    assert_ne!(health["snapshot"]["id"], first_id);
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);

    // A corrupt file is refused; the server keeps serving version 2.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(server.dir.path().join("bad.snap"), bytes).unwrap();
    std::fs::rename(server.dir.path().join("bad.snap"), &path).unwrap();
    assert!(server.runtime.block_on(server.state.reload()).is_err());
    assert_eq!(json(&http(server.addr, "GET", "/health", ""))["snapshot"]["version"], 2);
    assert_eq!(metric(server.addr, "adsnap_snapshot_swap_failures_total"), 1.0);
    assert_eq!(metric(server.addr, "adsnap_snapshot_swaps_total"), 1.0);
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);
}

fn served_ids(server: &Running) -> (String, Option<String>) {
    let health = json(&http(server.addr, "GET", "/health", ""));
    let production = health["snapshot"]["id"].as_str().unwrap().to_owned();
    (production, health["staging_snapshot"]["id"].as_str().map(str::to_owned))
}

fn install(server: &Running, path: &Path, target: &str) -> Reply {
    let body = serde_json::json!({ "path": path, "target": target }).to_string();
    http(server.admin, "POST", "/admin/install", &body)
}

#[test]
fn admin_installs_promotes_and_rolls_back_while_serving() {
    let server = start();
    let (v1, staging) = served_ids(&server);
    assert_eq!(staging, None);
    let v2_path = server.dir.path().join("v2.snap");
    build_snapshot(&example_catalog(), &v2_path, 2);

    // Promoting or rolling back with nothing to move is a conflict, and changes nothing.
    assert_eq!(http(server.admin, "POST", "/admin/promote", "").status, 409);
    assert_eq!(http(server.admin, "POST", "/admin/rollback", "").status, 409);

    let reply = install(&server, &v2_path, "staging");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v2 = json(&reply)["snapshot_id"].as_str().unwrap().to_owned();
    assert_ne!(v2, v1);
    assert_eq!(served_ids(&server), (v1.clone(), Some(v2.clone())));
    assert!(v2_path.exists(), "the installed file is left where it was");
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);

    let reply = http(server.admin, "POST", "/admin/promote", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(served_ids(&server), (v2.clone(), None));
    let slots = json(&http(server.admin, "GET", "/admin/snapshots", ""));
    assert_eq!(slots["previous"]["exists"], true);

    // A restart now comes up on what was promoted: the slot files say so.
    // (Only the snapshot slots matter here; the store and log belong to the running server.)
    let config =
        ServeConfig { profiles_enabled: false, events_enabled: false, ..server.state.config.clone() };
    let restarted = server.runtime.block_on(State::new(config)).unwrap();
    assert_eq!(restarted.production.load().header().id_hex(), v2);

    let reply = http(server.admin, "POST", "/admin/rollback", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(served_ids(&server).0, v1);
    // Rolling back again undoes the rollback.
    assert_eq!(http(server.admin, "POST", "/admin/rollback", "").status, 200);
    assert_eq!(served_ids(&server).0, v2);
    assert_eq!(metric(server.addr, "adsnap_snapshot_swaps_total"), 4.0);
}

#[test]
fn admin_refuses_bad_installs_and_keeps_serving() {
    let server = start();
    let (v1, _) = served_ids(&server);
    let missing = install(&server, &server.dir.path().join("absent.snap"), "production");
    assert_eq!(missing.status, 404, "{}", missing.body);

    let corrupt_path = server.dir.path().join("corrupt.snap");
    let mut bytes = std::fs::read(&server.state.config.snapshot_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&corrupt_path, bytes).unwrap();
    let corrupt = install(&server, &corrupt_path, "production");
    assert_eq!(corrupt.status, 422, "{}", corrupt.body);
    let error = json(&corrupt)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("corrupt.snap") && error.contains("payload is corrupt"), "{error}");

    let bad_target = http(server.admin, "POST", "/admin/install", r#"{"path":"/x","target":"canary"}"#);
    assert_eq!(bad_target.status, 400);
    assert!(bad_target.body.contains("canary"), "{}", bad_target.body);
    assert_eq!(http(server.admin, "POST", "/admin/install", "not json").status, 400);
    assert_eq!(http(server.admin, "GET", "/admin/nothing", "").status, 404);
    let wrong = http(server.admin, "GET", "/admin/promote", "");
    assert_eq!(wrong.status, 405, "{}", wrong.body);
    assert!(wrong.headers.contains("allow: post"), "{}", wrong.headers);

    assert_eq!(served_ids(&server), (v1, None));
    assert_eq!(metric(server.addr, "adsnap_snapshot_swap_failures_total"), 2.0);
    let slots = json(&http(server.admin, "GET", "/admin/snapshots", ""));
    assert_eq!(slots["previous"]["exists"], false, "a refused install leaves no previous file");
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);
    // The admin endpoints are not on the public listener.
    assert_eq!(http(server.addr, "POST", "/admin/promote", "").status, 404);
}

const BID_REQUEST: &str = r#"{
  "id": "auction-1",
  "at": 1,
  "tmax": 120,
  "cur": ["USD"],
  "imp": [
    {"id": "1", "tagid": "wordsmith-android-interstitial", "instl": 1, "bidfloor": 0.5, "bidfloorcur": "USD",
     "banner": {"format": [{"w": 320, "h": 480}], "pos": 7, "api": [3, 5]}, "secure": 1},
    {"id": "2", "rwdd": 1, "bidfloor": 1.0,
     "video": {"mimes": ["video/mp4"], "minduration": 5, "maxduration": 60, "protocols": [2, 3, 7], "w": 720, "h": 1280, "placement": 5}}
  ],
  "app": {"id": "exch-app-9", "bundle": "com.example.wordsmith", "cat": ["IAB9"], "publisher": {"id": "pub-1"}, "storeurl": "https://play.google.com/store/apps/details?id=com.example.wordsmith"},
  "device": {"ua": "Mozilla/5.0", "ip": "203.0.113.7", "geo": {"country": "USA", "type": 2}, "os": "Android", "osv": "14",
             "devicetype": 4, "connectiontype": 2, "ifa": "38400000-8cf0-11bd-b23e-10b96e40000d", "lmt": 0, "language": "en", "make": "Google"},
  "user": {"id": "exchange-user-7", "ext": {"consent": "CP-consent"}},
  "regs": {"coppa": 0, "ext": {"gdpr": 0, "us_privacy": "1YNN"}},
  "source": {"ext": {"schain": {"ver": "1.0", "complete": 1, "nodes": []}}},
  "ext": {"unknown": true}
}"#;

/// A server whose tracking URLs are https, as in production behind a TLS-terminating balancer:
/// exchanges send `secure` 1 with nearly every in-app impression.
fn start_https() -> Running {
    start_with(|c| c.public_base_url = "https://ads.example.test".into())
}

#[test]
fn an_openrtb_request_gets_bids_with_the_standard_notice_macros() {
    let server = start_with(|c| {
        c.public_base_url = "https://ads.example.test".into();
        c.ad_ttl_s = 120;
    });
    let reply = http(server.addr, "POST", "/openrtb2/bid", BID_REQUEST);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.headers.contains("x-openrtb-version: 2.6"));
    let response = json(&reply);
    assert_eq!(response["id"], "auction-1");
    assert_eq!(response["cur"], "USD");
    let bids = response["seatbid"][0]["bid"].as_array().unwrap();
    let banner = bids.iter().find(|b| b["impid"] == "1").expect("a bid for the interstitial");
    assert_eq!(banner["cid"], "101");
    assert_eq!(banner["price"], 1.435);
    assert_eq!(banner["mtype"], 1);
    // The exchange may hold the bid as long as an SDK may hold an ad.
    assert_eq!(banner["exp"], 120);
    assert!(banner["adm"].as_str().unwrap().starts_with("<!DOCTYPE html>"));
    assert!(banner["nurl"].as_str().unwrap().ends_with("&p=${AUCTION_PRICE}"));
    assert!(banner["burl"].as_str().unwrap().contains("/v1/bill?t="));
    assert!(banner["lurl"].as_str().unwrap().ends_with("&r=${AUCTION_LOSS}"));
    assert_eq!(banner["adomain"][0], "pinecone-games.example");
    let video = bids.iter().find(|b| b["impid"] == "2").expect("a bid for the rewarded video");
    assert_eq!(video["mtype"], 2);
    assert!(video["adm"].as_str().unwrap().contains("<VAST version=\"4.0\">"), "{video}");
    assert!(video["price"].as_f64().unwrap() >= 1.0);
    // The exchange fills the macro and calls the win notice; a repeat counts once.
    let win = banner["nurl"].as_str().unwrap().replace("${AUCTION_PRICE}", "1.20");
    assert_eq!(http(server.addr, "GET", path_of(&win), "").status, 204);
    assert_eq!(http(server.addr, "GET", path_of(&win), "").status, 204);
    assert_eq!(metric(server.addr, r#"adsnap_tracking_events_total{kind="win",result="counted"}"#), 1.0);
    assert_eq!(metric(server.addr, r#"adsnap_tracking_events_total{kind="win",result="duplicate"}"#), 1.0);
}

/// One impression, as JSON, on an Android phone in the US, in the Stride app; its bid, if any.
fn stride_bid(server: &Running, imp: &str, request_fields: &str) -> Option<serde_json::Value> {
    let request = format!(
        r#"{{"id": "fit", "imp": [{imp}], {request_fields} "app": {{"bundle": "com.example.stride"}},
            "device": {{"os": "Android", "osv": "14", "devicetype": 4, "geo": {{"country": "USA"}}}}}}"#
    );
    let reply = http(server.addr, "POST", "/openrtb2/bid", &request);
    match reply.status {
        200 => Some(json(&reply)["seatbid"][0]["bid"][0].clone()),
        204 => None,
        status => panic!("{status}: {}", reply.body),
    }
}

#[test]
fn an_impression_gets_only_a_creative_it_can_show() {
    let server = start_https();
    let bid = |imp: &str| stride_bid(&server, imp, "");
    let creative = |imp: &str| bid(imp).map(|b| b["crid"].as_str().unwrap().to_owned());
    // A banner takes any of its sizes: the 320x50 of campaign 101, though 300x250 comes first.
    let banner = bid(r#"{"id": "1", "banner": {"format": [{"w": 300, "h": 250}, {"w": 320, "h": 50}]}}"#)
        .expect("a bid for the 320x50");
    assert_eq!((&banner["crid"], &banner["w"], &banner["h"]), (&"1003".into(), &320.into(), &50.into()));
    assert_eq!(
        creative(r#"{"id": "1", "banner": {"w": 320, "h": 50, "format": [{"w": 300, "h": 250}]}}"#),
        Some("1003".into())
    );
    assert_eq!(creative(r#"{"id": "1", "banner": {"format": [{"w": 300, "h": 250}]}}"#), None);
    // A flexible size: any banner of the ratio, at least `wmin` wide.
    let flexible = |wmin: u32| {
        creative(&format!(
            r#"{{"id": "1", "banner": {{"format": [{{"wratio": 32, "hratio": 5, "wmin": {wmin}}}]}}}}"#
        ))
    };
    assert_eq!((flexible(300), flexible(321)), (Some("1003".into()), None));
    assert_eq!(creative(r#"{"id": "1", "banner": {"format": [{"wratio": 6, "hratio": 5}]}}"#), None);
    // OpenRTB 2.5's range of sizes.
    let range = |bounds: &str| creative(&format!(r#"{{"id": "1", "banner": {{{bounds}}}}}"#));
    assert_eq!(range(r#""wmin": 300, "wmax": 400, "hmin": 40, "hmax": 60"#), Some("1003".into()));
    assert_eq!(range(r#""wmax": 300, "hmax": 40"#), None);
    // A rewarded video: campaign 101's 30 s video first, campaign 104's 15 s one where 30 s
    // does not fit; none where the player takes no MP4 or nothing this long.
    let video = |fields: &str| {
        creative(&format!(r#"{{"id": "1", "rwdd": 1, "video": {{"w": 720, "h": 1280 {fields}}}}}"#))
    };
    assert_eq!(video(""), Some("1002".into()));
    assert_eq!(
        video(r#", "mimes": ["video/mp4"], "minduration": 5, "maxduration": 30"#),
        Some("1002".into())
    );
    assert_eq!(video(r#", "maxduration": 20"#), Some("1011".into()));
    assert_eq!(video(r#", "rqddurs": [15, 6]"#), Some("1011".into()));
    assert_eq!(video(r#", "mimes": ["VIDEO/MP4"], "rqddurs": [30]"#), Some("1002".into()));
    assert_eq!(video(r#", "mimes": ["video/webm"]"#), None);
    assert_eq!(video(r#", "minduration": 31"#), None);
    // The catalog's VAST is 4.0 inline: a VAST 3 player takes none, a 4.2 player does.
    assert_eq!(video(r#", "protocols": [2, 3, 5, 6]"#), None);
    assert_eq!(video(r#", "protocols": [3, 13]"#), Some("1002".into()));
    assert_eq!(video(r#", "protocols": [8]"#), None, "a player of VAST 4 wrappers only");
    assert_eq!(video(r#", "protocol": 7"#), Some("1002".into()), "2.5's single protocol");
    // A private auction is for its deals only; adsnap holds none.
    let imp = r#"{"id": "1", "banner": {"w": 320, "h": 50}, "pmp": {"private_auction": 1, "deals": [{"id": "d1"}]}}"#;
    assert_eq!(creative(imp), None);
    let open_auction = imp.replace(r#""private_auction": 1"#, r#""private_auction": 0"#);
    assert_eq!(creative(&open_auction), Some("1003".into()));
    // Buyer seats: the configured seat bids where wseat names it and bseat does not.
    let banner = r#"{"id": "1", "banner": {"w": 320, "h": 50}}"#;
    let seats = |fields: &str| stride_bid(&server, banner, fields).is_some();
    assert!(seats(r#""wseat": ["dsp-9", "adsnap"],"#));
    assert!(!seats(r#""wseat": ["dsp-9"],"#));
    assert!(!seats(r#""bseat": ["adsnap"],"#));
    assert!(seats(r#""bseat": ["dsp-9"], "wseat": null,"#));
    // An ad unit named by `tagid` is its impression's own: the rewarded unit's 8 CPM floor
    // leaves the first impression empty, and the untagged second takes the video.
    let tagged =
        r#"{"id": "1", "tagid": "wordsmith-android-rewarded", "rwdd": 1, "video": {"w": 720, "h": 1280}}"#;
    let untagged = r#"{"id": "2", "rwdd": 1, "video": {"w": 720, "h": 1280}}"#;
    assert_eq!(stride_bid(&server, tagged, ""), None);
    let next = stride_bid(&server, &format!("{tagged}, {untagged}"), "").expect("a bid for the second");
    assert_eq!((&next["impid"], &next["crid"]), (&"2".into(), &"1002".into()));
    let skipped = |reason: &str| {
        metric(server.addr, &format!(r#"adsnap_openrtb_impressions_skipped_total{{reason="{reason}"}}"#))
    };
    assert_eq!(skipped("private_auction"), 1.0);
    assert_eq!(skipped("seat"), 2.0);
    assert_eq!(skipped("insecure_tracking"), 0.0);
}

#[test]
fn blocked_creative_attributes_and_banner_types_keep_creatives_out() {
    // The example catalog with attributes: campaign 101's 320x50 banner is listed as user
    // interactive (13), plays video in the banner by itself (6, from its markup only) and is a
    // script tag that needs MRAID; every VAST creative offers a skip button from 5 s.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    copy_dir(&example_catalog(), &catalog);
    let edit = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(catalog.join(file)).unwrap();
        assert!(text.contains(from), "{file}: {from}");
        std::fs::write(catalog.join(file), text.replacen(from, to, 1)).unwrap();
    };
    let tag = r#"<script src=\"mraid.js\"></script><a href=\"{{click_url}}\"><video src=\"https://cdn.example.net/v.mp4\" autoplay muted></video></a><img src=\"{{impression_url}}\">"#;
    edit(
        "creatives.jsonl",
        r#"banner-320x50.png"], "template": "html-image"}"#,
        &format!(r#"banner-320x50.png"], "markup": "{tag}", "attrs": [13]}}"#),
    );
    edit("templates.jsonl", "<Linear>", r#"<Linear skipoffset=\"00:00:05\">"#);
    // The rewarded unit's floor would leave it unfilled anyway.
    edit(
        "ad_units.jsonl",
        r#""floor_cpm_micros": 8000000, "blocked_attrs""#,
        r#""floor_cpm_micros": 0, "blocked_attrs""#,
    );
    let snapshot = dir.path().join("attrs.snap");
    build_snapshot(&catalog, &snapshot, 1);
    let server = start_with(|c| c.snapshot_path = snapshot.clone());

    let crid = |bid: Option<serde_json::Value>| bid.map(|b| b["crid"].as_str().unwrap().to_owned());
    let banner_in = |api: &str, fields: &str| {
        let imp = format!(r#"{{"id": "1", "banner": {{"w": 320, "h": 50, "api": {api} {fields}}}}}"#);
        stride_bid(&server, &imp, "")
    };
    // An app whose container lists no MRAID cannot run the script tag.
    assert_eq!(crid(banner_in("[]", "")), Some("1009".into()));
    assert_eq!(crid(banner_in("[7]", "")), Some("1009".into()), "OMID is not MRAID");
    assert_eq!(crid(banner_in("[3]", "")), Some("1003".into()), "MRAID 1");
    let banner = |fields: &str| banner_in("[5, 7]", fields);
    let plain = banner("").expect("a banner bid");
    assert_eq!((&plain["crid"], &plain["attr"]), (&"1003".into(), &serde_json::json!([6, 13])));
    // Blocking attribute 6 leaves campaign 104's GIF banner, which has none and says so.
    let other = banner(r#", "battr": [1, 6, 17]"#).expect("the next banner");
    assert_eq!(other["crid"], "1009");
    assert!(other.get("attr").is_none(), "no attributes, no attr: {other}");
    assert_eq!(crid(banner(r#", "battr": [13]"#)), Some("1009".into()), "a listed attribute blocks");
    assert_eq!(
        crid(banner(r#", "battr": [1, 2, 3, 40, 0]"#)),
        Some("1003".into()),
        "unknown codes block nothing"
    );
    // Banner types: 1003 is JavaScript (3), 1009 an XHTML banner (2).
    assert_eq!(crid(banner(r#", "btype": [3]"#)), Some("1009".into()));
    assert_eq!(crid(banner(r#", "btype": [2, 4]"#)), Some("1003".into()));
    assert_eq!(crid(banner(r#", "btype": [2, 3]"#)), None);
    assert_eq!(crid(banner(r#", "btype": [2], "battr": [6]"#)), None);
    // A skip button is attribute 16, read from the VAST; a rewarded slot that blocks it gets none.
    let video = |fields: &str| {
        stride_bid(
            &server,
            &format!(r#"{{"id": "1", "rwdd": 1, "video": {{"w": 720, "h": 1280 {fields}}}}}"#),
            "",
        )
    };
    let skippable = video("").expect("a video bid");
    assert_eq!((&skippable["crid"], &skippable["attr"]), (&"1002".into(), &serde_json::json!([16])));
    assert_eq!(crid(video(r#", "battr": [16]"#)), None);
    assert_eq!(crid(video(r#", "battr": [6]"#)), Some("1002".into()), "a video's battr is its own");
    // The example's Android rewarded unit blocks skip buttons, for SDK and bid requests alike;
    // its interstitial unit does not.
    let sdk = |unit: &str, format: &str| {
        let body = AD_REQUEST
            .replace("wordsmith-android-interstitial", unit)
            .replace(r#""format":"interstitial""#, &format!(r#""format":"{format}""#));
        http(server.addr, "POST", "/v1/ad", &body).status
    };
    assert_eq!(sdk("wordsmith-android-rewarded", "rewarded_video"), 204);
    assert_eq!(sdk("wordsmith-android-interstitial", "interstitial"), 200);
    let tagged =
        r#"{"id": "1", "tagid": "wordsmith-android-rewarded", "rwdd": 1, "video": {"w": 720, "h": 1280}}"#;
    assert_eq!(crid(stride_bid(&server, tagged, "")), None);
    // The unit's mask is the tagged impression's own: the untagged second takes the video.
    let untagged = r#"{"id": "2", "rwdd": 1, "video": {"w": 720, "h": 1280}}"#;
    let next = stride_bid(&server, &format!("{tagged}, {untagged}"), "").expect("a bid for the second");
    assert_eq!((&next["impid"], &next["crid"]), (&"2".into(), &"1002".into()));
    // The catalog's VAST is linear: an overlay slot takes none of it.
    assert_eq!(crid(video(r#", "linearity": 1, "api": [7]"#)), Some("1002".into()));
    assert_eq!(crid(video(r#", "linearity": 2"#)), None);
}

#[test]
fn a_native_answer_carries_the_requests_asset_ids() {
    let server = start_https();
    let native = |request: &str| {
        let request = serde_json::to_string(request).unwrap();
        stride_bid(
            &server,
            &format!(r#"{{"id": "1", "native": {{"ver": "1.2", "request": {request}}}}}"#),
            "",
        )
    };
    // Campaign 104's native creative has an icon and a main image, as assets 1 and 2.
    let bid = native(
        r#"{"ver":"1.2","assets":[{"id":11,"required":1,"img":{"type":3,"wmin":1000,"hmin":500}},
            {"id":12,"img":{"type":1}},{"id":13,"title":{"len":50}}]}"#,
    )
    .expect("a native bid");
    assert_eq!((&bid["crid"], &bid["mtype"]), (&"1010".into(), &4.into()));
    let adm: serde_json::Value = serde_json::from_str(bid["adm"].as_str().unwrap()).unwrap();
    assert!(adm.get("native").is_none(), "a 1.2 request gets the 1.2 layout: {adm}");
    let assets = adm["assets"].as_array().unwrap();
    assert_eq!(assets.len(), 2, "{adm}");
    assert_eq!(
        (&assets[0]["id"], &assets[0]["img"]["type"], &assets[0]["img"]["w"]),
        (&11.into(), &3.into(), &1200.into())
    );
    assert_eq!((&assets[1]["id"], &assets[1]["img"]["type"]), (&12.into(), &1.into()));
    assert!(adm["imptrackers"][0].as_str().unwrap().contains("/v1/imp?t="), "{adm}");
    // The 1.0 layout, with the fields in a root `native`, is answered in it.
    let bid =
        native(r#"{"native":{"ver":"1.0","assets":[{"id":1,"required":1,"img":{"type":3}}]}}"#).unwrap();
    let adm: serde_json::Value = serde_json::from_str(bid["adm"].as_str().unwrap()).unwrap();
    assert_eq!(adm["native"]["assets"][0]["id"], 1, "{adm}");
    // A required title: no native creative for Android in the US has one, so the decision is
    // no fill (not a fill the answer then drops).
    assert_eq!(
        native(r#"{"assets":[{"id":1,"required":1,"title":{"len":90}},{"id":2,"img":{"type":3}}]}"#),
        None
    );
    let filled: Vec<bool> = events(&server).iter().map(|e| e.filled()).collect();
    assert_eq!(filled, [true, true, false]);
    // Without a readable request there is no valid answer.
    assert_eq!(stride_bid(&server, r#"{"id": "1", "native": {"ver": "1.2"}}"#, ""), None);
    assert_eq!(native("{not json"), None);
    assert_eq!(
        metric(server.addr, r#"adsnap_openrtb_impressions_skipped_total{reason="native_request"}"#),
        2.0
    );
}

#[test]
fn a_native_video_asset_is_matched_to_the_vast_it_holds() {
    // The example catalog, with a 20 s VAST 4.0 video (MP4) added to the native template that
    // campaign 104's creative 1010 uses.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    copy_dir(&example_catalog(), &catalog);
    let vast = "<VAST version='4.0'><Ad><InLine><Creatives><Creative><Linear><Duration>00:00:20</Duration><MediaFiles><MediaFile type='video/mp4'>https://cdn.example.net/kingdoms.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>";
    let templates = std::fs::read_to_string(catalog.join("templates.jsonl")).unwrap();
    let from = r#"\"assets\":[{\"id\":1,\"required\":1,\"img\":{\"type\":1"#;
    assert!(templates.contains(from));
    let to = format!(r#"\"assets\":[{{\"id\":9,\"video\":{{\"vasttag\":\"{vast}\"}}}},{}"#, &from[12..]);
    std::fs::write(catalog.join("templates.jsonl"), templates.replacen(from, &to, 1)).unwrap();
    let snapshot = dir.path().join("video.snap");
    build_snapshot(&catalog, &snapshot, 1);
    let server = start_with(|c| c.snapshot_path = snapshot.clone());
    let native = |video: &str| {
        let request = format!(
            r#"{{"assets":[{{"id":5,"required":1,"video":{{{video}}}}},{{"id":6,"img":{{"type":1}}}}]}}"#
        );
        let request = serde_json::to_string(&request).unwrap();
        stride_bid(
            &server,
            &format!(r#"{{"id": "1", "native": {{"ver": "1.2", "request": {request}}}}}"#),
            "",
        )
    };
    let bid = native(r#""mimes": ["video/mp4"], "minduration": 15, "maxduration": 30, "protocols": [3, 7]"#)
        .expect("a bid with the video");
    assert_eq!(bid["crid"], "1010");
    let adm: serde_json::Value = serde_json::from_str(bid["adm"].as_str().unwrap()).unwrap();
    assert_eq!(adm["assets"][0], serde_json::json!({"id": 5, "video": {"vasttag": vast}}), "{adm}");
    assert_eq!(adm["assets"][1]["id"], 6, "{adm}");
    // A player of other types, shorter videos or VAST 3 only gets no bid.
    assert_eq!(native(r#""mimes": ["video/webm"]"#), None);
    assert_eq!(native(r#""mimes": ["video/mp4"], "maxduration": 15"#), None);
    assert_eq!(native(r#""mimes": ["video/mp4"], "protocols": [2, 3]"#), None);
}

#[test]
fn floors_are_in_usd_unless_said_and_the_users_home_stands_in_for_the_device_location() {
    // The example catalog priced in euros.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    copy_dir(&example_catalog(), &catalog);
    let meta = std::fs::read_to_string(catalog.join("catalog.json")).unwrap();
    std::fs::write(
        catalog.join("catalog.json"),
        meta.replace(r#""currency": "USD""#, r#""currency": "EUR""#),
    )
    .unwrap();
    let snapshot = dir.path().join("eur.snap");
    build_snapshot(&catalog, &snapshot, 1);
    let server = start_with(|c| c.snapshot_path = snapshot.clone());
    let banner = |floor: &str| format!(r#"{{"id": "1", "banner": {{"w": 320, "h": 50}} {floor}}}"#);
    let crid = |imp: &str, fields: &str| stride_bid(&server, imp, fields).map(|b| b["crid"].clone());
    assert_eq!(crid(&banner(""), ""), Some("1003".into()), "no floor, no currency to agree on");
    assert_eq!(crid(&banner(r#", "bidfloor": 0.01"#), ""), None, "a floor without bidfloorcur is in USD");
    assert_eq!(crid(&banner(r#", "bidfloor": 0.01, "bidfloorcur": "USD""#), ""), None);
    assert_eq!(crid(&banner(r#", "bidfloor": 0.01, "bidfloorcur": "EUR""#), ""), Some("1003".into()));
    assert_eq!(crid(&banner(""), r#""cur": ["usd", "eur"],"#), Some("1003".into()));
    assert_eq!(crid(&banner(""), r#""cur": ["USD"],"#), None);
    let skipped = r#"adsnap_openrtb_impressions_skipped_total{reason="currency"}"#;
    assert_eq!(metric(server.addr, skipped), 3.0);

    // Without `device.geo`, the user's home country places the request: campaign 101 runs in
    // the US and Canada only.
    let request = |user: &str| {
        format!(
            r#"{{"id": "g", "imp": [{}], "app": {{"bundle": "com.example.stride"}}, {user}
                "device": {{"os": "Android", "osv": "14", "devicetype": 4}}}}"#,
            banner("")
        )
    };
    let crid = |body: String| {
        let reply = http(server.addr, "POST", "/openrtb2/bid", &body);
        (reply.status == 200).then(|| json(&reply)["seatbid"][0]["bid"][0]["crid"].clone())
    };
    assert_eq!(crid(request(r#""user": {"geo": {"country": "CAN"}},"#)), Some("1003".into()));
    assert_ne!(crid(request("")), Some("1003".into()));
}

#[test]
fn secure_impressions_need_https_tracking_and_creatives() {
    // Plain-http tracking URLs: a secure impression gets no bid, an impression that allows
    // http does.
    let server = start();
    let banner = r#"{"id": "1", "banner": {"w": 320, "h": 50}, "secure": 1}"#;
    assert_eq!(stride_bid(&server, banner, ""), None);
    assert!(stride_bid(&server, &banner.replace(r#""secure": 1"#, r#""secure": 0"#), "").is_some());
    assert!(stride_bid(&server, &banner.replace(r#", "secure": 1"#, ""), "").is_some());
    assert_eq!(
        metric(server.addr, r#"adsnap_openrtb_impressions_skipped_total{reason="insecure_tracking"}"#),
        1.0
    );
    drop(server);

    // A catalog where campaign 101's banner loads its image over http: over https tracking, a
    // secure impression gets campaign 104's banner instead, or nothing.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    copy_dir(&example_catalog(), &catalog);
    let creatives = std::fs::read_to_string(catalog.join("creatives.jsonl")).unwrap();
    let http_asset = "http://cdn.example.net/pinecone/merge-meadow/banner-320x50.png";
    std::fs::write(
        catalog.join("creatives.jsonl"),
        creatives.replace(&http_asset.replace("http:", "https:"), http_asset),
    )
    .unwrap();
    let snapshot = dir.path().join("insecure.snap");
    build_snapshot(&catalog, &snapshot, 1);
    let server = start_with(|c| {
        c.snapshot_path = snapshot.clone();
        c.public_base_url = "https://ads.example.test".into();
    });
    let secure = stride_bid(&server, banner, "").map(|b| b["crid"].clone());
    assert!(secure.as_ref().is_none_or(|crid| crid != "1003"), "{secure:?}");
    let any = stride_bid(&server, &banner.replace(r#""secure": 1"#, r#""secure": 0"#), "");
    assert_eq!(any.map(|b| b["crid"].clone()), Some("1003".into()));
}

#[test]
fn a_test_auction_is_answered_but_earns_nothing_and_changes_no_profile() {
    let server = start_https();
    import_profile(&server, "exchange-user-7", adsnap_profile_store::ProfileFields::default());
    let bill = |request: &str| {
        let reply = http(server.addr, "POST", "/openrtb2/bid", request);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let bid = json(&reply)["seatbid"][0]["bid"][0].clone();
        assert_eq!(bid["cid"], "101");
        let burl = bid["burl"].as_str().unwrap().replace("${AUCTION_PRICE}", "2.00");
        assert_eq!(http(server.addr, "GET", path_of(&burl), "").status, 204);
        let adm = bid["adm"].as_str().unwrap().to_owned();
        let impression = &adm[adm.find("/v1/imp?t=").unwrap()..];
        let impression = &impression[..impression.find('"').unwrap()];
        assert_eq!(http(server.addr, "GET", impression, "").status, 204);
    };
    let test = BID_REQUEST.replace(r#""at": 1,"#, r#""at": 1, "test": 1,"#).replace("auction-1", "auction-t");
    bill(&test);
    let written = events(&server);
    assert!(written.len() >= 4 && written.iter().all(|e| e.test), "{written:#?}");
    assert!(written.iter().all(|e| e.revenue_micros == 0), "{written:#?}");
    // The same auction live: its bill earns the clearing price per mille.
    bill(BID_REQUEST);
    let live: Vec<_> = events(&server).into_iter().filter(|e| !e.test).collect();
    let billed = live.iter().find(|e| e.kind == adsnap_events::EventKind::Bill).unwrap();
    assert_eq!(billed.revenue_micros, 2_000);
    // Only the live auction's impression reached the user's profile.
    let profiles = server.state.profiles.as_ref().unwrap();
    server.runtime.block_on(profiles.flush()).unwrap();
    let key = adsnap_profile_store::UserKey(xxhash_rust::xxh3::xxh3_64(b"exchange-user-7"));
    let read = server.runtime.block_on(profiles.get(key));
    let profile = read.profile().expect("the user's profile");
    assert_eq!(profile.n_impressions(), 1, "{profile:?}");
}

#[test]
fn openrtb_blocklists_currencies_and_bad_requests() {
    let server = start();
    // Blocking games (IAB9, a tier-1 category) leaves no game advertiser's bid.
    let no_games = BID_REQUEST.replace(r#""at": 1,"#, r#""at": 1, "bcat": ["IAB9"],"#);
    let reply = http(server.addr, "POST", "/openrtb2/bid", &no_games);
    if reply.status == 200 {
        for bid in json(&reply)["seatbid"][0]["bid"].as_array().unwrap() {
            assert!(!bid["cat"][0].as_str().unwrap().starts_with("IAB9"), "{bid}");
        }
    } else {
        assert_eq!(reply.status, 204);
    }
    let blocked_domain =
        BID_REQUEST.replace(r#""at": 1,"#, r#""at": 1, "badv": ["Pinecone-Games.example"],"#);
    let reply = http(server.addr, "POST", "/openrtb2/bid", &blocked_domain);
    if reply.status == 200 {
        assert!(!reply.body.contains("pinecone-games.example"), "{}", reply.body);
    }
    let euros = BID_REQUEST.replace(r#""cur": ["USD"]"#, r#""cur": ["EUR"]"#);
    let reply = http(server.addr, "POST", "/openrtb2/bid", &euros);
    assert_eq!(reply.status, 204);
    assert!(reply.headers.contains("x-openrtb-version: 2.6"));
    let high_floor = BID_REQUEST
        .replace(r#""bidfloor": 0.5"#, r#""bidfloor": 50.0"#)
        .replace(r#""bidfloor": 1.0"#, r#""bidfloor": 50.0"#);
    assert_eq!(http(server.addr, "POST", "/openrtb2/bid", &high_floor).status, 204);
    let windows_phone = BID_REQUEST.replace(r#""os": "Android""#, r#""os": "Windows""#);
    assert_eq!(http(server.addr, "POST", "/openrtb2/bid", &windows_phone).status, 204);
    let malformed = http(server.addr, "POST", "/openrtb2/bid", "{\"imp\": 3}");
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(malformed.headers.contains("x-openrtb-version: 2.6"), "{}", malformed.headers);
    // A minimal valid request (no app, no device) is answered, not refused.
    let minimal = r#"{"id": "m", "imp": [{"id": "1", "banner": {"w": 320, "h": 50}}]}"#;
    assert_eq!(http(server.addr, "POST", "/openrtb2/bid", minimal).status, 204);
}

/// Bid requests in the shape of the OpenRTB specification's own examples (2.5's section 6 and
/// 2.6's), with the fields adsnap ignores left in, and real exchanges' habits: numbers where a
/// float is usual, `ext` everywhere, `site` instead of `app`, and nulls.
const SPEC_REQUESTS: [&str; 6] = [
    // 2.5, "Mobile": an iOS app, a 728x90 banner with an expandable iframe.
    r#"{"id":"IxexyLDIIk","at":2,"bcat":["IAB25","IAB7-39","IAB8-18","IAB8-5","IAB9-9"],
        "badv":["apple.com","go-text.me","heywire.com"],
        "imp":[{"id":"1","bidfloor":0.5,"instl":0,"tagid":"agltb3B1Yi1pbmNyDQsSBFNpdGUY7fD0FAw",
            "banner":{"w":728,"h":90,"pos":1,"btype":[4],"battr":[14],"api":[3]}}],
        "app":{"id":"agltb3B1Yi1pbmNyDAsSA0FwcBiJkfIUDA","name":"Yahoo Weather","cat":["IAB15","IAB15-10"],
            "ver":"1.0.2","bundle":"12345","storeurl":"https://itunes.apple.com/id628677149",
            "publisher":{"id":"agltb3B1Yi1pbmNyDAsSA0FwcBiJkfTUCV","name":"yahoo","domain":"www.yahoo.com"}},
        "device":{"dnt":0,"ua":"Mozilla/5.0 (iPhone; CPU iPhone OS 6_1 like Mac OS X)","ip":"123.145.167.189",
            "ifa":"AA000DFE74168477C70D291f574D344790E0BB11","carrier":"VERIZON","language":"en","make":"Apple",
            "model":"iPhone","os":"iOS","osv":"6.1","js":1,"connectiontype":3,"devicetype":1,
            "geo":{"lat":35.012345,"lon":-115.12345,"country":"USA","metro":"803","region":"CA",
                "city":"Los Angeles","zip":"90049"}},
        "user":{"id":"ffffffd5135596709273b3a1a07e466ea2bf4fff","yob":1984,"gender":"M"}}"#,
    // 2.5, "Video": VAST 2 and 3 with companions and VPAID, on a site.
    r#"{"id":"1234567893","at":2,"tmax":120,
        "imp":[{"id":"1","bidfloor":0.03,"video":{"w":640,"h":480,"pos":1,"startdelay":0,"minduration":5,
            "maxduration":30,"maxextended":30,"minbitrate":300,"maxbitrate":1500,"api":[1,2],"protocols":[2,3],
            "mimes":["video/x-flv","video/mp4","application/x-shockwave-flash","application/javascript"],
            "linearity":1,"boxingallowed":1,"playbackmethod":[1,3],"delivery":[2],"battr":[13,14],"sequence":1,
            "companionad":[{"id":"1234567893-1","w":300,"h":250,"pos":1,"battr":[13,14],"expdir":[2,4]},
                {"id":"1234567893-2","w":728,"h":90,"pos":1,"battr":[13,14]}],"companiontype":[1,2]}}],
        "site":{"id":"1345135123","name":"Site ABCD","domain":"siteabcd.com","cat":["IAB2-1","IAB2-2"],
            "page":"http://siteabcd.com/page.htm","ref":"http://referringsite.com/referringpage.htm",
            "privacypolicy":1,"publisher":{"id":"pub12345","name":"Publisher A"}},
        "device":{"ip":"64.124.253.1","ua":"Mozilla/5.0 (Macintosh)","os":"OS X","flashver":"10.1","js":1},
        "user":{"id":"456789876567897654678987656789","buyeruid":"545678765467876567898765678987654",
            "data":[{"id":"6","name":"Data Provider 1","segment":[{"id":"12341318394918","name":"auto intenders"}]}]}}"#,
    // 2.5, "Native": a 1.1 request as a string, on an Android app.
    r#"{"id":"80ce30c53c16e6ede735f123ef6e32361bfc7b22","at":1,"cur":["USD"],
        "imp":[{"id":"1","bidfloor":0.03,"native":{"request":"{\"native\":{\"ver\":\"1.0\",\"assets\":[{\"id\":123,\"required\":1,\"title\":{\"len\":140}},{\"id\":128,\"required\":0,\"img\":{\"wmin\":836,\"hmin\":627,\"type\":3}}]}}","ver":"1.0","api":[3],"battr":[13,14]}}],
        "app":{"id":"0aa0f8e6e6df2f1e","bundle":"com.example.stride","cat":["IAB17"]},
        "device":{"dnt":0,"ua":"Mozilla/5.0 (Linux; Android 13)","ip":"76.174.66.47","geo":{"country":"USA"},
            "os":"android","osv":"13","devicetype":4}}"#,
    // 2.5, "PMP with Direct Deal", on an Android app: a private auction adsnap holds no deal for.
    r#"{"id":"80ce30c53c16e6ede735f123ef6e32361bfc7b22","at":1,"cur":["USD"],
        "imp":[{"id":"1","bidfloor":0.03,"banner":{"h":250,"w":300,"pos":0},
            "pmp":{"private_auction":1,"deals":[{"id":"AB-Agency1-0001","at":1,"bidfloor":2.5,
                "wseat":["Agency1"]},{"id":"XY-Agency2-0001","at":2,"bidfloor":2,"wseat":["Agency2"]}]}}],
        "app":{"bundle":"com.example.stride"},"device":{"os":"Android","geo":{"country":"USA"}}}"#,
    // 2.6: rewarded video with plcmt, rqddurs, GPP, device.sua, schain and nulls where lists go.
    r#"{"id":"26-rewarded","at":1,"tmax":300,"cur":["USD"],"wseat":null,"bcat":null,"cattax":1,
        "imp":[{"id":"1","rwdd":1,"exp":1800,"bidfloor":1,"bidfloorcur":"USD","secure":1,"clickbrowser":1,
            "video":{"mimes":["video/mp4"],"minduration":5,"maxduration":60,"protocols":[2,3,7,8,11,12],
                "w":720,"h":1280,"plcmt":4,"placement":5,"skip":null,"battr":null,"api":[7]},
            "metric":[{"type":"viewability","value":0.85,"vendor":"ias"}],"ext":{"gpid":"/123/rewarded"}}],
        "app":{"bundle":"com.example.stride","cat":["IAB9"],"cattax":1,"inventorypartnerdomain":"x.example",
            "content":{"id":"c1","livestream":0}},
        "device":{"os":"Android","osv":"14","devicetype":4,"ifa":"00000000-0000-0000-0000-000000000000",
            "lmt":1,"geo":{"country":"USA","utcoffset":-300,"ipservice":3},
            "sua":{"browsers":[{"brand":"Chromium","version":["120"]}],"platform":{"brand":"Android","version":["14"]},"mobile":1}},
        "user":{"id":"u-26","eids":[{"source":"adserver.org","uids":[{"id":"x","atype":1}]}]},
        "source":{"tid":"t-1","schain":{"ver":"1.0","complete":1,"nodes":[{"asi":"exchange.example","sid":"1","hp":1}]}},
        "regs":{"coppa":0,"gpp":"DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA","gpp_sid":[2]}}"#,
    // 2.6: an interstitial with both a banner and a video, and a floor in whole numbers.
    r#"{"id":"26-interstitial","imp":[{"id":"7","instl":1,"bidfloor":1,"banner":{"format":[{"w":320,"h":480}],"api":[3,5,6,7]},
        "video":{"mimes":["video/mp4"],"protocols":[3,7],"w":320,"h":480,"plcmt":3}}],
        "app":{"bundle":"com.example.wordsmith","publisher":{"id":"p","ext":{}}},
        "device":{"os":"Android","osv":"14","geo":{"country":"USA"}},"regs":{"ext":{"gdpr":0}},"ext":{}}"#,
];

#[test]
fn the_specifications_example_requests_get_answers_not_errors() {
    let server = start_https();
    // What each gets: no bid for the iOS app's 728x90 (the example has no such banner), the site
    // on a desktop, the native request whose required title no Android creative has, and the
    // private auction; the rewarded video; and the interstitial's banner, as the example has no
    // VAST interstitial for the impression's video to take.
    let expected = [None, None, None, None, Some(("1002", 2)), Some(("1001", 1))];
    for (request, expected) in SPEC_REQUESTS.into_iter().zip(expected) {
        let reply = http(server.addr, "POST", "/openrtb2/bid", request);
        let sent: serde_json::Value =
            serde_json::from_str(request).unwrap_or_else(|e| panic!("{e}: {request}"));
        assert!(reply.headers.contains("x-openrtb-version: 2.6"), "{}", reply.headers);
        let Some((crid, mtype)) = expected else {
            assert_eq!((reply.status, reply.body.as_str()), (204, ""), "{}", sent["id"]);
            continue;
        };
        assert_eq!(reply.status, 200, "{}: {}", sent["id"], reply.body);
        let response = json(&reply);
        assert_eq!(response["id"], sent["id"]);
        let bid = &response["seatbid"][0]["bid"][0];
        assert_eq!(bid["impid"], sent["imp"][0]["id"]);
        assert_eq!((&bid["crid"], &bid["mtype"]), (&crid.into(), &mtype.into()), "{}", sent["id"]);
        assert!(bid["price"].as_f64().unwrap() >= sent["imp"][0]["bidfloor"].as_f64().unwrap(), "{bid}");
        assert!(!bid["adm"].as_str().unwrap().is_empty(), "{bid}");
    }
}

#[test]
fn an_impression_offering_several_formats_takes_the_best_bid() {
    let server = start_https();
    // A rewarded interstitial that takes a video or a banner: campaign 101 bids the same for its
    // VAST and its HTML creative, and the tie goes to the video, the first.
    let both = r#"{"id": "1", "instl": 1, "rwdd": 1, "banner": {"api": [3]},
        "video": {"mimes": ["video/mp4"], "protocols": [7], "w": 720, "h": 1280}}"#;
    let bid = stride_bid(&server, both, "").expect("a bid");
    assert_eq!((&bid["crid"], &bid["mtype"]), (&"1002".into(), &2.into()));
    // A player of WebM only takes none of the catalog's video: the banner answers.
    let webm = both.replace("video/mp4", "video/webm");
    let bid = stride_bid(&server, &webm, "").expect("a bid");
    assert_eq!((&bid["crid"], &bid["mtype"]), (&"1001".into(), &1.into()));
    // One decision event per impression, whichever slot answered.
    let decisions = events(&server).iter().filter(|e| e.kind == adsnap_events::EventKind::Decision).count();
    assert_eq!(decisions, 2);
}

#[test]
fn connections_past_the_limit_wait_for_a_free_slot() {
    let server = start_with(|c| c.connections_max = 2);
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // Make sure both idle connections were accepted (and hold the two slots) before the third.
    let health = |stream: &mut TcpStream| {
        stream
            .write_all(format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr).as_bytes())
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).map(|_| buf)
    };
    let mut idle = idle;
    for stream in &mut idle {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(&health(stream).unwrap(), b"HTTP/1.1 200");
    }
    let mut third = TcpStream::connect(server.addr).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(health(&mut third).is_err(), "a third connection was served while two held every slot");
    drop(idle.pop());
    // The request already sent is answered once a slot frees.
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut status = [0u8; 12];
    third.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
}

/// Reads until the server closes `stream`, which must happen within ten seconds: the bytes read
/// (an answer, if one was due) and how long the close took from `since`.
fn read_until_closed(stream: &mut TcpStream, since: std::time::Instant) -> (Vec<u8>, Duration) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, since.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return (got, since.elapsed()),
            Err(err) => panic!("the server did not close a stalled connection: {err}"),
        }
    }
}

#[test]
fn stalled_connections_are_closed_and_their_slots_freed() {
    const LIMIT_MS: u64 = 300;
    let server = start_with(|c| {
        c.header_read_timeout_ms = LIMIT_MS;
        c.connections_max = 1;
    });
    let limit = Duration::from_millis(LIMIT_MS);
    let body = AD_REQUEST;
    let host = server.addr;
    // Each stall: what the client sends before it stops, and whether an answer is due first.
    let stalls = [
        ("never sends a byte", String::new(), false),
        ("stops inside the headers", format!("POST /v1/ad HTTP/1.1\r\nhost: {host}\r\ncontent-le"), false),
        (
            "stops inside the body",
            format!(
                "POST /v1/ad HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n{}",
                body.len(),
                &body[..10]
            ),
            false,
        ),
        ("stays idle after an answer", format!("GET /health HTTP/1.1\r\nhost: {host}\r\n\r\n"), true),
    ];
    for (what, sent, answered) in stalls {
        // Timed from before the connection: the server may accept it before `connect` returns.
        let since = std::time::Instant::now();
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.write_all(sent.as_bytes()).unwrap();
        let (got, took) = read_until_closed(&mut stream, since);
        assert_eq!(got.starts_with(b"HTTP/1.1 200"), answered, "{what}: {}", String::from_utf8_lossy(&got));
        // tokio's timer counts whole milliseconds.
        assert!(took + Duration::from_millis(2) >= limit, "{what}: closed after {took:?}, before the limit");
        // The one slot is free again: a new connection is answered.
        let mut next = TcpStream::connect(server.addr).unwrap();
        next.write_all(
            format!("GET /health HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let (got, _) = read_until_closed(&mut next, since);
        assert!(got.starts_with(b"HTTP/1.1 200"), "{what}: the slot was not freed");
    }
}

/// One response read from a kept-alive connection (its head and a `content-length` body), or
/// `None` if the server closed the connection first.
fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            return None;
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length = head
        .lines()
        .find_map(|line| {
            line.to_lowercase().strip_prefix("content-length:").map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8(body).unwrap())
}

#[test]
fn a_connection_that_keeps_asking_stays_open_past_the_limit() {
    const LIMIT_MS: u64 = 400;
    let server = start_with(|c| c.header_read_timeout_ms = LIMIT_MS);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut answers = 0;
    // Requests a tenth of the limit apart, until three limits have passed: the connection would
    // have been closed twice over if requests did not count as progress.
    while started.elapsed() < Duration::from_millis(3 * LIMIT_MS) && answers < 1_000 {
        let request = format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
        stream.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut stream)
            .unwrap_or_else(|| panic!("closed after {answers} answers and {:?}", started.elapsed()));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        answers += 1;
        std::thread::sleep(Duration::from_millis(LIMIT_MS / 10));
    }
    assert!(started.elapsed() >= Duration::from_millis(3 * LIMIT_MS), "{answers} answers");
}

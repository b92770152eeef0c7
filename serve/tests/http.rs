//! The server over real HTTP on a loopback socket: decisions, tracking, bad input, health,
//! metrics and hot swaps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adsnap_builder::{build, BuildOptions};
use adsnap_serve::{ServeConfig, State};

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
    state: Arc<State>,
    runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
    dir: tempfile::TempDir,
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("prod.snap");
    build_snapshot(&example_catalog(), &snapshot, 1);
    let config = ServeConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        snapshot_path: snapshot,
        tracking_key_hex: Some("11".repeat(32)),
        request_body_bytes_max: 4096,
        // The example's schedules are fixed dates; the test must not depend on today's.
        fixed_now_unix_s: Some(NOW_UNIX_S),
        ..ServeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, state) = runtime.block_on(async {
        let listener = adsnap_serve::bind(&config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = config;
        config.public_base_url = format!("http://{addr}");
        let state = State::new(config).await.unwrap();
        tokio::spawn(adsnap_serve::serve(state.clone(), listener, async {
            let _ = stopped.await;
        }));
        (addr, state)
    });
    Running { addr, state, runtime, _stop: stop, dir }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 exchange on a fresh connection.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, headers: head.to_lowercase(), body: body.to_owned() }
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
    assert!(redirect
        .headers
        .contains("location: https://play.google.com/store/apps/details?id=com.example.mergemeadow"));

    let mut forged = path_of(click).to_owned();
    forged.replace_range(forged.len() - 3.., "AAA");
    assert_eq!(http(server.addr, "GET", &forged, "").status, 403);
    assert_eq!(metric(server.addr, r#"adsnap_tracking_events_total{kind="click",result="forged"}"#), 1.0);
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
    check("GET", "/v1/imp?t=garbage", "", 403, "malformed");
    check("GET", "/v1/click", "", 403, "malformed");
    check("GET", "/nope", "", 404, "no endpoint /nope");
    assert_eq!(http(server.addr, "GET", "/health", "").status, 200);
    assert_eq!(http(server.addr, "POST", "/v1/ad", AD_REQUEST).status, 200);
}

#[test]
fn health_reports_the_snapshot_and_a_hot_swap_replaces_it() {
    let server = start();
    let health = json(&http(server.addr, "GET", "/health", ""));
    assert_eq!(health["status"], "ok");
    assert_eq!(health["snapshot"]["version"], 1);
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

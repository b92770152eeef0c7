//! Request handlers: the ad decision, tracking notices, health and metrics.

use std::sync::Arc;

use adsnap_abtest::{assign, Assignment, Slice, UserKey};
use adsnap_snapshot::schema::ArchivedOverrides;
use adsnap_snapshot::{Format, Snapshot};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::answer;
use crate::body::{read_body, ACCEPTED_CODINGS};
use crate::decision::{decide, User, UserFacts, Winner};
use crate::emit::{decision_event, notice_event, DecisionContext, Notice};
use crate::error::RequestError;
use crate::metrics::TrackingLabels;
use crate::openrtb::{Skip, IMPS_MAX};
use crate::privacy::PrivacySignals;
use crate::render::{render, Fill, TrackingUrl, RENDER_GROWTH_BYTES};
use crate::request::{AdRequest, Query};
use crate::served::Served;
use crate::server::State;
use crate::token::{Claims, Token, TokenError};
use adsnap_events::{Channel, EventKind};
use adsnap_profile_store::profile::CODE_UNKNOWN;
use adsnap_profile_store::{Profile, ProfileUpdate, UserKey as ProfileKey};

pub(crate) type Reply = Response<Full<Bytes>>;

pub(crate) fn json_reply(status: u16, value: &serde_json::Value) -> Reply {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default())
}

fn empty(status: u16) -> Reply {
    Response::builder().status(status).body(Full::new(Bytes::new())).unwrap_or_default()
}

fn error_reply(err: &RequestError) -> Reply {
    let field = match err {
        RequestError::Invalid { field, .. } => json!(field),
        _ => json!(null),
    };
    let mut reply = json_reply(err.status(), &json!({ "error": err.to_string(), "field": field }));
    if let RequestError::UnsupportedEncoding(_) = err {
        reply.headers_mut().insert(ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED_CODINGS));
    }
    reply
}

/// A request no route takes, answered from `paths` (each path and the methods it takes): a known
/// path asked with another method gets a 405 naming the ones it takes in `Allow`; any other path
/// a 404, "`missing` `path`".
pub fn unrouted(method: &str, path: &str, paths: &[(&str, &'static str)], missing: &str) -> Reply {
    let Some(&(_, allowed)) = paths.iter().find(|(known, _)| *known == path) else {
        return json_reply(404, &json!({ "error": format!("{missing} {path}"), "field": null }));
    };
    let error = format!("{path} takes {allowed}, not {method}");
    let mut reply = json_reply(405, &json!({ "error": error, "field": null }));
    reply.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
    reply
}

/// The stable key a user is assigned by (`PrivacySignals::stable_id`), else none: assigned per
/// request.
fn assignment_key<'a>(
    signals: &PrivacySignals,
    user_id: Option<&'a str>,
    ifa: Option<&'a str>,
    request_hash: u64,
) -> UserKey<'a> {
    match signals.stable_id(user_id, ifa) {
        Some(id) => UserKey::Id(id.as_bytes()),
        None => UserKey::Anonymous { request_nonce: request_hash },
    }
}

/// The snapshot and decision parameters of an assignment.
fn route_assignment<'a>(
    production: &'a Arc<Served>,
    staging: &'a Option<Arc<Served>>,
    assignment: &Assignment,
) -> (&'a Served, &'a ArchivedOverrides, &'static str) {
    match assignment.slice {
        Slice::Staging => {
            let s = staging.as_deref().unwrap_or(production);
            (s, &s.archive().experiments.control, "staging")
        }
        Slice::Control => (production, &production.archive().experiments.control, "production"),
        Slice::Experiment { experiment_idx, arm_idx, .. } => {
            let experiments = &production.archive().experiments;
            let params = experiments
                .experiments
                .get(experiment_idx as usize)
                .and_then(|x| x.arms.get(arm_idx as usize))
                .map_or(&experiments.control, |arm| &arm.params);
            (production, params, "production")
        }
    }
}

pub async fn ad(state: &State, request: Request<hyper::body::Incoming>) -> Reply {
    match ad_inner(state, request).await {
        Ok(reply) => reply,
        Err(err) => error_reply(&err),
    }
}

async fn ad_inner(state: &State, request: Request<hyper::body::Incoming>) -> Result<Reply, RequestError> {
    let body = read_body(request, state.config.request_body_bytes_max).await?;
    // The reader checks the body's UTF-8 as it reads: a string of ASCII only, nearly all of
    // them, costs nothing more than finding its end.
    let ad_request = AdRequest::parse(&body).map_err(|e| RequestError::Json(e.to_string()))?;
    // The profile is read after the assignment and the ad unit's look-up; asking for its slot
    // now lets its cache miss overlap with theirs. A COPPA app (known only from the snapshot)
    // reads no profile: for its users this fetches a cache line that is never read.
    let signals = ad_request.signals(state.config.tcf_vendor_id);
    state.prefetch_profile(signals.user_key(ad_request.user.id.as_deref(), ad_request.device.ifa.as_deref()));
    // One clock read for the decision, its tokens and its event.
    let now_unix_ms = state.now_unix_ms();
    let now = now_unix_ms.div_euclid(1000);
    let request_id = ad_request.request_id.clone().unwrap_or_else(|| format!("{:016x}", fresh_id()).into());
    let request_hash = xxhash_rust::xxh3::xxh3_64(request_id.as_bytes());
    let production = state.production.load_full();
    let staging = state.staging.load_full();
    let key = assignment_key(
        &signals,
        ad_request.user.id.as_deref(),
        ad_request.device.ifa.as_deref(),
        request_hash,
    );
    let assignment = assign(key, &production.archive().experiments);
    let (snapshot, params, snapshot_name) = route_assignment(&production, &staging, &assignment);
    let query = ad_request.resolve(snapshot, signals, now, request_hash)?;
    // Counted once the app's own COPPA flag is in.
    state.metrics.privacy(&query.privacy);
    let profile = state.profile(query.user_key).await;
    let user = User {
        profile: profile.as_deref().map(|p| p as &dyn UserFacts),
        personalised: query.privacy.personalised(),
    };
    let decision = decide(snapshot, &query, params, user);
    state.metrics.candidates_scanned.observe(decision.n_scanned as f64);
    count_decision(state, &decision, snapshot_name);
    let context = DecisionContext {
        snapshot,
        query: &query,
        request_hash,
        imp_idx: 0,
        assignment_code: assignment.code(),
        channel: Channel::Sdk,
        now_unix_ms,
    };
    state.write_event(&decision_event(&context, &decision))?;
    record_seen(state, &query, profile.as_deref());
    let Ok(winner) = decision.outcome else {
        return Ok(empty(204));
    };
    let claims = Claims {
        request_hash,
        campaign_id: snapshot.archive().campaigns[winner.campaign_idx as usize].id.to_native(),
        creative_id: snapshot.archive().creatives[winner.creative_idx as usize].id.to_native(),
        price_micros: winner.ecpm_micros,
        assignment: assignment.code(),
        issued_unix_s: now,
        user_key: query.user_key.unwrap_or(0),
        snapshot_id: snapshot.header().snapshot_id,
        channel: Channel::Sdk as u8,
        test: query.test,
        privacy: query.privacy.bits().0,
    };
    Ok(json_bytes(200, ad_response(state, snapshot, &winner, &claims, &request_id, &assignment)))
}

/// Keeps the user's last-seen country, language and OS; a repeat visit that changes none of
/// them within the store's `seen_refresh_s` writes nothing.
fn record_seen(state: &State, query: &Query, current: Option<&Profile>) {
    // A test request changes nothing about the user.
    if let Some(key) = query.user_key.filter(|_| !query.test) {
        state.record_profile_given(
            ProfileUpdate::Seen {
                key: ProfileKey(key),
                country: query.country.unwrap_or(CODE_UNKNOWN),
                language: query.language.unwrap_or(CODE_UNKNOWN),
                os: query.os as u8 + 1,
                now_unix_s: query.now_unix_s,
            },
            current,
        );
    }
}

/// What a counted notice or install changes in the user's profile.
fn record_notice(state: &State, kind: EventKind, claims: &Claims, production: &Snapshot) {
    if claims.user_key == 0 || claims.test {
        return;
    }
    let (key, now_unix_s) = (ProfileKey(claims.user_key), claims.issued_unix_s.max(state.now_unix_s()));
    let campaign = production.campaign_by_id(claims.campaign_id).map(|(_, c)| c);
    let update = match (kind, campaign) {
        (EventKind::Impression, Some(c)) => {
            let period_s = c.frequency_cap_period_s.to_native();
            ProfileUpdate::Impression { key, campaign_id: claims.campaign_id, period_s, now_unix_s }
        }
        (EventKind::Click, _) => ProfileUpdate::Click { key, campaign_id: claims.campaign_id, now_unix_s },
        (EventKind::Install, Some(c)) => {
            ProfileUpdate::Install { key, app_bundle_hash: c.app_bundle_hash.to_native(), now_unix_s }
        }
        _ => return,
    };
    state.record_profile(update);
}

/// Counts a decision's outcome.
fn count_decision(state: &State, decision: &crate::decision::Decision, snapshot_name: &str) {
    let outcome_idx = match decision.outcome {
        Ok(_) => 0,
        Err(reason) => crate::metrics::OUTCOMES.iter().position(|&o| o == reason.name()).unwrap_or(0),
    };
    state.metrics.decision(outcome_idx, snapshot_name == "staging");
}

/// A signed token and the public base of the tracking URLs that carry it; none needs escaping in
/// JSON, HTML or XML (see `ServeConfig::public_base_url`).
struct Tracking<'a> {
    token: Token,
    base: &'a str,
}

impl Tracking<'_> {
    fn new<'a>(state: &'a State, claims: &Claims) -> Tracking<'a> {
        Tracking { token: state.token_key.sign(claims), base: state.config.public_base_url.as_str() }
    }

    /// The URL of the tracking endpoint `path` (with its query key, as `/v1/imp?t=`).
    fn url<'s>(&'s self, path: &'s str) -> TrackingUrl<'s> {
        TrackingUrl { base: self.base, path, token: self.token.as_str() }
    }

    fn impression_url(&self) -> TrackingUrl<'_> {
        self.url("/v1/imp?t=")
    }

    fn click_url(&self) -> TrackingUrl<'_> {
        self.url("/v1/click?t=")
    }
}

fn fresh_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    xxhash_rust::xxh3::xxh3_64_with_seed(&n.to_le_bytes(), nanos)
}

/// The body of a filled `POST /v1/ad` (see [`crate::answer`]).
fn ad_response(
    state: &State,
    s: &Served,
    winner: &Winner,
    claims: &Claims,
    request_id: &str,
    assignment: &Assignment,
) -> Vec<u8> {
    let tracking = Tracking::new(state, claims);
    answer::ad_body(
        s,
        &answer::Answer {
            request_id,
            slice: &assignment.slice,
            creative_idx: winner.creative_idx,
            impression_url: tracking.impression_url(),
            click_url: tracking.click_url(),
            price_micros: claims.price_micros,
            ttl_s: state.config.ad_ttl_s,
        },
    )
}

fn json_bytes(status: u16, body: Vec<u8>) -> Reply {
    // Built in place with constant header values: the builder parses and checks every name and
    // value it is given, on every answer.
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackingKind {
    Impression,
    Click,
    /// OpenRTB win notice (`nurl`).
    Win,
    /// OpenRTB billing notice (`burl`).
    Bill,
    /// OpenRTB loss notice (`lurl`).
    Loss,
}

impl TrackingKind {
    fn event_kind(self) -> EventKind {
        match self {
            TrackingKind::Impression => EventKind::Impression,
            TrackingKind::Click => EventKind::Click,
            TrackingKind::Win => EventKind::Win,
            TrackingKind::Bill => EventKind::Bill,
            TrackingKind::Loss => EventKind::Loss,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TrackingKind::Impression => "impression",
            TrackingKind::Click => "click",
            TrackingKind::Win => "win",
            TrackingKind::Bill => "bill",
            TrackingKind::Loss => "loss",
        }
    }
}

/// The clearing price of a win or bill notice (`p=${AUCTION_PRICE}`, per mille in the currency's
/// units), in micros; `None` when absent, not substituted by the exchange, or not a price.
fn clearing_price_micros<B>(request: &Request<B>) -> Option<i64> {
    let price: f64 = query_param(request, "p")?.parse().ok()?;
    (0.0..1e9).contains(&price).then(|| (price * 1e6).round() as i64)
}

/// The value of query parameter `name` (as sent: tokens and ids need no decoding).
fn query_param<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn token_param<B>(request: &Request<B>) -> Option<&str> {
    query_param(request, "t")
}

/// The query parameter a click adds to the store URL it redirects to, carrying the click's
/// token to the measurement partner, which sends it back in its install postback.
pub const CLICK_ID_PARAM: &str = "adsnap_click";
/// Longest partner event id accepted.
const PARTNER_EVENT_ID_CHARS_MAX: usize = 128;

/// `GET /v1/install?click=TOKEN[&event_id=ID]`: a measurement partner's install postback. The
/// click token must verify within the attribution window; the partner's event id (else the
/// click) makes a repeated postback count once.
pub fn install<B>(state: &State, request: &Request<B>) -> Reply {
    let now = state.now_unix_s();
    let window_s = state.token_ages.install_window_s;
    let event_id = query_param(request, "event_id").filter(|id| !id.is_empty());
    if event_id.is_some_and(|id| id.len() > PARTNER_EVENT_ID_CHARS_MAX) {
        let reason = format!("at most {PARTNER_EVENT_ID_CHARS_MAX} characters");
        return error_reply(&RequestError::Invalid { field: "event_id".into(), reason });
    }
    let verified = query_param(request, "click")
        .ok_or(TokenError::Malformed)
        .and_then(|token| state.token_key.verify_within(token, now, window_s));
    let click = query_param(request, "click").unwrap_or_default();
    let counting = Counting {
        kind: EventKind::Install,
        metric_kind: "install",
        identity: event_id.unwrap_or(click).as_bytes(),
        clearing_price_micros: None,
    };
    let dedup_key = |claims: &Claims| match event_id {
        Some(id) => xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), INSTALL_DEDUP_SEED),
        None => claims.request_hash ^ INSTALL_DEDUP_SEED,
    };
    let (claims, result) = match count_notice(state, verified, &counting, dedup_key) {
        Ok(counted) => counted,
        Err(err) => return error_reply(&err),
    };
    json_reply(
        200,
        &json!({ "status": result, "campaign_id": claims.campaign_id, "creative_id": claims.creative_id }),
    )
}

/// What a notice or install is, for counting it.
struct Counting<'a> {
    kind: EventKind,
    /// Its `kind` label in `adsnap_tracking_events_total`.
    metric_kind: &'static str,
    /// What makes it unique (see `Notice::identity`).
    identity: &'a [u8],
    clearing_price_micros: Option<i64>,
}

/// Counts a notice once: the first time its token is seen, its event is written and the user's
/// profile updated; repeats are acknowledged as duplicates; a bad token is refused. Every
/// outcome is counted in the metrics. Returns the claims and "counted" or "duplicate", or why
/// the notice is refused.
fn count_notice(
    state: &State,
    verified: Result<Claims, TokenError>,
    counting: &Counting<'_>,
    dedup_key: impl FnOnce(&Claims) -> u64,
) -> Result<(Claims, &'static str), RequestError> {
    let dedup_key = verified.as_ref().ok().map(dedup_key);
    let counted = dedup_key.is_some_and(|key| state.dedup.first_time(key));
    let result = match &verified {
        Ok(_) if counted => "counted",
        Ok(_) => "duplicate",
        Err(TokenError::Malformed) => "malformed",
        Err(TokenError::Forged) => "forged",
        Err(TokenError::Expired) => "expired",
    };
    let labels = TrackingLabels { kind: counting.metric_kind, result };
    let claims = match verified {
        Ok(claims) => claims,
        Err(err) => {
            state.metrics.tracking.get_or_create(&labels).inc();
            return Err(RequestError::Token(err.to_string()));
        }
    };
    if counted {
        let notice = Notice {
            kind: counting.kind,
            claims: &claims,
            identity: counting.identity,
            clearing_price_micros: counting.clearing_price_micros,
            now_unix_ms: state.now_unix_ms(),
        };
        let production = state.production.load();
        if let Err(err) = state.write_event(&notice_event(&notice, &production)) {
            // Not counted after all: the sender's retry must count.
            state.dedup.forget(dedup_key.unwrap_or_default());
            return Err(err);
        }
        record_notice(state, counting.kind, &claims, &production);
    }
    state.metrics.tracking.get_or_create(&labels).inc();
    Ok((claims, result))
}

/// `url` with the click id added to its query (before any fragment).
fn with_click_id(url: &str, token: &str) -> String {
    let (base, fragment) = url.split_once('#').map_or((url, None), |(b, f)| (b, Some(f)));
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut location = format!("{base}{separator}{CLICK_ID_PARAM}={token}");
    if let Some(fragment) = fragment {
        location.push('#');
        location.push_str(fragment);
    }
    location
}

/// Keeps install postbacks' de-duplication keys apart from the notices'.
const INSTALL_DEDUP_SEED: u64 = 0x1a57_a11e_d000_0007;

/// An impression or click notice: the token must verify; a repeated one is acknowledged but
/// counted once. A click redirects to the promoted app's store page.
pub fn tracking<B>(state: &State, request: &Request<B>, kind: TrackingKind) -> Reply {
    let now = state.now_unix_s();
    let token = token_param(request).unwrap_or_default();
    let verified = state.token_key.verify(token, now);
    let counting = Counting {
        kind: kind.event_kind(),
        metric_kind: kind.name(),
        identity: token.as_bytes(),
        clearing_price_micros: clearing_price_micros(request),
    };
    let dedup_key = |claims: &Claims| claims.request_hash ^ (kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let claims = match count_notice(state, verified, &counting, dedup_key) {
        Ok((claims, _)) => claims,
        Err(err) => return error_reply(&err),
    };
    if kind != TrackingKind::Click {
        return empty(204);
    }
    let production = state.production.load();
    let Some((_, campaign)) = production.campaign_by_id(claims.campaign_id) else {
        return json_reply(
            410,
            &json!({ "error": "the campaign is no longer in the snapshot", "field": null }),
        );
    };
    let location =
        with_click_id(production.str(&campaign.store_url), token_param(request).unwrap_or_default());
    Response::builder()
        .status(StatusCode::FOUND)
        .header(LOCATION, location)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// One served snapshot as `/health` and the admin endpoints describe it; `path` is its slot file.
pub(crate) fn snapshot_health(s: &Snapshot, path: &std::path::Path, now_unix_ms: i64) -> serde_json::Value {
    let h = s.header();
    json!({
        "id": h.id_hex(),
        "version": h.snapshot_version,
        "path": path,
        "age_s": (now_unix_ms - h.created_unix_ms).max(0) / 1000,
        "campaigns": s.archive().campaigns.len(),
        "bytes": h.file_bytes(),
        "huge_page_bytes": s.huge_page_bytes(),
    })
}

pub fn health(state: &State) -> Reply {
    let now_ms = state.now_unix_s() * 1000;
    let staging = state.staging.load_full().map(|s| snapshot_health(&s, &state.slots.staging, now_ms));
    let event_log = match &state.events {
        Some(log) => serde_json::to_value(log.health()).unwrap_or_default(),
        None => json!({ "status": "disabled", "error": "events_enabled is off: no events are written" }),
    };
    let profile_store = match &state.profiles {
        Some(profiles) => serde_json::to_value(profiles.health()).unwrap_or_default(),
        None => {
            json!({ "status": "disabled", "error": "profiles_enabled is off: decisions run without profiles" })
        }
    };
    // Degraded: requests are being shed because their events cannot be written.
    let status = if event_log["status"] == "refusing" { "degraded" } else { "ok" };
    json_reply(
        200,
        &json!({
            "status": status,
            "uptime_s": state.started.elapsed().as_secs(),
            "snapshot": snapshot_health(&state.production.load(), &state.slots.production, now_ms),
            "staging_snapshot": staging,
            "profile_store": profile_store,
            "event_log": event_log,
        }),
    )
}

pub fn metrics(state: &State) -> Reply {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).is_err() {
        return empty(500);
    }
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}

/// The OpenRTB version answered, sent in `x-openrtb-version` with every answer to a bid request.
pub const OPENRTB_VERSION: &str = "2.6";
const OPENRTB_VERSION_HEADER: &str = "x-openrtb-version";

#[derive(serde::Serialize)]
struct BidResponse<'a> {
    id: &'a str,
    cur: &'a str,
    seatbid: [SeatBid<'a>; 1],
}

#[derive(serde::Serialize)]
struct SeatBid<'a> {
    seat: &'a str,
    bid: Vec<Bid<'a>>,
}

#[derive(serde::Serialize)]
struct Bid<'a> {
    id: String,
    impid: &'a str,
    price: f64,
    adm: String,
    nurl: String,
    burl: String,
    lurl: String,
    adomain: [&'a str; 1],
    bundle: &'a str,
    crid: String,
    cid: String,
    cat: [String; 1],
    /// The creative's IAB creative attributes; left out when it has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attr: Vec<u8>,
    w: u16,
    h: u16,
    mtype: u8,
    /// Seconds the exchange may hold the bid before its impression: `ad_ttl_s`, which is at
    /// most the tracking URLs' life.
    exp: u32,
}

fn openrtb_reply(status: u16, body: Vec<u8>) -> Reply {
    let mut builder = Response::builder().status(status).header(OPENRTB_VERSION_HEADER, OPENRTB_VERSION);
    if !body.is_empty() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(Bytes::from(body))).unwrap_or_default()
}

/// A refused bid request: the JSON error every endpoint gives, with the OpenRTB version header.
fn openrtb_error(err: &RequestError) -> Reply {
    let mut reply = error_reply(err);
    reply.headers_mut().insert(OPENRTB_VERSION_HEADER, HeaderValue::from_static(OPENRTB_VERSION));
    reply
}

/// `POST /openrtb2/bid`: a bid per impression adsnap can fill, or 204 for no bid.
pub async fn openrtb_bid(state: &State, request: Request<hyper::body::Incoming>) -> Reply {
    let body = match read_body(request, state.config.request_body_bytes_max).await {
        Ok(body) => body,
        Err(err) => return openrtb_error(&err),
    };
    let bid_request: crate::openrtb::BidRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return openrtb_error(&RequestError::Json(e.to_string())),
    };
    let production = state.production.load_full();
    let staging = state.staging.load_full();
    let request_hash = xxhash_rust::xxh3::xxh3_64(bid_request.id.as_bytes());
    let signals = bid_request.signals(state.config.tcf_vendor_id);
    let key = assignment_key(&signals, bid_request.user_id(), bid_request.ifa(), request_hash);
    let assignment = assign(key, &production.archive().experiments);
    let (snapshot, params, snapshot_name) = route_assignment(&production, &staging, &assignment);
    let currency = snapshot.archive().meta.currency.as_str();
    let n_imps = bid_request.imp.len();
    let seat = state.config.openrtb_seat.as_str();
    let whole_request_skip =
        if !bid_request.cur.is_empty() && !bid_request.cur.iter().any(|c| c.eq_ignore_ascii_case(currency)) {
            Some(Skip::Currency)
        } else if !bid_request.seat_allowed(seat) {
            Some(Skip::Seat)
        } else {
            None
        };
    if let Some(skip) = whole_request_skip {
        state.metrics.skipped(skip, n_imps);
        return openrtb_reply(204, Vec::new());
    }
    if n_imps > IMPS_MAX {
        state.metrics.skipped(Skip::ImpsMax, n_imps - IMPS_MAX);
    }
    let tracking_secure = state.config.public_base_url.starts_with("https://");
    let now_unix_ms = state.now_unix_ms();
    let now = now_unix_ms.div_euclid(1000);
    let mut impressions = match bid_request.resolve(snapshot, signals, now, request_hash) {
        Ok(impressions) => impressions,
        Err(skip) => {
            state.metrics.skipped(skip, n_imps.min(IMPS_MAX));
            return openrtb_reply(204, Vec::new());
        }
    };
    // Counted once the app's own COPPA flag is in.
    state.metrics.privacy(&impressions.privacy());
    let profile = state.profile(impressions.user_key()).await;
    let user = User {
        profile: profile.as_deref().map(|p| p as &dyn UserFacts),
        personalised: impressions.privacy().personalised(),
    };
    record_seen(state, impressions.shared(), profile.as_deref());
    let mut bids = Vec::new();
    for (imp_idx, imp) in bid_request.imp.iter().take(IMPS_MAX).enumerate() {
        let mut impression = match impressions.impression(snapshot, imp, currency) {
            Ok(impression) if impression.slots[0].1.secure && !tracking_secure => {
                state.metrics.skipped(Skip::InsecureTracking, 1);
                continue;
            }
            Ok(impression) => impression,
            Err(skip) => {
                state.metrics.skipped(skip, 1);
                continue;
            }
        };
        let chosen = impressions.decide(snapshot, &mut impression, params, user);
        let Some((slot_idx, decision)) = chosen else { continue };
        let slot = impression.slots[slot_idx].0;
        let query = impressions.query(&mut impression, slot_idx);
        count_decision(state, &decision, snapshot_name);
        let context = DecisionContext {
            snapshot,
            query,
            request_hash,
            imp_idx: imp_idx as u32,
            assignment_code: assignment.code(),
            channel: Channel::OpenRtb,
            now_unix_ms,
        };
        if let Err(err) = state.write_event(&decision_event(&context, &decision)) {
            return openrtb_error(&err);
        }
        if let Ok(winner) = decision.outcome {
            // `None` only for native markup the answer cannot renumber, which the decision
            // checked it could: no bid rather than an answer the exchange would refuse.
            bids.extend(bid(state, snapshot, &winner, imp, slot, request_hash, &assignment, query));
        }
    }
    if bids.is_empty() {
        return openrtb_reply(204, Vec::new());
    }
    let response = BidResponse { id: &bid_request.id, cur: currency, seatbid: [SeatBid { seat, bid: bids }] };
    openrtb_reply(200, serde_json::to_vec(&response).unwrap_or_default())
}

#[allow(clippy::too_many_arguments)]
fn bid<'a>(
    state: &State,
    s: &'a Served,
    winner: &Winner,
    imp: &'a crate::openrtb::Imp,
    slot: crate::openrtb::Slot,
    request_hash: u64,
    assignment: &Assignment,
    query: &Query,
) -> Option<Bid<'a>> {
    let a = s.archive();
    let campaign = &a.campaigns[winner.campaign_idx as usize];
    let creative = &a.creatives[winner.creative_idx as usize];
    let advertiser = &a.advertisers[campaign.advertiser_idx.to_native() as usize];
    // One token per impression: the request hash is mixed with the impression id.
    let claims = Claims {
        request_hash: xxhash_rust::xxh3::xxh3_64_with_seed(imp.id.as_bytes(), request_hash),
        campaign_id: campaign.id.to_native(),
        creative_id: creative.id.to_native(),
        price_micros: winner.ecpm_micros,
        assignment: assignment.code(),
        issued_unix_s: query.now_unix_s,
        user_key: query.user_key.unwrap_or(0),
        snapshot_id: s.header().snapshot_id,
        channel: Channel::OpenRtb as u8,
        test: query.test,
        privacy: query.privacy.bits().0,
    };
    let tracking = Tracking::new(state, &claims);
    let (token, base) = (&tracking.token, tracking.base);
    let (impression_url, click_url) = (tracking.impression_url(), tracking.click_url());
    let mut adm = String::with_capacity(s.str(&creative.markup).len() + RENDER_GROWTH_BYTES);
    render(s, creative, &Fill { click_url, impression_url, campaign_id: claims.campaign_id }, &mut adm);
    if let Some(request) = &query.fit.native {
        adm = crate::native::answer(&adm, request)?;
    }
    // A banner is one of its slot's sizes; other slots adapt, and the size they gave is echoed.
    let side = |slot_side: u16, creative_side: u16| {
        if slot_side > 0 && slot.format != Format::Banner {
            slot_side
        } else {
            creative_side
        }
    };
    Some(Bid {
        id: format!("{:016x}", claims.request_hash),
        impid: &imp.id,
        price: winner.ecpm_micros as f64 / 1e6,
        adm,
        nurl: format!("{base}/v1/win?t={token}&p=${{AUCTION_PRICE}}"),
        burl: format!("{base}/v1/bill?t={token}&p=${{AUCTION_PRICE}}"),
        lurl: format!("{base}/v1/loss?t={token}&r=${{AUCTION_LOSS}}"),
        adomain: [s.str(&advertiser.domain)],
        bundle: s.str(&campaign.app_bundle),
        crid: claims.creative_id.to_string(),
        cid: claims.campaign_id.to_string(),
        cat: [adsnap_snapshot::format_iab_category(advertiser.category.to_native())],
        attr: codes_of(s.creative_attrs(winner.creative_idx)),
        w: side(slot.width, creative.width.to_native()),
        h: side(slot.height, creative.height.to_native()),
        mtype: slot.mtype,
        exp: state.config.ad_ttl_s,
    })
}

/// The codes of a mask's set bits, lowest first.
fn codes_of(mask: u32) -> Vec<u8> {
    (1..32u8).filter(|&code| mask & 1 << code != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_urls_are_base_path_and_token() {
        let key = crate::token::TokenKey::new([1; 32], 60);
        let claims = Claims {
            request_hash: 1,
            campaign_id: 2,
            creative_id: 3,
            price_micros: 4,
            assignment: 0,
            issued_unix_s: 5,
            user_key: 6,
            snapshot_id: 7,
            channel: 0,
            test: false,
            privacy: 0,
        };
        let tracking = Tracking { token: key.sign(&claims), base: "http://127.0.0.1:8080" };
        for (url, path) in [(tracking.click_url(), "/v1/click?t="), (tracking.impression_url(), "/v1/imp?t=")]
        {
            let mut written = String::new();
            url.write(&mut written);
            assert_eq!(written, url.to_string());
            assert_eq!(written, format!("http://127.0.0.1:8080{path}{}", tracking.token));
            assert_eq!(key.verify(written.rsplit_once("t=").unwrap().1, 5), Ok(claims));
        }
    }

    #[test]
    fn the_click_id_joins_the_store_urls_query() {
        let check = |url: &str, expected: &str| assert_eq!(with_click_id(url, "T"), expected);
        check("https://apps.apple.com/app/id1", "https://apps.apple.com/app/id1?adsnap_click=T");
        check("https://play.google.com/d?id=a", "https://play.google.com/d?id=a&adsnap_click=T");
        check("https://s.example/p?x=1#top", "https://s.example/p?x=1&adsnap_click=T#top");
        check("https://s.example/p#top", "https://s.example/p?adsnap_click=T#top");
    }
}

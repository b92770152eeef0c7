//! The server's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::openrtb::Skip;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `fill` or the no-fill reason.
    pub outcome: &'static str,
    /// `production` or `staging`.
    pub snapshot: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrivacyLabels {
    /// One of [`PRIVACY_SIGNALS`].
    pub signal: &'static str,
}

/// The privacy signals counted: COPPA, GDPR applies, GDPR without consent to purpose 1 (no
/// profile), GDPR without consent to personalised ads (purposes 3 and 4), limited ad tracking
/// (or ATT short of authorised), and a US opt-out; for each request decided, COPPA from the app
/// as the snapshot marks it included. A sudden fall in consent is how a publisher's consent tool
/// gone wrong shows.
pub const PRIVACY_SIGNALS: [&str; 6] = [
    "coppa",
    "gdpr_applies",
    "gdpr_no_consent",
    "gdpr_no_personalised_ads",
    "limit_ad_tracking",
    "us_opt_out",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// `Skip::name` of [`crate::openrtb::Skip`].
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrackingLabels {
    pub kind: &'static str,
    /// `counted`, `duplicate`, `forged`, `expired` or `malformed`.
    pub result: &'static str,
}

/// The endpoints, in the order `Metrics::request` indexes them.
pub const ENDPOINTS: [&str; 11] = [
    "ad",
    "impression",
    "click",
    "health",
    "metrics",
    "unknown",
    "openrtb",
    "win",
    "bill",
    "loss",
    "install",
];
/// The statuses the server answers with; each (endpoint, status) pair has its series made up
/// front, so that counting a request is an array index, not a label hash and a lock.
const STATUSES: [u16; 12] = [200, 204, 302, 400, 403, 404, 405, 410, 413, 415, 500, 503];
/// Decision outcomes, as `NoFill::name` and `fill`.
pub const OUTCOMES: [&str; 5] = ["fill", "no_candidates", "filtered", "below_floor", "scan_limit"];
const SNAPSHOTS: [&str; 2] = ["production", "staging"];

/// Every metric the server exports, registered once.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_latency_s: Family<RequestLabels, Histogram>,
    pub decisions: Family<OutcomeLabels, Counter>,
    pub candidates_scanned: Histogram,
    pub snapshot_swaps: Counter,
    pub snapshot_swap_failures: Counter,
    pub tracking: Family<TrackingLabels, Counter>,
    pub privacy: Family<PrivacyLabels, Counter>,
    privacy_series: [Counter; PRIVACY_SIGNALS.len()],
    pub openrtb_skipped: Family<SkipLabels, Counter>,
    skipped_series: [Counter; Skip::ALL.len()],
    request_series: Vec<(Counter, Histogram)>,
    decision_series: Vec<Counter>,
}

impl Metrics {
    /// Counts one request to `ENDPOINTS[endpoint_idx]` and its duration.
    pub fn request(&self, endpoint_idx: usize, status: u16, seconds: f64) {
        let series = STATUSES.iter().position(|&s| s == status).map(|s| endpoint_idx * STATUSES.len() + s);
        match series.and_then(|i| self.request_series.get(i)) {
            Some((counter, histogram)) => {
                counter.inc();
                histogram.observe(seconds);
            }
            None => {
                let labels =
                    RequestLabels { endpoint: ENDPOINTS[endpoint_idx.min(ENDPOINTS.len() - 1)], status };
                self.requests.get_or_create(&labels).inc();
                self.request_latency_s.get_or_create(&labels).observe(seconds);
            }
        }
    }

    /// Counts the privacy signals of one ad or bid request.
    pub fn privacy(&self, s: &crate::privacy::PrivacySignals) {
        let on = [
            s.coppa,
            s.gdpr_applies,
            s.gdpr_applies && !s.gdpr_consent,
            s.gdpr_applies && !s.gdpr_personalised_ads,
            s.limit_ad_tracking,
            s.us_privacy_opt_out,
        ];
        for (counter, on) in self.privacy_series.iter().zip(on) {
            if on {
                counter.inc();
            }
        }
    }

    /// Counts `n` OpenRTB impressions left without a decision, and why.
    pub fn skipped(&self, skip: Skip, n: usize) {
        self.skipped_series[skip as usize].inc_by(n as u64);
    }

    /// Counts one decision by outcome (an index of `OUTCOMES`) and snapshot (staging or not).
    pub fn decision(&self, outcome_idx: usize, staging: bool) {
        let i = outcome_idx * SNAPSHOTS.len() + staging as usize;
        if let Some(counter) = self.decision_series.get(i) {
            counter.inc();
        }
    }
}

/// Registers a family of counters and makes its series for `labels` up front, so that counting
/// one is an array index, not a label hash and a lock.
fn counters_made_up_front<L, const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: [L; N],
) -> (Family<L, Counter>, [Counter; N])
where
    L: Clone + std::fmt::Debug + std::hash::Hash + Eq + EncodeLabelSet + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    registry.register(name, help, family.clone());
    let series = labels.map(|labels| family.get_or_create(&labels).clone());
    (family, series)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("adsnap");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_latency_s = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            // 10 µs to about 80 ms.
            Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
        });
        let decisions = Family::<OutcomeLabels, Counter>::default();
        let candidates_scanned = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let (snapshot_swaps, snapshot_swap_failures) = (Counter::default(), Counter::default());
        let tracking = Family::<TrackingLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by endpoint and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by endpoint and status",
            request_latency_s.clone(),
        );
        registry.register("decisions", "Ad decisions by outcome (fill or no-fill reason)", decisions.clone());
        registry.register(
            "candidates_scanned",
            "Candidates scanned per decision",
            candidates_scanned.clone(),
        );
        registry.register("snapshot_swaps", "Snapshots swapped in", snapshot_swaps.clone());
        registry.register(
            "snapshot_swap_failures",
            "Snapshots refused at swap",
            snapshot_swap_failures.clone(),
        );
        registry.register("tracking_events", "Tracking notices by kind and result", tracking.clone());
        let (privacy, privacy_series) = counters_made_up_front(
            &mut registry,
            "privacy_signals",
            "Ad and bid requests by privacy signal: COPPA, GDPR applies, GDPR without consent, GDPR without consent to personalised ads, limited ad tracking, US opt-out",
            PRIVACY_SIGNALS.map(|signal| PrivacyLabels { signal }),
        );
        let (openrtb_skipped, skipped_series) = counters_made_up_front(
            &mut registry,
            "openrtb_impressions_skipped",
            "OpenRTB impressions answered with no bid before any decision, by reason",
            Skip::ALL.map(|skip| SkipLabels { reason: skip.name() }),
        );
        let request_series = ENDPOINTS
            .iter()
            .flat_map(|&endpoint| STATUSES.iter().map(move |&status| RequestLabels { endpoint, status }))
            .map(|labels| {
                (requests.get_or_create(&labels).clone(), request_latency_s.get_or_create(&labels).clone())
            })
            .collect();
        let decision_series = OUTCOMES
            .iter()
            .flat_map(|&outcome| SNAPSHOTS.iter().map(move |&snapshot| OutcomeLabels { outcome, snapshot }))
            .map(|labels| decisions.get_or_create(&labels).clone())
            .collect();
        Metrics {
            privacy,
            privacy_series,
            openrtb_skipped,
            skipped_series,
            request_series,
            decision_series,
            registry,
            requests,
            request_latency_s,
            decisions,
            candidates_scanned,
            snapshot_swaps,
            snapshot_swap_failures,
            tracking,
        }
    }
}

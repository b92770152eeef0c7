//! The server's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
pub struct TrackingLabels {
    pub kind: &'static str,
    /// `counted`, `duplicate`, `forged`, `expired` or `malformed`.
    pub result: &'static str,
}

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
        Metrics {
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

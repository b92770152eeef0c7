//! The follower's counters: every manifest it acted on ends in one outcome, counted by kind and
//! exposed in Prometheus text on `/metrics` and as JSON on `/status`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::error::DistributeError;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Installed,
    RejectedSignature,
    RejectedManifest,
    RejectedStale,
    RejectedMismatch,
    RejectedSnapshot,
    RejectedDisk,
    DownloadFailed,
    HandoverFailed,
    OriginUnreachable,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Installed,
        Outcome::RejectedSignature,
        Outcome::RejectedManifest,
        Outcome::RejectedStale,
        Outcome::RejectedMismatch,
        Outcome::RejectedSnapshot,
        Outcome::RejectedDisk,
        Outcome::DownloadFailed,
        Outcome::HandoverFailed,
        Outcome::OriginUnreachable,
    ];

    pub fn of(err: &DistributeError) -> Outcome {
        match err {
            DistributeError::BadSignature { .. } => Outcome::RejectedSignature,
            DistributeError::ManifestFormat(_) | DistributeError::ManifestField { .. } => {
                Outcome::RejectedManifest
            }
            DistributeError::StaleVersion { .. } => Outcome::RejectedStale,
            DistributeError::Mismatch { .. } => Outcome::RejectedMismatch,
            DistributeError::Snapshot { .. } => Outcome::RejectedSnapshot,
            DistributeError::DiskBudget { .. } => Outcome::RejectedDisk,
            DistributeError::Handover { .. } => Outcome::HandoverFailed,
            DistributeError::Http { .. } => Outcome::OriginUnreachable,
            _ => Outcome::DownloadFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::RejectedSignature => "rejected_signature",
            Outcome::RejectedManifest => "rejected_manifest",
            Outcome::RejectedStale => "rejected_stale",
            Outcome::RejectedMismatch => "rejected_mismatch",
            Outcome::RejectedSnapshot => "rejected_snapshot",
            Outcome::RejectedDisk => "rejected_disk",
            Outcome::DownloadFailed => "download_failed",
            Outcome::HandoverFailed => "handover_failed",
            Outcome::OriginUnreachable => "origin_unreachable",
        }
    }
}

/// Whether the same manifest is worth trying again on the next poll.
pub fn retryable(err: &DistributeError) -> bool {
    match err {
        DistributeError::Handover { retry, .. } => *retry,
        DistributeError::Torrent(_) | DistributeError::Http { .. } | DistributeError::Io { .. } => true,
        _ => false,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

pub struct Metrics {
    registry: Registry,
    outcomes: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("adsnap_follow");
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register("manifests", "Manifests acted on, by outcome", outcomes.clone());
        Metrics { registry, outcomes }
    }
}

impl Metrics {
    pub fn count(&self, outcome: Outcome) {
        self.outcomes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.outcomes.get_or_create(&OutcomeLabels { outcome }).get()
    }

    pub fn outcomes_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> =
            Outcome::ALL.iter().map(|o| (o.as_str().to_owned(), self.get(*o).into())).collect();
        map.into()
    }

    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

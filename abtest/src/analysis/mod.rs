//! The analysis of A/B tests and of staging: events in (any iterator of
//! [`adsnap_events::Event`]), a [`Report`] out, rendered as a terminal table, JSON or a
//! self-contained HTML page.
//!
//! The pipeline is [`Aggregator`] (one streaming pass, per-user counters per group), then
//! [`build_report`] (estimates, comparisons against control, sample-ratio checks, the staging
//! alarm), then a renderer. The statistics and their reasons are in [`stats`] and
//! `docs/abtest.md`.

mod aggregate;
mod error;
mod html;
mod jsonl;
mod prometheus;
mod report;
mod shards;
pub mod simulate;
mod split;
pub mod stats;
mod table;
mod user_table;

pub use aggregate::{
    Aggregates, Aggregator, EventCounts, GroupAggregate, GroupKey, InputCounts, SnapshotTally, TimeRange,
    GROUPS_MAX, SNAPSHOT_IDS_MAX,
};
pub use error::AnalysisError;
pub use html::render_html;
pub use jsonl::{read_json_lines, JsonLines, LINE_BYTES_MAX};
pub use prometheus::render_prometheus;
pub use report::{
    build_report, ArmReport, ExperimentReport, GroupReport, Metric, MetricComparison, Report, ReportConfig,
    SnapshotUse, SrmCell, SrmCheck, StagingReport, METHODS,
};
pub use shards::{SHARDS_MAX, SHARD_BATCHES_QUEUED_MAX, SHARD_BATCH_UPDATES};
pub use split::{ConfiguredArm, ConfiguredExperiment, ConfiguredSplit, KnownSnapshot};
pub use table::render_table;

/// Aggregates every event of `events` in `range`: the one streaming pass a report needs.
/// Stops at the first error of the source.
pub fn aggregate<'a, E>(
    events: impl IntoIterator<Item = Result<adsnap_events::Event<'a>, E>>,
    range: TimeRange,
) -> Result<Aggregates, E> {
    let mut aggregator = Aggregator::new(range);
    for event in events {
        aggregator.push(&event?);
    }
    Ok(aggregator.finish())
}

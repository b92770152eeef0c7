//! From aggregates to a report: every metric of every experiment arm and of staging against
//! control, the sample-ratio-mismatch checks, the staging alarm and the warnings. The report is
//! plain data (serde) that the terminal, JSON and HTML renderers share.

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregates, EventCounts, GroupAggregate, GroupKey, InputCounts, TimeRange};
use super::split::{ConfiguredSplit, KnownSnapshot};
use super::stats::{
    chi_square_goodness_of_fit, compare, mean_estimate, ratio_estimate, ChiSquare, Comparison, Estimate,
    Moments, Quantity, TestSettings, Unavailable,
};
use super::AnalysisError;

/// How a report is computed. Every field has a default; see `docs/abtest.md`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Two-sided significance level of every interval and test, in (0, 0.5]. Default 0.05.
    pub alpha: f64,
    /// Standard deviation of the effects the mSPRT mixes over, as a share of the control's
    /// value, in (0, 10]. Default 0.05: effects of a few percent are what experiments look for.
    pub msprt_tau_relative: f64,
    /// A sample-ratio-mismatch check fails (a blocking warning) below this p-value, in (0, 1).
    /// Default 0.001: strict, because a check runs on every experiment at every look.
    pub srm_p_value_min: f64,
    /// Staging raises the alarm on a metric whose relative difference from control is beyond
    /// this share (0.1 = 10%) and significant by the always-valid p-value. Default 0.1.
    pub staging_alarm_relative: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            alpha: 0.05,
            msprt_tau_relative: 0.05,
            srm_p_value_min: 0.001,
            staging_alarm_relative: 0.1,
        }
    }
}

impl ReportConfig {
    pub fn validate(&self) -> Result<(), AnalysisError> {
        let check = |field: &'static str, value: f64, ok: bool, rule: &'static str| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(AnalysisError::InvalidConfig { field, value, rule })
            }
        };
        check("alpha", self.alpha, self.alpha > 0.0 && self.alpha <= 0.5, "in (0, 0.5]")?;
        let tau = self.msprt_tau_relative;
        check("msprt_tau_relative", tau, tau > 0.0 && tau <= 10.0, "in (0, 10]")?;
        let srm = self.srm_p_value_min;
        check("srm_p_value_min", srm, srm > 0.0 && srm < 1.0, "in (0, 1)")?;
        let alarm = self.staging_alarm_relative;
        check("staging_alarm_relative", alarm, alarm >= 0.0, "at least 0")
    }

    fn test_settings(&self) -> TestSettings {
        TestSettings { alpha: self.alpha, msprt_tau_relative: self.msprt_tau_relative }
    }
}

/// The metrics of a report, all counted per user (users with a key, not anonymous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Decisions (ad requests and OpenRTB impressions answered) per user.
    RequestsPerUser,
    /// Filled decisions / decisions. Ratio: delta method.
    FillRate,
    /// Impressions per user.
    ImpressionsPerUser,
    /// Clicks / impressions. Ratio: delta method.
    Ctr,
    /// Installs / impressions. Ratio: delta method.
    InstallRate,
    /// Revenue per thousand impressions, in the currency: 1000 × Σ revenue / Σ impressions.
    /// Ratio: delta method.
    Rpm,
    /// Revenue per user, in the currency.
    RevenuePerUser,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::RequestsPerUser,
        Metric::FillRate,
        Metric::ImpressionsPerUser,
        Metric::Ctr,
        Metric::InstallRate,
        Metric::Rpm,
        Metric::RevenuePerUser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RequestsPerUser => "requests per user",
            Metric::FillRate => "fill rate",
            Metric::ImpressionsPerUser => "impressions per user",
            Metric::Ctr => "CTR",
            Metric::InstallRate => "install rate",
            Metric::Rpm => "RPM",
            Metric::RevenuePerUser => "revenue per user",
        }
    }

    /// Whether the value is a proportion, shown as a percentage.
    pub fn is_proportion(self) -> bool {
        matches!(self, Metric::FillRate | Metric::Ctr | Metric::InstallRate)
    }

    pub fn estimate(self, m: &Moments) -> Result<Estimate, Unavailable> {
        use Quantity::*;
        match self {
            Metric::RequestsPerUser => mean_estimate(m, Requests, 1.0),
            Metric::FillRate => ratio_estimate(m, FilledRequests, Requests, 1.0),
            Metric::ImpressionsPerUser => mean_estimate(m, Impressions, 1.0),
            Metric::Ctr => ratio_estimate(m, Clicks, Impressions, 1.0),
            Metric::InstallRate => ratio_estimate(m, Installs, Impressions, 1.0),
            Metric::Rpm => ratio_estimate(m, Revenue, Impressions, 1000.0),
            Metric::RevenuePerUser => mean_estimate(m, Revenue, 1.0),
        }
    }
}

/// One metric of one group against control.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricComparison {
    pub metric: Metric,
    /// `None` when the comparison could not be made; `unavailable` says why.
    pub comparison: Option<Comparison>,
    pub unavailable: Option<String>,
    /// By the always-valid p-value, the one to act on when results are looked at repeatedly.
    pub significant: bool,
}

/// A sample-ratio-mismatch check: users per cell against the configured shares.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SrmCheck {
    /// Cell names (arms, then control), observed users, and configured shares.
    pub cells: Vec<SrmCell>,
    pub chi_square: Option<ChiSquare>,
    /// The check failed: the traffic does not match the split, and the comparisons of this
    /// experiment cannot be trusted.
    pub failed: bool,
    /// Why the check could not run or why it failed, when it is not a plain p-value.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SrmCell {
    pub name: String,
    pub n_users: u64,
    /// Configured share of the cells' total, in (0, 1]; `None` when not configured.
    pub expected_share: Option<f64>,
}

/// A group's own numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupReport {
    pub key: GroupKey,
    pub label: String,
    pub n_users: u64,
    pub events: EventCounts,
    /// Each metric's value over the group's users (`None` where undefined).
    pub values: Vec<(Metric, Option<f64>)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmReport {
    pub arm_id: u32,
    pub name: Option<String>,
    pub n_users: u64,
    pub metrics: Vec<MetricComparison>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExperimentReport {
    pub experiment_id: u32,
    pub name: Option<String>,
    /// No user of any arm in range: nothing to compare.
    pub no_traffic: bool,
    pub srm: SrmCheck,
    pub arms: Vec<ArmReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StagingReport {
    pub n_users: u64,
    pub srm: SrmCheck,
    pub metrics: Vec<MetricComparison>,
    /// Metrics beyond `staging_alarm_relative` and significant.
    pub alarm_metrics: Vec<Metric>,
}

/// Snapshot ids seen in range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotUse {
    pub snapshot_id: String,
    pub n_events: u64,
    pub n_staging_events: u64,
    /// Given to the report (`--snapshot`), so its split is known.
    pub known: bool,
}

/// A whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub range: TimeRange,
    pub time_min_ms: Option<i64>,
    pub time_max_ms: Option<i64>,
    pub config: ReportConfig,
    pub input: InputCounts,
    pub snapshots: Vec<SnapshotUse>,
    /// The snapshot whose split the sample-ratio checks use.
    pub split_snapshot_id: Option<String>,
    pub groups: Vec<GroupReport>,
    pub experiments: Vec<ExperimentReport>,
    pub staging: Option<StagingReport>,
    /// Some sample-ratio check failed: a blocking warning.
    pub srm_failed: bool,
    /// Staging differs from production beyond the threshold.
    pub staging_alarm: bool,
    pub warnings: Vec<String>,
    pub methods: &'static str,
}

/// What the report's numbers mean; also in `docs/abtest.md`.
pub const METHODS: &str =
    "Unit of analysis: the user (events with a user key and a non-anonymous assignment); \
anonymous and key-less events count in totals only. Each arm and staging is compared with control \
(production traffic in no experiment). Per-user means (requests, impressions, revenue per user): \
difference of means with variance s_t^2/n_t + s_c^2/n_c (unequal variances), normal z-test. Ratios \
(fill rate, CTR, install rate per impression, RPM = 1000 x revenue / impressions): ratio of sums with \
the delta method's variance (s_x^2 - 2R s_xy + R^2 s_y^2) / (n ybar^2), normal z-test. Relative \
difference t/c - 1 with a delta-method interval. Repeated looks: mSPRT always-valid p-values and \
confidence sequences (normal mixture, tau = msprt_tau_relative x |control|); 'significant' uses them. \
Sample ratio: Pearson chi-square of users per arm and control against the configured shares of the \
snapshot with most production events in range; failing below srm_p_value_min blocks the experiment.";

/// Builds the report. `snapshots` are the snapshots the events may come from; with none, the
/// sample-ratio checks cannot run (warned) and snapshot ids are not checked.
pub fn build_report(
    aggregates: &Aggregates,
    snapshots: &[KnownSnapshot],
    config: &ReportConfig,
) -> Result<Report, AnalysisError> {
    config.validate()?;
    check_input(aggregates, snapshots)?;
    let mut warnings = input_warnings(&aggregates.input);
    let split = choose_split(aggregates, snapshots, &mut warnings);
    let control = aggregates.group(GroupKey::Control);
    if control.is_none_or(|c| c.moments.n == 0) {
        warnings.push("no control users in range: no comparison can be made".to_owned());
    }
    let experiments = experiment_reports(aggregates, split.map(|(_, s)| s), control, config, &mut warnings);
    let staging = staging_report(aggregates, split.map(|(_, s)| s), control, config);
    let srm_failed =
        experiments.iter().any(|x| x.srm.failed) || staging.as_ref().is_some_and(|s| s.srm.failed);
    let staging_alarm = staging.as_ref().is_some_and(|s| !s.alarm_metrics.is_empty());
    Ok(Report {
        range: aggregates.range,
        time_min_ms: aggregates.time_min_ms,
        time_max_ms: aggregates.time_max_ms,
        config: *config,
        input: aggregates.input,
        snapshots: snapshot_uses(aggregates, snapshots),
        split_snapshot_id: split.map(|(id, _)| format!("{id:016x}")),
        groups: aggregates.groups.iter().map(group_report).collect(),
        experiments,
        staging,
        srm_failed,
        staging_alarm,
        warnings,
        methods: METHODS,
    })
}

fn check_input(aggregates: &Aggregates, snapshots: &[KnownSnapshot]) -> Result<(), AnalysisError> {
    let input = &aggregates.input;
    if input.n_events_in_range == 0 {
        return Err(AnalysisError::EmptyRange {
            from_unix_ms: aggregates.range.from_unix_ms,
            to_unix_ms: aggregates.range.to_unix_ms,
            n_events_read: input.n_events_read,
            n_events_bad_assignment: input.n_events_bad_assignment,
        });
    }
    if snapshots.is_empty() {
        return Ok(());
    }
    let unknown: Vec<(u64, u64)> = aggregates
        .snapshots
        .iter()
        .filter(|(id, _)| !snapshots.iter().any(|s| s.snapshot_id == *id))
        .map(|(id, tally)| (*id, tally.n_events))
        .collect();
    let n_untracked = input.n_events_snapshot_untracked;
    if unknown.is_empty() && n_untracked == 0 {
        return Ok(());
    }
    let n_events = unknown.iter().map(|(_, n)| n).sum::<u64>() + n_untracked;
    let ids = unknown.iter().take(8).map(|(id, n)| format!("{id:016x} ({n} events)")).collect::<Vec<_>>();
    Err(AnalysisError::UnknownSnapshots { n_events, n_ids: unknown.len(), ids: ids.join(", ") })
}

fn input_warnings(input: &InputCounts) -> Vec<String> {
    let mut warnings = Vec::new();
    if input.n_events_bad_assignment > 0 {
        warnings.push(format!(
            "{} events in range carry an assignment code that is not one; they were skipped",
            input.n_events_bad_assignment
        ));
    }
    warnings
}

/// The split of the known snapshot with most production events in range; a warning names any
/// other production snapshot in range whose split differs.
fn choose_split<'a>(
    aggregates: &Aggregates,
    snapshots: &'a [KnownSnapshot],
    warnings: &mut Vec<String>,
) -> Option<(u64, &'a ConfiguredSplit)> {
    if snapshots.is_empty() {
        warnings.push(
            "no snapshot given: the configured shares are unknown, so no sample-ratio check ran".into(),
        );
        return None;
    }
    let production: Vec<(&KnownSnapshot, u64)> = aggregates
        .snapshots
        .iter()
        .filter_map(|(id, t)| {
            Some((snapshots.iter().find(|s| s.snapshot_id == *id)?, t.n_events - t.n_staging_events))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let chosen =
        production.iter().max_by_key(|(s, n)| (*n, std::cmp::Reverse(s.snapshot_id))).map(|(s, _)| *s);
    let Some(chosen) = chosen else {
        warnings.push("no production events in range: no sample-ratio check ran".into());
        return None;
    };
    for (other, _) in production.iter().filter(|(s, _)| s.split != chosen.split) {
        warnings.push(format!(
            "the traffic split changed within the range: snapshot {:016x} ({}) differs from {:016x} ({}), \
             whose split the sample-ratio checks use; narrow the range to one split",
            other.snapshot_id, other.label, chosen.snapshot_id, chosen.label
        ));
    }
    Some((chosen.snapshot_id, &chosen.split))
}

fn snapshot_uses(aggregates: &Aggregates, snapshots: &[KnownSnapshot]) -> Vec<SnapshotUse> {
    aggregates
        .snapshots
        .iter()
        .map(|(id, t)| SnapshotUse {
            snapshot_id: format!("{id:016x}"),
            n_events: t.n_events,
            n_staging_events: t.n_staging_events,
            known: snapshots.iter().any(|s| s.snapshot_id == *id),
        })
        .collect()
}

fn group_report(group: &GroupAggregate) -> GroupReport {
    GroupReport {
        key: group.key,
        label: group.key.to_string(),
        n_users: group.moments.n,
        events: group.events,
        values: Metric::ALL.iter().map(|&m| (m, m.estimate(&group.moments).ok().map(|e| e.value))).collect(),
    }
}

/// Every metric of `treatment` against `control`.
fn compare_metrics(
    treatment: Option<&GroupAggregate>,
    control: Option<&GroupAggregate>,
    config: &ReportConfig,
) -> Vec<MetricComparison> {
    let settings = config.test_settings();
    Metric::ALL
        .iter()
        .map(|&metric| {
            let result = match (treatment, control) {
                (_, None) => Err("no control traffic".to_owned()),
                (None, _) => Err("no traffic".to_owned()),
                (Some(t), Some(c)) => metric
                    .estimate(&t.moments)
                    .and_then(|t_est| compare(t_est, metric.estimate(&c.moments)?, &settings))
                    .map_err(|u| u.message().to_owned()),
            };
            match result {
                Ok(comparison) => MetricComparison {
                    metric,
                    significant: comparison.p_value_always_valid.is_some_and(|p| p < config.alpha),
                    comparison: Some(comparison),
                    unavailable: None,
                },
                Err(reason) => MetricComparison {
                    metric,
                    comparison: None,
                    unavailable: Some(reason),
                    significant: false,
                },
            }
        })
        .collect()
}

/// Experiment ids and, per experiment, arm ids: the configured ones and any seen in events.
fn experiment_arms(aggregates: &Aggregates, split: Option<&ConfiguredSplit>) -> Vec<(u32, Vec<u32>)> {
    let mut arms: Vec<(u32, u32)> = aggregates
        .groups
        .iter()
        .filter_map(|g| match g.key {
            GroupKey::Arm { experiment_id, arm_id } => Some((experiment_id, arm_id)),
            _ => None,
        })
        .collect();
    for x in split.map(|s| s.experiments.as_slice()).unwrap_or_default() {
        arms.extend(x.arms.iter().map(|arm| (x.id, arm.id)));
    }
    arms.sort_unstable();
    arms.dedup();
    let mut experiments: Vec<(u32, Vec<u32>)> = Vec::new();
    for (experiment_id, arm_id) in arms {
        match experiments.last_mut() {
            Some((id, ids)) if *id == experiment_id => ids.push(arm_id),
            _ => experiments.push((experiment_id, vec![arm_id])),
        }
    }
    experiments
}

fn experiment_reports(
    aggregates: &Aggregates,
    split: Option<&ConfiguredSplit>,
    control: Option<&GroupAggregate>,
    config: &ReportConfig,
    warnings: &mut Vec<String>,
) -> Vec<ExperimentReport> {
    let users = |g: Option<&GroupAggregate>| g.map_or(0, |g| g.moments.n);
    experiment_arms(aggregates, split)
        .into_iter()
        .map(|(experiment_id, arm_ids)| {
            let configured = split.and_then(|s| s.experiment(experiment_id));
            let arms: Vec<ArmReport> = arm_ids
                .iter()
                .map(|&arm_id| {
                    let group = aggregates.group(GroupKey::Arm { experiment_id, arm_id });
                    ArmReport {
                        arm_id,
                        name: configured
                            .and_then(|x| x.arms.iter().find(|a| a.id == arm_id))
                            .map(|a| a.name.clone()),
                        n_users: users(group),
                        metrics: compare_metrics(group.filter(|g| g.moments.n > 0), control, config),
                    }
                })
                .collect();
            let no_traffic = arms.iter().all(|a| a.n_users == 0);
            if no_traffic {
                warnings.push(format!("experiment {experiment_id} has no traffic in range"));
            }
            let srm = experiment_srm(experiment_id, &arms, users(control), split, config);
            ExperimentReport {
                experiment_id,
                name: configured.map(|x| x.name.clone()),
                no_traffic,
                srm,
                arms,
            }
        })
        .collect()
}

fn experiment_srm(
    experiment_id: u32,
    arms: &[ArmReport],
    n_control_users: u64,
    split: Option<&ConfiguredSplit>,
    config: &ReportConfig,
) -> SrmCheck {
    let configured = split.and_then(|s| s.experiment(experiment_id));
    let share_of_arm = |arm_id: u32| {
        let x = configured?;
        let arm = x.arms.iter().find(|a| a.id == arm_id)?;
        Some(f64::from(x.share_bp) * f64::from(arm.weight_bp))
    };
    let mut cells: Vec<(String, u64, Option<f64>)> =
        arms.iter().map(|a| (format!("arm {}", a.arm_id), a.n_users, share_of_arm(a.arm_id))).collect();
    let control_share = split.map(|s| f64::from(s.control_share_bp()) * 10_000.0).filter(|&s| s > 0.0);
    if control_share.is_some() {
        cells.push(("control".to_owned(), n_control_users, control_share));
    }
    let note = match (split, configured) {
        (None, _) => Some("no configured split: not checked".to_owned()),
        (Some(_), None) => Some(format!("experiment {experiment_id} is not in the split's table")),
        _ => cells
            .iter()
            .find(|(_, n, share)| share.is_none() && *n > 0)
            .map(|(name, n, _)| format!("{name} has {n} users but is not configured")),
    };
    srm_check(cells, note, split.is_some(), config)
}

/// Runs the check over cells; a note with a configured split means a mismatch found otherwise.
fn srm_check(
    cells: Vec<(String, u64, Option<f64>)>,
    note: Option<String>,
    split_known: bool,
    config: &ReportConfig,
) -> SrmCheck {
    let total_share: f64 = cells.iter().filter_map(|c| c.2).sum();
    let chi_square = if note.is_none() {
        let observed: Vec<u64> = cells.iter().map(|c| c.1).collect();
        let shares: Vec<f64> = cells.iter().map(|c| c.2.unwrap_or(0.0)).collect();
        chi_square_goodness_of_fit(&observed, &shares)
    } else {
        None
    };
    let failed = (note.is_some() && split_known)
        || chi_square.as_ref().is_some_and(|c| c.p_value < config.srm_p_value_min);
    let cells = cells
        .into_iter()
        .map(|(name, n_users, share)| SrmCell {
            name,
            n_users,
            expected_share: share.map(|s| s / total_share),
        })
        .collect();
    SrmCheck { cells, chi_square, failed, note }
}

fn staging_report(
    aggregates: &Aggregates,
    split: Option<&ConfiguredSplit>,
    control: Option<&GroupAggregate>,
    config: &ReportConfig,
) -> Option<StagingReport> {
    let staging = aggregates.group(GroupKey::Staging)?;
    let metrics = compare_metrics(Some(staging).filter(|g| g.moments.n > 0), control, config);
    let alarm_metrics = metrics
        .iter()
        .filter(|m| {
            m.significant
                && m.comparison
                    .and_then(|c| c.diff_rel)
                    .is_some_and(|r| r.abs() > config.staging_alarm_relative)
        })
        .map(|m| m.metric)
        .collect();
    let n_control = control.map_or(0, |c| c.moments.n);
    let srm = match split {
        Some(split) => {
            let staging_share = f64::from(split.staging_share_bp);
            let control_share = (10_000.0 - staging_share) * f64::from(split.control_share_bp()) / 10_000.0;
            let cells = vec![
                ("staging".to_owned(), staging.moments.n, Some(staging_share).filter(|&s| s > 0.0)),
                ("control".to_owned(), n_control, Some(control_share).filter(|&s| s > 0.0)),
            ];
            let note = cells
                .iter()
                .find(|c| c.2.is_none() && c.1 > 0)
                .map(|c| format!("{} has users but no share", c.0));
            srm_check(cells, note, true, config)
        }
        None => SrmCheck {
            cells: Vec::new(),
            chi_square: None,
            failed: false,
            note: Some("no configured split: not checked".to_owned()),
        },
    };
    Some(StagingReport { n_users: staging.moments.n, srm, metrics, alarm_metrics })
}

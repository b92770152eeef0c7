//! The report as a terminal table, and the number formats every renderer shares.

use std::fmt::Write;

use super::report::{Metric, MetricComparison, Report, SrmCheck};
use super::stats::Comparison;

/// A metric's value for people: proportions in percent, money and counts with 4 decimals.
pub(crate) fn value(metric: Metric, v: f64) -> String {
    if metric.is_proportion() {
        format!("{:.3}%", 100.0 * v)
    } else {
        format!("{v:.4}")
    }
}

/// A value difference in the metric's own units (percentage points for proportions).
pub(crate) fn diff(metric: Metric, v: f64) -> String {
    if metric.is_proportion() {
        format!("{:+.3}pp", 100.0 * v)
    } else {
        format!("{v:+.4}")
    }
}

pub(crate) fn percent(v: f64) -> String {
    format!("{:+.2}%", 100.0 * v)
}

pub(crate) fn interval_percent(ci: [f64; 2]) -> String {
    format!("[{}, {}]", percent(ci[0]), percent(ci[1]))
}

pub(crate) fn p_value(p: f64) -> String {
    if p < 1e-6 {
        "<1e-6".to_owned()
    } else {
        format!("{p:.4}")
    }
}

pub(crate) fn opt<T: Copy>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".to_owned(), f)
}

/// The verdict of a sample-ratio check, one line.
/// One comparison's cells as both the table and the HTML report show them: control,
/// treatment, absolute and relative difference, relative interval, p-value, always-valid p-value.
pub(crate) fn comparison_cells(metric: Metric, c: &Comparison) -> [String; 7] {
    [
        value(metric, c.control),
        value(metric, c.treatment),
        diff(metric, c.diff_abs),
        opt(c.diff_rel, percent),
        opt(c.ci_rel, interval_percent),
        p_value(c.p_value),
        opt(c.p_value_always_valid, p_value),
    ]
}

pub(crate) fn srm_line(srm: &SrmCheck) -> String {
    let stat = srm.chi_square.as_ref().map(|c| {
        format!("chi-square {:.3}, df {}, p = {}", c.statistic, c.degrees_of_freedom, p_value(c.p_value))
    });
    match (srm.failed, stat, &srm.note) {
        (true, Some(stat), _) => format!("SAMPLE RATIO MISMATCH ({stat}): results blocked"),
        (true, None, note) => {
            format!("SAMPLE RATIO MISMATCH ({}): results blocked", note.as_deref().unwrap_or(""))
        }
        (false, Some(stat), _) => format!("sample ratio ok ({stat})"),
        (false, None, note) => {
            format!("sample ratio not checked ({})", note.as_deref().unwrap_or("too few users"))
        }
    }
}

/// The lines that must be read before anything else: blocking checks and the alarm.
pub(crate) fn headline(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for x in report.experiments.iter().filter(|x| x.srm.failed) {
        lines.push(format!("BLOCKING: experiment {}: {}", x.experiment_id, srm_line(&x.srm)));
    }
    if let Some(staging) = report.staging.as_ref().filter(|s| s.srm.failed) {
        lines.push(format!("BLOCKING: staging: {}", srm_line(&staging.srm)));
    }
    if let Some(staging) = report.staging.as_ref().filter(|s| !s.alarm_metrics.is_empty()) {
        let names: Vec<&str> = staging.alarm_metrics.iter().map(|m| m.name()).collect();
        lines.push(format!(
            "STAGING ALARM: staging differs from production by more than {:.1}% on {}",
            100.0 * report.config.staging_alarm_relative,
            names.join(", ")
        ));
    }
    lines
}

/// The range for people: an unbounded end says so instead of printing `i64::MIN`.
pub(crate) fn range(report: &Report) -> String {
    let from = match report.range.from_unix_ms {
        i64::MIN => "the first event".to_owned(),
        ms => format!("{ms} ms"),
    };
    let to = match report.range.to_unix_ms {
        i64::MAX => "the last event".to_owned(),
        ms => format!("{ms} ms (exclusive)"),
    };
    format!("from {from} to {to}")
}

/// The report as plain text for a terminal.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A/B report {}: {} events read, {} in range ({} anonymous, {} without a user key)",
        range(report),
        report.input.n_events_read,
        report.input.n_events_in_range,
        report.input.n_events_anonymous,
        report.input.n_events_without_user_key
    );
    for line in headline(report) {
        let _ = writeln!(out, "{line}");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let n_control = report.groups.iter().find(|g| g.label == "control").map_or(0, |g| g.n_users);
    for x in &report.experiments {
        let name = x.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
        let _ = writeln!(out, "\nexperiment {}{name}: {}", x.experiment_id, srm_line(&x.srm));
        for arm in &x.arms {
            let arm_name = arm.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  arm {}{arm_name}: {} users vs control {} users",
                arm.arm_id, arm.n_users, n_control
            );
            metric_rows(&mut out, &arm.metrics, report.config.alpha);
        }
    }
    if let Some(staging) = &report.staging {
        let _ = writeln!(out, "\nstaging vs production control: {}", srm_line(&staging.srm));
        let _ = writeln!(out, "  staging: {} users vs control {} users", staging.n_users, n_control);
        metric_rows(&mut out, &staging.metrics, report.config.alpha);
    }
    out
}

fn metric_rows(out: &mut String, metrics: &[MetricComparison], alpha: f64) {
    let level = format!("{:.0}% CI", 100.0 * (1.0 - alpha));
    let _ = writeln!(
        out,
        "    {:<21} {:>11} {:>11} {:>12} {:>9} {:>20} {:>8} {:>9}  {:>20}",
        "metric",
        "control",
        "treatment",
        "diff",
        "rel diff",
        format!("{level} (rel)"),
        "p",
        "p always",
        "always-valid CI (abs)"
    );
    for m in metrics {
        let Some(c) = &m.comparison else {
            let reason = m.unavailable.as_deref().unwrap_or("");
            let _ = writeln!(out, "    {:<21} n/a: {reason}", m.metric.name());
            continue;
        };
        let star = if m.significant { " *" } else { "" };
        let always_ci =
            c.ci_abs_always_valid.map(|ci| format!("[{}, {}]", diff(m.metric, ci[0]), diff(m.metric, ci[1])));
        let [control, treatment, diff_abs, diff_rel, ci_rel, p, p_always_valid] =
            comparison_cells(m.metric, c);
        let _ = writeln!(
            out,
            "    {:<21} {control:>11} {treatment:>11} {diff_abs:>12} {diff_rel:>9} {ci_rel:>20} {p:>8} {p_always_valid:>9}  {:>20}{star}",
            m.metric.name(),
            always_ci.unwrap_or_else(|| "n/a".to_owned()),
        );
    }
}

//! The report's verdicts as Prometheus text exposition, for a node_exporter textfile collector
//! or a push gateway: the staging alarm and sample-ratio checks become metrics that alert rules
//! can watch.

use std::fmt::Write;

use serde::Serialize;

use super::report::Report;

/// Renders the report's alarms and staging differences as Prometheus text format.
pub fn render_prometheus(report: &Report) -> String {
    let mut out = String::new();
    let flag = |b: bool| u8::from(b);
    let _ = writeln!(
        out,
        "# HELP adsnap_abtest_staging_alarm Staging differs from production beyond the threshold."
    );
    let _ = writeln!(out, "# TYPE adsnap_abtest_staging_alarm gauge");
    let _ = writeln!(out, "adsnap_abtest_staging_alarm {}", flag(report.staging_alarm));
    let _ = writeln!(out, "# HELP adsnap_abtest_srm_failed A sample-ratio check failed (results blocked).");
    let _ = writeln!(out, "# TYPE adsnap_abtest_srm_failed gauge");
    let _ = writeln!(out, "adsnap_abtest_srm_failed {}", flag(report.srm_failed));
    let _ = writeln!(
        out,
        "# HELP adsnap_abtest_experiment_srm_failed Per experiment: its sample-ratio check failed."
    );
    let _ = writeln!(out, "# TYPE adsnap_abtest_experiment_srm_failed gauge");
    for x in &report.experiments {
        let _ = writeln!(
            out,
            "adsnap_abtest_experiment_srm_failed{{experiment_id=\"{}\"}} {}",
            x.experiment_id,
            flag(x.srm.failed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP adsnap_abtest_staging_relative_difference Staging's relative difference from control, per metric."
    );
    let _ = writeln!(out, "# TYPE adsnap_abtest_staging_relative_difference gauge");
    for m in report.staging.iter().flat_map(|s| &s.metrics) {
        if let Some(rel) = m.comparison.and_then(|c| c.diff_rel) {
            let _ = writeln!(
                out,
                "adsnap_abtest_staging_relative_difference{{metric=\"{}\"}} {rel}",
                metric_label(m.metric)
            );
        }
    }
    let _ = writeln!(out, "# HELP adsnap_abtest_events_in_range Events the report covered.");
    let _ = writeln!(out, "# TYPE adsnap_abtest_events_in_range gauge");
    let _ = writeln!(out, "adsnap_abtest_events_in_range {}", report.input.n_events_in_range);
    out
}

/// The metric's JSON name (`fill_rate`, `ctr`, ...), which is also its label value.
fn metric_label<T: Serialize>(metric: T) -> String {
    serde_json::to_value(metric).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

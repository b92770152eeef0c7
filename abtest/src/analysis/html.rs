//! The report as one self-contained HTML page: inline CSS and inline SVG charts (each metric's
//! relative difference with its fixed-horizon and always-valid intervals), no script, no network.

use std::fmt::Write;

use super::report::{MetricComparison, Report};
use super::table::{comparison_cells, headline, interval_percent, percent, range, srm_line};

const CHART_WIDTH_PX: f64 = 640.0;
const LABEL_WIDTH_PX: f64 = 170.0;
const ROW_HEIGHT_PX: f64 = 26.0;
/// The chart's axis reaches at least ±this relative difference, so tiny intervals are not blown
/// up to fill the chart.
const AXIS_RELATIVE_MIN: f64 = 0.01;

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}\
td:first-child,th:first-child{text-align:left}.blocking,.alarm{background:#fdd;border:2px solid #c00;padding:.6em;font-weight:bold}\
.warning{background:#ffd;padding:.4em}.sig{font-weight:bold}svg.chart{display:block;margin:.5em 0}\
.methods,.legend{font-size:.85em;color:#555;max-width:60em}";

/// The whole page.
pub fn render_html(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>adsnap A/B report</title>\
         <style>{STYLE}</style></head><body><h1>A/B report</h1>"
    );
    let _ = write!(
        out,
        "<p>Events {}: {} read, {} in range ({} anonymous, {} without a user key).</p>",
        esc(&range(report)),
        report.input.n_events_read,
        report.input.n_events_in_range,
        report.input.n_events_anonymous,
        report.input.n_events_without_user_key
    );
    for line in headline(report) {
        let class = if line.starts_with("STAGING ALARM") { "alarm" } else { "blocking" };
        let _ = write!(out, "<p class=\"{class}\">{}</p>", esc(&line));
    }
    for warning in &report.warnings {
        let _ = write!(out, "<p class=\"warning\">warning: {}</p>", esc(warning));
    }
    for x in &report.experiments {
        let name = x.name.as_deref().map(|n| format!(" “{}”", esc(n))).unwrap_or_default();
        let _ = write!(out, "<h2>Experiment {}{name}</h2><p>{}</p>", x.experiment_id, esc(&srm_line(&x.srm)));
        for arm in &x.arms {
            let arm_name = arm.name.as_deref().map(|n| format!(" “{}”", esc(n))).unwrap_or_default();
            let title = format!("arm {}{arm_name} ({} users) vs control", arm.arm_id, arm.n_users);
            block(&mut out, &title, &arm.metrics, report.config.alpha);
        }
    }
    if let Some(staging) = &report.staging {
        let _ = write!(out, "<h2>Staging vs production</h2><p>{}</p>", esc(&srm_line(&staging.srm)));
        let title = format!("staging ({} users) vs control", staging.n_users);
        block(&mut out, &title, &staging.metrics, report.config.alpha);
    }
    let _ = writeln!(out, "<h2>Methods</h2><p class=\"methods\">{}</p></body></html>", esc(report.methods));
    out
}

/// One comparison: a heading, its chart and its table.
fn block(out: &mut String, title: &str, metrics: &[MetricComparison], alpha: f64) {
    let _ = write!(out, "<h3>{}</h3>", title);
    chart(out, metrics, alpha);
    let level = format!("{:.0}%", 100.0 * (1.0 - alpha));
    let _ = write!(
        out,
        "<table><tr><th>metric</th><th>control</th><th>treatment</th><th>difference</th><th>relative</th>\
         <th>{level} CI (relative)</th><th>p</th><th>p (always valid)</th></tr>"
    );
    for m in metrics {
        let Some(c) = &m.comparison else {
            let reason = esc(m.unavailable.as_deref().unwrap_or(""));
            let _ = write!(out, "<tr><td>{}</td><td colspan=\"7\">n/a: {reason}</td></tr>", m.metric.name());
            continue;
        };
        let class = if m.significant { " class=\"sig\"" } else { "" };
        let _ = write!(out, "<tr{class}><td>{}</td>", m.metric.name());
        for cell in comparison_cells(m.metric, c) {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// The relative always-valid interval: the absolute confidence sequence divided by the control.
fn always_valid_relative(m: &MetricComparison) -> Option<[f64; 2]> {
    let c = m.comparison.as_ref()?;
    let ci = c.ci_abs_always_valid?;
    (c.control != 0.0).then(|| {
        let a = ci[0] / c.control.abs();
        let b = ci[1] / c.control.abs();
        [a.min(b), a.max(b)]
    })
}

/// A forest plot of relative differences: a thin line for the always-valid interval, a thick one
/// for the fixed-horizon interval, a dot for the estimate, and a line at zero.
fn chart(out: &mut String, metrics: &[MetricComparison], alpha: f64) {
    let extent = metrics
        .iter()
        .flat_map(|m| {
            // The fixed-horizon intervals set the scale; wider always-valid lines run to the edge.
            m.comparison.as_ref().and_then(|c| c.ci_rel).unwrap_or([0.0, 0.0])
        })
        .filter(|v| v.is_finite())
        .fold(AXIS_RELATIVE_MIN, |acc, v| acc.max(v.abs()));
    let plot = CHART_WIDTH_PX - LABEL_WIDTH_PX - 20.0;
    let x = |rel: f64| LABEL_WIDTH_PX + plot * (rel.clamp(-extent, extent) + extent) / (2.0 * extent);
    let height = ROW_HEIGHT_PX * (metrics.len() as f64 + 1.0);
    let _ = write!(
        out,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH_PX}\" height=\"{height}\" \
         role=\"img\" aria-label=\"relative differences with {:.0}% intervals\">",
        100.0 * (1.0 - alpha)
    );
    let zero = x(0.0);
    let axis_y = height - ROW_HEIGHT_PX / 2.0;
    let _ = write!(
        out,
        "<line class=\"zero\" x1=\"{zero:.1}\" y1=\"0\" x2=\"{zero:.1}\" y2=\"{axis_y:.1}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text><text x=\"{zero:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        LABEL_WIDTH_PX,
        axis_y + 10.0,
        esc(&percent(-extent)),
        axis_y + 10.0,
        LABEL_WIDTH_PX + plot,
        axis_y + 10.0,
        esc(&percent(extent)),
    );
    for (row, m) in metrics.iter().enumerate() {
        let y = ROW_HEIGHT_PX * (row as f64 + 0.5);
        let _ = write!(out, "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>", y + 4.0, m.metric.name());
        let Some(c) = &m.comparison else { continue };
        let (Some(rel), Some(ci)) = (c.diff_rel, c.ci_rel) else { continue };
        let color = if m.significant { "#c00" } else { "#246" };
        if let Some(av) = always_valid_relative(m) {
            let _ = write!(
                out,
                "<line class=\"always-valid\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#9ab\" stroke-width=\"2\"/>",
                x(av[0]),
                x(av[1])
            );
        }
        let _ = write!(
            out,
            "<rect class=\"interval\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\" fill=\"{color}\" fill-opacity=\"0.45\"/>\
             <circle class=\"estimate\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {} {}</title></circle>",
            x(ci[0]),
            y - 4.0,
            (x(ci[1]) - x(ci[0])).max(1.0),
            x(rel),
            m.metric.name(),
            esc(&percent(rel)),
            esc(&interval_percent(ci)),
        );
    }
    out.push_str("</svg>");
    let _ = write!(
        out,
        "<p class=\"legend\">dot: relative difference; bar: {:.0}% interval for one planned look; thin line: \
         always-valid interval (any number of looks); red: significant by the always-valid p-value.</p>",
        100.0 * (1.0 - alpha)
    );
}

//! The HTML report in a real browser: Debian's headless chromium (installed by
//! `scripts/install-deps.sh`) loads the page from a file, lays it out, and a probe script
//! appended to a copy of it measures every chart, interval bar and estimate dot; the DOM chromium
//! dumps carries the measurements back. Without chromium this test fails, it never skips.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adsnap_abtest::analysis::simulate::{Effect, Simulation};
use adsnap_abtest::analysis::{render_html, ReportConfig};
use common::{example_split, report};

/// How long chromium may take to start, load and dump the page.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(60);

/// Measures the rendered charts into a `<pre id="probe">` as JSON.
const PROBE: &str = r#"<script>
const charts = [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  const widths = sel => [...svg.querySelectorAll(sel)].map(e => e.getBBox().width);
  return { width: box.width, height: box.height, intervals: widths('rect.interval'),
           estimates: widths('circle.estimate'), always_valid: widths('line.always-valid') };
});
const pre = document.createElement('pre');
pre.id = 'probe';
pre.textContent = JSON.stringify({ charts, blocking: document.querySelectorAll('.blocking').length,
                                   alarm: document.querySelectorAll('.alarm').length });
document.body.appendChild(pre);
</script>"#;

fn dump_dom(page: &std::path::Path, profile: &std::path::Path) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium must be installed (scripts/install-deps.sh) for the HTML report test");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > CHROMIUM_DEADLINE {
            let _ = child.kill();
            panic!("chromium did not finish within {CHROMIUM_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "chromium failed: {:?}", output.status);
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_report_renders_its_charts_in_headless_chromium() {
    let sim = Simulation {
        seed: 3,
        n_users: 20_000,
        n_requests: 150_000,
        arm_effects: vec![((1, 2), Effect { fill: 1.0, ctr: 1.5, revenue: 1.0 })],
        staging_effect: Effect { fill: 1.0, ctr: 2.0, revenue: 1.0 },
        ..Simulation::default()
    };
    let report = report(&sim, &example_split(), &ReportConfig::default());
    assert!(report.staging_alarm);
    let html = render_html(&report);
    // Self-contained: no script, and no address but the SVG namespace's.
    assert!(!html.contains("<script"));
    assert_eq!(html.matches("http").count(), html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let probed = html.replace("</body>", &format!("{PROBE}</body>"));
    std::fs::write(&page, probed).unwrap();
    let dom = dump_dom(&page, &dir.path().join("profile"));

    let start = dom.find("<pre id=\"probe\">").expect("the probe ran") + "<pre id=\"probe\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let json = dom[start..end].replace("&quot;", "\"").replace("&amp;", "&");
    let probe: serde_json::Value = serde_json::from_str(&json).unwrap();
    let charts = probe["charts"].as_array().unwrap();
    // Seven experiment arms and staging.
    assert_eq!(charts.len(), 8, "{probe}");
    for chart in charts {
        assert!(
            chart["width"].as_f64().unwrap() >= 600.0 && chart["height"].as_f64().unwrap() > 100.0,
            "{chart}"
        );
        let intervals = chart["intervals"].as_array().unwrap();
        assert_eq!(intervals.len(), 7, "one interval per metric: {chart}");
        assert!(intervals.iter().all(|w| w.as_f64().unwrap() >= 1.0), "{chart}");
        assert_eq!(chart["estimates"].as_array().unwrap().len(), 7, "{chart}");
        assert!(
            chart["always_valid"].as_array().unwrap().iter().all(|w| w.as_f64().unwrap() > 0.0),
            "{chart}"
        );
    }
    assert_eq!(probe["alarm"], 1, "the staging alarm is shown");
}

//! The report's statistics agree with scipy and statsmodels to 1e-6 on generated data.
//!
//! Events are written as JSON Lines, read back by the Rust reader and by a Python reference
//! (`tests/reference/reference.py`) that aggregates them on its own and computes every
//! comparison and sample-ratio check with statsmodels, scipy and numpy. Python with scipy and
//! statsmodels is installed by `scripts/install-deps.sh`; without it this test fails, it never
//! skips.

mod common;

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;

use adsnap_abtest::analysis::simulate::{Effect, Simulation};
use adsnap_abtest::analysis::{build_report, read_json_lines, Aggregator, Report, ReportConfig};
use common::{example_split, known_snapshots, range, simulate};
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;

fn close(rust: f64, reference: f64) -> bool {
    (rust - reference).abs() <= TOLERANCE * reference.abs().max(1.0)
}

fn run_reference(events: &Path, split: &Path, config: &ReportConfig, sim: &Simulation) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/reference.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(events)
        .arg(split)
        .arg(config.alpha.to_string())
        .arg(config.msprt_tau_relative.to_string())
        .arg(sim.from_unix_ms.to_string())
        .arg(sim.to_unix_ms.to_string())
        .output()
        .expect("python3 must be installed (scripts/install-deps.sh) for the reference test");
    assert!(
        output.status.success(),
        "the reference failed (scipy and statsmodels come from scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the reference prints JSON")
}

/// Compares every number of every comparison, and every sample-ratio check.
fn compare_all(report: &Report, reference: &Value) -> usize {
    let mut n_checked = 0;
    let comparisons = reference["comparisons"].as_object().unwrap();
    let mut check = |what: String, rust: f64, reference: &Value| {
        let reference = reference.as_f64().unwrap_or_else(|| panic!("{what}: reference has no number"));
        assert!(close(rust, reference), "{what}: rust {rust} vs reference {reference}");
        n_checked += 1;
    };
    let mut blocks: Vec<(String, &Vec<adsnap_abtest::analysis::MetricComparison>)> = Vec::new();
    for x in &report.experiments {
        for arm in &x.arms {
            blocks.push((format!("experiment-{}/arm-{}", x.experiment_id, arm.arm_id), &arm.metrics));
        }
    }
    blocks.push(("staging".into(), &report.staging.as_ref().unwrap().metrics));
    assert_eq!(blocks.len(), comparisons.len(), "the same groups on both sides");
    for (group, metrics) in blocks {
        for m in metrics {
            let name = serde_json::to_value(m.metric).unwrap();
            let r = &comparisons[&group][name.as_str().unwrap()];
            let c = m.comparison.unwrap_or_else(|| panic!("{group} {:?}: {:?}", m.metric, m.unavailable));
            let at = |field: &str| format!("{group} {:?} {field}", m.metric);
            check(at("control"), c.control, &r["control"]);
            check(at("treatment"), c.treatment, &r["treatment"]);
            check(at("diff_abs"), c.diff_abs, &r["diff_abs"]);
            check(at("ci_abs lo"), c.ci_abs[0], &r["ci_abs"][0]);
            check(at("ci_abs hi"), c.ci_abs[1], &r["ci_abs"][1]);
            check(at("p_value"), c.p_value, &r["p_value"]);
            check(at("diff_rel"), c.diff_rel.unwrap(), &r["diff_rel"]);
            check(at("ci_rel lo"), c.ci_rel.unwrap()[0], &r["ci_rel"][0]);
            check(at("ci_rel hi"), c.ci_rel.unwrap()[1], &r["ci_rel"][1]);
            check(at("p always valid"), c.p_value_always_valid.unwrap(), &r["p_value_always_valid"]);
            check(at("always-valid lo"), c.ci_abs_always_valid.unwrap()[0], &r["ci_abs_always_valid"][0]);
            check(at("always-valid hi"), c.ci_abs_always_valid.unwrap()[1], &r["ci_abs_always_valid"][1]);
        }
    }
    let srm = &reference["srm"];
    for x in &report.experiments {
        let chi = x.srm.chi_square.as_ref().expect("every experiment is checked");
        let r = &srm[x.experiment_id.to_string()];
        check(format!("srm {} statistic", x.experiment_id), chi.statistic, &r["statistic"]);
        check(format!("srm {} p", x.experiment_id), chi.p_value, &r["p_value"]);
    }
    let staging = report.staging.as_ref().unwrap().srm.chi_square.as_ref().unwrap();
    check("srm staging statistic".into(), staging.statistic, &srm["staging"]["statistic"]);
    check("srm staging p".into(), staging.p_value, &srm["staging"]["p_value"]);
    n_checked
}

fn check_case(sim: Simulation, config: ReportConfig, n_threads: usize) {
    let split = example_split();
    let dir = tempfile::tempdir().unwrap();
    let events_path = dir.path().join("events.jsonl");
    let mut out = BufWriter::new(std::fs::File::create(&events_path).unwrap());
    simulate(&sim, &split, |e| {
        serde_json::to_writer(&mut out, e).unwrap();
        out.write_all(b"\n").unwrap();
    });
    out.into_inner().unwrap().sync_all().unwrap();
    let split_path = dir.path().join("split.json");
    std::fs::write(&split_path, serde_json::to_vec(&split).unwrap()).unwrap();

    let reader = BufReader::new(std::fs::File::open(&events_path).unwrap());
    let mut aggregator = Aggregator::with_threads(range(&sim), n_threads);
    for event in read_json_lines(reader, &events_path) {
        aggregator.push(&event.unwrap());
    }
    let aggregates = aggregator.finish();
    let report = build_report(&aggregates, &known_snapshots(&sim, &split), &config).unwrap();
    let reference = run_reference(&events_path, &split_path, &config, &sim);
    for group in &report.groups {
        assert_eq!(reference["n_users"][&group.label].as_u64(), Some(group.n_users), "{}", group.label);
    }
    let n_checked = compare_all(&report, &reference);
    // 7 arms and staging, 7 metrics, 12 numbers each; 3 experiments and staging, 2 numbers each.
    assert_eq!(n_checked, 8 * 7 * 12 + 4 * 2);
}

#[test]
fn agrees_with_scipy_and_statsmodels_without_effects() {
    let sim = Simulation { seed: 11, n_users: 6_000, n_requests: 40_000, ..Simulation::default() };
    check_case(sim, ReportConfig::default(), 1);
}

#[test]
fn agrees_with_scipy_and_statsmodels_with_effects_and_other_settings() {
    let sim = Simulation {
        seed: 12,
        n_users: 4_000,
        n_requests: 30_000,
        ctr: 0.12,
        arm_effects: vec![
            ((1, 2), Effect { fill: 0.9, ctr: 1.3, revenue: 1.2 }),
            ((3, 3), Effect { fill: 1.0, ctr: 0.7, revenue: 1.0 }),
        ],
        staging_effect: Effect { fill: 1.05, ctr: 1.0, revenue: 0.8 },
        ..Simulation::default()
    };
    let config = ReportConfig { alpha: 0.01, msprt_tau_relative: 0.2, ..ReportConfig::default() };
    // Through three shard threads: users split by key, moments merged.
    check_case(sim, config, 3);
}

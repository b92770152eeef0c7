//! Calibration end to end (simulated events → aggregation → report): under no effect about
//! alpha of the p-values fall below alpha; repeated looks inflate the fixed-horizon error rate
//! but not the always-valid one; a known effect is found with intervals that hold it.

mod common;

use adsnap_abtest::analysis::simulate::{Effect, Simulation};
use adsnap_abtest::analysis::{build_report, Aggregator, Metric, MetricComparison, ReportConfig};
use common::{binomial_fits, example_split, known_snapshots, one_arm_split, range, report, simulate};

const N_SEEDS_NULL: u64 = 600;

/// A/A traffic: rates high enough that every metric has dozens of events per group.
fn aa_simulation(seed: u64) -> Simulation {
    Simulation {
        seed,
        n_users: 900,
        n_requests: 2_500,
        anonymous_share: 0.0,
        ctr: 0.2,
        install_per_click: 0.3,
        ..Simulation::default()
    }
}

fn arm_metrics(report: &adsnap_abtest::analysis::Report) -> &[MetricComparison] {
    &report.experiments[0].arms[0].metrics
}

#[test]
fn null_p_values_fall_below_alpha_about_alpha_of_the_time() {
    let split = one_arm_split();
    let config = ReportConfig::default();
    let mut n_below = [0u64; 7];
    let mut n_tests = [0u64; 7];
    for seed in 0..N_SEEDS_NULL {
        let report = report(&aa_simulation(1000 + seed), &split, &config);
        for (i, m) in arm_metrics(&report).iter().enumerate() {
            let c = m.comparison.unwrap_or_else(|| panic!("seed {seed} {:?}: {:?}", m.metric, m.unavailable));
            assert!((0.0..=1.0).contains(&c.p_value));
            n_tests[i] += 1;
            n_below[i] += u64::from(c.p_value < config.alpha);
        }
    }
    eprintln!("null p-values below alpha per metric, of {N_SEEDS_NULL}: {n_below:?}");
    for (i, metric) in Metric::ALL.iter().enumerate() {
        assert!(
            binomial_fits(n_below[i], n_tests[i], config.alpha),
            "{metric:?}: {} of {} null p-values below {}",
            n_below[i],
            n_tests[i],
            config.alpha
        );
    }
}

#[test]
fn always_valid_p_values_hold_alpha_under_repeated_looks_and_fixed_ones_do_not() {
    const N_SEEDS: u64 = 300;
    const N_LOOKS: u64 = 10;
    let split = one_arm_split();
    let config = ReportConfig::default();
    let (mut n_fixed_rejected, mut n_always_valid_rejected) = (0u64, 0u64);
    for seed in 0..N_SEEDS {
        let sim = Simulation { n_requests: 4_000, ..aa_simulation(5000 + seed) };
        let look_every = sim.n_requests / N_LOOKS;
        let snapshots = known_snapshots(&sim, &split);
        let mut aggregator = Aggregator::new(range(&sim));
        let (mut fixed, mut always_valid) = (false, false);
        let mut n_decisions = 0u64;
        simulate(&sim, &split, |e| {
            aggregator.push(e);
            n_decisions += u64::from(e.kind == adsnap_events::EventKind::Decision);
            if e.kind == adsnap_events::EventKind::Decision && n_decisions.is_multiple_of(look_every) {
                let report = build_report(&aggregator.current(), &snapshots, &config).unwrap();
                // Revenue per user: a per-user mean, looked at ten times.
                if let Some(c) = arm_metrics(&report)[6].comparison {
                    fixed |= c.p_value < config.alpha;
                    always_valid |= c.p_value_always_valid.unwrap() < config.alpha;
                }
            }
        });
        n_fixed_rejected += u64::from(fixed);
        n_always_valid_rejected += u64::from(always_valid);
    }
    eprintln!("rejected at some look: fixed {n_fixed_rejected}, always valid {n_always_valid_rejected} of {N_SEEDS}");
    // Ten looks at the fixed-horizon p-value reject a true null far more often than alpha...
    assert!(n_fixed_rejected as f64 > 2.0 * config.alpha * N_SEEDS as f64, "{n_fixed_rejected} of {N_SEEDS}");
    // ...while the always-valid p-value keeps the error rate at most alpha.
    let ceiling = config.alpha * N_SEEDS as f64 + 3.29 * (N_SEEDS as f64 * config.alpha * 0.95).sqrt();
    assert!((n_always_valid_rejected as f64) <= ceiling, "{n_always_valid_rejected} of {N_SEEDS}");
}

#[test]
fn a_known_effect_is_found_and_its_true_size_is_inside_the_intervals() {
    let effect = Effect { fill: 0.95, ctr: 1.2, revenue: 1.1 };
    let sim = Simulation {
        seed: 77,
        n_users: 40_000,
        n_requests: 400_000,
        ctr: 0.08,
        arm_effects: vec![((1, 2), effect)],
        ..Simulation::default()
    };
    let report = report(&sim, &example_split(), &ReportConfig::default());
    assert!(!report.srm_failed, "{:?}", report.experiments.iter().map(|x| &x.srm).collect::<Vec<_>>());
    let experiment = &report.experiments[0];
    let by_metric = |arm: usize, metric: Metric| {
        experiment.arms[arm].metrics.iter().find(|m| m.metric == metric).unwrap().clone()
    };
    // Arm 2 has the effect: each true relative difference lies in the intervals, all significant.
    for (metric, truth) in [(Metric::FillRate, -0.05), (Metric::Ctr, 0.2), (Metric::Rpm, 0.1)] {
        let m = by_metric(1, metric);
        let c = m.comparison.unwrap();
        let ci = c.ci_rel.unwrap();
        assert!(ci[0] <= truth && truth <= ci[1], "{metric:?}: {truth} outside {ci:?}");
        assert!(
            m.significant && c.p_value < 1e-4,
            "{metric:?}: p {} always-valid {:?}",
            c.p_value,
            c.p_value_always_valid
        );
        let av = c.ci_abs_always_valid.unwrap();
        let truth_abs = truth * c.control;
        assert!(av[0] <= truth_abs && truth_abs <= av[1], "{metric:?}: {truth_abs} outside {av:?}");
    }
    // Arm 1 has none: no metric is significant by the always-valid p-value.
    for m in &experiment.arms[0].metrics {
        assert!(!m.significant, "{:?} {:?}", m.metric, m.comparison);
    }
}

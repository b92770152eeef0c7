//! Sample-ratio checks, the staging alarm and bad input, end to end from simulated events.

mod common;

use std::io::Cursor;
use std::path::Path;

use adsnap_abtest::analysis::simulate::{Effect, Simulation};
use adsnap_abtest::analysis::{
    aggregate, build_report, read_json_lines, render_html, render_prometheus, render_table, Aggregator,
    AnalysisError, GroupKey, Metric, ReportConfig, TimeRange,
};
use adsnap_abtest::Assignment;
use common::{aggregate as aggregate_sim, example_split, known_snapshots, range, report, simulate};

fn sim(seed: u64) -> Simulation {
    Simulation { seed, n_users: 20_000, n_requests: 120_000, ..Simulation::default() }
}

#[test]
fn real_assignment_passes_every_sample_ratio_check() {
    for seed in [1, 2, 3] {
        let report = report(&sim(seed), &example_split(), &ReportConfig::default());
        assert!(!report.srm_failed, "seed {seed}");
        for x in &report.experiments {
            let chi = x.srm.chi_square.as_ref().unwrap();
            assert_eq!(chi.degrees_of_freedom as usize, x.arms.len(), "arms and control");
            assert!(chi.p_value > ReportConfig::default().srm_p_value_min, "seed {seed}: {x:?}");
        }
        assert!(report.staging.unwrap().srm.chi_square.is_some());
    }
}

#[test]
fn losing_some_users_of_one_arm_is_a_blocking_sample_ratio_mismatch() {
    let s = sim(4);
    let split = example_split();
    let mut aggregator = Aggregator::new(range(&s));
    // Drop every event of about 1 in 5 users of experiment 2's arm 1 (an arm that crashes).
    simulate(&s, &split, |e| {
        let arm = Assignment::from_code(e.assignment_code).map(|a| a.slice.to_string());
        let lost = arm.as_deref() == Some("experiment-2/arm-1") && e.user_key.is_some_and(|k| k % 5 == 0);
        if !lost {
            aggregator.push(e);
        }
    });
    let report =
        build_report(&aggregator.finish(), &known_snapshots(&s, &split), &ReportConfig::default()).unwrap();
    assert!(report.srm_failed);
    let failed: Vec<u32> =
        report.experiments.iter().filter(|x| x.srm.failed).map(|x| x.experiment_id).collect();
    assert_eq!(failed, vec![2]);
    let table = render_table(&report);
    assert!(table.contains("BLOCKING: experiment 2: SAMPLE RATIO MISMATCH"), "{table}");
    assert!(render_html(&report).contains("class=\"blocking\""));
}

#[test]
fn staging_beyond_the_threshold_raises_the_alarm_and_within_it_does_not() {
    let split = example_split();
    let quiet = report(&sim(5), &split, &ReportConfig::default());
    assert!(!quiet.staging_alarm, "{:?}", quiet.staging.as_ref().map(|s| &s.alarm_metrics));

    let s = Simulation { staging_effect: Effect { fill: 1.0, ctr: 1.6, revenue: 1.0 }, ..sim(5) };
    let loud = report(&s, &split, &ReportConfig::default());
    assert!(loud.staging_alarm);
    assert_eq!(loud.staging.as_ref().unwrap().alarm_metrics, vec![Metric::Ctr]);
    assert!(render_table(&loud).contains("STAGING ALARM"));
    let metrics = render_prometheus(&loud);
    assert!(metrics.contains("\nadsnap_abtest_staging_alarm 1\n"), "{metrics}");
    assert!(metrics.contains("adsnap_abtest_staging_relative_difference{metric=\"ctr\"} 0."), "{metrics}");
    assert!(render_prometheus(&quiet).contains("\nadsnap_abtest_staging_alarm 0\n"));
    // The same difference under a threshold above it is no alarm.
    let lenient = ReportConfig { staging_alarm_relative: 0.9, ..ReportConfig::default() };
    assert!(!report(&s, &split, &lenient).staging_alarm);
}

#[test]
fn an_empty_range_is_a_clear_error() {
    let s = sim(6);
    let split = example_split();
    let later = TimeRange::new(s.to_unix_ms, s.to_unix_ms + 1000).unwrap();
    let mut aggregator = Aggregator::new(later);
    simulate(&s, &split, |e| aggregator.push(e));
    let err = build_report(&aggregator.finish(), &known_snapshots(&s, &split), &ReportConfig::default())
        .unwrap_err();
    assert!(matches!(err, AnalysisError::EmptyRange { n_events_read, .. } if n_events_read > 0), "{err}");
    assert!(err.to_string().contains("no events in the range"));
    assert!(matches!(TimeRange::new(5, 5), Err(AnalysisError::BadRange { .. })));
}

#[test]
fn events_from_an_unknown_snapshot_are_a_clear_error() {
    let s = sim(7);
    let split = example_split();
    let mut known = known_snapshots(&s, &split);
    known.retain(|k| k.snapshot_id == s.production_snapshot_id);
    let err = build_report(&aggregate_sim(&s, &split), &known, &ReportConfig::default()).unwrap_err();
    let AnalysisError::UnknownSnapshots { n_ids, ref ids, .. } = err else { panic!("{err}") };
    assert_eq!(n_ids, 1);
    assert!(ids.contains(&format!("{:016x}", s.staging_snapshot_id)), "{err}");
}

#[test]
fn an_experiment_without_traffic_and_missing_control_are_reported_not_divided_by() {
    let s = sim(8);
    let split = example_split();
    // Experiment 3 configured but none of its events arrive; later, control's events vanish too.
    let mut without_3 = Aggregator::new(range(&s));
    let mut without_control = Aggregator::new(range(&s));
    simulate(&s, &split, |e| {
        let slice = Assignment::from_code(e.assignment_code).unwrap().slice.to_string();
        if !slice.starts_with("experiment-3/") {
            without_3.push(e);
        }
        if slice != "control" {
            without_control.push(e);
        }
    });
    let config = ReportConfig::default();
    let report = build_report(&without_3.finish(), &known_snapshots(&s, &split), &config).unwrap();
    let x3 = report.experiments.iter().find(|x| x.experiment_id == 3).unwrap();
    assert!(x3.no_traffic && x3.srm.failed, "{x3:?}");
    assert!(x3.arms.iter().flat_map(|a| &a.metrics).all(|m| m.unavailable.as_deref() == Some("no traffic")));
    assert!(
        report.warnings.iter().any(|w| w.contains("experiment 3 has no traffic")),
        "{:?}",
        report.warnings
    );

    let report = build_report(&without_control.finish(), &known_snapshots(&s, &split), &config).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("no control users")));
    for x in &report.experiments {
        assert!(x.arms.iter().flat_map(|a| &a.metrics).all(|m| m.comparison.is_none()));
    }
    // Every renderer copes.
    assert!(render_table(&report).contains("no control traffic"));
    assert!(render_html(&report).contains("no control traffic"));
}

#[test]
fn groups_without_impressions_or_users_give_reasons_not_nans() {
    let s = Simulation { show_rate: 0.0, n_requests: 5_000, ..sim(9) };
    let report = report(&s, &example_split(), &ReportConfig::default());
    let metrics = &report.experiments[0].arms[0].metrics;
    for m in metrics {
        match m.metric {
            Metric::Ctr | Metric::InstallRate | Metric::Rpm => {
                assert_eq!(m.unavailable.as_deref(), Some("the ratio's denominator is zero in a group"))
            }
            // Nobody is shown an ad, so nobody earns: no variance.
            Metric::ImpressionsPerUser | Metric::RevenuePerUser => {
                assert_eq!(m.unavailable.as_deref(), Some("no variance in either group"))
            }
            _ => assert!(m.comparison.is_some(), "{m:?}"),
        }
    }
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("NaN") && !json.contains("inf"));
}

#[test]
fn bad_lines_and_bad_codes_are_named() {
    let s = sim(10);
    let mut lines = Vec::new();
    simulate(&Simulation { n_requests: 50, ..s.clone() }, &example_split(), |e| {
        lines.push(serde_json::to_string(e).unwrap());
    });
    let good = lines.join("\n");
    let bad = format!("{}\n\n{}\n{{\"kind\": \"decision\"}}\n{}", lines[0], lines[1], lines[2]);
    let path = Path::new("events.jsonl");
    let err = aggregate(read_json_lines(Cursor::new(bad), path), range(&s)).unwrap_err();
    assert!(matches!(err, AnalysisError::BadEvent { line: 4, .. }), "{err}");
    assert!(err.to_string().starts_with("events.jsonl:4: not an event"), "{err}");

    let too_long = format!("{}\n{}\n", lines[0], "x".repeat(adsnap_abtest::analysis::LINE_BYTES_MAX + 10));
    let err = aggregate(read_json_lines(Cursor::new(too_long), path), range(&s)).unwrap_err();
    assert!(matches!(err, AnalysisError::LineTooLong { line: 2, .. }), "{err}");

    // A code that is no assignment is skipped, counted and warned about.
    let mut event: adsnap_events::Event<'static> = serde_json::from_str(&lines[0]).unwrap();
    event.assignment_code = 3;
    let mut aggregator = Aggregator::new(range(&s));
    aggregator.extend(read_json_lines(Cursor::new(good), path).map(Result::unwrap));
    aggregator.push(&event);
    let aggregates = aggregator.finish();
    assert_eq!(aggregates.input.n_events_bad_assignment, 1);
    // A test request's events are skipped and counted; JSON written before the field reads as
    // live traffic.
    let mut test_only = Aggregator::new(range(&s));
    let live: adsnap_events::Event<'static> = serde_json::from_str(&lines[0]).unwrap();
    test_only.push(&adsnap_events::Event { test: true, ..live.clone() });
    let test_only = test_only.finish();
    assert_eq!((test_only.input.n_events_test, test_only.input.n_events_in_range), (1, 0));
    let mut without_field: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    without_field.as_object_mut().unwrap().remove("test");
    assert_eq!(serde_json::from_value::<adsnap_events::Event<'static>>(without_field).unwrap(), live);
    assert!(!live.test);
    assert!(aggregates.group(GroupKey::Control).is_some());
    let report = build_report(&aggregates, &[], &ReportConfig::default()).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("not one")));
    assert!(report.warnings.iter().any(|w| w.contains("no snapshot given")));
}

#[test]
fn invalid_settings_are_rejected() {
    let aggregates = aggregate_sim(&Simulation { n_requests: 100, ..sim(11) }, &example_split());
    for config in [
        ReportConfig { alpha: 0.0, ..ReportConfig::default() },
        ReportConfig { alpha: f64::NAN, ..ReportConfig::default() },
        ReportConfig { msprt_tau_relative: -1.0, ..ReportConfig::default() },
        ReportConfig { srm_p_value_min: 1.0, ..ReportConfig::default() },
        ReportConfig { staging_alarm_relative: f64::INFINITY, ..ReportConfig::default() },
    ] {
        let err = build_report(&aggregates, &[], &config).unwrap_err();
        assert!(matches!(err, AnalysisError::InvalidConfig { .. }), "{err}");
    }
}

#[test]
fn sharded_aggregation_equals_one_thread() {
    let s = sim(12);
    let split = example_split();
    let mut local = Aggregator::new(range(&s));
    let mut sharded = Aggregator::with_threads(range(&s), 2);
    simulate(&s, &split, |e| {
        local.push(e);
        sharded.push(e);
    });
    // A look in the middle goes through the shards too.
    let (local_mid, sharded_mid) = (local.current(), sharded.current());
    assert_eq!(local_mid.input, sharded_mid.input);
    let (local, sharded) = (local.finish(), sharded.finish());
    assert_eq!(local.input, sharded.input);
    assert_eq!(local.snapshots, sharded.snapshots);
    assert_eq!(local.groups.len(), sharded.groups.len());
    for (a, b) in local.groups.iter().zip(&sharded.groups) {
        assert_eq!((a.key, a.events, a.moments.n), (b.key, b.events, b.moments.n));
        for q in 0..a.moments.mean.len() {
            assert!((a.moments.mean[q] - b.moments.mean[q]).abs() <= 1e-9 * a.moments.mean[q].abs().max(1.0));
            for r in 0..a.moments.mean.len() {
                let (x, y) = (a.moments.comoment[q][r], b.moments.comoment[q][r]);
                assert!((x - y).abs() <= 1e-7 * x.abs().max(1.0), "{:?} {q} {r}: {x} vs {y}", a.key);
            }
        }
    }
}

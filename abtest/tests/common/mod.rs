//! Shared pieces of the analysis tests: the example split, simulation into aggregates, and
//! tolerances.

#![allow(dead_code)]

use adsnap_abtest::analysis::simulate::{archived_table, table_bytes, Simulation};
use adsnap_abtest::analysis::{
    build_report, Aggregates, Aggregator, ConfiguredArm, ConfiguredExperiment, ConfiguredSplit,
    KnownSnapshot, Report, ReportConfig, TimeRange,
};
use adsnap_events::Event;

pub const TABLE_SALT: u64 = 0x5eed_ab7e_57ab_1e00;

fn arms(weights: &[u16], first_id: u32) -> Vec<ConfiguredArm> {
    weights
        .iter()
        .zip(first_id..)
        .map(|(&weight_bp, id)| ConfiguredArm { id, name: format!("arm {id}"), weight_bp })
        .collect()
}

/// The reference fleet's split: 5% staging; 20%, 20% and 10% of production in three experiments.
pub fn example_split() -> ConfiguredSplit {
    ConfiguredSplit {
        staging_share_bp: 500,
        experiments: vec![
            ConfiguredExperiment {
                id: 1,
                name: "bid shading".into(),
                share_bp: 2000,
                arms: arms(&[5000, 5000], 1),
            },
            ConfiguredExperiment {
                id: 2,
                name: "floors".into(),
                share_bp: 2000,
                arms: arms(&[2000, 8000], 1),
            },
            ConfiguredExperiment {
                id: 3,
                name: "scan depth".into(),
                share_bp: 1000,
                arms: arms(&[3334, 3333, 3333], 1),
            },
        ],
    }
}

/// One experiment with one arm over a third of production, no staging: arm against control.
pub fn one_arm_split() -> ConfiguredSplit {
    ConfiguredSplit {
        staging_share_bp: 0,
        experiments: vec![ConfiguredExperiment {
            id: 7,
            name: "a/a".into(),
            share_bp: 3334,
            arms: arms(&[10_000], 1),
        }],
    }
}

pub fn range(sim: &Simulation) -> TimeRange {
    TimeRange::new(sim.from_unix_ms, sim.to_unix_ms).unwrap()
}

/// Runs a simulation over a split's table, handing every event to `sink`.
pub fn simulate(sim: &Simulation, split: &ConfiguredSplit, sink: impl FnMut(&Event<'_>)) {
    let bytes = table_bytes(split, TABLE_SALT);
    let table = archived_table(&bytes).unwrap();
    sim.run(table, sink);
}

pub fn aggregate(sim: &Simulation, split: &ConfiguredSplit) -> Aggregates {
    let mut aggregator = Aggregator::new(range(sim));
    simulate(sim, split, |e| aggregator.push(e));
    aggregator.finish()
}

pub fn known_snapshots(sim: &Simulation, split: &ConfiguredSplit) -> Vec<KnownSnapshot> {
    vec![
        KnownSnapshot {
            snapshot_id: sim.production_snapshot_id,
            label: "production".into(),
            split: split.clone(),
        },
        KnownSnapshot { snapshot_id: sim.staging_snapshot_id, label: "staging".into(), split: split.clone() },
    ]
}

pub fn report(sim: &Simulation, split: &ConfiguredSplit, config: &ReportConfig) -> Report {
    build_report(&aggregate(sim, split), &known_snapshots(sim, split), config).unwrap()
}

/// Whether `count` successes of `n` trials fit probability `p` at the two-sided 0.001 level
/// (normal approximation to the binomial, fine for n p above a few dozen).
pub fn binomial_fits(count: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= 3.29 * sd
}

//! `adsnap-bench abtest`: the A/B report over a day of one busy server's events. Events are
//! simulated over the reference fleet's split (5% staging; 20/20/10% of production in three
//! experiments) and streamed straight into the aggregator: nothing is stored. The baseline is the
//! same stream generated and folded into one checksum, so the difference is the analysis' cost.

use std::hint::black_box;
use std::time::{Duration, Instant};

use adsnap_abtest::analysis::simulate::{archived_table, table_bytes, Simulation};
use adsnap_abtest::analysis::{
    build_report, render_html, render_table, Aggregator, ConfiguredArm, ConfiguredExperiment,
    ConfiguredSplit, KnownSnapshot, ReportConfig, TimeRange,
};

/// Events one simulated request yields on average at the default rates (a decision, 72% of the
/// time an impression, then clicks and installs): used to size the run to about `events`.
const EVENTS_PER_REQUEST: f64 = 1.76;

fn split() -> ConfiguredSplit {
    let arms = |weights: &[u16]| {
        weights
            .iter()
            .zip(1..)
            .map(|(&weight_bp, id)| ConfiguredArm { id, name: format!("arm {id}"), weight_bp })
            .collect()
    };
    let experiment = |id: u32, share_bp: u16, weights: &[u16]| ConfiguredExperiment {
        id,
        name: format!("experiment {id}"),
        share_bp,
        arms: arms(weights),
    };
    ConfiguredSplit {
        staging_share_bp: 500,
        experiments: vec![
            experiment(1, 2000, &[5000, 5000]),
            experiment(2, 2000, &[2000, 8000]),
            experiment(3, 1000, &[3334, 3333, 3333]),
        ],
    }
}

/// CPU time the whole process has run (every thread, user and system), from the kernel's
/// accounting: on a shared machine the wall clock also counts time spent waiting for a core.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    // The kernel reports in clock ticks of 1/100 s (USER_HZ on Linux).
    Duration::from_millis(ticks * 10)
}

/// Wall and CPU time since a start.
struct Clock {
    wall: Instant,
    cpu: Duration,
}

impl Clock {
    fn start() -> Clock {
        Clock { wall: Instant::now(), cpu: process_cpu() }
    }
    fn read(&self) -> (Duration, Duration) {
        (self.wall.elapsed(), process_cpu().saturating_sub(self.cpu))
    }
}

pub fn run(n_events: u64, n_users: u64, n_threads: usize) -> anyhow::Result<()> {
    let split = split();
    let bytes = table_bytes(&split, 0xbe9c_4000_0000_0001);
    let table = archived_table(&bytes).map_err(|err| anyhow::anyhow!("archived table: {err}"))?;
    let sim = Simulation {
        seed: 1,
        n_users,
        n_requests: (n_events as f64 / EVENTS_PER_REQUEST) as u64,
        ..Simulation::default()
    };

    let clock = Clock::start();
    let (mut n_baseline, mut checksum) = (0u64, 0i64);
    sim.run(table, |e| {
        n_baseline += 1;
        checksum = checksum.wrapping_add(e.revenue_micros ^ e.time_unix_ms);
    });
    black_box(checksum);
    let baseline = clock.read();

    let clock = Clock::start();
    let mut aggregator =
        Aggregator::with_threads(TimeRange::new(sim.from_unix_ms, sim.to_unix_ms)?, n_threads);
    sim.run(table, |e| aggregator.push(e));
    let streamed = clock.read();
    let aggregates = aggregator.finish();
    let finished = clock.read();
    let known: Vec<KnownSnapshot> = [sim.production_snapshot_id, sim.staging_snapshot_id]
        .into_iter()
        .map(|snapshot_id| KnownSnapshot {
            snapshot_id,
            label: format!("{snapshot_id:016x}"),
            split: split.clone(),
        })
        .collect();
    let report = build_report(&aggregates, &known, &ReportConfig::default())?;
    let (table_text, html) = (render_table(&report), render_html(&report));
    let total = clock.read();

    let n_users_seen: u64 = aggregates.groups.iter().map(|g| g.moments.n).sum();
    let n = aggregates.input.n_events_read;
    println!(
        "adsnap-bench abtest: {n} events, {n_users_seen} users seen, {n_threads} shard thread(s); CPU is the process's, all threads"
    );
    println!("| run | wall | CPU | events/s (CPU) | CPU ratio to baseline |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, (wall, cpu): (Duration, Duration), n: u64| {
        println!(
            "| {name} | {wall:.2?} | {cpu:.2?} | {:.1} M | {:.2} |",
            n as f64 / cpu.as_secs_f64().max(1e-9) / 1e6,
            cpu.as_secs_f64() / baseline.1.as_secs_f64().max(1e-9)
        );
    };
    row("baseline: generate + checksum", baseline, n_baseline);
    row("generate + aggregate (streaming pass)", streamed, n);
    row("+ per-user moments", finished, n);
    row("+ report, table and HTML (whole report)", total, n);
    println!(
        "analysis alone (whole report − baseline): {:.2?} wall, {:.2?} CPU; peak resident memory {} MiB; \
         report {} table bytes, {} HTML bytes; srm failed: {}",
        total.0.saturating_sub(baseline.0),
        total.1.saturating_sub(baseline.1),
        crate::status_bytes("VmHWM:") / (1 << 20),
        table_text.len(),
        html.len(),
        report.srm_failed
    );
    Ok(())
}

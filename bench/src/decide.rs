//! `adsnap-bench decide`: the decision alone, timed call by call over a realistic request stream
//! against a generated catalog, for its latency percentiles.

use std::path::Path;
use std::time::{Duration, Instant};

use adsnap_abtest::{assign, Slice, UserKey};
use adsnap_serve::decision::decide;
use adsnap_serve::request::{AdRequest, Query};
use adsnap_snapshot::Snapshot;

use crate::traffic;

/// A resolved request and its experiment arm (experiment index, arm index), if any.
type Resolved = (Query, Option<(u8, u8)>);

/// Requests resolved ahead of the timing, so that only `decide` is timed.
fn queries(snapshot: &Snapshot, n: usize) -> anyhow::Result<Vec<Resolved>> {
    let now = snapshot.archive().meta.reference_unix_s.to_native();
    let mut out = Vec::with_capacity(n);
    for (i, body) in traffic::requests(snapshot, n, 7).iter().enumerate() {
        let request = AdRequest::parse(body)?;
        let request_hash = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
        let key = match &request.user.id {
            Some(id) => UserKey::Id(id.as_bytes()),
            None => UserKey::Anonymous { request_nonce: i as u64 },
        };
        let arm = match assign(key, &snapshot.archive().experiments).slice {
            Slice::Experiment { experiment_idx, arm_idx, .. } => Some((experiment_idx, arm_idx)),
            _ => None,
        };
        let query =
            request.resolve(snapshot, now, request_hash).map_err(|e| anyhow::anyhow!("{e}: {body}"))?;
        out.push((query, arm));
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

pub fn run(snapshot_path: &Path, n_requests: usize, rounds: u32) -> anyhow::Result<()> {
    let snapshot = Snapshot::open(snapshot_path)?;
    let queries = queries(&snapshot, n_requests)?;
    let experiments = &snapshot.archive().experiments;
    let params_of = |arm: &Option<(u8, u8)>| match arm {
        Some((x, a)) => &experiments.experiments[*x as usize].arms[*a as usize].params,
        None => &experiments.control,
    };
    let mut times = Vec::with_capacity(queries.len() * rounds as usize);
    let (mut n_filled, mut n_scanned) = (0u64, 0u64);
    // The clock's own cost, to report beside the figures.
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(Instant::now());
    }
    let clock_ns = t.elapsed().as_nanos() as f64 / 1000.0;
    for _ in 0..rounds {
        for (query, arm) in &queries {
            let params = params_of(arm);
            let t = Instant::now();
            let decision = std::hint::black_box(decide(
                &snapshot,
                query,
                params,
                adsnap_serve::decision::User::default(),
            ));
            times.push(t.elapsed());
            n_filled += decision.outcome.is_ok() as u64;
            n_scanned += decision.n_scanned as u64;
        }
    }
    times.sort();
    let n = times.len() as f64;
    println!("## decision alone ({} requests × {rounds} rounds, {})", queries.len(), snapshot_path.display());
    println!("| p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | fill rate | candidates scanned (mean) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1}% | {:.1} |",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.9)),
        us(percentile(&times, 0.99)),
        us(percentile(&times, 0.999)),
        us(*times.last().unwrap_or(&Duration::ZERO)),
        100.0 * n_filled as f64 / n,
        n_scanned as f64 / n
    );
    println!("(each call timed with Instant::now, which itself costs about {clock_ns:.0} ns here; target p99 < 20 µs)");
    Ok(())
}

//! `adsnap-bench decide`: the decision alone, timed call by call over a realistic request stream
//! against a generated catalog, for its latency percentiles; and reading the stream's request
//! bodies, with the server's reader against serde_json's derive of the same types; and bid
//! requests of the same draws, from their bytes to their decisions.

use std::path::Path;
use std::time::{Duration, Instant};

use adsnap_abtest::{assign, Slice, UserKey};
use adsnap_serve::decision::decide;
use adsnap_serve::openrtb::{BidRequest, IMPS_MAX};
use adsnap_serve::request::{AdRequest, Query};
use adsnap_serve::served::{Prepare, Served};
use adsnap_snapshot::schema::ArchivedOverrides;
use adsnap_snapshot::{OpenOptions, Pages, Snapshot};

use crate::traffic;

/// A resolved request and its experiment arm (experiment index, arm index), if any.
type Resolved = (Query, Option<(u8, u8)>);

/// The parameters of a resolved request's arm: the experiment arm's, or control's.
fn arm_params<'s>(snapshot: &'s Snapshot, arm: &Option<(u8, u8)>) -> &'s ArchivedOverrides {
    let experiments = &snapshot.archive().experiments;
    match arm {
        Some((x, a)) => &experiments.experiments[*x as usize].arms[*a as usize].params,
        None => &experiments.control,
    }
}

/// Requests resolved ahead of the timing, so that only `decide` is timed.
fn queries(snapshot: &Snapshot, bodies: &[String]) -> anyhow::Result<Vec<Resolved>> {
    let now = snapshot.archive().meta.reference_unix_s.to_native();
    let mut out = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.iter().enumerate() {
        let request = AdRequest::parse(body.as_bytes())?;
        let request_hash = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
        let key = match &request.user.id {
            Some(id) => UserKey::Id(id.as_bytes()),
            None => UserKey::Anonymous { request_nonce: i as u64 },
        };
        let arm = match assign(key, &snapshot.archive().experiments).slice {
            Slice::Experiment { experiment_idx, arm_idx, .. } => Some((experiment_idx, arm_idx)),
            _ => None,
        };
        let query = request
            .resolve(snapshot, request.signals(None), now, request_hash)
            .map_err(|e| anyhow::anyhow!("{e}: {body}"))?;
        out.push((query, arm));
    }
    Ok(out)
}

/// The snapshot as the server holds it, without the escaped markup only answers use.
fn served(snapshot: Snapshot) -> Served {
    Served::prepare(snapshot, Prepare { nice: 0, escaped_markup_bytes_max: 0 })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// p50, p90, p99 and p99.9 of sorted times, in µs, as table cells.
fn percentile_cells(sorted: &[Duration]) -> String {
    let cell = |p| format!("{:.2}", us(percentile(sorted, p)));
    [0.5, 0.9, 0.99, 0.999].map(cell).join(" | ")
}

pub fn run(snapshot_path: &Path, n_requests: usize, rounds: u32) -> anyhow::Result<()> {
    let snapshot = served(Snapshot::open(snapshot_path)?);
    let bodies = traffic::requests(&snapshot, n_requests, 7);
    let queries = queries(&snapshot, &bodies)?;
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
            let params = arm_params(&snapshot, arm);
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
    println!(
        "| {} | {:.1} | {:.1}% | {:.1} |",
        percentile_cells(&times),
        us(*times.last().unwrap_or(&Duration::ZERO)),
        100.0 * n_filled as f64 / n,
        n_scanned as f64 / n
    );
    println!("(each call timed with Instant::now, which itself costs about {clock_ns:.0} ns here; target p99 < 20 µs)");
    // Unmapped first: pages a mapping holds stay as they are, and would keep the 2 MiB mapping
    // below from reading the file back in 2 MiB folios.
    drop(snapshot);
    page_sizes(snapshot_path, &queries, rounds)?;
    reading(&bodies, rounds)?;
    bid_requests(snapshot_path, n_requests, rounds)
}

/// Bid requests from their bytes to their decisions, each timed: what `POST /openrtb2/bid` does
/// before its answer (reading with serde_json, the privacy signals, the request's shared parts,
/// then each impression's slots decided), without the profile read, the event and the answer.
/// Every request is decided with control's parameters.
fn bid_requests(snapshot_path: &Path, n_requests: usize, rounds: u32) -> anyhow::Result<()> {
    let snapshot = served(Snapshot::open(snapshot_path)?);
    let bodies = traffic::bid_requests(&snapshot, n_requests, 7);
    let now = snapshot.archive().meta.reference_unix_s.to_native();
    let control = &snapshot.archive().experiments.control;
    let (mut times, mut read_times) = (Vec::new(), Vec::new());
    let (mut n_imps, mut n_filled) = (0u64, 0u64);
    for _ in 0..rounds {
        for (i, body) in bodies.iter().enumerate() {
            let t = Instant::now();
            let request: BidRequest = serde_json::from_slice(body.as_bytes())?;
            let read = t.elapsed();
            if let Ok(mut impressions) = request.resolve(&snapshot, request.signals(None), now, i as u64) {
                for imp in request.imp.iter().take(IMPS_MAX) {
                    n_imps += 1;
                    let Ok(mut impression) = impressions.impression(&snapshot, imp, "USD") else { continue };
                    let user = adsnap_serve::decision::User::default();
                    let chosen = impressions.decide(&snapshot, &mut impression, control, user);
                    n_filled += chosen.is_some_and(|(_, d)| d.outcome.is_ok()) as u64;
                }
            }
            times.push(t.elapsed());
            read_times.push(read);
        }
    }
    times.sort();
    let mean_ns =
        |times: &[Duration]| times.iter().sum::<Duration>().as_nanos() as f64 / times.len().max(1) as f64;
    let mean_bytes = bodies.iter().map(String::len).sum::<usize>() as f64 / bodies.len().max(1) as f64;
    println!();
    println!(
        "## a bid request from its bytes to its decisions ({} OpenRTB 2.6 requests of {mean_bytes:.0} bytes on average × {rounds} rounds)",
        bodies.len()
    );
    println!(
        "| p50 µs | p90 µs | p99 µs | p99.9 µs | mean ns | reading alone, mean ns | impressions filled |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {:.0} | {:.1}% |",
        percentile_cells(&times),
        mean_ns(&times),
        mean_ns(&read_times),
        100.0 * n_filled as f64 / n_imps.max(1) as f64
    );
    Ok(())
}

/// The same decisions with the snapshot mapped on 4 KiB pages and on 2 MiB pages: one timed pass
/// over the stream per mapping and round, the two alternating, the median pass of each reported.
/// Both mappings are of the same file, so the queries resolved above hold for either.
fn page_sizes(snapshot_path: &Path, queries: &[Resolved], rounds: u32) -> anyhow::Result<()> {
    let open = |pages| Snapshot::open_with(snapshot_path, &OpenOptions { pages, ..Default::default() });
    // The huge one first: its open drops the file's cached pages that no mapping holds and reads
    // them back in 2 MiB folios, which the 4 KiB mapping then shares.
    let (huge, small) = (served(open(Pages::Huge)?), served(open(Pages::Small)?));
    let pass = |snapshot: &Served| {
        let t = Instant::now();
        for (query, arm) in queries {
            let params = arm_params(snapshot, arm);
            std::hint::black_box(decide(snapshot, query, params, adsnap_serve::decision::User::default()));
        }
        t.elapsed()
    };
    let (mut small_times, mut huge_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(5) {
        small_times.push(pass(&small));
        huge_times.push(pass(&huge));
    }
    small_times.sort();
    huge_times.sort();
    let per_decision_ns =
        |times: &[Duration]| times[times.len() / 2].as_nanos() as f64 / queries.len() as f64;
    let (small_ns, huge_ns) = (per_decision_ns(&small_times), per_decision_ns(&huge_times));
    let mib = |bytes: Option<u64>| {
        bytes.map_or("unknown".to_string(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
    };
    println!();
    println!(
        "## the decision with the snapshot on 4 KiB pages and on 2 MiB pages ({} MiB file; the kernel mapped {} of it with 2 MiB pages)",
        std::fs::metadata(snapshot_path)?.len() / 1048576,
        mib(huge.huge_page_bytes())
    );
    println!("| 4 KiB pages ns | 2 MiB pages ns | 4 KiB / 2 MiB |");
    println!("|---:|---:|---:|");
    println!("| {small_ns:.0} | {huge_ns:.0} | {:.2} |", small_ns / huge_ns);
    Ok(())
}

/// Reading the request bodies: one timed pass over the stream per reader and round, the two
/// readers alternating, and the median pass of each reported per body.
fn reading(bodies: &[String], rounds: u32) -> anyhow::Result<()> {
    let pass = |read: &dyn Fn(&str) -> anyhow::Result<usize>| -> anyhow::Result<Duration> {
        let t = Instant::now();
        for body in bodies {
            std::hint::black_box(read(body)?);
        }
        Ok(t.elapsed())
    };
    // Both read bytes, as the server receives them, and check their UTF-8.
    let serde = |body: &str| -> anyhow::Result<usize> {
        Ok(serde_json::from_slice::<AdRequest>(body.as_bytes())?.ad_unit_id.len())
    };
    let reader =
        |body: &str| -> anyhow::Result<usize> { Ok(AdRequest::parse(body.as_bytes())?.ad_unit_id.len()) };
    let (mut serde_times, mut reader_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(3) {
        serde_times.push(pass(&serde)?);
        reader_times.push(pass(&reader)?);
    }
    serde_times.sort();
    reader_times.sort();
    let per_body_ns = |times: &[Duration]| times[times.len() / 2].as_nanos() as f64 / bodies.len() as f64;
    let (serde_ns, reader_ns) = (per_body_ns(&serde_times), per_body_ns(&reader_times));
    let mean_bytes = bodies.iter().map(String::len).sum::<usize>() as f64 / bodies.len().max(1) as f64;
    println!();
    println!("## reading the request body ({} bodies of {mean_bytes:.0} bytes on average)", bodies.len());
    println!("| serde_json derive ns | adsnap reader ns | serde / reader |");
    println!("|---:|---:|---:|");
    println!("| {serde_ns:.0} | {reader_ns:.0} | {:.2} |", serde_ns / reader_ns);
    Ok(())
}

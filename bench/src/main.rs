//! `adsnap-bench`: the benchmark suite. One command per area, each printing one table of figures
//! measured in the same run, with ratios against the baseline measured beside them.
//!
//! `adsnap-bench snapshot` generates catalogs of 100k and 1M campaigns (3 creatives each), builds
//! each in a child process (wall time and the child's peak memory), then times opening the largest
//! snapshot against one bare xxh3 pass over the same bytes and against serde_json loading the same
//! data.
//!
//! `adsnap-bench profiles` measures the embedded profile store at 1M and 10M users (see
//! `profiles.rs`).

mod abtest;
mod decide;
mod load;
mod mirror;
mod paced;
mod profiles;
mod traffic;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use adsnap_builder::gen::{generate, GenOptions, GENERATOR_VERSION};
use adsnap_builder::{build, BuildOptions};
use adsnap_snapshot::{OpenOptions, Snapshot, FORMAT_VERSION};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use memmap2::MmapOptions;

/// Reference time of every generated catalog and build, so that runs are comparable.
const NOW_UNIX_S: i64 = 1_795_305_600;

#[derive(Parser)]
#[command(name = "adsnap-bench", about = "adsnap benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Build time and memory, and open time against serde_json and a bare xxh3 pass.
    Snapshot {
        /// Catalog sizes to build, in campaigns.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        campaigns: Vec<u64>,
        /// Working folder for catalogs and snapshots (reused between runs: catalogs are generated
        /// once per size and seed).
        #[arg(long, default_value = "target/bench-work")]
        work: PathBuf,
        /// Timed repetitions of each open variant (the median is reported).
        #[arg(long, default_value_t = 5)]
        repetitions: u32,
    },
    /// The decision alone: latency percentiles over a realistic request stream.
    Decide {
        /// Catalog size, in campaigns.
        #[arg(long, default_value_t = 100_000)]
        campaigns: u64,
        #[arg(long, default_value = "target/bench-work")]
        work: PathBuf,
        /// Distinct requests in the stream.
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
        /// Passes over the stream.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Throughput of adsnap's decisions against nginx serving a static file, driven by wrk.
    /// Needs `cargo build --release` (for the adsnap binary) and scripts/install-bench-deps.sh.
    Serve {
        #[arg(long, default_value_t = 100_000)]
        campaigns: u64,
        #[arg(long, default_value = "target/bench-work")]
        work: PathBuf,
        /// Distinct requests wrk cycles through.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Length of each wrk run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Interleaved rounds of the throughput variants (each reported by its median).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
    },
    /// The embedded profile store: import, read latency against a HashMap, update throughput.
    Profiles {
        /// Population sizes, in users.
        #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
        users: Vec<u64>,
        #[arg(long, default_value = "target/bench-work")]
        work: PathBuf,
        /// The memory layer's budget.
        #[arg(long, default_value_t = 4 << 30)]
        memory_bytes_max: u64,
    },
    /// The A/B report over a stream of simulated events (generated, never stored) against the
    /// same stream generated alone.
    Abtest {
        /// Events to stream, about.
        #[arg(long, default_value_t = 100_000_000)]
        events: u64,
        /// Distinct users.
        #[arg(long, default_value_t = 5_000_000)]
        users: u64,
        /// Shard threads for the per-user counters (1: everything on the reading thread).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Latency of a running server at a fixed rate (the serve benchmark's paced generator, on
    /// its own): POSTs each line of `--bodies` to `--path` in turn, or GETs `--path`.
    Paced {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long, default_value = "/v1/ad")]
        path: String,
        /// One JSON body per line.
        #[arg(long)]
        bodies: Option<PathBuf>,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// The CPU the load thread is pinned to.
        #[arg(long, default_value_t = 1)]
        cpu: usize,
    },
    /// Builds one catalog and prints the wall time and this process's peak memory as JSON.
    #[command(hide = true)]
    BuildChild { catalog: PathBuf, out: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Bench::Snapshot { campaigns, work, repetitions } => snapshot_bench(&campaigns, &work, repetitions),
        Bench::BuildChild { catalog, out } => build_child(&catalog, &out),
        Bench::Abtest { events, users, threads } => abtest::run(events, users, threads),
        Bench::Serve { campaigns, work, requests, connections, seconds, rounds } => {
            fs::create_dir_all(&work)?;
            let snapshot = ensure_snapshot(&work, campaigns)?;
            load::run(&snapshot, &work, requests, connections, seconds, rounds)
        }
        Bench::Paced { addr, path, bodies, rate, connections, seconds, cpu } => {
            let requests = match bodies {
                Some(file) => fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|body| paced::raw_request("POST", &path, addr, body))
                    .collect(),
                None => vec![paced::raw_request("GET", &path, addr, "")],
            };
            let figures = paced::run(addr, &requests, rate, connections, Duration::from_secs(seconds), cpu)?;
            println!("{figures:?}");
            Ok(())
        }
        Bench::Profiles { users, work, memory_bytes_max } => {
            fs::create_dir_all(&work)?;
            profiles::run(&users, &work, memory_bytes_max)
        }
        Bench::Decide { campaigns, work, requests, rounds } => {
            fs::create_dir_all(&work)?;
            let snapshot = ensure_snapshot(&work, campaigns)?;
            decide::run(&snapshot, requests, rounds)
        }
    }
}

/// The clock, in seconds since the Unix epoch.
pub fn now_unix_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Samples the process's anonymous resident memory every few milliseconds until `done`, and
/// returns the highest sample. Peak RSS alone counts the pages of the mapped output file that the
/// builder's final verification reads; those are page cache, shared and reclaimable, while the
/// anonymous peak is what the build itself holds.
fn sample_anon_peak(done: &std::sync::atomic::AtomicBool) -> u64 {
    let mut peak = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        peak = peak.max(status_bytes("RssAnon:"));
        std::thread::sleep(Duration::from_millis(5));
    }
    peak
}

fn build_child(catalog: &Path, out: &Path) -> anyhow::Result<()> {
    let options = BuildOptions {
        catalog_dir: catalog.to_owned(),
        out_path: out.to_owned(),
        snapshot_version: 1,
        now_unix_s: NOW_UNIX_S,
        created_unix_ms: NOW_UNIX_S * 1000,
        progress: indicatif_hidden(),
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let (summary, anon_peak) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_anon_peak(&done));
        let summary = build(&options);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (summary, sampler.join().unwrap_or(0))
    });
    let summary = summary.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{}",
        serde_json::json!({
            "elapsed_s": summary.elapsed.as_secs_f64(),
            "peak_rss_bytes": status_bytes("VmHWM:"),
            "peak_anon_bytes": anon_peak,
            "input_bytes": summary.input_bytes,
            "output_bytes": summary.output_bytes,
            "n_candidates": summary.counts.n_candidates,
        })
    );
    Ok(())
}

fn indicatif_hidden() -> adsnap_builder::ProgressBar {
    adsnap_builder::ProgressBar::hidden()
}

struct BuildFigures {
    n_campaigns: u64,
    elapsed_s: f64,
    peak_rss_bytes: u64,
    peak_anon_bytes: u64,
    input_bytes: u64,
    output_bytes: u64,
}

/// Generates the catalog of `n` campaigns unless it is there already. The folder is named by the
/// generator's version, so that a catalog an older generator wrote is never reused.
fn ensure_catalog(work: &Path, n: u64) -> anyhow::Result<PathBuf> {
    let dir = work.join(format!("catalog-{n}.g{GENERATOR_VERSION}"));
    if dir.join("catalog.json").exists() {
        return Ok(dir);
    }
    let partial = work.join(format!("catalog-{n}.g{GENERATOR_VERSION}.partial"));
    let _ = fs::remove_dir_all(&partial);
    let options = GenOptions { n_campaigns: n, seed: 1, creatives_per_campaign: 3, now_unix_s: NOW_UNIX_S };
    eprintln!("generating {n} campaigns into {}", dir.display());
    generate(&options, &partial, &|_| ()).with_context(|| format!("generating {n} campaigns"))?;
    fs::rename(&partial, &dir)?;
    Ok(dir)
}

/// Where the snapshot of the generated catalog of `n` campaigns is kept: named by the generator's
/// and the format's versions, so that one an older generator or builder wrote is never reused.
fn snapshot_path(work: &Path, n: u64) -> PathBuf {
    work.join(format!("snapshot-{n}.g{GENERATOR_VERSION}.f{FORMAT_VERSION}.snap"))
}

/// The snapshot of the generated catalog of `n` campaigns, built unless it is there already.
fn ensure_snapshot(work: &Path, n: u64) -> anyhow::Result<PathBuf> {
    let out = snapshot_path(work, n);
    if !out.exists() {
        let catalog = ensure_catalog(work, n)?;
        run_build(&catalog, &out, n)?;
    }
    Ok(out)
}

fn run_build(catalog: &Path, out: &Path, n: u64) -> anyhow::Result<BuildFigures> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe).arg("build-child").arg(catalog).arg(out).output()?;
    if !output.status.success() {
        bail!("build of {} failed: {}", catalog.display(), String::from_utf8_lossy(&output.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(BuildFigures {
        n_campaigns: n,
        elapsed_s: v["elapsed_s"].as_f64().unwrap_or(0.0),
        peak_rss_bytes: v["peak_rss_bytes"].as_u64().unwrap_or(0),
        peak_anon_bytes: v["peak_anon_bytes"].as_u64().unwrap_or(0),
        input_bytes: v["input_bytes"].as_u64().unwrap_or(0),
        output_bytes: v["output_bytes"].as_u64().unwrap_or(0),
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One bare xxh3-128 pass over the file, mapped the same way `Snapshot::open` maps it: the floor
/// any verified open must pay, since every byte must be read once.
fn xxh3_pass(path: &Path) -> anyhow::Result<u128> {
    let file = fs::File::open(path)?;
    // SAFETY: read-only map of a file nobody modifies during the benchmark.
    let map = unsafe { MmapOptions::new().populate().map(&file)? };
    Ok(xxhash_rust::xxh3::xxh3_128(&map))
}

fn json_load(path: &Path) -> anyhow::Result<usize> {
    let bytes = fs::read(path)?;
    let loaded: mirror::JsonSnapshot = serde_json::from_slice(&bytes)?;
    Ok(loaded.campaigns.len() + loaded.creatives.len())
}

struct OpenFigures {
    snapshot_bytes: u64,
    json_bytes: u64,
    xxh3: Duration,
    /// `Snapshot::open` as servers run it: checksum and invariants side by side on two cores.
    open: Duration,
    /// The same on one thread.
    open_serial: Duration,
    json: Duration,
}

fn open_bench(snapshot_path: &Path, work: &Path, repetitions: u32) -> anyhow::Result<OpenFigures> {
    let json_path = work.join("mirror.json");
    {
        let snapshot = Snapshot::open(snapshot_path)?;
        let out = std::io::BufWriter::new(fs::File::create(&json_path)?);
        serde_json::to_writer(out, &mirror::mirror(&snapshot))?;
    }
    // Warm the page cache for both files so that every variant reads from memory.
    xxh3_pass(snapshot_path)?;
    json_load(&json_path)?;
    let (mut xxh3, mut open, mut open_serial, mut json) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (parallel, serial) = (
        OpenOptions { parallel: true, ..OpenOptions::default() },
        OpenOptions { parallel: false, ..OpenOptions::default() },
    );
    for _ in 0..repetitions {
        let t = Instant::now();
        std::hint::black_box(xxh3_pass(snapshot_path)?);
        xxh3.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(Snapshot::open_with(snapshot_path, &parallel)?);
        open.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(Snapshot::open_with(snapshot_path, &serial)?);
        open_serial.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(json_load(&json_path)?);
        json.push(t.elapsed());
    }
    Ok(OpenFigures {
        snapshot_bytes: fs::metadata(snapshot_path)?.len(),
        json_bytes: fs::metadata(&json_path)?.len(),
        xxh3: median(xxh3),
        open: median(open),
        open_serial: median(open_serial),
        json: median(json),
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn snapshot_bench(sizes: &[u64], work: &Path, repetitions: u32) -> anyhow::Result<()> {
    if sizes.is_empty() || repetitions == 0 {
        bail!("need at least one size and one repetition");
    }
    fs::create_dir_all(work)?;
    let mut builds = Vec::new();
    for &n in sizes {
        let catalog = ensure_catalog(work, n)?;
        let out = snapshot_path(work, n);
        eprintln!("building {n} campaigns");
        builds.push(run_build(&catalog, &out, n)?);
    }
    let largest = *sizes.iter().max().expect("non-empty");
    eprintln!("timing open of the {largest}-campaign snapshot, {repetitions} repetitions");
    let open = open_bench(&snapshot_path(work, largest), work, repetitions)?;
    print_tables(&builds, &open, largest, repetitions);
    Ok(())
}

fn print_tables(builds: &[BuildFigures], open: &OpenFigures, largest: u64, repetitions: u32) {
    println!("## build (3 creatives per campaign; child process)");
    println!("peak RSS includes the mapped output the final verification reads (page cache);");
    println!("peak anonymous memory (sampled every 5 ms) is what the build itself holds.");
    println!("| campaigns | input MiB | snapshot MiB | build s | peak RSS MiB | peak anon MiB | anon / (input + output) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for b in builds {
        let ratio = b.peak_anon_bytes as f64 / (b.input_bytes + b.output_bytes) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            b.n_campaigns,
            mib(b.input_bytes),
            mib(b.output_bytes),
            b.elapsed_s,
            mib(b.peak_rss_bytes),
            mib(b.peak_anon_bytes),
            ratio
        );
    }
    println!();
    println!("## open of the {largest}-campaign snapshot (median of {repetitions}, warm page cache)");
    println!("| variant | bytes MiB | time ms | vs adsnap open |");
    println!("|---|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rel = |d: Duration| d.as_secs_f64() / open.open.as_secs_f64();
    let row = |name: &str, bytes: u64, d: Duration| {
        println!("| {name} | {:.0} | {:.1} | {:.2}x |", mib(bytes), ms(d), rel(d));
    };
    row("bare xxh3-128 pass over the file mapped as open maps it (floor)", open.snapshot_bytes, open.xxh3);
    row("adsnap open: checksum beside validation (default, 2 threads)", open.snapshot_bytes, open.open);
    row("adsnap open on one thread", open.snapshot_bytes, open.open_serial);
    row("serde_json load of the same data", open.json_bytes, open.json);
    println!();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (xxh3, json) = (open.xxh3, open.json);
    println!(
        "open / xxh3 floor: {:.2} default, {:.2} one thread (target <= 3)",
        ratio(open.open, xxh3),
        ratio(open.open_serial, xxh3)
    );
    println!(
        "serde_json / open: {:.1} default, {:.1} one thread (target >= 30)",
        ratio(json, open.open),
        ratio(json, open.open_serial)
    );
}

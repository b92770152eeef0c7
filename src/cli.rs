//! The command line: flags and environment variables, the build's progress bar and summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use adsnap_builder::gen::{generate, GenOptions};
use adsnap_builder::{build, BuildError, BuildOptions, BuildSummary};
use adsnap_snapshot::Snapshot;
use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "adsnap", version, about = "A mobile ad server built on one immutable, mmap'd snapshot")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a realistic, seeded catalog of any size (for demos and benchmarks).
    Gen {
        /// Folder to write the catalog into; must not hold a catalog already.
        #[arg(long, env = "ADSNAP_GEN_OUT")]
        out: PathBuf,
        /// Number of campaigns (100 to 10,000,000).
        #[arg(long, env = "ADSNAP_GEN_CAMPAIGNS", default_value_t = 1000)]
        campaigns: u64,
        /// Creatives per campaign.
        #[arg(long, env = "ADSNAP_GEN_CREATIVES_PER_CAMPAIGN", default_value_t = 3)]
        creatives_per_campaign: u32,
        /// Random seed: the same seed and sizes give the same files.
        #[arg(long, env = "ADSNAP_GEN_SEED", default_value_t = 1)]
        seed: u64,
        /// Reference time the schedules are placed around, RFC 3339 UTC.
        #[arg(long, env = "ADSNAP_GEN_NOW", default_value = "2026-11-22T00:00:00Z")]
        now: String,
    },
    /// Compile a catalog folder into one snapshot file.
    Build {
        /// The catalog folder (catalog.json and its JSON Lines files).
        catalog: PathBuf,
        /// Where to write the snapshot (atomically).
        #[arg(long, short, env = "ADSNAP_BUILD_OUT")]
        out: PathBuf,
        /// Snapshot version; defaults to the current Unix time in seconds, so it grows.
        #[arg(long, env = "ADSNAP_SNAPSHOT_VERSION")]
        snapshot_version: Option<u64>,
        /// Time to compute pacing and schedules for, RFC 3339 UTC; defaults to now.
        #[arg(long, env = "ADSNAP_BUILD_NOW")]
        now: Option<String>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Serve ads from a snapshot over HTTP.
    Serve(crate::serve_cli::ServeArgs),
    /// Build the example catalog into a snapshot if there is none, then serve it on localhost.
    Up(crate::serve_cli::UpArgs),
    /// A/B test and staging reports from events.
    Abtest(crate::abtest_cli::AbtestArgs),
    /// Install a snapshot file into a running server's staging or production slot.
    Install(crate::admin_cli::InstallArgs),
    /// Make a running server's staging snapshot its production snapshot.
    Promote(crate::admin_cli::AdminArgs),
    /// Make a running server serve its previous production snapshot again.
    Rollback(crate::admin_cli::AdminArgs),
    /// User profiles: read one, bulk-load a JSON Lines file, or generate profiles.
    Profiles(crate::profiles_cli::ProfilesArgs),
    /// Read the event log (local folder or JetStream stream): tail, replay, export to Parquet.
    Events(crate::events_cli::EventsArgs),
    /// Make a publisher key pair for signing manifests.
    Keygen(crate::distribute_cli::KeygenArgs),
    /// Publish a snapshot: torrent, signed manifest, announced by the origin.
    Publish(crate::distribute_cli::PublishArgs),
    /// Seed published snapshots and serve their manifests (the origin daemon).
    Origin(crate::distribute_cli::OriginArgs),
    /// Follow an origin: download new snapshots from the swarm, verify, hand them to the server.
    Follow(crate::distribute_cli::FollowArgs),
    /// Verify a snapshot and print its header and counts.
    Inspect {
        snapshot: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Gen { out, campaigns, creatives_per_campaign, seed, now } => {
                end_quietly_when_stdout_closes();
                run_gen(out, campaigns, creatives_per_campaign, seed, &now)
            }
            Command::Build { catalog, out, snapshot_version, now, quiet } => {
                end_quietly_when_stdout_closes();
                run_build(catalog, out, snapshot_version, now.as_deref(), quiet)
            }
            Command::Inspect { snapshot, json } => {
                end_quietly_when_stdout_closes();
                run_inspect(snapshot, json)
            }
            Command::Serve(args) => crate::serve_cli::run_serve(args),
            Command::Up(args) => crate::serve_cli::run_up(args),
            Command::Abtest(args) => crate::abtest_cli::run_abtest(args),
            Command::Install(args) => crate::admin_cli::run_install(args),
            Command::Promote(args) => crate::admin_cli::run_promote(args),
            Command::Rollback(args) => crate::admin_cli::run_rollback(args),
            Command::Profiles(args) => crate::profiles_cli::run(args),
            Command::Events(args) => crate::events_cli::run_events(args),
            Command::Keygen(args) => crate::distribute_cli::run_keygen(args),
            Command::Publish(args) => crate::distribute_cli::run_publish(args),
            Command::Origin(args) => crate::distribute_cli::run_origin(args),
            Command::Follow(args) => crate::distribute_cli::run_follow(args),
        }
    }
}

/// For commands that only read and write files and print: when whatever reads their output stops
/// early (`adsnap inspect x.snap | head -3`), they end as any Unix filter does, on SIGPIPE,
/// instead of panicking in `println!` (Rust ignores SIGPIPE by default). Never for commands that
/// hold sockets, where a peer that goes away must be an error, not the end of the process.
fn end_quietly_when_stdout_closes() {
    // SAFETY: restores the default action of one signal; called before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn parse_now(now: &str) -> anyhow::Result<i64> {
    adsnap_builder::parse_time(now).map_err(|reason| anyhow::anyhow!("--now: {reason}"))
}

fn now_unix() -> (i64, i64) {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs() as i64, since.as_millis() as i64)
}

fn run_gen(
    out: PathBuf,
    n_campaigns: u64,
    creatives_per_campaign: u32,
    seed: u64,
    now: &str,
) -> anyhow::Result<ExitCode> {
    let options = GenOptions { n_campaigns, seed, creatives_per_campaign, now_unix_s: parse_now(now)? };
    let bar = ProgressBar::new(n_campaigns).with_style(
        ProgressStyle::with_template("{spinner} generating {pos}/{len} campaigns [{bar:30}] {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let summary = generate(&options, &out, &|n| bar.set_position(n))
        .with_context(|| format!("generating a catalog in {}", out.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {} campaigns, {} creatives, {} advertisers, {} apps, {} ad units, {} rate rows, {} experiments ({}) to {}",
        HumanCount(summary.n_campaigns),
        HumanCount(summary.n_creatives),
        HumanCount(summary.n_advertisers),
        HumanCount(summary.n_apps),
        HumanCount(summary.n_ad_units),
        HumanCount(summary.n_rates),
        summary.n_experiments,
        HumanBytes(summary.bytes_written),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_build(
    catalog: PathBuf,
    out: PathBuf,
    version: Option<u64>,
    now: Option<&str>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let (now_s, now_ms) = now_unix();
    let reference_s = now.map(parse_now).transpose()?.unwrap_or(now_s);
    let progress = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{spinner} reading catalog {bytes}/{total_bytes} [{bar:30}] {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
    };
    let options = BuildOptions {
        catalog_dir: catalog,
        out_path: out,
        snapshot_version: version.unwrap_or(now_s as u64),
        now_unix_s: reference_s,
        created_unix_ms: now_ms,
        progress,
    };
    match build(&options) {
        Ok(summary) => {
            print_summary(&options, &summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(BuildError::Invalid { diagnostics }) => {
            options.progress.finish_and_clear();
            eprint!("{diagnostics}");
            eprintln!(
                "error: {} problem(s) in {}; no snapshot was written",
                diagnostics.n_total,
                options.catalog_dir.display()
            );
            Ok(ExitCode::from(2))
        }
        Err(err) => Err(err).context("building the snapshot"),
    }
}

/// Peak resident memory of this process, from the kernel's accounting.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_summary(options: &BuildOptions, s: &BuildSummary) {
    let c = &s.counts;
    let i = &s.index;
    println!("built {} in {:.2?}", options.out_path.display(), s.elapsed);
    println!("  snapshot id       {} (version {})", s.header.id_hex(), s.header.snapshot_version);
    println!("  input             {}", HumanBytes(s.input_bytes));
    println!(
        "  output            {} ({} of strings)",
        HumanBytes(s.output_bytes),
        HumanBytes(c.string_bytes)
    );
    if let Some(peak) = peak_rss_bytes() {
        println!("  peak memory       {}", HumanBytes(peak));
    }
    println!("  advertisers       {}", HumanCount(c.n_advertisers as u64));
    println!("  campaigns         {} ({} served; not served: {} not active, {} budget spent, {} ended, {} without creatives)",
        HumanCount(c.n_campaigns as u64), HumanCount(i.n_campaigns_served), i.n_not_active, i.n_budget_spent, i.n_ended, i.n_no_creatives);
    println!("  creatives         {}", HumanCount(c.n_creatives as u64));
    println!("  apps / ad units   {} / {}", HumanCount(c.n_apps as u64), HumanCount(c.n_ad_units as u64));
    println!("  segments          {}", HumanCount(c.n_segments as u64));
    println!("  experiments       {}", c.n_experiments);
    println!("  index entries     {} in {} slots", HumanCount(c.n_candidates as u64), c.n_index_slots_used);
}

fn run_inspect(path: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let snapshot = Snapshot::open(&path)?;
    let elapsed = started.elapsed();
    let h = snapshot.header();
    let c = snapshot.counts();
    let meta = &snapshot.archive().meta;
    // Creative attributes (format 2): how many creatives have some, how many ad units block some.
    let n_with_attrs = (0..c.n_creatives).filter(|&idx| snapshot.creative_attrs(idx) != 0).count();
    let n_blocking_attrs = (0..c.n_ad_units).filter(|&idx| snapshot.ad_unit_blocked_attrs(idx) != 0).count();
    if json {
        let value = serde_json::json!({
            "path": path,
            "verified": true,
            "snapshot_id": h.id_hex(),
            "snapshot_version": h.snapshot_version,
            "format_version": h.format_version,
            "created_unix_ms": h.created_unix_ms,
            "builder_version": h.builder_version,
            "payload_bytes": h.payload_len,
            "payload_xxh3_128": format!("{:032x}", h.payload_xxh3_128),
            "catalog_name": meta.catalog_name.as_str(),
            "currency": meta.currency.as_str(),
            "reference_unix_s": meta.reference_unix_s.to_native(),
            "counts": {
                "advertisers": c.n_advertisers, "campaigns": c.n_campaigns, "creatives": c.n_creatives,
                "apps": c.n_apps, "ad_units": c.n_ad_units, "segments": c.n_segments,
                "experiments": c.n_experiments, "index_entries": c.n_candidates,
                "index_slots_used": c.n_index_slots_used, "string_bytes": c.string_bytes,
                "creatives_with_attrs": n_with_attrs, "ad_units_blocking_attrs": n_blocking_attrs,
            },
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: verified in {elapsed:.2?}", path.display());
    println!("  snapshot id       {} (version {})", h.id_hex(), h.snapshot_version);
    println!("  format version    {}", h.format_version);
    println!("  created           {}", format_ms(h.created_unix_ms));
    println!("  builder           {}", h.builder_version);
    println!("  payload           {} (xxh3-128 {:032x})", HumanBytes(h.payload_len), h.payload_xxh3_128);
    println!(
        "  catalog           {} ({}), computed for {}",
        meta.catalog_name,
        meta.currency,
        format_ms(meta.reference_unix_s.to_native() * 1000)
    );
    println!("  advertisers       {}", HumanCount(c.n_advertisers as u64));
    println!("  campaigns         {}", HumanCount(c.n_campaigns as u64));
    println!("  creatives         {}", HumanCount(c.n_creatives as u64));
    println!("  apps / ad units   {} / {}", HumanCount(c.n_apps as u64), HumanCount(c.n_ad_units as u64));
    println!(
        "  attributes        {} creatives have some, {} ad units block some",
        HumanCount(n_with_attrs as u64),
        HumanCount(n_blocking_attrs as u64)
    );
    println!("  segments          {}", HumanCount(c.n_segments as u64));
    println!("  experiments       {}", c.n_experiments);
    println!("  index entries     {} in {} slots", HumanCount(c.n_candidates as u64), c.n_index_slots_used);
    println!("  strings           {}", HumanBytes(c.string_bytes));
    Ok(ExitCode::SUCCESS)
}

fn format_ms(unix_ms: i64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

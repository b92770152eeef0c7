//! `adsnap abtest report` (events in from one kind of source: JSON Lines, the local event logs,
//! the Parquet export or the JetStream stream; the A/B and staging report out as a table, JSON
//! or HTML, with an exit status for the blocking checks) and `adsnap abtest simulate`
//! (synthetic events for a snapshot's split, for demos and end-to-end tests).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use adsnap_abtest::analysis::simulate::{Effect, Simulation};
use adsnap_abtest::analysis::{
    build_report, read_json_lines, render_html, render_prometheus, render_table, Aggregator, KnownSnapshot,
    Report, ReportConfig, TimeRange,
};
use adsnap_events::export::ParquetReader;
use adsnap_events::read::TIME_SKEW_MS;
use adsnap_events::{
    read_log, EventLog, EventLogConfig, EventsError, Position, StreamPosition, StreamReader,
};
use adsnap_snapshot::Snapshot;
use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};

/// Exit status when staging differs from production beyond the threshold.
pub const EXIT_STAGING_ALARM: u8 = 3;
/// Exit status when a sample-ratio check failed (results blocked).
pub const EXIT_SRM_FAILED: u8 = 4;
/// Exit status when both happened.
pub const EXIT_BOTH: u8 = 5;

#[derive(Args, Debug)]
pub struct AbtestArgs {
    #[command(subcommand)]
    command: AbtestCommand,
}

#[derive(Subcommand, Debug)]
enum AbtestCommand {
    /// Report every experiment arm and staging against control for a time range.
    ///
    /// Events come from exactly one kind of source: --events (JSON Lines), --log (local event
    /// logs), --parquet (the hourly Parquet export) or --nats-urls (the replicated JetStream
    /// stream). Mixing kinds is refused, because the same event may be in several of them and
    /// nothing here de-duplicates across them. The stream is read up to the message that was
    /// last when the report started, so a report always ends, even while servers keep shipping.
    Report(ReportArgs),
    /// Write synthetic events (JSON Lines) for a snapshot's traffic split.
    Simulate(SimulateArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
    Html,
    /// The alarms and staging differences as Prometheus metrics (a textfile collector's input).
    Prometheus,
}

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("source").required(true).multiple(false).args(["events", "logs", "parquet", "nats_urls"])
))]
struct ReportArgs {
    /// Event files, JSON Lines as `adsnap events tail` writes them; `-` reads standard input.
    #[arg(long = "events", env = "ADSNAP_ABTEST_EVENTS", value_delimiter = ',')]
    events: Vec<PathBuf>,
    /// Event log folders (the server's durable local log; one per server, each named once),
    /// read from the range's start. Damaged records are skipped and counted in a warning.
    #[arg(long = "log", env = "ADSNAP_ABTEST_LOGS", value_delimiter = ',')]
    logs: Vec<PathBuf>,
    /// The Parquet export (`adsnap events export --out`): its folders, `hour=…` partition
    /// folders or files. Partitions outside the range are skipped unread; a file named twice
    /// is read once.
    #[arg(long = "parquet", env = "ADSNAP_ABTEST_PARQUET", value_delimiter = ',')]
    parquet: Vec<PathBuf>,
    /// Read the replicated JetStream stream through these servers (comma-separated URLs), from
    /// the range's start (by the time messages were stored, less a minute of clock skew) up to
    /// the message that was last when the report started. Damaged messages are skipped and
    /// counted in a warning.
    #[arg(long, env = "ADSNAP_ABTEST_NATS_URLS", value_delimiter = ',')]
    nats_urls: Vec<String>,
    /// The stream's name (with --nats-urls).
    #[arg(long, env = "ADSNAP_ABTEST_NATS_STREAM", default_value = "ADSNAP_EVENTS")]
    stream: String,
    /// Every snapshot that served in the range (production and staging): their experiment
    /// tables give the configured shares, and events from any other snapshot are an error.
    #[arg(long = "snapshot", env = "ADSNAP_ABTEST_SNAPSHOTS", value_delimiter = ',')]
    snapshots: Vec<PathBuf>,
    /// Start of the range (inclusive): RFC 3339 UTC or Unix milliseconds; default: the beginning.
    #[arg(long, env = "ADSNAP_ABTEST_FROM")]
    from: Option<String>,
    /// End of the range (exclusive): RFC 3339 UTC or Unix milliseconds; default: no end.
    #[arg(long, env = "ADSNAP_ABTEST_TO")]
    to: Option<String>,
    #[arg(long, value_enum, env = "ADSNAP_ABTEST_FORMAT", default_value = "table")]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, env = "ADSNAP_ABTEST_OUT")]
    out: Option<PathBuf>,
    /// TOML file of report settings (see docs/abtest.md); flags override it.
    #[arg(long, env = "ADSNAP_ABTEST_CONFIG")]
    config: Option<PathBuf>,
    /// Threads holding the per-user counters, split by user key; default: the machine's cores.
    #[arg(long, env = "ADSNAP_ABTEST_THREADS")]
    threads: Option<usize>,
    #[arg(long, env = "ADSNAP_ABTEST_ALPHA")]
    alpha: Option<f64>,
    #[arg(long, env = "ADSNAP_ABTEST_MSPRT_TAU_RELATIVE")]
    msprt_tau_relative: Option<f64>,
    #[arg(long, env = "ADSNAP_ABTEST_SRM_P_VALUE_MIN")]
    srm_p_value_min: Option<f64>,
    #[arg(long, env = "ADSNAP_ABTEST_STAGING_ALARM_RELATIVE")]
    staging_alarm_relative: Option<f64>,
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// The production snapshot: its split assigns the simulated users, its id marks the events.
    #[arg(long)]
    snapshot: PathBuf,
    /// A staging snapshot whose id marks staging events; default: the production one.
    #[arg(long)]
    staging_snapshot: Option<PathBuf>,
    /// A JSON Lines file to write.
    #[arg(long, required_unless_present = "log", conflicts_with = "log")]
    out: Option<PathBuf>,
    /// An event log folder to append to (created if absent), as the server would.
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start of the simulated day, RFC 3339 UTC or Unix milliseconds.
    #[arg(long, default_value = "2026-11-22T00:00:00Z")]
    from: String,
    /// Multiplies staging's click-through rate (1 = no difference from production).
    #[arg(long, default_value_t = 1.0)]
    staging_ctr_multiplier: f64,
}

pub fn run_abtest(args: AbtestArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AbtestCommand::Report(args) => run_report(args),
        AbtestCommand::Simulate(args) => run_simulate(args),
    }
}

/// RFC 3339 UTC or an integer of Unix milliseconds.
fn parse_time_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339(text)
        .with_context(|| format!("{text:?} is neither Unix milliseconds nor an RFC 3339 UTC time"))?;
    let ms = time.duration_since(UNIX_EPOCH).with_context(|| format!("{text:?} is before 1970"))?.as_millis();
    i64::try_from(ms).with_context(|| format!("{text:?} is too far in the future"))
}

impl ReportArgs {
    fn config(&self) -> anyhow::Result<ReportConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => ReportConfig::default(),
        };
        config.alpha = self.alpha.unwrap_or(config.alpha);
        config.msprt_tau_relative = self.msprt_tau_relative.unwrap_or(config.msprt_tau_relative);
        config.srm_p_value_min = self.srm_p_value_min.unwrap_or(config.srm_p_value_min);
        config.staging_alarm_relative = self.staging_alarm_relative.unwrap_or(config.staging_alarm_relative);
        config.validate()?;
        Ok(config)
    }

    fn range(&self) -> anyhow::Result<TimeRange> {
        let from = self.from.as_deref().map(parse_time_ms).transpose().context("--from")?.unwrap_or(i64::MIN);
        let to = self.to.as_deref().map(parse_time_ms).transpose().context("--to")?.unwrap_or(i64::MAX);
        Ok(TimeRange::new(from, to)?)
    }
}

fn open_events(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file = File::open(path).with_context(|| format!("opening events {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, file)))
}

fn run_report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let range = args.range()?;
    let snapshots = args
        .snapshots
        .iter()
        .map(|path| Snapshot::open(path).map(|s| KnownSnapshot::of(&s)))
        .collect::<Result<Vec<_>, _>>()
        .context("opening a snapshot")?;
    let started = std::time::Instant::now();
    let n_threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut aggregator = Aggregator::with_threads(range, n_threads);
    let damaged = read_source(&args, range, &mut aggregator)?;
    let aggregates = aggregator.finish();
    tracing::info!(
        n_events_read = aggregates.input.n_events_read,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "events aggregated"
    );
    let mut report = build_report(&aggregates, &snapshots, &config)?;
    if let Some(warning) = damaged {
        report.warnings.push(warning);
    }
    write_report(&report, args.format, args.out.as_deref())?;
    Ok(exit_code(&report))
}

/// Streams the one kind of source given (clap refuses more) into the aggregator; returns a
/// warning when damaged records or messages were skipped.
fn read_source(
    args: &ReportArgs,
    range: TimeRange,
    aggregator: &mut Aggregator,
) -> anyhow::Result<Option<String>> {
    if !args.logs.is_empty() {
        check_distinct_logs(&args.logs)?;
        let mut n_damaged = 0;
        for dir in &args.logs {
            n_damaged += read_log_into(dir, range, aggregator)?;
        }
        return Ok(
            (n_damaged > 0).then(|| format!("{n_damaged} damaged records in the event log were skipped"))
        );
    }
    if !args.parquet.is_empty() {
        read_parquet_into(&args.parquet, range, aggregator)?;
        return Ok(None);
    }
    if !args.nats_urls.is_empty() {
        let n_damaged = read_stream_into(&args.nats_urls, &args.stream, range, aggregator)?;
        return Ok((n_damaged > 0).then(|| format!("{n_damaged} damaged stream messages were skipped")));
    }
    for path in &args.events {
        for event in read_json_lines(open_events(path)?, path) {
            aggregator.push(&event?);
        }
    }
    Ok(None)
}

/// The same log read twice would count every event twice: refuse a folder named twice, and two
/// folders holding the same log (a copy).
fn check_distinct_logs(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    for dir in dirs {
        let canonical =
            std::fs::canonicalize(dir).with_context(|| format!("opening the event log {}", dir.display()))?;
        let log_id = std::fs::read_to_string(dir.join("log-id")).ok().map(|id| id.trim().to_owned());
        for key in [Some(format!("path {}", canonical.display())), log_id.map(|id| format!("log id {id}"))]
            .into_iter()
            .flatten()
        {
            if let Some(first) = seen.insert(key.clone(), dir) {
                anyhow::bail!(
                    "--log {} and {} are the same log ({key}); each log may be read once",
                    first.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

fn read_parquet_into(paths: &[PathBuf], range: TimeRange, aggregator: &mut Aggregator) -> anyhow::Result<()> {
    let reader = ParquetReader::open(paths, range.from_unix_ms..range.to_unix_ms)
        .context("finding the Parquet export's files")?;
    tracing::info!(n_files = reader.n_files(), n_files_skipped = reader.n_files_skipped(), "reading parquet");
    for event in reader {
        aggregator.push(&event.context("reading the Parquet export")?);
    }
    Ok(())
}

/// Reads the stream from the range's start to the message that was last when reading began
/// (the reader does not follow), so the report ends. Messages carry the time they were stored,
/// which is after their events' times unless clocks disagree, hence the skew allowance; the
/// range's end cannot stop reading early, because a backlog shipped late holds older events.
fn read_stream_into(
    urls: &[String],
    stream: &str,
    range: TimeRange,
    aggregator: &mut Aggregator,
) -> anyhow::Result<u64> {
    let from = match range.from_unix_ms {
        i64::MIN => StreamPosition::Start,
        ms => StreamPosition::TimeUnixMs(ms.saturating_sub(TIME_SKEW_MS)),
    };
    // A worker thread keeps the connection served while this thread aggregates.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let context = || format!("reading stream {stream} at {}", urls.join(","));
    let mut reader = runtime.block_on(StreamReader::open(urls, stream, from, false)).with_context(context)?;
    let mut n_damaged = 0;
    while let Some(batch) = runtime.block_on(reader.next_batch()) {
        match batch {
            Ok(batch) => batch.events.iter().for_each(|(_, event)| aggregator.push(event)),
            Err(err @ EventsError::BadBatch { .. }) => {
                tracing::warn!(error = %err, "skipping a damaged stream message");
                n_damaged += 1;
            }
            Err(err) => return Err(err).with_context(context),
        }
    }
    Ok(n_damaged)
}

/// Streams one log folder into the aggregator from the range's start; returns the number of
/// damaged records skipped (the log's reader goes on after them).
fn read_log_into(dir: &Path, range: TimeRange, aggregator: &mut Aggregator) -> anyhow::Result<u64> {
    let from = match range.from_unix_ms {
        i64::MIN => Position::Start,
        ms => Position::TimeUnixMs(ms),
    };
    let reader = read_log(dir, from).with_context(|| format!("opening the event log {}", dir.display()))?;
    let mut n_damaged = 0;
    for event in reader {
        match event {
            Ok(event) => aggregator.push(&event),
            Err(err @ EventsError::CorruptRecord { .. }) => {
                tracing::warn!(error = %err, "skipping a damaged record");
                n_damaged += 1;
            }
            Err(err) => return Err(err).with_context(|| format!("reading the event log {}", dir.display())),
        }
    }
    Ok(n_damaged)
}

fn write_report(report: &Report, format: Format, out: Option<&Path>) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => render_table(report),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Html => render_html(report),
        Format::Prometheus => render_prometheus(report),
    };
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => std::io::stdout().write_all(text.as_bytes()).context("writing the report"),
    }
}

fn exit_code(report: &Report) -> ExitCode {
    match (report.staging_alarm, report.srm_failed) {
        (false, false) => ExitCode::SUCCESS,
        (true, false) => ExitCode::from(EXIT_STAGING_ALARM),
        (false, true) => ExitCode::from(EXIT_SRM_FAILED),
        (true, true) => ExitCode::from(EXIT_BOTH),
    }
}

fn run_simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let snapshot = Snapshot::open(&args.snapshot).context("opening the snapshot")?;
    let staging_id = match &args.staging_snapshot {
        Some(path) => Snapshot::open(path).context("opening the staging snapshot")?.header().snapshot_id,
        None => snapshot.header().snapshot_id,
    };
    let from_unix_ms = parse_time_ms(&args.from).context("--from")?;
    let sim = Simulation {
        seed: args.seed,
        n_users: args.users,
        n_requests: args.requests,
        production_snapshot_id: snapshot.header().snapshot_id,
        staging_snapshot_id: staging_id,
        from_unix_ms,
        to_unix_ms: from_unix_ms + 86_400_000,
        staging_effect: Effect { ctr: args.staging_ctr_multiplier, ..Effect::NONE },
        ..Simulation::default()
    };
    match (&args.out, &args.log) {
        (_, Some(dir)) => simulate_into_log(&sim, &snapshot, dir)?,
        (Some(path), None) => simulate_into_file(&sim, &snapshot, path)?,
        (None, None) => anyhow::bail!("give --out or --log"),
    }
    Ok(ExitCode::SUCCESS)
}

fn simulate_into_file(sim: &Simulation, snapshot: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut result = Ok(());
    sim.run(&snapshot.archive().experiments, |event| {
        if result.is_ok() {
            result = serde_json::to_writer(&mut out, event)
                .map_err(anyhow::Error::from)
                .and_then(|()| out.write_all(b"\n").map_err(anyhow::Error::from));
        }
    });
    result
        .and_then(|()| out.flush().map_err(anyhow::Error::from))
        .with_context(|| format!("writing {}", path.display()))
}

fn simulate_into_log(sim: &Simulation, snapshot: &Snapshot, dir: &Path) -> anyhow::Result<()> {
    let config = EventLogConfig { dir: dir.to_owned(), ..EventLogConfig::default() };
    let log = EventLog::open(&config).with_context(|| format!("opening the event log {}", dir.display()))?;
    let mut result = Ok(());
    sim.run(&snapshot.archive().experiments, |event| {
        if result.is_ok() {
            result = log.append(event);
        }
    });
    result.with_context(|| format!("appending to {}", dir.display()))?;
    log.sync().with_context(|| format!("syncing {}", dir.display()))
}

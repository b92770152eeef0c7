//! `adsnap events tail|replay|export`: reading the event log (a local folder, or the JetStream
//! stream) as JSON Lines, or into Parquet files partitioned by hour.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use adsnap_events::export::HourlyParquet;
use adsnap_events::json::to_json_line;
use adsnap_events::{read_log, Event, EventsError, Position, StreamPosition, StreamReader};
use anyhow::Context;
use clap::{Args, Subcommand};

/// How often `tail` looks for new events in a local log.
const TAIL_POLL: Duration = Duration::from_millis(100);
/// Exit status when damaged records were skipped (their errors went to stderr).
const EXIT_DAMAGED: u8 = 3;

#[derive(Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Follow new events as JSON Lines (from the end unless --from-seq or --from-time is given).
    Tail(SourceArgs),
    /// Print events from a position or time up to the present end as JSON Lines.
    Replay(SourceArgs),
    /// Write events to Parquet files, one per hour: OUT/hour=YYYY-MM-DDTHH/events-*.parquet.
    Export {
        #[command(flatten)]
        source: SourceArgs,
        /// Folder to write the hourly partitions into.
        #[arg(long, env = "ADSNAP_EVENTS_EXPORT_OUT")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct SourceArgs {
    /// The local event log folder (read unless --nats-urls is given).
    #[arg(long, env = "ADSNAP_EVENTS_DIR", default_value = "adsnap-events")]
    dir: PathBuf,
    /// Read the JetStream stream through these servers instead (comma-separated URLs).
    #[arg(long, env = "ADSNAP_EVENTS_NATS_URLS", value_delimiter = ',')]
    nats_urls: Vec<String>,
    /// The stream's name.
    #[arg(long, env = "ADSNAP_EVENTS_NATS_STREAM", default_value = "ADSNAP_EVENTS")]
    stream: String,
    /// Start at this sequence number: the log's for a folder, the stream's for the stream.
    #[arg(long, conflicts_with = "from_time")]
    from_seq: Option<u64>,
    /// Start at this time (RFC 3339, e.g. 2026-11-22T07:00:00Z).
    #[arg(long)]
    from_time: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    max_events: Option<u64>,
}

enum Start {
    Default,
    Seq(u64),
    TimeUnixMs(i64),
}

impl SourceArgs {
    fn start(&self) -> anyhow::Result<Start> {
        if let Some(seq) = self.from_seq {
            return Ok(Start::Seq(seq));
        }
        match &self.from_time {
            Some(text) => {
                let time =
                    humantime::parse_rfc3339_weak(text).with_context(|| format!("--from-time {text:?}"))?;
                let ms = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                Ok(Start::TimeUnixMs(ms))
            }
            None => Ok(Start::Default),
        }
    }
}

/// Where read events go.
trait Sink {
    fn event(&mut self, log_id: Option<u64>, seq: u64, event: Event<'static>) -> anyhow::Result<()>;
    fn caught_up(&mut self) -> anyhow::Result<()>;
}

struct JsonLines<W: Write>(W);

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, log_id: Option<u64>, seq: u64, event: Event<'static>) -> anyhow::Result<()> {
        writeln!(self.0, "{}", to_json_line(log_id, seq, &event)).context("writing to stdout")
    }

    fn caught_up(&mut self) -> anyhow::Result<()> {
        self.0.flush().context("writing to stdout")
    }
}

impl Sink for HourlyParquet {
    fn event(&mut self, log_id: Option<u64>, seq: u64, event: Event<'static>) -> anyhow::Result<()> {
        self.push(log_id, seq, event).context("exporting")
    }

    fn caught_up(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

pub fn run_events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EventsCommand::Tail(source) => {
            read_into(&source, true, &mut JsonLines(BufWriter::new(std::io::stdout())))
        }
        EventsCommand::Replay(source) => {
            read_into(&source, false, &mut JsonLines(BufWriter::new(std::io::stdout())))
        }
        EventsCommand::Export { source, out } => {
            let mut export = HourlyParquet::new(&out)?;
            let code = read_into(&source, false, &mut export)?;
            let summary = export.finish()?;
            eprintln!(
                "exported {} events into {} files under {}",
                summary.n_events,
                summary.files.len(),
                out.display()
            );
            Ok(code)
        }
    }
}

fn read_into(source: &SourceArgs, follow: bool, sink: &mut dyn Sink) -> anyhow::Result<ExitCode> {
    let n_damaged = if source.nats_urls.is_empty() {
        read_local(source, follow, sink)?
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(read_stream(source, follow, sink))?
    };
    sink.caught_up()?;
    if n_damaged > 0 {
        eprintln!("warning: {n_damaged} damaged record(s) skipped");
        return Ok(ExitCode::from(EXIT_DAMAGED));
    }
    Ok(ExitCode::SUCCESS)
}

fn read_local(source: &SourceArgs, follow: bool, sink: &mut dyn Sink) -> anyhow::Result<u64> {
    let from = match source.start()? {
        Start::Default if follow => Position::End,
        Start::Default => Position::Start,
        Start::Seq(seq) => Position::Seq(seq),
        Start::TimeUnixMs(t) => Position::TimeUnixMs(t),
    };
    let mut reader = read_log(&source.dir, from)
        .with_context(|| format!("reading the event log in {}", source.dir.display()))?;
    let log_id = read_log_id(&source.dir);
    let (mut n_events, mut n_damaged) = (0u64, 0u64);
    loop {
        while let Some(item) = reader.next_with_seq() {
            match item {
                Ok((seq, event)) => {
                    sink.event(log_id, seq, event)?;
                    n_events += 1;
                    if source.max_events.is_some_and(|max| n_events >= max) {
                        return Ok(n_damaged);
                    }
                }
                Err(err) => n_damaged += report(err),
            }
        }
        if !follow {
            return Ok(n_damaged);
        }
        sink.caught_up()?;
        std::thread::sleep(TAIL_POLL);
    }
}

async fn read_stream(source: &SourceArgs, follow: bool, sink: &mut dyn Sink) -> anyhow::Result<u64> {
    let from = match source.start()? {
        Start::Default if follow => StreamPosition::End,
        Start::Default => StreamPosition::Start,
        Start::Seq(seq) => StreamPosition::Seq(seq),
        Start::TimeUnixMs(t) => StreamPosition::TimeUnixMs(t),
    };
    let mut reader = StreamReader::open(&source.nats_urls, &source.stream, from, follow)
        .await
        .with_context(|| format!("reading stream {} at {:?}", source.stream, source.nats_urls))?;
    let (mut n_events, mut n_damaged) = (0u64, 0u64);
    while let Some(batch) = reader.next_batch().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(err @ EventsError::BadBatch { .. }) => {
                n_damaged += report(err);
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        for (seq, event) in batch.events {
            sink.event(batch.log_id, seq, event)?;
            n_events += 1;
            if source.max_events.is_some_and(|max| n_events >= max) {
                return Ok(n_damaged);
            }
        }
        sink.caught_up()?;
    }
    Ok(n_damaged)
}

fn report(err: EventsError) -> u64 {
    eprintln!("warning: {err}");
    1
}

fn read_log_id(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("log-id")).ok()?;
    u64::from_str_radix(text.trim(), 16).ok()
}

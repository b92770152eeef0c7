//! `adsnap profiles get|load|gen`: the operator's tools for the profile store. The store is
//! configured like the server's (the `[profiles]` table of the same TOML file), with flags for
//! the keys an operator changes most.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adsnap_profile_store::gen::{user, user_id, GenOptions};
use adsnap_profile_store::json::{parse_line, ProfileLine};
use adsnap_profile_store::{Backend, Profile, ProfileRead, Profiles, ProfilesConfig, UserKey};
use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{HumanCount, ProgressBar, ProgressStyle};

/// Profiles per import batch: large enough to amortise a sync, small enough to report progress.
const LOAD_BATCH_LEN: usize = 10_000;
/// Longest line `load` reads; a profile at every list limit takes well under this.
const LINE_BYTES_MAX: usize = 1 << 20;
/// Bad lines reported one by one; past this only their count.
const BAD_LINES_SHOWN_MAX: usize = 100;
/// Most users `gen` writes.
const GEN_USERS_MAX: u64 = 100_000_000;
/// An operator's read waits this long at least: the store may be opening cold.
const CLI_READ_DEADLINE_MS_MIN: u64 = 5_000;

#[derive(Args, Debug)]
pub struct ProfilesArgs {
    /// TOML configuration file; its `[profiles]` table configures the store.
    #[arg(long, env = "ADSNAP_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// `embedded` or `aerospike`.
    #[arg(long, env = "ADSNAP_PROFILES_BACKEND", global = true)]
    backend: Option<String>,
    /// The embedded store's folder.
    #[arg(long, env = "ADSNAP_PROFILES_EMBEDDED_PATH", global = true)]
    path: Option<PathBuf>,
    /// Aerospike seed hosts, `host:port,...`.
    #[arg(long, env = "ADSNAP_PROFILES_AEROSPIKE_HOSTS", global = true)]
    aerospike_hosts: Option<String>,
    /// Aerospike namespace.
    #[arg(long, env = "ADSNAP_PROFILES_AEROSPIKE_NAMESPACE", global = true)]
    aerospike_namespace: Option<String>,
    #[command(subcommand)]
    command: ProfilesCommand,
}

#[derive(Subcommand, Debug)]
enum ProfilesCommand {
    /// Print one user's profile as a JSON line (exit status 1 if there is none).
    Get {
        /// The raw user or device id (hashed like the server does), or `--key`.
        user: Option<String>,
        /// The user key as 16 hex digits, instead of a raw id.
        #[arg(long, conflicts_with = "user")]
        key: Option<String>,
    },
    /// Delete one user's profile for good (an erasure request). Prints `{"deleted": true|false}`;
    /// exit status 1 if there was none. The running server must not hold the embedded store:
    /// stop it first, or use the Aerospike backend, which many processes share.
    Delete {
        /// The raw user or device id (hashed like the server does), or `--key`.
        user: Option<String>,
        /// The user key as 16 hex digits, instead of a raw id.
        #[arg(long, conflicts_with = "user")]
        key: Option<String>,
    },
    /// Import profiles from a JSON Lines file (docs/profiles.md), replacing existing ones. Bad
    /// lines are reported as FILE:LINE: reason; the rest are loaded; exit status 2 if any was bad.
    Load {
        file: PathBuf,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Write realistic generated profiles as JSON Lines (for benchmarks and demos).
    Gen {
        /// Number of users.
        #[arg(long)]
        users: u64,
        /// Random seed: the same seed gives the same users (`gen-SEED-INDEX` ids).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Last-seen times fall in the 30 days before this Unix time; defaults to now.
        #[arg(long)]
        now_unix_s: Option<i64>,
        /// Output file; defaults to standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

impl ProfilesArgs {
    fn config(&self) -> anyhow::Result<ProfilesConfig> {
        let mut config = match &self.config {
            Some(path) => read_config(path)?,
            None => ProfilesConfig::default(),
        };
        if let Some(backend) = &self.backend {
            config.backend = match backend.as_str() {
                "embedded" => Backend::Embedded,
                "aerospike" => Backend::Aerospike,
                other => anyhow::bail!("--backend {other}: expected `embedded` or `aerospike`"),
            };
        }
        if let Some(path) = &self.path {
            config.embedded.path = path.clone();
        }
        if let Some(hosts) = &self.aerospike_hosts {
            config.aerospike.hosts = hosts.clone();
        }
        if let Some(namespace) = &self.aerospike_namespace {
            config.aerospike.namespace = namespace.clone();
        }
        config.read_deadline_ms = config.read_deadline_ms.max(CLI_READ_DEADLINE_MS_MIN);
        config.aerospike.read_socket_timeout_ms =
            config.aerospike.read_socket_timeout_ms.max(CLI_READ_DEADLINE_MS_MIN);
        Ok(config)
    }
}

/// The `[profiles]` table of a TOML file (the server's configuration file), or the defaults.
fn read_config(path: &Path) -> anyhow::Result<ProfilesConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
    match table.get("profiles") {
        Some(profiles) => profiles
            .clone()
            .try_into()
            .with_context(|| format!("in the [profiles] table of {}", path.display())),
        None => Ok(ProfilesConfig::default()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(args: ProfilesArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ProfilesCommand::Gen { users, seed, now_unix_s, out } => {
            run_gen(*users, *seed, *now_unix_s, out.as_deref())
        }
        ProfilesCommand::Get { user, key } => {
            let key = user_key(user.as_deref(), key.as_deref())?;
            let config = args.config()?;
            runtime()?.block_on(run_get(&config, key))
        }
        ProfilesCommand::Delete { user, key } => {
            let key = user_key(user.as_deref(), key.as_deref())?;
            let config = args.config()?;
            runtime()?.block_on(run_delete(&config, key))
        }
        ProfilesCommand::Load { file, quiet } => {
            let config = args.config()?;
            runtime()?.block_on(run_load(&config, file, *quiet))
        }
    }
}

fn user_key(user: Option<&str>, key: Option<&str>) -> anyhow::Result<UserKey> {
    match (user, key) {
        (Some(user), None) => Ok(UserKey::of_id(user)),
        (None, Some(hex)) if hex.len() == 16 => u64::from_str_radix(hex, 16)
            .map(UserKey)
            .map_err(|_| anyhow::anyhow!("--key {hex}: not 16 hex digits")),
        (None, Some(hex)) => anyhow::bail!("--key {hex}: not 16 hex digits"),
        _ => anyhow::bail!("give a user id or --key"),
    }
}

async fn open(config: &ProfilesConfig) -> anyhow::Result<Profiles> {
    Profiles::open(config).await.context("opening the profile store")
}

async fn run_get(config: &ProfilesConfig, key: UserKey) -> anyhow::Result<ExitCode> {
    let profiles = open(config).await?;
    match profiles.get(key).await {
        ProfileRead::Found(profile) => {
            println!("{}", serde_json::to_string(&ProfileLine::from_profile(key, &profile))?);
            Ok(ExitCode::SUCCESS)
        }
        ProfileRead::Absent => {
            eprintln!("no profile for user key {:016x}", key.0);
            Ok(ExitCode::from(1))
        }
        ProfileRead::Unknown(reason) => {
            anyhow::bail!("user key {:016x}: the store gave no answer ({})", key.0, reason.name())
        }
    }
}

async fn run_delete(config: &ProfilesConfig, key: UserKey) -> anyhow::Result<ExitCode> {
    let profiles = open(config).await?;
    let n_deleted =
        profiles.forget(vec![key]).await.with_context(|| format!("deleting user key {:016x}", key.0))?;
    println!("{}", serde_json::json!({ "user_key": format!("{:016x}", key.0), "deleted": n_deleted > 0 }));
    Ok(if n_deleted > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn load_progress(file: &Path, quiet: bool) -> anyhow::Result<ProgressBar> {
    if quiet {
        return Ok(ProgressBar::hidden());
    }
    let n_bytes = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    Ok(ProgressBar::new(n_bytes).with_style(
        ProgressStyle::with_template(
            "{spinner} loading profiles {bytes}/{total_bytes} [{bar:30}] {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    ))
}

/// Reads one line of at most `LINE_BYTES_MAX` bytes; a longer one is consumed and reported.
fn read_line<R: BufRead>(reader: &mut R, line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    line.clear();
    let n = Read::take(&mut *reader, LINE_BYTES_MAX as u64 + 1).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(None);
    }
    let fits = line.len() <= LINE_BYTES_MAX || line.last() == Some(&b'\n');
    if !fits {
        // Skip the rest of the overlong line.
        let mut rest = Vec::new();
        while Read::take(&mut *reader, LINE_BYTES_MAX as u64).read_until(b'\n', &mut rest)? > 0 {
            if rest.last() == Some(&b'\n') {
                break;
            }
            rest.clear();
        }
    }
    Ok(Some(fits))
}

async fn run_load(config: &ProfilesConfig, file: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut reader = BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let profiles = open(config).await?;
    let bar = load_progress(file, quiet)?;
    let now_unix_s = adsnap_profile_store::embedded::now_unix_s();
    let (mut batch, mut line, mut line_no) = (Vec::with_capacity(LOAD_BATCH_LEN), Vec::new(), 0u64);
    let (mut n_loaded, mut n_bad, mut n_bytes) = (0usize, 0usize, 0u64);
    while let Some(fits) = read_line(&mut reader, &mut line)? {
        line_no += 1;
        n_bytes += line.len() as u64;
        let parsed = if !fits {
            Err(format!("line longer than {LINE_BYTES_MAX} bytes"))
        } else {
            let text = std::str::from_utf8(&line).map_err(|_| "not UTF-8".to_string());
            match text.map(str::trim) {
                Ok("") => continue,
                Ok(text) => parse_line(text, now_unix_s).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        };
        match parsed {
            Ok(profile) => batch.push(profile),
            Err(reason) => {
                n_bad += 1;
                if n_bad <= BAD_LINES_SHOWN_MAX {
                    bar.suspend(|| eprintln!("{}:{line_no}: {reason}", file.display()));
                }
            }
        }
        if batch.len() >= LOAD_BATCH_LEN {
            n_loaded += import(&profiles, &mut batch).await?;
            bar.set_position(n_bytes);
            bar.set_message(format!("{} profiles", HumanCount(n_loaded as u64)));
        }
    }
    n_loaded += import(&profiles, &mut batch).await?;
    profiles.flush().await.context("making the import durable")?;
    bar.finish_and_clear();
    if n_bad > BAD_LINES_SHOWN_MAX {
        eprintln!("... and {} more bad lines", n_bad - BAD_LINES_SHOWN_MAX);
    }
    println!("loaded {} profiles from {} ({} bad lines)", HumanCount(n_loaded as u64), file.display(), n_bad);
    Ok(if n_bad > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

async fn import(profiles: &Profiles, batch: &mut Vec<(UserKey, Profile)>) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    profiles.import(std::mem::take(batch)).await.context("importing profiles")
}

fn run_gen(n_users: u64, seed: u64, now_unix_s: Option<i64>, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(n_users <= GEN_USERS_MAX, "--users {n_users}: at most {GEN_USERS_MAX}");
    let now_unix_s = now_unix_s.unwrap_or_else(adsnap_profile_store::embedded::now_unix_s);
    let options = GenOptions { seed, now_unix_s };
    let sink: Box<dyn Write> = match out {
        Some(path) => Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    for idx in 0..n_users {
        let (key, profile) = user(&options, idx);
        let mut line = ProfileLine::from_profile(key, &profile);
        line.user_key = None;
        line.user = Some(user_id(seed, idx));
        serde_json::to_writer(&mut sink, &line)?;
        sink.write_all(b"\n")?;
    }
    sink.flush().context("writing profiles")?;
    if let Some(path) = out {
        eprintln!("wrote {} profiles to {}", HumanCount(n_users), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

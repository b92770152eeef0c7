//! `adsnap serve` and `adsnap up`: configuration from a TOML file, flags and `ADSNAP_*`
//! variables, then the server on a tokio runtime until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use adsnap_serve::{ServeConfig, State};
use anyhow::Context;
use clap::Args;

/// Every `ServeConfig` key as a flag and a variable; a flag overrides the file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file (see docs/serve.example.toml).
    #[arg(long, env = "ADSNAP_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
    /// Admin endpoints (install, promote, rollback); keep on loopback.
    #[arg(long, env = "ADSNAP_ADMIN_LISTEN_ADDR")]
    admin_listen_addr: Option<SocketAddr>,
    #[arg(long, env = "ADSNAP_SNAPSHOT_PATH")]
    snapshot_path: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_STAGING_SNAPSHOT_PATH")]
    staging_snapshot_path: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    #[arg(long, env = "ADSNAP_REQUEST_BODY_BYTES_MAX")]
    request_body_bytes_max: Option<usize>,
    #[arg(long, env = "ADSNAP_REQUEST_HEADERS_MAX")]
    request_headers_max: Option<usize>,
    #[arg(long, env = "ADSNAP_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    #[arg(long, env = "ADSNAP_HEADER_READ_TIMEOUT_MS")]
    header_read_timeout_ms: Option<u64>,
    /// 64 hex digits, shared by every server of a fleet.
    #[arg(long, env = "ADSNAP_TRACKING_KEY_HEX", hide_env_values = true)]
    tracking_key_hex: Option<String>,
    #[arg(long, env = "ADSNAP_TRACKING_TOKEN_TTL_S")]
    tracking_token_ttl_s: Option<u64>,
    #[arg(long, env = "ADSNAP_INSTALL_ATTRIBUTION_WINDOW_S")]
    install_attribution_window_s: Option<u64>,
    #[arg(long, env = "ADSNAP_AD_TTL_S")]
    ad_ttl_s: Option<u32>,
    /// This ad network's IAB TCF Global Vendor List id (1 to 65535).
    #[arg(long, env = "ADSNAP_TCF_VENDOR_ID")]
    tcf_vendor_id: Option<std::num::NonZeroU16>,
    /// The buyer seat adsnap bids as over OpenRTB (default `adsnap`).
    #[arg(long, env = "ADSNAP_OPENRTB_SEAT")]
    openrtb_seat: Option<String>,
    #[arg(long, env = "ADSNAP_TRACKING_DEDUP_ENTRIES_MAX")]
    tracking_dedup_entries_max: Option<usize>,
    /// Nice value (0 to 19) of the snapshot opening and releasing threads (default 10).
    #[arg(long, env = "ADSNAP_BACKGROUND_NICE")]
    background_nice: Option<i8>,
    /// Bytes of markup kept escaped for JSON answers, per snapshot (default 128 MiB).
    #[arg(long, env = "ADSNAP_ESCAPED_MARKUP_BYTES_MAX")]
    escaped_markup_bytes_max: Option<u64>,
    /// Read and keep user profiles (default true).
    #[arg(long, env = "ADSNAP_PROFILES_ENABLED")]
    profiles_enabled: Option<bool>,
    /// `embedded` or `aerospike`.
    #[arg(long, env = "ADSNAP_PROFILES_BACKEND")]
    profiles_backend: Option<String>,
    /// Folder of the embedded profile store.
    #[arg(long, env = "ADSNAP_PROFILES_PATH")]
    profiles_path: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_PROFILES_READ_DEADLINE_MS")]
    profiles_read_deadline_ms: Option<u64>,
    #[arg(long, env = "ADSNAP_PROFILES_MEMORY_BYTES_MAX")]
    profiles_memory_bytes_max: Option<u64>,
    /// Aerospike seed hosts, comma-separated `host:port`.
    #[arg(long, env = "ADSNAP_PROFILES_AEROSPIKE_HOSTS")]
    profiles_aerospike_hosts: Option<String>,
    /// Write events (default true; off only for measurements).
    #[arg(long, env = "ADSNAP_EVENTS_ENABLED")]
    events_enabled: Option<bool>,
    /// Folder of the local event log.
    #[arg(long, env = "ADSNAP_EVENTS_DIR")]
    events_dir: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_EVENTS_SEGMENT_BYTES_MAX")]
    events_segment_bytes_max: Option<u64>,
    #[arg(long, env = "ADSNAP_EVENTS_FSYNC_INTERVAL_MS")]
    events_fsync_interval_ms: Option<u64>,
    #[arg(long, env = "ADSNAP_EVENTS_LOG_BYTES_MAX")]
    events_log_bytes_max: Option<u64>,
    /// NATS servers to replicate events to (comma-separated `nats://host:port`); the rest of
    /// `[events.nats]` comes from the file or its defaults.
    #[arg(long, env = "ADSNAP_EVENTS_NATS_URLS", value_delimiter = ',')]
    events_nats_urls: Option<Vec<String>>,
    /// Decide as of this Unix time (replays and tests).
    #[arg(long, env = "ADSNAP_FIXED_NOW_UNIX_S")]
    fixed_now_unix_s: Option<i64>,
    /// Worker threads; defaults to the number of cores. With 1, one thread accepts and answers
    /// everything (a current-thread runtime: no work stealing, no wake-ups across threads).
    #[arg(long, env = "ADSNAP_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                ServeConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => ServeConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { c.$field = v.clone(); })* };
        }
        set!(
            listen_addr,
            admin_listen_addr,
            snapshot_path,
            public_base_url,
            request_body_bytes_max,
            request_headers_max,
            connections_max
        );
        set!(header_read_timeout_ms, tracking_token_ttl_s, ad_ttl_s, tracking_dedup_entries_max);
        set!(background_nice, escaped_markup_bytes_max);
        set!(install_attribution_window_s);
        if self.staging_snapshot_path.is_some() {
            c.staging_snapshot_path = self.staging_snapshot_path.clone();
        }
        if self.tracking_key_hex.is_some() {
            c.tracking_key_hex = self.tracking_key_hex.clone();
        }
        if self.tcf_vendor_id.is_some() {
            c.tcf_vendor_id = self.tcf_vendor_id;
        }
        if let Some(seat) = &self.openrtb_seat {
            c.openrtb_seat = seat.clone();
        }
        if self.fixed_now_unix_s.is_some() {
            c.fixed_now_unix_s = self.fixed_now_unix_s;
        }
        if let Some(v) = self.profiles_enabled {
            c.profiles_enabled = v;
        }
        let p = &mut c.profiles;
        if let Some(backend) = &self.profiles_backend {
            p.backend = match backend.as_str() {
                "embedded" => adsnap_profile_store::config::Backend::Embedded,
                "aerospike" => adsnap_profile_store::config::Backend::Aerospike,
                other => anyhow::bail!("--profiles-backend {other:?}: expected embedded or aerospike"),
            };
        }
        if let Some(v) = &self.profiles_path {
            p.embedded.path = v.clone();
        }
        if let Some(v) = self.profiles_read_deadline_ms {
            p.read_deadline_ms = v;
        }
        if let Some(v) = self.profiles_memory_bytes_max {
            p.embedded.memory_bytes_max = v;
        }
        if let Some(v) = &self.profiles_aerospike_hosts {
            p.aerospike.hosts = v.clone();
        }
        if let Some(v) = self.events_enabled {
            c.events_enabled = v;
        }
        let e = &mut c.events;
        macro_rules! set_events {
            ($($flag:ident => $field:ident),*) => { $(if let Some(v) = &self.$flag { e.$field = v.clone(); })* };
        }
        set_events!(events_dir => dir, events_segment_bytes_max => segment_bytes_max);
        set_events!(events_fsync_interval_ms => fsync_interval_ms, events_log_bytes_max => log_bytes_max);
        if let Some(urls) = &self.events_nats_urls {
            e.nats.get_or_insert_with(Default::default).urls = urls.clone();
        }
        if self.public_base_url.is_none() && self.listen_addr.is_some() {
            c.public_base_url = format!("http://{}", c.listen_addr);
        }
        Ok(c)
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, the signals an operator or a supervisor stops with.
async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

/// How long stopping may wait for the event shipper's acknowledgements in flight.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The catalog to build when there is no snapshot yet.
    #[arg(long, env = "ADSNAP_UP_CATALOG", default_value = "examples/catalog")]
    catalog: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        // One worker of a multi-thread runtime would still hand every accepted connection from
        // the thread running the accept loop to another one.
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    builder.build().context("starting the async runtime")
}

fn serve_with(
    config: ServeConfig,
    worker_threads: Option<usize>,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<ExitCode> {
    runtime(worker_threads)?.block_on(async move {
        let listener = adsnap_serve::bind(&config).await?;
        let admin_listener = adsnap_serve::bind_admin(&config).await?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let admin_addr = admin_listener.local_addr().context("reading the bound admin address")?;
        let state = State::new(config).await?;
        tracing::info!(%addr, %admin_addr, snapshot_id = %state.production.load().header().id_hex(), "serving");
        on_ready(addr);
        let (stop, mut admin_stopped) = tokio::sync::watch::channel(false);
        let admin = tokio::spawn(adsnap_serve::serve_admin(state.clone(), admin_listener, async move {
            let _ = admin_stopped.changed().await;
        }));
        adsnap_serve::serve(state.clone(), listener, stop_signal()).await;
        let _ = stop.send(true);
        let _ = admin.await;
        tracing::info!("stopping: syncing events and profiles");
        state.shutdown(SHUTDOWN_DEADLINE).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    serve_with(config, args.worker_threads, |_| {})
}

pub fn run_up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let config = args.serve.config()?;
    if !config.snapshot_path.exists() {
        if !args.catalog.join("catalog.json").exists() {
            anyhow::bail!(
                "no snapshot at {} and no catalog at {} to build one from; run from the repository root or pass --catalog",
                config.snapshot_path.display(),
                args.catalog.display()
            );
        }
        let code =
            crate::cli::run_build(args.catalog.clone(), config.snapshot_path.clone(), None, None, true)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    serve_with(config, args.serve.worker_threads, |addr| {
        println!("serving ads on http://{addr} (Ctrl-C stops); try:");
        println!(
            "curl -s -X POST http://{addr}/v1/ad -H 'content-type: application/json' -d '{}'",
            EXAMPLE_REQUEST
        );
    })
}

/// A request the example catalog fills.
pub const EXAMPLE_REQUEST: &str = r#"{"app":{"bundle":"com.example.wordsmith"},"ad_unit_id":"wordsmith-android-interstitial","format":"interstitial","device":{"os":"android","os_version":"14","country":"US","language":"en","type":"phone","connection":"wifi"},"user":{"id":"user-42"}}"#;

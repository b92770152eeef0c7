//! `adsnap keygen`, `adsnap publish`, `adsnap origin` and `adsnap follow`: configuration from a
//! TOML file, flags and `ADSNAP_*` variables, then the distribution library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use adsnap_distribute::follow::{bind_status, serve_status};
use adsnap_distribute::{
    AdminApi, FilePaths, FollowConfig, Follower, Handover, Origin, OriginConfig, Target,
};
use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the secret key; the public key goes to the same path with `.pub` added.
    #[arg(long, env = "ADSNAP_KEYGEN_OUT", default_value = "publisher.key")]
    out: PathBuf,
}

/// Every `OriginConfig` key as a flag and a variable; a flag overrides the file.
#[derive(Args, Debug)]
pub struct OriginArgs {
    /// TOML configuration file (see docs/origin.example.toml).
    #[arg(long, env = "ADSNAP_ORIGIN_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_ORIGIN_DIR")]
    origin_dir: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_SIGNING_KEY_PATH")]
    signing_key_path: Option<PathBuf>,
    /// Tracker announce URL (repeat for several).
    #[arg(long = "tracker", env = "ADSNAP_TRACKERS", value_delimiter = ',')]
    trackers: Vec<String>,
    #[arg(long, env = "ADSNAP_ORIGIN_HTTP_LISTEN_ADDR")]
    http_listen_addr: Option<SocketAddr>,
    #[arg(long, env = "ADSNAP_ORIGIN_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// The origin's peer address as followers reach it (repeat for several).
    #[arg(long = "seed-peer", env = "ADSNAP_SEED_PEERS", value_delimiter = ',')]
    seed_peers: Vec<SocketAddr>,
    #[arg(long, env = "ADSNAP_PIECE_BYTES")]
    piece_bytes: Option<u32>,
    /// Most stripes (files of whole pieces) a new torrent lists the snapshot as.
    #[arg(long, env = "ADSNAP_STRIPES_MAX")]
    stripes_max: Option<u32>,
    #[arg(long, env = "ADSNAP_TRACKER_WHITELIST_PATH")]
    tracker_whitelist_path: Option<PathBuf>,
    /// Command run after the whitelist changed (whitespace-separated).
    #[arg(long, env = "ADSNAP_TRACKER_RELOAD_COMMAND")]
    tracker_reload_command: Option<String>,
    #[arg(long, env = "ADSNAP_ORIGIN_SNAPSHOTS_KEPT_MAX")]
    snapshots_kept_max: Option<usize>,
    #[arg(long, env = "ADSNAP_ORIGIN_POLL_INTERVAL_MS")]
    poll_interval_ms: Option<u64>,
    /// Super-seed: advertise pieces to followers a few at a time (true or false).
    #[arg(long, env = "ADSNAP_ORIGIN_SUPER_SEED")]
    super_seed: Option<bool>,
    #[command(flatten)]
    swarm: SwarmArgs,
}

#[derive(Args, Debug)]
pub struct SwarmArgs {
    #[arg(long, env = "ADSNAP_PEER_LISTEN_ADDR")]
    peer_listen_addr: Option<SocketAddr>,
    #[arg(long, env = "ADSNAP_UPLOAD_BYTES_PER_S_MAX")]
    upload_bytes_per_s_max: Option<u32>,
    #[arg(long, env = "ADSNAP_DOWNLOAD_BYTES_PER_S_MAX")]
    download_bytes_per_s_max: Option<u32>,
    #[arg(long, env = "ADSNAP_PEERS_PER_TORRENT_MAX")]
    peers_per_torrent_max: Option<usize>,
    /// Most block requests (16 KiB each) outstanding per peer.
    #[arg(long, env = "ADSNAP_PEER_REQUESTS_MAX")]
    peer_requests_max: Option<usize>,
}

impl SwarmArgs {
    fn apply(&self, c: &mut adsnap_distribute::SwarmConfig) {
        if let Some(v) = self.peer_listen_addr {
            c.peer_listen_addr = v;
        }
        if self.upload_bytes_per_s_max.is_some() {
            c.upload_bytes_per_s_max = self.upload_bytes_per_s_max;
        }
        if self.download_bytes_per_s_max.is_some() {
            c.download_bytes_per_s_max = self.download_bytes_per_s_max;
        }
        if let Some(v) = self.peers_per_torrent_max {
            c.peers_per_torrent_max = v;
        }
        if let Some(v) = self.peer_requests_max {
            c.peer_requests_max = v;
        }
    }
}

fn read_config<T>(
    path: &Option<PathBuf>,
    parse: impl Fn(&str) -> adsnap_distribute::Result<T>,
) -> anyhow::Result<Option<T>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(parse(&text).with_context(|| format!("in {}", path.display()))?))
}

impl OriginArgs {
    fn config(&self) -> anyhow::Result<OriginConfig> {
        let mut c = read_config(&self.config, OriginConfig::from_toml)?.unwrap_or_default();
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { c.$field = v.clone(); })* };
        }
        set!(origin_dir, signing_key_path, http_listen_addr, public_base_url, piece_bytes, stripes_max);
        set!(snapshots_kept_max, poll_interval_ms, super_seed);
        if !self.trackers.is_empty() {
            c.trackers = self.trackers.clone();
        }
        if !self.seed_peers.is_empty() {
            c.seed_peers = self.seed_peers.clone();
        }
        if self.tracker_whitelist_path.is_some() {
            c.tracker_whitelist_path = self.tracker_whitelist_path.clone();
        }
        if let Some(command) = &self.tracker_reload_command {
            c.tracker_reload_command = command.split_whitespace().map(str::to_owned).collect();
        }
        self.swarm.apply(&mut c.swarm);
        Ok(c)
    }
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The snapshot file to publish.
    snapshot: PathBuf,
    /// Which slot followers' servers put it in.
    #[arg(long, env = "ADSNAP_PUBLISH_TARGET", default_value = "staging")]
    target: Target,
    /// Publish even though a newer version was published before (an operator's rollback).
    #[arg(long)]
    rollback: bool,
    #[command(flatten)]
    origin: OriginArgs,
}

/// Every `FollowConfig` key as a flag and a variable; a flag overrides the file.
#[derive(Args, Debug)]
pub struct FollowArgs {
    /// TOML configuration file (see docs/follow.example.toml).
    #[arg(long, env = "ADSNAP_FOLLOW_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_FOLLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "ADSNAP_MANIFEST_URL")]
    manifest_url: Option<String>,
    /// Trusted publisher public key, 64 hex digits (repeat for several).
    #[arg(long = "publisher-key", env = "ADSNAP_PUBLISHER_KEYS", value_delimiter = ',')]
    publisher_keys: Vec<String>,
    /// Extra peer to try (repeat for several).
    #[arg(long = "peer", env = "ADSNAP_FOLLOW_PEERS", value_delimiter = ',')]
    peers: Vec<SocketAddr>,
    /// Extra tracker announce URL (repeat for several).
    #[arg(long = "tracker", env = "ADSNAP_FOLLOW_TRACKERS", value_delimiter = ',')]
    trackers: Vec<String>,
    /// The server's admin listener, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "ADSNAP_ADMIN_URL")]
    admin_url: Option<String>,
    #[arg(long, env = "ADSNAP_FOLLOW_POLL_INTERVAL_MS")]
    poll_interval_ms: Option<u64>,
    #[arg(long, env = "ADSNAP_FOLLOW_HTTP_TIMEOUT_MS")]
    http_timeout_ms: Option<u64>,
    #[arg(long, env = "ADSNAP_FOLLOW_DOWNLOAD_TIMEOUT_S")]
    download_timeout_s: Option<u64>,
    #[arg(long, env = "ADSNAP_FOLLOW_DISK_BYTES_MAX")]
    disk_bytes_max: Option<u64>,
    #[arg(long, env = "ADSNAP_FOLLOW_STATUS_LISTEN_ADDR")]
    status_listen_addr: Option<SocketAddr>,
    /// bittorrent (default) or http (from the origin only; the benchmark's baseline).
    #[arg(long, env = "ADSNAP_FOLLOW_TRANSPORT")]
    transport: Option<adsnap_distribute::follow::Transport>,
    /// Start each download on the hinted stripe and claim the stripes after it (true), or leave
    /// librqbit's file order (false).
    #[arg(long, env = "ADSNAP_FOLLOW_SPREAD_START_PIECE")]
    spread_start_piece: Option<bool>,
    /// Without an admin URL: link production snapshots here (the server's snapshot_path).
    #[arg(long, env = "ADSNAP_FOLLOW_PRODUCTION_PATH")]
    production_path: Option<PathBuf>,
    /// Without an admin URL: link staging snapshots here (the server's staging_snapshot_path).
    #[arg(long, env = "ADSNAP_FOLLOW_STAGING_PATH")]
    staging_path: Option<PathBuf>,
    /// Without an admin URL: command run after linking (whitespace-separated), e.g. kill -HUP PID.
    #[arg(long, env = "ADSNAP_FOLLOW_RELOAD_COMMAND")]
    reload_command: Option<String>,
    #[command(flatten)]
    swarm: SwarmArgs,
}

impl FollowArgs {
    fn config(&self) -> anyhow::Result<FollowConfig> {
        let mut c = read_config(&self.config, FollowConfig::from_toml)?.unwrap_or_default();
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { c.$field = v.clone(); })* };
        }
        set!(data_dir, manifest_url, poll_interval_ms, http_timeout_ms, download_timeout_s, disk_bytes_max);
        set!(transport, spread_start_piece);
        if self.admin_url.is_some() {
            c.admin_url = self.admin_url.clone();
        }
        if self.status_listen_addr.is_some() {
            c.status_listen_addr = self.status_listen_addr;
        }
        for (flag, field) in
            [(&self.publisher_keys, &mut c.publisher_keys), (&self.trackers, &mut c.trackers)]
        {
            if !flag.is_empty() {
                *field = flag.clone();
            }
        }
        if !self.peers.is_empty() {
            c.peers = self.peers.clone();
        }
        self.swarm.apply(&mut c.swarm);
        Ok(c)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub fn run_keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = adsnap_distribute::keys::generate();
    let mut public = args.out.clone().into_os_string();
    public.push(".pub");
    let public = PathBuf::from(public);
    adsnap_distribute::keys::write_pair(&key, &args.out, &public).context("writing the key pair")?;
    println!("secret key {} (keep it on the origin only)", args.out.display());
    println!(
        "public key {}: {}",
        public.display(),
        adsnap_distribute::keys::public_hex(&key.verifying_key())
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let config = args.origin.config()?;
    let request = adsnap_distribute::PublishRequest {
        snapshot_path: args.snapshot.clone(),
        target: args.target,
        rollback: args.rollback,
    };
    let signed = runtime()?
        .block_on(adsnap_distribute::publish(&config, &request))
        .with_context(|| format!("publishing {}", args.snapshot.display()))?;
    println!("{}", String::from_utf8_lossy(&signed.to_json()));
    Ok(ExitCode::SUCCESS)
}

pub fn run_origin(args: OriginArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.http_listen_addr)
            .await
            .with_context(|| format!("binding {}", config.http_listen_addr))?;
        let http_addr = listener.local_addr()?;
        let origin = Origin::start(config).await.context("starting the origin")?;
        let peer_addr = origin.session().listen_addr();
        println!(
            "origin ready http={http_addr} peer={}",
            peer_addr.map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::select! {
            result = origin.run(listener) => result.context("origin")?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_follow(args: FollowArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    runtime()?.block_on(async move {
        match &config.admin_url {
            Some(url) => follow_with(config.clone(), AdminApi::new(url)?).await,
            None => {
                let (Some(production_path), Some(staging_path)) = (&args.production_path, &args.staging_path)
                else {
                    anyhow::bail!("follow needs --admin-url, or both --production-path and --staging-path");
                };
                let reload_command = args
                    .reload_command
                    .iter()
                    .flat_map(|c| c.split_whitespace())
                    .map(str::to_owned)
                    .collect();
                let handover = FilePaths {
                    production_path: production_path.clone(),
                    staging_path: staging_path.clone(),
                    reload_command,
                };
                follow_with(config, handover).await
            }
        }
    })
}

async fn follow_with<H: Handover + 'static>(config: FollowConfig, handover: H) -> anyhow::Result<ExitCode> {
    let status = bind_status(&config).await?;
    let follower = Follower::start(config, handover).await.context("starting the follower")?;
    if let Some(listener) = status {
        println!("follower status http={}", listener.local_addr()?);
        tokio::spawn(serve_status(follower.clone(), listener));
    }
    tokio::select! {
        _ = follower.run() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

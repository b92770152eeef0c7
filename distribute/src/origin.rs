//! The origin: `publish` adds a verified snapshot to the origin folder with its torrent and signed
//! manifest; `Origin::run` seeds every published snapshot and serves the latest manifest over HTTP.
//!
//! The folder is the only thing the two share, so publishing works whether or not the origin
//! daemon runs, and a restarted daemon seeds exactly what was published:
//!
//! ```text
//! ORIGIN_DIR/snapshots/<id>.snap       the published snapshot (hard link or copy)
//! ORIGIN_DIR/torrents/<id>.torrent     its torrent (striped: see `stripes.rs`)
//! ORIGIN_DIR/manifests/<version>-<id>.json   every signed manifest still kept
//! ORIGIN_DIR/latest.json               the manifest followers act on (replaced atomically)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use librqbit::{AddTorrent, AddTorrentOptions, CreateTorrentOptions, Session};
use serde::{Deserialize, Serialize};

use crate::error::{DistributeError, Result};
use crate::manifest::{Manifest, SignedManifest, Target};
use crate::session::SwarmConfig;

/// Published snapshots the origin keeps (and seeds): the newest and the ones before it for rollback.
pub const ORIGIN_SNAPSHOTS_KEPT_DEFAULT: usize = 3;

/// The origin's configuration, shared by `adsnap publish` and `adsnap origin`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Folder holding published snapshots, torrents and manifests.
    pub origin_dir: PathBuf,
    /// The publisher's secret key (from `adsnap keygen`).
    pub signing_key_path: PathBuf,
    /// Tracker announce URLs written into every torrent and manifest.
    pub trackers: Vec<String>,
    /// Where the origin serves manifests, torrents and snapshots over HTTP.
    pub http_listen_addr: SocketAddr,
    /// The URL followers reach `http_listen_addr` at; torrent URLs in manifests start with it.
    pub public_base_url: String,
    /// Peer addresses followers are told to connect to for the first pieces (the origin's own).
    pub seed_peers: Vec<SocketAddr>,
    /// Piece size of new torrents, bytes (a power of two, 16 KiB to 16 MiB).
    pub piece_bytes: u32,
    /// Most stripes (files of whole pieces) a new torrent lists the snapshot as. Followers that
    /// start together each claim their own run of stripes, so this should be at least their number.
    pub stripes_max: u32,
    /// Opentracker's whitelist file; published info hashes are appended to it.
    pub tracker_whitelist_path: Option<PathBuf>,
    /// Command run after the whitelist changed, e.g. `["kill", "-HUP", "<opentracker pid>"]`.
    pub tracker_reload_command: Vec<String>,
    /// Published snapshots kept (the newest and older ones for rollback).
    pub snapshots_kept_max: usize,
    /// How often the daemon looks for newly published snapshots.
    pub poll_interval_ms: u64,
    /// Super-seed (BEP 16 style): advertise pieces to each follower a few at a time, choosing
    /// pieces no connected peer holds, so that each piece leaves the origin about once and the
    /// followers trade the rest. A piece a follower holds but does not pass on is offered again to
    /// one lacking it after a few seconds. Off, the origin shows every piece to every follower.
    pub super_seed: bool,
    pub swarm: SwarmConfig,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            origin_dir: PathBuf::from("origin"),
            signing_key_path: PathBuf::from("publisher.key"),
            trackers: Vec::new(),
            http_listen_addr: "127.0.0.1:8090".parse().expect("valid address"),
            public_base_url: "http://127.0.0.1:8090".into(),
            seed_peers: Vec::new(),
            piece_bytes: 1 << 20,
            stripes_max: crate::stripes::STRIPES_DEFAULT,
            tracker_whitelist_path: None,
            tracker_reload_command: Vec::new(),
            snapshots_kept_max: ORIGIN_SNAPSHOTS_KEPT_DEFAULT,
            poll_interval_ms: 200,
            super_seed: true,
            swarm: SwarmConfig::default(),
        }
    }
}

impl OriginConfig {
    pub fn from_toml(text: &str) -> Result<OriginConfig> {
        toml::from_str(text).map_err(|e| DistributeError::Config(e.to_string()))
    }
    fn dir(&self, sub: &str) -> PathBuf {
        self.origin_dir.join(sub)
    }
    fn latest_path(&self) -> PathBuf {
        self.origin_dir.join("latest.json")
    }
}

/// What `publish` was asked to do.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub snapshot_path: PathBuf,
    pub target: Target,
    /// Allows publishing a version older than the newest (an operator's rollback).
    pub rollback: bool,
}

pub fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Verifies the snapshot, refuses an older version unless it is a rollback, makes its torrent,
/// signs the manifest and makes it the latest. Returns the signed manifest.
pub async fn publish(config: &OriginConfig, request: &PublishRequest) -> Result<SignedManifest> {
    let key = crate::keys::read_signing_key(&config.signing_key_path)?;
    for sub in ["snapshots", "torrents", "manifests"] {
        std::fs::create_dir_all(config.dir(sub)).map_err(DistributeError::io(config.dir(sub)))?;
    }
    let source = request.snapshot_path.clone();
    let (header, size_bytes, checksum) = tokio::task::spawn_blocking(move || -> Result<_> {
        let snapshot = adsnap_snapshot::Snapshot::open(&source)
            .map_err(|e| DistributeError::Snapshot { path: source.clone(), source: e })?;
        let (size, checksum) = crate::verify::file_xxh3_128(&source)?;
        Ok((snapshot.header().clone(), size, checksum))
    })
    .await
    .map_err(|e| DistributeError::Config(format!("verification task: {e}")))??;
    check_version(config, &header.id_hex(), header.snapshot_version, request)?;
    let file_name = format!("{}.snap", header.id_hex());
    let published = config.dir("snapshots").join(&file_name);
    link_or_copy(&request.snapshot_path, &published)?;
    let torrent = make_torrent(config, &published, &header.id_hex()).await?;
    let torrent_path = config.dir("torrents").join(format!("{}.torrent", header.id_hex()));
    write_atomic(&torrent_path, &torrent.bytes)?;
    whitelist(config, &torrent.info_hash)?;
    let manifest = Manifest {
        format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
        n_stripes: torrent.n_stripes,
        snapshot_id: header.id_hex(),
        snapshot_version: header.snapshot_version,
        size_bytes,
        file_xxh3_128: checksum,
        info_hash: torrent.info_hash.clone(),
        magnet: torrent.magnet,
        torrent_url: Some(format!(
            "{}/torrents/{}.torrent",
            config.public_base_url.trim_end_matches('/'),
            header.id_hex()
        )),
        http_url: Some(format!("{}/snapshots/{file_name}", config.public_base_url.trim_end_matches('/'))),
        start_hint_url: Some(format!(
            "{}/start/{}",
            config.public_base_url.trim_end_matches('/'),
            torrent.info_hash
        )),
        created_unix_ms: now_unix_ms(),
        target: request.target,
        rollback: request.rollback,
        trackers: config.trackers.clone(),
        seed_peers: config.seed_peers.clone(),
    };
    let signed = manifest.sign(&key);
    let name = format!("{:020}-{}.json", header.snapshot_version, header.id_hex());
    write_atomic(&config.dir("manifests").join(name), &signed.to_json())?;
    write_atomic(&config.latest_path(), &signed.to_json())?;
    prune(config)?;
    tracing::info!(snapshot_id = %header.id_hex(), version = header.snapshot_version, info_hash = %torrent.info_hash, "published");
    Ok(signed)
}

/// Newer than every published version; or the latest snapshot again for another target (a
/// promotion from staging to production); or an explicit rollback.
fn check_version(config: &OriginConfig, id: &str, version: u64, request: &PublishRequest) -> Result<()> {
    let Some(newest) = published_manifests(config)?.iter().map(|m| m.manifest.snapshot_version).max() else {
        return Ok(());
    };
    let latest = SignedManifest::read(&config.latest_path()).ok().map(|s| s.manifest);
    let promotion = latest.is_some_and(|l| l.snapshot_id == id && l.target != request.target);
    if version > newest || promotion || request.rollback {
        return Ok(());
    }
    Err(DistributeError::StaleVersion { version, newest })
}

/// Every kept manifest, oldest version first.
fn published_manifests(config: &OriginConfig) -> Result<Vec<SignedManifest>> {
    let dir = config.dir("manifests");
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DistributeError::Io { path: dir, source: e }),
    };
    names.retain(|p| p.extension().is_some_and(|e| e == "json"));
    names.sort();
    names.iter().map(|p| SignedManifest::read(p)).collect()
}

/// Drops the oldest published snapshots beyond the kept count, never the latest one.
fn prune(config: &OriginConfig) -> Result<()> {
    let manifests = published_manifests(config)?;
    let latest = SignedManifest::read(&config.latest_path())?.manifest.snapshot_id;
    let n_drop = manifests.len().saturating_sub(config.snapshots_kept_max.max(1));
    for old in manifests.iter().take(n_drop).filter(|m| m.manifest.snapshot_id != latest) {
        let id = &old.manifest.snapshot_id;
        let name = format!("{:020}-{id}.json", old.manifest.snapshot_version);
        for path in [
            config.dir("manifests").join(name),
            config.dir("torrents").join(format!("{id}.torrent")),
            config.dir("snapshots").join(format!("{id}.snap")),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

struct MadeTorrent {
    bytes: bytes::Bytes,
    info_hash: String,
    magnet: String,
    n_stripes: u32,
}

/// Hashes the snapshot's pieces (librqbit), then lists them as stripes in a folder named `name`.
async fn make_torrent(config: &OriginConfig, path: &Path, name: &str) -> Result<MadeTorrent> {
    let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
    let options = CreateTorrentOptions {
        name: Some(name),
        trackers: config.trackers.clone(),
        piece_length: Some(config.piece_bytes),
    };
    let mut made =
        librqbit::create_torrent(path, options, &spawner).await.map_err(DistributeError::Torrent)?;
    let n_stripes = crate::stripes::stripe_torrent(&mut made, name, config.stripes_max)?;
    let bytes = made.as_bytes().map_err(DistributeError::Torrent)?;
    // The info hash changed with the layout; reading the torrent back computes it from its bytes.
    let info_hash = librqbit::torrent_from_bytes(&bytes)
        .map_err(|e| DistributeError::Torrent(anyhow::anyhow!("reading the striped torrent back: {e}")))?
        .info_hash;
    Ok(MadeTorrent {
        bytes,
        info_hash: info_hash.as_string(),
        magnet: librqbit::Magnet::from_id20(info_hash, config.trackers.clone(), None).to_string(),
        n_stripes: n_stripes as u32,
    })
}

fn whitelist(config: &OriginConfig, info_hash: &str) -> Result<()> {
    let Some(path) = &config.tracker_whitelist_path else { return Ok(()) };
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    if !existing.lines().any(|l| l.trim().eq_ignore_ascii_case(info_hash)) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(DistributeError::io(path))?;
        writeln!(file, "{info_hash}").map_err(DistributeError::io(path))?;
    }
    run_reload(&config.tracker_reload_command)
}

fn run_reload(command: &[String]) -> Result<()> {
    let Some((program, args)) = command.split_first() else { return Ok(()) };
    let fail = |reason: String| DistributeError::TrackerReload { command: command.to_vec(), reason };
    let status = std::process::Command::new(program).args(args).status().map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        return Err(fail(status.to_string()));
    }
    Ok(())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(DistributeError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(DistributeError::io(path))
}

/// Hard-links when it can (same filesystem), otherwise copies; never changes the source.
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Ok(());
    }
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let tmp = to.with_extension("part");
    std::fs::copy(from, &tmp).map_err(DistributeError::io(to))?;
    std::fs::rename(&tmp, to).map_err(DistributeError::io(to))
}

/// Counters the origin reports on `/status`.
#[derive(Default)]
pub struct OriginCounters {
    pub http_snapshot_bytes_served: AtomicU64,
}

/// The running origin: a seeding session and the HTTP server.
pub struct Origin {
    config: OriginConfig,
    session: Arc<Session>,
    counters: Arc<OriginCounters>,
    seeding: tokio::sync::Mutex<HashMap<String, usize>>,
    /// Start hints handed out so far, per info hash.
    n_starts: std::sync::Mutex<HashMap<String, u64>>,
}

impl Origin {
    pub async fn start(config: OriginConfig) -> Result<Arc<Origin>> {
        for sub in ["snapshots", "torrents", "manifests"] {
            std::fs::create_dir_all(config.dir(sub)).map_err(DistributeError::io(config.dir(sub)))?;
        }
        let session = crate::session::start(&config.dir("snapshots"), &config.swarm).await?;
        Ok(Arc::new(Origin {
            config,
            session,
            counters: Arc::default(),
            seeding: Default::default(),
            n_starts: Default::default(),
        }))
    }

    /// Seeds what is published and serves HTTP on `listener` until the future is dropped.
    pub async fn run(self: Arc<Self>, listener: tokio::net::TcpListener) -> Result<()> {
        let http = tokio::spawn(crate::http::serve(listener, {
            let origin = self.clone();
            move |path| {
                let origin = origin.clone();
                async move { origin.route(&path).await }
            }
        }));
        let _abort_http = AbortOnDrop(http);
        loop {
            if let Err(err) = self.seed_published().await {
                tracing::warn!(error = %err, "scanning published snapshots failed");
            }
            tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)).await;
        }
    }

    /// Adds every published torrent not yet seeded; drops the ones that were pruned.
    async fn seed_published(&self) -> Result<()> {
        let dir = self.config.dir("torrents");
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(DistributeError::io(&dir))?.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "torrent") {
                present.push(path);
            }
        }
        let mut seeding = self.seeding.lock().await;
        for path in &present {
            let key = path.display().to_string();
            if seeding.contains_key(&key) {
                continue;
            }
            let bytes = std::fs::read(path).map_err(DistributeError::io(path))?;
            // torrents/<id>.torrent seeds snapshots/<id>.snap, whatever the torrent's layout.
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            let snapshot = self.config.dir("snapshots").join(format!("{id}.snap"));
            let options = AddTorrentOptions {
                overwrite: true,
                output_folder: Some(self.config.dir("snapshots").display().to_string()),
                initial_peers: None,
                storage_factory: Some(crate::stripes::OneFileStorageFactory::boxed_for(snapshot)),
                super_seed: self.config.super_seed,
                ..Default::default()
            };
            let added = self
                .session
                .add_torrent(AddTorrent::TorrentFileBytes(bytes.into()), Some(options))
                .await
                .map_err(DistributeError::Torrent)?;
            if let Some(handle) = added.into_handle() {
                tracing::info!(torrent = %key, info_hash = %handle.info_hash().as_string(), "seeding");
                seeding.insert(key, handle.id());
            }
        }
        let gone: Vec<String> = seeding
            .keys()
            .filter(|k| !present.iter().any(|p| p.display().to_string() == **k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(id) = seeding.remove(&key) {
                let _ = self.session.delete(id.into(), false).await;
            }
        }
        Ok(())
    }

    /// Bytes this origin has uploaded to peers, over every torrent it seeds now.
    pub fn uploaded_bytes(&self) -> u64 {
        self.session.with_torrents(|torrents| torrents.map(|(_, t)| t.stats().uploaded_bytes).sum())
    }

    async fn route(&self, path: &str) -> crate::http::Reply {
        use crate::http::{json, not_found, reply};
        use hyper::StatusCode;
        if path == "/manifest.json" {
            return match std::fs::read(self.config.latest_path()) {
                Ok(bytes) => reply(StatusCode::OK, "application/json", bytes),
                Err(_) => not_found(),
            };
        }
        if path == "/status" {
            return json(
                StatusCode::OK,
                &serde_json::json!({
                    "uploaded_bytes": self.uploaded_bytes(),
                    "http_snapshot_bytes_served": self.counters.http_snapshot_bytes_served.load(Ordering::Relaxed),
                    "n_torrents": self.seeding.lock().await.len(),
                }),
            );
        }
        if let Some(start) = path.strip_prefix("/start/") {
            return match start.split_once('/') {
                None if is_info_hash(start) => {
                    let (fraction, n_starts) = self.next_start(start);
                    json(StatusCode::OK, &serde_json::json!({"fraction": fraction, "n_starts": n_starts}))
                }
                Some((info_hash, "count")) if is_info_hash(info_hash) => {
                    json(StatusCode::OK, &serde_json::json!({"n_starts": self.n_starts(info_hash)}))
                }
                _ => not_found(),
            };
        }
        if let Some(name) = path.strip_prefix("/torrents/").filter(|n| is_plain_name(n, ".torrent")) {
            return match std::fs::read(self.config.dir("torrents").join(name)) {
                Ok(bytes) => reply(StatusCode::OK, "application/x-bittorrent", bytes),
                Err(_) => not_found(),
            };
        }
        if let Some(name) = path.strip_prefix("/snapshots/").filter(|n| is_plain_name(n, ".snap")) {
            return self.snapshot_file(&self.config.dir("snapshots").join(name)).await;
        }
        not_found()
    }

    /// Where the next follower should start on a torrent, as a fraction of its length, and how many
    /// starts were handed out with this one: the van der Corput sequence (0, 1/2, 1/4, 3/4, 1/8,
    /// ...), so that followers asking one after another start evenly spread, whatever their number,
    /// and each first asks the origin for stripes no one else asks for (see `stripes.rs`). Only an
    /// ordering hint: it is not signed and needs no trust.
    fn next_start(&self, info_hash: &str) -> (f64, u64) {
        let mut n_starts = self.n_starts.lock().expect("start hints lock");
        if n_starts.len() > START_HINTS_TORRENTS_MAX {
            n_starts.clear();
        }
        let k = n_starts.entry(info_hash.to_owned()).or_insert(0);
        let fraction = van_der_corput(*k);
        *k += 1;
        (fraction, *k)
    }

    /// Starts handed out so far for a torrent: a follower's run of stripes ends where another began.
    fn n_starts(&self, info_hash: &str) -> u64 {
        self.n_starts.lock().expect("start hints lock").get(info_hash).copied().unwrap_or(0)
    }

    /// The plain-HTTP way to get a snapshot: the baseline the swarm is measured against, and a
    /// fallback for operators. Served from a read-only map, so no copy is made per request.
    async fn snapshot_file(&self, path: &Path) -> crate::http::Reply {
        let Ok(file) = std::fs::File::open(path) else { return crate::http::not_found() };
        // SAFETY: published snapshot files are never modified in place (see the snapshot crate).
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else { return crate::http::not_found() };
        self.counters.http_snapshot_bytes_served.fetch_add(map.len() as u64, Ordering::Relaxed);
        crate::http::reply(hyper::StatusCode::OK, "application/octet-stream", bytes::Bytes::from_owner(map))
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

/// Torrents the origin keeps start-hint counters for (they are cleared past this).
const START_HINTS_TORRENTS_MAX: usize = 1024;

/// The k-th point of the base-2 van der Corput sequence: k's bits mirrored after the binary point.
pub fn van_der_corput(k: u64) -> f64 {
    k.reverse_bits() as f64 / 2f64.powi(64)
}

fn is_info_hash(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_plain_name(name: &str, suffix: &str) -> bool {
    name.ends_with(suffix) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_hints_spread_evenly() {
        let starts: Vec<f64> = (0..8).map(van_der_corput).collect();
        assert_eq!(starts, [0.0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]);
        assert!(!is_plain_name("../x", ".torrent"));
    }

    #[test]
    fn the_example_config_is_the_default() {
        let text = include_str!("../../docs/origin.example.toml");
        assert_eq!(OriginConfig::from_toml(text).unwrap(), OriginConfig::default());
        assert!(OriginConfig::from_toml("unknown_key = 1").is_err());
    }
}

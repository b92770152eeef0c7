//! The follower: polls the origin for the latest signed manifest, downloads the snapshot from the
//! swarm, verifies it, hands it to its server, keeps seeding it, and forgets old snapshots except
//! the one kept for rollback. Its states and invariants are in `distribute/STATE.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use librqbit::api::TorrentIdOrHash;
use librqbit::{AddTorrent, AddTorrentOptions, ManagedTorrent, Session, TorrentStatsState};
use serde::{Deserialize, Serialize};

use crate::error::{DistributeError, Result};
use crate::handover::Handover;
use crate::manifest::{Manifest, SignedManifest};
use crate::metrics::{Metrics, Outcome};
use crate::session::SwarmConfig;

/// Manifests remembered as already handled, so that one unchanged bad manifest is logged once.
const SEEN_MANIFESTS_MAX: usize = 1024;
/// How often a running download's progress is looked at.
const PROGRESS_POLL_MS: u64 = 100;

/// How a follower gets snapshot bytes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// From the swarm; the follower seeds what it has.
    #[default]
    Bittorrent,
    /// From the origin's `http_url` only; nothing is seeded. The benchmark's baseline, and a
    /// fallback where peer traffic is not allowed.
    Http,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bittorrent" => Ok(Transport::Bittorrent),
            "http" => Ok(Transport::Http),
            other => Err(format!("transport must be bittorrent or http, not {other:?}")),
        }
    }
}

/// The follower's configuration (`adsnap follow`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FollowConfig {
    /// Folder for downloaded snapshots, their torrents and the follower's state file.
    pub data_dir: PathBuf,
    /// The origin's latest manifest, e.g. `http://origin:8090/manifest.json`.
    pub manifest_url: String,
    /// Public keys (64 hex digits each) whose manifests are trusted.
    pub publisher_keys: Vec<String>,
    /// Peers to try besides the manifest's seed peers and the trackers' answers.
    pub peers: Vec<SocketAddr>,
    /// Trackers to use besides the manifest's.
    pub trackers: Vec<String>,
    /// The server's admin listener, e.g. `http://127.0.0.1:8081`.
    pub admin_url: Option<String>,
    /// Time between manifest polls.
    pub poll_interval_ms: u64,
    /// Deadline of one manifest or torrent fetch.
    pub http_timeout_ms: u64,
    /// A download that has not finished by then is dropped and tried again on the next poll.
    pub download_timeout_s: u64,
    /// Disk the follower's snapshots may use in total.
    pub disk_bytes_max: u64,
    /// Where `/status` and `/metrics` are served (loopback); none when unset.
    pub status_listen_addr: Option<SocketAddr>,
    pub transport: Transport,
    /// Start downloading on the stripe the origin hints (else a random one) and claim the stripes
    /// after it up to where another follower started, instead of librqbit's file order (see
    /// `stripes.rs`). Followers that start together then ask the origin for different pieces and
    /// have different pieces to give each other.
    pub spread_start_piece: bool,
    pub swarm: SwarmConfig,
}

impl Default for FollowConfig {
    fn default() -> Self {
        FollowConfig {
            data_dir: PathBuf::from("follower"),
            manifest_url: "http://127.0.0.1:8090/manifest.json".into(),
            publisher_keys: Vec::new(),
            peers: Vec::new(),
            trackers: Vec::new(),
            admin_url: None,
            poll_interval_ms: 1000,
            http_timeout_ms: 5000,
            download_timeout_s: 3600,
            disk_bytes_max: 64 << 30,
            status_listen_addr: None,
            transport: Transport::Bittorrent,
            spread_start_piece: true,
            swarm: SwarmConfig::default(),
        }
    }
}

impl FollowConfig {
    pub fn from_toml(text: &str) -> Result<FollowConfig> {
        toml::from_str(text).map_err(|e| DistributeError::Config(e.to_string()))
    }

    pub fn trusted_keys(&self) -> Result<Vec<VerifyingKey>> {
        if self.publisher_keys.is_empty() {
            return Err(DistributeError::Config(
                "publisher_keys is empty: no manifest could be trusted".into(),
            ));
        }
        self.publisher_keys.iter().map(|k| crate::keys::parse_verifying_key(k)).collect()
    }
}

/// What survives a restart: the installed snapshots, newest last (the current one and the one
/// kept for rollback), and the signed manifest being worked on, so that a restarted follower
/// resumes its download even when the origin is gone.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FollowerState {
    pub installed: Vec<Manifest>,
    pub pending: Option<SignedManifest>,
}

/// Where the follower is now, for `/status`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Idle,
    /// librqbit is hashing what is already on disk (after a restart, the part downloaded before).
    Checking {
        snapshot_id: String,
        checked_bytes: u64,
        total_bytes: u64,
    },
    /// `progress_bytes`: verified pieces held, those found by the check included.
    Downloading {
        snapshot_id: String,
        progress_bytes: u64,
        total_bytes: u64,
    },
    Verifying {
        snapshot_id: String,
    },
    HandingOver {
        snapshot_id: String,
    },
}

/// A running follower.
pub struct Follower<H> {
    config: FollowConfig,
    trusted: Vec<VerifyingKey>,
    session: Arc<Session>,
    handover: H,
    client: reqwest::Client,
    pub metrics: Arc<Metrics>,
    phase: Mutex<Phase>,
    state: Mutex<FollowerState>,
    seen: Mutex<HashSet<u64>>,
    /// The stripes the latest download started on and claimed.
    walk: Arc<Mutex<crate::stripes::Walk>>,
}

impl<H: Handover> Follower<H> {
    /// Loads the state, starts the session and seeds the snapshots already installed.
    pub async fn start(config: FollowConfig, handover: H) -> Result<Arc<Self>> {
        let trusted = config.trusted_keys()?;
        for dir in [config.data_dir.join("snapshots"), config.data_dir.join("torrents")] {
            std::fs::create_dir_all(&dir).map_err(DistributeError::io(&dir))?;
        }
        let state = load_state(&config.data_dir.join("state.json"))?;
        let session = crate::session::start(&config.data_dir.join("snapshots"), &config.swarm).await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.http_timeout_ms))
            .build()
            .map_err(|e| DistributeError::Config(format!("http client: {e}")))?;
        let follower = Arc::new(Follower {
            config,
            trusted,
            session,
            handover,
            client,
            metrics: Arc::new(Metrics::default()),
            phase: Mutex::new(Phase::Idle),
            state: Mutex::new(state.clone()),
            seen: Mutex::default(),
            walk: Arc::default(),
        });
        let seeds = follower.config.transport == Transport::Bittorrent;
        for manifest in state.installed.iter().filter(|_| seeds) {
            if let Err(err) = follower.add(manifest).await {
                tracing::warn!(snapshot_id = %manifest.snapshot_id, error = %err, "cannot seed an installed snapshot");
            }
        }
        Ok(follower)
    }

    /// Resumes the pending manifest if there is one, then polls until the future is dropped.
    pub async fn run(self: Arc<Self>) {
        let pending = self.state().pending;
        if let Some(signed) = pending {
            tracing::info!(snapshot_id = %signed.manifest.snapshot_id, "resuming the pending manifest");
            self.act_on(&signed.to_json()).await;
        }
        loop {
            self.poll_once().await;
            tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)).await;
        }
    }

    /// One poll: fetch, verify, and act on the latest manifest. Errors are logged and counted.
    pub async fn poll_once(&self) {
        let bytes = match self.fetch(&self.config.manifest_url).await {
            Ok(bytes) => bytes,
            Err(err) => {
                self.metrics.count(Outcome::OriginUnreachable);
                tracing::debug!(error = %err, "manifest poll failed");
                return;
            }
        };
        self.act_on(&bytes).await;
    }

    /// Verifies a signed manifest and installs its snapshot if it is wanted; counts the outcome.
    async fn act_on(&self, bytes: &[u8]) {
        let fingerprint = xxhash_rust::xxh3::xxh3_64(bytes);
        if self.seen.lock().expect("seen lock").contains(&fingerprint) {
            return;
        }
        match self.handle(bytes).await {
            Ok(()) => self.remember(fingerprint),
            Err(err) => {
                let outcome = Outcome::of(&err);
                self.metrics.count(outcome);
                tracing::warn!(error = %err, outcome = outcome.as_str(), "manifest not installed");
                if !crate::metrics::retryable(&err) {
                    self.remember(fingerprint);
                    if let Err(err) = self.set_pending(None) {
                        tracing::warn!(error = %err, "state not saved");
                    }
                }
            }
        }
        *self.phase.lock().expect("phase lock") = Phase::Idle;
    }

    fn remember(&self, fingerprint: u64) {
        let mut seen = self.seen.lock().expect("seen lock");
        if seen.len() >= SEEN_MANIFESTS_MAX {
            seen.clear();
        }
        seen.insert(fingerprint);
    }

    async fn handle(&self, bytes: &[u8]) -> Result<()> {
        let manifest = SignedManifest::verify(bytes, &self.trusted)?;
        if !self.is_wanted(&manifest)? {
            return Ok(());
        }
        self.set_pending(Some(serde_json::from_slice(bytes)?))?;
        tracing::info!(snapshot_id = %manifest.snapshot_id, version = manifest.snapshot_version, target = manifest.target.as_str(), "new manifest");
        self.make_room(manifest.size_bytes).await?;
        let path = self.download(&manifest).await?;
        self.set_phase(Phase::Verifying { snapshot_id: manifest.snapshot_id.clone() });
        let (check_path, check_manifest) = (path.clone(), manifest.clone());
        let checked =
            tokio::task::spawn_blocking(move || crate::verify::check_download(&check_path, &check_manifest))
                .await
                .map_err(|e| DistributeError::Config(format!("verification task: {e}")))?;
        if let Err(err) = checked {
            self.forget(&manifest).await;
            self.set_pending(None)?;
            return Err(err);
        }
        self.set_phase(Phase::HandingOver { snapshot_id: manifest.snapshot_id.clone() });
        let served_id = self.handover.install(&path, &manifest).await?;
        if served_id != manifest.snapshot_id {
            return Err(DistributeError::Handover {
                reason: format!("server reports {served_id}, expected {}", manifest.snapshot_id),
                retry: false,
            });
        }
        self.metrics.count(Outcome::Installed);
        tracing::info!(snapshot_id = %manifest.snapshot_id, target = manifest.target.as_str(), "installed");
        self.record_installed(manifest).await
    }

    fn is_wanted(&self, manifest: &Manifest) -> Result<bool> {
        wanted(self.state.lock().expect("state lock").installed.last(), manifest)
    }

    fn set_pending(&self, pending: Option<SignedManifest>) -> Result<()> {
        let mut state = self.state.lock().expect("state lock");
        state.pending = pending;
        save_state(&self.config.data_dir.join("state.json"), &state)
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().expect("phase lock").clone()
    }

    pub fn state(&self) -> FollowerState {
        self.state.lock().expect("state lock").clone()
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().expect("phase lock") = phase;
    }

    async fn fetch(&self, url: &str) -> Result<bytes::Bytes> {
        let http = |reason: String| DistributeError::Http { url: url.to_owned(), reason };
        let response = self.client.get(url).send().await.map_err(|e| http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(http(format!("status {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| http(e.to_string()))?;
        Ok(bytes)
    }

    /// The torrent from the origin when it answers (checked against the signed info hash),
    /// otherwise the magnet link, whose metadata peers supply and librqbit checks.
    async fn torrent_source(&self, manifest: &Manifest) -> AddTorrent<'static> {
        let stored = self.torrent_path(manifest);
        if let Ok(bytes) = std::fs::read(&stored) {
            return AddTorrent::TorrentFileBytes(bytes.into());
        }
        if let Some(url) = &manifest.torrent_url {
            match self.fetch(url).await {
                Ok(bytes) if torrent_info_hash(&bytes).as_deref() == Some(manifest.info_hash.as_str()) => {
                    return AddTorrent::TorrentFileBytes(bytes);
                }
                Ok(_) => {
                    tracing::warn!(%url, "torrent does not match the signed info hash; using the magnet")
                }
                Err(err) => {
                    tracing::info!(error = %err, "torrent not fetched from the origin; using the magnet")
                }
            }
        }
        AddTorrent::from_url(manifest.magnet.clone())
    }

    fn torrent_path(&self, manifest: &Manifest) -> PathBuf {
        self.config.data_dir.join("torrents").join(format!("{}.torrent", manifest.snapshot_id))
    }

    fn snapshot_path(&self, manifest: &Manifest) -> PathBuf {
        self.config.data_dir.join("snapshots").join(manifest.file_name())
    }

    /// Adds the torrent to the session (resuming over whatever part of the file is there).
    async fn add(&self, manifest: &Manifest) -> Result<Arc<ManagedTorrent>> {
        let mut peers: Vec<SocketAddr> = manifest.seed_peers.clone();
        peers.extend(&self.config.peers);
        let mut trackers = manifest.trackers.clone();
        trackers.extend(self.config.trackers.iter().cloned());
        let options = AddTorrentOptions {
            overwrite: true,
            output_folder: Some(self.config.data_dir.join("snapshots").display().to_string()),
            initial_peers: Some(peers),
            trackers: Some(trackers),
            // The stripes are written into the one snapshot file: one copy on disk, seeded and served.
            storage_factory: Some(crate::stripes::OneFileStorageFactory::boxed_for(
                self.snapshot_path(manifest),
            )),
            ..Default::default()
        };
        let source = self.torrent_source(manifest).await;
        let handle = self
            .session
            .add_torrent(source, Some(options))
            .await
            .map_err(DistributeError::Torrent)?
            .into_handle()
            .ok_or_else(|| DistributeError::Torrent(anyhow::anyhow!("torrent was listed, not added")))?;
        if handle.info_hash().as_string() != manifest.info_hash {
            let _ = self.session.delete(handle.id().into(), false).await;
            return Err(DistributeError::Mismatch {
                what: "torrent info hash differs from the manifest's".into(),
            });
        }
        // Kept from the start, so that a restarted follower resumes without the origin.
        let stored = self.torrent_path(manifest);
        if !stored.exists() {
            if let Ok(bytes) = handle.with_metadata(|m| m.torrent_bytes.clone()) {
                crate::origin::write_atomic(&stored, &bytes)?;
            }
        }
        Ok(handle)
    }

    async fn download(&self, manifest: &Manifest) -> Result<PathBuf> {
        self.set_phase(Phase::Downloading {
            snapshot_id: manifest.snapshot_id.clone(),
            progress_bytes: 0,
            total_bytes: manifest.size_bytes,
        });
        if self.config.transport == Transport::Http {
            return self.download_http(manifest).await;
        }
        // The hint comes first: from the moment the torrent is live, its requests go out in
        // librqbit's file order until the walk opens its first stripe.
        let hint = match self.config.spread_start_piece {
            true => Some(self.start_hint(manifest).await),
            false => None,
        };
        let handle = self.add(manifest).await?;
        let _walk = hint.map(|hint| self.start_walk(&handle, manifest, hint));
        let deadline = Instant::now() + Duration::from_secs(self.config.download_timeout_s);
        loop {
            let stats = handle.stats();
            if let Some(error) = &stats.error {
                return Err(DistributeError::Torrent(anyhow::anyhow!("{error}")));
            }
            if stats.finished {
                break;
            }
            if Instant::now() > deadline {
                return Err(DistributeError::Torrent(anyhow::anyhow!("download timed out")));
            }
            // While librqbit checks the file, its progress counts bytes hashed, not bytes held.
            let snapshot_id = manifest.snapshot_id.clone();
            self.set_phase(match stats.state {
                TorrentStatsState::Initializing { .. } => Phase::Checking {
                    snapshot_id,
                    checked_bytes: stats.progress_bytes,
                    total_bytes: stats.total_bytes,
                },
                _ => Phase::Downloading {
                    snapshot_id,
                    progress_bytes: stats.progress_bytes,
                    total_bytes: stats.total_bytes,
                },
            });
            tokio::time::sleep(Duration::from_millis(PROGRESS_POLL_MS)).await;
        }
        Ok(self.snapshot_path(manifest))
    }

    /// Starts the walk over the stripes (see `stripes.rs`) beside the download; dropped with it.
    fn start_walk(
        &self,
        handle: &Arc<ManagedTorrent>,
        manifest: &Manifest,
        hint: crate::stripes::StartHint,
    ) -> crate::origin::AbortOnDrop<()> {
        *self.walk.lock().expect("walk lock") =
            crate::stripes::Walk { snapshot_id: manifest.snapshot_id.clone(), ..Default::default() };
        let count_url = manifest.start_hint_url.as_ref().map(|url| format!("{url}/count"));
        let client = self.client.clone();
        let count_starts = move || {
            let (client, url) = (client.clone(), count_url.clone());
            async move { fetch_json(&client, url.as_deref()?).await?["n_starts"].as_u64() }
        };
        let walk = crate::stripes::walk(handle.clone(), hint, count_starts, self.walk.clone());
        crate::origin::AbortOnDrop(tokio::spawn(walk))
    }

    /// The origin's start hint, or a random start (claiming one stripe) when the origin does not answer.
    async fn start_hint(&self, manifest: &Manifest) -> crate::stripes::StartHint {
        let answer = match &manifest.start_hint_url {
            Some(url) => fetch_json(&self.client, url).await,
            None => None,
        };
        match answer.as_ref().and_then(|v| Some((v["fraction"].as_f64()?, v["n_starts"].as_u64()))) {
            Some((fraction, n_starts)) => crate::stripes::StartHint { fraction, n_starts },
            None => crate::stripes::StartHint { fraction: rand::random::<f64>(), n_starts: None },
        }
    }

    /// Streams the snapshot from the origin's HTTP URL into a temporary file, then renames it.
    async fn download_http(&self, manifest: &Manifest) -> Result<PathBuf> {
        use tokio::io::AsyncWriteExt;
        let url = manifest.http_url.as_deref().ok_or_else(|| DistributeError::ManifestField {
            field: "http_url",
            reason: "missing, and this follower downloads over HTTP".into(),
        })?;
        let http = |reason: String| DistributeError::Http { url: url.to_owned(), reason };
        // The client's timeout is per manifest poll; a snapshot download gets the download deadline.
        let mut response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(self.config.download_timeout_s))
            .send()
            .await
            .map_err(|e| http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(http(format!("status {}", response.status())));
        }
        let path = self.snapshot_path(manifest);
        let part = path.with_extension("part");
        let mut file = tokio::fs::File::create(&part).await.map_err(DistributeError::io(&part))?;
        let mut n_bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| http(e.to_string()))? {
            n_bytes += chunk.len() as u64;
            if n_bytes > manifest.size_bytes {
                return Err(DistributeError::Mismatch {
                    what: format!("more than {} bytes", manifest.size_bytes),
                });
            }
            file.write_all(&chunk).await.map_err(DistributeError::io(&part))?;
        }
        file.sync_all().await.map_err(DistributeError::io(&part))?;
        tokio::fs::rename(&part, &path).await.map_err(DistributeError::io(&path))?;
        Ok(path)
    }

    /// Drops a rejected download: the torrent, its file and its stored torrent.
    async fn forget(&self, manifest: &Manifest) {
        if let Ok(id) = manifest.info_hash.parse::<librqbit::dht::Id20>() {
            let _ = self.session.delete(TorrentIdOrHash::from(id), true).await;
        }
        let _ = std::fs::remove_file(self.snapshot_path(manifest));
        let _ = std::fs::remove_file(self.torrent_path(manifest));
    }

    async fn record_installed(&self, manifest: Manifest) -> Result<()> {
        let dropped = {
            let mut state = self.state.lock().expect("state lock");
            state.installed.retain(|m| m.snapshot_id != manifest.snapshot_id);
            state.installed.push(manifest);
            state.pending = None;
            // The current snapshot and the one before it, kept for rollback.
            let n_drop = state.installed.len().saturating_sub(2);
            let dropped: Vec<Manifest> = state.installed.drain(..n_drop).collect();
            save_state(&self.config.data_dir.join("state.json"), &state)?;
            dropped
        };
        for old in dropped {
            tracing::info!(snapshot_id = %old.snapshot_id, "garbage-collecting an old snapshot");
            self.forget(&old).await;
        }
        Ok(())
    }

    /// Keeps the disk budget: drops the rollback copy if that makes room, refuses otherwise.
    async fn make_room(&self, size_bytes: u64) -> Result<()> {
        let budget_bytes = self.config.disk_bytes_max;
        let installed = self.state().installed;
        let used = |ms: &[Manifest]| ms.iter().map(|m| m.size_bytes).sum::<u64>();
        if used(&installed) + size_bytes <= budget_bytes {
            return Ok(());
        }
        let current = installed.last().map(|m| m.size_bytes).unwrap_or(0);
        if current + size_bytes > budget_bytes {
            return Err(DistributeError::DiskBudget { size_bytes, budget_bytes });
        }
        let rollback = &installed[..installed.len() - 1];
        for old in rollback {
            tracing::info!(snapshot_id = %old.snapshot_id, "dropping the rollback copy to stay within the disk budget");
            self.forget(old).await;
        }
        let mut state = self.state.lock().expect("state lock");
        state.installed.retain(|m| !rollback.iter().any(|r| r.snapshot_id == m.snapshot_id));
        save_state(&self.config.data_dir.join("state.json"), &state)
    }

    /// Bytes uploaded and downloaded by this follower over the torrents it holds now.
    pub fn transfer_bytes(&self) -> (u64, u64) {
        self.session.with_torrents(|torrents| {
            torrents.fold((0, 0), |(up, down), (_, t)| {
                let stats = t.stats();
                let fetched = stats.live.as_ref().map(|l| l.snapshot.fetched_bytes).unwrap_or(0);
                (up + stats.uploaded_bytes, down + fetched)
            })
        })
    }

    /// librqbit's peer counters (seen, live, dead, steals, ...) per torrent held, by info hash.
    fn peer_stats(&self) -> serde_json::Value {
        self.session.with_torrents(|torrents| {
            let map: serde_json::Map<String, serde_json::Value> = torrents
                .filter_map(|(_, t)| {
                    let live = t.stats().live?;
                    Some((t.info_hash().as_string(), serde_json::to_value(live.snapshot.peer_stats).ok()?))
                })
                .collect();
            map.into()
        })
    }

    /// Bytes fetched from each peer host (the ports of one address summed: a peer may connect
    /// both ways) over the torrents held now, peers gone included: how much came from the origin.
    fn fetched_by_peer_host(&self) -> std::collections::BTreeMap<String, u64> {
        self.session.with_torrents(|torrents| {
            let mut fetched = std::collections::BTreeMap::new();
            for (_, torrent) in torrents {
                let Some(live) = torrent.live() else { continue };
                // librqbit exports the filter type only through serde: "all" keeps peers gone.
                let Ok(filter) = serde_json::from_value(serde_json::json!({ "state": "all" })) else {
                    continue;
                };
                for (addr, stats) in live.per_peer_stats_snapshot(filter).peers {
                    let host = addr.parse::<SocketAddr>().map(|a| a.ip().to_string()).unwrap_or(addr);
                    *fetched.entry(host).or_insert(0) += stats.counters.fetched_bytes;
                }
            }
            fetched
        })
    }

    pub fn status_json(&self) -> serde_json::Value {
        let (uploaded_bytes, fetched_bytes) = self.transfer_bytes();
        let installed = self.state().installed;
        serde_json::json!({
            "phase": self.phase(),
            "current": installed.last().map(|m| serde_json::json!({
                "snapshot_id": m.snapshot_id, "snapshot_version": m.snapshot_version, "target": m.target,
            })),
            "kept_snapshot_ids": installed.iter().map(|m| m.snapshot_id.clone()).collect::<Vec<_>>(),
            "uploaded_bytes": uploaded_bytes,
            "fetched_bytes": fetched_bytes,
            "fetched_by_peer_host": self.fetched_by_peer_host(),
            "outcomes": self.metrics.outcomes_json(),
            "stripes": self.walk.lock().expect("walk lock").clone(),
            "peers": self.peer_stats(),
        })
    }
}

/// The JSON document at `url`; `None` when it cannot be had.
async fn fetch_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let response = client.get(url).send().await.ok()?.error_for_status().ok()?;
    response.json().await.ok()
}

/// Whether a verified manifest should replace the current snapshot: a newer version; the same
/// snapshot moved to another target (staging promoted to production); or a rollback. The last two
/// must be signed after the current manifest, so replaying an old manifest changes nothing.
pub fn wanted(current: Option<&Manifest>, manifest: &Manifest) -> Result<bool> {
    let Some(current) = current else { return Ok(true) };
    let signed_later = manifest.created_unix_ms > current.created_unix_ms;
    if current.snapshot_id == manifest.snapshot_id {
        return Ok(manifest.target != current.target && signed_later);
    }
    if manifest.snapshot_version > current.snapshot_version || (manifest.rollback && signed_later) {
        return Ok(true);
    }
    Err(DistributeError::StaleVersion {
        version: manifest.snapshot_version,
        newest: current.snapshot_version,
    })
}

/// The info hash of a .torrent file, as 40 hex digits.
pub fn torrent_info_hash(bytes: &[u8]) -> Option<String> {
    librqbit::torrent_from_bytes(bytes).ok().map(|t| t.info_hash.as_string())
}

fn load_state(path: &Path) -> Result<FollowerState> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(DistributeError::ManifestFormat),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FollowerState::default()),
        Err(e) => Err(DistributeError::Io { path: path.to_owned(), source: e }),
    }
}

fn save_state(path: &Path, state: &FollowerState) -> Result<()> {
    crate::origin::write_atomic(path, &serde_json::to_vec_pretty(state).expect("state serializes"))
}

/// Serves `/status` (JSON) and `/metrics` (Prometheus text) until the future is dropped.
pub async fn serve_status<H: Handover + 'static>(
    follower: Arc<Follower<H>>,
    listener: tokio::net::TcpListener,
) {
    crate::http::serve(listener, move |path| {
        let follower = follower.clone();
        async move {
            use hyper::StatusCode;
            match path.as_str() {
                "/status" => crate::http::json(StatusCode::OK, &follower.status_json()),
                "/metrics" => crate::http::reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    follower.metrics.prometheus_text(),
                ),
                _ => crate::http::not_found(),
            }
        }
    })
    .await
}

/// Binds the status listener when one is configured.
pub async fn bind_status(config: &FollowConfig) -> Result<Option<tokio::net::TcpListener>> {
    match config.status_listen_addr {
        Some(addr) => Ok(Some(crate::http::bind(addr).await?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Target;

    #[test]
    fn the_example_config_is_the_default() {
        let text = include_str!("../../docs/follow.example.toml");
        assert_eq!(FollowConfig::from_toml(text).unwrap(), FollowConfig::default());
        assert!(FollowConfig::from_toml("poll_interval = 1").is_err());
        assert!(FollowConfig::default().trusted_keys().is_err(), "no trusted key is a config error");
    }

    fn manifest(id: &str, version: u64, created_unix_ms: i64, target: Target, rollback: bool) -> Manifest {
        let mut m = crate::manifest::tests::sample();
        m.snapshot_id = id.into();
        m.snapshot_version = version;
        m.created_unix_ms = created_unix_ms;
        m.target = target;
        m.rollback = rollback;
        m
    }

    #[test]
    fn which_manifests_replace_the_current_snapshot() {
        use Target::{Production as P, Staging as S};
        let current = manifest("a", 5, 100, S, false);
        let check = |m: Manifest, expected: Option<bool>| {
            let got = wanted(Some(&current), &m);
            match expected {
                Some(want) => assert_eq!(got.unwrap(), want, "{m:?}"),
                None => assert!(matches!(got, Err(DistributeError::StaleVersion { .. })), "{m:?}"),
            }
        };
        check(manifest("b", 6, 50, S, false), Some(true)); // newer version, whatever its clock
        check(manifest("a", 5, 100, S, false), Some(false)); // the same manifest again
        check(manifest("a", 5, 200, P, false), Some(true)); // promoted to production
        check(manifest("a", 5, 90, P, false), Some(false)); // an old manifest for another target
        check(manifest("c", 4, 200, P, false), None); // older, not a rollback
        check(manifest("c", 4, 200, P, true), Some(true)); // an operator's rollback
        check(manifest("c", 4, 90, P, true), None); // a replayed rollback from before
        assert!(wanted(None, &manifest("c", 1, 1, S, false)).unwrap());
    }
}

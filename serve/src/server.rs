//! The HTTP server: connections, routing, and the state every handler shares (the snapshots, the
//! tracking key, metrics). Handlers are in `handlers.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::ServeConfig;
use crate::dedup::Dedup;
use crate::error::{RequestError, ServeError};
use crate::metrics::Metrics;
use crate::quiet::{self, Answering, Progress};
use crate::served::{Prepare, Served};
use crate::slots::{keep_as_previous, link_or_copy, remove_if_exists, sync_folder, SlotPaths, Target};
use crate::token::TokenKey;
use crate::{admin, handlers};
use adsnap_events::{Event, EventLog, EventLogConfig};
use adsnap_profile_store::{Profile, ProfileRead, ProfileUpdate, Profiles, UserKey};

/// What every request handler reads.
pub struct State {
    pub config: ServeConfig,
    /// The snapshot files behind the two slots and the previous production file.
    pub slots: SlotPaths,
    /// The production snapshot. A swap stores a new `Arc`; requests in flight keep the one they
    /// loaded, and the old mapping is released when the last of them is done.
    pub production: ArcSwap<Served>,
    pub staging: ArcSwapOption<Served>,
    /// How snapshots are opened and prepared (`background_nice`, `escaped_markup_bytes_max`).
    prepare: Prepare,
    /// `header_read_timeout_ms`, checked.
    header_read_timeout: Duration,
    pub token_key: TokenKey,
    /// `tracking_token_ttl_s` and `install_attribution_window_s`, checked.
    pub token_ages: crate::config::TokenAges,
    pub metrics: Metrics,
    pub dedup: Dedup,
    /// The profile store; `None` when `profiles_enabled` is off.
    pub profiles: Option<Profiles>,
    /// The local event log; `None` only when `events_enabled` is off.
    pub events: Option<EventLog>,
    pub started: Instant,
    /// One reload at a time: two racing reloads could otherwise store an older file last.
    reload_lock: tokio::sync::Mutex<()>,
    /// Open connections at most (`connections_max`); accepting waits for a free one.
    connections: Arc<tokio::sync::Semaphore>,
}

pub fn now_unix_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl State {
    /// The time decisions and tokens are made for: the clock, unless the configuration fixes it.
    pub fn now_unix_s(&self) -> i64 {
        self.config.fixed_now_unix_s.unwrap_or_else(now_unix_s)
    }

    /// The time events are stamped with: the clock, unless the configuration fixes it.
    pub fn now_unix_ms(&self) -> i64 {
        match self.config.fixed_now_unix_s {
            Some(s) => s.saturating_mul(1000),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// Opens the configured snapshots and prepares the shared state.
    pub async fn new(mut config: ServeConfig) -> Result<Arc<State>, ServeError> {
        // Checked before anything is opened; kept without its trailing slashes.
        config.public_base_url = config.public_base_url()?.to_owned();
        if config.public_base_url.starts_with("http://") && !config.listen_addr.ip().is_loopback() {
            warn!(
                public_base_url = config.public_base_url,
                "tracking URLs are plain http: apps refuse cleartext by default (iOS App Transport Security, Android 9 and later), so their impressions and clicks would not reach this server; use https:// beyond a test"
            );
        }
        config.openrtb_seat()?;
        let token_ages = config.token_ages()?;
        let slots = SlotPaths::new(&config);
        let prepare = config.prepare()?;
        let header_read_timeout = config.header_read_timeout()?;
        let production = Served::open(&slots.production, prepare).await?;
        let staging = open_staging(&slots, prepare).await?;
        let key = match config.tracking_key()? {
            Some(key) => key,
            None => {
                warn!("no tracking_key_hex configured: tracking URLs are signed with a key of this process only");
                random_key()?
            }
        };
        let config_connections_max = config.connections_max.max(1);
        let dedup = Dedup::new(config.tracking_dedup_entries_max);
        let events = match config.events_enabled {
            true => Some(open_event_log(&config.events).await?),
            false => None,
        };
        let profiles = match config.profiles_enabled {
            true => Some(Profiles::open(&config.profiles).await?),
            false => None,
        };
        let mut metrics = Metrics::default();
        if let Some(log) = &events {
            log.register_metrics(&mut metrics.registry);
        }
        if let Some(profiles) = &profiles {
            profiles.register_metrics(&mut metrics.registry);
        }
        Ok(Arc::new(State {
            config,
            slots,
            production: ArcSwap::new(production),
            staging: ArcSwapOption::new(staging),
            prepare,
            header_read_timeout,
            token_key: TokenKey::new(key, token_ages.tracking_s),
            token_ages,
            metrics,
            dedup,
            events,
            profiles,
            started: Instant::now(),
            reload_lock: tokio::sync::Mutex::new(()),
            connections: Arc::new(tokio::sync::Semaphore::new(config_connections_max)),
        }))
    }

    /// Appends an event to the log before the response that reports it leaves. A log that
    /// refuses appends makes the request fail with 503: shedding load loses no data, answering
    /// without the event would.
    pub fn write_event(&self, event: &Event<'_>) -> Result<(), RequestError> {
        let Some(log) = &self.events else { return Ok(()) };
        log.append(event).map_err(|err| RequestError::EventsRefused(err.to_string()))
    }

    /// The profile of the user with this key, if privacy allows reading one and the store answers
    /// within its deadline (from memory when it can, without awaiting anything).
    pub async fn profile(&self, user_key: Option<u64>) -> Option<Arc<Profile>> {
        let (profiles, key) = (self.profiles.as_ref()?, UserKey(user_key?));
        // A read the memory layer answers completes on its first poll: nothing is awaited.
        match profiles.get(key).await {
            ProfileRead::Found(profile) => Some(profile),
            ProfileRead::Absent | ProfileRead::Unknown(_) => None,
        }
    }

    /// Hints that `profile(user_key)` follows: see `Profiles::prefetch`.
    pub fn prefetch_profile(&self, user_key: Option<u64>) {
        if let (Some(profiles), Some(key)) = (&self.profiles, user_key) {
            profiles.prefetch(UserKey(key));
        }
    }

    /// Queues a profile update (never waits; a full queue drops it and the store counts it).
    pub fn record_profile(&self, update: ProfileUpdate) {
        if let Some(profiles) = &self.profiles {
            profiles.record(update);
        }
    }

    /// Queues a profile update unless it would change nothing in `current`, the profile this
    /// request read (never waits).
    pub fn record_profile_given(&self, update: ProfileUpdate, current: Option<&Profile>) {
        if let Some(profiles) = &self.profiles {
            profiles.record_given(update, current);
        }
    }

    /// Makes what this server recorded durable before it exits: stops the event shipper
    /// (waiting up to `deadline` for acknowledgements in flight), syncs the log and releases its
    /// folder, and writes queued profile updates.
    pub async fn shutdown(&self, deadline: Duration) {
        if let Some(log) = &self.events {
            if let Err(err) = log.shutdown(deadline).await {
                warn!(error = %err, "the event log did not shut down cleanly");
            }
        }
        if let Some(profiles) = &self.profiles {
            if let Err(err) = profiles.flush().await {
                warn!(error = %err, "queued profile updates could not be written");
            }
        }
    }

    /// Runs one change of the snapshot slots, one at a time, counting it as a swap or a refusal.
    async fn change<T>(
        &self,
        what: &str,
        change: impl Future<Output = Result<T, ServeError>>,
    ) -> Result<T, ServeError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = change.await;
        match &result {
            Ok(_) => {
                self.metrics.snapshot_swaps.inc();
            }
            Err(err) => {
                self.metrics.snapshot_swap_failures.inc();
                warn!(error = %err, change = what, "snapshot change refused; serving what was there");
            }
        }
        result
    }

    /// Re-opens the slot files and swaps in those that verify; a file that does not verify is
    /// refused, counted, and the server keeps what it had.
    pub async fn reload(&self) -> Result<(), ServeError> {
        self.change("reload", async {
            let production = Served::open(&self.slots.production, self.prepare).await?;
            let staging = open_staging(&self.slots, self.prepare).await?;
            info!(snapshot_id = production.id_hex(), "swapping in snapshot");
            self.production.store(production);
            self.staging.store(staging);
            Ok(())
        })
        .await
    }

    /// Puts the snapshot file at `source` into the `target` slot and serves it: linked (or
    /// copied) beside the slot, verified on the snapshot opener's thread, renamed into place. The source
    /// stays as it was. Installing production keeps the replaced file for [`State::rollback`].
    pub async fn install_snapshot(&self, source: &Path, target: Target) -> Result<Arc<Served>, ServeError> {
        self.change("install", async {
            let incoming = self.slots.incoming(target);
            link_or_copy(source, &incoming).map_err(|e| slot_error(source, e))?;
            let snapshot = match Served::open(&incoming, self.prepare).await {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    let _ = remove_if_exists(&incoming);
                    return Err(ServeError::Refused { path: source.to_owned(), reason: err.to_string() });
                }
            };
            let dest = self.slots.path(target);
            if target == Target::Production {
                keep_as_previous(&self.slots, dest).map_err(|e| slot_error(&self.slots.previous, e))?;
            }
            std::fs::rename(&incoming, dest).map_err(|e| slot_error(dest, e))?;
            sync_folder(dest).map_err(|e| slot_error(dest, e))?;
            info!(snapshot_id = snapshot.id_hex(), ?target, "installed snapshot");
            match target {
                Target::Production => self.production.store(snapshot.clone()),
                Target::Staging => self.staging.store(Some(snapshot.clone())),
            }
            Ok(snapshot)
        })
        .await
    }

    /// Makes the staging snapshot production; the replaced production file becomes the
    /// previous one and the staging slice is then decided from production.
    pub async fn promote(&self) -> Result<Arc<Served>, ServeError> {
        self.change("promote", async {
            let Some(staging) = self.staging.load_full() else { return Err(ServeError::NoStaging) };
            let slots = &self.slots;
            keep_as_previous(slots, &slots.production).map_err(|e| slot_error(&slots.previous, e))?;
            std::fs::rename(&slots.staging, &slots.production).map_err(|e| slot_error(&slots.staging, e))?;
            sync_folder(&slots.production).map_err(|e| slot_error(&slots.production, e))?;
            info!(snapshot_id = staging.id_hex(), "promoted staging to production");
            self.production.store(staging.clone());
            self.staging.store(None);
            Ok(staging)
        })
        .await
    }

    /// Serves the previous production snapshot again; the one it replaces becomes the previous,
    /// so a second rollback undoes the first.
    pub async fn rollback(&self) -> Result<Arc<Served>, ServeError> {
        self.change("rollback", async {
            let slots = &self.slots;
            if !slots.previous.exists() {
                return Err(ServeError::NoPrevious(slots.previous.clone()));
            }
            let previous = Served::open(&slots.previous, self.prepare).await?;
            let swap = slots.incoming(Target::Production);
            link_or_copy(&slots.previous, &swap).map_err(|e| slot_error(&swap, e))?;
            keep_as_previous(slots, &slots.production).map_err(|e| slot_error(&slots.previous, e))?;
            std::fs::rename(&swap, &slots.production).map_err(|e| slot_error(&slots.production, e))?;
            sync_folder(&slots.production).map_err(|e| slot_error(&slots.production, e))?;
            info!(snapshot_id = previous.id_hex(), "rolled production back");
            self.production.store(previous.clone());
            Ok(previous)
        })
        .await
    }
}

async fn open_event_log(config: &EventLogConfig) -> Result<EventLog, ServeError> {
    let config = config.clone();
    // Opening recovers the tail of the last segment: file work, off the async workers. The
    // blocking thread still sees the runtime, which the shipper task is spawned on.
    tokio::task::spawn_blocking(move || EventLog::open(&config))
        .await
        .map_err(|e| ServeError::Config(format!("the event log opener stopped: {e}")))?
        .map_err(ServeError::Events)
}

fn slot_error(path: &Path, source: std::io::Error) -> ServeError {
    ServeError::Slot { path: path.to_owned(), source }
}

/// The staging file when there is one: required when configured by name, optional beside the
/// production file.
async fn open_staging(slots: &SlotPaths, prepare: Prepare) -> Result<Option<Arc<Served>>, ServeError> {
    if slots.staging_required || slots.staging.exists() {
        Ok(Some(Served::open(&slots.staging, prepare).await?))
    } else {
        Ok(None)
    }
}

fn random_key() -> Result<[u8; 32], ServeError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| ServeError::Config(format!("no randomness for a tracking key: {e}")))?;
    Ok(key)
}

/// Binds the configured address.
pub async fn bind(config: &ServeConfig) -> Result<TcpListener, ServeError> {
    bind_addr(config.listen_addr).await
}

/// Binds the configured admin address.
pub async fn bind_admin(config: &ServeConfig) -> Result<TcpListener, ServeError> {
    if !config.admin_listen_addr.ip().is_loopback() {
        warn!(addr = %config.admin_listen_addr, "the admin endpoints listen beyond loopback: anyone who reaches them can replace the snapshot");
    }
    bind_addr(config.admin_listen_addr).await
}

async fn bind_addr(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })
}

/// Serves connections from `listener` until `shutdown` resolves. SIGHUP reloads the snapshots.
pub async fn serve(state: Arc<State>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let accept = async {
            // Wait for a connection slot before accepting: past the limit, clients queue in the
            // kernel's backlog instead of this process running out of memory or descriptors.
            let permit = state.connections.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = hangup => {
                let state = state.clone();
                tokio::spawn(async move { let _ = state.reload().await; });
            }
            (permit, accepted) = accept => match (permit, accepted) {
                (Ok(permit), Ok((stream, _))) => spawn_connection(state.clone(), stream, permit, route, Limits::Watchdog),
                (_, Err(err)) => {
                    // Out of descriptors or memory: back off briefly rather than spin.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                (Err(_), _) => return,
            },
        }
    }
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Serves the admin endpoints (snapshot install, promote, rollback) from `listener` until
/// `shutdown` resolves. They change what every request is answered from, so they listen apart
/// from the public endpoints, on loopback by default.
pub async fn serve_admin(state: Arc<State>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let connections = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS_MAX));
    loop {
        let accept = async { (connections.clone().acquire_owned().await, listener.accept().await) };
        tokio::select! {
            _ = &mut shutdown => return,
            (permit, accepted) = accept => match (permit, accepted) {
                (Ok(permit), Ok((stream, _))) => spawn_connection(state.clone(), stream, permit, admin::route, Limits::Hyper),
                (_, Err(err)) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                (Err(_), _) => return,
            },
        }
    }
}

/// Open admin connections at most: operators and a distributor, not traffic.
const ADMIN_CONNECTIONS_MAX: usize = 16;

/// How a connection's time limits are kept.
#[derive(Clone, Copy)]
enum Limits {
    /// The public endpoints: a watchdog task per connection (`quiet.rs`), no timer per request.
    Watchdog,
    /// The admin endpoints: hyper's header read timeout; their requests may take long.
    Hyper,
}

fn spawn_connection<F, Fut>(
    state: Arc<State>,
    stream: tokio::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
    router: F,
    limits: Limits,
) where
    F: Fn(Arc<State>, Request<hyper::body::Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let limit = state.header_read_timeout;
    let mut builder = http1::Builder::new();
    builder.max_headers(state.config.request_headers_max);
    // hyper's default writev stays: copying head and body into one buffer for one write saved
    // 230 instructions an ad request (callgrind), yet served about 1.3% fewer requests a second
    // in six interleaved runs of both builds on one core.
    let io = TokioIo::new(stream);
    match limits {
        Limits::Hyper => {
            builder.timer(TokioTimer::new()).header_read_timeout(limit);
            let service = service_fn(move |request| router(state.clone(), request));
            spawn_served(&builder, io, service, permit);
        }
        Limits::Watchdog => {
            builder.header_read_timeout(None);
            let progress = Arc::new(Progress::default());
            let counted = progress.clone();
            let service = service_fn(move |request| Answering::new(&counted, router(state.clone(), request)));
            let connection = spawn_served(&builder, io, service, permit);
            tokio::spawn(quiet::watch(connection, progress, limit));
        }
    }
}

/// Serves one connection on a task of its own, which holds the connection's slot.
fn spawn_served<S>(
    builder: &http1::Builder,
    io: TokioIo<tokio::net::TcpStream>,
    service: S,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> tokio::task::JoinHandle<()>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Full<Bytes>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(io, service);
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    })
}

/// Every public path and the methods it takes, as `Allow` names them: what a request the router
/// does not take is answered from (a 405 for a known path, else a 404).
pub const PATHS: &[(&str, &str)] = &[
    ("/v1/ad", "POST"),
    ("/openrtb2/bid", "POST"),
    ("/v1/imp", "GET"),
    ("/v1/click", "GET"),
    ("/v1/win", "GET"),
    ("/v1/bill", "GET"),
    ("/v1/loss", "GET"),
    ("/v1/install", "GET"),
    ("/health", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
];

/// Every admin path and the methods it takes, as [`PATHS`] for the public ones.
pub const ADMIN_PATHS: &[(&str, &str)] = &[
    ("/admin/install", "POST"),
    ("/admin/promote", "POST"),
    ("/admin/rollback", "POST"),
    ("/admin/reload", "POST"),
    ("/admin/snapshots", "GET"),
];

async fn route(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    // Endpoint indexes are positions in `metrics::ENDPOINTS`.
    let (endpoint_idx, response) = match (request.method().as_str(), request.uri().path()) {
        ("POST", "/v1/ad") => (0, handlers::ad(&state, request).await),
        ("GET", "/v1/imp") => (1, handlers::tracking(&state, &request, handlers::TrackingKind::Impression)),
        ("GET", "/v1/click") => (2, handlers::tracking(&state, &request, handlers::TrackingKind::Click)),
        // HEAD, for load balancers' checks: hyper sends the head of the GET answer, no body.
        ("GET" | "HEAD", "/health") => (3, handlers::health(&state)),
        ("GET" | "HEAD", "/metrics") => (4, handlers::metrics(&state)),
        ("POST", "/openrtb2/bid") => (6, handlers::openrtb_bid(&state, request).await),
        ("GET", "/v1/win") => (7, handlers::tracking(&state, &request, handlers::TrackingKind::Win)),
        ("GET", "/v1/bill") => (8, handlers::tracking(&state, &request, handlers::TrackingKind::Bill)),
        ("GET", "/v1/loss") => (9, handlers::tracking(&state, &request, handlers::TrackingKind::Loss)),
        ("GET", "/v1/install") => (10, handlers::install(&state, &request)),
        (method, path) => (5, handlers::unrouted(method, path, PATHS, "no endpoint")),
    };
    state.metrics.request(endpoint_idx, response.status().as_u16(), started.elapsed().as_secs_f64());
    Ok(response)
}

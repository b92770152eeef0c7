//! The HTTP server: connections, routing, and the state every handler shares (the snapshots, the
//! tracking key, metrics). Handlers are in `handlers.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adsnap_snapshot::Snapshot;
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
use crate::error::ServeError;
use crate::handlers;
use crate::metrics::Metrics;
use crate::token::TokenKey;

/// What every request handler reads.
pub struct State {
    pub config: ServeConfig,
    /// The production snapshot. A swap stores a new `Arc`; requests in flight keep the one they
    /// loaded, and the old mapping is released when the last of them is done.
    pub production: ArcSwap<Snapshot>,
    pub staging: ArcSwapOption<Snapshot>,
    pub token_key: TokenKey,
    pub metrics: Metrics,
    pub dedup: Dedup,
    pub started: Instant,
    /// One reload at a time: two racing reloads could otherwise store an older file last.
    reload_lock: tokio::sync::Mutex<()>,
    /// Open connections at most (`connections_max`); accepting waits for a free one.
    connections: Arc<tokio::sync::Semaphore>,
}

pub fn now_unix_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn open_blocking(path: &Path) -> Result<Arc<Snapshot>, ServeError> {
    let path = path.to_owned();
    // Opening maps and verifies the whole file: far too long for an async worker.
    let opened = tokio::task::spawn_blocking(move || Snapshot::open(&path))
        .await
        .map_err(|e| ServeError::Config(format!("the snapshot opener stopped: {e}")))?;
    Ok(Arc::new(opened?))
}

impl State {
    /// The time decisions and tokens are made for: the clock, unless the configuration fixes it.
    pub fn now_unix_s(&self) -> i64 {
        self.config.fixed_now_unix_s.unwrap_or_else(now_unix_s)
    }

    /// Opens the configured snapshots and prepares the shared state.
    pub async fn new(config: ServeConfig) -> Result<Arc<State>, ServeError> {
        let production = open_blocking(&config.snapshot_path).await?;
        let staging = match &config.staging_snapshot_path {
            Some(path) => Some(open_blocking(path).await?),
            None => None,
        };
        let key = match config.tracking_key()? {
            Some(key) => key,
            None => {
                warn!("no tracking_key_hex configured: tracking URLs are signed with a key of this process only");
                random_key()
            }
        };
        let ttl_s = config.tracking_token_ttl_s as i64;
        let config_connections_max = config.connections_max.max(1);
        let dedup = Dedup::new(config.tracking_dedup_entries_max);
        Ok(Arc::new(State {
            config,
            production: ArcSwap::new(production),
            staging: ArcSwapOption::new(staging),
            token_key: TokenKey::new(key, ttl_s),
            metrics: Metrics::default(),
            dedup,
            started: Instant::now(),
            reload_lock: tokio::sync::Mutex::new(()),
            connections: Arc::new(tokio::sync::Semaphore::new(config_connections_max)),
        }))
    }

    /// Re-opens the configured snapshot files and swaps in those that verify; a file that does
    /// not verify is refused, counted, and the server keeps what it had.
    pub async fn reload(&self) -> Result<(), ServeError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.reload_inner().await;
        match &result {
            Ok(()) => {
                self.metrics.snapshot_swaps.inc();
            }
            Err(err) => {
                self.metrics.snapshot_swap_failures.inc();
                warn!(error = %err, "snapshot reload refused; serving the previous one");
            }
        };
        result
    }

    async fn reload_inner(&self) -> Result<(), ServeError> {
        let production = open_blocking(&self.config.snapshot_path).await?;
        let staging = match &self.config.staging_snapshot_path {
            Some(path) => Some(open_blocking(path).await?),
            None => None,
        };
        info!(snapshot_id = %production.header().id_hex(), "swapping in snapshot");
        self.production.store(production);
        self.staging.store(staging);
        Ok(())
    }
}

fn random_key() -> [u8; 32] {
    // The standard library's hasher seeds are random per process; four of them make a key that
    // only has to be unguessable for this process's lifetime.
    use std::hash::{BuildHasher, RandomState};
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&RandomState::new().hash_one(Instant::now()).to_le_bytes());
    }
    key
}

/// Binds the configured address.
pub async fn bind(config: &ServeConfig) -> Result<TcpListener, ServeError> {
    TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServeError::Listen { addr: config.listen_addr, source })
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
                (Ok(permit), Ok((stream, _))) => spawn_connection(state.clone(), stream, permit),
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

fn spawn_connection(
    state: Arc<State>,
    stream: tokio::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        let _permit = permit;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(state.config.header_read_timeout_ms))
            .max_headers(state.config.request_headers_max);
        let service = service_fn(move |request| route(state.clone(), request));
        if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    });
}

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
        ("GET", "/health") => (3, handlers::health(&state)),
        ("GET", "/metrics") => (4, handlers::metrics(&state)),
        ("POST", "/openrtb2/bid") => (6, handlers::openrtb_bid(&state, request).await),
        ("GET", "/v1/win") => (7, handlers::tracking(&state, &request, handlers::TrackingKind::Win)),
        ("GET", "/v1/bill") => (8, handlers::tracking(&state, &request, handlers::TrackingKind::Bill)),
        ("GET", "/v1/loss") => (9, handlers::tracking(&state, &request, handlers::TrackingKind::Loss)),
        (_, path) => (5, handlers::not_found(path)),
    };
    state.metrics.request(endpoint_idx, response.status().as_u16(), started.elapsed().as_secs_f64());
    Ok(response)
}

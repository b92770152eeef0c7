//! The BitTorrent session both the origin and the followers run: TCP only, no DHT, no local
//! service discovery, no persistence (the follower keeps its own state file), rate limits from
//! configuration.

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use librqbit::limits::LimitsConfig;
use librqbit::{
    ConnectionOptions, ListenerMode, ListenerOptions, PeerConnectionOptions, Session, SessionOptions,
};
use serde::{Deserialize, Serialize};

use crate::error::{DistributeError, Result};

/// How a process joins the swarm.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Address peers connect to. Port 0 picks a free port (on loopback it is probed first, because
    /// the tracker must be told the real port).
    pub peer_listen_addr: SocketAddr,
    /// Upload rate limit in bytes per second; `None` is unlimited.
    pub upload_bytes_per_s_max: Option<u32>,
    /// Download rate limit in bytes per second; `None` is unlimited.
    pub download_bytes_per_s_max: Option<u32>,
    /// Most peers connected per torrent.
    pub peers_per_torrent_max: usize,
    /// Keep-alive messages on idle peer connections. Two followers that start together have
    /// nothing for each other at first; without a keep-alive well inside the read timeout their
    /// connection dies idle (librqbit's defaults: 120 s keep-alive, 10 s timeout) and librqbit
    /// does not call back for a long time.
    pub peer_keep_alive_interval_s: u64,
    /// A peer connection silent for this long is dropped.
    pub peer_read_write_timeout_s: u64,
    /// Most block requests (16 KiB each) kept outstanding per peer. A requested piece is bound to
    /// that peer until it arrives, so a deep queue at a slow peer (the origin shared by a whole
    /// fleet) holds pieces that faster peers could have given, and makes a follower run past its
    /// claimed stripes (librqbit's default is 128, 2 MiB).
    pub peer_requests_max: usize,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            peer_listen_addr: "0.0.0.0:4240".parse().expect("valid address"),
            upload_bytes_per_s_max: None,
            download_bytes_per_s_max: None,
            peers_per_torrent_max: 64,
            peer_keep_alive_interval_s: 3,
            peer_read_write_timeout_s: 20,
            peer_requests_max: 32,
        }
    }
}

impl SwarmConfig {
    fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            upload_bps: self.upload_bytes_per_s_max.and_then(NonZeroU32::new),
            download_bps: self.download_bytes_per_s_max.and_then(NonZeroU32::new),
        }
    }
}

/// librqbit's blocking permits per session: every chunk written or read for upload, every piece
/// hash check and every open stream holds one (a stream for its whole life). librqbit's default is
/// 8; the stripe walk keeps up to [`crate::stripes::STRIPE_READERS_MAX`] streams open, and the rest
/// must stay for the disk.
pub const BLOCKING_PERMITS: usize = 16;

/// Starts a session whose torrents default to `output_dir`.
pub async fn start(output_dir: &Path, config: &SwarmConfig) -> Result<Arc<Session>> {
    let listen_addr = resolve_port(config.peer_listen_addr)?;
    let options = SessionOptions {
        dht: None,
        disable_local_service_discovery: true,
        persistence: None,
        fastresume: false,
        listen: Some(ListenerOptions {
            mode: ListenerMode::TcpOnly,
            listen_addr,
            // librqbit leaves the port out of announces on loopback (it falls back to its default
            // port), so it is always given explicitly.
            announce_port: Some(listen_addr.port()),
            ipv4_only: listen_addr.is_ipv4(),
            ..Default::default()
        }),
        connect: Some(ConnectionOptions {
            peer_opts: Some(PeerConnectionOptions {
                keep_alive_interval: Some(Duration::from_secs(config.peer_keep_alive_interval_s.max(1))),
                read_write_timeout: Some(Duration::from_secs(config.peer_read_write_timeout_s.max(2))),
                max_request_window: Some(config.peer_requests_max.max(1)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ratelimits: config.limits(),
        peer_limit: Some(config.peers_per_torrent_max),
        ipv4_only: listen_addr.is_ipv4(),
        client_name_and_version: Some(format!("adsnap {}", env!("CARGO_PKG_VERSION"))),
        // Despite its name, librqbit only sizes its blocking permits with it (see BLOCKING_PERMITS).
        runtime_worker_threads: Some(BLOCKING_PERMITS),
        ..Default::default()
    };
    Session::new_with_opts(output_dir.to_owned(), options).await.map_err(DistributeError::Torrent)
}

fn resolve_port(addr: SocketAddr) -> Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe =
        TcpListener::bind(addr).map_err(|e| DistributeError::Config(format!("binding {addr}: {e}")))?;
    probe.local_addr().map_err(|e| DistributeError::Config(format!("binding {addr}: {e}")))
}

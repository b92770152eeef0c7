//! A real 3-node NATS JetStream cluster (Debian's `nats-server`) on free loopback ports, each
//! node with its own store in a temporary folder. Nodes can be killed and restarted; every
//! process is killed when the cluster is dropped.
//!
//! Also used by the binary's tests (`tests/abtest_cli.rs` includes this file by path), so it
//! needs nothing beyond `adsnap-events`, `tempfile` and `tokio`.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adsnap_events::ShipperConfig;

pub struct Node {
    pub name: String,
    pub client_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

#[path = "../../../tests/support/ports.rs"]
mod ports;
use ports::free_ports;

impl NatsCluster {
    pub fn start(n_nodes: usize) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n_nodes);
        let (client_ports, route_ports) = ports.split_at(n_nodes);
        let mut nodes = Vec::new();
        for idx in 0..n_nodes {
            let name = format!("n{idx}");
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let mut routes = String::new();
            for (other, port) in route_ports.iter().enumerate() {
                if other != idx {
                    write!(routes, "\"nats-route://127.0.0.1:{port}\", ").unwrap();
                }
            }
            let text = format!(
                "server_name: \"{name}\"\nlisten: \"127.0.0.1:{client}\"\n\
                 log_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 2GB }}\n\
                 cluster {{ name: \"adsnap-test\", listen: \"127.0.0.1:{route}\", routes: [{routes}] }}\n",
                client = client_ports[idx],
                route = route_ports[idx],
                log = dir.path().join(format!("{name}.log")).display(),
                store = store.display(),
            );
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config, text).unwrap();
            nodes.push(Node { name, client_port: client_ports[idx], config, child: None });
        }
        let mut cluster = NatsCluster { dir, nodes };
        for idx in 0..n_nodes {
            cluster.start_node(idx);
        }
        cluster
    }

    pub fn start_node(&mut self, idx: usize) {
        let node = &mut self.nodes[idx];
        assert!(node.child.is_none(), "{} is running", node.name);
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed by scripts/install-deps.sh");
        node.child = Some(child);
        let port = node.client_port;
        wait_for(
            Duration::from_secs(20),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "node listening",
        );
    }

    /// SIGKILL, like a crashed machine's process.
    pub fn kill_node(&mut self, idx: usize) {
        if let Some(mut child) = self.nodes[idx].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect()
    }

    /// The client URLs of every node but `idx` (one that was killed).
    pub fn urls_except(&self, idx: usize) -> Vec<String> {
        self.urls().into_iter().enumerate().filter(|(i, _)| *i != idx).map(|(_, url)| url).collect()
    }

    pub fn shipper_config(&self, stream: &str) -> ShipperConfig {
        shipper_config_for(self.urls(), stream)
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// Shipper settings for tests: short timeouts and backoffs so that outages resolve quickly.
pub fn shipper_config_for(urls: Vec<String>, stream: &str) -> ShipperConfig {
    {
        ShipperConfig {
            urls,
            stream: stream.into(),
            subject: format!("adsnap.test.{}", stream.to_lowercase()),
            ack_timeout_ms: 2000,
            retry_backoff_ms_max: 500,
            position_sync_interval_ms: 50,
            batch_events_max: 500,
            ..ShipperConfig::default()
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for idx in 0..self.nodes.len() {
            self.kill_node(idx);
        }
    }
}

/// Polls `condition` until it holds, panicking with `what` after `deadline`.
pub fn wait_for(deadline: Duration, mut condition: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async twin of [`wait_for`].
pub async fn wait_for_async(deadline: Duration, mut condition: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

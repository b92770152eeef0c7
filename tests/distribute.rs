//! Distribution end to end through the binary: opentracker, an `adsnap origin`, `adsnap publish`,
//! `adsnap follow` processes and the `adsnap serve` processes they feed, all on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every wait in these tests polls a condition until this deadline.
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);
/// Small pieces, so that even the example catalog's snapshot is many pieces.
const PIECE_BYTES: u32 = 16 * 1024;

fn adsnap_bin() -> &'static str {
    env!("CARGO_BIN_EXE_adsnap")
}

fn run(args: &[&str]) -> Output {
    Command::new(adsnap_bin()).args(args).output().expect("adsnap runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (and reaped) when the test ends, its output kept in a log file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, program: &str, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .env("ADSNAP_LOG", "info,librqbit=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Proc { name: name.to_owned(), child, log }
    }

    fn adsnap(name: &str, args: &[String], dir: &Path) -> Proc {
        Proc::spawn(name, adsnap_bin(), args, dir)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        format!("--- {} ---\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn get_json(url: &str) -> Option<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let response = client.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    })
}

fn build_snapshot(dir: &Path, name: &str, version: u64) -> (PathBuf, String) {
    let out = dir.join(name);
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog");
    let built = run(&[
        "build",
        catalog.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--now",
        "2026-11-22T00:00:00Z",
        "--snapshot-version",
        &version.to_string(),
    ]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let inspected = run(&["inspect", out.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    (out, report["snapshot_id"].as_str().unwrap().to_owned())
}

/// Debian's opentracker on loopback, accepting the info hashes in its whitelist.
struct Tracker {
    proc: Proc,
    url: String,
    whitelist: PathBuf,
}

impl Tracker {
    fn start(dir: &Path) -> Tracker {
        let root = dir.join("tracker");
        std::fs::create_dir_all(&root).unwrap();
        let whitelist = root.join("whitelist.txt");
        std::fs::write(&whitelist, "").unwrap();
        let port = free_port().to_string();
        // It chroots into its root folder, so the whitelist is named relative to it.
        let args: Vec<String> = ["-i", "127.0.0.1", "-p", &port, "-P", &port, "-d", root.to_str().unwrap()]
            .into_iter()
            .chain(["-w", "whitelist.txt", "-u", "nobody"])
            .map(str::to_owned)
            .collect();
        let proc = Proc::spawn("opentracker", "opentracker", &args, dir);
        let url = format!("http://127.0.0.1:{port}/announce");
        wait_for("opentracker to listen", || std::net::TcpStream::connect(format!("127.0.0.1:{port}")).ok());
        Tracker { proc, url, whitelist }
    }
}

/// The origin's configuration file and the processes around it.
struct Fleet {
    dir: PathBuf,
    tracker: Tracker,
    origin_config: PathBuf,
    origin_http: String,
    public_key: String,
    origin: Option<Proc>,
}

impl Fleet {
    fn new(dir: &Path) -> Fleet {
        let tracker = Tracker::start(dir);
        let key = dir.join("publisher.key");
        let made = run(&["keygen", "--out", key.to_str().unwrap()]);
        assert!(made.status.success(), "{}", text(&made.stderr));
        let public_key = std::fs::read_to_string(dir.join("publisher.key.pub")).unwrap().trim().to_owned();
        let (http_port, peer_port) = (free_port(), free_port());
        let origin_http = format!("http://127.0.0.1:{http_port}");
        let config = format!(
            r#"origin_dir = "{origin_dir}"
signing_key_path = "{key}"
trackers = ["{tracker}"]
http_listen_addr = "127.0.0.1:{http_port}"
public_base_url = "{origin_http}"
seed_peers = ["127.0.0.1:{peer_port}"]
piece_bytes = {PIECE_BYTES}
tracker_whitelist_path = "{whitelist}"
tracker_reload_command = ["kill", "-HUP", "{tracker_pid}"]
poll_interval_ms = 50

[swarm]
peer_listen_addr = "127.0.0.1:{peer_port}"
"#,
            origin_dir = dir.join("origin").display(),
            key = key.display(),
            tracker = tracker.url,
            whitelist = tracker.whitelist.display(),
            tracker_pid = tracker.proc.pid(),
        );
        let origin_config = dir.join("origin.toml");
        std::fs::write(&origin_config, config).unwrap();
        Fleet { dir: dir.to_owned(), tracker, origin_config, origin_http, public_key, origin: None }
    }

    fn start_origin(&mut self) {
        let args = vec!["origin".to_owned(), "--config".to_owned(), self.origin_config.display().to_string()];
        self.origin = Some(Proc::adsnap("origin", &args, &self.dir));
        let url = format!("{}/status", self.origin_http);
        wait_for("the origin to answer", || get_json(&url));
    }

    fn publish(&self, snapshot: &Path, target: &str, rollback: bool) -> Output {
        let mut args = vec!["publish", snapshot.to_str().unwrap(), "--config"];
        args.push(self.origin_config.to_str().unwrap());
        args.extend(["--target", target]);
        if rollback {
            args.push("--rollback");
        }
        run(&args)
    }

    fn origin_status(&self) -> serde_json::Value {
        get_json(&format!("{}/status", self.origin_http)).expect("origin answers")
    }
}

/// An `adsnap serve` process and the `adsnap follow` process feeding it.
struct Member {
    server: Proc,
    server_url: String,
    follower: Option<Proc>,
    follower_args: Vec<String>,
    status_url: String,
    name: String,
    dir: PathBuf,
}

impl Member {
    fn start(fleet: &Fleet, name: &str, initial: &Path, extra: &[&str]) -> Member {
        let dir = fleet.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let production = dir.join("production.snap");
        std::fs::copy(initial, &production).unwrap();
        let server_port = free_port();
        let server_url = format!("http://127.0.0.1:{server_port}");
        let server_args: Vec<String> = vec![
            "serve".into(),
            "--listen-addr".into(),
            format!("127.0.0.1:{server_port}"),
            "--snapshot-path".into(),
            production.display().to_string(),
        ];
        let server = Proc::adsnap(&format!("{name}-serve"), &server_args, &fleet.dir);
        wait_for("the server to answer", || get_json(&format!("{server_url}/health")));
        let status_port = free_port();
        let mut follower_args: Vec<String> = vec![
            "follow".into(),
            "--data-dir".into(),
            dir.join("follower").display().to_string(),
            "--manifest-url".into(),
            format!("{}/manifest.json", fleet.origin_http),
            "--publisher-key".into(),
            fleet.public_key.clone(),
            "--poll-interval-ms".into(),
            "100".into(),
            "--status-listen-addr".into(),
            format!("127.0.0.1:{status_port}"),
            "--peer-listen-addr".into(),
            "127.0.0.1:0".into(),
            "--production-path".into(),
            production.display().to_string(),
            "--staging-path".into(),
            dir.join("staging.snap").display().to_string(),
            "--reload-command".into(),
            format!("kill -HUP {}", server.pid()),
        ];
        follower_args.extend(extra.iter().map(|s| s.to_string()));
        let mut member = Member {
            server,
            server_url,
            follower: None,
            follower_args,
            status_url: format!("http://127.0.0.1:{status_port}/status"),
            name: name.to_owned(),
            dir: fleet.dir.clone(),
        };
        member.start_follower();
        member
    }

    fn start_follower(&mut self) {
        self.follower = Some(Proc::adsnap(&format!("{}-follow", self.name), &self.follower_args, &self.dir));
        wait_for("the follower to answer", || get_json(&self.status_url));
    }

    fn serving_id(&self) -> Option<String> {
        let health = get_json(&format!("{}/health", self.server_url))?;
        health["snapshot"]["id"].as_str().map(str::to_owned)
    }

    fn status(&self) -> serde_json::Value {
        get_json(&self.status_url).expect("follower answers")
    }
}

fn wait_all_serving(members: &[Member], id: &str) {
    for member in members {
        wait_for(&format!("{} to serve {id}", member.name), || {
            (member.serving_id().as_deref() == Some(id)).then_some(())
        });
    }
}

#[test]
fn four_followers_get_each_version_through_the_swarm_and_their_servers_serve_it() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, v0_id) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, v1_id) = build_snapshot(dir.path(), "v1.snap", 11);
    let (v2, v2_id) = build_snapshot(dir.path(), "v2.snap", 12);
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    let members: Vec<Member> = (0..4).map(|i| Member::start(&fleet, &format!("m{i}"), &v0, &[])).collect();
    for member in &members {
        assert_eq!(member.serving_id().as_deref(), Some(v0_id.as_str()));
    }

    let published = fleet.publish(&v1, "production", false);
    assert!(published.status.success(), "{}", text(&published.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    assert_eq!(manifest["manifest"]["snapshot_id"], v1_id.as_str());
    let whitelist = std::fs::read_to_string(&fleet.tracker.whitelist).unwrap();
    assert!(whitelist.contains(manifest["manifest"]["info_hash"].as_str().unwrap()));
    wait_all_serving(&members, &v1_id);

    let published = fleet.publish(&v2, "production", false);
    assert!(published.status.success(), "{}", text(&published.stderr));
    wait_all_serving(&members, &v2_id);
    for member in &members {
        let status = member.status();
        assert_eq!(status["kept_snapshot_ids"], serde_json::json!([v1_id, v2_id]), "{status}");
        assert_eq!(status["outcomes"]["installed"], 2, "{status}");
    }
    let uploaded_by_followers: u64 =
        members.iter().map(|m| m.status()["uploaded_bytes"].as_u64().unwrap()).sum();
    assert!(uploaded_by_followers > 0, "followers served each other nothing");

    // An older version is refused unless it is an explicit rollback; then every server goes back.
    let refused = fleet.publish(&v1, "production", false);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("not newer"), "{}", text(&refused.stderr));
    let rolled_back = fleet.publish(&v1, "production", true);
    assert!(rolled_back.status.success(), "{}", text(&rolled_back.stderr));
    wait_all_serving(&members, &v1_id);
}

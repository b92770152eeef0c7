//! Distribution end to end through the binary: opentracker, an `adsnap origin`, `adsnap publish`,
//! `adsnap follow` processes and the `adsnap serve` processes they feed, all on loopback.

use std::net::SocketAddr;

#[path = "support/ports.rs"]
mod ports;
use ports::free_port;
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
            .current_dir(dir)
            // ADSNAP_LOG set for the tests reaches every process (librqbit=debug tells why peers die).
            .env("ADSNAP_LOG", std::env::var("ADSNAP_LOG").unwrap_or("info,librqbit=warn".into()))
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

    /// Panics with the log if the process has exited (it should run until killed).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}\n{}", self.name, self.log_text());
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The first line of the log holding `needle`, once the process has written it.
    fn wait_line(&mut self, needle: &str) -> String {
        wait_for(&format!("{} to log {needle:?}", self.name), || {
            self.assert_running();
            let log = std::fs::read_to_string(&self.log).ok()?;
            log.lines().find(|line| line.contains(needle)).map(str::to_owned)
        })
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

fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, probe, String::new)
}

/// As [`wait_for`], with `context()` (what was seen at the deadline) in the panic message.
fn wait_for_or<T>(what: &str, mut probe: impl FnMut() -> Option<T>, context: impl FnOnce() -> String) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() >= DEADLINE {
            panic!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(POLL);
    }
}

/// The address written after ` {name}=` in a log line.
fn logged_addr(line: &str, name: &str) -> SocketAddr {
    let value = line.split_once(&format!(" {name}=")).map_or("", |(_, rest)| rest);
    let value = value.split_whitespace().next().unwrap_or_default();
    value.parse().unwrap_or_else(|e| panic!("no address {name} in {line:?}: {e}"))
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

/// A generated catalog of this many campaigns builds into a snapshot of about 2.3 MB.
const N_CAMPAIGNS: &str = "2000";

/// Builds the test catalog (generated once per folder) with the given version.
fn build_snapshot(dir: &Path, name: &str, version: u64) -> (PathBuf, String) {
    let out = dir.join(name);
    let catalog = dir.join("catalog");
    if !catalog.exists() {
        let made = run(&["gen", "--out", catalog.to_str().unwrap(), "--campaigns", N_CAMPAIGNS]);
        assert!(made.status.success(), "{}", text(&made.stderr));
    }
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
        // It opens the whitelist before it chroots, relative to its working folder.
        let mut proc = Proc::spawn("opentracker", "opentracker", &args, &root);
        let url = format!("http://127.0.0.1:{port}/announce");
        wait_for("opentracker to listen", || {
            proc.assert_running();
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).ok()
        });
        Tracker { proc, url, whitelist }
    }
}

impl Tracker {
    /// Peers of a torrent (seeds and not), from the tracker's standard scrape answer.
    fn peers(&self, info_hash_hex: &str) -> u64 {
        let escaped: String = info_hash_hex
            .as_bytes()
            .chunks(2)
            .map(|pair| format!("%{}", std::str::from_utf8(pair).unwrap()))
            .collect();
        let url = format!("{}?info_hash={escaped}", self.url.replace("/announce", "/scrape"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let body = runtime.block_on(async { reqwest::get(url).await.ok()?.bytes().await.ok() });
        let body = body.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        // A bencoded dictionary: ...8:completei<N>e...10:incompletei<N>e...
        let count = |key: &str| -> u64 {
            let Some(at) = body.find(key) else { return 0 };
            body[at + key.len()..].split('e').next().and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        count("8:completei") + count("10:incompletei")
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
        let mut origin = Proc::adsnap("origin", &args, &self.dir);
        let url = format!("{}/status", self.origin_http);
        wait_for("the origin to answer", || {
            origin.assert_running();
            get_json(&url)
        });
        self.origin = Some(origin);
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

    /// Publishes `snapshot` for `target`, which must succeed, and returns what publish printed.
    fn publish_ok(&self, snapshot: &Path, target: &str) -> serde_json::Value {
        let published = self.publish(snapshot, target, false);
        assert!(published.status.success(), "{}", text(&published.stderr));
        serde_json::from_slice(&published.stdout).unwrap()
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
        Member::start_with(fleet, name, initial, extra, false)
    }

    /// `admin`: the follower hands over through the server's admin listener rather than by
    /// linking into the server's path and sending it SIGHUP.
    fn start_with(fleet: &Fleet, name: &str, initial: &Path, extra: &[&str], admin: bool) -> Member {
        let dir = fleet.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let production = dir.join("production.snap");
        std::fs::copy(initial, &production).unwrap();
        // Every listener binds port 0 and the test reads the port it got from the log: a port
        // picked free beforehand can be taken by any connection made in between.
        let server_args: Vec<String> = vec![
            "serve".into(),
            "--listen-addr".into(),
            "127.0.0.1:0".into(),
            "--admin-listen-addr".into(),
            "127.0.0.1:0".into(),
            "--snapshot-path".into(),
            production.display().to_string(),
            // Each server of the fleet has its own event log and profile store.
            "--events-dir".into(),
            dir.join("events").display().to_string(),
            "--profiles-path".into(),
            dir.join("profiles").display().to_string(),
        ];
        let mut server = Proc::adsnap(&format!("{name}-serve"), &server_args, &dir);
        let serving = server.wait_line(" serving addr=");
        let server_url = format!("http://{}", logged_addr(&serving, "addr"));
        let admin_addr = logged_addr(&serving, "admin_addr");
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
            "127.0.0.1:0".into(),
        ];
        if admin {
            follower_args.extend(["--admin-url".to_owned(), format!("http://{admin_addr}")]);
        } else {
            follower_args.extend([
                "--production-path".to_owned(),
                production.display().to_string(),
                "--staging-path".to_owned(),
                // The server's default staging slot beside its production file.
                dir.join("production.snap.staging").display().to_string(),
                "--reload-command".to_owned(),
                format!("kill -HUP {}", server.pid()),
            ]);
        }
        follower_args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--peer-listen-addr") {
            follower_args.extend(["--peer-listen-addr".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let mut member = Member {
            server,
            server_url,
            follower: None,
            follower_args,
            status_url: String::new(),
            name: name.to_owned(),
            dir: fleet.dir.clone(),
        };
        member.start_follower();
        member
    }

    /// Starts the follower (again), on a new status port.
    fn start_follower(&mut self) {
        let mut follower = Proc::adsnap(&format!("{}-follow", self.name), &self.follower_args, &self.dir);
        let ready = follower.wait_line("follower status http=");
        self.status_url = format!("http://{}/status", logged_addr(&ready, "http"));
        self.follower = Some(follower);
    }

    fn staging_id(&self) -> Option<String> {
        let health = get_json(&format!("{}/health", self.server_url))?;
        health["staging_snapshot"]["id"].as_str().map(str::to_owned)
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
        wait_for_or(
            &format!("{} to serve {id}", member.name),
            || (member.serving_id().as_deref() == Some(id)).then_some(()),
            || format!("its follower's status: {}", get_json(&member.status_url).unwrap_or_default()),
        );
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

    let manifest = fleet.publish_ok(&v1, "production");
    assert_eq!(manifest["manifest"]["snapshot_id"], v1_id.as_str());
    let whitelist = std::fs::read_to_string(&fleet.tracker.whitelist).unwrap();
    assert!(whitelist.contains(manifest["manifest"]["info_hash"].as_str().unwrap()));
    wait_all_serving(&members, &v1_id);
    // Every follower announced itself to the tracker, beside the origin.
    let info_hash = manifest["manifest"]["info_hash"].as_str().unwrap();
    wait_for("the tracker to list five peers", || (fleet.tracker.peers(info_hash) >= 5).then_some(()));

    fleet.publish_ok(&v2, "production");
    wait_all_serving(&members, &v2_id);
    for member in &members {
        let status = member.status();
        assert_eq!(status["kept_snapshot_ids"], serde_json::json!([v1_id, v2_id]), "{status}");
        assert_eq!(status["outcomes"]["installed"], 2, "{status}");
    }
    // Whether followers that start together also trade pieces depends on timing on loopback;
    // that they serve each other is asserted where it is certain: the follower that finishes
    // after the origin is gone (`..._the_others_finish_without_the_origin`).

    // An older version is refused unless it is an explicit rollback; then every server goes back.
    let refused = fleet.publish(&v1, "production", false);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("not newer"), "{}", text(&refused.stderr));
    let rolled_back = fleet.publish(&v1, "production", true);
    assert!(rolled_back.status.success(), "{}", text(&rolled_back.stderr));
    wait_all_serving(&members, &v1_id);
}

fn snapshot_file(member_dir: &Path, id: &str) -> PathBuf {
    member_dir.join("follower/snapshots").join(format!("{id}.snap"))
}

fn follower_peer_arg() -> (String, Vec<String>) {
    let addr = format!("127.0.0.1:{}", free_port());
    (addr.clone(), vec!["--peer-listen-addr".to_owned(), addr])
}

#[test]
fn a_forged_manifest_is_refused_and_the_server_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, v0_id) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, _) = build_snapshot(dir.path(), "v1.snap", 11);
    let mut fleet = Fleet::new(dir.path());
    // The forger runs a perfectly good origin, but signs with a key the followers do not trust.
    let forger_key = dir.path().join("forger.key");
    assert!(run(&["keygen", "--out", forger_key.to_str().unwrap()]).status.success());
    let config = std::fs::read_to_string(&fleet.origin_config).unwrap();
    let real_key = dir.path().join("publisher.key").display().to_string();
    std::fs::write(&fleet.origin_config, config.replace(&real_key, forger_key.to_str().unwrap())).unwrap();
    fleet.start_origin();
    let member = Member::start(&fleet, "m0", &v0, &[]);
    assert!(fleet.publish(&v1, "production", false).status.success());
    wait_for("the forged manifest to be refused", || {
        (member.status()["outcomes"]["rejected_signature"] == 1).then_some(())
    });
    assert_eq!(member.serving_id().as_deref(), Some(v0_id.as_str()));
    let status = member.status();
    assert_eq!(status["outcomes"]["installed"], 0, "{status}");
    assert!(status["kept_snapshot_ids"].as_array().unwrap().is_empty(), "{status}");
    assert!(!snapshot_file(&dir.path().join("m0"), &v0_id).exists());
    let metrics = std::thread::spawn({
        let url = member.status_url.replace("/status", "/metrics");
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
        }
    })
    .join()
    .unwrap();
    assert!(metrics.contains(r#"adsnap_follow_manifests_total{outcome="RejectedSignature"} 1"#), "{metrics}");
}

#[test]
fn a_peer_serving_corrupt_pieces_corrupts_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, _) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, v1_id) = build_snapshot(dir.path(), "v1.snap", 11);
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    let (bad_peer, bad_args) = follower_peer_arg();
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let mut bad = Member::start(&fleet, "bad", &v0, &bad_args);
    assert!(fleet.publish(&v1, "production", false).status.success());
    wait_all_serving(std::slice::from_ref(&bad), &v1_id);
    // The bad box's disk rots under its seeding follower: every other 4 KiB block is flipped.
    // Its server shares the inode (a hard link), so it is stopped first.
    bad.server.kill();
    let path = snapshot_file(&dir.path().join("bad"), &v1_id);
    let mut bytes = std::fs::read(&path).unwrap();
    for block in bytes.chunks_mut(4096).step_by(2) {
        block.iter_mut().for_each(|b| *b = !*b);
    }
    {
        use std::io::{Seek, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(&bytes).unwrap();
    }
    // The origin now uploads slowly, so the newcomer asks the bad peer for most pieces.
    fleet.origin.as_mut().unwrap().kill();
    let config = std::fs::read_to_string(&fleet.origin_config).unwrap();
    std::fs::write(
        &fleet.origin_config,
        config.replace("[swarm]", "[swarm]\nupload_bytes_per_s_max = 131072"),
    )
    .unwrap();
    fleet.start_origin();
    let uploaded_before = bad.status()["uploaded_bytes"].as_u64().unwrap();
    let good = Member::start(&fleet, "good", &v0, &["--peer", &bad_peer]);
    wait_all_serving(std::slice::from_ref(&good), &v1_id);
    let status = good.status();
    assert_eq!(status["outcomes"]["installed"], 1, "{status}");
    assert_eq!(status["outcomes"]["rejected_mismatch"], 0, "{status}");
    let uploaded_after = bad.status()["uploaded_bytes"].as_u64().unwrap();
    assert!(uploaded_after > uploaded_before, "the corrupt peer was never asked for a piece");
    let good_copy = std::fs::read(snapshot_file(&dir.path().join("good"), &v1_id)).unwrap();
    assert_eq!(good_copy, std::fs::read(&v1).unwrap());
}

#[test]
fn a_follower_killed_mid_download_resumes_and_the_others_finish_without_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, _) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, v1_id) = build_snapshot(dir.path(), "v1.snap", 11);
    let size = std::fs::metadata(&v1).unwrap().len();
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    // A fast follower, and two that download slowly enough to be caught mid-way.
    let slow = (size / 8).max(16 * 1024).to_string();
    let fast = Member::start(&fleet, "fast", &v0, &[]);
    let slow_args = ["--download-bytes-per-s-max", slow.as_str()];
    let mut resumer = Member::start(&fleet, "resumer", &v0, &slow_args);
    let patient = Member::start(&fleet, "patient", &v0, &slow_args);
    assert!(fleet.publish(&v1, "production", false).status.success());

    let progress_at_kill = wait_for("the resumer to be part-way", || {
        let phase = resumer.status()["phase"].clone();
        let progress = phase["progress_bytes"].as_u64().unwrap_or(0);
        // A quarter in: enough pieces on disk that reusing them is unmistakable, even if the
        // last few in flight when the process dies are fetched again.
        (phase["phase"] == "downloading" && progress >= size / 4 && progress < size).then_some(progress)
    });
    resumer.follower.as_mut().unwrap().kill();

    // The origin goes away once the fast follower has a whole copy.
    wait_all_serving(std::slice::from_ref(&fast), &v1_id);
    fleet.origin.as_mut().unwrap().kill();

    resumer.start_follower();
    // Both others stay up: the restarted follower can get the rest from them alone.
    let others = [fast, patient];
    wait_all_serving(&others, &v1_id);
    wait_all_serving(std::slice::from_ref(&resumer), &v1_id);
    let status = resumer.status();
    let fetched = status["fetched_bytes"].as_u64().unwrap();
    assert!(
        fetched + progress_at_kill / 2 <= size,
        "the restarted follower fetched {fetched} of {size} bytes although {progress_at_kill} were on disk"
    );
}

#[test]
fn aria2_downloads_a_published_snapshot_from_the_swarm() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, _) = build_snapshot(dir.path(), "v1.snap", 11);
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    let manifest = fleet.publish_ok(&v1, "production");
    let torrent_url = manifest["manifest"]["torrent_url"].as_str().unwrap();
    let out = dir.path().join("aria2");
    let port = free_port().to_string();
    // Peers come from opentracker only: no DHT, no local discovery, no web seeds.
    let aria2 = Command::new("aria2c")
        .args(["--dir", out.to_str().unwrap(), "--seed-time=0", "--enable-dht=false", "--enable-dht6=false"])
        .args(["--bt-enable-lpd=false", "--listen-port", &port, "--follow-torrent=mem", "--quiet=true"])
        .args(["--stop", "60", torrent_url])
        .output()
        .expect("aria2c runs (scripts/install-deps.sh installs it)");
    assert!(aria2.status.success(), "{}{}", text(&aria2.stdout), text(&aria2.stderr));
    // The torrent is a folder named after the snapshot id holding its stripes, whose concatenation
    // in name order is the snapshot.
    let folder = out.join(manifest["manifest"]["snapshot_id"].as_str().unwrap());
    let mut stripes: Vec<PathBuf> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).collect();
    stripes.sort();
    assert_eq!(stripes.len() as u64, manifest["manifest"]["n_stripes"].as_u64().unwrap());
    assert!(stripes.len() > 1, "a snapshot of many pieces is striped");
    let joined: Vec<u8> = stripes.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(joined, std::fs::read(&v1).unwrap());
    assert!(
        fleet.origin_status()["uploaded_bytes"].as_u64().unwrap() >= std::fs::metadata(&v1).unwrap().len()
    );
}

#[test]
fn a_snapshot_over_the_disk_budget_is_refused_and_the_server_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, v0_id) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, _) = build_snapshot(dir.path(), "v1.snap", 11);
    let budget = (std::fs::metadata(&v1).unwrap().len() - 1).to_string();
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    let member = Member::start(&fleet, "small", &v0, &["--disk-bytes-max", &budget]);
    assert!(fleet.publish(&v1, "production", false).status.success());
    wait_for("the snapshot to be refused", || {
        (member.status()["outcomes"]["rejected_disk"] == 1).then_some(())
    });
    assert_eq!(member.serving_id().as_deref(), Some(v0_id.as_str()));
    assert_eq!(member.status()["outcomes"]["installed"], 0);
}

#[test]
fn followers_hand_over_through_the_admin_listener_to_staging_then_production() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, v0_id) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, v1_id) = build_snapshot(dir.path(), "v1.snap", 11);
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    let members: Vec<Member> =
        (0..2).map(|i| Member::start_with(&fleet, &format!("a{i}"), &v0, &[], true)).collect();
    assert!(fleet.publish(&v1, "staging", false).status.success());
    for member in &members {
        wait_for("staging to serve the new snapshot", || (member.staging_id()? == v1_id).then_some(()));
        assert_eq!(member.serving_id().as_deref(), Some(v0_id.as_str()), "production is untouched");
    }
    // The same snapshot again, for production: a promotion, not a stale version.
    let promoted = fleet.publish(&v1, "production", false);
    assert!(promoted.status.success(), "{}", text(&promoted.stderr));
    wait_all_serving(&members, &v1_id);
    for member in &members {
        let status = member.status();
        assert_eq!(status["outcomes"]["installed"], 2, "{status}");
        assert_eq!(status["current"]["target"], "production", "{status}");
    }
}

#[test]
fn followers_starting_together_start_on_different_stripes() {
    let dir = tempfile::tempdir().unwrap();
    let (v0, _) = build_snapshot(dir.path(), "v0.snap", 10);
    let (v1, v1_id) = build_snapshot(dir.path(), "v1.snap", 11);
    let mut fleet = Fleet::new(dir.path());
    fleet.start_origin();
    let members: Vec<Member> = (0..2).map(|i| Member::start(&fleet, &format!("s{i}"), &v0, &[])).collect();
    let manifest = fleet.publish_ok(&v1, "production");
    assert_eq!(manifest["manifest"]["format_version"], 2);
    let n_stripes = manifest["manifest"]["n_stripes"].as_u64().unwrap();
    assert!(n_stripes >= 2, "{manifest}");
    wait_all_serving(&members, &v1_id);

    // The origin hands out starts 0 and 1/2 of the torrent, in whichever order the followers ask:
    // one follower starts on the first stripe, the other half-way, and each claims its own first.
    let mut starts: Vec<u64> = members
        .iter()
        .map(|member| {
            let status = member.status();
            let walk = &status["stripes"];
            assert_eq!(walk["snapshot_id"], v1_id.as_str(), "{status}");
            assert_eq!(walk["n_stripes"].as_u64(), Some(n_stripes), "{status}");
            assert_eq!(walk["claimed_stripes"][0], walk["start_stripe"], "{status}");
            walk["start_stripe"].as_u64().unwrap()
        })
        .collect();
    starts.sort();
    assert_eq!(starts, [0, n_stripes / 2]);
    let count_url = format!("{}/count", manifest["manifest"]["start_hint_url"].as_str().unwrap());
    assert_eq!(get_json(&count_url).unwrap()["n_starts"], 2);
    // Each keeps one copy: the snapshot file it seeds and its server serves.
    for member in &members {
        let follower_dir = member.dir.join(&member.name).join("follower/snapshots");
        let names: Vec<String> = std::fs::read_dir(&follower_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("{v1_id}.snap")]);
    }
}

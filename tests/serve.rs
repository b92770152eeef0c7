//! `adsnap serve` as a process, changed from outside with `adsnap install`, `promote` and
//! `rollback` as an operator runs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for the server to come up (it verifies its snapshot first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The clock the example catalog's schedules are valid at.
const NOW_UNIX_S: &str = "1795305600";

fn adsnap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adsnap"))
}

fn build(out: &Path, version: &str) {
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog");
    let built = adsnap()
        .args(["build", "--quiet", "--now", "2026-11-22T00:00:00Z", "--snapshot-version", version, "-o"])
        .arg(out)
        .arg(&catalog)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
}

/// A running `adsnap serve`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()?.parse().ok()
}

/// Starts a server on free loopback ports and reads the ports it got from its log.
fn serve(snapshot: &Path) -> Server {
    let mut child = adsnap()
        .args(["serve", "--listen-addr", "127.0.0.1:0", "--admin-listen-addr", "127.0.0.1:0"])
        .args(["--fixed-now-unix-s", NOW_UNIX_S, "--snapshot-path"])
        .arg(snapshot)
        .arg("--events-dir")
        .arg(snapshot.with_extension("events"))
        .arg("--profiles-path")
        .arg(snapshot.with_extension("profiles"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = String::new();
    loop {
        match received.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.contains("serving") => {
                let addr = field(&line, "addr").unwrap_or_else(|| panic!("no addr in {line}"));
                let admin = field(&line, "admin_addr").unwrap_or_else(|| panic!("no admin_addr in {line}"));
                return Server { child, addr, admin_url: format!("http://{admin}") };
            }
            Ok(line) => log.push_str(&line),
            Err(_) => panic!("the server did not start: {log}"),
        }
    }
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

fn served(server: &Server) -> (u64, Option<u64>) {
    let health = get_json(server.addr, "/health");
    (health["snapshot"]["version"].as_u64().unwrap(), health["staging_snapshot"]["version"].as_u64())
}

fn admin(server: &Server, args: &[&str]) -> std::process::Output {
    adsnap().args(args).args(["--admin-url", &server.admin_url]).output().unwrap()
}

#[test]
fn an_operator_installs_promotes_and_rolls_back_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let current = dir.path().join("current.snap");
    let next = dir.path().join("next.snap");
    build(&current, "1");
    build(&next, "2");
    let server = serve(&current);
    assert_eq!(served(&server), (1, None));

    let installed = admin(&server, &["install", next.to_str().unwrap(), "--target", "staging"]);
    assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
    assert_eq!(served(&server), (1, Some(2)));

    assert!(admin(&server, &["promote"]).status.success());
    assert_eq!(served(&server), (2, None));

    assert!(admin(&server, &["rollback"]).status.success());
    assert_eq!(served(&server), (1, None));

    // Nothing is staged now: promote is refused with the server's reason and a failing status.
    let refused = admin(&server, &["promote"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no staging snapshot"));
    assert_eq!(served(&server), (1, None));
}

fn post_ad(addr: SocketAddr) -> u16 {
    const BODY: &str = r#"{"app":{"bundle":"com.example.wordsmith"},"ad_unit_id":"wordsmith-android-interstitial","format":"interstitial","device":{"os":"android","os_version":"14","country":"US"},"user":{"id":"user-42"}}"#;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1/ad HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        BODY.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(BODY.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn sigterm_stops_the_server_with_its_events_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("current.snap");
    build(&snapshot, "1");
    let mut server = serve(&snapshot);
    for _ in 0..3 {
        assert_eq!(post_ad(server.addr), 200);
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // Stopped cleanly, the log folder is free again and holds the three decisions.
    let events: Vec<_> =
        adsnap_events::read_log(&snapshot.with_extension("events"), adsnap_events::Position::Start)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.kind == adsnap_events::EventKind::Decision && e.campaign_id == 101));
}

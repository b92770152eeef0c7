//! `adsnap-bench serve`: adsnap's full decisions against Debian's nginx serving a static ~400-byte
//! JSON file, both driven by wrk from the same core, in one run. Each server gets one core (CPU 0)
//! and one worker; wrk runs on the other (CPU 1), so the servers, not the load generator, are what
//! saturates. adsnap answers SDK requests (`POST /v1/ad`) and, in a variant of its own, bid
//! requests made from the same draws (`POST /openrtb2/bid`).

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use adsnap_snapshot::Snapshot;
use anyhow::{bail, Context};

use crate::{paced, traffic};

/// How long a server may take to start answering.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const NGINX_PORT: u16 = 18_481;
/// Connections of the paced (fixed-rate) runs.
const PACED_CONNECTIONS: usize = 32;
/// The CPU the load generators run on; the servers get CPU 0.
const LOAD_CPU: usize = 1;
const ADSNAP_PORT: u16 = 18_482;

/// A child process killed when dropped.
struct Guard(Child);

impl Guard {
    /// Runs `measure` and returns, beside what it returns, the time the server's main thread
    /// (the process's first) spent waiting for its CPU meanwhile.
    fn waited<T>(&self, measure: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Option<f64>)> {
        let schedstat = format!("/proc/{}/task/{}/schedstat", self.0.id(), self.0.id());
        let (result, waited_ms) = paced::run_queue_wait_during(&schedstat, measure);
        Ok((result?, waited_ms))
    }

    /// Runs the wrk run `measure` and adds the CPU time the server (all its threads) used
    /// meanwhile, per request answered, split into user and system (kernel) time.
    fn cpu_during(&self, measure: impl FnOnce() -> anyhow::Result<WrkFigures>) -> anyhow::Result<WrkFigures> {
        let (user_before, sys_before) = process_cpu_us(self.0.id())?;
        let mut figures = measure()?;
        let (user_after, sys_after) = process_cpu_us(self.0.id())?;
        let requests = figures.requests.max(1) as f64;
        figures.server_user_us = (user_after - user_before) / requests;
        figures.server_sys_us = (sys_after - sys_before) / requests;
        Ok(figures)
    }
}

/// The user and system CPU time process `pid` has used, all its threads, in µs (from
/// `/proc/PID/stat`, in clock ticks: 10 ms each at the usual 100 a second).
fn process_cpu_us(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("reading the server's /proc stat")?;
    // The command name (the second field) may hold spaces: count the fields after its ')'.
    let (_, rest) = stat.rsplit_once(')').context("no command name in /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime, the line's 14th and 15th fields, are the 12th and 13th after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("a short /proc stat line")?.parse::<f64>()?)
    };
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_s = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    };
    Ok((ticks(11)? * 1e6 / ticks_per_s, ticks(12)? * 1e6 / ticks_per_s))
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `GET path` on a fresh connection; the whole response as text.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply)?;
    Ok(reply)
}

/// The value of a counter in Prometheus text, 0 when absent.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).map_or(0, |v| v as u64)
}

/// Waits until `addr` answers `GET path` with 200.
fn wait_ready(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    poll_until(READY_TIMEOUT, &format!("{addr}{path} to answer"), || {
        Ok(get(addr, path).is_ok_and(|reply| reply.starts_with("HTTP/1.1 200")))
    })
}

/// Calls `done` every 50 ms until it says true, at most for `timeout`; its error ends the wait.
fn poll_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("waited {timeout:?} for {what}")
}

fn start_nginx(dir: &Path) -> anyhow::Result<Guard> {
    // nginx resolves relative paths against its own prefix, not the working folder.
    let dir = &fs::canonicalize(dir)?;
    let root = dir.join("www");
    fs::create_dir_all(&root)?;
    // About 400 bytes, the size of a small ad response.
    let body = format!(
        r#"{{"request_id":"static","ad":{{"campaign_id":101,"creative_id":1001,"format":"interstitial","width":320,"height":480,"mime":"image/jpeg","markup_kind":"html","markup":"<a href=\"https://example.com/c\"><img src=\"https://cdn.example.net/i.jpg\"></a>","impression_url":"http://127.0.0.1/v1/imp?t={t}","price_micros":1435000,"currency":"USD","ttl_s":300}}}}"#,
        t = "A".repeat(adsnap_serve::token::TOKEN_CHARS)
    );
    fs::write(root.join("ad.json"), body)?;
    let conf = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {pid};\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 10000000; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
         server {{ listen 127.0.0.1:{NGINX_PORT}; location / {{ root {root}; default_type application/json; }} }} }}\n",
        pid = dir.join("nginx.pid").display(),
        tmp = dir.display(),
        root = root.display(),
    );
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    write_back_everything();
    let child = Command::new("taskset")
        .args(["-c", "0", "nginx", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (run scripts/install-bench-deps.sh)")?;
    let guard = Guard(child);
    wait_ready(SocketAddr::from(([127, 0, 0, 1], NGINX_PORT)), "/ad.json")?;
    Ok(guard)
}

fn adsnap_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("adsnap");
    if !path.exists() {
        bail!("{} is missing: build it with `cargo build --release` first", path.display());
    }
    Ok(path)
}

/// What an adsnap server under load runs with.
#[derive(Clone, Copy)]
struct Features<'a> {
    /// The profile store's folder; `None`: profiles off.
    profiles: Option<&'a Path>,
    /// A folder for a fresh event log; `None`: events off.
    events: Option<&'a Path>,
}

fn start_adsnap(snapshot: &Path, features: Features<'_>) -> anyhow::Result<Guard> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "0"])
        .arg(adsnap_binary()?)
        .args(["serve", "--worker-threads", "1", "--listen-addr", &format!("127.0.0.1:{ADSNAP_PORT}")])
        .args(["--admin-listen-addr", "127.0.0.1:0"]);
    match features.profiles {
        Some(pristine) => {
            // Every server starts from the same store: a run's writes (last-seen times, which
            // decide whether the next visit writes) must not change the next run's work.
            let path = pristine.with_extension("run");
            let _ = fs::remove_dir_all(&path);
            copy_dir(pristine, &path).context("copying the profile store")?;
            command.arg("--profiles-path").arg(path)
        }
        None => command.args(["--profiles-enabled", "false"]),
    };
    match features.events {
        Some(dir) => {
            let _ = fs::remove_dir_all(dir);
            command.arg("--events-dir").arg(dir)
        }
        None => command.args(["--events-enabled", "false"]),
    };
    write_back_everything();
    let child = command
        .arg("--snapshot-path")
        .arg(snapshot)
        .args(["--tracking-key-hex", &"5a".repeat(32)])
        .env("ADSNAP_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .context("starting adsnap serve")?;
    let guard = Guard(child);
    wait_ready(SocketAddr::from(([127, 0, 0, 1], ADSNAP_PORT)), "/health")?;
    Ok(guard)
}

/// Writes every dirty page of every file system back (sync(2)) before a server starts. Each run
/// leaves tens of megabytes of events and profile writes in the page cache; written back during
/// the next run, they took that run's CPU (the kernel's writeback threads share its cores) and
/// charged whichever variant came next: events off, run after events on, measured 0.92 of it
/// where the same servers alone measured 0.97 to 0.98.
fn write_back_everything() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// A wrk script that sends the bodies in turn.
fn wrk_script(dir: &Path, bodies: &[String], path: &str, file_name: &str) -> anyhow::Result<PathBuf> {
    let mut lua = String::from("local bodies = {\n");
    for body in bodies {
        lua.push_str("[==[");
        lua.push_str(body);
        lua.push_str("]==],\n");
    }
    lua.push_str(&format!(
        "}}\nlocal requests = {{}}\nlocal i = 0\n\
         init = function(args)\n  for k, b in ipairs(bodies) do\n    requests[k] = wrk.format(\"POST\", \"{path}\", {{[\"Content-Type\"] = \"application/json\"}}, b)\n  end\nend\n\
         request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n",
    ));
    let script = dir.join(file_name);
    fs::write(&script, lua)?;
    Ok(script)
}

/// What wrk measured.
#[derive(Debug)]
pub struct WrkFigures {
    /// Responses received.
    pub requests: u64,
    pub requests_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub non_2xx: u64,
    pub errors: u64,
    /// The server's CPU time per request, user and system, in µs (NaN when not measured).
    pub server_user_us: f64,
    pub server_sys_us: f64,
}

fn parse_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn parse_wrk(out: &str) -> WrkFigures {
    let field =
        |prefix: &str| out.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()));
    let percentile = |p: &str| field(p).map_or(f64::NAN, |v| parse_ms(&v));
    let errors = field("Socket errors:").map_or(0, |v| {
        v.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum()
    });
    // "1378126 requests in 10.00s, 914.79MB read"
    let requests = out.lines().find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok());
    WrkFigures {
        requests: requests.unwrap_or(0),
        requests_per_s: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        latency_p50_ms: percentile("50%"),
        latency_p99_ms: percentile("99%"),
        non_2xx: field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0),
        errors,
        server_user_us: f64::NAN,
        server_sys_us: f64::NAN,
    }
}

fn wrk(url: &str, script: Option<&Path>, connections: u32, seconds: u32) -> anyhow::Result<WrkFigures> {
    let mut command = Command::new("taskset");
    command.args([
        "-c",
        "1",
        "wrk",
        "-t1",
        "--latency",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output().context("running wrk (run scripts/install-bench-deps.sh)")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(parse_wrk(&String::from_utf8_lossy(&output.stdout)))
}

/// Swaps the served snapshot every `every`, until `stop`: alternately renames one of two prepared
/// versions into place and sends the server SIGHUP. Returns the number of swaps asked for.
fn swap_loop(
    server_pid: u32,
    live: &Path,
    versions: [&Path; 2],
    every: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every);
        // A fresh directory entry renamed over the live path: the server maps a new file while
        // requests in flight keep the old mapping.
        let staged = live.with_extension("next");
        let _ = fs::remove_file(&staged);
        fs::hard_link(versions[(n % 2) as usize], &staged)?;
        fs::rename(&staged, live)?;
        let status = Command::new("kill").args(["-HUP", &server_pid.to_string()]).status()?;
        if !status.success() {
            bail!("could not signal the server");
        }
        n += 1;
    }
    Ok(n)
}

/// adsnap under load with a hot swap every second.
fn swapping_run(
    snapshot_path: &Path,
    dir: &Path,
    script: &Path,
    connections: u32,
    seconds: u32,
    features: Features<'_>,
) -> anyhow::Result<(WrkFigures, u64)> {
    with_swaps(snapshot_path, dir, script, connections, features, |server| {
        server.cpu_during(|| wrk_adsnap(script, connections, seconds))
    })
}

/// Runs `measure` on a warmed-up adsnap that swaps its snapshot every second meanwhile; returns
/// what it measured and how many swaps the server made.
fn with_swaps<T>(
    snapshot_path: &Path,
    dir: &Path,
    script: &Path,
    connections: u32,
    features: Features<'_>,
    measure: impl FnOnce(&Guard) -> anyhow::Result<T>,
) -> anyhow::Result<(T, u64)> {
    let (v1, v2, live) = (dir.join("v1.snap"), dir.join("v2.snap"), dir.join("live.snap"));
    // Left by the last round.
    for path in [&v1, &v2, &live] {
        let _ = fs::remove_file(path);
    }
    fs::copy(snapshot_path, &v1)?;
    rebuild_with_version(snapshot_path, &v2)?;
    fs::hard_link(&v1, &live)?;
    let server = start_adsnap(&live, features)?;
    warm_up(script, connections)?;
    let stop = AtomicBool::new(false);
    let pid = server.0.id();
    std::thread::scope(|scope| {
        let swapper = scope.spawn(|| swap_loop(pid, &live, [&v2, &v1], Duration::from_secs(1), &stop));
        let figures = measure(&server);
        stop.store(true, Ordering::Relaxed);
        swapper.join().map_err(|_| anyhow::anyhow!("the swap thread panicked"))??;
        // Count the swaps the server made, not the ones asked for.
        let metrics = get(SocketAddr::from(([127, 0, 0, 1], ADSNAP_PORT)), "/metrics")?;
        let (n_swaps, n_refused) = (
            counter(&metrics, "adsnap_snapshot_swaps_total"),
            counter(&metrics, "adsnap_snapshot_swap_failures_total"),
        );
        if n_refused > 0 {
            bail!("the server refused {n_refused} of the swapped-in snapshots");
        }
        Ok((figures?, n_swaps))
    })
}

/// A second version of the snapshot: the same payload under another version number and id.
fn rebuild_with_version(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut bytes = fs::read(from)?;
    let mut header = adsnap_snapshot::Header::decode(&bytes[..adsnap_snapshot::HEADER_LEN], from)?;
    header.snapshot_version += 1;
    header.snapshot_id = header.snapshot_id.wrapping_add(1);
    bytes[..adsnap_snapshot::HEADER_LEN].copy_from_slice(&header.encode());
    fs::write(to, bytes)?;
    Ok(())
}

/// Fills a profile store with a generated profile for every user of the request stream.
fn prepare_profiles(dir: &Path) -> anyhow::Result<PathBuf> {
    use adsnap_profile_store::{gen, Profiles, ProfilesConfig};
    let path = dir.join("profiles");
    let _ = fs::remove_dir_all(&path);
    let mut config = ProfilesConfig::default();
    config.embedded.path = path.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let profiles = Profiles::open(&config).await?;
        let options = gen::GenOptions { seed: traffic::USER_SEED, now_unix_s: crate::now_unix_s() };
        for start in (0..traffic::USERS).step_by(PROFILE_IMPORT_BATCH as usize) {
            let end = (start + PROFILE_IMPORT_BATCH).min(traffic::USERS);
            profiles.import((start..end).map(|idx| gen::user(&options, idx)).collect()).await?;
        }
        profiles.flush().await?;
        anyhow::Ok(())
    })?;
    Ok(path)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// One variant's rounds: each figure's median, failures summed, throughput's spread.
struct Summary {
    requests_per_s: f64,
    min_requests_per_s: f64,
    max_requests_per_s: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    non_2xx: u64,
    errors: u64,
    server_user_us: f64,
    server_sys_us: f64,
}

fn median_run(runs: &[WrkFigures]) -> Summary {
    let median = |f: fn(&WrkFigures) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let throughputs = runs.iter().map(|r| r.requests_per_s);
    Summary {
        requests_per_s: median(|r| r.requests_per_s),
        min_requests_per_s: throughputs.clone().fold(f64::INFINITY, f64::min),
        max_requests_per_s: throughputs.fold(0.0, f64::max),
        latency_p50_ms: median(|r| r.latency_p50_ms),
        latency_p99_ms: median(|r| r.latency_p99_ms),
        non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        server_user_us: median(|r| r.server_user_us),
        server_sys_us: median(|r| r.server_sys_us),
    }
}

/// Profiles imported per call while preparing the store.
const PROFILE_IMPORT_BATCH: u64 = 50_000;

/// One wrk run against a fresh adsnap server.
fn adsnap_wrk(
    snapshot: &Path,
    features: Features<'_>,
    script: &Path,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<WrkFigures> {
    let server = start_adsnap(snapshot, features)?;
    warm_up(script, connections)?;
    server.cpu_during(|| wrk_adsnap(script, connections, seconds))
}

/// Load, unmeasured, before a measured run: a server just started has every profile of the
/// stream still on disk, so its first seconds measure the store's cold start, not the steady
/// state the other figures describe (the cold start is measured apart, see `run`).
fn warm_up(script: &Path, connections: u32) -> anyhow::Result<()> {
    wait_profiles_warm(SocketAddr::from(([127, 0, 0, 1], ADSNAP_PORT)))?;
    wrk_adsnap(script, connections, WARM_UP_SECONDS).map(|_| ())
}

/// Waits until the server's profile store has scanned its disk (key filter built, memory layer
/// warmed), as `/health` says; at once when profiles are off. Under load the scan shares the
/// server's core with requests and can outlast any fixed warm-up.
fn wait_profiles_warm(addr: SocketAddr) -> anyhow::Result<()> {
    poll_until(PROFILES_WARM_TIMEOUT, &format!("the profile store at {addr} to be warm"), || {
        let reply = get(addr, "/health")?;
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let health: serde_json::Value = serde_json::from_str(body).context("health is not JSON")?;
        Ok(health["profile_store"]["key_filter_ready"].as_bool() != Some(false))
    })
}

/// Longest wait for a server's profile store to finish its scan at open.
const PROFILES_WARM_TIMEOUT: Duration = Duration::from_secs(120);

/// wrk against the adsnap server, sending the script's requests.
fn wrk_adsnap(script: &Path, connections: u32, seconds: u32) -> anyhow::Result<WrkFigures> {
    wrk(&format!("http://127.0.0.1:{ADSNAP_PORT}"), Some(script), connections, seconds)
}

/// Length of the unmeasured load before each measured adsnap run.
const WARM_UP_SECONDS: u32 = 5;

pub fn run(
    snapshot_path: &Path,
    work: &Path,
    n_requests: usize,
    connections: u32,
    seconds: u32,
    rounds: u32,
) -> anyhow::Result<()> {
    let dir = work.join("load");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let snapshot = Snapshot::open(snapshot_path)?;
    let bodies = traffic::requests(&snapshot, n_requests, 11);
    let script = wrk_script(&dir, &bodies, "/v1/ad", "requests.lua")?;
    // The same draws as bid requests from an exchange.
    let bid_bodies = traffic::bid_requests(&snapshot, n_requests, 11);
    let bid_script = wrk_script(&dir, &bid_bodies, "/openrtb2/bid", "bid_requests.lua")?;
    drop(snapshot);
    let prepared = Instant::now();
    let profiles = prepare_profiles(&dir)?;
    eprintln!("profile store: {} users in {:.1} s", traffic::USERS, prepared.elapsed().as_secs_f64());
    let events = dir.join("events");
    let full = Features { profiles: Some(&profiles), events: Some(&events) };
    let cold = {
        let server = start_adsnap(snapshot_path, full)?;
        server.cpu_during(|| wrk_adsnap(&script, connections, seconds))?
    };
    // The variants run interleaved, round after round, and each is reported by its median: on
    // a shared machine a burst of someone else's work then spoils one round of every variant
    // rather than all rounds of one.
    let mut runs: [Vec<WrkFigures>; 6] = Default::default();
    let mut n_swaps = 0;
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        runs[0].push({
            let server = start_nginx(&dir)?;
            server.cpu_during(|| {
                wrk(&format!("http://127.0.0.1:{NGINX_PORT}/ad.json"), None, connections, seconds)
            })?
        });
        runs[1].push(adsnap_wrk(snapshot_path, full, &script, connections, seconds)?);
        // Events' cost is measured with profiles off on both sides: the profile store's
        // background work changes from run to run and would otherwise decide the comparison.
        // The pair runs in turn events on first and events off first, so that whatever a run
        // leaves to the next (the kernel's work after the full server's run) falls on both.
        let pair = [(2, Features { profiles: None, ..full }), (3, Features { profiles: None, events: None })];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for (variant, features) in order.map(|i| pair[i]) {
            runs[variant].push(adsnap_wrk(snapshot_path, features, &script, connections, seconds)?);
        }
        let (swapping, n) = swapping_run(snapshot_path, &dir, &script, connections, seconds, full)?;
        runs[4].push(swapping);
        n_swaps += n;
        runs[5].push(adsnap_wrk(snapshot_path, full, &bid_script, connections, seconds)?);
    }
    let [nginx, adsnap, no_profiles, no_events, swapping, bids] = runs.map(|r| median_run(&r));
    let cold = median_run(std::slice::from_ref(&cold));
    // Latency at half of adsnap's peak, on a fixed schedule, with nginx at the same rate beside.
    let half_peak = (adsnap.requests_per_s / 2.0).max(1.0);
    let paced_duration = Duration::from_secs(seconds.into());
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], NGINX_PORT));
    let adsnap_addr = SocketAddr::from(([127, 0, 0, 1], ADSNAP_PORT));
    let nginx_paced = {
        let server = start_nginx(&dir)?;
        let requests = [paced::raw_request("GET", "/ad.json", nginx_addr, "")];
        server.waited(|| {
            paced::run(nginx_addr, &requests, half_peak, PACED_CONNECTIONS, paced_duration, LOAD_CPU)
        })?
    };
    let requests: Vec<_> =
        bodies.iter().map(|b| paced::raw_request("POST", "/v1/ad", adsnap_addr, b)).collect();
    let adsnap_paced = {
        let server = start_adsnap(snapshot_path, full)?;
        warm_up(&script, connections)?;
        server.waited(|| {
            paced::run(adsnap_addr, &requests, half_peak, PACED_CONNECTIONS, paced_duration, LOAD_CPU)
        })?
    };
    // The same, with a hot swap every second: what a swap costs a server that is not saturated.
    let (adsnap_paced_swapping, n_paced_swaps) =
        with_swaps(snapshot_path, &dir, &script, connections, full, |server| {
            server.waited(|| {
                paced::run(adsnap_addr, &requests, half_peak, PACED_CONNECTIONS, paced_duration, LOAD_CPU)
            })
        })?;
    println!("## throughput: adsnap full decisions vs nginx static file (1 server core, wrk -t1 -c{connections} -d{seconds}s on the other; median of {rounds} interleaved rounds)");
    println!(
        "snapshot {}, {} distinct requests from {} users, a profile for each user in the embedded store, events to the local log",
        snapshot_path.display(),
        bodies.len(),
        traffic::USERS
    );
    println!("| server | requests/s | min–max requests/s | p50 ms | p99 ms | non-2xx | socket errors | server CPU µs/request: user | system |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let swap_name = format!("adsnap, POST /v1/ad, hot swaps one a second ({n_swaps} over all rounds)");
    for (name, f) in [
        ("nginx, static 400-byte JSON", &nginx),
        ("adsnap, POST /v1/ad (profiles, events)", &adsnap),
        ("adsnap, the same from a cold start (no warm-up)", &cold),
        ("adsnap, profiles off", &no_profiles),
        ("adsnap, profiles and events off", &no_events),
        (swap_name.as_str(), &swapping),
        ("adsnap, POST /openrtb2/bid (the same draws as bid requests; profiles, events)", &bids),
    ] {
        println!(
            "| {name} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3} | {} | {} | {:.2} | {:.2} |",
            f.requests_per_s,
            f.min_requests_per_s,
            f.max_requests_per_s,
            f.latency_p50_ms,
            f.latency_p99_ms,
            f.non_2xx,
            f.errors,
            f.server_user_us,
            f.server_sys_us,
        );
    }
    println!();
    println!(
        "adsnap / nginx throughput: {:.2} (target >= 1.0)",
        adsnap.requests_per_s / nginx.requests_per_s
    );
    println!(
        "bid requests / nginx throughput: {:.2}; bid requests / SDK requests: {:.2}",
        bids.requests_per_s / nginx.requests_per_s,
        bids.requests_per_s / adsnap.requests_per_s
    );
    println!(
        "server CPU per request, adsnap - nginx: user {:+.2} µs, system {:+.2} µs (where the throughput gap is spent)",
        adsnap.server_user_us - nginx.server_user_us,
        adsnap.server_sys_us - nginx.server_sys_us
    );
    println!(
        "profiles on / off: {:.2} (target > 0.9); events on / off, profiles off on both sides: {:.2} (target > 0.95)",
        adsnap.requests_per_s / no_profiles.requests_per_s,
        no_profiles.requests_per_s / no_events.requests_per_s
    );
    println!(
        "p99 with swaps / without: {:.2} (target <= 2); failed requests with swaps: {} (target 0)",
        swapping.latency_p99_ms / adsnap.latency_p99_ms,
        swapping.non_2xx + swapping.errors
    );
    println!("(each column is the median over rounds, errors the sum; server CPU is the server process's, all threads, from /proc, per request answered; wrk counts 204 no-fills as successes: they are 2xx; every adsnap row but the cold start, which ran once, follows the profile store's scan at open and then {WARM_UP_SECONDS} s of unmeasured load on the same server)");
    println!();
    println!(
        "## latency at half of adsnap's peak: {half_peak:.0} requests/s on a fixed schedule, {PACED_CONNECTIONS} keep-alive connections, {seconds} s, measured from each request's intended send time"
    );
    println!("| server | completed | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | errors | server thread waited ms | load thread waited ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let shown = |ms: Option<f64>| ms.map_or("–".to_string(), |ms| format!("{ms:.1}"));
    let paced_swap_name = format!("adsnap, POST /v1/ad, hot swaps one a second ({n_paced_swaps})");
    for (name, (f, server_waited_ms)) in [
        ("nginx, static 400-byte JSON", &nginx_paced),
        ("adsnap, POST /v1/ad", &adsnap_paced),
        (paced_swap_name.as_str(), &adsnap_paced_swapping),
    ] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
            f.completed,
            f.p50_ms,
            f.p90_ms,
            f.p99_ms,
            f.p999_ms,
            f.max_ms,
            f.non_2xx,
            f.errors,
            shown(*server_waited_ms),
            shown(f.load_thread_waited_ms)
        );
    }
    println!("(waited: time the thread was ready to run but another held its CPU, from /proc schedstat; the server's main thread answers every request)");
    println!();
    println!(
        "adsnap p99 at half of peak: {:.3} ms (target < 1 ms); adsnap / nginx p99 at the same rate: {:.2}",
        adsnap_paced.0.p99_ms,
        adsnap_paced.0.p99_ms / nginx_paced.0.p99_ms
    );
    println!(
        "at half of peak, p99 with swaps / without: {:.2}; failed requests with swaps: {}",
        adsnap_paced_swapping.0.p99_ms / adsnap_paced.0.p99_ms,
        adsnap_paced_swapping.0.non_2xx + adsnap_paced_swapping.0.errors
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 10s test @ http://127.0.0.1:1\n  Latency Distribution\n     50%  412.00us\n     75%    1.2ms\n     99%    3.50ms\n  612345 requests in 10.00s, 402.11MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  61234.56\n";
        let f = parse_wrk(out);
        assert_eq!(f.requests, 612_345);
        assert_eq!(f.requests_per_s, 61234.56);
        assert!((f.latency_p50_ms - 0.412).abs() < 1e-9);
        assert!((f.latency_p99_ms - 3.5).abs() < 1e-9);
        assert_eq!(f.errors, 3);
        assert_eq!(f.non_2xx, 0);
    }

    #[test]
    fn a_process_cpu_time_grows_with_the_work_it_does() {
        let pid = std::process::id();
        let (user_before, _) = process_cpu_us(pid).unwrap();
        // Spin until this process has used at least two clock ticks of user time.
        let started = Instant::now();
        let mut x = 0u64;
        while process_cpu_us(pid).unwrap().0 < user_before + 20_000.0 {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no user time counted in 30 s");
        }
        assert!(process_cpu_us(u32::MAX).is_err());
    }

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let text = "# TYPE adsnap_snapshot_swaps counter\nadsnap_snapshot_swaps_total 11\nadsnap_snapshot_swap_failures_total 0\n";
        assert_eq!(counter(text, "adsnap_snapshot_swaps_total"), 11);
        assert_eq!(counter(text, "adsnap_snapshot_swap_failures_total"), 0);
        assert_eq!(counter(text, "absent_total"), 0);
    }
}

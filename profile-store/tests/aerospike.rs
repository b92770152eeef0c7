//! The Aerospike backend against a real server: reads, atomic increments from two writers at
//! once, TTL, deletion, a server that goes away and comes back. They need `AEROSPIKE_HOSTS` (and
//! `AEROSPIKE_NAMESPACE`, default `test`) and say so, visibly, when it is not set. The test of a
//! cluster that cannot be reached at all needs no server and always runs.

#![cfg(feature = "aerospike")]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adsnap_profile_store::{
    Backend, MissReason, ProfileRead, ProfileUpdate, Profiles, ProfilesConfig, UserKey,
};
use tokio::net::{TcpListener, TcpStream};

/// How long a condition may take to come true before the test fails.
const WAIT_S_MAX: u64 = 30;

fn now_unix_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The server under test, or a visible skip line (written past the test harness's capture).
fn server(test: &str) -> Option<(String, String)> {
    match std::env::var("AEROSPIKE_HOSTS") {
        Ok(hosts) if !hosts.trim().is_empty() => {
            let namespace = std::env::var("AEROSPIKE_NAMESPACE").unwrap_or_else(|_| "test".into());
            Some((hosts, namespace))
        }
        _ => {
            let line = format!(
                "SKIPPED aerospike::{test}: AEROSPIKE_HOSTS is not set (no Aerospike server here); \
                 set it (e.g. AEROSPIKE_HOSTS=127.0.0.1:3000 AEROSPIKE_NAMESPACE=test) to run it against Aerospike 8\n"
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

fn config(hosts: &str, namespace: &str) -> ProfilesConfig {
    let mut config =
        ProfilesConfig { backend: Backend::Aerospike, read_deadline_ms: 500, ..Default::default() };
    config.aerospike.hosts = hosts.to_string();
    config.aerospike.namespace = namespace.to_string();
    config.aerospike.set = "adsnap_test".into();
    config.aerospike.read_socket_timeout_ms = 500;
    config.aerospike.write_timeout_ms = 1_000;
    config
}

/// A user no other run of these tests touches.
fn fresh_user(name: &str) -> UserKey {
    UserKey::of_id(&format!("{name}-{}-{}", std::process::id(), now_unix_s()))
}

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    while !condition().await {
        assert!(Instant::now() < deadline, "waited {WAIT_S_MAX} s for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_back_every_kind_of_update() {
    let Some((hosts, namespace)) = server("reads_back_every_kind_of_update") else { return };
    let profiles = Profiles::open(&config(&hosts, &namespace)).await.unwrap();
    let user = fresh_user("kinds");
    let now = now_unix_s();
    assert!(matches!(profiles.get(user).await, ProfileRead::Absent));
    let de = adsnap_snapshot::pack_country("DE").unwrap();
    let bundle = adsnap_snapshot::key_hash("com.example.game");
    profiles.record(ProfileUpdate::Seen { key: user, country: de, language: 3, os: 2, now_unix_s: now });
    profiles.record(ProfileUpdate::Impression { key: user, campaign_id: 9, period_s: 3600, now_unix_s: now });
    profiles.record(ProfileUpdate::Click { key: user, campaign_id: 9, now_unix_s: now });
    profiles.record(ProfileUpdate::Install { key: user, app_bundle_hash: bundle, now_unix_s: now });
    profiles.flush().await.unwrap();
    let ProfileRead::Found(profile) = profiles.get(user).await else { panic!("no profile after flush") };
    assert_eq!((profile.country(), profile.language(), profile.os()), (Some(de), Some(3), 2));
    assert_eq!((profile.n_impressions(), profile.n_clicks(), profile.n_installs()), (1, 1, 1));
    assert_eq!(profile.impressions_in_window(9, 3600, now), 1);
    assert!(profile.has_installed(bundle));
    assert_eq!(profiles.health().status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_user_is_deleted_after_the_updates_queued_before() {
    let Some((hosts, namespace)) = server("a_forgotten_user_is_deleted_after_the_updates_queued_before")
    else {
        return;
    };
    let profiles = Profiles::open(&config(&hosts, &namespace)).await.unwrap();
    let (user, other) = (fresh_user("forget"), fresh_user("forget-not"));
    let now = now_unix_s();
    profiles.record(ProfileUpdate::Click { key: user, campaign_id: 1, now_unix_s: now });
    profiles.record(ProfileUpdate::Click { key: other, campaign_id: 1, now_unix_s: now });
    assert_eq!(profiles.forget(vec![user]).await.unwrap(), 1);
    assert!(matches!(profiles.get(user).await, ProfileRead::Absent));
    assert!(matches!(profiles.get(other).await, ProfileRead::Found(_)));
    assert_eq!(profiles.forget(vec![user]).await.unwrap(), 0, "deleting twice finds nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_two_servers_at_once_are_all_counted() {
    let Some((hosts, namespace)) = server("increments_from_two_servers_at_once_are_all_counted") else {
        return;
    };
    let (a, b) = (
        Profiles::open(&config(&hosts, &namespace)).await.unwrap(),
        Profiles::open(&config(&hosts, &namespace)).await.unwrap(),
    );
    let user = fresh_user("concurrent");
    let now = now_unix_s();
    let n_each = 500;
    let write = |profiles: Profiles| async move {
        for _ in 0..n_each {
            profiles.record(ProfileUpdate::Impression {
                key: user,
                campaign_id: 1,
                period_s: 86_400,
                now_unix_s: now,
            });
            tokio::task::yield_now().await;
        }
        profiles.flush().await.unwrap();
        profiles.health().updates_dropped
    };
    let (dropped_a, dropped_b) = tokio::join!(tokio::spawn(write(a.clone())), tokio::spawn(write(b.clone())));
    assert_eq!((dropped_a.unwrap(), dropped_b.unwrap()), (0, 0));
    let ProfileRead::Found(profile) = a.get(user).await else { panic!("no profile") };
    assert_eq!(profile.n_impressions(), 2 * n_each);
    assert_eq!(profile.impressions_in_window(1, 86_400, now), 2 * n_each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_profiles_expire_with_the_record_ttl() {
    let Some((hosts, namespace)) = server("idle_profiles_expire_with_the_record_ttl") else { return };
    let mut config = config(&hosts, &namespace);
    config.idle_ttl_s = 2;
    let profiles = Profiles::open(&config).await.unwrap();
    let user = fresh_user("ttl");
    profiles.record(ProfileUpdate::Click { key: user, campaign_id: 1, now_unix_s: now_unix_s() });
    profiles.flush().await.unwrap();
    assert!(matches!(profiles.get(user).await, ProfileRead::Found(_)), "written profile must read back");
    wait_for("the record to expire", async || matches!(profiles.get(user).await, ProfileRead::Absent)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_answers_unknown_within_the_deadline_and_never_blocks_records() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = config(&format!("127.0.0.1:{port}"), "test");
    config.read_deadline_ms = 20;
    config.aerospike.connect_timeout_ms = 200;
    let profiles = Profiles::open(&config).await.expect("opening must not need the cluster");
    assert_eq!(profiles.health().status, "degraded");
    for i in 0..20 {
        let started = Instant::now();
        let read = profiles.get(UserKey(i)).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(read, ProfileRead::Unknown(MissReason::Unavailable | MissReason::Deadline)),
            "read {i}: {read:?}"
        );
        assert!(elapsed < Duration::from_millis(20 + 200), "read {i} took {elapsed:?}");
    }
    let started = Instant::now();
    for i in 0..100_000 {
        profiles.record(ProfileUpdate::Click { key: UserKey(i), campaign_id: 1, now_unix_s: now_unix_s() });
    }
    assert!(started.elapsed() < Duration::from_secs(2), "recording blocked: {:?}", started.elapsed());
    let health = profiles.health();
    assert_eq!(health.reads.unknown, 20);
    assert_eq!(health.updates_queued + health.updates_dropped_queue_full, 100_000);
}

/// A loopback TCP proxy in front of the server that can be taken down (every connection cut,
/// new ones refused) and brought back on the same port.
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up_flag, cut_signal) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !up_flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (upstream, cut) = (upstream.clone(), cut_signal.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Proxy { addr, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn back(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_and_comes_back() {
    let Some((hosts, namespace)) = server("a_server_that_goes_away_and_comes_back") else { return };
    let upstream = hosts.split(',').next().unwrap().trim().to_string();
    let proxy = Proxy::start(upstream).await;
    let mut config = config(&proxy.addr, &namespace);
    config.aerospike.seed_only_cluster = true;
    config.read_deadline_ms = 200;
    let profiles = Profiles::open(&config).await.unwrap();
    let user = fresh_user("comes-back");
    profiles.record(ProfileUpdate::Click { key: user, campaign_id: 1, now_unix_s: now_unix_s() });
    profiles.flush().await.unwrap();
    assert!(matches!(profiles.get(user).await, ProfileRead::Found(_)));

    proxy.down();
    wait_for("reads to fail while the server is away", async || {
        matches!(profiles.get(user).await, ProfileRead::Unknown(_))
    })
    .await;
    let started = Instant::now();
    let read = profiles.get(user).await;
    assert!(matches!(read, ProfileRead::Unknown(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_millis(200 + 200), "took {:?}", started.elapsed());

    proxy.back();
    wait_for("reads to succeed once the server is back", async || {
        matches!(profiles.get(user).await, ProfileRead::Found(_))
    })
    .await;
    profiles.record(ProfileUpdate::Click { key: user, campaign_id: 1, now_unix_s: now_unix_s() });
    profiles.flush().await.unwrap();
    let ProfileRead::Found(profile) = profiles.get(user).await else {
        panic!("no profile after coming back")
    };
    assert_eq!(profile.n_clicks(), 2);
}

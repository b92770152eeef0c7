//! The embedded store end to end: updates through the queue, reads from memory and from disk,
//! durability across reopening, TTL, the memory budget, bad records and the write queue's limit.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adsnap_profile_store::profile::{os, CODE_UNKNOWN};
use adsnap_profile_store::record::{encode, store_key, RECORD_BYTES_MAX};
use adsnap_profile_store::{
    MissReason, Profile, ProfileFields, ProfileRead, ProfileUpdate, Profiles, ProfilesConfig, UserKey,
};

fn now_unix_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn config(dir: &Path) -> ProfilesConfig {
    let mut config = ProfilesConfig::default();
    config.embedded.path = dir.join("profiles");
    // Disk reads in a debug build on a busy machine: the deadline tests set their own.
    config.read_deadline_ms = 5_000;
    config
}

fn user(i: u64) -> UserKey {
    UserKey::of_id(&format!("device-{i}"))
}

fn seen(key: UserKey, now_unix_s: i64) -> ProfileUpdate {
    let country = adsnap_snapshot::pack_country("DE").unwrap();
    let language = adsnap_snapshot::pack_language("de").unwrap();
    ProfileUpdate::Seen { key, country, language, os: os::ANDROID, now_unix_s }
}

async fn found(profiles: &Profiles, key: UserKey) -> std::sync::Arc<Profile> {
    match profiles.get(key).await {
        ProfileRead::Found(profile) => profile,
        other => panic!("expected a profile for {key:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_background_nice_value_outside_the_kernels_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for nice in [-1, 20] {
        let mut config = config(dir.path());
        config.embedded.background_nice = nice;
        let err = Profiles::open(&config).await.err().expect("opened with an out-of-range nice value");
        assert!(
            err.to_string().contains(&format!("embedded.background_nice = {nice} is outside 0..=19")),
            "{err}"
        );
    }
    let mut config = config(dir.path());
    config.embedded.background_nice = 19;
    Profiles::open(&config).await.unwrap();
}

#[tokio::test]
async fn updates_are_read_back_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix_s();
    let bundle = adsnap_snapshot::key_hash("com.example.game");
    {
        let profiles = Profiles::open(&config(dir.path())).await.unwrap();
        assert!(matches!(profiles.get(user(1)).await, ProfileRead::Absent));
        profiles.record(seen(user(1), now));
        for _ in 0..3 {
            profiles.record(ProfileUpdate::Impression {
                key: user(1),
                campaign_id: 42,
                period_s: 86_400,
                now_unix_s: now,
            });
        }
        profiles.record(ProfileUpdate::Click { key: user(1), campaign_id: 42, now_unix_s: now });
        profiles.record(ProfileUpdate::Install { key: user(1), app_bundle_hash: bundle, now_unix_s: now });
        profiles.flush().await.unwrap();
        let profile = found(&profiles, user(1)).await;
        assert_eq!(profile.impressions_in_window(42, 86_400, now), 3);
        assert!(profile.has_installed(bundle));
        assert!(matches!(profiles.get(user(2)).await, ProfileRead::Absent));
        let health = profiles.health();
        assert_eq!((health.updates_queued, health.updates_applied, health.updates_dropped), (6, 6, 0));
    }
    let mut cold = config(dir.path());
    cold.embedded.warm_budget_percent = 0;
    let profiles = Profiles::open(&cold).await.unwrap();
    assert!(
        profiles.get_cached(user(1)).is_none(),
        "without warming a process starts with an empty memory layer"
    );
    let profile = found(&profiles, user(1)).await;
    assert_eq!(profile.country(), adsnap_snapshot::pack_country("DE"));
    assert_eq!(profile.os(), os::ANDROID);
    assert_eq!((profile.n_impressions(), profile.n_clicks(), profile.n_installs()), (3, 1, 1));
    assert_eq!(profile.impressions_in_window(42, 86_400, now), 3);
    assert!(profile.has_installed(bundle));
    assert!(profiles.get_cached(user(1)).is_some(), "the disk read filled the memory layer");
}

#[tokio::test]
async fn profiles_idle_past_the_ttl_read_as_absent_and_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.idle_ttl_s = 3600;
    let profiles = Profiles::open(&config).await.unwrap();
    let now = now_unix_s();
    profiles.record(ProfileUpdate::Click { key: user(1), campaign_id: 1, now_unix_s: now - 7200 });
    profiles.record(ProfileUpdate::Click { key: user(2), campaign_id: 1, now_unix_s: now - 600 });
    profiles.flush().await.unwrap();
    assert!(matches!(profiles.get(user(1)).await, ProfileRead::Absent));
    assert_eq!(found(&profiles, user(2)).await.n_clicks(), 1);
    profiles.record(ProfileUpdate::Click { key: user(1), campaign_id: 1, now_unix_s: now });
    profiles.flush().await.unwrap();
    assert_eq!(found(&profiles, user(1)).await.n_clicks(), 1, "an idle profile is not resumed");
}

#[tokio::test]
async fn the_memory_budget_holds_and_evicted_profiles_come_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.embedded.memory_bytes_max = 200_000;
    let profiles = Profiles::open(&config).await.unwrap();
    let now = now_unix_s();
    for i in 0..5_000 {
        profiles.record(seen(user(i), now));
        if i % 1000 == 999 {
            profiles.flush().await.unwrap();
        }
    }
    profiles.flush().await.unwrap();
    let health = profiles.health();
    assert!(health.memory_bytes <= 200_000, "memory layer holds {} bytes", health.memory_bytes);
    assert!(health.memory_entries < 5_000);
    for i in (0..5_000).step_by(97) {
        assert_eq!(found(&profiles, user(i)).await.last_seen_unix_s(), now);
    }
}

fn write_raw(dir: &Path, records: &[(UserKey, Vec<u8>)]) {
    let db = fjall::Database::builder(dir.join("profiles")).open().unwrap();
    let keyspace = db.keyspace("profiles", fjall::KeyspaceCreateOptions::default).unwrap();
    for (key, bytes) in records {
        keyspace.insert(store_key(*key), bytes.as_slice()).unwrap();
    }
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[tokio::test]
async fn bad_records_are_typed_misses_and_updates_replace_all_but_newer_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let good = Profile::from_fields(ProfileFields {
        segments: vec![5],
        last_seen_unix_s: now_unix_s(),
        ..Default::default()
    })
    .unwrap();
    let mut corrupt = encode(&good);
    corrupt[41] ^= 1;
    let mut future = encode(&good);
    future[4] = 9;
    write_raw(
        dir.path(),
        &[
            (user(1), corrupt),
            (user(2), b"{\"some\":\"json\"}".to_vec()),
            (user(3), vec![b'A'; RECORD_BYTES_MAX + 1]),
            (user(4), future),
            (user(5), encode(&good)),
        ],
    );
    let profiles = Profiles::open(&config(dir.path())).await.unwrap();
    let expected =
        [MissReason::Corrupt, MissReason::Foreign, MissReason::Oversized, MissReason::UnknownVersion];
    for (i, reason) in (1..).zip(expected) {
        match profiles.get(user(i)).await {
            ProfileRead::Unknown(got) => assert_eq!(got, reason, "user {i}"),
            other => panic!("user {i}: expected Unknown({reason:?}), got {other:?}"),
        }
    }
    assert!(found(&profiles, user(5)).await.in_segment(5));
    assert_eq!(profiles.health().reads.bad_record, 4);
    let now = now_unix_s();
    for i in 1..=4 {
        profiles.record(ProfileUpdate::Click { key: user(i), campaign_id: 1, now_unix_s: now });
    }
    profiles.flush().await.unwrap();
    for i in 1..=3 {
        assert_eq!(found(&profiles, user(i)).await.n_clicks(), 1, "user {i} got a fresh profile");
    }
    assert!(matches!(profiles.get(user(4)).await, ProfileRead::Unknown(MissReason::UnknownVersion)));
    let mut registry = prometheus_client::registry::Registry::default();
    profiles.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"profile_updates_dropped_total{result="unknown_version"} 1"#), "{text}");
    assert!(text.contains("profile_records_replaced_total 3"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.write_queue_len_max = 16;
    let profiles = Profiles::open(&config).await.unwrap();
    let now = now_unix_s();
    let started = Instant::now();
    let n_updates = 200_000;
    for i in 0..n_updates {
        profiles.record(seen(user(i % 1000), now));
    }
    let elapsed = started.elapsed();
    profiles.flush().await.unwrap();
    let health = profiles.health();
    assert!(health.updates_dropped > 0, "a 16-slot queue took {n_updates} updates without dropping");
    assert_eq!(health.updates_dropped_queue_full + health.updates_queued, n_updates);
    assert_eq!(health.updates_dropped, health.updates_dropped_queue_full);
    // Repeats of a visit within the refresh interval are skipped, not applied.
    assert_eq!(health.updates_applied + health.updates_unchanged, health.updates_queued);
    assert!(elapsed < Duration::from_secs(5), "recording took {elapsed:?}");
}

#[tokio::test]
async fn unknown_codes_in_seen_keep_what_was_known() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Every visit rewrites last-seen here; the refresh interval has its own test.
    config.seen_refresh_s = 0;
    let profiles = Profiles::open(&config).await.unwrap();
    let now = now_unix_s();
    profiles.record(seen(user(1), now));
    profiles.record(ProfileUpdate::Seen {
        key: user(1),
        country: CODE_UNKNOWN,
        language: CODE_UNKNOWN,
        os: 0,
        now_unix_s: now + 1,
    });
    profiles.flush().await.unwrap();
    let profile = found(&profiles, user(1)).await;
    assert_eq!(profile.country(), adsnap_snapshot::pack_country("DE"));
    assert_eq!(profile.last_seen_unix_s(), now + 1);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    let _profiles = Profiles::open(&config(dir.path())).await.unwrap();
    let error = Profiles::open(&config(dir.path())).await.err().expect("second open must fail");
    assert!(error.to_string().contains("another adsnap process"), "{error}");
}

/// A store with `n` users on disk and nothing in memory (reopened).
async fn cold_store(dir: &Path, n: u64, edit: impl FnOnce(&mut ProfilesConfig)) -> Profiles {
    let profiles = Profiles::open(&config(dir)).await.unwrap();
    let now = now_unix_s();
    for i in 0..n {
        profiles.record(seen(user(i), now));
    }
    profiles.flush().await.unwrap();
    drop(profiles);
    let mut config = config(dir);
    config.embedded.warm_budget_percent = 0;
    edit(&mut config);
    Profiles::open(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_its_deadline_is_unknown_at_once_and_still_fills_memory() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = cold_store(dir.path(), 50, |c| c.read_deadline_ms = 0).await;
    let mut n_deadline = 0;
    for i in 0..50 {
        let started = Instant::now();
        let read = profiles.get(user(i)).await;
        assert!(started.elapsed() < Duration::from_millis(100), "read {i} took {:?}", started.elapsed());
        match read {
            ProfileRead::Unknown(MissReason::Deadline) => n_deadline += 1,
            ProfileRead::Found(p) => assert_eq!(p.os(), os::ANDROID),
            other => panic!("read {i}: {other:?}"),
        }
    }
    assert!(n_deadline > 0, "a zero deadline never expired");
    assert_eq!(profiles.health().reads.deadline, n_deadline);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..50).any(|i| profiles.get_cached(user(i)).is_none()) {
        assert!(Instant::now() < deadline, "late disk reads did not fill the memory layer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(profiles.get(user(7)).await, ProfileRead::Found(_)), "answered from memory now");
}

#[tokio::test]
async fn disk_reads_past_their_limit_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = cold_store(dir.path(), 3, |c| c.embedded.disk_reads_in_flight_max = 0).await;
    for i in 0..3 {
        assert!(matches!(profiles.get(user(i)).await, ProfileRead::Unknown(MissReason::Overloaded)));
    }
    assert_eq!(profiles.health().reads.overloaded, 3);
    assert_eq!(profiles.health().backend_reads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recorders_and_readers_lose_no_increment_and_see_no_torn_profile() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = Profiles::open(&config(dir.path())).await.unwrap();
    let now = now_unix_s();
    let (n_tasks, n_each) = (4, 2_000u32);
    let mut tasks = Vec::new();
    for _ in 0..n_tasks {
        let profiles = profiles.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n_each {
                profiles.record(ProfileUpdate::Impression {
                    key: user(1),
                    campaign_id: 3,
                    period_s: 3600,
                    now_unix_s: now,
                });
                tokio::task::yield_now().await;
            }
        }));
    }
    let reader = {
        let profiles = profiles.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..5_000 {
                if let ProfileRead::Found(p) = profiles.get(user(1)).await {
                    // A profile is an immutable snapshot: both counters come from one update.
                    assert_eq!(p.n_impressions(), p.impressions_in_window(3, 3600, now));
                    assert!(p.n_impressions() >= last, "counts went backwards");
                    last = p.n_impressions();
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    reader.await.unwrap();
    profiles.flush().await.unwrap();
    assert_eq!(profiles.health().updates_dropped, 0);
    assert_eq!(found(&profiles, user(1)).await.n_impressions(), n_tasks * n_each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_never_seen_are_absent_without_a_disk_read_once_the_key_filter_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = cold_store(dir.path(), 200, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while profiles.health().key_filter_ready != Some(true) {
        assert!(Instant::now() < deadline, "the key filter was not built");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let disk_reads_before = profiles.health().backend_reads;
    for i in 0..2_000 {
        let stranger = UserKey::of_id(&format!("stranger-{i}"));
        assert!(matches!(profiles.get_cached(stranger), None | Some(ProfileRead::Absent)));
        assert!(matches!(profiles.get(stranger).await, ProfileRead::Absent));
    }
    let disk_reads = profiles.health().backend_reads - disk_reads_before;
    assert!(disk_reads < 100, "{disk_reads} of 2000 reads for unknown users went to disk");
    for i in 0..200 {
        assert_eq!(found(&profiles, user(i)).await.os(), os::ANDROID, "user {i} lost by the filter");
    }
    // A user created after the filter was built is found too.
    profiles.record(seen(user(9_999), now_unix_s()));
    profiles.flush().await.unwrap();
    drop(profiles);
    let profiles = Profiles::open(&config(dir.path())).await.unwrap();
    assert!(matches!(profiles.get(user(9_999)).await, ProfileRead::Found(_)));
}

#[tokio::test]
async fn a_repeat_visit_within_the_refresh_interval_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.seen_refresh_s = 600;
    let profiles = Profiles::open(&config).await.unwrap();
    let now = now_unix_s();
    profiles.record(seen(user(1), now));
    profiles.flush().await.unwrap();
    let first = found(&profiles, user(1)).await;
    // The request path skips what it can see is unchanged, without queueing it.
    profiles.record_given(seen(user(1), now + 599), Some(&first));
    // The writer skips it too when the caller could not tell.
    profiles.record(seen(user(1), now + 300));
    profiles.flush().await.unwrap();
    let health = profiles.health();
    assert_eq!((health.updates_queued, health.updates_applied, health.updates_unchanged), (2, 1, 2));
    assert_eq!(found(&profiles, user(1)).await.last_seen_unix_s(), now);
    // A new country, or the interval passed: written.
    let fr = adsnap_snapshot::pack_country("FR").unwrap();
    let moved =
        ProfileUpdate::Seen { key: user(1), country: fr, language: CODE_UNKNOWN, os: 0, now_unix_s: now + 1 };
    profiles.record_given(moved, Some(&first));
    profiles.flush().await.unwrap();
    let moved = found(&profiles, user(1)).await;
    assert_eq!((moved.country(), moved.last_seen_unix_s()), (Some(fr), now + 1));
    profiles.record_given(seen(user(1), now + 601), Some(&moved));
    profiles.flush().await.unwrap();
    let later = found(&profiles, user(1)).await;
    assert_eq!((later.country(), later.last_seen_unix_s()), (adsnap_snapshot::pack_country("DE"), now + 601));
    assert_eq!(profiles.health().updates_applied, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_warms_its_memory_layer_within_the_budget_share() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = cold_store(dir.path(), 2_000, |_| {}).await;
    drop(profiles);
    // Room for everyone: every user is answered from memory, with no disk read.
    let profiles = Profiles::open(&config(dir.path())).await.unwrap();
    scan_done(&profiles).await;
    for i in 0..2_000 {
        match profiles.get_cached(user(i)) {
            Some(ProfileRead::Found(p)) => assert_eq!(p.os(), os::ANDROID),
            other => panic!("user {i} not warmed: {other:?}"),
        }
    }
    assert_eq!(profiles.health().backend_reads, 0);
    drop(profiles);
    // A small budget: warming stops at its share, and the rest still comes from disk.
    let mut small = config(dir.path());
    (small.embedded.memory_bytes_max, small.embedded.warm_budget_percent) = (200_000, 50);
    let profiles = Profiles::open(&small).await.unwrap();
    scan_done(&profiles).await;
    let health = profiles.health();
    // It stops at the first entry that takes the layer past its share (entries are < 1 KiB).
    let warmed = health.memory_bytes;
    assert!(warmed > 0 && warmed <= 100_000 + 1_024, "{warmed} bytes warmed");
    let n_cached = (0..2_000).filter(|&i| profiles.get_cached(user(i)).is_some()).count();
    assert!(n_cached > 0 && n_cached < 2_000, "{n_cached} users warmed");
    for i in (0..2_000).step_by(37) {
        assert_eq!(found(&profiles, user(i)).await.os(), os::ANDROID);
    }
}

/// Waits (polling, with a deadline) until the scan at open has built the key filter.
async fn scan_done(profiles: &Profiles) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while profiles.health().key_filter_ready != Some(true) {
        assert!(Instant::now() < deadline, "the scan at open did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_forgotten_user_is_absent_after_queued_updates_and_a_restart_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix_s();
    {
        let profiles = Profiles::open(&config(dir.path())).await.unwrap();
        profiles.record(ProfileUpdate::Click { key: user(1), campaign_id: 1, now_unix_s: now });
        profiles.record(ProfileUpdate::Click { key: user(2), campaign_id: 1, now_unix_s: now });
        profiles.flush().await.unwrap();
        // Queued before the deletion, so deleted with the rest.
        profiles.record(ProfileUpdate::Click { key: user(1), campaign_id: 1, now_unix_s: now });
        assert_eq!(profiles.forget(vec![user(1), user(3)]).await.unwrap(), 1, "only user 1 existed");
        assert!(matches!(profiles.get(user(1)).await, ProfileRead::Absent));
        assert_eq!(found(&profiles, user(2)).await.n_clicks(), 1);
    }
    let profiles = Profiles::open(&config(dir.path())).await.unwrap();
    assert!(matches!(profiles.get(user(1)).await, ProfileRead::Absent), "the deletion is on disk");
    profiles.record(ProfileUpdate::Click { key: user(1), campaign_id: 1, now_unix_s: now });
    profiles.flush().await.unwrap();
    assert_eq!(found(&profiles, user(1)).await.n_clicks(), 1, "a new profile, not the old one");
}

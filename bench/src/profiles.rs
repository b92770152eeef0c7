//! `adsnap-bench profiles`: the embedded profile store at 1M and 10M generated users. For each
//! size: bulk import time, read latency percentiles over a heavy-tailed stream of users (one in
//! ten unknown) against a plain `HashMap` look-up of the same stream as the baseline, the same
//! stream with the memory layer off (every read from disk), and update throughput, paced at
//! 100k/s and unpaced.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adsnap_profile_store::gen::{user, GenOptions};
use adsnap_profile_store::{Profile, ProfileRead, ProfileUpdate, Profiles, ProfilesConfig, UserKey};
use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 11;
/// Profiles per import batch.
const IMPORT_BATCH_LEN: usize = 50_000;
/// Reads before the timed ones, to fill the memory layer as traffic would.
const WARM_READS: usize = 1_000_000;
/// Timed reads per variant.
const TIMED_READS: usize = 2_000_000;
/// Timed reads with the memory layer off (each is a disk read on the blocking pool).
const DISK_READS: usize = 200_000;
/// Share of reads for users the store has never seen.
const UNKNOWN_USER_SHARE: f64 = 0.1;
/// The paced update run: this rate for this long.
const PACED_UPDATES_PER_S: u64 = 100_000;
const PACED_S: u64 = 10;
/// The unpaced update run lasts this long.
const UNPACED_S: u64 = 5;
/// The power applied to a uniform draw to pick a user: low indexes are the active users.
const ACTIVITY_EXPONENT: i32 = 4;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A heavy-tailed stream of user keys, `UNKNOWN_USER_SHARE` of them never imported.
fn key_stream(n_users: u64, n: usize, seed: u64) -> Vec<UserKey> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            if rng.random_bool(UNKNOWN_USER_SHARE) {
                return UserKey::of_id(&format!("unknown-{}", rng.random::<u64>()));
            }
            let u: f64 = rng.random();
            let idx = ((u.powi(ACTIVITY_EXPONENT) * n_users as f64) as u64).min(n_users - 1);
            UserKey::of_id(&adsnap_profile_store::gen::user_id(SEED, idx))
        })
        .collect()
}

struct ReadFigures {
    times: Vec<Duration>,
    n_found: usize,
    n_absent: usize,
    n_unknown: usize,
}

impl ReadFigures {
    fn row(&mut self, name: &str, baseline_p99: Option<Duration>) {
        self.times.sort();
        let p99 = percentile(&self.times, 0.99);
        let ratio = baseline_p99.map_or("1 (baseline)".to_string(), |b| format!("{:.1}", us(p99) / us(b)));
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {ratio} | {} / {} / {} |",
            self.times.len(),
            us(percentile(&self.times, 0.5)),
            us(p99),
            us(percentile(&self.times, 0.999)),
            us(*self.times.last().unwrap_or(&Duration::ZERO)),
            self.n_found,
            self.n_absent,
            self.n_unknown
        );
    }
}

async fn time_reads(profiles: &Profiles, keys: &[UserKey]) -> ReadFigures {
    let mut figures =
        ReadFigures { times: Vec::with_capacity(keys.len()), n_found: 0, n_absent: 0, n_unknown: 0 };
    for &key in keys {
        let started = Instant::now();
        let read = std::hint::black_box(profiles.get(key).await);
        figures.times.push(started.elapsed());
        match read {
            ProfileRead::Found(_) => figures.n_found += 1,
            ProfileRead::Absent => figures.n_absent += 1,
            ProfileRead::Unknown(_) => figures.n_unknown += 1,
        }
    }
    figures
}

fn time_hashmap(map: &HashMap<UserKey, Arc<Profile>>, keys: &[UserKey]) -> ReadFigures {
    let mut figures =
        ReadFigures { times: Vec::with_capacity(keys.len()), n_found: 0, n_absent: 0, n_unknown: 0 };
    for key in keys {
        let started = Instant::now();
        let read = std::hint::black_box(map.get(key).cloned());
        figures.times.push(started.elapsed());
        if read.is_some() {
            figures.n_found += 1;
        } else {
            figures.n_absent += 1;
        }
    }
    figures
}

async fn import(profiles: &Profiles, n_users: u64) -> anyhow::Result<Duration> {
    let options = GenOptions { seed: SEED, now_unix_s: adsnap_profile_store::embedded::now_unix_s() };
    let started = Instant::now();
    let mut idx = 0;
    while idx < n_users {
        let end = (idx + IMPORT_BATCH_LEN as u64).min(n_users);
        let batch: Vec<_> = (idx..end).map(|i| user(&options, i)).collect();
        profiles.import(batch).await.context("importing generated profiles")?;
        idx = end;
    }
    profiles.flush().await?;
    Ok(started.elapsed())
}

fn update(rng: &mut ChaCha8Rng, n_users: u64, now_unix_s: i64) -> ProfileUpdate {
    let u: f64 = rng.random();
    let idx = ((u.powi(ACTIVITY_EXPONENT) * n_users as f64) as u64).min(n_users - 1);
    let key = UserKey(xxhash_rust::xxh3::xxh3_64(format!("gen-{SEED}-{idx}").as_bytes()));
    let campaign_id = rng.random_range(1..10_000);
    match rng.random_range(0..100) {
        0..40 => ProfileUpdate::Seen { key, country: 1, language: 2, os: 1, now_unix_s },
        40..90 => ProfileUpdate::Impression { key, campaign_id, period_s: 86_400, now_unix_s },
        90..95 => ProfileUpdate::Click { key, campaign_id, now_unix_s },
        _ => ProfileUpdate::Install { key, app_bundle_hash: rng.random(), now_unix_s },
    }
}

/// Records updates at `per_s` (0: as fast as possible) for `seconds`, then flushes; returns
/// (updates offered, updates applied, updates dropped, elapsed including the flush).
async fn run_updates(
    profiles: &Profiles,
    n_users: u64,
    per_s: u64,
    seconds: u64,
) -> anyhow::Result<(u64, u64, u64, Duration)> {
    let before = profiles.health();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + per_s);
    let now_unix_s = adsnap_profile_store::embedded::now_unix_s();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut n_offered = 0u64;
    while Instant::now() < deadline {
        if per_s > 0 {
            let due = (started.elapsed().as_secs_f64() * per_s as f64) as u64;
            if n_offered >= due {
                // Sleep, not spin: the producer must not take the writer's core.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        for _ in 0..100 {
            profiles.record(update(&mut rng, n_users, now_unix_s));
            n_offered += 1;
        }
    }
    profiles.flush().await?;
    let after = profiles.health();
    Ok((
        n_offered,
        after.updates_applied - before.updates_applied,
        after.updates_dropped - before.updates_dropped,
        started.elapsed(),
    ))
}

fn config(dir: &Path, memory_bytes_max: u64) -> ProfilesConfig {
    let mut config = ProfilesConfig::default();
    config.embedded.path = dir.to_path_buf();
    config.embedded.memory_bytes_max = memory_bytes_max;
    // Every update writes, repeat visits included: the worst case of the writer's load.
    config.seen_refresh_s = 0;
    // The store's own capacity: at a lower priority than the producer, the unpaced run would
    // measure how much of a core the scheduler leaves the writer, not the writer.
    config.embedded.background_nice = 0;
    config
}

pub fn run(sizes: &[u64], work: &Path, memory_bytes_max: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    for &n_users in sizes {
        runtime.block_on(run_size(n_users, work, memory_bytes_max))?;
    }
    Ok(())
}

async fn run_size(n_users: u64, work: &Path, memory_bytes_max: u64) -> anyhow::Result<()> {
    let dir = work.join(format!("profiles-{n_users}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let profiles = Profiles::open(&config(&dir, memory_bytes_max)).await?;
    let import_time = import(&profiles, n_users).await?;
    let (n_records, disk_bytes) = profiles.disk_stats().unwrap_or((0, 0));
    println!("## embedded profile store, {n_users} users (memory layer {} MiB)", memory_bytes_max >> 20);
    println!(
        "import: {:.1} s ({:.0} profiles/s), {} records, {:.0} MiB on disk",
        import_time.as_secs_f64(),
        n_users as f64 / import_time.as_secs_f64(),
        n_records,
        disk_bytes as f64 / (1 << 20) as f64
    );
    let warm = key_stream(n_users, WARM_READS, 1);
    let keys = key_stream(n_users, TIMED_READS, 2);
    time_reads(&profiles, &warm).await;
    let before = profiles.health();
    let mut store = time_reads(&profiles, &keys).await;
    let health = profiles.health();
    // The baseline: the same stream against a plain HashMap holding exactly the users read.
    let mut map = HashMap::new();
    for &key in &keys {
        if let Some(ProfileRead::Found(p)) = profiles.get_cached(key) {
            map.insert(key, p);
        }
    }
    let mut baseline = time_hashmap(&map, &keys);
    println!(
        "| reads | n | p50 µs | p99 µs | p99.9 µs | max µs | p99 / baseline | found / absent / unknown |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let baseline_p99 = {
        baseline.row("HashMap<UserKey, Arc<Profile>> (baseline)", None);
        percentile(&baseline.times, 0.99)
    };
    store.row("Profiles::get, memory layer", Some(baseline_p99));
    println!(
        "memory layer: {:.0} MiB, {} entries; {} of {} timed reads went past it to disk",
        health.memory_bytes as f64 / (1 << 20) as f64,
        health.memory_entries,
        health.backend_reads - before.backend_reads,
        store.times.len()
    );
    drop(map);
    let (offered, applied, dropped, elapsed) =
        run_updates(&profiles, n_users, PACED_UPDATES_PER_S, PACED_S).await?;
    println!(
        "updates paced at {PACED_UPDATES_PER_S}/s for {PACED_S} s: {offered} offered, {applied} applied, {dropped} dropped, {:.1} s including the final flush",
        elapsed.as_secs_f64()
    );
    let (offered, applied, dropped, elapsed) = run_updates(&profiles, n_users, 0, UNPACED_S).await?;
    println!(
        "updates unpaced for {UNPACED_S} s: {offered} offered, {applied} applied ({:.0}/s sustained), {dropped} dropped (queue full)",
        applied as f64 / elapsed.as_secs_f64()
    );
    drop(profiles);
    let cold = Profiles::open(&config(&dir, 0)).await?;
    let mut disk = time_reads(&cold, &keys[..DISK_READS]).await;
    disk.row("Profiles::get, memory layer off (disk path)", Some(baseline_p99));
    drop(cold);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    println!();
    Ok(())
}

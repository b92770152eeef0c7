//! Micro-benchmarks of the embedded store's hot path: a memory-layer hit against a plain
//! `HashMap` look-up (the baseline), and encoding and decoding one record. The figures at 1M and
//! 10M users come from `adsnap-bench profiles`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use adsnap_profile_store::gen::{user, GenOptions};
use adsnap_profile_store::record::{decode, encode};
use adsnap_profile_store::{Profile, ProfileRead, Profiles, ProfilesConfig, UserKey};
use criterion::{criterion_group, criterion_main, Criterion};

const N_USERS: u64 = 100_000;

fn population() -> Vec<(UserKey, Profile)> {
    let options = GenOptions { seed: 3, now_unix_s: adsnap_profile_store::embedded::now_unix_s() };
    (0..N_USERS).map(|i| user(&options, i)).collect()
}

fn reads(c: &mut Criterion) {
    let users = population();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut config = ProfilesConfig::default();
    config.embedded.path = dir.path().join("profiles");
    let profiles = runtime.block_on(async {
        let profiles = Profiles::open(&config).await.unwrap();
        profiles.import(users.clone()).await.unwrap();
        profiles
    });
    let keys: Vec<UserKey> = users.iter().map(|(k, _)| *k).collect();
    let map: HashMap<UserKey, Arc<Profile>> = users.into_iter().map(|(k, p)| (k, Arc::new(p))).collect();
    let mut group = c.benchmark_group("read");
    let mut i = 0usize;
    group.bench_function("hashmap_baseline", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(map.get(&keys[i]).cloned())
        })
    });
    group.bench_function("memory_layer_get", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let read = runtime.block_on(profiles.get(keys[i]));
            assert!(matches!(read, ProfileRead::Found(_)));
            black_box(read)
        })
    });
    group.bench_function("memory_layer_get_cached", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(profiles.get_cached(keys[i]))
        })
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    let (_, profile) = user(&GenOptions { seed: 3, now_unix_s: 1_795_000_000 }, 42);
    let bytes = encode(&profile);
    c.bench_function("record_encode", |b| b.iter(|| black_box(encode(black_box(&profile)))));
    c.bench_function("record_decode", |b| b.iter(|| black_box(decode(black_box(&bytes)))));
}

criterion_group!(benches, reads, records);
criterion_main!(benches);

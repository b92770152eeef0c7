//! Tests of assignment: proportions, stability and independence over a million fixed-seed keys,
//! and totality over arbitrary tables.
//!
//! Statistical tests compare a chi-square statistic with its critical value at p = 0.001. The
//! keys come from fixed seeds, so each test gives the same statistic every run: a failure is a
//! real bias (or, with odds of one in a thousand per test, a seed to report), never a flake.

use adsnap_snapshot::schema::{ArchivedExperiments, Arm, Experiment, Experiments, Overrides, BUCKETS};
use proptest::prelude::*;
use rkyv::util::AlignedVec;
use xxhash_rust::xxh3::xxh3_64;

use crate::assign::{
    arm_bucket, bucket, production_bucket, production_slice, staging_bucket, ARM_DOMAIN, PRODUCTION_DOMAIN,
    STAGING_DOMAIN,
};
use crate::{assign, Assignment, Slice, UserKey};

/// Keys per statistical test.
const N_KEYS: usize = 1_000_000;
const STAGING_SHARE_BP: u16 = 500;
/// Production buckets of the three slots, as `docs/catalog.md` fixes them.
const SLOT_RANGES: [(u16, u16); 3] = [(0, 3334), (3334, 6668), (6668, 10_000)];
const SHARES_BP: [u16; 3] = [2000, 2000, 1000];
/// Arm weights per slot: an even split, an uneven one, and three arms.
const ARM_WEIGHTS_BP: [&[u16]; 3] = [&[5000, 5000], &[2000, 8000], &[3334, 3333, 3333]];
const TABLE_SALT: u64 = 0x5eed_0000_0000_0001;

// Upper critical values of the chi-square distribution at p = 0.001, by degrees of freedom,
// from the NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.4 (table of critical
// values of the chi-square distribution), checked against the inverse of the regularized gamma
// function.
const CHI2_P001_DF1: f64 = 10.828;
const CHI2_P001_DF2: f64 = 13.816;
const CHI2_P001_DF8: f64 = 26.124;
const CHI2_P001_DF9: f64 = 27.877;
const CHI2_P001_DF27: f64 = 55.476;
const CHI2_P001_DF30: f64 = 59.703;
const CHI2_P001_DF60: f64 = 99.607;

/// `splitmix64`: a fixed-seed stream of well-spread numbers that shares nothing with xxh3, so
/// the keys cannot conspire with the hash under test.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` pseudo-random 16-byte ids (the size of an IFA) from `seed`.
fn keys(seed: u64, n: usize) -> impl Iterator<Item = [u8; 16]> {
    let mut rng = SplitMix64(seed);
    (0..n).map(move |_| {
        let mut key = [0; 16];
        key[..8].copy_from_slice(&rng.next().to_le_bytes());
        key[8..].copy_from_slice(&rng.next().to_le_bytes());
        key
    })
}

/// The test table: experiment `i` in slot `i` with `shares_bp[i]` (none where it is 0).
fn table(staging_share_bp: u16, shares_bp: [u16; 3]) -> Experiments {
    let experiments = (0..3).filter(|&slot| shares_bp[slot] > 0).map(|slot| {
        let mut arm_start = 0;
        let arms = ARM_WEIGHTS_BP[slot].iter().zip(1..).map(|(&weight_bp, id)| {
            let arm = Arm {
                id: 100 * (slot as u32 + 1) + id,
                name: format!("arm {id}"),
                bucket_start: arm_start,
                bucket_end: arm_start + weight_bp,
                params: Overrides::default(),
            };
            arm_start += weight_bp;
            arm
        });
        let (slot_start, _) = SLOT_RANGES[slot];
        Experiment {
            id: slot as u32 + 1,
            name: format!("experiment {slot}"),
            slot: slot as u8,
            bucket_start: slot_start,
            bucket_end: slot_start + shares_bp[slot],
            salt: 0xa11_0000 + slot as u64,
            arms: arms.collect(),
        }
    });
    Experiments {
        staging_share_bp,
        salt: TABLE_SALT,
        experiments: experiments.collect(),
        control: Overrides::default(),
    }
}

fn archive(experiments: &Experiments) -> AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(experiments).unwrap()
}

fn access(bytes: &AlignedVec) -> &ArchivedExperiments {
    rkyv::access::<ArchivedExperiments, rkyv::rancor::Error>(bytes).unwrap()
}

/// The slices of the test table in a fixed order: staging, control, then every arm.
struct Categories {
    arm_offsets: [usize; 3],
    n: usize,
}

impl Categories {
    fn of(experiments: &Experiments) -> Categories {
        let mut arm_offsets = [0; 3];
        let mut n = 2;
        for (idx, x) in experiments.experiments.iter().enumerate() {
            arm_offsets[idx] = n;
            n += x.arms.len();
        }
        Categories { arm_offsets, n }
    }

    fn idx(&self, slice: Slice) -> usize {
        match slice {
            Slice::Staging => 0,
            Slice::Control => 1,
            Slice::Experiment { experiment_idx, arm_idx, .. } => {
                self.arm_offsets[usize::from(experiment_idx)] + usize::from(arm_idx)
            }
        }
    }

    /// Each slice's share of all traffic, as the catalog defines it.
    fn expected_shares(&self, experiments: &Experiments) -> Vec<f64> {
        let staging = f64::from(experiments.staging_share_bp) / f64::from(BUCKETS);
        let production = 1.0 - staging;
        let mut shares = vec![staging, production];
        for x in &experiments.experiments {
            let share = production * f64::from(x.bucket_end - x.bucket_start) / f64::from(BUCKETS);
            shares[1] -= share;
            let arms = x.arms.iter().map(|a| share * f64::from(a.bucket_end - a.bucket_start));
            shares.extend(arms.map(|s| s / f64::from(BUCKETS)));
        }
        shares
    }
}

/// Coarse slice: 0 staging, 1 control, 2 + experiment index.
fn coarse(slice: Slice) -> usize {
    match slice {
        Slice::Staging => 0,
        Slice::Control => 1,
        Slice::Experiment { experiment_idx, .. } => 2 + usize::from(experiment_idx),
    }
}

/// Pearson's goodness-of-fit statistic of `observed` counts against `expected_shares`.
fn goodness_of_fit(observed: &[u64], expected_shares: &[f64]) -> f64 {
    assert_eq!(observed.len(), expected_shares.len());
    let n: u64 = observed.iter().sum();
    let cells = observed.iter().zip(expected_shares);
    cells
        .map(|(&o, &share)| {
            let e = share * n as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

/// Pearson's statistic of independence of a contingency table's rows and columns.
fn contingency(table: &[Vec<u64>]) -> f64 {
    let n: u64 = table.iter().flatten().sum();
    let row_sums: Vec<u64> = table.iter().map(|row| row.iter().sum()).collect();
    let col_sums: Vec<u64> = (0..table[0].len()).map(|c| table.iter().map(|row| row[c]).sum()).collect();
    let mut statistic = 0.0;
    for (row, &row_sum) in table.iter().zip(&row_sums) {
        for (&o, &col_sum) in row.iter().zip(&col_sums) {
            let e = row_sum as f64 * col_sum as f64 / n as f64;
            statistic += (o as f64 - e).powi(2) / e;
        }
    }
    statistic
}

fn assert_below(statistic: f64, critical: f64, what: &str) {
    assert!(statistic < critical, "{what}: chi-square {statistic:.3} is not below {critical}");
}

fn id_slice(key: &[u8], experiments: &ArchivedExperiments) -> Slice {
    let assignment = assign(UserKey::Id(key), experiments);
    assert!(!assignment.anonymous);
    assignment.slice
}

#[test]
fn slices_match_their_shares_over_a_million_keys() {
    let native = table(STAGING_SHARE_BP, SHARES_BP);
    let bytes = archive(&native);
    let experiments = access(&bytes);
    let categories = Categories::of(&native);
    let mut counts = vec![0; categories.n];
    for key in keys(1, N_KEYS) {
        counts[categories.idx(id_slice(&key, experiments))] += 1;
    }
    let expected = categories.expected_shares(&native);
    // Nine slices: staging, control and seven arms.
    assert_eq!(counts.len(), 9);
    assert_below(goodness_of_fit(&counts, &expected), CHI2_P001_DF8, "slices");
}

#[test]
fn arms_split_each_experiment_by_weight() {
    let native = table(STAGING_SHARE_BP, SHARES_BP);
    let bytes = archive(&native);
    let experiments = access(&bytes);
    let mut counts: [Vec<u64>; 3] = ARM_WEIGHTS_BP.map(|weights| vec![0; weights.len()]);
    for key in keys(2, N_KEYS) {
        if let Slice::Experiment { experiment_idx, arm_idx, .. } = id_slice(&key, experiments) {
            counts[usize::from(experiment_idx)][usize::from(arm_idx)] += 1;
        }
    }
    let critical = [CHI2_P001_DF1, CHI2_P001_DF1, CHI2_P001_DF2];
    for (slot, observed) in counts.iter().enumerate() {
        let expected: Vec<f64> =
            ARM_WEIGHTS_BP[slot].iter().map(|&w| f64::from(w) / f64::from(BUCKETS)).collect();
        assert_below(goodness_of_fit(observed, &expected), critical[slot], &format!("arms of {slot}"));
    }
}

#[test]
fn ids_and_slices_match() {
    let native = table(STAGING_SHARE_BP, SHARES_BP);
    let bytes = archive(&native);
    let experiments = access(&bytes);
    for key in keys(3, 10_000) {
        if let Slice::Experiment { experiment_idx, arm_idx, experiment_id, arm_id } =
            id_slice(&key, experiments)
        {
            let x = &native.experiments[usize::from(experiment_idx)];
            assert_eq!((x.id, x.arms[usize::from(arm_idx)].id), (experiment_id, arm_id));
            assert!((x.bucket_start..x.bucket_end).contains(&production_bucket(&key, experiments)));
        }
    }
}

#[test]
fn the_same_key_gets_the_same_assignment() {
    let bytes = archive(&table(STAGING_SHARE_BP, SHARES_BP));
    let again = archive(&table(STAGING_SHARE_BP, SHARES_BP));
    let (experiments, again) = (access(&bytes), access(&again));
    for key in keys(4, N_KEYS) {
        assert_eq!(id_slice(&key, experiments), id_slice(&key, again));
    }
}

/// Resizes the experiment in `slot` from `before_bp` to `after_bp` and checks, key by key, that
/// only keys in the buckets between the two ends moved, and only between that experiment and
/// control; keys that stayed in the experiment kept their arm.
fn check_resize(slot: usize, before_bp: u16, after_bp: u16) {
    let (mut before, mut after) = (SHARES_BP, SHARES_BP);
    (before[slot], after[slot]) = (before_bp, after_bp);
    let (old, new) = (archive(&table(STAGING_SHARE_BP, before)), archive(&table(STAGING_SHARE_BP, after)));
    let (old, new) = (access(&old), access(&new));
    let slot_start = SLOT_RANGES[slot].0;
    let changed = slot_start + before_bp.min(after_bp)..slot_start + before_bp.max(after_bp);
    let mut n_moved = 0;
    for key in keys(5 + slot as u64, N_KEYS / 4) {
        let (was, is) = (id_slice(&key, old), id_slice(&key, new));
        let in_changed = was != Slice::Staging && changed.contains(&production_bucket(&key, old));
        if !in_changed {
            assert_eq!(was, is, "key {key:x?} moved outside the resized range");
            continue;
        }
        let (inside, outside) = if after_bp > before_bp { (is, was) } else { (was, is) };
        assert_eq!(outside, Slice::Control, "key {key:x?}");
        assert!(
            matches!(inside, Slice::Experiment { experiment_idx, .. } if usize::from(experiment_idx) == slot)
        );
        n_moved += 1;
    }
    // Every change tested spans at least 999 buckets, so a quarter of a million keys moves
    // thousands; none moving would mean the check above never ran.
    assert!(n_moved > 1000, "only {n_moved} keys moved");
}

#[test]
fn resizing_one_experiment_moves_only_its_own_buckets() {
    check_resize(0, 2000, 3334);
    check_resize(1, 2000, 500);
    check_resize(2, 1000, 3332);
    check_resize(2, 1000, 1);
}

#[test]
fn assignment_is_independent_of_the_shard_hash() {
    const N_SHARDS: u64 = 16;
    let native = table(STAGING_SHARE_BP, SHARES_BP);
    let bytes = archive(&native);
    let experiments = access(&bytes);
    let mut by_slice = vec![vec![0; 5]; N_SHARDS as usize];
    let mut by_arm = vec![vec![0; 3]; N_SHARDS as usize];
    for key in keys(6, N_KEYS) {
        let shard = (xxh3_64(&key) % N_SHARDS) as usize;
        let slice = id_slice(&key, experiments);
        by_slice[shard][coarse(slice)] += 1;
        if let Slice::Experiment { experiment_idx: 2, arm_idx, .. } = slice {
            by_arm[shard][usize::from(arm_idx)] += 1;
        }
    }
    // (16 - 1) × (5 - 1) and (16 - 1) × (3 - 1) degrees of freedom.
    assert_below(contingency(&by_slice), CHI2_P001_DF60, "shard × slice");
    assert_below(contingency(&by_arm), CHI2_P001_DF30, "shard × arm of the three-arm experiment");
}

#[test]
fn staging_production_and_arm_hashes_are_independent() {
    const N_BINS: usize = 10;
    let native = table(STAGING_SHARE_BP, SHARES_BP);
    let bytes = archive(&native);
    let experiments = access(&bytes);
    let experiment = &experiments.experiments[0];
    let (start, end) = (native.experiments[0].bucket_start, native.experiments[0].bucket_end);
    let mut staging_by_production = vec![vec![0; 4]; N_BINS];
    let mut production_by_arm = vec![vec![0; 2]; N_BINS];
    for key in keys(7, N_KEYS) {
        let staging_bin = usize::from(staging_bucket(&key, experiments)) * N_BINS / usize::from(BUCKETS);
        // Every key's production slice, whatever its staging bucket, minus the staging column.
        let production = coarse(production_slice(&key, experiments)) - 1;
        staging_by_production[staging_bin][production] += 1;
        let production_bucket = production_bucket(&key, experiments);
        if (start..end).contains(&production_bucket) {
            let bin = usize::from(production_bucket - start) * N_BINS / usize::from(end - start);
            production_by_arm[bin][usize::from(arm_bucket(&key, experiment) >= 5000)] += 1;
        }
    }
    // (10 - 1) × (4 - 1) and (10 - 1) × (2 - 1) degrees of freedom.
    assert_below(contingency(&staging_by_production), CHI2_P001_DF27, "staging × production");
    assert_below(contingency(&production_by_arm), CHI2_P001_DF9, "production bucket × arm");
}

#[test]
fn anonymous_requests_spread_like_users_and_are_flagged() {
    let native = table(STAGING_SHARE_BP, SHARES_BP);
    let bytes = archive(&native);
    let experiments = access(&bytes);
    let categories = Categories::of(&native);
    let mut counts = vec![0; categories.n];
    // Consecutive nonces, as a per-process request counter would give them.
    for request_nonce in 0..N_KEYS as u64 {
        let assignment = assign(UserKey::Anonymous { request_nonce }, experiments);
        assert!(assignment.anonymous);
        counts[categories.idx(assignment.slice)] += 1;
    }
    let expected = categories.expected_shares(&native);
    assert_below(goodness_of_fit(&counts, &expected), CHI2_P001_DF8, "anonymous slices");
}

#[test]
fn an_empty_table_is_all_control() {
    let bytes = archive(&Experiments::default());
    let experiments = access(&bytes);
    for key in keys(8, 10_000) {
        assert_eq!(id_slice(&key, experiments), Slice::Control);
    }
}

#[test]
fn a_full_staging_share_is_all_staging() {
    let bytes = archive(&table(BUCKETS, SHARES_BP));
    let experiments = access(&bytes);
    for key in keys(9, 10_000) {
        assert_eq!(id_slice(&key, experiments), Slice::Staging);
    }
}

#[test]
fn broken_tables_give_control() {
    let check = |native: Experiments, what: &str| {
        let bytes = archive(&native);
        let experiments = access(&bytes);
        for key in keys(10, 10_000) {
            assert_eq!(id_slice(&key, experiments), Slice::Control, "{what}");
        }
    };
    check(table(BUCKETS + 1, SHARES_BP), "staging share above 100%");
    let mut native = table(0, [3334, 0, 0]);
    native.experiments[0].arms[0].bucket_end = 0;
    native.experiments[0].arms[1].bucket_start = BUCKETS;
    check(native, "arms that cover none of the experiment's buckets");
    let mut native = table(0, [0, 0, 0]);
    let mut experiment = table(0, [3334, 0, 0]).experiments.remove(0);
    experiment.bucket_end = 0;
    native.experiments = vec![experiment; 3];
    native.experiments.push(table(0, [0, 0, 3332]).experiments.remove(0));
    native.experiments[3].bucket_start = 0;
    native.experiments[3].bucket_end = BUCKETS;
    check(native, "empty experiments, then one past the slots");
}

#[test]
fn domain_constants_are_the_hashes_of_their_labels() {
    let labels = [&b"adsnap/abtest/staging"[..], b"adsnap/abtest/production", b"adsnap/abtest/arm"];
    assert_eq!([STAGING_DOMAIN, PRODUCTION_DOMAIN, ARM_DOMAIN], labels.map(xxh3_64));
}

#[test]
fn bucket_maps_the_hash_range_onto_the_buckets() {
    assert_eq!(bucket(0), 0);
    assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    assert_eq!(bucket(1 << 63), BUCKETS / 2);
    assert_eq!(bucket((1 << 63) - 1), BUCKETS / 2 - 1);
}

/// Users are assigned the same way in every release: these keys' slices must never change (a
/// change to a domain constant, the seed derivation or the bucket mapping reassigns everyone).
#[test]
fn assignments_are_pinned() {
    let bytes = archive(&table(STAGING_SHARE_BP, SHARES_BP));
    let experiments = access(&bytes);
    let arm = |experiment_idx: u8, arm_idx: u8| Slice::Experiment {
        experiment_idx,
        arm_idx,
        experiment_id: u32::from(experiment_idx) + 1,
        arm_id: 100 * (u32::from(experiment_idx) + 1) + u32::from(arm_idx) + 1,
    };
    let pinned = [
        ("user-0", Slice::Control),
        ("user-29", Slice::Staging),
        ("user-5", arm(0, 0)),
        ("user-7", arm(0, 1)),
        ("user-1", arm(1, 1)),
        ("user-38", arm(2, 0)),
        ("user-3", arm(2, 1)),
        ("user-19", arm(2, 2)),
    ];
    for (key, slice) in pinned {
        assert_eq!(id_slice(key.as_bytes(), experiments), slice, "{key}");
    }
    for (request_nonce, slice) in [(0, arm(2, 2)), (2, Slice::Control)] {
        let assignment = assign(UserKey::Anonymous { request_nonce }, experiments);
        assert_eq!(assignment, Assignment { slice, anonymous: true }, "nonce {request_nonce}");
    }
}

fn arbitrary_experiment() -> impl Strategy<Value = Experiment> {
    let arm = (any::<u32>(), any::<u16>(), any::<u16>()).prop_map(|(id, bucket_start, bucket_end)| Arm {
        id,
        name: String::new(),
        bucket_start,
        bucket_end,
        params: Overrides::default(),
    });
    let fields = (any::<u32>(), any::<u8>(), any::<u16>(), any::<u16>(), any::<u64>());
    (fields, proptest::collection::vec(arm, 0..4)).prop_map(
        |((id, slot, bucket_start, bucket_end, salt), arms)| Experiment {
            id,
            name: String::new(),
            slot,
            bucket_start,
            bucket_end,
            salt,
            arms,
        },
    )
}

proptest! {
    /// Any table, valid or not: no panic, and an experiment assignment always names an
    /// experiment and arm whose ranges hold the key's buckets.
    #[test]
    fn any_table_gives_a_consistent_assignment(
        staging_share_bp in 0..=BUCKETS + 10,
        salt in any::<u64>(),
        table in proptest::collection::vec(arbitrary_experiment(), 0..5),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let native = Experiments { staging_share_bp, salt, experiments: table, control: Overrides::default() };
        let bytes = archive(&native);
        let experiments = access(&bytes);
        let slice = id_slice(&key, experiments);
        prop_assert_eq!(slice, id_slice(&key, experiments));
        if let Slice::Experiment { experiment_idx, arm_idx, experiment_id, arm_id } = slice {
            let x = &native.experiments[usize::from(experiment_idx)];
            let arm = &x.arms[usize::from(arm_idx)];
            prop_assert!(usize::from(experiment_idx) < 3);
            prop_assert_eq!((x.id, arm.id), (experiment_id, arm_id));
            prop_assert!((x.bucket_start..x.bucket_end).contains(&production_bucket(&key, experiments)));
            prop_assert!((arm.bucket_start..arm.bucket_end).contains(&arm_bucket(&key, &experiments.experiments[usize::from(experiment_idx)])));
        }
    }

    /// The resize rule for any key, salt, experiment and pair of shares.
    #[test]
    fn a_resize_moves_a_key_only_if_its_bucket_is_in_the_changed_range(
        key in proptest::collection::vec(any::<u8>(), 0..40),
        salt in any::<u64>(),
        slot in 0..3usize,
        before_bp in 1..=3332u16,
        after_bp in 1..=3332u16,
    ) {
        let (mut before, mut after) = (SHARES_BP, SHARES_BP);
        (before[slot], after[slot]) = (before_bp, after_bp);
        let (mut old, mut new) = (table(STAGING_SHARE_BP, before), table(STAGING_SHARE_BP, after));
        (old.salt, new.salt) = (salt, salt);
        let (old, new) = (archive(&old), archive(&new));
        let (old, new) = (access(&old), access(&new));
        let slot_start = SLOT_RANGES[slot].0;
        let changed = slot_start + before_bp.min(after_bp)..slot_start + before_bp.max(after_bp);
        let (was, is) = (id_slice(&key, old), id_slice(&key, new));
        if was == Slice::Staging || !changed.contains(&production_bucket(&key, old)) {
            prop_assert_eq!(was, is);
        } else {
            prop_assert_ne!(was, is);
        }
    }
}

//! Assigning one request to a slice of traffic from the snapshot's experiment table.

use adsnap_snapshot::schema::{ArchivedExperiment, ArchivedExperiments, BUCKETS};
use adsnap_snapshot::EXPERIMENT_SLOTS;
use xxhash_rust::xxh3::xxh3_64_with_seed;

// Domain separation. Each decision hashes the key with its own seed, `salt ^ DOMAIN`, so the
// staging, production and arm buckets are independent of one another and of the plain
// `xxh3_64(key)` (seed 0) the profile store shards by, even when a catalog uses one salt string
// for both the assignment and an experiment. Each constant is the `xxh3_64` of its label (a test
// checks it) rather than a small number: xxh3 mixes a short key with `secret + seed`, so seeds a
// few bits apart would give related hashes, while random-looking constants keep every pair of
// seeds far apart. The constants are part of the assignment: changing one reassigns every user.
/// Seed domain of the staging bucket: `xxh3_64(b"adsnap/abtest/staging")`.
pub(crate) const STAGING_DOMAIN: u64 = 0xf18b_abd9_39e0_f5e1;
/// Seed domain of the production bucket: `xxh3_64(b"adsnap/abtest/production")`.
pub(crate) const PRODUCTION_DOMAIN: u64 = 0xbdfc_25c4_037e_1b1f;
/// Seed domain of an experiment's arm bucket: `xxh3_64(b"adsnap/abtest/arm")`.
pub(crate) const ARM_DOMAIN: u64 = 0x7c62_7a48_d141_9444;

/// Who a request is for, as far as assignment goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UserKey<'a> {
    /// A user id or device advertising id (IFA), as bytes. The same user must always be passed
    /// as the same bytes (one canonical text form of an IFA), since the hash sees only bytes.
    Id(&'a [u8]),
    /// No id at all: the request is assigned on its own from a per-request nonce, so it lands
    /// in each slice in the right proportion but is not a stable user.
    Anonymous { request_nonce: u64 },
}

/// The slice of traffic a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slice {
    /// Served by the staging snapshot with default parameters.
    Staging,
    /// Production traffic that no experiment takes: default parameters.
    Control,
    /// An arm of an experiment. The indexes locate it in this snapshot's table (the server reads
    /// the arm's parameters through them); the ids name it across snapshots (analysis groups by
    /// them).
    Experiment { experiment_idx: u8, arm_idx: u8, experiment_id: u32, arm_id: u32 },
}

/// A request's slice, and whether it came from an id or only from a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Assignment {
    pub slice: Slice,
    /// Assigned per request from a nonce ([`UserKey::Anonymous`]): analysis leaves these out,
    /// since one person's requests are spread over every slice.
    pub anonymous: bool,
}

/// How responses and logs name a slice: `staging`, `control` or `experiment-3/arm-2` (by ids).
impl std::fmt::Display for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slice::Staging => f.write_str("staging"),
            Slice::Control => f.write_str("control"),
            Slice::Experiment { experiment_id, arm_id, .. } => {
                write!(f, "experiment-{experiment_id}/arm-{arm_id}")
            }
        }
    }
}

/// Assigns a request to staging, an experiment's arm or control.
///
/// A table from [`Snapshot::open`](adsnap_snapshot::Snapshot::open) has passed the format's
/// checks; any other table is still handled without panicking: whatever part of it a request
/// reaches that breaks those checks (a staging share above 100%, arms that leave a gap, more
/// experiments than slots) assigns the request to control.
pub fn assign(key: UserKey<'_>, experiments: &ArchivedExperiments) -> Assignment {
    match key {
        UserKey::Id(id) => Assignment { slice: slice(id, experiments), anonymous: false },
        UserKey::Anonymous { request_nonce } => {
            Assignment { slice: slice(&request_nonce.to_le_bytes(), experiments), anonymous: true }
        }
    }
}

fn slice(key: &[u8], experiments: &ArchivedExperiments) -> Slice {
    let staging_share_bp = experiments.staging_share_bp.to_native();
    if staging_share_bp > BUCKETS {
        return Slice::Control;
    }
    if staging_bucket(key, experiments) < staging_share_bp {
        return Slice::Staging;
    }
    production_slice(key, experiments)
}

/// The slice a key gets in production, whatever its staging bucket.
pub(crate) fn production_slice(key: &[u8], experiments: &ArchivedExperiments) -> Slice {
    let bucket = production_bucket(key, experiments);
    // Only the first `EXPERIMENT_SLOTS` experiments can be valid, which also bounds the scan.
    let mut slots = (0..=u8::MAX).zip(experiments.experiments.iter().take(usize::from(EXPERIMENT_SLOTS)));
    match slots.find(|(_, x)| holds(x.bucket_start.to_native(), x.bucket_end.to_native(), bucket)) {
        Some((experiment_idx, experiment)) => arm_slice(key, experiment_idx, experiment),
        None => Slice::Control,
    }
}

fn arm_slice(key: &[u8], experiment_idx: u8, experiment: &ArchivedExperiment) -> Slice {
    let bucket = arm_bucket(key, experiment);
    // Zipping with the `u8` indexes bounds the scan; an arm past them is unreachable (control).
    let mut arms = (0..=u8::MAX).zip(experiment.arms.iter());
    match arms.find(|(_, arm)| holds(arm.bucket_start.to_native(), arm.bucket_end.to_native(), bucket)) {
        Some((arm_idx, arm)) => Slice::Experiment {
            experiment_idx,
            arm_idx,
            experiment_id: experiment.id.to_native(),
            arm_id: arm.id.to_native(),
        },
        None => Slice::Control,
    }
}

pub(crate) fn staging_bucket(key: &[u8], experiments: &ArchivedExperiments) -> u16 {
    hash_bucket(key, experiments.salt.to_native() ^ STAGING_DOMAIN)
}

pub(crate) fn production_bucket(key: &[u8], experiments: &ArchivedExperiments) -> u16 {
    hash_bucket(key, experiments.salt.to_native() ^ PRODUCTION_DOMAIN)
}

pub(crate) fn arm_bucket(key: &[u8], experiment: &ArchivedExperiment) -> u16 {
    hash_bucket(key, experiment.salt.to_native() ^ ARM_DOMAIN)
}

fn hash_bucket(key: &[u8], seed: u64) -> u16 {
    bucket(xxh3_64_with_seed(key, seed))
}

/// Maps a hash onto `0..BUCKETS` by multiply-shift: the high bits of `hash * BUCKETS`. Its bias
/// is as small as `%`'s (some buckets get one more of the 2^64 hashes than others), it needs no
/// division, and it reads the hash's high bits.
pub(crate) fn bucket(hash: u64) -> u16 {
    // The product's high word is below BUCKETS, so it fits a u16.
    ((u128::from(hash) * u128::from(BUCKETS)) >> 64) as u16
}

/// Whether `[start, end)` holds `bucket`; an empty or reversed range holds nothing.
fn holds(start: u16, end: u16, bucket: u16) -> bool {
    (start..end).contains(&bucket)
}

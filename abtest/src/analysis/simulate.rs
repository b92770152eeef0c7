//! Synthetic event streams with known effects, for the analysis' tests and benchmarks: users are
//! assigned by the real [`assign`](crate::assign) over a real experiment table, requests come
//! from a heavy-tailed user population, and each arm (or staging) can be given a multiplier on
//! fill, CTR or revenue. Events are generated one request at a time: nothing is held.

use std::borrow::Cow;

use adsnap_events::{Channel, Event, EventKind, Privacy};
use adsnap_snapshot::schema::{ArchivedExperiments, Arm, Experiment, Experiments, Overrides, BUCKETS};
use adsnap_snapshot::EXPERIMENT_SLOTS;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::xxh3_64;

use super::split::ConfiguredSplit;
use crate::{assign, Slice, UserKey};

/// The experiment table a split describes, archived as a snapshot holds it (read it with
/// [`archived_table`]): experiment `i` in slot `i` (slots are a third of production each, as the
/// builder lays them out), arms in order. Experiments past the slots are left out.
pub fn table_bytes(split: &ConfiguredSplit, salt: u64) -> rkyv::util::AlignedVec {
    let slot_width = BUCKETS.div_ceil(u16::from(EXPERIMENT_SLOTS));
    let experiments =
        split.experiments.iter().take(usize::from(EXPERIMENT_SLOTS)).zip(0u8..).map(|(x, slot)| {
            let slot_start = u16::from(slot) * slot_width;
            let mut arm_start = 0u16;
            let arms = x
                .arms
                .iter()
                .map(|arm| {
                    let bucket_start = arm_start;
                    arm_start = arm_start.saturating_add(arm.weight_bp);
                    Arm {
                        id: arm.id,
                        name: arm.name.clone(),
                        bucket_start,
                        bucket_end: arm_start,
                        params: Overrides::default(),
                    }
                })
                .collect();
            Experiment {
                id: x.id,
                name: x.name.clone(),
                slot,
                bucket_start: slot_start,
                bucket_end: slot_start.saturating_add(x.share_bp),
                salt: salt ^ u64::from(x.id),
                arms,
            }
        });
    let table = Experiments {
        staging_share_bp: split.staging_share_bp,
        salt,
        experiments: experiments.collect(),
        control: Overrides::default(),
    };
    // Serializing plain vectors and strings into memory cannot fail.
    rkyv::to_bytes::<rkyv::rancor::Error>(&table).expect("an in-memory table serializes")
}

/// The table [`table_bytes`] wrote.
pub fn archived_table(bytes: &[u8]) -> Result<&ArchivedExperiments, rkyv::rancor::Error> {
    rkyv::access::<ArchivedExperiments, rkyv::rancor::Error>(bytes)
}

/// A multiplier on a group's rates; 1.0 everywhere is no effect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effect {
    pub fill: f64,
    pub ctr: f64,
    pub revenue: f64,
}

impl Effect {
    pub const NONE: Effect = Effect { fill: 1.0, ctr: 1.0, revenue: 1.0 };
}

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    pub seed: u64,
    pub n_users: u64,
    pub n_requests: u64,
    /// Share of requests without any id (assigned per request, no user key).
    pub anonymous_share: f64,
    pub fill_rate: f64,
    /// Impressions per filled decision.
    pub show_rate: f64,
    pub ctr: f64,
    /// Installs per click.
    pub install_per_click: f64,
    /// Revenue of one impression, in micros (a CPM of `1000 ×` this).
    pub revenue_per_impression_micros: i64,
    pub production_snapshot_id: u64,
    pub staging_snapshot_id: u64,
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
    /// Effects by (experiment id, arm id); arms not listed have none.
    pub arm_effects: Vec<((u32, u32), Effect)>,
    pub staging_effect: Effect,
}

impl Default for Simulation {
    fn default() -> Self {
        Simulation {
            seed: 1,
            n_users: 10_000,
            n_requests: 100_000,
            anonymous_share: 0.02,
            fill_rate: 0.8,
            show_rate: 0.9,
            ctr: 0.05,
            install_per_click: 0.1,
            revenue_per_impression_micros: 2_000,
            production_snapshot_id: 0x0000_0000_0000_0a01,
            staging_snapshot_id: 0x0000_0000_0000_0b01,
            from_unix_ms: 1_795_305_600_000,
            to_unix_ms: 1_795_305_600_000 + 86_400_000,
            arm_effects: Vec::new(),
            staging_effect: Effect::NONE,
        }
    }
}

impl Simulation {
    fn effect(&self, slice: Slice) -> Effect {
        match slice {
            Slice::Staging => self.staging_effect,
            Slice::Control => Effect::NONE,
            Slice::Experiment { experiment_id, arm_id, .. } => self
                .arm_effects
                .iter()
                .find(|(ids, _)| *ids == (experiment_id, arm_id))
                .map_or(Effect::NONE, |(_, e)| *e),
        }
    }

    /// Calls `sink` with every event, request by request.
    pub fn run(&self, table: &ArchivedExperiments, mut sink: impl FnMut(&Event<'_>)) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let span_ms = (self.to_unix_ms - self.from_unix_ms).max(1);
        for request_idx in 0..self.n_requests {
            let time = self.from_unix_ms
                + (i128::from(request_idx) * i128::from(span_ms) / i128::from(self.n_requests.max(1))) as i64;
            self.request(&mut rng, table, request_idx, time, &mut sink);
        }
    }

    fn request(
        &self,
        rng: &mut ChaCha8Rng,
        table: &ArchivedExperiments,
        request_idx: u64,
        time_unix_ms: i64,
        sink: &mut impl FnMut(&Event<'_>),
    ) {
        // Squaring a uniform draw makes low user indexes far more active: a heavy tail.
        let draw: f64 = rng.random();
        let user_idx = ((draw * draw) * self.n_users as f64) as u64;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.seed.to_le_bytes());
        id[8..].copy_from_slice(&user_idx.to_le_bytes());
        let (assignment, user_key) = if rng.random_bool(self.anonymous_share.clamp(0.0, 1.0)) {
            (assign(UserKey::Anonymous { request_nonce: rng.random() }, table), None)
        } else {
            (assign(UserKey::Id(&id), table), Some(xxh3_64(&id)))
        };
        let effect = self.effect(assignment.slice);
        let snapshot_id = match assignment.slice {
            Slice::Staging => self.staging_snapshot_id,
            _ => self.production_snapshot_id,
        };
        let mut event = Event {
            event_id: u128::from(request_idx) << 8,
            kind: EventKind::Decision,
            time_unix_ms,
            request_id: u128::from(request_idx),
            snapshot_id,
            assignment_code: assignment.code(),
            channel: Channel::Sdk,
            app_id: Cow::Borrowed(""),
            ad_unit_id: Cow::Borrowed(""),
            campaign_id: 0,
            creative_id: 0,
            price_micros: 0,
            revenue_micros: 0,
            currency: *b"USD",
            country: 0,
            os: 1,
            user_key,
            privacy: Privacy(0),
            no_fill_reason: 1,
            test: false,
        };
        let filled = rng.random_bool((self.fill_rate * effect.fill).clamp(0.0, 1.0));
        if filled {
            event.campaign_id = 1 + rng.random_range(0..100u32);
            event.creative_id = event.campaign_id * 10;
            event.no_fill_reason = 0;
        }
        sink(&event);
        let shown = filled && rng.random_bool(self.show_rate.clamp(0.0, 1.0));
        if !shown {
            return;
        }
        let revenue =
            (self.revenue_per_impression_micros as f64 * effect.revenue * (0.5 + rng.random::<f64>())) as i64;
        emit(&mut event, EventKind::Impression, revenue, sink);
        if !rng.random_bool((self.ctr * effect.ctr).clamp(0.0, 1.0)) {
            return;
        }
        emit(&mut event, EventKind::Click, 0, sink);
        if rng.random_bool(self.install_per_click.clamp(0.0, 1.0)) {
            emit(&mut event, EventKind::Install, 0, sink);
        }
    }
}

fn emit(event: &mut Event<'_>, kind: EventKind, revenue_micros: i64, sink: &mut impl FnMut(&Event<'_>)) {
    event.kind = kind;
    event.event_id += 1;
    event.revenue_micros = revenue_micros;
    sink(event);
}

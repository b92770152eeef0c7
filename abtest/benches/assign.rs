//! The cost of assigning one request with a 16-byte id, on the example catalog's table (5%
//! staging, 2000/2000/1000 bp experiments), over many ids so no one path through the table
//! dominates.

use std::hint::black_box;

use adsnap_abtest::{assign, UserKey};
use adsnap_snapshot::schema::{ArchivedExperiments, Arm, Experiment, Experiments, Overrides};
use criterion::{criterion_group, criterion_main, Criterion};

/// Distinct ids cycled through: enough to visit every slice many times, few enough to stay in
/// L1 so the figure is the assignment, not memory. A power of two, so cycling is a mask.
const N_IDS: usize = 1024;

fn experiment(slot: u8, share_bp: u16, weights_bp: &[u16]) -> Experiment {
    let slot_start = [0, 3334, 6668][usize::from(slot)];
    let mut arm_start = 0;
    let arms = weights_bp.iter().zip(1..).map(|(&weight_bp, id)| {
        let arm = Arm {
            id,
            name: format!("arm {id}"),
            bucket_start: arm_start,
            bucket_end: arm_start + weight_bp,
            params: Overrides::default(),
        };
        arm_start += weight_bp;
        arm
    });
    Experiment {
        id: u32::from(slot) + 1,
        name: format!("experiment {slot}"),
        slot,
        bucket_start: slot_start,
        bucket_end: slot_start + share_bp,
        salt: 0xbe7c_0000 + u64::from(slot),
        arms: arms.collect(),
    }
}

fn ids() -> Vec<[u8; 16]> {
    (0..N_IDS as u64)
        .map(|i| {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            id[8..].copy_from_slice(&(!i).wrapping_mul(0xbf58_476d_1ce4_e5b9).to_le_bytes());
            id
        })
        .collect()
}

fn bench_assign(c: &mut Criterion) {
    let table = Experiments {
        staging_share_bp: 500,
        salt: 0x5a17,
        experiments: vec![
            experiment(0, 2000, &[5000, 5000]),
            experiment(1, 2000, &[5000, 5000]),
            experiment(2, 1000, &[3334, 3333, 3333]),
        ],
        control: Overrides::default(),
    };
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&table).unwrap();
    let experiments = rkyv::access::<ArchivedExperiments, rkyv::rancor::Error>(&bytes).unwrap();
    let ids = ids();
    let mut next = 0;
    c.bench_function("assign/id_16_bytes", |b| {
        b.iter(|| {
            next = (next + 1) & (N_IDS - 1);
            assign(UserKey::Id(black_box(&ids[next])), black_box(experiments))
        })
    });
}

criterion_group!(benches, bench_assign);
criterion_main!(benches);

//! The configured traffic split a report checks observed traffic against, copied out of a
//! snapshot's experiment table (so a report needs no mapped snapshot, and tests can build one).

use adsnap_snapshot::schema::{ArchivedExperiments, BUCKETS};
use adsnap_snapshot::Snapshot;
use serde::Serialize;

/// One arm as configured: its share of the experiment's users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfiguredArm {
    pub id: u32,
    pub name: String,
    /// Share of the experiment's users, in basis points of the experiment.
    pub weight_bp: u16,
}

/// One experiment as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfiguredExperiment {
    pub id: u32,
    pub name: String,
    /// Share of production traffic, in basis points of production.
    pub share_bp: u16,
    pub arms: Vec<ConfiguredArm>,
}

/// A snapshot's traffic split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfiguredSplit {
    /// Share of all traffic sent to staging, in basis points.
    pub staging_share_bp: u16,
    pub experiments: Vec<ConfiguredExperiment>,
}

impl ConfiguredSplit {
    /// The split of an experiment table. Ranges are widths of bucket ranges; a reversed range
    /// (which a verified snapshot never has) counts as empty rather than wrapping.
    pub fn from_table(table: &ArchivedExperiments) -> ConfiguredSplit {
        let width = |start: u16, end: u16| end.saturating_sub(start);
        let experiments = table
            .experiments
            .iter()
            .map(|x| ConfiguredExperiment {
                id: x.id.to_native(),
                name: x.name.as_str().to_owned(),
                share_bp: width(x.bucket_start.to_native(), x.bucket_end.to_native()),
                arms: x
                    .arms
                    .iter()
                    .map(|arm| ConfiguredArm {
                        id: arm.id.to_native(),
                        name: arm.name.as_str().to_owned(),
                        weight_bp: width(arm.bucket_start.to_native(), arm.bucket_end.to_native()),
                    })
                    .collect(),
            })
            .collect();
        ConfiguredSplit { staging_share_bp: table.staging_share_bp.to_native(), experiments }
    }

    /// Share of production traffic that no experiment takes, in basis points of production.
    pub fn control_share_bp(&self) -> u16 {
        let taken: u32 = self.experiments.iter().map(|x| u32::from(x.share_bp)).sum();
        u32::from(BUCKETS).saturating_sub(taken) as u16
    }

    pub fn experiment(&self, id: u32) -> Option<&ConfiguredExperiment> {
        self.experiments.iter().find(|x| x.id == id)
    }
}

/// A snapshot a report knows: its id and its split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KnownSnapshot {
    pub snapshot_id: u64,
    /// How the snapshot was named to the report (its path), for messages.
    pub label: String,
    pub split: ConfiguredSplit,
}

impl KnownSnapshot {
    pub fn of(snapshot: &Snapshot) -> KnownSnapshot {
        KnownSnapshot {
            snapshot_id: snapshot.header().snapshot_id,
            label: snapshot.path().display().to_string(),
            split: ConfiguredSplit::from_table(&snapshot.archive().experiments),
        }
    }
}

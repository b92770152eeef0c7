//! Compiles an adsnap catalog into one snapshot, and generates realistic catalogs.
//!
//! [`build`] streams the catalog's files once, in dependency order, validating every record and
//! collecting every problem (see [`Diagnostics`]); on any problem nothing is written. Otherwise it
//! precomputes what serving needs (the targeting index sorted by expected revenue, pacing
//! throttles, resolved experiment arms) and writes the snapshot atomically.
//!
//! Memory holds the fixed-size records and pools; every string goes to a spill file beside the
//! output as it is read and is streamed into the snapshot at the end.

mod campaigns;
pub mod catalog;
mod compile;
mod diag;
mod error;
mod experiments;
pub mod gen;
mod heap;
mod market;
mod read;
mod rules;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use adsnap_snapshot::schema::{self, HashEntry};
use adsnap_snapshot::{write_atomic, Header, WriteOptions};

pub use diag::{Diagnostic, Diagnostics, DIAGNOSTICS_KEPT_MAX};
pub use error::BuildError;
pub use experiments::slot_range;
pub use indicatif::ProgressBar;
pub use market::{ecpm_micros, pacing_throttle_ppm, IndexStats, PACING_THROTTLE_PPM_MIN};
pub use read::LINE_BYTES_MAX;
pub use rules::*;

use crate::catalog::files;
use crate::compile::Compiler;

/// The builder's version, recorded in every snapshot header.
pub const BUILDER_VERSION: &str = concat!("adsnap-builder ", env!("CARGO_PKG_VERSION"));

/// What to build, from where, and for when.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub catalog_dir: PathBuf,
    pub out_path: PathBuf,
    /// Grows with every publish; distribution refuses to go backwards except for a rollback.
    pub snapshot_version: u64,
    /// The time pacing and schedules are computed for (normally now).
    pub now_unix_s: i64,
    /// Recorded in the header.
    pub created_unix_ms: i64,
    /// Advanced by input bytes read; hidden by default.
    pub progress: ProgressBar,
}

/// What a successful build produced.
#[derive(Clone, Debug)]
pub struct BuildSummary {
    pub header: Header,
    pub counts: adsnap_snapshot::Counts,
    pub index: IndexStats,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub elapsed: Duration,
}

const CATALOG_FILES: [&str; 10] = [
    files::MANIFEST,
    files::ADVERTISERS,
    files::SEGMENTS,
    files::TEMPLATES,
    files::APPS,
    files::AD_UNITS,
    files::CAMPAIGNS,
    files::CREATIVES,
    files::PREDICTED_RATES,
    files::EXPERIMENTS,
];

/// Builds the snapshot of the catalog in `options.catalog_dir` into `options.out_path`.
pub fn build(options: &BuildOptions) -> Result<BuildSummary, BuildError> {
    let started = Instant::now();
    let input_bytes = input_bytes(&options.catalog_dir);
    options.progress.set_length(input_bytes);
    let spill_dir = match options.out_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut compiler =
        Compiler::new(&options.catalog_dir, &spill_dir, &options.progress, options.now_unix_s)?;
    compiler.read_all()?;
    if !compiler.diags.is_empty() {
        return Err(BuildError::Invalid { diagnostics: compiler.diags });
    }
    let (index, stats) = compiler.build_index()?;
    let payload = compiler.into_payload(index)?;
    let write = WriteOptions {
        snapshot_version: options.snapshot_version,
        created_unix_ms: options.created_unix_ms,
        builder_version: BUILDER_VERSION.to_string(),
    };
    options.progress.set_message("writing");
    let header = write_atomic(&options.out_path, &payload, &write)?;
    options.progress.finish_and_clear();
    Ok(BuildSummary {
        output_bytes: header.file_bytes(),
        header,
        counts: counts_of(&payload.base),
        index: stats,
        input_bytes,
        elapsed: started.elapsed(),
    })
}

fn input_bytes(dir: &Path) -> u64 {
    CATALOG_FILES.iter().filter_map(|name| std::fs::metadata(dir.join(name)).ok()).map(|m| m.len()).sum()
}

fn counts_of(p: &schema::Snapshot) -> adsnap_snapshot::Counts {
    adsnap_snapshot::Counts {
        n_advertisers: p.advertisers.len(),
        n_campaigns: p.campaigns.len(),
        n_creatives: p.creatives.len(),
        n_apps: p.apps.len(),
        n_ad_units: p.ad_units.len(),
        n_segments: p.segments.len(),
        n_experiments: p.experiments.experiments.len(),
        n_candidates: p.index.candidates.len(),
        n_index_slots_used: p.index.slots.iter().filter(|s| s.len > 0).count(),
        string_bytes: p.strings.len(),
    }
}

/// A table from the hash of each key to its record, sorted by hash.
fn hash_table(keys: impl Iterator<Item = u64>) -> Vec<HashEntry> {
    let mut table: Vec<HashEntry> =
        keys.enumerate().map(|(idx, hash)| HashEntry { hash, idx: idx as u32 }).collect();
    table.sort_unstable_by_key(|e| (e.hash, e.idx));
    table
}

impl Compiler<'_> {
    fn into_payload(self, index: schema::Index) -> Result<schema::Payload, BuildError> {
        let manifest = self.manifest.expect("a catalog without diagnostics has a manifest");
        let app_ids = hash_table(self.app_id_hashes.iter().copied());
        let app_bundles = hash_table(self.apps.iter().map(|a| a.bundle_hash));
        let ad_unit_ids = hash_table(self.ad_unit_id_hashes.iter().copied());
        let base = schema::Snapshot {
            meta: schema::Meta {
                catalog_name: manifest.name,
                catalog_format_version: manifest.catalog_format_version,
                currency: manifest.currency,
                reference_unix_s: self.now_unix_s,
            },
            advertisers: self.advertisers,
            campaigns: self.campaigns,
            creatives: self.creatives,
            creative_ids: self.creative_ids,
            apps: self.apps,
            app_ids,
            app_bundles,
            ad_units: self.ad_units,
            ad_unit_ids,
            segments: self.segments,
            experiments: self.experiments,
            index,
            pool_u16: self.pools.u16s,
            pool_u32: self.pools.u32s,
            pool_u64: self.pools.u64s,
            pool_str: self.pools.strs,
            strings: self.heap.finish()?,
        };
        Ok(schema::Payload {
            base,
            creative_attrs: self.creative_attrs,
            ad_unit_blocked_attrs: self.ad_unit_blocked_attrs,
        })
    }
}

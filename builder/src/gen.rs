//! Placeholder for the catalog generator (being written).
use std::path::Path;
pub struct GenOptions {
    pub n_campaigns: u64,
    pub seed: u64,
    pub creatives_per_campaign: u32,
    pub now_unix_s: i64,
}
pub struct GenSummary {
    pub n_advertisers: u64,
    pub n_campaigns: u64,
    pub n_creatives: u64,
    pub n_apps: u64,
    pub n_ad_units: u64,
    pub n_segments: u64,
    pub n_rates: u64,
    pub n_experiments: u64,
    pub bytes_written: u64,
}
#[derive(Debug, thiserror::Error)]
#[error("not yet")]
pub struct GenError;
pub fn generate(_o: &GenOptions, _d: &Path, _p: &dyn Fn(u64)) -> Result<GenSummary, GenError> {
    Err(GenError)
}

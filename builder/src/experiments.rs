//! Experiments: validating the A/B table and resolving it into bucket ranges and full parameter
//! sets the server applies without further thought.

use adsnap_snapshot::schema::{self, Overrides, BUCKETS};
use adsnap_snapshot::{key_hash, EXPERIMENT_SLOTS};

use crate::catalog::{self, files};
use crate::compile::{At, Compiler};
use crate::diag::Diagnostics;
use crate::error::BuildError;
use crate::rules::*;

/// The production bucket range of a slot: three fixed thirds of `0..BUCKETS`.
pub fn slot_range(slot: u8) -> (u16, u16) {
    let width = BUCKETS.div_ceil(EXPERIMENT_SLOTS as u16);
    let start = width * slot as u16;
    (start, (start + width).min(BUCKETS))
}

impl Compiler<'_> {
    pub(crate) fn read_experiments(&mut self) -> Result<(), BuildError> {
        let mut lines: Vec<(u32, u8, u64)> = Vec::new();
        self.read_records(files::EXPERIMENTS, false, |this, d, at, x: catalog::Experiment| {
            if let Some(&(_, _, first)) = lines.iter().find(|(id, _, _)| *id == x.id) {
                at.err(d, "id", format!("experiment {} is already defined on line {first}", x.id));
                return Ok(());
            }
            if let Some(&(_, _, first)) = lines.iter().find(|(_, slot, _)| *slot == x.slot) {
                at.err(
                    d,
                    "slot",
                    format!("slot {} is already taken by the experiment on line {first}", x.slot),
                );
                return Ok(());
            }
            lines.push((x.id, x.slot, at.line));
            if let Some(experiment) = experiment(d, at, &x) {
                this.experiments.experiments.push(experiment);
            }
            Ok(())
        })?;
        if lines.len() > EXPERIMENT_SLOTS as usize {
            let reason = format!("{} experiments, at most {EXPERIMENT_SLOTS} run at once", lines.len());
            self.diags.push(files::EXPERIMENTS, 0, "", reason);
        }
        self.experiments.experiments.sort_by_key(|x| x.slot);
        Ok(())
    }
}

fn experiment(d: &mut Diagnostics, at: At, x: &catalog::Experiment) -> Option<schema::Experiment> {
    let mut ok = at.check(d, "name", check_text(&x.name, NAME_BYTES_MAX));
    ok &= at.check(d, "salt", check_text(&x.salt, ID_BYTES_MAX));
    if x.slot >= EXPERIMENT_SLOTS {
        at.err(d, "slot", format!("{} is not a slot; slots are 0 to {}", x.slot, EXPERIMENT_SLOTS - 1));
        return None;
    }
    let (slot_start, slot_end) = slot_range(x.slot);
    if x.share_bp == 0 || x.share_bp > slot_end - slot_start {
        at.err(
            d,
            "share_bp",
            format!("{} is not in 1..={} (the width of slot {})", x.share_bp, slot_end - slot_start, x.slot),
        );
        return None;
    }
    let arms = arms(d, at, &x.arms)?;
    ok.then(|| schema::Experiment {
        id: x.id,
        name: x.name.clone(),
        slot: x.slot,
        bucket_start: slot_start,
        bucket_end: slot_start + x.share_bp,
        salt: key_hash(&x.salt),
        arms,
    })
}

fn arms(d: &mut Diagnostics, at: At, arms: &[catalog::Arm]) -> Option<Vec<schema::Arm>> {
    if arms.is_empty() || arms.len() > ARMS_MAX {
        at.err(d, "arms", format!("has {} arms; an experiment has 1 to {ARMS_MAX}", arms.len()));
        return None;
    }
    let total: u32 = arms.iter().map(|a| a.weight_bp as u32).sum();
    if total != BUCKETS as u32 {
        at.err(d, "arms", format!("weights sum to {total} basis points, not {BUCKETS}"));
        return None;
    }
    let mut resolved = Vec::with_capacity(arms.len());
    let mut next = 0u16;
    let mut ok = true;
    for (i, arm) in arms.iter().enumerate() {
        let field = |name: &str| format!("arms[{i}].{name}");
        if arms[..i].iter().any(|a| a.id == arm.id) {
            at.err(d, &field("id"), format!("arm {} is listed twice", arm.id));
            ok = false;
        }
        if arm.weight_bp == 0 {
            at.err(d, &field("weight_bp"), "must be above 0");
            ok = false;
        }
        ok &= at.check(d, &field("name"), check_text(&arm.name, NAME_BYTES_MAX));
        let params = overrides(d, at, &field("overrides"), &arm.overrides);
        ok &= params.is_some();
        resolved.push(schema::Arm {
            id: arm.id,
            name: arm.name.clone(),
            bucket_start: next,
            bucket_end: next + arm.weight_bp,
            params: params.unwrap_or_default(),
        });
        next += arm.weight_bp;
    }
    ok.then_some(resolved)
}

/// Resolves an arm's overrides against control's defaults.
fn overrides(d: &mut Diagnostics, at: At, field: &str, o: &catalog::Overrides) -> Option<Overrides> {
    let mut params = Overrides::default();
    let mut ok = true;
    if let Some(m) = o.bid_multiplier {
        if !(m > 0.0 && m <= MULTIPLIER_MAX) {
            at.err(d, &format!("{field}.bid_multiplier"), format!("{m} is not in (0, {MULTIPLIER_MAX}]"));
            ok = false;
        }
        params.bid_multiplier_ppm = to_ppm(m);
    }
    if let Some(m) = o.floor_multiplier {
        if !(0.0..=MULTIPLIER_MAX).contains(&m) {
            at.err(d, &format!("{field}.floor_multiplier"), format!("{m} is not in [0, {MULTIPLIER_MAX}]"));
            ok = false;
        }
        params.floor_multiplier_ppm = to_ppm(m);
    }
    if let Some(n) = o.candidates_scanned_max {
        if n == 0 || n > CANDIDATES_SCANNED_MAX {
            at.err(
                d,
                &format!("{field}.candidates_scanned_max"),
                format!("{n} is not in 1..={CANDIDATES_SCANNED_MAX}"),
            );
            ok = false;
        }
        params.candidates_scanned_max = n;
    }
    params.pacing_enabled = o.pacing_enabled.unwrap_or(params.pacing_enabled);
    params.frequency_caps_enabled = o.frequency_caps_enabled.unwrap_or(params.frequency_caps_enabled);
    ok.then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_tile_the_bucket_space() {
        assert_eq!(slot_range(0), (0, 3334));
        assert_eq!(slot_range(1), (3334, 6668));
        assert_eq!(slot_range(2), (6668, 10_000));
    }
}

//! The statistics of a report: per-user moments, the estimate of each metric with its variance
//! (plain means, and the delta method for ratios), the two-sample comparison (normal z-test and
//! interval), the always-valid mSPRT p-value and interval for repeated looks, and the
//! chi-square goodness-of-fit test behind the sample-ratio-mismatch check.
//!
//! Every function here is total: inputs that make a statistic undefined (fewer than two users, a
//! zero denominator, no variance) give an [`Unavailable`] reason instead of a NaN, an infinity or
//! a panic.

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Number of per-user quantities a group's moments cover; see [`Quantity`].
pub const N_QUANTITIES: usize = 6;

/// The per-user quantities, as indexes into a [`Moments`] vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Quantity {
    Requests = 0,
    FilledRequests = 1,
    Impressions = 2,
    Clicks = 3,
    Installs = 4,
    /// In units of the currency (micros / 1 000 000).
    Revenue = 5,
}

/// Count, means and centred cross products of per-user vectors, updated one user at a time
/// (Welford's update generalised to co-moments), so large sums never cancel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: [f64; N_QUANTITIES],
    /// `comoment[a][b]` = Σ (x_a − mean_a)(x_b − mean_b).
    pub comoment: [[f64; N_QUANTITIES]; N_QUANTITIES],
}

impl Moments {
    pub fn push(&mut self, x: &[f64; N_QUANTITIES]) {
        self.n += 1;
        let n = self.n as f64;
        let mut delta_before = [0.0; N_QUANTITIES];
        for q in 0..N_QUANTITIES {
            delta_before[q] = x[q] - self.mean[q];
            self.mean[q] += delta_before[q] / n;
        }
        for ((row, &xa), &mean_a) in self.comoment.iter_mut().zip(x).zip(&self.mean) {
            let delta_after = xa - mean_a;
            for (cell, &delta_b) in row.iter_mut().zip(&delta_before) {
                *cell += delta_b * delta_after;
            }
        }
    }

    /// Adds another set of users' moments (Chan, Golub and LeVeque's pairwise update), as if
    /// their vectors had been pushed here.
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let mut delta = [0.0; N_QUANTITIES];
        for (d, (a, b)) in delta.iter_mut().zip(self.mean.iter().zip(&other.mean)) {
            *d = b - a;
        }
        for (row, (other_row, &da)) in self.comoment.iter_mut().zip(other.comoment.iter().zip(&delta)) {
            for (cell, (&other_cell, &db)) in row.iter_mut().zip(other_row.iter().zip(&delta)) {
                *cell += other_cell + da * db * na * nb / n;
            }
        }
        for (mean, &d) in self.mean.iter_mut().zip(&delta) {
            *mean += d * nb / n;
        }
        self.n += other.n;
    }

    /// Sample covariance (n − 1 in the denominator) of two quantities; `None` below two users.
    pub fn covariance(&self, a: Quantity, b: Quantity) -> Option<f64> {
        (self.n >= 2).then(|| self.comoment[a as usize][b as usize] / (self.n - 1) as f64)
    }

    pub fn mean(&self, q: Quantity) -> f64 {
        self.mean[q as usize]
    }
}

/// Why a statistic could not be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// A group has fewer than two users: no variance can be estimated.
    TooFewUsers,
    /// A ratio's denominator is zero in a group (no requests, or no impressions).
    ZeroDenominator,
    /// Both estimates have zero variance: every user looks the same, a p-value is undefined.
    NoVariance,
    /// The control's value is zero: a relative difference (and the mixture of the sequential
    /// test, which is scaled by it) is undefined.
    ZeroControl,
}

impl Unavailable {
    pub fn message(self) -> &'static str {
        match self {
            Unavailable::TooFewUsers => "fewer than 2 users in a group",
            Unavailable::ZeroDenominator => "the ratio's denominator is zero in a group",
            Unavailable::NoVariance => "no variance in either group",
            Unavailable::ZeroControl => "the control's value is zero",
        }
    }
}

/// A metric's value in one group and the (estimated) variance of that value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub variance: f64,
}

/// The mean of a per-user quantity, times `scale`; its variance is s² / n (s² with n − 1).
pub fn mean_estimate(m: &Moments, q: Quantity, scale: f64) -> Result<Estimate, Unavailable> {
    let variance = m.covariance(q, q).ok_or(Unavailable::TooFewUsers)?;
    Ok(Estimate { value: scale * m.mean(q), variance: scale * scale * variance / m.n as f64 })
}

/// The ratio of two per-user quantities' sums (Σx / Σy, times `scale`), with the delta method's
/// variance for a ratio of means of the same users:
/// `Var(R) ≈ (s_x² − 2 R s_xy + R² s_y²) / (n ȳ²)`, sample moments with n − 1.
pub fn ratio_estimate(m: &Moments, x: Quantity, y: Quantity, scale: f64) -> Result<Estimate, Unavailable> {
    if m.n < 2 {
        return Err(Unavailable::TooFewUsers);
    }
    let y_mean = m.mean(y);
    if y_mean <= 0.0 {
        return Err(Unavailable::ZeroDenominator);
    }
    let ratio = m.mean(x) / y_mean;
    let (sxx, sxy, syy) = (m.covariance(x, x), m.covariance(x, y), m.covariance(y, y));
    let (sxx, sxy, syy) = (sxx.unwrap_or(0.0), sxy.unwrap_or(0.0), syy.unwrap_or(0.0));
    // Rounding can push a variance that is truly zero a hair below it.
    let variance =
        ((sxx - 2.0 * ratio * sxy + ratio * ratio * syy) / (m.n as f64 * y_mean * y_mean)).max(0.0);
    Ok(Estimate { value: scale * ratio, variance: scale * scale * variance })
}

/// Settings of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestSettings {
    /// Two-sided significance level, in (0, 1).
    pub alpha: f64,
    /// Standard deviation of the mSPRT's normal mixture over effects, as a share of the
    /// control's value (so one setting suits every metric).
    pub msprt_tau_relative: f64,
}

/// A treatment compared with a control on one metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub control: f64,
    pub treatment: f64,
    /// treatment − control.
    pub diff_abs: f64,
    /// Standard error of `diff_abs`: sqrt(V_t + V_c).
    pub diff_abs_se: f64,
    /// Fixed-horizon interval of `diff_abs` at 1 − alpha: diff ± z(1 − alpha/2) · se.
    pub ci_abs: [f64; 2],
    /// Two-sided p-value of the normal z-test of diff = 0 (valid for one planned look).
    pub p_value: f64,
    /// treatment / control − 1; `None` when the control is zero.
    pub diff_rel: Option<f64>,
    /// Fixed-horizon interval of `diff_rel` by the delta method:
    /// Var(t/c) ≈ V_t / c² + t² V_c / c⁴.
    pub ci_rel: Option<[f64; 2]>,
    /// mSPRT always-valid p-value (normal mixture, τ = msprt_tau_relative · |control|):
    /// valid however often the report is looked at; `None` when the control is zero.
    pub p_value_always_valid: Option<f64>,
    /// The always-valid confidence sequence of `diff_abs` at 1 − alpha.
    pub ci_abs_always_valid: Option<[f64; 2]>,
}

/// Compares two independent estimates: the normal z-test and interval, the relative difference
/// by the delta method, and the mSPRT's always-valid p-value and interval.
pub fn compare(
    treatment: Estimate,
    control: Estimate,
    settings: &TestSettings,
) -> Result<Comparison, Unavailable> {
    let variance = treatment.variance + control.variance;
    if variance.is_nan() || variance <= 0.0 || variance.is_infinite() {
        return Err(Unavailable::NoVariance);
    }
    let se = variance.sqrt();
    let diff = treatment.value - control.value;
    let z_crit = normal_quantile_upper(settings.alpha / 2.0);
    let p_value = (2.0 * standard_normal().sf((diff / se).abs())).min(1.0);
    let (diff_rel, ci_rel) = relative(treatment, control, z_crit);
    let sequential = msprt(diff, variance, settings.msprt_tau_relative * control.value.abs(), settings.alpha);
    Ok(Comparison {
        control: control.value,
        treatment: treatment.value,
        diff_abs: diff,
        diff_abs_se: se,
        ci_abs: [diff - z_crit * se, diff + z_crit * se],
        p_value,
        diff_rel,
        ci_rel,
        p_value_always_valid: sequential.map(|s| s.p_value),
        ci_abs_always_valid: sequential.map(|s| [diff - s.half_width, diff + s.half_width]),
    })
}

fn relative(t: Estimate, c: Estimate, z_crit: f64) -> (Option<f64>, Option<[f64; 2]>) {
    if c.value == 0.0 {
        return (None, None);
    }
    let ratio = t.value / c.value;
    let c2 = c.value * c.value;
    let variance = t.variance / c2 + ratio * ratio * c.variance / c2;
    let half = z_crit * variance.sqrt();
    (Some(ratio - 1.0), Some([ratio - 1.0 - half, ratio - 1.0 + half]))
}

/// The mSPRT's verdict at one look.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sequential {
    /// min(1, 1/Λ): never below the fixed-horizon p-value.
    pub p_value: f64,
    /// Half-width of the always-valid confidence sequence.
    pub half_width: f64,
}

/// The mixture sequential probability ratio test of Johari, Pekelis and Walsh ("Always valid
/// inference", 2017) for a difference `diff` with variance `v`, mixing over effects
/// θ ~ N(0, τ²):
///
/// `Λ = sqrt(v / (v + τ²)) · exp(τ² diff² / (2 v (v + τ²)))`.
///
/// Under the null Λ is a non-negative martingale, so P(Λ ever reaches 1/α) ≤ α (Ville's
/// inequality): rejecting when the p-value 1/Λ falls below α keeps the error rate at α however
/// many times one looks. This p-value is the value at the current look; the running minimum over
/// all past looks would be valid too and smaller, but needs the history of looks, which a report
/// over a log does not keep. Inverting the test gives the confidence sequence
/// diff ± sqrt(2 v (v + τ²) / τ² · (ln(1/α) + ½ ln((v + τ²) / v))).
pub fn msprt(diff: f64, v: f64, tau: f64, alpha: f64) -> Option<Sequential> {
    let tau2 = tau * tau;
    if !(tau2 > 0.0 && v > 0.0 && tau2.is_finite()) {
        return None;
    }
    let log_lambda = 0.5 * (v / (v + tau2)).ln() + tau2 * diff * diff / (2.0 * v * (v + tau2));
    let p_value = (-log_lambda).exp().min(1.0);
    let half_width =
        (2.0 * v * (v + tau2) / tau2 * ((1.0 / alpha).ln() + 0.5 * ((v + tau2) / v).ln())).sqrt();
    Some(Sequential { p_value, half_width })
}

/// Pearson's chi-square goodness-of-fit test of counts against expected shares.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub degrees_of_freedom: u32,
    pub p_value: f64,
}

/// Tests `observed` counts against `shares` (any positive weights; normalised here). `None`
/// when there is nothing to test: fewer than two cells, no observations, or a cell with a
/// non-positive share.
pub fn chi_square_goodness_of_fit(observed: &[u64], shares: &[f64]) -> Option<ChiSquare> {
    let total_share: f64 = shares.iter().sum();
    let n: u64 = observed.iter().sum();
    if observed.len() != shares.len()
        || observed.len() < 2
        || n == 0
        || shares.iter().any(|&s| s.is_nan() || s <= 0.0)
    {
        return None;
    }
    let statistic = observed
        .iter()
        .zip(shares)
        .map(|(&o, &share)| {
            let expected = n as f64 * share / total_share;
            (o as f64 - expected).powi(2) / expected
        })
        .sum::<f64>();
    let degrees_of_freedom = observed.len() as u32 - 1;
    let distribution = ChiSquared::new(f64::from(degrees_of_freedom)).ok()?;
    Some(ChiSquare { statistic, degrees_of_freedom, p_value: distribution.sf(statistic) })
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// The z with P(Z > z) = `upper`, for `upper` in (0, 1) (callers validate alpha).
pub fn normal_quantile_upper(upper: f64) -> f64 {
    // The lower quantile, negated, avoids rounding in 1 − upper.
    -standard_normal().inverse_cdf(upper.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn settings() -> TestSettings {
        TestSettings { alpha: 0.05, msprt_tau_relative: 0.05 }
    }

    fn users() -> impl Strategy<Value = Vec<[f64; N_QUANTITIES]>> {
        prop::collection::vec(
            (0u32..50, 0u32..50, 0u32..50, 0u32..20, 0u32..5, 0.0f64..100.0).prop_map(
                |(r, f, i, c, n, v)| {
                    [f64::from(r), f64::from(f.min(r)), f64::from(i), f64::from(c), f64::from(n), v]
                },
            ),
            2..200,
        )
    }

    fn moments(rows: &[[f64; N_QUANTITIES]]) -> Moments {
        let mut m = Moments::default();
        rows.iter().for_each(|row| m.push(row));
        m
    }

    fn estimate() -> impl Strategy<Value = Estimate> {
        (-1e3f64..1e3, 1e-6f64..1e3).prop_map(|(value, variance)| Estimate { value, variance })
    }

    proptest! {
        /// The streaming update equals the textbook two-pass covariance.
        #[test]
        fn streaming_moments_equal_two_pass_moments(rows in users()) {
            let m = moments(&rows);
            let n = rows.len() as f64;
            for a in 0..N_QUANTITIES {
                let mean_a = rows.iter().map(|r| r[a]).sum::<f64>() / n;
                prop_assert!((m.mean[a] - mean_a).abs() <= 1e-9 * mean_a.abs().max(1.0));
                for b in 0..N_QUANTITIES {
                    let mean_b = rows.iter().map(|r| r[b]).sum::<f64>() / n;
                    let c = rows.iter().map(|r| (r[a] - mean_a) * (r[b] - mean_b)).sum::<f64>();
                    prop_assert!((m.comoment[a][b] - c).abs() <= 1e-7 * c.abs().max(1.0), "{a} {b}");
                }
            }
        }

        /// Merging the moments of two halves equals pushing every row into one.
        #[test]
        fn merged_moments_equal_streamed_moments(rows in users(), cut in 0usize..200) {
            let cut = cut.min(rows.len());
            let mut merged = moments(&rows[..cut]);
            merged.merge(&moments(&rows[cut..]));
            let whole = moments(&rows);
            prop_assert_eq!(merged.n, whole.n);
            for a in 0..N_QUANTITIES {
                prop_assert!((merged.mean[a] - whole.mean[a]).abs() <= 1e-9 * whole.mean[a].abs().max(1.0));
                for b in 0..N_QUANTITIES {
                    let (x, y) = (merged.comoment[a][b], whole.comoment[a][b]);
                    prop_assert!((x - y).abs() <= 1e-7 * y.abs().max(1.0), "{a} {b}: {x} vs {y}");
                }
            }
        }

        /// A ratio's estimate is the ratio of sums, and its variance is never negative.
        #[test]
        fn ratio_is_ratio_of_sums(rows in users()) {
            let m = moments(&rows);
            let clicks: f64 = rows.iter().map(|r| r[3]).sum();
            let impressions: f64 = rows.iter().map(|r| r[2]).sum();
            match ratio_estimate(&m, Quantity::Clicks, Quantity::Impressions, 1.0) {
                Ok(e) => {
                    prop_assert!((e.value - clicks / impressions).abs() <= 1e-9 * e.value.abs().max(1.0));
                    prop_assert!(e.variance >= 0.0);
                }
                Err(reason) => prop_assert_eq!(reason, Unavailable::ZeroDenominator),
            }
        }

        /// p-values are probabilities, intervals hold the estimate, and swapping the groups
        /// mirrors the difference and keeps the p-values.
        #[test]
        fn comparisons_are_consistent(t in estimate(), c in estimate()) {
            let s = settings();
            let forward = compare(t, c, &s).unwrap();
            let backward = compare(c, t, &s).unwrap();
            prop_assert!((0.0..=1.0).contains(&forward.p_value));
            prop_assert!(forward.ci_abs[0] <= forward.diff_abs && forward.diff_abs <= forward.ci_abs[1]);
            prop_assert!((forward.diff_abs + backward.diff_abs).abs() <= 1e-9 * forward.diff_abs.abs().max(1.0));
            prop_assert!((forward.p_value - backward.p_value).abs() <= 1e-12);
            // The interval excludes zero exactly when the test rejects.
            let excludes_zero = forward.ci_abs[0] > 0.0 || forward.ci_abs[1] < 0.0;
            let margin = (forward.p_value - s.alpha).abs();
            if margin > 1e-9 {
                prop_assert_eq!(excludes_zero, forward.p_value < s.alpha);
            }
            if let (Some(rel), Some(ci)) = (forward.diff_rel, forward.ci_rel) {
                prop_assert!(ci[0] <= rel && rel <= ci[1]);
            }
        }

        /// The always-valid p-value is never below the fixed-horizon one, and its confidence
        /// sequence always holds the fixed-horizon interval: the price of looking often.
        #[test]
        fn always_valid_inference_is_more_conservative(t in estimate(), c in estimate(), tau in 0.001f64..5.0) {
            let s = TestSettings { alpha: 0.05, msprt_tau_relative: tau };
            let r = compare(t, c, &s).unwrap();
            if let (Some(p), Some(ci)) = (r.p_value_always_valid, r.ci_abs_always_valid) {
                prop_assert!(p >= r.p_value - 1e-12, "{} < {}", p, r.p_value);
                prop_assert!(ci[0] <= r.ci_abs[0] + 1e-9 && r.ci_abs[1] <= ci[1] + 1e-9);
            } else {
                prop_assert!(c.value == 0.0);
            }
        }

        /// Counts in exactly the configured proportions give a zero statistic and p = 1; the
        /// statistic grows as one cell drifts away.
        #[test]
        fn chi_square_is_zero_on_the_shares_and_grows_away_from_them(
            weights in prop::collection::vec(1u64..20, 2..6), scale in 1u64..1000, drift in 1u64..100,
        ) {
            let observed: Vec<u64> = weights.iter().map(|w| w * scale).collect();
            let shares: Vec<f64> = weights.iter().map(|&w| w as f64).collect();
            let exact = chi_square_goodness_of_fit(&observed, &shares).unwrap();
            prop_assert!(exact.statistic.abs() < 1e-9 && (exact.p_value - 1.0).abs() < 1e-9);
            let mut drifted = observed.clone();
            drifted[0] += drift;
            let more = chi_square_goodness_of_fit(&drifted, &shares).unwrap();
            drifted[0] += drift;
            let most = chi_square_goodness_of_fit(&drifted, &shares).unwrap();
            prop_assert!(0.0 < more.statistic && more.statistic < most.statistic);
            // Far enough out, both p-values round to zero (or below the smallest normal double).
            prop_assert!(more.p_value < 1.0 && most.p_value <= more.p_value);
            prop_assert!(most.p_value < more.p_value || more.p_value < f64::MIN_POSITIVE);
        }
    }

    #[test]
    fn degenerate_inputs_give_reasons() {
        let mut one = Moments::default();
        one.push(&[1.0; N_QUANTITIES]);
        assert_eq!(mean_estimate(&one, Quantity::Requests, 1.0), Err(Unavailable::TooFewUsers));
        assert_eq!(
            ratio_estimate(&one, Quantity::Clicks, Quantity::Impressions, 1.0),
            Err(Unavailable::TooFewUsers)
        );
        let flat = Estimate { value: 1.0, variance: 0.0 };
        assert_eq!(compare(flat, flat, &settings()), Err(Unavailable::NoVariance));
        let zero = Estimate { value: 0.0, variance: 1.0 };
        let r = compare(Estimate { value: 1.0, variance: 1.0 }, zero, &settings()).unwrap();
        assert_eq!((r.diff_rel, r.ci_rel, r.p_value_always_valid), (None, None, None));
        assert!(chi_square_goodness_of_fit(&[0, 0], &[1.0, 1.0]).is_none());
        assert!(chi_square_goodness_of_fit(&[5, 5], &[1.0, 0.0]).is_none());
        assert!(chi_square_goodness_of_fit(&[5], &[1.0]).is_none());
    }

    /// Textbook values: z(0.975) and the chi-square upper tail at its 0.05 critical value.
    #[test]
    fn distributions_match_tables() {
        assert!((normal_quantile_upper(0.025) - 1.959_963_984_540_054).abs() < 1e-12);
        let chi = chi_square_goodness_of_fit(&[60, 40], &[1.0, 1.0]).unwrap();
        assert!((chi.statistic - 4.0).abs() < 1e-12);
        // P(chi2(1) > 4) = 2 (1 − Φ(2)) = 0.0455002638963584.
        assert!((chi.p_value - 0.045_500_263_896_358_4).abs() < 1e-12);
    }
}

//! Paired comparisons of two configurations of a study: bootstrap confidence intervals over
//! seeds and problems, a sign-flip permutation test over seeds, an equivalence test (TOST) and
//! the minimum detectable effect. docs/study.md says how to read them.
//!
//! The data of one comparison is a matrix `d[s][p]`: the difference (design − baseline) of a
//! per-problem figure (e.g. held-out pass@1 of problem p at the last step) between two runs that
//! share seed s. Seeds are the unit of training randomness; problems are a sample of the task
//! world. The point estimate is the mean of `d`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// z quantiles of the standard normal used by [`Paired::mde`].
const Z_975: f64 = 1.959_963_984_540_054;
const Z_80: f64 = 0.841_621_233_572_914_3;

/// The settings of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Two-sided level of the CI and of the tests (0.05: a 95% CI).
    pub alpha: f64,
    /// Equivalence margin of the TOST, in the figure's units (e.g. 0.05 pass@1).
    pub margin: f64,
    /// Seed of the bootstrap and (with many seeds) of the permutation sampling.
    pub seed: u64,
}

/// The result of one paired comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub seeds: usize,
    pub problems: usize,
    /// Mean of the differences.
    pub diff: f64,
    /// Percentile bootstrap CI at level 1 − alpha, resampling seeds and problems.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Standard deviation of the bootstrap replicates (the standard error of `diff`).
    pub se: f64,
    /// Seed-level 95% CI: Student's t interval on the per-seed mean differences (training
    /// randomness only; NaN with fewer than two seeds).
    pub seed_ci_low: f64,
    pub seed_ci_high: f64,
    /// Two-sided p-value of the sign-flip permutation test over seeds (exact for ≤ 16 seeds).
    /// With S seeds it is never below 2 / 2^S (0.0625 for 5 seeds).
    pub p_value: f64,
    /// TOST p-value for |true difference| < margin (the larger of the two one-sided
    /// bootstrap p-values); equivalence is shown when it is below alpha.
    pub tost_p: f64,
    /// The smallest true difference this design detects with 80% power at level alpha:
    /// (z_{1−α/2} + z_{0.8}) × se (normal approximation, for alpha = 0.05).
    pub mde: f64,
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (table to 30, then the
/// normal quantile with the first correction term).
pub fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => Z_975 + (Z_975.powi(3) + Z_975) / (4.0 * df as f64),
    }
}

/// Mean of a matrix's entries over the chosen rows and columns (with repeats).
fn mean_of(d: &[Vec<f64>], rows: &[usize], cols: &[usize]) -> f64 {
    let mut sum = 0.0;
    for &s in rows {
        let row = &d[s];
        for &p in cols {
            sum += row[p];
        }
    }
    sum / (rows.len() * cols.len()) as f64
}

/// The `q` quantile of sorted values (linear interpolation between order statistics).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Two-sided p-value of the sign-flip permutation test on per-seed mean differences: under the
/// null the labels "design" and "baseline" of each seed's pair are exchangeable.
pub fn sign_flip_p(per_seed: &[f64], seed: u64) -> f64 {
    let n = per_seed.len();
    if n == 0 {
        return f64::NAN;
    }
    let observed = per_seed.iter().sum::<f64>().abs();
    let tol = 1e-12 * (1.0 + observed);
    let stat = |mask: u64| -> f64 {
        per_seed
            .iter()
            .enumerate()
            .map(|(i, x)| if mask >> i & 1 == 1 { -x } else { *x })
            .sum::<f64>()
            .abs()
    };
    if n <= 16 {
        let total = 1u64 << n;
        let hits = (0..total).filter(|&m| stat(m) >= observed - tol).count();
        return hits as f64 / total as f64;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f11b);
    let draws = 20_000;
    let hits = (0..draws)
        .filter(|_| stat(rng.random::<u64>()) >= observed - tol)
        .count();
    (hits + 1) as f64 / (draws + 1) as f64
}

/// Compare: `d[s][p]` = design − baseline for seed s and problem p (every row the same length).
pub fn paired(d: &[Vec<f64>], st: Settings) -> Option<Paired> {
    let seeds = d.len();
    let problems = d.first().map_or(0, Vec::len);
    if seeds == 0 || problems == 0 || d.iter().any(|r| r.len() != problems) {
        return None;
    }
    let all_s: Vec<usize> = (0..seeds).collect();
    let all_p: Vec<usize> = (0..problems).collect();
    let diff = mean_of(d, &all_s, &all_p);
    let mut rng = ChaCha8Rng::seed_from_u64(st.seed);
    let mut reps = Vec::with_capacity(st.resamples);
    let mut rows = vec![0usize; seeds];
    let mut cols = vec![0usize; problems];
    for _ in 0..st.resamples.max(1) {
        for r in rows.iter_mut() {
            *r = rng.random_range(0..seeds);
        }
        for c in cols.iter_mut() {
            *c = rng.random_range(0..problems);
        }
        reps.push(mean_of(d, &rows, &cols));
    }
    reps.sort_by(f64::total_cmp);
    let m = reps.iter().sum::<f64>() / reps.len() as f64;
    let se = (reps.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (reps.len().max(2) - 1) as f64)
        .sqrt();
    let per_seed: Vec<f64> = d
        .iter()
        .map(|r| r.iter().sum::<f64>() / problems as f64)
        .collect();
    let (seed_ci_low, seed_ci_high) = if seeds >= 2 {
        let m = per_seed.iter().sum::<f64>() / seeds as f64;
        let sd =
            (per_seed.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (seeds - 1) as f64).sqrt();
        let h = t_975(seeds - 1) * sd / (seeds as f64).sqrt();
        (m - h, m + h)
    } else {
        (f64::NAN, f64::NAN)
    };
    let frac = |f: &dyn Fn(f64) -> bool| reps.iter().filter(|&&x| f(x)).count() as f64;
    let b = reps.len() as f64;
    // One-sided bootstrap p-values of H0: diff <= -margin and H0: diff >= +margin (CI inversion).
    let p_low = (frac(&|x| x <= -st.margin) + 1.0) / (b + 1.0);
    let p_high = (frac(&|x| x >= st.margin) + 1.0) / (b + 1.0);
    Some(Paired {
        seeds,
        problems,
        diff,
        ci_low: quantile(&reps, st.alpha / 2.0),
        ci_high: quantile(&reps, 1.0 - st.alpha / 2.0),
        se,
        seed_ci_low,
        seed_ci_high,
        p_value: sign_flip_p(&per_seed, st.seed),
        tost_p: p_low.max(p_high),
        mde: (Z_975 + Z_80) * se,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> Settings {
        Settings {
            resamples: 2000,
            alpha: 0.05,
            margin: 0.05,
            seed: 7,
        }
    }

    #[test]
    fn exact_sign_flip_p_values() {
        // All five seeds positive: only the identity and the full flip reach |sum|: 2/32.
        assert_eq!(sign_flip_p(&[0.1, 0.2, 0.1, 0.3, 0.2], 0), 2.0 / 32.0);
        // Six positive seeds: 2/64 < 0.05.
        assert_eq!(sign_flip_p(&[0.1; 6], 0), 2.0 / 64.0);
        // A zero difference everywhere: every flip ties, p = 1.
        assert_eq!(sign_flip_p(&[0.0; 4], 0), 1.0);
    }

    #[test]
    fn a_clear_difference_has_a_ci_above_zero() {
        // 6 seeds x 50 problems, a difference of 0.2 ± noise.
        let d: Vec<Vec<f64>> = (0..6)
            .map(|s| {
                (0..50)
                    .map(|p| 0.2 + 0.1 * (((s * 50 + p) * 37 % 11) as f64 / 10.0 - 0.5))
                    .collect()
            })
            .collect();
        let r = paired(&d, st()).unwrap();
        assert!((r.diff - 0.2).abs() < 0.02, "{r:?}");
        assert!(r.ci_low > 0.15 && r.ci_high < 0.25, "{r:?}");
        assert!(r.p_value < 0.05, "{r:?}");
        // Far outside the margin: equivalence is refused.
        assert!(r.tost_p > 0.5, "{r:?}");
        assert!(r.mde > 0.0 && r.mde < 0.05, "{r:?}");
        assert!(r.seed_ci_low > 0.15 && r.seed_ci_high < 0.25, "{r:?}");
    }

    #[test]
    fn no_difference_within_the_margin_is_equivalent() {
        let d: Vec<Vec<f64>> = (0..6)
            .map(|s| {
                (0..100)
                    .map(|p| if (s + p) % 2 == 0 { 0.01 } else { -0.01 })
                    .collect()
            })
            .collect();
        let r = paired(&d, st()).unwrap();
        assert!(r.diff.abs() < 0.01, "{r:?}");
        assert!(r.ci_low < 0.0 && r.ci_high > 0.0, "{r:?}");
        assert!(r.tost_p < 0.05, "{r:?}");
        assert!(r.p_value > 0.05, "{r:?}");
    }

    #[test]
    fn deterministic_for_a_seed_and_ragged_input_is_refused() {
        let d = vec![vec![0.1, 0.0, 0.3], vec![0.2, 0.1, 0.0]];
        assert_eq!(paired(&d, st()), paired(&d, st()));
        assert_eq!(paired(&[vec![0.1], vec![]], st()), None);
        assert_eq!(paired(&[], st()), None);
    }

    #[test]
    fn t_quantiles() {
        assert_eq!(t_975(4), 2.776);
        assert!((t_975(1000) - 1.962).abs() < 1e-3);
        assert!(t_975(0).is_nan());
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 1.0), 3.0);
        assert_eq!(quantile(&v, 0.5), 1.5);
    }
}

//! pass@k and small statistics.

/// The unbiased pass@k estimator for one problem with `n` samples of which `c` pass every
/// test: 1 − C(n−c, k) / C(n, k), computed in the numerically stable product form
/// 1 − Π_{i=n−c+1}^{n} (1 − k / i). 1.0 when n − c < k; `None` when k > n (undefined) or k = 0.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let mut prod = 1.0f64;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    Some(1.0 - prod)
}

pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

/// Sample standard deviation (n − 1 in the denominator); 0 for fewer than two values.
pub fn sample_std(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs).unwrap_or(0.0);
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn pass_at_k_matches_hand_computed_values() {
        // n=5, c=2, k=1: 2/5.
        assert!((pass_at_k(5, 2, 1).unwrap() - 0.4).abs() < 1e-12);
        // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10.
        assert!((pass_at_k(5, 2, 2).unwrap() - 0.7).abs() < 1e-12);
        // n=4, c=2, k=3: n-c < k -> 1.
        assert_eq!(pass_at_k(4, 2, 3), Some(1.0));
        assert_eq!(pass_at_k(4, 0, 2), Some(0.0));
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_at_k(3, 1, 0), None);
        for n in 1..20u64 {
            for c in 0..=n {
                for k in 1..=n {
                    let want = 1.0 - binom(n - c, k) / binom(n, k);
                    let got = pass_at_k(n as usize, c as usize, k as usize).unwrap();
                    assert!((got - want).abs() < 1e-9, "n={n} c={c} k={k}");
                }
            }
        }
    }

    #[test]
    fn stats() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 3.0]), Some(2.0));
        assert_eq!(sample_std(&[1.0]), 0.0);
        assert!((sample_std(&[1.0, 3.0]) - 2f64.sqrt()).abs() < 1e-12);
    }
}

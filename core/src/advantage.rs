//! Group-relative advantage estimators of critic-free RL.
//!
//! A group is every sample of one problem. Both estimators give all-zero advantages to a group
//! whose rewards are all equal (and to a group of one): such a group carries no learning signal.

use crate::metrics::{mean, sample_std};

/// GRPO: A_i = (r_i − mean(r)) / (std(r) + eps), where std is the *sample* standard deviation
/// (n − 1 in the denominator, as `torch.std` and TRL compute it). With `std_norm = false`
/// (Dr. GRPO) A_i = r_i − mean(r).
pub fn grpo(rewards: &[f64], std_norm: bool, eps: f64) -> Vec<f64> {
    grpo_floored(rewards, std_norm, eps, f64::NEG_INFINITY)
}

/// GRPO with the baseline floored: A_i = (r_i − max(mean(r), floor)) / scale, so that no
/// sample rewarded below `floor` gets a positive advantage (CoRPO-style). A group whose
/// rewards are all equal still gets zeros (it says nothing about which sample was better).
pub fn grpo_floored(rewards: &[f64], std_norm: bool, eps: f64, floor: f64) -> Vec<f64> {
    let Some(m) = mean(rewards) else {
        return Vec::new();
    };
    if all_equal(rewards) {
        return vec![0.0; rewards.len()];
    }
    let scale = if std_norm {
        sample_std(rewards) + eps
    } else {
        1.0
    };
    let b = m.max(floor);
    rewards.iter().map(|r| (r - b) / scale).collect()
}

/// RLOO with the leave-one-out baseline floored: A_i = r_i − max(mean of the others, floor).
pub fn rloo_floored(rewards: &[f64], floor: f64) -> Vec<f64> {
    let n = rewards.len();
    if n < 2 || all_equal(rewards) {
        return vec![0.0; n];
    }
    let sum: f64 = rewards.iter().sum();
    rewards
        .iter()
        .map(|r| r - ((sum - r) / (n - 1) as f64).max(floor))
        .collect()
}

/// RLOO: A_i = r_i − mean of the other samples' rewards; 0 for a group of one.
pub fn rloo(rewards: &[f64]) -> Vec<f64> {
    rloo_floored(rewards, f64::NEG_INFINITY)
}

/// True when every reward equals the first (an empty group counts as equal).
pub fn all_equal(rewards: &[f64]) -> bool {
    rewards.windows(2).all(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_floored_baseline_never_pushes_a_sample_below_the_floor_up() {
        // Pass rates of a group without a full pass: under plain GRPO the best two are pushed
        // up; with the floor at 1 every one is pushed down, the worst the most.
        let r = [0.5, 0.83, 0.83, 0.0];
        let plain = grpo(&r, false, 0.0);
        assert!(plain[1] > 0.0);
        let a = grpo_floored(&r, false, 0.0, 1.0);
        close(&a, &[-0.5, -0.17, -0.17, -1.0]);
        // With a full pass it is the only positive one.
        let a = grpo_floored(&[1.0, 0.83, 0.0], true, 0.0, 1.0);
        assert!(a[0] == 0.0 && a[1] < 0.0 && a[2] < a[1], "{a:?}");
        // At T = 1 the baseline is 1: a full pass gets 0, only failures move (down).
        let a = rloo_floored(&[1.0, 0.83, 0.0], 1.0);
        assert!(a[0] == 0.0 && a[1] < 0.0 && a[2] < a[1], "{a:?}");
        // Below 1, a full pass is pushed up and every sample below T down.
        let a = grpo_floored(&[1.0, 0.83, 0.0], false, 0.0, 0.9);
        assert!(a[0] > 0.0 && a[1] < 0.0 && a[2] < a[1], "{a:?}");
        // The floor below the mean changes nothing; equal rewards still give zeros.
        close(&grpo_floored(&r, true, 1e-4, 0.1), &grpo(&r, true, 1e-4));
        close(&rloo_floored(&r, 0.0), &rloo(&r));
        close(&grpo_floored(&[0.5, 0.5], true, 1e-4, 1.0), &[0.0, 0.0]);
        close(&rloo_floored(&[0.5, 0.5], 1.0), &[0.0, 0.0]);
    }

    #[test]
    fn grpo_on_fixed_groups() {
        // mean 0.5, sample std sqrt(1/3).
        let s = (1.0f64 / 3.0).sqrt();
        close(
            &grpo(&[1.0, 0.0, 1.0, 0.0], true, 0.0),
            &[0.5 / s, -0.5 / s, 0.5 / s, -0.5 / s],
        );
        close(&grpo(&[1.0, 0.0], false, 1e-6), &[0.5, -0.5]);
        close(&grpo(&[0.3, 0.3, 0.3], true, 1e-6), &[0.0, 0.0, 0.0]);
        close(&grpo(&[1.0], true, 1e-6), &[0.0]);
        assert!(grpo(&[], true, 1e-6).is_empty());
    }

    #[test]
    fn rloo_on_fixed_groups() {
        close(&rloo(&[1.0, 0.0, 0.0]), &[1.0, -0.5, -0.5]);
        close(&rloo(&[1.0, 0.5]), &[0.5, -0.5]);
        close(&rloo(&[0.7]), &[0.0]);
        close(&rloo(&[1.0, 1.0]), &[0.0, 0.0]);
    }
}

//! The diagnostics' arithmetic on hand-built gradient vectors with known answers, the sketch,
//! and the verdict classification.

use super::*;
use serde_json::json;

use Outcome::{Full, Other, Partial, Zero};

fn stats(samples: &[(f64, Outcome, Vec<f64>)]) -> GradStats {
    let mut acc = GroupAccum::new(samples[0].2.len());
    for (a, o, v) in samples {
        acc.add(*a, *o, v);
    }
    acc.stats()
}

#[track_caller]
fn close(x: Option<f64>, want: f64) {
    let x = x.expect("defined");
    assert!((x - want).abs() < 1e-12, "{x} != {want}");
}

#[test]
fn exact_opposites_cancel_to_zero() {
    let g = vec![0.3, -1.2, 2.0];
    let s = stats(&[(1.0, Partial, g.clone()), (-1.0, Partial, g.clone())]);
    close(s.cancellation, 0.0);
    close(s.cancellation_partial, 0.0);
    // Same thing from opposite gradients with equal advantages.
    let neg: Vec<f64> = g.iter().map(|x| -x).collect();
    let s = stats(&[(0.5, Zero, g), (0.5, Zero, neg)]);
    close(s.cancellation, 0.0);
    assert_eq!(s.cancellation_partial, None, "no partial-pass sample");
}

#[test]
fn samples_pushing_the_same_way_give_one() {
    let g = vec![1.0, 2.0, -2.0];
    let s = stats(&[(1.0, Full, g.clone()), (2.0, Partial, g.clone())]);
    close(s.cancellation, 1.0);
    close(s.cancellation_partial, 1.0);
    // A negative advantage on the opposite gradient pushes the same way.
    let neg: Vec<f64> = g.iter().map(|x| -x).collect();
    let s = stats(&[(1.0, Partial, g.clone()), (-3.0, Partial, neg)]);
    close(s.cancellation, 1.0);
    close(s.cancellation_partial, 1.0);
    // Scale does not matter.
    let big: Vec<f64> = g.iter().map(|x| 10.0 * x).collect();
    let s = stats(&[(0.1, Zero, g), (7.0, Zero, big)]);
    close(s.cancellation, 1.0);
}

#[test]
fn orthogonal_gradients() {
    // Equal pulls on orthogonal directions: ‖(1, 1)‖ / 2 = 1/√2.
    let s = stats(&[
        (1.0, Partial, vec![1.0, 0.0]),
        (-1.0, Partial, vec![0.0, -1.0]),
    ]);
    close(s.cancellation, 1.0 / 2f64.sqrt());
    // Unequal: A = (3, 4) on e1, e2: ‖(3, 4)‖ / 7 = 5/7.
    let s = stats(&[(3.0, Zero, vec![1.0, 0.0]), (4.0, Zero, vec![0.0, 1.0])]);
    close(s.cancellation, 5.0 / 7.0);
}

#[test]
fn no_full_pass_means_no_alignment() {
    let s = stats(&[
        (1.0, Partial, vec![1.0, 0.0]),
        (-1.0, Zero, vec![0.0, 1.0]),
        (0.0, Other, vec![5.0, 5.0]),
    ]);
    assert_eq!(s.alignment, None);
    assert_eq!(s.partial_share, None);
    assert!(s.cancellation.is_some());
    // An all-zero advantage (or gradient) leaves the cancellation undefined.
    let s = stats(&[(0.0, Partial, vec![1.0, 0.0]), (0.0, Full, vec![0.0, 1.0])]);
    assert_eq!(s.cancellation, None);
    assert_eq!(s.cancellation_partial, None);
    assert_eq!(s.alignment, None, "no update direction");
}

#[test]
fn alignment_and_partial_share_by_hand() {
    // Full pass e1 (A = 1), partial e1 + e2 (A = 0.5), zero pass e2 (A = -1.5):
    // u = 1.5 e1 - e2, d = e1, u_partial = 0.5 e1 + 0.5 e2.
    let s = stats(&[
        (1.0, Full, vec![1.0, 0.0]),
        (0.5, Partial, vec![1.0, 1.0]),
        (-1.5, Zero, vec![0.0, 1.0]),
    ]);
    close(s.alignment, 1.5 / 3.25f64.sqrt());
    close(s.partial_share, 0.5 / 1.5);
    close(
        s.cancellation,
        3.25f64.sqrt() / (1.0 + 0.5 * 2f64.sqrt() + 1.5),
    );
    close(s.cancellation_partial, 1.0);
    // The update exactly along the full-pass direction: alignment 1, no partial samples: 0.
    let s = stats(&[(1.0, Full, vec![0.0, 2.0]), (-1.0, Zero, vec![0.0, -1.0])]);
    close(s.alignment, 1.0);
    close(s.partial_share, 0.0);
    // Partial samples pulling against the full-pass direction: negative share.
    let s = stats(&[(2.0, Full, vec![1.0, 0.0]), (-1.0, Partial, vec![1.0, 0.0])]);
    close(s.alignment, 1.0);
    close(s.partial_share, -1.0);
    // Update orthogonal to d: alignment 0, share undefined (0 / 0).
    let s = stats(&[(0.0, Full, vec![1.0, 0.0]), (1.0, Partial, vec![0.0, 1.0])]);
    close(s.alignment, 0.0);
    assert_eq!(s.partial_share, None);
}

#[test]
fn batch_pools_groups() {
    let mut b = BatchAccum::new(2);
    b.add(1.0, Partial, &[1.0, 0.0]);
    b.add(-1.0, Zero, &[1.0, 0.0]);
    b.add(1.0, Partial, &[0.0, 1.0]);
    let (all, partial) = b.cancellation();
    close(all, 1.0 / 3.0);
    close(partial, 1.0 / 2f64.sqrt());
}

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = splitmix64(seed.wrapping_mul(GOLDEN) ^ (i as u64).wrapping_mul(GOLDEN));
            ((h >> 40) as f64 / (1u64 << 24) as f64 - 0.5) as f32
        })
        .collect()
}

#[test]
fn sketch_is_linear_seeded_and_keeps_inner_products() {
    let n = 200_000;
    let x = pseudo_random(n, 1);
    let y: Vec<f32> = pseudo_random(n, 2)
        .iter()
        .zip(&x)
        .map(|(r, x)| r + 0.5 * x)
        .collect();
    let p = Projection::Sketch { dim: 4096, seed: 3 };
    let (sx, sy) = (p.project(&x), p.project(&y));
    // Linear: S(2x - y) = 2 Sx - Sy (up to the f32 rounding of 2x - y).
    let comb: Vec<f32> = x.iter().zip(&y).map(|(a, b)| 2.0 * a - b).collect();
    for (s, (a, b)) in p.project(&comb).iter().zip(sx.iter().zip(&sy)) {
        assert!((s - (2.0 * a - b)).abs() < 1e-5, "{s} vs {}", 2.0 * a - b);
    }
    // Chunked projection (an offset per piece) equals the whole.
    let mut pieces = vec![0.0; 4096];
    p.add_into(0, &x[..12_345], &mut pieces);
    p.add_into(12_345, &x[12_345..], &mut pieces);
    assert!(pieces.iter().zip(&sx).all(|(a, b)| (a - b).abs() < 1e-9));
    // The same seed gives the same sketch; another seed another one.
    assert_eq!(p.project(&x), sx);
    let q = Projection::Sketch { dim: 4096, seed: 4 };
    assert_ne!(q.project(&x), sx);
    // Inner products and norms within a few 1/√D of ‖x‖‖y‖ (the estimator's standard error).
    let ex = Projection::Exact;
    let (ex_x, ex_y) = (ex.project(&x), ex.project(&y));
    let scale = norm(&ex_x) * norm(&ex_y);
    let err = (dot(&sx, &sy) - dot(&ex_x, &ex_y)).abs() / scale;
    assert!(err < 3.0 / 4096f64.sqrt(), "relative error {err}");
    let cos_exact = dot(&ex_x, &ex_y) / scale;
    let cos_sketch = dot(&sx, &sy) / (norm(&sx) * norm(&sy));
    assert!(
        (cos_exact - cos_sketch).abs() < 0.03,
        "{cos_exact} vs {cos_sketch}"
    );
    // Every bucket is used about equally (n / D coordinates each): no degenerate hash.
    let mut counts = vec![0usize; 4096];
    let key = splitmix64(3u64.wrapping_add(GOLDEN)).wrapping_add(GOLDEN);
    for j in 0..n as u64 {
        let h = splitmix64(key.wrapping_add(j.wrapping_mul(GOLDEN)));
        counts[(((h >> 32) * 4096) >> 32) as usize] += 1;
    }
    let mean = n as f64 / 4096.0;
    assert!(
        counts
            .iter()
            .all(|&c| (c as f64 - mean).abs() < 6.0 * mean.sqrt())
    );
}

#[test]
fn exact_projection_is_the_vector() {
    let x = [1.5f32, -2.0, 0.25];
    assert_eq!(Projection::Exact.project(&x), vec![1.5, -2.0, 0.25]);
}

#[test]
fn outcomes_follow_the_verdict() {
    let v = |passed: usize, statuses: &[&str]| {
        let tests: Vec<_> = statuses.iter().map(|s| json!({"status": s})).collect();
        json!({"passed": passed, "total": statuses.len(), "tests": tests, "runtime": "r"})
    };
    assert_eq!(Outcome::of(Some(&v(2, &["pass", "pass"]))), Full);
    assert_eq!(Outcome::of(Some(&v(1, &["pass", "fail"]))), Partial);
    assert_eq!(Outcome::of(Some(&v(0, &["error", "fail"]))), Zero);
    assert_eq!(Outcome::of(Some(&v(1, &["pass", "infra"]))), Other);
    assert_eq!(Outcome::of(Some(&v(0, &[]))), Other);
    assert_eq!(
        Outcome::of(Some(&v(2, &["pass", "fail"]))),
        Other,
        "contradicts"
    );
    assert_eq!(Outcome::of(Some(&json!({"passed": 1}))), Other);
    assert_eq!(Outcome::of(Some(&Value::Null)), Other);
    assert_eq!(Outcome::of(None), Other);
}

#[test]
fn orthogonal_gradients_sit_at_their_null() {
    // Four orthogonal gradients of different norms: cancellation and alignment equal the
    // values the null formulas give, and every cosine is 0.
    let e = |k: usize, s: f64| {
        let mut v = vec![0.0; 4];
        v[k] = s;
        v
    };
    let s = stats(&[
        (1.5, Full, e(0, 2.0)),
        (0.5, Full, e(1, 1.0)),
        (-0.5, Partial, e(2, 3.0)),
        (-1.5, Zero, e(3, 0.5)),
    ]);
    close(s.cancellation_null, s.cancellation.unwrap());
    close(s.alignment_null, s.alignment.unwrap());
    close(s.cos_full_full, 0.0);
    close(s.cos_full_partial, 0.0);
    close(s.cos_partial_zero, 0.0);
    assert_eq!(
        s.cos_partial_partial, None,
        "one partial-pass sample: no pair"
    );
    // By hand: num √(1.5²·4 + 0.5²·1 + 0.5²·9 + 1.5²·0.25), den 1.5·2 + 0.5 + 0.5·3 + 1.5·0.5.
    let num = (9.0f64 + 0.25 + 2.25 + 0.5625).sqrt();
    close(s.cancellation_null, num / (3.0 + 0.5 + 1.5 + 0.75));
    // alignment_null = (1.5·4 + 0.5·1) / (num · √5).
    close(s.alignment_null, 6.5 / (num * 5f64.sqrt()));
}

#[test]
fn split_alignment_excludes_the_sample_itself() {
    // Samples 0 and 1 are full passes with orthogonal gradients, 2 and 3 zero passes. The
    // even half {0, 2} has update 1·e1 - 1·e3 and full direction e1; the odd half {1, 3}:
    // 1·e2 - 1·e4 and e2. Across halves the directions are orthogonal: split alignment 0,
    // while the usual alignment (with self-inclusion) is positive.
    let e = |k: usize| {
        let mut v = vec![0.0; 4];
        v[k] = 1.0;
        v
    };
    let s = stats(&[
        (1.0, Full, e(0)),
        (1.0, Full, e(1)),
        (-1.0, Zero, e(2)),
        (-1.0, Zero, e(3)),
    ]);
    close(s.alignment_split, 0.0);
    close(s.alignment, 2.0 / (2.0 * 2f64.sqrt()));
    // Identical full-pass gradients: the other half's direction is the same: split alignment
    // equals the half's own.
    let s = stats(&[
        (1.0, Full, vec![1.0, 0.0]),
        (1.0, Full, vec![1.0, 0.0]),
        (-1.0, Zero, vec![0.0, 1.0]),
        (-1.0, Zero, vec![0.0, 1.0]),
    ]);
    close(s.alignment_split, 1.0 / 2f64.sqrt());
    close(s.cos_full_full, 1.0);
}

#[test]
fn pairwise_cosines_by_class() {
    let s = stats(&[
        (1.0, Full, vec![1.0, 0.0]),
        (0.0, Partial, vec![1.0, 1.0]),
        (0.0, Partial, vec![-1.0, 1.0]),
        (-1.0, Zero, vec![0.0, 1.0]),
    ]);
    // full–partial: cos(e1, (1,1)) = 1/√2, cos(e1, (-1,1)) = -1/√2: mean 0.
    close(s.cos_full_partial, 0.0);
    // partial–partial: (1,1)·(-1,1) = 0.
    close(s.cos_partial_partial, 0.0);
    // partial–zero: both 1/√2.
    close(s.cos_partial_zero, 1.0 / 2f64.sqrt());
    assert_eq!(s.cos_full_full, None);
}

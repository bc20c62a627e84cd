//! `rl-update --diagnostics`: how the samples of a group pull on the weights (docs/diagnostics.md).
//!
//! With g_i the gradient of log π(y_i) (the sum of the completion's token log-probs, at the
//! record's temperature) with respect to every trainable parameter and A_i the advantage the
//! algorithm used, per group and over the batch:
//!
//! * cancellation ‖Σ A_i g_i‖ / Σ |A_i| ‖g_i‖ (1: every sample pushes the same way; → 0: they
//!   cancel), over all samples and over the partial-pass samples alone;
//! * alignment cos(Σ A_i g_i, d) with the full-pass direction d = Σ_{full pass} g_i, and the
//!   share Σ_{partial} A_i g_i·d / Σ_all A_i g_i·d of the update's projection on d;
//! * after the optimizer step, the change of log π(y_i) (recomputed with the new weights) of
//!   full-pass, partial-pass and zero-pass samples.
//!
//! The gradients are either used whole ([`Projection::Exact`]) or projected to D dimensions by a
//! seeded CountSketch ([`Projection::Sketch`]), which keeps inner products in expectation; every
//! quantity above is a function of inner products of linear combinations of the g_i, so it is
//! computed the same way from either representation.

use crate::Example;
use candle_core::{Device, Tensor, Var};
use rlcode_core::records::Verdict;
use rlcode_policy::{Llama, LogitsChunk};
use serde::Serialize;
use serde_json::Value;

/// What a sample's verdict says, as far as the diagnostics are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every test passed (passed == total > 0).
    Full,
    /// Some but not all (0 < passed < total).
    Partial,
    /// None (passed == 0 < total).
    Zero,
    /// No verdict, a verdict that contradicts itself, no tests, or an `infra` test: the sample
    /// says nothing about the program (as in rl-eval) and belongs to no category.
    Other,
}

impl Outcome {
    /// Classify a record's `verdict` field (absent: `Other`). Never an error: a record the
    /// update accepts is never refused because of its verdict.
    pub fn of(verdict: Option<&Value>) -> Outcome {
        let Some(v) = verdict.filter(|v| !v.is_null()) else {
            return Outcome::Other;
        };
        let Ok(v) = serde_json::from_value::<Verdict>(v.clone()) else {
            return Outcome::Other;
        };
        if v.check().is_err() || v.total == 0 || v.has_infra() {
            Outcome::Other
        } else if v.passed == v.total {
            Outcome::Full
        } else if v.passed > 0 {
            Outcome::Partial
        } else {
            Outcome::Zero
        }
    }
}

/// How per-sample gradients are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// The whole gradient (one f32 per parameter).
    Exact,
    /// A CountSketch to `dim` dimensions: coordinate j of the flattened gradient (parameters in
    /// checkpoint order) is added, with sign σ(j), to bucket h(j), where (h(j), σ(j)) come from
    /// SplitMix64 at position j of a stream keyed by `seed`. E[⟨Sx, Sy⟩] = ⟨x, y⟩.
    Sketch { dim: usize, seed: u64 },
}

/// Elements of a gradient tensor copied out at a time by the sketch (bounds its memory).
const CHUNK: usize = 1 << 20;

fn splitmix64(z: u64) -> u64 {
    let mut z = z;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Projection {
    /// The dimension of the projected vectors for `params` parameters.
    pub fn dim(&self, params: usize) -> usize {
        match *self {
            Projection::Exact => params,
            Projection::Sketch { dim, .. } => dim,
        }
    }

    /// Project a flat vector whose first element is coordinate `offset` of the whole gradient,
    /// adding into `out` (of length [`Projection::dim`]).
    pub fn add_into(&self, offset: usize, x: &[f32], out: &mut [f64]) {
        match *self {
            Projection::Exact => {
                for (o, &v) in out[offset..offset + x.len()].iter_mut().zip(x) {
                    *o += v as f64;
                }
            }
            Projection::Sketch { dim, seed } => {
                let key = splitmix64(seed.wrapping_add(GOLDEN)).wrapping_add(GOLDEN);
                for (k, &v) in x.iter().enumerate() {
                    let j = (offset + k) as u64;
                    let h = splitmix64(key.wrapping_add(j.wrapping_mul(GOLDEN)));
                    let bucket = (((h >> 32) * dim as u64) >> 32) as usize;
                    let v = v as f64;
                    out[bucket] += if h & 1 == 0 { v } else { -v };
                }
            }
        }
    }

    /// Project a flat vector (coordinates 0..).
    pub fn project(&self, x: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; self.dim(x.len())];
        self.add_into(0, x, &mut out);
        out
    }

    /// Project the gradient of every parameter (in `params` order; a parameter without a
    /// gradient counts as zeros).
    pub fn project_grads(
        &self,
        params: &[(String, Var)],
        grads: &candle_core::backprop::GradStore,
    ) -> anyhow::Result<Vec<f64>> {
        let total: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
        let mut out = vec![0.0; self.dim(total)];
        let mut offset = 0;
        for (_, var) in params {
            let n = var.elem_count();
            if let Some(g) = grads.get(var.as_tensor()) {
                let flat = g.flatten_all()?;
                let mut start = 0;
                while start < n {
                    let len = CHUNK.min(n - start);
                    let x: Vec<f32> = flat.narrow(0, start, len)?.to_vec1()?;
                    self.add_into(offset + start, &x, &mut out);
                    start += len;
                }
            }
            offset += n;
        }
        Ok(out)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `num / den`, null where the denominator is 0 (or the result not finite).
fn ratio(num: f64, den: f64) -> Option<f64> {
    if den == 0.0 {
        return None;
    }
    Some(num / den).filter(|r| r.is_finite())
}

/// Σ A_i v_i and Σ |A_i| ‖v_i‖ over some samples.
#[derive(Debug, Clone)]
struct Pull {
    sum: Vec<f64>,
    abs: f64,
}

impl Pull {
    fn new(dim: usize) -> Self {
        Pull {
            sum: vec![0.0; dim],
            abs: 0.0,
        }
    }

    fn add(&mut self, a: f64, v: &[f64], v_norm: f64) {
        axpy(&mut self.sum, a, v);
        self.abs += a.abs() * v_norm;
    }

    /// ‖Σ A_i v_i‖ / Σ |A_i| ‖v_i‖; null when no sample has both a non-zero advantage and a
    /// non-zero gradient. At most 1 (triangle inequality; the clamp only removes rounding).
    fn cancellation(&self) -> Option<f64> {
        ratio(norm(&self.sum), self.abs).map(|c| c.min(1.0))
    }
}

/// The gradient statistics of one group, fed one sample at a time. The group's (projected)
/// gradients are kept until [`GroupAccum::stats`] (memory: group size × the projection's
/// dimension, in f32): every statistic is a function of their Gram matrix.
#[derive(Debug, Clone, Default)]
pub struct GroupAccum {
    adv: Vec<f64>,
    outcomes: Vec<Outcome>,
    vecs: Vec<Vec<f32>>,
}

/// The gradient statistics of a group (see the module documentation and docs/diagnostics.md).
/// Null where undefined.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct GradStats {
    pub cancellation: Option<f64>,
    pub cancellation_partial: Option<f64>,
    pub alignment: Option<f64>,
    pub partial_share: Option<f64>,
    /// What `cancellation` would be if the samples' gradients were mutually orthogonal with the
    /// same norms: √(Σ A_i² ‖g_i‖²) / Σ |A_i| ‖g_i‖. Below it, the pulls cancel more than
    /// unrelated directions would; above it, they agree.
    pub cancellation_null: Option<f64>,
    /// What `alignment` would be for orthogonal gradients with the same norms and advantages:
    /// Σ_full A_i ‖g_i‖² / (√(Σ A_i² ‖g_i‖²) √(Σ_full ‖g_i‖²)) (the self-inclusion floor).
    pub alignment_null: Option<f64>,
    /// Alignment without self-inclusion: the group split into its even- and odd-indexed
    /// samples, the cosine between one half's update Σ A_i g_i and the other half's full-pass
    /// direction, averaged over the (up to two) defined pairings.
    pub alignment_split: Option<f64>,
    /// Mean cosine between the gradients of two samples of the given outcomes (distinct
    /// samples; null without such a pair).
    pub cos_full_full: Option<f64>,
    pub cos_full_partial: Option<f64>,
    pub cos_partial_partial: Option<f64>,
    pub cos_partial_zero: Option<f64>,
}

impl GroupAccum {
    pub fn new(_dim: usize) -> Self {
        GroupAccum::default()
    }

    /// Add sample i: its advantage, outcome and (projected) gradient.
    pub fn add(&mut self, advantage: f64, outcome: Outcome, v: &[f64]) {
        self.adv.push(advantage);
        self.outcomes.push(outcome);
        self.vecs.push(v.iter().map(|&x| x as f32).collect());
    }

    fn gram(&self) -> Vec<Vec<f64>> {
        let n = self.vecs.len();
        let dot32 = |x: &[f32], y: &[f32]| -> f64 {
            x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let mut g = vec![vec![0.0; n]; n];
        for (i, vi) in self.vecs.iter().enumerate() {
            for (j, vj) in self.vecs.iter().enumerate().skip(i) {
                let d = dot32(vi, vj);
                g[i][j] = d;
                g[j][i] = d;
            }
        }
        g
    }

    pub fn stats(&self) -> GradStats {
        let g = self.gram();
        let n = self.adv.len();
        let a = &self.adv;
        let is = |o: Outcome| -> Vec<usize> { (0..n).filter(|&i| self.outcomes[i] == o).collect() };
        let (full, partial, zero) = (is(Outcome::Full), is(Outcome::Partial), is(Outcome::Zero));
        let all: Vec<usize> = (0..n).collect();
        // ⟨Σ_{i∈x} c_i g_i, Σ_{j∈y} e_j g_j⟩ from the Gram matrix.
        let inner =
            |x: &[usize], c: &dyn Fn(usize) -> f64, y: &[usize], e: &dyn Fn(usize) -> f64| {
                let mut s = 0.0;
                for &i in x {
                    for &j in y {
                        s += c(i) * e(j) * g[i][j];
                    }
                }
                s
            };
        let adv = |i: usize| a[i];
        let one = |_: usize| 1.0;
        let gn = |i: usize| g[i][i].max(0.0).sqrt();
        let cancel = |x: &[usize]| -> Option<f64> {
            let num = inner(x, &adv, x, &adv).max(0.0).sqrt();
            let den: f64 = x.iter().map(|&i| a[i].abs() * gn(i)).sum();
            ratio(num, den).map(|c| c.min(1.0))
        };
        let uu = inner(&all, &adv, &all, &adv).max(0.0);
        let (alignment, partial_share, alignment_null) = if full.is_empty() {
            (None, None, None)
        } else {
            let ud = inner(&all, &adv, &full, &one);
            let dd = inner(&full, &one, &full, &one).max(0.0);
            let null_uu: f64 = all.iter().map(|&i| a[i] * a[i] * g[i][i]).sum();
            let null_ud: f64 = full.iter().map(|&i| a[i] * g[i][i]).sum();
            let null_dd: f64 = full.iter().map(|&i| g[i][i]).sum();
            (
                ratio(ud, uu.sqrt() * dd.sqrt()).map(|c| c.clamp(-1.0, 1.0)),
                ratio(inner(&partial, &adv, &full, &one), ud),
                ratio(null_ud, null_uu.sqrt() * null_dd.sqrt()).map(|c| c.clamp(-1.0, 1.0)),
            )
        };
        let cancellation_null = {
            let num: f64 = all
                .iter()
                .map(|&i| a[i] * a[i] * g[i][i])
                .sum::<f64>()
                .sqrt();
            let den: f64 = all.iter().map(|&i| a[i].abs() * gn(i)).sum();
            ratio(num, den).map(|c| c.min(1.0))
        };
        let halves: [Vec<usize>; 2] = [
            all.iter().copied().filter(|i| i % 2 == 0).collect(),
            all.iter().copied().filter(|i| i % 2 == 1).collect(),
        ];
        let split: Vec<f64> = [(0, 1), (1, 0)]
            .iter()
            .filter_map(|&(u, d)| {
                let fd: Vec<usize> = halves[d]
                    .iter()
                    .copied()
                    .filter(|&i| self.outcomes[i] == Outcome::Full)
                    .collect();
                if fd.is_empty() {
                    return None;
                }
                let ud = inner(&halves[u], &adv, &fd, &one);
                let uu = inner(&halves[u], &adv, &halves[u], &adv).max(0.0);
                let dd = inner(&fd, &one, &fd, &one).max(0.0);
                ratio(ud, uu.sqrt() * dd.sqrt()).map(|c| c.clamp(-1.0, 1.0))
            })
            .collect();
        // Over distinct pairs; within one class (`same`) each unordered pair once.
        let mean_cos = |x: &[usize], y: &[usize], same: bool| -> Option<f64> {
            let mut cs = Vec::new();
            for &i in x {
                for &j in y {
                    if i != j
                        && (!same || i < j)
                        && let Some(c) = ratio(g[i][j], gn(i) * gn(j))
                    {
                        cs.push(c.clamp(-1.0, 1.0));
                    }
                }
            }
            mean(&cs)
        };
        GradStats {
            cancellation: cancel(&all),
            cancellation_partial: cancel(&partial),
            alignment,
            partial_share,
            cancellation_null,
            alignment_null,
            alignment_split: mean(&split),
            cos_full_full: mean_cos(&full, &full, true),
            cos_full_partial: mean_cos(&full, &partial, false),
            cos_partial_partial: mean_cos(&partial, &partial, true),
            cos_partial_zero: mean_cos(&partial, &zero, false),
        }
    }
}

/// The same sums pooled over every group of the batch (the update's own direction).
#[derive(Debug, Clone)]
pub struct BatchAccum {
    all: Pull,
    partial: Pull,
}

impl BatchAccum {
    pub fn new(dim: usize) -> Self {
        BatchAccum {
            all: Pull::new(dim),
            partial: Pull::new(dim),
        }
    }

    pub fn add(&mut self, advantage: f64, outcome: Outcome, v: &[f64]) {
        let n = norm(v);
        self.all.add(advantage, v, n);
        if outcome == Outcome::Partial {
            self.partial.add(advantage, v, n);
        }
    }

    /// (cancellation, cancellation over partial-pass samples) of the whole batch.
    pub fn cancellation(&self) -> (Option<f64>, Option<f64>) {
        (self.all.cancellation(), self.partial.cancellation())
    }
}

/// One group of the `diagnostics.groups` array (docs/formats.md).
#[derive(Debug, Clone, Serialize)]
pub struct GroupDiag {
    pub problem_id: String,
    pub samples: usize,
    pub full_pass: usize,
    pub partial_pass: usize,
    pub zero_pass: usize,
    pub nonzero_advantage: bool,
    #[serde(flatten)]
    pub grad: GradStats,
    pub delta_logprob_full: Option<f64>,
    pub delta_logprob_partial: Option<f64>,
    pub delta_logprob_zero: Option<f64>,
}

/// The `diagnostics` object: how it was computed, and the groups.
#[derive(Debug, Clone, Serialize)]
pub struct DiagDetail {
    /// "exact" or "sketch".
    pub method: &'static str,
    /// Sketch dimension (null when exact).
    pub dim: Option<usize>,
    /// Sketch seed (null when exact).
    pub seed: Option<u64>,
    pub full_pass: usize,
    pub partial_pass: usize,
    pub zero_pass: usize,
    /// Samples whose gradient was computed (those of groups with a non-zero advantage, empty
    /// completions excepted).
    pub gradients: usize,
    /// Wall time the diagnostics added to the invocation.
    pub seconds: f64,
    pub groups: Vec<GroupDiag>,
}

/// The fields `--diagnostics` adds to the metrics line: batch aggregates at the top level,
/// per-group values in `diagnostics.groups`.
#[derive(Debug, Clone, Serialize)]
pub struct DiagSummary {
    pub reward_density: Option<f64>,
    pub cancellation: Option<f64>,
    pub cancellation_partial: Option<f64>,
    pub batch_cancellation: Option<f64>,
    pub batch_cancellation_partial: Option<f64>,
    pub alignment: Option<f64>,
    pub partial_share: Option<f64>,
    pub cancellation_null: Option<f64>,
    pub alignment_null: Option<f64>,
    pub alignment_split: Option<f64>,
    pub cos_full_full: Option<f64>,
    pub cos_full_partial: Option<f64>,
    pub cos_partial_partial: Option<f64>,
    pub cos_partial_zero: Option<f64>,
    pub delta_logprob_full: Option<f64>,
    pub delta_logprob_partial: Option<f64>,
    pub delta_logprob_zero: Option<f64>,
    pub diagnostics: DiagDetail,
}

/// One group as the diagnostics see it: its samples (advantages set) and their outcomes.
pub struct DiagGroup {
    pub problem_id: String,
    pub examples: Vec<Example>,
    pub outcomes: Vec<Outcome>,
    pub nonzero_advantage: bool,
}

fn mean(xs: &[f64]) -> Option<f64> {
    rlcode_core::metrics::mean(xs)
}

/// The completion token log-probs of `examples` (right-padded into one batch; at each record's
/// temperature) as one `[n]` tensor, examples one after the other.
pub fn completion_logprobs(
    model: &Llama,
    examples: &[&Example],
    chunk: LogitsChunk,
) -> candle_core::Result<Tensor> {
    let dev = Device::Cpu;
    let cfg = &model.cfg;
    let pad = cfg.pad_token_id.unwrap_or(0);
    let b = examples.len();
    let l = examples
        .iter()
        .map(|e| e.tokens.len() - 1)
        .max()
        .unwrap_or(1);
    let mut inputs = vec![pad; b * l];
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut temps = Vec::new();
    for (r, e) in examples.iter().enumerate() {
        let t = &e.tokens;
        inputs[r * l..r * l + t.len() - 1].copy_from_slice(&t[..t.len() - 1]);
        for (j, &tok) in t.iter().enumerate().skip(e.start) {
            rows.push((r * l + j - 1) as u32);
            targets.push(tok);
            temps.push(e.temperature as f32);
        }
    }
    let n = rows.len();
    let inputs = Tensor::from_vec(inputs, (b, l), &dev)?;
    let rows = Tensor::from_vec(rows, n, &dev)?;
    let h = model
        .hidden_train(&inputs)?
        .reshape((b * l, cfg.hidden_size))?
        .index_select(&rows, 0)?;
    let temps = if temps.iter().any(|&t| t != 1.0) {
        Some(Tensor::from_vec(temps, (n, 1), &dev)?)
    } else {
        None
    };
    model.head_logprobs(&h, &targets, temps.as_ref(), chunk)
}

/// log π(y_i) (sum over completion tokens) of every example, in micro-batches of similar
/// lengths; the same batches for the same examples, so that two calls differ only by the
/// weights.
pub fn sequence_logprobs(
    model: &Llama,
    examples: &[&Example],
    micro_batch: usize,
    logits_chunk: LogitsChunk,
) -> anyhow::Result<Vec<f64>> {
    // An empty completion has log-probability 0 (nothing to compute).
    let mut order: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].tokens.len() > examples[i].start)
        .collect();
    order.sort_by_key(|&i| examples[i].tokens.len());
    let mut out = vec![0.0; examples.len()];
    for chunk in order.chunks(micro_batch.max(1)) {
        let batch: Vec<&Example> = chunk.iter().map(|&i| examples[i]).collect();
        let lp: Vec<f32> = completion_logprobs(model, &batch, logits_chunk)?.to_vec1()?;
        let mut p = 0;
        for &i in chunk {
            let n = examples[i].tokens.len() - examples[i].start;
            out[i] = lp[p..p + n].iter().map(|&x| x as f64).sum();
            p += n;
        }
    }
    Ok(out)
}

/// Everything computed before the optimizer step: per-group gradient statistics, the batch
/// sums, and log π of every sample under the current weights.
pub struct Before {
    grad: Vec<Option<GradStats>>,
    batch: BatchAccum,
    logprobs: Vec<Vec<f64>>,
    gradients: usize,
    seconds: f64,
}

/// Per-sample gradients (one backward per sample of a group with a non-zero advantage) and
/// log-probabilities, at the current weights. Touches neither the weights nor any gradient of
/// the update.
pub fn before_step(
    model: &Llama,
    params: &[(String, Var)],
    groups: &[DiagGroup],
    proj: Projection,
    micro_batch: usize,
    chunk: LogitsChunk,
) -> anyhow::Result<Before> {
    let t0 = std::time::Instant::now();
    let total: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    let dim = proj.dim(total);
    let mut batch = BatchAccum::new(dim);
    let mut grad = Vec::with_capacity(groups.len());
    let mut gradients = 0;
    for g in groups {
        if !g.nonzero_advantage {
            grad.push(None);
            continue;
        }
        let mut acc = GroupAccum::new(dim);
        for (e, &o) in g.examples.iter().zip(&g.outcomes) {
            if e.tokens.len() == e.start {
                // An empty completion: log π = 0 whatever the weights, g_i = 0.
                continue;
            }
            let lp = completion_logprobs(model, &[e], chunk)?.sum_all()?;
            let grads = lp.backward()?;
            let v = proj.project_grads(params, &grads)?;
            drop(grads);
            acc.add(e.advantage, o, &v);
            batch.add(e.advantage, o, &v);
            gradients += 1;
        }
        grad.push(Some(acc.stats()));
    }
    let mut logprobs = Vec::with_capacity(groups.len());
    for g in groups {
        let refs: Vec<&Example> = g.examples.iter().collect();
        logprobs.push(sequence_logprobs(model, &refs, micro_batch, chunk)?);
    }
    Ok(Before {
        grad,
        batch,
        logprobs,
        gradients,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// After the optimizer step (`updated`: whether one was taken): recompute log π of every
/// sample with the new weights and assemble the metrics fields.
pub fn after_step(
    model: &Llama,
    groups: &[DiagGroup],
    before: Before,
    proj: Projection,
    micro_batch: usize,
    chunk: LogitsChunk,
    updated: bool,
) -> anyhow::Result<DiagSummary> {
    let t0 = std::time::Instant::now();
    let mut out_groups = Vec::with_capacity(groups.len());
    let (mut all_full, mut all_partial, mut all_zero) = (Vec::new(), Vec::new(), Vec::new());
    for (gi, g) in groups.iter().enumerate() {
        let after = if updated {
            let refs: Vec<&Example> = g.examples.iter().collect();
            sequence_logprobs(model, &refs, micro_batch, chunk)?
        } else {
            // Unchanged weights: the change is 0 by definition.
            before.logprobs[gi].clone()
        };
        let (mut full, mut partial, mut zero) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &o) in g.outcomes.iter().enumerate() {
            let delta = after[i] - before.logprobs[gi][i];
            match o {
                Outcome::Full => full.push(delta),
                Outcome::Partial => partial.push(delta),
                Outcome::Zero => zero.push(delta),
                Outcome::Other => {}
            }
        }
        out_groups.push(GroupDiag {
            problem_id: g.problem_id.clone(),
            samples: g.examples.len(),
            full_pass: full.len(),
            partial_pass: partial.len(),
            zero_pass: zero.len(),
            nonzero_advantage: g.nonzero_advantage,
            grad: before.grad[gi].unwrap_or_default(),
            delta_logprob_full: mean(&full),
            delta_logprob_partial: mean(&partial),
            delta_logprob_zero: mean(&zero),
        });
        all_full.extend(full);
        all_partial.extend(partial);
        all_zero.extend(zero);
    }
    let signal = groups.iter().filter(|g| g.nonzero_advantage).count();
    let over_groups = |f: fn(&GradStats) -> Option<f64>| -> Option<f64> {
        let xs: Vec<f64> = before.grad.iter().flatten().filter_map(f).collect();
        mean(&xs)
    };
    let (batch_cancellation, batch_cancellation_partial) = before.batch.cancellation();
    let (method, dim, seed) = match proj {
        Projection::Exact => ("exact", None, None),
        Projection::Sketch { dim, seed } => ("sketch", Some(dim), Some(seed)),
    };
    Ok(DiagSummary {
        reward_density: ratio(signal as f64, groups.len() as f64),
        cancellation: over_groups(|s| s.cancellation),
        cancellation_partial: over_groups(|s| s.cancellation_partial),
        batch_cancellation,
        batch_cancellation_partial,
        alignment: over_groups(|s| s.alignment),
        partial_share: over_groups(|s| s.partial_share),
        cancellation_null: over_groups(|s| s.cancellation_null),
        alignment_null: over_groups(|s| s.alignment_null),
        alignment_split: over_groups(|s| s.alignment_split),
        cos_full_full: over_groups(|s| s.cos_full_full),
        cos_full_partial: over_groups(|s| s.cos_full_partial),
        cos_partial_partial: over_groups(|s| s.cos_partial_partial),
        cos_partial_zero: over_groups(|s| s.cos_partial_zero),
        delta_logprob_full: mean(&all_full),
        delta_logprob_partial: mean(&all_partial),
        delta_logprob_zero: mean(&all_zero),
        diagnostics: DiagDetail {
            method,
            dim,
            seed,
            full_pass: all_full.len(),
            partial_pass: all_partial.len(),
            zero_pass: all_zero.len(),
            gradients: before.gradients,
            seconds: before.seconds + t0.elapsed().as_secs_f64(),
            groups: out_groups,
        },
    })
}

#[cfg(test)]
mod tests;

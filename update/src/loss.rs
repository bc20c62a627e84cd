//! The clipped policy-gradient and SFT losses: per-token weights and one pass of
//! forward/backward over a set of examples (docs/policy.md).

use super::*;
use rlcode_policy::Packed;

/// What one pass over a set of examples adds up to.
#[derive(Debug, Default, Clone)]
pub struct PassStats {
    pub loss: f64,
    pub kl_sum: f64,
    pub clipped: usize,
    pub tokens: usize,
}

/// Loss settings of a pass.
pub struct LossSpec<'a> {
    pub rl: bool,
    pub clip_low: f64,
    pub clip_high: f64,
    pub kl_coef: f64,
    pub reference: Option<&'a Llama>,
    /// Weight of each example's tokens in the loss (see [`token_weights`]).
    pub weights: Vec<f64>,
    pub micro_batch: usize,
    /// Split a batch of two or more sequences in at least two micro-batches (see
    /// [`chunk_size`]): worth it when the trained parameters are few (an adapter), not when
    /// each micro-batch's gradients are a copy of the whole model.
    pub split_small_batches: bool,
    pub logits_chunk: LogitsChunk,
}

/// Per-example token weight so that the loss is Σ_tokens weight × token loss:
/// token-mean 1/N_tokens; seq-mean-token-mean 1/(N_seqs × len_i);
/// seq-mean-token-sum-norm 1/(N_seqs × L).
pub fn token_weights(examples: &[Example], agg: LossAgg, norm_length: Option<usize>) -> Vec<f64> {
    let n = examples.len().max(1) as f64;
    let total: usize = examples.iter().map(Example::completion_len).sum();
    let longest = examples
        .iter()
        .map(Example::completion_len)
        .max()
        .unwrap_or(1);
    examples
        .iter()
        .map(|e| match agg {
            LossAgg::TokenMean => 1.0 / total.max(1) as f64,
            LossAgg::SeqMeanTokenMean => 1.0 / (n * e.completion_len().max(1) as f64),
            LossAgg::SeqMeanTokenSumNorm => {
                1.0 / (n * norm_length.unwrap_or(longest).max(1) as f64)
            }
        })
        .collect()
}

/// What one micro-batch contributes: its gradients and its per-token terms, kept apart so
/// that the merge adds them in the order a sequential pass would (bit-identical results
/// whatever the thread count).
struct ChunkPass {
    grads: Vec<(String, Tensor)>,
    /// Per trained token: weight × token loss.
    loss_terms: Vec<f64>,
    /// Per trained token with a reference model: k3.
    kl_terms: Vec<f64>,
    clipped: usize,
}

/// Forward and backward over `examples` in micro-batches; gradients summed by parameter name.
///
/// RL token loss: −min(ρ·A, clip(ρ, 1−clip_low, 1+clip_high)·A) + kl_coef·k3, with
/// ρ = exp(logπ − logπ_old) and k3 = exp(logπ_ref − logπ) − (logπ_ref − logπ) − 1.
/// SFT token loss: −logπ.
///
/// Micro-batches run in waves of as many as the rayon pool has threads, each on its own
/// thread; their gradients and statistics are merged in micro-batch order, so the sums (and
/// every bit of the step) are those of one micro-batch after another, whatever the thread
/// count. Activation memory grows with the wave: threads × one micro-batch.
pub fn accumulate(
    tr: &Trainable,
    examples: &[Example],
    spec: &LossSpec<'_>,
    grads: &mut HashMap<String, Tensor>,
) -> anyhow::Result<PassStats> {
    use rayon::prelude::*;
    let mut stats = PassStats::default();
    // The samples of one prompt together, so that a micro-batch computes their prompt once
    // (a packed batch has no padding, so lengths need no sorting). Stable: the order stays
    // deterministic.
    let mut first_of: HashMap<&[u32], usize> = HashMap::new();
    for (i, e) in examples.iter().enumerate() {
        first_of.entry(e.prompt()).or_insert(i);
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| first_of[examples[i].prompt()]);
    let size = if spec.split_small_batches {
        chunk_size(order.len(), spec.micro_batch)
    } else {
        spec.micro_batch.max(1)
    };
    let chunks: Vec<&[usize]> = order.chunks(size).collect();
    let wave = rayon::current_num_threads().max(1);
    for group in chunks.chunks(wave) {
        let passes: Vec<Option<ChunkPass>> = group
            .par_iter()
            .map(|chunk| chunk_pass(tr, examples, chunk, spec))
            .collect::<anyhow::Result<_>>()?;
        for pass in passes.into_iter().flatten() {
            stats.tokens += pass.loss_terms.len();
            for t in pass.loss_terms {
                stats.loss += t;
            }
            for k in pass.kl_terms {
                stats.kl_sum += k;
            }
            stats.clipped += pass.clipped;
            for (name, t) in pass.grads {
                let sum = match grads.remove(&name) {
                    Some(prev) => (prev + t)?,
                    None => t,
                };
                grads.insert(name, sum);
            }
        }
    }
    Ok(stats)
}

/// Sequences per micro-batch: at most `micro_batch`, and at most half of a batch of two or more,
/// so that a small batch still makes two micro-batches that run at once (a single one keeps
/// about one core busy: a LoRA step on 8 sequences of 128 tokens took 6.6 s against 4.5 s on 2
/// cores; a full step got slower, each micro-batch's gradients being a whole model). A function
/// of the batch alone, never of the thread count, so that the step's bits do not depend on it.
fn chunk_size(sequences: usize, micro_batch: usize) -> usize {
    micro_batch.min(sequences.div_ceil(2)).max(1)
}

/// One micro-batch's forward and backward (None when it has no trained token).
fn chunk_pass(
    tr: &Trainable,
    examples: &[Example],
    chunk: &[usize],
    spec: &LossSpec<'_>,
) -> anyhow::Result<Option<ChunkPass>> {
    let dev = Device::Cpu;
    // One packed batch: each distinct prompt once, each completion attending to its prompt.
    // Logits at the prompt's last position (it predicts the first completion token) and at
    // every completion position but the last.
    let mut batch = Packed::default();
    let mut prompts: HashMap<&[u32], (usize, usize)> = HashMap::new();
    let mut rows = Vec::new();
    let mut row_targets = Vec::new();
    let mut row_temps = Vec::new();
    for &i in chunk {
        let e = &examples[i];
        if e.start == 0 {
            anyhow::bail!("a training sequence needs at least one token before the trained ones");
        }
        if e.completion_len() == 0 {
            continue;
        }
        let prompt = e.prompt();
        let seg = *prompts
            .entry(prompt)
            .or_insert_with(|| batch.push(prompt, 0, None));
        rows.push((seg.0 + seg.1 - 1) as u32);
        let (cs, cl) = batch.push(&e.tokens[e.start..e.tokens.len() - 1], e.start, Some(seg));
        rows.extend((cs..cs + cl).map(|r| r as u32));
        row_targets.extend_from_slice(&e.tokens[e.start..]);
        row_temps.extend(std::iter::repeat_n(
            e.temperature as f32,
            e.completion_len(),
        ));
    }
    let n = rows.len();
    if n == 0 {
        return Ok(None);
    }
    let rows = Tensor::from_vec(rows, n, &dev)?;
    let row_temps = if row_temps.iter().all(|&t| t == 1.0) {
        None
    } else {
        Some(Tensor::from_vec(row_temps, (n, 1), &dev)?)
    };
    let logprobs_of = |m: &Llama| -> candle_core::Result<Tensor> {
        let h = m.hidden_packed(&batch)?.index_select(&rows, 0)?;
        m.head_logprobs(&h, &row_targets, row_temps.as_ref(), spec.logits_chunk)
    };
    let logp = logprobs_of(&tr.model)?;
    let lp: Vec<f32> = logp.to_vec1()?;
    let mut coef = vec![0f32; n];
    let mut old = lp.clone();
    let mut kl_coef = vec![0f32; n];
    let mut reference = lp.clone();
    if let (true, Some(rm)) = (spec.rl, spec.reference) {
        reference = logprobs_of(rm)?.to_vec1()?;
    }
    let mut loss_terms = Vec::with_capacity(n);
    let mut kl_terms = Vec::new();
    let mut clipped_count = 0usize;
    let mut p = 0usize;
    for &i in chunk {
        let e = &examples[i];
        let w = spec.weights[i];
        for j in 0..e.completion_len() {
            if !spec.rl {
                coef[p] = -(w as f32);
                loss_terms.push(-(w * lp[p] as f64));
                p += 1;
                continue;
            }
            if let Some(o) = &e.old_logprobs {
                old[p] = o[j];
            }
            let a = e.advantage;
            let log_ratio = (lp[p] as f64 - old[p] as f64).clamp(-20.0, 20.0);
            let ratio = log_ratio.exp();
            let clipped = ratio.clamp(1.0 - spec.clip_low, 1.0 + spec.clip_high);
            let obj = (ratio * a).min(clipped * a);
            // The gradient of min(ρA, clip(ρ)A) is that of ρA unless the clipped term is
            // the smaller one and ρ is outside the range: then it is 0.
            let active = if a >= 0.0 {
                ratio <= 1.0 + spec.clip_high
            } else {
                ratio >= 1.0 - spec.clip_low
            };
            if active {
                coef[p] = (-a * w) as f32;
            } else {
                clipped_count += 1;
            }
            let mut tok_loss = -obj;
            if spec.reference.is_some() {
                let d = (reference[p] as f64 - lp[p] as f64).clamp(-20.0, 20.0);
                let k3 = d.exp() - d - 1.0;
                kl_terms.push(k3);
                tok_loss += spec.kl_coef * k3;
                kl_coef[p] = (spec.kl_coef * w) as f32;
            }
            loss_terms.push(w * tok_loss);
            p += 1;
        }
    }
    let coef = Tensor::from_vec(coef, n, &dev)?;
    let loss = if spec.rl {
        let old = Tensor::from_vec(old, n, &dev)?;
        let ratio = (&logp - &old)?.clamp(-20f32, 20f32)?.exp()?;
        let mut loss = (ratio * &coef)?.sum_all()?;
        if spec.reference.is_some() && spec.kl_coef != 0.0 {
            let d = (Tensor::from_vec(reference, n, &dev)? - &logp)?.clamp(-20f32, 20f32)?;
            let k3 = ((d.exp()? - &d)? - 1.0)?;
            let kc = Tensor::from_vec(kl_coef, n, &dev)?;
            loss = (loss + (k3 * kc)?.sum_all()?)?;
        }
        loss
    } else {
        (&logp * &coef)?.sum_all()?
    };
    let g = loss.backward()?;
    let grads = tr
        .params
        .iter()
        .filter_map(|(name, var)| g.get(var.as_tensor()).map(|t| (name.clone(), t.detach())))
        .collect();
    Ok(Some(ChunkPass {
        grads,
        loss_terms,
        kl_terms,
        clipped: clipped_count,
    }))
}

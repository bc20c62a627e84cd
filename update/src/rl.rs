//! One GRPO / RLOO step: group by problem, advantages, optimizer steps over the groups that
//! carry a signal (PPO epochs and mini-batches), diagnostics.

use super::*;

/// Group by problem id (in order of first appearance), compute advantages, and take one
/// optimizer step over the groups that carry a signal.
pub(crate) fn rl_step(
    a: &TrainArgs,
    tr: &Trainable,
    opt: &mut AdamW,
    scored: Vec<Scored>,
    reference: Option<&Llama>,
    m: &mut Metrics,
) -> anyhow::Result<()> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<Scored>> = Vec::new();
    for s in scored {
        let g = *index.entry(s.problem_id.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(s);
    }
    let mut examples = Vec::new();
    let mut zero_groups = 0;
    let mut abs_adv = Vec::new();
    let mut diag_groups = Vec::new();
    for g in groups.iter_mut() {
        let rewards: Vec<f64> = g.iter().map(|s| s.reward).collect();
        // A floor, when the reward design set one, is the group's highest (records of one
        // group come from one rl-score run, so they agree).
        let floor = g.iter().filter_map(|s| s.baseline_floor).reduce(f64::max);
        let floor = floor.unwrap_or(f64::NEG_INFINITY);
        let adv = match a.algo {
            Algo::Rloo => rlcode_core::advantage::rloo_floored(&rewards, floor),
            _ => rlcode_core::advantage::grpo_floored(&rewards, !a.no_std_norm, a.adv_eps, floor),
        };
        abs_adv.extend(adv.iter().map(|x| x.abs()));
        if a.diagnostics {
            diag_groups.push(DiagGroup {
                problem_id: g[0].problem_id.clone(),
                examples: g
                    .iter()
                    .zip(&adv)
                    .map(|(s, &adv)| Example {
                        advantage: adv,
                        ..s.example.clone()
                    })
                    .collect(),
                outcomes: g.iter().map(|s| s.outcome).collect(),
                nonzero_advantage: adv.iter().any(|&x| x != 0.0),
            });
        }
        if adv.iter().all(|&x| x == 0.0) {
            zero_groups += 1;
            continue;
        }
        for (s, adv) in g.drain(..).zip(adv) {
            let mut e = s.example;
            e.advantage = adv;
            examples.push(e);
        }
    }
    m.groups = Some(groups.len());
    m.zero_advantage_groups = Some(zero_groups);
    m.samples = abs_adv.len();
    m.mean_abs_advantage = rlcode_core::metrics::mean(&abs_adv).or(Some(0.0));
    let proj = match a.diagnostics_dim {
        Some(dim) => Projection::Sketch {
            dim,
            seed: a.diagnostics_seed,
        },
        None => Projection::Exact,
    };
    // At the current weights, before the step; touches neither the weights nor `grads`.
    let before = if a.diagnostics {
        Some(diagnostics::before_step(
            &tr.model,
            &tr.params,
            &diag_groups,
            proj,
            a.micro_batch,
            logits_chunk(a),
        )?)
    } else {
        None
    };
    // After the step (or none): the diagnostics' second half, at the new weights.
    let after = |m: &mut Metrics, updated: bool| -> anyhow::Result<()> {
        if let Some(b) = before {
            m.diagnostics = Some(diagnostics::after_step(
                &tr.model,
                &diag_groups,
                b,
                proj,
                a.micro_batch,
                logits_chunk(a),
                updated,
            )?);
        }
        Ok(())
    };
    if examples.is_empty() {
        m.kl = reference.map(|_| 0.0);
        m.clip_frac = Some(0.0);
        return after(m, false);
    }
    let passes = (a.ppo_epochs * a.mini_batches) as usize;
    if passes > 1 {
        // Several optimizer steps on one batch: the ratio must be taken against a fixed old
        // policy. Records without the sampler's log-probs get the model's, before any step.
        let chunk = logits_chunk(a);
        for e in examples.iter_mut().filter(|e| e.old_logprobs.is_none()) {
            let lp: Vec<f32> = if e.completion_len() == 0 {
                Vec::new()
            } else {
                diagnostics::completion_logprobs(&tr.model, &[&*e], chunk)?.to_vec1()?
            };
            e.old_logprobs = Some(lp);
        }
    }
    let slices = (a.mini_batches as usize).min(examples.len()).max(1);
    let (mut loss, mut tokens, mut clipped, mut kl_sum) = (0.0, 0usize, 0usize, 0.0);
    for epoch in 0..a.ppo_epochs {
        for slice in 0..slices {
            let part: Vec<Example> = examples
                .iter()
                .enumerate()
                .filter(|(i, _)| i % slices == slice)
                .map(|(_, e)| e.clone())
                .collect();
            let spec = LossSpec {
                rl: true,
                clip_low: a.clip_low,
                clip_high: a.clip_high,
                kl_coef: a.kl_coef,
                reference,
                weights: token_weights(&part, a.loss_agg, a.norm_length),
                micro_batch: a.micro_batch,
                split_small_batches: a.lora_rank.is_some() || a.adapter.is_some(),
                logits_chunk: logits_chunk(a),
            };
            let mut grads = HashMap::new();
            let st = accumulate(tr, &part, &spec, &mut grads)?;
            let norm = optim::clip_grad_norm(&mut grads, a.max_grad_norm)?;
            if epoch == 0 && slice == 0 {
                m.grad_norm = norm;
            }
            opt.step(&tr.params, &grads)?;
            loss += st.loss / slices as f64;
            if epoch == 0 {
                tokens += st.tokens;
            }
            clipped += st.clipped;
            kl_sum += st.kl_sum;
        }
    }
    m.updated = true;
    m.optimizer_steps = passes.min(a.ppo_epochs as usize * slices);
    // Loss: the mean over epochs of each epoch's loss (slices averaged); clip_frac and kl over
    // every token of every pass.
    m.loss = loss / a.ppo_epochs as f64;
    m.tokens = tokens;
    let denom = (tokens * a.ppo_epochs as usize).max(1) as f64;
    m.clip_frac = Some(clipped as f64 / denom);
    m.kl = reference.map(|_| kl_sum / denom);
    after(m, true)
}

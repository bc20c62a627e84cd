//! Supervised fine-tuning: shuffled batches of programs, the learning-rate schedule.

use super::*;

/// Learning-rate schedules of an SFT run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LrSchedule {
    Constant,
    Cosine,
}

/// The learning rate of step `done` (0-based) of `total` under `schedule`.
pub fn scheduled_lr(
    lr: f64,
    schedule: LrSchedule,
    warmup: usize,
    done: usize,
    total: usize,
) -> f64 {
    match schedule {
        LrSchedule::Constant => lr,
        LrSchedule::Cosine if done < warmup => lr * (done + 1) as f64 / warmup as f64,
        LrSchedule::Cosine => {
            let span = total.saturating_sub(warmup).saturating_sub(1).max(1) as f64;
            let t = ((done - warmup) as f64 / span).min(1.0);
            let floor = 0.1 * lr;
            floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

pub(crate) fn run_sft(
    a: &TrainArgs,
    tr: &Trainable,
    opt: &mut AdamW,
    examples: Vec<Example>,
    m: &mut Metrics,
    out: &mut impl Write,
) -> Result<()> {
    if examples.is_empty() {
        return Err(usage("no records to train on"));
    }
    let per_epoch = examples.len().div_ceil(a.batch_size);
    let total = a.steps.unwrap_or(a.epochs * per_epoch);
    let base_lr = opt.lr;
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    let (mut epoch, mut done) = (0u64, 0usize);
    let (mut loss_sum, mut tokens) = (0.0, 0usize);
    let start = std::time::Instant::now();
    m.samples = examples.len();
    let progress = progress_bar(total);
    while done < total {
        if cursor >= order.len() {
            order = (0..examples.len()).collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                a.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            order.shuffle(&mut rng);
            cursor = 0;
            epoch += 1;
        }
        let end = (cursor + a.batch_size).min(order.len());
        let batch: Vec<Example> = order[cursor..end]
            .iter()
            .map(|&i| examples[i].clone())
            .collect();
        cursor = end;
        let spec = LossSpec {
            rl: false,
            clip_low: 0.0,
            clip_high: 0.0,
            kl_coef: 0.0,
            reference: None,
            weights: token_weights(&batch, LossAgg::TokenMean, None),
            micro_batch: a.micro_batch,
            split_small_batches: a.lora_rank.is_some() || a.adapter.is_some(),
            logits_chunk: logits_chunk(a),
        };
        let mut grads = HashMap::new();
        let st = accumulate(tr, &batch, &spec, &mut grads).map_err(Error::Other)?;
        m.grad_norm = optim::clip_grad_norm(&mut grads, a.max_grad_norm)?;
        opt.lr = scheduled_lr(base_lr, a.lr_schedule, a.warmup_steps, done, total);
        opt.step(&tr.params, &grads)?;
        m.lr = opt.lr;
        done += 1;
        m.optimizer_steps = done;
        loss_sum += st.loss;
        tokens += st.tokens;
        m.loss = st.loss;
        m.tokens = st.tokens;
        m.updated = true;
        progress.inc(1);
        progress.set_message(format!("loss {:.4}", st.loss));
        if a.log_every > 0 && done % a.log_every == 0 && done < total {
            m.step = opt.step;
            m.seconds = start.elapsed().as_secs_f64();
            write_metrics(out, m)?;
        }
    }
    progress.finish_and_clear();
    // The final line summarises the run: mean loss over its steps, all tokens seen.
    m.loss = loss_sum / done.max(1) as f64;
    m.tokens = tokens;
    Ok(())
}

/// SFT steps taken, on stderr when it is a terminal (hidden otherwise: the metrics lines and the
/// closing summary are always written).
fn progress_bar(total: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} SFT step {pos}/{len}, {msg}, {per_sec}, {elapsed} (~{eta} left)",
        )
        .expect("template"),
    );
    pb
}

//! rl-update: one policy update from scored samples (GRPO, RLOO), supervised fine-tuning on
//! programs (SFT), or a fresh model (`init`). Writes the next checkpoint and prints metrics.
//!
//! ```text
//! rl-update init --config tiny --seed 0 --out ckpt/0
//! rl-score ... | rl-update --model ckpt/7 --algo grpo --out ckpt/8 >> metrics.jsonl
//! rl-update --model ckpt/0 --algo sft --epochs 3 --out ckpt/sft corpus.jsonl
//! rl-update --model base --lora-rank 16 --out adapter/1 scored.jsonl       # LoRA
//! rl-update --model base --adapter adapter/1 --out adapter/2 scored.jsonl  # continue it
//! rl-update merge-lora --model base --adapter adapter/2 --out merged/2
//! ```
//!
//! Memory: `--micro-batch` and `--logits-chunk`; LoRA: docs/training.md.
//!
//! The losses, the advantage and std conventions, clipping, KL and loss aggregation are
//! described in docs/policy.md; the metrics line in docs/formats.md (section metrics).

pub mod diagnostics;
pub mod optim;

use anyhow::Context;
use candle_core::{Device, Tensor};
use diagnostics::{DiagGroup, DiagSummary, Outcome, Projection};
use optim::AdamW;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rlcode_core::cli::InputArgs;
use rlcode_core::jsonl::{JsonlReader, Skipper};
use rlcode_core::{Error, ExitCode, Line, RecordError, Result};
use rlcode_policy::lora::{self, LoraConfig};
use rlcode_policy::{
    Checkpoint, Llama, LlamaConfig, LogitsChunk, Preset, Tokenizer, Trainable, checkpoint,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const PROGRAM: &str = "rl-update";

/// Update a policy from scored samples (GRPO / RLOO), fine-tune it on programs (SFT), or
/// create one (`init`). Writes the checkpoint to --out and metrics JSON on stdout.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rl-update",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Create a fresh model with the byte-level tokenizer.
    Init(InitArgs),
    /// Fold a LoRA adapter into its base model: a full checkpoint (W + alpha/r B A) that
    /// rl-sample, rl-eval and transformers load like any other.
    MergeLora(MergeLoraArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct MergeLoraArgs {
    /// The base checkpoint the adapter was trained on.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The adapter directory (PEFT layout: adapter_config.json, adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Checkpoint directory to write (replaced atomically if it exists).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Model size: tiny (~1.6 M parameters) or small (~17.8 M).
    #[arg(long, value_enum, default_value_t = ConfigName::Tiny)]
    pub config: ConfigName,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint directory to create (replaced atomically if it exists).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigName {
    Tiny,
    Small,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    Grpo,
    Rloo,
    Sft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossAgg {
    /// Every completion token of the update weighs the same.
    TokenMean,
    /// Mean over tokens within a sequence, then mean over sequences.
    SeqMeanTokenMean,
    /// Sum over tokens within a sequence divided by a constant length, then mean over
    /// sequences (Dr. GRPO).
    SeqMeanTokenSumNorm,
}

/// Where the old policy's log-probs of the importance ratio come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OldLogprobs {
    /// The sampler's where they are the learner's distribution (the record's `top_p` is 1 or
    /// absent), else the learner's.
    Auto,
    /// The records' `logprobs` wherever present.
    Sampler,
    /// The model's own, computed before the first optimizer step.
    Learner,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Checkpoint to start from (its optimizer state too, when present).
    #[arg(long, value_name = "DIR", required = true)]
    pub model: Option<PathBuf>,
    /// Checkpoint directory to write (may equal --model; replaced atomically).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: Option<PathBuf>,
    /// grpo: group-normalised advantages, clipped ratio; rloo: leave-one-out baseline;
    /// sft: maximise the likelihood of each record's "code".
    #[arg(long, value_enum, default_value_t = Algo::Grpo)]
    pub algo: Algo,
    /// Learning rate (default 1e-5 for grpo/rloo, 1e-3 for sft).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Decoupled AdamW weight decay (matrices only).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Sequences per forward/backward pass; gradients accumulate over micro-batches into one
    /// optimizer step (the same step as one pass over the whole batch, up to float rounding).
    /// Activation memory grows with it: see docs/training.md for SmolLM2-135M figures.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Completion tokens whose logits are computed at once: the lm_head, log-softmax and
    /// gather run over chunks of this many positions, forward and backward, so that the
    /// [tokens, vocab] logits never exist whole (0: never chunk). Default: chunks of
    /// 2^24 / vocab positions (341 for a 49,152-token vocabulary) when a micro-batch has more.
    #[arg(long, value_name = "TOKENS")]
    pub logits_chunk: Option<usize>,
    /// Train a LoRA adapter of this rank instead of all weights: the base stays frozen, --out
    /// gets the adapter (PEFT layout) and its optimizer state. See docs/training.md.
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha: the adapter's output is scaled by alpha / rank (default: 2 x rank).
    #[arg(long, value_name = "ALPHA")]
    pub lora_alpha: Option<f64>,
    /// Modules a new LoRA adapter targets, comma-separated (default: all seven linear layers,
    /// q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(long, value_delimiter = ',', value_name = "MODULES")]
    pub lora_targets: Option<Vec<String>>,
    /// Continue training this LoRA adapter (its rank, alpha, targets and optimizer state) on
    /// top of --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// GRPO: advantages r - mean(group), not divided by the group's std (Dr. GRPO).
    #[arg(long)]
    pub no_std_norm: bool,
    /// GRPO: epsilon in (r - mean) / (std + eps); std is the sample std (n - 1).
    #[arg(long, default_value_t = 1e-4)]
    pub adv_eps: f64,
    /// Lower clip of the importance ratio: ratios below 1 - this stop the gradient of
    /// negative-advantage tokens.
    #[arg(long, default_value_t = 0.2)]
    pub clip_low: f64,
    /// Upper clip: ratios above 1 + this stop the gradient of positive-advantage tokens.
    #[arg(long, default_value_t = 0.2)]
    pub clip_high: f64,
    /// GRPO/RLOO: passes over the batch (PPO epochs). With more than one optimizer step per
    /// batch the importance ratio against the sampling policy moves away from 1 and the clip
    /// acts; old log-probs are the records' `logprobs` (the sampler's), else the model's before
    /// the first step (see --old-logprobs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub ppo_epochs: u64,
    /// Old log-probs of the ratio: `auto` takes the records' `logprobs` only where the sampler
    /// drew from the learner's distribution (softmax(logits / temperature), i.e. `top_p` 1);
    /// a nucleus-renormalised log-prob is larger than the learner's, so the ratio would start
    /// below 1 and the clip would stop negative-advantage tokens before any step. `learner`:
    /// always the model's before the first step; `sampler`: always the records'.
    #[arg(long, value_enum, default_value_t = OldLogprobs::Auto)]
    pub old_logprobs: OldLogprobs,
    /// GRPO/RLOO: optimizer steps per epoch, each on one of this many interleaved slices of the
    /// batch's samples (sample i in slice i mod M).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub mini_batches: u64,
    /// Reference policy for the KL penalty (k3 estimator); required when --kl-coef > 0.
    #[arg(long, value_name = "DIR")]
    pub ref_model: Option<PathBuf>,
    /// Weight of the KL penalty to --ref-model.
    #[arg(long, default_value_t = 0.0)]
    pub kl_coef: f64,
    /// How per-token losses combine into the loss.
    #[arg(long, value_enum, default_value_t = LossAgg::TokenMean)]
    pub loss_agg: LossAgg,
    /// The constant length of seq-mean-token-sum-norm (default: the longest completion).
    #[arg(long)]
    pub norm_length: Option<usize>,
    /// SFT: passes over the records.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// SFT: stop after this many optimizer steps (default: epochs x batches).
    #[arg(long)]
    pub steps: Option<usize>,
    /// SFT: sequences per optimizer step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// SFT: truncate sequences to this many tokens (default: max_position_embeddings).
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// SFT: also print a metrics line every N optimizer steps (0: only the final line).
    #[arg(long, default_value_t = 0)]
    pub log_every: usize,
    /// Seed of the SFT shuffling and of a new LoRA adapter's A matrices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SFT: which tokens the loss covers. `completion`: only the record's "completion" where
    /// "code" ends with it (the prompt is context, as in RL), else all of "code"; `code`: all of
    /// "code".
    #[arg(long, value_enum, default_value_t = SftLoss::Completion)]
    pub sft_loss: SftLoss,
    /// SFT: learning-rate schedule over the run's steps: `constant`, or `cosine` (linear
    /// warm-up over --warmup-steps, then cosine decay to a tenth of --lr at the last step).
    #[arg(long, value_enum, default_value_t = LrSchedule::Constant)]
    pub lr_schedule: LrSchedule,
    /// SFT: warm-up steps of the cosine schedule.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Start with fresh AdamW moments even if --model has saved ones.
    #[arg(long)]
    pub reset_optimizer: bool,
    /// GRPO/RLOO: add gradient diagnostics to the metrics line (reward density, cancellation,
    /// alignment with the full-pass direction, log-prob changes; docs/diagnostics.md). One
    /// extra backward per sample; the update itself is unchanged.
    #[arg(long)]
    pub diagnostics: bool,
    /// Project each per-sample gradient to this many dimensions (a seeded CountSketch) instead
    /// of keeping it whole: memory O(D) instead of O(parameters), inner products kept in
    /// expectation.
    #[arg(long, value_name = "D", requires = "diagnostics")]
    pub diagnostics_dim: Option<usize>,
    /// Seed of the --diagnostics-dim sketch.
    #[arg(long, default_value_t = 0, requires = "diagnostics_dim")]
    pub diagnostics_seed: u64,
    #[command(flatten)]
    pub input: InputArgs,
}

/// The metrics line (docs/formats.md, section metrics). Fields that do not apply are null.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Metrics {
    pub step: u64,
    pub algo: String,
    pub updated: bool,
    pub loss: f64,
    pub grad_norm: f64,
    pub kl: Option<f64>,
    pub clip_frac: Option<f64>,
    pub mean_abs_advantage: Option<f64>,
    pub zero_advantage_groups: Option<usize>,
    pub groups: Option<usize>,
    pub samples: usize,
    pub tokens: usize,
    pub skipped_null_rewards: Option<usize>,
    pub skipped_records: usize,
    pub lr: f64,
    /// Optimizer steps this invocation took (GRPO/RLOO: --ppo-epochs x --mini-batches, 0
    /// without an update; SFT: steps so far).
    pub optimizer_steps: usize,
    pub seconds: f64,
    /// With --diagnostics: batch aggregates (top level) and the `diagnostics` object.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<DiagSummary>,
}

/// Run rl-update (init or a training step); metrics go to `out`.
pub fn run(cli: &Cli, out: impl Write) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Init(a)) => run_init(a, out),
        Some(Command::MergeLora(a)) => run_merge_lora(a, out),
        None => run_train(&cli.train, out),
    }
}

pub fn run_init(a: &InitArgs, mut out: impl Write) -> Result<ExitCode> {
    let preset = match a.config {
        ConfigName::Tiny => Preset::Tiny,
        ConfigName::Small => Preset::Small,
    };
    let cfg = rlcode_policy::init_checkpoint(preset, a.seed, &a.out)?;
    let params = rlcode_policy::model::num_params(&cfg);
    serde_json::to_writer(
        &mut out,
        &serde_json::json!({"step": 0, "params": params, "out": a.out.display().to_string()}),
    )
    .map_err(anyhow::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    eprintln!("{PROGRAM}: wrote {} ({params} parameters)", a.out.display());
    Ok(ExitCode::Success)
}

pub fn run_merge_lora(a: &MergeLoraArgs, mut out: impl Write) -> Result<ExitCode> {
    let ck = Checkpoint::load(&a.model)?;
    let (lc, adapter) =
        lora::load(&a.adapter, &ck.cfg).with_context(|| format!("{}", a.adapter.display()))?;
    let merged = lora::merge(&ck.cfg, &ck.tensors, &lc, &adapter)?;
    checkpoint::save(
        &a.out,
        checkpoint::Contents {
            cfg: &ck.cfg,
            tensors: &merged,
            files: checkpoint::tokenizer_files(&ck.dir)?,
            extra_tensors: Vec::new(),
        },
    )
    .with_context(|| format!("writing {}", a.out.display()))?;
    let modules = adapter.len() / 2;
    serde_json::to_writer(
        &mut out,
        &serde_json::json!({"out": a.out.display().to_string(), "merged_modules": modules,
                            "r": lc.r, "lora_alpha": lc.lora_alpha}),
    )
    .map_err(anyhow::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    eprintln!(
        "{PROGRAM}: merged {} (r {}, {modules} modules) into {} -> {}",
        a.adapter.display(),
        lc.r,
        a.model.display(),
        a.out.display()
    );
    Ok(ExitCode::Success)
}

/// One training sequence: `tokens[start..]` are the tokens trained on.
#[derive(Debug, Clone)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub start: usize,
    /// Sampling log-probs of `tokens[start..]`; `None`: the current policy's (ratio 1).
    pub old_logprobs: Option<Vec<f32>>,
    pub advantage: f64,
    pub temperature: f64,
}

impl Example {
    fn completion_len(&self) -> usize {
        self.tokens.len() - self.start
    }
}

/// A scored sample as rl-update reads it.
#[derive(Debug, Clone)]
pub struct Scored {
    pub problem_id: String,
    pub reward: f64,
    pub example: Example,
    /// What the record's `verdict` says (for --diagnostics).
    pub outcome: Outcome,
    /// `baseline_floor` of the record (a reward design such as `corpo:T` sets it): the group's
    /// advantage baseline is at least this.
    pub baseline_floor: Option<f64>,
}

/// Parse one RL record. `Ok(None)`: `reward` is null (left out and counted).
pub fn parse_scored(
    line: &Line,
    vocab: usize,
    source: OldLogprobs,
) -> Result<Option<Scored>, RecordError> {
    let problem_id = line.str_field("problem_id")?.to_string();
    let reward = match line.value.get("reward") {
        None => return Err(line.error("missing field \"reward\"")),
        Some(Value::Null) => return Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|r| r.is_finite())
            .ok_or_else(|| line.error("field \"reward\" must be a number or null"))?,
    };
    let prompt: Vec<u32> = line.typed_field("prompt_tokens")?;
    let tokens: Vec<u32> = line.typed_field("tokens")?;
    let mut old: Option<Vec<f32>> = match line.value.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(_) => Some(line.typed_field("logprobs")?),
    };
    if let Some(o) = &old
        && o.len() != tokens.len()
    {
        return Err(line.error(format!(
            "field \"logprobs\" has {} values for {} tokens",
            o.len(),
            tokens.len()
        )));
    }
    if prompt.is_empty() {
        return Err(line.error("field \"prompt_tokens\" is empty"));
    }
    if let Some(bad) = prompt.iter().chain(&tokens).find(|&&t| t as usize >= vocab) {
        return Err(line.error(format!(
            "token id {bad} is outside the model's vocabulary ({vocab})"
        )));
    }
    let temperature = match line.value.get("temperature") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| line.error("field \"temperature\" must be a number"))?,
    };
    let top_p = match line.value.get("top_p") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|p| *p > 0.0 && *p <= 1.0)
            .ok_or_else(|| line.error("field \"top_p\" must be a number in (0, 1]"))?,
    };
    // The learner's old log-probs are computed later (or the ratio is 1 in a single pass).
    if source == OldLogprobs::Learner || (source == OldLogprobs::Auto && top_p < 1.0) {
        old = None;
    }
    let baseline_floor = match line.value.get("baseline_floor") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| line.error("field \"baseline_floor\" must be a number"))?,
        ),
    };
    let start = prompt.len();
    let mut all = prompt;
    all.extend(tokens);
    Ok(Some(Scored {
        problem_id,
        reward,
        outcome: Outcome::of(line.value.get("verdict")),
        baseline_floor,
        example: Example {
            tokens: all,
            start,
            old_logprobs: old,
            advantage: 0.0,
            // Greedy samples (temperature 0) carry logprob 0; train them at temperature 1.
            temperature: if temperature > 0.0 { temperature } else { 1.0 },
        },
    }))
}

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

/// Which tokens of an SFT record the loss covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SftLoss {
    Code,
    Completion,
}

/// Parse one SFT record: `[bos] + tokenize(code) + [eos]`, truncated to `max_len`. With
/// [`SftLoss::Completion`] and a "completion" that "code" ends with, the loss starts at the
/// completion's first token (the prompt and the completion are tokenized apart, as rl-sample
/// does); otherwise at the first token of "code".
pub fn parse_sft(
    line: &Line,
    tok: &Tokenizer,
    cfg: &LlamaConfig,
    max_len: usize,
    loss: SftLoss,
) -> Result<Example, RecordError> {
    let code = line.str_field("code")?;
    let enc = |s: &str| tok.encode(s).map_err(|e| line.error(e.to_string()));
    let mut tokens: Vec<u32> = cfg.bos_token_id.into_iter().collect();
    let bos = tokens.len();
    let mut start = bos.max(1);
    let completion = match loss {
        SftLoss::Completion => line
            .value
            .get("completion")
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty() && code.ends_with(c)),
        SftLoss::Code => None,
    };
    if let Some(c) = completion {
        tokens.extend(enc(&code[..code.len() - c.len()])?);
        start = tokens.len().max(1);
        tokens.extend(enc(c)?);
    } else {
        tokens.extend(enc(code)?);
    }
    tokens.extend(cfg.eos_ids().first().copied());
    tokens.truncate(max_len);
    if tokens.len() < 2 || start >= tokens.len() {
        return Err(line.error("field \"code\" gives no tokens to train on"));
    }
    Ok(Example {
        tokens,
        start,
        old_logprobs: None,
        advantage: 0.0,
        temperature: 1.0,
    })
}

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

/// Forward and backward over `examples` in micro-batches; gradients summed by parameter name.
///
/// RL token loss: −min(ρ·A, clip(ρ, 1−clip_low, 1+clip_high)·A) + kl_coef·k3, with
/// ρ = exp(logπ − logπ_old) and k3 = exp(logπ_ref − logπ) − (logπ_ref − logπ) − 1.
/// SFT token loss: −logπ.
pub fn accumulate(
    tr: &Trainable,
    examples: &[Example],
    spec: &LossSpec<'_>,
    grads: &mut HashMap<String, Tensor>,
) -> anyhow::Result<PassStats> {
    let dev = Device::Cpu;
    let cfg = &tr.model.cfg;
    let pad = cfg.pad_token_id.unwrap_or(0);
    let mut stats = PassStats::default();
    // Similar lengths together: less padding. Stable, so the order stays deterministic.
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].tokens.len());
    for chunk in order.chunks(spec.micro_batch.max(1)) {
        let b = chunk.len();
        let l = chunk
            .iter()
            .map(|&i| examples[i].tokens.len() - 1)
            .max()
            .unwrap_or(1);
        let mut inputs = vec![pad; b * l];
        let mut targets = vec![0u32; b * l];
        let mut temps = Vec::with_capacity(b);
        for (r, &i) in chunk.iter().enumerate() {
            let t = &examples[i].tokens;
            inputs[r * l..r * l + t.len() - 1].copy_from_slice(&t[..t.len() - 1]);
            targets[r * l..r * l + t.len() - 1].copy_from_slice(&t[1..]);
            temps.push(examples[i].temperature as f32);
        }
        let inputs = Tensor::from_vec(inputs, (b, l), &dev)?;
        // Logits only at the positions trained on (not the prompt's, not the padding).
        let mut rows = Vec::new();
        let mut row_targets = Vec::new();
        let mut row_temps = Vec::new();
        for (r, &i) in chunk.iter().enumerate() {
            let e = &examples[i];
            for j in 0..e.completion_len() {
                let p = r * l + e.start - 1 + j;
                rows.push(p as u32);
                row_targets.push(targets[p]);
                row_temps.push(temps[r]);
            }
        }
        let n = rows.len();
        if n == 0 {
            continue;
        }
        let rows = Tensor::from_vec(rows, n, &dev)?;
        let row_temps = if temps.iter().all(|&t| t == 1.0) {
            None
        } else {
            Some(Tensor::from_vec(row_temps, (n, 1), &dev)?)
        };
        let logprobs_of = |m: &Llama| -> candle_core::Result<Tensor> {
            let h = m
                .hidden_train(&inputs)?
                .reshape((b * l, cfg.hidden_size))?
                .index_select(&rows, 0)?;
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
        let mut p = 0usize;
        for &i in chunk {
            let e = &examples[i];
            let w = spec.weights[i];
            for j in 0..e.completion_len() {
                stats.tokens += 1;
                if !spec.rl {
                    coef[p] = -(w as f32);
                    stats.loss -= w * lp[p] as f64;
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
                    stats.clipped += 1;
                }
                let mut tok_loss = -obj;
                if spec.reference.is_some() {
                    let d = (reference[p] as f64 - lp[p] as f64).clamp(-20.0, 20.0);
                    let k3 = d.exp() - d - 1.0;
                    stats.kl_sum += k3;
                    tok_loss += spec.kl_coef * k3;
                    kl_coef[p] = (spec.kl_coef * w) as f32;
                }
                stats.loss += w * tok_loss;
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
        for (name, var) in &tr.params {
            if let Some(t) = g.get(var.as_tensor()) {
                let t = t.detach();
                let sum = match grads.remove(name) {
                    Some(prev) => (prev + t)?,
                    None => t,
                };
                grads.insert(name.clone(), sum);
            }
        }
    }
    Ok(stats)
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn save(
    out: &Path,
    ck: &Checkpoint,
    tr: &Trainable,
    opt: &AdamW,
    algo: &str,
) -> anyhow::Result<()> {
    let tensors = tr.tensors();
    let opt_state = opt.state_tensors();
    let mut files = checkpoint::tokenizer_files(&ck.dir)?;
    files.push((
        optim::STATE_FILE.into(),
        serde_json::to_vec_pretty(&opt.trainer_state(algo))?,
    ));
    let extra = if opt_state.is_empty() {
        Vec::new()
    } else {
        vec![(optim::OPTIMIZER_FILE.to_string(), &opt_state)]
    };
    checkpoint::save(
        out,
        checkpoint::Contents {
            cfg: &ck.cfg,
            tensors: &tensors,
            files,
            extra_tensors: extra,
        },
    )
    .with_context(|| format!("writing {}", out.display()))
}

/// Write a LoRA adapter directory: the adapter, its optimizer state and trainer state.
fn save_adapter(
    out: &Path,
    lc: &LoraConfig,
    tr: &Trainable,
    opt: &AdamW,
    algo: &str,
) -> anyhow::Result<()> {
    let tensors = tr.tensors();
    let opt_state = opt.state_tensors();
    let files = vec![(
        optim::STATE_FILE.into(),
        serde_json::to_vec_pretty(&opt.trainer_state(algo))?,
    )];
    let extra = if opt_state.is_empty() {
        Vec::new()
    } else {
        vec![(optim::OPTIMIZER_FILE.to_string(), &opt_state)]
    };
    lora::save(out, lc, &tensors, files, extra)
        .with_context(|| format!("writing {}", out.display()))
}

fn logits_chunk(a: &TrainArgs) -> LogitsChunk {
    match a.logits_chunk {
        None => LogitsChunk::Auto,
        Some(0) => LogitsChunk::Off,
        Some(n) => LogitsChunk::Rows(n),
    }
}

/// The LoRA adapter to train, if any: loaded from --adapter, or a fresh one of --lora-rank.
fn lora_setup(
    a: &TrainArgs,
    cfg: &LlamaConfig,
    model_dir: &Path,
) -> Result<Option<(LoraConfig, HashMap<String, Tensor>)>> {
    let base = model_dir.display().to_string();
    match (&a.adapter, a.lora_rank) {
        (None, None) => {
            if a.lora_alpha.is_some() || a.lora_targets.is_some() {
                return Err(usage(
                    "--lora-alpha and --lora-targets need --lora-rank (or --adapter)",
                ));
            }
            Ok(None)
        }
        (Some(dir), rank) => {
            let (mut lc, ts) =
                lora::load(dir, cfg).with_context(|| format!("{}", dir.display()))?;
            let mut targets = a.lora_targets.clone();
            if let Some(t) = &mut targets {
                t.sort();
            }
            let mut have = lc.target_modules.clone();
            have.sort();
            if rank.is_some_and(|r| r != lc.r)
                || a.lora_alpha.is_some_and(|x| x != lc.lora_alpha)
                || targets.is_some_and(|t| t != have)
            {
                return Err(usage(format!(
                    "--lora-rank/--lora-alpha/--lora-targets disagree with {} (r {}, alpha {}, \
                     targets {}); leave them out to continue that adapter",
                    dir.join(lora::ADAPTER_CONFIG).display(),
                    lc.r,
                    lc.lora_alpha,
                    lc.target_modules.join(",")
                )));
            }
            lc.base_model_name_or_path = base;
            Ok(Some((lc, ts)))
        }
        (None, Some(r)) => {
            let targets = a
                .lora_targets
                .clone()
                .unwrap_or_else(|| lora::MODULES.iter().map(|m| m.to_string()).collect());
            let lc = LoraConfig::new(r, a.lora_alpha.unwrap_or(2.0 * r as f64), targets, base);
            lc.validate()
                .map_err(|e| usage(format!("LoRA settings: {e}")))?;
            let ts = lora::init(cfg, &lc, a.seed)?;
            Ok(Some((lc, ts)))
        }
    }
}

fn write_metrics(out: &mut impl Write, m: &Metrics) -> Result<()> {
    serde_json::to_writer(&mut *out, m).map_err(anyhow::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

pub fn run_train(a: &TrainArgs, mut out: impl Write) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let (Some(model_dir), Some(out_dir)) = (&a.model, &a.out) else {
        return Err(usage("--model and --out are required"));
    };
    if a.micro_batch == 0 || a.batch_size == 0 {
        return Err(usage("--micro-batch and --batch-size must be at least 1"));
    }
    if a.kl_coef > 0.0 && a.ref_model.is_none() {
        return Err(usage("--kl-coef needs --ref-model"));
    }
    if !(0.0..1.0).contains(&a.clip_low) || a.clip_high < 0.0 {
        return Err(usage("--clip-low must be in [0, 1) and --clip-high >= 0"));
    }
    if a.diagnostics && a.algo == Algo::Sft {
        return Err(usage(
            "--diagnostics applies to --algo grpo and rloo, not sft",
        ));
    }
    if a.diagnostics_dim == Some(0) {
        return Err(usage("--diagnostics-dim must be at least 1"));
    }
    let mut ck = Checkpoint::load(model_dir)?;
    let lora = lora_setup(a, &ck.cfg, model_dir)?;
    // The model holds what it needs; the loaded copy would double the weights' memory.
    let base = std::mem::take(&mut ck.tensors);
    let tr = match &lora {
        None => Trainable::new(&ck.cfg, &base),
        Some((lc, adapter)) => Trainable::with_lora(&ck.cfg, &base, lc, adapter),
    }
    .with_context(|| format!("{}", model_dir.display()))?;
    drop(base);
    let lr =
        a.lr.unwrap_or(if a.algo == Algo::Sft { 1e-3 } else { 1e-5 });
    let mut opt = AdamW::new(lr, a.weight_decay);
    // The optimizer state lives with what is trained: the checkpoint, or the adapter.
    let state_dir = match &lora {
        None => Some(model_dir.as_path()),
        Some(_) => a.adapter.as_deref(),
    };
    if let (false, Some(d)) = (a.reset_optimizer, state_dir) {
        opt.load_state(d, &tr.params)?;
    }
    let reader = JsonlReader::open(&a.input.inputs)?;
    let mut skipper = Skipper::new(PROGRAM, a.input.keep_going);
    let vocab = ck.cfg.vocab_size;
    let max_len = a
        .max_seq_len
        .unwrap_or(ck.cfg.max_position_embeddings)
        .min(ck.cfg.max_position_embeddings);
    let mut scored = Vec::new();
    let mut sft = Vec::new();
    let mut null_rewards = 0usize;
    for line in reader {
        let Some(line) = skipper.keep(line)? else {
            continue;
        };
        let parsed = if a.algo == Algo::Sft {
            parse_sft(&line, &ck.tokenizer, &ck.cfg, max_len, a.sft_loss).map(|e| sft.push(e))
        } else {
            parse_scored(&line, vocab, a.old_logprobs).and_then(|s| {
                let Some(s) = s else {
                    null_rewards += 1;
                    return Ok(());
                };
                if s.example.tokens.len() > ck.cfg.max_position_embeddings {
                    return Err(line.error(format!(
                        "{} tokens are more than max_position_embeddings ({})",
                        s.example.tokens.len(),
                        ck.cfg.max_position_embeddings
                    )));
                }
                scored.push(s);
                Ok(())
            })
        };
        if let Err(e) = parsed {
            skipper.skip(e)?;
        }
    }
    let algo_name = format!("{:?}", a.algo).to_lowercase();
    let mut metrics = Metrics {
        algo: algo_name.clone(),
        lr,
        skipped_records: skipper.skipped(),
        ..Metrics::default()
    };
    if a.algo == Algo::Sft {
        run_sft(a, &tr, &mut opt, sft, &mut metrics, &mut out)?;
    } else {
        let reference = match &a.ref_model {
            Some(d) => Some(Checkpoint::load(d)?.model()?),
            None => None,
        };
        rl_step(a, &tr, &mut opt, scored, reference.as_ref(), &mut metrics)?;
        metrics.skipped_null_rewards = Some(null_rewards);
    }
    match &lora {
        None => save(out_dir, &ck, &tr, &opt, &algo_name)?,
        Some((lc, _)) => save_adapter(out_dir, lc, &tr, &opt, &algo_name)?,
    }
    metrics.step = opt.step;
    metrics.seconds = start.elapsed().as_secs_f64();
    write_metrics(&mut out, &metrics)?;
    eprintln!(
        "{PROGRAM}: step {} ({}), loss {:.4}, {} samples, {} tokens, {:.2} s -> {}",
        metrics.step,
        algo_name,
        metrics.loss,
        metrics.samples,
        metrics.tokens,
        metrics.seconds,
        out_dir.display()
    );
    Ok(skipper.exit_code())
}

/// Group by problem id (in order of first appearance), compute advantages, and take one
/// optimizer step over the groups that carry a signal.
fn rl_step(
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
    if examples.is_empty() {
        m.kl = reference.map(|_| 0.0);
        m.clip_frac = Some(0.0);
        if let Some(b) = before {
            m.diagnostics = Some(diagnostics::after_step(
                &tr.model,
                &diag_groups,
                b,
                proj,
                a.micro_batch,
                logits_chunk(a),
                false,
            )?);
        }
        return Ok(());
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
    if let Some(b) = before {
        m.diagnostics = Some(diagnostics::after_step(
            &tr.model,
            &diag_groups,
            b,
            proj,
            a.micro_batch,
            logits_chunk(a),
            true,
        )?);
    }
    Ok(())
}

fn run_sft(
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
        if a.log_every > 0 && done % a.log_every == 0 && done < total {
            m.step = opt.step;
            m.seconds = start.elapsed().as_secs_f64();
            write_metrics(out, m)?;
        }
    }
    // The final line summarises the run: mean loss over its steps, all tokens seen.
    m.loss = loss_sum / done.max(1) as f64;
    m.tokens = tokens;
    Ok(())
}

#[cfg(test)]
mod tests;

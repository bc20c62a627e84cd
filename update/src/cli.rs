//! The command line of rl-update: its subcommands, flags and their value types.

use super::*;

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
    /// Convert a llama-architecture GGUF model (llama.cpp) into a Hugging Face checkpoint
    /// directory: config.json, f32 model.safetensors, tokenizer.json, tokenizer_config.json
    /// (with the chat template). See docs/models.md.
    ConvertGguf(ConvertGgufArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConvertGgufArgs {
    /// The .gguf file.
    #[arg(value_name = "FILE")]
    pub gguf: PathBuf,
    /// The checkpoint directory to write (replaced atomically if it exists).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
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
    /// fsync the written checkpoint (every file, its directory and the rename) before exiting,
    /// so that it survives a crash of the machine; without it, as `torch.save`, it is in the
    /// page cache, whole once renamed (see docs/training.md)
    #[arg(long)]
    pub fsync: bool,
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
    /// Sequences per forward/backward pass (at most; a batch of two or more is split in at
    /// least two, which run at once); gradients accumulate over micro-batches into one
    /// optimizer step (the same step as one pass over the whole batch, up to float rounding).
    /// The samples of one prompt are kept together, and a micro-batch computes their prompt
    /// once. Activation memory grows with it: see docs/training.md for SmolLM2-135M figures.
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
    /// drew from the learner's distribution (softmax(logits / temperature), i.e. `top_p` 1, and
    /// no `weights` other than f32); a nucleus-renormalised log-prob is larger than the
    /// learner's, so the ratio would start below 1 and the clip would stop negative-advantage
    /// tokens before any step. `learner`:
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

/// Which tokens of an SFT record the loss covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SftLoss {
    Code,
    Completion,
}

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

mod cli;
pub mod diagnostics;
mod loss;
pub mod optim;
mod records;
mod rl;
mod sft;

pub use cli::*;
pub use loss::*;
pub use records::*;
use rl::rl_step;
use sft::run_sft;
pub use sft::*;

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
        Some(Command::ConvertGguf(a)) => run_convert_gguf(a),
        None => run_train(&cli.train, out),
    }
}

/// `rl-update convert-gguf`: a llama GGUF model to a Hugging Face checkpoint directory (see
/// `rlcode_policy::gguf`), with a one-line summary on stderr. Writes nothing to stdout.
pub fn run_convert_gguf(a: &ConvertGgufArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let summary = rlcode_policy::gguf::convert(&a.gguf, &a.out).map_err(Error::Other)?;
    eprintln!(
        "{PROGRAM}: converted {} -> {}: {summary} ({:.1} s)",
        a.gguf.display(),
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::Success)
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
            sync: checkpoint::Durability::PageCache,
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

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn save(
    out: &Path,
    ck: &Checkpoint,
    tr: &Trainable,
    opt: &AdamW,
    algo: &str,
    sync: checkpoint::Durability,
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
            sync,
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
    sync: checkpoint::Durability,
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
    lora::save(out, lc, &tensors, files, extra, sync)
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
    // Trained in full, the weights are loaded as variables (no copy to make them so).
    let full = a.adapter.is_none() && a.lora_rank.is_none();
    let mut ck = Checkpoint::load_as(
        model_dir,
        if full {
            checkpoint::Weights::Variables
        } else {
            checkpoint::Weights::Constants
        },
    )?;
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
    let loaded = start.elapsed().as_secs_f64();
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
    let trained = start.elapsed().as_secs_f64();
    let sync = if a.fsync {
        checkpoint::Durability::Disk
    } else {
        checkpoint::Durability::PageCache
    };
    match &lora {
        None => save(out_dir, &ck, &tr, &opt, &algo_name, sync)?,
        Some((lc, _)) => save_adapter(out_dir, lc, &tr, &opt, &algo_name, sync)?,
    }
    metrics.step = opt.step;
    metrics.seconds = start.elapsed().as_secs_f64();
    write_metrics(&mut out, &metrics)?;
    eprintln!(
        "{PROGRAM}: step {} ({}), loss {:.4}, {} samples, {} tokens, {:.2} s (load {:.2}, \
         train {:.2}, save {:.2}) -> {}",
        metrics.step,
        algo_name,
        metrics.loss,
        metrics.samples,
        metrics.tokens,
        metrics.seconds,
        loaded,
        trained - loaded,
        metrics.seconds - trained,
        out_dir.display()
    );
    Ok(skipper.exit_code())
}

#[cfg(test)]
mod tests;

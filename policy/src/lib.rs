//! The policy: a Llama-architecture decoder in candle with a differentiable training path and
//! a fused, KV-cached inference path; tokenizers; checkpoints in the Hugging Face layout.
//! See docs/policy.md.

pub mod checkpoint;
pub mod config;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod tokenizer;

pub use checkpoint::Checkpoint;
pub use config::{LlamaConfig, Preset};
pub use model::{KvCache, Llama, LogitsChunk, Trainable, token_logprobs};
pub use tokenizer::Tokenizer;

/// A fresh checkpoint of a preset size with the byte-level tokenizer, written to `out`.
pub fn init_checkpoint(
    preset: Preset,
    seed: u64,
    out: &std::path::Path,
) -> anyhow::Result<LlamaConfig> {
    let cfg = LlamaConfig::preset(preset);
    let tensors = model::init_tensors(&cfg, seed)?;
    checkpoint::save(
        out,
        checkpoint::Contents {
            cfg: &cfg,
            tensors: &tensors,
            files: checkpoint::byte_level_tokenizer_files(&cfg),
            extra_tensors: Vec::new(),
        },
    )?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;

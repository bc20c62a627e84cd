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
pub use model::{KvCache, Llama, LogitsChunk, Prefix, SeqCache, Trainable, token_logprobs};
pub use tokenizer::{DecodeState, Tokenizer};

/// Settings that make candle's CPU backend fast in a short-lived process. Call it first thing in
/// `main`, before any other thread exists (it sets environment variables). Changes no result:
/// the thread count is the one candle would pick, and allocation does not change arithmetic.
///
/// - candle asks for the matrix-product thread count on every product, and unless
///   `RAYON_NUM_THREADS` is set, that reads `/proc/cpuinfo` (`num_cpus::get_physical`): thousands
///   of reads per `rl-sample` run, half its wall time on this machine. The count is read once
///   here and put in `RAYON_NUM_THREADS`, where candle (and rayon) find it.
/// - glibc's malloc gives freed memory back to the kernel (heap trimming, and `mmap` for blocks
///   above its mmap threshold, 128 KiB to start with), so every training step faulted in and
///   zeroed its tensors' pages again: a third of `rl-update`'s CPU went to the kernel. Now the
///   heap is never trimmed and only blocks of 32 MiB or more are `mmap`ed (what
///   `GLIBC_TUNABLES=glibc.malloc.trim_threshold=...:glibc.malloc.mmap_threshold=33554432` would
///   do).
///
/// docs/policy.md has the measurements.
///
/// # Safety
///
/// It sets an environment variable (`std::env::set_var`), which is undefined behaviour while
/// another thread may read or write the environment: call it first thing in `main`, before any
/// thread exists.
pub unsafe fn tune_process() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees no other thread exists (this function's contract).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc malloc's tuning parameters; both are valid values.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

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

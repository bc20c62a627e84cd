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
pub use model::{
    KvCache, Llama, LogitsChunk, Packed, Prefix, Segment, SeqCache, Trainable, token_logprobs,
};
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
/// - The calling thread becomes one of rayon's global workers (`use_current_thread`): a
///   parallel region started from it is then split with the other workers by work stealing,
///   instead of being handed to the pool while the caller sleeps on a lock (two context
///   switches per region; a decoding step of SmolLM2 has 121 regions). rl-sample at one
///   sequence: 47,579 context switches → 2,372 per run of 128 tokens.
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
    // (fails only if the global pool already exists: then it stays as it is)
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
}

/// The global allocator of `rl-sample` and `rl-update`: the system allocator, with every block
/// of 4 MiB or more marked for transparent huge pages (`madvise(MADV_HUGEPAGE)` over its whole
/// 2 MiB pages), which this machine's kernel gives only to memory that asks (`enabled` is
/// `madvise`). A training step allocates gigabytes of activations and gradients in large
/// blocks; backed by 4 KiB pages, faulting them in and zeroing them was a third of the step's
/// CPU time (docs/policy.md). What `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` does, without the
/// environment variable. Changes no result: where memory lives, not what is computed.
pub struct HugePageAlloc;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod huge {
    use std::alloc::{GlobalAlloc, Layout, System};

    const PAGE: usize = 2 << 20;
    const MIN: usize = 4 << 20;

    /// Ask for huge pages over the whole 2 MiB pages of `[p, p + len)`.
    fn advise(p: *mut u8, len: usize) {
        let start = (p as usize).next_multiple_of(PAGE);
        let end = (p as usize).saturating_add(len) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies inside a block the allocator just handed out; madvise with
            // MADV_HUGEPAGE changes how the pages are backed, never their contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }

    // SAFETY: every call is forwarded to `System` with its own arguments; `advise` only gives
    // the kernel advice about the block returned.
    unsafe impl GlobalAlloc for super::HugePageAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded with the caller's layout.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() && layout.size() >= MIN {
                advise(p, layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.size() < MIN {
                // SAFETY: forwarded with the caller's layout.
                return unsafe { System.alloc_zeroed(layout) };
            }
            // Advise before the zeroing touches the pages, so that they fault in huge.
            // SAFETY: forwarded with the caller's layout; the block is then zeroed whole.
            unsafe {
                let p = System.alloc(layout);
                if !p.is_null() {
                    advise(p, layout.size());
                    std::ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded with the caller's arguments.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() && new_size >= MIN {
                advise(p, new_size);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's arguments.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl std::alloc::GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded with the caller's arguments.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
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
            sync: checkpoint::Durability::PageCache,
        },
    )?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;

//! The wasmtime side shared by both sandboxes: the engine's settings (fuel, epochs, the pooling
//! allocator), the per-store state and memory cap, the epoch ticker, and the on-disk cache of
//! compiled artifacts. Nothing here knows a backend or the harness protocol.

use anyhow::{Context, Result};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine};

/// The per-store state of one test run: its WASI context (preview 1 for the plain runtime,
/// preview 2 for the pre-initialized component) and its memory cap.
pub struct RunState<W> {
    pub wasi: W,
    pub limits: MemoryLimiter,
}

/// Caps linear memory, and remembers that the program asked for more, so that a failure after a
/// denied growth is reported as `memory`.
pub struct MemoryLimiter {
    pub max_bytes: usize,
    pub denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// How often the epoch ticks: a running program yields to the host this often, so that its
/// wall-clock deadline can be enforced while it computes, not only while it waits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How a pooled slot's linear memory is put back to the snapshot when a test ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlotReset {
    /// Copy back only the pages the slot has written (Linux `PAGEMAP_SCAN`, through the patched
    /// wasmtime in `vendor/`); where the kernel lacks it, `copy`.
    Dirty,
    /// Copy back the whole snapshot region with `memcpy` after every test.
    Copy,
}

/// The pooling allocator's slots: one per test run that may hold an instance at once, and how
/// each is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub slots: usize,
    pub reset: SlotReset,
}

/// The pooled slots, or `None` to allocate every instance afresh (wasmtime's on-demand
/// allocator; slower, kept for comparison: `rl-verify --no-pool`).
pub type Concurrency = Option<Pool>;

pub(crate) fn engine_config(concurrency: Concurrency) -> Config {
    let mut c = Config::new();
    if let Some(pool) = concurrency {
        c.allocation_strategy(pooling_config(pool));
    }
    // Fuel makes the CPU limit deterministic: the same program gets the same verdict on a
    // fast or a loaded machine. Epochs let a wall-clock deadline interrupt pure computation.
    c.consume_fuel(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // CPython recurses on the C stack; keep room for its own RecursionError to fire first.
    c.max_wasm_stack(4 << 20);
    c.async_stack_size(5 << 20);
    c
}

/// The bytes of dirty pages a slot keeps mapped and resets with `memcpy` ([`SlotReset::Dirty`]).
/// A page stays a private copy once any test in the slot has written it, so the set grows with
/// every test that touches new pages (up to ~11 MiB of the 17.7 MiB snapshot on HumanEval);
/// beyond this many bytes the whole slot is handed back to the image instead (`madvise`) and
/// the set starts again from what the next test writes. 8 MiB was the fastest of 3, 4, 6, 8,
/// 10, 12 and 64 MiB on the HumanEval benchmark (docs/benchmarks.md).
pub const DIRTY_KEEP_RESIDENT: usize = 8 << 20;

/// Whether [`SlotReset::Dirty`] can work here (the kernel has `PAGEMAP_SCAN`, Linux 6.7+).
pub fn dirty_reset_available() -> bool {
    wasmtime::PoolingAllocationConfig::is_pagemap_scan_available()
}

/// The pooling allocator for `pool.slots` concurrent runs. A test's instance takes a slot that
/// an earlier test of the same runtime used, and the slot is reset to the snapshot when that
/// test ends, so every reused slot holds exactly the snapshot and reuse leaks nothing between
/// tests.
///
/// - [`SlotReset::Dirty`] (the default): `PAGEMAP_SCAN` finds the pages of the slot that are no
///   longer the image's (private copies: written since the slot was last handed back), and only
///   those are copied back from the image and stay mapped. wasmtime 48 itself reads at most 32
///   runs of such pages per scan and `madvise`s the rest away, and a CPython test writes pages
///   scattered over far more runs, so its faults came back; the patch in `vendor/wasmtime`
///   resumes the scan instead, and hands the whole slot back once its private pages exceed
///   [`DIRTY_KEEP_RESIDENT`].
/// - [`SlotReset::Copy`]: the memory's first 64 MiB (all of the snapshot's heap) are copied back
///   with `memcpy` after every test, written or not (what rl-verify did before; 1.14-1.35x
///   slower in two runs of `scripts/bench-verify.sh`).
///
/// Why not the on-demand allocator (`--no-pool`): each test then maps the image afresh and takes
/// a copy-on-write fault, with a TLB shootdown on the other cores, for every page it writes; on
/// the HumanEval benchmark that was 17 s of kernel time in a 23 s run.
fn pooling_config(pool: Pool) -> wasmtime::PoolingAllocationConfig {
    // Stores alive at once: one per worker, and room for a store being torn down while the
    // worker's next one is set up.
    let stores = (2 * pool.slots.max(1) + 2) as u32;
    // The pre-initialized component links 14 core modules, each with at most one memory and
    // one table; the plain runtime is one module.
    const PER_STORE: u32 = 32;
    let dirty = pool.reset == SlotReset::Dirty && dirty_reset_available();
    let mut p = wasmtime::PoolingAllocationConfig::new();
    p.total_component_instances(stores)
        .total_core_instances(stores * PER_STORE)
        .total_memories(stores * PER_STORE)
        .total_tables(stores * PER_STORE)
        .total_stacks(stores)
        .total_gc_heaps(stores)
        // The memory cap is enforced per test by `MemoryLimiter`; a slot can hold the largest
        // memory wasm32 allows, so a problem's own `memory_mb` is never refused by the pool.
        .max_memory_size(1 << 32)
        .table_elements(1 << 17)
        .max_component_instance_size(16 << 20)
        .max_core_instance_size(4 << 20)
        .linear_memory_keep_resident(if dirty { DIRTY_KEEP_RESIDENT } else { 64 << 20 })
        .table_keep_resident(1 << 20)
        .pagemap_scan(if dirty {
            wasmtime::Enabled::Yes
        } else {
            wasmtime::Enabled::No
        });
    p
}

/// Tick the engine's epoch every [`EPOCH_TICK`] until the returned flag is set.
pub(crate) fn start_ticker(engine: &Engine) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let engine = engine.clone();
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
    Ok(stop)
}

/// The artifact's file name: the module's hash and everything about the engine that decides
/// whether a compiled artifact can be loaded into it.
pub(crate) fn artifact_key(engine: &Engine, sha256: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{}-{:016x}.cwasm", &sha256[..32], h.finish())
}

/// A compiled wasmtime artifact the module cache keeps: a core module (the plain runtime) or a
/// component (the pre-initialized runtime).
pub(crate) trait Artifact: Sized {
    /// "module" or "component", for messages.
    const KIND: &'static str;
    /// Prefix of the cache file name.
    const PREFIX: &'static str;
    fn compile(engine: &Engine, wasm: &Path) -> Result<Self>;
    fn serialize(&self) -> Result<Vec<u8>>;
    /// # Safety
    /// As wasmtime's `deserialize_file`: the file must be a trusted artifact of this engine.
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> Result<Self>;
}

/// The compiled artifact of `wasm` (whose sha256 is given) from the cache directory `dir`, or
/// compiled now and cached there.
pub(crate) fn load_cached<A: Artifact>(
    engine: &Engine,
    wasm: &Path,
    sha256: &str,
    dir: &Path,
) -> Result<A> {
    let path = dir.join(format!("{}{}", A::PREFIX, artifact_key(engine, sha256)));
    if path.exists() {
        // SAFETY: deserializing runs the file's machine code, and wasmtime's header checks catch
        // only accidents (a truncated file, another engine's settings), not a crafted file. The
        // assumption is that the module cache directory is trusted like the rl-verify binary
        // itself: only this program writes it (`serialize`, under a key covering the artifact
        // and the engine's settings), and whoever can write it could replace the binary.
        match unsafe { A::deserialize_file(engine, &path) } {
            Ok(m) => return Ok(m),
            Err(e) => eprintln!(
                "rl-verify: ignoring unusable compiled {} {}: {e:#}",
                A::KIND,
                path.display()
            ),
        }
    }
    eprintln!(
        "rl-verify: compiling {} (once; cached in {})",
        wasm.display(),
        dir.display()
    );
    let artifact = A::compile(engine, wasm)?;
    if let Err(e) = write_atomic(dir, &path, &artifact.serialize()?) {
        eprintln!("rl-verify: could not cache the compiled {}: {e:#}", A::KIND);
    }
    Ok(artifact)
}

pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    rlcode_core::paths::write_atomic(path, bytes).with_context(|| format!("{}", path.display()))
}

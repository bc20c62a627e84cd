//! The sandbox's Python: a wasmtime engine and one of two backends ([`crate::module`], the
//! plain interpreter; [`crate::component`], the pre-initialized one), compiled once and cached
//! on disk, and the dispatch of a run to the backend.

use crate::engine::{Concurrency, engine_config, start_ticker};
use crate::protocol::{Job, RawRun};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::Engine;

/// The sandboxes `--runtime` chooses between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Preinit,
    Python,
}

/// What runs a test: the plain interpreter (a WASI preview-1 module that starts CPython afresh
/// for every test) or the pre-initialized one (a WASI preview-2 component whose start-up and
/// standard-library imports were snapshotted when it was built).
pub enum Backend {
    Module(crate::module::Pre),
    Component(crate::component::Pre),
}

/// A loaded runtime: the engine, the module or component ready to instantiate, and its identity.
pub struct Runtime {
    pub engine: Engine,
    pub backend: Backend,
    /// `cpython-3.12.0-wasi:<sha256 prefix>` or `cpython-3.14-wasi-preinit:<sha256 prefix>`:
    /// written into every verdict.
    pub id: String,
    /// Full sha256 of the module file.
    pub sha256: String,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// sha256 of the CPython 3.12.0 WASI build that `scripts/setup.sh` fetches.
pub const PYTHON_3_12_0_SHA256: &str =
    "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763";

/// Where `scripts/setup.sh` puts the sandbox's Python.
pub fn default_python_wasm() -> PathBuf {
    if let Some(p) = std::env::var_os("RLCODE_PYTHON_WASM") {
        return PathBuf::from(p);
    }
    rlcode_core::paths::home().join("runtime/python-3.12.0.wasm")
}

impl Runtime {
    /// Load `wasm`, from the compiled-artifact cache in `cache_dir` when it holds one for this
    /// module and these engine settings, else compiling it (~5 s) and caching the result.
    pub fn load(wasm: &Path, cache_dir: Option<&Path>, concurrency: Concurrency) -> Result<Self> {
        let engine = Engine::new(&engine_config(concurrency))?;
        let (id, sha256) = identify(RuntimeKind::Python, wasm)?;
        let pre = crate::module::load(&engine, wasm, &sha256, cache_dir)?;
        let ticker_stop = start_ticker(&engine)?;
        Ok(Runtime {
            id,
            engine,
            backend: Backend::Module(pre),
            sha256,
            ticker_stop,
        })
    }

    /// Load the pre-initialized component `wasm` (see [`crate::component`]), cached like
    /// [`Runtime::load`] caches modules.
    pub fn load_preinit(
        wasm: &Path,
        cache_dir: Option<&Path>,
        concurrency: Concurrency,
    ) -> Result<Self> {
        let engine = Engine::new(&engine_config(concurrency))?;
        let (pre, sha256) = crate::component::load(&engine, wasm, cache_dir)?;
        let ticker_stop = start_ticker(&engine)?;
        Ok(Runtime {
            id: format!("{}:{}", crate::component::RUNTIME_NAME, &sha256[..12]),
            engine,
            backend: Backend::Component(pre),
            sha256,
            ticker_stop,
        })
    }

    /// Run `job` on this runtime's backend, the harness protocol's `token` on its stdin.
    pub(crate) async fn run_raw(&self, job: &Job<'_>, token: &str) -> Result<RawRun> {
        match &self.backend {
            Backend::Module(pre) => crate::module::run_raw(&self.engine, pre, job, token).await,
            Backend::Component(pre) => {
                crate::component::run_raw(&self.engine, pre, job, token).await
            }
        }
    }
}

/// The identity of the runtime in `wasm` (what [`Runtime::id`] will be) and the module's full
/// sha256, without compiling or loading anything: the verdict cache keys on it.
pub fn identify(kind: RuntimeKind, wasm: &Path) -> Result<(String, String)> {
    identify_with(kind, wasm, |p| Ok(rlcode_core::hash::file_sha256(p)?))
}

/// [`identify`] with the module's sha256 from `sha256_of` (a memo of file hashes, say).
pub fn identify_with(
    kind: RuntimeKind,
    wasm: &Path,
    sha256_of: impl FnOnce(&Path) -> Result<String>,
) -> Result<(String, String)> {
    let sha256 = sha256_of(wasm).map_err(|e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => anyhow::anyhow!(
            "{}: cannot read the sandbox's Python: {io} (run scripts/setup.sh, or pass \
             --python-wasm)",
            wasm.display()
        ),
        None => e,
    })?;
    let name = match kind {
        RuntimeKind::Preinit => crate::component::RUNTIME_NAME,
        RuntimeKind::Python if sha256 == PYTHON_3_12_0_SHA256 => "cpython-3.12.0-wasi",
        RuntimeKind::Python => "python-wasi",
    };
    Ok((format!("{name}:{}", &sha256[..12]), sha256))
}

//! The plain runtime: CPython 3.12 as a WASI preview-1 module (`scripts/setup.sh` fetches it),
//! started afresh for every test, the harness passed with `-c`.

use crate::engine::{Artifact, RunState, load_cached};
use crate::protocol::{
    ANALYSIS, HARNESS, HostFailure, Job, Kind, RawRun, new_store, run_in, wasi_for,
};
use anyhow::Result;
use std::path::Path;
use wasmtime::{Engine, Linker, Module};

/// The plain runtime's store state.
pub type ModuleState = RunState<wasmtime_wasi::p1::WasiP1Ctx>;

/// The module, linked to WASI preview 1 and pre-instantiated.
pub type Pre = wasmtime::InstancePre<ModuleState>;

/// Load `wasm` (whose sha256 is given), from the compiled-artifact cache in `cache_dir` when it
/// holds one for this module and these engine settings, else compiling it (~5 s) and caching the
/// result; link it to WASI preview 1 and pre-instantiate it.
pub fn load(engine: &Engine, wasm: &Path, sha256: &str, cache_dir: Option<&Path>) -> Result<Pre> {
    let module = match cache_dir {
        Some(dir) => load_cached::<Module>(engine, wasm, sha256, dir)?,
        None => Module::from_file(engine, wasm)?,
    };
    let mut linker: Linker<ModuleState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi)?;
    Ok(linker.instantiate_pre(&module)?)
}

impl Artifact for Module {
    const KIND: &'static str = "module";
    const PREFIX: &'static str = "";
    fn compile(engine: &Engine, wasm: &Path) -> Result<Self> {
        Ok(Module::from_file(engine, wasm)?)
    }
    fn serialize(&self) -> Result<Vec<u8>> {
        Ok(Module::serialize(self)?)
    }
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> Result<Self> {
        // SAFETY: passed on to the caller (the trait's contract).
        Ok(unsafe { Module::deserialize_file(engine, path) }?)
    }
}

/// What the plain runtime runs with `-c`: the harness without its comment lines (compiling the
/// source is part of every test's cost there), and for an analysis the analysis before it.
fn plain_source(kind: &Kind<'_>) -> &'static str {
    static RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| strip_comments(HARNESS));
    static ANALYSE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("{}\n{}", strip_comments(ANALYSIS), strip_comments(HARNESS))
    });
    match kind {
        Kind::Analyse(_) => &ANALYSE,
        _ => &RUN,
    }
}

/// Drop the lines that are only a comment (neither file has a multi-line string).
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Run one test on the plain runtime: CPython starts afresh and runs the harness with `-c`.
pub(crate) async fn run_raw(
    engine: &Engine,
    pre: &Pre,
    job: &Job<'_>,
    token: &str,
) -> anyhow::Result<RawRun> {
    let source = plain_source(&job.kind);
    let (mut wasi, pipes) = wasi_for(job, token, &["python", "-I", "-S", "-B", "-c", source]);
    let store = new_store(engine, wasi.build_p1(), &job.limits)?;
    run_in(store, &job.limits, pipes, async |store| {
        let instance = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| e.context(HostFailure))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut *store, "_start")
            .map_err(|e| e.context(HostFailure))?;
        start.call_async(&mut *store, ()).await?;
        Ok(0)
    })
    .await
}

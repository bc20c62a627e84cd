//! The pre-initialized runtime: CPython 3.14 as a WASI preview-2 component built by
//! componentize-py from `verify/guest/app.py` (see `scripts/setup.sh`). The interpreter's
//! start-up and the import of a fixed set of standard-library modules ran once, at build time,
//! and were snapshotted into the component's memory image; a test pays only for instantiating
//! that image (copy-on-write) and for its own code.
//!
//! The guest speaks the same stdin/stderr protocol as `harness.py` (it imports it), so
//! [`crate::exec`] classifies both runtimes' runs with the same code. What differs, and why the
//! verdicts still agree on every HumanEval test:
//!
//! - Only the bundled modules can be imported (the list is in `verify/guest/app.py`); any other
//!   import is an `error` with `ModuleNotFoundError`.
//! - `hash()` of str/bytes uses the hash secret frozen in the snapshot: set and dict iteration
//!   orders are the same in every test of one build (deterministic, and named by the runtime id
//!   in every verdict), but differ from the plain runtime's per-test secret.
//! - `random` is reseeded before each test from the test's seed (the same material, problem id,
//!   code and test index, that seeds the plain runtime), so it is deterministic per test.
//! - A `wasi:cli/command` run reports only success or failure, no exit code: the harness's
//!   token/phase report, not the exit code, is what lets a test pass, as on the plain runtime.
//! - Deep recursion in C (an `eval` of deeply nested brackets, say) can exhaust the wasm stack
//!   before CPython notices: a trap, classified `error` ("stack overflow").

use crate::engine::{Artifact, RunState, load_cached};
use crate::protocol::{HostFailure, Job, RawRun, new_store, run_in, wasi_for};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The name in `verdict.runtime`, before the component's sha256 prefix.
pub const RUNTIME_NAME: &str = "cpython-3.14-wasi-preinit";

/// The component, linked to WASI and pre-instantiated.
pub type Pre = CommandPre<ComponentState>;

/// WASI preview 2's context and the resources it hands the guest.
pub struct P2 {
    ctx: WasiCtx,
    table: ResourceTable,
}

/// The per-store state of one test run on the component.
pub type ComponentState = RunState<P2>;

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// Where `scripts/setup.sh` puts the pre-initialized component.
pub fn default_preinit_wasm() -> PathBuf {
    if let Some(p) = std::env::var_os("RLCODE_PREINIT_WASM") {
        return PathBuf::from(p);
    }
    rlcode_core::paths::home().join("runtime/python-preinit.wasm")
}

/// Load the component (from the compiled-artifact cache in `cache_dir` when it holds one for
/// this component and these engine settings), link it to WASI preview 2 and pre-instantiate it.
/// Returns it with the component file's sha256.
pub fn load(engine: &Engine, wasm: &Path, cache_dir: Option<&Path>) -> Result<(Pre, String)> {
    let sha256 = rlcode_core::hash::file_sha256(wasm).with_context(|| {
        format!(
            "{}: cannot read the pre-initialized Python (run scripts/setup.sh, pass \
             --preinit-wasm, or use --runtime python)",
            wasm.display()
        )
    })?;
    let component = match cache_dir {
        Some(dir) => load_cached::<Component>(engine, wasm, &sha256, dir)?,
        None => compile(engine, wasm)?,
    };
    let mut linker: Linker<ComponentState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let pre = CommandPre::new(linker.instantiate_pre(&component)?).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a wasi:cli/command component: {e:#}",
            wasm.display()
        )
    })?;
    Ok((pre, sha256))
}

impl Artifact for Component {
    const KIND: &'static str = "component";
    const PREFIX: &'static str = "component-";
    fn compile(engine: &Engine, wasm: &Path) -> Result<Self> {
        compile(engine, wasm)
    }
    fn serialize(&self) -> Result<Vec<u8>> {
        Ok(Component::serialize(self)?)
    }
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> Result<Self> {
        // SAFETY: passed on to the caller (the trait's contract).
        Ok(unsafe { Component::deserialize_file(engine, path) }?)
    }
}

fn compile(engine: &Engine, wasm: &Path) -> Result<Component> {
    Component::from_file(engine, wasm)
        .map_err(|e| anyhow::anyhow!("{}: not a usable component: {e:#}", wasm.display()))
}

/// Run one test on the component: a fresh instance of the snapshot, the harness protocol on
/// stdin, the same limits as the plain runtime.
pub(crate) async fn run_raw(
    engine: &Engine,
    pre: &Pre,
    job: &Job<'_>,
    token: &str,
) -> Result<RawRun> {
    // The seed reaches the guest as its random source: the entry module reseeds `random` from
    // it before each test.
    let (mut wasi, pipes) = wasi_for(job, token, &["python"]);
    let state = P2 {
        ctx: wasi.build(),
        table: ResourceTable::new(),
    };
    let store = new_store(engine, state, &job.limits)?;
    run_in(store, &job.limits, pipes, async |store| {
        let command = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| e.context(HostFailure))?;
        // `wasi:cli/run` returns only ok or err: no exit code to pass on.
        match command.wasi_cli_run().call_run(&mut *store).await? {
            Ok(()) => Ok(0),
            Err(()) => Ok(1),
        }
    })
    .await
}

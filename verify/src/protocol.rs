//! The harness protocol, common to both sandboxes: what a run is ([`Job`], [`Kind`], the
//! limits), what the guest reads on stdin and where its output goes, the store a run gets, and
//! what a run left ([`RawRun`]) before anything interprets it.

use crate::engine::{MemoryLimiter, RunState};
use crate::split::{Split, ValueTest};
use rlcode_core::records::Test;
use std::time::Duration;
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

pub(crate) const HARNESS: &str = include_str!("harness.py");

/// The analysis of assert tests (harness mode `p`), a module of its own so that the plain
/// runtime, which compiles the harness's source for every test, compiles it only for analyses.
pub(crate) const ANALYSIS: &str = include_str!("rlcode_analysis.py");

/// Room on stderr for the harness's reports beyond the program's cap: a value (at most 1 MiB
/// encoded, harness.py) and a line of detail.
pub(crate) const REPORT_ROOM: usize = (1 << 20) + (16 << 10);

/// Fuel each call from the guest into the host costs: enough that a loop of host calls ends
/// within the budget (a spinning `os.read(0, 0)` makes ~40k calls a second on the plain runtime,
/// so its 5 G budget ends one in ~2.5 s), too little to matter to ordinary programs (a test
/// makes ~30 host calls on the pre-initialized runtime, ~4,000 while the plain one starts:
/// 0.2 G of its 5 G).
pub const HOST_CALL_FUEL: u64 = 50_000;

/// The detail of a timeout by fuel exhaustion: the only deterministic kind of timeout.
pub const FUEL_EXHAUSTED: &str = "fuel budget exhausted";

/// The limits one test runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub fuel: u64,
    pub memory_bytes: usize,
    pub wall: Duration,
    pub stdout_bytes: usize,
    pub stderr_bytes: usize,
}

/// One unit of work: a program and one of its problem's tests, or an analysis run.
pub struct Job<'a> {
    pub program: &'a str,
    pub setup: &'a str,
    pub kind: Kind<'a>,
    pub limits: RunLimits,
    /// Seeds the guest's random source (and so Python's hash seed): the same job always sees the
    /// same randomness, so its verdict and fuel are reproducible.
    pub seed: [u8; 32],
}

/// What a run does with the program (the harness's modes; harness.py describes them).
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// An assert test run in the program's interpreter (mode `a`).
    Assert(&'a str),
    /// A value test (mode `v`): the program's value is compared on the host.
    Value(&'a ValueTest),
    /// A stdio test, or a `--capture` run (mode `s`).
    Stdio { stdin: &'a str },
    /// The analysis of assert tests, with no program (mode `p`): a JSON list.
    Analyse(&'a str),
}

impl<'a> Kind<'a> {
    /// How `test` runs, given its analysis (`None` for a stdio test or one never analysed).
    pub fn of(test: &'a Test, split: Option<&'a Split>) -> Kind<'a> {
        match (test, split) {
            (Test::Assert { .. }, Some(Split::Value(v))) => Kind::Value(v),
            (Test::Assert { .. }, Some(Split::Run(_, Some(exact)))) => Kind::Assert(exact),
            (Test::Assert { code }, _) => Kind::Assert(code),
            (Test::Stdio { stdin, .. }, _) => Kind::Stdio { stdin },
        }
    }
}

/// What the guest run ended with, before interpretation.
pub(crate) struct RawRun {
    pub exit: Result<i32, wasmtime::Error>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_full: bool,
    pub stderr_full: bool,
    pub memory_denied: bool,
    pub fuel: u64,
}

pub(crate) fn new_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("rlcode-{:032x}", rng.random::<u128>())
}

/// The harness's stdin: the token line, the fixed-size header, the texts, then the program's
/// own stdin (harness.py reads exactly the first parts and leaves the rest to the program).
pub(crate) fn stdin_bytes(job: &Job<'_>, token: &str) -> Vec<u8> {
    let (mode, test_text, program_stdin) = match job.kind {
        Kind::Assert(code) => ('a', code, ""),
        Kind::Value(v) => ('v', v.code.as_str(), ""),
        Kind::Stdio { stdin } => ('s', "", stdin),
        Kind::Analyse(tests) => ('p', tests, ""),
    };
    debug_assert_eq!(token.len(), 39, "harness.py reads a 40-byte token line");
    let mut b = format!(
        "{token}\n{:012} {:012} {:012} {mode}\n",
        job.program.len(),
        job.setup.len(),
        test_text.len()
    )
    .into_bytes();
    b.extend_from_slice(job.program.as_bytes());
    b.extend_from_slice(job.setup.as_bytes());
    b.extend_from_slice(test_text.as_bytes());
    b.extend_from_slice(program_stdin.as_bytes());
    b
}

pub(crate) fn seed_bytes(seed: &[u8; 32]) -> Vec<u8> {
    // Expand the 32-byte seed into a longer stream: CPython reads several kilobytes of entropy at
    // start-up (hash seed, random module), and `Deterministic` cycles through what it is given.
    let mut out = Vec::with_capacity(32 * 128);
    for i in 0u32..128 {
        out.extend_from_slice(&rlcode_core::hash::content_digest([
            &seed[..],
            &i.to_le_bytes()[..],
        ]));
    }
    out
}

/// The guest's stdout and stderr, each capped at its limit.
pub(crate) struct Pipes {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

/// A WASI context for one test: `argv`, the harness protocol on stdin, capped stdout and
/// stderr, and randomness from the job's seed. No preopened directories, no environment, no
/// network: the program sees only its stdin.
pub(crate) fn wasi_for(job: &Job<'_>, token: &str, argv: &[&str]) -> (WasiCtxBuilder, Pipes) {
    let pipes = Pipes {
        // One byte over each cap, so that output of exactly the cap fits and one byte more is
        // seen; stderr also has room for the harness's own reports, which are not the program's.
        stdout: MemoryOutputPipe::new(job.limits.stdout_bytes + 1),
        stderr: MemoryOutputPipe::new(job.limits.stderr_bytes + 1 + REPORT_ROOM),
    };
    let seed = seed_bytes(&job.seed);
    let mut b = WasiCtxBuilder::new();
    b.args(argv)
        .stdin(MemoryInputPipe::new(stdin_bytes(job, token)))
        .stdout(pipes.stdout.clone())
        .stderr(pipes.stderr.clone())
        .secure_random(wasmtime_wasi::Deterministic::new(seed.clone()))
        .insecure_random(wasmtime_wasi::Deterministic::new(seed))
        .insecure_random_seed(u128::from_le_bytes(job.seed[..16].try_into().expect("16")));
    (b, pipes)
}

/// A store for one test: its memory cap, its fuel budget, and an epoch deadline that yields to
/// the host every tick, so that the wall-clock deadline can cut off a computing guest.
pub(crate) fn new_store<W: 'static>(
    engine: &Engine,
    wasi: W,
    limits: &RunLimits,
) -> anyhow::Result<Store<RunState<W>>> {
    let mut store = Store::new(
        engine,
        RunState {
            wasi,
            limits: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                denied: false,
            },
        },
    );
    store.limiter(|s| &mut s.limits);
    store.set_fuel(limits.fuel)?;
    // Host calls burn no fuel by themselves, so a program spinning in them (os.read(0, 0)
    // returning EINTR forever on the plain runtime) would run until the wall clock: each one
    // costs a fixed amount, and such a loop ends, deterministically, when the fuel does.
    store.call_hook(|mut ctx, hook| {
        if matches!(hook, wasmtime::CallHook::CallingHost) {
            let left = ctx.get_fuel()?;
            ctx.set_fuel(left.saturating_sub(HOST_CALL_FUEL))?;
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    Ok(store)
}

/// Run `run` (instantiate and call the guest) under the job's wall-clock deadline, then collect
/// what it left in `store` and `pipes`.
pub(crate) async fn run_in<W: 'static>(
    mut store: Store<RunState<W>>,
    limits: &RunLimits,
    pipes: Pipes,
    run: impl AsyncFnOnce(&mut Store<RunState<W>>) -> wasmtime::Result<i32>,
) -> anyhow::Result<RawRun> {
    let outcome = tokio::time::timeout(limits.wall, run(&mut store)).await;
    let fuel = limits.fuel.saturating_sub(store.get_fuel()?);
    let memory_denied = store.data().limits.denied;
    drop(store);
    Ok(collect(
        outcome.ok(),
        limits,
        fuel,
        memory_denied,
        &pipes.stdout,
        &pipes.stderr,
    ))
}

/// What a run left: `outcome` is `None` when the wall-clock deadline cut it off, else the exit
/// code or the error it ended with (an exit through WASI's `proc_exit` / `exit` becomes its code).
pub(crate) fn collect(
    outcome: Option<wasmtime::Result<i32>>,
    limits: &RunLimits,
    fuel: u64,
    memory_denied: bool,
    stdout: &MemoryOutputPipe,
    stderr: &MemoryOutputPipe,
) -> RawRun {
    let (exit, timed_out) = match outcome {
        None => (Ok(0), true),
        Some(Ok(code)) => (Ok(code), false),
        Some(Err(e)) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(code) => (Ok(code.0), false),
            None => (Err(e), false),
        },
    };
    let out = stdout.contents().to_vec();
    let err = stderr.contents().to_vec();
    let full = exit
        .as_ref()
        .err()
        .is_some_and(|e| format!("{e:?}").contains("write beyond capacity"));
    RawRun {
        stdout_full: full || out.len() > limits.stdout_bytes,
        stderr_full: full || err.len() > limits.stderr_bytes + REPORT_ROOM,
        stdout: out,
        stderr: err,
        exit,
        timed_out,
        memory_denied,
        fuel,
    }
}

/// The bytes of stderr that are the program's: all but the harness's report lines.
pub(crate) fn program_stderr_len(stderr: &[u8], token: &str) -> usize {
    let reports: usize = stderr
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(token.as_bytes()))
        .map(|l| l.len() + 2)
        .sum();
    stderr.len().saturating_sub(reports)
}

/// Marks an error of the host side of the sandbox (creating or instantiating it): the only
/// errors that become `infra`. Everything that goes wrong once the guest runs is the program's.
#[derive(Debug)]
pub(crate) struct HostFailure;

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the sandbox could not be set up")
    }
}

/// The last report line the harness wrote after the token: `OK`, `EXC <phase> <type> <msg>` or
/// `EXIT <phase> <code>`.
pub(crate) fn harness_report<'a>(stderr: &'a str, token: &str) -> Option<&'a str> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(token).map(str::trim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_is_found_after_the_token_only() {
        let err = "noise\nrlcode-x fake\n\nrlcode-abc EXC test AssertionError \n";
        assert_eq!(
            harness_report(err, "rlcode-abc"),
            Some("EXC test AssertionError")
        );
        assert_eq!(harness_report("rlcode-abcd OK", "rlcode-abce"), None);
    }
}

//! One test of one program in a fresh instance, and what its outcome means.

use crate::runtime::{MemoryLimiter, ModuleState, RunState, Runtime, Sandbox};
use crate::split::{Split, ValueTest};
use rlcode_core::records::{Status, Test, TestResult};
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

pub(crate) const HARNESS: &str = include_str!("harness.py");
/// The analysis of assert tests (harness mode `p`), a module of its own so that the plain
/// runtime, which compiles the harness's source for every test, compiles it only for analyses.
pub(crate) const ANALYSIS: &str = include_str!("rlcode_analysis.py");

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

thread_local! {
    // One single-threaded tokio runtime per worker thread: the WASI host calls are async so that
    // a guest blocked in one (time.sleep) can still be cut off at its deadline.
    static TOKIO: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime");
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

/// Run one test: `job.kind` must be how `test` runs ([`Kind::of`]).
pub fn run_test(rt: &Runtime, job: &Job<'_>, test: &Test) -> TestResult {
    let expect = match (test, job.kind) {
        (_, Kind::Value(v)) => Expect::Value(v),
        (Test::Assert { .. }, _) => Expect::Completion,
        (Test::Stdio { stdout, .. }, _) => Expect::Stdout(stdout),
    };
    run_job(rt, job, expect).0
}

/// What a run must do to pass.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect<'a> {
    /// Run an assert test's code to completion.
    Completion,
    /// Run a program to its end, or exit with 0 (`rl-verify --capture`); any output.
    CleanExit,
    /// Run to completion (or exit with 0) and print this.
    Stdout(&'a str),
    /// Report a value that passes this check.
    Value(&'a ValueTest),
}

/// Run a job and classify its outcome; also returns what the program printed on stdout.
pub(crate) fn run_job(rt: &Runtime, job: &Job<'_>, expect: Expect<'_>) -> (TestResult, Vec<u8>) {
    let (result, stdout, _, _) = run_job_full(rt, job, expect);
    (result, stdout)
}

/// [`run_job`], also returning stderr and the run's token.
pub(crate) fn run_job_full(
    rt: &Runtime,
    job: &Job<'_>,
    expect: Expect<'_>,
) -> (TestResult, Vec<u8>, Vec<u8>, String) {
    let start = Instant::now();
    let token = new_token();
    let raw = TOKIO.with(|tokio| {
        tokio.block_on(async {
            match &rt.sandbox {
                Sandbox::Module(pre) => run_raw(rt, pre, job, &token).await,
                Sandbox::Component(pre) => crate::component::run_raw(rt, pre, job, &token).await,
            }
        })
    });
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let (status, detail, fuel, stdout, stderr) = match raw {
        Ok(raw) => {
            let (status, detail) = classify(expect, &token, &raw, &job.limits);
            (status, detail, Some(raw.fuel), raw.stdout, raw.stderr)
        }
        Err(e) => (
            Status::Infra,
            Some(format!("sandbox failure: {e:#}")),
            None,
            Vec::new(),
            Vec::new(),
        ),
    };
    let result = TestResult {
        status,
        detail: detail.map(|d| truncate(&d, 400)),
        fuel,
        ms: Some((ms * 1000.0).round() / 1000.0),
    };
    (result, stdout, stderr, token)
}

fn new_token() -> String {
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
    rt: &Runtime,
    wasi: W,
    limits: &RunLimits,
) -> anyhow::Result<Store<RunState<W>>> {
    let mut store = Store::new(
        &rt.engine,
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

async fn run_raw(
    rt: &Runtime,
    pre: &wasmtime::InstancePre<ModuleState>,
    job: &Job<'_>,
    token: &str,
) -> anyhow::Result<RawRun> {
    let source = plain_source(&job.kind);
    let (mut wasi, pipes) = wasi_for(job, token, &["python", "-I", "-S", "-B", "-c", source]);
    let store = new_store(rt, wasi.build_p1(), &job.limits)?;
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
fn program_stderr_len(stderr: &[u8], token: &str) -> usize {
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

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The last report line the harness wrote after the token: `OK`, `EXC <phase> <type> <msg>` or
/// `EXIT <phase> <code>`.
fn harness_report<'a>(stderr: &'a str, token: &str) -> Option<&'a str> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(token).map(str::trim))
}

/// stdout equals the expected output up to trailing white space at the ends of lines and of the
/// output.
pub fn stdout_matches(got: &str, want: &str) -> bool {
    fn norm(s: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = s.lines().map(str::trim_end).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
    norm(got) == norm(want)
}

fn last_stderr_line(stderr: &str, token: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with(token))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn classify(
    expect: Expect<'_>,
    token: &str,
    raw: &RawRun,
    limits: &RunLimits,
) -> (Status, Option<String>) {
    let stderr_full =
        raw.stderr_full || program_stderr_len(&raw.stderr, token) > limits.stderr_bytes;
    if raw.stdout_full || stderr_full {
        let which = if raw.stdout_full { "stdout" } else { "stderr" };
        return (Status::OutputLimit, Some(format!("{which} over its cap")));
    }
    if raw.timed_out {
        return (Status::Timeout, Some("wall-clock deadline".into()));
    }
    let stderr = String::from_utf8_lossy(&raw.stderr);
    let code = match &raw.exit {
        Ok(code) => *code,
        Err(e) => {
            return match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => (Status::Timeout, Some(FUEL_EXHAUSTED.into())),
                Some(Trap::Interrupt) => (Status::Timeout, Some("interrupted".into())),
                Some(trap) if raw.memory_denied => {
                    (Status::Memory, Some(format!("memory cap reached ({trap})")))
                }
                Some(Trap::StackOverflow) => (Status::Error, Some("stack overflow".into())),
                // Any other trap is the guest crashing (CPython aborting, say): the program's
                // doing, with whatever CPython said last.
                Some(trap) => (
                    Status::Error,
                    Some(format!("{trap}: {}", last_stderr_line(&stderr, token))),
                ),
                // The host side of the sandbox failed before the guest ran.
                None if e.downcast_ref::<HostFailure>().is_some() => {
                    (Status::Infra, Some(format!("{e:#}")))
                }
                // A host call the guest made failed (an empty poll list, an exit status WASI
                // cannot carry): the program asked for it.
                None => (
                    Status::Error,
                    Some(format!("the sandbox refused a host call: {e:#}")),
                ),
            };
        }
    };
    let report = harness_report(&stderr, token);
    match report {
        Some(r) if r.starts_with("EXC ") => {
            let mut parts = r[4..].splitn(3, ' ');
            let phase = parts.next().unwrap_or("");
            let kind = parts.next().unwrap_or("");
            let msg = parts.next().unwrap_or("").trim();
            let detail = if msg.is_empty() {
                format!("{kind} (in {phase})")
            } else {
                format!("{kind}: {msg} (in {phase})")
            };
            // `memory` only when the cap was hit and the program did not recover: a MemoryError
            // it caught is followed by its own result, and one raised without the cap (the
            // parser's "too complex") is an ordinary error.
            if kind == "MemoryError" && raw.memory_denied {
                (Status::Memory, Some(detail))
            } else if kind == "AssertionError" && phase == "test" {
                (Status::Fail, Some(detail))
            } else {
                (Status::Error, Some(detail))
            }
        }
        Some(r) if r.starts_with("EXIT ") => (
            Status::Error,
            Some(format!(
                "SystemExit {} before the test completed",
                r[5..].trim()
            )),
        ),
        Some(r) if r.starts_with("VALUE ") => match expect {
            Expect::Value(v) => v.judge(&r[6..]),
            _ => (
                Status::Error,
                Some("a value where none was asked for".into()),
            ),
        },
        Some("OK") => match expect {
            Expect::Completion | Expect::CleanExit => (Status::Pass, None),
            Expect::Stdout(stdout) => stdio_verdict(&raw.stdout, stdout),
            Expect::Value(_) => (
                Status::Error,
                Some("the test's value was never reported".into()),
            ),
        },
        _ if raw.memory_denied => (Status::Memory, Some("memory cap reached".into())),
        // The program ended the interpreter itself (os._exit, a signal-like abort): an assert
        // test never reached its end; a stdio test is judged on its output if it exited with 0.
        _ => match expect {
            Expect::Stdout(stdout) if code == 0 => stdio_verdict(&raw.stdout, stdout),
            Expect::CleanExit if code == 0 => (Status::Pass, None),
            _ => (
                Status::Error,
                Some(format!(
                    "exited with code {code} before the test completed{}",
                    match last_stderr_line(&stderr, token) {
                        l if l.is_empty() => String::new(),
                        l => format!(": {l}"),
                    }
                )),
            ),
        },
    }
}

fn stdio_verdict(got: &[u8], want: &str) -> (Status, Option<String>) {
    let got = String::from_utf8_lossy(got);
    if stdout_matches(&got, want) {
        (Status::Pass, None)
    } else {
        (
            Status::Fail,
            Some(format!("wrong output: {:?}", truncate(got.trim_end(), 120))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_comparison_ignores_trailing_white_space_only() {
        assert!(stdout_matches("3\n", "3"));
        assert!(stdout_matches("a  \nb\n\n\n", "a\nb"));
        assert!(!stdout_matches(" 3", "3"));
        assert!(!stdout_matches("a\n\nb", "a\nb"));
        assert!(stdout_matches("", "\n"));
    }

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

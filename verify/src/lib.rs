//! rl-verify: runs every test of every sample in a wasmtime sandbox (CPython on WASI) and adds a
//! `verdict` to each sample.
//!
//! Every test runs in a fresh instance under a fuel budget (deterministic), a wall-clock
//! deadline that also covers time blocked in host calls, a memory cap and caps on captured
//! output. The guest has no preopened directories, no environment, no network, no subprocesses.
//! Output order equals input order whatever `--jobs` is.

pub mod component;
pub mod exec;
pub mod runtime;

use exec::{Job, RunLimits, run_test};
use rayon::prelude::*;
use rlcode_core::cli::InputArgs;
use rlcode_core::jsonl::{JsonlReader, JsonlWriter, Line, Skipper};
use rlcode_core::records::{Limits, ProblemSet, Status, Verdict};
use rlcode_core::{Error, ExitCode, RecordError};
use runtime::Runtime;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const PROGRAM: &str = "rl-verify";

/// Default fuel per test. Interpreter start-up burns ~0.26 G units and the heaviest HumanEval
/// reference test 1.73 G. Fuel, not the wall clock, must be what stops a busy program, or its
/// verdict would depend on the machine's load: at the 3.4 G units/s measured here this is
/// ~1.5 s of work, well inside the wall-clock deadline even on a loaded machine.
pub const DEFAULT_FUEL: u64 = 5_000_000_000;
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// The wall-clock deadline is the backstop for time spent blocked in host calls (sleeping).
pub const DEFAULT_WALL_MS: u64 = 15_000;

/// Verify samples: run every test of every sample in a sandbox and write verdicts.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "rl-verify", version, about)]
pub struct Args {
    /// Problems file (JSONL) with the tests of every problem the samples refer to.
    #[arg(long, value_name = "FILE")]
    pub problems: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Fuel budget per test (deterministic CPU limit); a problem's `limits.fuel` overrides it.
    #[arg(long, default_value_t = DEFAULT_FUEL)]
    pub fuel: u64,
    /// Memory cap per test in MiB; a problem's `limits.memory_mb` overrides it.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MB)]
    pub memory_mb: u64,
    /// Wall-clock deadline per test in ms, time blocked in host calls included; a problem's
    /// `limits.wall_ms` overrides it.
    #[arg(long, default_value_t = DEFAULT_WALL_MS)]
    pub wall_ms: u64,
    /// Cap on each test's captured stdout, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub max_stdout_kb: usize,
    /// Cap on each test's captured stderr, in KiB.
    #[arg(long, default_value_t = 256)]
    pub max_stderr_kb: usize,
    /// Which sandbox runs the tests: `preinit`, CPython 3.14 pre-initialized (a WASI preview-2
    /// component, ~1 ms of start-up per test), or `python`, plain CPython 3.12 on WASI preview 1
    /// (starts afresh for every test).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Preinit)]
    pub runtime: RuntimeKind,
    /// The plain runtime's Python (default: $RLCODE_PYTHON_WASM, or the one scripts/setup.sh
    /// fetched).
    #[arg(long, value_name = "PATH")]
    pub python_wasm: Option<PathBuf>,
    /// The pre-initialized runtime's component (default: $RLCODE_PREINIT_WASM, or the one
    /// scripts/setup.sh built).
    #[arg(long, value_name = "PATH")]
    pub preinit_wasm: Option<PathBuf>,
    /// Where compiled modules are cached (default: <cache dir>/modules).
    #[arg(long, value_name = "DIR")]
    pub module_cache: Option<PathBuf>,
    /// Compile the module afresh and do not cache it.
    #[arg(long)]
    pub no_module_cache: bool,
    /// Samples verified per batch (memory stays bounded; output is written batch by batch).
    #[arg(long, default_value_t = 256, hide = true)]
    pub batch: usize,
}

/// The sandboxes `--runtime` chooses between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Preinit,
    Python,
}

/// Counts for the closing summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub samples: usize,
    pub tests: usize,
    pub statuses: BTreeMap<Status, usize>,
    pub seconds: f64,
}

impl Summary {
    pub fn line(&self) -> String {
        let statuses: Vec<String> = Status::ALL
            .iter()
            .filter_map(|s| self.statuses.get(s).map(|n| format!("{} {n}", s.as_str())))
            .collect();
        format!(
            "{PROGRAM}: {} samples, {} tests ({}) in {:.2} s, {:.1} tests/s",
            self.samples,
            self.tests,
            if statuses.is_empty() {
                "none".to_string()
            } else {
                statuses.join(", ")
            },
            self.seconds,
            self.tests as f64 / self.seconds.max(1e-9)
        )
    }
}

fn limits_for(args: &Args, overrides: Option<Limits>) -> RunLimits {
    let o = overrides.unwrap_or_default();
    RunLimits {
        fuel: o.fuel.unwrap_or(args.fuel),
        memory_bytes: (o.memory_mb.unwrap_or(args.memory_mb) as usize) << 20,
        wall: Duration::from_millis(o.wall_ms.unwrap_or(args.wall_ms)),
        stdout_bytes: args.max_stdout_kb << 10,
        stderr_bytes: args.max_stderr_kb << 10,
    }
}

/// A sample that passed validation, ready to run.
struct Pending {
    line: Line,
    problem: usize,
    code: String,
}

fn validate(problems: &ProblemSet, line: Line) -> Result<Pending, RecordError> {
    let problem_id = line.str_field("problem_id")?;
    let idx = problems
        .position(problem_id)
        .ok_or_else(|| line.error(format!("unknown problem_id \"{problem_id}\"")))?;
    let code = line.str_field("code")?.to_string();
    Ok(Pending {
        line,
        problem: idx,
        code,
    })
}

/// Run every test of every pending sample on the pool, in input order.
fn verify_batch(
    rt: &Runtime,
    pool: &rayon::ThreadPool,
    args: &Args,
    problems: &ProblemSet,
    batch: &[Pending],
) -> Vec<Verdict> {
    let mut jobs = Vec::new();
    for (si, p) in batch.iter().enumerate() {
        let prob = &problems.problems[p.problem];
        let limits = limits_for(args, prob.limits);
        for (ti, test) in prob.tests.iter().enumerate() {
            let seed_hex = rlcode_core::hash::content_hash([
                prob.id.as_bytes(),
                p.code.as_bytes(),
                &(ti as u64).to_le_bytes(),
            ]);
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&hex::decode(seed_hex).expect("hex")[..32]);
            jobs.push((
                si,
                Job {
                    program: &p.code,
                    setup: prob.setup.as_deref().unwrap_or(""),
                    test,
                    limits,
                    seed,
                },
            ));
        }
    }
    let results: Vec<_> = pool.install(|| {
        jobs.par_iter()
            .with_max_len(1)
            .map(|(si, job)| (*si, run_test(rt, job)))
            .collect()
    });
    let mut per_sample: Vec<Vec<_>> = vec![Vec::new(); batch.len()];
    for (si, r) in results {
        per_sample[si].push(r);
    }
    per_sample
        .into_iter()
        .map(|tests| Verdict::from_tests(tests, rt.id.clone(), false))
        .collect()
}

/// Read samples from `args.input`, write verdicts to `out`.
pub fn run(args: &Args, out: impl Write) -> Result<ExitCode, Error> {
    let problems = ProblemSet::load(&args.problems)?;
    let reader = JsonlReader::open(&args.input.inputs)?;
    let cache = if args.no_module_cache {
        None
    } else {
        Some(
            args.module_cache
                .clone()
                .unwrap_or_else(|| rlcode_core::paths::cache_dir().join("modules")),
        )
    };
    let rt = match args.runtime {
        RuntimeKind::Python => Runtime::load(
            &args
                .python_wasm
                .clone()
                .unwrap_or_else(runtime::default_python_wasm),
            cache.as_deref(),
        )?,
        RuntimeKind::Preinit => Runtime::load_preinit(
            &args
                .preinit_wasm
                .clone()
                .unwrap_or_else(component::default_preinit_wasm),
            cache.as_deref(),
        )?,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.unwrap_or(0))
        .build()
        .map_err(|e| {
            Error::Usage(format!(
                "cannot start {} worker threads: {e}",
                args.jobs.unwrap_or(0)
            ))
        })?;
    verify_stream(&rt, &pool, args, &problems, reader, out)
}

fn verify_stream(
    rt: &Runtime,
    pool: &rayon::ThreadPool,
    args: &Args,
    problems: &ProblemSet,
    mut reader: JsonlReader,
    out: impl Write,
) -> Result<ExitCode, Error> {
    let mut writer = JsonlWriter::new(out);
    let mut skipper = Skipper::new(PROGRAM, args.input.keep_going);
    let mut summary = Summary::default();
    let started = Instant::now();
    let progress = progress_bar();
    loop {
        let (lines, bad_line) = reader.next_batch(args.batch.max(1))?;
        let at_end = lines.is_empty() && bad_line.is_none();
        let mut pending = Vec::with_capacity(lines.len());
        // A bad record stops the run after everything before it is written (unless
        // --keep-going): validate in order, and remember where to stop.
        let mut stop: Option<RecordError> = None;
        for line in lines {
            match validate(problems, line) {
                Ok(p) => pending.push(p),
                Err(e) => {
                    if let Err(Error::Record(e)) = skipper.skip(e) {
                        stop = Some(e);
                        break;
                    }
                }
            }
        }
        if stop.is_none()
            && let Some(e) = bad_line
            && let Err(Error::Record(e)) = skipper.skip(e)
        {
            stop = Some(e);
        }
        let verdicts = verify_batch(rt, pool, args, problems, &pending);
        for (p, v) in pending.into_iter().zip(verdicts) {
            summary.samples += 1;
            summary.tests += v.total;
            for t in &v.tests {
                *summary.statuses.entry(t.status).or_default() += 1;
            }
            progress.inc(v.total as u64);
            let mut record = p.line.value;
            record.insert(
                "verdict".into(),
                serde_json::to_value(&v).map_err(anyhow::Error::from)?,
            );
            writer.write(&record)?;
        }
        writer.flush()?;
        if let Some(e) = stop {
            finish(&progress, &mut summary, started);
            return Err(Error::Record(e));
        }
        if at_end {
            break;
        }
    }
    finish(&progress, &mut summary, started);
    Ok(skipper.exit_code())
}

fn finish(progress: &indicatif::ProgressBar, summary: &mut Summary, started: Instant) {
    progress.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", summary.line());
}

fn progress_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::no_length();
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} tests, {per_sec}, {elapsed}")
            .expect("template"),
    );
    pb
}

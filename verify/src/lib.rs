//! rl-verify: runs every test of every sample in a wasmtime sandbox (CPython on WASI) and adds a
//! `verdict` to each sample.
//!
//! Every test runs in a fresh instance under a fuel budget (deterministic), a wall-clock
//! deadline that also covers time blocked in host calls, a memory cap and caps on captured
//! output. The guest has no preopened directories, no environment, no network, no subprocesses.
//! Output order equals input order whatever `--jobs` is.
//!
//! Per-test results are cached in SQLite (see [`cache`]); the runtime is only loaded once some
//! test is not in the cache.
//!
//! Modules, leaves first: [`value`] and [`split`] (values and value tests), [`engine`]
//! (wasmtime settings, store state, compiled-artifact cache), [`protocol`] (the harness
//! protocol: jobs, stdin, what a run left), the two backends [`module`] and [`component`],
//! [`runtime`] (loading one and dispatching runs to it), [`exec`] (a run's verdict),
//! [`analysis`] (splitting assert tests), [`cache`] (the verdict cache); then the batch loop
//! here, [`capture`] and [`serve`] on top.

pub mod analysis;
pub mod cache;
pub mod capture;
pub mod component;
pub mod engine;
pub mod exec;
pub mod module;
pub mod protocol;
pub mod runtime;
pub mod serve;
pub mod split;
pub mod value;

use analysis::Analysis;
use cache::{Key, KeyContext, VerdictCache};
use exec::run_test;
use protocol::{Job, Kind, RunLimits};
use rayon::prelude::*;
use rlcode_core::cli::InputArgs;
use rlcode_core::jsonl::{JsonlReader, JsonlWriter, Line, Skipper};
use rlcode_core::records::{Limits, ProblemSet, Status, TestResult, Verdict};
use rlcode_core::{Error, ExitCode, RecordError};
use runtime::Runtime;
pub use runtime::RuntimeKind;
use split::Split;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const PROGRAM: &str = "rl-verify";

/// Default fuel per test on the plain runtime (`--runtime python`). Interpreter start-up burns
/// ~0.26 G units and the heaviest HumanEval reference test 1.73 G. Fuel, not the wall clock,
/// must be what stops a busy program, or its verdict would depend on the machine's load: at the
/// 3.4 G units/s measured here this is ~1.5 s of work, well inside the wall-clock deadline even
/// on a loaded machine.
pub const DEFAULT_FUEL: u64 = 5_000_000_000;
/// Default fuel per test on the pre-initialized runtime (the default). Its start-up is in the
/// snapshot (~1 M units per test instead of 0.26 G) and CPython 3.14 needs fewer units for the
/// same work: the heaviest HumanEval reference test burns 0.73 G here against 1.73 G on the plain
/// runtime, so 2 G is about the same budget of real work as 5 G there, 2.7x the heaviest
/// reference. It also bounds what a program that loops forever costs (~0.6 s of CPU).
pub const DEFAULT_FUEL_PREINIT: u64 = 2_000_000_000;
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// The wall-clock deadline is the backstop for time spent blocked in host calls (sleeping).
pub const DEFAULT_WALL_MS: u64 = 15_000;

/// Verify samples: run every test of every sample in a sandbox and write verdicts; or serve
/// the verifier over HTTP (`rl-verify serve`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rl-verify",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve the verifier over HTTP: /run_code (SandboxFusion's API), /verify, /health,
    /// /metrics (docs/serve.md).
    Serve(serve::ServeArgs),
}

/// Run the command line: verify (or capture) streams, or `serve`.
pub fn run_cli(cli: &Cli, out: impl Write) -> Result<ExitCode, Error> {
    match &cli.command {
        Some(Command::Serve(a)) => serve::run(a),
        None => run(&cli.args, out),
    }
}

/// Verify samples: run every test of every sample in a sandbox and write verdicts.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "rl-verify", version, about)]
pub struct Args {
    /// Problems file (JSONL) with the tests of every problem the samples refer to.
    #[arg(long, value_name = "FILE", required_unless_present = "capture")]
    pub problems: Option<PathBuf>,
    /// Run programs instead of verifying samples: records `{"id", "program", "stdin"?,
    /// "limits"?, "seed"?}` in, each with `status`, `stdout`, `detail`, `fuel`, `ms` and
    /// `runtime` added out (docs/formats.md). Never cached.
    #[arg(long, conflicts_with_all = ["problems", "cache"])]
    pub capture: bool,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Samples verified per batch (memory stays bounded; output is written batch by batch).
    #[arg(long, default_value_t = 256, hide = true)]
    pub batch: usize,
}

/// The sandbox, its limits and the verdict cache: what `rl-verify` and `rl-verify serve` share.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Fuel budget per test (deterministic CPU limit); a problem's `limits.fuel` overrides it.
    /// Default: 2000000000 with `--runtime preinit`, 5000000000 with `--runtime python`.
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u64).range(1..=10_000_000_000_000))]
    pub fuel: Option<u64>,
    /// Memory cap per test in MiB; a problem's `limits.memory_mb` overrides it.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MB, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub memory_mb: u64,
    /// Wall-clock deadline per test in ms, time blocked in host calls included; a problem's
    /// `limits.wall_ms` overrides it.
    #[arg(long, default_value_t = DEFAULT_WALL_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
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
    /// Allocate every test's instance afresh instead of reusing pooled, pre-mapped slots
    /// (slower; for comparison and for hosts that refuse the pool's address-space reservation).
    #[arg(long, hide = true)]
    pub no_pool: bool,
    /// How a pooled slot is reset to the snapshot after a test: `dirty` (copy back only the
    /// pages it wrote; `copy` where the kernel lacks PAGEMAP_SCAN) or `copy` (all of it; for
    /// comparison).
    #[arg(long, hide = true, value_enum, default_value_t = engine::SlotReset::Dirty)]
    pub slot_reset: engine::SlotReset,
    /// The verdict cache, an SQLite file shared safely by concurrent runs (default:
    /// $RLCODE_VERDICT_CACHE, or <cache dir>/verdicts.sqlite; RLCODE_VERDICT_CACHE=off is
    /// --no-cache).
    #[arg(long, value_name = "PATH")]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the verdict cache: run every test.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
}

/// Where the verdict cache is, or `None` when it is off.
pub fn cache_path(args: &SandboxArgs) -> Option<PathBuf> {
    if args.no_cache {
        return None;
    }
    if let Some(p) = &args.cache {
        return Some(p.clone());
    }
    match std::env::var_os("RLCODE_VERDICT_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(rlcode_core::paths::cache_dir().join("verdicts.sqlite")),
    }
}

/// Counts for the closing summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub samples: usize,
    pub tests: usize,
    pub statuses: BTreeMap<Status, usize>,
    pub seconds: f64,
    /// Verdict cache counts; `None` when the cache is off.
    pub cache: Option<CacheCounts>,
    /// A `--capture` run: programs, not samples and tests.
    pub capture: bool,
    /// The tests run (not from the cache) by how they ran: value tests compared on the host,
    /// assert tests run in the program's interpreter, stdio tests.
    pub ran: RanCounts,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RanCounts {
    pub value: usize,
    pub in_interpreter: usize,
    pub stdio: usize,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CacheCounts {
    /// Tests whose result came from the cache.
    pub hits: usize,
    /// Tests not in the cache (run now, or copied from an identical test of the same batch).
    pub misses: usize,
    /// Misses that were not run: an identical test earlier in the same batch was.
    pub duplicates: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        let statuses: Vec<String> = Status::ALL
            .iter()
            .filter_map(|s| self.statuses.get(s).map(|n| format!("{} {n}", s.as_str())))
            .collect();
        let statuses = if statuses.is_empty() {
            "none".to_string()
        } else {
            statuses.join(", ")
        };
        if self.capture {
            return format!(
                "{PROGRAM}: {} programs ({statuses}) in {:.2} s",
                self.tests, self.seconds
            );
        }
        let cache = match self.cache {
            None => "; verdict cache off".to_string(),
            Some(c) if c.duplicates > 0 => format!(
                "; verdict cache: {} hits, {} misses ({} of them duplicates, not rerun)",
                c.hits, c.misses, c.duplicates
            ),
            Some(c) => format!("; verdict cache: {} hits, {} misses", c.hits, c.misses),
        };
        let r = self.ran;
        let ran = if r.value + r.in_interpreter + r.stdio == 0 {
            String::new()
        } else {
            format!(
                "; run: {} value tests compared on the host, {} assert tests in the program's \
                 interpreter, {} stdio",
                r.value, r.in_interpreter, r.stdio
            )
        };
        format!(
            "{PROGRAM}: {} samples, {} tests ({}) in {:.2} s, {:.1} tests/s{cache}{ran}",
            self.samples,
            self.tests,
            statuses,
            self.seconds,
            self.tests as f64 / self.seconds.max(1e-9)
        )
    }
}

/// The fuel budget when neither `--fuel` nor the problem sets one.
pub fn default_fuel(args: &SandboxArgs) -> u64 {
    args.fuel.unwrap_or(match args.runtime {
        RuntimeKind::Preinit => DEFAULT_FUEL_PREINIT,
        RuntimeKind::Python => DEFAULT_FUEL,
    })
}

pub(crate) fn limits_for(args: &SandboxArgs, overrides: Option<Limits>) -> RunLimits {
    let o = overrides.unwrap_or_default();
    RunLimits {
        fuel: o.fuel.unwrap_or(default_fuel(args)),
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

/// What [`verify_batch`] needs of a sample: its problem (an index into the problem set) and
/// its program.
pub(crate) struct SampleRef<'a> {
    pub problem: usize,
    pub code: &'a str,
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

/// The guest's random seed for test `ti` of a program is
/// `content_hash([problem id, program, ti as u64 LE])`: the hash state after the first two parts,
/// shared by a sample's tests.
fn seed_prefix(problem_id: &str, program: &str) -> sha2::Sha256 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [problem_id.as_bytes(), program.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h
}

fn test_seed(prefix: &sha2::Sha256, ti: usize) -> [u8; 32] {
    use sha2::Digest;
    let mut h = prefix.clone();
    h.update(8u64.to_le_bytes());
    h.update((ti as u64).to_le_bytes());
    h.finalize().into()
}

/// The runtime, loaded on first use: a run whose every test is in the cache compiles and
/// instantiates nothing. Shared by the requests of `rl-verify serve` (it is `Sync`).
pub(crate) struct LazyRuntime {
    kind: RuntimeKind,
    /// What [`Runtime::id`] will be: the cache keys on it.
    id: String,
    wasm: PathBuf,
    module_cache: Option<PathBuf>,
    concurrency: engine::Concurrency,
    rt: std::sync::OnceLock<Runtime>,
    /// How each assert test seen so far runs ([`split`]), found on this runtime.
    splits: std::sync::Mutex<HashMap<Analysis, Split>>,
}

impl LazyRuntime {
    pub(crate) fn get(&self) -> Result<&Runtime, Error> {
        if let Some(rt) = self.rt.get() {
            return Ok(rt);
        }
        let rt = match self.kind {
            RuntimeKind::Python => {
                Runtime::load(&self.wasm, self.module_cache.as_deref(), self.concurrency)?
            }
            RuntimeKind::Preinit => {
                Runtime::load_preinit(&self.wasm, self.module_cache.as_deref(), self.concurrency)?
            }
        };
        if rt.id != self.id {
            return Err(Error::Msg(format!(
                "{}: the sandbox's Python changed during the run ({} became {})",
                self.wasm.display(),
                self.id,
                rt.id
            )));
        }
        // A concurrent first use may have loaded one too: either is the same runtime.
        let _ = self.rt.set(rt);
        Ok(self.rt.get().expect("loaded"))
    }

    /// What [`Runtime::id`] is (known before loading).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// How each of `tests` runs: the splits found before, and the others analysed now (on the
    /// calling rayon pool) and remembered.
    fn splits_for(&self, rt: &Runtime, tests: &[&Analysis]) -> Vec<Split> {
        let fresh: Vec<Analysis> = {
            let known = self.splits.lock().expect("splits");
            let mut fresh: Vec<Analysis> = Vec::new();
            for a in tests {
                if !known.contains_key(*a) && !fresh.contains(a) {
                    fresh.push((*a).clone());
                }
            }
            fresh
        };
        let found = if fresh.is_empty() {
            Vec::new()
        } else {
            analysis::analyse(rt, &fresh)
        };
        let mut known = self.splits.lock().expect("splits");
        known.extend(fresh.into_iter().zip(found));
        tests.iter().map(|a| known[*a].clone()).collect()
    }
}

/// The sandbox of a run: the runtime (loaded on first use), the worker pool, the verdict
/// cache; built the same way for `rl-verify` and `rl-verify serve`.
pub(crate) struct Sandbox {
    pub rt: LazyRuntime,
    pub pool: rayon::ThreadPool,
    pub cache: Option<Cache>,
}

impl Sandbox {
    /// With `verdict_cache`, the verdict cache of `args` (`cache_path`) is opened.
    pub(crate) fn open(args: &SandboxArgs, verdict_cache: bool) -> Result<Sandbox, Error> {
        let module_cache = if args.no_module_cache {
            None
        } else {
            Some(
                args.module_cache
                    .clone()
                    .unwrap_or_else(|| rlcode_core::paths::cache_dir().join("modules")),
            )
        };
        let wasm = match args.runtime {
            RuntimeKind::Python => args
                .python_wasm
                .clone()
                .unwrap_or_else(runtime::default_python_wasm),
            RuntimeKind::Preinit => args
                .preinit_wasm
                .clone()
                .unwrap_or_else(component::default_preinit_wasm),
        };
        let db = match verdict_cache {
            true => cache_path(args)
                .map(|path| VerdictCache::open(&path))
                .transpose()?,
            false => None,
        };
        // Hashing the 25 MB module costs more than looking up thousands of verdicts: with a
        // cache, its hash is remembered by file identity (size, times, inode).
        let (id, _) = match &db {
            Some(db) => runtime::identify_with(args.runtime, &wasm, |p| db.file_sha256(p))?,
            None => runtime::identify(args.runtime, &wasm)?,
        };
        let cache = db.map(|db| Cache {
            keys: KeyContext::new(&id),
            db: std::sync::Mutex::new(db),
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(args.jobs.unwrap_or(0))
            .build()
            .map_err(|e| {
                Error::Usage(format!(
                    "cannot start {} worker threads: {e}",
                    args.jobs.unwrap_or(0)
                ))
            })?;
        let rt = LazyRuntime {
            kind: args.runtime,
            id,
            wasm,
            module_cache,
            concurrency: (!args.no_pool).then(|| engine::Pool {
                slots: pool.current_num_threads(),
                reset: args.slot_reset,
            }),
            rt: std::sync::OnceLock::new(),
            splits: std::sync::Mutex::new(HashMap::new()),
        };
        Ok(Sandbox { rt, pool, cache })
    }
}

/// The verdict cache of a run and the key state its keys share. The connection is behind a
/// lock: `rl-verify serve` shares it between requests (SQLite serialises writers anyway).
pub(crate) struct Cache {
    db: std::sync::Mutex<VerdictCache>,
    keys: KeyContext,
}

impl Cache {
    fn lookup(&self, keys: &[Key]) -> anyhow::Result<Vec<Option<TestResult>>> {
        self.db.lock().expect("verdict cache").lookup(keys)
    }

    fn insert<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Key, &'a TestResult)>,
    ) -> anyhow::Result<usize> {
        self.db.lock().expect("verdict cache").insert(items)
    }
}

/// The detail of the results of a run abandoned by its caller (`rl-verify serve`: the client
/// went away or its deadline passed); `infra`, so never cached and never a program's verdict.
pub(crate) const CANCELLED: &str = "cancelled: the request was abandoned";

/// Run every test of every sample on the sandbox's pool, in input order; with a cache, only
/// the tests it does not hold, and each distinct one once per batch. With `cancel`, a test not
/// yet started when it is set is not run (its result is `infra`, [`CANCELLED`], never cached):
/// an abandoned request of `rl-verify serve` frees the workers.
pub(crate) fn verify_batch(
    sb: &Sandbox,
    args: &SandboxArgs,
    problems: &ProblemSet,
    batch: &[SampleRef<'_>],
    summary: &mut Summary,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<Verdict>, Error> {
    let cache = sb.cache.as_ref();
    let mut jobs = Vec::new();
    let mut keys: Vec<Key> = Vec::new();
    for (si, p) in batch.iter().enumerate() {
        let prob = &problems.problems[p.problem];
        let limits = limits_for(args, prob.limits);
        let setup = prob.setup.as_deref().unwrap_or("");
        let sample_key = cache.map(|c| c.keys.sample(&limits, p.code, setup));
        let seed_base = seed_prefix(&prob.id, p.code);
        for (ti, test) in prob.tests.iter().enumerate() {
            let seed = test_seed(&seed_base, ti);
            if let Some(k) = &sample_key {
                keys.push(k.test(&seed, test));
            }
            let analysis = match test {
                rlcode_core::records::Test::Assert { code } => Some(Analysis {
                    code: code.clone(),
                    rl_same: setup == rlcode_core::CODEIO_SETUP,
                }),
                _ => None,
            };
            jobs.push((si, test, analysis, limits, seed, p.code, setup));
        }
    }
    let mut results: Vec<Option<TestResult>> = match cache {
        Some(c) => c.lookup(&keys)?,
        None => vec![None; jobs.len()],
    };
    let from_cache: Vec<bool> = results.iter().map(Option::is_some).collect();
    // The tests to run; a test identical to one before it in this batch (the same key) is not
    // run again but gets that one's result.
    let mut run = Vec::new();
    let mut copies = Vec::new();
    let mut first: HashMap<&Key, usize> = HashMap::new();
    for (j, r) in results.iter().enumerate() {
        if r.is_some() {
            continue;
        }
        match keys.get(j) {
            Some(k) => match first.get(k) {
                Some(&src) => copies.push((j, src)),
                None => {
                    first.insert(k, j);
                    run.push(j);
                }
            },
            None => run.push(j),
        }
    }
    if let Some(counts) = summary.cache.as_mut() {
        counts.hits += from_cache.iter().filter(|&&h| h).count();
        counts.misses += run.len() + copies.len();
        counts.duplicates += copies.len();
    }
    if !run.is_empty() {
        let rt = sb.rt.get()?;
        // How each assert test to run runs: split once per distinct test (docs/security.md).
        let asserts: Vec<&Analysis> = run.iter().filter_map(|&j| jobs[j].2.as_ref()).collect();
        let found = sb.pool.install(|| sb.rt.splits_for(rt, &asserts));
        let mut found = found.into_iter();
        let splits: Vec<Option<Split>> = run
            .iter()
            .map(|&j| {
                jobs[j]
                    .2
                    .as_ref()
                    .map(|_| found.next().expect("one per test"))
            })
            .collect();
        for (&j, split) in run.iter().zip(&splits) {
            match Kind::of(jobs[j].1, split.as_ref()) {
                Kind::Value(_) => summary.ran.value += 1,
                Kind::Stdio { .. } => summary.ran.stdio += 1,
                _ => summary.ran.in_interpreter += 1,
            }
        }
        let ran: Vec<TestResult> = sb.pool.install(|| {
            run.par_iter()
                .zip(&splits)
                .with_max_len(1)
                .map(|(&j, split)| {
                    let (_, test, _, limits, seed, program, setup) = &jobs[j];
                    if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                        return TestResult {
                            status: Status::Infra,
                            detail: Some(CANCELLED.into()),
                            fuel: None,
                            ms: None,
                        };
                    }
                    let job = Job {
                        program,
                        setup,
                        kind: Kind::of(test, split.as_ref()),
                        limits: *limits,
                        seed: *seed,
                    };
                    run_test(rt, &job, test)
                })
                .collect()
        });
        // Stored before the verdicts are written: a verdict on stdout is in the cache.
        if let Some(c) = cache {
            c.insert(run.iter().map(|&j| &keys[j]).zip(&ran))?;
        }
        for (&j, r) in run.iter().zip(ran) {
            results[j] = Some(r);
        }
        for &(j, src) in &copies {
            results[j] = results[src].clone();
        }
    }
    let mut per_sample: Vec<(Vec<TestResult>, bool)> = vec![(Vec::new(), true); batch.len()];
    for (((si, ..), r), hit) in jobs.iter().zip(results).zip(from_cache) {
        let s = &mut per_sample[*si];
        s.0.push(r.expect("every test has a result"));
        s.1 &= hit;
    }
    Ok(per_sample
        .into_iter()
        .map(|(tests, all_hit)| {
            // `cached`: every test came from the cache, and there was at least one.
            let cached = all_hit && !tests.is_empty();
            Verdict::from_tests(tests, sb.rt.id().to_string(), cached)
        })
        .collect())
}

/// Read samples from `args.input`, write verdicts to `out` (or, with `--capture`, programs and
/// their output; see [`capture`]).
pub fn run(args: &Args, out: impl Write) -> Result<ExitCode, Error> {
    let problems = match &args.problems {
        Some(path) if !args.capture => Some(ProblemSet::load(path)?),
        _ => None,
    };
    let reader = JsonlReader::open(&args.input.inputs)?;
    let sb = Sandbox::open(&args.sandbox, problems.is_some())?;
    match problems {
        Some(problems) => verify_stream(&sb, args, &problems, reader, out),
        None => capture::run(&sb, args, reader, out),
    }
}

fn verify_stream(
    sb: &Sandbox,
    args: &Args,
    problems: &ProblemSet,
    mut reader: JsonlReader,
    out: impl Write,
) -> Result<ExitCode, Error> {
    let mut writer = JsonlWriter::new(out);
    let mut skipper = Skipper::new(PROGRAM, args.input.keep_going);
    let mut summary = Summary {
        cache: sb.cache.as_ref().map(|_| CacheCounts::default()),
        ..Summary::default()
    };
    let started = Instant::now();
    let progress = progress_bar();
    let result = for_each_batch(
        &mut reader,
        &mut skipper,
        args.batch,
        |line| validate(problems, line),
        |pending| {
            let refs: Vec<SampleRef<'_>> = pending
                .iter()
                .map(|p| SampleRef {
                    problem: p.problem,
                    code: &p.code,
                })
                .collect();
            let verdicts = verify_batch(sb, &args.sandbox, problems, &refs, &mut summary, None)?;
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
            Ok(())
        },
    );
    end_stream(result, &skipper, &progress, &mut summary, started)
}

/// Read `reader` in batches of `size` records, validate each record in order, and hand each
/// batch's valid ones to `handle` (which writes them). A bad record is skipped with
/// `--keep-going`; otherwise the run stops after everything before it is handled, with that
/// record's error.
pub(crate) fn for_each_batch<P>(
    reader: &mut JsonlReader,
    skipper: &mut Skipper,
    size: usize,
    mut validate: impl FnMut(Line) -> Result<P, RecordError>,
    mut handle: impl FnMut(Vec<P>) -> Result<(), Error>,
) -> Result<(), Error> {
    loop {
        let (lines, bad_line) = reader.next_batch(size.max(1))?;
        let at_end = lines.is_empty() && bad_line.is_none();
        let mut pending = Vec::with_capacity(lines.len());
        let mut stop = None;
        for line in lines.into_iter().map(&mut validate) {
            match line {
                Ok(p) => pending.push(p),
                Err(e) => {
                    if let Err(e) = skipper.skip(e) {
                        stop = Some(e);
                        break;
                    }
                }
            }
        }
        if stop.is_none()
            && let Some(e) = bad_line
        {
            stop = skipper.skip(e).err();
        }
        handle(pending)?;
        if let Some(e) = stop {
            return Err(e);
        }
        if at_end {
            return Ok(());
        }
    }
}

/// The end of a stream: the summary line on stderr (also when a bad record stopped the run), and
/// the exit code.
pub(crate) fn end_stream(
    result: Result<(), Error>,
    skipper: &Skipper,
    progress: &indicatif::ProgressBar,
    summary: &mut Summary,
    started: Instant,
) -> Result<ExitCode, Error> {
    if matches!(result, Ok(()) | Err(Error::Record(_))) {
        finish(progress, summary, started);
    }
    result.map(|()| skipper.exit_code())
}

pub(crate) fn finish(progress: &indicatif::ProgressBar, summary: &mut Summary, started: Instant) {
    progress.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", summary.line());
}

pub(crate) fn progress_bar() -> indicatif::ProgressBar {
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

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_are_the_content_hash_of_problem_program_and_index() {
        for (id, code, ti) in [("HumanEval/0", "def f(): pass\n", 0usize), ("p", "", 7)] {
            let want = rlcode_core::hash::content_hash([
                id.as_bytes(),
                code.as_bytes(),
                &(ti as u64).to_le_bytes(),
            ]);
            let got = super::test_seed(&super::seed_prefix(id, code), ti);
            assert_eq!(hex::encode(got), want);
        }
    }
}

#[cfg(test)]
mod default_fuel_tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["rl-verify", "--problems", "p.jsonl"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn the_default_budget_follows_the_runtime_and_fuel_overrides_it() {
        assert_eq!(default_fuel(&args(&[]).sandbox), DEFAULT_FUEL_PREINIT);
        assert_eq!(
            default_fuel(&args(&["--runtime", "preinit"]).sandbox),
            2_000_000_000
        );
        assert_eq!(
            default_fuel(&args(&["--runtime", "python"]).sandbox),
            5_000_000_000
        );
        assert_eq!(
            default_fuel(&args(&["--runtime", "python", "--fuel", "7"]).sandbox),
            7
        );
        let a = args(&["--fuel", "9"]).sandbox;
        assert_eq!(limits_for(&a, None).fuel, 9);
        let o = Limits {
            fuel: Some(11),
            ..Default::default()
        };
        assert_eq!(limits_for(&a, Some(o)).fuel, 11, "a problem's limit wins");
    }
}

//! CodeI/O (`reasoning_gym/data/codeio.jsonl.gz`: `task_description`, `input_output_spec`,
//! `code_sample` defining `main_solution(**inputs)`, `input_generator` defining
//! `generate_inputs(rng)`) to function-writing problems whose tests are generated in the sandbox.
//!
//! No dataset code runs on the host: every step that runs a record's Python is a program given
//! to `rl-verify --capture` (see `codeio_driver.py`), with the verifier's own limits and runtime.
//!
//! One sandbox run per record does both steps below (compiling the driver program costs more than
//! most input sets), under a fuel budget of `(tests + 1) ×` the verifier's default per-test
//! budget; a run cut off by it keeps the input sets it finished.
//!
//! 1. probe: every module the sample or the generator imports must be in the standard library
//!    (`sys.stdlib_module_names` of the sandbox's CPython), the sample must define
//!    `main_solution`, and both must load in the sandbox (the pre-initialized runtime bundles
//!    only part of the standard library).
//! 2. generate, for each input set `i < tests`: `generate_inputs(Random("rlcode-codeio/<seed>/
//!    <i>"))`, the output of `main_solution` on those inputs, both made JSON-like, and the assert
//!    test built from them, run once more against a second call of the reference. An input set
//!    that errors, is not JSON-like, makes a test over 16 KiB or is not reached before the fuel
//!    runs out is left out; a second call that disagrees makes the whole problem
//!    non-deterministic.
//! 3. check: every test of a problem that passes the rules below runs again alone, as the
//!    verifier runs it (per-test fuel budget, other randomness); a failure there makes the
//!    problem non-deterministic, running out of fuel drops the test.
//! 4. keep a problem if it is deterministic, has at least [`MIN_TESTS`] distinct tests, at
//!    least [`MIN_OUTPUTS`] distinct expected outputs, and no expected output shared by more
//!    than half of its tests (so that no constant answer passes most of them).

use rlcode_core::records::{Problem, Test};
use rlcode_core::{Error, JsonlReader, JsonlWriter, Line, RecordError, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The CodeI/O fields this importer reads; the others (`difficulty`, `clarity`, ...) are passed
/// through, except the generator, which is spent.
const FIELDS: [&str; 4] = [
    "task_description",
    "input_output_spec",
    "code_sample",
    "input_generator",
];

/// Fewest distinct tests a kept problem has.
pub const MIN_TESTS: usize = 5;
/// Fewest distinct expected outputs a kept problem has.
pub const MIN_OUTPUTS: usize = 3;

const DRIVER: &str = include_str!("codeio_driver.py");
/// The problems' `setup`: `_rl_same(got, want)`, the comparison every test makes.
pub const SETUP: &str = rlcode_core::CODEIO_SETUP;
const REPORT_PREFIX: &str = "@rlcodeio ";
/// rl-verify's default fuel per test on `runtime` (2 G units on `preinit`, 5 G on `python`); a
/// record's run gets this much per step, and the check run this much per test.
fn fuel_per_step(runtime: &str) -> u64 {
    if runtime == "python" {
        5_000_000_000
    } else {
        2_000_000_000
    }
}
/// The wall-clock backstop of a record's run (fuel, not this, stops busy programs).
const WALL_MS: u64 = 600_000;

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// Input sets generated per problem.
    pub tests: usize,
    /// Seeds the input generators.
    pub seed: u64,
    /// The `rl-verify` binary that runs the programs.
    pub verify_bin: PathBuf,
    /// Passed to `rl-verify --runtime` (`preinit` or `python`).
    pub runtime: String,
    /// Passed to `rl-verify --jobs`.
    pub jobs: Option<usize>,
}

/// Where `rl-verify` is: `$RLCODE_BIN/rl-verify`, else beside this executable.
pub fn default_verify_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("RLCODE_BIN") {
        return Path::new(&dir).join("rl-verify");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("rl-verify")))
        .unwrap_or_else(|| PathBuf::from("rl-verify"))
}

/// One CodeI/O record, as read.
#[derive(Debug, Clone)]
pub struct Record {
    pub index: usize,
    pub task: String,
    pub spec: String,
    pub code: String,
    pub generator: String,
    /// The fields passed through.
    pub extra: Map<String, Value>,
}

impl Record {
    pub fn from_line(line: &Line, index: usize) -> Result<Self, RecordError> {
        let mut extra = Map::new();
        extra.insert("source".into(), Value::from("codeio"));
        for (k, v) in &line.value {
            if !FIELDS.contains(&k.as_str()) {
                extra.insert(k.clone(), v.clone());
            }
        }
        Ok(Record {
            index,
            task: line.str_field("task_description")?.to_string(),
            spec: line.str_field("input_output_spec")?.to_string(),
            code: line.str_field("code_sample")?.to_string(),
            generator: line.str_field("input_generator")?.to_string(),
            extra,
        })
    }

    pub fn id(&self) -> String {
        format!("codeio/{}", self.index)
    }
}

/// Why a record was not kept (the stages, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drop {
    /// Imports a module outside the standard library.
    NonStdlib,
    /// Imports a standard-library module the sandbox does not have.
    MissingModule,
    /// Does not parse, has no `main_solution`, or fails to load.
    Broken,
    /// A second call of the reference disagreed with the first.
    NonDeterministic,
    /// Fewer than [`MIN_TESTS`] distinct tests survived.
    TooFewTests,
    /// Fewer than [`MIN_OUTPUTS`] distinct outputs, or one output in more than half the tests.
    OutputsBarelyVary,
}

impl Drop {
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::NonStdlib => "imports a non-stdlib module",
            Drop::MissingModule => "needs a stdlib module the sandbox lacks",
            Drop::Broken => "broken (syntax, no main_solution, fails to load)",
            Drop::NonDeterministic => "non-deterministic",
            Drop::TooFewTests => "fewer than 5 distinct tests",
            Drop::OutputsBarelyVary => "outputs barely vary",
        }
    }
}

/// What one input set gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOutcome {
    /// A test, and its expected output as canonical JSON text.
    Test {
        code: String,
        output: String,
    },
    NonDeterministic,
    /// Left out, and why (`error`, `timeout`, `not_json`, ...).
    Skipped(String),
}

/// What the probe of a record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Ok {
        signature: String,
        imports: Vec<String>,
    },
    Dropped(Drop, String),
}

/// The report line a capture's stdout ends with.
#[derive(Debug, Deserialize)]
struct Report {
    kind: String,
    /// `"probe"`, or the index of the input set.
    step: Value,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    imports: Vec<String>,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    output: Option<String>,
}

/// What `rl-verify --capture` said of one program.
#[derive(Debug, Deserialize)]
pub struct Captured {
    pub status: String,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub detail: Option<String>,
}

impl Captured {
    /// The driver's report of `step`: the last line marked with it.
    fn report(&self, step: &Value) -> Option<Report> {
        self.stdout
            .lines()
            .rev()
            .filter_map(|l| l.strip_prefix(REPORT_PREFIX))
            .filter_map(|r| serde_json::from_str::<Report>(r).ok())
            .find(|r| &r.step == step)
    }
}

fn program(record: &Record, seed: u64, tests: usize) -> String {
    let s = |t: &str| serde_json::to_string(t).expect("a string serializes");
    format!(
        "SRC = {}\nGEN = {}\nSETUP = {}\nSEED = {seed}\nTESTS = {tests}\n{DRIVER}",
        s(&record.code),
        s(&record.generator),
        s(SETUP),
    )
}

/// The probe's verdict on a record from its capture.
pub fn probe_outcome(c: &Captured) -> ProbeOutcome {
    let detail = |r: &Report| r.detail.clone().unwrap_or_default();
    match c.report(&Value::from("probe")) {
        Some(r) if r.kind == "ok" => ProbeOutcome::Ok {
            signature: r.signature.unwrap_or_default(),
            imports: r.imports,
        },
        Some(r) if r.kind == "non_stdlib" => {
            ProbeOutcome::Dropped(Drop::NonStdlib, r.modules.join(", "))
        }
        Some(r) if r.kind == "missing_module" => {
            ProbeOutcome::Dropped(Drop::MissingModule, detail(&r))
        }
        Some(r) => ProbeOutcome::Dropped(Drop::Broken, detail(&r)),
        None => ProbeOutcome::Dropped(
            Drop::Broken,
            format!("{}: {}", c.status, c.detail.clone().unwrap_or_default()),
        ),
    }
}

/// Input set `index`'s outcome from its record's capture.
pub fn set_outcome(c: &Captured, index: usize) -> SetOutcome {
    match c.report(&Value::from(index)) {
        Some(r) if r.kind == "ok" => match (r.test, r.output) {
            (Some(code), Some(output)) => SetOutcome::Test { code, output },
            _ => SetOutcome::Skipped("error".into()),
        },
        Some(r) if r.kind == "non_deterministic" => SetOutcome::NonDeterministic,
        Some(r) => SetOutcome::Skipped(r.kind),
        // No report: the run ended (out of fuel, say) before this input set.
        None if c.status == "pass" => SetOutcome::Skipped("error".into()),
        None => SetOutcome::Skipped(c.status.clone()),
    }
}

/// The tests a problem keeps (distinct, in input-set order), or why it is dropped.
pub fn decide(sets: &[SetOutcome]) -> std::result::Result<Vec<String>, Drop> {
    if sets.contains(&SetOutcome::NonDeterministic) {
        return Err(Drop::NonDeterministic);
    }
    let mut tests: Vec<String> = Vec::new();
    let mut outputs: HashMap<&str, usize> = HashMap::new();
    for s in sets {
        if let SetOutcome::Test { code, output } = s
            && !tests.contains(code)
        {
            tests.push(code.clone());
            *outputs.entry(output).or_default() += 1;
        }
    }
    if tests.len() < MIN_TESTS {
        return Err(Drop::TooFewTests);
    }
    let modal = outputs.values().copied().max().unwrap_or(0);
    if outputs.len() < MIN_OUTPUTS || 2 * modal > tests.len() {
        return Err(Drop::OutputsBarelyVary);
    }
    Ok(tests)
}

/// The prompt: the sample's top-level imports, then `def main_solution(<signature>):` and a
/// docstring holding the task description and the input/output spec.
pub fn prompt(record: &Record, signature: &str, imports: &[String]) -> String {
    let mut p = String::new();
    for i in imports {
        p.push_str(i);
        p.push('\n');
    }
    if !imports.is_empty() {
        p.push('\n');
    }
    let doc = format!("{}\n\n{}", record.task.trim(), record.spec.trim_end());
    let doc = doc.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"");
    p.push_str(&format!("def main_solution({signature}):\n    \"\"\""));
    for (i, line) in doc.lines().enumerate() {
        if i > 0 {
            p.push('\n');
            if !line.trim().is_empty() {
                p.push_str("    ");
            }
        }
        p.push_str(line.trim_end());
    }
    p.push_str("\n    \"\"\"\n");
    p
}

pub fn problem(
    record: &Record,
    signature: &str,
    imports: &[String],
    tests: Vec<String>,
) -> Problem {
    Problem {
        id: record.id(),
        prompt: prompt(record, signature, imports),
        language: "python".into(),
        entry_point: Some("main_solution".into()),
        tests: tests
            .into_iter()
            .map(|code| Test::Assert { code })
            .collect(),
        setup: Some(SETUP.to_string()),
        reference: Some(record.code.clone()),
        limits: None,
        extra: record.extra.clone(),
    }
}

fn count_skipped(stats: &mut ImportStats, outcomes: &[SetOutcome]) {
    for o in outcomes {
        if let SetOutcome::Skipped(why) = o {
            *stats.skipped_sets.entry(why.clone()).or_default() += 1;
        }
    }
}

/// One test run as the verifier runs an assert test: the program as module `solution`, then
/// the setup, then the test, in one scope.
fn check_program(reference: &str, test: &str) -> String {
    let s = |t: &str| serde_json::to_string(t).expect("a string serializes");
    format!(
        "scope = {{\"__name__\": \"solution\"}}\n\
         exec(compile({}, \"<program>\", \"exec\"), scope)\n\
         exec(compile({}, \"<setup>\", \"exec\"), scope)\n\
         exec(compile({}, \"<test>\", \"exec\"), scope)\n",
        s(reference),
        s(SETUP),
        s(test)
    )
}

/// Run `programs` (capture records) through `rl-verify --capture`, in order, streaming.
fn capture(opts: &Options, programs: Vec<Value>) -> Result<Vec<Captured>> {
    let mut cmd = Command::new(&opts.verify_bin);
    cmd.args(["--capture", "--runtime", &opts.runtime]);
    if let Some(j) = opts.jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::Usage(format!(
                "cannot run {} (set RLCODE_BIN to the directory of the rlcode binaries): {e}",
                opts.verify_bin.display()
            ))
        })?;
    let stdin = child.stdin.take().expect("piped stdin");
    let count = programs.len();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = JsonlWriter::new(std::io::BufWriter::new(stdin));
        for p in programs {
            w.write(&p).map_err(std::io::Error::other)?;
        }
        w.flush().map_err(std::io::Error::other)
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut results = Vec::with_capacity(count);
    for (n, line) in BufReader::new(stdout).lines().enumerate() {
        let line = line?;
        let c: Captured = serde_json::from_str(&line).map_err(|e| {
            Error::Usage(format!(
                "{}: output line {}: not a capture record: {e}",
                opts.verify_bin.display(),
                n + 1
            ))
        })?;
        if c.status == "infra" {
            let _ = child.kill();
            return Err(Error::Usage(format!(
                "{}: the sandbox failed (not the program's fault), stopping: {}",
                opts.verify_bin.display(),
                c.detail.unwrap_or_default()
            )));
        }
        results.push(c);
    }
    let status = child.wait()?;
    let wrote = writer.join().expect("stdin writer");
    if !status.success() {
        return Err(Error::Usage(format!(
            "{} --capture failed ({status})",
            opts.verify_bin.display()
        )));
    }
    wrote?;
    if results.len() != count {
        return Err(Error::Usage(format!(
            "{} --capture returned {} results for {count} programs",
            opts.verify_bin.display(),
            results.len()
        )));
    }
    Ok(results)
}

/// What one import did, for the summary line.
#[derive(Debug, Default, Clone)]
pub struct ImportStats {
    pub records: usize,
    pub dropped: BTreeMap<Drop, usize>,
    /// Input sets left out, by reason, over the problems that reached generation.
    pub skipped_sets: BTreeMap<String, usize>,
    pub kept: usize,
    pub tests: usize,
    pub runs: usize,
}

impl ImportStats {
    pub fn lines(&self, seconds: f64) -> Vec<String> {
        let mut out = vec![format!(
            "{} records; {} sandbox runs in {seconds:.1} s",
            self.records, self.runs
        )];
        let mut left = self.records;
        for (d, n) in &self.dropped {
            left -= n;
            out.push(format!("dropped {n:>5} {} ({left} left)", d.as_str()));
        }
        if !self.skipped_sets.is_empty() {
            let sets: Vec<String> = self
                .skipped_sets
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            out.push(format!("input sets left out: {}", sets.join(", ")));
        }
        out.push(format!("kept {} problems, {} tests", self.kept, self.tests));
        out
    }
}

/// Read CodeI/O records, write problems. Bad records stop the import (or are skipped and
/// reported with `keep_going`); the programs of all good records then run in the sandbox.
pub fn import(
    reader: JsonlReader,
    keep_going: bool,
    opts: &Options,
    out: impl Write,
) -> Result<(rlcode_core::ExitCode, ImportStats)> {
    let started = Instant::now();
    let mut skipper = rlcode_core::jsonl::Skipper::new(crate::PROGRAM, keep_going);
    let mut records = Vec::new();
    for (index, line) in reader.enumerate() {
        let parsed = match line {
            Ok(line) => Record::from_line(&line, index),
            Err(Error::Record(e)) => Err(e),
            Err(e) => return Err(e),
        };
        match parsed {
            Ok(r) => records.push(r),
            Err(e) => skipper.skip(e)?,
        }
    }
    let mut stats = ImportStats {
        records: records.len(),
        ..ImportStats::default()
    };

    let steps = opts.tests as u64 + 1;
    let limits = json!({"fuel": fuel_per_step(&opts.runtime) * steps, "wall_ms": WALL_MS});
    let runs = capture(
        opts,
        records
            .iter()
            .map(|r| json!({"id": r.id(), "program": program(r, opts.seed, opts.tests), "limits": limits}))
            .collect(),
    )?;
    stats.runs = runs.len();
    // Problems that pass the rules on their first run, with their input sets' outcomes.
    let mut candidates = Vec::new();
    for (r, c) in records.iter().zip(&runs) {
        let (signature, imports) = match probe_outcome(c) {
            ProbeOutcome::Ok { signature, imports } => (signature, imports),
            ProbeOutcome::Dropped(d, _) => {
                *stats.dropped.entry(d).or_default() += 1;
                continue;
            }
        };
        let outcomes: Vec<SetOutcome> = (0..opts.tests).map(|i| set_outcome(c, i)).collect();
        match decide(&outcomes) {
            Ok(_) => candidates.push((r, signature, imports, outcomes)),
            Err(d) => {
                count_skipped(&mut stats, &outcomes);
                *stats.dropped.entry(d).or_default() += 1;
            }
        }
    }
    // The second run: every test, alone, as the verifier runs it (its per-test fuel budget, a
    // fresh interpreter, other randomness). A test that fails now is a reference that depends
    // on its run (module-level randomness, the clock); one out of fuel is too slow to keep.
    let mut checks = Vec::new();
    for (r, _, _, outcomes) in &candidates {
        for (i, o) in outcomes.iter().enumerate() {
            if let SetOutcome::Test { code, .. } = o {
                checks.push(json!({
                    "id": format!("{}/check/{i}", r.id()),
                    "program": check_program(&r.code, code),
                    "seed": "check",
                    "limits": {"fuel": fuel_per_step(&opts.runtime), "wall_ms": WALL_MS},
                }));
            }
        }
    }
    eprintln!(
        "{}: codeio: checking the {} tests of {} problems, each in a run of its own",
        crate::PROGRAM,
        checks.len(),
        candidates.len()
    );
    let checked = capture(opts, checks)?;
    stats.runs += checked.len();
    let mut checked = checked.into_iter();
    let mut writer = JsonlWriter::new(out);
    for (r, signature, imports, mut outcomes) in candidates {
        for o in outcomes.iter_mut() {
            if matches!(o, SetOutcome::Test { .. }) {
                let c = checked.next().expect("one check per test");
                *o = match c.status.as_str() {
                    "pass" => continue,
                    "timeout" | "memory" | "output_limit" => {
                        SetOutcome::Skipped(format!("{} alone", c.status))
                    }
                    _ => SetOutcome::NonDeterministic,
                };
            }
        }
        count_skipped(&mut stats, &outcomes);
        match decide(&outcomes) {
            Ok(tests) => {
                stats.kept += 1;
                stats.tests += tests.len();
                writer.write(&problem(r, &signature, &imports, tests))?;
            }
            Err(d) => *stats.dropped.entry(d).or_default() += 1,
        }
    }
    writer.flush()?;
    for l in stats.lines(started.elapsed().as_secs_f64()) {
        eprintln!("{}: codeio: {l}", crate::PROGRAM);
    }
    Ok((skipper.exit_code(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            index: 7,
            task: "Sum two numbers.\n".into(),
            spec: "Input:\n  `a` (int): one\n  `b` (int): a \"\"\"quoted\"\"\" \\ two\n\nOutput:\n  `return` (int): the sum\n".into(),
            code: "import math\n\ndef main_solution(a, b=1):\n    return a + b\n".into(),
            generator: "def generate_inputs(rng):\n    return {}\n".into(),
            extra: Map::new(),
        }
    }

    #[test]
    fn the_prompt_is_the_signature_and_a_docstring_of_task_and_spec() {
        let p = prompt(&record(), "a, b=1", &["import math".into()]);
        assert_eq!(
            p,
            "import math\n\ndef main_solution(a, b=1):\n    \"\"\"Sum two numbers.\n\n    Input:\n      `a` (int): one\n      `b` (int): a \\\"\\\"\\\"quoted\\\"\\\"\\\" \\\\ two\n\n    Output:\n      `return` (int): the sum\n    \"\"\"\n"
        );
        let prob = problem(&record(), "a, b=1", &[], vec!["assert 1\n".into()]);
        assert_eq!(prob.id, "codeio/7");
        assert_eq!(prob.entry_point.as_deref(), Some("main_solution"));
        assert!(prob.prompt.starts_with("def main_solution(a, b=1):\n"));
    }

    fn t(code: &str, output: &str) -> SetOutcome {
        SetOutcome::Test {
            code: code.into(),
            output: output.into(),
        }
    }

    #[test]
    fn problems_need_distinct_tests_varied_outputs_and_determinism() {
        let good: Vec<SetOutcome> = (0..6)
            .map(|i| t(&format!("t{i}"), &format!("{}", i % 3)))
            .collect();
        assert_eq!(decide(&good).unwrap().len(), 6);

        let mut dup = good[..4].to_vec();
        dup.push(t("t0", "0"));
        dup.push(SetOutcome::Skipped("timeout".into()));
        assert_eq!(decide(&dup), Err(Drop::TooFewTests));

        let mut nondet = good.clone();
        nondet.push(SetOutcome::NonDeterministic);
        assert_eq!(decide(&nondet), Err(Drop::NonDeterministic));

        let two: Vec<SetOutcome> = (0..6)
            .map(|i| t(&format!("t{i}"), &format!("{}", i % 2)))
            .collect();
        assert_eq!(decide(&two), Err(Drop::OutputsBarelyVary));

        // Three outputs, but one of them in 4 of 7 tests: a constant answer would pass most.
        let skewed: Vec<SetOutcome> = ["a", "a", "a", "a", "b", "c", "b"]
            .iter()
            .enumerate()
            .map(|(i, o)| t(&format!("t{i}"), o))
            .collect();
        assert_eq!(decide(&skewed), Err(Drop::OutputsBarelyVary));
    }

    #[test]
    fn reports_are_read_from_the_last_marked_line() {
        let c = Captured {
            status: "pass".into(),
            stdout: "noise\n@rlcodeio {\"step\": \"probe\", \"kind\": \"ok\"}\n@rlcodeio {\"step\": 0, \"kind\": \"ok\", \"test\": \"assert x\\n\", \"output\": \"1\"}\n".into(),
            detail: None,
        };
        assert_eq!(set_outcome(&c, 0), t("assert x\n", "1"));
        assert_eq!(set_outcome(&c, 1), SetOutcome::Skipped("error".into()));
        let timeout = Captured {
            status: "timeout".into(),
            stdout: String::new(),
            detail: Some("fuel budget exhausted".into()),
        };
        assert_eq!(
            set_outcome(&timeout, 0),
            SetOutcome::Skipped("timeout".into())
        );
        assert_eq!(
            probe_outcome(&timeout),
            ProbeOutcome::Dropped(Drop::Broken, "timeout: fuel budget exhausted".into())
        );
        let foreign = Captured {
            status: "pass".into(),
            stdout: "@rlcodeio {\"step\": \"probe\", \"kind\": \"non_stdlib\", \"modules\": [\"numpy\"]}\n".into(),
            detail: None,
        };
        assert_eq!(
            probe_outcome(&foreign),
            ProbeOutcome::Dropped(Drop::NonStdlib, "numpy".into())
        );
    }
}

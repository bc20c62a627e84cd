//! rl-eval: verdicts in, one metrics object out (or one CSV row per problem).
//!
//! A group is every sample of one problem. Samples whose verdict says nothing about the program
//! (an `infra` test, or no tests at all) are counted apart and left out of pass@k, pass rate and
//! reward density: they are neither passes nor failures. The output fields are documented on
//! [`Report`] and [`ProblemRow`], and in docs/formats.md.

pub mod calibration;
pub mod compare;
pub mod jsonl;
pub mod layout;
pub mod plot;
pub mod stats;
pub mod summary;
pub mod watch;

use rlcode_core::advantage::all_equal;
use rlcode_core::cli::InputArgs;
use rlcode_core::jsonl::Skipper;
use rlcode_core::metrics::pass_at_k;
use rlcode_core::records::{Status, Verdict, verdict_of};
use rlcode_core::{Error, ExitCode, JsonlReader, Line, RecordError, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Write;

pub const PROGRAM: &str = "rl-eval";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object for the whole input, on one line.
    Json,
    /// One CSV row per problem, with a header.
    Csv,
}

/// Evaluate verdicts: pass@k, pass rate, reward density, test statuses.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "rl-eval", version)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// The k of pass@k, comma-separated. A k above some problem's number of usable samples is
    /// undefined: reported as null, with a warning.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10", value_parser = clap::value_parser!(u64).range(1..))]
    pub k: Vec<u64>,
    /// Output format: one JSON object, or one CSV row per problem.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Training step to record in the output (`step`), for appending to an eval log.
    #[arg(long)]
    pub step: Option<u64>,
    /// Free-form label to record in the output (`label`): a checkpoint, a reward, a split.
    #[arg(long)]
    pub label: Option<String>,
    /// Also the report of each source (`by_source`): problems grouped by their id up to its
    /// first `/` (`synth`, `HumanEval`, `codeio`), for a problem file that mixes datasets.
    #[arg(long)]
    pub by_source: bool,
    /// Instead of metrics: how well a problem's mean pass rate at one step predicts that it is
    /// solved at a later step, from verdicts of several steps (one file per step, named S.jsonl
    /// as scripts/train.sh writes DIR/eval/S.jsonl, or see --steps). The same as
    /// `rl-eval calibration`. docs/calibration.md.
    #[arg(long, conflicts_with_all = ["format", "step"])]
    pub calibration: bool,
    /// With --calibration: the step of each input file, in order (instead of the file names).
    #[arg(long, value_delimiter = ',', requires = "calibration")]
    pub steps: Vec<u64>,
    /// With --calibration: the number of mean-pass-rate buckets strictly between 0 and 1.
    #[arg(long, default_value_t = 5, requires = "calibration",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub buckets: usize,
}

/// Evaluate verdicts: pass@k, pass rate, reward density, test statuses (the default); with
/// --calibration, how well pass rate predicts later full passes; `rl-eval plot`: plot the runs
/// of a results directory.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rl-eval",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub eval: Args,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Plot the runs of a results directory (PNG and SVG). docs/plots.md.
    Plot(plot::PlotArgs),
    /// One row per run of a results directory (summary.csv) and mean ± std per configuration
    /// (summary.md). docs/reproduce.md.
    Summary(summary::SummaryArgs),
    /// Every configuration of a study against a baseline, paired by seed and problem:
    /// differences with bootstrap CIs, permutation p-values, TOST and the minimum detectable
    /// effect (comparison.csv, comparison.md). docs/study.md.
    Compare(compare::CompareArgs),
    /// How well pass rate predicts full passes: across steps (a problem's pass rate now, solved
    /// later), within groups, and split-half (docs/calibration.md). Also `rl-eval
    /// --calibration`.
    Calibration(calibration::CalibrationArgs),
    /// JSON for shell drivers: a field of each line, the steps of a metrics file, a metrics file
    /// cut back to a step, a metrics line from parts (scripts/train.sh uses these).
    Jsonl(jsonl::JsonlArgs),
}

/// What `main` runs: the subcommand, the calibration, or the metrics.
pub fn main(cli: &Cli, output: impl Write) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Plot(a)) => plot::run(a, output),
        Some(Command::Summary(a)) => summary::run(a, output).map(|()| ExitCode::Success),
        Some(Command::Compare(a)) => compare::run(a, output).map(|()| ExitCode::Success),
        Some(Command::Calibration(a)) => calibration::run(a, calibration::open_inputs(a)?, output),
        Some(Command::Jsonl(a)) => jsonl::run(a, output),
        None if cli.eval.calibration => {
            let a = calibration::CalibrationArgs::from_flags(&cli.eval);
            calibration::run(&a, calibration::open_inputs(&a)?, output)
        }
        None => {
            let input = JsonlReader::open(&cli.eval.input.inputs)?;
            run(&cli.eval, input, output)
        }
    }
}

/// What rl-eval keeps of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub verdict: Verdict,
    /// `None`: no `reward` field; `Some(None)`: `reward: null`.
    pub reward: Option<Option<f64>>,
    /// The patterns of [`watch::PATTERNS`] its `code` matches; `None`: no `code` field.
    pub flags: Option<u8>,
}

impl Sample {
    /// The verdict says something about the program: at least one test, no sandbox failure.
    pub(crate) fn usable(&self) -> bool {
        self.verdict.total > 0 && !self.verdict.has_infra()
    }
}

/// Every sample of one problem, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub problem_id: String,
    pub samples: Vec<Sample>,
}

/// Groups in order of first appearance.
#[derive(Debug, Default)]
pub struct Groups {
    pub groups: Vec<Group>,
    index: HashMap<String, usize>,
}

impl Groups {
    pub fn push(&mut self, problem_id: &str, sample: Sample) {
        let i = match self.index.get(problem_id) {
            Some(&i) => i,
            None => {
                self.index.insert(problem_id.to_string(), self.groups.len());
                self.groups.push(Group {
                    problem_id: problem_id.to_string(),
                    samples: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.groups[i].samples.push(sample);
    }
}

/// The fields rl-eval reads: `problem_id`, `verdict`, and `reward` where present.
pub(crate) fn parse_record(line: &Line) -> Result<(String, Sample), RecordError> {
    let problem_id = line.str_field("problem_id")?.to_string();
    let verdict = verdict_of(line)?;
    let reward = match line.value.get("reward") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => Some(n.as_f64()),
        Some(_) => return Err(line.error("field \"reward\" must be a number or null")),
    };
    let flags = line
        .value
        .get("code")
        .and_then(Value::as_str)
        .map(watch::flags);
    Ok((
        problem_id,
        Sample {
            verdict,
            reward,
            flags,
        },
    ))
}

/// The fraction of groups whose rewards are not all equal: those that give GRPO a non-zero
/// advantage. Over problems with at least one usable sample; null when there are none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Density {
    pub binary: Option<f64>,
    pub pass_rate: Option<f64>,
}

/// The JSON output: one object for the whole input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `--step`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// `--label`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Distinct `problem_id`s.
    pub problems: usize,
    /// Problems with at least one usable sample: what pass@k and density average over.
    pub evaluated_problems: usize,
    /// Every valid record.
    pub samples: usize,
    /// Samples with an `infra` test: excluded from the metrics, never counted as failures.
    pub infra_samples: usize,
    /// Samples whose verdict has no tests (and no infra test): excluded like infra samples.
    pub untested_samples: usize,
    /// Unbiased pass@k, averaged over evaluated problems, keyed by k; null where some problem
    /// has fewer than k usable samples (or no problem was evaluated).
    pub pass_at_k: Map<String, Value>,
    /// passed / total, averaged over usable samples.
    pub mean_pass_rate: Option<f64>,
    /// Problems where some usable sample passed every test.
    pub full_pass_problems: usize,
    /// Usable samples that passed every test.
    pub full_pass_samples: usize,
    pub reward_density: Density,
    /// Count of every test status over every sample (infra samples included), all seven keys.
    pub statuses: Map<String, Value>,
    /// Mean of the numeric `reward`s; present only when some record carries a `reward` field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_reward: Option<Option<f64>>,
    /// Records with `reward: null`; present with `mean_reward`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_rewards: Option<usize>,
    /// Programs with what reward hacking uses (exits, prints, introspection: [`watch`]);
    /// present only when some record carries `code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspicious: Option<watch::Suspicious>,
    /// With `--by-source`: the report of each source's problems (the id up to its first `/`),
    /// keyed by source, without `step` and `label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_source: Option<std::collections::BTreeMap<String, Report>>,
}

/// The source of a problem: its id up to the first `/` (the whole id without one).
pub fn source_of(problem_id: &str) -> &str {
    problem_id.split('/').next().unwrap_or(problem_id)
}

/// One CSV row: the metrics of one problem. pass@k columns follow `mean_pass_rate`, one per k,
/// named `pass@k`; a `mean_reward` column is last when the input carries rewards.
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemRow {
    pub problem_id: String,
    pub samples: usize,
    pub infra_samples: usize,
    pub untested_samples: usize,
    pub full_passes: usize,
    /// Over usable samples; `None` without any.
    pub mean_pass_rate: Option<f64>,
    /// In the order of `--k`; `None` where k > usable samples.
    pub pass_at_k: Vec<Option<f64>>,
    pub mean_reward: Option<f64>,
}

/// The per-problem numbers everything else is built from.
fn problem_row(group: &Group, ks: &[u64]) -> ProblemRow {
    let usable: Vec<&Verdict> = group
        .samples
        .iter()
        .filter(|s| s.usable())
        .map(|s| &s.verdict)
        .collect();
    let infra = group
        .samples
        .iter()
        .filter(|s| s.verdict.has_infra())
        .count();
    let n = usable.len();
    let full_passes = usable.iter().filter(|v| v.full_pass()).count();
    let rates: Vec<f64> = usable.iter().filter_map(|v| v.pass_rate()).collect();
    let rewards: Vec<f64> = group
        .samples
        .iter()
        .filter_map(|s| s.reward.flatten())
        .collect();
    ProblemRow {
        problem_id: group.problem_id.clone(),
        samples: group.samples.len(),
        infra_samples: infra,
        untested_samples: group.samples.len() - n - infra,
        full_passes,
        mean_pass_rate: rlcode_core::metrics::mean(&rates),
        pass_at_k: ks
            .iter()
            .map(|&k| pass_at_k(n, full_passes, k as usize))
            .collect(),
        mean_reward: rlcode_core::metrics::mean(&rewards),
    }
}

/// Whether a group's rewards under binary and under pass_rate differ somewhere (usable samples
/// only).
fn group_density(group: &Group) -> (bool, bool) {
    let usable = group.samples.iter().filter(|s| s.usable());
    let binary: Vec<f64> = usable
        .clone()
        .map(|s| if s.verdict.full_pass() { 1.0 } else { 0.0 })
        .collect();
    let rates: Vec<f64> = usable.filter_map(|s| s.verdict.pass_rate()).collect();
    (!all_equal(&binary), !all_equal(&rates))
}

fn ratio(count: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| count as f64 / of as f64)
}

/// The whole-input report, with the warnings it calls for.
pub fn report(groups: &[Group], args: &Args) -> (Report, Vec<String>) {
    let ks = dedup(&args.k);
    let mut warnings = Vec::new();
    let rows: Vec<ProblemRow> = groups.iter().map(|g| problem_row(g, &ks)).collect();
    let evaluated: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].mean_pass_rate.is_some())
        .collect();

    let mut pass = Map::new();
    for (j, k) in ks.iter().enumerate() {
        let values: Vec<f64> = evaluated
            .iter()
            .filter_map(|&i| rows[i].pass_at_k[j])
            .collect();
        let value = if values.len() < evaluated.len() {
            let short = evaluated.len() - values.len();
            let smallest = evaluated
                .iter()
                .map(|&i| &rows[i])
                .min_by_key(|r| r.samples - r.infra_samples - r.untested_samples)
                .expect("some problem is short of samples");
            warnings.push(format!(
                "pass@{k} is undefined (null): {short} problems have fewer than {k} usable \
                 samples (fewest: \"{}\" with {})",
                smallest.problem_id,
                smallest.samples - smallest.infra_samples - smallest.untested_samples
            ));
            None
        } else {
            rlcode_core::metrics::mean(&values)
        };
        pass.insert(k.to_string(), value.into());
    }

    let usable: Vec<f64> = groups
        .iter()
        .flat_map(|g| &g.samples)
        .filter(|s| s.usable())
        .filter_map(|s| s.verdict.pass_rate())
        .collect();
    let densities: Vec<(bool, bool)> = evaluated
        .iter()
        .map(|&i| group_density(&groups[i]))
        .collect();

    let mut statuses: Map<String, Value> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), Value::from(0u64)))
        .collect();
    let mut counts: HashMap<Status, u64> = HashMap::new();
    for t in groups
        .iter()
        .flat_map(|g| &g.samples)
        .flat_map(|s| &s.verdict.tests)
    {
        *counts.entry(t.status).or_default() += 1;
    }
    for s in Status::ALL {
        statuses.insert(
            s.as_str().into(),
            counts.get(&s).copied().unwrap_or(0).into(),
        );
    }

    let samples: Vec<&Sample> = groups.iter().flat_map(|g| &g.samples).collect();
    let infra_samples = rows.iter().map(|r| r.infra_samples).sum();
    if infra_samples > 0 {
        warnings.push(format!(
            "{infra_samples} samples with an infra test are left out of pass@k, pass rate and \
             density"
        ));
    }
    let untested_samples = rows.iter().map(|r| r.untested_samples).sum();
    if untested_samples > 0 {
        warnings.push(format!(
            "{untested_samples} samples have no tests and are left out of pass@k, pass rate \
             and density"
        ));
    }
    let carries_reward = samples.iter().any(|s| s.reward.is_some());
    let rewards: Vec<f64> = samples.iter().filter_map(|s| s.reward.flatten()).collect();

    let report = Report {
        step: args.step,
        label: args.label.clone(),
        problems: groups.len(),
        evaluated_problems: evaluated.len(),
        samples: samples.len(),
        infra_samples,
        untested_samples,
        pass_at_k: pass,
        mean_pass_rate: rlcode_core::metrics::mean(&usable),
        full_pass_problems: rows.iter().filter(|r| r.full_passes > 0).count(),
        full_pass_samples: rows.iter().map(|r| r.full_passes).sum(),
        reward_density: Density {
            binary: ratio(densities.iter().filter(|d| d.0).count(), densities.len()),
            pass_rate: ratio(densities.iter().filter(|d| d.1).count(), densities.len()),
        },
        statuses,
        mean_reward: carries_reward.then(|| rlcode_core::metrics::mean(&rewards)),
        null_rewards: carries_reward
            .then(|| samples.iter().filter(|s| s.reward == Some(None)).count()),
        suspicious: samples.iter().any(|s| s.flags.is_some()).then(|| {
            watch::Suspicious::count(
                samples
                    .iter()
                    .map(|s| (s.flags.unwrap_or(0), s.usable() && s.verdict.full_pass())),
            )
        }),
        by_source: args.by_source.then(|| {
            let mut sources: std::collections::BTreeMap<String, Vec<Group>> = Default::default();
            for g in groups {
                sources
                    .entry(source_of(&g.problem_id).to_string())
                    .or_default()
                    .push(g.clone());
            }
            let inner = Args {
                by_source: false,
                step: None,
                label: None,
                ..args.clone()
            };
            sources
                .into_iter()
                .map(|(source, gs)| (source, report(&gs, &inner).0))
                .collect()
        }),
    };
    (report, warnings)
}

/// `--k` without repeats, in the order given.
fn dedup(ks: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for &k in ks {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn cell(x: Option<f64>) -> String {
    x.map(|x| x.to_string()).unwrap_or_default()
}

/// One row per problem, in order of first appearance.
pub fn write_csv(groups: &[Group], args: &Args, output: impl Write) -> Result<()> {
    let ks = dedup(&args.k);
    let carries_reward = groups
        .iter()
        .flat_map(|g| &g.samples)
        .any(|s| s.reward.is_some());
    let mut w = csv::Writer::from_writer(output);
    let mut header: Vec<String> = Vec::new();
    if args.step.is_some() {
        header.push("step".into());
    }
    if args.label.is_some() {
        header.push("label".into());
    }
    header.extend(
        [
            "problem_id",
            "samples",
            "infra_samples",
            "untested_samples",
            "full_passes",
            "mean_pass_rate",
        ]
        .map(String::from),
    );
    header.extend(ks.iter().map(|k| format!("pass@{k}")));
    if carries_reward {
        header.push("mean_reward".into());
    }
    w.write_record(&header).map_err(csv_error)?;
    for g in groups {
        let r = problem_row(g, &ks);
        let mut row: Vec<String> = Vec::new();
        if let Some(step) = args.step {
            row.push(step.to_string());
        }
        if let Some(label) = &args.label {
            row.push(label.clone());
        }
        row.extend([
            r.problem_id,
            r.samples.to_string(),
            r.infra_samples.to_string(),
            r.untested_samples.to_string(),
            r.full_passes.to_string(),
            cell(r.mean_pass_rate),
        ]);
        row.extend(r.pass_at_k.into_iter().map(cell));
        if carries_reward {
            row.push(cell(r.mean_reward));
        }
        w.write_record(&row).map_err(csv_error)?;
    }
    w.flush()?;
    Ok(())
}

/// Keep an I/O error an I/O error, so that a closed stdout still ends the program quietly.
fn csv_error(e: csv::Error) -> Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::Io(io),
        other => Error::Other(anyhow::anyhow!("writing CSV: {other:?}")),
    }
}

/// Read every record of `input` and write the metrics to `output`. A bad record stops the run
/// with nothing written (a partial aggregate would read like the real one) unless
/// `--keep-going`.
pub fn run(args: &Args, input: JsonlReader, output: impl Write) -> Result<ExitCode> {
    rlcode_core::cli::closed_stdout_is_success(run_inner(args, input, output))
}

fn run_inner(args: &Args, mut input: JsonlReader, mut output: impl Write) -> Result<ExitCode> {
    let mut skipper = Skipper::new(PROGRAM, args.input.keep_going);
    let mut groups = Groups::default();
    while let Some(item) = input.next_record() {
        let parsed = item.and_then(|line| parse_record(&line).map_err(Error::from));
        if let Some((problem_id, sample)) = skipper.keep(parsed)? {
            groups.push(&problem_id, sample);
        }
    }

    let (report, warnings) = report(&groups.groups, args);
    for w in &warnings {
        eprintln!("{PROGRAM}: warning: {w}");
    }
    match args.format {
        Format::Json => {
            serde_json::to_writer(&mut output, &report).map_err(std::io::Error::from)?;
            output.write_all(b"\n")?;
            output.flush()?;
        }
        Format::Csv => write_csv(&groups.groups, args, &mut output)?,
    }
    if skipper.skipped() > 0 {
        eprintln!("{PROGRAM}: {} invalid records skipped", skipper.skipped());
    }
    Ok(skipper.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Cursor;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("rl-eval").chain(argv.iter().copied())).unwrap()
    }

    /// A sample from a string of statuses (see [`rlcode_core::testing::verdict`]).
    fn s(statuses: &str) -> Sample {
        Sample {
            verdict: rlcode_core::testing::verdict(statuses, "r"),
            reward: None,
            flags: None,
        }
    }

    fn groups(spec: &[(&str, &[&str])]) -> Vec<Group> {
        let mut g = Groups::default();
        for (id, samples) in spec {
            for x in *samples {
                g.push(id, s(x));
            }
        }
        g.groups
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn pass_at_k_is_averaged_over_problems_and_null_when_undefined() {
        // a: n=4, c=2; b: n=4, c=0; c: n=2 (one infra sample left out), c=1.
        let g = groups(&[
            ("a", &["pp", "pf", "pp", "ff"]),
            ("b", &["f", "f", "e", "t"]),
            ("c", &["p", "f", "i"]),
        ]);
        let (r, warnings) = report(&g, &args(&["--k", "1,2,3"]));
        let p = |k: &str| r.pass_at_k[k].as_f64();
        close(p("1"), (0.5 + 0.0 + 0.5) / 3.0);
        // pass@2: a 1 - C(2,2)/C(4,2) = 5/6; b 0; c 1.
        close(p("2"), (5.0 / 6.0 + 0.0 + 1.0) / 3.0);
        assert_eq!(r.pass_at_k["3"], Value::Null);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("pass@3 is undefined") && warnings[0].contains("\"c\" with 2")
        );
        assert!(warnings[1].contains("1 samples with an infra test"));
        assert_eq!((r.problems, r.evaluated_problems, r.samples), (3, 3, 11));
        assert_eq!(r.infra_samples, 1);
        assert_eq!((r.full_pass_problems, r.full_pass_samples), (2, 3));
        // Over the 10 usable samples: 1 + .5 + 1 + 0 + 0*4 + 1 + 0.
        close(r.mean_pass_rate, 3.5 / 10.0);
        let keys: Vec<&String> = r.pass_at_k.keys().collect();
        assert_eq!(keys, ["1", "2", "3"]);
    }

    #[test]
    fn density_counts_groups_that_give_an_advantage() {
        let g = groups(&[
            ("mixed", &["pp", "pf"]),           // binary differs, pass rate differs
            ("partial", &["pf", "ff"]),         // binary all 0, pass rate differs
            ("same", &["pf", "fp"]),            // both equal
            ("lone", &["pp"]),                  // a group of one has no advantage
            ("sandbox", &["pi", "ii"]),         // nothing usable: not evaluated at all
            ("infra_only_diff", &["pp", "fi"]), // the infra sample must not make it differ
        ]);
        let (r, _) = report(&g, &args(&[]));
        assert_eq!(r.evaluated_problems, 5);
        close(r.reward_density.binary, 1.0 / 5.0);
        close(r.reward_density.pass_rate, 2.0 / 5.0);
        assert_eq!(r.problems, 6);
    }

    #[test]
    fn by_source_reports_each_dataset_of_a_mixed_file() {
        let g = groups(&[
            ("synth/a/1", &["pp", "pf"]),
            ("HumanEval/7", &["f", "f"]),
            ("synth/b/2", &["ff", "ff"]),
            ("lone", &["p", "p"]),
        ]);
        let (r, _) = report(&g, &args(&["--k", "1", "--by-source", "--label", "x"]));
        let by = r.by_source.as_ref().expect("by_source");
        let keys: Vec<&String> = by.keys().collect();
        assert_eq!(keys, ["HumanEval", "lone", "synth"]);
        assert_eq!(by["synth"].problems, 2);
        close(by["synth"].pass_at_k["1"].as_f64(), 0.25);
        close(by["HumanEval"].pass_at_k["1"].as_f64(), 0.0);
        close(by["lone"].pass_at_k["1"].as_f64(), 1.0);
        assert!(by["synth"].label.is_none() && by["synth"].by_source.is_none());
        // Without the flag there is no key at all.
        let (plain, _) = report(&g, &args(&["--k", "1"]));
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("by_source")
                .is_none()
        );
    }

    #[test]
    fn statuses_have_all_seven_keys() {
        let g = groups(&[("a", &["pfe", "ti"])]);
        let (r, _) = report(&g, &args(&[]));
        assert_eq!(
            serde_json::to_value(&r.statuses).unwrap(),
            serde_json::json!({"pass": 1, "fail": 1, "error": 1, "timeout": 1, "memory": 0,
                               "output_limit": 0, "infra": 1})
        );
    }

    #[test]
    fn empty_input_gives_zeros_and_nulls() {
        let (r, warnings) = report(&[], &args(&["--k", "1,5"]));
        assert!(warnings.is_empty());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["problems"], 0);
        assert_eq!(v["samples"], 0);
        assert_eq!(v["pass_at_k"], serde_json::json!({"1": null, "5": null}));
        assert_eq!(v["mean_pass_rate"], Value::Null);
        assert_eq!(
            v["reward_density"],
            serde_json::json!({"binary": null, "pass_rate": null})
        );
        assert_eq!(v["statuses"]["infra"], 0);
        assert!(v.get("mean_reward").is_none());
    }

    fn run_on(argv: &[&str], input: &str) -> (Result<ExitCode>, String) {
        let reader = JsonlReader::from_reader("-", Cursor::new(input.as_bytes().to_vec()));
        let mut out = Vec::new();
        let res = run(&args(argv), reader, &mut out);
        (res, String::from_utf8(out).unwrap())
    }

    const INPUT: &str = concat!(
        r#"{"problem_id":"a","reward":1.0,"verdict":{"passed":1,"total":1,"tests":[{"status":"pass"}],"runtime":"r"}}"#,
        "\n",
        r#"{"problem_id":"b","reward":null,"verdict":{"passed":0,"total":1,"tests":[{"status":"infra"}],"runtime":"r"}}"#,
        "\n",
        r#"{"problem_id":"a","reward":0.0,"verdict":{"passed":0,"total":1,"tests":[{"status":"fail"}],"runtime":"r"}}"#,
        "\n",
    );

    #[test]
    fn json_carries_step_label_and_rewards() {
        let (res, out) = run_on(&["--k", "1", "--step", "7", "--label", "ckpt/7"], INPUT);
        assert_eq!(res.unwrap(), ExitCode::Success);
        assert!(out.ends_with('\n') && out.lines().count() == 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().take(3).collect();
        assert_eq!(keys, ["step", "label", "problems"]);
        assert_eq!(v["step"], 7);
        assert_eq!(v["label"], "ckpt/7");
        assert_eq!(v["mean_reward"], 0.5);
        assert_eq!(v["null_rewards"], 1);
        assert_eq!(v["pass_at_k"]["1"], 0.5);
        assert_eq!(v["infra_samples"], 1);
        assert_eq!(v["evaluated_problems"], 1);
    }

    #[test]
    fn csv_has_one_row_per_problem() {
        let (res, out) = run_on(&["--format", "csv", "--k", "1,2"], INPUT);
        assert_eq!(res.unwrap(), ExitCode::Success);
        assert_eq!(
            out,
            "problem_id,samples,infra_samples,untested_samples,full_passes,mean_pass_rate,pass@1,pass@2,mean_reward\n\
             a,2,0,0,1,0.5,0.5,1,0.5\n\
             b,1,1,0,0,,,,\n"
        );
    }

    #[test]
    fn csv_without_rewards_and_with_step() {
        let input =
            r#"{"problem_id":"x,y","verdict":{"passed":0,"total":0,"tests":[],"runtime":"r"}}"#;
        let (res, out) = run_on(&["--format", "csv", "--step", "3"], input);
        assert_eq!(res.unwrap(), ExitCode::Success);
        assert_eq!(
            out,
            "step,problem_id,samples,infra_samples,untested_samples,full_passes,mean_pass_rate,pass@1,pass@5,pass@10\n\
             3,\"x,y\",1,0,1,0,,,,\n"
        );
    }

    #[test]
    fn bad_reward_is_an_invalid_record() {
        let input = r#"{"problem_id":"a","reward":"high","verdict":{"passed":0,"total":1,"tests":[{"status":"fail"}],"runtime":"r"}}"#;
        let (res, out) = run_on(&[], input);
        assert_eq!(
            res.unwrap_err().to_string(),
            "-:1: field \"reward\" must be a number or null"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn k_must_be_positive() {
        assert!(Args::try_parse_from(["rl-eval", "--k", "0"]).is_err());
        assert_eq!(dedup(&args(&["--k", "5,1,5"]).k), [5, 1]);
    }

    use rlcode_core::testing::ClosedPipe;

    #[test]
    fn a_closed_stdout_ends_quietly_with_success() {
        let input = r#"{"problem_id":"a","verdict":{"passed":1,"total":1,"tests":[{"status":"pass"}],"runtime":"r"}}"#;
        let reader = JsonlReader::from_reader("-", Cursor::new(input.as_bytes().to_vec()));
        let res = run(
            &Args::try_parse_from(["rl-eval"]).unwrap(),
            reader,
            ClosedPipe,
        );
        assert_eq!(res.unwrap(), ExitCode::Success);
    }
}

//! `rl-eval --calibration`: how well a problem's pass rate at one step predicts that it is
//! solved later in training, and how pass rate ranks the samples within a group.
//!
//! Input: verdicts of the same problems evaluated at several steps (scripts/train.sh keeps
//! them as `DIR/eval/S.jsonl`, one file per step S). Definitions and the output fields:
//! docs/calibration.md.

use crate::{Args, Group, Groups, PROGRAM, parse_record};
use rlcode_core::cli::InputArgs;
use rlcode_core::jsonl::Skipper;
use rlcode_core::{Error, ExitCode, JsonlReader, Line, RecordError, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Floating-point slack when a mean pass rate is put in a bucket or compared with a group mean.
const EPS: f64 = 1e-9;

/// `rl-eval calibration`: how well pass rate predicts full passes (docs/calibration.md).
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrationArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// The step of each input file, in order (instead of the file names `S.jsonl`).
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<u64>,
    /// The number of mean-pass-rate buckets strictly between 0 and 1.
    #[arg(long, default_value_t = 5,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub buckets: usize,
    /// Free-form label to record in the output (`label`).
    #[arg(long)]
    pub label: Option<String>,
}

impl CalibrationArgs {
    /// The same request made with the older `rl-eval --calibration` flags.
    pub fn from_flags(a: &Args) -> Self {
        CalibrationArgs {
            input: a.input.clone(),
            steps: a.steps.clone(),
            buckets: a.buckets,
            label: a.label.clone(),
        }
    }
}

/// One input with the step its records belong to: `None` means each record's `step` field.
pub struct Input {
    pub step: Option<u64>,
    pub reader: JsonlReader,
}

/// The step of a file: `--steps` (one per file, in order), else its stem when that is an
/// integer (`eval/10.jsonl`, `10.jsonl.gz`), else `None` (each record's `step` field).
pub fn file_steps(paths: &[PathBuf], steps: &[u64]) -> Result<Vec<Option<u64>>> {
    if !steps.is_empty() {
        let files = paths.len().max(1);
        if steps.len() != files {
            return Err(Error::Other(anyhow::anyhow!(
                "--steps gives {} steps for {files} input files: give one per file, in order",
                steps.len()
            )));
        }
        return Ok(steps.iter().map(|&s| Some(s)).collect());
    }
    if paths.is_empty() {
        return Ok(vec![None]);
    }
    Ok(paths.iter().map(|p| step_from_name(p)).collect())
}

/// `10` from `.../10.jsonl` or `.../10.jsonl.gz`; `None` for any other name.
fn step_from_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".gz")
        .unwrap_or(name)
        .strip_suffix(".jsonl")?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A record's own integer `step` field.
fn record_step(line: &Line) -> Result<u64, RecordError> {
    line.value
        .get("step")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            line.error(
                "no step for this record: name the file S.jsonl, give --steps, or add an integer \
             \"step\" field",
            )
        })
}

/// Open every input and tag it with its step.
pub fn open_inputs(args: &CalibrationArgs) -> Result<Vec<Input>> {
    let paths = &args.input.inputs;
    let steps = file_steps(paths, &args.steps)?;
    if paths.is_empty() {
        return Ok(vec![Input {
            step: steps[0],
            reader: JsonlReader::open(&[])?,
        }]);
    }
    paths
        .iter()
        .zip(steps)
        .map(|(p, step)| {
            Ok(Input {
                step,
                reader: JsonlReader::open(std::slice::from_ref(p))?,
            })
        })
        .collect()
}

/// A bucket of the early mean pass rate, with what became of its problems.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// `"0"`, `"(0,0.2)"`, `"[0.2,0.4)"`, ..., `"[0.8,1)"`, `"1"`.
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    /// Problems whose mean pass rate at this step falls in the bucket (and that were evaluated
    /// at the final step).
    pub problems: usize,
    /// Of them, solved (some sample passed every test) at this very step.
    pub solved_now: usize,
    /// Of them, solved at the final step.
    pub solved_final: usize,
    /// solved_final / problems; null for an empty bucket.
    pub p_solved_final: Option<f64>,
    /// Of them, solved at some later step (any evaluated step after this one).
    pub solved_later: usize,
    /// solved_later / problems; null for an empty bucket.
    pub p_solved_later: Option<f64>,
}

/// Spearman rank correlations between a step's mean pass rate and a later outcome (0/1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correlations {
    /// With "solved at the final step".
    #[serde(rename = "final")]
    pub final_step: Option<f64>,
    /// With "solved at some later step".
    pub any_later: Option<f64>,
}

/// The same correlations over the problems not yet solved at this step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unsolved {
    pub problems: usize,
    pub spearman: Correlations,
}

/// What a step's pass rates say about later steps; absent (null) for the final step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Later {
    /// Problems evaluated at this step and at the final step: every count below is over them.
    pub problems: usize,
    /// Problems evaluated at this step but not at the final step: left out.
    pub missing_final: usize,
    pub buckets: Vec<Bucket>,
    pub spearman: Correlations,
    pub unsolved: Unsolved,
}

/// How pass rate ranks the samples of one group (one problem at one step).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WithinGroup {
    /// Groups with at least one usable sample that passes at least one test.
    pub groups: usize,
    /// Of them, groups whose highest-pass-rate sample is a full pass. A full pass is the only
    /// sample with pass rate 1, so this is the number of these groups that have a full pass.
    pub top_is_full: usize,
    /// top_is_full / groups; null without groups.
    pub top_is_full_rate: Option<f64>,
    /// Partial-pass samples (0 < passed < total) in groups that have a full pass.
    pub partial_with_full: usize,
    /// Of them, samples above their group's mean pass rate: a positive advantage under
    /// `pass_rate` (GRPO and RLOO alike) although a correct program is in the group.
    pub partial_above_mean_with_full: usize,
    /// partial_above_mean_with_full / partial_with_full; null without such samples.
    pub partial_above_mean_with_full_rate: Option<f64>,
    /// Partial-pass samples in groups without a full pass.
    pub partial_without_full: usize,
    /// Of them, samples above their group's mean pass rate.
    pub partial_above_mean_without_full: usize,
    /// partial_above_mean_without_full / partial_without_full.
    pub partial_above_mean_without_full_rate: Option<f64>,
}

impl WithinGroup {
    fn add(&mut self, other: &WithinGroup) {
        self.groups += other.groups;
        self.top_is_full += other.top_is_full;
        self.partial_with_full += other.partial_with_full;
        self.partial_above_mean_with_full += other.partial_above_mean_with_full;
        self.partial_without_full += other.partial_without_full;
        self.partial_above_mean_without_full += other.partial_above_mean_without_full;
        self.rates();
    }

    fn rates(&mut self) {
        self.top_is_full_rate = ratio(self.top_is_full, self.groups);
        self.partial_above_mean_with_full_rate =
            ratio(self.partial_above_mean_with_full, self.partial_with_full);
        self.partial_above_mean_without_full_rate = ratio(
            self.partial_above_mean_without_full,
            self.partial_without_full,
        );
    }
}

/// A bucket of the split-half calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HalfBucket {
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    /// Groups whose first half's mean pass rate falls in the bucket.
    pub groups: usize,
    /// Of them, groups whose second half has a full pass.
    pub solved: usize,
    /// solved / groups; null for an empty bucket.
    pub p_solved: Option<f64>,
}

/// Does a group's pass rate predict full correctness at the same step, without the mechanical
/// link (a full pass raises its own group's mean)? Each group's usable samples are split by
/// position (1st, 3rd, ... against 2nd, 4th, ...): the first half's mean pass rate against
/// whether the second half has a full pass. Works on training groups, where every problem is
/// seen once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitHalf {
    /// Groups (problem and step) with at least two usable samples, summed over steps.
    pub groups: usize,
    pub buckets: Vec<HalfBucket>,
    /// Spearman's ρ between the first half's mean pass rate and the second half's full pass.
    pub spearman: Option<f64>,
    /// The same over the groups whose first half has no full pass: does partial credit among
    /// failing samples predict a correct program beside them?
    pub unsolved_groups: usize,
    pub unsolved_spearman: Option<f64>,
}

/// The split-half calibration of every group of every step.
fn split_half(by_step: &BTreeMap<u64, Vec<Group>>, buckets: usize) -> SplitHalf {
    let mut rows: Vec<(f64, bool, bool)> = Vec::new();
    for groups in by_step.values() {
        for g in groups {
            let usable: Vec<&crate::Sample> = g.samples.iter().filter(|s| s.usable()).collect();
            if usable.len() < 2 {
                continue;
            }
            let half = |parity: usize| usable.iter().skip(parity).step_by(2).copied();
            let rates: Vec<f64> = half(0).filter_map(|s| s.verdict.pass_rate()).collect();
            let Some(rate) = rlcode_core::metrics::mean(&rates) else {
                continue;
            };
            let first_solved = half(0).any(|s| s.verdict.full_pass());
            rows.push((rate, first_solved, half(1).any(|s| s.verdict.full_pass())));
        }
    }
    let mut bs: Vec<HalfBucket> = bucket_bounds(buckets)
        .into_iter()
        .map(|(label, lo, hi)| HalfBucket {
            label,
            lo,
            hi,
            groups: 0,
            solved: 0,
            p_solved: None,
        })
        .collect();
    for &(rate, _, solved) in &rows {
        let b = &mut bs[bucket_of(rate, buckets)];
        b.groups += 1;
        b.solved += solved as usize;
    }
    for b in &mut bs {
        b.p_solved = ratio(b.solved, b.groups);
    }
    let rho = |rows: &[&(f64, bool, bool)]| {
        let x: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let y: Vec<f64> = rows.iter().map(|r| r.2 as u8 as f64).collect();
        spearman(&x, &y)
    };
    let all: Vec<&(f64, bool, bool)> = rows.iter().collect();
    let unsolved: Vec<&(f64, bool, bool)> = rows.iter().filter(|r| !r.1).collect();
    SplitHalf {
        groups: rows.len(),
        buckets: bs,
        spearman: rho(&all),
        unsolved_groups: unsolved.len(),
        unsolved_spearman: rho(&unsolved),
    }
}

/// Everything about one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub step: u64,
    /// Problems with at least one usable sample at this step.
    pub problems: usize,
    /// Of them, problems with a full pass at this step.
    pub solved: usize,
    /// Mean over those problems of their mean pass rate.
    pub mean_pass_rate: Option<f64>,
    pub within_group: WithinGroup,
    /// Null for the final step.
    pub later: Option<Later>,
}

/// The whole output: one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Every step in the input, ascending.
    pub steps: Vec<u64>,
    /// The largest step; null on empty input.
    pub final_step: Option<u64>,
    /// Valid records read.
    pub samples: usize,
    /// Records with an infra test or without tests: left out of every number.
    pub unusable_samples: usize,
    /// The bucket boundaries 0, 1/B, ..., 1 (`--buckets B`).
    pub bucket_edges: Vec<f64>,
    pub by_step: Vec<StepReport>,
    /// within_group summed over every step.
    pub within_group: WithinGroup,
    pub split_half: SplitHalf,
}

fn ratio(count: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| count as f64 / of as f64)
}

/// Average ranks (1-based) with ties sharing the mean of the ranks they span.
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        // Positions i..=j hold ranks i+1..=j+1: their mean.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson correlation; `None` with fewer than two points or a constant variable.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len());
    let n = x.len();
    if n < 2 {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation: Pearson on average ranks (ties handled). `None` with fewer
/// than two points or when either variable is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Labels and bounds of the buckets: exactly 0, (0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1),
/// exactly 1.
pub fn bucket_bounds(buckets: usize) -> Vec<(String, f64, f64)> {
    let b = buckets as f64;
    let mut out = vec![("0".to_string(), 0.0, 0.0)];
    for i in 0..buckets {
        let (lo, hi) = (i as f64 / b, (i + 1) as f64 / b);
        let open = if i == 0 { "(" } else { "[" };
        out.push((format!("{open}{},{})", short(lo), short(hi)), lo, hi));
    }
    out.push(("1".to_string(), 1.0, 1.0));
    out
}

/// A bound for a label: at most 3 decimals, no trailing zeros.
fn short(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Index into [`bucket_bounds`] of a mean pass rate in [0, 1].
pub fn bucket_of(rate: f64, buckets: usize) -> usize {
    if rate <= 0.0 {
        0
    } else if rate >= 1.0 {
        buckets + 1
    } else {
        1 + ((rate * buckets as f64 + EPS).floor() as usize).min(buckets - 1)
    }
}

/// A problem at one step: its mean pass rate over usable samples, and whether it is solved.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AtStep {
    rate: f64,
    solved: bool,
}

fn problem_at(group: &Group) -> Option<AtStep> {
    let rates: Vec<f64> = group
        .samples
        .iter()
        .filter(|s| s.usable())
        .filter_map(|s| s.verdict.pass_rate())
        .collect();
    let rate = rlcode_core::metrics::mean(&rates)?;
    let solved = group
        .samples
        .iter()
        .any(|s| s.usable() && s.verdict.full_pass());
    Some(AtStep { rate, solved })
}

fn within_group(groups: &[Group]) -> WithinGroup {
    let mut w = WithinGroup::default();
    for g in groups {
        let usable: Vec<(usize, usize)> = g
            .samples
            .iter()
            .filter(|s| s.usable())
            .map(|s| (s.verdict.passed, s.verdict.total))
            .collect();
        if !usable.iter().any(|&(p, _)| p > 0) {
            continue;
        }
        w.groups += 1;
        let full = usable.iter().any(|&(p, t)| p == t);
        if full {
            w.top_is_full += 1;
        }
        let mean = usable
            .iter()
            .map(|&(p, t)| p as f64 / t as f64)
            .sum::<f64>()
            / usable.len() as f64;
        for &(p, t) in &usable {
            if p == 0 || p == t {
                continue;
            }
            let above = p as f64 / t as f64 > mean + EPS;
            if full {
                w.partial_with_full += 1;
                w.partial_above_mean_with_full += above as usize;
            } else {
                w.partial_without_full += 1;
                w.partial_above_mean_without_full += above as usize;
            }
        }
    }
    w.rates();
    w
}

/// The calibration of groups keyed by step.
pub fn calibrate(by_step: &BTreeMap<u64, Vec<Group>>, buckets: usize) -> Calibration {
    let steps: Vec<u64> = by_step.keys().copied().collect();
    let final_step = steps.last().copied();
    let at: BTreeMap<u64, HashMap<&str, AtStep>> = by_step
        .iter()
        .map(|(&s, groups)| {
            let m = groups
                .iter()
                .filter_map(|g| problem_at(g).map(|a| (g.problem_id.as_str(), a)))
                .collect();
            (s, m)
        })
        .collect();
    let bounds = bucket_bounds(buckets);
    let mut total_within = WithinGroup::default();
    let mut reports = Vec::new();
    for (&s, groups) in by_step {
        let now = &at[&s];
        let within = within_group(groups);
        total_within.add(&within);
        // Problems in input order, for stable output.
        let ids: Vec<&str> = groups
            .iter()
            .map(|g| g.problem_id.as_str())
            .filter(|id| now.contains_key(id))
            .collect();
        let rates: Vec<f64> = ids.iter().map(|id| now[id].rate).collect();
        let later = (Some(s) != final_step).then(|| {
            let fin = &at[&final_step.expect("steps are not empty")];
            let kept: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| fin.contains_key(id))
                .collect();
            let solved_later = |id: &str| {
                at.range(s + 1..)
                    .any(|(_, m)| m.get(id).is_some_and(|a| a.solved))
            };
            let rows: Vec<(AtStep, bool, bool)> = kept
                .iter()
                .map(|id| (now[id], fin[id].solved, solved_later(id)))
                .collect();
            let mut bs: Vec<Bucket> = bounds
                .iter()
                .map(|(label, lo, hi)| Bucket {
                    label: label.clone(),
                    lo: *lo,
                    hi: *hi,
                    problems: 0,
                    solved_now: 0,
                    solved_final: 0,
                    p_solved_final: None,
                    solved_later: 0,
                    p_solved_later: None,
                })
                .collect();
            for (a, fin_solved, later_solved) in &rows {
                let b = &mut bs[bucket_of(a.rate, buckets)];
                b.problems += 1;
                b.solved_now += a.solved as usize;
                b.solved_final += *fin_solved as usize;
                b.solved_later += *later_solved as usize;
            }
            for b in &mut bs {
                b.p_solved_final = ratio(b.solved_final, b.problems);
                b.p_solved_later = ratio(b.solved_later, b.problems);
            }
            let correlations = |rows: &[&(AtStep, bool, bool)]| {
                let x: Vec<f64> = rows.iter().map(|r| r.0.rate).collect();
                let yf: Vec<f64> = rows.iter().map(|r| r.1 as u8 as f64).collect();
                let yl: Vec<f64> = rows.iter().map(|r| r.2 as u8 as f64).collect();
                Correlations {
                    final_step: spearman(&x, &yf),
                    any_later: spearman(&x, &yl),
                }
            };
            let all: Vec<&(AtStep, bool, bool)> = rows.iter().collect();
            let unsolved: Vec<&(AtStep, bool, bool)> =
                rows.iter().filter(|r| !r.0.solved).collect();
            Later {
                problems: rows.len(),
                missing_final: ids.len() - rows.len(),
                buckets: bs,
                spearman: correlations(&all),
                unsolved: Unsolved {
                    problems: unsolved.len(),
                    spearman: correlations(&unsolved),
                },
            }
        });
        reports.push(StepReport {
            step: s,
            problems: ids.len(),
            solved: ids.iter().filter(|id| now[*id].solved).count(),
            mean_pass_rate: rlcode_core::metrics::mean(&rates),
            within_group: within,
            later,
        });
    }
    total_within.rates();
    Calibration {
        label: None,
        steps,
        final_step,
        samples: 0,
        unusable_samples: 0,
        bucket_edges: (0..=buckets).map(|i| i as f64 / buckets as f64).collect(),
        by_step: reports,
        within_group: total_within,
        split_half: split_half(by_step, buckets),
    }
}

/// Read every input, calibrate, write one JSON object. A bad record stops the run with nothing
/// written unless `--keep-going`.
pub fn run(args: &CalibrationArgs, inputs: Vec<Input>, output: impl Write) -> Result<ExitCode> {
    rlcode_core::cli::closed_stdout_is_success(run_inner(args, inputs, output))
}

fn run_inner(
    args: &CalibrationArgs,
    inputs: Vec<Input>,
    mut output: impl Write,
) -> Result<ExitCode> {
    let mut skipper = Skipper::new(PROGRAM, args.input.keep_going);
    let mut by_step: BTreeMap<u64, Groups> = BTreeMap::new();
    let (mut samples, mut unusable) = (0, 0);
    for Input { step, mut reader } in inputs {
        while let Some(item) = reader.next_record() {
            let parsed = item.and_then(|line| {
                let s = match step {
                    Some(s) => s,
                    None => record_step(&line)?,
                };
                let (id, sample) = parse_record(&line)?;
                Ok((s, id, sample))
            });
            if let Some((s, id, sample)) = skipper.keep(parsed)? {
                samples += 1;
                unusable += !sample.usable() as usize;
                by_step.entry(s).or_default().push(&id, sample);
            }
        }
    }
    if by_step.len() < 2 {
        eprintln!(
            "{PROGRAM}: warning: --calibration needs verdicts of at least two steps to relate \
             one step to a later one; found {}",
            by_step.len()
        );
    }
    if unusable > 0 {
        eprintln!(
            "{PROGRAM}: warning: {unusable} samples with an infra test or without tests are left \
             out"
        );
    }
    let groups: BTreeMap<u64, Vec<Group>> =
        by_step.into_iter().map(|(s, g)| (s, g.groups)).collect();
    let mut c = calibrate(&groups, args.buckets);
    c.label = args.label.clone();
    c.samples = samples;
    c.unusable_samples = unusable;
    serde_json::to_writer(&mut output, &c).map_err(std::io::Error::from)?;
    output.write_all(b"\n")?;
    output.flush()?;
    if skipper.skipped() > 0 {
        eprintln!("{PROGRAM}: {} invalid records skipped", skipper.skipped());
    }
    Ok(skipper.exit_code())
}

/// The calibration of verdict files named `S.jsonl` (the step from the name), read strictly
/// (a bad record is an error): what `rl-eval summary` computes for each run's `eval/` and
/// `verdicts/`.
pub fn of_step_files(paths: &[PathBuf], buckets: usize) -> Result<Calibration> {
    let mut by_step: BTreeMap<u64, Groups> = BTreeMap::new();
    let (mut samples, mut unusable) = (0, 0);
    for path in paths {
        let Some(step) = step_from_name(path) else {
            continue;
        };
        let mut reader = JsonlReader::open(std::slice::from_ref(path))?;
        while let Some(line) = reader.next_record() {
            let (id, sample) = parse_record(&line?)?;
            samples += 1;
            unusable += !sample.usable() as usize;
            by_step.entry(step).or_default().push(&id, sample);
        }
    }
    let groups: BTreeMap<u64, Vec<Group>> =
        by_step.into_iter().map(|(s, g)| (s, g.groups)).collect();
    let mut c = calibrate(&groups, buckets);
    c.samples = samples;
    c.unusable_samples = unusable;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;
    use clap::Parser;
    use std::io::Cursor;

    /// A sample from a string of statuses (see [`rlcode_core::testing::verdict`]).
    fn s(statuses: &str) -> Sample {
        Sample {
            verdict: rlcode_core::testing::verdict(statuses, "r"),
            reward: None,
            flags: None,
        }
    }

    /// Problems of one step: id and the statuses of each sample.
    type Step<'a> = (u64, &'a [(&'a str, &'a [&'a str])]);

    fn steps(spec: &[Step]) -> BTreeMap<u64, Vec<Group>> {
        spec.iter()
            .map(|(step, problems)| {
                let mut g = Groups::default();
                for (id, samples) in *problems {
                    for x in *samples {
                        g.push(id, s(x));
                    }
                }
                (*step, g.groups)
            })
            .collect()
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[0.5, 0.1, 0.5, 0.9, 0.5]),
            [3.0, 1.0, 3.0, 5.0, 3.0]
        );
        assert_eq!(average_ranks(&[1.0, 1.0]), [1.5, 1.5]);
        assert!(average_ranks(&[]).is_empty());
    }

    #[test]
    fn spearman_matches_a_hand_computed_value_with_ties() {
        // x ranks (2, 3.5, 3.5, 5, 1), y ranks (2, 4.5, 2, 4.5, 2); both means 3.
        // Σdx·dy = 1 + 0.75 − 0.5 + 3 + 2 = 6.25, Σdx² = 9.5, Σdy² = 7.5.
        let x = [0.1, 0.4, 0.4, 0.9, 0.0];
        let y = [0.0, 1.0, 0.0, 1.0, 0.0];
        close(spearman(&x, &y), 6.25 / (9.5f64 * 7.5).sqrt());
        close(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 25.0]), 1.0);
        close(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        // Undefined: one point, or a constant variable.
        assert_eq!(spearman(&[0.3], &[1.0]), None);
        assert_eq!(spearman(&[0.1, 0.5], &[1.0, 1.0]), None);
        assert_eq!(spearman(&[0.5, 0.5], &[0.0, 1.0]), None);
    }

    #[test]
    fn buckets_split_off_exact_zero_and_one() {
        let labels: Vec<String> = bucket_bounds(5).into_iter().map(|b| b.0).collect();
        assert_eq!(
            labels,
            [
                "0",
                "(0,0.2)",
                "[0.2,0.4)",
                "[0.4,0.6)",
                "[0.6,0.8)",
                "[0.8,1)",
                "1"
            ]
        );
        let b = |r: f64| bucket_of(r, 5);
        assert_eq!(b(0.0), 0);
        assert_eq!(b(1e-6), 1);
        assert_eq!(b(0.19), 1);
        assert_eq!(b(0.2), 2);
        // Means that land a hair below a boundary in floating point still go above it.
        assert_eq!(b((0.6 + 0.2) / 2.0), 3);
        assert_eq!(b((1.0 + 0.2) / 2.0), 4);
        assert_eq!(b(0.8), 5);
        assert_eq!(b(0.999), 5);
        assert_eq!(b(1.0), 6);
        let labels: Vec<String> = bucket_bounds(3).into_iter().map(|b| b.0).collect();
        assert_eq!(
            labels,
            ["0", "(0,0.333)", "[0.333,0.667)", "[0.667,1)", "1"]
        );
        assert_eq!(bucket_of(2.0 / 3.0, 3), 3);
    }

    /// Steps 0, 5, 10 of five problems; `e` is missing at the final step and `c`'s infra
    /// sample is left out.
    fn fixture() -> BTreeMap<u64, Vec<Group>> {
        steps(&[
            (
                0,
                &[
                    ("a", &["pf", "ff"]),     // 0.25
                    ("b", &["pp", "pf"]),     // 0.75, solved
                    ("c", &["ff", "ff"]),     // 0
                    ("d", &["pppf", "pfff"]), // 0.5
                    ("e", &["pf"]),           // 0.5, never seen again
                ],
            ),
            (
                5,
                &[
                    ("a", &["pp", "ff"]),     // 0.5, solved
                    ("b", &["pf"]),           // 0.5
                    ("c", &["ff"]),           // 0
                    ("d", &["pppp", "pppp"]), // 1, solved
                ],
            ),
            (
                10,
                &[
                    ("a", &["ff"]),
                    ("b", &["pp"]),
                    ("c", &["ff", "fi"]),
                    ("d", &["pppp"]),
                ],
            ),
        ])
    }

    #[test]
    fn calibration_of_a_hand_built_run() {
        let c = calibrate(&fixture(), 5);
        assert_eq!(c.steps, [0, 5, 10]);
        assert_eq!(c.final_step, Some(10));
        assert_eq!(c.bucket_edges, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let s0 = &c.by_step[0];
        assert_eq!((s0.step, s0.problems, s0.solved), (0, 5, 1));
        close(s0.mean_pass_rate, (0.25 + 0.75 + 0.0 + 0.5 + 0.5) / 5.0);
        let later = s0.later.as_ref().unwrap();
        assert_eq!((later.problems, later.missing_final), (4, 1));
        // solved at the final step: a no, b yes, c no, d yes; at step 5 or 10: a, b, d.
        let by_label: HashMap<&str, &Bucket> = later
            .buckets
            .iter()
            .map(|b| (b.label.as_str(), b))
            .collect();
        let counts = |l: &str| {
            let b = by_label[l];
            (b.problems, b.solved_now, b.solved_final, b.solved_later)
        };
        assert_eq!(counts("0"), (1, 0, 0, 0)); // c
        assert_eq!(counts("(0,0.2)"), (0, 0, 0, 0));
        assert_eq!(counts("[0.2,0.4)"), (1, 0, 0, 1)); // a
        assert_eq!(counts("[0.4,0.6)"), (1, 0, 1, 1)); // d
        assert_eq!(counts("[0.6,0.8)"), (1, 1, 1, 1)); // b
        assert_eq!(counts("1"), (0, 0, 0, 0));
        assert_eq!(by_label["(0,0.2)"].p_solved_final, None);
        close(by_label["[0.2,0.4)"].p_solved_later, 1.0);
        close(by_label["[0.2,0.4)"].p_solved_final, 0.0);
        // x = (0.25, 0.75, 0, 0.5): ranks (2, 4, 1, 3).
        // final y = (0, 1, 0, 1): ranks (1.5, 3.5, 1.5, 3.5); Σdx·dy = 4, Σdx² = 5, Σdy² = 4.
        close(later.spearman.final_step, 4.0 / 20f64.sqrt());
        // later y = (1, 1, 0, 1): ranks (3, 3, 1, 3); Σdx·dy = 3, Σdy² = 3.
        close(later.spearman.any_later, 3.0 / 15f64.sqrt());
        // Unsolved at step 0: a, c, d; x ranks (2, 1, 3); final (0, 0, 1), later (1, 0, 1).
        assert_eq!(later.unsolved.problems, 3);
        close(later.unsolved.spearman.final_step, 1.5 / 3f64.sqrt());
        close(later.unsolved.spearman.any_later, 1.5 / 3f64.sqrt());

        // Step 5: a 0.5 (solved), b 0.5, c 0, d 1 (solved); later = the final step only.
        let l5 = c.by_step[1].later.as_ref().unwrap();
        assert_eq!((l5.problems, l5.missing_final), (4, 0));
        let b5: HashMap<&str, &Bucket> = l5.buckets.iter().map(|b| (b.label.as_str(), b)).collect();
        assert_eq!(
            (b5["[0.4,0.6)"].problems, b5["[0.4,0.6)"].solved_now),
            (2, 1)
        );
        assert_eq!(b5["[0.4,0.6)"].solved_final, 1);
        assert_eq!((b5["1"].problems, b5["1"].solved_final), (1, 1));
        assert_eq!(b5["[0.4,0.6)"].solved_later, b5["[0.4,0.6)"].solved_final);

        // The final step relates to nothing later; c's infra sample is not counted.
        let s10 = &c.by_step[2];
        assert_eq!(s10.later, None);
        assert_eq!((s10.problems, s10.solved), (4, 2));
    }

    #[test]
    fn split_half_pairs_one_halfs_pass_rate_with_the_others_full_pass() {
        // Samples 1st/3rd against 2nd/4th. x: first half pppf, pppf (0.75), second has pppp:
        // solved. y: first half ffff, pfff (0.125), second ffff, ffff: not solved. z: one
        // usable sample (an infra one left out): not a group here.
        let g = steps(&[
            (1, &[("x", &["pppf", "pppp", "pppf", "ffff"])]),
            (
                2,
                &[
                    ("y", &["ffff", "ffff", "pfff", "ffff"]),
                    ("z", &["pppp", "pppi"]),
                ],
            ),
        ]);
        let h = calibrate(&g, 5).split_half;
        assert_eq!(h.groups, 2);
        let counts: Vec<(usize, usize)> = h.buckets.iter().map(|b| (b.groups, b.solved)).collect();
        // buckets 0, (0,0.2), [0.2,0.4), [0.4,0.6), [0.6,0.8), [0.8,1), 1
        assert_eq!(
            counts,
            [(0, 0), (1, 0), (0, 0), (0, 0), (1, 1), (0, 0), (0, 0)]
        );
        close(h.buckets[4].p_solved, 1.0);
        assert_eq!(h.buckets[0].p_solved, None);
        close(h.spearman, 1.0);
        assert_eq!(h.unsolved_groups, 2);
    }

    #[test]
    fn within_group_counts_partial_passes_pushed_up() {
        let c = calibrate(&fixture(), 5);
        // Step 0: groups with a pass a, b, d, e; only b has a full pass. b's partial (0.5) is
        // below its mean (0.75). Without a full pass: a's 0.5 > 0.25 (up), d's 0.75 > 0.5 (up),
        // d's 0.25 (down), e's 0.5 = its own mean (not up).
        let w = &c.by_step[0].within_group;
        assert_eq!((w.groups, w.top_is_full), (4, 1));
        close(w.top_is_full_rate, 0.25);
        assert_eq!(
            (w.partial_with_full, w.partial_above_mean_with_full),
            (1, 0)
        );
        assert_eq!(
            (w.partial_without_full, w.partial_above_mean_without_full),
            (4, 2)
        );
        close(w.partial_above_mean_without_full_rate, 0.5);
        close(w.partial_above_mean_with_full_rate, 0.0);
        // A partial pass above the mean beside a full pass: the conflict pass_rate creates.
        let g = steps(&[(0, &[("x", &["pppp", "pppf", "pfff", "ffff"])])]);
        let w = calibrate(&g, 5).within_group;
        assert_eq!(
            (w.partial_with_full, w.partial_above_mean_with_full),
            (2, 1)
        );
        // Summed over steps: step 5 has a, b, d (a and d full; b alone, no partial above its
        // own mean), step 10 has b and d (both full, no partials).
        let total = calibrate(&fixture(), 5).within_group;
        assert_eq!((total.groups, total.top_is_full), (4 + 3 + 2, 1 + 2 + 2));
        assert_eq!(total.partial_without_full, 4 + 1);
        close(total.top_is_full_rate, 5.0 / 9.0);
    }

    #[test]
    fn one_step_or_none_gives_no_later_and_null_correlations() {
        let c = calibrate(&steps(&[(3, &[("a", &["pf"])])]), 5);
        assert_eq!(c.final_step, Some(3));
        assert_eq!(c.by_step[0].later, None);
        let c = calibrate(&BTreeMap::new(), 5);
        assert_eq!(c.final_step, None);
        assert!(c.by_step.is_empty());
        assert_eq!(c.within_group.top_is_full_rate, None);
    }

    #[test]
    fn steps_come_from_flags_names_or_records() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            file_steps(
                &[
                    p("run/eval/10.jsonl"),
                    p("3.jsonl.gz"),
                    p("x.jsonl"),
                    p("1e2.jsonl")
                ],
                &[]
            )
            .unwrap(),
            [Some(10), Some(3), None, None]
        );
        assert_eq!(
            file_steps(&[p("a.jsonl"), p("b.jsonl")], &[7, 9]).unwrap(),
            [Some(7), Some(9)]
        );
        assert_eq!(file_steps(&[], &[]).unwrap(), [None]);
        assert_eq!(file_steps(&[], &[4]).unwrap(), [Some(4)]);
        let e = file_steps(&[p("a.jsonl")], &[1, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--steps gives 2 steps for 1 input files"), "{e}");
    }

    fn args(argv: &[&str]) -> CalibrationArgs {
        CalibrationArgs::from_flags(
            &Args::try_parse_from(
                ["rl-eval", "--calibration"]
                    .into_iter()
                    .chain(argv.iter().copied()),
            )
            .unwrap(),
        )
    }

    fn record(step: Option<u64>, id: &str, passed: usize, total: usize) -> String {
        let tests: Vec<String> = (0..total)
            .map(|i| {
                let st = if i < passed { "pass" } else { "fail" };
                format!("{{\"status\":\"{st}\"}}")
            })
            .collect();
        let step = step.map(|s| format!("\"step\":{s},")).unwrap_or_default();
        format!(
            "{{{step}\"problem_id\":\"{id}\",\"verdict\":{{\"passed\":{passed},\"total\":{total},\"tests\":[{}],\"runtime\":\"r\"}}}}\n",
            tests.join(",")
        )
    }

    fn run_on(argv: &[&str], inputs: Vec<(Option<u64>, String)>) -> (Result<ExitCode>, String) {
        let inputs = inputs
            .into_iter()
            .map(|(step, text)| Input {
                step,
                reader: JsonlReader::from_reader("-", Cursor::new(text.into_bytes())),
            })
            .collect();
        let mut out = Vec::new();
        let res = run(&args(argv), inputs, &mut out);
        (res, String::from_utf8(out).unwrap())
    }

    #[test]
    fn run_reads_steps_from_records_and_writes_one_line() {
        let text = [
            record(Some(0), "a", 1, 2),
            record(Some(0), "b", 0, 2),
            record(Some(4), "a", 2, 2),
            record(Some(4), "b", 0, 2),
        ]
        .concat();
        let (res, out) = run_on(&["--label", "pr"], vec![(None, text)]);
        assert_eq!(res.unwrap(), ExitCode::Success);
        assert!(out.ends_with('\n') && out.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["label"], "pr");
        assert_eq!(v["steps"], serde_json::json!([0, 4]));
        assert_eq!(v["samples"], 4);
        assert_eq!(v["by_step"][0]["later"]["spearman"]["final"], 1.0);
        assert_eq!(v["by_step"][1]["later"], serde_json::Value::Null);
        assert_eq!(v["by_step"][0]["later"]["buckets"][3]["label"], "[0.4,0.6)");
        assert_eq!(v["by_step"][0]["later"]["buckets"][3]["solved_final"], 1);
    }

    #[test]
    fn a_file_step_wins_and_a_record_without_a_step_is_invalid() {
        // The file's step (from its name or --steps) is used; a record's own step is ignored.
        let (res, out) = run_on(
            &[],
            vec![
                (Some(2), record(Some(99), "a", 0, 1)),
                (Some(3), record(None, "a", 1, 1)),
            ],
        );
        assert_eq!(res.unwrap(), ExitCode::Success);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["steps"], serde_json::json!([2, 3]));

        let text = [record(Some(0), "a", 0, 1), record(None, "a", 1, 1)].concat();
        let (res, out) = run_on(&[], vec![(None, text.clone())]);
        let e = res.unwrap_err().to_string();
        assert!(e.starts_with("-:2: no step for this record"), "{e}");
        assert!(out.is_empty());
        let (res, out) = run_on(&["--keep-going"], vec![(None, text)]);
        assert_eq!(res.unwrap(), ExitCode::Skipped);
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn calibration_flags_are_checked() {
        for bad in [
            &["rl-eval", "--calibration", "--format", "csv"][..],
            &["rl-eval", "--calibration", "--step", "3"],
            &["rl-eval", "--steps", "1,2"],
            &["rl-eval", "--buckets", "4"],
            &["rl-eval", "--calibration", "--buckets", "0"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
        assert_eq!(args(&["--buckets", "4"]).buckets, 4);
        // The subcommand takes the same flags.
        let cli = crate::Cli::try_parse_from([
            "rl-eval",
            "calibration",
            "--buckets",
            "4",
            "--steps",
            "0,5",
            "a.jsonl",
            "b.jsonl",
        ])
        .unwrap();
        let Some(crate::Command::Calibration(c)) = cli.command else {
            panic!("not the calibration subcommand");
        };
        assert_eq!((c.buckets, c.steps), (4, vec![0, 5]));
        assert_eq!(c.input.inputs.len(), 2);
    }
}

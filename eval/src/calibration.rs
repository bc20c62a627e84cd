//! `rl-eval --calibration`: how well a problem's pass rate at one step predicts that it is
//! solved later in training, and how pass rate ranks the samples within a group.
//!
//! Input: verdicts of the same problems evaluated at several steps (scripts/train.sh keeps
//! them as `DIR/eval/S.jsonl`, one file per step S). Definitions and the output fields:
//! docs/calibration.md.

use crate::{Args, Group, Groups, PROGRAM, parse_record};
use rlcode_core::jsonl::Skipper;
use rlcode_core::{Error, ExitCode, JsonlReader, Line, RecordError, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Floating-point slack when a mean pass rate is put in a bucket or compared with a group mean.
const EPS: f64 = 1e-9;

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
pub fn open_inputs(args: &Args) -> Result<Vec<Input>> {
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
    }
}

/// Read every input, calibrate, write one JSON object. A bad record stops the run with nothing
/// written unless `--keep-going`.
pub fn run(args: &Args, inputs: Vec<Input>, output: impl Write) -> Result<ExitCode> {
    rlcode_core::cli::closed_stdout_is_success(run_inner(args, inputs, output))
}

fn run_inner(args: &Args, inputs: Vec<Input>, mut output: impl Write) -> Result<ExitCode> {
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
            match parsed {
                Ok((s, id, sample)) => {
                    samples += 1;
                    unusable += !sample.usable() as usize;
                    by_step.entry(s).or_default().push(&id, sample);
                }
                Err(Error::Record(e)) => skipper.skip(e)?,
                Err(e) => return Err(e),
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

//! `rl-eval compare`: every configuration of a study against a baseline configuration, paired
//! by seed and held-out problem, from the kept evaluation verdicts
//! (`RUNS/<config>/seed-<s>/eval/<step>.jsonl`). Writes `comparison.csv` (one row per
//! configuration, baseline and metric) and `comparison.md` (the same in words). docs/study.md.

use crate::layout::{StudyRun, eval_files, study_runs};
use crate::stats::{Paired, Settings, paired};
use crate::{Sample, parse_record};
use rlcode_core::{Error, JsonlReader, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Compare the configurations of a study with a baseline.
#[derive(Debug, Clone, clap::Parser)]
pub struct CompareArgs {
    /// Directory with one `<config>/seed-<s>/` folder per run.
    #[arg(long, value_name = "DIR")]
    pub runs: PathBuf,
    /// The configuration every other one is compared with.
    #[arg(long, default_value = "binary-grpo")]
    pub baseline: String,
    /// Write `comparison.csv` and `comparison.md` here (default: print the CSV on stdout).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Equivalence margin of the TOST, in pass@1 (declared before the run: docs/study.md).
    #[arg(long, default_value_t = 0.05)]
    pub margin: f64,
    /// Two-sided level of the CIs and tests.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 4000)]
    pub resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Per-problem figures of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fig {
    pass1: f64,
    pass_rate: f64,
    /// Share of the samples that pass some tests but not all.
    partial: f64,
}

/// A run's evaluations: step → problem → figures.
#[derive(Debug, Clone, Default)]
struct RunEvals {
    steps: Vec<(u64, BTreeMap<String, Fig>)>,
}

fn read_eval(path: &Path) -> Result<BTreeMap<String, Fig>> {
    let mut reader = JsonlReader::open(&[path.to_path_buf()])?;
    let mut by: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    while let Some(line) = reader.next_record() {
        let line = line?;
        let (id, s) = parse_record(&line)?;
        by.entry(id).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (id, samples) in by {
        let usable: Vec<&Sample> = samples.iter().filter(|s| s.usable()).collect();
        if usable.is_empty() {
            continue;
        }
        let n = usable.len() as f64;
        let full = usable
            .iter()
            .filter(|s| s.verdict.passed == s.verdict.total)
            .count();
        let partial = usable
            .iter()
            .filter(|s| s.verdict.passed > 0 && s.verdict.passed < s.verdict.total)
            .count();
        let rate = usable
            .iter()
            .map(|s| s.verdict.passed as f64 / s.verdict.total as f64)
            .sum::<f64>();
        out.insert(
            id,
            Fig {
                pass1: full as f64 / n,
                pass_rate: rate / n,
                partial: partial as f64 / n,
            },
        );
    }
    Ok(out)
}

fn load(run: &StudyRun) -> Result<RunEvals> {
    let mut steps = Vec::new();
    for (step, path) in eval_files(&run.dir)? {
        steps.push((step, read_eval(&path)?));
    }
    Ok(RunEvals { steps })
}

/// The figures compared, each a function of one run and one problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Held-out pass@1 at the run's last evaluation.
    FinalPass1,
    /// Mean held-out pass@1 over the run's steps: the trapezoid area under the pass@1 curve
    /// divided by the step range (the last evaluation's value for a single one).
    AucPass1,
    /// Mean test pass rate at the last evaluation.
    FinalPassRate,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::FinalPass1, Metric::AucPass1, Metric::FinalPassRate];

    pub fn name(self) -> &'static str {
        match self {
            Metric::FinalPass1 => "final_pass@1",
            Metric::AucPass1 => "auc_pass@1",
            Metric::FinalPassRate => "final_pass_rate",
        }
    }

    fn of(self, r: &RunEvals, problem: &str) -> Option<f64> {
        let (_, last) = r.steps.last()?;
        match self {
            Metric::FinalPass1 => last.get(problem).map(|f| f.pass1),
            Metric::FinalPassRate => last.get(problem).map(|f| f.pass_rate),
            Metric::AucPass1 => {
                let pts: Vec<(f64, f64)> = r
                    .steps
                    .iter()
                    .map(|(s, m)| m.get(problem).map(|f| (*s as f64, f.pass1)))
                    .collect::<Option<_>>()?;
                let span = pts.last()?.0 - pts.first()?.0;
                if span <= 0.0 {
                    return Some(pts.last()?.1);
                }
                let area: f64 = pts
                    .windows(2)
                    .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                    .sum();
                Some(area / span)
            }
        }
    }
}

/// A configuration's warm start (its runs' step-0 evaluations, pooled over seeds and
/// problems): where the study starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Warm {
    pub config: String,
    pub pass1: f64,
    pub pass_rate: f64,
    pub partial: f64,
    pub problems: usize,
}

/// One row of comparison.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub config: String,
    /// A configuration, or `step-0`: the run's own warm-start evaluation.
    pub baseline: String,
    pub metric: String,
    pub config_mean: f64,
    pub baseline_mean: f64,
    pub margin: f64,
    pub result: Paired,
}

impl Row {
    pub fn equivalent(&self, alpha: f64) -> bool {
        self.result.tost_p < alpha
    }
}

/// The rows for `d[s][p]` built from two sides: `a` and `b` give a seed-problem value each.
fn compare_matrix(
    seeds: &[String],
    problems: &[String],
    a: impl Fn(&str, &str) -> Option<f64>,
    b: impl Fn(&str, &str) -> Option<f64>,
    st: Settings,
) -> Option<(f64, f64, Paired)> {
    let mut d = Vec::new();
    let (mut sa, mut sb, mut n) = (0.0, 0.0, 0usize);
    for s in seeds {
        let mut row = Vec::new();
        for p in problems {
            let (x, y) = (a(s, p)?, b(s, p)?);
            sa += x;
            sb += y;
            n += 1;
            row.push(x - y);
        }
        d.push(row);
    }
    let r = paired(&d, st)?;
    Some((sa / n as f64, sb / n as f64, r))
}

/// Problems present for every (run, metric) pair asked: the paired set.
fn common_problems<'a>(runs: impl Iterator<Item = &'a RunEvals>) -> Vec<String> {
    let mut common: Option<BTreeSet<String>> = None;
    for r in runs {
        for (_, m) in &r.steps {
            let keys: BTreeSet<String> = m.keys().cloned().collect();
            common = Some(match common {
                None => keys,
                Some(c) => c.intersection(&keys).cloned().collect(),
            });
        }
    }
    common.unwrap_or_default().into_iter().collect()
}

/// Every comparison of a study: each configuration against `step-0` (its gain in final pass@1
/// over the warm start) and each other configuration against the baseline on every metric.
pub fn compare(args: &CompareArgs) -> Result<(Vec<Row>, Vec<Warm>)> {
    let runs = study_runs(&args.runs)?;
    if runs.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no runs (expected <config>/seed-<s>/ folders)",
            args.runs.display()
        )));
    }
    let mut data: BTreeMap<String, BTreeMap<String, RunEvals>> = BTreeMap::new();
    for r in &runs {
        let ev = load(r)?;
        if !ev.steps.is_empty() {
            data.entry(r.config.clone())
                .or_default()
                .insert(r.seed.clone(), ev);
        }
    }
    let base = data.get(&args.baseline).ok_or_else(|| {
        Error::Usage(format!(
            "--baseline {}: no run of it with evaluations under {} (configurations: {})",
            args.baseline,
            args.runs.display(),
            data.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let st = Settings {
        resamples: args.resamples,
        alpha: args.alpha,
        margin: args.margin,
        seed: args.seed,
    };
    let mut rows = Vec::new();
    let mut warms = Vec::new();
    for (config, seeds_of) in &data {
        let zero: Vec<&BTreeMap<String, Fig>> = seeds_of
            .values()
            .filter_map(|r| r.steps.first().filter(|(s, _)| *s == 0).map(|(_, m)| m))
            .collect();
        let figs: Vec<&Fig> = zero.iter().flat_map(|m| m.values()).collect();
        if !figs.is_empty() {
            let n = figs.len() as f64;
            warms.push(Warm {
                config: config.clone(),
                pass1: figs.iter().map(|f| f.pass1).sum::<f64>() / n,
                pass_rate: figs.iter().map(|f| f.pass_rate).sum::<f64>() / n,
                partial: figs.iter().map(|f| f.partial).sum::<f64>() / n,
                problems: zero.iter().map(|m| m.len()).max().unwrap_or(0),
            });
        }
        // Gain over the warm start: the same run's step-0 evaluation.
        let seeds: Vec<String> = seeds_of
            .iter()
            .filter(|(_, r)| r.steps.first().is_some_and(|(s, _)| *s == 0) && r.steps.len() > 1)
            .map(|(s, _)| s.clone())
            .collect();
        let problems = common_problems(seeds.iter().map(|s| &seeds_of[s]));
        let step0 = |s: &str, p: &str| seeds_of[s].steps[0].1.get(p).map(|f| f.pass1);
        let fin = |s: &str, p: &str| Metric::FinalPass1.of(&seeds_of[s], p);
        if let Some((a, b, r)) = compare_matrix(&seeds, &problems, fin, step0, st) {
            rows.push(Row {
                config: config.clone(),
                baseline: "step-0".into(),
                metric: Metric::FinalPass1.name().into(),
                config_mean: a,
                baseline_mean: b,
                margin: args.margin,
                result: r,
            });
        }
        if config == &args.baseline {
            continue;
        }
        // Seeds that both sides ran to the same last evaluated step (a run still in progress,
        // or one with a different budget, is left out, with a warning).
        let last = |r: &RunEvals| r.steps.last().map(|(s, _)| *s);
        let mut seeds = Vec::new();
        for (s, r) in seeds_of {
            let Some(b) = base.get(s) else { continue };
            if r.steps.len() > 1 && last(r) == last(b) {
                seeds.push(s.clone());
            } else {
                eprintln!(
                    "rl-eval: warning: {config} seed-{s}: last evaluation at step {}, {} at {}: \
                     left out of the comparison",
                    last(r).map_or("none".into(), |x| x.to_string()),
                    args.baseline,
                    last(b).map_or("none".into(), |x| x.to_string())
                );
            }
        }
        let problems = common_problems(
            seeds
                .iter()
                .flat_map(|s| [&seeds_of[s], &base[s]].into_iter()),
        );
        for m in Metric::ALL {
            let a = |s: &str, p: &str| m.of(&seeds_of[s], p);
            let b = |s: &str, p: &str| m.of(&base[s], p);
            if let Some((ma, mb, r)) = compare_matrix(&seeds, &problems, a, b, st) {
                rows.push(Row {
                    config: config.clone(),
                    baseline: args.baseline.clone(),
                    metric: m.name().into(),
                    config_mean: ma,
                    baseline_mean: mb,
                    margin: args.margin,
                    result: r,
                });
            }
        }
    }
    Ok((rows, warms))
}

fn f4(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        String::new()
    }
}

pub fn write_csv(rows: &[Row], alpha: f64, out: impl Write) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let err = |e: csv::Error| Error::Other(e.into());
    w.write_record([
        "config",
        "baseline",
        "metric",
        "seeds",
        "problems",
        "config_mean",
        "baseline_mean",
        "diff",
        "ci_low",
        "ci_high",
        "se",
        "seed_ci_low",
        "seed_ci_high",
        "p_value",
        "tost_p",
        "margin",
        "equivalent",
        "mde",
    ])
    .map_err(err)?;
    for r in rows {
        let p = &r.result;
        w.write_record([
            r.config.clone(),
            r.baseline.clone(),
            r.metric.clone(),
            p.seeds.to_string(),
            p.problems.to_string(),
            f4(r.config_mean),
            f4(r.baseline_mean),
            f4(p.diff),
            f4(p.ci_low),
            f4(p.ci_high),
            f4(p.se),
            f4(p.seed_ci_low),
            f4(p.seed_ci_high),
            f4(p.p_value),
            f4(p.tost_p),
            f4(r.margin),
            r.equivalent(alpha).to_string(),
            f4(p.mde),
        ])
        .map_err(err)?;
    }
    w.flush()?;
    Ok(())
}

fn signed(x: f64) -> String {
    format!("{x:+.3}")
}

/// The comparison in words (Markdown).
pub fn markdown(rows: &[Row], warms: &[Warm], alpha: f64) -> String {
    let level = ((1.0 - alpha) * 100.0).round();
    let mut s = String::from("## Warm starts (step 0, held out)\n\n");
    s.push_str("| config | pass@1 | mean pass rate | partial-pass share | problems |\n");
    s.push_str("|---|---|---|---|---|\n");
    for w in warms {
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {} |\n",
            w.config, w.pass1, w.pass_rate, w.partial, w.problems
        ));
    }
    s.push_str("\n## Comparison (paired by seed and held-out problem)\n\n");
    s.push_str(&format!(
        "Differences with a {level}% bootstrap CI (seeds and problems resampled), a seed-level 95% \
         t interval (over per-seed means), the sign-flip permutation p-value over seeds (never \
         below 2/2^seeds), and an equivalence test (TOST) against the declared margin. MDE: the \
         smallest true difference detected with 80% power.\n\n"
    ));
    s.push_str(
        "| config | vs | metric | config | baseline | diff | CI | seed-level CI | p | TOST p | MDE | seeds × problems |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let p = &r.result;
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {} | [{}, {}] | {} | {:.3} | {:.3} | {:.3} | {} × {} |\n",
            r.config,
            r.baseline,
            r.metric,
            r.config_mean,
            r.baseline_mean,
            signed(p.diff),
            signed(p.ci_low),
            signed(p.ci_high),
            if p.seed_ci_low.is_finite() {
                format!("[{}, {}]", signed(p.seed_ci_low), signed(p.seed_ci_high))
            } else {
                "–".into()
            },
            p.p_value,
            p.tost_p,
            p.mde,
            p.seeds,
            p.problems
        ));
    }
    s.push('\n');
    for r in rows
        .iter()
        .filter(|r| r.metric == Metric::FinalPass1.name())
    {
        let p = &r.result;
        let ci = format!(
            "{} ({level}% CI {} to {}; permutation p = {:.3} over {} seeds; {} problems)",
            signed(p.diff),
            signed(p.ci_low),
            signed(p.ci_high),
            p.p_value,
            p.seeds,
            p.problems
        );
        let few = if p.seeds < 2 {
            " (one seed: the CI covers held-out problems, not training randomness)"
        } else {
            ""
        };
        let verdict = if p.ci_low > 0.0 {
            "higher"
        } else if p.ci_high < 0.0 {
            "lower"
        } else if r.equivalent(alpha) {
            "equivalent"
        } else {
            "undecided"
        };
        let text = if r.baseline == "step-0" {
            format!(
                "- **{}** moves final held-out pass@1 from the warm start's {:.3} to {:.3}: {ci}{few}.\n",
                r.config, r.baseline_mean, r.config_mean
            )
        } else {
            let also = if r.equivalent(alpha) {
                format!(
                    ", though by less than the ±{:.2} margin (TOST p = {:.3})",
                    r.margin, p.tost_p
                )
            } else {
                String::new()
            };
            let why = match verdict {
                "higher" | "lower" => {
                    format!("{verdict} than {}, the CI excludes 0{also}", r.baseline)
                }
                "equivalent" => format!(
                    "equivalent to {} within ±{:.2} (TOST p = {:.3})",
                    r.baseline, r.margin, p.tost_p
                ),
                _ => format!(
                    "neither shown different from {} nor equivalent within ±{:.2} (TOST p = {:.3}; \
                     MDE {:.3})",
                    r.baseline, r.margin, p.tost_p, p.mde
                ),
            };
            format!(
                "- **{}** vs {}: final pass@1 {:.3} vs {:.3}, difference {ci}: {why}{few}.\n",
                r.config, r.baseline, r.config_mean, r.baseline_mean
            )
        };
        s.push_str(&text);
    }
    s
}

pub fn run(args: &CompareArgs, stdout: impl Write) -> Result<()> {
    if !(args.margin > 0.0 && args.alpha > 0.0 && args.alpha < 1.0 && args.resamples > 0) {
        return Err(Error::Usage(
            "--margin must be positive, --alpha in (0, 1), --resamples at least 1".into(),
        ));
    }
    let (rows, warms) = compare(args)?;
    match &args.out {
        None => write_csv(&rows, args.alpha, stdout),
        Some(dir) => {
            let io = |source: std::io::Error| Error::Open {
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut buf = Vec::new();
            write_csv(&rows, args.alpha, &mut buf)?;
            let write = rlcode_core::paths::write_atomic;
            write(&dir.join("comparison.csv"), &buf).map_err(io)?;
            write(
                &dir.join("comparison.md"),
                markdown(&rows, &warms, args.alpha).as_bytes(),
            )
            .map_err(io)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An eval file: for each problem, `full` of `n` samples pass all 4 tests, the rest 2.
    fn eval_file(path: &Path, problems: &[(&str, usize, usize)]) {
        let mut text = String::new();
        for &(id, full, n) in problems {
            for i in 0..n {
                let passed = if i < full { 4 } else { 2 };
                let tests: Vec<_> = (0..4)
                    .map(|t| json!({"status": if t < passed {"pass"} else {"fail"}}))
                    .collect();
                text.push_str(
                    &json!({"problem_id": id, "sample_index": i,
                        "verdict": {"passed": passed, "total": 4, "tests": tests, "runtime": "t"}})
                    .to_string(),
                );
                text.push('\n');
            }
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn args(runs: &Path) -> CompareArgs {
        CompareArgs {
            runs: runs.to_path_buf(),
            baseline: "binary-grpo".into(),
            out: None,
            margin: 0.05,
            alpha: 0.05,
            resamples: 500,
            seed: 0,
        }
    }

    #[test]
    fn rows_pair_seeds_and_problems() {
        let t = tempfile::tempdir().unwrap();
        let ps = ["p1", "p2", "p3", "p4"];
        for seed in 1..=6 {
            for (config, gain) in [("binary-grpo", 2), ("pass_rate-grpo", 0)] {
                let dir = t.path().join(format!("{config}/seed-{seed}/eval"));
                let warm: Vec<_> = ps.iter().map(|p| (*p, 1, 4)).collect();
                eval_file(&dir.join("0.jsonl"), &warm);
                let last: Vec<_> = ps.iter().map(|p| (*p, 1 + gain, 4)).collect();
                eval_file(&dir.join("5.jsonl"), &last);
            }
        }
        let (rows, warms) = compare(&args(t.path())).unwrap();
        assert_eq!(warms.len(), 2);
        assert!((warms[0].pass1 - 0.25).abs() < 1e-12 && (warms[0].partial - 0.75).abs() < 1e-12);
        let find = |c: &str, b: &str, m: &str| {
            rows.iter()
                .find(|r| r.config == c && r.baseline == b && r.metric == m)
                .unwrap_or_else(|| panic!("{c} {b} {m}: {rows:?}"))
        };
        let gain = find("binary-grpo", "step-0", "final_pass@1");
        assert!((gain.result.diff - 0.5).abs() < 1e-12);
        assert_eq!((gain.result.seeds, gain.result.problems), (6, 4));
        assert!((gain.baseline_mean - 0.25).abs() < 1e-12);
        let vs = find("pass_rate-grpo", "binary-grpo", "final_pass@1");
        assert!((vs.result.diff + 0.5).abs() < 1e-12);
        assert!(vs.result.p_value < 0.05);
        assert!(vs.result.ci_high < 0.0);
        // AUC: binary goes 0.25 -> 0.75 linearly: mean 0.5; pass_rate stays at 0.25.
        let auc = find("pass_rate-grpo", "binary-grpo", "auc_pass@1");
        assert!((auc.result.diff + 0.25).abs() < 1e-12, "{auc:?}");
        let mut csv = Vec::new();
        write_csv(&rows, 0.05, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.starts_with(
            "config,baseline,metric,seeds,problems,config_mean,baseline_mean,diff,ci_low,ci_high"
        ));
        let md = markdown(&rows, &warms, 0.05);
        assert!(md.contains("lower than binary-grpo"), "{md}");
    }

    #[test]
    fn a_missing_baseline_is_a_usage_error_naming_the_configs() {
        let t = tempfile::tempdir().unwrap();
        eval_file(&t.path().join("x-grpo/seed-1/eval/0.jsonl"), &[("p", 1, 2)]);
        let e = compare(&args(t.path())).unwrap_err().to_string();
        assert!(e.contains("binary-grpo") && e.contains("x-grpo"), "{e}");
    }
}

//! `rl-eval summary`: one row per run of a study (a configuration and a seed), and a table of
//! mean ± std per configuration, from the files `scripts/train.sh` writes.
//!
//! Input layout: `RUNS/<config>/seed-<s>/{eval.jsonl,metrics.jsonl}`, the layout
//! `scripts/reproduce.sh` makes. `eval.jsonl` holds one `rl-eval --step S` line per held-out
//! evaluation, `metrics.jsonl` one line per RL step (rl-update's metrics line plus train.sh's
//! fields). Figures a run lacks (no diagnostics, no evaluation) are left empty, never zero.

use rlcode_core::metrics::{mean, sample_std};
use rlcode_core::{Error, JsonlReader, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Summarise a study's runs.
#[derive(Debug, Clone, clap::Parser)]
pub struct SummaryArgs {
    /// Directory with one `<config>/seed-<s>/` folder per run.
    #[arg(long, value_name = "DIR")]
    pub runs: PathBuf,
    /// Write `summary.csv` and `summary.md` here (default: print the CSV on stdout).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunRow {
    pub config: String,
    pub seed: String,
    pub reward: Option<String>,
    pub algo: Option<String>,
    /// RL steps done (metrics lines).
    pub steps: usize,
    /// Held-out pass@1 at step 0 (the warm start) and at the last evaluation.
    pub initial_pass1: Option<f64>,
    pub final_pass1: Option<f64>,
    /// The largest k other than 1 that the evaluations report, and pass@k at the last one.
    pub k: Option<u64>,
    pub final_pass_k: Option<f64>,
    /// Best held-out pass@1 over every evaluation after step 0.
    pub best_pass1: Option<f64>,
    /// Mean over steps of the share of groups whose advantages are not all zero.
    pub reward_density: Option<f64>,
    /// Means over steps of the diagnostics of `rl-update --diagnostics` (docs/diagnostics.md).
    pub cancellation: Option<f64>,
    pub cancellation_partial: Option<f64>,
    pub alignment: Option<f64>,
    pub partial_share: Option<f64>,
    /// Means over steps of the diagnostics' null values, split-group alignment and
    /// pairwise cosines, in the order of [`NULLS`].
    pub nulls: [Option<f64>; 7],
    /// Seconds spent in sampling, verifying and updating, summed over steps.
    pub train_seconds: f64,
    /// Held-out pass@1 at each evaluation with the samples drawn for training up to that step:
    /// (step, samples drawn, pass@1), by step.
    pub curve: Vec<(u64, f64, f64)>,
    /// For each of [`LEVELS`]: the first evaluated step whose pass@1 is at least step 0's plus
    /// the level, and the samples drawn up to it; `None` where no evaluation reached it.
    pub to_level: [Option<(u64, f64)>; 2],
    /// Calibration of pass rate (docs/calibration.md), in the order of [`CALIBRATION`].
    pub calibration: [Option<f64>; 5],
}

/// The calibration figures of a run: from its held-out evaluations (`eval/`) the split-half ρ
/// (a group's half's pass rate against a full pass in the other half) and step 0's ρ with
/// "solved later" over the problems unsolved at step 0; from its training groups (`verdicts/`)
/// the split-half ρ, the share of groups with a passing test whose best sample is correct, and
/// the share of partial passes beside a full pass that `pass_rate` pushes up.
pub const CALIBRATION: [&str; 5] = [
    "heldout_split_rho",
    "heldout_unsolved_later_rho",
    "train_split_rho",
    "train_top_is_full_rate",
    "train_partial_up_beside_full_rate",
];

/// Gains over a run's own step-0 pass@1 whose first crossing the summary reports (steps and
/// samples drawn to reach them): the study's margin and its target (docs/study.md).
pub const LEVELS: [f64; 2] = [0.05, 0.10];

/// The null values, the split-group alignment and the mean pairwise cosines between outcome
/// classes (docs/diagnostics.md), read from the metrics lines into [`RunRow::nulls`].
pub const NULLS: [&str; 7] = [
    "cancellation_null",
    "alignment_null",
    "alignment_split",
    "cos_full_full",
    "cos_full_partial",
    "cos_partial_partial",
    "cos_partial_zero",
];

/// Diagnostics fields read from the metrics lines, in the order of the row's fields.
const DIAGNOSTICS: [&str; 4] = [
    "cancellation",
    "cancellation_partial",
    "alignment",
    "partial_share",
];

fn read_lines(path: &Path) -> Result<Vec<Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader = JsonlReader::open(&[path.to_path_buf()])?;
    let mut out = Vec::new();
    while let Some(line) = reader.next_record() {
        out.push(Value::Object(line?.value));
    }
    Ok(out)
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn mean_of(lines: &[Value], f: impl Fn(&Value) -> Option<f64>) -> Option<f64> {
    mean(&lines.iter().filter_map(f).collect::<Vec<_>>())
}

/// Share of groups with a non-zero advantage in one metrics line: `reward_density` where
/// rl-update reports it, else 1 − zero_advantage_groups / groups.
fn density(m: &Value) -> Option<f64> {
    num(m, "reward_density").or_else(|| {
        let groups = num(m, "groups")?;
        (groups > 0.0).then(|| 1.0 - num(m, "zero_advantage_groups").unwrap_or(0.0) / groups)
    })
}

/// Training samples one metrics line drew: train.sh's `samples_drawn` (all chunks of a
/// `--budget updates` step), else the step's `train.samples`, else rl-update's `samples`.
fn samples_drawn(m: &Value) -> Option<f64> {
    num(m, "samples_drawn")
        .or_else(|| m.get("train").and_then(|t| num(t, "samples")))
        .or_else(|| num(m, "samples"))
}

/// A metrics line's diagnostic: top level, or under `diagnostics`.
fn diagnostic(m: &Value, key: &str) -> Option<f64> {
    num(m, key).or_else(|| m.get("diagnostics").and_then(|d| num(d, key)))
}

/// The figures of the run in `dir`.
pub fn run_row(config: &str, seed: &str, dir: &Path) -> Result<RunRow> {
    let evals = read_lines(&dir.join("eval.jsonl"))?;
    let metrics = read_lines(&dir.join("metrics.jsonl"))?;
    let pass = |e: &Value, k: &str| {
        e.get("pass_at_k")
            .and_then(|p| p.get(k))
            .and_then(Value::as_f64)
    };
    let step = |e: &Value| e.get("step").and_then(Value::as_u64);
    let k = evals
        .iter()
        .flat_map(|e| {
            e.get("pass_at_k")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
        })
        .filter_map(|(k, _)| k.parse::<u64>().ok())
        .filter(|&k| k > 1)
        .max();
    let last = evals.iter().max_by_key(|e| step(e));
    let mut row = RunRow {
        config: config.to_string(),
        seed: seed.to_string(),
        reward: metrics
            .iter()
            .find_map(|m| m.get("reward")?.as_str().map(String::from)),
        algo: metrics
            .iter()
            .find_map(|m| m.get("algo")?.as_str().map(String::from)),
        steps: metrics.len(),
        initial_pass1: evals
            .iter()
            .find(|e| step(e) == Some(0))
            .and_then(|e| pass(e, "1")),
        final_pass1: last.and_then(|e| pass(e, "1")),
        k,
        final_pass_k: k.and_then(|k| last.and_then(|e| pass(e, &k.to_string()))),
        best_pass1: evals
            .iter()
            .filter(|e| step(e).is_some_and(|s| s > 0))
            .filter_map(|e| pass(e, "1"))
            .reduce(f64::max),
        reward_density: mean_of(&metrics, density),
        train_seconds: metrics
            .iter()
            .map(|m| {
                ["seconds_sample", "seconds_verify", "seconds_update"]
                    .iter()
                    .filter_map(|k| num(m, k))
                    .sum::<f64>()
            })
            .sum(),
        ..RunRow::default()
    };
    // Samples drawn up to each step (metrics lines by step; a step without the figure adds 0).
    let mut drawn_by_step: BTreeMap<u64, f64> = BTreeMap::new();
    for m in &metrics {
        if let Some(s) = m
            .get("train_step")
            .or_else(|| m.get("step"))
            .and_then(Value::as_u64)
        {
            drawn_by_step.insert(s, samples_drawn(m).unwrap_or(0.0));
        }
    }
    let drawn_to = |step: u64| -> f64 { drawn_by_step.range(..=step).map(|(_, n)| n).sum() };
    let mut curve: Vec<(u64, f64, f64)> = evals
        .iter()
        .filter_map(|e| Some((step(e)?, pass(e, "1")?)))
        .map(|(s, p)| (s, drawn_to(s), p))
        .collect();
    curve.sort_by_key(|c| c.0);
    curve.dedup_by_key(|c| c.0);
    if let Some(p0) = row.initial_pass1 {
        for (slot, level) in row.to_level.iter_mut().zip(LEVELS) {
            *slot = curve
                .iter()
                .find(|(s, _, p)| *s > 0 && *p >= p0 + level - 1e-12)
                .map(|&(s, n, _)| (s, n));
        }
    }
    row.curve = curve;
    let files = |sub| -> Result<Vec<PathBuf>> {
        Ok(crate::layout::step_files(dir, sub)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    };
    let held = crate::calibration::of_step_files(&files("eval")?, 5)?;
    let train = crate::calibration::of_step_files(&files("verdicts")?, 5)?;
    row.calibration = [
        (held.samples > 0)
            .then_some(held.split_half.spearman)
            .flatten(),
        held.by_step
            .first()
            .and_then(|s| s.later.as_ref())
            .and_then(|l| l.unsolved.spearman.any_later),
        train.split_half.spearman,
        train.within_group.top_is_full_rate,
        train.within_group.partial_above_mean_with_full_rate,
    ];
    for (slot, key) in row.nulls.iter_mut().zip(NULLS) {
        *slot = mean_of(&metrics, |m| diagnostic(m, key));
    }
    let d: Vec<Option<f64>> = DIAGNOSTICS
        .iter()
        .map(|key| mean_of(&metrics, |m| diagnostic(m, key)))
        .collect();
    (
        row.cancellation,
        row.cancellation_partial,
        row.alignment,
        row.partial_share,
    ) = (d[0], d[1], d[2], d[3]);
    Ok(row)
}

/// Every run under `runs`, sorted by configuration and seed (crate::layout).
pub fn collect(runs: &Path) -> Result<Vec<RunRow>> {
    crate::layout::study_runs(runs)?
        .iter()
        .map(|r| run_row(&r.config, &r.seed, &r.dir))
        .collect()
}

fn cell(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// The per-run CSV.
pub fn write_csv(rows: &[RunRow], out: impl Write) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let csv_err = |e: csv::Error| Error::Other(e.into());
    let levels: Vec<String> = LEVELS
        .iter()
        .flat_map(|l| [format!("steps_to_+{l:.2}"), format!("samples_to_+{l:.2}")])
        .collect();
    w.write_record(
        [
            "config",
            "seed",
            "reward",
            "algo",
            "steps",
            "initial_pass@1",
            "final_pass@1",
            "k",
            "final_pass@k",
            "best_pass@1",
            "reward_density",
            "cancellation",
            "cancellation_partial",
            "alignment",
            "partial_share",
        ]
        .into_iter()
        .chain(NULLS)
        .chain(["train_seconds"])
        .chain(levels.iter().map(String::as_str))
        .chain(CALIBRATION),
    )
    .map_err(csv_err)?;
    for r in rows {
        w.write_record(
            [
                r.config.clone(),
                r.seed.clone(),
                r.reward.clone().unwrap_or_default(),
                r.algo.clone().unwrap_or_default(),
                r.steps.to_string(),
                cell(r.initial_pass1),
                cell(r.final_pass1),
                r.k.map(|k| k.to_string()).unwrap_or_default(),
                cell(r.final_pass_k),
                cell(r.best_pass1),
                cell(r.reward_density),
                cell(r.cancellation),
                cell(r.cancellation_partial),
                cell(r.alignment),
                cell(r.partial_share),
            ]
            .into_iter()
            .chain(r.nulls.iter().map(|&x| cell(x)))
            .chain([format!("{:.1}", r.train_seconds)])
            .chain(r.to_level.iter().flat_map(|t| match t {
                Some((s, n)) => [s.to_string(), format!("{n:.0}")],
                None => [String::new(), String::new()],
            }))
            .chain(r.calibration.iter().map(|&x| cell(x))),
        )
        .map_err(csv_err)?;
    }
    w.flush().map_err(Error::Io)
}

/// "mean ± std" over the runs that have the figure (std over seeds, n − 1) with `digits`
/// decimals; "–" without any.
fn mean_std_with(xs: impl Iterator<Item = Option<f64>>, digits: usize) -> String {
    let v: Vec<f64> = xs.flatten().collect();
    // (+ 0.0 turns a mean of -0.0 into 0.0, which would print as "-0")
    match mean(&v).map(|m| m + 0.0) {
        Some(m) if v.len() > 1 => format!("{m:.digits$} ± {:.digits$}", sample_std(&v)),
        Some(m) => format!("{m:.digits$}"),
        None => "–".to_string(),
    }
}

fn mean_std(xs: impl Iterator<Item = Option<f64>>) -> String {
    mean_std_with(xs, 3)
}

/// The Markdown table: one line per configuration, mean ± std over its seeds.
pub fn markdown(rows: &[RunRow]) -> String {
    let mut by: BTreeMap<&str, Vec<&RunRow>> = BTreeMap::new();
    for r in rows {
        by.entry(&r.config).or_default().push(r);
    }
    let k = rows.iter().filter_map(|r| r.k).max();
    let pk = k
        .map(|k| format!("pass@{k}"))
        .unwrap_or_else(|| "pass@k".into());
    let mut s = format!(
        "| config | seeds | final pass@1 | best pass@1 | final {pk} | reward density | \
         cancellation | cancellation (partial) | alignment | partial share | train s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for (config, rs) in by {
        let col = |f: &dyn Fn(&RunRow) -> Option<f64>| mean_std(rs.iter().map(|r| f(r)));
        s += &format!(
            "| {config} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            rs.len(),
            col(&|r| r.final_pass1),
            col(&|r| r.best_pass1),
            col(&|r| r.final_pass_k),
            col(&|r| r.reward_density),
            col(&|r| r.cancellation),
            col(&|r| r.cancellation_partial),
            col(&|r| r.alignment),
            col(&|r| r.partial_share),
            mean_std_with(rs.iter().map(|r| Some(r.train_seconds)), 0),
        );
    }
    s
}

/// The diagnostics beside their nulls (runs with diagnostics only): one line per configuration.
pub fn diagnostics_markdown(rows: &[RunRow]) -> String {
    let mut by: BTreeMap<&str, Vec<&RunRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.cancellation.is_some()) {
        by.entry(&r.config).or_default().push(r);
    }
    if by.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| config | runs | cancellation | its null | alignment | its null | split alignment | \
         cos full–full | cos full–partial | cos partial–partial | cos partial–zero |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (config, rs) in by {
        let col = |f: &dyn Fn(&RunRow) -> Option<f64>| mean_std(rs.iter().map(|r| f(r)));
        s += &format!(
            "| {config} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            rs.len(),
            col(&|r| r.cancellation),
            col(&|r| r.nulls[0]),
            col(&|r| r.alignment),
            col(&|r| r.nulls[1]),
            col(&|r| r.nulls[2]),
            col(&|r| r.nulls[3]),
            col(&|r| r.nulls[4]),
            col(&|r| r.nulls[5]),
            col(&|r| r.nulls[6]),
        );
    }
    s
}

/// Sample efficiency: held-out pass@1 (mean ± std over seeds) at each evaluated step with the
/// training samples drawn up to it, then the steps and samples each configuration's runs took
/// to first reach their step-0 pass@1 plus each of [`LEVELS`].
pub fn efficiency_markdown(rows: &[RunRow]) -> String {
    let mut by: BTreeMap<&str, Vec<&RunRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.curve.is_empty()) {
        by.entry(&r.config).or_default().push(r);
    }
    if by.is_empty() {
        return String::new();
    }
    let mut s =
        String::from("| config | step | runs | samples drawn | pass@1 |\n|---|---|---|---|---|\n");
    for (config, rs) in &by {
        let mut steps: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
        for r in rs {
            for &(st, n, p) in &r.curve {
                steps.entry(st).or_default().push((n, p));
            }
        }
        for (st, v) in steps {
            s += &format!(
                "| {config} | {st} | {} | {} | {} |\n",
                v.len(),
                mean_std_with(v.iter().map(|x| Some(x.0)), 0),
                mean_std(v.iter().map(|x| Some(x.1))),
            );
        }
    }
    s += "\n| config | level (gain over step 0) | runs reaching it | steps | samples drawn |\n\
          |---|---|---|---|---|\n";
    for (config, rs) in &by {
        for (i, level) in LEVELS.iter().enumerate() {
            let hit: Vec<(u64, f64)> = rs.iter().filter_map(|r| r.to_level[i]).collect();
            s += &format!(
                "| {config} | +{level:.2} | {} of {} | {} | {} |\n",
                hit.len(),
                rs.len(),
                mean_std_with(hit.iter().map(|h| Some(h.0 as f64)), 1),
                mean_std_with(hit.iter().map(|h| Some(h.1)), 0),
            );
        }
    }
    s
}

/// Calibration of pass rate per configuration (runs with the figure; mean ± std over seeds).
pub fn calibration_markdown(rows: &[RunRow]) -> String {
    let mut by: BTreeMap<&str, Vec<&RunRow>> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.calibration.iter().any(Option::is_some))
    {
        by.entry(&r.config).or_default().push(r);
    }
    if by.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| config | runs | held-out split-half ρ | held-out ρ(step 0, solved later), unsolved | \
         train split-half ρ | train: best sample correct | train: partial pushed up beside a full pass |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (config, rs) in by {
        let col = |i: usize| mean_std(rs.iter().map(|r| r.calibration[i]));
        s += &format!(
            "| {config} | {} | {} | {} | {} | {} | {} |\n",
            rs.len(),
            col(0),
            col(1),
            col(2),
            col(3),
            col(4)
        );
    }
    s
}

/// `rl-eval summary`.
pub fn run(args: &SummaryArgs, stdout: impl Write) -> Result<()> {
    let rows = collect(&args.runs)?;
    if rows.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no runs (expected <config>/seed-<s>/ folders)",
            args.runs.display()
        )));
    }
    match &args.out {
        None => write_csv(&rows, stdout),
        Some(dir) => {
            let io = |source: std::io::Error| Error::Open {
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut buf = Vec::new();
            write_csv(&rows, &mut buf)?;
            rlcode_core::paths::write_atomic(&dir.join("summary.csv"), &buf).map_err(io)?;
            let mut md = markdown(&rows);
            let eff = efficiency_markdown(&rows);
            if !eff.is_empty() {
                md += "\n## Sample efficiency: held-out pass@1 against steps and samples drawn\n\n";
                md += "Steps to a level are those of the first evaluation at or above it, so \
                       their resolution is the evaluation interval.\n\n";
                md += &eff;
            }
            let cal = calibration_markdown(&rows);
            if !cal.is_empty() {
                md += "\n## Calibration of pass rate (docs/calibration.md)\n\n";
                md += &cal;
            }
            let diag = diagnostics_markdown(&rows);
            if !diag.is_empty() {
                md += "\n## Diagnostics beside their nulls (docs/diagnostics.md)\n\n";
                md += &diag;
            }
            rlcode_core::paths::write_atomic(&dir.join("summary.md"), md.as_bytes()).map_err(io)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    fn study() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (seed, p0, p1, p2) in [(1, 0.1, 0.3, 0.2), (2, 0.1, 0.2, 0.4)] {
            let d = t.path().join(format!("pass_rate-grpo/seed-{seed}"));
            let e = |s: u32, p: f64| {
                format!(
                    r#"{{"step":{s},"pass_at_k":{{"1":{p},"4":{}}},"label":"test"}}"#,
                    p * 2.0
                )
            };
            write(&d, "eval.jsonl", &[&e(0, p0), &e(5, p1), &e(10, p2)]);
            let m = |s: u32, zero: u32, canc: f64| {
                format!(
                    r#"{{"train_step":{s},"reward":"pass_rate","algo":"grpo","seconds_sample":1.5,"seconds_verify":0.5,"seconds_update":1.0,"groups":4,"zero_advantage_groups":{zero},"diagnostics":{{"cancellation":{canc}}}}}"#
                )
            };
            write(&d, "metrics.jsonl", &[&m(1, 1, 0.5), &m(2, 3, 0.3)]);
        }
        t
    }

    #[test]
    fn rows_from_a_study() {
        let t = study();
        let rows = collect(t.path()).unwrap();
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(
            (r.config.as_str(), r.seed.as_str(), r.steps),
            ("pass_rate-grpo", "1", 2)
        );
        assert_eq!(r.reward.as_deref(), Some("pass_rate"));
        assert_eq!(r.algo.as_deref(), Some("grpo"));
        assert_eq!(r.initial_pass1, Some(0.1));
        assert_eq!(r.final_pass1, Some(0.2));
        assert_eq!(r.best_pass1, Some(0.3));
        assert_eq!((r.k, r.final_pass_k), (Some(4), Some(0.4)));
        // densities 1 - 1/4 and 1 - 3/4
        assert!((r.reward_density.unwrap() - 0.5).abs() < 1e-12);
        assert!((r.cancellation.unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(r.alignment, None);
        assert!((r.train_seconds - 6.0).abs() < 1e-9);
        assert_eq!(rows[1].best_pass1, Some(0.4));
    }

    #[test]
    fn sample_efficiency_counts_samples_drawn_and_steps_to_each_level() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("binary-grpo/seed-1");
        let e = |s: u32, p: f64| format!(r#"{{"step":{s},"pass_at_k":{{"1":{p}}}}}"#);
        write(&d, "eval.jsonl", &[&e(0, 0.3), &e(2, 0.36), &e(4, 0.41)]);
        // samples_drawn where train.sh gives it, else train.samples, else samples.
        let m = [
            r#"{"train_step":1,"samples_drawn":64,"train":{"samples":64},"samples":32}"#,
            r#"{"train_step":2,"train":{"samples":128}}"#,
            r#"{"train_step":3,"samples":16}"#,
            r#"{"train_step":4,"samples_drawn":64}"#,
        ];
        write(&d, "metrics.jsonl", &m);
        let rows = collect(t.path()).unwrap();
        let r = &rows[0];
        assert_eq!(r.curve, [(0, 0.0, 0.3), (2, 192.0, 0.36), (4, 272.0, 0.41)]);
        assert_eq!(r.to_level, [Some((2, 192.0)), Some((4, 272.0))]);
        let md = efficiency_markdown(&rows);
        assert!(md.contains("| binary-grpo | 4 | 1 | 272 | 0.410 |"), "{md}");
        assert!(
            md.contains("| binary-grpo | +0.10 | 1 of 1 | 4.0 | 272 |"),
            "{md}"
        );
        let mut buf = Vec::new();
        write_csv(&rows, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains(",steps_to_+0.05,samples_to_+0.05,steps_to_+0.10,samples_to_+0.10,")
        );
        assert!(
            text.lines().nth(1).unwrap().contains(",2,192,4,272,"),
            "{text}"
        );
    }

    #[test]
    fn calibration_of_held_out_and_training_verdicts() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("binary-grpo/seed-1");
        let v = |id: &str, st: &str| {
            let tests: Vec<String> = st
                .chars()
                .map(|c| {
                    format!(
                        r#"{{"status":"{}"}}"#,
                        if c == 'p' { "pass" } else { "fail" }
                    )
                })
                .collect();
            format!(
                r#"{{"problem_id":"{id}","verdict":{{"passed":{},"total":{},"tests":[{}],"runtime":"r"}}}}"#,
                st.matches('p').count(),
                st.len(),
                tests.join(",")
            )
        };
        // Training step 1: a = [pp, pf, ff, ff] (mean pass rate 0.375): the partial pf (0.5)
        // is pushed up beside the full pass; b = [pf, ff] has no full pass.
        write(
            &d,
            "verdicts/1.jsonl",
            &[
                &v("a", "pp"),
                &v("a", "pf"),
                &v("a", "ff"),
                &v("a", "ff"),
                &v("b", "pf"),
                &v("b", "ff"),
            ],
        );
        write(&d, "eval/0.jsonl", &[&v("h", "pf"), &v("h", "pp")]);
        write(&d, "eval/1.jsonl", &[&v("h", "pp"), &v("h", "pp")]);
        write(&d, "eval.jsonl", &[r#"{"step":0,"pass_at_k":{"1":0.5}}"#]);
        let r = &collect(t.path()).unwrap()[0];
        // train: 2 groups with a passing test, 1 with a correct best sample; 1 of 1 partial
        // beside a full pass is above its group's mean.
        assert_eq!(r.calibration[3], Some(0.5));
        assert_eq!(r.calibration[4], Some(1.0));
        let md = calibration_markdown(std::slice::from_ref(r));
        assert!(md.contains("| binary-grpo | 1 |"), "{md}");
    }

    #[test]
    fn markdown_is_mean_and_std_over_seeds() {
        let t = study();
        let md = markdown(&collect(t.path()).unwrap());
        let line = md.lines().nth(2).unwrap();
        // final pass@1 0.2 and 0.4: mean 0.3, sample std 0.141
        assert!(
            line.starts_with("| pass_rate-grpo | 2 | 0.300 ± 0.141 |"),
            "{line}"
        );
        assert!(line.contains("| – |"), "alignment is absent: {line}");
    }

    #[test]
    fn csv_has_a_row_per_run() {
        let t = study();
        let mut buf = Vec::new();
        write_csv(&collect(t.path()).unwrap(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("pass_rate-grpo,1,pass_rate,grpo,2,")
        );
    }

    #[test]
    fn an_empty_directory_is_a_usage_error() {
        let t = tempfile::tempdir().unwrap();
        let args = SummaryArgs {
            runs: t.path().into(),
            out: None,
        };
        assert!(matches!(run(&args, Vec::new()), Err(Error::Usage(_))));
    }
}

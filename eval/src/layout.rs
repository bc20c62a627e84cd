//! The layout of a study's results, as `scripts/reproduce.sh` writes it: one definition for
//! every subcommand that reads it.
//!
//! ```text
//! RUNS/<config>/seed-<s>/eval.jsonl        one rl-eval line per held-out evaluation
//! RUNS/<config>/seed-<s>/metrics.jsonl     one line per RL step
//! RUNS/<config>/seed-<s>/eval/<step>.jsonl the verdicts of the evaluation at that step
//! ```

use rlcode_core::{Error, Result};
use std::path::{Path, PathBuf};

/// One run of a study: a configuration and a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyRun {
    pub config: String,
    /// The part of the folder name after `seed-`.
    pub seed: String,
    pub dir: PathBuf,
}

fn open_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// The non-hidden subdirectories of `dir`, sorted.
pub(crate) fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(open_err(dir))? {
        let e = e.map_err(open_err(dir))?;
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if !hidden && e.path().is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every `<config>/seed-<s>/` folder under `runs`, sorted by configuration, then by seed
/// (numerically where the seeds are numbers).
pub fn study_runs(runs: &Path) -> Result<Vec<StudyRun>> {
    let mut out = Vec::new();
    for config in sorted_subdirs(runs)? {
        for run in sorted_subdirs(&config)? {
            if let Some(seed) = name_of(&run).strip_prefix("seed-") {
                out.push(StudyRun {
                    config: name_of(&config),
                    seed: seed.to_string(),
                    dir: run.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.config, a.seed.parse::<u64>().ok(), &a.seed).cmp(&(
            &b.config,
            b.seed.parse::<u64>().ok(),
            &b.seed,
        ))
    });
    Ok(out)
}

/// The verdict files `eval/<step>.jsonl` of a run, sorted by step. A run without the folder has
/// none.
pub fn eval_files(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    step_files(run, "eval")
}

/// The files `<sub>/<step>.jsonl` of a run (`eval`: held-out verdicts; `verdicts`: training
/// verdicts), sorted by step. A run without the folder has none.
pub fn step_files(run: &Path, sub: &str) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run.join(sub);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(open_err(&dir))? {
        let path = e.map_err(open_err(&dir))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(step), true) = (step, path.is_file()) {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_sort_by_config_then_numeric_seed_and_eval_files_by_step() {
        let t = tempfile::tempdir().unwrap();
        for d in [
            "b/seed-10/eval",
            "b/seed-2/eval",
            "a/seed-1",
            "a/notes",
            "a/.seed-3",
        ] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        for f in ["10.jsonl", "2.jsonl", "x.jsonl", "0.jsonl.tmp.1"] {
            std::fs::write(t.path().join("b/seed-2/eval").join(f), "").unwrap();
        }
        let runs = study_runs(t.path()).unwrap();
        let names: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r.config.as_str(), r.seed.as_str()))
            .collect();
        assert_eq!(names, [("a", "1"), ("b", "2"), ("b", "10")]);
        let steps: Vec<u64> = eval_files(&runs[1].dir)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [2, 10]);
        assert!(eval_files(&runs[0].dir).unwrap().is_empty());
    }
}

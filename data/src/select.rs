//! `rl-data select`: a slice of a problem file. Problems are kept by the size of their reference
//! solution (a model-free measure of difficulty: choosing by a model's own pass rate would bias
//! the evaluation that follows), and split into disjoint train and held-out parts by a seeded
//! hash of the problem's id, so a problem's side never depends on the other problems in the file
//! or on their order.

use crate::samples::reference_completion;
use rlcode_core::{Line, RecordError};
use sha2::{Digest, Sha256};

/// Which part of the split to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Every problem.
    All,
    /// Problems outside the held-out part.
    Train,
    /// The held-out part: about `--held-out-fraction` of the problems.
    HeldOut,
}

/// The criteria of a selection.
#[derive(Clone, Debug)]
pub struct Criteria {
    /// Keep problems whose reference solution has at most this many lines (see
    /// [`solution_lines`]); `None` keeps every problem, also those without a reference.
    pub max_solution_lines: Option<usize>,
    pub part: Part,
    /// The share of problems in the held-out part, in [0, 1].
    pub held_out_fraction: f64,
    /// Seeds the split's hash.
    pub seed: u64,
}

/// The lines of a problem's reference solution that a model has to write: those of the
/// reference after the prompt when the reference starts with it (HumanEval's canonical
/// solution), else of the whole reference (CodeI/O's code sample, imports and helpers included);
/// blank lines and lines holding only a comment do not count.
pub fn solution_lines(line: &Line) -> Result<usize, RecordError> {
    let completion = reference_completion(line)?;
    Ok(completion
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count())
}

/// Whether the problem `id` is in the held-out part: the first 8 bytes of
/// SHA-256(seed as 8 little-endian bytes, then the id), read as a fraction of 2^64, fall below
/// `fraction`.
pub fn held_out(id: &str, seed: u64, fraction: f64) -> bool {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let digest = h.finalize();
    let x = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    (x as f64 / 18_446_744_073_709_551_616.0) < fraction
}

/// Whether `line` (a problem) is selected by `criteria`.
pub fn selected(line: &Line, criteria: &Criteria) -> Result<bool, RecordError> {
    let id = line.str_field("id")?;
    if let Some(max) = criteria.max_solution_lines
        && solution_lines(line)? > max
    {
        return Ok(false);
    }
    Ok(match criteria.part {
        Part::All => true,
        Part::Train => !held_out(id, criteria.seed, criteria.held_out_fraction),
        Part::HeldOut => held_out(id, criteria.seed, criteria.held_out_fraction),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlcode_core::testing::line;

    #[test]
    fn solution_lines_count_what_follows_the_prompt_without_blanks_or_comments() {
        let he = line(
            r#"{"id":"a","prompt":"def f(x):\n    \"\"\"Doc.\"\"\"\n","reference":"def f(x):\n    \"\"\"Doc.\"\"\"\n\n    # twice\n    return 2 * x\n"}"#,
        );
        assert_eq!(solution_lines(&he).unwrap(), 1);
        let whole = line(
            r#"{"id":"b","prompt":"def main_solution(n):\n    \"\"\"Doc.\"\"\"\n","reference":"import math\n\ndef main_solution(n):\n    return math.sqrt(n)\n"}"#,
        );
        assert_eq!(solution_lines(&whole).unwrap(), 3);
        let none = line(r#"{"id":"c","prompt":"def f():\n"}"#);
        let err = solution_lines(&none).unwrap_err();
        assert!(err.message.contains("no \"reference\""), "{}", err.message);
    }

    #[test]
    fn the_split_is_disjoint_covers_everything_and_follows_the_fraction() {
        let ids: Vec<String> = (0..4000).map(|i| format!("p/{i}")).collect();
        let held = ids.iter().filter(|id| held_out(id, 7, 0.25)).count();
        // 4,000 draws of p = 0.25: the standard deviation is about 27.
        assert!((880..1120).contains(&held), "{held} held out of 4000");
        // Every problem is on exactly one side, for every line of the file alike.
        for id in &ids {
            let l = line(&format!(r#"{{"id":"{id}","reference":"x = 1\n"}}"#));
            let c = |part| Criteria {
                max_solution_lines: None,
                part,
                held_out_fraction: 0.25,
                seed: 7,
            };
            let t = selected(&l, &c(Part::Train)).unwrap();
            let h = selected(&l, &c(Part::HeldOut)).unwrap();
            assert!(t != h, "{id}: train {t}, held out {h}");
            assert!(selected(&l, &c(Part::All)).unwrap());
        }
        // Another seed gives another split; the fractions 0 and 1 give none and all.
        let other = ids
            .iter()
            .filter(|id| held_out(id, 8, 0.25) != held_out(id, 7, 0.25));
        assert!(other.count() > 1000);
        assert!(
            ids.iter()
                .all(|id| !held_out(id, 7, 0.0) && held_out(id, 7, 1.0))
        );
    }

    #[test]
    fn the_size_limit_drops_long_references() {
        let l = line(
            r#"{"id":"a","prompt":"def f():\n","reference":"def f():\n    a = 1\n    return a\n"}"#,
        );
        let c = |max| Criteria {
            max_solution_lines: Some(max),
            part: Part::All,
            held_out_fraction: 0.5,
            seed: 0,
        };
        assert!(selected(&l, &c(2)).unwrap());
        assert!(!selected(&l, &c(1)).unwrap());
    }
}

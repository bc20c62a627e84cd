//! HumanEval (`HumanEval.jsonl.gz`: `task_id`, `prompt`, `canonical_solution`, `test`,
//! `entry_point`) to problems.

use crate::pysplit::split_check;
use rlcode_core::records::{Problem, Test};
use rlcode_core::{Line, RecordError};
use serde_json::{Map, Value};

/// The HumanEval fields this importer reads; any others are passed through.
const FIELDS: [&str; 5] = [
    "task_id",
    "prompt",
    "canonical_solution",
    "test",
    "entry_point",
];

/// What one import did, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportStats {
    pub problems: usize,
    pub tests: usize,
    /// Problems whose check tests only inside a loop, kept as one test.
    pub whole_checks: usize,
    /// `assert True` lines, which test nothing.
    pub dropped_constant_asserts: usize,
}

/// One HumanEval record as a problem.
///
/// `check(candidate)` is cut into one assert test per top-level assert (see
/// [`split_check`]); the module code around `check` goes to `setup`, followed by
/// `candidate = <entry_point>` so that the tests can call `candidate`. `reference` is the prompt
/// followed by the canonical solution, which is how HumanEval's own harness builds it.
pub fn problem_from_record(line: &Line, stats: &mut ImportStats) -> Result<Problem, RecordError> {
    let task_id = line.str_field("task_id")?;
    let prompt = line.str_field("prompt")?;
    let solution = line.str_field("canonical_solution")?;
    let test = line.str_field("test")?;
    let entry_point = line.str_field("entry_point")?;
    if entry_point.is_empty() || !entry_point.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(line.error(format!(
            "field \"entry_point\" must be a function name, not \"{entry_point}\""
        )));
    }
    let split = split_check(test).map_err(|e| line.error(format!("field \"test\": {e}")))?;

    let binding = format!("{} = {entry_point}\n", split.param);
    let setup = if split.module.is_empty() {
        binding
    } else {
        format!("{}\n\n{binding}", split.module)
    };
    let mut extra = Map::new();
    extra.insert("source".into(), Value::from("humaneval"));
    for (k, v) in &line.value {
        if !FIELDS.contains(&k.as_str()) {
            extra.insert(k.clone(), v.clone());
        }
    }

    stats.problems += 1;
    stats.tests += split.tests.len();
    stats.whole_checks += usize::from(split.whole);
    stats.dropped_constant_asserts += split.dropped_constant_asserts;
    Ok(Problem {
        id: task_id.to_string(),
        prompt: prompt.to_string(),
        language: "python".into(),
        entry_point: Some(entry_point.to_string()),
        tests: split
            .tests
            .into_iter()
            .map(|code| Test::Assert { code })
            .collect(),
        setup: Some(setup),
        reference: Some(format!("{prompt}{solution}")),
        limits: None,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlcode_core::JsonlReader;
    use std::io::Cursor;

    fn line(json: &str) -> Line {
        JsonlReader::from_reader("he.jsonl", Cursor::new(json.to_string() + "\n"))
            .next_record()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_record_becomes_a_problem() {
        let l = line(
            r#"{"task_id":"HumanEval/53","prompt":"def add(x, y):\n    \"\"\"Add.\"\"\"\n","canonical_solution":"    return x + y\n","test":"\n\nMETADATA = {}\n\n\ndef check(candidate):\n    import random\n\n    assert candidate(0, 1) == 1\n    assert candidate(1, 0) == 1\n","entry_point":"add","extra":7}"#,
        );
        let mut stats = ImportStats::default();
        let p = problem_from_record(&l, &mut stats).unwrap();
        assert_eq!(p.id, "HumanEval/53");
        assert_eq!(p.entry_point.as_deref(), Some("add"));
        assert_eq!(
            p.setup.as_deref(),
            Some("METADATA = {}\n\ncandidate = add\n")
        );
        assert_eq!(
            p.reference.as_deref(),
            Some("def add(x, y):\n    \"\"\"Add.\"\"\"\n    return x + y\n")
        );
        assert_eq!(
            p.tests,
            [
                Test::Assert {
                    code: "import random\nassert candidate(0, 1) == 1\n".into()
                },
                Test::Assert {
                    code: "import random\nassert candidate(1, 0) == 1\n".into()
                }
            ]
        );
        assert_eq!(p.extra["source"], "humaneval");
        assert_eq!(p.extra["extra"], 7);
        assert_eq!(stats.tests, 2);
    }

    #[test]
    fn bad_records_name_the_field() {
        let mut stats = ImportStats::default();
        let e = problem_from_record(&line(r#"{"task_id":"x"}"#), &mut stats).unwrap_err();
        assert_eq!(e.to_string(), "he.jsonl:1: missing field \"prompt\"");
        let e = problem_from_record(
            &line(
                r#"{"task_id":"x","prompt":"","canonical_solution":"","test":"assert 1","entry_point":"f"}"#,
            ),
            &mut stats,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("he.jsonl:1: field \"test\": no top-level"),
            "{e}"
        );
        assert_eq!(stats.problems, 0);
    }
}

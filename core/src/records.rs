//! Typed views of the records in DESIGN.md. Stages keep each record as a JSON object (so that
//! unknown fields pass through untouched) and parse these views from it where they need them.

use crate::error::{Error, RecordError, Result};
use crate::jsonl::JsonlReader;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// A problem: what the policy sees and the tests its programs must pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// Unique within its file.
    pub id: String,
    pub prompt: String,
    #[serde(default = "python")]
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<String>,
    pub tests: Vec<Test>,
    /// Runs after the program and before each assert test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// A full reference program, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn python() -> String {
    "python".to_string()
}

/// One unit test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub enum Test {
    /// The program, then the problem's `setup`, then this code, in one interpreter run; it passes
    /// only if this code itself runs to completion.
    Assert { code: String },
    /// The program run with `stdin`; it passes if its stdout equals `stdout` up to trailing
    /// white space at the ends of lines and of the output.
    Stdio { stdin: String, stdout: String },
}

impl TryFrom<Map<String, Value>> for Test {
    type Error = String;
    fn try_from(m: Map<String, Value>) -> Result<Self, String> {
        let text = |k: &str| match m.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("test field \"{k}\" must be a string")),
        };
        if let Some(code) = text("assert")? {
            return Ok(Test::Assert { code });
        }
        match (text("stdin")?, text("stdout")?) {
            (stdin, Some(stdout)) => Ok(Test::Stdio {
                stdin: stdin.unwrap_or_default(),
                stdout,
            }),
            _ => Err("a test needs \"assert\", or \"stdout\" (with optional \"stdin\")".into()),
        }
    }
}

impl From<Test> for Map<String, Value> {
    fn from(t: Test) -> Self {
        let mut m = Map::new();
        match t {
            Test::Assert { code } => {
                m.insert("assert".into(), Value::String(code));
            }
            Test::Stdio { stdin, stdout } => {
                m.insert("stdin".into(), Value::String(stdin));
                m.insert("stdout".into(), Value::String(stdout));
            }
        }
        m
    }
}

/// Per-problem overrides of the verifier's limits. An unknown key is an error, and so is a value
/// out of [`Limits::check`]'s ranges: a misspelt or absurd limit must not load silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Fuel units (wasm instructions, roughly) per test; deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Memory cap of the sandbox, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Wall-clock deadline per test, in milliseconds, including time blocked in host calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
}

impl Limits {
    /// The ranges a limit may take: fuel 1..=10^13 units, memory 1..=4096 MiB (wasm32's whole
    /// address space), wall clock 1..=3,600,000 ms. `Err` names the key and its range.
    pub fn check(&self) -> Result<(), String> {
        let range = |key: &str, v: Option<u64>, lo: u64, hi: u64| match v {
            Some(v) if v < lo || v > hi => Err(format!(
                "field \"limits.{key}\": {v} is out of range ({lo}..={hi})"
            )),
            _ => Ok(()),
        };
        range("fuel", self.fuel, 1, 10_000_000_000_000)?;
        range("memory_mb", self.memory_mb, 1, 4096)?;
        range("wall_ms", self.wall_ms, 1, 3_600_000)
    }
}

/// The languages the verifier runs.
pub const LANGUAGES: &[&str] = &["python"];

impl Problem {
    /// What the record's types cannot say: a language the verifier runs, limits in range, at
    /// least one test.
    pub fn check(&self) -> Result<(), String> {
        if !LANGUAGES.contains(&self.language.as_str()) {
            return Err(format!(
                "field \"language\": \"{}\" is not supported (supported: {})",
                self.language,
                LANGUAGES.join(", ")
            ));
        }
        if let Some(l) = &self.limits {
            l.check()?;
        }
        Ok(())
    }
}

/// The outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// An assertion failed, or the output was wrong.
    Fail,
    /// An exception, a syntax error, or an exit before the test completed.
    Error,
    /// The fuel budget or the wall-clock deadline ran out.
    Timeout,
    /// The memory cap was hit.
    Memory,
    /// Captured stdout or stderr went over its cap.
    OutputLimit,
    /// The sandbox itself failed: never the program's fault.
    Infra,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::Timeout,
        Status::Memory,
        Status::OutputLimit,
        Status::Infra,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Memory => "memory",
            Status::OutputLimit => "output_limit",
            Status::Infra => "infra",
        }
    }
}

/// The result of one test of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub status: Status,
    /// A short explanation for anything but a pass (exception type and message, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Fuel consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wall time of the run in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
}

/// Every test of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: usize,
    pub total: usize,
    pub tests: Vec<TestResult>,
    /// Which sandbox ran the tests: `name:<sha256 prefix of the module>`.
    pub runtime: String,
    #[serde(default)]
    pub cached: bool,
}

impl Verdict {
    pub fn from_tests(tests: Vec<TestResult>, runtime: String, cached: bool) -> Self {
        Verdict {
            passed: tests.iter().filter(|t| t.status == Status::Pass).count(),
            total: tests.len(),
            tests,
            runtime,
            cached,
        }
    }

    /// `passed` and `total` must agree with `tests`.
    pub fn check(&self) -> Result<(), String> {
        let passes = self
            .tests
            .iter()
            .filter(|t| t.status == Status::Pass)
            .count();
        if self.total != self.tests.len() || self.passed != passes {
            return Err(format!(
                "passed {} / total {} disagree with its {} tests ({passes} passed)",
                self.passed,
                self.total,
                self.tests.len()
            ));
        }
        Ok(())
    }

    /// True when the sandbox itself failed on some test: the verdict then says nothing about
    /// the program, and no reward may be computed from it.
    pub fn has_infra(&self) -> bool {
        self.tests.iter().any(|t| t.status == Status::Infra)
    }

    /// passed / total; `None` with no tests or an infra failure.
    pub fn pass_rate(&self) -> Option<f64> {
        if self.total == 0 || self.has_infra() {
            None
        } else {
            Some(self.passed as f64 / self.total as f64)
        }
    }

    /// Every test passed (and there was at least one).
    pub fn full_pass(&self) -> bool {
        self.total > 0 && self.passed == self.total
    }
}

/// Problems by id, loaded from a problems file.
#[derive(Debug, Default, Clone)]
pub struct ProblemSet {
    pub problems: Vec<Problem>,
    index: HashMap<String, usize>,
}

impl ProblemSet {
    /// Load a problems file; every bad line or duplicate id is an error naming `file:line`.
    pub fn load(path: &Path) -> Result<Self> {
        let reader = JsonlReader::open(&[path.to_path_buf()])?;
        Self::from_reader(reader)
    }

    pub fn from_reader(reader: JsonlReader) -> Result<Self> {
        let mut set = ProblemSet::default();
        for line in reader {
            let line = line?;
            let p: Problem = line.typed()?;
            p.check().map_err(|m| Error::Record(line.error(m)))?;
            set.insert(p).map_err(|m| Error::Record(line.error(m)))?;
        }
        Ok(set)
    }

    pub fn insert(&mut self, p: Problem) -> Result<(), String> {
        if self.index.contains_key(&p.id) {
            return Err(format!("duplicate problem id \"{}\"", p.id));
        }
        self.index.insert(p.id.clone(), self.problems.len());
        self.problems.push(p);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Problem> {
        self.index.get(id).map(|&i| &self.problems[i])
    }

    /// The position of problem `id` in file order.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.problems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Parse the `verdict` field of a record, refusing one that contradicts itself: a reward or
/// metric computed from it would be wrong without anyone noticing.
pub fn verdict_of(line: &crate::Line) -> Result<Verdict, RecordError> {
    let v: Verdict = line.typed_field("verdict")?;
    v.check()
        .map_err(|m| line.error(format!("field \"verdict\": {m}")))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_and_languages_are_refused_naming_the_key() {
        let load = |text: &str| {
            ProblemSet::from_reader(JsonlReader::from_reader(
                "problems.jsonl",
                std::io::Cursor::new(text.to_string().into_bytes()),
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let p = |extra: &str| {
            format!(r#"{{"id":"p","prompt":"","tests":[{{"assert":"assert 1"}}]{extra}}}"#)
        };
        assert!(load(&p("")).is_ok());
        assert!(load(&p(r#","limits":{"fuel":5,"memory_mb":64,"wall_ms":100}"#)).is_ok());
        for (extra, want) in [
            (
                r#","limits":{"memory_mb":0}"#,
                "problems.jsonl:1: field \"limits.memory_mb\": 0 is out of range",
            ),
            (
                r#","limits":{"memory_mb":17592186044416}"#,
                "limits.memory_mb",
            ),
            (r#","limits":{"wall_ms":0}"#, "limits.wall_ms"),
            (r#","limits":{"fuel":0}"#, "limits.fuel"),
            (r#","limits":{"memory":64}"#, "unknown field `memory`"),
            (
                r#","language":"rust""#,
                "field \"language\": \"rust\" is not supported",
            ),
        ] {
            let err = load(&p(extra)).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }

    #[test]
    fn problem_round_trips_and_keeps_unknown_fields() {
        let text = r#"{"id":"p","prompt":"def f():","tests":[{"assert":"assert f()==1"},{"stdin":"1\n","stdout":"2\n"}],"limits":{"fuel":5},"source":"x"}"#;
        let p: Problem = serde_json::from_str(text).unwrap();
        assert_eq!(p.language, "python");
        assert_eq!(p.tests.len(), 2);
        assert!(matches!(p.tests[1], Test::Stdio { .. }));
        assert_eq!(p.limits.unwrap().fuel, Some(5));
        assert_eq!(p.extra["source"], "x");
        let back: Problem = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn a_test_without_assert_or_stdout_is_rejected() {
        let e = serde_json::from_str::<Test>(r#"{"stdin":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("a test needs"), "{e}");
        let t: Test = serde_json::from_str(r#"{"stdout":"x"}"#).unwrap();
        assert_eq!(
            t,
            Test::Stdio {
                stdin: String::new(),
                stdout: "x".into()
            }
        );
    }

    #[test]
    fn verdict_rates() {
        let t = |s| TestResult {
            status: s,
            detail: None,
            fuel: None,
            ms: None,
        };
        let v = Verdict::from_tests(vec![t(Status::Pass), t(Status::Fail)], "r".into(), false);
        assert_eq!(v.pass_rate(), Some(0.5));
        assert!(!v.full_pass());
        let v = Verdict::from_tests(vec![t(Status::Pass), t(Status::Infra)], "r".into(), false);
        assert_eq!(v.pass_rate(), None);
        assert!(v.has_infra());
        let v = Verdict::from_tests(vec![], "r".into(), false);
        assert_eq!(v.pass_rate(), None);
        assert!(!v.full_pass());
        assert_eq!(
            serde_json::to_string(&Status::OutputLimit).unwrap(),
            "\"output_limit\""
        );
    }
}

//! Bad input for rl-verify: errors name file:line, the default stops with exit 2 after writing
//! everything before the bad line, --keep-going reports each bad line and exits 1, nothing valid
//! is dropped, and empty input is not an error.

use rlcode_tests::{jsonl, run, write};
use serde_json::json;

fn problems(dir: &std::path::Path) -> String {
    write(
        dir,
        "p.jsonl",
        &jsonl(&[json!({"id": "one", "prompt": "", "tests": [{"assert": "assert f() == 1"}]})]),
    )
}

const GOOD: &str = r#"{"problem_id": "one", "sample": 0, "code": "def f():\n    return 1\n"}"#;

fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        (
            "malformed",
            b"{\"problem_id\": \"one\",".to_vec(),
            "-:2: malformed JSON",
        ),
        (
            "missing_field",
            br#"{"problem_id": "one"}"#.to_vec(),
            "-:2: missing field \"code\"",
        ),
        (
            "unknown_problem",
            br#"{"problem_id": "nope", "code": "x"}"#.to_vec(),
            "-:2: unknown problem_id \"nope\"",
        ),
        (
            "invalid_utf8",
            b"{\"problem_id\": \"one\", \"code\": \"\xff\"}".to_vec(),
            "-:2: invalid UTF-8",
        ),
        (
            "not_an_object",
            b"[1, 2]".to_vec(),
            "-:2: expected a JSON object",
        ),
    ]
}

fn input_with(bad: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(GOOD.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(bad);
    v.push(b'\n');
    v.extend_from_slice(GOOD.replace("\"sample\": 0", "\"sample\": 2").as_bytes());
    v.push(b'\n');
    v
}

#[test]
fn a_bad_record_stops_the_run_after_writing_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path());
    for (name, bad, message) in cases() {
        let out = run("rl-verify", &["--problems", &p], input_with(&bad));
        out.expect_code(2);
        assert!(
            out.stderr.contains(message),
            "{name}: stderr was {}",
            out.stderr
        );
        assert!(out.stderr.starts_with("rl-verify: ") || out.stderr.contains("\nrl-verify: "));
        let recs = out.records();
        assert_eq!(
            recs.len(),
            1,
            "{name}: the record before the bad line is written"
        );
        assert_eq!(recs[0]["verdict"]["passed"], 1);
    }
}

#[test]
fn keep_going_reports_each_bad_record_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path());
    for (name, bad, message) in cases() {
        let out = run(
            "rl-verify",
            &["--problems", &p, "--keep-going"],
            input_with(&bad),
        );
        out.expect_code(1);
        assert!(
            out.stderr.contains(message),
            "{name}: stderr was {}",
            out.stderr
        );
        let recs = out.records();
        assert_eq!(recs.len(), 2, "{name}: nothing valid is dropped");
        assert_eq!(recs[1]["sample"], 2);
    }
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path());
    let samples = write(dir.path(), "s.jsonl", &format!("{GOOD}\n\n{{oops\n"));
    let out = run("rl-verify", &["--problems", &p, &samples], "");
    out.expect_code(2);
    assert!(
        out.stderr.contains(&format!("{samples}:3: malformed JSON")),
        "{}",
        out.stderr
    );

    let bad_problems = write(
        dir.path(),
        "bad.jsonl",
        "{\"id\": \"x\", \"prompt\": \"\"}\n",
    );
    let out = run("rl-verify", &["--problems", &bad_problems], GOOD);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains(&format!("{bad_problems}:1: missing field `tests`")),
        "{}",
        out.stderr
    );

    let out = run("rl-verify", &["--problems", "/nonexistent/p.jsonl"], GOOD);
    out.expect_code(2);
    assert!(
        out.stderr.contains("/nonexistent/p.jsonl"),
        "{}",
        out.stderr
    );

    let out = run("rl-verify", &["--problems", &p, "--no-such-flag"], "");
    out.expect_code(2);
}

#[test]
fn empty_input_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path());
    let out = run("rl-verify", &["--problems", &p], "");
    out.expect_code(0);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("0 samples"), "{}", out.stderr);
}

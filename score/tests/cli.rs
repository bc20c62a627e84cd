//! rl-score as a process: JSONL on stdin, scored JSONL on stdout, warnings and errors on stderr.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn rl_score(args: &[&str], stdin: &[u8]) -> Output {
    rlcode_tests::run_exe(env!("CARGO_BIN_EXE_rl-score"), args, stdin)
}

fn stdout_records(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout is JSONL"))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fail with both streams shown.
#[track_caller]
fn check(out: &Output, code: i32) {
    rlcode_tests::check_exit(out, code);
}

const GOOD: &str = concat!(
    r#"{"problem_id":"p1","sample":0,"code":"x","verdict":{"passed":2,"total":2,"tests":[{"status":"pass"},{"status":"pass"}],"runtime":"r"}}"#,
    "\n",
    r#"{"problem_id":"p1","sample":1,"code":"y","verdict":{"passed":1,"total":2,"tests":[{"status":"pass"},{"status":"fail","detail":"AssertionError"}],"runtime":"r"}}"#,
    "\n",
    r#"{"problem_id":"p2","sample":0,"verdict":{"passed":0,"total":2,"tests":[{"status":"error"},{"status":"infra","detail":"trap"}],"runtime":"r"}}"#,
    "\n",
    r#"{"problem_id":"p2","sample":1,"verdict":{"passed":0,"total":0,"tests":[],"runtime":"r"}}"#,
    "\n",
);

#[test]
fn binary_and_pass_rate_on_good_input() {
    let out = rl_score(&["--reward", "binary"], GOOD.as_bytes());
    check(&out, 0);
    let recs = stdout_records(&out);
    assert_eq!(recs.len(), 4);
    let rewards: Vec<Value> = recs.iter().map(|r| r["reward"].clone()).collect();
    assert_eq!(
        rewards,
        [Value::from(1.0), 0.0.into(), Value::Null, Value::Null]
    );
    assert!(recs.iter().all(|r| r["reward_name"] == "binary"));
    assert_eq!(recs[1]["code"], "y");
    assert_eq!(recs[1]["verdict"]["tests"][1]["detail"], "AssertionError");
    let err = stderr(&out);
    assert!(
        err.contains(
            "-:3: problem \"p2\": the sandbox failed (infra) on 1 of 2 tests; reward is null"
        ),
        "{err}"
    );
    assert!(
        err.contains("-:4: problem \"p2\": the verdict has no tests; reward is null"),
        "{err}"
    );
    assert!(
        err.contains("rl-score: 4 records, 2 null rewards, mean reward 0.5000 (binary)"),
        "{err}"
    );

    let out = rl_score(&["--reward", "pass_rate"], GOOD.as_bytes());
    check(&out, 0);
    let rewards: Vec<Value> = stdout_records(&out)
        .iter()
        .map(|r| r["reward"].clone())
        .collect();
    assert_eq!(
        rewards,
        [Value::from(1.0), 0.5.into(), Value::Null, Value::Null]
    );
}

#[test]
fn group_designs_run_end_to_end() {
    for (spec, want) in [
        ("binary_fallback", [1.0, 0.0]),
        ("power:2", [1.0, 0.25]),
        // c = (2, 1), w = (1, 2): the second sample earns 1/3.
        ("test_weighted", [1.0, 1.0 / 3.0]),
    ] {
        let out = rl_score(&["--reward", spec], GOOD.as_bytes());
        check(&out, 0);
        let recs = stdout_records(&out);
        assert_eq!(recs[0]["reward"], want[0], "{spec}");
        assert!(
            (recs[1]["reward"].as_f64().unwrap() - want[1]).abs() < 1e-12,
            "{spec}"
        );
        assert_eq!(recs[2]["reward"], Value::Null, "{spec}");
        assert_eq!(recs[0]["reward_name"], spec);
    }
}

#[test]
fn malformed_line_stops_with_2_after_writing_the_records_before() {
    let input = format!(
        "{}{{\"problem_id\": \n{}",
        &GOOD[..GOOD.find('\n').unwrap() + 1],
        GOOD
    );
    let out = rl_score(&["--reward", "binary"], input.as_bytes());
    check(&out, 2);
    assert_eq!(stdout_records(&out).len(), 1);
    let err = stderr(&out);
    assert!(err.contains("rl-score: -:2: malformed JSON"), "{err}");
}

#[test]
fn keep_going_reports_each_bad_line_and_exits_1() {
    let input = format!("not json\n{GOOD}[1,2]\n");
    let out = rl_score(&["--reward", "pass_rate", "--keep-going"], input.as_bytes());
    check(&out, 1);
    assert_eq!(stdout_records(&out).len(), 4);
    let err = stderr(&out);
    assert!(err.contains("rl-score: -:1: malformed JSON"), "{err}");
    assert!(
        err.contains("rl-score: -:6: expected a JSON object (skipped)"),
        "{err}"
    );
    assert!(err.contains("2 invalid records skipped"), "{err}");
}

#[test]
fn missing_field_names_the_field_and_line() {
    let input = format!(
        "{GOOD}{}\n",
        r#"{"sample":3,"verdict":{"passed":0,"total":1,"tests":[{"status":"fail"}],"runtime":"r"}}"#
    );
    let out = rl_score(&["--reward", "binary"], input.as_bytes());
    check(&out, 2);
    assert_eq!(stdout_records(&out).len(), 4);
    assert!(
        stderr(&out).contains("rl-score: -:5: missing field \"problem_id\""),
        "{}",
        stderr(&out)
    );

    let out = rl_score(&["--reward", "binary"], b"{\"problem_id\":\"p\"}\n");
    check(&out, 2);
    assert!(
        stderr(&out).contains("-:1: missing field \"verdict\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn invalid_utf8_names_the_line() {
    let mut input = GOOD.as_bytes().to_vec();
    input.extend_from_slice(b"{\"problem_id\":\"\xff\"}\n");
    let out = rl_score(&["--reward", "binary"], &input);
    check(&out, 2);
    assert_eq!(stdout_records(&out).len(), 4);
    assert!(
        stderr(&out).contains("rl-score: -:5: invalid UTF-8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_input_is_not_an_error() {
    let out = rl_score(&["--reward", "binary"], b"");
    check(&out, 0);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("0 records, 0 null rewards, mean reward n/a"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["--reward", "nope"][..], &["--reward", "power:-1"], &[]] {
        let out = rl_score(args, b"");
        check(&out, 2);
        assert!(out.stdout.is_empty());
    }
    let out = rl_score(&["--reward", "nope"], b"");
    assert!(
        stderr(&out).contains("unknown reward \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn files_are_read_in_order_and_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    std::fs::write(&a, GOOD).unwrap();
    std::fs::write(&b, "\n{bad\n").unwrap();
    let out = rl_score(
        &[
            "--reward",
            "binary",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        b"",
    );
    check(&out, 2);
    assert_eq!(stdout_records(&out).len(), 4);
    let want = format!("{}:2: malformed JSON", b.display());
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));

    let out = rl_score(&["--reward", "binary", "/nonexistent/x.jsonl"], b"");
    check(&out, 2);
    assert!(
        stderr(&out).contains("/nonexistent/x.jsonl"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_closed_stdout_ends_quietly_with_0() {
    let line = GOOD.lines().next().unwrap();
    let input = format!("{line}\n").repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rl-score"))
        .args(["--reward", "binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // rl-score reads all its input before it writes, so this cannot dead-lock.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("\"reward\":1.0"), "{first}");
    let out = child.wait_with_output().unwrap();
    check(&out, 0);
    assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
}

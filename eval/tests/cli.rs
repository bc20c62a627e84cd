//! rl-eval as a process: verdicts on stdin, one JSON object (or CSV) on stdout, warnings and
//! errors on stderr.

use serde_json::{Value, json};
use std::process::Output;

fn rl_eval(args: &[&str], stdin: &[u8]) -> Output {
    rlcode_tests::run_exe(env!("CARGO_BIN_EXE_rl-eval"), args, stdin)
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line on stdout: {text}");
    serde_json::from_str(&text).expect("stdout is one JSON object")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fail with both streams shown.
#[track_caller]
fn check(out: &Output, code: i32) {
    rlcode_tests::check_exit(out, code);
}

fn record(problem: &str, statuses: &[&str]) -> String {
    let tests: Vec<String> = statuses
        .iter()
        .map(|s| format!("{{\"status\":\"{s}\"}}"))
        .collect();
    let passed = statuses.iter().filter(|s| **s == "pass").count();
    format!(
        "{{\"problem_id\":\"{problem}\",\"verdict\":{{\"passed\":{passed},\"total\":{},\"tests\":[{}],\"runtime\":\"r\"}}}}\n",
        statuses.len(),
        tests.join(",")
    )
}

/// p1: 2 samples, one full pass; p2: 2 usable samples, none passes, plus one infra sample.
fn good() -> String {
    [
        record("p1", &["pass", "pass"]),
        record("p1", &["pass", "fail"]),
        record("p2", &["error", "timeout"]),
        record("p2", &["pass", "memory"]),
        record("p2", &["pass", "infra"]),
    ]
    .concat()
}

#[test]
fn good_input_gives_one_object() {
    let out = rl_eval(&["--k", "1,2,5", "--step", "3"], good().as_bytes());
    check(&out, 0);
    let v = stdout_json(&out);
    assert_eq!(v["step"], 3);
    assert_eq!(v["problems"], 2);
    assert_eq!(v["samples"], 5);
    assert_eq!(v["infra_samples"], 1);
    // p1: pass@1 = 1/2, pass@2 = 1; p2: 0.
    assert_eq!(v["pass_at_k"], json!({"1": 0.25, "2": 0.5, "5": null}));
    // (1 + 0.5 + 0 + 0.5) / 4 usable samples.
    assert_eq!(v["mean_pass_rate"], 0.5);
    assert_eq!(v["full_pass_problems"], 1);
    // p1 differs under both; p2 only under pass rate.
    assert_eq!(
        v["reward_density"],
        json!({"binary": 0.5, "pass_rate": 1.0})
    );
    assert_eq!(
        v["statuses"],
        json!({"pass": 5, "fail": 1, "error": 1, "timeout": 1, "memory": 1,
               "output_limit": 0, "infra": 1})
    );
    assert!(v.get("mean_reward").is_none());
    let err = stderr(&out);
    assert!(
        err.contains("rl-eval: warning: pass@5 is undefined (null): 2 problems have fewer than 5"),
        "{err}"
    );
    assert!(err.contains("1 samples with an infra test"), "{err}");
}

#[test]
fn default_k_is_1_5_10() {
    let out = rl_eval(&[], good().as_bytes());
    check(&out, 0);
    let keys: Vec<String> = stdout_json(&out)["pass_at_k"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["1", "5", "10"]);
}

#[test]
fn rewards_from_rl_score_are_averaged() {
    let input = good()
        .lines()
        .zip(["1.0", "0.5", "0.0", "0.5", "null"])
        .map(|(l, r)| format!("{},\"reward\":{r}}}\n", &l[..l.len() - 1]))
        .collect::<String>();
    let out = rl_eval(&["--k", "1"], input.as_bytes());
    check(&out, 0);
    let v = stdout_json(&out);
    assert_eq!(v["mean_reward"], 0.5);
    assert_eq!(v["null_rewards"], 1);
}

#[test]
fn csv_writes_one_row_per_problem() {
    let out = rl_eval(&["--format", "csv", "--k", "1,2"], good().as_bytes());
    check(&out, 0);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "problem_id,samples,infra_samples,untested_samples,full_passes,mean_pass_rate,pass@1,pass@2\n\
         p1,2,0,0,1,0.75,0.5,1\n\
         p2,3,1,0,0,0.25,0,0\n"
    );
}

#[test]
fn malformed_line_exits_2_naming_the_line_with_nothing_on_stdout() {
    let input = format!("{}{{\"problem_id\"\n{}", record("p", &["pass"]), good());
    let out = rl_eval(&[], input.as_bytes());
    check(&out, 2);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("rl-eval: -:2: malformed JSON"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keep_going_skips_bad_lines_and_exits_1() {
    let input = format!("{}oops\n{}\"a string\"\n", record("p0", &["pass"]), good());
    let out = rl_eval(&["--keep-going", "--k", "1"], input.as_bytes());
    check(&out, 1);
    let v = stdout_json(&out);
    assert_eq!(v["problems"], 3);
    assert_eq!(v["samples"], 6);
    let err = stderr(&out);
    assert!(err.contains("rl-eval: -:2: malformed JSON"), "{err}");
    assert!(
        err.contains("rl-eval: -:8: expected a JSON object (skipped)"),
        "{err}"
    );
    assert!(err.contains("2 invalid records skipped"), "{err}");
}

#[test]
fn missing_field_names_the_field_and_line() {
    let input = format!("{}{{\"problem_id\":\"p\"}}\n", good());
    let out = rl_eval(&[], input.as_bytes());
    check(&out, 2);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("rl-eval: -:6: missing field \"verdict\""),
        "{}",
        stderr(&out)
    );
    let out = rl_eval(&[], br#"{"verdict":{}}"#);
    check(&out, 2);
    assert!(
        stderr(&out).contains("-:1: missing field \"problem_id\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn invalid_utf8_names_the_line() {
    let mut input = good().into_bytes();
    input.extend_from_slice(b"\xc3\x28\n");
    let out = rl_eval(&[], &input);
    check(&out, 2);
    assert!(
        stderr(&out).contains("rl-eval: -:6: invalid UTF-8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_input_prints_zeros_and_nulls() {
    let out = rl_eval(&["--label", "empty"], b"");
    check(&out, 0);
    let v = stdout_json(&out);
    assert_eq!(
        v,
        json!({
            "label": "empty",
            "problems": 0, "evaluated_problems": 0, "samples": 0, "infra_samples": 0,
            "untested_samples": 0,
            "pass_at_k": {"1": null, "5": null, "10": null},
            "mean_pass_rate": null, "full_pass_problems": 0, "full_pass_samples": 0,
            "reward_density": {"binary": null, "pass_rate": null},
            "statuses": {"pass": 0, "fail": 0, "error": 0, "timeout": 0, "memory": 0,
                         "output_limit": 0, "infra": 0}
        })
    );

    let out = rl_eval(&["--format", "csv", "--k", "1"], b"");
    check(&out, 0);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "problem_id,samples,infra_samples,untested_samples,full_passes,mean_pass_rate,pass@1\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["--k", "0"][..], &["--k", "x"], &["--format", "xml"]] {
        let out = rl_eval(args, b"");
        check(&out, 2);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn jsonl_helpers_read_and_write_what_the_scripts_need() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("metrics.jsonl");
    // Steps 1 to 3, then a line cut short by a killed writer.
    std::fs::write(
        &m,
        "{\"train_step\":1,\"x\":{\"a\":\"s\"}}\n{\"train_step\":2}\n{\"train_step\":3}\n{\"train_st",
    )
    .unwrap();
    let p = m.to_str().unwrap();
    let out = rl_eval(&["jsonl", "steps", "train_step", p], b"");
    check(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n2\n3\n");
    let out = rl_eval(
        &["jsonl", "get", "x.a", "-"],
        b"{\"x\":{\"a\":\"s\"}}\n{\"x\":{\"a\":[1]}}\n",
    );
    check(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s\n[1]\n");
    let out = rl_eval(&["jsonl", "get", "x.b", "-"], b"{\"x\":{\"a\":1}}\n");
    check(&out, 2);
    assert!(
        stderr(&out).contains("-:1: no field \"x.b\""),
        "{}",
        stderr(&out)
    );
    let copy = dir.path().join("copy.jsonl");
    let out = rl_eval(
        &[
            "jsonl",
            "truncate",
            "train_step",
            "1",
            p,
            "--out",
            copy.to_str().unwrap(),
        ],
        b"",
    );
    check(&out, 0);
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "{\"train_step\":1,\"x\":{\"a\":\"s\"}}\n"
    );
    check(
        &rl_eval(&["jsonl", "truncate", "train_step", "2", p], b""),
        0,
    );
    assert_eq!(
        std::fs::read_to_string(&m).unwrap(),
        "{\"train_step\":1,\"x\":{\"a\":\"s\"}}\n{\"train_step\":2}\n"
    );
    let missing = dir.path().join("none.jsonl");
    check(
        &rl_eval(
            &["jsonl", "truncate", "step", "0", missing.to_str().unwrap()],
            b"",
        ),
        0,
    );
    assert!(!missing.exists());
    let out = rl_eval(
        &[
            "jsonl",
            "object",
            "train_step:=3",
            "reward=pass_rate",
            "eq=a=b",
            "t:={\"k\":1}",
            "--merge",
            "{\"step\":3,\"loss\":0.5}",
        ],
        b"",
    );
    check(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"train_step\":3,\"reward\":\"pass_rate\",\"eq\":\"a=b\",\"t\":{\"k\":1},\"step\":3,\"loss\":0.5}\n"
    );
    check(&rl_eval(&["jsonl", "object", "n:=nope"], b""), 2);
    check(
        &rl_eval(&["jsonl", "object", "x", "--merge", "[1]"], b""),
        2,
    );
}

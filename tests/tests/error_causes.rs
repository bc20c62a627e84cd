//! A broken input file's error names the file and its cause, for the binaries that read
//! checkpoints and study directories (the cause chain is printed: `main_with` uses `{:#}`).

use rlcode_tests::{run, write};

/// A tiny checkpoint whose config.json is cut short.
fn truncated_checkpoint(dir: &std::path::Path) -> String {
    let ck = dir.join("ck");
    let o = run(
        "rl-update",
        &["init", "--config", "tiny", "--out", ck.to_str().unwrap()],
        "",
    );
    o.expect_code(0);
    let cfg = ck.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, &text[..text.len() / 2]).unwrap();
    ck.to_str().unwrap().to_string()
}

#[test]
fn a_truncated_config_names_the_file_and_the_parse_error() {
    let t = tempfile::tempdir().unwrap();
    let ck = truncated_checkpoint(t.path());
    let problems = write(
        t.path(),
        "p.jsonl",
        r#"{"id": "one", "prompt": "def f():\n", "tests": [{"assert": "assert f() == 1"}]}"#,
    );
    let o = run(
        "rl-sample",
        &["--model", &ck, "--problems", &problems, "-n", "1"],
        "",
    );
    o.expect_code(2);
    assert!(
        o.stderr.contains("config.json") && o.stderr.contains("EOF while parsing"),
        "{}",
        o.stderr
    );
    let scored = write(
        t.path(),
        "s.jsonl",
        r#"{"problem_id": "one", "prompt_tokens": [1], "tokens": [2], "reward": 1.0}"#,
    );
    let out = t.path().join("out");
    let o = run(
        "rl-update",
        &["--model", &ck, "--out", out.to_str().unwrap(), &scored],
        "",
    );
    o.expect_code(2);
    assert!(
        o.stderr.contains("config.json") && o.stderr.contains("EOF while parsing"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_broken_eval_file_of_a_study_names_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("runs/binary-grpo/seed-1/eval");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0.jsonl"), "{\"problem_id\": \"a\",\n").unwrap();
    let o = run(
        "rl-eval",
        &["compare", "--runs", t.path().join("runs").to_str().unwrap()],
        "",
    );
    o.expect_code(2);
    assert!(
        o.stderr.contains("0.jsonl:1") && o.stderr.contains("malformed JSON"),
        "{}",
        o.stderr
    );
}

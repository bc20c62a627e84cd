//! HumanEval end to end: every reference passes every test in the sandbox (in both sandboxes: the
//! pre-initialized component and plain python.wasm), stub bodies never fully pass, and the
//! verdicts score and evaluate without running anything again.

use rlcode_tests::{home, run};

fn problems() -> (tempfile::TempDir, String) {
    let data = home().join("data/HumanEval.jsonl.gz");
    assert!(
        data.exists(),
        "{} is missing: run scripts/setup.sh first",
        data.display()
    );
    let out = run(
        "rl-data",
        &["import", "humaneval", data.to_str().unwrap()],
        "",
    );
    out.expect_code(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("humaneval.jsonl");
    std::fs::write(&path, &out.stdout).unwrap();
    assert_eq!(out.records().len(), 164);
    (dir, path.display().to_string())
}

#[test]
fn every_reference_passes_and_no_stub_does_preinit() {
    every_reference_passes_and_no_stub_does("preinit");
}

#[test]
fn every_reference_passes_and_no_stub_does_python() {
    every_reference_passes_and_no_stub_does("python");
}

fn every_reference_passes_and_no_stub_does(runtime: &str) {
    let (_dir, problems) = problems();
    let refs = run("rl-data", &["references", &problems], "");
    refs.expect_code(0);
    let stubs = run("rl-data", &["stubs", &problems], "");
    stubs.expect_code(0);
    let input = format!("{}{}", refs.stdout, stubs.stdout);
    let out = run(
        "rl-verify",
        &["--runtime", runtime, "--problems", &problems],
        &input,
    );
    out.expect_code(0);
    let records = out.records();
    assert_eq!(records.len(), 2 * 164);
    let mut tests = 0;
    let mut bad = Vec::new();
    for r in &records[..164] {
        let v = &r["verdict"];
        tests += v["total"].as_u64().unwrap();
        if v["passed"] != v["total"] || v["total"] == 0 {
            bad.push(format!("{}: {}", r["problem_id"], v));
        }
    }
    assert!(
        bad.is_empty(),
        "{runtime}: references that did not pass:\n{}",
        bad.join("\n")
    );
    assert!(
        tests >= 1000,
        "HumanEval splits into over a thousand tests, got {tests}"
    );
    for r in &records[164..] {
        let v = &r["verdict"];
        assert_ne!(
            v["passed"], v["total"],
            "a stub fully passed: {}",
            r["problem_id"]
        );
        assert!(
            v["tests"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["status"] != "infra"),
            "infra status on {}",
            r["problem_id"]
        );
    }
    // The same verdicts, scored two ways and evaluated, without running a test again.
    let binary = run("rl-score", &["--reward", "binary"], &out.stdout);
    binary.expect_code(0);
    let eval = run("rl-eval", &["--k", "1"], &binary.stdout);
    eval.expect_code(0);
    let m: serde_json::Value = serde_json::from_str(eval.stdout.trim()).unwrap();
    assert_eq!(m["problems"], 164);
    assert_eq!(m["samples"], 328);
    assert_eq!(m["full_pass_problems"], 164);
    assert!((m["pass_at_k"]["1"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    let rate = run("rl-score", &["--reward", "pass_rate"], &out.stdout);
    rate.expect_code(0);
    for r in rate.records() {
        let v = &r["verdict"];
        let want = v["passed"].as_f64().unwrap() / v["total"].as_f64().unwrap();
        assert!((r["reward"].as_f64().unwrap() - want).abs() < 1e-12);
        assert_eq!(r["reward_name"], "pass_rate");
    }
}

//! The binary through its command line: exit codes, messages, and the real HumanEval file.

use std::process::Output;

fn rl_data(args: &[&str], stdin: &str) -> Output {
    rlcode_tests::run_exe(env!("CARGO_BIN_EXE_rl-data"), args, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const HE_RECORD: &str = r#"{"task_id":"T/0","prompt":"def f(x):\n    \"\"\"Id.\"\"\"\n","canonical_solution":"    return x\n","test":"def check(candidate):\n    assert candidate(1) == 1\n    assert candidate(\n        2) == 2\n","entry_point":"f"}"#;

#[test]
fn import_then_references_and_stubs() {
    let out = rl_data(&["import", "humaneval"], &format!("{HE_RECORD}\n"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let problems = text(&out.stdout);
    assert!(text(&out.stderr).contains("imported 1 problems, 2 tests"));
    let p: serde_json::Value = serde_json::from_str(problems.trim()).unwrap();
    assert_eq!(p["tests"][1]["assert"], "assert candidate(\n    2) == 2\n");

    let out = rl_data(&["references", "-"], &problems);
    assert_eq!(out.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(s["completion"], "    return x\n");
    assert_eq!(s["problem_id"], "T/0");

    let out = rl_data(&["stubs"], &problems);
    let s: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(s["code"], "def f(x):\n    \"\"\"Id.\"\"\"\n    pass\n");
}

#[test]
fn bad_records_exit_2_or_with_keep_going_1() {
    let input = format!("{HE_RECORD}\n{{\"task_id\": 1}}\n{HE_RECORD}\n");
    let out = rl_data(&["import", "humaneval"], &input);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).lines().next().unwrap(),
        "rl-data: -:2: field \"task_id\" must be a string"
    );
    let out = rl_data(&["import", "humaneval", "--keep-going"], &input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    assert!(text(&out.stderr).contains("-:2: field \"task_id\" must be a string (skipped)"));

    let out = rl_data(&["references"], "{\"id\":\"a\",\"prompt\":\"p\"}\n");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "rl-data: -:1: problem \"a\" has no \"reference\" program"
    );
}

#[test]
fn empty_input_is_fine_and_a_missing_file_is_named() {
    let out = rl_data(&["references"], "");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let out = rl_data(&["import", "humaneval", "/nonexistent/he.jsonl.gz"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("rl-data: /nonexistent/he.jsonl.gz: "));
}

#[test]
fn synth_is_deterministic_bytes_and_validates_flags() {
    let args = ["synth", "--split", "test", "--count", "40", "--seed", "3"];
    let a = rl_data(&args, "");
    let b = rl_data(&args, "");
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(text(&a.stdout).lines().count(), 40);
    let out = rl_data(
        &["synth-corpus", "--count", "5", "--correct-fraction", "1.5"],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--correct-fraction"));
}

/// The real HumanEval file, where `scripts/setup.sh` put it.
#[test]
fn real_humaneval_counts() {
    let path = rlcode_core::paths::home().join("data/HumanEval.jsonl.gz");
    if !path.exists() {
        eprintln!(
            "skipped: {} is absent (run scripts/setup.sh)",
            path.display()
        );
        return;
    }
    let reader = rlcode_core::JsonlReader::open(&[path]).unwrap();
    let mut out = Vec::new();
    let code = rl_data::import_humaneval(reader, false, &mut out).unwrap();
    assert_eq!(code, rlcode_core::ExitCode::Success);
    let problems: Vec<rlcode_core::records::Problem> = text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(problems.len(), 164);
    let mut counts: Vec<usize> = problems.iter().map(|p| p.tests.len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 1133);
    // 1,128 top-level asserts, plus one test for each of the five checks that also test in a
    // loop (32, 38 and 50 test only there).
    let top_level = problems
        .iter()
        .flat_map(|p| &p.tests)
        .filter(|t| match t {
            rlcode_core::records::Test::Assert { code } => code
                .lines()
                .any(|l| l.starts_with("assert ") || l.starts_with("assert(")),
            _ => false,
        })
        .count();
    assert_eq!(top_level, 1128);
    for n in [32, 38, 50] {
        assert_eq!(problems[n].tests.len(), 1, "HumanEval/{n}");
    }
    counts.sort();
    assert_eq!((counts[0], counts[163], counts[82]), (1, 26, 7));
    for p in &problems {
        let reference = p.reference.as_deref().unwrap();
        assert!(reference.starts_with(&p.prompt));
        assert!(p.setup.as_deref().unwrap().ends_with(&format!(
            "candidate = {}\n",
            p.entry_point.as_deref().unwrap()
        )));
    }
}

//! `rl-verify --capture` (programs in, their output out) and `rl-data import codeio`, which
//! generates its tests through it: a handwritten fixture of CodeI/O-like records, of which only
//! the good one is kept, and whose reference then passes every generated test.

use rlcode_tests::{jsonl, run, write};
use serde_json::{Value, json};

fn capture(args: &[&str], records: &[Value]) -> rlcode_tests::Output {
    let mut all = vec!["--capture"];
    all.extend_from_slice(args);
    run("rl-verify", &all, jsonl(records))
}

#[test]
fn capture_returns_stdout_and_classifies_like_the_verifier() {
    let out = capture(
        &[],
        &[
            json!({"id": "echo", "program": "import sys\nprint(sys.stdin.read().upper())",
                   "stdin": "hi", "extra": 5}),
            json!({"id": "loop", "program": "while True:\n    pass\n",
                   "limits": {"fuel": 200_000_000}}),
            json!({"id": "raise", "program": "print('partial')\nraise KeyError('k')\n"}),
            json!({"id": "exit0", "program": "import sys\nprint('bye')\nsys.exit(0)\n"}),
            json!({"id": "rand", "program": "import random\nprint(random.random())", "seed": 1}),
            json!({"id": "rand", "program": "import random\nprint(random.random())", "seed": 1}),
            json!({"id": "rand", "program": "import random\nprint(random.random())", "seed": 2}),
        ],
    );
    out.expect_code(0);
    let r = out.records();
    assert_eq!(r.len(), 7, "{}", out.stderr);
    assert_eq!(r[0]["status"], "pass");
    assert_eq!(r[0]["stdout"], "HI\n");
    assert_eq!(r[0]["extra"], 5, "other fields pass through");
    assert!(r[0]["fuel"].as_u64().unwrap() > 0 && r[0]["ms"].as_f64().is_some());
    assert!(
        r[0]["runtime"]
            .as_str()
            .unwrap()
            .starts_with("cpython-3.14-wasi-preinit:")
    );
    assert_eq!(r[1]["status"], "timeout");
    assert_eq!(r[1]["detail"], "fuel budget exhausted");
    assert_eq!(r[2]["status"], "error");
    assert_eq!(r[2]["stdout"], "partial\n");
    assert!(
        r[2]["detail"].as_str().unwrap().starts_with("KeyError"),
        "{}",
        r[2]
    );
    assert_eq!(r[3]["status"], "pass");
    assert_eq!(r[3]["stdout"], "bye\n");
    assert_eq!(
        r[4]["stdout"], r[5]["stdout"],
        "same record, same randomness"
    );
    assert_ne!(
        r[4]["stdout"], r[6]["stdout"],
        "another seed, other randomness"
    );
    assert!(
        out.stderr
            .contains("7 programs (pass 5, error 1, timeout 1)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failing_sandbox_is_infra_never_the_programs_error() {
    let dir = tempfile::tempdir().unwrap();
    // A valid module without `_start`: every run fails on the host side.
    let wasm = dir.path().join("empty.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let out = capture(
        &[
            "--runtime",
            "python",
            "--python-wasm",
            wasm.to_str().unwrap(),
            "--no-module-cache",
        ],
        &[json!({"id": "a", "program": "print(1)"})],
    );
    out.expect_code(0);
    let r = out.records();
    assert_eq!(r[0]["status"], "infra", "{}", r[0]);
    assert_eq!(r[0]["stdout"], "");
}

#[test]
fn capture_rejects_bad_records_with_their_line_and_needs_no_problems() {
    let out = capture(&[], &[json!({"id": "a"})]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("-:1: missing field \"program\""),
        "{}",
        out.stderr
    );
    let out = run("rl-verify", &[], "");
    out.expect_code(2);
    assert!(out.stderr.contains("--problems"), "{}", out.stderr);
}

const SPEC: &str = "Input:\n  `n` (int): a number\n  `xs` (list of int): numbers\n\nOutput:\n  `return` (dict): the results";
const GENERATOR: &str = "def generate_inputs(rng: Random) -> dict:\n    return {'n': rng.randint(0, 1000), 'xs': tuple(rng.randint(-5, 5) for _ in range(rng.randint(0, 4)))}\n";

fn record(task: &str, code: &str) -> Value {
    json!({"task_description": task, "input_output_spec": SPEC, "code_sample": code,
           "input_generator": GENERATOR, "difficulty": 3})
}

#[test]
fn codeio_keeps_only_good_problems_and_their_references_pass() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = write(
        dir.path(),
        "codeio.jsonl",
        &jsonl(&[
            record(
                "Sum n and the items of xs.",
                "import math\n\ndef helper(xs):\n    return sum(xs)\n\ndef main_solution(n, xs):\n    print('noise')\n    return {'total': n + helper(xs), 'pair': (n, len(xs)), 'root': math.sqrt(n)}\n",
            ),
            record(
                "Random.",
                "import random\n\ndef main_solution(n, xs):\n    return n + random.randint(0, 10**9)\n",
            ),
            record(
                "Numpy.",
                "import numpy as np\n\ndef main_solution(n, xs):\n    return int(np.sum(xs)) + n\n",
            ),
            record("Constant.", "def main_solution(n, xs):\n    return 42\n"),
            // Consistent within a run, not across runs: only the second run can see it.
            record(
                "Module-level randomness.",
                "import random\n\nSCALE = random.randrange(10**6)\n\ndef main_solution(n, xs):\n    return n * SCALE\n",
            ),
            record(
                "Raises.",
                "def main_solution(n, xs):\n    raise ValueError('no')\n",
            ),
        ]),
    );
    let out = run(
        "rl-data",
        &["import", "codeio", &fixture, "--tests", "6", "--seed", "3"],
        "",
    );
    out.expect_code(0);
    for stage in [
        "dropped     1 imports a non-stdlib module (5 left)",
        "dropped     2 non-deterministic (3 left)",
        "dropped     1 fewer than 5 distinct tests (2 left)",
        "dropped     1 outputs barely vary (1 left)",
        "input sets left out: error 6",
        "checking the 12 tests of 2 problems",
        "kept 1 problems, 6 tests",
    ] {
        assert!(out.stderr.contains(stage), "{stage}\n{}", out.stderr);
    }
    let problems = out.records();
    assert_eq!(problems.len(), 1);
    let p = &problems[0];
    assert_eq!(p["id"], "codeio/0");
    assert_eq!(p["entry_point"], "main_solution");
    assert_eq!(p["source"], "codeio");
    assert_eq!(p["difficulty"], 3);
    assert!(p.get("input_generator").is_none());
    assert!(
        p["prompt"].as_str().unwrap().starts_with(
            "import math\n\ndef main_solution(n, xs):\n    \"\"\"Sum n and the items of xs.\n\n    Input:\n      `n` (int)"
        ),
        "{}",
        p["prompt"]
    );
    let tests = p["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 6);
    for t in tests {
        let code = t["assert"].as_str().unwrap();
        // Tuples become lists; the helper compares floats with a tolerance.
        assert!(
            code.starts_with("assert _rl_same(main_solution(n=") && code.contains("'pair': ["),
            "{code}"
        );
    }

    // Deterministic for a seed; another seed, other inputs.
    let again = run(
        "rl-data",
        &["import", "codeio", &fixture, "--tests", "6", "--seed", "3"],
        "",
    );
    assert_eq!(again.stdout, out.stdout);

    // The references pass every test; `pass` stubs pass none.
    let problems_path = write(dir.path(), "problems.jsonl", &out.stdout);
    for (samples, want) in [("references", 6), ("stubs", 0)] {
        let s = run("rl-data", &[samples, &problems_path], "");
        s.expect_code(0);
        let v = run("rl-verify", &["--problems", &problems_path], &s.stdout);
        v.expect_code(0);
        let verdict = &v.records()[0]["verdict"];
        assert_eq!(verdict["passed"], want, "{samples}: {verdict}");
        assert_eq!(verdict["total"], 6);
    }
}

#[test]
fn codeio_bad_records_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = write(
        dir.path(),
        "bad.jsonl",
        "{\"task_description\": \"x\", \"input_output_spec\": \"y\", \"code_sample\": \"z\"}\n",
    );
    let out = run("rl-data", &["import", "codeio", &fixture], "");
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("bad.jsonl:1: missing field \"input_generator\""),
        "{}",
        out.stderr
    );
}

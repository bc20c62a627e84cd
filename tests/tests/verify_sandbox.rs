//! rl-verify against hostile programs: none passes, each gets the right status, the run ends in
//! bounded time, nothing leaks out, and benign samples beside them still pass. Every test runs
//! against both sandboxes: the pre-initialized component (the default) and plain python.wasm.

use rlcode_tests::{jsonl, on_both_runtimes, verify, write};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PYTHON: &str = "python";

on_both_runtimes! {
    hostile_programs_never_pass_and_benign_ones_do
        => hostile_programs_preinit, hostile_programs_python;
    stdio_tests_compare_output_up_to_trailing_white_space
        => stdio_tests_preinit, stdio_tests_python;
    verdicts_are_deterministic_and_limits_override
        => deterministic_preinit, deterministic_python;
    no_state_leaks_between_tests => no_state_leaks_preinit, no_state_leaks_python;
    random_is_seeded_per_test => random_seeded_per_test_preinit, random_seeded_per_test_python;
    unavailable_modules_are_errors
        => unavailable_modules_preinit, unavailable_modules_python;
}

fn add_problem() -> Value {
    json!({
        "id": "add", "prompt": "def add(a, b):\n", "entry_point": "add",
        "tests": [
            {"assert": "assert add(1, 2) == 3"},
            {"assert": "assert add(-1, 1) == 0"},
            {"assert": "assert add(10, 5) == 15"}
        ],
        // Small budgets keep the hostile suite quick: ~0.1 s of Python per test, 2 s wall.
        "limits": {"fuel": 3000000000u64, "wall_ms": 2000, "memory_mb": 64}
    })
}

fn echo_problem() -> Value {
    json!({
        "id": "sum-stdin", "prompt": "# read two ints, print their sum\n",
        "tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5\n", "stdout": "10"}]
    })
}

const BENIGN: &str = "def add(a, b):\n    return a + b\n";

/// (name, program, expected status of every test)
/// A wrong `add`, then `setup` (which leaves some frame in `fr`), then a walk up the frames for a
/// local named like the harness's token, whose value it prints as the harness would on a pass.
fn forge(setup: &str) -> String {
    format!(
        "def add(a, b):\n    return 7\nimport os\n{setup}while fr is not None:\n    \
         for v in list(fr.f_locals.values()):\n        if type(v) is bytes and v.startswith(b'rlcode-'):\n            \
         os.write(2, b'\\n' + v + b' OK\\n')\n            os._exit(0)\n    fr = fr.f_back\n"
    )
}

fn hostile() -> Vec<(&'static str, String, &'static str)> {
    let with_add = |s: &str| format!("{BENIGN}{s}");
    vec![
        ("infinite_loop", with_add("while True:\n    pass\n"), "timeout"),
        ("busy_in_function", "def add(a, b):\n    while True:\n        a += 1\n".into(), "timeout"),
        ("sleep", with_add("import time\ntime.sleep(1000)\n"), "timeout"),
        ("memory_bomb", with_add("x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n"), "memory"),
        ("huge_allocation", with_add("x = bytearray(1 << 30)\n"), "memory"),
        ("output_flood", with_add("while True:\n    print('x' * 10000)\n"), "output_limit"),
        ("stderr_flood", with_add("import sys\nwhile True:\n    sys.stderr.write('y' * 10000)\n"), "output_limit"),
        ("deep_recursion", with_add("def f(n):\n    return f(n + 1)\nf(0)\n"), "error"),
        // Deep recursion inside C code: CPython 3.12 raises RecursionError; 3.14 can run out of
        // wasm stack first, a trap that must still be the program's `error`, never `infra`.
        ("deep_c_recursion", with_add("import json\njson.loads('[' * 100000 + ']' * 100000)\n"), "error"),
        // The parser's "too complex" MemoryError comes without the memory cap being hit: an
        // ordinary error, not `memory`.
        ("deep_parse", with_add("eval('(' * 200000 + ')' * 200000)\n"), "error"),
        ("sys_exit_3", with_add("import sys\nsys.exit(3)\n"), "error"),
        ("read_host_file", with_add("open('/etc/passwd').read()\n"), "error"),
        ("write_host_file", with_add("open('/tmp/rlcode-escaped', 'w').write('x')\n"), "error"),
        ("list_host_dir", with_add("import os\nos.listdir('/')\n"), "error"),
        ("socket", with_add("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 22))\n"), "error"),
        ("subprocess", with_add("import subprocess\nsubprocess.run(['ls'])\n"), "error"),
        ("os_system", with_add("import os\nassert os.system('ls') == 0\n"), "error"),
        ("thread", with_add("import threading\nt = threading.Thread(target=print)\nt.start()\n"), "error"),
        ("env_var", with_add("import os\nHOME = os.environ['HOME']\n"), "error"),
        ("env_path_nonempty", with_add("import os\nassert os.environ.get('PATH')\n"), "error"),
        ("sys_exit_0", with_add("import sys\nsys.exit(0)\n"), "error"),
        ("raise_system_exit", with_add("raise SystemExit\n"), "error"),
        ("os_exit_0", with_add("import os\nos._exit(0)\n"), "error"),
        (
            "exit_handler",
            "def add(a, b):\n    return 7\nimport atexit, os\natexit.register(os._exit, 0)\n".into(),
            "fail",
        ),
        (
            "exit_in_function",
            "import os\ndef add(a, b):\n    os._exit(0)\n".into(),
            "error",
        ),
        (
            "patch_exit_and_write",
            "import os\nos._exit = lambda *a: None\nos.write = lambda *a: 0\ndef add(a, b):\n    return 7\n".into(),
            "fail",
        ),
        // Forging a pass: find the harness's token in its frame (or anywhere in memory), print
        // "<token> OK" and exit before the test runs. The harness's audit hook refuses every way
        // to reach a frame or to list objects, so each of these ends in an error.
        ("forge_via_getframe", forge("import sys\nfr = sys._getframe()\n"), "error"),
        (
            "forge_via_traceback",
            forge("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    fr = e.__traceback__.tb_frame\n"),
            "error",
        ),
        (
            "forge_via_generator",
            forge("def gen():\n    yield 1\ng = gen()\nfr = g.gi_frame\n"),
            "error",
        ),
        (
            "forge_via_settrace",
            forge("import sys\nframes = []\nsys.settrace(lambda f, e, a: frames.append(f))\ndef probe():\n    pass\nprobe()\nsys.settrace(None)\nfr = frames[0]\n"),
            "error",
        ),
        (
            "forge_via_gc",
            "def add(a, b):\n    return 7\nimport gc, os\nfor o in gc.get_objects():\n    if type(o) is bytes and o.startswith(b'rlcode-'):\n        os.write(2, b'\\n' + o + b' OK\\n')\nos._exit(0)\n".into(),
            "error",
        ),
        ("wrong_answer", "def add(a, b):\n    return a - b\n".into(), "fail"),
        ("syntax_error", "def add(a, b)\n    return a + b\n".into(), "error"),
        ("no_function", "x = 1\n".into(), "error"),
    ]
}

fn hostile_programs_never_pass_and_benign_ones_do(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let problems = write(
        dir.path(),
        "p.jsonl",
        &jsonl(&[add_problem(), echo_problem()]),
    );
    let mut samples = Vec::new();
    let cases = hostile();
    for (i, (name, code, _)) in cases.iter().enumerate() {
        samples.push(json!({"problem_id": "add", "sample": i, "name": name, "code": code}));
        // A benign sample beside every hostile one.
        samples.push(
            json!({"problem_id": "add", "sample": 1000 + i, "name": "benign", "code": BENIGN}),
        );
    }
    let _ = std::fs::remove_file("/tmp/rlcode-escaped");
    let started = Instant::now();
    let out = verify(runtime, &problems, &[], jsonl(&samples));
    let elapsed = started.elapsed();
    out.expect_code(0);
    let records = out.records();
    assert_eq!(
        records.len(),
        samples.len(),
        "one verdict per sample, in order"
    );
    let mut failures = Vec::new();
    for (rec, sample) in records.iter().zip(&samples) {
        assert_eq!(
            rec["sample"], sample["sample"],
            "output order equals input order"
        );
        assert_eq!(rec["name"], sample["name"], "unknown fields pass through");
        let v = &rec["verdict"];
        let name = rec["name"].as_str().unwrap();
        let statuses: Vec<&str> = v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"].as_str().unwrap())
            .collect();
        if name == "benign" {
            if statuses != ["pass", "pass", "pass"] {
                failures.push(format!("{runtime}: benign sample {}: {}", rec["sample"], v));
            }
            continue;
        }
        let want = cases.iter().find(|c| c.0 == name).unwrap().2;
        if v["passed"] != 0 || statuses.iter().any(|s| *s != want) {
            failures.push(format!(
                "{runtime}: {name}: want every test {want}, got {v}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        !std::path::Path::new("/tmp/rlcode-escaped").exists(),
        "a program wrote to the host's file system"
    );
    // Bounded: every deadline here is 2 s; a hang would take far longer than this.
    assert!(elapsed < Duration::from_secs(300), "took {elapsed:?}");
    assert!(
        out.stderr.contains("tests/s"),
        "summary line: {}",
        out.stderr
    );
}

fn stdio_tests_compare_output_up_to_trailing_white_space(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let problems = write(dir.path(), "p.jsonl", &jsonl(&[echo_problem()]));
    let samples = [
        "a, b = map(int, input().split())\nprint(a + b)\n",
        "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b, '  ')\nsys.exit(0)\n",
        "a, b = map(int, input().split())\nprint(a * b)\n",
        "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(3)\n",
    ];
    let input: Vec<Value> = samples
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"problem_id": "sum-stdin", "sample": i, "code": c}))
        .collect();
    let out = verify(runtime, &problems, &[], jsonl(&input));
    out.expect_code(0);
    let r = out.records();
    let statuses = |i: usize| -> Vec<String> {
        r[i]["verdict"]["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(statuses(0), ["pass", "pass"]);
    assert_eq!(statuses(1), ["pass", "pass"]);
    assert_eq!(statuses(2), ["fail", "fail"]);
    assert_eq!(statuses(3), ["error", "error"]);
}

fn verdicts_are_deterministic_and_limits_override(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut starved = add_problem();
    starved["id"] = json!("add-starved");
    starved["limits"] = json!({"fuel": 1000});
    let problems = write(dir.path(), "p.jsonl", &jsonl(&[add_problem(), starved]));
    // Set iteration order depends on the hash seed: it must be the same in every run.
    let code = format!(
        "{BENIGN}ORDER = list({{'a', 'b', 'c', 'd', 'e', 'f'}})\nimport random\nR = random.random()\n"
    );
    let input = jsonl(&[
        json!({"problem_id": "add", "code": code}),
        json!({"problem_id": "add-starved", "code": BENIGN}),
    ]);
    let a = verify(runtime, &problems, &["--jobs", "1"], &input);
    let b = verify(runtime, &problems, &["--jobs", "2"], &input);
    // Instances in reused pool slots (the default) and instances mapped afresh for every test.
    let c = verify(runtime, &problems, &["--jobs", "2", "--no-pool"], &input);
    // Slots reset by copying the whole snapshot back instead of only the pages a test wrote.
    let d = verify(
        runtime,
        &problems,
        &["--jobs", "1", "--slot-reset", "copy"],
        &input,
    );
    a.expect_code(0);
    b.expect_code(0);
    c.expect_code(0);
    d.expect_code(0);
    let strip = |o: &rlcode_tests::Output| -> Vec<Value> {
        o.records()
            .into_iter()
            .map(|mut r| {
                for t in r["verdict"]["tests"].as_array_mut().unwrap() {
                    t.as_object_mut().unwrap().remove("ms");
                }
                r
            })
            .collect()
    };
    let (ra, rb) = (strip(&a), strip(&b));
    assert_eq!(
        ra, rb,
        "same input, same verdicts and fuel, whatever --jobs"
    );
    assert_eq!(
        ra,
        strip(&c),
        "same verdicts and fuel from pooled and fresh instances"
    );
    assert_eq!(
        ra,
        strip(&d),
        "same verdicts and fuel whichever way a slot is reset"
    );
    assert_eq!(ra[0]["verdict"]["passed"], 3);
    assert!(ra[0]["verdict"]["tests"][0]["fuel"].as_u64().unwrap() > 0);
    let id = ra[0]["verdict"]["runtime"].as_str().unwrap();
    let want = match runtime {
        PYTHON => "cpython-3.12.0-wasi:e5dc5a398b07",
        _ => "cpython-3.14-wasi-preinit:",
    };
    assert!(id.starts_with(want), "runtime id {id}, want {want}...");
    for t in ra[1]["verdict"]["tests"].as_array().unwrap() {
        assert_eq!(
            t["status"], "timeout",
            "a problem's fuel limit overrides the default"
        );
    }
}

/// Every test starts from the same state. With one worker, each test's instance reuses the pool
/// slot the previous test left (reset to the snapshot): what a test wrote into objects that
/// exist in the snapshot (builtins, an imported module, a class, every module's namespace, the
/// heap it grew) must be gone, whichever way the slot is reset. Marking every module writes
/// pages scattered over the whole snapshot, far more runs of them than one `PAGEMAP_SCAN` call
/// reports (the case the patched wasmtime in `vendor/` handles).
fn no_state_leaks_between_tests(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let test = "import builtins, json, collections\n\
                assert not hasattr(builtins, 'SEEN') and not hasattr(json, 'SEEN')\n\
                assert not hasattr(collections.Counter, 'SEEN')\n\
                assert LEAKED == [] and MODULES > 10, (LEAKED, MODULES)\n\
                builtins.SEEN = json.SEEN = collections.Counter.SEEN = 1\n\
                builtins.BIG = bytearray(8 << 20)";
    // The program (run before every test) looks for its own marks, then marks every module.
    let program = "import sys\n\
                   mods = [m for m in list(sys.modules.values()) if hasattr(m, '__dict__')]\n\
                   LEAKED = [m.__name__ for m in mods if 'SEEN' in m.__dict__]\n\
                   MODULES = len(mods)\n\
                   for m in mods: m.SEEN = 1\n";
    let problem = json!({
        "id": "counter", "prompt": "", "tests": vec![json!({"assert": test}); 6]
    });
    let problems = write(dir.path(), "p.jsonl", &jsonl(&[problem]));
    for reset in ["dirty", "copy"] {
        let out = verify(
            runtime,
            &problems,
            &["--jobs", "1", "--slot-reset", reset],
            jsonl(&[json!({"problem_id": "counter", "code": program})]),
        );
        out.expect_code(0);
        assert_eq!(
            out.records()[0]["verdict"]["passed"],
            6,
            "--slot-reset {reset}: {}",
            out.records()[0]
        );
    }
}

/// The `random` module is seeded from the test (problem id, program, test index): the same test
/// draws the same numbers in every run, different tests draw different ones. (On the
/// pre-initialized runtime this checks that `random` is reseeded, not left in its snapshot state.)
fn random_is_seeded_per_test(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Two identical stdio tests whose expected output never matches: the `fail` detail shows
    // what the program printed.
    let problem = json!({
        "id": "rand", "prompt": "", "tests": [
            {"stdin": "", "stdout": "never"}, {"stdin": "", "stdout": "never"}
        ]
    });
    let problems = write(dir.path(), "p.jsonl", &jsonl(&[problem]));
    let input = jsonl(&[json!({"problem_id": "rand",
        "code": "import random, os\nprint(random.random(), random.randrange(10**9), os.urandom(4).hex())\n"})]);
    let details = || -> Vec<String> {
        let out = verify(runtime, &problems, &[], &input);
        out.expect_code(0);
        out.records()[0]["verdict"]["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                assert_eq!(t["status"], "fail", "{t}");
                t["detail"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let (a, b) = (details(), details());
    assert_eq!(a, b, "same test, same random numbers in every run");
    assert_ne!(a[0], a[1], "different tests draw different numbers");
}

/// A module the sandbox does not have is the program's error, with the reason in the detail.
fn unavailable_modules_are_errors(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let problems = write(dir.path(), "p.jsonl", &jsonl(&[add_problem()]));
    let input = jsonl(&[json!({"problem_id": "add",
        "code": format!("import numpy\n{BENIGN}")})]);
    let out = verify(runtime, &problems, &[], &input);
    out.expect_code(0);
    for t in out.records()[0]["verdict"]["tests"].as_array().unwrap() {
        assert_eq!(t["status"], "error", "{t}");
        let detail = t["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("ModuleNotFoundError: No module named 'numpy'"),
            "{detail}"
        );
    }
}

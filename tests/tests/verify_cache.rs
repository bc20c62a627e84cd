//! The verdict cache end to end, through the rl-verify binary: a second run executes nothing and
//! says `cached: true`; other limits are other keys; concurrent writers and a writer killed
//! mid-run leave a usable cache whose verdicts equal uncached ones; `--no-cache` leaves no file;
//! `infra` results and wall-clock timeouts are never cached; a damaged cache is a clear error.
//!
//! Every run names its cache (`--cache` or `RLCODE_VERDICT_CACHE`) inside a temporary directory;
//! the other tests run with the cache off (see `rlcode_tests::run_env`).

use rlcode_tests::{Output, bin, jsonl, run, write};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const BENIGN: &str = "def add(a, b):\n    return a + b\n";

fn add_problem(id: &str, limits: Value) -> Value {
    json!({
        "id": id, "prompt": "def add(a, b):\n", "entry_point": "add",
        "tests": [
            {"assert": "assert add(1, 2) == 3"},
            {"assert": "assert add(-1, 1) == 0"},
            {"assert": "assert add(10, 5) == 15"}
        ],
        "limits": limits
    })
}

fn problems(dir: &Path) -> String {
    let sum = json!({
        "id": "sum-stdin", "prompt": "# read two ints, print their sum\n",
        "tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5\n", "stdout": "10"}]
    });
    write(
        dir,
        "p.jsonl",
        &jsonl(&[
            add_problem("add", json!({"fuel": 3000000000u64, "wall_ms": 60000})),
            // Fuel runs out during start-up: a deterministic timeout, cacheable.
            add_problem("add-starved", json!({"fuel": 1000})),
            sum,
        ]),
    )
}

fn samples() -> Vec<Value> {
    vec![
        json!({"problem_id": "add", "sample": 0, "code": BENIGN}),
        json!({"problem_id": "add", "sample": 1, "code": "def add(a, b):\n    return a - b\n"}),
        json!({"problem_id": "add", "sample": 2, "code": "def add(a, b)\n    return a + b\n"}),
        json!({"problem_id": "add-starved", "sample": 3, "code": BENIGN}),
        json!({"problem_id": "sum-stdin", "sample": 4,
               "code": "a, b = map(int, input().split())\nprint(a + b)\n"}),
        // The same program again: identical tests, run once per batch.
        json!({"problem_id": "add", "sample": 5, "code": BENIGN}),
    ]
}

fn verify(problems: &str, cache: &Path, extra: &[&str], input: &str) -> Output {
    let mut args = vec!["--problems", problems, "--cache", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run("rl-verify", &args, input);
    out.expect_code(0);
    out
}

fn uncached(problems: &str, extra: &[&str], input: &str) -> Output {
    let mut args = vec!["--problems", problems, "--no-cache"];
    args.extend_from_slice(extra);
    let out = run("rl-verify", &args, input);
    out.expect_code(0);
    out
}

/// The records with what may differ between a run and a cached or repeated run removed: each
/// test's `ms` (a rerun's time), the fuel burnt before a wall-clock deadline (it depends on the
/// load) and the verdict's `cached`.
fn comparable(o: &Output) -> Vec<Value> {
    o.records()
        .into_iter()
        .map(|mut r| {
            let v = r["verdict"].as_object_mut().unwrap();
            v.remove("cached");
            for t in v["tests"].as_array_mut().unwrap() {
                let t = t.as_object_mut().unwrap();
                t.remove("ms");
                if t.get("detail").and_then(Value::as_str) == Some("wall-clock deadline") {
                    t.remove("fuel");
                }
            }
            r
        })
        .collect()
}

fn cached_flags(o: &Output) -> Vec<bool> {
    o.records()
        .iter()
        .map(|r| r["verdict"]["cached"].as_bool().unwrap())
        .collect()
}

/// (hits, misses) from the summary line.
fn counts(o: &Output) -> (usize, usize) {
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("verdict cache:"))
        .unwrap_or_else(|| panic!("no cache counts in the summary:\n{}", o.stderr));
    let after = line.split("verdict cache: ").nth(1).unwrap();
    let nums: Vec<usize> = after
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn entries(cache: &Path) -> i64 {
    let c = rusqlite::Connection::open(cache).unwrap();
    c.query_row("SELECT count(*) FROM verdicts", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_second_run_executes_nothing_and_says_cached() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let cache = dir.path().join("c/verdicts.sqlite");
    let input = jsonl(&samples());

    let first = verify(&problems, &cache, &[], &input);
    assert_eq!(cached_flags(&first), [false; 6]);
    assert_eq!(counts(&first), (0, 17), "{}", first.stderr);
    assert!(
        first.stderr.contains("(3 of them duplicates, not rerun)"),
        "{}",
        first.stderr
    );
    for t in first.records()[3]["verdict"]["tests"].as_array().unwrap() {
        assert_eq!(t["detail"], "fuel budget exhausted", "{t}");
    }

    // The second run must not even load the runtime: an empty module cache stays empty (a load
    // would compile the module into it).
    let modules = dir.path().join("modules");
    let second = verify(
        &problems,
        &cache,
        &["--module-cache", modules.to_str().unwrap()],
        &input,
    );
    assert_eq!(cached_flags(&second), [true; 6]);
    assert_eq!(counts(&second), (17, 0), "{}", second.stderr);
    assert!(!modules.exists(), "a fully cached run loaded the runtime");
    // Identical verdicts but for `cached`: even `ms` is the first run's.
    let strip_cached = |o: &Output| -> Vec<Value> {
        o.records()
            .into_iter()
            .map(|mut r| {
                r["verdict"].as_object_mut().unwrap().remove("cached");
                r
            })
            .collect()
    };
    assert_eq!(strip_cached(&first), strip_cached(&second));
    assert_eq!(
        comparable(&second),
        comparable(&uncached(&problems, &[], &input))
    );

    // A partly cached sample: one new test, the others hit.
    let mut more = samples();
    more.push(json!({"problem_id": "sum-stdin", "sample": 6,
                     "code": "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n"}));
    let third = verify(&problems, &cache, &[], &jsonl(&more));
    assert_eq!(counts(&third), (17, 2));
    assert_eq!(
        cached_flags(&third),
        [true, true, true, true, true, true, false]
    );
}

#[test]
fn other_limits_are_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let problems = write(
        dir.path(),
        "p.jsonl",
        &jsonl(&[add_problem("add", json!({"wall_ms": 60000}))]),
    );
    let cache = dir.path().join("v.sqlite");
    let input = jsonl(&[json!({"problem_id": "add", "code": BENIGN})]);
    let a = verify(&problems, &cache, &["--fuel", "3000000000"], &input);
    assert_eq!(counts(&a), (0, 3));
    let b = verify(&problems, &cache, &["--fuel", "3000000001"], &input);
    assert_eq!(counts(&b), (0, 3), "another --fuel runs again");
    assert_eq!(cached_flags(&b), [false]);
    let c = verify(
        &problems,
        &cache,
        &["--fuel", "3000000000", "--memory-mb", "200"],
        &input,
    );
    assert_eq!(counts(&c), (0, 3), "another --memory-mb runs again");
    let d = verify(&problems, &cache, &["--fuel", "3000000000"], &input);
    assert_eq!(counts(&d), (3, 0));
    assert_eq!(cached_flags(&d), [true]);
    // A problem's own limits override the flags and so are part of the key too.
    let p2 = write(
        dir.path(),
        "p2.jsonl",
        &jsonl(&[add_problem(
            "add",
            json!({"wall_ms": 60000, "fuel": 3000000002u64}),
        )]),
    );
    let e = verify(&p2, &cache, &["--fuel", "3000000000"], &input);
    assert_eq!(counts(&e), (0, 3));
    assert_eq!(entries(&cache), 12);
}

#[test]
fn concurrent_writers_share_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let cache = dir.path().join("shared.sqlite");
    let all = samples();
    // Overlapping inputs, started together on a cache that does not exist yet.
    let inputs: Vec<String> = (0..4)
        .map(|i| jsonl(&[all[i].clone(), all[(i + 1) % 6].clone(), all[4].clone()]))
        .collect();
    let children: Vec<_> = inputs
        .iter()
        .map(|input| {
            let input = input.clone();
            let problems = problems.clone();
            let cache = cache.clone();
            std::thread::spawn(move || {
                let out = run(
                    "rl-verify",
                    &[
                        "--problems",
                        &problems,
                        "--cache",
                        cache.to_str().unwrap(),
                        "--jobs",
                        "1",
                        "--batch",
                        "1",
                    ],
                    &input,
                );
                (input, out)
            })
        })
        .collect();
    for child in children {
        let (input, out) = child.join().unwrap();
        out.expect_code(0);
        assert_eq!(
            comparable(&out),
            comparable(&uncached(&problems, &[], &input)),
            "a concurrent writer's verdicts equal an uncached run's"
        );
    }
    // Everything any of them ran is in the cache, once.
    let union = jsonl(&all[..5]);
    let again = verify(&problems, &cache, &[], &union);
    assert_eq!(counts(&again), (14, 0), "{}", again.stderr);
    assert_eq!(entries(&cache), 14);
}

#[test]
fn a_killed_writer_leaves_a_usable_cache() {
    let dir = tempfile::tempdir().unwrap();
    let quick = samples();
    let sleeper = json!({"problem_id": "sleepy", "sample": 99,
                         "code": "import time\ntime.sleep(100000)\ndef add(a, b):\n    return a + b\n"});
    let with_sleepy = |wall_ms: u64| -> String {
        let p = format!("{}/p-{wall_ms}.jsonl", dir.path().display());
        let text = std::fs::read_to_string(problems(dir.path())).unwrap()
            + &jsonl(&[add_problem(
                "sleepy",
                json!({"wall_ms": wall_ms, "fuel": 3000000000u64}),
            )]);
        std::fs::write(&p, text).unwrap();
        p
    };
    // The sleeper's deadline is far away: the process is certainly killed while it runs.
    let problems_long = with_sleepy(3_600_000);
    let cache = dir.path().join("v.sqlite");
    let mut input: Vec<Value> = quick[..5].to_vec();
    input.push(sleeper.clone());
    input.push(quick[5].clone());
    let input = jsonl(&input);

    let mut child = Command::new(bin("rl-verify"))
        .args(["--problems", &problems_long, "--batch", "1", "--jobs", "1"])
        .arg("--cache")
        .arg(&cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    // Every verdict on stdout is already in the cache; after the fifth, the sleeper runs.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..5 {
        lines.next().unwrap().unwrap();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let c = rusqlite::Connection::open(&cache).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(c);
    assert_eq!(entries(&cache), 14, "the finished samples' distinct tests");

    // Rerun (the sleeper now with a 1 s deadline): the finished verdicts are reused, the rest
    // runs, and the whole equals an uncached run.
    let problems_short = with_sleepy(1000);
    let rerun = verify(&problems_short, &cache, &[], &input);
    let plain = uncached(&problems_short, &[], &input);
    assert_eq!(comparable(&rerun), comparable(&plain));
    assert_eq!(
        cached_flags(&rerun),
        [true, true, true, true, true, false, true]
    );
    assert_eq!(counts(&rerun), (17, 3));
    let r = rerun.records();
    assert_eq!(r[5]["verdict"]["tests"][0]["status"], "timeout");
    assert_eq!(r[5]["verdict"]["tests"][0]["detail"], "wall-clock deadline");

    // A wall-clock timeout depends on the machine's load: never cached, it runs again.
    let third = verify(&problems_short, &cache, &[], &input);
    assert_eq!(counts(&third), (17, 3));
    assert_eq!(comparable(&third), comparable(&plain));
}

#[test]
fn no_cache_leaves_no_file_and_the_default_is_under_the_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let named = dir.path().join("named.sqlite");
    let input = jsonl(&samples()[..1]);
    let out = rlcode_tests::run_env(
        "rl-verify",
        &["--problems", &problems, "--no-cache"],
        &input,
        &[("RLCODE_VERDICT_CACHE", named.to_str().unwrap())],
    );
    out.expect_code(0);
    assert!(out.stderr.contains("verdict cache off"), "{}", out.stderr);
    assert_eq!(out.records()[0]["verdict"]["passed"], 3);
    assert!(!named.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only p.jsonl"
    );

    // Without --cache: <cache dir>/verdicts.sqlite. A problem without tests needs no runtime, so
    // the (empty) cache dir does not have to hold a compiled module.
    let cache_dir = dir.path().join("cache-dir");
    let empty = write(
        dir.path(),
        "empty.jsonl",
        &jsonl(&[json!({"id": "none", "prompt": "", "tests": []})]),
    );
    let sample = jsonl(&[json!({"problem_id": "none", "code": "x = 1\n"})]);
    let env = [
        ("RLCODE_VERDICT_CACHE", ""),
        ("RLCODE_CACHE_DIR", cache_dir.to_str().unwrap()),
    ];
    let out = rlcode_tests::run_env(
        "rl-verify",
        &["--problems", &empty, "--no-cache"],
        &sample,
        &env,
    );
    out.expect_code(0);
    assert!(!cache_dir.exists());
    let out = rlcode_tests::run_env("rl-verify", &["--problems", &empty], &sample, &env);
    out.expect_code(0);
    assert_eq!(
        out.records()[0]["verdict"]["cached"],
        false,
        "no tests: not cached"
    );
    assert!(cache_dir.join("verdicts.sqlite").exists());
}

#[test]
fn infra_results_are_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    // A valid module without `_start`: every run fails on the host side, an `infra` result.
    let wasm = dir.path().join("empty.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let cache = dir.path().join("v.sqlite");
    let input = jsonl(&samples()[..2]);
    let args = [
        "--runtime",
        "python",
        "--python-wasm",
        wasm.to_str().unwrap(),
        "--no-module-cache",
    ];
    for _ in 0..2 {
        let out = verify(&problems, &cache, &args, &input);
        assert_eq!(counts(&out), (0, 6), "{}", out.stderr);
        for r in out.records() {
            assert_eq!(r["verdict"]["cached"], false);
            for t in r["verdict"]["tests"].as_array().unwrap() {
                assert_eq!(t["status"], "infra", "{t}");
            }
        }
    }
    assert_eq!(entries(&cache), 0);
}

#[test]
fn a_damaged_cache_is_a_clear_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let input = jsonl(&samples()[..2]);

    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, vec![0x42u8; 10000]).unwrap();
    let out = run(
        "rl-verify",
        &[
            "--problems",
            &problems,
            "--cache",
            garbage.to_str().unwrap(),
        ],
        &input,
    );
    out.expect_code(2);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("garbage.sqlite") && out.stderr.contains("--no-cache"),
        "{}",
        out.stderr
    );

    // A row changed behind the cache's back (a failing test now says `pass`).
    let cache = dir.path().join("v.sqlite");
    verify(&problems, &cache, &[], &input);
    rusqlite::Connection::open(&cache)
        .unwrap()
        .execute("UPDATE verdicts SET status = 'pass'", [])
        .unwrap();
    let out = run(
        "rl-verify",
        &["--problems", &problems, "--cache", cache.to_str().unwrap()],
        &input,
    );
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "no verdict from a damaged cache");
    assert!(out.stderr.contains("checksum"), "{}", out.stderr);
}

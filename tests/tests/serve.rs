//! `rl-verify serve` on 127.0.0.1: the SandboxFusion-compatible `/run_code`, `/verify` with
//! rewards, health, metrics, the bearer token, bad requests, the queue limit, deadlines, a client
//! that goes away, load from 16 clients, SIGKILL and restart with the cache, SIGTERM, and the
//! Python adapter against the live server.

use rlcode_tests::{bin, write};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed when dropped.
struct Server {
    child: Child,
    url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], cache: &Path) -> Server {
    let mut child = Command::new(bin("rl-verify"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--cache"])
        .arg(cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rl-verify serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("rl-verify serve exited before listening:\n{seen}"))
            .expect("stderr line");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest.split_whitespace().next().expect("url").to_string();
        }
    };
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(seen));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(l + "\n"));
        }
    });
    Server { child, url, stderr }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// POST JSON text; the status, the Retry-After header and the answer's JSON.
fn post_raw(url: &str, body: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let mut req = agent().post(url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.send(body).expect("request");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.body_mut().read_to_string().expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, retry, v)
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (code, _, v) = post_raw(&format!("{}{path}", s.url), &body.to_string(), None);
    (code, v)
}

fn get(s: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().expect("request");
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn add_problem() -> Value {
    json!({"id": "add", "prompt": "def add(a, b):\n", "entry_point": "add", "tests": [
        {"assert": "assert add(1, 2) == 3"},
        {"assert": "assert add(2, 2) == 4"},
        {"assert": "assert add(-1, 0) == -1"},
        {"assert": "assert add(0, 0) == 0"},
    ]})
}

const CORRECT: &str = "def add(a, b):\n    return a + b\n";
/// Right for positive a only: tests 1 and 2 pass, 3 and 4 fail.
const HALF: &str = "def add(a, b):\n    return a + b if a > 0 else 99\n";
const WRONG: &str = "def add(a, b):\n    return 7\n";

#[test]
fn run_code_speaks_sandbox_fusion() {
    let t = tempfile::tempdir().unwrap();
    let s = start(&[], &t.path().join("v.sqlite"));
    let (code, body) = get(&s, "/health", None);
    assert_eq!(code, 200, "{body}");
    let run = |code: &str, stdin: &str, extra: Value| {
        let mut b = json!({"code": code, "stdin": stdin, "language": "python",
                           "compile_timeout": 10, "run_timeout": 5, "files": {}, "fetch_files": []});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        post(&s, "/run_code", &b)
    };
    let (c, r) = run(
        "a, b = map(int, input().split())\nprint(a + b)\n",
        "2 3\n",
        json!({}),
    );
    assert_eq!(c, 200, "{r}");
    assert_eq!(r["status"], "Success", "{r}");
    assert_eq!(r["run_result"]["status"], "Finished");
    assert_eq!(r["run_result"]["return_code"], 0);
    assert_eq!(r["run_result"]["stdout"], "5\n");
    assert!(r["run_result"]["execution_time"].as_f64().unwrap() > 0.0);
    assert!(r["compile_result"].is_null());

    let (_, r) = run(
        "import sys\nprint('x', file=sys.stderr)\nraise ValueError('no')\n",
        "",
        json!({}),
    );
    assert_eq!(r["status"], "Failed", "{r}");
    assert_eq!(r["run_result"]["status"], "Finished");
    assert_eq!(r["run_result"]["return_code"], 1);
    let err = r["run_result"]["stderr"].as_str().unwrap();
    assert!(err.contains('x') && !err.contains("rlcode-"), "{err}");

    let (_, r) = run("import sys\nprint('partial')\nsys.exit(3)\n", "", json!({}));
    assert_eq!(r["status"], "Failed", "{r}");
    assert_eq!(r["run_result"]["return_code"], 3, "{r}");
    assert_eq!(r["run_result"]["stdout"], "partial\n");

    let (_, r) = run("import sys\nprint('done')\nsys.exit(0)\n", "", json!({}));
    assert_eq!(r["status"], "Success", "{r}");

    let (_, r) = run("while True:\n    pass\n", "", json!({}));
    assert_eq!(r["status"], "Failed", "{r}");
    assert_eq!(r["run_result"]["status"], "TimeLimitExceeded", "{r}");

    let (_, r) = run(
        "import time\ntime.sleep(3)\n",
        "",
        json!({"run_timeout": 0.3}),
    );
    assert_eq!(r["run_result"]["status"], "TimeLimitExceeded", "{r}");

    let (_, r) = run(
        "x = bytearray(200 << 20)\n",
        "",
        json!({"memory_limit_MB": 64}),
    );
    assert_eq!(r["status"], "Failed", "{r}");
    assert_eq!(r["rlcode"]["status"], "memory", "{r}");

    // Bad requests: 400, the field named.
    for (body, field) in [
        (json!({"code": "print(1)", "language": "cpp"}), "language"),
        (json!({"language": "python"}), "code"),
        (json!({"code": 3, "language": "python"}), "code"),
        (
            json!({"code": "print(1)", "run_timeout": "ten"}),
            "run_timeout",
        ),
        (
            json!({"code": "print(1)", "files": {"a.txt": "eA=="}}),
            "files",
        ),
    ] {
        let (c, r) = post(&s, "/run_code", &body);
        assert_eq!(c, 400, "{body}: {r}");
        assert_eq!(r["status"], "SandboxError");
        assert!(
            r["message"].as_str().unwrap().contains(field),
            "{body}: {r}"
        );
    }
    let (c, _, r) = post_raw(&format!("{}/run_code", s.url), "{not json", None);
    assert_eq!(c, 400, "{r}");
    let (c, _) = get(&s, "/nowhere", None);
    assert_eq!(c, 404);
}

#[test]
fn verify_gives_verdicts_and_rewards_and_caches_them() {
    let t = tempfile::tempdir().unwrap();
    let problems = write(t.path(), "p.jsonl", &format!("{}\n", add_problem()));
    let s = start(&["--problems", &problems], &t.path().join("v.sqlite"));
    let samples = json!([{"problem_id": "add", "code": CORRECT}, {"code": HALF}, WRONG]);
    let (c, r) = post(
        &s,
        "/verify?reward=pass_rate",
        &json!({"problem": add_problem(), "samples": samples}),
    );
    assert_eq!(c, 200, "{r}");
    let passed: Vec<u64> = r["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["passed"].as_u64().unwrap())
        .collect();
    assert_eq!(passed, [4, 2, 0], "{r}");
    assert_eq!(r["rewards"], json!([1.0, 0.5, 0.0]));
    assert_eq!(r["reward_name"], "pass_rate");
    assert_eq!(r["verdicts"][0]["cached"], false);
    // By id, from --problems; the second time from the cache.
    let (c, r2) = post(
        &s,
        "/verify?reward=binary",
        &json!({"problem_id": "add", "samples": samples}),
    );
    assert_eq!(c, 200, "{r2}");
    assert_eq!(r2["rewards"], json!([1.0, 0.0, 0.0]));
    assert_eq!(r2["verdicts"][0]["cached"], true, "{r2}");
    assert_eq!(r2["verdicts"][1]["tests"], r["verdicts"][1]["tests"]);
    // The same verdicts as rl-verify on files.
    let input = samples
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let code = s.get("code").unwrap_or(s).clone();
            format!("{}\n", json!({"problem_id": "add", "code": code}))
        })
        .collect::<String>();
    let out = rlcode_tests::verify("preinit", &problems, &[], input);
    out.expect_code(0);
    for (rec, v) in out.records().iter().zip(r["verdicts"].as_array().unwrap()) {
        let statuses = |v: &Value| -> Vec<Value> {
            v["tests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["status"].clone())
                .collect()
        };
        assert_eq!(statuses(&rec["verdict"]), statuses(v));
    }
    // Bad requests name the field.
    for (path, body, field) in [
        ("/verify", json!({"samples": [CORRECT]}), "problem"),
        (
            "/verify",
            json!({"problem_id": "nope", "samples": []}),
            "problem_id",
        ),
        (
            "/verify",
            json!({"problem": {"id": "x"}, "samples": []}),
            "problem",
        ),
        (
            "/verify",
            json!({"problem": add_problem(), "samples": "x"}),
            "samples",
        ),
        (
            "/verify",
            json!({"problem": add_problem(), "samples": [{"code": 1}]}),
            "samples",
        ),
        (
            "/verify",
            json!({"problem": add_problem(), "samples": [{"problem_id": "other", "code": ""}]}),
            "problem_id",
        ),
        (
            "/verify?reward=nonsense",
            json!({"problem": add_problem(), "samples": []}),
            "reward",
        ),
    ] {
        let (c, r) = post(&s, path, &body);
        assert_eq!(c, 400, "{body}: {r}");
        assert!(r["error"].as_str().unwrap().contains(field), "{body}: {r}");
    }
    let (c, m) = get(&s, "/metrics", None);
    assert_eq!(c, 200);
    for needle in [
        "rlcode_requests_total{endpoint=\"/verify\",code=\"200\"} 2",
        "rlcode_requests_total{endpoint=\"/verify\",code=\"400\"} 7",
        "rlcode_tests_total{status=\"pass\"} 12",
        "rlcode_verdict_cache_hits_total 12",
        "rlcode_request_duration_seconds_count 9",
        "rlcode_in_flight 0",
    ] {
        assert!(m.contains(needle), "{needle} not in\n{m}");
    }
}

#[test]
fn a_token_guards_everything_but_health() {
    let t = tempfile::tempdir().unwrap();
    let s = start(&["--token", "s3cret"], &t.path().join("v.sqlite"));
    assert_eq!(get(&s, "/health", None).0, 200);
    assert_eq!(get(&s, "/metrics", None).0, 401);
    assert_eq!(get(&s, "/metrics", Some("wrong")).0, 401);
    assert_eq!(get(&s, "/metrics", Some("s3cret")).0, 200);
    let body = json!({"code": "print(1)", "language": "python"}).to_string();
    let url = format!("{}/run_code", s.url);
    assert_eq!(post_raw(&url, &body, None).0, 401);
    let (c, _, r) = post_raw(&url, &body, Some("s3cret"));
    assert_eq!((c, r["status"].as_str()), (200, Some("Success")), "{r}");
}

#[test]
fn a_full_queue_answers_503_and_a_deadline_504() {
    let t = tempfile::tempdir().unwrap();
    let s = start(
        &[
            "--max-in-flight",
            "1",
            "--max-queue",
            "1",
            "--deadline-ms",
            "4000",
            "-j",
            "1",
        ],
        &t.path().join("v.sqlite"),
    );
    let sleep = |secs: f64| {
        json!({"code": format!("import time\ntime.sleep({secs})\n"), "language": "python",
               "run_timeout": 30})
        .to_string()
    };
    let url = format!("{}/run_code", s.url);
    let body = sleep(1.5);
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100 * i));
                post_raw(&url, &body, None)
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let full: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(ok, 2, "one running, one queued: {answers:?}");
    assert_eq!(full.len(), 2, "{answers:?}");
    assert_eq!(full[0].1.as_deref(), Some("1"), "Retry-After");
    // Past the deadline (waiting included): 504.
    let (c, _, r) = post_raw(&url, &sleep(6.0), None);
    assert_eq!(c, 504, "{r}");
    let (_, m) = get(&s, "/metrics", None);
    assert!(m.contains("rlcode_rejected_total 2"), "{m}");
}

/// A client that sends a long request and goes away: the tests it asked for stop, and the
/// server's only worker is free for the next request within a test's time.
#[test]
fn a_client_that_goes_away_frees_the_worker() {
    let t = tempfile::tempdir().unwrap();
    let s = start(
        &["--max-in-flight", "1", "-j", "1"],
        &t.path().join("v.sqlite"),
    );
    let tests: Vec<Value> = (0..40)
        .map(|i| json!({"assert": format!("import time\ntime.sleep(0.25)\nassert {i} >= 0")}))
        .collect();
    let problem = json!({"id": "slow", "prompt": "", "tests": tests});
    let body = json!({"problem": problem, "samples": ["pass\n"]}).to_string();
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    drop(conn); // 40 tests × 0.25 s = 10 s of work asked for; gone after 0.6 s
    let start = Instant::now();
    let (c, r) = post(
        &s,
        "/run_code",
        &json!({"code": "print(2)", "language": "python"}),
    );
    let waited = start.elapsed();
    assert_eq!((c, r["status"].as_str()), (200, Some("Success")), "{r}");
    assert!(
        waited < Duration::from_secs(5),
        "the abandoned request held the worker for {waited:?}"
    );
    // Nothing of the abandoned request was cached as a program's verdict.
    let (c, r) = post(
        &s,
        "/verify",
        &json!({"problem": problem, "samples": ["pass\n"]}),
    );
    assert_eq!(c, 200, "{r}");
    assert!(
        r["verdicts"][0]["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "pass"),
        "{r}"
    );
}

/// 1,000 requests from 16 clients, /run_code and /verify mixed, every answer checked; then
/// SIGKILL under load, a restart on the same cache, and the same requests answered again.
#[test]
fn load_from_16_clients_then_sigkill_and_restart() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("v.sqlite");
    let s = start(&[], &cache);
    let url = s.url.clone();
    let request = |i: usize| -> (String, String, Value) {
        if i.is_multiple_of(2) {
            let (a, b) = (i % 97, i % 13);
            let body = json!({"code": "a, b = map(int, input().split())\nprint(a * b)\n",
                              "stdin": format!("{a} {b}\n"), "language": "python"});
            (
                "/run_code".into(),
                body.to_string(),
                json!(format!("{}\n", a * b)),
            )
        } else {
            // A distinct program per request, so that each is run, not cached.
            let code = format!("def add(a, b):\n    # {i}\n    return a + b + {}\n", i % 3);
            let body = json!({"problem": add_problem(), "samples": [code]});
            let want = if i.is_multiple_of(3) { 4 } else { 0 };
            (
                "/verify?reward=pass_rate".into(),
                body.to_string(),
                json!(want),
            )
        }
    };
    let check = |i: usize, code: u16, v: &Value, want: &Value| {
        assert_eq!(code, 200, "request {i}: {v}");
        if i.is_multiple_of(2) {
            assert_eq!(&v["run_result"]["stdout"], want, "request {i}: {v}");
        } else {
            assert_eq!(&v["verdicts"][0]["passed"], want, "request {i}: {v}");
        }
    };
    let n = 1000;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (next, url) = (next.clone(), url.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return lat;
                    }
                    let (path, body, want) = request(i);
                    let t0 = Instant::now();
                    let (code, _, v) = post_raw(&format!("{url}{path}"), &body, None);
                    lat.push(t0.elapsed().as_secs_f64());
                    check(i, code, &v, &want);
                }
            })
        })
        .collect();
    let mut lat: Vec<f64> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(lat.len(), n, "every request answered");
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "serve load: {n} requests from 16 clients in {wall:.2} s ({:.0} requests/s), latency \
         p50 {:.1} ms, p99 {:.1} ms",
        n as f64 / wall,
        lat[n / 2] * 1e3,
        lat[n * 99 / 100] * 1e3
    );
    let (_, m) = get(&s, "/metrics", None);
    assert!(
        m.contains(&format!("rlcode_request_duration_seconds_count {n}")),
        "{m}"
    );

    // SIGKILL while 8 clients are mid-flight with new programs, restart on the same cache:
    // every request is answered right, and each verdict answered before the kill comes from
    // the cache.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (url, done) = (url.clone(), done.clone());
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                for i in (n + c * 2 + 1..n + 400).step_by(16) {
                    let (path, body, _) = request(i);
                    let r = agent()
                        .post(format!("{url}{path}"))
                        .header("Content-Type", "application/json")
                        .send(&body);
                    match r {
                        Ok(r) if r.status().as_u16() == 200 => {
                            answered.push(i);
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => return answered, // the server went away
                    }
                }
                answered
            })
        })
        .collect();
    while done.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut s = s;
    let pid = s.child.id();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = s.child.wait();
    let answered: Vec<usize> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        !answered.is_empty(),
        "no request finished before the kill: kill later"
    );
    let s2 = start(&[], &cache);
    for i in (n + 1..n + 400).step_by(2) {
        let (path, body, want) = request(i);
        let (code, _, v) = post_raw(&format!("{}{path}", s2.url), &body, None);
        check(i, code, &v, &want);
        if answered.contains(&i) {
            assert_eq!(
                v["verdicts"][0]["cached"], true,
                "request {i} was answered before the kill"
            );
        }
    }
    eprintln!(
        "serve SIGKILL: {} verify requests answered before the kill, all from the cache after \
         the restart",
        answered.len()
    );
    drop(s);
}

#[test]
fn sigterm_finishes_the_request_in_progress() {
    let t = tempfile::tempdir().unwrap();
    let mut s = start(&[], &t.path().join("v.sqlite"));
    let url = format!("{}/run_code", s.url);
    let client = std::thread::spawn(move || {
        let body = json!({"code": "import time\ntime.sleep(1)\nprint('late')\n",
                          "language": "python"});
        post_raw(&url, &body.to_string(), None)
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let (c, _, r) = client.join().unwrap();
    assert_eq!(
        (c, r["run_result"]["stdout"].as_str()),
        (200, Some("late\n")),
        "{r}"
    );
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", s.stderr.lock().unwrap());
}

#[test]
fn the_python_adapter_scores_through_the_server() {
    let t = tempfile::tempdir().unwrap();
    let s = start(&[], &t.path().join("v.sqlite"));
    // The first URL is dead: the client goes on to the next.
    let urls = format!("http://127.0.0.1:9,{}", s.url);
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(rlcode_tests::root().join("python/tests"))
        .arg("-v")
        .env("PYTHONPATH", rlcode_tests::root().join("python"))
        .env("RLCODE_SERVE_URLS", &urls)
        .env("RLCODE_TEST_LIVE", "1")
        .output()
        .expect("python3");
    let mut err = String::new();
    (&out.stderr[..]).read_to_string(&mut err).unwrap();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("OK") && !err.contains("skipped"), "{err}");
}

#[test]
fn oversized_requests_are_refused_with_413() {
    let t = tempfile::tempdir().unwrap();
    let s = start(
        &["--max-body-mb", "1", "--max-tests", "8"],
        &t.path().join("v.sqlite"),
    );
    // A body declared over the limit is refused from its headers alone, whether or not the
    // client waits for `100 Continue`: no upload races the answer.
    let big = json!({"code": format!("x = '{}'\n", "a".repeat(2 << 20)), "language": "python"});
    for expect_continue in [true, false] {
        let (c, text) = post_declaring(&s, "/run_code", &big.to_string(), expect_continue);
        assert_eq!(c, 413, "{text}");
        assert!(text.contains("--max-body-mb"), "{text}");
        assert!(
            text.contains("SandboxError"),
            "SandboxFusion's shape: {text}"
        );
    }
    // 3 samples × 4 tests = 12 > --max-tests 8.
    let body = json!({"problem": add_problem(), "samples": [CORRECT, CORRECT, WRONG]});
    let (c, r) = post(&s, "/verify", &body);
    assert_eq!(c, 413, "{r}");
    assert!(r["error"].as_str().unwrap().contains("--max-tests"), "{r}");
    let body = json!({"problem": add_problem(), "samples": [CORRECT, WRONG]});
    assert_eq!(post(&s, "/verify", &body).0, 200);
}

/// POST over a bare connection: only the headers (with `Expect: 100-continue` if asked), then
/// the answer, which must come without the body. The status and the answer's text. (Bytes sent
/// after them would be unread when the server closes, and its reset could race the answer.)
fn post_declaring(s: &Server, path: &str, body: &str, expect_continue: bool) -> (u16, String) {
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let expect = if expect_continue {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {expect}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the end of the answer or the connection; a reset after the answer is no failure.
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                let t = String::from_utf8_lossy(&text);
                if let Some((head, rest)) = t.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(usize::MAX);
                    if rest.len() >= len {
                        break;
                    }
                }
            }
            Err(e) if !text.is_empty() => {
                eprintln!("after {} bytes of answer: {e}", text.len());
                break;
            }
            Err(e) => panic!("no answer: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    (code, text)
}

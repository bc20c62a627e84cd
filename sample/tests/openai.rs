//! `--backend openai` against a small OpenAI-compatible server started by each test on
//! 127.0.0.1 (plain std::net, one request per connection), which records what it was sent.

use clap::Parser;
use rl_sample::{Args, run};
use rlcode_core::ExitCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

type Responder = dyn Fn(usize, &Seen) -> (u16, Vec<(String, String)>, String) + Send + Sync;

struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    /// `respond(k, request)` answers the k-th request (0-based, in arrival order).
    fn start(respond: Box<Responder>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::from(respond);
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (log, respond) = (log.clone(), respond.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut first = String::new();
                    reader.read_line(&mut first).unwrap();
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let req = Seen {
                        path,
                        headers,
                        body: serde_json::from_slice(&body).unwrap(),
                    };
                    let k = {
                        let mut l = log.lock().unwrap();
                        l.push(req.clone());
                        l.len() - 1
                    };
                    let (status, extra, text) = respond(k, &req);
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n",
                        text.len()
                    );
                    for (k, v) in extra {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(text.as_bytes());
                });
            }
        });
        Stub { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A completions answer: choice i is "    return {i}  # {prompt's last word}\n", listed in
/// reverse order; logprobs one per byte of the text for even i, one too few for odd i.
fn completions_answer(req: &Seen) -> String {
    let n = req.body["n"].as_u64().unwrap() as usize;
    let prompt = req.body["prompt"].as_str().unwrap();
    let word = prompt.split_whitespace().last().unwrap_or("");
    let choices: Vec<Value> = (0..n)
        .rev()
        .map(|i| {
            let text = format!("    return {i}  # {word}\n");
            let k = if i % 2 == 0 {
                text.len()
            } else {
                text.len() - 1
            };
            let lps: Vec<f64> = (0..k).map(|j| -0.25 * (j % 4) as f64).collect();
            let (finish, stop_reason) = if i == 0 {
                ("stop", Value::Null)
            } else {
                ("length", json!(null))
            };
            json!({"index": i, "text": text, "finish_reason": finish,
                   "stop_reason": stop_reason, "logprobs": {"token_logprobs": lps}})
        })
        .collect();
    json!({"id": "cmpl-1", "object": "text_completion", "choices": choices}).to_string()
}

fn problems(dir: &std::path::Path, ids: &[&str]) -> std::path::PathBuf {
    let path = dir.join("p.jsonl");
    let lines: String = ids
        .iter()
        .map(|id| {
            json!({"id": id, "prompt": format!("def f_{id}(x):\n"), "tests": []}).to_string() + "\n"
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

fn args(extra: &[&str]) -> Args {
    let mut v = vec!["rl-sample"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

fn run_args(a: &Args) -> (rlcode_core::Result<ExitCode>, Vec<Value>) {
    let mut out = Vec::new();
    let r = run(a, &mut out);
    let recs = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, recs)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn completions_requests_and_records_in_input_order() {
    // Answers come back slowest first, so with 3 in flight they arrive out of order.
    let stub = Stub::start(Box::new(|_, req| {
        let prompt = req.body["prompt"].as_str().unwrap();
        let delay = if prompt.contains("f_a") { 300 } else { 10 };
        std::thread::sleep(std::time::Duration::from_millis(delay));
        (200, vec![], completions_answer(req))
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &["a", "b", "c"]);
    let a = args(&[
        "--backend",
        "openai",
        "--base-url",
        &stub.url,
        "--model",
        "served-model",
        "--problems",
        p.to_str().unwrap(),
        "-n",
        "2",
        "--seed",
        "5",
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--max-tokens",
        "20",
        "--stop",
        "\\n\\n",
        "--concurrency",
        "3",
    ]);
    let (r, recs) = run_args(&a);
    assert_eq!(r.unwrap(), ExitCode::Success);
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.path, "/v1/completions");
        let b = &s.body;
        let id = b["prompt"].as_str().unwrap()[6..7].to_string();
        assert_eq!(b["prompt"], format!("def f_{id}(x):\n"));
        assert_eq!(b["model"], "served-model");
        assert_eq!(b["n"], 2);
        assert_eq!(b["temperature"], 0.7);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["max_tokens"], 20);
        assert_eq!(b["seed"], rl_sample::openai::request_seed(5, &id));
        assert_eq!(b["stop"], json!(["\n\n"]));
        assert_eq!(b["logprobs"], 1);
    }
    let order: Vec<(String, u64)> = recs
        .iter()
        .map(|r| {
            (
                r["problem_id"].as_str().unwrap().to_string(),
                r["sample"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = ["a", "b", "c"]
        .iter()
        .flat_map(|id| [(id.to_string(), 0), (id.to_string(), 1)])
        .collect();
    assert_eq!(order, want);
    let r0 = &recs[0];
    assert_eq!(
        keys(r0),
        [
            "problem_id",
            "sample",
            "completion",
            "code",
            "logprobs",
            "finish_reason",
            "temperature",
            "top_p",
            "model",
            "seed"
        ]
    );
    assert_eq!(r0["completion"], "    return 0  # f_a(x):\n");
    assert_eq!(r0["code"], "def f_a(x):\n    return 0  # f_a(x):\n");
    assert_eq!(r0["finish_reason"], "eos");
    assert_eq!(recs[1]["finish_reason"], "length");
    assert_eq!(r0["model"], "served-model");
    assert_eq!(r0["seed"], 5);
    assert_eq!(r0["temperature"], 0.7);
    assert_eq!(r0["logprobs"].as_array().unwrap().len(), 24);
    assert_eq!(r0["logprobs"][1], -0.25);
}

#[test]
fn records_have_the_local_shape_with_a_local_tokenizer() {
    let stub = Stub::start(Box::new(|_, req| (200, vec![], completions_answer(req))));
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("tiny");
    rlcode_policy::init_checkpoint(rlcode_policy::Preset::Tiny, 1, &ck).unwrap();
    let p = problems(dir.path(), &["a"]);
    let common = [
        "--problems",
        p.to_str().unwrap(),
        "-n",
        "2",
        "--max-tokens",
        "8",
    ];
    let mut local = vec!["--model", ck.to_str().unwrap()];
    local.extend(common);
    let (r, local_recs) = run_args(&args(&local));
    r.unwrap();
    let mut remote = vec![
        "--backend",
        "openai",
        "--base-url",
        &stub.url,
        "--model",
        "m",
        "--tokenizer",
        ck.to_str().unwrap(),
    ];
    remote.extend(common);
    let (r, recs) = run_args(&args(&remote));
    assert_eq!(r.unwrap(), ExitCode::Success);
    assert_eq!(keys(&recs[0]), keys(&local_recs[0]));
    // Byte-level tokenizer: the ids are BOS and the bytes, as the local backend builds them.
    assert_eq!(recs[0]["prompt_tokens"], local_recs[0]["prompt_tokens"]);
    let text = recs[0]["completion"].as_str().unwrap();
    let bytes: Vec<u32> = text.bytes().map(u32::from).collect();
    assert_eq!(recs[0]["tokens"], json!(bytes));
    // Sample 1's server gave one log-prob too few for the local tokens: left out.
    assert!(recs[1].get("logprobs").is_none());
    assert_eq!(recs[1]["tokens"].as_array().unwrap().len(), text.len());
}

#[test]
fn chat_api_sends_messages_and_takes_the_code_block() {
    let stub = Stub::start(Box::new(|_, req| {
        let user = req.body["messages"][1]["content"].as_str().unwrap();
        let sig = user.lines().find(|l| l.starts_with("def ")).unwrap();
        let content = format!("Here you go:\n```python\n{sig}\n    return x * 2\n```\nDone.");
        let answer = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content},
            "logprobs": {"content": [{"token": "Here", "logprob": -0.5, "bytes": [72]},
                                     {"token": " you", "logprob": -0.125, "bytes": [32]}]}}]});
        (200, vec![], answer.to_string())
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &["a", "b"]);
    let a = args(&[
        "--backend",
        "openai",
        "--api",
        "chat",
        "--base-url",
        &format!("{}/", stub.url),
        "--model",
        "chat-model",
        "--problems",
        p.to_str().unwrap(),
        "--system-prompt",
        "You are terse.",
        "--temperature",
        "0",
    ]);
    let (r, recs) = run_args(&a);
    assert_eq!(r.unwrap(), ExitCode::Success);
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    let first = seen
        .iter()
        .find(|s| {
            s.body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("f_a")
        })
        .unwrap();
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(
        first.body["messages"],
        json!([{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Complete the following Python function. Answer \
                with the whole function in one ```python code block.\n\n```python\n\
                def f_a(x):\n```"}])
    );
    assert_eq!(first.body["logprobs"], true);
    assert_eq!(first.body["temperature"], 0.0);
    // Chat prompts have no default stop strings.
    assert!(first.body.get("stop").is_none(), "{}", first.body);
    assert!(first.body.get("prompt").is_none());
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["problem_id"], "b");
    assert_eq!(recs[1]["code"], "def f_b(x):\n    return x * 2\n");
    assert_eq!(recs[0]["logprobs"], json!([-0.5, -0.125]));
    assert_eq!(recs[0]["finish_reason"], "stop");
}

#[test]
fn completions_with_a_local_chat_template_send_the_rendered_prompt() {
    let stub = Stub::start(Box::new(|_, req| (200, vec![], completions_answer(req))));
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("tiny");
    rlcode_policy::init_checkpoint(rlcode_policy::Preset::Tiny, 1, &ck).unwrap();
    let cfg_path = ck.join("tokenizer_config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = json!(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
         {% if add_generation_prompt %}<|assistant|>{% endif %}"
    );
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let p = problems(dir.path(), &["a"]);
    let base = [
        "--backend",
        "openai",
        "--base-url",
        &stub.url,
        "--model",
        "m",
        "--problems",
        p.to_str().unwrap(),
        "--chat-template",
        "--user-message",
        "Q {prompt}",
    ];
    // Without a local tokenizer directory the template cannot be rendered here.
    let e = run_args(&args(&base)).0.unwrap_err().to_string();
    assert!(e.contains("needs --tokenizer DIR"), "{e}");
    let mut with = base.to_vec();
    with.extend(["--tokenizer", ck.to_str().unwrap()]);
    let (r, recs) = run_args(&args(&with));
    assert_eq!(r.unwrap(), ExitCode::Success);
    let sent = stub.seen()[0].body["prompt"].as_str().unwrap().to_string();
    assert_eq!(sent, "<|user|>Q def f_a(x):\n\n<|assistant|>");
    let want: Vec<u32> = sent.bytes().map(u32::from).collect();
    assert_eq!(recs[0]["prompt_tokens"], json!(want));
    assert!(stub.seen()[0].body.get("stop").is_none());
}

#[test]
fn retries_after_503_and_429_then_succeeds() {
    let stub = Stub::start(Box::new(|k, req| match k {
        0 => (
            503,
            vec![],
            json!({"error": {"message": "loading"}}).to_string(),
        ),
        1 => (
            429,
            vec![("Retry-After".to_string(), "0".to_string())],
            "{}".to_string(),
        ),
        _ => (200, vec![], completions_answer(req)),
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &["a"]);
    let a = args(&[
        "--backend",
        "openai",
        "--base-url",
        &stub.url,
        "--model",
        "m",
        "--problems",
        p.to_str().unwrap(),
        "--retry-delay-ms",
        "10",
    ]);
    let (r, recs) = run_args(&a);
    assert_eq!(r.unwrap(), ExitCode::Success);
    assert_eq!(stub.seen().len(), 3);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["completion"], "    return 0  # f_a(x):\n");
}

#[test]
fn a_400_is_not_retried_and_names_the_problem_and_the_server_message() {
    let stub = Stub::start(Box::new(|_, req| {
        if req.body["prompt"].as_str().unwrap().contains("f_b") {
            let e = json!({"error": {"message": "This model's maximum context length is 2048 tokens",
                                     "type": "invalid_request_error"}});
            (400, vec![], e.to_string())
        } else {
            (200, vec![], completions_answer(req))
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &["a", "b", "c"]);
    let base = [
        "--backend",
        "openai",
        "--base-url",
        &stub.url,
        "--model",
        "m",
        "--problems",
        p.to_str().unwrap(),
        "--concurrency",
        "1",
    ];
    let (r, recs) = run_args(&args(&base));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("p.jsonl:2: problem \"b\": HTTP 400 from"), "{e}");
    assert!(e.contains("maximum context length is 2048 tokens"), "{e}");
    // Problem a was written before the failure; b was asked once, c never.
    assert_eq!(recs.len(), 1);
    assert_eq!(stub.seen().len(), 2);
    // --keep-going skips the problem and goes on; exit 1.
    let mut kg = base.to_vec();
    kg.push("--keep-going");
    let (r, recs) = run_args(&args(&kg));
    assert_eq!(r.unwrap(), ExitCode::Skipped);
    let ids: Vec<&str> = recs
        .iter()
        .map(|r| r["problem_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c"]);
}

#[test]
fn an_unreachable_server_fails_after_the_retries() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &["a"]);
    let url = format!("http://127.0.0.1:{port}/v1");
    let a = args(&[
        "--backend",
        "openai",
        "--base-url",
        &url,
        "--model",
        "m",
        "--problems",
        p.to_str().unwrap(),
        "--retries",
        "2",
        "--retry-delay-ms",
        "5",
    ]);
    let e = run_args(&a).0.unwrap_err().to_string();
    assert!(e.contains("p.jsonl:1: problem \"a\": "), "{e}");
    assert!(e.contains("Connection refused"), "{e}");
    assert!(e.contains("gave up after 3 tries"), "{e}");
}

#[test]
fn the_binary_sends_the_api_key_from_the_named_variable() {
    let stub = Stub::start(Box::new(|_, req| (200, vec![], completions_answer(req))));
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &["a"]);
    let p = p.to_str().unwrap();
    let out = rlcode_tests::run_exe_env(
        env!("CARGO_BIN_EXE_rl-sample"),
        &[
            "--backend",
            "openai",
            "--base-url",
            &stub.url,
            "--model",
            "m",
            "--api-key-env",
            "RL_TEST_API_KEY",
            "--problems",
            p,
        ],
        "",
        &[("RL_TEST_API_KEY", "sk-test-123")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("1 samples from http://"), "{stderr}");
    assert!(!stderr.contains("sk-test"), "{stderr}");
    let seen = stub.seen();
    let auth = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(auth, Some("Bearer sk-test-123"));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

//! `rl-verify serve`: the verifier over HTTP, for trainers that call a sandbox per sample (verl,
//! TRL, OpenRLHF) instead of exchanging files. One runtime, one worker pool and one verdict
//! cache serve every request (docs/serve.md).
//!
//! - `GET /health`: 200 once the runtime is loaded (it is loaded before the port opens).
//! - `GET /metrics`: Prometheus text (requests, tests and their statuses, cache hits, latency,
//!   requests in flight and queued).
//! - `POST /run_code`: SandboxFusion's request and response (`language: "python"` only): the
//!   program runs as `__main__` with `stdin`, as a stdio test does; never cached.
//! - `POST /verify`: `{"problem": <problem record>, "samples": [<sample records>]}` (or
//!   `"problem_id"` with `--problems`) → `{"verdicts": [...]}` in rl-verify's format, with
//!   `rewards` from `?reward=DESIGN`. Cached like `rl-verify`.
//!
//! At most `--max-in-flight` requests run at once and `--max-queue` wait; one more is answered
//! 503 with `Retry-After`. A request past `--deadline-ms` is answered 504, and a request whose
//! client went away or timed out stops: its tests not yet started are not run (their results,
//! `infra`, are never cached or returned). The sandbox's own failures are 500 (`/verify`) or
//! `SandboxError` (`/run_code`), never a program's verdict.

use crate::exec::{Expect, run_job_full};
use crate::protocol::{Job, Kind};
use crate::{CANCELLED, SampleRef, Sandbox, SandboxArgs, Summary, limits_for, verify_batch};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rlcode_core::records::{Problem, ProblemSet, Status, Verdict};
use rlcode_core::{Error, ExitCode};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Serve the verifier over HTTP (docs/serve.md).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. The default is reachable from this machine only; listening on
    /// another interface exposes a code runner: set --token.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Problems (JSONL) that `POST /verify` may name by `problem_id` instead of sending them.
    #[arg(long, value_name = "FILE")]
    pub problems: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on every endpoint but /health (default:
    /// $RLCODE_SERVE_TOKEN; neither: no check).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Requests handled at once (default: 4 per worker thread); tests of all of them share the
    /// worker threads (--jobs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight: Option<u64>,
    /// Requests that may wait for a slot; one more is answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_queue: usize,
    /// Deadline of a request in ms, waiting included: past it the answer is 504 and the
    /// request's tests not yet started are not run.
    #[arg(long, value_name = "MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub deadline_ms: u64,
    /// Largest request body, in MiB (413 beyond).
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub max_body_mb: usize,
    /// Most tests (samples × the problem's tests) one `/verify` request may ask for (413 beyond).
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub max_tests: usize,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Metrics {
    /// Answers by (endpoint, HTTP status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Tests by status (run or from the cache).
    statuses: Mutex<BTreeMap<Status, u64>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Requests refused because the queue was full.
    rejected: AtomicU64,
    /// Requests stopped because their client went away or their deadline passed.
    abandoned: AtomicU64,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    latency: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

struct Server {
    sb: Sandbox,
    args: SandboxArgs,
    problems: ProblemSet,
    token: Option<String>,
    slots: Arc<tokio::sync::Semaphore>,
    max_queue: usize,
    deadline: Duration,
    max_tests: usize,
    metrics: Metrics,
}

/// An error answer: the HTTP status and a message that names the field at fault.
struct Fail(StatusCode, String);

impl Fail {
    fn bad(msg: impl Into<String>) -> Fail {
        Fail(StatusCode::BAD_REQUEST, msg.into())
    }
}

/// Sets the flag when dropped: a handler's future is dropped when its client goes away or its
/// deadline passes, and the work it started then stops taking new tests.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Counts a request in a gauge while it lives.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn new(g: &'a AtomicUsize) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Gauge(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Run `rl-verify serve` until SIGTERM or SIGINT; requests in progress are finished first.
pub fn run(a: &ServeArgs) -> Result<ExitCode, Error> {
    let problems = match &a.problems {
        Some(p) => ProblemSet::load(p)?,
        None => ProblemSet::default(),
    };
    let token = a
        .token
        .clone()
        .or_else(|| std::env::var("RLCODE_SERVE_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let sb = Sandbox::open(&a.sandbox, true)?;
    // Loaded now, so that /health is 200 as soon as the port answers.
    sb.rt.get()?;
    let threads = sb.pool.current_num_threads();
    let in_flight = a.max_in_flight.map_or(4 * threads, |n| n as usize);
    let server = Arc::new(Server {
        sb,
        args: a.sandbox.clone(),
        problems,
        token,
        slots: Arc::new(tokio::sync::Semaphore::new(in_flight)),
        max_queue: a.max_queue,
        deadline: Duration::from_millis(a.deadline_ms),
        max_tests: a.max_tests,
        metrics: Metrics::default(),
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Msg(format!("cannot start the HTTP runtime: {e}")))?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .map_err(|e| Error::Usage(format!("--listen {}: {e}", a.listen)))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "{}: serving on http://{addr} ({} worker threads, {in_flight} requests at once, \
             runtime {}{})",
            crate::PROGRAM,
            threads,
            server.sb.rt.id(),
            if server.token.is_some() {
                ", bearer token required"
            } else {
                ""
            }
        );
        let app = router(server.clone(), a.max_body_mb << 20);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        eprintln!("{}: shut down", crate::PROGRAM);
        Ok::<_, Error>(())
    })?;
    Ok(ExitCode::Success)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn router(server: Arc<Server>, max_body: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/run_code", post(run_code))
        .route("/verify", post(verify))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(move |req, next| {
            refuse_declared_oversize(req, next, max_body)
        }))
        .with_state(server)
}

/// 413 from the headers alone when a request declares a body over the limit: the answer goes
/// out before any of the body is read, so a client that waits (`Expect: 100-continue`) never
/// sends it, and one that does not reads the 413 instead of a connection reset mid-upload.
/// Bodies without a declared length are still cut off at the limit while they stream in.
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    max_body: usize,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body as u64 => {
            let msg = format!(
                "the request body ({n} bytes) is over the server's --max-body-mb {} MiB",
                max_body >> 20
            );
            let mut r = error_response(
                Fail(StatusCode::PAYLOAD_TOO_LARGE, msg),
                req.uri().path() == "/run_code",
            );
            // The unread body makes the connection unusable for another request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        _ => next.run(req).await,
    }
}

async fn health(State(s): State<Arc<Server>>) -> Response {
    let r = (
        StatusCode::OK,
        axum::Json(json!({"status": "ok", "runtime": s.sb.rt.id()})),
    )
        .into_response();
    s.count("/health", r.status());
    r
}

async fn metrics(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let r = match s.authorize(&headers) {
        Err(f) => error_response(f, false),
        Ok(()) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            s.prometheus(),
        )
            .into_response(),
    };
    s.count("/metrics", r.status());
    r
}

async fn run_code(State(s): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let r = s
        .clone()
        .admitted(&headers, move |s, cancel| {
            s.run_code_blocking(&body, &cancel)
        })
        .await;
    let r = match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(f) => error_response(f, true),
    };
    s.finish("/run_code", r.status(), start);
    r
}

#[derive(serde::Deserialize)]
struct VerifyQuery {
    reward: Option<String>,
}

async fn verify(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<VerifyQuery>,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = match q.reward.as_deref().map(rl_score::reward::parse).transpose() {
        Err(e) => Err(Fail::bad(format!("query parameter \"reward\": {e}"))),
        Ok(reward) => {
            s.clone()
                .admitted(&headers, move |s, cancel| {
                    s.verify_blocking(&body, reward.as_deref(), &cancel)
                })
                .await
        }
    };
    let r = match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(f) => error_response(f, false),
    };
    s.finish("/verify", r.status(), start);
    r
}

/// `{"error": msg}`; SandboxFusion's shape (`status`, `message`) for /run_code.
fn error_response(Fail(code, msg): Fail, sandbox_fusion: bool) -> Response {
    let body = if sandbox_fusion {
        json!({"status": "SandboxError", "message": msg, "error": msg,
               "compile_result": null, "run_result": null, "files": {}})
    } else {
        json!({ "error": msg })
    };
    let mut r = (code, axum::Json(body)).into_response();
    if code == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

impl Server {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Fail> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in time independent of where the first difference is.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0
        });
        match ok {
            true => Ok(()),
            false => Err(Fail(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer TOKEN)".into(),
            )),
        }
    }

    /// Authorize, take a slot (or a place in the queue, or 503), and run `work` on a blocking
    /// thread under the request's deadline. The slot is held until `work` returns, so that the
    /// tests of an abandoned request count against the limit until they stop.
    async fn admitted<T: Send + 'static>(
        self: Arc<Self>,
        headers: &HeaderMap,
        work: impl FnOnce(&Server, Arc<AtomicBool>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, Fail> {
        self.authorize(headers)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let deadline = self.deadline;
        let me = self.clone();
        let job = async move {
            let permit = match me.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if me.metrics.queued.load(Ordering::Relaxed) >= me.max_queue {
                        me.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(Fail(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "the server is full ({} requests queued); retry later",
                                me.max_queue
                            ),
                        ));
                    }
                    let _queued = Gauge::new(&me.metrics.queued);
                    me.slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed")
                }
            };
            let s = me.clone();
            let c = cancel.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let _in_flight = Gauge::new(&s.metrics.in_flight);
                work(&s, c)
            })
            .await
            .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}")))?
        };
        match tokio::time::timeout(deadline, job).await {
            Ok(r) => r,
            Err(_) => {
                self.metrics.abandoned.fetch_add(1, Ordering::Relaxed);
                Err(Fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the request's deadline ({} ms) passed",
                        deadline.as_millis()
                    ),
                ))
            }
        }
    }

    fn count(&self, endpoint: &'static str, code: StatusCode) {
        *self
            .metrics
            .requests
            .lock()
            .expect("metrics")
            .entry((endpoint, code.as_u16()))
            .or_default() += 1;
    }

    fn finish(&self, endpoint: &'static str, code: StatusCode, start: Instant) {
        self.count(endpoint, code);
        let secs = start.elapsed().as_secs_f64();
        let mut h = self.metrics.latency.lock().expect("metrics");
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    fn count_tests<'a>(&self, results: impl IntoIterator<Item = &'a Status>) {
        let mut m = self.metrics.statuses.lock().expect("metrics");
        for s in results {
            *m.entry(*s).or_default() += 1;
        }
    }

    fn prometheus(&self) -> String {
        use std::fmt::Write;
        let m = &self.metrics;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP rlcode_requests_total Requests answered, by endpoint and HTTP status.\n\
             # TYPE rlcode_requests_total counter"
        );
        for ((e, c), n) in m.requests.lock().expect("metrics").iter() {
            let _ = writeln!(
                o,
                "rlcode_requests_total{{endpoint=\"{e}\",code=\"{c}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP rlcode_tests_total Tests answered (run or from the verdict cache), by status.\n\
             # TYPE rlcode_tests_total counter"
        );
        let statuses = m.statuses.lock().expect("metrics");
        for s in Status::ALL {
            let n = statuses.get(&s).copied().unwrap_or(0);
            let _ = writeln!(o, "rlcode_tests_total{{status=\"{}\"}} {n}", s.as_str());
        }
        drop(statuses);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicUsize| a.load(Ordering::Relaxed) as u64;
        for (name, kind, help, v) in [
            (
                "rlcode_verdict_cache_hits_total",
                "counter",
                "Tests answered from the verdict cache.",
                load(&m.cache_hits),
            ),
            (
                "rlcode_verdict_cache_misses_total",
                "counter",
                "Tests not in the verdict cache.",
                load(&m.cache_misses),
            ),
            (
                "rlcode_rejected_total",
                "counter",
                "Requests answered 503 because the queue was full.",
                load(&m.rejected),
            ),
            (
                "rlcode_abandoned_total",
                "counter",
                "Requests whose deadline passed.",
                load(&m.abandoned),
            ),
            (
                "rlcode_in_flight",
                "gauge",
                "Requests running on the workers.",
                gauge(&m.in_flight),
            ),
            (
                "rlcode_queued",
                "gauge",
                "Requests waiting for a slot.",
                gauge(&m.queued),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let h = m.latency.lock().expect("metrics");
        let _ = writeln!(
            o,
            "# HELP rlcode_request_duration_seconds Time from a request's arrival to its answer \
             (/run_code and /verify).\n# TYPE rlcode_request_duration_seconds histogram"
        );
        for (b, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(
                o,
                "rlcode_request_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "rlcode_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             rlcode_request_duration_seconds_sum {}\nrlcode_request_duration_seconds_count {}",
            h.count, h.sum, h.count
        );
        o
    }

    /// `POST /run_code` (SandboxFusion's `RunCodeRequest` → `RunCodeResponse`).
    fn run_code_blocking(&self, body: &[u8], cancel: &AtomicBool) -> Result<Value, Fail> {
        let req = parse_object(body)?;
        let code =
            string_field(&req, "code")?.ok_or_else(|| Fail::bad("field \"code\" is required"))?;
        let language = string_field(&req, "language")?.unwrap_or("python");
        if language != "python" && language != "python3" {
            return Err(Fail::bad(format!(
                "field \"language\": \"{language}\" is not supported (rl-verify runs \"python\" only)"
            )));
        }
        let stdin = string_field(&req, "stdin")?.unwrap_or("");
        let mut limits = limits_for(&self.args, None);
        if let Some(t) = number_field(&req, "run_timeout")? {
            if !(t > 0.0 && t <= 3600.0) {
                return Err(Fail::bad(
                    "field \"run_timeout\" must be in (0, 3600] seconds",
                ));
            }
            limits.wall = Duration::from_secs_f64(t);
        }
        if let Some(mb) = number_field(&req, "memory_limit_MB")?
            && mb > 0.0
        {
            if mb > 4096.0 {
                return Err(Fail::bad("field \"memory_limit_MB\" must be at most 4096"));
            }
            limits.memory_bytes = (mb as usize) << 20;
        }
        if let Some(files) = req.get("files")
            && files.as_object().is_some_and(|f| !f.is_empty())
        {
            return Err(Fail::bad(
                "field \"files\": the sandbox has no file system; send the program's input as \"stdin\"",
            ));
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Fail(StatusCode::SERVICE_UNAVAILABLE, CANCELLED.into()));
        }
        let rt = self
            .sb
            .rt
            .get()
            .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        let seed = rlcode_core::hash::content_digest([
            "rl-verify serve run_code".as_bytes(),
            code.as_bytes(),
            stdin.as_bytes(),
        ]);
        let job = Job {
            program: code,
            setup: "",
            kind: Kind::Stdio { stdin },
            limits,
            seed,
        };
        let (result, stdout, stderr, token) = self
            .sb
            .pool
            .install(|| run_job_full(rt, &job, Expect::CleanExit));
        self.count_tests([&result.status]);
        let stderr = program_stderr(&String::from_utf8_lossy(&stderr), &token);
        let secs = result.ms.unwrap_or(0.0) / 1e3;
        let detail = result.detail.clone();
        let return_code = match result.status {
            Status::Pass => Some(0),
            Status::Error | Status::Fail => Some(exit_code_of(detail.as_deref())),
            _ => None,
        };
        let (status, run_status) = match result.status {
            Status::Pass => ("Success", Some("Finished")),
            Status::Error | Status::Fail => ("Failed", Some("Finished")),
            Status::Timeout => ("Failed", Some("TimeLimitExceeded")),
            Status::Memory | Status::OutputLimit => ("Failed", Some("Error")),
            Status::Infra => ("SandboxError", None),
        };
        let run_result = run_status.map(|rs| {
            json!({
                "status": rs,
                "execution_time": secs,
                "return_code": return_code,
                "stdout": String::from_utf8_lossy(&stdout),
                "stderr": stderr,
            })
        });
        Ok(json!({
            "status": status,
            "message": detail.clone().unwrap_or_default(),
            "compile_result": null,
            "run_result": run_result,
            "files": {},
            "executor_pod_name": null,
            // rlcode's own reading of the run, as in `rl-verify --capture`.
            "rlcode": {
                "status": result.status.as_str(),
                "detail": detail,
                "fuel": result.fuel,
                "runtime": rt.id,
            },
        }))
    }

    /// `POST /verify`.
    fn verify_blocking(
        &self,
        body: &[u8],
        reward: Option<&dyn rl_score::reward::Reward>,
        cancel: &AtomicBool,
    ) -> Result<Value, Fail> {
        let req = parse_object(body)?;
        let inline;
        let (problems, index) = match (req.get("problem"), string_field(&req, "problem_id")?) {
            (Some(p), _) => {
                let problem: Problem = serde_json::from_value(p.clone())
                    .map_err(|e| Fail::bad(format!("field \"problem\": {e}")))?;
                if problem.language != "python" {
                    return Err(Fail::bad(format!(
                        "field \"problem\": language \"{}\" is not supported (python only)",
                        problem.language
                    )));
                }
                let mut set = ProblemSet::default();
                set.insert(problem)
                    .map_err(|e| Fail::bad(format!("field \"problem\": {e}")))?;
                inline = set;
                (&inline, 0)
            }
            (None, Some(id)) => match self.problems.position(id) {
                Some(i) => (&self.problems, i),
                None => {
                    return Err(Fail::bad(format!(
                        "field \"problem_id\": unknown problem \"{id}\"{}",
                        if self.problems.is_empty() {
                            " (the server was started without --problems)"
                        } else {
                            ""
                        }
                    )));
                }
            },
            (None, None) => {
                return Err(Fail::bad(
                    "field \"problem\" (a problem record) or \"problem_id\" is required",
                ));
            }
        };
        let problem = &problems.problems[index];
        let samples = match req.get("samples") {
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(Fail::bad(
                    "field \"samples\" must be a list of sample records",
                ));
            }
            None => return Err(Fail::bad("field \"samples\" is required")),
        };
        let mut codes = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let code = match s {
                Value::String(c) => c.as_str(),
                Value::Object(o) => {
                    match o.get("problem_id") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(id)) if *id == problem.id => {}
                        Some(other) => {
                            return Err(Fail::bad(format!(
                                "field \"samples\"[{i}].problem_id: {other} is not the problem's id \"{}\"",
                                problem.id
                            )));
                        }
                    }
                    match o.get("code") {
                        Some(Value::String(c)) => c.as_str(),
                        _ => {
                            return Err(Fail::bad(format!(
                                "field \"samples\"[{i}].code must be a string"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(Fail::bad(format!(
                        "field \"samples\"[{i}] must be a sample record or a program"
                    )));
                }
            };
            codes.push(code);
        }
        let tests = codes.len() * problem.tests.len();
        if tests > self.max_tests {
            return Err(Fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{tests} tests ({} samples × {}) is over the server's --max-tests {}",
                    codes.len(),
                    problem.tests.len(),
                    self.max_tests
                ),
            ));
        }
        let refs: Vec<SampleRef<'_>> = codes
            .iter()
            .map(|c| SampleRef {
                problem: index,
                code: c,
            })
            .collect();
        let mut summary = Summary {
            cache: self
                .sb
                .cache
                .as_ref()
                .map(|_| crate::CacheCounts::default()),
            ..Summary::default()
        };
        let verdicts = verify_batch(
            &self.sb,
            &self.args,
            problems,
            &refs,
            &mut summary,
            Some(cancel),
        )
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        if cancel.load(Ordering::Relaxed) {
            // Nobody is waiting for these (and some were never run).
            return Err(Fail(StatusCode::SERVICE_UNAVAILABLE, CANCELLED.into()));
        }
        if let Some(c) = summary.cache {
            self.metrics
                .cache_hits
                .fetch_add(c.hits as u64, Ordering::Relaxed);
            self.metrics
                .cache_misses
                .fetch_add(c.misses as u64, Ordering::Relaxed);
        }
        self.count_tests(
            verdicts
                .iter()
                .flat_map(|v| v.tests.iter().map(|t| &t.status)),
        );
        let mut out = Map::new();
        if let Some(reward) = reward {
            let (rewards, notes) =
                rl_score::score_all(reward, verdicts.iter().map(|v| (problem.id.as_str(), v)));
            out.insert("reward_name".into(), Value::from(reward.name()));
            if let Some(floor) = reward.baseline_floor() {
                out.insert("baseline_floor".into(), Value::from(floor));
            }
            out.insert("rewards".into(), json!(rewards));
            if !notes.is_empty() {
                out.insert(
                    "notes".into(),
                    Value::from(notes.into_iter().map(|(_, n)| n).collect::<Vec<_>>()),
                );
            }
        }
        out.insert(
            "verdicts".into(),
            serde_json::to_value::<&[Verdict]>(&verdicts)
                .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        );
        Ok(Value::Object(out))
    }
}

/// The exit code a failed run's detail names (`SystemExit <phase> 3 ...`, `exited with code 3
/// ...`); 1, Python's for an uncaught exception (or a non-integer exit code), otherwise.
fn exit_code_of(detail: Option<&str>) -> i64 {
    let d = detail.unwrap_or("");
    for prefix in ["SystemExit ", "exited with code "] {
        if let Some(rest) = d.strip_prefix(prefix) {
            let code = rest
                .split_whitespace()
                .take(2)
                .find_map(|w| w.trim_end_matches(':').parse::<i64>().ok());
            return code.unwrap_or(1);
        }
    }
    1
}

/// What the program wrote on stderr: without the harness's reports (each written as
/// `"\n" + token + " " + text + "\n"`, harness.py).
fn program_stderr(raw: &str, token: &str) -> String {
    let pattern = format!("\n{token} ");
    let (mut out, mut rest) = (String::new(), raw);
    while let Some(i) = rest.find(&pattern) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        rest = after.find('\n').map_or("", |j| &after[j + 1..]);
    }
    out.push_str(rest);
    out
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Fail::bad("the request body must be a JSON object")),
        Err(e) => Err(Fail::bad(format!("the request body is not JSON: {e}"))),
    }
}

fn string_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, Fail> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Fail::bad(format!("field \"{k}\" must be a string"))),
    }
}

fn number_field(m: &Map<String, Value>, k: &str) -> Result<Option<f64>, Fail> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(Fail::bad(format!("field \"{k}\" must be a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::{exit_code_of, program_stderr};

    #[test]
    fn the_harness_reports_are_not_the_programs_stderr() {
        let t = "rlcode-0123";
        assert_eq!(program_stderr(&format!("x\ny\n\n{t} OK\n"), t), "x\ny\n");
        assert_eq!(program_stderr(&format!("x\n{t} EXC a b\n"), t), "x");
        assert_eq!(program_stderr("no report\n", t), "no report\n");
        let fake = format!("a\nrlcode-9 fake\n\n{t} OK\n");
        assert_eq!(program_stderr(&fake, t), "a\nrlcode-9 fake\n");
    }

    #[test]
    fn exit_codes_come_from_the_detail() {
        let code = |d: &str| exit_code_of(Some(d));
        assert_eq!(code("SystemExit program 3 before the test completed"), 3);
        assert_eq!(code("SystemExit program str before the test completed"), 1);
        assert_eq!(code("exited with code 7 before the test completed: x"), 7);
        assert_eq!(code("ValueError: bad (in program)"), 1);
        assert_eq!(exit_code_of(None), 1);
    }
}

//! `--backend openai`: completions from an OpenAI-compatible server (OpenAI, vLLM, llama.cpp's
//! server, SGLang, ...).
//!
//! One request per problem asks for all `n` completions (`n`, `temperature`, `top_p`,
//! `max_tokens`, `seed`, `stop`, and `logprobs` unless --no-logprobs). Up to --concurrency
//! requests are in flight; records are written in input order whatever order the answers come
//! back in. A connection error, a timeout, HTTP 429 or 5xx is retried up to --retries times
//! with exponential backoff (or after the server's `Retry-After`); any other HTTP error stops
//! the run with the server's message (with --keep-going: skips that problem, exit 1).
//!
//! The request seed of problem p is the first 31 bits of sha256("rl-sample/openai", seed, p),
//! so problems do not share a random stream and the seed fits every server's integer type.

use crate::chat::{self, ChatTemplate};
use crate::{Api, Args, PROGRAM, SampleRecord, Settings};
use anyhow::{Context, anyhow};
use rlcode_core::jsonl::{JsonlReader, JsonlWriter, Skipper};
use rlcode_core::{Error, ExitCode, RecordError, Result};
use rlcode_policy::Tokenizer;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Largest response body read (n completions with per-token log-probs can be large).
const MAX_RESPONSE_BYTES: u64 = 512 << 20;
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The seed sent with the request for `problem_id` (see the module docs).
pub fn request_seed(seed: u64, problem_id: &str) -> u64 {
    let d = rlcode_core::hash::content_digest([
        b"rl-sample/openai".as_slice(),
        &seed.to_le_bytes(),
        problem_id.as_bytes(),
    ]);
    // the first 4 bytes, big-endian: the value of the hex digest's first 8 digits
    (rlcode_core::hash::digest_word(&d, 0) >> 32) & 0x7fff_ffff
}

/// One completion as the server gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub text: String,
    /// Mapped to rl-sample's names: "length"; "eos" or "stop" where the server says which
    /// (vLLM's `stop_reason`: null for EOS, the stop string); otherwise the server's own
    /// ("stop" then covers EOS and stop strings).
    pub finish_reason: String,
    pub logprobs: Option<Vec<f32>>,
}

/// A request that failed for good.
#[derive(Debug)]
pub enum RequestError {
    /// A 4xx other than 429, or an answer that is not what the API promises: the problem's
    /// fault or the caller's, not worth retrying.
    Rejected(String),
    /// Connection errors, timeouts, 429 and 5xx, still failing after every retry.
    Unavailable(String),
}

/// The JSON body of the request for one problem.
pub fn request_body(
    args: &Args,
    s: &Settings,
    problem_id: &str,
    prompt_text: &str,
    prompt: &str,
) -> Value {
    let mut body = json!({"model": args.model});
    match args.api {
        Api::Completions => {
            body["prompt"] = json!(prompt_text);
        }
        Api::Chat => {
            body["messages"] = json!(chat::messages(
                args.system_prompt.as_deref(),
                &args.user_message,
                prompt
            ));
        }
    }
    body["n"] = json!(args.n);
    body["temperature"] = json!(s.temperature);
    body["top_p"] = json!(s.top_p);
    body["max_tokens"] = json!(s.max_tokens);
    body["seed"] = json!(request_seed(args.seed, problem_id));
    if !s.stops.is_empty() {
        body["stop"] = json!(s.stops);
    }
    if !args.no_logprobs {
        body["logprobs"] = match args.api {
            Api::Completions => json!(1),
            Api::Chat => json!(true),
        };
    }
    body
}

/// The choices of a response, ordered by `index`; exactly `n` of them.
pub fn parse_choices(api: Api, body: &Value, n: usize) -> std::result::Result<Vec<Choice>, String> {
    let list = body
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("the response has no \"choices\" array")?;
    let mut out: Vec<(usize, Choice)> = Vec::with_capacity(list.len());
    for (pos, c) in list.iter().enumerate() {
        let index = c
            .get("index")
            .and_then(Value::as_u64)
            .map_or(pos, |i| i as usize);
        let text = match api {
            Api::Completions => c.get("text").and_then(Value::as_str),
            Api::Chat => c.pointer("/message/content").and_then(Value::as_str),
        }
        .ok_or_else(|| format!("choice {index} has no text"))?
        .to_string();
        let reason = c
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("length");
        let finish_reason = match (reason, c.get("stop_reason")) {
            ("stop", Some(Value::Null)) => "eos",
            ("stop", Some(Value::Number(_))) => "eos",
            ("stop", Some(Value::String(_))) => "stop",
            (r, _) => r,
        }
        .to_string();
        let lps: Option<Vec<Option<f64>>> = match api {
            Api::Completions => c.pointer("/logprobs/token_logprobs").and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().map(Value::as_f64).collect::<Vec<_>>())
            }),
            Api::Chat => c.pointer("/logprobs/content").and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .map(|t| t.get("logprob").and_then(Value::as_f64))
                        .collect::<Vec<_>>()
                })
            }),
        };
        // A missing value (null) anywhere means the list does not describe the completion.
        let logprobs = lps.and_then(|v| v.into_iter().map(|x| x.map(|f| f as f32)).collect());
        out.push((
            index,
            Choice {
                text,
                finish_reason,
                logprobs,
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    if out.len() != n || out.iter().enumerate().any(|(k, (i, _))| *i != k) {
        return Err(format!(
            "asked for n={n} completions, the server returned {} (indices {:?}); a server \
             without support for n > 1 needs -n 1",
            out.len(),
            out.iter().map(|(i, _)| *i).collect::<Vec<_>>()
        ));
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// The server's error message in a response body: OpenAI's `error.message`, or `message`,
/// `detail`, `error` as a string, or else the body itself (cut to 1,000 characters).
pub fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for p in ["/error/message", "/message", "/detail", "/error"] {
            if let Some(s) = v.pointer(p).and_then(Value::as_str) {
                return s.to_string();
            }
        }
        if let Some(d) = v.get("detail") {
            return d.to_string();
        }
    }
    let t = body.trim();
    match t.char_indices().nth(1000) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

/// An HTTP client for one endpoint, with retries.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    api_key: Option<String>,
    retries: u32,
    retry_delay: Duration,
    /// Requests retried at least once (for the summary).
    pub retried: AtomicUsize,
}

impl Client {
    pub fn new(args: &Args, base_url: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(args.timeout.max(1))))
            .http_status_as_error(false)
            .build()
            .into();
        let path = match args.api {
            Api::Completions => "completions",
            Api::Chat => "chat/completions",
        };
        let api_key = std::env::var(&args.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        Client {
            agent,
            url: format!("{}/{path}", base_url.trim_end_matches('/')),
            api_key,
            retries: args.retries,
            retry_delay: Duration::from_millis(args.retry_delay_ms),
            retried: AtomicUsize::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// POST `body`, retrying what may pass on a later try; the parsed JSON answer.
    /// `what` names the request in messages on stderr.
    pub fn post(&self, body: &Value, what: &str) -> std::result::Result<Value, RequestError> {
        let text = body.to_string();
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json");
            if let Some(k) = &self.api_key {
                req = req.header("Authorization", &format!("Bearer {k}"));
            }
            let (failure, retry_after) = match req.send(&text) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64);
                    let body = resp
                        .body_mut()
                        .with_config()
                        .limit(MAX_RESPONSE_BYTES)
                        .read_to_string();
                    match body {
                        Ok(b) if (200..300).contains(&status) => {
                            return serde_json::from_str(&b).map_err(|e| {
                                RequestError::Rejected(format!(
                                    "{}: the answer is not JSON ({e})",
                                    self.url
                                ))
                            });
                        }
                        Ok(b) => {
                            let msg =
                                format!("HTTP {status} from {}: {}", self.url, server_message(&b));
                            if status == 429 || status >= 500 {
                                (msg, retry_after)
                            } else {
                                return Err(RequestError::Rejected(msg));
                            }
                        }
                        Err(e) => (format!("reading the answer of {}: {e}", self.url), None),
                    }
                }
                Err(e) if transient(&e) => (format!("{}: {e}", self.url), None),
                Err(e) => return Err(RequestError::Rejected(format!("{}: {e}", self.url))),
            };
            if attempt >= self.retries {
                let tries = attempt + 1;
                return Err(RequestError::Unavailable(format!(
                    "{failure} (gave up after {tries} tr{})",
                    if tries == 1 { "y" } else { "ies" }
                )));
            }
            let backoff = self
                .retry_delay
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_BACKOFF);
            let wait = retry_after.map_or(backoff, |r| r.min(MAX_BACKOFF));
            if attempt == 0 {
                self.retried.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            eprintln!(
                "{PROGRAM}: {what}: {failure}; retry {attempt} of {} in {:.1} s",
                self.retries,
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
        }
    }
}

/// Errors worth another try: the connection, the network, the clock.
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::BodyStalled
    )
}

/// One problem to ask about.
struct Job {
    file: String,
    line: usize,
    id: String,
    prompt: String,
    body: Value,
    prompt_tokens: Option<Vec<u32>>,
}

impl Job {
    fn error(&self, message: String) -> RecordError {
        RecordError {
            file: self.file.clone(),
            line: self.line,
            message,
        }
    }
}

/// A local tokenizer (--tokenizer DIR) and what it needs to build prompt ids.
struct LocalTokens {
    tokenizer: Tokenizer,
    bos: Option<u32>,
}

fn local_tokens(dir: &Path) -> anyhow::Result<LocalTokens> {
    let tokenizer = rlcode_policy::tokenizer::load_dir(dir)?;
    let cfg = dir.join(rlcode_policy::checkpoint::CONFIG);
    let bos = if cfg.is_file() {
        rlcode_policy::LlamaConfig::load(&cfg)?.bos_token_id
    } else {
        None
    };
    Ok(LocalTokens { tokenizer, bos })
}

/// Run with `--backend openai` (see the module docs).
pub fn run(args: &Args, out: impl Write) -> Result<ExitCode> {
    let settings = crate::settings(args)?;
    let base_url = args
        .base_url
        .as_deref()
        .ok_or_else(|| Error::Usage("--backend openai needs --base-url".into()))?;
    if args.concurrency == 0 {
        return Err(Error::Usage("--concurrency must be at least 1".into()));
    }
    let local = match &args.tokenizer {
        Some(dir) => Some(local_tokens(dir).map_err(Error::Other)?),
        None => None,
    };
    // The template is rendered here for --api completions --chat-template, and for the prompt
    // ids of --api chat when a tokenizer is given.
    let template = match (&args.tokenizer, args.chat_mode()) {
        (Some(dir), true) => Some(ChatTemplate::load(dir).map_err(Error::Other)?),
        (None, true) if args.api == Api::Completions => {
            return Err(Error::Usage(
                "--backend openai --api completions --chat-template renders the template here: \
                 it needs --tokenizer DIR (with tokenizer_config.json); or use --api chat"
                    .into(),
            ));
        }
        _ => None,
    };
    let client = Client::new(args, base_url);

    // Read and check every problem first; the requests then run concurrently.
    let reader = JsonlReader::open(std::slice::from_ref(&args.problems))?;
    let mut skipper = Skipper::new(PROGRAM, args.keep_going);
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    let mut index = 0usize;
    for line in reader {
        let Some(line) = skipper.keep(line)? else {
            continue;
        };
        if args.limit.is_some_and(|l| jobs.len() >= l) {
            break;
        }
        let parsed = (|| {
            let id = line.str_field("id")?.to_string();
            let prompt = line.str_field("prompt")?.to_string();
            if !seen.insert(id.clone()) {
                return Err(line.error(format!("duplicate problem id \"{id}\"")));
            }
            let text = crate::prompt_text(args, template.as_ref(), &prompt)
                .map_err(|e| line.error(format!("{e:#}")))?;
            let prompt_tokens = match &local {
                Some(lt) => Some(
                    if template.is_some() {
                        lt.tokenizer.encode(&text)
                    } else {
                        lt.tokenizer
                            .encode(&text)
                            .map(|ids| lt.bos.into_iter().chain(ids).collect::<Vec<u32>>())
                    }
                    .map_err(|e| line.error(format!("{e:#}")))?,
                ),
                None => None,
            };
            let body = request_body(args, &settings, &id, &text, &prompt);
            Ok(Job {
                file: line.file.to_string(),
                line: line.line,
                id,
                prompt,
                body,
                prompt_tokens,
            })
        })();
        match parsed {
            Ok(job) => {
                index += 1;
                if index > args.offset {
                    jobs.push(job);
                }
            }
            Err(e) => skipper.skip(e)?,
        }
    }

    let start = Instant::now();
    let mut writer = JsonlWriter::new(out);
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, std::result::Result<Vec<Choice>, RequestError>)>();
    let mut outcome: Result<()> = Ok(());
    let (mut n_samples, mut n_dropped_logprobs) = (0usize, 0usize);
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency.min(jobs.len()) {
            let tx = tx.clone();
            let (jobs, next, cancel, client) = (&jobs, &next, &cancel, &client);
            scope.spawn(move || {
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let what = format!("{}:{} \"{}\"", job.file, job.line, job.id);
                    let result = client.post(&job.body, &what).and_then(|v| {
                        parse_choices(args.api, &v, args.n)
                            .map_err(|e| RequestError::Rejected(format!("{}: {e}", client.url())))
                    });
                    // A failure that ends the run stops the other requests from starting.
                    let fatal = match &result {
                        Ok(_) => false,
                        Err(RequestError::Rejected(_)) => !args.keep_going,
                        Err(RequestError::Unavailable(_)) => true,
                    };
                    if fatal {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Answers arrive in any order; write them in input order.
        let mut ready: BTreeMap<usize, std::result::Result<Vec<Choice>, RequestError>> =
            BTreeMap::new();
        let mut write_next = 0usize;
        for (i, result) in rx {
            ready.insert(i, result);
            while outcome.is_ok()
                && let Some(result) = ready.remove(&write_next)
            {
                let job = &jobs[write_next];
                write_next += 1;
                let step = match result {
                    Ok(choices) => write_records(
                        args,
                        job,
                        &choices,
                        &settings,
                        local.as_ref(),
                        &mut writer,
                        &mut n_dropped_logprobs,
                    )
                    .map(|k| n_samples += k),
                    Err(RequestError::Rejected(msg)) => {
                        let e = job.error(format!("problem \"{}\": {msg}", job.id));
                        skipper.skip(e)
                    }
                    Err(RequestError::Unavailable(msg)) => Err(Error::Other(anyhow!(
                        "{}:{}: problem \"{}\": {msg}",
                        job.file,
                        job.line,
                        job.id
                    ))),
                };
                if let Err(e) = step {
                    cancel.store(true, Ordering::Relaxed);
                    outcome = Err(e);
                }
            }
        }
    });
    outcome?;
    writer.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let mut summary = format!(
        "{PROGRAM}: {n_samples} samples from {} ({} requests, {} retried, {secs:.2} s)",
        client.url(),
        jobs.len(),
        client.retried.load(Ordering::Relaxed)
    );
    if n_dropped_logprobs > 0 {
        summary.push_str(&format!(
            "; logprobs left out of {n_dropped_logprobs} samples whose server tokens do not \
             match the local tokenization"
        ));
    }
    eprintln!("{summary}");
    Ok(skipper.exit_code())
}

/// Write the records of one problem; the number written.
fn write_records(
    args: &Args,
    job: &Job,
    choices: &[Choice],
    settings: &Settings,
    local: Option<&LocalTokens>,
    writer: &mut JsonlWriter<impl Write>,
    n_dropped_logprobs: &mut usize,
) -> Result<usize> {
    for (i, c) in choices.iter().enumerate() {
        let tokens = match local {
            Some(lt) => Some(
                lt.tokenizer
                    .encode(&c.text)
                    .with_context(|| format!("{}:{}: tokenizing a completion", job.file, job.line))
                    .map_err(Error::Other)?,
            ),
            None => None,
        };
        // With local token ids, log-probs are kept only where they are one per token.
        let logprobs = match (&tokens, &c.logprobs) {
            (Some(t), Some(lp)) if t.len() != lp.len() => {
                *n_dropped_logprobs += 1;
                None
            }
            (_, lp) => lp.as_deref(),
        };
        writer.write(&SampleRecord {
            problem_id: &job.id,
            sample: i,
            completion: &c.text,
            code: crate::code_of(args.chat_mode(), &job.prompt, &c.text),
            prompt_tokens: job.prompt_tokens.as_deref(),
            tokens: tokens.as_deref(),
            logprobs,
            finish_reason: &c.finish_reason,
            temperature: settings.temperature,
            top_p: settings.top_p,
            model: args.model.clone(),
            seed: args.seed,
            weights: None,
        })?;
    }
    writer.flush()?;
    Ok(choices.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_seeds_differ_by_problem_and_fit_31_bits() {
        let a = request_seed(7, "HumanEval/0");
        assert_eq!(a, request_seed(7, "HumanEval/0"));
        assert_ne!(a, request_seed(7, "HumanEval/1"));
        assert_ne!(a, request_seed(8, "HumanEval/0"));
        assert!(a < 1 << 31);
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(r#"{"error":{"message":"bad n","type":"invalid_request_error"}}"#),
            "bad n"
        );
        assert_eq!(server_message(r#"{"detail":"not found"}"#), "not found");
        assert_eq!(server_message(" plain text \n"), "plain text");
        assert_eq!(server_message(&"x".repeat(2000)).len(), 1003);
    }

    #[test]
    fn choices_are_ordered_and_mapped() {
        let body = json!({"choices": [
            {"index": 1, "text": "b", "finish_reason": "length",
             "logprobs": {"token_logprobs": [-0.5, -1.0]}},
            {"index": 0, "text": "a", "finish_reason": "stop", "stop_reason": null,
             "logprobs": {"token_logprobs": [null, -1.0]}}]});
        let c = parse_choices(Api::Completions, &body, 2).unwrap();
        assert_eq!(c[0].text, "a");
        assert_eq!(c[0].finish_reason, "eos");
        assert_eq!(c[0].logprobs, None);
        assert_eq!(c[1].logprobs, Some(vec![-0.5, -1.0]));
        let e = parse_choices(Api::Completions, &body, 3).unwrap_err();
        assert!(e.contains("returned 2"), "{e}");
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "hi"},
            "logprobs": {"content": [{"token": "hi", "logprob": -0.25}]}}]});
        let c = parse_choices(Api::Chat, &chat, 1).unwrap();
        assert_eq!(c[0].finish_reason, "stop");
        assert_eq!(c[0].logprobs, Some(vec![-0.25]));
    }
}

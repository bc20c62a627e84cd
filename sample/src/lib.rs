//! rl-sample: K completions per problem from a policy checkpoint.
//!
//! ```text
//! rl-sample --model ckpt/7 --problems train.jsonl -n 8 --seed 7 > samples.jsonl
//! ```
//!
//! The prompt of each problem is `[bos] + tokenize(prompt)` (or the rendered chat template).
//! All samples of all problems decode in one continuously refilled batch (`engine`): a
//! problem's prompt is run once and its key/value cache shared by its K samples, rows leave when
//! they finish and the next samples join. Each sample draws from its own ChaCha20 generator
//! seeded from (seed, problem id, sample index) and decoding is batch-invariant, so a sample
//! does not depend on the thread count, on `--max-batch` or on the other problems in the file.
//!
//! `logprobs[i]` is the natural log of the probability of `tokens[i]` under the distribution it
//! was drawn from: softmax(logits / temperature), restricted to the top-p nucleus and
//! renormalised. At temperature 0 (greedy) every logprob is 0. Output records are documented in
//! docs/formats.md (section samples).

use anyhow::bail;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rlcode_core::jsonl::{JsonlReader, JsonlWriter, Skipper};
use rlcode_core::{Error, ExitCode, Result};
use rlcode_policy::model::kernel;
use rlcode_policy::{Checkpoint, Llama, Tokenizer};
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod chat;
mod engine;
pub mod openai;

pub const PROGRAM: &str = "rl-sample";

/// Stop strings used when no `--stop` is given: a new top-level statement ends a completion of
/// a code prefix (the usual HumanEval stops).
pub const DEFAULT_STOPS: [&str; 5] = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"];

/// Where completions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The checkpoint directory named by --model, run here with candle.
    Local,
    /// An OpenAI-compatible server (--base-url); --model is the server's model name.
    Openai,
}

/// The precision of the local model's linear-layer weights while sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weights {
    /// As trained: the log-probs are the training path's (within 1e-4).
    F32,
    /// Rounded to bf16 and read as bf16 by the decode kernel (half the bytes per token; f32
    /// arithmetic): another model, whose log-probs differ from f32's (docs/formats.md).
    Bf16,
    /// Rounded to bf16, and the products' inputs too: products in AVX-512 BF16 (`vdpbf16ps`,
    /// f32 sums), as llama.cpp's BF16 models compute; faster than `bf16` where the products
    /// are bound by arithmetic (many rows), further from f32 (docs/sampling.md).
    #[value(name = "bf16-dot")]
    Bf16Dot,
}

impl Weights {
    /// The records' `weights` field: absent for f32.
    fn record(self) -> Option<&'static str> {
        match self {
            Weights::F32 => None,
            Weights::Bf16 => Some("bf16"),
            Weights::Bf16Dot => Some("bf16-dot"),
        }
    }
}

/// Which endpoint of an OpenAI-compatible server to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// POST {base}/completions with a text prompt.
    Completions,
    /// POST {base}/chat/completions with messages; the server applies its chat template.
    Chat,
}

/// Sample completions from a policy checkpoint or an OpenAI-compatible server; one JSONL
/// record per completion on stdout.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "rl-sample", version)]
pub struct Args {
    /// With --backend local: the checkpoint directory (Hugging Face layout: config.json,
    /// model.safetensors, tokenizer.json). With --backend openai: the server's model name.
    #[arg(long, value_name = "DIR|NAME")]
    pub model: String,
    /// Problems JSONL file (`-` for stdin; `.gz` is decompressed). Each needs "id" and "prompt".
    #[arg(long, value_name = "FILE")]
    pub problems: PathBuf,
    /// Completions per problem (one batch; they share the prompt's key/value cache).
    #[arg(
        short = 'n',
        long = "num-samples",
        value_name = "K",
        default_value_t = 1
    )]
    pub n: usize,
    /// Seed; sample i of problem p draws from a generator seeded by (seed, p, i). With
    /// --backend openai, the request for problem p carries a seed derived from (seed, p).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Softmax temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling: draw from the smallest set of tokens whose probability reaches P.
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f64,
    /// Most tokens generated per completion (fewer if the model's context runs out).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop a completion where this string appears (repeatable; \n, \t, \\ are unescaped); the
    /// completion text ends before it. Replaces the default stops: "\ndef ", "\nclass ",
    /// "\nif __name__", "\nprint(", "\n#" (which chat prompts do not use). The EOS token
    /// always stops.
    #[arg(long = "stop", value_name = "STR")]
    pub stop: Vec<String>,
    /// No stop strings at all (only EOS and --max-tokens end a completion).
    #[arg(long, conflicts_with = "stop")]
    pub no_stop: bool,
    /// Chat prompts: wrap each problem's prompt in a user message (--user-message), render the
    /// checkpoint's chat template (tokenizer_config.json "chat_template"), take the program from
    /// the answer's code block. No default stop strings; EOS / end of turn ends a completion.
    #[arg(long)]
    pub chat_template: bool,
    /// A system message put before the user message (chat prompts only).
    #[arg(long, value_name = "TEXT")]
    pub system_prompt: Option<String>,
    /// The user message of chat prompts; {prompt} stands for the problem's prompt (with a final
    /// newline). The default asks for the whole function in one ```python block.
    #[arg(long, value_name = "TEXT", default_value = chat::DEFAULT_USER_MESSAGE)]
    pub user_message: String,
    /// Where completions come from.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    /// --backend local: the precision of the linear layers' weights. `bf16` and `bf16-dot`
    /// sample faster from a slightly different model; their records say `"weights": "bf16"`
    /// (or `"bf16-dot"`), and rl-update's `--old-logprobs auto` then takes the learner's
    /// log-probs, not theirs.
    #[arg(long, value_enum, default_value_t = Weights::F32)]
    pub weights: Weights,
    /// --backend openai: the API's base URL, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// --backend openai: the endpoint. `chat` sends messages (the server's template; implies
    /// chat prompts); `completions` sends the prompt text (templated here with --chat-template,
    /// which then needs --tokenizer).
    #[arg(long, value_enum, default_value_t = Api::Completions)]
    pub api: Api,
    /// --backend openai: the environment variable holding the API key (sent as a bearer token
    /// when set and not empty).
    #[arg(long, value_name = "VAR", default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// --backend openai: retries of a request after a connection error, a timeout, HTTP 429 or
    /// 5xx (exponential backoff from --retry-delay-ms, or the server's Retry-After).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// --backend openai: the first retry's delay; each further retry doubles it (at most 60 s).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub retry_delay_ms: u64,
    /// --backend openai: requests in flight at once (one request per problem, n choices).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
    /// --backend openai: time limit of one request, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// --backend openai: do not ask the server for log-probabilities.
    #[arg(long)]
    pub no_logprobs: bool,
    /// --backend openai: a local tokenizer directory (tokenizer.json; tokenizer_config.json for
    /// --chat-template): fills `prompt_tokens` and `tokens` by tokenizing here, and renders the
    /// chat template for --api completions --chat-template.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// --backend local: the most sequences decoded at once. All samples of all problems share
    /// one continuously refilled batch; the output does not depend on this number.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_batch: usize,
    /// Skip this many problems first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Sample at most this many problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Report each invalid problem on stderr and go on (exit 1 at the end) instead of stopping
    /// at the first one (exit 2).
    #[arg(long)]
    pub keep_going: bool,
}

impl Args {
    /// Chat prompts: --chat-template, or the chat endpoint of a server.
    pub fn chat_mode(&self) -> bool {
        self.chat_template || (self.backend == Backend::Openai && self.api == Api::Chat)
    }
}

/// How to draw tokens.
#[derive(Debug, Clone)]
pub struct Settings {
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    pub stops: Vec<String>,
    /// Token ids that end a completion besides the model's EOS ids (chat: the template's
    /// `eos_token`, e.g. ChatML's `<|im_end|>`).
    pub extra_eos: Vec<u32>,
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Every generated token id, including a final EOS and the tokens of a stop string.
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// Decoded text, cut before the first stop string; special tokens left out.
    pub text: String,
    /// "eos", "stop" or "length".
    pub finish_reason: &'static str,
}

/// The output record (docs/formats.md, section samples). Token ids and log-probs are always
/// there with the local backend; the OpenAI backend leaves out what it does not know.
#[derive(Debug, Serialize)]
pub struct SampleRecord<'a> {
    pub problem_id: &'a str,
    pub sample: usize,
    pub completion: &'a str,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<&'a [f32]>,
    pub finish_reason: &'a str,
    pub temperature: f64,
    pub top_p: f64,
    pub model: String,
    pub seed: u64,
    /// `"bf16"` or `"bf16-dot"` when sampled with --weights bf16 / bf16-dot; absent for f32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<&'static str>,
}

/// `\n`, `\t`, `\r`, `\\` in a command-line stop string.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The program to run for a code-prefix prompt: the first fenced code block of the completion
/// ([`chat::fenced_block`]) if it has one, otherwise the prompt followed by the completion.
/// Chat prompts use [`chat::extract_chat_code`].
pub fn extract_code(prompt: &str, completion: &str) -> String {
    chat::fenced_block(completion).unwrap_or_else(|| format!("{prompt}{completion}"))
}

/// The generator of one sample: ChaCha20 seeded with sha256(seed, problem id, sample index).
pub fn sample_rng(seed: u64, problem_id: &str, sample: usize) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(rlcode_core::hash::content_digest([
        b"rl-sample".as_slice(),
        &seed.to_le_bytes(),
        problem_id.as_bytes(),
        &(sample as u64).to_le_bytes(),
    ]))
}

/// Draw one token from `logits` (see the module docs for the distribution); returns the token
/// and its log-probability under that distribution. Ties in greedy decoding and in the nucleus
/// order go to the lower token id.
///
/// The weights e^((l - max) / T) are f32 ([`kernel::exp_f32`], within 1 ulp, vectorized), their
/// sums f64 in a fixed order; the draw is an inverse-CDF search over blocks of [`BLOCK`] tokens
/// (their sums first, then within one block), so a draw costs one pass over the vocabulary, not
/// a scalar f64 exp per token. The log-probability is `(l - max) / T - ln(sum)` in f64.
pub fn sample_token(
    logits: &[f32],
    temperature: f64,
    top_p: f64,
    rng: &mut impl Rng,
) -> anyhow::Result<(u32, f32)> {
    sample_token_with(logits, temperature, top_p, rng, &mut Vec::new())
}

/// [`sample_token`] with the caller's buffer for the weights (a decoding row keeps one, so a
/// draw allocates nothing vocabulary-sized).
pub fn sample_token_with(
    logits: &[f32],
    temperature: f64,
    top_p: f64,
    rng: &mut impl Rng,
    w: &mut Vec<f32>,
) -> anyhow::Result<(u32, f32)> {
    if logits.iter().any(|l| !l.is_finite()) {
        bail!("the model produced non-finite logits");
    }
    if temperature <= 0.0 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return Ok((best as u32, 0.0));
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    let inv = 1.0 / temperature;
    w.clear();
    w.extend(
        logits
            .iter()
            .map(|&l| ((l as f64 - max as f64) * inv) as f32),
    );
    kernel::exp_in_place(w);
    let (pick, kept) = if top_p < 1.0 {
        let mut idx: Vec<usize> = (0..w.len()).collect();
        idx.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
        let total: f64 = w.chunks(BLOCK).map(lane_sum).sum();
        let mut mass = 0.0;
        let mut keep = 0;
        for &i in &idx {
            mass += w[i] as f64;
            keep += 1;
            if mass >= top_p * total {
                break;
            }
        }
        idx.truncate(keep);
        let kept: f64 = idx.iter().map(|&i| w[i] as f64).sum();
        let u = rng.random::<f64>() * kept;
        let mut acc = 0.0;
        let mut pick = *idx.last().expect("non-empty vocabulary");
        for &i in &idx {
            acc += w[i] as f64;
            if acc > u && w[i] > 0.0 {
                pick = i;
                break;
            }
        }
        (pick, kept)
    } else {
        let sums: Vec<f64> = w.chunks(BLOCK).map(lane_sum).collect();
        let total: f64 = sums.iter().sum();
        let u = rng.random::<f64>() * total;
        (inverse_cdf(w, &sums, u), total)
    };
    let z = (logits[pick] as f64 - max as f64) * inv;
    Ok((pick as u32, (z - kept.ln()) as f32))
}

/// Tokens per block of [`sample_token`]'s search.
const BLOCK: usize = 256;

/// The sum of `w` in f64: eight lanes (element i into lane i mod 8), then the lanes pairwise,
/// then the tail; a fixed order, so the same bits however it is compiled.
fn lane_sum(w: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = w.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x as f64;
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &x in chunks.remainder() {
        s += x as f64;
    }
    s
}

/// The first token whose running sum of weights exceeds `u` (and whose weight is not zero):
/// the block by the running sum of `sums` (block `b` = [`lane_sum`] of `w`'s block `b`), then
/// the token within it. Where rounding leaves the block's own running sum short of `u`, its
/// last token of non-zero weight.
fn inverse_cdf(w: &[f32], sums: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (b, &s) in sums.iter().enumerate() {
        if acc + s > u && s > 0.0 {
            let from = b * BLOCK;
            let mut last = from;
            for (j, &x) in w[from..(from + BLOCK).min(w.len())].iter().enumerate() {
                if x > 0.0 {
                    last = from + j;
                    acc += x as f64;
                    if acc > u {
                        return last;
                    }
                }
            }
            return last;
        }
        acc += s;
    }
    w.iter()
        .rposition(|&x| x > 0.0)
        .expect("the largest logit has weight 1")
}

pub(crate) fn empty_completion() -> Completion {
    Completion {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        text: String::new(),
        finish_reason: "length",
    }
}

/// The prompt's token ids: BOS (when the model has one), then the prompt's tokens.
pub fn prompt_ids(model: &Llama, tokenizer: &Tokenizer, prompt: &str) -> anyhow::Result<Vec<u32>> {
    let mut ids: Vec<u32> = model.cfg.bos_token_id.into_iter().collect();
    ids.extend(tokenizer.encode(prompt)?);
    Ok(ids)
}

/// The sampling settings of `args` (shared by both backends); `extra_eos` is left empty.
pub fn settings(args: &Args) -> Result<Settings> {
    if args.n == 0 {
        return Err(Error::Usage("-n must be at least 1".into()));
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(Error::Usage("--top-p must be in (0, 1]".into()));
    }
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(Error::Usage(
            "--temperature must be a finite number >= 0".into(),
        ));
    }
    if args.system_prompt.is_some() && !args.chat_mode() {
        return Err(Error::Usage(
            "--system-prompt needs chat prompts (--chat-template or --api chat)".into(),
        ));
    }
    if args.backend == Backend::Local {
        for (set, flag) in [
            (args.base_url.is_some(), "--base-url"),
            (args.tokenizer.is_some(), "--tokenizer"),
            (args.api != Api::Completions, "--api"),
        ] {
            if set {
                return Err(Error::Usage(format!("{flag} needs --backend openai")));
            }
        }
    } else if args.weights != Weights::F32 {
        return Err(Error::Usage(
            "--weights needs --backend local (a server's precision is its own)".into(),
        ));
    }
    let stops = if args.no_stop {
        Vec::new()
    } else if !args.stop.is_empty() {
        args.stop.iter().map(|s| unescape(s)).collect()
    } else if args.chat_mode() {
        Vec::new()
    } else {
        DEFAULT_STOPS.iter().map(|s| s.to_string()).collect()
    };
    if stops.iter().any(String::is_empty) {
        return Err(Error::Usage("--stop takes a non-empty string".into()));
    }
    Ok(Settings {
        temperature: args.temperature,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        stops,
        extra_eos: Vec::new(),
    })
}

/// The text the model is given for a problem's prompt: the prompt itself, or with a chat
/// template, the rendered messages ([`chat::messages`]).
pub fn prompt_text(
    args: &Args,
    template: Option<&chat::ChatTemplate>,
    prompt: &str,
) -> anyhow::Result<String> {
    match template {
        Some(t) => t.render(&chat::messages(
            args.system_prompt.as_deref(),
            &args.user_message,
            prompt,
        )),
        None => Ok(prompt.to_string()),
    }
}

/// The program to run from a completion: [`chat::extract_chat_code`] for chat prompts,
/// [`extract_code`] for code-prefix prompts.
pub fn code_of(chat_mode: bool, prompt: &str, completion: &str) -> String {
    if chat_mode {
        chat::extract_chat_code(prompt, completion)
    } else {
        extract_code(prompt, completion)
    }
}

/// The id of the template's `eos_token` (ChatML's `<|im_end|>`), which ends a turn.
fn end_of_turn_id(template: &chat::ChatTemplate, tokenizer: &Tokenizer) -> Option<u32> {
    template
        .eos_token
        .as_deref()
        .and_then(|t| tokenizer.token_id(t))
}

/// Run rl-sample: read the problems, write one record per completion to `out`.
pub fn run(args: &Args, out: impl Write) -> Result<ExitCode> {
    match args.backend {
        Backend::Local => run_local(args, out),
        Backend::Openai => openai::run(args, out),
    }
}

fn run_local(args: &Args, out: impl Write) -> Result<ExitCode> {
    let mut settings = settings(args)?;
    if args.max_batch == 0 {
        return Err(Error::Usage("--max-batch must be at least 1".into()));
    }
    let dir = Path::new(&args.model);
    let ck = Checkpoint::load(dir).map_err(Error::Other)?;
    let mut model = ck.model().map_err(Error::Other)?;
    match args.weights {
        Weights::F32 => Ok(()),
        Weights::Bf16 => model.use_bf16_weights(),
        Weights::Bf16Dot => model.use_bf16_products(),
    }
    .map_err(|e| Error::Other(e.into()))?;
    // The decode kernel's copy of the weights, made while loading (not in sampling's time).
    model
        .prepare_decoding()
        .map_err(|e| Error::Other(e.into()))?;
    let template = if args.chat_template {
        let t = chat::ChatTemplate::load(dir).map_err(Error::Other)?;
        settings.extra_eos.extend(end_of_turn_id(&t, &ck.tokenizer));
        Some(t)
    } else {
        None
    };
    let model_name = args.model.clone();
    let mut reader = JsonlReader::open(std::slice::from_ref(&args.problems))?;
    let mut skipper = Skipper::new(PROGRAM, args.keep_going);
    let mut writer = JsonlWriter::new(out);
    let mut seen = HashSet::new();
    let (mut index, mut done) = (0usize, 0usize);
    let (mut n_samples, mut n_tokens) = (0usize, 0usize);
    let start = std::time::Instant::now();
    let progress = progress_bar(args.limit);
    // The next problem to sample; `Err` ends the input (the problems before it are still
    // sampled and written), with the error kept to return at the end.
    let mut stopped: Option<Error> = None;
    let mut next_problem = || -> Option<Pending> {
        loop {
            if stopped.is_some() || args.limit.is_some_and(|l| done >= l) {
                return None;
            }
            let line = match skipper.keep(reader.next()?) {
                Ok(Some(line)) => line,
                Ok(None) => continue,
                Err(e) => {
                    stopped = Some(e);
                    return None;
                }
            };
            let parsed = (|| {
                let id = line.str_field("id")?.to_string();
                let prompt = line.str_field("prompt")?.to_string();
                if !seen.insert(id.clone()) {
                    return Err(line.error(format!("duplicate problem id \"{id}\"")));
                }
                let ids = match &template {
                    // As transformers' apply_chat_template: the template decides about BOS.
                    Some(_) => prompt_text(args, template.as_ref(), &prompt)
                        .and_then(|text| ck.tokenizer.encode(&text)),
                    None => prompt_ids(&model, &ck.tokenizer, &prompt),
                }
                .map_err(|e| line.error(format!("{e:#}")))?;
                if ids.len() >= model.cfg.max_position_embeddings {
                    return Err(line.error(format!(
                        "prompt of {} tokens does not fit the model's context ({})",
                        ids.len(),
                        model.cfg.max_position_embeddings
                    )));
                }
                Ok((id, prompt, ids))
            })();
            let (id, prompt, ids) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    if let Err(e) = skipper.skip(e) {
                        stopped = Some(e);
                        return None;
                    }
                    continue;
                }
            };
            index += 1;
            if index <= args.offset {
                continue;
            }
            done += 1;
            return Some(Pending {
                file: line.file.to_string(),
                line: line.line,
                id,
                prompt,
                ids,
            });
        }
    };
    let generator = engine::Generator::new(&model, &ck.tokenizer, &settings);
    let mut batcher = engine::Batcher::new(&generator, args.max_batch);
    let chat_mode = args.chat_mode();
    let mut write = |p: Pending, completions: Vec<Completion>| -> anyhow::Result<()> {
        for (i, c) in completions.iter().enumerate() {
            n_samples += 1;
            n_tokens += c.tokens.len();
            writer.write(&SampleRecord {
                problem_id: &p.id,
                sample: i,
                completion: &c.text,
                code: code_of(chat_mode, &p.prompt, &c.text),
                prompt_tokens: Some(&p.ids),
                tokens: Some(&c.tokens),
                logprobs: Some(&c.logprobs),
                finish_reason: c.finish_reason,
                temperature: settings.temperature,
                top_p: settings.top_p,
                model: model_name.clone(),
                seed: args.seed,
                weights: args.weights.record(),
            })?;
        }
        writer.flush()?;
        progress.inc(1);
        progress.set_message(format!(
            "{n_samples} samples, {:.0} tok/s",
            n_tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)
        ));
        Ok(())
    };
    let ran = batcher.run(
        || {
            Ok(next_problem().map(|p| engine::Job {
                prompt: p.ids.clone(),
                rngs: (0..args.n)
                    .map(|i| sample_rng(args.seed, &p.id, i))
                    .collect(),
                tag: p,
            }))
        },
        |p| format!("{}:{}: sampling \"{}\"", p.file, p.line, p.id),
        &mut write,
    );
    ran.map_err(|e| match e.downcast::<Error>() {
        Ok(e) => e,
        Err(e) => Error::Other(e),
    })?;
    if let Some(e) = stopped {
        return Err(e);
    }
    writer.flush()?;
    progress.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{PROGRAM}: {n_samples} samples, {n_tokens} tokens, {:.1} tok/s ({secs:.2} s, of which \
         prefill {:.2} s: {} prompts, {} tokens); batch of up to {} rows, key/value cache peak \
         {:.1} MiB",
        n_tokens as f64 / secs.max(1e-9),
        batcher.prefill_secs,
        batcher.prefills,
        batcher.prefill_tokens,
        batcher.peak_rows,
        batcher.kv_peak_bytes as f64 / (1 << 20) as f64
    );
    Ok(skipper.exit_code())
}

/// A problem read and tokenized, waiting for its samples to join the batch.
struct Pending {
    file: String,
    line: usize,
    id: String,
    prompt: String,
    ids: Vec<u32>,
}

/// Problems sampled so far, on stderr when it is a terminal (hidden otherwise: the closing
/// summary line is always printed).
fn progress_bar(limit: Option<usize>) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (pb, template) = match limit {
        Some(n) => (
            indicatif::ProgressBar::new(n as u64),
            "{bar:30} {pos}/{len} problems, {msg}, {elapsed} (~{eta} left)",
        ),
        None => (
            indicatif::ProgressBar::no_length(),
            "{spinner} {pos} problems, {msg}, {elapsed}",
        ),
    };
    pb.set_style(indicatif::ProgressStyle::with_template(template).expect("template"));
    pb
}

#[cfg(test)]
mod tests;

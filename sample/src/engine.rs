//! Continuous batching for the local backend: every sequence of a run decodes in one batch of
//! at most `--max-batch` rows; a row leaves when its completion ends and the next sample (of
//! the same problem, or of the next problem read) takes its place. A problem's prompt is
//! prefilled once, when its first sample joins, and its keys and values are shared by its
//! samples ([`rlcode_policy::Prefix`]). Records are written in input order as soon as a
//! problem's samples have all ended.
//!
//! A sample's tokens and log-probs depend only on its prompt and its generator: decoding steps
//! are batch-invariant ([`Llama::decode_step`]), the sampler of each row draws from the row's
//! own generator, and rows run in parallel without sharing any state. So the output is byte for
//! byte the same whatever `--max-batch`, the thread count, or how the problems are split across
//! calls (`--offset`, `--limit`).

use crate::{Completion, Settings, sample_token_with};
use anyhow::Context;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use rlcode_policy::{DecodeState, Llama, Prefix, SeqCache, Tokenizer};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// What every row shares: the model, the tokenizer, the settings and the ids that end a
/// completion.
pub struct Generator<'a> {
    pub model: &'a Llama,
    pub tokenizer: &'a Tokenizer,
    pub settings: &'a Settings,
    eos: HashSet<u32>,
    /// Bytes of the longest stop string.
    longest_stop: usize,
}

impl<'a> Generator<'a> {
    pub fn new(model: &'a Llama, tokenizer: &'a Tokenizer, settings: &'a Settings) -> Self {
        let eos = model
            .cfg
            .eos_ids()
            .into_iter()
            .chain(settings.extra_eos.iter().copied())
            .collect();
        let longest_stop = settings.stops.iter().map(String::len).max().unwrap_or(0);
        Generator {
            model,
            tokenizer,
            settings,
            eos,
            longest_stop,
        }
    }
}

/// One completion being generated.
struct Row {
    rng: ChaCha20Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// With stop strings: the text so far and the incremental decoder's state (`None` after
    /// the decoder failed: the whole completion is then decoded at every token).
    text: String,
    stream: Option<DecodeState>,
    finish: Option<&'static str>,
    /// The sampler's weights, reused from token to token.
    weights: Vec<f32>,
}

impl Row {
    fn new(rng: ChaCha20Rng) -> Self {
        Row {
            rng,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            stream: Some(DecodeState::default()),
            finish: None,
            weights: Vec::new(),
        }
    }

    /// Draw the next token from `logits` and decide whether the completion ends with it: at an
    /// EOS id, when a stop string appears in the text, or at `max_new` tokens. Only the new
    /// text (and the `longest stop - 1` bytes before it) is searched for stop strings.
    fn advance(&mut self, g: &Generator, logits: &[f32], max_new: usize) -> anyhow::Result<()> {
        let s = g.settings;
        let (tok, lp) = sample_token_with(
            logits,
            s.temperature,
            s.top_p,
            &mut self.rng,
            &mut self.weights,
        )?;
        self.tokens.push(tok);
        self.logprobs.push(lp);
        if g.eos.contains(&tok) {
            self.finish = Some("eos");
            return Ok(());
        }
        if !s.stops.is_empty() {
            let new_from = match &mut self.stream {
                Some(st) => match g.tokenizer.decode_step(st, tok) {
                    Ok(chunk) => {
                        let from = self.text.len();
                        self.text.push_str(chunk.as_deref().unwrap_or(""));
                        from
                    }
                    Err(_) => {
                        self.stream = None;
                        self.text = g.tokenizer.decode(&self.tokens)?;
                        0
                    }
                },
                None => {
                    self.text = g.tokenizer.decode(&self.tokens)?;
                    0
                }
            };
            let mut from = new_from.saturating_sub(g.longest_stop.saturating_sub(1));
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            let tail = &self.text[from..];
            if s.stops.iter().any(|st| tail.contains(st.as_str())) {
                self.finish = Some("stop");
                return Ok(());
            }
        }
        if self.tokens.len() >= max_new {
            self.finish = Some("length");
        }
        Ok(())
    }

    /// The finished completion: the whole text decoded once, cut before the first stop string
    /// (unless it ended at EOS).
    fn completion(self, g: &Generator) -> anyhow::Result<Completion> {
        let mut text = g.tokenizer.decode(&self.tokens)?;
        let mut finish = self.finish.unwrap_or("length");
        if finish != "eos"
            && let Some(c) = g
                .settings
                .stops
                .iter()
                .filter_map(|st| text.find(st.as_str()))
                .min()
        {
            text.truncate(c);
            finish = "stop";
        }
        Ok(Completion {
            tokens: self.tokens,
            logprobs: self.logprobs,
            text,
            finish_reason: finish,
        })
    }
}

/// A problem handed to the [`Batcher`]: its prompt's token ids, one generator per sample, and
/// whatever the caller keeps with it (`T`, given back with the completions).
pub struct Job<T> {
    pub prompt: Vec<u32>,
    pub rngs: Vec<ChaCha20Rng>,
    pub tag: T,
}

struct InFlight<T> {
    job: Job<T>,
    max_new: usize,
    /// The prompt's keys and values and its last logits, while samples are still to join.
    prefix: Option<(Arc<Prefix>, Vec<f32>)>,
    started: usize,
    done: Vec<Option<Completion>>,
    ended: usize,
}

struct Live {
    /// Sequence number of its problem (jobs are numbered in the order they were given).
    seq: usize,
    sample: usize,
    max_new: usize,
    row: Row,
    cache: SeqCache,
    /// The logits of its first token (its prompt's last position) until it draws it; empty
    /// after: a row's next logits are its row of the last step's ([`Batcher::step_logits`]).
    first_logits: Vec<f32>,
}

/// The continuous batcher (see the module docs). Feed it with [`Batcher::run`].
pub struct Batcher<'a, T> {
    g: &'a Generator<'a>,
    max_batch: usize,
    jobs: VecDeque<InFlight<T>>,
    /// Sequence number of `jobs[0]`.
    first_seq: usize,
    live: Vec<Live>,
    /// The last step's logits, `[rows, vocab]`: row `i` is `live[i]`'s (rows that joined
    /// since are after them and have their own first logits).
    step_logits: Vec<f32>,
    step_vocab: usize,
    /// The most bytes of keys and values held at once (prompts and generated tokens).
    pub kv_peak_bytes: usize,
    /// The most rows decoded in one step.
    pub peak_rows: usize,
    /// Prompts prefilled, their tokens, and the seconds spent prefilling them.
    pub prefills: usize,
    pub prefill_tokens: usize,
    pub prefill_secs: f64,
}

impl<'a, T> Batcher<'a, T> {
    pub fn new(g: &'a Generator<'a>, max_batch: usize) -> Self {
        Batcher {
            g,
            max_batch: max_batch.max(1),
            jobs: VecDeque::new(),
            first_seq: 0,
            live: Vec::new(),
            step_logits: Vec::new(),
            step_vocab: 0,
            kv_peak_bytes: 0,
            peak_rows: 0,
            prefills: 0,
            prefill_tokens: 0,
            prefill_secs: 0.0,
        }
    }

    /// Generate every job that `next` gives (until it returns `None`), calling `done` with each
    /// job's tag and completions in the order the jobs came. `next` is asked for a job only when
    /// a row is free. An error of `next`, of a job (its tag's description from `describe`
    /// comes first) or of `done` ends the run at once; jobs given before it that already
    /// ended have been passed to `done`.
    pub fn run(
        &mut self,
        mut next: impl FnMut() -> anyhow::Result<Option<Job<T>>>,
        describe: impl Fn(&T) -> String,
        mut done: impl FnMut(T, Vec<Completion>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut input_open = true;
        loop {
            self.admit(&mut next, &mut input_open, &describe)?;
            self.sample(&describe)?;
            self.retire()?;
            while self.jobs.front().is_some_and(|j| j.ended == j.done.len()) {
                let j = self.jobs.pop_front().expect("a front job");
                self.first_seq += 1;
                let completions = j.done.into_iter().map(|c| c.expect("ended")).collect();
                done(j.job.tag, completions)?;
            }
            if self.live.is_empty() {
                if input_open || !self.jobs.is_empty() {
                    continue;
                }
                return Ok(());
            }
            self.step()?;
        }
    }

    /// Fill free rows: the next sample of the oldest problem that has one, else a new problem.
    fn admit(
        &mut self,
        next: &mut impl FnMut() -> anyhow::Result<Option<Job<T>>>,
        input_open: &mut bool,
        describe: &impl Fn(&T) -> String,
    ) -> anyhow::Result<()> {
        let max_pos = self.g.model.cfg.max_position_embeddings;
        while self.live.len() < self.max_batch {
            let Some(j) = self.jobs.iter().position(|j| j.started < j.job.rngs.len()) else {
                if !*input_open {
                    return Ok(());
                }
                match next()? {
                    Some(job) => {
                        let n = job.rngs.len();
                        let len = job.prompt.len();
                        if len == 0 || len >= max_pos {
                            anyhow::bail!(
                                "{}: prompt of {len} tokens does not fit the model's context \
                                 ({max_pos})",
                                describe(&job.tag)
                            );
                        }
                        let max_new = self.g.settings.max_tokens.min(max_pos - len);
                        let mut f = InFlight {
                            job,
                            max_new,
                            prefix: None,
                            started: 0,
                            done: (0..n).map(|_| None).collect(),
                            ended: 0,
                        };
                        if max_new == 0 {
                            // Nothing to generate: every sample is empty.
                            f.started = n;
                            f.ended = n;
                            f.done = (0..n).map(|_| Some(crate::empty_completion())).collect();
                        }
                        self.jobs.push_back(f);
                    }
                    None => *input_open = false,
                }
                continue;
            };
            let seq = self.first_seq + j;
            let f = &mut self.jobs[j];
            if f.prefix.is_none() {
                let start = std::time::Instant::now();
                let p = self
                    .g
                    .model
                    .prefill(&f.job.prompt)
                    .with_context(|| format!("{}: prefilling", describe(&f.job.tag)))?;
                self.prefill_secs += start.elapsed().as_secs_f64();
                self.prefills += 1;
                self.prefill_tokens += f.job.prompt.len();
                f.prefix = Some(p);
            }
            let (prefix, first) = f.prefix.as_ref().expect("prefilled");
            let sample = f.started;
            let rng = f.job.rngs[sample].clone();
            self.live.push(Live {
                seq,
                sample,
                max_new: f.max_new,
                row: Row::new(rng),
                cache: SeqCache::new(prefix.clone(), f.max_new),
                first_logits: first.clone(),
            });
            f.started += 1;
            if f.started == f.job.rngs.len() {
                f.prefix = None;
            }
        }
        Ok(())
    }

    /// Every live row draws its next token (in parallel; each from its own generator).
    fn sample(&mut self, describe: &impl Fn(&T) -> String) -> anyhow::Result<()> {
        let g = self.g;
        let (step, vocab) = (&self.step_logits, self.step_vocab);
        let results: Vec<anyhow::Result<()>> = self
            .live
            .par_iter_mut()
            .enumerate()
            .with_max_len(1)
            .map(|(i, l)| {
                let first = std::mem::take(&mut l.first_logits);
                let logits = if first.is_empty() {
                    &step[i * vocab..(i + 1) * vocab]
                } else {
                    &first[..]
                };
                l.row.advance(g, logits, l.max_new)
            })
            .collect();
        for (l, r) in self.live.iter().zip(results) {
            r.with_context(|| {
                format!(
                    "{}: sampling",
                    describe(&self.jobs[l.seq - self.first_seq].job.tag)
                )
            })?;
        }
        Ok(())
    }

    /// Rows whose completion ended leave the batch (no copy of anyone's cache).
    fn retire(&mut self) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].row.finish.is_none() {
                i += 1;
                continue;
            }
            let l = self.live.swap_remove(i);
            let c = l.row.completion(self.g)?;
            let f = &mut self.jobs[l.seq - self.first_seq];
            f.done[l.sample] = Some(c);
            f.ended += 1;
        }
        Ok(())
    }

    /// One decoding step of every live row.
    fn step(&mut self) -> anyhow::Result<()> {
        let mut prefixes = HashSet::new();
        let mut bytes = 0;
        for l in &self.live {
            bytes += l.cache.bytes();
            if prefixes.insert(l.seq) {
                bytes += l.cache.prefix().bytes();
            }
        }
        self.kv_peak_bytes = self.kv_peak_bytes.max(bytes);
        self.peak_rows = self.peak_rows.max(self.live.len());
        let tokens: Vec<u32> = self
            .live
            .iter()
            .map(|l| *l.row.tokens.last().expect("a token per live row"))
            .collect();
        let mut caches: Vec<&mut SeqCache> = self.live.iter_mut().map(|l| &mut l.cache).collect();
        self.step_logits = self
            .g
            .model
            .decode_step(&mut caches, &tokens)
            .context("decoding")?;
        self.step_vocab = self.step_logits.len() / self.live.len();
        Ok(())
    }
}

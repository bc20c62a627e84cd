//! What rl-update reads: scored RL records and SFT records, checked with `file:line` errors.

use super::*;

/// One training sequence: `tokens[start..]` are the tokens trained on.
#[derive(Debug, Clone)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub start: usize,
    /// Sampling log-probs of `tokens[start..]`; `None`: the current policy's (ratio 1).
    pub old_logprobs: Option<Vec<f32>>,
    pub advantage: f64,
    pub temperature: f64,
}

impl Example {
    pub(crate) fn completion_len(&self) -> usize {
        self.tokens.len() - self.start
    }

    /// The tokens before the trained ones.
    pub(crate) fn prompt(&self) -> &[u32] {
        &self.tokens[..self.start]
    }
}

/// A scored sample as rl-update reads it.
#[derive(Debug, Clone)]
pub struct Scored {
    pub problem_id: String,
    pub reward: f64,
    pub example: Example,
    /// What the record's `verdict` says (for --diagnostics).
    pub outcome: Outcome,
    /// `baseline_floor` of the record (a reward design such as `corpo:T` sets it): the group's
    /// advantage baseline is at least this.
    pub baseline_floor: Option<f64>,
}

/// Parse one RL record. `Ok(None)`: `reward` is null (left out and counted).
pub fn parse_scored(
    line: &Line,
    vocab: usize,
    source: OldLogprobs,
) -> Result<Option<Scored>, RecordError> {
    let problem_id = line.str_field("problem_id")?.to_string();
    let reward = match line.value.get("reward") {
        None => return Err(line.error("missing field \"reward\"")),
        Some(Value::Null) => return Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|r| r.is_finite())
            .ok_or_else(|| line.error("field \"reward\" must be a number or null"))?,
    };
    let prompt: Vec<u32> = line.typed_field("prompt_tokens")?;
    let tokens: Vec<u32> = line.typed_field("tokens")?;
    let mut old: Option<Vec<f32>> = match line.value.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(_) => Some(line.typed_field("logprobs")?),
    };
    if let Some(o) = &old
        && o.len() != tokens.len()
    {
        return Err(line.error(format!(
            "field \"logprobs\" has {} values for {} tokens",
            o.len(),
            tokens.len()
        )));
    }
    if prompt.is_empty() {
        return Err(line.error("field \"prompt_tokens\" is empty"));
    }
    if let Some(bad) = prompt.iter().chain(&tokens).find(|&&t| t as usize >= vocab) {
        return Err(line.error(format!(
            "token id {bad} is outside the model's vocabulary ({vocab})"
        )));
    }
    let temperature = match line.value.get("temperature") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| line.error("field \"temperature\" must be a number"))?,
    };
    let top_p = match line.value.get("top_p") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|p| *p > 0.0 && *p <= 1.0)
            .ok_or_else(|| line.error("field \"top_p\" must be a number in (0, 1]"))?,
    };
    // A sampler with rounded weights (rl-sample --weights bf16) draws from another model.
    let other_weights = match line.value.get("weights") {
        None | Some(Value::Null) => false,
        Some(Value::String(w)) => w != "f32",
        Some(_) => return Err(line.error("field \"weights\" must be a string")),
    };
    // The learner's old log-probs are computed later (or the ratio is 1 in a single pass).
    if source == OldLogprobs::Learner
        || (source == OldLogprobs::Auto && (top_p < 1.0 || other_weights))
    {
        old = None;
    }
    let baseline_floor = match line.value.get("baseline_floor") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| line.error("field \"baseline_floor\" must be a number"))?,
        ),
    };
    let start = prompt.len();
    let mut all = prompt;
    all.extend(tokens);
    Ok(Some(Scored {
        problem_id,
        reward,
        outcome: Outcome::of(line.value.get("verdict")),
        baseline_floor,
        example: Example {
            tokens: all,
            start,
            old_logprobs: old,
            advantage: 0.0,
            // Greedy samples (temperature 0) carry logprob 0; train them at temperature 1.
            temperature: if temperature > 0.0 { temperature } else { 1.0 },
        },
    }))
}

/// Parse one SFT record: `[bos] + tokenize(code) + [eos]`, truncated to `max_len`. With
/// [`SftLoss::Completion`] and a "completion" that "code" ends with, the loss starts at the
/// completion's first token (the prompt and the completion are tokenized apart, as rl-sample
/// does); otherwise at the first token of "code".
pub fn parse_sft(
    line: &Line,
    tok: &Tokenizer,
    cfg: &LlamaConfig,
    max_len: usize,
    loss: SftLoss,
) -> Result<Example, RecordError> {
    let code = line.str_field("code")?;
    let enc = |s: &str| tok.encode(s).map_err(|e| line.error(e.to_string()));
    let mut tokens: Vec<u32> = cfg.bos_token_id.into_iter().collect();
    let bos = tokens.len();
    let mut start = bos.max(1);
    let completion = match loss {
        SftLoss::Completion => line
            .value
            .get("completion")
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty() && code.ends_with(c)),
        SftLoss::Code => None,
    };
    if let Some(c) = completion {
        tokens.extend(enc(&code[..code.len() - c.len()])?);
        start = tokens.len().max(1);
        tokens.extend(enc(c)?);
    } else {
        tokens.extend(enc(code)?);
    }
    tokens.extend(cfg.eos_ids().first().copied());
    tokens.truncate(max_len);
    if tokens.len() < 2 || start >= tokens.len() {
        return Err(line.error("field \"code\" gives no tokens to train on"));
    }
    Ok(Example {
        tokens,
        start,
        old_logprobs: None,
        advantage: 0.0,
        temperature: 1.0,
    })
}

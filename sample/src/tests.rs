use super::*;
use candle_core::{Device, Tensor};
use clap::Parser;
use rlcode_policy::Preset;

fn tiny_ckpt(dir: &std::path::Path) -> PathBuf {
    let out = dir.join("tiny");
    rlcode_policy::init_checkpoint(Preset::Tiny, 1, &out).unwrap();
    out
}

fn args(extra: &[&str]) -> Args {
    let mut v = vec!["rl-sample"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

fn run_to_string(a: &Args) -> (Result<ExitCode>, String) {
    let mut out = Vec::new();
    let r = run(a, &mut out);
    (r, String::from_utf8(out).unwrap())
}

/// The block-wise inverse-CDF draw follows the softmax: over a vocabulary of several blocks
/// (1,000 tokens, 4 blocks of 256), every token's frequency in 200,000 draws is within 5
/// standard deviations of its probability (computed in f64), the chi-square statistic is below
/// 1,200 (999 degrees of freedom), a token of weight ~0 is never drawn, and each draw's
/// log-probability is the f64 log-softmax's (1e-5).
#[test]
fn sampling_follows_the_softmax_across_blocks() {
    let vocab = 1000;
    // Logits in [-6, 4], a few high ones in different blocks, one token of weight ~0.
    let mut logits: Vec<f32> = (0..vocab)
        .map(|i| ((i as u32).wrapping_mul(2654435761) % 1000) as f32 / 100.0 - 6.0)
        .collect();
    for (i, l) in [(3, 6.0), (300, 5.5), (600, 6.2), (999, 5.0), (700, -200.0)] {
        logits[i] = l;
    }
    for temperature in [1.0, 0.7] {
        let z: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let p: Vec<f64> = z.iter().map(|x| (x - lse).exp()).collect();
        let mut rng = sample_rng(7, "dist", 0);
        let draws = 200_000;
        let mut count = vec![0usize; vocab];
        for _ in 0..draws {
            let (t, lp) = sample_token(&logits, temperature, 1.0, &mut rng).unwrap();
            count[t as usize] += 1;
            assert!(
                (lp as f64 - (z[t as usize] - lse)).abs() < 1e-5,
                "{t}: {lp}"
            );
        }
        let n = draws as f64;
        let mut chi2 = 0.0;
        for i in 0..vocab {
            let (e, o) = (n * p[i], count[i] as f64);
            let sd = (n * p[i] * (1.0 - p[i])).sqrt();
            assert!(
                (o - e).abs() <= 5.0 * sd + 1.0,
                "token {i}: {o} draws, {e:.1} expected"
            );
            chi2 += (o - e).powi(2) / e.max(1e-300);
        }
        assert_eq!(count[700], 0);
        // 999 degrees of freedom: mean 999, sd 44.7; 1,200 is 4.5 sd above.
        assert!(chi2 < 1200.0, "chi-square {chi2}");
    }
}

#[test]
fn greedy_and_nucleus_sampling() {
    let mut rng = sample_rng(0, "p", 0);
    let logits = [0.0f32, 3.0, 1.0, 3.0];
    assert_eq!(sample_token(&logits, 0.0, 1.0, &mut rng).unwrap(), (1, 0.0));
    // top-p 0.5 keeps only the two tied best tokens, renormalised to 1/2 each.
    for _ in 0..50 {
        let (t, lp) = sample_token(&logits, 1.0, 0.5, &mut rng).unwrap();
        assert!(t == 1 || t == 3, "{t}");
        assert!((lp - 0.5f32.ln()).abs() < 1e-6, "{lp}");
    }
    // Full distribution at temperature 2: logprob = z - logsumexp(z).
    let (t, lp) = sample_token(&logits, 2.0, 1.0, &mut rng).unwrap();
    let z: Vec<f64> = logits.iter().map(|&l| l as f64 / 2.0).collect();
    let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
    assert!((lp as f64 - (z[t as usize] - lse)).abs() < 1e-6);
    assert!(sample_token(&[f32::NAN, 0.0], 1.0, 1.0, &mut rng).is_err());
}

#[test]
fn code_is_the_fenced_block_or_prompt_plus_completion() {
    assert_eq!(
        extract_code("def f():\n", "    return 1\n"),
        "def f():\n    return 1\n"
    );
    let chat = "Here:\n```text\nno\n```\n```python\nprint(1)\n```\nbye";
    assert_eq!(extract_code("ignored", chat), "print(1)\n");
    assert_eq!(extract_code("x", "```\na = 1\n"), "a = 1\n");
    assert_eq!(unescape("\\ndef \\\\x\\q"), "\ndef \\x\\q");
}

/// A record's `logprobs` (one per token, not none) are `m`'s training-path log-probs of its
/// tokens after its prompt, at temperature 1, within 1e-4.
fn assert_training_logprobs(m: &rlcode_policy::Llama, r: &serde_json::Value, what: &str) {
    assert_logprobs(r, what, |ids| m.forward_train(ids).unwrap());
}

/// A record's `logprobs` (one per token, not none) are, within 1e-4, the log-probs at
/// temperature 1 of its tokens after its prompt under `logits` (ids `[1, T]` → `[1, T, vocab]`).
fn assert_logprobs(r: &serde_json::Value, what: &str, logits: impl Fn(&Tensor) -> Tensor) {
    let prompt: Vec<u32> = serde_json::from_value(r["prompt_tokens"].clone()).unwrap();
    let toks: Vec<u32> = serde_json::from_value(r["tokens"].clone()).unwrap();
    let lps: Vec<f32> = serde_json::from_value(r["logprobs"].clone()).unwrap();
    assert_eq!(toks.len(), lps.len());
    assert!(!toks.is_empty());
    let all: Vec<u32> = prompt.iter().chain(&toks).copied().collect();
    let n = all.len();
    let ids = Tensor::from_vec(all[..n - 1].to_vec(), (1, n - 1), &Device::Cpu).unwrap();
    let logits = logits(&ids).squeeze(0).unwrap();
    let tgt = Tensor::from_vec(all[1..].to_vec(), n - 1, &Device::Cpu).unwrap();
    let want: Vec<f32> = rlcode_policy::token_logprobs(&logits, &tgt)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, lp) in lps.iter().enumerate() {
        let w = want[prompt.len() - 1 + i];
        assert!(
            (lp - w).abs() < 1e-4,
            "token {i}: sampled {lp} vs {what} {w}"
        );
    }
}

#[test]
fn samples_have_every_field_and_match_the_training_path() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_ckpt(dir.path());
    let problems = dir.path().join("p.jsonl");
    std::fs::write(
        &problems,
        "{\"id\":\"a\",\"prompt\":\"def add(a, b):\\n\",\"tests\":[]}\n\
         {\"id\":\"b\",\"prompt\":\"def sub(a, b):\\n    \",\"tests\":[]}\n",
    )
    .unwrap();
    let a = args(&[
        "--model",
        ck.to_str().unwrap(),
        "--problems",
        problems.to_str().unwrap(),
        "-n",
        "3",
        "--seed",
        "9",
        "--max-tokens",
        "12",
        "--no-stop",
    ]);
    let (r, out) = run_to_string(&a);
    assert_eq!(r.unwrap(), ExitCode::Success);
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 6);
    assert_eq!(recs[4]["problem_id"], "b");
    assert_eq!(recs[4]["sample"], 1);
    let c = Checkpoint::load(&ck).unwrap();
    let m = c.model().unwrap();
    for r in &recs {
        for k in [
            "completion",
            "code",
            "prompt_tokens",
            "tokens",
            "logprobs",
            "temperature",
            "model",
            "seed",
            "finish_reason",
        ] {
            assert!(r.get(k).is_some(), "missing {k} in {r}");
        }
        let prompt: Vec<u32> = serde_json::from_value(r["prompt_tokens"].clone()).unwrap();
        assert_eq!(prompt[0], rlcode_policy::tokenizer::BOS_ID);
        // The recorded log-probs are those of the training path at temperature 1.
        assert_training_logprobs(&m, r, "training");
    }
    // Same seed: same bytes; another seed: other samples.
    assert_eq!(run_to_string(&a).1, out);
    let mut b = a.clone();
    b.seed = 10;
    assert_ne!(run_to_string(&b).1, out);
}

/// --weights bf16: the records' log-probs are the training path's of the model with its linear
/// weights rounded to bf16 (not of the f32 model), whatever the batch; the records say so.
/// A tiny checkpoint and two prompts in `dir`; rl-sample's arguments for 3 samples of each,
/// 10 tokens, no stop strings.
fn two_prompts(dir: &std::path::Path) -> (std::path::PathBuf, Vec<String>) {
    let ck = tiny_ckpt(dir);
    let problems = dir.join("p.jsonl");
    std::fs::write(
        &problems,
        "{\"id\":\"a\",\"prompt\":\"def add(a, b):\\n\",\"tests\":[]}\n\
         {\"id\":\"b\",\"prompt\":\"x = \",\"tests\":[]}\n",
    )
    .unwrap();
    let base = [
        "--model",
        ck.to_str().unwrap(),
        "--problems",
        problems.to_str().unwrap(),
        "-n",
        "3",
        "--seed",
        "4",
        "--max-tokens",
        "10",
        "--no-stop",
    ];
    let base = base.iter().map(|a| a.to_string()).collect();
    (ck, base)
}

/// rl-sample's output for `base` then `extra`, which must succeed.
fn run_ok(base: &[String], extra: &[&str]) -> String {
    let mut v: Vec<&str> = base.iter().map(String::as_str).collect();
    v.extend_from_slice(extra);
    let (r, out) = run_to_string(&args(&v));
    assert_eq!(r.unwrap(), ExitCode::Success);
    out
}

#[test]
fn bf16_weights_sample_the_rounded_model() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, base) = two_prompts(dir.path());
    let with = |extra: &[&str]| run_ok(&base, extra);
    let bf = with(&["--weights", "bf16"]);
    assert_eq!(with(&["--weights", "bf16", "--max-batch", "1"]), bf);
    let f32_out = with(&[]);
    assert_ne!(bf, f32_out, "rounding the weights changes the log-probs");
    let mut m = Checkpoint::load(&ck).unwrap().model().unwrap();
    m.use_bf16_weights().unwrap();
    assert!(m.bf16_weights());
    for (l, lf) in bf.lines().zip(f32_out.lines()) {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        let rf: serde_json::Value = serde_json::from_str(lf).unwrap();
        assert_eq!(r["weights"], "bf16");
        assert!(rf.get("weights").is_none(), "f32 records are unchanged");
        assert_training_logprobs(&m, &r, "rounded model");
    }
    let mut o: Vec<&str> = base.iter().map(String::as_str).collect();
    o.extend_from_slice(&["--weights", "bf16", "--backend", "openai"]);
    let e = run_to_string(&args(&o)).0.unwrap_err().to_string();
    assert!(e.contains("--weights needs --backend local"), "{e}");
}

/// `--weights bf16-dot`: the products in bf16 (weights and inputs) in decoding and in the
/// prefill alike, so the records' log-probs are the model's own inference path's (through the
/// same kernel; attention, norms and rotary in f32) within 1e-4, whatever the batch; a model
/// apart from both f32 and `--weights bf16`.
#[test]
fn bf16_products_sample_their_own_model_batch_invariantly() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, base) = two_prompts(dir.path());
    let with = |extra: &[&str]| run_ok(&base, extra);
    let dot = with(&["--weights", "bf16-dot"]);
    assert_eq!(with(&["--weights", "bf16-dot", "--max-batch", "1"]), dot);
    assert_ne!(dot, with(&["--weights", "bf16"]));
    assert_ne!(dot, with(&[]));
    let mut m = Checkpoint::load(&ck).unwrap().model().unwrap();
    m.use_bf16_products().unwrap();
    assert!(m.bf16_weights());
    for l in dot.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["weights"], "bf16-dot");
        assert_logprobs(&r, "inference path", |ids| {
            let mut cache = rlcode_policy::KvCache::new(&m.cfg, 1, ids.dim(1).unwrap()).unwrap();
            m.forward_infer(ids, &mut cache, false).unwrap()
        });
    }
}

#[test]
fn stops_and_bad_problems() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_ckpt(dir.path());
    let problems = dir.path().join("p.jsonl");
    std::fs::write(
        &problems,
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"prompt\":\"no id\"}\nnot json\n{\"id\":\"a\",\"prompt\":\"dup\"}\n",
    )
    .unwrap();
    let base = [
        "--model",
        ck.to_str().unwrap(),
        "--problems",
        problems.to_str().unwrap(),
        "--max-tokens",
        "40",
        "--temperature",
        "0",
    ];
    let (r, before) = run_to_string(&args(&base));
    let e = r.unwrap_err().to_string();
    assert!(e.ends_with("p.jsonl:2: missing field \"id\""), "{e}");
    // The problem before the bad record is sampled and written, whatever the batch.
    assert_eq!(before.lines().count(), 1, "{before}");
    let mut kg = base.to_vec();
    kg.push("--keep-going");
    let (r, out) = run_to_string(&args(&kg));
    assert_eq!(r.unwrap(), ExitCode::Skipped);
    assert_eq!(out.lines().count(), 1);
    // A stop string cuts the completion text; the tokens keep what was generated.
    let rec: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let text = rec["completion"].as_str().unwrap().to_string();
    let toks = rec["tokens"].as_array().unwrap().len();
    if text.len() > 2 {
        let stop: String = text.chars().skip(1).take(1).collect();
        let mut st = kg.clone();
        st.extend(["--stop", &stop]);
        let (_, out2) = run_to_string(&args(&st));
        let rec2: serde_json::Value = serde_json::from_str(out2.lines().next().unwrap()).unwrap();
        assert_eq!(rec2["finish_reason"], "stop");
        assert!(!rec2["completion"].as_str().unwrap().contains(&stop));
        assert!(rec2["tokens"].as_array().unwrap().len() <= toks);
    }
}

/// SmolLM2-Instruct's chat template (ChatML with a default system message), as in its
/// tokenizer_config.json.
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Add `chat_template` (and an eos_token) to a checkpoint's tokenizer_config.json.
fn add_template(dir: &std::path::Path, template: &str, eos: &str) {
    let path = dir.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["chat_template"] = template.into();
    cfg["eos_token"] = serde_json::json!({"content": eos, "special": true});
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn chatml_template_renders_as_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_ckpt(dir.path());
    add_template(&ck, CHATML, "<|im_end|>");
    let t = chat::ChatTemplate::load(&ck).unwrap();
    assert_eq!(t.bos_token.as_deref(), Some("<|bos|>"));
    assert_eq!(t.eos_token.as_deref(), Some("<|im_end|>"));
    let prompt = "def add(a, b):\n    \"\"\"Sum.\"\"\"\n";
    let msgs = chat::messages(None, chat::DEFAULT_USER_MESSAGE, prompt);
    assert_eq!(
        t.render(&msgs).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nComplete the following Python function. Answer with \
         the whole function in one ```python code block.\n\n```python\ndef add(a, b):\n    \
         \"\"\"Sum.\"\"\"\n```<|im_end|>\n<|im_start|>assistant\n"
    );
    // A system prompt replaces the default one; a prompt without a final newline gets one.
    let msgs = chat::messages(Some("Be brief."), "Q: {prompt}", "x = 1");
    assert_eq!(
        t.render(&msgs).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ: x = 1\n<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn templates_get_hf_variables_functions_and_whitespace_control() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_ckpt(dir.path());
    // bos_token, raise_exception, Python's str.strip(), trim_blocks / lstrip_blocks.
    let tmpl = "{{ bos_token }}\n{% for m in messages %}\n    {% if m['role'] == 'system' %}\n{{ raise_exception('no system role: ' + m['content']) }}\n    {% endif %}\n[{{ m['content'].strip() }}]{{ eos_token }}\n{% endfor %}\n{% if add_generation_prompt %}>{% endif %}";
    add_template(&ck, tmpl, "<|eos|>");
    let t = chat::ChatTemplate::load(&ck).unwrap();
    let user = chat::messages(None, "  {prompt}  ", "p");
    assert_eq!(t.render(&user).unwrap(), "<|bos|>\n[p]<|eos|>\n>");
    let sys = chat::messages(Some("S"), "{prompt}", "p");
    let e = format!("{:#}", t.render(&sys).unwrap_err());
    assert!(e.contains("no system role: S"), "{e}");
    assert!(e.contains("tokenizer_config.json"), "{e}");
    // A syntax error is reported when loading, with the file.
    add_template(&ck, "{% for m in messages %}", "<|eos|>");
    let e = format!("{:#}", chat::ChatTemplate::load(&ck).unwrap_err());
    assert!(e.contains("tokenizer_config.json: chat template"), "{e}");
}

#[test]
fn a_checkpoint_without_a_chat_template_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_ckpt(dir.path());
    let problems = dir.path().join("p.jsonl");
    std::fs::write(&problems, "{\"id\":\"a\",\"prompt\":\"x\"}\n").unwrap();
    let a = args(&[
        "--model",
        ck.to_str().unwrap(),
        "--problems",
        problems.to_str().unwrap(),
        "--chat-template",
    ]);
    let e = format!("{:#}", run_to_string(&a).0.unwrap_err());
    assert!(e.contains("has no chat template"), "{e}");
    assert!(e.contains(ck.to_str().unwrap()), "{e}");
    // --system-prompt without chat prompts is a usage error.
    let a = args(&[
        "--model",
        ck.to_str().unwrap(),
        "--problems",
        problems.to_str().unwrap(),
        "--system-prompt",
        "hi",
    ]);
    let e = run_to_string(&a).0.unwrap_err().to_string();
    assert!(e.contains("--system-prompt needs chat prompts"), "{e}");
}

#[test]
fn chat_samples_tokenize_the_templated_prompt_and_stop_at_end_of_turn() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_ckpt(dir.path());
    add_template(&ck, CHATML, "<|eos|>");
    let problems = dir.path().join("p.jsonl");
    std::fs::write(
        &problems,
        "{\"id\":\"a\",\"prompt\":\"def add(a, b):\\n\"}\n",
    )
    .unwrap();
    let a = args(&[
        "--model",
        ck.to_str().unwrap(),
        "--problems",
        problems.to_str().unwrap(),
        "--chat-template",
        "--system-prompt",
        "You write Python.",
        "-n",
        "2",
        "--seed",
        "3",
        "--max-tokens",
        "30",
    ]);
    let (r, out) = run_to_string(&a);
    assert_eq!(r.unwrap(), ExitCode::Success);
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    let rendered = "<|im_start|>system\nYou write Python.<|im_end|>\n<|im_start|>user\n\
        Complete the following Python function. Answer with the whole function in one ```python \
        code block.\n\n```python\ndef add(a, b):\n```<|im_end|>\n<|im_start|>assistant\n";
    // Byte-level tokenizer: the ids are the bytes; no BOS added (the template has none).
    let want: Vec<u32> = rendered.bytes().map(u32::from).collect();
    for r in &recs {
        let prompt: Vec<u32> = serde_json::from_value(r["prompt_tokens"].clone()).unwrap();
        assert_eq!(prompt, want);
        let text = r["completion"].as_str().unwrap();
        assert_eq!(
            r["code"].as_str().unwrap(),
            chat::extract_chat_code("def add(a, b):\n", text)
        );
        // No default stop strings in chat mode: only EOS or the length ends a completion.
        let reason = r["finish_reason"].as_str().unwrap();
        assert!(reason == "eos" || reason == "length", "{reason}");
        if reason == "length" {
            assert_eq!(r["tokens"].as_array().unwrap().len(), 30);
        }
    }
}

#[test]
fn chat_code_extraction_rules() {
    use chat::extract_chat_code as x;
    let prompt =
        "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n";
    // The whole function in a ```python block; the prompt's missing import goes first.
    let answer =
        "Sure!\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```\nDone.";
    assert_eq!(
        x(prompt, answer),
        "from typing import List\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n"
    );
    // An import the block has is not repeated.
    let answer = "```py\nfrom typing import List\ndef total(xs):\n    return sum(xs)\n```";
    assert_eq!(
        x(prompt, answer),
        "from typing import List\ndef total(xs):\n    return sum(xs)\n"
    );
    // A block holding only the body follows the prompt.
    let answer = "```python\n    return sum(xs)\n```";
    assert_eq!(x(prompt, answer), format!("{prompt}    return sum(xs)\n"));
    // Unterminated (cut at --max-tokens): the block runs to the end.
    let answer = "```python\ndef total(xs):\n    s = 0\n    for";
    assert_eq!(
        x("def total(xs):\n", answer),
        "def total(xs):\n    s = 0\n    for"
    );
    // Plain ``` block when there is no python one; a ```text block is passed over; the first
    // python block wins over later ones.
    assert_eq!(x("", "```text\nno\n```\n```\na = 1\n```"), "a = 1\n");
    assert_eq!(
        x(
            "",
            "```\nuntagged\n```\n```python3\nb = 2\n```\n```python\nc = 3\n```"
        ),
        "b = 2\n"
    );
    // Tags are case-insensitive; CRLF line ends are fine.
    assert_eq!(x("", "```Python\r\nd = 4\r\n```"), "d = 4\r\n");
    // No block at all: the answer itself is the program (after the prompt when indented).
    assert_eq!(x("", "e = 5\n"), "e = 5\n");
    assert_eq!(x("def f():", "    return 1\n"), "def f():\n    return 1\n");
    assert_eq!(x("def f():\n", ""), "");
}

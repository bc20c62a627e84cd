use super::*;
use clap::Parser;
use serde_json::json;

fn tiny(dir: &Path) -> PathBuf {
    let out = dir.join("ckpt0");
    rlcode_policy::init_checkpoint(Preset::Tiny, 7, &out).unwrap();
    out
}

fn cli(args: &[&str]) -> Cli {
    let mut v = vec!["rl-update"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap()
}

fn run_cli(args: &[&str]) -> (Result<ExitCode>, Vec<serde_json::Value>) {
    let mut out = Vec::new();
    let r = run(&cli(args), &mut out);
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, lines)
}

/// Log-probability of the completion `tokens` after `prompt` under a checkpoint.
fn seq_logprob(dir: &Path, prompt: &[u32], tokens: &[u32]) -> f64 {
    let ck = Checkpoint::load(dir).unwrap();
    let m = ck.model().unwrap();
    let all: Vec<u32> = prompt.iter().chain(tokens).copied().collect();
    let n = all.len();
    let ids = Tensor::from_vec(all[..n - 1].to_vec(), (1, n - 1), &Device::Cpu).unwrap();
    let logits = m.forward_train(&ids).unwrap().squeeze(0).unwrap();
    let tgt = Tensor::from_vec(all[1..].to_vec(), n - 1, &Device::Cpu).unwrap();
    let lp: Vec<f32> = rlcode_policy::token_logprobs(&logits, &tgt)
        .unwrap()
        .to_vec1()
        .unwrap();
    lp[prompt.len() - 1..].iter().map(|&x| x as f64).sum()
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

fn record(pid: &str, prompt: &[u32], tokens: &[u32], reward: Value) -> String {
    json!({"problem_id": pid, "sample": 0, "prompt_tokens": prompt, "tokens": tokens,
           "reward": reward, "temperature": 1.0})
    .to_string()
}

#[test]
fn positive_advantage_raises_log_probability_and_negative_lowers_it() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let prompt = [vec![rlcode_policy::tokenizer::BOS_ID], bytes("def f(x):\n")].concat();
    let good = bytes("    return x\n");
    let bad = bytes("    pass\n");
    for algo in ["grpo", "rloo"] {
        let input = dir.path().join(format!("scored-{algo}.jsonl"));
        let text = [
            record("p", &prompt, &good, json!(1.0)),
            record("p", &prompt, &bad, json!(0.0)),
            // All-equal group: no signal, counted and skipped.
            record("q", &prompt, &good, json!(0.5)),
            record("q", &prompt, &bad, json!(0.5)),
            // No reward: left out and counted.
            record("r", &prompt, &bad, Value::Null),
        ]
        .join("\n");
        std::fs::write(&input, text).unwrap();
        let out = dir.path().join(format!("ckpt1-{algo}"));
        let (r, lines) = run_cli(&[
            "--model",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--algo",
            algo,
            "--lr",
            "1e-3",
            input.to_str().unwrap(),
        ]);
        assert_eq!(r.unwrap(), ExitCode::Success);
        assert_eq!(lines.len(), 1);
        let m = &lines[0];
        assert_eq!(m["step"], 1);
        assert_eq!(m["updated"], true);
        assert_eq!(m["groups"], 2);
        assert_eq!(m["zero_advantage_groups"], 1);
        assert_eq!(m["skipped_null_rewards"], 1);
        assert_eq!(m["samples"], 4);
        assert_eq!(m["tokens"], good.len() + bad.len());
        assert_eq!(m["clip_frac"], 0.0);
        assert!(m["grad_norm"].as_f64().unwrap() > 0.0);
        for k in ["loss", "kl", "mean_abs_advantage", "seconds"] {
            assert!(m.get(k).is_some(), "{k}");
        }
        let before_good = seq_logprob(&ck, &prompt, &good);
        let before_bad = seq_logprob(&ck, &prompt, &bad);
        let after_good = seq_logprob(&out, &prompt, &good);
        let after_bad = seq_logprob(&out, &prompt, &bad);
        assert!(
            after_good > before_good,
            "{algo}: {before_good} -> {after_good}"
        );
        assert!(
            after_bad < before_bad,
            "{algo}: {before_bad} -> {after_bad}"
        );
        // The optimizer state travels with the checkpoint, and the next step resumes it.
        assert!(out.join("optimizer.safetensors").exists());
        let st: optim::TrainerState =
            serde_json::from_slice(&std::fs::read(out.join("trainer_state.json")).unwrap())
                .unwrap();
        assert_eq!(st.step, 1);
        let out2 = dir.path().join(format!("ckpt2-{algo}"));
        let (r, lines) = run_cli(&[
            "--model",
            out.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
            "--algo",
            algo,
            "--ref-model",
            ck.to_str().unwrap(),
            "--kl-coef",
            "0.1",
            "--loss-agg",
            "seq-mean-token-sum-norm",
            "--micro-batch",
            "1",
            input.to_str().unwrap(),
        ]);
        assert_eq!(r.unwrap(), ExitCode::Success);
        assert_eq!(lines[0]["step"], 2);
        assert!(lines[0]["kl"].as_f64().unwrap() > 0.0);
        // Loads in the same code path as any checkpoint.
        Checkpoint::load(&out2).unwrap().model().unwrap();
    }
}

#[test]
fn bad_records_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let input = dir.path().join("bad.jsonl");
    let ok = record("p", &[256, 1], &[2, 3], json!(1.0));
    let no_tokens = json!({"problem_id": "p", "prompt_tokens": [256], "reward": 0.0}).to_string();
    let no_reward = json!({"problem_id": "p", "prompt_tokens": [256], "tokens": [1]}).to_string();
    std::fs::write(
        &input,
        [ok.as_str(), &no_tokens, &no_reward, "{oops"].join("\n"),
    )
    .unwrap();
    let out = dir.path().join("o");
    let args = [
        "--model",
        ck.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        input.to_str().unwrap(),
    ];
    let (r, lines) = run_cli(&args);
    let e = r.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("bad.jsonl:2: missing field \"tokens\""),
        "{e}"
    );
    assert!(lines.is_empty());
    assert!(!out.exists());
    let mut kg = args.to_vec();
    kg.push("--keep-going");
    let (r, lines) = run_cli(&kg);
    assert_eq!(r.unwrap(), ExitCode::Skipped);
    assert_eq!(lines[0]["skipped_records"], 3);
    assert_eq!(lines[0]["updated"], false);
    assert!(out.join("model.safetensors").exists());
    // SFT needs "code".
    let (r, _) = run_cli(&[
        "--model",
        ck.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--algo",
        "sft",
        input.to_str().unwrap(),
    ]);
    assert!(
        r.unwrap_err()
            .to_string()
            .ends_with("bad.jsonl:1: missing field \"code\"")
    );
}

#[test]
fn sft_warm_start_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    let (r, lines) = run_cli(&[
        "init",
        "--config",
        "tiny",
        "--seed",
        "1",
        "--out",
        init.to_str().unwrap(),
    ]);
    assert_eq!(r.unwrap(), ExitCode::Success);
    assert!(lines[0]["params"].as_u64().unwrap() > 1_000_000);
    let corpus = dir.path().join("corpus.jsonl");
    let text: Vec<String> = (0..6)
        .map(|i| json!({"code": format!("def add{i}(a, b):\n    return a + b\n")}).to_string())
        .collect();
    std::fs::write(&corpus, text.join("\n")).unwrap();
    let out = dir.path().join("sft");
    let (r, lines) = run_cli(&[
        "--model",
        init.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--algo",
        "sft",
        "--steps",
        "12",
        "--batch-size",
        "3",
        "--micro-batch",
        "2",
        "--log-every",
        "4",
        corpus.to_str().unwrap(),
    ]);
    assert_eq!(r.unwrap(), ExitCode::Success);
    // Steps 4 and 8, then the final line.
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["step"], 12);
    assert_eq!(lines[2]["algo"], "sft");
    let first = lines[0]["loss"].as_f64().unwrap();
    let last = lines[1]["loss"].as_f64().unwrap();
    assert!(last < first, "{first} -> {last}");
    assert!(first < (259f64).ln() + 0.5);
    let code = bytes("    return a + b\n");
    let prompt = [
        vec![rlcode_policy::tokenizer::BOS_ID],
        bytes("def add1(a, b):\n"),
    ]
    .concat();
    assert!(seq_logprob(&out, &prompt, &code) > seq_logprob(&init, &prompt, &code));
}

#[test]
fn loss_weights_follow_the_aggregation() {
    let ex = |n: usize| Example {
        tokens: vec![0; n + 1],
        start: 1,
        old_logprobs: None,
        advantage: 1.0,
        temperature: 1.0,
    };
    let exs = [ex(2), ex(6)];
    assert_eq!(
        token_weights(&exs, LossAgg::TokenMean, None),
        vec![0.125, 0.125]
    );
    assert_eq!(
        token_weights(&exs, LossAgg::SeqMeanTokenMean, None),
        vec![0.25, 1.0 / 12.0]
    );
    assert_eq!(
        token_weights(&exs, LossAgg::SeqMeanTokenSumNorm, None),
        vec![1.0 / 12.0, 1.0 / 12.0]
    );
    assert_eq!(
        token_weights(&exs, LossAgg::SeqMeanTokenSumNorm, Some(10)),
        vec![0.05, 0.05]
    );
}

#[test]
fn cosine_schedule_warms_up_then_decays_to_a_tenth() {
    use crate::{LrSchedule, scheduled_lr};
    // 4 warm-up steps, then steps 4..=12 decay: step 8 is half way, step 12 the last.
    let lr = |d| scheduled_lr(1.0, LrSchedule::Cosine, 4, d, 13);
    assert_eq!(lr(0), 0.25);
    assert_eq!(lr(3), 1.0);
    assert!((lr(4) - 1.0).abs() < 1e-12);
    assert!((lr(8) - 0.55).abs() < 1e-12, "{}", lr(8));
    assert!((lr(12) - 0.1).abs() < 1e-12);
    assert!(lr(5) < lr(4) && lr(11) > lr(12));
    assert_eq!(scheduled_lr(0.5, LrSchedule::Constant, 4, 0, 14), 0.5);
}

/// A scored record with a verdict of `passed` of `total` tests and the pass rate as reward.
fn verdict_record(
    pid: &str,
    prompt: &[u32],
    tokens: &[u32],
    passed: usize,
    total: usize,
) -> String {
    let tests: Vec<Value> = (0..total)
        .map(|i| json!({"status": if i < passed { "pass" } else { "fail" }}))
        .collect();
    json!({"problem_id": pid, "prompt_tokens": prompt, "tokens": tokens, "temperature": 1.0,
           "reward": passed as f64 / total as f64, "reward_name": "pass_rate",
           "verdict": {"passed": passed, "total": total, "tests": tests, "runtime": "r"}})
    .to_string()
}

#[test]
fn diagnostics_leave_the_update_alone_and_measure_the_real_change() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let prompt = [vec![rlcode_policy::tokenizer::BOS_ID], bytes("def f(x):\n")].concat();
    let full = bytes("    return x\n");
    let partial = bytes("    return 0\n");
    let zero = bytes("    pass\n");
    let text = [
        verdict_record("a", &prompt, &full, 3, 3),
        verdict_record("a", &prompt, &partial, 1, 3),
        verdict_record("a", &prompt, &zero, 0, 3),
        verdict_record("b", &prompt, &partial, 1, 2),
        verdict_record("b", &prompt, &zero, 0, 2),
        // An empty completion: no gradient, log π 0 before and after.
        verdict_record("b", &prompt, &[], 0, 2),
        verdict_record("c", &prompt, &zero, 0, 2),
        verdict_record("c", &prompt, &partial, 0, 2),
    ]
    .join("\n");
    let input = dir.path().join("scored.jsonl");
    std::fs::write(&input, text).unwrap();
    let step = |name: &str, extra: &[&str]| -> (PathBuf, Value) {
        let out = dir.path().join(name);
        let mut args = vec![
            "--model",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--lr",
            "1e-3",
            "--micro-batch",
            "2",
        ];
        args.extend_from_slice(extra);
        args.push(input.to_str().unwrap());
        let (r, lines) = run_cli(&args);
        assert_eq!(r.unwrap(), ExitCode::Success);
        (out, lines.into_iter().next().unwrap())
    };
    let (plain, m0) = step("plain", &[]);
    let (exact, m1) = step("exact", &["--diagnostics"]);
    let (sketch, m2) = step(
        "sketch",
        &[
            "--diagnostics",
            "--diagnostics-dim",
            "16384",
            "--diagnostics-seed",
            "5",
        ],
    );
    // The same update, bit for bit, with or without diagnostics.
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let want = std::fs::read(plain.join(f)).unwrap();
        assert!(want == std::fs::read(exact.join(f)).unwrap(), "{f}");
        assert!(want == std::fs::read(sketch.join(f)).unwrap(), "{f}");
    }
    for k in ["loss", "grad_norm", "tokens", "samples"] {
        assert_eq!(m0[k], m1[k], "{k}");
    }
    assert!(m0.get("diagnostics").is_none() && m0.get("cancellation").is_none());
    assert_eq!(m1["diagnostics"]["method"], "exact");
    assert_eq!(m2["diagnostics"]["method"], "sketch");
    assert_eq!(m2["diagnostics"]["dim"], 16384);
    // Groups a and b have a signal, c (all rewards 0) has none.
    assert!((m1["reward_density"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let groups = m1["diagnostics"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(m1["diagnostics"]["gradients"], 5);
    let (a, b, c) = (&groups[0], &groups[1], &groups[2]);
    assert_eq!(
        (&a["full_pass"], &a["partial_pass"], &a["zero_pass"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert!(
        b["alignment"].is_null() && b["partial_share"].is_null(),
        "{b}"
    );
    assert!(b["delta_logprob_full"].is_null());
    assert_eq!(b["zero_pass"], 2);
    assert_eq!(c["nonzero_advantage"], false);
    assert!(c["cancellation"].is_null(), "{c}");
    // The change of log π, as recomputed independently from the two checkpoints.
    let delta =
        |tokens: &[u32]| seq_logprob(&exact, &prompt, tokens) - seq_logprob(&ck, &prompt, tokens);
    let close = |what: &str, x: &Value, want: f64| {
        let x = x.as_f64().unwrap();
        assert!(
            (x - want).abs() < 2e-3 * (1.0 + want.abs()),
            "{what}: {x} vs {want}"
        );
    };
    close("a full", &a["delta_logprob_full"], delta(&full));
    close("a partial", &a["delta_logprob_partial"], delta(&partial));
    close("a zero", &a["delta_logprob_zero"], delta(&zero));
    // Both samples of c passed no test: the mean of their changes.
    let c_zero = (delta(&zero) + delta(&partial)) / 2.0;
    close("c zero", &c["delta_logprob_zero"], c_zero);
    // In b, the empty completion's change is 0.
    close("b zero", &b["delta_logprob_zero"], delta(&zero) / 2.0);
    // The full-pass sample had the largest advantage: its probability went up. (Nothing as
    // simple holds for the others: AdamW's first step moves every weight by about lr, and the
    // samples share the prompt and most of their tokens across groups.)
    assert!(a["delta_logprob_full"].as_f64().unwrap() > 0.0);
    // The sketch agrees with the exact values.
    let g2 = m2["diagnostics"]["groups"].as_array().unwrap();
    for (ge, gs) in groups.iter().zip(g2) {
        for k in [
            "cancellation",
            "cancellation_partial",
            "alignment",
            "partial_share",
        ] {
            match (ge[k].as_f64(), gs[k].as_f64()) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 0.05, "{k}: {x} vs {y}"),
                (x, y) => assert_eq!(x, y, "{k}"),
            }
        }
        for k in [
            "delta_logprob_full",
            "delta_logprob_partial",
            "delta_logprob_zero",
        ] {
            assert_eq!(ge[k], gs[k], "{k}: exact in both");
        }
    }
    eprintln!("exact {m1}\nsketch {m2}");
}

#[test]
fn diagnostics_usage() {
    let parse = |args: &[&str]| {
        let mut v = vec!["rl-update", "--model", "m", "--out", "o"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
    };
    assert!(parse(&["--diagnostics-dim", "8"]).is_err());
    assert!(parse(&["--diagnostics", "--diagnostics-seed", "1"]).is_err());
    assert!(
        parse(&[
            "--diagnostics",
            "--diagnostics-dim",
            "8",
            "--diagnostics-seed",
            "1"
        ])
        .is_ok()
    );
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let out = dir.path().join("o");
    for extra in [&["--algo", "sft"][..], &["--diagnostics-dim", "0"][..]] {
        let mut args = vec![
            "--model",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--diagnostics",
        ];
        args.extend_from_slice(extra);
        args.push("/dev/null");
        let (r, _) = run_cli(&args);
        assert!(matches!(r, Err(Error::Usage(_))), "{extra:?}");
    }
}

/// RL examples of different lengths and temperatures, with old log-probs that make some
/// tokens clip.
fn rl_examples() -> Vec<Example> {
    let prompt = [vec![rlcode_policy::tokenizer::BOS_ID], bytes("def f(x):\n")].concat();
    let bodies = [
        "    return x\n",
        "    pass\n",
        "    return x + 1\n",
        "    y = x * 2\n    return y\n",
        "    return -x\n",
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let c = bytes(b);
            let mut tokens = prompt.clone();
            tokens.extend(&c);
            Example {
                old_logprobs: Some(
                    (0..c.len())
                        .map(|j| -5.5 + 0.3 * ((i + j) % 5) as f32)
                        .collect(),
                ),
                tokens,
                start: prompt.len(),
                advantage: [1.0, -1.0, 0.5, -0.5, 0.25][i],
                temperature: [1.0, 0.7, 1.0, 1.3, 1.0][i],
            }
        })
        .collect()
}

fn grads_of(
    tr: &Trainable,
    ex: &[Example],
    micro_batch: usize,
    chunk: LogitsChunk,
    reference: Option<&Llama>,
) -> (PassStats, HashMap<String, Vec<f32>>) {
    let spec = LossSpec {
        rl: true,
        clip_low: 0.2,
        clip_high: 0.2,
        kl_coef: 0.1,
        reference,
        weights: token_weights(ex, LossAgg::SeqMeanTokenMean, None),
        micro_batch,
        split_small_batches: false,
        logits_chunk: chunk,
    };
    let mut grads = HashMap::new();
    let st = accumulate(tr, ex, &spec, &mut grads).unwrap();
    let flat = grads
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    (st, flat)
}

fn assert_grads_close(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (k, x) in a {
        let y = &b[k];
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-8);
        let worst = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{what}: {k} differs by {worst} (max |g| {scale})"
        );
    }
}

/// A tiny model to train, a reference model with other weights, and the RL examples.
fn grad_fixture() -> (Trainable, Llama, Vec<Example>) {
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpoint::load(&tiny(dir.path())).unwrap();
    let tr = Trainable::new(&ck.cfg, &ck.tensors).unwrap();
    let reference = Llama::from_tensors(
        &ck.cfg,
        &rlcode_policy::model::init_tensors(&ck.cfg, 9).unwrap(),
    )
    .unwrap();
    (tr, reference, rl_examples())
}

#[test]
fn micro_batches_and_logit_chunks_give_the_full_batch_gradient() {
    let (tr, reference, ex) = grad_fixture();
    let (st0, g0) = grads_of(&tr, &ex, 8, LogitsChunk::Off, Some(&reference));
    assert!(
        st0.clipped > 0 && st0.clipped < st0.tokens,
        "some tokens clip: {st0:?}"
    );
    assert!(st0.kl_sum > 0.0);
    assert_eq!(g0.len(), tr.params.len());
    for (mb, chunk) in [
        (1, LogitsChunk::Off),
        (2, LogitsChunk::Off),
        (8, LogitsChunk::Rows(7)),
        (2, LogitsChunk::Rows(1)),
    ] {
        let (st, g) = grads_of(&tr, &ex, mb, chunk, Some(&reference));
        let what = format!("micro-batch {mb}, {chunk:?}");
        assert_eq!(st.tokens, st0.tokens, "{what}");
        assert_eq!(st.clipped, st0.clipped, "{what}");
        assert!(
            (st.loss - st0.loss).abs() < 1e-5,
            "{what}: {} vs {}",
            st.loss,
            st0.loss
        );
        assert!((st.kl_sum - st0.kl_sum).abs() < 1e-3, "{what}");
        assert_grads_close(&g0, &g, &what);
    }
    // Auto does not chunk the byte-level vocabulary: bit for bit the unchunked pass.
    let (_, g) = grads_of(&tr, &ex, 8, LogitsChunk::Auto, Some(&reference));
    assert_eq!(g, g0);
}

#[test]
fn parallel_micro_batches_are_bit_for_bit_the_sequential_pass() {
    let (tr, reference, ex) = grad_fixture();
    let in_pool = |threads: usize, mb: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| grads_of(&tr, &ex, mb, LogitsChunk::Off, Some(&reference)))
    };
    // 5 examples in micro-batches of 1 and 2: waves of 1, 2 and 3 micro-batches, the last
    // wave short.
    for mb in [1, 2] {
        let (st1, g1) = in_pool(1, mb);
        for threads in [2, 3] {
            let (st, g) = in_pool(threads, mb);
            let what = format!("micro-batch {mb}, {threads} threads");
            assert_eq!(st.loss.to_bits(), st1.loss.to_bits(), "{what}");
            assert_eq!(st.kl_sum.to_bits(), st1.kl_sum.to_bits(), "{what}");
            assert_eq!((st.tokens, st.clipped), (st1.tokens, st1.clipped), "{what}");
            assert!(g == g1, "{what}: gradients differ");
        }
    }
}

#[test]
fn lora_trains_an_adapter_continues_it_and_merges_into_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let prompt = [vec![rlcode_policy::tokenizer::BOS_ID], bytes("def f(x):\n")].concat();
    let good = bytes("    return x\n");
    let bad = bytes("    pass\n");
    let input = dir.path().join("scored.jsonl");
    let text = [
        record("p", &prompt, &good, json!(1.0)),
        record("p", &prompt, &bad, json!(0.0)),
    ]
    .join("\n");
    std::fs::write(&input, text).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let a1 = dir.path().join("adapter1");
    let (r, lines) = run_cli(&[
        "--model",
        &s(&ck),
        "--out",
        &s(&a1),
        "--lr",
        "1e-2",
        "--lora-rank",
        "4",
        "--lora-targets",
        "q_proj,v_proj,down_proj",
        "--logits-chunk",
        "5",
        &s(&input),
    ]);
    assert_eq!(r.unwrap(), ExitCode::Success);
    assert_eq!(lines[0]["step"], 1);
    assert_eq!(lines[0]["updated"], true);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a1.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(
        cfg["target_modules"],
        json!(["q_proj", "v_proj", "down_proj"])
    );
    assert_eq!(cfg["base_model_name_or_path"], s(&ck));
    let ts =
        candle_core::safetensors::load(a1.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let layers = LlamaConfig::load(&ck.join("config.json"))
        .unwrap()
        .num_hidden_layers;
    assert_eq!(ts.len(), 2 * 3 * layers);
    assert!(ts.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert!(ts.contains_key("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"));
    assert!(a1.join("optimizer.safetensors").exists());
    assert!(
        !a1.join("model.safetensors").exists(),
        "the base is not copied"
    );
    // The base checkpoint is untouched; the merged one moves the right way.
    let m1 = dir.path().join("merged1");
    let (r, lines) = run_cli(&[
        "merge-lora",
        "--model",
        &s(&ck),
        "--adapter",
        &s(&a1),
        "--out",
        &s(&m1),
    ]);
    assert_eq!(r.unwrap(), ExitCode::Success);
    assert_eq!(lines[0]["merged_modules"], 3 * layers);
    let before = seq_logprob(&ck, &prompt, &good) - seq_logprob(&ck, &prompt, &bad);
    let after1 = seq_logprob(&m1, &prompt, &good) - seq_logprob(&m1, &prompt, &bad);
    assert!(after1 > before, "{before} -> {after1}");
    // Continue the adapter: step 2, its settings and optimizer state carried over.
    let a2 = dir.path().join("adapter2");
    let (r, lines) = run_cli(&[
        "--model",
        &s(&ck),
        "--adapter",
        &s(&a1),
        "--out",
        &s(&a2),
        "--lr",
        "1e-2",
        "--micro-batch",
        "1",
        &s(&input),
    ]);
    assert_eq!(r.unwrap(), ExitCode::Success);
    assert_eq!(lines[0]["step"], 2);
    let m2 = dir.path().join("merged2");
    run_cli(&[
        "merge-lora",
        "--model",
        &s(&ck),
        "--adapter",
        &s(&a2),
        "--out",
        &s(&m2),
    ])
    .0
    .unwrap();
    let after2 = seq_logprob(&m2, &prompt, &good) - seq_logprob(&m2, &prompt, &bad);
    assert!(after2 > after1, "{after1} -> {after2}");
    // Settings that contradict the adapter, and LoRA flags without LoRA, are usage errors.
    for bad_args in [
        &["--adapter", &s(&a1), "--lora-rank", "8"][..],
        &["--adapter", &s(&a1), "--lora-targets", "q_proj"][..],
        &["--lora-alpha", "4"][..],
        &["--lora-rank", "4", "--lora-targets", "lm_head"][..],
        &["--lora-rank", "0"][..],
    ] {
        let out = s(&dir.path().join("x"));
        let mut args = vec!["--model", ck.to_str().unwrap(), "--out", &out];
        args.extend_from_slice(bad_args);
        args.push(input.to_str().unwrap());
        let (r, _) = run_cli(&args);
        assert!(matches!(r, Err(Error::Usage(_))), "{bad_args:?}: {r:?}");
    }
    // A missing adapter names its path.
    let missing = s(&dir.path().join("nope"));
    let (r, _) = run_cli(&[
        "merge-lora",
        "--model",
        &s(&ck),
        "--adapter",
        &missing,
        "--out",
        &s(&m2),
    ]);
    let e = format!("{:#}", anyhow::Error::from(r.unwrap_err()));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn a_baseline_floor_from_the_records_sets_the_advantages() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let prompt = [vec![rlcode_policy::tokenizer::BOS_ID], bytes("def f(x):\n")].concat();
    let floored = |r: f64, floor: Option<f64>| {
        let mut v: Value =
            serde_json::from_str(&record("p", &prompt, &bytes("    return x\n"), json!(r)))
                .unwrap();
        if let Some(f) = floor {
            v["baseline_floor"] = json!(f);
        }
        v.to_string()
    };
    for (floor, want) in [(None, 0.15), (Some(1.0), 0.35)] {
        let input = dir.path().join("scored.jsonl");
        std::fs::write(
            &input,
            [floored(0.8, floor), floored(0.5, floor)].join("\n"),
        )
        .unwrap();
        let out = dir.path().join("ckpt1");
        let (r, lines) = run_cli(&[
            "--model",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-std-norm",
            input.to_str().unwrap(),
        ]);
        assert_eq!(r.unwrap(), ExitCode::Success);
        let got = lines[0]["mean_abs_advantage"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "floor {floor:?}: {got}");
    }
    // A baseline_floor that is not a number is an error naming the field.
    let input = dir.path().join("bad.jsonl");
    let mut v: Value = serde_json::from_str(&floored(0.5, None)).unwrap();
    v["baseline_floor"] = json!("high");
    std::fs::write(&input, v.to_string()).unwrap();
    let (r, _) = run_cli(&[
        "--model",
        ck.to_str().unwrap(),
        "--out",
        dir.path().join("ckpt2").to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("baseline_floor"), "{e}");
}

#[test]
fn ppo_epochs_take_several_steps_and_the_clip_acts() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(dir.path());
    let prompt = [vec![rlcode_policy::tokenizer::BOS_ID], bytes("def f(x):\n")].concat();
    let good = bytes("    return x\n");
    let bad = bytes("    pass\n");
    let input = dir.path().join("scored.jsonl");
    let text = [
        record("p", &prompt, &good, json!(1.0)),
        record("p", &prompt, &bad, json!(0.0)),
        record("q", &prompt, &bad, json!(1.0)),
        record("q", &prompt, &good, json!(0.0)),
    ]
    .join("\n");
    std::fs::write(&input, text).unwrap();
    let step = |extra: &[&str], out: &str| {
        let out = dir.path().join(out);
        let mut args = vec![
            "--model",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--lr",
            "1e-2",
        ];
        args.extend_from_slice(extra);
        args.push(input.to_str().unwrap());
        let (r, lines) = run_cli(&args);
        assert_eq!(r.unwrap(), ExitCode::Success);
        (out, lines.into_iter().next().unwrap())
    };
    let (one, m1) = step(&[], "one");
    assert_eq!(m1["optimizer_steps"], 1);
    assert_eq!(m1["clip_frac"], 0.0, "one on-policy step never clips");
    let (many, m) = step(&["--ppo-epochs", "4", "--mini-batches", "2"], "many");
    assert_eq!(m["optimizer_steps"], 8);
    assert_eq!(m["step"], 8);
    assert_eq!(
        m["tokens"], m1["tokens"],
        "tokens of the batch, counted once"
    );
    assert!(m["clip_frac"].as_f64().unwrap() > 0.0, "{m}");
    assert_ne!(
        std::fs::read(one.join("model.safetensors")).unwrap(),
        std::fs::read(many.join("model.safetensors")).unwrap()
    );
    // The defaults are one epoch of one mini-batch: the same bytes as giving them.
    let (same, _) = step(&["--ppo-epochs", "1", "--mini-batches", "1"], "same");
    assert_eq!(
        std::fs::read(one.join("model.safetensors")).unwrap(),
        std::fs::read(same.join("model.safetensors")).unwrap()
    );
}

/// Old log-probs: the sampler's only where it drew from the learner's distribution (top_p 1, f32
/// weights), unless --old-logprobs says otherwise.
#[test]
fn old_logprobs_follow_the_samplers_distribution() {
    let line = |top_p: Option<f64>| {
        let mut v = json!({"problem_id": "p", "reward": 1.0, "prompt_tokens": [1, 2],
            "tokens": [3, 4], "logprobs": [-0.5, -0.25]});
        if let Some(p) = top_p {
            v["top_p"] = json!(p);
        }
        Line {
            file: "t.jsonl".into(),
            line: 1,
            value: v.as_object().unwrap().clone(),
        }
    };
    let old = |l: &Line, src| {
        parse_scored(l, 10, src)
            .unwrap()
            .unwrap()
            .example
            .old_logprobs
    };
    let sampler = Some(vec![-0.5f32, -0.25]);
    for p in [None, Some(1.0)] {
        assert_eq!(old(&line(p), OldLogprobs::Auto), sampler);
        assert_eq!(old(&line(p), OldLogprobs::Learner), None);
    }
    assert_eq!(old(&line(Some(0.9)), OldLogprobs::Auto), None);
    assert_eq!(old(&line(Some(0.9)), OldLogprobs::Sampler), sampler);
    let err = parse_scored(&line(Some(1.5)), 10, OldLogprobs::Auto).unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
    // Sampled from bf16 weights: another model, so auto takes the learner's.
    let mut bf16 = line(None);
    bf16.value.insert("weights".into(), json!("bf16"));
    assert_eq!(old(&bf16, OldLogprobs::Auto), None);
    assert_eq!(old(&bf16, OldLogprobs::Sampler), sampler);
    bf16.value.insert("weights".into(), json!("f32"));
    assert_eq!(old(&bf16, OldLogprobs::Auto), sampler);
    bf16.value.insert("weights".into(), json!(16));
    let err = parse_scored(&bf16, 10, OldLogprobs::Auto).unwrap_err();
    assert!(
        err.to_string().contains("t.jsonl:1") && err.to_string().contains("weights"),
        "{err}"
    );
}

#[test]
fn convert_gguf_names_the_file_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("problems.jsonl");
    std::fs::write(&src, "{}\n").unwrap();
    let out = dir.path().join("ckpt");
    let cli = cli(&[
        "convert-gguf",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // As main_with prints it: the whole cause chain.
    let err = format!("{:#}", run(&cli, Vec::new()).unwrap_err());
    assert!(
        err.contains("problems.jsonl") && err.contains("not a GGUF file"),
        "{err}"
    );
    assert!(!out.exists());
}

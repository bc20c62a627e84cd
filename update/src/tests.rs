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

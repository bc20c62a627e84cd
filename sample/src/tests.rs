use super::*;
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
        let toks: Vec<u32> = serde_json::from_value(r["tokens"].clone()).unwrap();
        let lps: Vec<f32> = serde_json::from_value(r["logprobs"].clone()).unwrap();
        assert_eq!(prompt[0], rlcode_policy::tokenizer::BOS_ID);
        assert_eq!(toks.len(), lps.len());
        assert!(!toks.is_empty());
        // The recorded log-probs are those of the training path at temperature 1.
        let all: Vec<u32> = prompt.iter().chain(&toks).copied().collect();
        let n = all.len();
        let ids = Tensor::from_vec(all[..n - 1].to_vec(), (1, n - 1), &Device::Cpu).unwrap();
        let logits = m.forward_train(&ids).unwrap().squeeze(0).unwrap();
        let tgt = Tensor::from_vec(all[1..].to_vec(), n - 1, &Device::Cpu).unwrap();
        let want: Vec<f32> = rlcode_policy::token_logprobs(&logits, &tgt)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, lp) in lps.iter().enumerate() {
            let w = want[prompt.len() - 1 + i];
            assert!(
                (lp - w).abs() < 1e-4,
                "token {i}: sampled {lp} vs training {w}"
            );
        }
    }
    // Same seed: same bytes; another seed: other samples.
    assert_eq!(run_to_string(&a).1, out);
    let mut b = a.clone();
    b.seed = 10;
    assert_ne!(run_to_string(&b).1, out);
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
    let (r, _) = run_to_string(&args(&base));
    let e = r.unwrap_err().to_string();
    assert!(e.ends_with("p.jsonl:2: missing field \"id\""), "{e}");
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

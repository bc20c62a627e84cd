//! scripts/train-real.sh end to end on small stand-ins for its real inputs: a tiny checkpoint
//! with a ChatML template instead of SmolLM2, HumanEval problems instead of CodeI/O. Chat
//! sampling, verification, both rewards, LoRA updates, merges and evaluations must all run; the
//! outputs must be well formed; running it again resumes, and a larger --steps extends the runs.

use std::path::Path;
use std::process::{Command, Stdio};

use rlcode_tests::{bin, home, read_jsonl, run};
use serde_json::Value;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
    message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\\n' }}{% endif %}";

fn train_real(out: &Path, model: &Path, problems: &Path, steps: &str, cache: &Path) -> String {
    train_real_with(
        out,
        model,
        problems.to_str().unwrap(),
        steps,
        cache,
        &["--problems-per-step", "1", "--eval-problems", "2"],
        None,
    )
}

/// scripts/train-real.sh on the tiny model: 2 samples per problem, 24 tokens, LoRA rank 4, and
/// `extra` flags; with `data`, RLCODE_DATA.
fn train_real_with(
    out: &Path,
    model: &Path,
    problems: &str,
    steps: &str,
    cache: &Path,
    extra: &[&str],
    data: Option<&Path>,
) -> String {
    let bin_dir = bin("rl-verify").parent().expect("bin dir").to_path_buf();
    let mut cmd = Command::new("bash");
    cmd.arg(rlcode_tests::root().join("scripts/train-real.sh"))
        .args(["--out", out.to_str().unwrap()])
        .args(["--model", model.to_str().unwrap()])
        .args(["--problems", problems])
        .args(["--steps", steps, "--group-size", "2"])
        .args(["--max-tokens", "24", "--eval-samples", "2"])
        .args(["--lora-rank", "4", "--micro-batch", "2"])
        .args(extra)
        .env("RLCODE_BIN", bin_dir)
        .env("RLCODE_VERDICT_CACHE", cache)
        .stdin(Stdio::null());
    if let Some(data) = data {
        cmd.env("RLCODE_DATA", data);
    }
    let o = cmd.output().expect("run train-real.sh");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "train-real.sh failed ({:?})\n{stderr}",
        o.status
    );
    stderr
}

/// A tiny random checkpoint with a ChatML template, in `dir/tiny`.
fn tiny_model(dir: &Path) -> std::path::PathBuf {
    let model = dir.join("tiny");
    run(
        "rl-update",
        &[
            "init",
            "--config",
            "tiny",
            "--seed",
            "3",
            "--out",
            model.to_str().unwrap(),
        ],
        "",
    )
    .expect_code(0);
    let cfg = serde_json::json!({"chat_template": CHATML, "eos_token": "<|im_end|>"});
    std::fs::write(model.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    model
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
#[ignore = "study tier: scripts/test.sh runs it (cargo test --release -- --ignored)"]
fn lora_chat_loop_runs_both_rewards_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let he = home().join("data/HumanEval.jsonl.gz");
    let imported = run(
        "rl-data",
        &["import", "humaneval", he.to_str().unwrap()],
        "",
    );
    imported.expect_code(0);
    let problems = t.path().join("problems.jsonl");
    std::fs::write(&problems, &imported.stdout).unwrap();
    let out = t.path().join("run");
    let cache = t.path().join("verdicts.sqlite");

    train_real(&out, &model, &problems, "2", &cache);
    let base = read_jsonl(&out.join("eval-base.jsonl"));
    assert_eq!(base.len(), 1);
    assert_eq!(base[0]["label"], "base");
    assert_eq!(base[0]["samples"], 4);
    let run_dir = |reward: &str| out.join(format!("runs/{reward}-grpo/seed-1"));
    for reward in ["binary", "pass_rate"] {
        let d = run_dir(reward);
        let m = read_jsonl(&d.join("metrics.jsonl"));
        assert_eq!(m.len(), 2, "{reward}: one metrics line per step");
        for (i, line) in m.iter().enumerate() {
            assert_eq!(line["train_step"], i + 1);
            assert_eq!(line["reward"], reward);
            assert_eq!(line["seed"], 1);
            assert_eq!(line["samples"], 2, "{reward}: 1 problem x 2 samples");
            for k in [
                "seconds_sample",
                "seconds_verify",
                "seconds_update",
                "seconds_merge",
            ] {
                assert!(line[k].as_f64().unwrap() >= 0.0, "{reward}: {k} in {line}");
            }
            // rl-eval of the step's own samples, with the reward-hacking watch, and the
            // same samples under the lenient harness.
            assert_eq!(line["train"]["samples"], 2, "{reward}: {line}");
            let lenient = &line["lenient"];
            assert_eq!(lenient["samples"], 2, "{reward}: {line}");
            assert!(
                lenient["lenient_only_full_pass"].is_u64()
                    && lenient["tests_lenient_pass_strict_not"].is_u64(),
                "{reward}: {line}"
            );
            let watch = &line["train"]["suspicious"];
            assert!(watch["samples"].as_u64().unwrap() <= 2, "{reward}: {line}");
            for p in ["exit", "print", "introspection"] {
                assert!(
                    watch["by_pattern"][p]["samples"].is_u64(),
                    "{reward}: {line}"
                );
            }
        }
        // Every sample of the step was verified and its prompt went through the chat template.
        let v = read_jsonl(&d.join("verdicts/2.jsonl"));
        assert_eq!(v.len(), 2);
        assert!(
            v.iter()
                .all(|r| r["verdict"]["total"].as_u64().unwrap() > 0)
        );
        // The adapter in the PEFT layout, and only the last merged policy kept.
        let cfg: Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("adapter/2/adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["r"], 4);
        assert!(d.join("adapter/2/adapter_model.safetensors").is_file());
        assert!(d.join("policy/2/model.safetensors").is_file());
        assert!(!d.join("policy/1").exists());
        // The study layout: the base model's verdicts as step 0, the last policy's as step 2.
        assert_eq!(
            std::fs::read(d.join("eval/0.jsonl")).unwrap(),
            std::fs::read(out.join("eval-base.verdicts.jsonl")).unwrap()
        );
        assert_eq!(read_jsonl(&d.join("eval/2.jsonl")).len(), 4);
        let evals = read_jsonl(&d.join("eval.jsonl"));
        assert_eq!(evals.len(), 2);
        assert_eq!(
            (&evals[0]["step"], &evals[1]["step"]),
            (&0.into(), &2.into())
        );
        assert_eq!(evals[1]["label"], reward);
    }
    let summary = std::fs::read_to_string(out.join("summary.tsv")).unwrap();
    let rows: Vec<&str> = summary.lines().collect();
    assert_eq!(rows.len(), 3, "{summary}");
    assert!(rows[1].starts_with("binary\t1\t2\t") && rows[2].starts_with("pass_rate\t1\t2\t"));
    // rl-eval compare: pass_rate against binary, each against the base model.
    let cmp = std::fs::read_to_string(out.join("comparison.csv")).unwrap();
    assert!(cmp.starts_with("config,baseline,metric,"), "{cmp}");
    assert!(
        cmp.contains("\npass_rate-grpo,binary-grpo,final_pass@1,"),
        "{cmp}"
    );
    assert!(cmp.contains("\nbinary-grpo,step-0,final_pass@1,"), "{cmp}");
    assert!(out.join("comparison.md").is_file());
    let summary_csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary_csv.lines().count(), 3, "{summary_csv}");
    assert!(out.join("summary.md").is_file());

    // Again: nothing to do. With --steps 3: one more step each, from the kept adapter.
    let before = std::fs::read(run_dir("binary").join("metrics.jsonl")).unwrap();
    train_real(&out, &model, &problems, "2", &cache);
    assert_eq!(
        std::fs::read(run_dir("binary").join("metrics.jsonl")).unwrap(),
        before
    );
    train_real(&out, &model, &problems, "3", &cache);
    for reward in ["binary", "pass_rate"] {
        let m = read_jsonl(&run_dir(reward).join("metrics.jsonl"));
        assert_eq!(m.len(), 3);
        assert_eq!(m[2]["train_step"], 3);
        assert!(run_dir(reward).join("eval/3.jsonl").is_file());
    }
}

#[test]
#[ignore = "study tier: scripts/test.sh runs it (cargo test --release -- --ignored)"]
fn mix_holds_out_halves_of_the_easy_real_slices_and_reports_each_source() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    // RLCODE_DATA: HumanEval as fetched (imported by the script), and CodeI/O already imported
    // (the script's cache) from its first 100 records, to keep the test short.
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(
        home().join("data/HumanEval.jsonl.gz"),
        data.join("HumanEval.jsonl.gz"),
    )
    .unwrap();
    let head = Command::new("bash")
        .arg("-c")
        .arg("zcat \"$1\" | head -100")
        .arg("-")
        .arg(home().join("data/codeio.jsonl.gz"))
        .output()
        .unwrap();
    assert!(head.status.success());
    let codeio = run("rl-data", &["import", "codeio"], &head.stdout);
    codeio.expect_code(0);
    let codeio_file = data.join("codeio-problems.jsonl");
    std::fs::write(&codeio_file, &codeio.stdout).unwrap();
    let out = t.path().join("run");
    let cache = t.path().join("verdicts.sqlite");
    train_real_with(
        &out,
        &model,
        "mix",
        "1",
        &cache,
        &[
            "--rewards",
            "binary",
            "--problems-per-step",
            "2",
            "--eval-problems",
            "2",
            "--codeio-lines",
            "8",
        ],
        Some(&data),
    );
    assert!(data.join("humaneval-problems.jsonl").is_file());

    // What rl-data select gives on its own: the parts of each slice (1 and 8 lines, seed 7).
    let part = |file: &Path, lines: &str, part: &str| {
        let o = run(
            "rl-data",
            &[
                "select",
                "--max-solution-lines",
                lines,
                "--part",
                part,
                "--seed",
                "7",
                file.to_str().unwrap(),
            ],
            "",
        );
        o.expect_code(0);
        let rows: Vec<Value> = o
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a problem"))
            .collect();
        ids(&rows)
    };
    let he_file = data.join("humaneval-problems.jsonl");
    let held = ids(&read_jsonl(&out.join("problems-held-out.jsonl")));
    let train = ids(&read_jsonl(&out.join("problems-train.jsonl")));
    let mut want_held: Vec<String> = vec![];
    want_held.extend(held[..2].iter().cloned());
    want_held.extend(part(&he_file, "1", "held-out"));
    want_held.extend(part(&codeio_file, "8", "held-out"));
    assert_eq!(held, want_held);
    assert!(held[..2].iter().all(|id| id.starts_with("synth/")));
    let he_train = part(&he_file, "1", "train");
    let codeio_train = part(&codeio_file, "8", "train");
    assert!(he_train.len() >= 10 && !codeio_train.is_empty());
    for id in he_train.iter().chain(&codeio_train) {
        assert!(train.contains(id), "{id} is not trained on");
    }
    // Disjoint, and at least two synthetic train problems per real one.
    assert!(held.iter().all(|id| !train.contains(id)));
    let real = he_train.len() + codeio_train.len();
    assert!(
        train.len() >= 3 * real,
        "{} train, {real} real",
        train.len()
    );
    // problems.jsonl: held out first; the run's evaluations cover exactly the held-out part.
    let all = ids(&read_jsonl(&out.join("problems.jsonl")));
    assert_eq!(all.len(), held.len() + train.len());
    assert_eq!(all[..held.len()], held[..]);
    let base = &read_jsonl(&out.join("eval-base.jsonl"))[0];
    assert_eq!(base["problems"], held.len());
    let by = base["by_source"].as_object().expect("by_source");
    let keys: Vec<&String> = by.keys().collect();
    assert_eq!(keys, ["HumanEval", "codeio", "synth"]);
    assert_eq!(by["synth"]["problems"], 2);
    let d = out.join("runs/binary-grpo/seed-1");
    assert_eq!(read_jsonl(&d.join("eval/1.jsonl")).len(), 2 * held.len());
    assert!(read_jsonl(&d.join("eval.jsonl"))[1]["by_source"]["codeio"].is_object());

    // By default the mix leaves CodeI/O out; --steps 0 is the base model's evaluation alone.
    let out0 = t.path().join("run0");
    let data0 = t.path().join("data0");
    std::fs::create_dir(&data0).unwrap();
    std::fs::copy(he_file, data0.join("humaneval-problems.jsonl")).unwrap();
    train_real_with(
        &out0,
        &model,
        "mix",
        "0",
        &cache,
        &["--rewards", "binary", "--eval-problems", "2"],
        Some(&data0),
    );
    let all0 = ids(&read_jsonl(&out0.join("problems.jsonl")));
    assert!(all0.iter().all(|id| !id.starts_with("codeio/")));
    assert!(!data0.join("codeio-problems.jsonl").exists());
    let base0 = &read_jsonl(&out0.join("eval-base.jsonl"))[0];
    let keys0: Vec<&String> = base0["by_source"].as_object().unwrap().keys().collect();
    assert_eq!(keys0, ["HumanEval", "synth"]);
    let tsv = std::fs::read_to_string(out0.join("summary.tsv")).unwrap();
    assert!(
        tsv.lines().nth(1).unwrap().starts_with("binary\t1\t0\t"),
        "{tsv}"
    );
}

//! rl-eval --calibration over a run's per-step held-out verdicts (the `DIR/eval/S.jsonl` files
//! of scripts/train.sh), rl-eval plot over a results directory, and the new rl-score designs
//! through the binaries. Verdicts are written by hand: no sandbox runs here.

use rlcode_tests::{jsonl, run, write};
use serde_json::{Value, json};
use std::path::Path;

/// A verdict record with `passed` of `total` tests passing.
fn verdict(problem: &str, sample: u64, passed: usize, total: usize) -> Value {
    let tests: Vec<Value> = (0..total)
        .map(|i| json!({"status": if i < passed { "pass" } else { "fail" }}))
        .collect();
    json!({"problem_id": problem, "sample": sample, "code": "...",
           "verdict": {"passed": passed, "total": total, "tests": tests, "runtime": "r"}})
}

fn group(problem: &str, passes: &[(usize, usize)]) -> Vec<Value> {
    passes
        .iter()
        .enumerate()
        .map(|(i, &(p, t))| verdict(problem, i as u64, p, t))
        .collect()
}

/// A run directory as scripts/train.sh leaves it: eval/0.jsonl and eval/10.jsonl.
fn run_dir(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir.join("eval")).unwrap();
    let step0 = [
        group("p1", &[(1, 2), (0, 2)]), // 0.25
        group("p2", &[(2, 2), (1, 2)]), // 0.75, solved
        group("p3", &[(0, 2), (0, 2)]), // 0
    ]
    .concat();
    let step10 = [
        group("p1", &[(2, 2), (0, 2)]),
        group("p2", &[(2, 2), (2, 2)]),
        group("p3", &[(0, 2), (1, 2)]),
    ]
    .concat();
    (
        write(&dir.join("eval"), "0.jsonl", &jsonl(&step0)),
        write(&dir.join("eval"), "10.jsonl", &jsonl(&step10)),
    )
}

#[test]
fn calibration_reads_the_steps_from_the_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let (f0, f10) = run_dir(dir.path());
    // Files in any order: steps come from the names.
    let out = run("rl-eval", &["--calibration", &f10, &f0], "");
    out.expect_code(0);
    let v = &out.records()[0];
    assert_eq!(v["steps"], json!([0, 10]));
    assert_eq!(v["final_step"], 10);
    assert_eq!(v["samples"], 12);
    let s0 = &v["by_step"][0];
    assert_eq!(
        (s0["problems"].as_u64(), s0["solved"].as_u64()),
        (Some(3), Some(1))
    );
    // Solved at step 10: p1, p2, not p3; x = (0.25, 0.75, 0): a perfect rank agreement up to
    // ties, Spearman = Σdx·dy / sqrt(Σdx²·Σdy²) with ranks (2, 3, 1) vs (2.5, 2.5, 1) = 1.5 /
    // sqrt(2 · 1.5).
    let rho = s0["later"]["spearman"]["final"].as_f64().unwrap();
    assert!((rho - 1.5 / 3f64.sqrt()).abs() < 1e-12, "{rho}");
    let buckets = s0["later"]["buckets"].as_array().unwrap();
    let labels: Vec<&str> = buckets
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "0",
            "(0,0.2)",
            "[0.2,0.4)",
            "[0.4,0.6)",
            "[0.6,0.8)",
            "[0.8,1)",
            "1"
        ]
    );
    assert_eq!(buckets[0]["problems"], 1);
    assert_eq!(buckets[0]["p_solved_final"], 0.0);
    assert_eq!(buckets[2]["p_solved_final"], 1.0);
    assert_eq!(buckets[1]["p_solved_final"], Value::Null);
    assert_eq!(v["by_step"][1]["later"], Value::Null);
    // Step 0 groups with a pass: p1, p2; the top sample is a full pass only in p2.
    assert_eq!(s0["within_group"]["groups"], 2);
    assert_eq!(s0["within_group"]["top_is_full"], 1);

    // --steps instead of the names; stdin with a step field per record.
    let out = run(
        "rl-eval",
        &["--calibration", "--steps", "3,4", &f0, &f10],
        "",
    );
    out.expect_code(0);
    assert_eq!(out.records()[0]["steps"], json!([3, 4]));
    let tagged: String = [(0, &f0), (10, &f10)]
        .iter()
        .flat_map(|(s, f)| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: Value = serde_json::from_str(l).unwrap();
                    v["step"] = json!(s);
                    format!("{v}\n")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let from_stdin = run("rl-eval", &["--calibration"], &tagged);
    from_stdin.expect_code(0);
    assert_eq!(from_stdin.records()[0]["by_step"], v["by_step"]);
}

#[test]
fn calibration_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (f0, _) = run_dir(dir.path());
    let out = run("rl-eval", &["--calibration", "--format", "csv", &f0], "");
    out.expect_code(2);
    let out = run("rl-eval", &["--calibration", "--steps", "1,2", &f0], "");
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("--steps gives 2 steps for 1 input files"),
        "{}",
        out.stderr
    );
    // A file whose name is not a step, and records without a step field.
    let other = write(dir.path(), "heldout.jsonl", &jsonl(&group("p1", &[(1, 2)])));
    let out = run("rl-eval", &["--calibration", &other], "");
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("heldout.jsonl:1: no step for this record"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    // One step only: a warning, and no later outcome.
    let out = run("rl-eval", &["--calibration", &f0], "");
    out.expect_code(0);
    assert!(out.stderr.contains("at least two steps"), "{}", out.stderr);
    assert_eq!(out.records()[0]["by_step"][0]["later"], Value::Null);
}

#[test]
fn new_designs_score_through_the_binaries() {
    // One group with a full pass, one without.
    let input = jsonl(
        &[
            group("a", &[(4, 4), (3, 4), (0, 4)]),
            group("b", &[(3, 4), (2, 4), (0, 4)]),
        ]
        .concat(),
    );
    let out = run("rl-score", &["--reward", "full_anchor:0.5"], &input);
    out.expect_code(0);
    let r: Vec<Value> = out.records().iter().map(|v| v["reward"].clone()).collect();
    assert_eq!(
        r,
        [
            json!(1.0),
            json!(0.0),
            json!(0.0),
            json!(0.375),
            json!(0.25),
            json!(0.0)
        ]
    );
    assert!(
        out.records()
            .iter()
            .all(|v| v["reward_name"] == "full_anchor:0.5")
    );

    let out = run("rl-score", &["--reward", "best_partial"], &input);
    out.expect_code(0);
    let r: Vec<Value> = out.records().iter().map(|v| v["reward"].clone()).collect();
    assert_eq!(
        r,
        [
            json!(1.0),
            json!(0.0),
            json!(0.0),
            json!(0.5),
            json!(0.0),
            json!(0.0)
        ]
    );
    // rl-eval reads the scored records as before.
    let eval = run("rl-eval", &["--k", "1"], &out.stdout);
    eval.expect_code(0);
    let m = &eval.records()[0];
    assert_eq!(m["mean_reward"], json!(1.5 / 6.0));
    assert_eq!(m["full_pass_problems"], 1);

    let out = run("rl-score", &["--reward", "full_anchor:1"], &input);
    out.expect_code(2);
    assert!(out.stderr.contains("0 < C < 1"), "{}", out.stderr);
}

#[test]
fn plot_writes_png_and_svg_for_a_results_directory() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("results");
    for (config, base) in [("pass_rate-grpo", 0.1), ("binary-grpo", 0.05)] {
        for seed in 1..=2 {
            let run_dir = runs.join(config).join(format!("seed-{seed}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            let evals: Vec<Value> = [0u64, 5, 10]
                .iter()
                .map(|&s| {
                    let p = base + 0.01 * (s as f64) * seed as f64;
                    json!({"step": s, "label": "test", "pass_at_k": {"1": p, "4": p},
                           "mean_pass_rate": p + 0.1})
                })
                .collect();
            write(&run_dir, "eval.jsonl", &jsonl(&evals));
            let metrics: Vec<Value> = (1..=10)
                .map(|s| {
                    json!({"train_step": s, "reward": config, "step": s, "groups": 4,
                           "zero_advantage_groups": s % 3, "alignment": 0.1 * seed as f64,
                           "reward_density": null})
                })
                .collect();
            write(&run_dir, "metrics.jsonl", &jsonl(&metrics));
        }
    }
    let out_dir = dir.path().join("plots");
    let out = run(
        "rl-eval",
        &[
            "plot",
            "--runs",
            runs.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--size",
            "640x400",
        ],
        "",
    );
    out.expect_code(0);
    let summary = &out.records()[0];
    assert_eq!(summary["configs"], json!(["binary-grpo", "pass_rate-grpo"]));
    assert_eq!(summary["runs"], 4);
    assert_eq!(summary["skipped"], json!([]));
    for name in [
        "pass_at_1",
        "heldout_pass_rate",
        "reward_density",
        "alignment",
    ] {
        let png = std::fs::read(out_dir.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        // IHDR: width and height, big-endian, after the 8-byte signature and 8 bytes of
        // chunk length and type.
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 640);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 400);
        assert!(png.len() > 2000, "{name}: {} bytes", png.len());
        let svg = std::fs::read_to_string(out_dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("pass_rate-grpo"),
            "{name}"
        );
    }
    let band = &summary["plots"][0]["series"][1]["points"][2];
    assert_eq!(band["x"], 10.0);
    assert_eq!(band["runs"], 2);
    assert!((band["min"].as_f64().unwrap() - 0.2).abs() < 1e-12);
    assert!((band["max"].as_f64().unwrap() - 0.3).abs() < 1e-12);

    // A directory without runs is an error; a plain rl-eval call is unaffected by the
    // subcommand.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(
        "rl-eval",
        &[
            "plot",
            "--runs",
            empty.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        "",
    );
    out.expect_code(2);
    assert!(out.stderr.contains("no runs under"), "{}", out.stderr);
    let eval = run("rl-eval", &["--k", "1"], jsonl(&group("a", &[(1, 1)])));
    eval.expect_code(0);
    assert_eq!(eval.records()[0]["pass_at_k"]["1"], 1.0);
}

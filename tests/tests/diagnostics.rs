//! `rl-update --diagnostics` through the binary on a fresh tiny model and hand-made scored
//! records with verdicts: every field is present, finite and in range, null exactly where it is
//! undefined, the sketch (`--diagnostics-dim`) agrees with the exact values, and the checkpoint
//! is the same bytes as without diagnostics.

use rlcode_tests::{jsonl, run, write};
use serde_json::{Value, json};
use std::path::Path;

const BOS: u32 = 256;

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

/// A scored record: `passed` of `total` tests (statuses as given), pass-rate reward.
fn record(pid: &str, completion: &str, statuses: &[&str]) -> Value {
    let passed = statuses.iter().filter(|s| **s == "pass").count();
    let tests: Vec<Value> = statuses.iter().map(|s| json!({"status": s})).collect();
    let prompt = [vec![BOS], bytes(&format!("# {pid}\ndef f(x):\n"))].concat();
    json!({"problem_id": pid, "sample": 0, "prompt_tokens": prompt,
           "tokens": bytes(completion), "temperature": 0.8,
           "reward": passed as f64 / statuses.len() as f64, "reward_name": "pass_rate",
           "verdict": {"passed": passed, "total": statuses.len(), "tests": tests,
                       "runtime": "test"}})
}

fn scored() -> Vec<Value> {
    let (p, f) = ("pass", "fail");
    vec![
        // Full, two partial, zero pass: every field defined.
        record("full", "    return x + 1\n", &[p, p, p, p]),
        record("full", "    return x + 2\n", &[p, p, f, f]),
        record("full", "    return x\n", &[p, f, f, f]),
        record("full", "    pass\n", &[f, f, f, f]),
        // No full pass: alignment and share are undefined.
        record("nofull", "    return 1\n", &[p, f, f]),
        record("nofull", "    return -x\n", &[p, p, f]),
        record("nofull", "    return None\n", &["error", "error", "error"]),
        // Equal rewards: no advantage, no gradient; log-prob changes still measured.
        record("flat", "    return x * 2\n", &[p, p]),
        record("flat", "    return 2 * x\n", &[p, p]),
        // An infra verdict belongs to no category (its reward would be null upstream; here
        // it carries one, so it still counts in the update).
        record("infra", "    return x - 1\n", &[p, "infra"]),
        record("infra", "    return x\n", &[f, f]),
    ]
}

fn update(ck: &Path, out: &Path, input: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--model",
        ck.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--lr",
        "1e-3",
    ];
    args.extend_from_slice(extra);
    args.push(input);
    let o = run("rl-update", &args, "");
    o.expect_code(0);
    let mut lines = o.records();
    assert_eq!(lines.len(), 1, "{}", o.stdout);
    lines.remove(0)
}

const GRAD_FIELDS: [&str; 4] = [
    "cancellation",
    "cancellation_partial",
    "alignment",
    "partial_share",
];
const DELTA_FIELDS: [&str; 3] = [
    "delta_logprob_full",
    "delta_logprob_partial",
    "delta_logprob_zero",
];

#[track_caller]
fn check_range(obj: &Value, key: &str) {
    let Some(x) = obj[key].as_f64() else {
        assert!(
            obj[key].is_null(),
            "{key} is neither a number nor null in {obj}"
        );
        return;
    };
    assert!(x.is_finite(), "{key}");
    let ok = match key {
        "reward_density" => (0.0..=1.0).contains(&x),
        k if k.contains("cancellation") => (0.0..=1.0 + 1e-9).contains(&x),
        "alignment" => (-1.0 - 1e-9..=1.0 + 1e-9).contains(&x),
        _ => true,
    };
    assert!(ok, "{key} = {x} out of range");
}

/// Every field of the diagnostics; returns the groups by problem id.
#[track_caller]
fn check_diagnostics(m: &Value, method: &str) -> Vec<Value> {
    for k in [
        "reward_density",
        "batch_cancellation",
        "batch_cancellation_partial",
    ]
    .iter()
    .chain(&GRAD_FIELDS)
    .chain(&DELTA_FIELDS)
    {
        assert!(m.get(*k).is_some(), "{k} missing in {m}");
        assert!(
            m[*k].is_number(),
            "{k} should be defined for this batch: {m}"
        );
        check_range(m, k);
    }
    let d = &m["diagnostics"];
    assert_eq!(d["method"], method);
    assert_eq!(d["full_pass"], 3, "{d}");
    assert_eq!(d["partial_pass"], 4, "{d}");
    assert_eq!(d["zero_pass"], 3, "{d}");
    assert_eq!(d["gradients"], 9, "groups full, nofull and infra: {d}");
    assert!(d["seconds"].as_f64().unwrap() > 0.0);
    // 3 of the 4 groups carry an advantage.
    assert!((m["reward_density"].as_f64().unwrap() - 0.75).abs() < 1e-12);
    let groups = d["groups"].as_array().unwrap().clone();
    let ids: Vec<&str> = groups
        .iter()
        .map(|g| g["problem_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["full", "nofull", "flat", "infra"]);
    for g in &groups {
        for k in ["samples", "full_pass", "partial_pass", "zero_pass"] {
            assert!(g[k].is_u64(), "{k} in {g}");
        }
        assert!(g["nonzero_advantage"].is_boolean());
        for k in GRAD_FIELDS.iter().chain(&DELTA_FIELDS) {
            assert!(g.get(*k).is_some(), "{k} missing in {g}");
            check_range(g, k);
        }
    }
    let (full, nofull, flat, infra) = (&groups[0], &groups[1], &groups[2], &groups[3]);
    for k in GRAD_FIELDS.iter().chain(&DELTA_FIELDS) {
        assert!(full[*k].is_number(), "{k} in {full}");
    }
    assert!(nofull["alignment"].is_null() && nofull["partial_share"].is_null());
    assert!(nofull["cancellation"].is_number() && nofull["cancellation_partial"].is_number());
    assert!(nofull["delta_logprob_full"].is_null());
    assert_eq!(flat["nonzero_advantage"], false);
    for k in GRAD_FIELDS {
        assert!(flat[k].is_null(), "{k} in {flat}");
    }
    assert!(flat["delta_logprob_full"].is_number());
    assert_eq!(infra["samples"], 2);
    assert_eq!(infra["zero_pass"], 1, "the infra sample is in no category");
    assert!(infra["cancellation_partial"].is_null());
    groups
}

#[test]
fn diagnostics_fields_ranges_sketch_and_unchanged_update() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ck = dir.join("ck");
    run(
        "rl-update",
        &[
            "init",
            "--config",
            "tiny",
            "--seed",
            "3",
            "--out",
            ck.to_str().unwrap(),
        ],
        "",
    )
    .expect_code(0);
    let input = write(dir, "scored.jsonl", &jsonl(&scored()));

    let plain = update(&ck, &dir.join("plain"), &input, &[]);
    assert!(plain.get("diagnostics").is_none() && plain.get("cancellation").is_none());
    let exact = update(&ck, &dir.join("exact"), &input, &["--diagnostics"]);
    let sketch = update(
        &ck,
        &dir.join("sketch"),
        &input,
        &[
            "--diagnostics",
            "--diagnostics-dim",
            "16384",
            "--diagnostics-seed",
            "1",
        ],
    );
    // Diagnostics do not change the update: same metrics, same checkpoint bytes.
    for k in ["loss", "grad_norm", "tokens", "samples", "step", "updated"] {
        assert_eq!(plain[k], exact[k], "{k}");
        assert_eq!(plain[k], sketch[k], "{k}");
    }
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let want = std::fs::read(dir.join("plain").join(f)).unwrap();
        assert!(
            want == std::fs::read(dir.join("exact").join(f)).unwrap(),
            "{f}"
        );
        assert!(
            want == std::fs::read(dir.join("sketch").join(f)).unwrap(),
            "{f}"
        );
    }

    let ge = check_diagnostics(&exact, "exact");
    let gs = check_diagnostics(&sketch, "sketch");
    assert_eq!(sketch["diagnostics"]["dim"], 16384);
    assert!(exact["diagnostics"]["dim"].is_null());
    // The sketch estimates the gradient statistics (docs/diagnostics.md: within 0.05 at
    // D = 16384 on this model); the log-prob changes are exact in both.
    let agree = |e: &Value, s: &Value, k: &str| match (e[k].as_f64(), s[k].as_f64()) {
        (Some(x), Some(y)) => assert!((x - y).abs() < 0.05, "{k}: exact {x}, sketch {y}"),
        (x, y) => assert_eq!(x, y, "{k}"),
    };
    for k in ["batch_cancellation", "batch_cancellation_partial"]
        .iter()
        .chain(&GRAD_FIELDS)
    {
        agree(&exact, &sketch, k);
    }
    for (e, s) in ge.iter().zip(&gs) {
        for k in GRAD_FIELDS {
            agree(e, s, k);
        }
        for k in DELTA_FIELDS {
            assert_eq!(e[k], s[k], "{k}");
        }
    }
    // The full-pass sample of group "full" has the largest advantage: pushed up.
    assert!(ge[0]["delta_logprob_full"].as_f64().unwrap() > 0.0);

    // RLOO's advantages, same checks.
    let rloo = update(
        &ck,
        &dir.join("rloo"),
        &input,
        &["--algo", "rloo", "--diagnostics"],
    );
    check_diagnostics(&rloo, "exact");
    eprintln!("exact: {exact}\nsketch: {sketch}");
}

#[test]
fn diagnostics_usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    run(
        "rl-update",
        &["init", "--config", "tiny", "--out", ck.to_str().unwrap()],
        "",
    )
    .expect_code(0);
    let out = tmp.path().join("o");
    let base = [
        "--model",
        ck.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for extra in [
        &["--diagnostics-dim", "64"][..],
        &["--diagnostics", "--algo", "sft"][..],
        &["--diagnostics", "--diagnostics-dim", "0"][..],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = run("rl-update", &args, "");
        o.expect_code(2);
        assert!(o.stdout.is_empty());
    }
    assert!(!out.exists());
}

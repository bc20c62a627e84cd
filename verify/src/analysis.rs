//! The analysis of assert tests (harness mode `p`, in an instance that runs no program): which
//! become value tests, and how ([`crate::split`] defines the result).

use crate::exec::{Expect, run_job_full};
use crate::protocol::{Job, Kind, RunLimits};
use crate::runtime::Runtime;
use crate::split::Split;
use serde_json::Value as Json;
use std::time::Duration;

/// One assert test to analyse: its code, and whether its problem's setup is CodeI/O's own (so
/// that `_rl_same` means what [`rl_same`] computes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Analysis {
    pub code: String,
    pub rl_same: bool,
}

/// Tests analysed per run of the analysis instance.
const PER_RUN: usize = 64;

/// Analyse `tests` (in runs of [`PER_RUN`], on the calling rayon pool); a test whose analysis
/// failed for any reason runs in the program's interpreter.
pub fn analyse(rt: &Runtime, tests: &[Analysis]) -> Vec<Split> {
    use rayon::prelude::*;
    let chunks: Vec<&[Analysis]> = tests.chunks(PER_RUN).collect();
    chunks
        .par_iter()
        .with_max_len(1)
        .flat_map_iter(|chunk| analyse_run(rt, chunk))
        .collect()
}

fn analyse_run(rt: &Runtime, tests: &[Analysis]) -> Vec<Split> {
    let list: Vec<Json> = tests
        .iter()
        .map(|t| serde_json::json!({"code": t.code, "rl_same": t.rl_same}))
        .collect();
    let text = Json::Array(list).to_string();
    let job = Job {
        program: "",
        setup: "",
        kind: Kind::Analyse(&text),
        // Generous limits: the expected values are the problem author's, evaluated once.
        limits: RunLimits {
            fuel: 20_000_000_000,
            memory_bytes: 1 << 30,
            wall: Duration::from_secs(60),
            stdout_bytes: 1 << 20,
            stderr_bytes: 256 << 20,
        },
        seed: [0; 32],
    };
    let mut out = vec![Split::Run("not analysed".into(), None); tests.len()];
    let (_, _, stderr, token) = run_job_full(rt, &job, Expect::CleanExit);
    let stderr = String::from_utf8_lossy(&stderr);
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix(token.as_str()) else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("SPLIT ") else {
            continue;
        };
        let Some((i, json)) = rest.split_once(' ') else {
            continue;
        };
        if let Ok(i) = i.parse::<usize>()
            && i < out.len()
        {
            out[i] =
                Split::parse(json).unwrap_or_else(|e| Split::Run(format!("analysis: {e}"), None));
        }
    }
    out
}

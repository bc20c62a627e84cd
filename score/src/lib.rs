//! rl-score: verdicts in, scored records out.
//!
//! Each record gets `reward` (a number, or null where none can be computed: an `infra` test, or
//! no tests at all; each such record is warned about on stderr) and `reward_name`; every other
//! field passes through untouched. Some designs need the whole group (every record with the
//! same `problem_id`, wherever it is in the input), so all records are read first, scored group
//! by group, and written in input order.

pub mod reward;

use reward::Reward;
use rlcode_core::cli::InputArgs;
use rlcode_core::jsonl::Skipper;
use rlcode_core::records::{Status, Verdict, verdict_of};
use rlcode_core::{Error, ExitCode, JsonlReader, JsonlWriter, Line, RecordError, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

pub const PROGRAM: &str = "rl-score";

/// Add a reward to every verdict.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "rl-score", version)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// The reward design (the help lists every design of the registry; docs/rewards.md).
    #[arg(long, value_name = "DESIGN", value_parser = reward::parse,
          help = format!("The reward design. {}. See docs/rewards.md", reward::describe()))]
    pub reward: Arc<dyn Reward>,
    /// Write only the records of informative groups: those whose rewards (two or more, nulls
    /// left out) are not all equal, the groups any advantage estimator gives a non-zero
    /// advantage (DAPO's dynamic-sampling filter; train.sh --budget updates).
    #[arg(long)]
    pub informative_only: bool,
    /// With --informative-only: at most this many informative groups, the first ones in input
    /// order.
    #[arg(long, value_name = "N", requires = "informative_only")]
    pub max_groups: Option<usize>,
}

/// One input record with what scoring needs from it.
struct Scored {
    line: Line,
    problem_id: String,
    verdict: Verdict,
}

/// Check the fields rl-score reads; the error names `file:line` and the field.
fn parse_record(line: Line) -> Result<Scored, RecordError> {
    let problem_id = line.str_field("problem_id")?.to_string();
    let verdict = verdict_of(&line)?;
    Ok(Scored {
        line,
        problem_id,
        verdict,
    })
}

/// Rewards for every record, in input order, and the notes of the designs by problem id.
pub fn score_all<'a>(
    reward: &dyn Reward,
    records: impl IntoIterator<Item = (&'a str, &'a Verdict)>,
) -> (Vec<Option<f64>>, Vec<(String, String)>) {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<(usize, &Verdict)>> = HashMap::new();
    let mut count = 0;
    for (i, (problem_id, verdict)) in records.into_iter().enumerate() {
        count += 1;
        groups
            .entry(problem_id)
            .or_insert_with(|| {
                order.push(problem_id);
                Vec::new()
            })
            .push((i, verdict));
    }
    let mut rewards = vec![None; count];
    let mut notes = Vec::new();
    for problem_id in order {
        let members = &groups[problem_id];
        let verdicts: Vec<&Verdict> = members.iter().map(|(_, v)| *v).collect();
        let mut group_notes = Vec::new();
        let scores = reward::score_group(reward, &verdicts, &mut group_notes);
        for ((i, _), r) in members.iter().zip(scores) {
            rewards[*i] = r;
        }
        notes.extend(group_notes.into_iter().map(|n| (problem_id.to_string(), n)));
    }
    (rewards, notes)
}

/// The problem ids of the groups --informative-only keeps, and the number of groups.
fn informative_groups<'a>(
    records: impl IntoIterator<Item = (&'a str, Option<f64>)>,
    max_groups: Option<usize>,
) -> (std::collections::HashSet<&'a str>, usize) {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<f64>> = HashMap::new();
    for (problem_id, r) in records {
        let g = groups.entry(problem_id).or_insert_with(|| {
            order.push(problem_id);
            Vec::new()
        });
        g.extend(r);
    }
    let total = order.len();
    let keep = order
        .into_iter()
        .filter(|id| groups[id].len() >= 2 && !rlcode_core::advantage::all_equal(&groups[id]))
        .take(max_groups.unwrap_or(usize::MAX))
        .collect();
    (keep, total)
}

/// Why a record gets no reward, for the warning.
fn null_reason(v: &Verdict) -> String {
    if v.total == 0 {
        "the verdict has no tests".into()
    } else {
        let infra = v.tests.iter().filter(|t| t.status == Status::Infra).count();
        format!("the sandbox failed (infra) on {infra} of {} tests", v.total)
    }
}

/// Read every record of `input`, score it, write it to `output`. A bad record stops the run
/// (after the records before it are scored and written) unless `--keep-going`.
pub fn run(args: &Args, input: JsonlReader, output: impl Write) -> Result<ExitCode> {
    rlcode_core::cli::closed_stdout_is_success(run_inner(args, input, output))
}

fn run_inner(args: &Args, mut input: JsonlReader, output: impl Write) -> Result<ExitCode> {
    let mut skipper = Skipper::new(PROGRAM, args.input.keep_going);
    let mut records = Vec::new();
    let mut stopped = None;
    while let Some(item) = input.next_record() {
        match item.and_then(|line| parse_record(line).map_err(Error::from)) {
            Ok(r) => records.push(r),
            Err(Error::Record(e)) => {
                if let Err(stop) = skipper.skip(e) {
                    stopped = Some(stop);
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }

    let reward = &*args.reward;
    let (rewards, notes) = score_all(
        reward,
        records.iter().map(|r| (r.problem_id.as_str(), &r.verdict)),
    );
    for (problem_id, note) in &notes {
        eprintln!("{PROGRAM}: warning: problem \"{problem_id}\": {note}");
    }

    let kept = args.informative_only.then(|| {
        informative_groups(
            records
                .iter()
                .map(|r| r.problem_id.as_str())
                .zip(rewards.iter().copied()),
            args.max_groups,
        )
    });
    let kept_groups = kept.as_ref().map(|(keep, total)| (keep.len(), *total));
    let keep: Option<std::collections::HashSet<String>> =
        kept.map(|(keep, _)| keep.into_iter().map(str::to_string).collect());

    let name = Value::String(reward.name());
    let mut out = JsonlWriter::new(output);
    let mut nulls = 0;
    let mut sum = 0.0;
    let mut written = 0;
    for (record, r) in records.into_iter().zip(&rewards) {
        let Scored {
            line,
            problem_id,
            verdict,
        } = record;
        if keep.as_ref().is_some_and(|k| !k.contains(&problem_id)) {
            continue;
        }
        written += 1;
        let reward_value = match r {
            Some(x) => {
                sum += x;
                Value::from(*x)
            }
            None => {
                nulls += 1;
                eprintln!(
                    "{PROGRAM}: warning: {}:{}: problem \"{problem_id}\": {}; reward is null",
                    line.file,
                    line.line,
                    null_reason(&verdict)
                );
                Value::Null
            }
        };
        let mut value = line.value;
        value.insert("reward".into(), reward_value);
        value.insert("reward_name".into(), name.clone());
        if let Some(floor) = reward.baseline_floor() {
            value.insert("baseline_floor".into(), Value::from(floor));
        }
        out.write(&value)?;
    }
    out.flush()?;

    let scored = written - nulls;
    let mean = if scored > 0 {
        format!("{:.4}", sum / scored as f64)
    } else {
        "n/a".into()
    };
    let mut summary = format!(
        "{PROGRAM}: {written} records, {nulls} null rewards, mean reward {mean} ({})",
        reward.name()
    );
    if let Some((k, total)) = kept_groups {
        summary += &format!(
            "; kept {k} informative of {total} groups ({} records left out)",
            rewards.len() - written
        );
    }
    if skipper.skipped() > 0 {
        summary += &format!(", {} invalid records skipped", skipper.skipped());
    }
    eprintln!("{summary}");

    match stopped {
        Some(e) => Err(e),
        None => Ok(skipper.exit_code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Cursor;

    fn run_on(argv: &[&str], input: &str) -> (Result<ExitCode>, Vec<Value>) {
        let args =
            Args::try_parse_from(std::iter::once("rl-score").chain(argv.iter().copied())).unwrap();
        let reader = JsonlReader::from_reader("-", Cursor::new(input.as_bytes().to_vec()));
        let mut out = Vec::new();
        let res = run(&args, reader, &mut out);
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (res, lines)
    }

    fn record(problem: &str, statuses: &[&str]) -> String {
        let tests: Vec<String> = statuses
            .iter()
            .map(|s| format!("{{\"status\":\"{s}\"}}"))
            .collect();
        let passed = statuses.iter().filter(|s| **s == "pass").count();
        format!(
            "{{\"problem_id\":\"{problem}\",\"extra\":[1,{{\"x\":null}}],\"verdict\":{{\"passed\":{passed},\"total\":{},\"tests\":[{}],\"runtime\":\"r\"}}}}\n",
            statuses.len(),
            tests.join(",")
        )
    }

    #[test]
    fn informative_only_keeps_groups_whose_rewards_differ() {
        let input = [
            record("all-fail", &["fail"]),
            record("mixed", &["pass"]),
            record("all-fail", &["fail"]),
            record("mixed", &["fail"]),
            record("all-pass", &["pass"]),
            record("all-pass", &["pass"]),
            record("one-scorable", &["pass"]),
            record("one-scorable", &["infra"]),
            record("mixed2", &["fail"]),
            record("mixed2", &["pass"]),
        ]
        .concat();
        let ids = |out: &[Value]| -> Vec<String> {
            out.iter()
                .map(|r| r["problem_id"].as_str().unwrap().to_string())
                .collect()
        };
        let (res, out) = run_on(&["--reward", "binary", "--informative-only"], &input);
        assert_eq!(res.unwrap(), ExitCode::Success);
        assert_eq!(ids(&out), ["mixed", "mixed", "mixed2", "mixed2"]);
        // Under pass_rate too a group of equal rewards says nothing.
        let (_, out) = run_on(
            &[
                "--reward",
                "pass_rate",
                "--informative-only",
                "--max-groups",
                "1",
            ],
            &input,
        );
        assert_eq!(ids(&out), ["mixed", "mixed"]);
        // Without the flag nothing is left out.
        let (_, out) = run_on(&["--reward", "binary"], &input);
        assert_eq!(out.len(), 10);
        assert!(
            Args::try_parse_from(["rl-score", "--reward", "binary", "--max-groups", "1"]).is_err(),
            "--max-groups needs --informative-only"
        );
    }

    #[test]
    fn scores_in_input_order_and_passes_fields_through() {
        let input = [
            record("a", &["pass", "fail"]),
            record("b", &["pass"]),
            record("a", &["pass", "pass"]),
            record("b", &["infra"]),
        ]
        .concat();
        let (res, out) = run_on(&["--reward", "binary_fallback"], &input);
        assert_eq!(res.unwrap(), ExitCode::Success);
        let rewards: Vec<&Value> = out.iter().map(|r| &r["reward"]).collect();
        // Group a has a full pass (binary); b's only scorable sample passes too.
        assert_eq!(
            rewards,
            [&Value::from(0.0), &1.0.into(), &1.0.into(), &Value::Null]
        );
        assert!(out.iter().all(|r| r["reward_name"] == "binary_fallback"));
        assert_eq!(out[0]["extra"], serde_json::json!([1, {"x": null}]));
        let keys: Vec<&str> = out[0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            ["problem_id", "extra", "verdict", "reward", "reward_name"]
        );
    }

    #[test]
    fn a_bad_line_stops_after_writing_what_came_before() {
        let input = [
            record("a", &["pass"]),
            "{oops\n".into(),
            record("a", &["fail"]),
        ]
        .concat();
        let (res, out) = run_on(&["--reward", "binary"], &input);
        let e = res.unwrap_err().to_string();
        assert!(e.starts_with("-:2: malformed JSON"), "{e}");
        assert_eq!(out.len(), 1);

        let (res, out) = run_on(&["--reward", "binary", "--keep-going"], &input);
        assert_eq!(res.unwrap(), ExitCode::Skipped);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn inconsistent_verdicts_are_invalid_records() {
        let input = r#"{"problem_id":"a","verdict":{"passed":2,"total":2,"tests":[{"status":"pass"}],"runtime":"r"}}"#;
        let (res, out) = run_on(&["--reward", "binary"], input);
        let e = res.unwrap_err().to_string();
        assert!(
            e.starts_with("-:1: field \"verdict\": passed 2 / total 2"),
            "{e}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn rescoring_replaces_an_old_reward_in_place() {
        let input = r#"{"problem_id":"a","reward":0.5,"reward_name":"pass_rate","verdict":{"passed":0,"total":1,"tests":[{"status":"fail"}],"runtime":"r"}}"#;
        let (res, out) = run_on(&["--reward", "binary"], input);
        assert_eq!(res.unwrap(), ExitCode::Success);
        assert_eq!(out[0]["reward"], 0.0);
        assert_eq!(out[0]["reward_name"], "binary");
        assert_eq!(out[0].as_object().unwrap().keys().nth(1).unwrap(), "reward");
    }

    use rlcode_core::testing::ClosedPipe;

    #[test]
    fn a_closed_stdout_ends_quietly_with_success() {
        let input = r#"{"problem_id":"a","verdict":{"passed":1,"total":1,"tests":[{"status":"pass"}],"runtime":"r"}}"#;
        let reader = JsonlReader::from_reader("-", Cursor::new(input.as_bytes().to_vec()));
        let res = run(
            &Args::try_parse_from(["rl-score", "--reward", "binary"]).unwrap(),
            reader,
            ClosedPipe,
        );
        assert_eq!(res.unwrap(), ExitCode::Success);
    }
}

//! `rl-verify --capture`: run programs in the sandbox and return what they printed.
//!
//! The same sandbox, runtimes, limits and classification as the verifier, for stages that need
//! a program's output rather than a verdict (`rl-data import codeio` generates tests this way,
//! so that no dataset code ever runs on the host). Input records:
//!
//! ```text
//! {"id": "p/0", "program": "print(1)", "stdin": "...", "limits": {...}, "seed": 7}
//! ```
//!
//! (`stdin`, `limits` and `seed` optional). Output, in input order, is each record with the
//! run's fields added (other fields pass through):
//!
//! ```text
//! {"id": "p/0", ..., "status": "pass", "stdout": "1\n", "fuel": 269000, "ms": 1.2,
//!  "runtime": "cpython-3.14-wasi-preinit:<sha256 prefix>"}
//! ```
//!
//! `status` is a verdict's test status: `pass` means the program ran to its end (or exited
//! with 0); `error`, `timeout`, `memory`, `output_limit` are the program's doing, with a
//! `detail`; `infra` is the sandbox failing, never the program's fault. The program runs as
//! `__main__`, as a stdio test's does. Runs are never cached: a capture is for programs whose
//! output is wanted, and their output is not part of a verdict.
//!
//! The guest's randomness (its `random` module's seed, `os.urandom`, and on the plain runtime
//! the hash secret) comes from `content_hash(["rl-verify capture", id, program, seed])`, with
//! `seed` as its JSON text (`null` when absent): the same record always sees the same
//! randomness, and a different `seed` gives different randomness to the same program.

use crate::exec::{Expect, run_job};
use crate::protocol::{Job, Kind, RunLimits};
use crate::{Args, Sandbox, Summary, end_stream, for_each_batch, limits_for, progress_bar};
use rayon::prelude::*;
use rlcode_core::jsonl::{JsonlReader, JsonlWriter, Line, Skipper};
use rlcode_core::records::{Limits, Test};
use rlcode_core::{Error, ExitCode, RecordError};
use serde_json::Value;
use std::io::Write;
use std::time::Instant;

/// One program to run, validated.
struct Pending {
    line: Line,
    program: String,
    /// A stdio "test" whose expected output is never looked at: it carries the stdin.
    test: Test,
    limits: RunLimits,
    seed: [u8; 32],
}

fn validate(args: &Args, line: Line) -> Result<Pending, RecordError> {
    let id = line.str_field("id")?.to_string();
    let program = line.str_field("program")?.to_string();
    let stdin = match line.value.get("stdin") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(line.error("field \"stdin\" must be a string")),
    };
    let limits = match line.value.get("limits") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let l = line.typed_field::<Limits>("limits")?;
            l.check().map_err(|m| line.error(m))?;
            Some(l)
        }
    };
    let seed_text = line.value.get("seed").unwrap_or(&Value::Null).to_string();
    let seed = rlcode_core::hash::content_digest([
        "rl-verify capture".as_bytes(),
        id.as_bytes(),
        program.as_bytes(),
        seed_text.as_bytes(),
    ]);
    Ok(Pending {
        limits: limits_for(&args.sandbox, limits),
        line,
        program,
        test: Test::Stdio {
            stdin,
            stdout: String::new(),
        },
        seed,
    })
}

/// Read programs from `reader`, run each, write the records with their output to `out`.
pub(crate) fn run(
    sb: &Sandbox,
    args: &Args,
    mut reader: JsonlReader,
    out: impl Write,
) -> Result<ExitCode, Error> {
    let mut writer = JsonlWriter::new(out);
    let mut skipper = Skipper::new(crate::PROGRAM, args.input.keep_going);
    let mut summary = Summary {
        capture: true,
        ..Summary::default()
    };
    let started = Instant::now();
    let progress = progress_bar();
    let result = for_each_batch(
        &mut reader,
        &mut skipper,
        args.batch,
        |line| validate(args, line),
        |pending| {
            if pending.is_empty() {
                return Ok(());
            }
            let runtime = sb.rt.get()?;
            let ran: Vec<_> = sb.pool.install(|| {
                pending
                    .par_iter()
                    .with_max_len(1)
                    .map(|p| {
                        let job = Job {
                            program: &p.program,
                            setup: "",
                            kind: Kind::of(&p.test, None),
                            limits: p.limits,
                            seed: p.seed,
                        };
                        run_job(runtime, &job, Expect::CleanExit)
                    })
                    .collect()
            });
            for (p, (result, stdout)) in pending.into_iter().zip(ran) {
                summary.samples += 1;
                summary.tests += 1;
                *summary.statuses.entry(result.status).or_default() += 1;
                progress.inc(1);
                let mut record = p.line.value;
                record.insert("status".into(), Value::from(result.status.as_str()));
                record.insert(
                    "stdout".into(),
                    Value::from(String::from_utf8_lossy(&stdout).into_owned()),
                );
                match result.detail {
                    Some(d) => record.insert("detail".into(), Value::from(d)),
                    None => record.remove("detail"),
                };
                record.insert("fuel".into(), result.fuel.map_or(Value::Null, Value::from));
                record.insert("ms".into(), result.ms.map_or(Value::Null, Value::from));
                record.insert("runtime".into(), Value::from(runtime.id.clone()));
                writer.write(&record)?;
            }
            writer.flush()?;
            Ok(())
        },
    );
    end_stream(result, &skipper, &progress, &mut summary, started)
}

//! `rl-data`: problems in. Imports HumanEval, turns problems into reference or stub samples,
//! and generates a small synthetic world of Python function-writing tasks (with an SFT corpus of
//! correct and near-miss programs for it).
//!
//! Every command writes JSONL to the given writer and logs only to stderr; the synthetic
//! commands are pure functions of their flags.

pub mod cli;
pub mod codeio;
pub mod humaneval;
pub mod mutants;
pub mod pysplit;
pub mod samples;
pub mod select;
pub mod synth;

use rlcode_core::jsonl::Skipper;
use rlcode_core::{Error, ExitCode, JsonlReader, JsonlWriter, Line, RecordError, Result};
use std::io::Write;

pub const PROGRAM: &str = "rl-data";

/// Write every value of `convert(record)` for every input record; bad records stop the run, or
/// are reported and skipped with `keep_going`. Returns the exit code and the values written.
fn map_records<T: serde::Serialize, I: IntoIterator<Item = T>>(
    reader: JsonlReader,
    keep_going: bool,
    out: impl Write,
    mut convert: impl FnMut(&Line) -> Result<I, RecordError>,
) -> Result<(ExitCode, usize)> {
    let mut skipper = Skipper::new(PROGRAM, keep_going);
    let mut writer = JsonlWriter::new(out);
    let mut written = 0;
    for record in reader {
        let converted = match record {
            Ok(line) => convert(&line),
            Err(Error::Record(e)) => Err(e),
            Err(e) => return Err(e),
        };
        match converted {
            Ok(values) => {
                for value in values {
                    writer.write(&value)?;
                    written += 1;
                }
            }
            Err(e) => skipper.skip(e)?,
        }
    }
    writer.flush()?;
    Ok((skipper.exit_code(), written))
}

/// `rl-data import humaneval`: HumanEval records to problems, with a summary on stderr.
pub fn import_humaneval(
    reader: JsonlReader,
    keep_going: bool,
    out: impl Write,
) -> Result<ExitCode> {
    let mut stats = humaneval::ImportStats::default();
    let (code, _) = map_records(reader, keep_going, out, |line| {
        humaneval::problem_from_record(line, &mut stats).map(std::iter::once)
    })?;
    eprintln!(
        "{PROGRAM}: imported {} problems, {} tests ({} checks kept whole, {} `assert True` dropped)",
        stats.problems, stats.tests, stats.whole_checks, stats.dropped_constant_asserts
    );
    Ok(code)
}

/// `rl-data import codeio`: CodeI/O records to problems whose tests are generated in the
/// sandbox (see [`codeio`]), with per-stage counts on stderr.
pub fn import_codeio(
    reader: JsonlReader,
    keep_going: bool,
    opts: &codeio::Options,
    out: impl Write,
) -> Result<ExitCode> {
    if opts.tests == 0 {
        return Err(Error::Usage("--tests must be at least 1".into()));
    }
    Ok(codeio::import(reader, keep_going, opts, out)?.0)
}

/// `rl-data references`: one sample per problem, its reference program.
pub fn references(reader: JsonlReader, keep_going: bool, out: impl Write) -> Result<ExitCode> {
    Ok(map_records(reader, keep_going, out, |l| {
        samples::reference_sample(l).map(std::iter::once)
    })?
    .0)
}

/// `rl-data select`: the problems `criteria` selects, in input order or shuffled by `shuffle`'s
/// seed; the counts on stderr.
pub fn select(
    reader: JsonlReader,
    keep_going: bool,
    criteria: &select::Criteria,
    shuffle: Option<u64>,
    out: impl Write,
) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&criteria.held_out_fraction) {
        return Err(Error::Usage(format!(
            "--held-out-fraction must be in [0, 1], not {}",
            criteria.held_out_fraction
        )));
    }
    let mut seen = 0;
    let mut kept = Vec::new();
    let (code, written) = if let Some(seed) = shuffle {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let (code, _) = map_records(reader, keep_going, std::io::sink(), |line| {
            seen += 1;
            if select::selected(line, criteria)? {
                kept.push(line.value.clone());
            }
            Ok(std::iter::empty::<()>())
        })?;
        kept.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let mut writer = JsonlWriter::new(out);
        for value in &kept {
            writer.write(value)?;
        }
        writer.flush()?;
        (code, kept.len())
    } else {
        map_records(reader, keep_going, out, |line| {
            seen += 1;
            Ok(select::selected(line, criteria)?.then(|| line.value.clone()))
        })?
    };
    eprintln!("{PROGRAM}: select: kept {written} of {seen} problems");
    Ok(code)
}

/// `rl-data stubs`: one sample per problem whose body is `pass`.
pub fn stubs(reader: JsonlReader, keep_going: bool, out: impl Write) -> Result<ExitCode> {
    Ok(map_records(reader, keep_going, out, |l| {
        samples::stub_sample(l).map(std::iter::once)
    })?
    .0)
}

/// `rl-data mutants`: up to `count` mutated references per problem (see [`mutants`]).
pub fn mutants(
    reader: JsonlReader,
    keep_going: bool,
    count: usize,
    seed: u64,
    out: impl Write,
) -> Result<ExitCode> {
    let mut problems = 0;
    let (code, written) = map_records(reader, keep_going, out, |line| {
        let made = mutants::mutant_samples(line, count, seed)?;
        problems += 1;
        Ok::<_, RecordError>(made)
    })?;
    eprintln!("{PROGRAM}: {written} mutants of {problems} references");
    Ok(code)
}

/// `rl-data synth`: the first `count` problems of a split of the synthetic world.
pub fn synth(
    split: synth::Split,
    count: usize,
    seed: u64,
    families: &[String],
    out: impl Write,
) -> Result<ExitCode> {
    let families = synth::select(families).map_err(Error::Usage)?;
    let problems = synth::problems(split, count, seed, &families);
    let mut writer = JsonlWriter::new(out);
    for p in &problems {
        writer.write(p)?;
    }
    writer.flush()?;
    let tests: usize = problems.iter().map(|p| p.tests.len()).sum();
    eprintln!(
        "{PROGRAM}: wrote {} {} problems, {tests} tests",
        problems.len(),
        split.as_str()
    );
    Ok(ExitCode::Success)
}

/// `rl-data synth-corpus`: `count` programs for train problems, a `correct_fraction` of them
/// correct and the rest near-misses.
pub fn synth_corpus(
    count: usize,
    seed: u64,
    correct_fraction: f64,
    families: &[String],
    out: impl Write,
) -> Result<ExitCode> {
    let families = synth::select(families).map_err(Error::Usage)?;
    if !(0.0..=1.0).contains(&correct_fraction) {
        return Err(Error::Usage(format!(
            "--correct-fraction must be between 0 and 1, not {correct_fraction}"
        )));
    }
    let records = synth::corpus(count, seed, correct_fraction, &families);
    let mut writer = JsonlWriter::new(out);
    for r in &records {
        writer.write(r)?;
    }
    writer.flush()?;
    let correct = records.iter().filter(|r| r["kind"] == "correct").count();
    eprintln!(
        "{PROGRAM}: wrote {} programs ({correct} correct, {} near-miss)",
        records.len(),
        records.len() - correct
    );
    Ok(ExitCode::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn reader(text: &str) -> JsonlReader {
        JsonlReader::from_reader("p.jsonl", Cursor::new(text.to_string()))
    }

    #[test]
    fn bad_records_stop_the_run_or_are_skipped() {
        let input = "{\"id\":\"a\",\"reference\":\"r\"}\nnot json\n{\"id\":\"b\"}\n{\"id\":\"c\",\"reference\":\"r\"}\n";
        let mut out = Vec::new();
        let e = references(reader(input), false, &mut out).unwrap_err();
        assert!(
            e.to_string().starts_with("p.jsonl:2: malformed JSON"),
            "{e}"
        );

        let mut out = Vec::new();
        assert_eq!(
            references(reader(input), true, &mut out).unwrap(),
            ExitCode::Skipped
        );
        let ids: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["problem_id"].to_string()
            })
            .collect();
        assert_eq!(ids, ["\"a\"", "\"c\""]);
    }

    #[test]
    fn empty_input_is_not_an_error() {
        let mut out = Vec::new();
        assert_eq!(
            import_humaneval(reader(""), false, &mut out).unwrap(),
            ExitCode::Success
        );
        assert_eq!(
            stubs(reader("\n\n"), false, &mut out).unwrap(),
            ExitCode::Success
        );
        assert!(out.is_empty());
    }
}

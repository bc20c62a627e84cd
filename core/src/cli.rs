//! Flags every binary takes, and the one place errors become exit codes.

use crate::error::{Error, ExitCode, is_broken_pipe};
use std::path::PathBuf;

/// Input files and what to do with bad records.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Input JSONL files, read in order; `-` or none means stdin (`.gz` files are decompressed).
    #[arg(value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Report each invalid record on stderr and go on (exit 1 at the end) instead of stopping
    /// at the first one (exit 2).
    #[arg(long)]
    pub keep_going: bool,
}

/// Run a binary's body: print an error once, prefixed with the program's name, and map it to
/// an exit code. A closed stdout ends the program quietly with 0.
pub fn main_with(
    program: &str,
    body: impl FnOnce() -> Result<ExitCode, Error>,
) -> std::process::ExitCode {
    match closed_stdout_is_success(body()) {
        Ok(code) => code.into(),
        Err(e) => {
            // `{:#}`: an anyhow error prints its whole cause chain ("a: b: c").
            eprintln!("{program}: {e:#}");
            ExitCode::Failure.into()
        }
    }
}

/// A closed stdout (`rl-verify ... | head`) is a normal end: success, quietly.
pub fn closed_stdout_is_success(result: Result<ExitCode, Error>) -> Result<ExitCode, Error> {
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::Success),
        other => other,
    }
}

//! Errors and exit codes shared by every binary.

use std::fmt;
use std::path::PathBuf;

/// Exit codes of every rlcode binary (see DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything was processed.
    Success = 0,
    /// Finished, but some input records were invalid and skipped (`--keep-going`).
    Skipped = 1,
    /// Usage error, I/O error, or stopped at an invalid record.
    Failure = 2,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// A bad input record: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The input's name as given on the command line (`-` for stdin).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for RecordError {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A bad command line or option value.
    #[error("{0}")]
    Usage(String),
    /// A runtime failure that is neither a bad record nor an I/O error (e.g. inputs that do
    /// not fit together).
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when a broken pipe (a closed stdout, as in `rl-verify ... | head`) is the error or anywhere
/// in its chain: the program then ends quietly with success.
pub fn is_broken_pipe(err: &Error) -> bool {
    // `Error::Io` is transparent: its `source()` skips the io::Error itself, so look at it first.
    if let Error::Io(io) = err
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipes_are_found_in_every_variant() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&Error::Io(pipe())));
        assert!(is_broken_pipe(&Error::Other(
            anyhow::Error::from(pipe()).context("writing")
        )));
        assert!(!is_broken_pipe(&Error::Io(std::io::Error::from(
            std::io::ErrorKind::NotFound
        ))));
        assert!(!is_broken_pipe(&Error::Usage("x".into())));
    }
}

//! Small helpers for the stages' unit tests: verdicts written as a string of statuses, one
//! record as a stage reads it, and a stdout whose reader has gone away.

use crate::records::{Status, TestResult, Verdict};
use crate::{JsonlReader, Line};

/// One JSON object as a stage reads it: line 1 of a file named `p.jsonl`.
pub fn line(json: &str) -> Line {
    JsonlReader::from_reader("p.jsonl", std::io::Cursor::new(json.to_string() + "\n"))
        .next_record()
        .expect("a record")
        .expect("valid JSON")
}

/// A verdict from a string of statuses, one letter a test: `p`ass, `f`ail, `e`rror,
/// `t`imeout, `m`emory, `o`utput limit, `i`nfra.
///
/// ```
/// let v = rlcode_core::testing::verdict("ppf", "r");
/// assert_eq!((v.passed, v.total), (2, 3));
/// ```
pub fn verdict(statuses: &str, runtime: &str) -> Verdict {
    let tests = statuses
        .chars()
        .map(|c| TestResult {
            status: match c {
                'p' => Status::Pass,
                'f' => Status::Fail,
                'e' => Status::Error,
                't' => Status::Timeout,
                'm' => Status::Memory,
                'o' => Status::OutputLimit,
                'i' => Status::Infra,
                _ => panic!("no status is written {c:?}"),
            },
            detail: None,
            fuel: None,
            ms: None,
        })
        .collect();
    Verdict::from_tests(tests, runtime.into(), false)
}

/// A stdout whose reader has gone away: every write and flush fails with `BrokenPipe`.
pub struct ClosedPipe;

impl std::io::Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
}

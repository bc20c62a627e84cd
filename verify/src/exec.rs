//! One test of one program in a fresh instance, and what its outcome means: the run goes to the
//! runtime's backend ([`Runtime::run_raw`]) and what it left ([`RawRun`]) becomes a status.

use crate::protocol::Kind;
use crate::protocol::{
    FUEL_EXHAUSTED, HostFailure, Job, RawRun, RunLimits, harness_report, new_token,
    program_stderr_len,
};
use crate::runtime::Runtime;
use crate::split::ValueTest;
use rlcode_core::records::{Status, Test, TestResult};
use std::time::Instant;
use wasmtime::Trap;

thread_local! {
    // One single-threaded tokio runtime per worker thread: the WASI host calls are async so that
    // a guest blocked in one (time.sleep) can still be cut off at its deadline.
    static TOKIO: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime");
}

/// Run one test: `job.kind` must be how `test` runs ([`Kind::of`]).
pub fn run_test(rt: &Runtime, job: &Job<'_>, test: &Test) -> TestResult {
    let expect = match (test, job.kind) {
        (_, Kind::Value(v)) => Expect::Value(v),
        (Test::Assert { .. }, _) => Expect::Completion,
        (Test::Stdio { stdout, .. }, _) => Expect::Stdout(stdout),
    };
    run_job(rt, job, expect).0
}

/// What a run must do to pass.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect<'a> {
    /// Run an assert test's code to completion.
    Completion,
    /// Run a program to its end, or exit with 0 (`rl-verify --capture`); any output.
    CleanExit,
    /// Run to completion (or exit with 0) and print this.
    Stdout(&'a str),
    /// Report a value that passes this check.
    Value(&'a ValueTest),
}

/// Run a job and classify its outcome; also returns what the program printed on stdout.
pub(crate) fn run_job(rt: &Runtime, job: &Job<'_>, expect: Expect<'_>) -> (TestResult, Vec<u8>) {
    let (result, stdout, _, _) = run_job_full(rt, job, expect);
    (result, stdout)
}

/// [`run_job`], also returning stderr and the run's token.
pub(crate) fn run_job_full(
    rt: &Runtime,
    job: &Job<'_>,
    expect: Expect<'_>,
) -> (TestResult, Vec<u8>, Vec<u8>, String) {
    let start = Instant::now();
    let token = new_token();
    let raw = TOKIO.with(|tokio| tokio.block_on(rt.run_raw(job, &token)));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let (status, detail, fuel, stdout, stderr) = match raw {
        Ok(raw) => {
            let (status, detail) = classify(expect, &token, &raw, &job.limits);
            (status, detail, Some(raw.fuel), raw.stdout, raw.stderr)
        }
        Err(e) => (
            Status::Infra,
            Some(format!("sandbox failure: {e:#}")),
            None,
            Vec::new(),
            Vec::new(),
        ),
    };
    let result = TestResult {
        status,
        detail: detail.map(|d| truncate(&d, 400)),
        fuel,
        ms: Some((ms * 1000.0).round() / 1000.0),
    };
    (result, stdout, stderr, token)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// stdout equals the expected output up to trailing white space at the ends of lines and of the
/// output.
pub fn stdout_matches(got: &str, want: &str) -> bool {
    fn norm(s: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = s.lines().map(str::trim_end).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
    norm(got) == norm(want)
}

fn last_stderr_line(stderr: &str, token: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with(token))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn classify(
    expect: Expect<'_>,
    token: &str,
    raw: &RawRun,
    limits: &RunLimits,
) -> (Status, Option<String>) {
    let stderr_full =
        raw.stderr_full || program_stderr_len(&raw.stderr, token) > limits.stderr_bytes;
    if raw.stdout_full || stderr_full {
        let which = if raw.stdout_full { "stdout" } else { "stderr" };
        return (Status::OutputLimit, Some(format!("{which} over its cap")));
    }
    if raw.timed_out {
        return (Status::Timeout, Some("wall-clock deadline".into()));
    }
    let stderr = String::from_utf8_lossy(&raw.stderr);
    let code = match &raw.exit {
        Ok(code) => *code,
        Err(e) => {
            return match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => (Status::Timeout, Some(FUEL_EXHAUSTED.into())),
                Some(Trap::Interrupt) => (Status::Timeout, Some("interrupted".into())),
                Some(trap) if raw.memory_denied => {
                    (Status::Memory, Some(format!("memory cap reached ({trap})")))
                }
                Some(Trap::StackOverflow) => (Status::Error, Some("stack overflow".into())),
                // Any other trap is the guest crashing (CPython aborting, say): the program's
                // doing, with whatever CPython said last.
                Some(trap) => (
                    Status::Error,
                    Some(format!("{trap}: {}", last_stderr_line(&stderr, token))),
                ),
                // The host side of the sandbox failed before the guest ran.
                None if e.downcast_ref::<HostFailure>().is_some() => {
                    (Status::Infra, Some(format!("{e:#}")))
                }
                // A host call the guest made failed (an empty poll list, an exit status WASI
                // cannot carry): the program asked for it.
                None => (
                    Status::Error,
                    Some(format!("the sandbox refused a host call: {e:#}")),
                ),
            };
        }
    };
    let report = harness_report(&stderr, token);
    match report {
        Some(r) if r.starts_with("EXC ") => {
            let mut parts = r[4..].splitn(3, ' ');
            let phase = parts.next().unwrap_or("");
            let kind = parts.next().unwrap_or("");
            let msg = parts.next().unwrap_or("").trim();
            let detail = if msg.is_empty() {
                format!("{kind} (in {phase})")
            } else {
                format!("{kind}: {msg} (in {phase})")
            };
            // `memory` only when the cap was hit and the program did not recover: a MemoryError
            // it caught is followed by its own result, and one raised without the cap (the
            // parser's "too complex") is an ordinary error.
            if kind == "MemoryError" && raw.memory_denied {
                (Status::Memory, Some(detail))
            } else if kind == "AssertionError" && phase == "test" {
                (Status::Fail, Some(detail))
            } else {
                (Status::Error, Some(detail))
            }
        }
        Some(r) if r.starts_with("EXIT ") => (
            Status::Error,
            Some(format!(
                "SystemExit {} before the test completed",
                r[5..].trim()
            )),
        ),
        Some(r) if r.starts_with("VALUE ") => match expect {
            Expect::Value(v) => v.judge(&r[6..]),
            _ => (
                Status::Error,
                Some("a value where none was asked for".into()),
            ),
        },
        Some("OK") => match expect {
            Expect::Completion | Expect::CleanExit => (Status::Pass, None),
            Expect::Stdout(stdout) => stdio_verdict(&raw.stdout, stdout),
            Expect::Value(_) => (
                Status::Error,
                Some("the test's value was never reported".into()),
            ),
        },
        _ if raw.memory_denied => (Status::Memory, Some("memory cap reached".into())),
        // The program ended the interpreter itself (os._exit, a signal-like abort): an assert
        // test never reached its end; a stdio test is judged on its output if it exited with 0.
        _ => match expect {
            Expect::Stdout(stdout) if code == 0 => stdio_verdict(&raw.stdout, stdout),
            Expect::CleanExit if code == 0 => (Status::Pass, None),
            _ => (
                Status::Error,
                Some(format!(
                    "exited with code {code} before the test completed{}",
                    match last_stderr_line(&stderr, token) {
                        l if l.is_empty() => String::new(),
                        l => format!(": {l}"),
                    }
                )),
            ),
        },
    }
}

fn stdio_verdict(got: &[u8], want: &str) -> (Status, Option<String>) {
    let got = String::from_utf8_lossy(got);
    if stdout_matches(&got, want) {
        (Status::Pass, None)
    } else {
        (
            Status::Fail,
            Some(format!("wrong output: {:?}", truncate(got.trim_end(), 120))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_comparison_ignores_trailing_white_space_only() {
        assert!(stdout_matches("3\n", "3"));
        assert!(stdout_matches("a  \nb\n\n\n", "a\nb"));
        assert!(!stdout_matches(" 3", "3"));
        assert!(!stdout_matches("a\n\nb", "a\nb"));
        assert!(stdout_matches("", "\n"));
    }
}

//! Helpers for the end-to-end tests in `tests/`: they run the release binaries through pipes.
//!
//! The binaries are found beside the test executable (`target/<profile>/`), so run the tests with
//! the profile the binaries were built with: `cargo build --release && cargo test --release`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of a workspace binary, built with the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries with the same profile first \
         (`cargo build --release --workspace`, or run scripts/test.sh)",
        path.display()
    );
    path
}

/// The data directory scripts/setup.sh fills.
pub fn home() -> PathBuf {
    std::env::var_os("RLCODE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".rlcode"))
}

/// What a finished process left.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout parsed as JSON Lines.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL on stdout: {e}: {l}"))
            })
            .collect()
    }

    /// Panics with both streams framed when the exit code differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        if self.code != code {
            panic!(
                "expected exit code {code}, got {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
                self.code, self.stdout, self.stderr
            );
        }
        self
    }
}

/// Run `name` with `args`, feeding `stdin`.
pub fn run(name: &str, args: &[&str], stdin: impl AsRef<[u8]>) -> Output {
    run_env(name, args, stdin, &[])
}

pub fn run_env(name: &str, args: &[&str], stdin: impl AsRef<[u8]>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Tests run every test afresh and never touch the user's verdict cache; those of the
        // cache itself name one with --cache or override this.
        .env("RLCODE_VERDICT_CACHE", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let input = stdin.as_ref().to_vec();
    let mut sin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("stdin writer");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Write `text` to a file in `dir` and return its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p.display().to_string()
}

/// The records of a JSON Lines file; panics naming the file (and the line) if it cannot be read
/// or parsed.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// JSON Lines from values.
pub fn jsonl(values: &[serde_json::Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

/// rl-verify on `runtime` (`preinit` or `python`) with `--problems problems` and `extra`
/// arguments, `input` on stdin.
pub fn verify(runtime: &str, problems: &str, extra: &[&str], input: impl AsRef<[u8]>) -> Output {
    let mut args = vec!["--runtime", runtime, "--problems", problems];
    args.extend_from_slice(extra);
    run("rl-verify", &args, input)
}

/// One `#[test]` per sandbox runtime for each scenario: `scenario => preinit_test, python_test;`
/// calls `scenario("preinit")` and `scenario("python")`.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($scenario:ident => $preinit:ident, $python:ident;)*) => {$(
        #[test]
        fn $preinit() {
            $scenario("preinit")
        }
        #[test]
        fn $python() {
            $scenario("python")
        }
    )*};
}

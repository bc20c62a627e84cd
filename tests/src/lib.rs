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
    assert_fresh(&path);
    path
}

/// The binaries are not part of this crate's build (Cargo gives `CARGO_BIN_EXE_*` only for a
/// package's own binaries), so a test could run binaries older than the sources it tests. Refuse
/// to: a binary older than any source file its build read (Cargo's dep-info file beside it,
/// `<binary>.d`) stops the test, naming the newer file.
#[track_caller]
fn assert_fresh(binary: &Path) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = mtime(binary) else {
        panic!("{}: cannot read its modification time", binary.display());
    };
    let Ok(deps) = std::fs::read_to_string(binary.with_extension("d")) else {
        return;
    };
    // "target: dep dep ...", spaces inside paths escaped as "\ ".
    let Some((_, list)) = deps.split_once(": ") else {
        return;
    };
    let list = list.replace("\\ ", "\u{0}");
    let newer = list
        .split_whitespace()
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
        .filter_map(|d| Some((mtime(&d)?, d)))
        .filter(|(t, _)| *t > built)
        .max();
    if let Some((_, newer)) = newer {
        panic!(
            "{} is older than {}: rebuild the binaries (`cargo build --release --workspace`, or \
             run scripts/test.sh) before the end-to-end tests",
            binary.display(),
            newer.display()
        );
    }
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
    // Tests run every test afresh and never touch the user's verdict cache; those of the cache
    // itself name one with --cache or override this.
    let mut all = vec![("RLCODE_VERDICT_CACHE", "off")];
    all.extend_from_slice(env);
    let out = run_exe_env(bin(name), args, stdin, &all);
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run the executable `exe` (a crate's own binary in its CLI tests:
/// `env!("CARGO_BIN_EXE_<name>")`) with `args`, feeding `stdin` from a thread (so that a large
/// output cannot block it), with `env` added.
pub fn run_exe_env(
    exe: impl AsRef<Path>,
    args: &[&str],
    stdin: impl AsRef<[u8]>,
    env: &[(&str, &str)],
) -> std::process::Output {
    let exe = exe.as_ref();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
    let input = stdin.as_ref().to_vec();
    let mut sin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("stdin writer");
    out
}

/// [`run_exe_env`] with no extra environment.
pub fn run_exe(
    exe: impl AsRef<Path>,
    args: &[&str],
    stdin: impl AsRef<[u8]>,
) -> std::process::Output {
    run_exe_env(exe, args, stdin, &[])
}

/// Panics with both streams framed when a process's exit code is not `code`.
#[track_caller]
pub fn check_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

#[cfg(test)]
mod freshness {
    use super::assert_fresh;

    fn binary_and_dep(dep_newer: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let (bin, dep) = (t.path().join("rl-x"), t.path().join("a b.rs"));
        let write = |p: &std::path::Path, secs: u64| {
            std::fs::write(p, "").unwrap();
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        write(&bin, 2_000_000_000);
        write(
            &dep,
            if dep_newer {
                2_000_000_001
            } else {
                1_000_000_000
            },
        );
        let escaped = dep.display().to_string().replace(' ', "\\ ");
        std::fs::write(
            t.path().join("rl-x.d"),
            format!("{}: {escaped}\n", bin.display()),
        )
        .unwrap();
        t
    }

    #[test]
    fn a_binary_newer_than_its_sources_passes() {
        let t = binary_and_dep(false);
        assert_fresh(&t.path().join("rl-x"));
    }

    #[test]
    #[should_panic(expected = "a b.rs: rebuild the binaries")]
    fn a_binary_older_than_a_source_is_refused() {
        let t = binary_and_dep(true);
        assert_fresh(&t.path().join("rl-x"));
    }
}

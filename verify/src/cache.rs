//! The verdict cache: per-test results in SQLite, content-addressed, so that no test of the same
//! program under the same runtime and limits runs twice.
//!
//! The key of one test is a sha256 over everything its result is a function of:
//! - [`KEY_VERSION`] and the harness script (what a run means and how it is classified),
//! - the runtime's identity string (`cpython-3.12.0-wasi:<sha12>`, or whatever another runtime
//!   exposes),
//! - the effective limits (fuel, memory, wall deadline, stdout and stderr caps),
//! - the guest's random seed (which today derives from the problem id, the code and the test's
//!   index: the same program on another problem, or at another test index, is another key),
//! - the program, the problem's `setup`, and the test itself (assert code, or stdin and stdout).
//!
//! The value is the test's result: status, detail, fuel, ms (the ms of the run that filled the
//! entry). Each row carries a checksum of key and value: a row damaged on disk is an error, never
//! a wrong verdict.
//!
//! What is not cached (see [`cacheable`]): `infra` results (the sandbox failing says nothing
//! about the program) and timeouts other than fuel exhaustion. Fuel is deterministic; the
//! wall-clock deadline is not: a program that computes past it under heavy load might pass on an
//! idle machine, and one that sleeps just under it might time out on a loaded one. Such a test
//! runs again every time (a sleeping program costs its wall deadline each run).
//!
//! Several processes may share one file: WAL journal, a busy timeout, one short read transaction
//! per batch of lookups and one short write transaction per batch of results, `INSERT OR
//! IGNORE` (two processes that ran the same test write the same thing). WAL with
//! `synchronous=NORMAL` survives a killed process: a transaction is either all there or not.

use anyhow::{Context, anyhow, bail};
use rlcode_core::records::{Status, Test, TestResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::RunLimits;

/// Bump when the meaning of a cached result changes without the harness or the runtime changing
/// (the classification in `exec.rs`, the engine's fuel accounting after a wasmtime upgrade...).
pub const KEY_VERSION: &str = "rlcode-verdict-cache-v2";

/// `PRAGMA application_id` of a verdict cache ("rlcv").
const APPLICATION_ID: i64 = 0x726c_6376;
/// `PRAGMA user_version`: the schema below.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS verdicts (
    key    BLOB PRIMARY KEY,
    status TEXT NOT NULL,
    detail TEXT,
    fuel   INTEGER,
    ms     REAL,
    sum    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS file_hashes (
    path     TEXT PRIMARY KEY,
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL
) WITHOUT ROWID";

/// A test's cache key.
pub type Key = [u8; 32];

/// Whether a result may be cached: a verdict on the program, and one that does not depend on the
/// machine's load.
pub fn cacheable(r: &TestResult) -> bool {
    match r.status {
        Status::Infra => false,
        Status::Timeout => r.detail.as_deref() == Some(crate::protocol::FUEL_EXHAUSTED),
        _ => true,
    }
}

fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Hashes what a run's keys share: the cache version, the harness and the runtime.
#[derive(Clone)]
pub struct KeyContext {
    base: Sha256,
}

impl KeyContext {
    pub fn new(runtime_id: &str) -> Self {
        let mut base = Sha256::new();
        part(&mut base, KEY_VERSION.as_bytes());
        part(&mut base, crate::protocol::HARNESS.as_bytes());
        part(&mut base, crate::protocol::ANALYSIS.as_bytes());
        part(&mut base, runtime_id.as_bytes());
        KeyContext { base }
    }

    /// The hash state shared by every test of one sample: its limits, program and setup.
    pub fn sample(&self, limits: &RunLimits, program: &str, setup: &str) -> SampleKey {
        let mut h = self.base.clone();
        for n in [
            limits.fuel,
            limits.memory_bytes as u64,
            limits.wall.as_nanos() as u64,
            limits.stdout_bytes as u64,
            limits.stderr_bytes as u64,
        ] {
            h.update(n.to_le_bytes());
        }
        part(&mut h, program.as_bytes());
        part(&mut h, setup.as_bytes());
        SampleKey { h }
    }
}

pub struct SampleKey {
    h: Sha256,
}

impl SampleKey {
    /// The key of one test of the sample, run with `seed`.
    pub fn test(&self, seed: &[u8; 32], test: &Test) -> Key {
        let mut h = self.h.clone();
        h.update(seed);
        match test {
            Test::Assert { code } => {
                part(&mut h, b"assert");
                part(&mut h, code.as_bytes());
            }
            Test::Stdio { stdin, stdout } => {
                part(&mut h, b"stdio");
                part(&mut h, stdin.as_bytes());
                part(&mut h, stdout.as_bytes());
            }
        }
        h.finalize().into()
    }
}

fn parse_status(s: &str) -> Option<Status> {
    Status::ALL.into_iter().find(|st| st.as_str() == s)
}

/// A checksum of a row: the key and every value column.
fn row_sum(
    key: &[u8],
    status: &str,
    detail: Option<&str>,
    fuel: Option<i64>,
    ms: Option<f64>,
) -> i64 {
    let mut h = Sha256::new();
    part(&mut h, key);
    part(&mut h, status.as_bytes());
    match detail {
        Some(d) => {
            h.update([1]);
            part(&mut h, d.as_bytes());
        }
        None => h.update([0]),
    }
    match fuel {
        Some(f) => {
            h.update([1]);
            h.update(f.to_le_bytes());
        }
        None => h.update([0]),
    }
    match ms {
        Some(m) => {
            h.update([1]);
            h.update(m.to_bits().to_le_bytes());
        }
        None => h.update([0]),
    }
    let d = h.finalize();
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// An open verdict cache.
pub struct VerdictCache {
    conn: Connection,
    path: PathBuf,
}

impl VerdictCache {
    /// Open (creating it and its directory if need be) the cache at `path`. A file that is not a
    /// verdict cache, or is damaged, is an error that names it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        // The cause goes into the message itself: a binary reports only an error's outer line.
        Self::open_inner(path).map_err(|e| {
            anyhow!(
                "verdict cache {}: cannot use it: {e:#} (delete the file, or pass --no-cache or \
                 --cache OTHER_PATH)",
                path.display()
            )
        })
    }

    fn open_inner(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Other rl-verify processes may hold the write lock for one batch's insert at a time;
        // wait for them rather than fail.
        conn.busy_timeout(Duration::from_secs(120))?;
        // Switching to WAL takes a lock that the busy handler does not always wait for: retry.
        let mut tries = 0;
        loop {
            match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
                Ok(mode) => bail!("cannot switch to WAL journal mode (got {mode})"),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 1200 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let cache = VerdictCache {
            conn,
            path: path.to_path_buf(),
        };
        cache.init_schema()?;
        Ok(cache)
    }

    fn init_schema(&self) -> anyhow::Result<()> {
        let app: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if app == APPLICATION_ID && version == SCHEMA_VERSION {
            return Ok(());
        }
        // A new file (or one another process is creating right now): create the schema under
        // the write lock, and look again once holding it.
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let app: i64 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if app == APPLICATION_ID && version == SCHEMA_VERSION {
            return Ok(());
        }
        if app != 0 || version != 0 {
            bail!(
                "not a verdict cache of this version (application_id {app:#x}, user_version \
                 {version}; expected {APPLICATION_ID:#x}, {SCHEMA_VERSION})"
            );
        }
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables != 0 {
            bail!("an SQLite database, but not a verdict cache");
        }
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow!(
            "verdict cache {}: unreadable or damaged: {:#} (delete the file, or pass --no-cache)",
            self.path.display(),
            e.into()
        )
    }

    /// Look every key up, in one read transaction.
    pub fn lookup(&self, keys: &[Key]) -> anyhow::Result<Vec<Option<TestResult>>> {
        self.lookup_inner(keys).map_err(|e| self.err(e))
    }

    fn lookup_inner(&self, keys: &[Key]) -> anyhow::Result<Vec<Option<TestResult>>> {
        let tx = self.conn.unchecked_transaction()?;
        let mut out = Vec::with_capacity(keys.len());
        {
            let mut stmt = tx.prepare_cached(
                "SELECT status, detail, fuel, ms, sum FROM verdicts WHERE key = ?1",
            )?;
            for key in keys {
                let row = stmt
                    .query_row([&key[..]], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, Option<f64>>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?;
                let Some((status, detail, fuel, ms, sum)) = row else {
                    out.push(None);
                    continue;
                };
                if sum != row_sum(key, &status, detail.as_deref(), fuel, ms) {
                    return Err(anyhow!(
                        "entry {} fails its checksum",
                        hex::encode(&key[..8])
                    ));
                }
                let status = parse_status(&status)
                    .ok_or_else(|| anyhow!("entry with unknown status {status:?}"))?;
                out.push(Some(TestResult {
                    status,
                    detail,
                    fuel: fuel.map(|f| f as u64),
                    ms,
                }));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Store the cacheable results among `entries` in one write transaction; keys already
    /// present are left alone. Returns how many were new.
    pub fn insert<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a Key, &'a TestResult)>,
    ) -> anyhow::Result<usize> {
        self.insert_inner(entries).map_err(|e| self.err(e))
    }

    fn insert_inner<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a Key, &'a TestResult)>,
    ) -> anyhow::Result<usize> {
        let mut entries = entries.into_iter().filter(|(_, r)| cacheable(r)).peekable();
        if entries.peek().is_none() {
            return Ok(0);
        }
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO verdicts (key, status, detail, fuel, ms, sum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (key, r) in entries {
                let status = r.status.as_str();
                let fuel = r.fuel.map(|f| f as i64);
                let sum = row_sum(key, status, r.detail.as_deref(), fuel, r.ms);
                n += stmt.execute(params![&key[..], status, r.detail, fuel, r.ms, sum])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// The sha256 of a file, remembered by its identity: device, inode, size, modification and
    /// change times (the last cannot be set by a program). A file modified within two seconds
    /// of now is hashed but not remembered, as git does with racily clean files: a second write
    /// in the same timestamp tick would otherwise go unnoticed.
    pub fn file_sha256(&self, path: &Path) -> anyhow::Result<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let path = std::fs::canonicalize(path)?;
            let md = std::fs::metadata(&path)?;
            let stamp = |s: i64, ns: i64| s.saturating_mul(1_000_000_000).saturating_add(ns);
            let id = (
                md.dev() as i64,
                md.ino() as i64,
                md.size() as i64,
                stamp(md.mtime(), md.mtime_nsec()),
                stamp(md.ctime(), md.ctime_nsec()),
            );
            let name = path.to_string_lossy();
            let memo: Option<String> = self
                .conn
                .query_row(
                    "SELECT sha256 FROM file_hashes WHERE path = ?1 AND dev = ?2 AND ino = ?3 \
                     AND size = ?4 AND mtime_ns = ?5 AND ctime_ns = ?6",
                    params![name, id.0, id.1, id.2, id.3, id.4],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(sha) = memo {
                return Ok(sha);
            }
            let sha = rlcode_core::hash::file_sha256(&path)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            if id.3.max(id.4) < now - 2_000_000_000 {
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO file_hashes \
                         (path, dev, ino, size, mtime_ns, ctime_ns, sha256) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![name, id.0, id.1, id.2, id.3, id.4, sha],
                    )
                    .map_err(|e| self.err(e))?;
            }
            Ok(sha)
        }
        #[cfg(not(unix))]
        {
            Ok(rlcode_core::hash::file_sha256(path)?)
        }
    }

    /// Number of entries (for tests and diagnostics).
    pub fn len(&self) -> anyhow::Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM verdicts", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(n as usize)
    }

    pub fn is_empty(&self) -> anyhow::Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(fuel: u64) -> RunLimits {
        RunLimits {
            fuel,
            memory_bytes: 256 << 20,
            wall: Duration::from_secs(15),
            stdout_bytes: 1 << 20,
            stderr_bytes: 1 << 18,
        }
    }

    fn result(status: Status, detail: Option<&str>) -> TestResult {
        TestResult {
            status,
            detail: detail.map(str::to_string),
            fuel: Some(123_456),
            ms: Some(1.25),
        }
    }

    fn assert_test(code: &str) -> Test {
        Test::Assert { code: code.into() }
    }

    #[test]
    fn keys_cover_runtime_limits_program_setup_seed_and_test() {
        let ctx = KeyContext::new("rt:a");
        let t = assert_test("assert f() == 1");
        let seed = [7u8; 32];
        let k = ctx
            .sample(&limits(10), "def f(): return 1", "")
            .test(&seed, &t);
        assert_eq!(
            k,
            ctx.sample(&limits(10), "def f(): return 1", "")
                .test(&seed, &t),
            "deterministic"
        );
        let others = [
            KeyContext::new("rt:b")
                .sample(&limits(10), "def f(): return 1", "")
                .test(&seed, &t),
            ctx.sample(&limits(11), "def f(): return 1", "")
                .test(&seed, &t),
            ctx.sample(
                &RunLimits {
                    wall: Duration::from_secs(1),
                    ..limits(10)
                },
                "def f(): return 1",
                "",
            )
            .test(&seed, &t),
            ctx.sample(
                &RunLimits {
                    stdout_bytes: 1,
                    ..limits(10)
                },
                "def f(): return 1",
                "",
            )
            .test(&seed, &t),
            ctx.sample(&limits(10), "def f(): return 2", "")
                .test(&seed, &t),
            ctx.sample(&limits(10), "def f(): return 1", "import m")
                .test(&seed, &t),
            ctx.sample(&limits(10), "def f(): return 1", "")
                .test(&[8u8; 32], &t),
            ctx.sample(&limits(10), "def f(): return 1", "")
                .test(&seed, &assert_test("assert f() == 2")),
            ctx.sample(&limits(10), "def f(): return 1", "").test(
                &seed,
                &Test::Stdio {
                    stdin: "".into(),
                    stdout: "assert f() == 1".into(),
                },
            ),
            // Parts are length-prefixed: moving text from program to setup is another key.
            ctx.sample(&limits(10), "def f(): return ", "1")
                .test(&seed, &t),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(&k, o, "variant {i} must change the key");
        }
    }

    #[test]
    fn only_program_verdicts_that_do_not_depend_on_load_are_cacheable() {
        assert!(cacheable(&result(Status::Pass, None)));
        assert!(cacheable(&result(Status::Fail, Some("AssertionError"))));
        assert!(cacheable(&result(
            Status::Memory,
            Some("memory cap reached")
        )));
        assert!(cacheable(&result(
            Status::Timeout,
            Some(crate::protocol::FUEL_EXHAUSTED)
        )));
        assert!(!cacheable(&result(
            Status::Timeout,
            Some("wall-clock deadline")
        )));
        assert!(!cacheable(&result(Status::Timeout, Some("interrupted"))));
        assert!(!cacheable(&result(Status::Infra, Some("sandbox failure"))));
    }

    #[test]
    fn round_trip_insert_or_ignore_and_skip_uncacheable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/v.sqlite");
        let c = VerdictCache::open(&path).unwrap();
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let pass = result(Status::Pass, None);
        let infra = result(Status::Infra, Some("boom"));
        let wall = result(Status::Timeout, Some("wall-clock deadline"));
        let fail = TestResult {
            status: Status::Fail,
            detail: Some("AssertionError: ü".into()),
            fuel: None,
            ms: None,
        };
        assert_eq!(
            c.insert([(&k1, &pass), (&k2, &infra), (&k3, &wall)])
                .unwrap(),
            1
        );
        assert_eq!(
            c.lookup(&[k1, k2, k3]).unwrap(),
            vec![Some(pass.clone()), None, None]
        );
        // The first result for a key stays.
        assert_eq!(c.insert([(&k1, &fail), (&k2, &fail)]).unwrap(), 1);
        drop(c);
        let c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.lookup(&[k1, k2]).unwrap(), vec![Some(pass), Some(fail)]);
        assert_eq!(c.len().unwrap(), 2);
    }

    #[test]
    fn file_hashes_are_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let c = VerdictCache::open(&dir.path().join("v.sqlite")).unwrap();
        let f = dir.path().join("m.wasm");
        std::fs::write(&f, b"one").unwrap();
        let want = |b: &[u8]| {
            use sha2::Digest;
            hex::encode(Sha256::digest(b))
        };
        // Just written: hashed, not remembered.
        assert_eq!(c.file_sha256(&f).unwrap(), want(b"one"));
        let remembered = |c: &VerdictCache| -> i64 {
            c.conn
                .query_row("SELECT count(*) FROM file_hashes", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(remembered(&c), 0);
        // An old file is remembered; rewriting it changes its times, so it is hashed again.
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2100)); // ctime must age too
        assert_eq!(c.file_sha256(&f).unwrap(), want(b"one"));
        assert_eq!(remembered(&c), 1);
        assert_eq!(c.file_sha256(&f).unwrap(), want(b"one"));
        std::fs::write(&f, b"two").unwrap();
        assert_eq!(c.file_sha256(&f).unwrap(), want(b"two"));
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sqlite");
        let c = VerdictCache::open(&path).unwrap();
        let k = [9u8; 32];
        c.insert([(&k, &result(Status::Fail, Some("AssertionError")))])
            .unwrap();
        c.conn
            .execute("UPDATE verdicts SET status = 'pass'", [])
            .unwrap();
        let e = format!("{:#}", c.lookup(&[k]).unwrap_err());
        assert!(e.contains("checksum") && e.contains("v.sqlite"), "{e}");
    }

    #[test]
    fn foreign_or_garbage_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let e = format!("{:#}", VerdictCache::open(&garbage).err().unwrap());
        assert!(
            e.contains("garbage.sqlite") && e.contains("--no-cache"),
            "{e}"
        );

        let foreign = dir.path().join("foreign.sqlite");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = format!("{:#}", VerdictCache::open(&foreign).err().unwrap());
        assert!(e.contains("not a verdict cache"), "{e}");
    }
}

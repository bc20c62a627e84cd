//! `rl-eval jsonl`: the JSON that shell drivers (scripts/train.sh) need, read and written by a
//! JSON parser instead of sed and awk: a field of each line, the steps of a metrics file, a
//! metrics file cut back to a step (resume), and a metrics line built from parts.
//!
//! ```text
//! rl-eval --k 8 eval.jsonl | rl-eval jsonl get pass_at_k.8      # 0.8125
//! rl-eval jsonl steps train_step metrics.jsonl                   # 1 2 3 (complete lines only)
//! rl-eval jsonl truncate train_step 2 metrics.jsonl              # keep the lines of steps <= 2
//! rl-eval jsonl object train_step:=3 reward=binary --merge "$(rl-update ...)"
//! ```
//!
//! A "complete" line is one that parses as a JSON object whose KEY is a non-negative integer:
//! a line cut short by a killed writer never is.

use rlcode_core::{Error, ExitCode, JsonlReader, Result};
use serde_json::{Map, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct JsonlArgs {
    #[command(subcommand)]
    pub op: Op,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Op {
    /// Print the value at PATH (keys joined by `.`) of each JSON line of the inputs (stdin when
    /// none): a string as it is, anything else as JSON. A line without it is an error.
    Get {
        path: String,
        #[arg(value_name = "FILE")]
        inputs: Vec<PathBuf>,
    },
    /// Print KEY of each complete line of FILE, one per line (nothing when FILE is missing).
    Steps { key: String, file: PathBuf },
    /// Keep only the complete lines of FILE whose KEY is at most MAX: FILE is replaced
    /// atomically (a missing FILE stays missing), or with --out the lines go to OUT.
    Truncate {
        key: String,
        max: u64,
        file: PathBuf,
        /// Write the kept lines here (atomically) and leave FILE as it is.
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Print one JSON object: the fields `KEY=STRING` (a string) and `KEY:=JSON` (any JSON
    /// value) in order, then the fields of each --merge object.
    Object {
        #[arg(value_name = "FIELD")]
        fields: Vec<String>,
        /// A JSON object whose fields follow (repeatable).
        #[arg(long, value_name = "JSON")]
        merge: Vec<String>,
    },
}

pub fn run(a: &JsonlArgs, mut out: impl Write) -> Result<ExitCode> {
    match &a.op {
        Op::Get { path, inputs } => {
            let mut reader = JsonlReader::open(inputs)?;
            while let Some(line) = reader.next_record() {
                let line = line?;
                let mut v = &Value::Object(line.value.clone());
                for key in path.split('.') {
                    v = v
                        .get(key)
                        .ok_or_else(|| Error::Record(line.error(format!("no field \"{path}\""))))?;
                }
                match v {
                    Value::String(s) => writeln!(out, "{s}")?,
                    other => writeln!(out, "{other}")?,
                }
            }
        }
        Op::Steps { key, file } => {
            for (step, _) in complete_lines(file, key)? {
                writeln!(out, "{step}")?;
            }
        }
        Op::Truncate {
            key,
            max,
            file,
            out: dest,
        } => {
            if file.exists() || dest.is_some() {
                let kept: String = complete_lines(file, key)?
                    .into_iter()
                    .filter(|(s, _)| s <= max)
                    .map(|(_, l)| l + "\n")
                    .collect();
                let dest = dest.as_ref().unwrap_or(file);
                rlcode_core::paths::write_atomic(dest, kept.as_bytes()).map_err(|e| {
                    Error::Open {
                        path: dest.clone(),
                        source: e,
                    }
                })?;
            }
        }
        Op::Object { fields, merge } => {
            let mut obj = Map::new();
            for f in fields {
                let (k, v) = match (f.split_once(":="), f.split_once('=')) {
                    (Some((k, json)), Some((k2, _))) if k.len() + 1 == k2.len() => {
                        let v = serde_json::from_str(json).map_err(|e| {
                            Error::Usage(format!("{f}: the value after := is not JSON: {e}"))
                        })?;
                        (k, v)
                    }
                    (_, Some((k, s))) => (k, Value::from(s)),
                    _ => {
                        return Err(Error::Usage(format!(
                            "{f}: a field is KEY=STRING or KEY:=JSON"
                        )));
                    }
                };
                if k.is_empty() {
                    return Err(Error::Usage(format!("{f}: the key is empty")));
                }
                obj.insert(k.to_string(), v);
            }
            for m in merge {
                match serde_json::from_str::<Value>(m) {
                    Ok(Value::Object(o)) => obj.extend(o),
                    _ => {
                        return Err(Error::Usage(format!(
                            "--merge: not a JSON object: {}",
                            m.chars().take(80).collect::<String>()
                        )));
                    }
                }
            }
            writeln!(out, "{}", Value::Object(obj))?;
        }
    }
    Ok(ExitCode::Success)
}

/// The complete lines of `file` (see the module docs) with their KEY; none for a missing file.
fn complete_lines(file: &Path, key: &str) -> Result<Vec<(u64, String)>> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Open {
                path: file.to_path_buf(),
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::Open {
            path: file.to_path_buf(),
            source: e,
        })?;
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&line)
            && let Some(step) = o.get(key).and_then(Value::as_u64)
        {
            out.push((step, line));
        }
    }
    Ok(out)
}

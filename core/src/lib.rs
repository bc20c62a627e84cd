//! Shared pieces of the rlcode binaries: the JSONL records and their reader/writer (errors name
//! `file:line`), exit codes, the flags every binary takes, content hashing, pass@k and the
//! group advantage estimators.
//!
//! Every stage reads records as JSON objects, adds its own fields and passes every other field
//! through untouched, so the reader hands out [`serde_json::Map`]s and the typed views in
//! [`records`] are parsed from them on demand.

pub mod advantage;
pub mod cli;
pub mod error;
pub mod hash;
pub mod jsonl;
pub mod metrics;
pub mod paths;
pub mod records;
pub mod testing;

pub use error::{Error, ExitCode, RecordError, Result};

/// The `setup` of every problem `rl-data import codeio` writes: `_rl_same(got, want)`, the
/// comparison its tests make. rl-verify recognises it (by this exact text) and makes the same
/// comparison on the host.
pub const CODEIO_SETUP: &str = include_str!("codeio_setup.py");
pub use jsonl::{JsonlReader, JsonlWriter, Line};

//! JSON Lines in and out.
//!
//! The reader walks the inputs named on the command line in order (`-`, or none at all, means
//! stdin; a name ending in `.gz` is decompressed) and hands out one JSON object per non-blank
//! line. A line that is not valid UTF-8, not JSON, or not an object is a [`RecordError`] naming
//! `file:line`; the caller decides whether to stop or go on (see [`Skipper`]). I/O errors are
//! fatal.

use crate::error::{Error, ExitCode, RecordError, Result};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One input record and where it came from.
#[derive(Debug, Clone)]
pub struct Line {
    pub file: Arc<str>,
    /// 1-based line number within `file`.
    pub line: usize,
    pub value: Map<String, Value>,
}

impl Line {
    /// An error about this record, to report with its position.
    pub fn error(&self, message: impl Into<String>) -> RecordError {
        RecordError {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        }
    }

    /// A required string field.
    pub fn str_field(&self, key: &str) -> Result<&str, RecordError> {
        match self.value.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.error(format!("field \"{key}\" must be a string"))),
            None => Err(self.error(format!("missing field \"{key}\""))),
        }
    }

    /// Parse a field into a typed value, with an error that names the field.
    pub fn typed_field<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, RecordError> {
        let v = self
            .value
            .get(key)
            .ok_or_else(|| self.error(format!("missing field \"{key}\"")))?;
        T::deserialize(v).map_err(|e| self.error(format!("field \"{key}\": {e}")))
    }

    /// Parse the whole record into a typed value.
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, RecordError> {
        T::deserialize(&Value::Object(self.value.clone())).map_err(|e| self.error(e.to_string()))
    }
}

struct Input {
    name: Arc<str>,
    reader: Box<dyn BufRead + Send>,
}

/// Reads JSON objects, one per line, from a sequence of inputs.
pub struct JsonlReader {
    inputs: std::collections::VecDeque<Input>,
    line: usize,
    buf: Vec<u8>,
}

fn open_input(path: &Path) -> Result<Input> {
    if path == Path::new("-") {
        return Ok(Input {
            name: Arc::from("-"),
            reader: Box::new(BufReader::new(std::io::stdin())),
        });
    }
    let file = std::fs::File::open(path).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn BufRead + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    Ok(Input {
        name: Arc::from(path.display().to_string()),
        reader,
    })
}

impl JsonlReader {
    /// Open every input now, so that a missing file is reported before any work starts.
    /// No inputs means stdin.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut inputs = std::collections::VecDeque::new();
        if paths.is_empty() {
            inputs.push_back(open_input(Path::new("-"))?);
        }
        for p in paths {
            inputs.push_back(open_input(p)?);
        }
        Ok(Self {
            inputs,
            line: 0,
            buf: Vec::new(),
        })
    }

    /// Read from any reader, reporting positions under `name`.
    pub fn from_reader(name: &str, reader: impl BufRead + Send + 'static) -> Self {
        let mut inputs = std::collections::VecDeque::new();
        inputs.push_back(Input {
            name: Arc::from(name),
            reader: Box::new(reader),
        });
        Self {
            inputs,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The next record: `Ok(line)`, `Err(Error::Record(..))` for a bad line (reading may go on),
    /// or another error (fatal). `None` at the end of the last input.
    pub fn next_record(&mut self) -> Option<Result<Line>> {
        loop {
            let input = self.inputs.front_mut()?;
            self.buf.clear();
            match input.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.inputs.pop_front();
                    self.line = 0;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let name = input.name.to_string();
                    self.inputs.clear();
                    return Some(Err(Error::Open {
                        path: PathBuf::from(name),
                        source: e,
                    }));
                }
            }
            self.line += 1;
            let file = input.name.clone();
            let err = |message: String| {
                Some(Err(Error::Record(RecordError {
                    file: file.to_string(),
                    line: self.line,
                    message,
                })))
            };
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t,
                Err(e) => return err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
            };
            // A byte-order mark before a file's first record (editors add one) is not data.
            let text = match self.line {
                1 => text.strip_prefix('\u{feff}').unwrap_or(text),
                _ => text,
            };
            if text.trim().is_empty() {
                continue;
            }
            return match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(value)) => Some(Ok(Line {
                    file,
                    line: self.line,
                    value,
                })),
                Ok(_) => err("expected a JSON object".to_string()),
                Err(e) if e.to_string().contains("escape") && text.contains("\\u") => err(format!(
                    "malformed JSON: {e} (a \\ud800-\\udfff escape must be one half of a surrogate \
                     pair: a lone surrogate is not Unicode text)"
                )),
                Err(e) => err(format!("malformed JSON: {e}")),
            };
        }
    }

    /// Read up to `max` records, stopping early at the first bad one (returned beside them).
    /// Fatal errors are returned as `Err`.
    pub fn next_batch(&mut self, max: usize) -> Result<(Vec<Line>, Option<RecordError>)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.next_record() {
                None => break,
                Some(Ok(l)) => out.push(l),
                Some(Err(Error::Record(e))) => return Ok((out, Some(e))),
                Some(Err(e)) => return Err(e),
            }
        }
        Ok((out, None))
    }
}

impl Iterator for JsonlReader {
    type Item = Result<Line>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Writes one JSON object per line through a buffer.
pub struct JsonlWriter<W: Write> {
    out: std::io::BufWriter<W>,
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
        }
    }

    pub fn write(&mut self, value: &impl serde::Serialize) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// What to do with bad records: stop at the first (the default), or report each on stderr and
/// go on (`--keep-going`), remembering that some were skipped.
#[derive(Debug)]
pub struct Skipper {
    program: &'static str,
    keep_going: bool,
    skipped: usize,
}

impl Skipper {
    pub fn new(program: &'static str, keep_going: bool) -> Self {
        Self {
            program,
            keep_going,
            skipped: 0,
        }
    }

    /// `Ok(())` when the record may be skipped; the error itself when the run must stop.
    pub fn skip(&mut self, err: RecordError) -> Result<()> {
        if self.keep_going {
            eprintln!("{}: {err} (skipped)", self.program);
            self.skipped += 1;
            Ok(())
        } else {
            Err(Error::Record(err))
        }
    }

    /// `item`'s value, or `None` for a bad record skipped under `--keep-going`; without it a
    /// bad record, and always any other error, ends the run.
    pub fn keep<T>(&mut self, item: Result<T>) -> Result<Option<T>> {
        match item {
            Ok(t) => Ok(Some(t)),
            Err(Error::Record(e)) => self.skip(e).map(|()| None),
            Err(e) => Err(e),
        }
    }

    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// 0, or 1 when records were skipped.
    pub fn exit_code(&self) -> ExitCode {
        if self.skipped > 0 {
            ExitCode::Skipped
        } else {
            ExitCode::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_skipped_and_a_lone_surrogate_is_named() {
        let read = |text: &str| {
            JsonlReader::from_reader(
                "in.jsonl",
                std::io::Cursor::new(text.to_string().into_bytes()),
            )
            .collect::<Vec<_>>()
        };
        let got = read("\u{feff}{\"a\": 1}\n{\"b\": 2}\n");
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.is_ok()));
        let err = read("{\"a\": \"\\ud800\"}\n")
            .remove(0)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("in.jsonl:1: malformed JSON"), "{err}");
        assert!(err.contains("lone surrogate"), "{err}");
    }
    use std::io::Cursor;

    fn reader(text: &'static [u8]) -> JsonlReader {
        JsonlReader::from_reader("in.jsonl", Cursor::new(text))
    }

    #[test]
    fn reads_objects_and_skips_blank_lines() {
        let mut r = reader(b"{\"a\":1}\n\n  \n{\"b\":2}");
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(a.line, 1);
        let b = r.next_record().unwrap().unwrap();
        assert_eq!(b.line, 4);
        assert_eq!(b.value["b"], 2);
        assert!(r.next_record().is_none());
    }

    #[test]
    fn bad_lines_name_file_and_line_and_reading_goes_on() {
        let mut r = reader(b"{\"a\":1}\n{oops\n[1]\n\xff\xfe\n{\"z\":0}\n");
        assert!(r.next_record().unwrap().is_ok());
        let e = r.next_record().unwrap().unwrap_err().to_string();
        assert!(e.starts_with("in.jsonl:2: malformed JSON"), "{e}");
        let e = r.next_record().unwrap().unwrap_err().to_string();
        assert_eq!(e, "in.jsonl:3: expected a JSON object");
        let e = r.next_record().unwrap().unwrap_err().to_string();
        assert_eq!(e, "in.jsonl:4: invalid UTF-8 at byte 0");
        assert_eq!(r.next_record().unwrap().unwrap().line, 5);
    }

    #[test]
    fn batch_stops_at_first_bad_record() {
        let mut r = reader(b"{}\n{}\nnope\n{}\n");
        let (lines, bad) = r.next_batch(10).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(bad.unwrap().line, 3);
        let (lines, bad) = r.next_batch(10).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(bad.is_none());
    }

    #[test]
    fn field_errors_name_the_field() {
        let mut r = reader(b"{\"id\": 3}\n");
        let l = r.next_record().unwrap().unwrap();
        assert_eq!(
            l.str_field("id").unwrap_err().to_string(),
            "in.jsonl:1: field \"id\" must be a string"
        );
        assert_eq!(
            l.str_field("x").unwrap_err().to_string(),
            "in.jsonl:1: missing field \"x\""
        );
    }

    #[test]
    fn skipper_counts_or_stops() {
        let e = RecordError {
            file: "-".into(),
            line: 1,
            message: "bad".into(),
        };
        let mut s = Skipper::new("t", false);
        assert!(s.skip(e.clone()).is_err());
        let mut s = Skipper::new("t", true);
        s.skip(e).unwrap();
        assert_eq!(s.exit_code(), ExitCode::Skipped);
    }
}

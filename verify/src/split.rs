//! Value tests: an assert test whose check compares a value the program computes with an
//! expected value that needs no program (`assert f(x) == [1, 2]`, `assert abs(f(x) - 0.5) <
//! 1e-6`, CodeI/O's `assert _rl_same(main_solution(...), ...)`, ...). Such a test is split, in
//! an instance that runs no program (harness.py, mode `p`), into the expression the program's
//! instance evaluates and the check the host applies to its value: the expected value never
//! enters the program's interpreter and the comparison is made by [`crate::value`], out of the
//! program's reach. Any other assert test runs in the program's interpreter, as before, behind
//! the harness's checks (docs/security.md).

use crate::value::{PyValue, close, py_eq, rl_same};
use rlcode_core::records::Status;
use serde_json::Value as Json;

/// How an assert test runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// In the program's interpreter, to completion (harness mode `a`): the reason it is not a
    /// value test, and the test rewritten so that every value it compares is exact
    /// (`__rl_exact__`); `None` where the analysis failed, and the test runs as written.
    Run(String, Option<String>),
    /// As a value test.
    Value(ValueTest),
}

/// The program's side of a value test, and the host's.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueTest {
    /// `<imports>\0<expression>`: what harness mode `v` runs after the program and the setup.
    pub code: String,
    pub check: Check,
}

/// The check the host applies to the reported value.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Eq(PyValue),
    Ne(PyValue),
    /// `is None`, `is True`, `is False`.
    Is(PyValue),
    IsNot(PyValue),
    /// `abs(value - want) < tol` (`<=` with `inclusive`).
    Close {
        want: PyValue,
        tol: PyValue,
        inclusive: bool,
    },
    /// CodeI/O's `_rl_same(value, want)`.
    RlSame(PyValue),
    Truthy,
    Falsy,
}

impl ValueTest {
    /// The verdict on the harness's `VALUE <json>` report.
    pub fn judge(&self, report: &str) -> (Status, Option<String>) {
        let got = match serde_json::from_str::<Json>(report.trim())
            .map_err(|e| e.to_string())
            .and_then(|j| PyValue::decode(&j))
        {
            Ok(v) => v,
            Err(e) => return (Status::Error, Some(format!("malformed value report: {e}"))),
        };
        let same_object = |want: &PyValue| {
            // `is` on None, True and False: the value must be that very object, so of its type.
            std::mem::discriminant(&got) == std::mem::discriminant(want) && got == *want
        };
        let passed = match &self.check {
            Check::Eq(want) => py_eq(&got, want),
            Check::Ne(want) => !py_eq(&got, want),
            Check::Is(want) => same_object(want),
            Check::IsNot(want) => !same_object(want),
            Check::Close {
                want,
                tol,
                inclusive,
            } => match close(&got, want, tol, *inclusive) {
                Ok(b) => b,
                Err(e) => return (Status::Error, Some(format!("{e} (in test)"))),
            },
            Check::RlSame(want) => rl_same(&got, want),
            Check::Truthy => got.truthy(),
            Check::Falsy => !got.truthy(),
        };
        if passed {
            (Status::Pass, None)
        } else {
            (
                Status::Fail,
                Some(format!("AssertionError: got {} (in test)", got.render(120))),
            )
        }
    }
}

impl Split {
    /// Parse one `SPLIT <i> <json>` record's JSON.
    pub(crate) fn parse(text: &str) -> Result<Split, String> {
        let j: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(why) = j.get("run") {
            let code = j.get("code").and_then(Json::as_str).map(str::to_string);
            return Ok(Split::Run(why.as_str().unwrap_or("").to_string(), code));
        }
        let s = |k: &str| {
            j.get(k)
                .and_then(Json::as_str)
                .ok_or_else(|| format!("missing {k:?}"))
        };
        let v = |k: &str| PyValue::decode(j.get(k).ok_or_else(|| format!("missing {k:?}"))?);
        let check = match s("kind")? {
            "eq" => Check::Eq(v("want")?),
            "ne" => Check::Ne(v("want")?),
            "is" => Check::Is(v("want")?),
            "is_not" => Check::IsNot(v("want")?),
            "close" | "close_le" => Check::Close {
                want: v("want")?,
                tol: v("tol")?,
                inclusive: s("kind")? == "close_le",
            },
            "rl_same" => Check::RlSame(v("want")?),
            "truthy" => Check::Truthy,
            "falsy" => Check::Falsy,
            k => return Err(format!("unknown kind {k:?}")),
        };
        let (imports, expr) = (s("imports")?, s("expr")?);
        if imports.contains('\0') || expr.contains('\0') {
            return Err("a NUL in the test".into());
        }
        Ok(Split::Value(ValueTest {
            code: format!("{imports}\0{expr}"),
            check,
        }))
    }
}

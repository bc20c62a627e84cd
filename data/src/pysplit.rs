//! A small line-based reader of Python test code: enough structure to cut HumanEval's
//! `check(candidate)` into one test per top-level assert without a Python parser.
//!
//! The source is grouped into *logical lines* (a statement line and its continuations): a
//! physical line continues the current logical line while a bracket is open, a string is open
//! (triple-quoted, or single-quoted and ended by a backslash), or the line ends with a
//! continuation backslash. Brackets, quotes and `#` inside string literals and comments are
//! ignored, so `assert f("(") == ")"  # )` is one line and `assert f(\n  [1,\n 2])` is one
//! statement. A statement of `check`'s body is a logical line at the body's indentation together
//! with the deeper lines after it (the body of a `for`, `if`, ...).

use std::fmt;

/// What went wrong reading a test string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError(pub String);

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SplitError {}

/// One logical line: physical lines `start..end` of the source.
#[derive(Debug, Clone)]
struct Logical {
    start: usize,
    end: usize,
    /// Leading white space of the first physical line, in characters.
    indent: usize,
    /// Only white space and comments.
    blank: bool,
    /// The first token is the keyword `assert`.
    starts_with_assert: bool,
    /// `assert` occurs as a token anywhere outside strings and comments.
    has_assert: bool,
}

/// The source cut into physical lines (each with its line end) and logical lines.
struct Scanned<'a> {
    lines: Vec<&'a str>,
    /// Per physical line: it begins inside a string literal, so its leading white space is
    /// part of the string and must not be touched when dedenting.
    starts_in_string: Vec<bool>,
    logicals: Vec<Logical>,
}

#[derive(Clone, Copy)]
struct OpenString {
    quote: u8,
    triple: bool,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

fn leading_ws(line: &str) -> usize {
    line.bytes()
        .take_while(|&c| c == b' ' || c == b'\t')
        .count()
}

fn scan(src: &str) -> Scanned<'_> {
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut starts_in_string = Vec::with_capacity(lines.len());
    let mut logicals = Vec::new();
    let mut string: Option<OpenString> = None;
    let mut depth: usize = 0;
    let mut current: Option<Logical> = None;

    for (i, line) in lines.iter().enumerate() {
        starts_in_string.push(string.is_some());
        let bytes = line.as_bytes();
        let logical = current.get_or_insert_with(|| {
            let indent = leading_ws(line);
            let rest = line[indent..].trim_end();
            Logical {
                start: i,
                end: i,
                indent,
                blank: rest.is_empty() || rest.starts_with('#'),
                starts_with_assert: false,
                has_assert: false,
            }
        });
        let mut first_token = logical.start == i && string.is_none();
        let mut continued = false;
        let mut j = 0;
        while j < bytes.len() {
            let c = bytes[j];
            if let Some(open) = string {
                if c == b'\\' {
                    // An escape, or a backslash-newline that carries the string on.
                    j += 2;
                    continue;
                }
                if open.triple {
                    if bytes[j..].starts_with(&[open.quote; 3]) {
                        string = None;
                        j += 3;
                        continue;
                    }
                } else if c == open.quote || c == b'\n' {
                    // An unterminated single-quoted string ends at the line end (a syntax
                    // error in Python); closing it keeps one bad line from swallowing the rest.
                    string = None;
                }
                j += 1;
                continue;
            }
            match c {
                b'#' => break,
                b'\'' | b'"' => {
                    let triple = bytes[j..].starts_with(&[c; 3]);
                    string = Some(OpenString { quote: c, triple });
                    j += if triple { 3 } else { 1 };
                    first_token = false;
                    continue;
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b'\\' => {
                    let rest = &bytes[j + 1..];
                    if rest == b"\n" || rest == b"\r\n" || rest.is_empty() {
                        continued = true;
                    }
                }
                c if is_ident_start(c) => {
                    let len = bytes[j..].iter().take_while(|&&b| is_ident_char(b)).count();
                    let word = &bytes[j..j + len];
                    // A string prefix such as r"..", f'..' or b"""..""" is not a word.
                    let next = bytes.get(j + len).copied();
                    let is_prefix = len <= 2
                        && matches!(next, Some(b'\'' | b'"'))
                        && word.iter().all(|b| b"rRbBuUfF".contains(b));
                    if !is_prefix {
                        if word == b"assert" {
                            logical.has_assert = true;
                            if first_token {
                                logical.starts_with_assert = true;
                            }
                        }
                        first_token = false;
                    }
                    j += len;
                    continue;
                }
                c if c.is_ascii_whitespace() => {}
                _ => first_token = false,
            }
            j += 1;
        }
        if string.is_none() && depth == 0 && !continued {
            let mut done = current.take().expect("a logical line is open");
            done.end = i + 1;
            logicals.push(done);
        }
    }
    if let Some(mut open) = current.take() {
        open.end = lines.len();
        logicals.push(open);
    }
    Scanned {
        lines,
        starts_in_string,
        logicals,
    }
}

/// `check`'s body cut into tests, and the module code around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSplit {
    /// Everything outside `def check` (metadata, imports, helpers), in source order.
    pub module: String,
    /// The name of check's parameter (`candidate`).
    pub param: String,
    /// One program fragment per test, dedented to column 0.
    pub tests: Vec<String>,
    /// Asserts of the constant `True`, which test nothing and were dropped.
    pub dropped_constant_asserts: usize,
    /// The body tests inside a compound statement and had no top-level assert: it is kept as one
    /// test.
    pub whole: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Assert,
    ConstantAssert,
    /// A compound statement (`for`, `if`, ...) with an assert inside.
    ContainsAssert,
    Other,
}

/// Cut the function `def check(<param>):` of a test string into tests.
///
/// Each top-level assert of the body becomes a test made of the body's earlier non-assert
/// statements, in order, then the assert; a top-level compound statement with asserts inside
/// (a `for` loop of random checks) becomes one test the same way. Asserts of the constant
/// `True` are dropped. A body with no assert at all is one test.
pub fn split_check(src: &str) -> Result<CheckSplit, SplitError> {
    let s = scan(src);
    let text = |l: &Logical| s.lines[l.start][l.indent..].trim_end().to_string();
    let def = s
        .logicals
        .iter()
        .position(|l| l.indent == 0 && text(l).starts_with("def check("))
        .ok_or_else(|| SplitError("no top-level \"def check(...)\"".into()))?;
    let param = check_param(&text(&s.logicals[def]))?;

    let mut body_end = def + 1;
    while body_end < s.logicals.len() {
        let l = &s.logicals[body_end];
        if !(l.blank || l.indent > 0) {
            break;
        }
        body_end += 1;
    }
    // Blank and comment lines at the end belong to the module, not to check.
    while body_end > def + 1 && s.logicals[body_end - 1].blank {
        body_end -= 1;
    }
    let body = &s.logicals[def + 1..body_end];
    let body_indent = body
        .iter()
        .find(|l| !l.blank)
        .map(|l| l.indent)
        .ok_or_else(|| SplitError("check has no body on the lines after its def".into()))?;

    let mut statements: Vec<Vec<&Logical>> = Vec::new();
    for l in body {
        let starts_statement = !l.blank
            && l.indent <= body_indent
            && !is_clause(&text(l))
            && !statements
                .last()
                .is_some_and(|st| text(st.last().expect("non-empty")).starts_with('@'));
        match statements.last_mut() {
            Some(st) if !starts_statement => st.push(l),
            _ if l.blank => {}
            _ => statements.push(vec![l]),
        }
    }
    for st in &mut statements {
        while st.last().is_some_and(|l| l.blank) {
            st.pop();
        }
    }

    let dedented = |st: &[&Logical]| {
        let mut out = String::new();
        let (first, last) = (st[0].start, st[st.len() - 1].end);
        for i in first..last {
            let line = s.lines[i];
            if s.starts_in_string[i] {
                out.push_str(line);
            } else {
                out.push_str(&line[leading_ws(line).min(body_indent)..]);
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    };

    let mut tests = Vec::new();
    let mut context = String::new();
    let mut dropped = 0;
    let mut all = String::new();
    for st in &statements {
        let code = dedented(st);
        all.push_str(&code);
        match kind(st, &text(st[0])) {
            Kind::Assert | Kind::ContainsAssert => tests.push(format!("{context}{code}")),
            Kind::ConstantAssert => dropped += 1,
            Kind::Other => context.push_str(&code),
        }
    }
    let has_top_level_assert = statements
        .iter()
        .any(|st| kind(st, &text(st[0])) == Kind::Assert);
    let whole = tests.is_empty() || !has_top_level_assert;
    if tests.is_empty() && !all.is_empty() {
        tests.push(all);
    }

    let mut module = String::new();
    let outside = s.logicals[..def].iter().chain(&s.logicals[body_end..]);
    for l in outside {
        for line in &s.lines[l.start..l.end] {
            module.push_str(line);
        }
    }
    Ok(CheckSplit {
        module: module.trim().to_string(),
        param,
        tests,
        dropped_constant_asserts: dropped,
        whole,
    })
}

fn kind(st: &[&Logical], first_text: &str) -> Kind {
    if st[0].starts_with_assert {
        if is_constant_true(first_text) {
            Kind::ConstantAssert
        } else {
            Kind::Assert
        }
    } else if st.iter().any(|l| l.has_assert) {
        Kind::ContainsAssert
    } else {
        Kind::Other
    }
}

/// `assert True`, `assert True, "message"`, `assert (True)`.
fn is_constant_true(assert_line: &str) -> bool {
    let rest = assert_line["assert".len()..].trim_start();
    let rest = rest
        .strip_prefix("(True)")
        .or_else(|| rest.strip_prefix("True"));
    rest.is_some_and(|r| {
        let r = r.trim_start();
        r.is_empty() || r.starts_with(',') || r.starts_with('#')
    })
}

/// A line that continues the compound statement before it rather than starting a new one.
fn is_clause(text: &str) -> bool {
    ["else", "elif", "except", "finally"].iter().any(|kw| {
        text.strip_prefix(kw)
            .is_some_and(|r| r.starts_with([':', ' ', '(', '\t']))
    })
}

fn check_param(def_line: &str) -> Result<String, SplitError> {
    let inner = def_line
        .strip_prefix("def check(")
        .and_then(|r| r.split_once(')'))
        .map(|(p, _)| p)
        .ok_or_else(|| SplitError(format!("cannot read the parameter of \"{def_line}\"")))?;
    let name = inner.split([',', ':', '=']).next().unwrap_or("").trim();
    if name.is_empty() || !name.bytes().all(is_ident_char) {
        return Err(SplitError(format!(
            "check must take the function under test as its first parameter: \"{def_line}\""
        )));
    }
    let after = def_line
        .rsplit_once(':')
        .map(|(_, r)| r.trim())
        .unwrap_or("");
    if !after.is_empty() && !after.starts_with('#') {
        return Err(SplitError(
            "check's body must start on the line after its def".into(),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(src: &str) -> CheckSplit {
        split_check(src).unwrap()
    }

    #[test]
    fn one_test_per_assert_with_module_code_apart() {
        let src = "\n\nMETADATA = {\n    'author': 'jt',\n}\n\n\ndef check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n\n";
        let s = split(src);
        assert_eq!(s.param, "candidate");
        assert_eq!(s.module, "METADATA = {\n    'author': 'jt',\n}");
        assert_eq!(
            s.tests,
            ["assert candidate(1) == 2\n", "assert candidate(2) == 3\n"]
        );
        assert!(!s.whole);
    }

    #[test]
    fn multi_line_asserts_stay_whole() {
        let src = "def check(c):\n    assert c([1,\n              2]) == [\n        2, 1]\n    assert c(\n        []) \\\n        == []\n";
        let s = split(src);
        assert_eq!(
            s.tests,
            [
                "assert c([1,\n          2]) == [\n    2, 1]\n",
                "assert c(\n    []) \\\n    == []\n"
            ]
        );
    }

    #[test]
    fn brackets_and_hashes_inside_strings_and_comments_are_ignored() {
        let src = concat!(
            "def check(c):\n",
            "    assert c(\"(\") == ')'  # closes ( nothing\n",
            "    assert c('#[') == \"\\\"]\"\n",
            "    assert c(r'\\\\') == 1\n",
            "    assert c(\"\"\"a (\n  b [\"\"\") == '''x\n    ''' # ]\n",
            "    assert c(f\"{1}(\") == 2\n",
        );
        let s = split(src);
        assert_eq!(s.tests.len(), 5, "{:#?}", s.tests);
        // The continuation lines of the triple-quoted strings keep their white space.
        assert_eq!(
            s.tests[3],
            "assert c(\"\"\"a (\n  b [\"\"\") == '''x\n    ''' # ]\n"
        );
        assert_eq!(s.tests[4], "assert c(f\"{1}(\") == 2\n");
    }

    #[test]
    fn non_assert_statements_come_before_each_later_assert() {
        let src = "def check(candidate):\n\n    # simple cases\n    import math\n    assert candidate(1) == 1\n    lst = [\n        1, 2]\n    assert candidate(lst) == 3, \"msg (\"\n";
        let s = split(src);
        assert_eq!(
            s.tests,
            [
                "import math\nassert candidate(1) == 1\n",
                "import math\nlst = [\n    1, 2]\nassert candidate(lst) == 3, \"msg (\"\n"
            ]
        );
    }

    #[test]
    fn tests_inside_a_loop_are_one_test() {
        let src = "def check(candidate):\n    import random\n    rng = random.Random(42)\n    for _ in range(100):\n        x = rng.randint(1, 4)\n\n        assert candidate(x) == x\n";
        let s = split(src);
        assert!(s.whole);
        assert_eq!(
            s.tests,
            [
                "import random\nrng = random.Random(42)\nfor _ in range(100):\n    x = rng.randint(1, 4)\n\n    assert candidate(x) == x\n"
            ]
        );
    }

    #[test]
    fn a_loop_after_top_level_asserts_is_a_test_of_its_own() {
        let src = "def check(candidate):\n    assert candidate(0) == 0\n    for x in range(3):\n        assert candidate(x) == x\n    else:\n        assert True\n";
        let s = split(src);
        assert!(!s.whole);
        assert_eq!(s.tests.len(), 2);
        assert_eq!(
            s.tests[1],
            "for x in range(3):\n    assert candidate(x) == x\nelse:\n    assert True\n"
        );
    }

    #[test]
    fn constant_true_asserts_are_dropped() {
        let src = "def check(candidate):\n    assert True, \"This prints if this assert fails 1 (good for debugging!)\"\n    assert candidate(1)\n    assert True\n    assert Truest(candidate)\n";
        let s = split(src);
        assert_eq!(s.dropped_constant_asserts, 2);
        assert_eq!(
            s.tests,
            ["assert candidate(1)\n", "assert Truest(candidate)\n"]
        );
    }

    #[test]
    fn code_after_check_is_module_code() {
        let src = "def check(candidate):\n    assert candidate()\n\ndef helper():\n    return 1\n";
        let s = split(src);
        assert_eq!(s.module, "def helper():\n    return 1");
        assert_eq!(s.tests, ["assert candidate()\n"]);
    }

    #[test]
    fn the_word_assert_in_a_string_or_name_is_not_an_assert() {
        let src = "def check(candidate):\n    x = 'assert'\n    assertion = candidate(x)\n    print(assertion)\n";
        let s = split(src);
        assert!(s.whole);
        assert_eq!(s.tests.len(), 1);
    }

    #[test]
    fn a_test_string_without_check_is_an_error() {
        let e = split_check("assert f(1) == 2\n").unwrap_err();
        assert!(e.0.contains("def check"), "{e}");
        let e = split_check("def check(candidate): assert candidate()\n").unwrap_err();
        assert!(e.0.contains("line after"), "{e}");
        let e = split_check("def check():\n    pass\n").unwrap_err();
        assert!(e.0.contains("first parameter"), "{e}");
    }
}

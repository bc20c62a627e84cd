//! Samples made from problems without a policy: the reference programs (to check a dataset
//! against the verifier) and `pass` stubs (programs that must never pass every test).

use rlcode_core::{Line, RecordError};
use serde_json::{Value, json};

/// The sample of a problem's reference program: `completion` is what follows the prompt when
/// the reference starts with it (HumanEval's canonical solution), else the whole reference.
pub fn reference_sample(line: &Line) -> Result<Value, RecordError> {
    let id = line.str_field("id")?;
    let reference = reference(line)?;
    let completion = reference_completion(line)?;
    Ok(sample(id, completion, reference, "reference"))
}

/// The part of a problem's reference program a model writes: what follows the prompt when the
/// reference starts with it, else the whole reference.
pub fn reference_completion(line: &Line) -> Result<&str, RecordError> {
    let reference = reference(line)?;
    let prompt = optional_prompt(line)?;
    Ok(prompt
        .filter(|p| !p.is_empty())
        .and_then(|p| reference.strip_prefix(p))
        .unwrap_or(reference))
}

fn reference(line: &Line) -> Result<&str, RecordError> {
    let id = line.str_field("id")?;
    match line.value.get("reference") {
        Some(Value::String(r)) => Ok(r),
        Some(_) => Err(line.error("field \"reference\" must be a string")),
        None => Err(line.error(format!("problem \"{id}\" has no \"reference\" program"))),
    }
}

/// The sample of a problem whose body is `pass`: the prompt, then `pass` indented as a body.
pub fn stub_sample(line: &Line) -> Result<Value, RecordError> {
    let id = line.str_field("id")?;
    let prompt = optional_prompt(line)?.unwrap_or("");
    let completion = format!("{}pass\n", " ".repeat(body_indent(prompt)));
    let mut code = prompt.to_string();
    if !code.is_empty() && !code.ends_with('\n') {
        code.push('\n');
    }
    code.push_str(&completion);
    Ok(sample(id, &completion, &code, "stub"))
}

fn optional_prompt(line: &Line) -> Result<Option<&str>, RecordError> {
    match line.value.get("prompt") {
        None => Ok(None),
        Some(Value::String(p)) => Ok(Some(p)),
        Some(_) => Err(line.error("field \"prompt\" must be a string")),
    }
}

/// The indentation a body written after `prompt` needs: that of the prompt's last line (its
/// docstring's closing quotes), one level deeper after a line ending in `:`, and at least one
/// level.
fn body_indent(prompt: &str) -> usize {
    let Some(last) = prompt.lines().rev().find(|l| !l.trim().is_empty()) else {
        return 0;
    };
    let indent = last.len() - last.trim_start().len();
    if last.trim_end().ends_with(':') {
        indent + 4
    } else {
        indent.max(4)
    }
}

fn sample(problem_id: &str, completion: &str, code: &str, model: &str) -> Value {
    json!({
        "problem_id": problem_id,
        "sample": 0,
        "completion": completion,
        "code": code,
        "model": model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlcode_core::testing::line;

    #[test]
    fn reference_completion_is_what_follows_the_prompt() {
        let s = reference_sample(&line(
            r#"{"id":"a","prompt":"def f():\n","reference":"def f():\n    return 1\n","tests":[]}"#,
        ))
        .unwrap();
        assert_eq!(s["completion"], "    return 1\n");
        assert_eq!(s["code"], "def f():\n    return 1\n");
        assert_eq!(s["model"], "reference");
        assert_eq!(s["sample"], 0);
        let s = reference_sample(&line(r#"{"id":"a","prompt":"x","reference":"y"}"#)).unwrap();
        assert_eq!(s["completion"], "y");
    }

    #[test]
    fn a_problem_without_reference_is_an_error_naming_the_line() {
        let e = reference_sample(&line(r#"{"id":"a","prompt":"p"}"#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.jsonl:1: problem \"a\" has no \"reference\" program"
        );
    }

    #[test]
    fn stubs_indent_pass_as_a_body() {
        let s = stub_sample(&line(
            r#"{"id":"a","prompt":"def f(x):\n    \"\"\"Doc.\"\"\"\n"}"#,
        ))
        .unwrap();
        assert_eq!(s["code"], "def f(x):\n    \"\"\"Doc.\"\"\"\n    pass\n");
        assert_eq!(s["completion"], "    pass\n");
        let s = stub_sample(&line(r#"{"id":"a","prompt":"class A:\n    def f(x):"}"#)).unwrap();
        assert_eq!(s["code"], "class A:\n    def f(x):\n        pass\n");
        let s = stub_sample(&line(r#"{"id":"a","prompt":"def f():\n"}"#)).unwrap();
        assert_eq!(s["code"], "def f():\n    pass\n");
    }
}

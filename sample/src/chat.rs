//! Chat prompts: a checkpoint's Hugging Face chat template, rendered with minijinja, and the
//! rule that takes the program out of a chat answer.
//!
//! The template is the Jinja string `chat_template` of the model directory's
//! `tokenizer_config.json` (or the file `chat_template.jinja` next to it, which takes
//! precedence, as in transformers). It is rendered as transformers' `apply_chat_template` does:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, the variables `messages`,
//! `add_generation_prompt` (true), the special tokens of `tokenizer_config.json` (`bos_token`,
//! `eos_token`, `pad_token`, `unk_token`) and the function `raise_exception(msg)`; Python string
//! and dict methods (`.strip()`, `.items()`, ...) come from minijinja-contrib's pycompat.
//! Like transformers, rl-sample adds no BOS of its own to a templated prompt: a template that
//! wants one writes `{{ bos_token }}`.

use anyhow::{Context, anyhow, bail};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// The default user message; `{prompt}` is replaced by the problem's prompt (followed by a
/// newline when it does not end with one).
pub const DEFAULT_USER_MESSAGE: &str = "Complete the following Python function. Answer with the \
whole function in one ```python code block.\n\n```python\n{prompt}```";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The messages for one problem: the system prompt (if any), then the user message.
pub fn messages(system_prompt: Option<&str>, user_message: &str, prompt: &str) -> Vec<Message> {
    let mut out = Vec::new();
    if let Some(sp) = system_prompt {
        out.push(Message {
            role: "system".into(),
            content: sp.to_string(),
        });
    }
    let mut prompt = prompt.to_string();
    if !prompt.ends_with('\n') {
        prompt.push('\n');
    }
    out.push(Message {
        role: "user".into(),
        content: user_message.replace("{prompt}", &prompt),
    });
    out
}

/// A checkpoint's chat template and the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// Where the template came from (for error messages).
    pub origin: PathBuf,
    pub source: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

/// A special token in tokenizer_config.json: a string, or an AddedToken object with `content`.
fn token_string(cfg: &Json, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// Load the template of the model directory `dir` (see the module docs).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Json = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Json::Null,
            Err(e) => return Err(anyhow!("{}: {e}", cfg_path.display())),
        };
        let jinja_path = dir.join("chat_template.jinja");
        let (origin, source) = if jinja_path.is_file() {
            let s = std::fs::read_to_string(&jinja_path)
                .with_context(|| format!("reading {}", jinja_path.display()))?;
            (jinja_path, s)
        } else {
            match cfg.get("chat_template") {
                Some(Json::String(s)) => (cfg_path.clone(), s.clone()),
                // Several named templates: transformers uses the one named "default".
                Some(Json::Array(list)) => {
                    let default = list
                        .iter()
                        .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                        .and_then(|t| t.get("template")?.as_str())
                        .ok_or_else(|| {
                            anyhow!(
                                "{}: \"chat_template\" is a list without a template named \"default\"",
                                cfg_path.display()
                            )
                        })?;
                    (cfg_path.clone(), default.to_string())
                }
                Some(_) => bail!("{}: \"chat_template\" must be a string", cfg_path.display()),
                None => bail!(
                    "{}: the checkpoint has no chat template (no \"chat_template\" in \
                     tokenizer_config.json, no chat_template.jinja); --chat-template needs one",
                    dir.display()
                ),
            }
        };
        let t = ChatTemplate {
            origin,
            source,
            bos_token: token_string(&cfg, "bos_token"),
            eos_token: token_string(&cfg, "eos_token"),
            pad_token: token_string(&cfg, "pad_token"),
            unk_token: token_string(&cfg, "unk_token"),
        };
        // Compile once now, so a syntax error is reported before any sampling.
        t.environment()?;
        Ok(t)
    }

    fn environment(&self) -> anyhow::Result<Environment<'_>> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source)
            .map_err(|e| anyhow!("{}: chat template: {e:#}", self.origin.display()))?;
        Ok(env)
    }

    /// The prompt text for `messages`, ending with the assistant's turn opened
    /// (`add_generation_prompt=true`).
    pub fn render(&self, messages: &[Message]) -> anyhow::Result<String> {
        let env = self.environment()?;
        let tmpl = env.get_template("chat").expect("added above");
        tmpl.render(context! {
            messages => Value::from(Serde(messages)),
            add_generation_prompt => true,
            bos_token => Value::from(self.bos_token.clone()),
            eos_token => Value::from(self.eos_token.clone()),
            pad_token => Value::from(self.pad_token.clone()),
            unk_token => Value::from(self.unk_token.clone()),
        })
        .map_err(|e| {
            anyhow!(
                "{}: rendering the chat template: {e:#}",
                self.origin.display()
            )
        })
    }
}

/// The blocks of Markdown code fences in `text`: (language tag lower-cased, body). A fence
/// that is never closed runs to the end of the text (a completion cut at --max-tokens).
pub fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let (lang, body) = match after.find('\n') {
            Some(nl) => (after[..nl].trim(), &after[nl + 1..]),
            None => (after.trim(), ""),
        };
        match body.find("```") {
            Some(end) => {
                blocks.push((lang.to_ascii_lowercase(), body[..end].to_string()));
                rest = &body[end + 3..];
            }
            None => {
                blocks.push((lang.to_ascii_lowercase(), body.to_string()));
                break;
            }
        }
    }
    blocks
}

/// The code block of an answer: the first block tagged `python`, `py` or `python3`, else the
/// first untagged block; blocks tagged with another language are passed over.
pub fn fenced_block(text: &str) -> Option<String> {
    let blocks = fenced_blocks(text);
    let is_py = |l: &str| matches!(l, "python" | "py" | "python3");
    blocks
        .iter()
        .find(|(l, _)| is_py(l))
        .or_else(|| blocks.iter().find(|(l, _)| l.is_empty()))
        .map(|(_, b)| b.clone())
}

/// The program to run from a chat answer to `prompt` (a code prefix such as a function
/// signature and docstring):
///
/// 1. the answer's code block ([`fenced_block`]), or the whole answer when it has none;
/// 2. if its first non-blank line is indented, it is a function body: the program is the prompt
///    followed by it;
/// 3. otherwise the program is the block, preceded by the prompt's top-level `import` / `from`
///    lines that the block does not already contain (answers often drop `from typing import
///    List`).
pub fn extract_chat_code(prompt: &str, completion: &str) -> String {
    let block = fenced_block(completion).unwrap_or_else(|| completion.to_string());
    let first = block.lines().find(|l| !l.trim().is_empty());
    if first.is_some_and(|l| l.starts_with([' ', '\t'])) {
        let sep = if prompt.is_empty() || prompt.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        return format!("{prompt}{sep}{block}");
    }
    let present: std::collections::HashSet<&str> = block.lines().map(str::trim_end).collect();
    let imports: Vec<&str> = prompt
        .lines()
        .map(str::trim_end)
        .filter(|l| (l.starts_with("import ") || l.starts_with("from ")) && !present.contains(l))
        .collect();
    if imports.is_empty() {
        block
    } else {
        format!("{}\n{block}", imports.join("\n"))
    }
}

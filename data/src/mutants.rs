//! Mutated references: wrong programs that look right. One small syntactic change to the part
//! of the reference after the prompt (a flipped comparison, an arithmetic operator, an off-by-one
//! constant, a swapped boolean), the kind of slip that passes some tests but not all. Some
//! mutants are equivalent to the reference and pass everything; that is expected.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rlcode_core::{Line, RecordError};
use serde_json::{Value, json};

/// The replacements tried at each position, longest first so `<=` is not read as `<`.
const OPERATORS: &[(&str, &str)] = &[
    ("<=", "<"),
    (">=", ">"),
    ("==", "!="),
    ("!=", "=="),
    ("<", "<="),
    (">", ">="),
    (" + ", " - "),
    (" - ", " + "),
    (" * ", " + "),
    (" and ", " or "),
    (" or ", " and "),
    ("True", "False"),
    ("False", "True"),
    ("0", "1"),
    ("1", "0"),
];

/// Every place in `code` where an operator applies: (byte offset, from, to). Text inside string
/// literals and comments is left alone, and digits only count as whole numbers.
pub fn mutation_sites(code: &str) -> Vec<(usize, &'static str, &'static str)> {
    let bytes = code.as_bytes();
    let mut sites = Vec::new();
    let mut i = 0;
    let mut quote: Option<&str> = None;
    while i < bytes.len() {
        let rest = &code[i..];
        if let Some(q) = quote {
            if rest.starts_with('\\') {
                i += 2;
                continue;
            }
            if rest.starts_with(q) {
                i += q.len();
                quote = None;
                continue;
            }
            i += 1;
            continue;
        }
        if rest.starts_with('#') {
            i += rest.find('\n').unwrap_or(rest.len());
            continue;
        }
        if let Some(q) = ["\"\"\"", "'''", "\"", "'"]
            .iter()
            .find(|q| rest.starts_with(**q))
        {
            quote = Some(q);
            i += q.len();
            continue;
        }
        let prev_word = i > 0 && is_word(bytes[i - 1]);
        for &(from, to) in OPERATORS {
            if !rest.starts_with(from) {
                continue;
            }
            let word = from.bytes().all(is_word);
            let next_word = bytes
                .get(i + from.len())
                .is_some_and(|b| is_word(*b) || *b == b'.');
            if word && (prev_word || next_word) {
                continue;
            }
            sites.push((i, from, to));
            break;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    sites
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Up to `count` mutants of a problem's reference, each at a different site, chosen by `seed`.
pub fn mutant_samples(line: &Line, count: usize, seed: u64) -> Result<Vec<Value>, RecordError> {
    let id = line.str_field("id")?;
    let reference = line
        .str_field("reference")
        .map_err(|_| line.error(format!("problem \"{id}\" has no \"reference\" program")))?;
    let prompt = match line.value.get("prompt") {
        Some(Value::String(p)) if reference.starts_with(p.as_str()) => p.len(),
        _ => 0,
    };
    let mut sites = mutation_sites(&reference[prompt..]);
    let mix = rlcode_core::hash::content_digest([id.as_bytes(), &seed.to_le_bytes()[..]]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rlcode_core::hash::digest_word(&mix, 0));
    sites.shuffle(&mut rng);
    Ok(sites
        .into_iter()
        .take(count)
        .enumerate()
        .map(|(k, (at, from, to))| {
            let at = prompt + at;
            let code = format!(
                "{}{}{}",
                &reference[..at],
                to,
                &reference[at + from.len()..]
            );
            json!({
                "problem_id": id,
                "sample": 1 + k,
                "completion": &code[prompt..],
                "code": code,
                "model": "mutant",
                "mutation": format!("{} -> {} at byte {}", from.trim(), to.trim(), at),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_skip_strings_comments_and_names() {
        let code = "    if x <= 10 and s == 'a < b':  # 1 < 2\n        return x1 + 1\n";
        let found: Vec<(&str, &str)> = mutation_sites(code).iter().map(|s| (s.1, s.2)).collect();
        assert_eq!(
            found,
            [
                ("<=", "<"),
                (" and ", " or "),
                ("==", "!="),
                (" + ", " - "),
                ("1", "0")
            ]
        );
    }

    #[test]
    fn mutants_change_one_site_after_the_prompt_and_are_deterministic() {
        let rec =
            r#"{"id":"p","prompt":"def f(x):\n","reference":"def f(x):\n    return x < 1\n"}"#;
        let line =
            rlcode_core::JsonlReader::from_reader("p", std::io::Cursor::new(rec.to_string()))
                .next_record()
                .unwrap()
                .unwrap();
        let a = mutant_samples(&line, 5, 1).unwrap();
        let b = mutant_samples(&line, 5, 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2, "two sites: < and the constant");
        for m in &a {
            let code = m["code"].as_str().unwrap();
            assert!(code.starts_with("def f(x):\n"));
            assert_ne!(code, "def f(x):\n    return x < 1\n");
        }
    }
}

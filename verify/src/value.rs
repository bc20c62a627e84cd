//! Python values as the harness encodes them, and the comparisons a value test makes, computed
//! on the host: a program's value is compared with the expected one by these rules, which no
//! program can change (docs/security.md).
//!
//! The encoding is JSON: `null`, `true`, `false`, and tagged arrays `["i", hex]` (int),
//! `["f", repr]` (float), `["c", re, im]` (complex), `["s", utf-8 hex]` (str, lone surrogates
//! kept), `["b", hex]` (bytes or bytearray), `["l", [..]]`, `["t", [..]]`, `["S", [..]]` (set),
//! `["F", [..]]` (frozenset), `["d", [[k, v], ..]]`. A subclass of a builtin type is encoded as
//! the builtin content it holds: its own methods are never called.

use serde_json::Value as Json;
use std::collections::HashMap;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    /// Sign and magnitude in lower-case hex without leading zeros ("0" for zero).
    Int {
        negative: bool,
        hex: String,
    },
    Float(f64),
    Complex(f64, f64),
    /// UTF-8 bytes (lone surrogates encoded as `surrogatepass` does).
    Str(Vec<u8>),
    Bytes(Vec<u8>),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Set(Vec<PyValue>),
    FrozenSet(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    /// Decode the harness's encoding; `Err` names what is malformed.
    pub fn decode(j: &Json) -> Result<PyValue, String> {
        Ok(match j {
            Json::Null => PyValue::None,
            Json::Bool(b) => PyValue::Bool(*b),
            Json::Array(a) => {
                let tag = a.first().and_then(Json::as_str).ok_or("untagged value")?;
                let s = |i: usize| a.get(i).and_then(Json::as_str).ok_or("malformed value");
                let items = |i: usize| -> Result<Vec<PyValue>, String> {
                    a.get(i)
                        .and_then(Json::as_array)
                        .ok_or("malformed container")?
                        .iter()
                        .map(PyValue::decode)
                        .collect()
                };
                match tag {
                    "i" => {
                        let text = s(1)?;
                        let (negative, digits) = match text.strip_prefix('-') {
                            Some(d) => (true, d),
                            None => (false, text),
                        };
                        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
                            return Err(format!("malformed int {text:?}"));
                        }
                        let hex = digits.trim_start_matches('0').to_ascii_lowercase();
                        let hex = if hex.is_empty() { "0".into() } else { hex };
                        PyValue::Int {
                            negative: negative && hex != "0",
                            hex,
                        }
                    }
                    "f" => PyValue::Float(parse_float(s(1)?)?),
                    "c" => PyValue::Complex(parse_float(s(1)?)?, parse_float(s(2)?)?),
                    "s" => PyValue::Str(hex::decode(s(1)?).map_err(|e| e.to_string())?),
                    "b" => PyValue::Bytes(hex::decode(s(1)?).map_err(|e| e.to_string())?),
                    "l" => PyValue::List(items(1)?),
                    "t" => PyValue::Tuple(items(1)?),
                    "S" => PyValue::Set(items(1)?),
                    "F" => PyValue::FrozenSet(items(1)?),
                    "d" => {
                        let pairs = a.get(1).and_then(Json::as_array).ok_or("malformed dict")?;
                        let mut out = Vec::with_capacity(pairs.len());
                        for p in pairs {
                            match p.as_array().map(Vec::as_slice) {
                                Some([k, v]) => {
                                    out.push((PyValue::decode(k)?, PyValue::decode(v)?))
                                }
                                _ => return Err("malformed dict item".into()),
                            }
                        }
                        PyValue::Dict(out)
                    }
                    t => return Err(format!("unknown value tag {t:?}")),
                }
            }
            _ => return Err("malformed value".into()),
        })
    }

    /// Python's truth value.
    pub fn truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(b) => *b,
            PyValue::Int { hex, .. } => hex != "0",
            PyValue::Float(f) => *f != 0.0,
            PyValue::Complex(r, i) => *r != 0.0 || *i != 0.0,
            PyValue::Str(b) | PyValue::Bytes(b) => !b.is_empty(),
            PyValue::List(v) | PyValue::Tuple(v) | PyValue::Set(v) | PyValue::FrozenSet(v) => {
                !v.is_empty()
            }
            PyValue::Dict(d) => !d.is_empty(),
        }
    }

    /// The value as a number (bool, int, float), as Python's arithmetic sees it.
    fn number(&self) -> Option<Number> {
        match self {
            PyValue::Bool(b) => Some(Number::Int(i128::from(*b))),
            PyValue::Int { negative, hex } => Some(match i128::from_str_radix(hex, 16) {
                Ok(m) if *negative => Number::Int(-m),
                Ok(m) => Number::Int(m),
                Err(_) => Number::Big(big_to_f64(*negative, hex)),
            }),
            PyValue::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }

    /// The canonical key of a hashable value: equal values (1, 1.0, True) have equal keys.
    /// `None` for a NaN (equal to nothing, not even another NaN) and unhashable values.
    fn key(&self) -> Option<String> {
        let num = |negative: bool, hex: &str| format!("n{}{hex}", if negative { "-" } else { "" });
        Some(match self {
            PyValue::None => "N".into(),
            PyValue::Bool(b) => num(false, if *b { "1" } else { "0" }),
            PyValue::Int { negative, hex } => num(*negative, hex),
            PyValue::Float(f) => float_key(*f)?,
            PyValue::Complex(r, i) if *i == 0.0 => float_key(*r)?,
            PyValue::Complex(r, i) => {
                if r.is_nan() || i.is_nan() {
                    return None;
                }
                format!("c{:x},{:x}", (r + 0.0).to_bits(), (i + 0.0).to_bits())
            }
            PyValue::Str(b) => format!("s{}", hex::encode(b)),
            PyValue::Bytes(b) => format!("b{}", hex::encode(b)),
            PyValue::Tuple(v) => {
                let keys: Option<Vec<String>> = v.iter().map(PyValue::key).collect();
                format!("t({})", keys?.join(","))
            }
            PyValue::FrozenSet(v) => {
                let mut keys: Vec<String> = v.iter().map(PyValue::key).collect::<Option<_>>()?;
                keys.sort();
                format!("F({})", keys.join(","))
            }
            _ => return None,
        })
    }

    /// A short Python-like rendering, for verdict details.
    pub fn render(&self, max: usize) -> String {
        let mut s = String::new();
        self.render_into(&mut s, max);
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str("...");
        }
        s
    }

    fn render_into(&self, s: &mut String, max: usize) {
        if s.len() > max {
            return;
        }
        let seq = |s: &mut String, open: &str, close: &str, v: &[PyValue]| {
            s.push_str(open);
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                x.render_into(s, max);
                if s.len() > max {
                    return;
                }
            }
            if open == "(" && v.len() == 1 {
                s.push(',');
            }
            s.push_str(close);
        };
        match self {
            PyValue::None => s.push_str("None"),
            PyValue::Bool(b) => s.push_str(if *b { "True" } else { "False" }),
            PyValue::Int { negative, hex } => {
                if *negative {
                    s.push('-');
                }
                match u128::from_str_radix(hex, 16) {
                    Ok(m) => s.push_str(&m.to_string()),
                    Err(_) => s.push_str(&format!("0x{hex}")),
                }
            }
            PyValue::Float(f) => s.push_str(&python_float(*f)),
            PyValue::Complex(r, i) => {
                s.push_str(&format!("({}+{}j)", python_float(*r), python_float(*i)))
            }
            PyValue::Str(b) => s.push_str(&format!("{:?}", String::from_utf8_lossy(b))),
            PyValue::Bytes(b) => s.push_str(&format!("b{:?}", String::from_utf8_lossy(b))),
            PyValue::List(v) => seq(s, "[", "]", v),
            PyValue::Tuple(v) => seq(s, "(", ")", v),
            PyValue::Set(v) => seq(s, "{", "}", v),
            PyValue::FrozenSet(v) => seq(s, "frozenset({", "})", v),
            PyValue::Dict(d) => {
                s.push('{');
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    k.render_into(s, max);
                    s.push_str(": ");
                    v.render_into(s, max);
                    if s.len() > max {
                        return;
                    }
                }
                s.push('}');
            }
        }
    }
}

fn python_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn parse_float(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("malformed float {s:?}"))
}

/// A float's key: integral floats share the key of the int they equal.
fn float_key(f: f64) -> Option<String> {
    if f.is_nan() {
        return None;
    }
    Some(match integral_hex(f) {
        Some((negative, hex)) => format!("n{}{hex}", if negative { "-" } else { "" }),
        None => format!("f{:x}", f.to_bits()),
    })
}

/// The exact integer a finite integral float equals, as sign and hex magnitude.
fn integral_hex(f: f64) -> Option<(bool, String)> {
    if !f.is_finite() || f.trunc() != f {
        return None;
    }
    let negative = f < 0.0;
    let a = f.abs();
    if a < 2f64.powi(120) {
        return Some((negative && a != 0.0, format!("{:x}", a as u128)));
    }
    // a = mantissa * 2^exponent with a 53-bit mantissa and exponent >= 68.
    let bits = a.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1075;
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let (q, r) = (exponent / 4, exponent % 4);
    let mut hex = format!("{:x}", u128::from(mantissa) << r);
    hex.extend(std::iter::repeat_n('0', q as usize));
    Some((negative, hex))
}

fn big_to_f64(negative: bool, hex: &str) -> f64 {
    let m = hex.bytes().fold(0f64, |acc, c| {
        acc * 16.0 + f64::from((c as char).to_digit(16).unwrap_or(0))
    });
    if negative { -m } else { m }
}

#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i128),
    /// An int beyond i128, approximated (only arithmetic with floats uses it).
    Big(f64),
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Big(f) | Number::Float(f) => f,
        }
    }
}

/// Python's `a == b` for builtin values.
pub fn py_eq(a: &PyValue, b: &PyValue) -> bool {
    use PyValue::*;
    match (a, b) {
        (None, None) => true,
        (Str(x), Str(y)) | (Bytes(x), Bytes(y)) => x == y,
        (List(x), List(y)) | (Tuple(x), Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Set(x) | FrozenSet(x), Set(y) | FrozenSet(y)) => set_eq(x, y),
        (Dict(x), Dict(y)) => dict_eq(x, y),
        (Complex(r1, i1), Complex(r2, i2)) => r1 == r2 && i1 == i2,
        (Complex(r, i), n) | (n, Complex(r, i)) => {
            *i == 0.0 && n.number().is_some() && py_eq(&Float(*r), n)
        }
        _ => match (a.number(), b.number()) {
            (Some(_), Some(_)) => num_eq(a, b),
            _ => false,
        },
    }
}

/// Numeric equality of two bools, ints or floats: exact, as Python compares them.
fn num_eq(a: &PyValue, b: &PyValue) -> bool {
    use PyValue::*;
    let int_of = |v: &PyValue| -> Option<(bool, String)> {
        match v {
            Bool(x) => Some((false, if *x { "1".into() } else { "0".into() })),
            Int { negative, hex } => Some((*negative, hex.clone())),
            _ => Option::None,
        }
    };
    match (a, b) {
        (Float(x), Float(y)) => x == y,
        (Float(f), i) | (i, Float(f)) => match (integral_hex(*f), int_of(i)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        _ => int_of(a) == int_of(b),
    }
}

fn set_eq(x: &[PyValue], y: &[PyValue]) -> bool {
    if x.len() != y.len() {
        return false;
    }
    let keys = |v: &[PyValue]| -> Option<std::collections::HashSet<String>> {
        v.iter().map(PyValue::key).collect()
    };
    match (keys(x), keys(y)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn dict_eq(x: &[(PyValue, PyValue)], y: &[(PyValue, PyValue)]) -> bool {
    if x.len() != y.len() {
        return false;
    }
    let mut index: HashMap<String, &PyValue> = HashMap::with_capacity(y.len());
    for (k, v) in y {
        match k.key() {
            Some(k) => {
                index.insert(k, v);
            }
            None => return false,
        }
    }
    x.iter().all(|(k, v)| {
        k.key()
            .and_then(|k| index.get(&k).copied())
            .is_some_and(|w| py_eq(v, w))
    })
}

/// `abs(got - want) < tol` (`<=` with `inclusive`), as Python computes it; `Err` is the
/// exception Python would raise.
pub fn close(
    got: &PyValue,
    want: &PyValue,
    tol: &PyValue,
    inclusive: bool,
) -> Result<bool, String> {
    let type_error = |v: &PyValue| {
        format!(
            "TypeError: unsupported operand type(s) for -: {}",
            v.type_name()
        )
    };
    let (g, w) = match (got.number(), want.number()) {
        (Some(g), Some(w)) => (g, w),
        (Option::None, _) => return Err(type_error(got)),
        (_, Option::None) => return Err(type_error(want)),
    };
    let t = tol.number().ok_or_else(|| type_error(tol))?;
    let diff = match (g, w) {
        (Number::Int(a), Number::Int(b)) => match a.checked_sub(b) {
            Some(d) => Number::Int(d.abs()),
            None => Number::Float((a as f64 - b as f64).abs()),
        },
        _ => Number::Float((g.as_f64() - w.as_f64()).abs()),
    };
    Ok(match (diff, t) {
        (Number::Int(d), Number::Int(t)) => {
            if inclusive {
                d <= t
            } else {
                d < t
            }
        }
        _ => {
            let (d, t) = (diff.as_f64(), t.as_f64());
            if inclusive { d <= t } else { d < t }
        }
    })
}

/// CodeI/O's `_rl_same(got, want)` (rlcode_core::codeio::SETUP): `want` is JSON-like; tuples
/// count as lists, numbers compare with a relative tolerance of 1e-6 (absolute 1e-9), bools and
/// None exactly.
pub fn rl_same(got: &PyValue, want: &PyValue) -> bool {
    use PyValue::*;
    match want {
        None => matches!(got, None),
        Bool(w) => matches!(got, Bool(g) if g == w),
        Int { .. } | Float(_) => {
            if matches!(got, Bool(_)) {
                return false;
            }
            match (got, want) {
                (Int { .. }, Int { .. }) => py_eq(got, want),
                _ => match (got.number(), want.number()) {
                    (Some(g), Some(w)) => isclose(g.as_f64(), w.as_f64(), 1e-6, 1e-9),
                    _ => false,
                },
            }
        }
        Str(w) => matches!(got, Str(g) if g == w),
        List(w) => match got {
            List(g) | Tuple(g) => g.len() == w.len() && g.iter().zip(w).all(|(a, b)| rl_same(a, b)),
            _ => false,
        },
        Dict(w) => match got {
            Dict(g) => {
                let gk: Option<std::collections::HashSet<String>> =
                    g.iter().map(|(k, _)| k.key()).collect();
                let wk: Option<std::collections::HashSet<String>> =
                    w.iter().map(|(k, _)| k.key()).collect();
                if gk.is_none() || gk != wk {
                    return false;
                }
                let index: HashMap<String, &PyValue> = g
                    .iter()
                    .filter_map(|(k, v)| k.key().map(|k| (k, v)))
                    .collect();
                w.iter().all(|(k, wv)| {
                    k.key()
                        .and_then(|k| index.get(&k).copied())
                        .is_some_and(|gv| rl_same(gv, wv))
                })
            }
            _ => false,
        },
        _ => false,
    }
}

/// `math.isclose`; an int too large for a float raises OverflowError there, which `_rl_same`
/// turns into False: so does an infinite approximation here.
fn isclose(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() || a.is_nan() || b.is_nan() {
        return false;
    }
    let d = (a - b).abs();
    d <= (rel * b.abs()).max(rel * a.abs()) || d <= abs
}

impl PyValue {
    /// The Python type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int { .. } => "int",
            PyValue::Float(_) => "float",
            PyValue::Complex(..) => "complex",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Set(_) => "set",
            PyValue::FrozenSet(_) => "frozenset",
            PyValue::Dict(_) => "dict",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: Json) -> PyValue {
        PyValue::decode(&j).unwrap()
    }
    fn int(i: i64) -> PyValue {
        v(json!([
            "i",
            format!("{}{:x}", if i < 0 { "-" } else { "" }, i.unsigned_abs())
        ]))
    }
    fn float(f: f64) -> PyValue {
        PyValue::Float(f)
    }

    #[test]
    fn numbers_compare_across_types_exactly() {
        assert!(py_eq(&int(1), &float(1.0)));
        assert!(py_eq(&PyValue::Bool(true), &int(1)));
        assert!(py_eq(&PyValue::Bool(false), &float(-0.0)));
        assert!(!py_eq(&int(1), &float(1.0000000001)));
        assert!(py_eq(&float(0.0), &float(-0.0)));
        assert!(!py_eq(&float(f64::NAN), &float(f64::NAN)));
        assert!(py_eq(&PyValue::Complex(2.0, 0.0), &int(2)));
        assert!(!py_eq(&PyValue::Complex(2.0, 1.0), &int(2)));
        // 2**100 as an int and as a float.
        let big = v(json!(["i", format!("1{}", "0".repeat(25))]));
        assert!(py_eq(&big, &float(2f64.powi(100))));
        let huge = v(json!(["i", format!("1{}", "0".repeat(250))]));
        assert!(py_eq(&huge, &float(2f64.powi(1000))));
        assert!(!py_eq(&huge, &float(2f64.powi(999))));
        assert!(!py_eq(&int(1), &v(json!(["s", "31"]))));
        assert!(!py_eq(&PyValue::None, &int(0)));
    }

    #[test]
    fn containers_compare_as_python_does() {
        let l = v(json!(["l", [["i", "1"], ["s", "61"]]]));
        let t = v(json!(["t", [["i", "1"], ["s", "61"]]]));
        assert!(py_eq(&l, &v(json!(["l", [["f", "1.0"], ["s", "61"]]]))));
        assert!(!py_eq(&l, &t), "a list never equals a tuple");
        let s = v(json!(["S", [["i", "1"], ["i", "2"]]]));
        let f = v(json!(["F", [["f", "2.0"], true]]));
        assert!(py_eq(&s, &f), "{{1, 2}} == frozenset({{2.0, True}})");
        let d1 = v(json!(["d", [[["i", "1"], ["s", ""]], [["s", "6b"], null]]]));
        let d2 = v(json!(["d", [[["s", "6b"], null], [true, ["s", ""]]]]));
        assert!(py_eq(&d1, &d2));
        let d3 = v(json!(["d", [[["s", "6b"], null], [true, ["s", "20"]]]]));
        assert!(!py_eq(&d1, &d3));
        assert!(py_eq(&v(json!(["b", "6162"])), &v(json!(["b", "6162"]))));
        assert!(!py_eq(&v(json!(["b", "6162"])), &v(json!(["s", "6162"]))));
    }

    #[test]
    fn truth_and_tolerance() {
        assert!(!int(0).truthy() && int(-3).truthy());
        assert!(!v(json!(["l", []])).truthy() && float(f64::NAN).truthy());
        assert_eq!(
            close(&float(0.6666667), &float(2.0 / 3.0), &float(1e-6), false),
            Ok(true)
        );
        assert_eq!(close(&int(3), &int(2), &int(1), false), Ok(false));
        assert_eq!(close(&int(3), &int(2), &int(1), true), Ok(true));
        assert_eq!(
            close(&float(f64::NAN), &float(1.0), &float(1.0), false),
            Ok(false)
        );
        assert!(close(&v(json!(["s", "31"])), &float(1.0), &float(1.0), false).is_err());
    }

    #[test]
    fn rl_same_follows_the_codeio_setup() {
        let want = v(json!(["l", [["i", "1"], ["f", "0.5"]]]));
        assert!(rl_same(
            &v(json!(["t", [["i", "1"], ["f", "0.5000000001"]]])),
            &want
        ));
        assert!(
            !rl_same(&v(json!(["t", [true, ["f", "0.5"]]])), &want),
            "bools are not numbers"
        );
        assert!(!rl_same(&v(json!(["t", [["i", "1"]]])), &want));
        assert!(rl_same(&PyValue::Bool(true), &PyValue::Bool(true)));
        assert!(!rl_same(&int(1), &PyValue::Bool(true)));
    }

    #[test]
    fn malformed_encodings_are_refused() {
        for bad in [
            json!(["i", "xyz"]),
            json!(["q", 1]),
            json!(7),
            json!(["d", [[1]]]),
        ] {
            assert!(PyValue::decode(&bad).is_err(), "{bad}");
        }
    }
}

//! The task families of the synthetic world. Each family is a parameter space and a builder
//! that turns one parameter vector into a function to write: its docstring, its test inputs, a
//! reference body and the near-miss bodies that careless programs produce (a flipped `<`/`<=`,
//! a missing empty-input branch, rounding the wrong way, an off-by-one slice, ...).
//!
//! Every program comes with a Rust model of its behaviour, so that expected outputs, and how
//! many tests each near-miss passes, are known without running Python. The inputs are chosen
//! so that every near-miss passes at least one test and fails at least one: the regime where
//! pass rate and full correctness disagree.

use super::Val;

/// What a program returns for the arguments of one test; `None` stands for an exception.
pub type Behaviour = Box<dyn Fn(&[Val]) -> Option<Val> + Send + Sync>;

/// A program body (lines without the function's indentation) and a model of what it returns;
/// `None` stands for an exception.
pub struct Program {
    /// `"reference"`, or the name of the mistake.
    pub mutation: &'static str,
    pub body: Vec<String>,
    pub run: Behaviour,
}

impl Program {
    fn new(
        mutation: &'static str,
        body: &[String],
        run: impl Fn(&[Val]) -> Option<Val> + Send + Sync + 'static,
    ) -> Self {
        Program {
            mutation,
            body: body.to_vec(),
            run: Box::new(run),
        }
    }
}

/// One function to write, before it is named.
pub struct Spec {
    /// Names to choose from (the choice is a function of the parameters).
    pub names: &'static [&'static str],
    /// The parameter list, e.g. `xs`.
    pub args: &'static str,
    pub doc: String,
    /// One argument list per test.
    pub inputs: Vec<Vec<Val>>,
    pub reference: Program,
    pub near_misses: Vec<Program>,
}

/// A family: its name (part of every problem id), its parameter space, and its builder.
pub struct Family {
    pub name: &'static str,
    /// What a problem of this family asks, and how its near-misses go wrong (docs/tasks.md).
    pub summary: &'static str,
    pub space: fn() -> Vec<Vec<i64>>,
    pub build: fn(&[i64]) -> Spec,
}

pub const FAMILIES: &[Family] = &[
    Family {
        name: "threshold_count",
        summary: "count the items of a list on one side of a threshold; near-misses flip `<`/`<=` or skip the first item",
        space: threshold_count_space,
        build: threshold_count,
    },
    Family {
        name: "boxes_needed",
        summary: "ceiling division; near-misses round down or always add one",
        space: boxes_needed_space,
        build: boxes_needed,
    },
    Family {
        name: "clamp",
        summary: "clamp to an inclusive range; near-misses drop one bound or use hi - 1",
        space: clamp_space,
        build: clamp,
    },
    Family {
        name: "sum_first_k",
        summary: "sum of the first or last k items; near-misses slice one too few or one too many",
        space: sum_first_k_space,
        build: sum_first_k,
    },
    Family {
        name: "safe_extreme",
        summary: "max or min with a default for the empty list; near-misses crash on the empty list or let the default compete",
        space: safe_extreme_space,
        build: safe_extreme,
    },
    Family {
        name: "distance_from",
        summary: "distance to a constant; near-misses forget abs() or subtract the wrong way",
        space: distance_from_space,
        build: distance_from,
    },
    Family {
        name: "in_range",
        summary: "membership in an interval with stated open/closed ends; near-misses flip one end",
        space: in_range_space,
        build: in_range,
    },
    Family {
        name: "count_multiples",
        summary: "count multiples of d up to n (inclusive or not); the near-miss gets the range end wrong",
        space: count_multiples_space,
        build: count_multiples,
    },
    Family {
        name: "first_index",
        summary: "index of the first item over a threshold, or -1; near-misses omit the -1, flip the boundary, or count from 1",
        space: first_index_space,
        build: first_index,
    },
    Family {
        name: "three_way",
        summary: "label low/mid/high by two thresholds; near-misses flip a boundary or drop the high branch",
        space: three_way_space,
        build: three_way,
    },
    Family {
        name: "percent_floor",
        summary: "p percent of n rounded down; near-misses truncate towards zero (wrong for negatives) or divide first",
        space: percent_floor_space,
        build: percent_floor,
    },
    Family {
        name: "truncate",
        summary: "shorten a string to k characters plus \"...\"; near-misses use `<` for `<=` or always add the dots",
        space: truncate_space,
        build: truncate,
    },
];

fn int(v: &Val) -> i64 {
    match v {
        Val::Int(n) => *n,
        other => panic!("expected an int, got {other:?}"),
    }
}

fn list(v: &Val) -> &[i64] {
    match v {
        Val::List(xs) => xs,
        other => panic!("expected a list, got {other:?}"),
    }
}

fn text(v: &Val) -> &str {
    match v {
        Val::Str(s) => s,
        other => panic!("expected a string, got {other:?}"),
    }
}

/// `x - c` written the way a person would: `x - 5`, `x + 5`, `x` for `c == 0`.
fn minus(var: &str, c: i64) -> String {
    match c.cmp(&0) {
        std::cmp::Ordering::Greater => format!("{var} - {c}"),
        std::cmp::Ordering::Less => format!("{var} + {}", -c),
        std::cmp::Ordering::Equal => var.to_string(),
    }
}

fn ints(xs: &[i64]) -> Val {
    Val::List(xs.to_vec())
}

fn grid(ranges: &[std::ops::RangeInclusive<i64>]) -> Vec<Vec<i64>> {
    let mut out = vec![vec![]];
    for r in ranges {
        out = out
            .into_iter()
            .flat_map(|p| {
                r.clone().map(move |v| {
                    let mut q = p.clone();
                    q.push(v);
                    q
                })
            })
            .collect();
    }
    out
}

#[derive(Clone, Copy)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
}

impl Cmp {
    fn from_index(i: i64) -> Cmp {
        [Cmp::Ge, Cmp::Gt, Cmp::Le, Cmp::Lt][i as usize]
    }
    fn op(self) -> &'static str {
        match self {
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
        }
    }
    fn holds(self, a: i64, b: i64) -> bool {
        match self {
            Cmp::Ge => a >= b,
            Cmp::Gt => a > b,
            Cmp::Le => a <= b,
            Cmp::Lt => a < b,
        }
    }
    /// The same comparison with the boundary on the other side.
    fn flipped(self) -> Cmp {
        match self {
            Cmp::Ge => Cmp::Gt,
            Cmp::Gt => Cmp::Ge,
            Cmp::Le => Cmp::Lt,
            Cmp::Lt => Cmp::Le,
        }
    }
    fn words(self) -> &'static str {
        match self {
            Cmp::Ge => "at least",
            Cmp::Gt => "greater than",
            Cmp::Le => "at most",
            Cmp::Lt => "less than",
        }
    }
}

fn threshold_count_space() -> Vec<Vec<i64>> {
    grid(&[0..=3, -10..=40])
}

fn threshold_count(p: &[i64]) -> Spec {
    let (cmp, t) = (Cmp::from_index(p[0]), p[1]);
    let count = move |cmp: Cmp, skip: usize| {
        move |a: &[Val]| {
            let n = list(&a[0]).iter().skip(skip).filter(|&&x| cmp.holds(x, t));
            Some(Val::Int(n.count() as i64))
        }
    };
    let body = |cmp: Cmp, xs: &str| {
        vec![format!(
            "return len([x for x in {xs} if x {} {t}])",
            cmp.op()
        )]
    };
    Spec {
        names: match cmp {
            Cmp::Ge | Cmp::Gt => &["count_above", "count_high", "num_big", "tally_over"],
            Cmp::Le | Cmp::Lt => &["count_below", "count_low", "num_small", "tally_under"],
        },
        args: "xs",
        doc: format!("Return how many numbers in xs are {} {t}.", cmp.words()),
        inputs: [
            vec![],
            vec![t],
            vec![t - 4, t + 3, t + 9],
            vec![t + 2, t - 1, t],
            vec![t - 6, t - 2, t + 1, t + 5],
            vec![t, t, t - 3],
        ]
        .iter()
        .map(|xs| vec![ints(xs)])
        .collect(),
        reference: Program::new("reference", &body(cmp, "xs"), count(cmp, 0)),
        near_misses: vec![
            Program::new(
                "strict_boundary",
                &body(cmp.flipped(), "xs"),
                count(cmp.flipped(), 0),
            ),
            Program::new("skips_first", &body(cmp, "xs[1:]"), count(cmp, 1)),
        ],
    }
}

fn boxes_needed_space() -> Vec<Vec<i64>> {
    grid(&[2..=60])
}

fn boxes_needed(p: &[i64]) -> Spec {
    let b = p[0];
    let n = |a: &[Val]| int(&a[0]);
    Spec {
        names: &["boxes_needed", "crates_needed", "bins_for", "packs_needed"],
        args: "n",
        doc: format!(
            "Return how many boxes are needed to pack n items when each box holds {b} items."
        ),
        inputs: [0, 1, b, b + 1, 2 * b, 3 * b - 1, 5 * b + 2]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: Program::new(
            "reference",
            &[format!("return (n + {b} - 1) // {b}")],
            move |a| Some(Val::Int((n(a) + b - 1).div_euclid(b))),
        ),
        near_misses: vec![
            Program::new("rounds_down", &[format!("return n // {b}")], move |a| {
                Some(Val::Int(n(a).div_euclid(b)))
            }),
            Program::new(
                "always_adds_one",
                &[format!("return n // {b} + 1")],
                move |a| Some(Val::Int(n(a).div_euclid(b) + 1)),
            ),
        ],
    }
}

fn clamp_space() -> Vec<Vec<i64>> {
    grid(&[-20..=20, 2..=30])
}

fn clamp(p: &[i64]) -> Spec {
    let (lo, hi) = (p[0], p[0] + p[1]);
    let x = |a: &[Val]| int(&a[0]);
    Spec {
        names: &["clamp", "limit", "clip", "bound_value"],
        args: "x",
        doc: format!("Return x limited to the range {lo} to {hi}, both ends included."),
        inputs: [lo - 12, lo - 5, lo, lo + 1, hi, hi + 7]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: Program::new(
            "reference",
            &[format!("return max({lo}, min({hi}, x))")],
            move |a| Some(Val::Int(x(a).clamp(lo, hi))),
        ),
        near_misses: vec![
            Program::new(
                "no_lower_bound",
                &[format!("return min({hi}, x)")],
                move |a| Some(Val::Int(x(a).min(hi))),
            ),
            Program::new(
                "no_upper_bound",
                &[format!("return max({lo}, x)")],
                move |a| Some(Val::Int(x(a).max(lo))),
            ),
            Program::new(
                "upper_off_by_one",
                &[format!("return max({lo}, min({}, x))", hi - 1)],
                move |a| Some(Val::Int(x(a).min(hi - 1).max(lo))),
            ),
        ],
    }
}

fn sum_first_k_space() -> Vec<Vec<i64>> {
    grid(&[0..=1, 2..=12])
}

fn sum_first_k(p: &[i64]) -> Spec {
    let (last, k) = (p[0] == 1, p[1]);
    // Python's xs[:m] (first m) and xs[-m:] (last m), for m >= 1.
    let take = move |xs: &[i64], m: i64| -> i64 {
        let m = (m as usize).min(xs.len());
        let part = if last { &xs[xs.len() - m..] } else { &xs[..m] };
        part.iter().sum()
    };
    let slice = |m: i64| {
        if last {
            format!("return sum(xs[-{m}:])")
        } else {
            format!("return sum(xs[:{m}])")
        }
    };
    let seq =
        |len: i64, off: i64| -> Vec<i64> { (0..len).map(|i| (i * 3 + off) % 9 + 1).collect() };
    let program = move |mutation, m: i64| {
        Program::new(mutation, &[slice(m)], move |a: &[Val]| {
            Some(Val::Int(take(list(&a[0]), m)))
        })
    };
    Spec {
        names: if last {
            &["sum_last", "tail_total", "sum_recent"]
        } else {
            &["sum_first", "head_total", "sum_leading"]
        },
        args: "xs",
        doc: format!(
            "Return the sum of the {} {k} numbers in xs (of all of them if xs is shorter).",
            if last { "last" } else { "first" }
        ),
        inputs: [
            vec![],
            seq(1, 4),
            seq(k, 0),
            seq(k + 1, 2),
            seq(k + 3, 5),
            seq(2 * k + 2, 7),
        ]
        .iter()
        .map(|xs| vec![ints(xs)])
        .collect(),
        reference: program("reference", k),
        near_misses: vec![program("one_short", k - 1), program("one_extra", k + 1)],
    }
}

fn safe_extreme_space() -> Vec<Vec<i64>> {
    grid(&[0..=1, -9..=9])
}

fn safe_extreme(p: &[i64]) -> Spec {
    let (smallest, d) = (p[0] == 1, p[1]);
    let f = if smallest { "min" } else { "max" };
    // Inputs are written for `max`; `min` mirrors them around the default.
    let s = if smallest { -1 } else { 1 };
    let pick = move |xs: &[i64]| {
        if smallest {
            xs.iter().copied().min()
        } else {
            xs.iter().copied().max()
        }
    };
    Spec {
        names: if smallest {
            &["smallest_or", "min_or_default", "lowest"]
        } else {
            &["largest_or", "max_or_default", "highest"]
        },
        args: "xs",
        doc: format!(
            "Return the {} number in xs, or {d} if xs is empty.",
            if smallest { "smallest" } else { "largest" }
        ),
        inputs: [
            vec![],
            vec![d + 3 * s],
            vec![d + 4 * s, d - 2 * s],
            vec![d - s, d - 5 * s, d - 2 * s],
            vec![d - 7 * s],
            vec![d, d + 2 * s],
        ]
        .iter()
        .map(|xs| vec![ints(xs)])
        .collect(),
        reference: Program::new(
            "reference",
            &[
                "if not xs:".into(),
                format!("    return {d}"),
                format!("return {f}(xs)"),
            ],
            move |a| Some(Val::Int(pick(list(&a[0])).unwrap_or(d))),
        ),
        near_misses: vec![
            // max([]) raises ValueError.
            Program::new("no_empty_case", &[format!("return {f}(xs)")], move |a| {
                pick(list(&a[0])).map(Val::Int)
            }),
            Program::new(
                "default_competes",
                &[format!("return {f}([{d}] + xs)")],
                move |a| {
                    let mut xs = list(&a[0]).to_vec();
                    xs.push(d);
                    pick(&xs).map(Val::Int)
                },
            ),
        ],
    }
}

fn distance_from_space() -> Vec<Vec<i64>> {
    grid(&[-40..=40])
}

fn distance_from(p: &[i64]) -> Spec {
    let c = p[0];
    let x = |a: &[Val]| int(&a[0]);
    let reversed = if c == 0 {
        "return -x".to_string()
    } else {
        format!("return {c} - x")
    };
    Spec {
        names: &["distance_to", "gap_from", "how_far", "dist"],
        args: "x",
        doc: format!("Return the distance between x and {c} (never negative)."),
        inputs: [c, c + 3, c - 4, c + 11, c - 1, c - 20]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: Program::new(
            "reference",
            &[format!("return abs({})", minus("x", c))],
            move |a| Some(Val::Int((x(a) - c).abs())),
        ),
        near_misses: vec![
            Program::new("no_abs", &[format!("return {}", minus("x", c))], move |a| {
                Some(Val::Int(x(a) - c))
            }),
            Program::new("reversed", &[reversed], move |a| Some(Val::Int(c - x(a)))),
        ],
    }
}

fn in_range_space() -> Vec<Vec<i64>> {
    grid(&[0..=3, -15..=15, 3..=12])
}

fn in_range(p: &[i64]) -> Spec {
    // Bit 0: the low end is included; bit 1: the high end is included.
    let (ends, lo, hi) = (p[0], p[1], p[1] + p[2]);
    let (lo_in, hi_in) = (ends & 1 == 1, ends & 2 == 2);
    let doc = match (lo_in, hi_in) {
        (true, true) => format!("Return True if x is between {lo} and {hi}, both included."),
        (true, false) => format!("Return True if x is at least {lo} and less than {hi}."),
        (false, true) => format!("Return True if x is greater than {lo} and at most {hi}."),
        (false, false) => format!("Return True if x is strictly between {lo} and {hi}."),
    };
    let program = move |mutation, lo_in: bool, hi_in: bool| {
        let op = |inclusive| if inclusive { "<=" } else { "<" };
        Program::new(
            mutation,
            &[format!("return {lo} {} x {} {hi}", op(lo_in), op(hi_in))],
            move |a: &[Val]| {
                let x = int(&a[0]);
                let above = if lo_in { lo <= x } else { lo < x };
                let below = if hi_in { x <= hi } else { x < hi };
                Some(Val::Bool(above && below))
            },
        )
    };
    Spec {
        names: &["in_range", "is_inside", "within", "in_band"],
        args: "x",
        doc,
        inputs: [lo - 3, lo, lo + 1, hi - 1, hi, hi + 2]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: program("reference", lo_in, hi_in),
        near_misses: vec![
            program("low_end_flipped", !lo_in, hi_in),
            program("high_end_flipped", lo_in, !hi_in),
        ],
    }
}

fn count_multiples_space() -> Vec<Vec<i64>> {
    grid(&[0..=1, 2..=15])
}

fn count_multiples(p: &[i64]) -> Spec {
    let (below, d) = (p[0] == 1, p[1]);
    let program = move |mutation, inclusive: bool| {
        let end = if inclusive { "n + 1" } else { "n" };
        Program::new(
            mutation,
            &[format!(
                "return len([i for i in range(1, {end}) if i % {d} == 0])"
            )],
            move |a: &[Val]| {
                let top = int(&a[0]) - i64::from(!inclusive);
                Some(Val::Int(if top < 1 { 0 } else { top / d }))
            },
        )
    };
    Spec {
        names: &["count_multiples", "multiples_of", "num_divisible"],
        args: "n",
        doc: if below {
            format!("Return how many positive numbers less than n are divisible by {d}.")
        } else {
            format!("Return how many of the numbers 1 to n (n included) are divisible by {d}.")
        },
        inputs: [0, 1, d, d + 1, 3 * d, 3 * d + 2, 5 * d - 1]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: program("reference", !below),
        near_misses: vec![program("range_end", below)],
    }
}

fn first_index_space() -> Vec<Vec<i64>> {
    grid(&[0..=1, -10..=30])
}

fn first_index(p: &[i64]) -> Spec {
    let (cmp, t) = (if p[0] == 0 { Cmp::Ge } else { Cmp::Gt }, p[1]);
    let program = move |mutation, cmp: Cmp, not_found: bool, base: i64| {
        let mut body = vec![
            "for i, x in enumerate(xs):".to_string(),
            format!("    if x {} {t}:", cmp.op()),
            if base == 0 {
                "        return i".into()
            } else {
                format!("        return i + {base}")
            },
        ];
        if not_found {
            body.push("return -1".into());
        }
        Program::new(mutation, &body, move |a: &[Val]| {
            match list(&a[0]).iter().position(|&x| cmp.holds(x, t)) {
                Some(i) => Some(Val::Int(i as i64 + base)),
                None if not_found => Some(Val::Int(-1)),
                None => Some(Val::None),
            }
        })
    };
    Spec {
        names: &["first_index", "find_first", "index_over", "first_big"],
        args: "xs",
        doc: format!(
            "Return the index of the first number in xs that is {} {t}, or -1 if there is none.",
            cmp.words()
        ),
        inputs: [
            vec![],
            vec![t + 1, t - 5],
            vec![t - 2, t, t + 4],
            vec![t - 9, t - 1],
            vec![t, t + 1],
            vec![t - 3, t - 4, t + 8, t],
        ]
        .iter()
        .map(|xs| vec![ints(xs)])
        .collect(),
        reference: program("reference", cmp, true, 0),
        near_misses: vec![
            program("no_missing_case", cmp, false, 0),
            program("strict_boundary", cmp.flipped(), true, 0),
            program("one_based", cmp, true, 1),
        ],
    }
}

fn three_way_space() -> Vec<Vec<i64>> {
    grid(&[-10..=30, 1..=15])
}

fn three_way(p: &[i64]) -> Spec {
    let (a, b) = (p[0], p[0] + p[1]);
    let program = move |mutation, low: Cmp, high: Option<Cmp>| {
        let mut body = vec![
            format!("if x {} {a}:", low.op()),
            "    return \"low\"".to_string(),
        ];
        if let Some(high) = high {
            body.push(format!("if x {} {b}:", high.op()));
            body.push("    return \"high\"".into());
        }
        body.push("return \"mid\"".into());
        Program::new(mutation, &body, move |args: &[Val]| {
            let x = int(&args[0]);
            let label = if low.holds(x, a) {
                "low"
            } else if high.is_some_and(|h| h.holds(x, b)) {
                "high"
            } else {
                "mid"
            };
            Some(Val::Str(label.into()))
        })
    };
    Spec {
        names: &["classify", "label", "bucket", "grade_level"],
        args: "x",
        doc: format!(
            "Return \"low\" if x is below {a}, \"high\" if x is above {b}, and \"mid\" otherwise."
        ),
        inputs: [a - 4, a - 1, a, b, b + 1, b + 6]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: program("reference", Cmp::Lt, Some(Cmp::Gt)),
        near_misses: vec![
            program("low_boundary", Cmp::Le, Some(Cmp::Gt)),
            program("high_boundary", Cmp::Lt, Some(Cmp::Ge)),
            program("no_high_branch", Cmp::Lt, None),
        ],
    }
}

fn percent_floor_space() -> Vec<Vec<i64>> {
    // 1 % is left out: `n // 100 * 1` equals `n * 1 // 100`, so that near-miss would be right.
    grid(&[2..=99])
}

fn percent_floor(p: &[i64]) -> Spec {
    let pct = p[0];
    let n = |a: &[Val]| int(&a[0]);
    Spec {
        names: &["percent_of", "take_percent", "share", "portion"],
        args: "n",
        doc: format!("Return {pct} percent of n, rounded down to a whole number."),
        inputs: [0, 100, 999, -7, 1234, -200, 45]
            .iter()
            .map(|&v| vec![Val::Int(v)])
            .collect(),
        reference: Program::new(
            "reference",
            &[format!("return n * {pct} // 100")],
            move |a| Some(Val::Int((n(a) * pct).div_euclid(100))),
        ),
        near_misses: vec![
            // int() truncates towards zero: right for n >= 0 only. n * pct / 100 is never
            // within float error of an integer it is not, so truncating the exact quotient
            // models it.
            Program::new(
                "truncates",
                &[format!("return int(n * {pct} / 100)")],
                move |a| Some(Val::Int(n(a) * pct / 100)),
            ),
            Program::new(
                "divides_first",
                &[format!("return n // 100 * {pct}")],
                move |a| Some(Val::Int(n(a).div_euclid(100) * pct)),
            ),
        ],
    }
}

fn truncate_space() -> Vec<Vec<i64>> {
    grid(&[3..=20])
}

fn truncate(p: &[i64]) -> Spec {
    let k = p[0];
    let ku = k as usize;
    let word = |len: i64| -> Val {
        let letters = b"the quick brown fox jumps over a lazy dog";
        let s: String = (0..len as usize)
            .map(|i| letters[(i * 7 + len as usize) % letters.len()] as char)
            .collect();
        Val::Str(s)
    };
    let cut = move |s: &str| format!("{}...", &s[..ku.min(s.len())]);
    Spec {
        names: &["shorten", "truncate", "clip_text", "abbreviate"],
        args: "s",
        doc: format!(
            "Return s unchanged if it has at most {k} characters, else its first {k} characters followed by \"...\"."
        ),
        inputs: [0, 1, k - 1, k, k + 1, k + 5]
            .iter()
            .map(|&len| vec![word(len)])
            .collect(),
        reference: Program::new(
            "reference",
            &[
                format!("if len(s) <= {k}:"),
                "    return s".into(),
                format!("return s[:{k}] + \"...\""),
            ],
            move |a| {
                let s = text(&a[0]);
                Some(Val::Str(if s.len() <= ku { s.to_string() } else { cut(s) }))
            },
        ),
        near_misses: vec![
            Program::new(
                "strict_boundary",
                &[
                    format!("if len(s) < {k}:"),
                    "    return s".into(),
                    format!("return s[:{k}] + \"...\""),
                ],
                move |a| {
                    let s = text(&a[0]);
                    Some(Val::Str(if s.len() < ku { s.to_string() } else { cut(s) }))
                },
            ),
            Program::new(
                "always_dots",
                &[format!("return s[:{k}] + \"...\"")],
                move |a| Some(Val::Str(cut(text(&a[0])))),
            ),
        ],
    }
}

//! Reward designs, and the registry `--reward` picks them from.
//!
//! Every design scores a whole group (all samples of one problem) at once, because the
//! group-level designs need to see the group: `binary_fallback` asks whether anyone in it passed,
//! `test_weighted` how often each test was passed. Designs only ever see *scorable* verdicts
//! (at least one test, no `infra` test): [`score_group`] sets the others to `None` before a design
//! runs, so no design can turn a sandbox failure into a 0, and a group statistic never counts a
//! sample whose tests say nothing about its program. Formulas and motivation: docs/rewards.md.
//!
//! Adding a design: implement [`Reward`] and add one row to [`DESIGNS`].

use rlcode_core::records::{Status, Verdict};
use std::fmt;
use std::sync::Arc;

/// A reward design.
pub trait Reward: fmt::Debug + Send + Sync {
    /// What `reward_name` says, e.g. `pass_rate` or `power:2`: enough to rebuild the design
    /// with [`parse`].
    fn name(&self) -> String;

    /// One reward per verdict, in the same order; the group is never empty and every verdict
    /// in it is scorable (see [`scorable`]). Anything the caller should warn about (a design
    /// falling back to a simpler one, say) goes into `notes`.
    fn score(&self, group: &[&Verdict], notes: &mut Vec<String>) -> Vec<f64>;

    /// A floor under the group baseline that the advantage estimator must apply
    /// (`baseline_floor` in the output records; rl-update honours it): no sample whose reward
    /// is below the floor gets a positive advantage. `None` for plain designs.
    fn baseline_floor(&self) -> Option<f64> {
        None
    }
}

/// One entry of the registry.
pub struct Design {
    /// The name before the `:` of a `--reward` value.
    pub name: &'static str,
    /// How the parameter after `:` is written, if the design takes one.
    pub param: Option<&'static str>,
    /// One line for `--help` and error messages.
    pub summary: &'static str,
    build: Build,
}

/// Makes a design from the parameter after the `:`, if any.
type Build = fn(Option<&str>) -> Result<Arc<dyn Reward>, String>;

/// Every design `--reward` accepts.
pub const DESIGNS: &[Design] = &[
    Design {
        name: "binary",
        param: None,
        summary: "1 if every test passed, else 0",
        build: |_| Ok(Arc::new(Binary)),
    },
    Design {
        name: "pass_rate",
        param: None,
        summary: "passed / total",
        build: |_| Ok(Arc::new(PassRate)),
    },
    Design {
        name: "binary_fallback",
        param: None,
        summary: "binary where the group has a full pass, else pass_rate",
        build: |_| Ok(Arc::new(BinaryFallback)),
    },
    Design {
        name: "power",
        param: Some("P"),
        summary: "pass_rate^P (P > 0): P > 1 favours nearly complete programs",
        build: |p| Power::parse(p.unwrap_or_default()).map(|d| Arc::new(d) as Arc<dyn Reward>),
    },
    Design {
        name: "test_weighted",
        param: None,
        summary: "tests weighted by how rarely the group passes them; 1 only for a full pass",
        build: |_| Ok(Arc::new(TestWeighted)),
    },
    Design {
        name: "full_anchor",
        param: Some("C"),
        summary: "binary where the group has a full pass, else C*pass_rate (0 < C < 1): partial \
                  credit only without a full pass, and always below one",
        build: |p| FullAnchor::parse(p.unwrap_or_default()).map(|d| Arc::new(d) as Arc<dyn Reward>),
    },
    Design {
        name: "best_partial",
        param: None,
        summary: "binary where the group has a full pass, else 0.5 for the group's highest pass \
                  rate (if > 0) and 0 for the rest: one partial direction per group",
        build: |_| Ok(Arc::new(BestPartial)),
    },
    Design {
        name: "verpo",
        param: Some("B"),
        summary: "VeRPO-style: (1[full pass] + B x the difficulty-weighted share of tests passed) \
                  / (1 + B), a test weighing 1 - the share of the group passing it; B > 0",
        build: |p| Verpo::parse(p.unwrap_or_default()).map(|d| Arc::new(d) as Arc<dyn Reward>),
    },
    Design {
        name: "corpo",
        param: Some("T"),
        summary: "CoRPO-style: pass_rate, with the group baseline floored at T (0 < T <= 1): a \
                  sample below T never gets a positive advantage (rl-update applies the floor)",
        build: |p| Corpo::parse(p.unwrap_or_default()).map(|d| Arc::new(d) as Arc<dyn Reward>),
    },
];

/// The designs, one per line, for `--help` and error messages.
pub fn describe() -> String {
    DESIGNS
        .iter()
        .map(|d| {
            let spec = match d.param {
                Some(p) => format!("{}:{p}", d.name),
                None => d.name.to_string(),
            };
            format!("{spec}: {}", d.summary)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parse a `--reward` value: a design's name, then `:PARAM` for a design that takes one.
pub fn parse(spec: &str) -> Result<Arc<dyn Reward>, String> {
    let (name, param) = match spec.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (spec, None),
    };
    let design = DESIGNS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| format!("unknown reward \"{spec}\" (known: {})", describe()))?;
    match (design.param, param) {
        (None, Some(_)) => Err(format!("reward \"{name}\" takes no parameter")),
        (Some(p), None) => Err(format!("reward \"{name}\" needs a parameter: {name}:{p}")),
        _ => (design.build)(param),
    }
}

/// True when the verdict says something about the program: at least one test, and the sandbox
/// did not fail on any.
pub fn scorable(v: &Verdict) -> bool {
    v.total > 0 && !v.has_infra()
}

/// Rewards of one group, in its order: the design's reward for every scorable verdict, `None`
/// for the rest. The design sees only the scorable verdicts.
pub fn score_group(
    reward: &dyn Reward,
    group: &[&Verdict],
    notes: &mut Vec<String>,
) -> Vec<Option<f64>> {
    let usable: Vec<&Verdict> = group.iter().copied().filter(|v| scorable(v)).collect();
    let mut scores = if usable.is_empty() {
        Vec::new()
    } else {
        reward.score(&usable, notes)
    }
    .into_iter();
    group
        .iter()
        .map(|v| if scorable(v) { scores.next() } else { None })
        .collect()
}

fn pass_rate(v: &Verdict) -> f64 {
    v.passed as f64 / v.total as f64
}

fn binary(v: &Verdict) -> f64 {
    if v.full_pass() { 1.0 } else { 0.0 }
}

#[derive(Debug)]
pub struct Binary;

impl Reward for Binary {
    fn name(&self) -> String {
        "binary".into()
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        group.iter().map(|v| binary(v)).collect()
    }
}

#[derive(Debug)]
pub struct PassRate;

impl Reward for PassRate {
    fn name(&self) -> String {
        "pass_rate".into()
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        group.iter().map(|v| pass_rate(v)).collect()
    }
}

/// Binary where the group already reaches full passes (the exact success signal is there to be
/// had), pass rate where it does not (binary would give every sample 0 and the group no
/// gradient at all).
#[derive(Debug)]
pub struct BinaryFallback;

impl Reward for BinaryFallback {
    fn name(&self) -> String {
        "binary_fallback".into()
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        if group.iter().any(|v| v.full_pass()) {
            group.iter().map(|v| binary(v)).collect()
        } else {
            group.iter().map(|v| pass_rate(v)).collect()
        }
    }
}

/// pass_rate^P.
#[derive(Debug)]
pub struct Power {
    exponent: f64,
}

impl Power {
    fn parse(p: &str) -> Result<Self, String> {
        match p.trim().parse::<f64>() {
            Ok(exponent) if exponent.is_finite() && exponent > 0.0 => Ok(Power { exponent }),
            _ => Err(format!(
                "reward \"power:{p}\": the exponent must be a number > 0"
            )),
        }
    }
}

impl Reward for Power {
    fn name(&self) -> String {
        format!("power:{}", self.exponent)
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        group
            .iter()
            .map(|v| pass_rate(v).powf(self.exponent))
            .collect()
    }
}

/// Σ_j w_j·pass_ij / Σ_j w_j with w_j = n + 1 − c_j, where n is the group's size and c_j how
/// many of its samples pass test j: a Laplace-smoothed failure rate, so a test that every
/// sample passes still counts a little and a lone sample is not scored 0.
#[derive(Debug)]
pub struct TestWeighted;

impl Reward for TestWeighted {
    fn name(&self) -> String {
        "test_weighted".into()
    }
    fn score(&self, group: &[&Verdict], notes: &mut Vec<String>) -> Vec<f64> {
        let tests = group[0].tests.len();
        // Test j of one sample must be test j of the others; differing counts mean the verdicts
        // came from different versions of the problem, and then weights would mix up tests.
        if let Some(other) = group.iter().find(|v| v.tests.len() != tests) {
            notes.push(format!(
                "samples have different numbers of tests ({tests} and {}); test_weighted falls \
                 back to pass_rate for this group",
                other.tests.len()
            ));
            return group.iter().map(|v| pass_rate(v)).collect();
        }
        let n = group.len();
        let weights: Vec<f64> = (0..tests)
            .map(|j| {
                let passes = group
                    .iter()
                    .filter(|v| v.tests[j].status == Status::Pass)
                    .count();
                (n + 1 - passes) as f64
            })
            .collect();
        let total: f64 = weights.iter().sum();
        group
            .iter()
            .map(|v| {
                let earned: f64 = v
                    .tests
                    .iter()
                    .zip(&weights)
                    .filter(|(t, _)| t.status == Status::Pass)
                    .map(|(_, w)| w)
                    .sum();
                earned / total
            })
            .collect()
    }
}

/// Binary where the group has a full pass; C·pass_rate where it does not, with 0 < C < 1.
///
/// Where a full pass exists, no partial sample can get a positive advantage (they all score 0,
/// like a sample that passes nothing), so the group pushes only toward full passes. Where none
/// exists, partial credit is kept but capped at C < 1, so that a partial pass is never worth as
/// much as a full one anywhere in the batch: with advantages that are not normalised per group
/// (`--no-std-norm`, RLOO) a partial-only group moves the policy C times less than the same
/// contrast between full passes and failures. Under per-group std normalisation the scale C
/// cancels and the design scores like `binary_fallback`.
#[derive(Debug)]
pub struct FullAnchor {
    cap: f64,
}

impl FullAnchor {
    fn parse(p: &str) -> Result<Self, String> {
        match p.trim().parse::<f64>() {
            Ok(cap) if cap > 0.0 && cap < 1.0 => Ok(FullAnchor { cap }),
            _ => Err(format!(
                "reward \"full_anchor:{p}\": the cap must be a number with 0 < C < 1"
            )),
        }
    }
}

impl Reward for FullAnchor {
    fn name(&self) -> String {
        format!("full_anchor:{}", self.cap)
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        if group.iter().any(|v| v.full_pass()) {
            group.iter().map(|v| binary(v)).collect()
        } else {
            group.iter().map(|v| self.cap * pass_rate(v)).collect()
        }
    }
}

/// Binary where the group has a full pass; where it does not, 0.5 for every sample at the
/// group's highest pass rate (when that is above 0) and 0 for the others.
///
/// Under `pass_rate`, every partial sample above the group mean gets a positive advantage: a
/// group at 3/7, 5/7 and 6/7 pushes toward two or three different wrong programs at once.
/// Here at most one pass-rate level per group is pushed up (the most complete attempt), every
/// other sample is pushed down alike, and a partial pass is worth half a full pass.
#[derive(Debug)]
pub struct BestPartial;

impl Reward for BestPartial {
    fn name(&self) -> String {
        "best_partial".into()
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        if group.iter().any(|v| v.full_pass()) {
            return group.iter().map(|v| binary(v)).collect();
        }
        // Compare counts, not floats: passed_i / total_i vs passed_j / total_j exactly.
        let best = group
            .iter()
            .map(|v| (v.passed, v.total))
            .max_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)))
            .expect("a group is never empty");
        group
            .iter()
            .map(|v| {
                if best.0 > 0 && v.passed * best.1 == best.0 * v.total {
                    0.5
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// VeRPO-style dense reward combined with the outcome:
/// (1[full pass] + B·Σ_j w_j·pass_ij / Σ_j w_j) / (1 + B) with w_j = 1 − (share of the group's
/// samples passing test j): tests that most of the group passes count little, the hard ones
/// much. A full pass scores 1 (its dense part is 1); a failed sample at most B / (1 + B).
/// Where every test is passed by everybody (all weights 0) the dense part is the pass rate.
#[derive(Debug)]
pub struct Verpo {
    pub weight: f64,
}

impl Verpo {
    fn parse(p: &str) -> Result<Self, String> {
        match p.parse::<f64>() {
            Ok(weight) if weight.is_finite() && weight > 0.0 => Ok(Verpo { weight }),
            _ => Err(format!("verpo:B needs a number B > 0, not \"{p}\"")),
        }
    }
}

impl Reward for Verpo {
    fn name(&self) -> String {
        format!("verpo:{}", self.weight)
    }
    fn score(&self, group: &[&Verdict], notes: &mut Vec<String>) -> Vec<f64> {
        let tests = group[0].tests.len();
        if let Some(other) = group.iter().find(|v| v.tests.len() != tests) {
            notes.push(format!(
                "samples have different numbers of tests ({tests} and {}); verpo uses the plain \
                 pass rate as its dense part for this group",
                other.tests.len()
            ));
            return group
                .iter()
                .map(|v| (binary(v) + self.weight * pass_rate(v)) / (1.0 + self.weight))
                .collect();
        }
        let n = group.len() as f64;
        let weights: Vec<f64> = (0..tests)
            .map(|j| {
                let passes = group
                    .iter()
                    .filter(|v| v.tests[j].status == Status::Pass)
                    .count();
                1.0 - passes as f64 / n
            })
            .collect();
        let total: f64 = weights.iter().sum();
        group
            .iter()
            .map(|v| {
                let dense = if total > 0.0 {
                    v.tests
                        .iter()
                        .zip(&weights)
                        .filter(|(t, _)| t.status == Status::Pass)
                        .map(|(_, w)| w)
                        .sum::<f64>()
                        / total
                } else {
                    pass_rate(v)
                };
                (binary(v) + self.weight * dense) / (1.0 + self.weight)
            })
            .collect()
    }
}

/// CoRPO-style: the reward is the pass rate, and the group baseline is max(baseline, T), so a
/// sample below T (with T = 1: every failed sample) is never pushed up, however the rest of
/// its group did; partial credit only orders the failures among themselves.
#[derive(Debug)]
pub struct Corpo {
    pub floor: f64,
}

impl Corpo {
    fn parse(p: &str) -> Result<Self, String> {
        match p.parse::<f64>() {
            Ok(floor) if floor > 0.0 && floor <= 1.0 => Ok(Corpo { floor }),
            _ => Err(format!("corpo:T needs a number 0 < T <= 1, not \"{p}\"")),
        }
    }
}

impl Reward for Corpo {
    fn name(&self) -> String {
        format!("corpo:{}", self.floor)
    }
    fn score(&self, group: &[&Verdict], _: &mut Vec<String>) -> Vec<f64> {
        group.iter().map(|v| pass_rate(v)).collect()
    }
    fn baseline_floor(&self) -> Option<f64> {
        Some(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict from a string of statuses (see [`rlcode_core::testing::verdict`]).
    fn v(statuses: &str) -> Verdict {
        rlcode_core::testing::verdict(statuses, "test")
    }

    fn rewards(spec: &str, group: &[&str]) -> Vec<Option<f64>> {
        let verdicts: Vec<Verdict> = group.iter().map(|s| v(s)).collect();
        let refs: Vec<&Verdict> = verdicts.iter().collect();
        score_group(&*parse(spec).unwrap(), &refs, &mut Vec::new())
    }

    fn close(got: &[Option<f64>], want: &[Option<f64>]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}"),
                (None, None) => {}
                _ => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn binary_and_pass_rate() {
        let group = ["ppp", "pfp", "fff", "pet"];
        close(
            &rewards("binary", &group),
            &[Some(1.0), Some(0.0), Some(0.0), Some(0.0)],
        );
        close(
            &rewards("pass_rate", &group),
            &[Some(1.0), Some(2.0 / 3.0), Some(0.0), Some(1.0 / 3.0)],
        );
    }

    #[test]
    fn infra_and_empty_verdicts_get_no_reward_under_every_design() {
        for d in DESIGNS {
            let spec = if d.param.is_some() {
                format!("{}:0.5", d.name)
            } else {
                d.name.to_string()
            };
            let got = rewards(&spec, &["ppp", "ppi", "", "iii", "fff"]);
            assert!(got[0].is_some() && got[4].is_some(), "{spec}: {got:?}");
            assert_eq!(&got[1..4], &[None, None, None], "{spec}");
            // A group with nothing scorable never reaches the design.
            assert_eq!(rewards(&spec, &["pi", ""]), vec![None, None], "{spec}");
        }
    }

    #[test]
    fn binary_fallback_switches_on_a_full_pass_in_the_group() {
        close(
            &rewards("binary_fallback", &["pp", "pf", "ff"]),
            &[Some(1.0), Some(0.0), Some(0.0)],
        );
        close(
            &rewards("binary_fallback", &["pf", "ff", "fp"]),
            &[Some(0.5), Some(0.0), Some(0.5)],
        );
        // The infra sample would have been a full pass but for the sandbox: it must not decide.
        close(
            &rewards("binary_fallback", &["pi", "pf"]),
            &[None, Some(0.5)],
        );
    }

    #[test]
    fn power_raises_pass_rate() {
        close(
            &rewards("power:2", &["pf", "pppf", "ff"]),
            &[Some(0.25), Some(0.5625), Some(0.0)],
        );
        close(&rewards("power:0.5", &["pppf"]), &[Some(0.75f64.sqrt())]);
        assert_eq!(parse("power:2").unwrap().name(), "power:2");
        assert_eq!(parse("power:0.5").unwrap().name(), "power:0.5");
        for bad in [
            "power",
            "power:",
            "power:0",
            "power:-1",
            "power:x",
            "power:inf",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_weighted_prizes_rarely_passed_tests() {
        // n = 3; test 1 passed by 3 (w = 1), test 2 by 1 (w = 3), test 3 by 0 (w = 4); Σw = 8.
        close(
            &rewards("test_weighted", &["ppf", "pff", "pff"]),
            &[Some(4.0 / 8.0), Some(1.0 / 8.0), Some(1.0 / 8.0)],
        );
        // Passing the rare test is worth more than passing the common one.
        close(
            &rewards("test_weighted", &["pf", "pf", "fp"]),
            // c = (2, 1): w = (2, 3).
            &[Some(0.4), Some(0.4), Some(0.6)],
        );
        // Equal pass counts per test: the same as pass_rate.
        close(
            &rewards("test_weighted", &["pf", "fp"]),
            &[Some(0.5), Some(0.5)],
        );
        // A full pass is always 1, even when everyone passes everything.
        close(
            &rewards("test_weighted", &["pp", "pp"]),
            &[Some(1.0), Some(1.0)],
        );
        // A lone partial pass keeps some credit: w = (1, 2), reward 1/3.
        close(&rewards("test_weighted", &["pf"]), &[Some(1.0 / 3.0)]);
        // An infra sample's passes do not make a test look common.
        close(
            &rewards("test_weighted", &["pfi", "pfi", "fpf", "pff"]),
            // Over the two scorable samples: c = (1, 1, 0), w = (2, 2, 3).
            &[None, None, Some(2.0 / 7.0), Some(2.0 / 7.0)],
        );
    }

    #[test]
    fn test_weighted_falls_back_on_mismatched_test_counts() {
        let verdicts = [v("pf"), v("pff")];
        let refs: Vec<&Verdict> = verdicts.iter().collect();
        let mut notes = Vec::new();
        let got = score_group(&TestWeighted, &refs, &mut notes);
        close(&got, &[Some(0.5), Some(1.0 / 3.0)]);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("falls back to pass_rate"), "{notes:?}");
    }

    /// GRPO advantages (std-normalised) of a group's rewards; the group has no infra samples.
    fn advantages(spec: &str, group: &[&str]) -> Vec<f64> {
        let r: Vec<f64> = rewards(spec, group)
            .into_iter()
            .map(Option::unwrap)
            .collect();
        rlcode_core::advantage::grpo(&r, true, 1e-6)
    }

    #[test]
    fn full_anchor_gates_partial_credit_on_a_full_pass_and_caps_it() {
        // With a full pass: binary, so the 3/4 and 1/4 samples score like the 0/4 one.
        close(
            &rewards("full_anchor:0.5", &["pppp", "pppf", "pfff", "ffff"]),
            &[Some(1.0), Some(0.0), Some(0.0), Some(0.0)],
        );
        // Without one: 0.5 · pass_rate, below any full pass.
        close(
            &rewards("full_anchor:0.5", &["pppf", "pfff", "ffff"]),
            &[Some(0.375), Some(0.125), Some(0.0)],
        );
        close(
            &rewards("full_anchor:0.25", &["pf", "ff"]),
            &[Some(0.125), Some(0.0)],
        );
        assert_eq!(parse("full_anchor:0.5").unwrap().name(), "full_anchor:0.5");
        for bad in [
            "full_anchor",
            "full_anchor:",
            "full_anchor:0",
            "full_anchor:1",
            "full_anchor:1.5",
            "full_anchor:-0.5",
            "full_anchor:nan",
            "full_anchor:x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_partial_sample_is_pushed_up_beside_a_full_pass() {
        // Under pass_rate, the 3/4 sample is above the group mean (0.5625): a positive
        // advantage for a wrong program in a group that has a right one.
        let group = ["pppp", "pppf", "pfff", "ffff"];
        assert!(advantages("pass_rate", &group)[1] > 0.0);
        for spec in ["full_anchor:0.5", "best_partial", "binary_fallback"] {
            let a = advantages(spec, &group);
            assert!(a[0] > 0.0, "{spec}: {a:?}");
            assert!(a[1..].iter().all(|&x| x < 0.0), "{spec}: {a:?}");
        }
    }

    #[test]
    fn verpo_adds_difficulty_weighted_credit_to_the_outcome() {
        // Test 1 passed by all (w = 0), test 2 by one of three (w = 2/3), test 3 by none
        // (w = 1): total 5/3.
        close(
            &rewards("verpo:0.5", &["ppf", "pff", "pff"]),
            &[
                Some(0.5 * (2.0 / 3.0) / (5.0 / 3.0) / 1.5),
                Some(0.0),
                Some(0.0),
            ],
        );
        // w = (1/3, 2/3): a full pass scores 1; "pf" its weighted share 1/3 x B / (1 + B).
        close(
            &rewards("verpo:0.5", &["pp", "pf", "ff"]),
            &[Some(1.0), Some(0.5 * (1.0 / 3.0) / 1.5), Some(0.0)],
        );
        close(
            &rewards("verpo:0.25", &["pp", "pp"]),
            &[Some(1.0), Some(1.0)],
        );
        assert!(parse("verpo:0").is_err() && parse("verpo").is_err());
        assert_eq!(parse("verpo:0.5").unwrap().name(), "verpo:0.5");
    }

    #[test]
    fn corpo_is_pass_rate_with_a_baseline_floor() {
        close(
            &rewards("corpo:1", &["ppf", "pff", "ppp"]),
            &[Some(2.0 / 3.0), Some(1.0 / 3.0), Some(1.0)],
        );
        assert_eq!(parse("corpo:1").unwrap().baseline_floor(), Some(1.0));
        assert_eq!(parse("pass_rate").unwrap().baseline_floor(), None);
        assert!(parse("corpo:0").is_err() && parse("corpo:1.5").is_err());
    }

    #[test]
    fn best_partial_pushes_up_only_the_most_complete_attempts() {
        close(
            &rewards("best_partial", &["pppf", "ppff", "pfff", "ffff"]),
            &[Some(0.5), Some(0.0), Some(0.0), Some(0.0)],
        );
        // pass_rate pushes up both 3/4 and 2/4 (mean 0.375); best_partial only 3/4.
        let pr = advantages("pass_rate", &["pppf", "ppff", "pfff", "ffff"]);
        assert!(pr[0] > 0.0 && pr[1] > 0.0);
        let bp = advantages("best_partial", &["pppf", "ppff", "pfff", "ffff"]);
        assert!(bp[0] > 0.0 && bp[1..].iter().all(|&x| x < 0.0), "{bp:?}");
        // Ties at the top share it; equal rates over different test counts are a tie (2/4 =
        // 1/2), compared exactly.
        close(
            &rewards("best_partial", &["ppff", "pf", "pfff"]),
            &[Some(0.5), Some(0.5), Some(0.0)],
        );
        // Nothing passes anything: all 0, no gradient (there is no direction to prefer).
        close(
            &rewards("best_partial", &["ff", "fe"]),
            &[Some(0.0), Some(0.0)],
        );
        // A full pass in the group: binary.
        close(
            &rewards("best_partial", &["pp", "pf", "ff"]),
            &[Some(1.0), Some(0.0), Some(0.0)],
        );
        // The infra sample (which would have been the best) takes no part.
        close(
            &rewards("best_partial", &["ppi", "pff", "fff"]),
            &[None, Some(0.5), Some(0.0)],
        );
        assert_eq!(parse("best_partial").unwrap().name(), "best_partial");
    }

    #[test]
    fn every_design_keeps_rewards_in_0_1_with_1_for_a_full_pass() {
        let group = ["ppp", "ppf", "pff", "fff", "ppe", "pt"];
        for d in DESIGNS {
            let spec = if d.param.is_some() {
                format!("{}:0.5", d.name)
            } else {
                d.name.to_string()
            };
            let got = rewards(&spec, &group);
            assert_eq!(got[0], Some(1.0), "{spec}");
            for r in &got {
                let r = r.expect("every sample is scorable");
                assert!((0.0..=1.0).contains(&r), "{spec}: {got:?}");
            }
        }
    }

    #[test]
    fn parse_rejects_unknown_names_and_stray_parameters() {
        let e = parse("nope").unwrap_err();
        assert!(
            e.contains("unknown reward \"nope\"") && e.contains("pass_rate"),
            "{e}"
        );
        assert!(
            parse("binary:3")
                .unwrap_err()
                .contains("takes no parameter")
        );
        for d in DESIGNS {
            if d.param.is_none() {
                assert_eq!(parse(d.name).unwrap().name(), d.name);
            }
        }
    }
}

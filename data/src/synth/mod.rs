//! A small world of Python function-writing problems, and an SFT corpus for it.
//!
//! A problem is one instance of a [family](families): a family name and a parameter vector
//! (thresholds, constants, which end of a range is open, ...). Everything about an instance (its
//! function name, docstring, tests, reference and near-misses) is a pure function of that key,
//! and so is its split: an instance is in `test` when a hash of its key says so (one in five),
//! so train and test never share a problem, whatever the seed or count. The seed only chooses
//! which instances are emitted and in which order.

pub mod families;

pub use families::{FAMILIES, Family, Program, Spec};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rlcode_core::hash::{content_digest, digest_word};
use rlcode_core::records::{Problem, Test};
use serde_json::{Map, Value, json};

/// A Python value in a test: an argument or an expected result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Int(i64),
    Bool(bool),
    Str(String),
    List(Vec<i64>),
    None,
}

impl Val {
    /// The Python literal. Strings hold only letters and spaces, so no escaping is needed.
    pub fn python(&self) -> String {
        match self {
            Val::Int(n) => n.to_string(),
            Val::Bool(b) => if *b { "True" } else { "False" }.into(),
            Val::Str(s) => format!("\"{s}\""),
            Val::List(xs) => {
                let items: Vec<String> = xs.iter().map(i64::to_string).collect();
                format!("[{}]", items.join(", "))
            }
            Val::None => "None".into(),
        }
    }
}

/// Which part of the world: problems to train on, or held-out problems to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One problem of the world.
pub struct Instance {
    pub family: &'static Family,
    pub params: Vec<i64>,
    /// `synth/<family>/<params>`, e.g. `synth/clamp/m3_12` (`m` for minus).
    pub id: String,
    /// The function's name.
    pub name: String,
    pub spec: Spec,
    /// Distinct argument lists and the reference's result for each.
    pub tests: Vec<(Vec<Val>, Val)>,
    pub split: Split,
}

impl Instance {
    pub fn new(family: &'static Family, params: Vec<i64>) -> Self {
        let key: Vec<String> = params.iter().map(i64::to_string).collect();
        let hash = content_digest(["rlcode-synth", family.name, &key.join(",")]);
        let word = |i: usize| digest_word(&hash, i);
        let split = if word(0) % 5 == 0 {
            Split::Test
        } else {
            Split::Train
        };
        let spec = (family.build)(&params);
        let name = spec.names[(word(1) % spec.names.len() as u64) as usize].to_string();
        let mut tests: Vec<(Vec<Val>, Val)> = Vec::new();
        for args in &spec.inputs {
            if tests.iter().any(|(a, _)| a == args) {
                continue;
            }
            let expected = (spec.reference.run)(args)
                .unwrap_or_else(|| panic!("the reference of {} raises on {args:?}", family.name));
            tests.push((args.clone(), expected));
        }
        let params_id: Vec<String> = params
            .iter()
            .map(|&p| {
                if p < 0 {
                    format!("m{}", -p)
                } else {
                    p.to_string()
                }
            })
            .collect();
        Instance {
            family,
            id: format!("synth/{}/{}", family.name, params_id.join("_")),
            params,
            name,
            spec,
            tests,
            split,
        }
    }

    /// `def name(args):` and the docstring: what the policy sees.
    pub fn prompt(&self) -> String {
        format!(
            "def {}({}):\n    \"\"\"{}\"\"\"\n",
            self.name, self.spec.args, self.spec.doc
        )
    }

    /// A program's body, indented under the prompt.
    pub fn completion(&self, program: &Program) -> String {
        program.body.iter().map(|l| format!("    {l}\n")).collect()
    }

    /// The assert code of each test.
    pub fn assert_codes(&self) -> Vec<String> {
        self.tests
            .iter()
            .map(|(args, expected)| {
                let args: Vec<String> = args.iter().map(Val::python).collect();
                format!(
                    "assert {}({}) == {}\n",
                    self.name,
                    args.join(", "),
                    expected.python()
                )
            })
            .collect()
    }

    /// How many tests the program passes, by its model.
    pub fn passed_by(&self, program: &Program) -> usize {
        self.tests
            .iter()
            .filter(|(args, expected)| (program.run)(args).as_ref() == Some(expected))
            .count()
    }

    pub fn problem(&self) -> Problem {
        let mut extra = Map::new();
        extra.insert("source".into(), Value::from("synth"));
        extra.insert("family".into(), Value::from(self.family.name));
        extra.insert("split".into(), Value::from(self.split.as_str()));
        let prompt = self.prompt();
        Problem {
            id: self.id.clone(),
            reference: Some(format!("{prompt}{}", self.completion(&self.spec.reference))),
            prompt,
            language: "python".into(),
            entry_point: Some(self.name.clone()),
            tests: self
                .assert_codes()
                .into_iter()
                .map(|code| Test::Assert { code })
                .collect(),
            setup: None,
            limits: None,
            extra,
        }
    }
}

/// Every instance of a split, in the order the seed gives: each family's instances are
/// shuffled, then the families take turns, so any prefix mixes the families evenly.
pub fn instances(split: Split, seed: u64) -> Vec<Instance> {
    instances_of(split, seed, &FAMILIES.iter().collect::<Vec<_>>())
}

/// The families named in `names` (all of them when empty), in the order of [`FAMILIES`]; an
/// unknown name is an error that lists the known ones.
pub fn select(names: &[String]) -> Result<Vec<&'static Family>, String> {
    for n in names {
        if !FAMILIES.iter().any(|f| f.name == n) {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
            return Err(format!(
                "unknown family \"{n}\" (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(FAMILIES
        .iter()
        .filter(|f| names.is_empty() || names.iter().any(|n| n == f.name))
        .collect())
}

/// [`instances`] restricted to some families. A problem's split and parameters do not depend
/// on which families are chosen; its position does (the chosen families take turns).
pub fn instances_of(split: Split, seed: u64, families: &[&Family]) -> Vec<Instance> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut queues: Vec<std::vec::IntoIter<Instance>> = FAMILIES
        .iter()
        .filter(|f| families.iter().any(|g| g.name == f.name))
        .map(|family| {
            let mut of_split: Vec<Instance> = (family.space)()
                .into_iter()
                .map(|params| Instance::new(family, params))
                .filter(|i| i.split == split)
                .collect();
            of_split.shuffle(&mut rng);
            of_split.into_iter()
        })
        .collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        out.extend(queues.iter_mut().filter_map(Iterator::next));
        if out.len() == before {
            return out;
        }
    }
}

/// The first `count` problems of a split for `seed` (all of them, with a warning, when the split
/// has fewer).
pub fn problems(split: Split, count: usize, seed: u64, families: &[&Family]) -> Vec<Problem> {
    let all = instances_of(split, seed, families);
    if count > all.len() {
        eprintln!(
            "{}: the {} split has only {} problems; writing all of them",
            crate::PROGRAM,
            split.as_str(),
            all.len()
        );
    }
    all.iter().take(count).map(Instance::problem).collect()
}

/// One record of the SFT corpus: a full program for a train problem, correct or a near-miss.
pub fn corpus(count: usize, seed: u64, correct_fraction: f64, families: &[&Family]) -> Vec<Value> {
    use rand::Rng;
    let pool = instances_of(Split::Train, seed, families);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A stream of its own, so that the choices here do not shift with the shuffles above.
    rng.set_stream(1);
    let mut seen = vec![0u64; pool.len()];
    (0..count)
        .map(|i| {
            let at = i % pool.len();
            let inst = &pool[at];
            let correct =
                inst.spec.near_misses.is_empty() || rng.random::<f64>() < correct_fraction;
            let program = if correct {
                &inst.spec.reference
            } else {
                &inst.spec.near_misses[rng.random_range(0..inst.spec.near_misses.len())]
            };
            let completion = inst.completion(program);
            let sample = seen[at];
            seen[at] += 1;
            json!({
                "problem_id": inst.id,
                "sample": sample,
                "completion": completion,
                "code": format!("{}{completion}", inst.prompt()),
                "kind": if correct { "correct" } else { "near_miss" },
                "mutation": program.mutation,
                "family": inst.family.name,
                "expected_passed": inst.passed_by(program),
                "expected_total": inst.tests.len(),
                "model": "synth-corpus",
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<&'static Family> {
        select(&[]).unwrap()
    }

    #[test]
    fn families_can_be_chosen() {
        let names = vec!["clamp".to_string(), "in_range".to_string()];
        let chosen = select(&names).unwrap();
        assert_eq!(chosen.len(), 2);
        let some = problems(Split::Test, 1000, 1, &chosen);
        assert!(
            some.iter()
                .all(|p| p.id.starts_with("synth/clamp/") || p.id.starts_with("synth/in_range/"))
        );
        // the same problems as in the full split, each in its split whatever the choice
        let full: HashSet<String> = problems(Split::Test, 100_000, 1, &all())
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert!(some.iter().all(|p| full.contains(&p.id)));
        let Err(e) = select(&["nope".to_string()]) else {
            panic!("an unknown family must be an error")
        };
        assert!(
            e.contains("unknown family \"nope\"") && e.contains("clamp"),
            "{e}"
        );
        let corpus = corpus(50, 1, 0.5, &chosen);
        assert!(
            corpus
                .iter()
                .all(|r| r["family"] == "clamp" || r["family"] == "in_range")
        );
    }
    use std::collections::HashSet;

    fn every_instance() -> Vec<Instance> {
        FAMILIES
            .iter()
            .flat_map(|f| (f.space)().into_iter().map(move |p| Instance::new(f, p)))
            .collect()
    }

    #[test]
    fn every_instance_has_five_distinct_tests_and_near_misses_that_pass_some_but_not_all() {
        for inst in every_instance() {
            let total = inst.tests.len();
            assert!(total >= 5, "{}: {total} tests", inst.id);
            assert_eq!(inst.passed_by(&inst.spec.reference), total, "{}", inst.id);
            assert!(!inst.spec.near_misses.is_empty(), "{}", inst.id);
            for nm in &inst.spec.near_misses {
                let passed = inst.passed_by(nm);
                assert!(
                    passed > 0 && passed < total,
                    "{} {}: passes {passed}/{total}",
                    inst.id,
                    nm.mutation
                );
                assert_ne!(nm.body, inst.spec.reference.body, "{}", inst.id);
            }
        }
    }

    #[test]
    fn each_family_near_miss_differs_from_the_reference_somewhere() {
        // Per family and mutation, over the whole parameter space: the two programs' models
        // disagree on some test of every instance (so the Python texts must differ too).
        for family in FAMILIES {
            let mut mutations = HashSet::new();
            for params in (family.space)() {
                let inst = Instance::new(family, params);
                for nm in &inst.spec.near_misses {
                    let differs = inst
                        .tests
                        .iter()
                        .any(|(args, _)| (nm.run)(args) != (inst.spec.reference.run)(args));
                    assert!(differs, "{} {}", inst.id, nm.mutation);
                    mutations.insert(nm.mutation);
                }
            }
            assert!(!mutations.is_empty(), "{}", family.name);
        }
    }

    #[test]
    fn train_and_test_are_disjoint_and_both_have_hundreds() {
        let train: Vec<String> = instances(Split::Train, 1)
            .into_iter()
            .map(|i| i.id)
            .collect();
        let test: Vec<String> = instances(Split::Test, 1)
            .into_iter()
            .map(|i| i.id)
            .collect();
        let train_set: HashSet<&String> = train.iter().collect();
        assert_eq!(train_set.len(), train.len(), "duplicate train ids");
        assert!(test.iter().all(|id| !train_set.contains(id)));
        assert!(
            train.len() >= 1000 && test.len() >= 200,
            "{} {}",
            train.len(),
            test.len()
        );
        // The split is a property of the problem, not of the seed.
        let test_other_seed: HashSet<String> = instances(Split::Test, 99)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(test_other_seed, test.iter().cloned().collect());
        // And no two problems, in either split, share a prompt and tests.
        let mut seen = HashSet::new();
        for inst in every_instance() {
            assert!(
                seen.insert((inst.prompt(), inst.assert_codes())),
                "{}",
                inst.id
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_problems_and_a_prefix_for_a_smaller_count() {
        let a = serde_json::to_string(&problems(Split::Train, 300, 7, &all())).unwrap();
        let b = serde_json::to_string(&problems(Split::Train, 300, 7, &all())).unwrap();
        assert_eq!(a, b);
        let c = serde_json::to_string(&problems(Split::Train, 300, 8, &all())).unwrap();
        assert_ne!(a, c);
        let small = problems(Split::Train, 10, 7, &all());
        assert_eq!(small, problems(Split::Train, 300, 7, &all())[..10]);
        // The first turns visit every family.
        let families: HashSet<&str> = instances(Split::Train, 7)[..FAMILIES.len()]
            .iter()
            .map(|i| i.family.name)
            .collect();
        assert_eq!(families.len(), FAMILIES.len());
    }

    #[test]
    fn a_problem_is_a_code_prefix_with_a_reference_and_asserts() {
        let inst = Instance::new(&FAMILIES[2], vec![-3, 12]);
        let p = inst.problem();
        assert_eq!(p.id, "synth/clamp/m3_12");
        let name = p.entry_point.clone().unwrap();
        assert_eq!(
            p.prompt,
            format!(
                "def {name}(x):\n    \"\"\"Return x limited to the range -3 to 9, both ends included.\"\"\"\n"
            )
        );
        assert_eq!(
            p.reference.unwrap(),
            format!("{}    return max(-3, min(9, x))\n", p.prompt)
        );
        assert_eq!(
            p.tests[0],
            Test::Assert {
                code: format!("assert {name}(-15) == -3\n")
            }
        );
        assert_eq!(p.extra["split"], inst.split.as_str());
    }

    #[test]
    fn corpus_mixes_correct_and_near_miss_programs_as_asked() {
        let records = corpus(2000, 3, 0.6, &all());
        assert_eq!(records, corpus(2000, 3, 0.6, &all()));
        let correct = records.iter().filter(|r| r["kind"] == "correct").count();
        assert!((1100..1300).contains(&correct), "{correct}");
        let test_ids: HashSet<String> = instances(Split::Test, 3)
            .into_iter()
            .map(|i| i.id)
            .collect();
        for r in &records {
            assert!(!test_ids.contains(r["problem_id"].as_str().unwrap()));
            let (passed, total) = (r["expected_passed"].as_u64(), r["expected_total"].as_u64());
            if r["kind"] == "correct" {
                assert_eq!(passed, total);
            } else {
                assert!(passed.unwrap() > 0 && passed < total);
            }
            assert!(
                r["code"]
                    .as_str()
                    .unwrap()
                    .ends_with(r["completion"].as_str().unwrap())
            );
        }
        let all_correct = corpus(50, 3, 1.0, &all());
        assert!(all_correct.iter().all(|r| r["kind"] == "correct"));
    }
}

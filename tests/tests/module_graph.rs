//! No module circles: within each crate, the modules that refer to one another (`crate::m`,
//! `super::m`) form a directed acyclic graph. The crate root (lib.rs) is left out: it declares
//! every module, and what it defines itself (the CLI, the batch loop) is the top of the graph.

use std::collections::{BTreeMap, BTreeSet};

fn graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = rlcode_tests::root().join(krate).join("src");
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        if p.extension().is_some_and(|x| x == "rs")
            && !["lib", "main", "tests"].contains(&stem.as_str())
        {
            modules.insert(stem);
        }
    }
    let mut g = BTreeMap::new();
    for m in &modules {
        let text = std::fs::read_to_string(dir.join(format!("{m}.rs"))).unwrap();
        // Only code: the unit tests at the end may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut uses = BTreeSet::new();
        for other in &modules {
            if other != m
                && (code.contains(&format!("crate::{other}::"))
                    || code.contains(&format!("crate::{other}::{{"))
                    || code.contains(&format!("crate::{other};")))
            {
                uses.insert(other.clone());
            }
        }
        g.insert(m.clone(), uses);
    }
    g
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in &g[n] {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_module_circle() {
    for krate in [
        "core", "policy", "data", "sample", "verify", "score", "update", "eval",
    ] {
        let g = graph(krate);
        if let Some(c) = cycle(&g) {
            panic!("{krate}: modules in a circle: {}\n{g:#?}", c.join(" -> "));
        }
    }
}

#[test]
fn a_circle_is_found() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
        .iter()
        .map(|(x, y)| (x.to_string(), BTreeSet::from([y.to_string()])))
        .collect();
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}

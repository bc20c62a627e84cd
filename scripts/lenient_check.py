#!/usr/bin/env python3
"""Which verdicts would change under a lenient harness: the reward-hacking watch of
scripts/train-real.sh made exact (docs/training.md).

  lenient_check.py PROBLEMS VERDICTS... [--rl-verify PATH] [--examples N]

For every test of every sample in the VERDICTS files (rl-verify's records: `code` and `verdict`),
the common naive harness is run in the same sandbox (`rl-verify --capture`, never on the host):
the program, the problem's setup and the test's assert concatenated into one script, which
passes when it runs to its end or exits with status 0 (the practice of harnesses that run
`python file.py` and read the exit code). rl-verify's own verdicts come from its strict harness
(docs/security.md: a sealed comparison, the harness's own exit path, builtins restored). Prints
one JSON object: samples and tests compared, the samples that fully pass under one harness and
not the other (`lenient_only_full_pass`: what a lenient verifier would have rewarded and
rl-verify did not; `strict_only_full_pass`), the tests whose pass/not-pass differs, and up to N
examples of each kind of sample.
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("problems")
    ap.add_argument("verdicts", nargs="+")
    ap.add_argument("--rl-verify", default=None)
    ap.add_argument("--examples", type=int, default=3)
    a = ap.parse_args()
    rv = a.rl_verify or os.path.join(os.environ.get("RLCODE_BIN", "target/release"), "rl-verify")

    problems = {}
    for line in open(a.problems):
        p = json.loads(line)
        problems[p["id"]] = p
    samples = []
    for path in a.verdicts:
        for n, line in enumerate(open(path), 1):
            r = json.loads(line)
            v = r.get("verdict") or {}
            tests = v.get("tests") or []
            if r["problem_id"] not in problems:
                sys.exit(f"lenient_check: {path}:{n}: problem {r['problem_id']!r} is not in {a.problems}")
            if any(t["status"] == "infra" for t in tests) or not tests:
                continue  # no usable strict verdict to compare with
            samples.append((path, n, r, tests))

    runs = []
    for i, (_, _, r, tests) in enumerate(samples):
        p = problems[r["problem_id"]]
        setup = p.get("setup") or ""
        for t, test in enumerate(p["tests"][: len(tests)]):
            runs.append({"id": f"{i}/{t}",
                         "program": r["code"] + "\n" + setup + "\n" + test["assert"]})
    out = subprocess.run([rv, "--capture"], input="".join(json.dumps(x) + "\n" for x in runs),
                         capture_output=True, text=True, check=True).stdout
    lenient = {}
    for line in out.splitlines():
        c = json.loads(line)
        i, t = map(int, c["id"].split("/"))
        lenient.setdefault(i, {})[t] = c["status"]

    report = {"samples": len(samples), "tests": len(runs), "lenient_infra_tests": 0,
              "lenient_only_full_pass": 0, "strict_only_full_pass": 0,
              "tests_lenient_pass_strict_not": 0, "tests_strict_pass_lenient_not": 0,
              "examples": {"lenient_only_full_pass": [], "strict_only_full_pass": []}}
    for i, (path, n, r, tests) in enumerate(samples):
        lv = lenient.get(i, {})
        if any(s == "infra" for s in lv.values()):
            report["lenient_infra_tests"] += sum(s == "infra" for s in lv.values())
            continue
        strict_pass = [t["status"] == "pass" for t in tests]
        lenient_pass = [lv.get(t) == "pass" for t in range(len(tests))]
        for s, l in zip(strict_pass, lenient_pass):
            report["tests_lenient_pass_strict_not"] += l and not s
            report["tests_strict_pass_lenient_not"] += s and not l
        for kind, yes in (("lenient_only_full_pass", all(lenient_pass) and not all(strict_pass)),
                          ("strict_only_full_pass", all(strict_pass) and not all(lenient_pass))):
            if yes:
                report[kind] += 1
                if len(report["examples"][kind]) < a.examples:
                    report["examples"][kind].append(
                        {"file": path, "line": n, "problem_id": r["problem_id"],
                         "sample": r.get("sample"), "code": r["code"]})
    print(json.dumps(report))


if __name__ == "__main__":
    main()

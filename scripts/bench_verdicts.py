"""What scripts/bench-verify.sh's reports share: a verifier's output and timing, and the tests
whose pass/fail differs between any two verifiers."""
import json, os


def load(out, name):
    """(rows, wall s, CPU s) of the run NAME in OUT, or None if it did not run; rows are
    (problem_id, sample, [status per test]) from rl-verify verdicts or a baseline's statuses."""
    path = f"{out}/{name}.jsonl"
    if not os.path.exists(path):
        return None
    rows = []
    for l in open(path):
        r = json.loads(l)
        statuses = r["statuses"] if "statuses" in r else [t["status"] for t in r["verdict"]["tests"]]
        rows.append((r["problem_id"], r.get("sample"), statuses))
    wall, cpu = map(float, open(f"{out}/{name}.seconds").read().split())
    return rows, wall, cpu


def print_disagreements(rows_by_name):
    """For every pair of runs, the number of tests whose pass/fail differs (and the first 10)."""
    names = list(rows_by_name)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            x, y = names[i], names[j]
            differ = []
            for (pid, sample, sx), (_, _, sy) in zip(rows_by_name[x], rows_by_name[y]):
                for k, (p, q) in enumerate(zip(sx, sy)):
                    if (p == "pass") != (q == "pass"):
                        differ.append(f"{pid} sample {sample} test {k}: {p} vs {q}")
            print(f"pass/fail differs, {x} vs {y}: {len(differ)} tests")
            for d in differ[:10]:
                print("  " + d)

#!/usr/bin/env bash
# Benchmark rl-verify against the status quo (one native python3 subprocess per test, same
# parallelism) on HumanEval: references, stubs and mutated references, every test. Reports
# tests/s of each and their ratio from one run, and counts the tests whose pass/fail differ.
# Usage: scripts/bench-verify.sh [--jobs N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc); OUT=runs/bench-verify
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "bench-verify: unknown argument $1" >&2; exit 2 ;;
  esac
done
B=${RLCODE_BIN:-target/release}
mkdir -p "$OUT"
$B/rl-data import humaneval "${RLCODE_HOME:-.rlcode}/data/HumanEval.jsonl.gz" > "$OUT/problems.jsonl"
{
  $B/rl-data references "$OUT/problems.jsonl"
  $B/rl-data stubs "$OUT/problems.jsonl"
  $B/rl-data mutants --seed 1 "$OUT/problems.jsonl"
} > "$OUT/samples.jsonl" 2>/dev/null
# Warm the compiled-module cache so neither side pays a one-off compile.
head -n 1 "$OUT/samples.jsonl" | $B/rl-verify --problems "$OUT/problems.jsonl" > /dev/null 2>&1

t0=$(date +%s.%N)
$B/rl-verify --jobs "$JOBS" --problems "$OUT/problems.jsonl" "$OUT/samples.jsonl" \
  > "$OUT/verdicts.jsonl" 2> "$OUT/verify.log"
t1=$(date +%s.%N)
python3 scripts/baseline_subprocess.py "$OUT/problems.jsonl" "$JOBS" < "$OUT/samples.jsonl" \
  > "$OUT/baseline.jsonl" 2> "$OUT/baseline.log"
t2=$(date +%s.%N)

python3 - "$OUT" "$t0" "$t1" "$t2" <<'PY'
import json, sys
out, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
ours = [json.loads(l) for l in open(f"{out}/verdicts.jsonl")]
base = [json.loads(l) for l in open(f"{out}/baseline.jsonl")]
tests = sum(len(r["verdict"]["tests"]) for r in ours)
a, d = tests / (t1 - t0), tests / (t2 - t1)
differ = []
for r, b in zip(ours, base):
    for i, (t, s) in enumerate(zip(r["verdict"]["tests"], b["statuses"])):
        if (t["status"] == "pass") != (s == "pass"):
            differ.append(f'{r["problem_id"]} sample {r.get("sample")} test {i}: rl-verify {t["status"]}, subprocess {s}')
print(f"tests: {tests}")
print(f"rl-verify (python.wasm): {t1 - t0:.1f} s, {a:.1f} tests/s")
print(f"python3 subprocess per test: {t2 - t1:.1f} s, {d:.1f} tests/s")
print(f"ratio rl-verify / subprocess: {a / d:.2f}")
print(f"tests whose pass/fail differ: {len(differ)}")
for x in differ[:20]:
    print("  " + x)
PY

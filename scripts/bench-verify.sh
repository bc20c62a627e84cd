#!/usr/bin/env bash
# Benchmark rl-verify against the status quo (one native python3 subprocess per test, same
# parallelism) on HumanEval: references, stubs and mutated references, every test. Reports
# tests/s of each and their ratio from one run, and counts the tests whose pass/fail differ.
# Then (c) rl-verify again on the verdict cache that (a) filled: every test a hit, nothing runs.
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
head -n 1 "$OUT/samples.jsonl" | $B/rl-verify --no-cache --problems "$OUT/problems.jsonl" > /dev/null 2>&1
# (a) starts from an empty verdict cache of its own, which (c) then reads.
rm -f "$OUT"/verdicts.sqlite*

t0=$(date +%s.%N)
$B/rl-verify --jobs "$JOBS" --problems "$OUT/problems.jsonl" "$OUT/samples.jsonl" \
  --cache "$OUT/verdicts.sqlite" > "$OUT/verdicts.jsonl" 2> "$OUT/verify.log"
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

# (c) rl-verify again on the warm cache (a) left: the samples once, and 8 times over (~26k tests,
# to amortise process start-up); the median of 5 runs of each, wall clock and CPU time.
for i in 1 2 3 4 5 6 7 8; do cat "$OUT/samples.jsonl"; done > "$OUT/samples-x8.jsonl"
for input in samples samples-x8; do
  for run in 1 2 3 4 5; do
    /usr/bin/time -f "%e %U %S" -o "$OUT/time-$input-$run" \
      $B/rl-verify --jobs "$JOBS" --problems "$OUT/problems.jsonl" --cache "$OUT/verdicts.sqlite" \
      "$OUT/$input.jsonl" > "$OUT/cached-$input.jsonl" 2> "$OUT/cached-$input.log"
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
fresh = [json.loads(l) for l in open(f"{out}/verdicts.jsonl")]
def strip(r):
    r["verdict"].pop("cached")
    return r
for name, times in (("samples", 1), ("samples-x8", 8)):
    cached = [json.loads(l) for l in open(f"{out}/cached-{name}.jsonl")]
    tests = sum(len(r["verdict"]["tests"]) for r in cached)
    all_cached = sum(r["verdict"]["cached"] for r in cached)
    same = [strip(dict(r)) for r in cached] == [strip(json.loads(json.dumps(r))) for r in fresh] * times
    runs = [tuple(map(float, open(f"{out}/time-{name}-{i}").read().split())) for i in range(1, 6)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] + r[2] for r in runs)
    print(f"(c) rl-verify on a warm cache, {name}: {tests} tests, {all_cached}/{len(cached)} verdicts cached, "
          f"median wall {wall:.3f} s ({tests / max(wall, 1e-3):,.0f} tests/s), "
          f"median CPU {cpu:.3f} s ({tests / max(cpu, 1e-3):,.0f} tests/CPU-s); "
          f"verdicts identical to (a) but for `cached`: {same}")
    print("   " + open(f"{out}/cached-{name}.log").read().strip().splitlines()[-1])
PY

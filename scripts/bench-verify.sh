#!/usr/bin/env bash
# Benchmark rl-verify against the status quo (one native python3 subprocess per test, same
# parallelism) on HumanEval: references, stubs and mutated references, every test. From one run,
# reports tests/s (and CPU time per test) of (a) rl-verify on the pre-initialized component (the
# default runtime), (b) rl-verify on plain python.wasm, (d) the python3 subprocess baseline, their
# ratios, and the tests whose pass/fail differs between any two of them.
# Usage: scripts/bench-verify.sh [--jobs N] [--out DIR] [--no-plain]   (--no-plain skips (b))
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc); OUT=runs/bench-verify; PLAIN=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-plain) PLAIN=0; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
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
# Warm the compiled-module caches so no side pays a one-off compile.
for rt in preinit python; do
  head -n 1 "$OUT/samples.jsonl" | $B/rl-verify --runtime "$rt" --problems "$OUT/problems.jsonl" \
    > /dev/null 2>&1
done

# timed NAME CMD...: run CMD (stdin and stdout passed through); its wall-clock seconds and the
# CPU seconds (user + system) of it and its children go to $OUT/NAME.seconds. CPU time is the
# figure to trust on a machine that other jobs share.
timed() {
  local name=$1; shift
  python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[2:])
wall = time.monotonic() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{wall} {r.ru_utime + r.ru_stime}\n")
sys.exit(rc)' "$OUT/$name.seconds" "$@"
}
verify() {
  timed "$1" "$B/rl-verify" --runtime "$2" --jobs "$JOBS" --problems "$OUT/problems.jsonl" \
    "$OUT/samples.jsonl" > "$OUT/$1.jsonl" 2> "$OUT/$1.log"
}
# (a) the pre-initialized component.
verify preinit preinit
# (b) plain CPython 3.12 python.wasm, a fresh interpreter per test.
if [[ $PLAIN == 1 ]]; then verify plain python; else rm -f "$OUT/plain.jsonl" "$OUT/plain.seconds"; fi
# (c) reserved: rl-verify with the verdict cache warm (the cache lands separately).
# (d) the status quo.
timed baseline python3 scripts/baseline_subprocess.py "$OUT/problems.jsonl" "$JOBS" \
  < "$OUT/samples.jsonl" > "$OUT/baseline.jsonl" 2> "$OUT/baseline.log"

python3 - "$OUT" "$JOBS" <<'PY'
import json, os, sys
out, jobs = sys.argv[1], sys.argv[2]
def load(name):
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
runs = {
    "(a) rl-verify, pre-initialized component": load("preinit"),
    "(b) rl-verify, plain python.wasm": load("plain"),
    # "(c) rl-verify, verdict cache warm": reserved for the verdict cache.
    "(d) python3 subprocess per test": load("baseline"),
}
runs = {k: v for k, v in runs.items() if v is not None}
rows_a = next(iter(runs.values()))[0]
tests = sum(len(s) for _, _, s in rows_a)
print(f"tests: {tests} ({len(rows_a)} samples), --jobs {jobs}, {os.cpu_count()} cores")
rate, cpu_ms = {}, {}
for name, (rows, wall, cpu) in runs.items():
    assert sum(len(s) for _, _, s in rows) == tests, f"{name}: test count differs"
    rate[name] = tests / wall
    cpu_ms[name] = cpu / tests * 1e3
    print(f"{name}: {wall:.1f} s, {rate[name]:.1f} tests/s; {cpu:.1f} CPU s, {cpu_ms[name]:.1f} CPU ms/test")
base = "(d) python3 subprocess per test"
for name in runs:
    if name != base:
        k = name.split()[0]
        print(f"ratio {k} / (d): {rate[name] / rate[base]:.2f} by tests/s, "
              f"{cpu_ms[base] / cpu_ms[name]:.2f} by CPU time per test")
names = list(runs)
for i in range(len(names)):
    for j in range(i + 1, len(names)):
        x, y = names[i], names[j]
        differ = []
        for (pid, sample, sx), (_, _, sy) in zip(runs[x][0], runs[y][0]):
            for k, (p, q) in enumerate(zip(sx, sy)):
                if (p == "pass") != (q == "pass"):
                    differ.append(f"{pid} sample {sample} test {k}: {p} vs {q}")
        print(f"pass/fail differs, {x.split()[0]} vs {y.split()[0]}: {len(differ)} tests")
        for d in differ[:10]:
            print("  " + d)
PY

#!/usr/bin/env bash
# Benchmark rl-verify against the status quo (one native python3 subprocess per test, same
# parallelism) on HumanEval: references, stubs and mutated references, every test. From one run,
# reports tests/s (and CPU time per test) of (a) rl-verify on the pre-initialized component (the
# default runtime), (b) rl-verify on plain python.wasm, (d) the python3 subprocess baseline, their
# ratios, and the tests whose pass/fail differs between any two of them.
# Then (c) rl-verify again on the verdict cache that (a) filled: every test a hit, nothing runs.
# Then, on the samples none of whose tests time out in (a) (so that no side's timeout policy
# decides the ratio), rl-verify against the fast unsandboxed practice: (e) fork per test from a
# warm python3 (RLIMIT_AS, evalplus / LiveCodeBench style), (f) exec in one warm python3 per
# worker (no isolation at all), and (g) the same exec loop inside the sandbox's own interpreter
# (one instance per worker, no isolation: the floor of any design that runs the tests on
# CPython-on-wasm); and (a) with slots reset by copying the whole snapshot (--slot-reset copy).
# Usage: scripts/bench-verify.sh [--jobs N] [--out DIR] [--no-plain]   (--no-plain skips (b))
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc); OUT=runs/bench-verify; PLAIN=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-plain) PLAIN=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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
  head -n 1 "$OUT/samples.jsonl" | $B/rl-verify --no-cache --runtime "$rt" \
    --problems "$OUT/problems.jsonl" > /dev/null 2>&1
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
  local name=$1 rt=$2; shift 2
  timed "$name" "$B/rl-verify" --runtime "$rt" --jobs "$JOBS" --problems "$OUT/problems.jsonl" \
    "$@" "$OUT/samples.jsonl" > "$OUT/$name.jsonl" 2> "$OUT/$name.log"
}
# (a) the pre-initialized component, filling an empty verdict cache of its own (which (c) reads;
# writing it is part of (a)'s time).
rm -f "$OUT"/verdicts.sqlite*
verify preinit preinit --cache "$OUT/verdicts.sqlite"
# (b) plain CPython 3.12 python.wasm, a fresh interpreter per test.
if [[ $PLAIN == 1 ]]; then verify plain python --no-cache; else rm -f "$OUT/plain.jsonl" "$OUT/plain.seconds"; fi
# (d) the status quo.
timed baseline python3 scripts/baselines.py subprocess "$OUT/problems.jsonl" "$JOBS" \
  < "$OUT/samples.jsonl" > "$OUT/baseline.jsonl" 2> "$OUT/baseline.log"

python3 - "$OUT" "$JOBS" <<'PY'
import os, sys
sys.path.insert(0, "scripts")
from bench_verdicts import load, print_disagreements
out, jobs = sys.argv[1], sys.argv[2]
runs = {
    "(a) rl-verify, pre-initialized component": load(out, "preinit"),
    "(b) rl-verify, plain python.wasm": load(out, "plain"),
    # "(c) rl-verify, verdict cache warm": reserved for the verdict cache.
    "(d) python3 subprocess per test": load(out, "baseline"),
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
print_disagreements({name.split()[0]: rows for name, (rows, _, _) in runs.items()})
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
fresh = [json.loads(l) for l in open(f"{out}/preinit.jsonl")]
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

# The fast unsandboxed practice, on the samples whose tests all finish in (a).
python3 - "$OUT" "$JOBS" <<'PY'
import json, sys
out, jobs = sys.argv[1], int(sys.argv[2])
problems = {}
for line in open(f"{out}/problems.jsonl"):
    p = json.loads(line)
    problems[p["id"]] = p
samples = open(f"{out}/samples.jsonl").read().splitlines()
finish, work = [], []
for line, r in zip(samples, map(json.loads, open(f"{out}/preinit.jsonl"))):
    if all(t["status"] != "timeout" for t in r["verdict"]["tests"]):
        finish.append(line)
        s, p = json.loads(line), problems[r["problem_id"]]
        work += [(s["code"], p.get("setup") or "", t["assert"]) for t in p["tests"]]
open(f"{out}/finish.jsonl", "w").write("\n".join(finish) + "\n")
# (g): the exec loop of `baselines.py exec` as one program per worker, run by rl-verify --capture
# (fuel and wall limits raised so that nothing stops it); it times itself inside the sandbox.
runner = """import io, sys, time, json
def run(work):
    c = {"pass": 0, "fail": 0, "error": 0}
    out, sys.stdout = sys.stdout, io.StringIO()
    t = time.perf_counter()
    for program, setup, test in work:
        try:
            g = {"__name__": "__main__"}
            exec(compile(program + "\\n" + setup, "<program>", "exec"), g)
            exec(compile(test, "<test>", "exec"), g)
            c["pass"] += 1
        except AssertionError:
            c["fail"] += 1
        except BaseException:
            c["error"] += 1
    dt = time.perf_counter() - t
    sys.stdout = out
    print(json.dumps({"tests": len(work), "seconds": dt, **c}))
run(json.loads(%r))
"""
with open(f"{out}/floor.jsonl", "w") as f:
    for k in range(jobs):
        f.write(json.dumps({"id": f"floor-{k}", "program": runner % json.dumps(work[k::jobs]),
                            "limits": {"fuel": 10**13, "wall_ms": 3600000,
                                       "memory_mb": 2048}}) + "\n")
PY
verify_finish() {
  local name=$1; shift
  timed "$name" "$B/rl-verify" --jobs "$JOBS" --problems "$OUT/problems.jsonl" --no-cache "$@" \
    "$OUT/finish.jsonl" > "$OUT/$name.jsonl" 2> "$OUT/$name.log"
}
verify_finish finish-dirty
verify_finish finish-copy --slot-reset copy
timed fork python3 scripts/baselines.py fork "$OUT/problems.jsonl" "$JOBS" \
  < "$OUT/finish.jsonl" > "$OUT/fork.jsonl" 2> "$OUT/fork.log"
timed exec python3 scripts/baselines.py exec "$OUT/problems.jsonl" "$JOBS" \
  < "$OUT/finish.jsonl" > "$OUT/exec.jsonl" 2> "$OUT/exec.log"
timed floor "$B/rl-verify" --capture --jobs "$JOBS" "$OUT/floor.jsonl" \
  > "$OUT/floor-out.jsonl" 2> "$OUT/floor.log"

python3 - "$OUT" "$JOBS" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from bench_verdicts import load, print_disagreements
out, jobs = sys.argv[1], sys.argv[2]
A, COPY, FORK, EXEC = "(a)", "(a-copy)", "(e)", "(f)"
runs = {
    A: ("rl-verify (--slot-reset dirty, the default)", load(out, "finish-dirty")),
    COPY: ("rl-verify --slot-reset copy", load(out, "finish-copy")),
    FORK: ("fork per test from a warm python3", load(out, "fork")),
    EXEC: ("exec in a warm python3, no isolation", load(out, "exec")),
}
tests = sum(len(s) for _, _, s in runs[FORK][1][0])
print(f"samples whose tests all finish in (a): {len(runs[FORK][1][0])}, {tests} tests, "
      f"--jobs {jobs}")
rate = {}
for key, (name, (rows, wall, cpu)) in runs.items():
    assert sum(len(s) for _, _, s in rows) == tests, f"{key}: test count differs"
    rate[key] = tests / wall
    print(f"{key} {name}: {wall:.2f} s, {rate[key]:.1f} tests/s; {cpu:.2f} CPU s, "
          f"{cpu / tests * 1e3:.2f} CPU ms/test")
floor = [json.loads(json.loads(l)["stdout"]) for l in open(f"{out}/floor-out.jsonl")]
fwall, _ = map(float, open(f"{out}/floor.seconds").read().split())
inside = max(f["seconds"] for f in floor)
assert sum(f["tests"] for f in floor) == tests
rate["(g)"] = tests / inside
print(f"(g) exec inside the sandbox's CPython, no isolation: {inside:.2f} s timed inside "
      f"({fwall:.2f} s with start-up), {rate['(g)']:.1f} tests/s; "
      f"pass {sum(f['pass'] for f in floor)}, fail {sum(f['fail'] for f in floor)}, "
      f"error {sum(f['error'] for f in floor)}")
print(f"ratio (a) / (e) fork: {rate[A] / rate[FORK]:.2f}; (a) / (f) exec: {rate[A] / rate[EXEC]:.3f}; "
      f"(a-copy) / (e): {rate[COPY] / rate[FORK]:.2f}; (a) / (a-copy): {rate[A] / rate[COPY]:.2f}")
print(f"the floor: (g) / (e) fork {rate['(g)'] / rate[FORK]:.2f} (5x fork is "
      f"{5 * rate[FORK]:.0f} tests/s); (g) / (f) exec {rate['(g)'] / rate[EXEC]:.2f}")
print_disagreements({key: rows for key, (_, (rows, _, _)) in runs.items()})
def fuel(name):
    return [[(t["status"], t.get("fuel")) for t in json.loads(l)["verdict"]["tests"]]
            for l in open(f"{out}/{name}.jsonl")]
print(f"statuses and fuel identical, (a) vs (a-copy): {fuel('finish-dirty') == fuel('finish-copy')}")
PY

#!/usr/bin/env bash
# Benchmark rl-verify serve against rl-verify on files, on one workload, in one run: HumanEval
# references, stubs and mutated references, every test, no verdict cache anywhere.
#   files      rl-verify --no-cache -j N on the samples file
#   serve      one server (-j N), POST /verify per problem group from 16 client threads
#   serve x2   two servers (-j N/2 each) on this machine, the client balancing round-robin
#   run_code   one server, POST /run_code (SandboxFusion) per program of a stdio workload
# Reports requests/s, tests/s, latency p50/p99 and the ratios; checks that the servers' verdicts
# equal the files' (pass/fail of every test). Writes OUT/bench-serve.md.
# Usage: scripts/bench-serve.sh [--jobs N] [--clients C] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc); CLIENTS=16; OUT=runs/bench-serve
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench-serve: unknown argument $1" >&2; exit 2 ;;
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
# Warm the compiled-module cache so no side pays a one-off compile.
head -n 1 "$OUT/samples.jsonl" | $B/rl-verify --no-cache --problems "$OUT/problems.jsonl" > /dev/null 2>&1

t0=$(date +%s.%N)
$B/rl-verify --no-cache -j "$JOBS" --problems "$OUT/problems.jsonl" "$OUT/samples.jsonl" \
  > "$OUT/files.jsonl" 2> "$OUT/files.log"
t1=$(date +%s.%N)
python3 -c "print(f'{$t1 - $t0:.3f}')" > "$OUT/files.seconds"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# serve NAME JOBS: start a server on a free port; its URL in $URL.
serve() {
  local log=$OUT/$1.log
  $B/rl-verify serve --listen 127.0.0.1:0 --no-cache -j "$2" 2> "$log" &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    URL=$(sed -n 's/.*serving on \(http:[^ ]*\).*/\1/p' "$log")
    [[ -n $URL ]] && return 0
    sleep 0.05
  done
  echo "bench-serve: the server did not start:" >&2; cat "$log" >&2; exit 1
}
stop_all() { cleanup; wait 2>/dev/null || true; PIDS=(); }

client() { # NAME MODE URLS...
  python3 - "$OUT" "$CLIENTS" "$@" <<'EOF'
import json, sys, threading, time, urllib.request
out, clients, name, mode, urls = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
problems = {p["id"]: p for p in map(json.loads, open(f"{out}/problems.jsonl"))}
samples = [json.loads(l) for l in open(f"{out}/samples.jsonl")]
reqs = []
if mode == "verify":
    groups = {}
    for i, s in enumerate(samples):
        groups.setdefault(s["problem_id"], []).append(i)
    for pid, idx in groups.items():
        body = json.dumps({"problem": problems[pid], "samples": [samples[i]["code"] for i in idx]})
        reqs.append(("/verify", body.encode(), idx))
else:  # run_code: each reference as a program reading a number and printing its square
    for i in range(2000):
        code = "n = int(input())\nprint(sum(k * k for k in range(n)))\n"
        reqs.append(("/run_code", json.dumps({"code": code, "stdin": f"{i % 500}\n", "language": "python"}).encode(), i))
answers, lat, lock, nxt = [None] * len(reqs), [], threading.Lock(), [0]
def work(w):
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= len(reqs):
            return
        path, body, _ = reqs[i]
        url = urls[i % len(urls)] + path
        t = time.monotonic()
        r = urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}), timeout=600)
        answers[i] = json.loads(r.read())
        with lock:
            lat.append(time.monotonic() - t)
t = time.monotonic()
ths = [threading.Thread(target=work, args=(w,)) for w in range(clients)]
[th.start() for th in ths]; [th.join() for th in ths]
wall = time.monotonic() - t
lat.sort()
if mode == "verify":
    tests = sum(len(v["tests"]) for a in answers for v in a["verdicts"])
    verdicts = [None] * len(samples)
    for (_, _, idx), a in zip(reqs, answers):
        for i, v in zip(idx, a["verdicts"]):
            verdicts[i] = [t["status"] == "pass" for t in v["tests"]]
    files = [[t["status"] == "pass" for t in json.loads(l)["verdict"]["tests"]] for l in open(f"{out}/files.jsonl")]
    differ = sum(a != b for a, b in zip(verdicts, files))
else:
    tests = len(answers)
    differ = sum(a["run_result"]["stdout"] != f"{sum(k * k for k in range((i % 500)))}\n" for i, a in enumerate(answers))
res = {"name": name, "requests": len(reqs), "tests": tests, "seconds": wall,
       "requests_per_s": len(reqs) / wall, "tests_per_s": tests / wall,
       "p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[min(len(lat) - 1, len(lat) * 99 // 100)] * 1e3,
       "differ": differ}
json.dump(res, open(f"{out}/{name}.json", "w"))
print(json.dumps(res))
EOF
}

serve serve "$JOBS"; client serve verify "$URL"; stop_all
HALF=$(( JOBS > 1 ? JOBS / 2 : 1 ))
serve serve2a "$HALF"; U1=$URL; serve serve2b "$HALF"; U2=$URL
client serve-x2 verify "$U1" "$U2"; stop_all
serve runcode "$JOBS"; client run_code run_code "$URL"; stop_all

python3 - "$OUT" "$JOBS" "$CLIENTS" <<'EOF' | tee "$OUT/bench-serve.md"
import json, sys
out, jobs, clients = sys.argv[1], sys.argv[2], sys.argv[3]
files_s = float(open(f"{out}/files.seconds").read())
n_tests = sum(len(json.loads(l)["verdict"]["tests"]) for l in open(f"{out}/files.jsonl"))
n_samples = sum(1 for _ in open(f"{out}/files.jsonl"))
rows = [json.load(open(f"{out}/{n}.json")) for n in ("serve", "serve-x2", "run_code")]
print(f"rl-verify serve vs rl-verify on files: HumanEval references, stubs and mutants "
      f"({n_samples} samples, {n_tests} tests), --no-cache, {jobs} worker threads in all, {clients} client threads\n")
print("| what | requests | requests/s | tests/s | vs files | p50 ms | p99 ms | verdicts differing |")
print("|---|---|---|---|---|---|---|---|")
print(f"| rl-verify on files | — | — | {n_tests / files_s:.0f} | 1.00 | — | — | — |")
for r in rows:
    ratio = r["tests_per_s"] / (n_tests / files_s) if r["name"] != "run_code" else float("nan")
    vs = f"{ratio:.2f}" if r["name"] != "run_code" else "—"
    print(f"| {r['name']} | {r['requests']} | {r['requests_per_s']:.1f} | {r['tests_per_s']:.0f} | {vs} | "
          f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['differ']} |")
EOF

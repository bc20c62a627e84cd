#!/usr/bin/env bash
# Benchmark rl-sample (local backend, SmolLM2-135M-Instruct f32, chat prompts from HumanEval,
# temperature 1, seed 1) on four workloads, in one run:
#   b1      1 prompt  x 1 sample,  128 tokens at most
#   b8      1 prompt  x 8 samples, 128 tokens
#   b32     4 prompts x 8 samples, 128 tokens
#   chat64  8 prompts x 8 samples, 256 tokens (the issue's "8 x 8 chat step")
# With --baseline DIR (a directory holding another build's rl-sample, e.g. the last release),
# each workload runs with both binaries, alternating, and the report gives the ratio; outputs
# are compared only for identity of the record count (the two builds round differently).
# Reports generated tokens per second of sampling (rl-sample's closing line, after the model is
# loaded), and the whole process's wall, user and system seconds and peak RSS.
# Writes OUT/bench-sample.md.
#
# Not measured here (yet): llama.cpp and PyTorch on the same workloads (see docs/benchmarks.md).
# Usage: scripts/bench-sample.sh [--baseline DIR] [--out DIR] [--model DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/bench-sample BASE="" MODEL=${RLCODE_HOME:-.rlcode}/models/smollm2-135m-instruct
while [[ $# -gt 0 ]]; do
  case $1 in
    --baseline) BASE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench-sample: unknown argument $1" >&2; exit 2 ;;
  esac
done
B=${RLCODE_BIN:-target/release}
[[ -f $MODEL/config.json ]] || { echo "bench-sample: no model at $MODEL (run scripts/setup-model.sh)" >&2; exit 2; }
[[ -z $BASE || -x $BASE/rl-sample ]] || { echo "bench-sample: no rl-sample in $BASE" >&2; exit 2; }
mkdir -p "$OUT"
$B/rl-data import humaneval "${RLCODE_HOME:-.rlcode}/data/HumanEval.jsonl.gz" > "$OUT/problems.jsonl"
head -n 8 "$OUT/problems.jsonl" > "$OUT/p8.jsonl"

# run LABEL BIN PROBLEMS N MAX_TOKENS
run() {
  local label=$1 bin=$2 np=$3 n=$4 mt=$5
  head -n "$np" "$OUT/p8.jsonl" > "$OUT/$label.problems.jsonl"
  /usr/bin/time -f "%e %U %S %M" -o "$OUT/$label.time" \
    "$bin" --model "$MODEL" --chat-template --problems "$OUT/$label.problems.jsonl" -n "$n" \
    --max-tokens "$mt" --temperature 1.0 --seed 1 > "$OUT/$label.jsonl" 2> "$OUT/$label.log"
  python3 - "$OUT" "$label" <<'EOF'
import json, sys
out, label = sys.argv[1:]
recs = [json.loads(l) for l in open(f"{out}/{label}.jsonl")]
wall, user, sys_, rss = open(f"{out}/{label}.time").read().split()
tokens = sum(len(r["tokens"]) for r in recs)
# rl-sample's closing line: sampling alone (after the model is loaded).
import re
m = re.search(r"([\d.]+) tok/s \(([\d.]+) s\)", open(f"{out}/{label}.log").read())
json.dump({"label": label, "samples": len(recs), "tokens": tokens, "wall": float(wall),
           "sampling_s": float(m.group(2)), "sampling_tok_s": float(m.group(1)),
           "user": float(user), "sys": float(sys_), "rss_mb": int(rss) / 1024,
           "tok_s": tokens / float(wall)}, open(f"{out}/{label}.json", "w"))
EOF
}

WORK=("b1 1 1 128" "b8 1 8 128" "b32 4 8 128" "chat64 8 8 256")
for w in "${WORK[@]}"; do
  read -r name np n mt <<<"$w"
  run "$name" "$B/rl-sample" "$np" "$n" "$mt"
  [[ -n $BASE ]] && run "$name.base" "$BASE/rl-sample" "$np" "$n" "$mt"
done

python3 - "$OUT" "$BASE" "${WORK[@]}" <<'EOF'
import json, os, platform, sys
out, base, work = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = ["# rl-sample benchmark", "",
         f"Model: SmolLM2-135M-Instruct f32; chat prompts (HumanEval's first problems); "
         f"temperature 1, seed 1; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}).",
         "tok/s: generated tokens / seconds of sampling (rl-sample's closing line: after the model "
         "is loaded); wall s, user s, sys s, RSS: the whole process.", ""]
head = "| workload | samples | tokens | tok/s | wall s | user s | sys s | RSS MB |"
if base:
    head += " baseline tokens | baseline tok/s | speedup |"
lines += [head, "|" + "---|" * (head.count("|") - 1)]
for w in work:
    name = w.split()[0]
    r = json.load(open(f"{out}/{name}.json"))
    row = (f"| {name} | {r['samples']} | {r['tokens']} | {r['sampling_tok_s']:.1f} | {r['wall']:.1f} | "
           f"{r['user']:.1f} | {r['sys']:.1f} | {r['rss_mb']:.0f} |")
    if base:
        b = json.load(open(f"{out}/{name}.base.json"))
        row += (f" {b['tokens']} | {b['sampling_tok_s']:.1f} | "
                f"{r['sampling_tok_s'] / b['sampling_tok_s']:.2f} |")
    lines.append(row)
open(f"{out}/bench-sample.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

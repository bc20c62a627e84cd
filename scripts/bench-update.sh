#!/usr/bin/env bash
# Benchmark rl-update's GRPO step on SmolLM2-135M-Instruct (f32) against PyTorch's, in one run.
# Workloads (scripts/bench_update.py batch): 8 sequences of 64 prompt + 64 completion tokens
# (8 x 128 tokens), every advantage +-1:
#   group     one prompt's 8 completions (an RL group: rl-update computes the prompt once)
#   distinct  8 different prompts (nothing to share)
# each trained in full and as a rank-16 LoRA adapter on the seven projections.
# rl-update: the whole process (load, step, save), wall seconds, median of --runs runs, each run
# listed (also its own load/train/save split). PyTorch: transformers' LlamaForCausalLM, the step alone
# (forward, backward, AdamW), in-process, median of 3 timed steps after a warm-up step, from a
# venv this script makes (.rlcode/bench/torch-venv: torch==2.15.0, transformers==5.25.0 from
# PyPI; a few GB, about a minute on this machine's network). Runs alternate between the two.
# Writes OUT/bench-update.md.
# With --baseline DIR (another build's rl-update), that build runs too, alternating.
# Usage: scripts/bench-update.sh [--out DIR] [--model DIR] [--runs N] [--baseline DIR] [--no-torch]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/bench-update MODEL=${RLCODE_HOME:-.rlcode}/models/smollm2-135m-instruct RUNS=3 BASE="" TORCH=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --baseline) BASE=$2; shift 2 ;;
    --no-torch) TORCH=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-update: unknown argument $1" >&2; exit 2 ;;
  esac
done
B=${RLCODE_BIN:-target/release}
[[ -f $MODEL/config.json ]] || { echo "bench-update: no model at $MODEL (run scripts/setup-model.sh)" >&2; exit 2; }
[[ -z $BASE || -x $BASE/rl-update ]] || { echo "bench-update: no rl-update in $BASE" >&2; exit 2; }
[[ -x $B/rl-update ]] || { echo "bench-update: no $B/rl-update (run scripts/setup.sh)" >&2; exit 2; }
mkdir -p "$OUT"
VENV=${RLCODE_HOME:-.rlcode}/bench/torch-venv
if ((TORCH)) && [[ ! -x $VENV/bin/python ]]; then
  echo "bench-update: making $VENV (torch==2.15.0, transformers==5.25.0)" >&2
  python3 -m venv "$VENV.part"
  "$VENV.part/bin/pip" install -q torch==2.15.0 transformers==5.25.0
  mv "$VENV.part" "$VENV"
fi
for kind in group distinct; do
  python3 scripts/bench_update.py batch "$OUT/$kind.jsonl" --kind "$kind"
done
# median of numbers on stdin
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# one rl-update run: prints "wall load train save"
update_run() {
  local bin=$1 kind=$2 mode=$3 log=$OUT/update.log
  local args=()
  [[ $mode == lora ]] && args=(--lora-rank 16)
  local t0 t1
  t0=$(date +%s.%N)
  "$bin/rl-update" --model "$MODEL" --algo grpo --lr 1e-6 "${args[@]}" --out "$OUT/ckpt" \
    "$OUT/$kind.jsonl" > /dev/null 2> "$log"
  t1=$(date +%s.%N)
  local split
  split=$(sed -n 's/.*(load \([0-9.]*\), train \([0-9.]*\), save \([0-9.]*\)).*/\1 \2 \3/p' "$log")
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $split"
  rm -rf "$OUT/ckpt"
}
{
  echo "# rl-update vs PyTorch: one GRPO step, SmolLM2-135M-Instruct f32, 8 x 128 tokens"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); rl-update: whole process, median of $RUNS; PyTorch: the step in-process, median of 3 after a warm-up."
  echo
  echo "| workload | mode | rl-update wall s (load / train / save) | each run | ${BASE:+baseline wall s (each run) | }PyTorch step s (fwd / bwd / AdamW) | rl-update / PyTorch |"
  echo "|---|---|---|---|${BASE:+---|}---|---|"
} > "$OUT/bench-update.md"
for kind in group distinct; do
  for mode in lora full; do
    walls=() loads=() trains=() saves=() bwalls=()
    for ((r = 0; r < RUNS; r++)); do
      read -r w l t s < <(update_run "$B" "$kind" "$mode")
      walls+=("$w") loads+=("$l") trains+=("$t") saves+=("$s")
      if [[ -n $BASE ]]; then
        read -r w _ < <(update_run "$BASE" "$kind" "$mode")
        bwalls+=("$w")
      fi
    done
    wall=$(printf '%s\n' "${walls[@]}" | median)
    split="$(printf '%s\n' "${loads[@]}" | median) / $(printf '%s\n' "${trains[@]}" | median) / $(printf '%s\n' "${saves[@]}" | median)"
    base_col=""
    each=$(IFS=,; echo "${walls[*]}" | sed 's/,/, /g')
    [[ -n $BASE ]] && base_col="$(printf '%s\n' "${bwalls[@]}" | median) ($(IFS=,; echo "${bwalls[*]}" | sed 's/,/, /g')) | "
    torch_col="–" ratio="–"
    if ((TORCH)); then
      tj=$("$VENV/bin/python" scripts/bench_update.py torch "$MODEL" "$OUT/$kind.jsonl" --mode "$mode" 2>/dev/null | tail -1)
      ts=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["step_s"], d["forward_s"], d["backward_s"], d["optimizer_s"])' "$tj")
      read -r step fw bw opt <<<"$ts"
      torch_col="$step ($fw / $bw / $opt)"
      ratio=$(awk -v a="$wall" -v b="$step" 'BEGIN { printf "%.2f", a / b }')
    fi
    echo "| $kind | $mode | $wall ($split) | $each | $base_col$torch_col | $ratio |" >> "$OUT/bench-update.md"
    echo "bench-update: $kind $mode: rl-update $wall s ($each), PyTorch $torch_col" >&2
  done
done
cat "$OUT/bench-update.md"

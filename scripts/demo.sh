#!/usr/bin/env bash
# Set everything up, then the end-to-end demo on the built-in defaults: verify HumanEval's
# reference solutions beside wrong programs (stub bodies and mutated references), score the same
# verdicts both ways, and print pass@k and reward density for each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
B=target/release
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"
HE=${RLCODE_HOME:-.rlcode}/data/HumanEval.jsonl.gz

$B/rl-data import humaneval "$HE" > "$OUT/problems.jsonl"
{
  $B/rl-data references "$OUT/problems.jsonl"
  $B/rl-data stubs "$OUT/problems.jsonl"
  $B/rl-data mutants --seed 1 "$OUT/problems.jsonl"
} > "$OUT/samples.jsonl"
$B/rl-verify --problems "$OUT/problems.jsonl" "$OUT/samples.jsonl" > "$OUT/verdicts.jsonl"

for reward in binary pass_rate; do
  $B/rl-score --reward "$reward" "$OUT/verdicts.jsonl" > "$OUT/scored-$reward.jsonl"
  printf '%s: ' "$reward"
  $B/rl-eval --k 1,2 "$OUT/scored-$reward.jsonl"
done
echo "demo: files in $OUT" >&2

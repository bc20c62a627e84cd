#!/usr/bin/env bash
# Gradient diagnostics of a finished scripts/train-real.sh run, after the fact: for each chosen
# step, the step's own verdicts are scored again under each reward design and given to
# `rl-update --diagnostics` from the adapter the step started from, so that the designs are
# compared on the very same samples (cancellation, alignment with the full-pass direction,
# log-prob changes: docs/diagnostics.md). Nothing of the run is changed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/rediagnose.sh --run DIR [OPTIONS]

  --run DIR          a run of scripts/train-real.sh: DIR/runs/<reward>-<algo>/seed-<S>
                     (its verdicts/<step>.jsonl and adapter/<step>/)
  --model DIR        the base checkpoint of the run [.rlcode/models/smollm2-135m-instruct]
  --steps LIST       steps, comma-separated [1]
  --rewards LIST     rl-score designs to score each step's verdicts with [binary,pass_rate]
  --algo ALGO        grpo or rloo [grpo]
  --seed S           rl-update --seed (a new adapter's initialisation, at step 1) [the run's,
                     from the directory name seed-<S>, else 1]
  --lr LR            [2e-4]   --lora-rank R [16]   --micro-batch N [8]: as train-real.sh's
  --out FILE         JSONL, one line per step and design: rl-update's metrics line with its
                     diagnostics, plus `run`, `train_step` and `reward` [stdout]
  -h, --help         this text
EOF
}

die() { echo "rediagnose.sh: $*" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${RLCODE_BIN:-$ROOT/target/release}
RUN="" MODEL=$ROOT/.rlcode/models/smollm2-135m-instruct STEPS=1 REWARDS=binary,pass_rate ALGO=grpo
SEED="" LR=2e-4 RANK=16 MICRO=8 OUTF=""
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --run|--model|--steps|--rewards|--algo|--seed|--lr|--lora-rank|--micro-batch|--out)
      (($# >= 2)) || die "$1 needs a value (see --help)"
      case $1 in
        --run) RUN=$2 ;; --model) MODEL=$2 ;; --steps) STEPS=$2 ;; --rewards) REWARDS=$2 ;;
        --algo) ALGO=$2 ;; --seed) SEED=$2 ;; --lr) LR=$2 ;; --lora-rank) RANK=$2 ;;
        --micro-batch) MICRO=$2 ;; --out) OUTF=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n $RUN ]] || die "--run is required (see --help)"
[[ -d $RUN/verdicts ]] || die "$RUN/verdicts not found: not a run of scripts/train-real.sh"
[[ -f $MODEL/config.json ]] || die "$MODEL/config.json not found (run scripts/setup-model.sh)"
if [[ -z $SEED ]]; then
  SEED=1
  [[ $(basename "$RUN") =~ ^seed-([0-9]+)$ ]] && SEED=${BASH_REMATCH[1]}
fi
IFS=, read -r -a STEP_LIST <<<"$STEPS"
IFS=, read -r -a RW <<<"$REWARDS"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[[ -n $OUTF ]] && : > "$OUTF"

for s in "${STEP_LIST[@]}"; do
  [[ $s =~ ^[1-9][0-9]*$ ]] || die "--steps: '$s' is not a step (1, 2, ...)"
  v=$RUN/verdicts/$s.jsonl
  [[ -s $v ]] || die "$v not found"
  prev=()
  if ((s > 1)); then
    [[ -f $RUN/adapter/$((s - 1))/adapter_model.safetensors ]] \
      || die "$RUN/adapter/$((s - 1)) not found (step $s starts from it)"
    prev=(--adapter "$RUN/adapter/$((s - 1))")
  fi
  for R in "${RW[@]}"; do
    upd=$("$B/rl-score" --reward "$R" "$v" \
      | "$B/rl-update" --model "$MODEL" "${prev[@]}" --lora-rank "$RANK" --algo "$ALGO" \
        --lr "$LR" --micro-batch "$MICRO" --seed "$SEED" --out "$tmp/adapter" --diagnostics)
    rm -rf "$tmp/adapter"
    [[ $upd == "{"*"}" ]] || die "step $s ($R): rl-update wrote no metrics line"
    line=$("$B/rl-eval" jsonl object "run=$RUN" "train_step:=$s" "reward=$R" --merge "$upd")
    if [[ -n $OUTF ]]; then echo "$line" >> "$OUTF"; else echo "$line"; fi
    echo "rediagnose.sh: step $s, $R: cancellation $("$B/rl-eval" jsonl get cancellation <<<"$line"), alignment $("$B/rl-eval" jsonl get alignment <<<"$line")" >&2
  done
done

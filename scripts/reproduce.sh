#!/usr/bin/env bash
# Reproduce the pass-rate vs binary reward study (arXiv 2605.02944) on the tiny task world:
# one shared warm start, then {rewards} x {algorithms} x {seeds} RL runs of scripts/train.sh
# with identical budgets, then a summary table, plots and calibration. Resumable: run it again
# with the same --out and it continues where it stopped. See docs/reproduce.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/reproduce.sh [OPTIONS]

Options (default in brackets; --quick changes the ones marked *):
  --out DIR               results directory [results]
  --quick                 a first look / CI check: 1 seed, 2 steps, smaller evaluations
  --rewards LIST          comma-separated rl-score designs [binary,pass_rate]
  --algos LIST            comma-separated algorithms [grpo,rloo]
  --seeds N               seeds 1..N per configuration [3]*
  --steps N               RL steps per run [6]*
  --group-size K          samples per problem [8]*
  --problems-per-step P   train problems per step [4]*
  --eval-every K          held-out evaluation every K steps (and at the last) [3]*
  --eval-problems N       held-out problems per evaluation [24]*
  --eval-samples N        samples per held-out problem [4]
  --lr LR                 RL learning rate [1e-4]
  --sft-steps N           SFT steps of the shared warm start [400]*
  --families LIST         task families (rl-data synth --families), or "all" [train.sh's]
  --update-args "ARGS"    extra rl-update flags for every RL step []
  -h, --help              this text

Writes under DIR:
  warm/                   the shared warm start (train.sh --steps 0): ckpt/0, eval/0.jsonl
  runs/<reward>-<algo>/seed-<s>/   one train.sh run each (metrics.jsonl, eval.jsonl, ...)
  summary.csv             one row per configuration and seed
  summary.md              mean ± std per configuration (Markdown)
  calibration.jsonl       rl-eval --calibration of each run's held-out evaluations (one line each)
  plots/*.png plots/*.svg held-out pass@1, pass rate, reward density and alignment vs step
  plots/plots.json        the plotted points (rl-eval plot's summary)
  wall.txt                wall time of this invocation
EOF
}

die() { echo "reproduce.sh: $*" >&2; exit 2; }
log() { echo "reproduce.sh: $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${RLCODE_BIN:-$ROOT/target/release}
OUT=results QUICK=0 REWARDS=binary,pass_rate ALGOS=grpo,rloo SEEDS="" STEPS="" GROUP=""
PPS="" EVAL_EVERY="" EVAL_PROBLEMS="" EVAL_SAMPLES=4 LR=1e-4 SFT_STEPS="" UPDATE_ARGS="" FAMILIES=""
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --quick) QUICK=1; shift ;;
    --out|--rewards|--algos|--seeds|--steps|--group-size|--problems-per-step|--eval-every|\
    --eval-problems|--eval-samples|--lr|--sft-steps|--update-args|--families)
      (($# >= 2)) || die "$1 needs a value (see --help)"
      case $1 in
        --out) OUT=$2 ;; --rewards) REWARDS=$2 ;; --algos) ALGOS=$2 ;; --seeds) SEEDS=$2 ;;
        --steps) STEPS=$2 ;; --group-size) GROUP=$2 ;; --problems-per-step) PPS=$2 ;;
        --eval-every) EVAL_EVERY=$2 ;; --eval-problems) EVAL_PROBLEMS=$2 ;;
        --eval-samples) EVAL_SAMPLES=$2 ;; --lr) LR=$2 ;; --sft-steps) SFT_STEPS=$2 ;;
        --update-args) UPDATE_ARGS=$2 ;; --families) FAMILIES=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if ((QUICK)); then
  : "${SEEDS:=1}" "${STEPS:=2}" "${GROUP:=4}" "${PPS:=2}" "${EVAL_EVERY:=2}"
  : "${EVAL_PROBLEMS:=6}" "${SFT_STEPS:=20}"
else
  : "${SEEDS:=3}" "${STEPS:=6}" "${GROUP:=8}" "${PPS:=4}" "${EVAL_EVERY:=3}"
  : "${EVAL_PROBLEMS:=24}" "${SFT_STEPS:=400}"
fi
[[ $SEEDS =~ ^[1-9][0-9]*$ ]] || die "--seeds must be a positive integer, not '$SEEDS'"
IFS=, read -r -a RW <<<"$REWARDS"
IFS=, read -r -a AL <<<"$ALGOS"
((${#RW[@]} && ${#AL[@]})) || die "--rewards and --algos need at least one entry each"
for a in "${AL[@]}"; do
  case $a in grpo|rloo) ;; *) die "--algos: '$a' is not grpo or rloo" ;; esac
done
for r in "${RW[@]}"; do
  "$B/rl-score" --reward "$r" < /dev/null > /dev/null 2>&1 || die "--rewards: rl-score does not know '$r'"
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
COMMON=(--group-size "$GROUP" --problems-per-step "$PPS" --eval-every "$EVAL_EVERY"
  --eval-problems "$EVAL_PROBLEMS" --eval-samples "$EVAL_SAMPLES" --lr "$LR")
[[ -n $FAMILIES ]] && COMMON+=(--families "$FAMILIES")

# ---- the shared warm start: init + SFT, and its held-out evaluation (step 0) ----
log "warm start ($SFT_STEPS SFT steps) in $OUT/warm"
bash "$ROOT/scripts/train.sh" --out "$OUT/warm" --steps 0 --sft-steps "$SFT_STEPS" "${COMMON[@]}"

# ---- every configuration and seed, from the same warm start ----
n=0 total=$((${#RW[@]} * ${#AL[@]} * SEEDS))
for r in "${RW[@]}"; do
  for a in "${AL[@]}"; do
    for ((s = 1; s <= SEEDS; s++)); do
      n=$((n + 1))
      dir=$OUT/runs/${r//:/}-$a/seed-$s
      log "run $n/$total: reward $r, algo $a, seed $s -> $dir"
      # Every run starts from the warm start and evaluates it with the same seed: its step-0
      # evaluation is the warm start's, copied rather than sampled again.
      if [[ ! -s $dir/eval.jsonl && -s $OUT/warm/eval/0.jsonl ]]; then
        mkdir -p "$dir/eval"
        cp "$OUT/warm/eval/0.jsonl" "$dir/eval/0.jsonl"
        grep '^{"step":0,' "$OUT/warm/eval.jsonl" > "$dir/eval.jsonl"
      fi
      bash "$ROOT/scripts/train.sh" --out "$dir" --init "$OUT/warm/ckpt/0" --reward "$r" \
        --algo "$a" --seed "$s" --steps "$STEPS" "${COMMON[@]}" \
        --diagnostics --update-args "$UPDATE_ARGS"
    done
  done
done

# ---- summary, calibration, plots ----
"$B/rl-eval" summary --runs "$OUT/runs" --out "$OUT"
# Calibration of each run: its held-out evaluations across steps (docs/calibration.md).
: > "$OUT/calibration.jsonl.tmp.$$"
for dir in "$OUT"/runs/*/seed-*; do
  label=${dir#"$OUT/runs/"}
  "$B/rl-eval" --calibration --label "$label" "$dir"/eval/*.jsonl >> "$OUT/calibration.jsonl.tmp.$$"
done
mv -f "$OUT/calibration.jsonl.tmp.$$" "$OUT/calibration.jsonl"
mkdir -p "$OUT/plots"
"$B/rl-eval" plot --runs "$OUT/runs" --out "$OUT/plots" > "$OUT/plots/plots.json"
echo "$(($(date +%s) - T0)) s (this invocation; a resumed run counts only its own time)" > "$OUT/wall.txt"
log "done in $(cat "$OUT/wall.txt"): $OUT/summary.md"
cat "$OUT/summary.md"

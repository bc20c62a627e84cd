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
  --pilot                 instead of the study: the pilot of docs/study.md (warm starts of
                          400, 800 and 1200 SFT steps; binary GRPO at lr 1e-5, --lr, 3e-4
                          and 1e-3 from the --sft-steps one, 2 seeds), into DIR/pilot.md
  --rewards LIST          comma-separated rl-score designs [binary,pass_rate]
  --algos LIST            comma-separated algorithms [grpo,rloo]
  --seeds N               seeds 1..N per configuration [5]*
  --base-seed B           seed of the warm start (init and SFT) and base of the runs'
                          sampling seeds (run seed-s samples with B*1000+s) [1]
  --steps N               RL steps per run [20]*
  --group-size K          samples per problem [8]*
  --problems-per-step P   train problems per step [8]*
  --eval-every K          held-out evaluation every K steps (and at the last) [10]*
  --eval-problems N       held-out problems per evaluation [200]*
  --eval-samples N        samples per held-out problem [8]*
  --lr LR                 RL learning rate [1e-4]
  --sft-steps N           SFT steps of the shared warm start [1200]*
  --sft-gate P            train the warm start on (rounds of 400 steps) until its held-out
                          pass@k on problems the evaluations never use reaches P (train.sh
                          --sft-gate; docs/study.md) [0.8]*
  --correct-fraction F    share of correct programs in the warm start's SFT corpus (the rest
                          are near misses; docs/study.md) [0.4]
  --margin M              equivalence margin of the comparison, in pass@1 [0.05]
  --jobs N                RL runs at a time, each with nproc/N threads (results do not
                          depend on the thread count: docs/study.md) [2]
  --diagnostics-seeds N   gradient diagnostics (rl-update --diagnostics, ~2x an update's
                          time) in the runs of seeds 1..N [2]
  --families LIST         task families (rl-data synth --families), or "all" [train.sh's]
  --budget samples|updates  train.sh --budget: a fixed number of problems per step, or
                          DAPO-style dynamic sampling until P groups are informative [samples]
  --max-draws R           with --budget updates: most chunks of P problems per step [4]
  --update-args "ARGS"    extra rl-update flags for every RL step []
  -h, --help              this text

Writes under DIR:
  warm/                   the shared warm start (train.sh --steps 0): ckpt/0, eval/0.jsonl
  runs/<reward>-<algo>/seed-<s>/   one train.sh run each (metrics.jsonl, eval.jsonl, ...)
  summary.csv             one row per configuration and seed
  summary.md              mean ± std per configuration, then the comparison in words
  comparison.csv          every configuration vs binary-grpo and vs its warm start, paired by
                          seed and problem: diff, 95% CI, p-value, TOST, MDE (rl-eval compare)
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
OUT=results QUICK=0 PILOT=0 REWARDS=binary,pass_rate ALGOS=grpo,rloo SEEDS="" STEPS="" GROUP=""
PPS="" EVAL_EVERY="" EVAL_PROBLEMS="" EVAL_SAMPLES="" LR=1e-4 SFT_STEPS="" UPDATE_ARGS="" FAMILIES=""
CORRECT_FRACTION=0.4 SFT_GATE="" BASE_SEED=1 MARGIN=0.05 DIAG_SEEDS=2 JOBS=2 BUDGET=samples MAX_DRAWS=4
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --quick) QUICK=1; shift ;;
    --pilot) PILOT=1; shift ;;
    --out|--rewards|--algos|--seeds|--steps|--group-size|--problems-per-step|--eval-every|\
    --eval-problems|--eval-samples|--lr|--sft-steps|--update-args|--families|--base-seed|--margin|--diagnostics-seeds|--jobs|\
    --budget|--max-draws|--correct-fraction|--sft-gate)
      (($# >= 2)) || die "$1 needs a value (see --help)"
      case $1 in
        --out) OUT=$2 ;; --rewards) REWARDS=$2 ;; --algos) ALGOS=$2 ;; --seeds) SEEDS=$2 ;;
        --steps) STEPS=$2 ;; --group-size) GROUP=$2 ;; --problems-per-step) PPS=$2 ;;
        --eval-every) EVAL_EVERY=$2 ;; --eval-problems) EVAL_PROBLEMS=$2 ;;
        --eval-samples) EVAL_SAMPLES=$2 ;; --lr) LR=$2 ;; --sft-steps) SFT_STEPS=$2 ;;
        --update-args) UPDATE_ARGS=$2 ;; --families) FAMILIES=$2 ;;
        --base-seed) BASE_SEED=$2 ;; --margin) MARGIN=$2 ;; --diagnostics-seeds) DIAG_SEEDS=$2 ;;
        --jobs) JOBS=$2 ;; --budget) BUDGET=$2 ;; --max-draws) MAX_DRAWS=$2 ;;
        --correct-fraction) CORRECT_FRACTION=$2 ;; --sft-gate) SFT_GATE=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if ((QUICK)); then
  : "${SEEDS:=1}" "${STEPS:=2}" "${GROUP:=4}" "${PPS:=2}" "${EVAL_EVERY:=2}"
  : "${EVAL_PROBLEMS:=6}" "${EVAL_SAMPLES:=4}" "${SFT_STEPS:=20}" "${SFT_GATE:=0}"
else
  : "${SEEDS:=5}" "${STEPS:=20}" "${GROUP:=8}" "${PPS:=8}" "${EVAL_EVERY:=10}"
  : "${EVAL_PROBLEMS:=200}" "${EVAL_SAMPLES:=8}" "${SFT_STEPS:=1200}" "${SFT_GATE:=0.8}"
fi
[[ $BASE_SEED =~ ^[0-9]+$ ]] || die "--base-seed must be a non-negative integer, not '$BASE_SEED'"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, not '$JOBS'"
[[ $DIAG_SEEDS =~ ^[0-9]+$ ]] || die "--diagnostics-seeds must be a non-negative integer, not '$DIAG_SEEDS'"
[[ $SEEDS =~ ^[1-9][0-9]*$ ]] || die "--seeds must be a positive integer, not '$SEEDS'"
case $BUDGET in samples|updates) ;; *) die "--budget must be samples or updates, not '$BUDGET'" ;; esac
[[ $MAX_DRAWS =~ ^[1-9][0-9]*$ ]] || die "--max-draws must be a positive integer, not '$MAX_DRAWS'"
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
  --eval-problems "$EVAL_PROBLEMS" --eval-samples "$EVAL_SAMPLES")
[[ -n $FAMILIES ]] && COMMON+=(--families "$FAMILIES")

# ---- a warm start: init + SFT, and its held-out evaluation (step 0) ----
warm_start() { # DIR SFT_STEPS
  log "warm start ($2 SFT steps, seed $BASE_SEED) in $1"
  bash "$ROOT/scripts/train.sh" --out "$1" --steps 0 --sft-steps "$2" --seed "$BASE_SEED" \
    --correct-fraction "$CORRECT_FRACTION" --sft-gate "$SFT_GATE" "${COMMON[@]}"
}

# ---- one RL run from a warm start ----
rl_run() { # WARM DIR REWARD ALGO SEED LR
  local warm=$1 dir=$2 diag=()
  (($5 <= DIAG_SEEDS)) && diag=(--diagnostics)
  # Every run starts from the warm start and evaluates it with the same seed: its step-0
  # evaluation is the warm start's, copied rather than sampled again.
  if [[ ! -s $dir/eval.jsonl && -s $warm/eval/0.jsonl ]]; then
    mkdir -p "$dir/eval"
    cp "$warm/eval/0.jsonl" "$dir/eval/0.jsonl"
    "$B/rl-eval" jsonl truncate step 0 "$warm/eval.jsonl" --out "$dir/eval.jsonl"
  fi
  bash "$ROOT/scripts/train.sh" --out "$dir" --init "$warm/ckpt/0" --reward "$3" \
    --algo "$4" --seed $((BASE_SEED * 1000 + $5)) --steps "$STEPS" "${COMMON[@]}" --lr "$6" \
    "${diag[@]}" --update-args "$UPDATE_ARGS" --budget "$BUDGET" --max-draws "$MAX_DRAWS"
}

# ---- progress: runs finished of those started by spawn, on stderr (a bar on a terminal) ----
finished=0 planned=0 spawned=0
progress() {
  local el=$(($(date +%s) - T0)) eta=""
  ((finished > 0 && finished < planned)) && eta=", ~$((el * (planned - finished) / finished)) s left"
  if [[ -t 2 ]]; then
    local w=30 fill=$((30 * finished / (planned > 0 ? planned : 1)))
    local bar
    printf -v bar '%*s' "$fill" ''; bar=${bar// /#}
    printf '\rreproduce.sh: [%-*s] %d/%d runs, %d s%s ' "$w" "$bar" "$finished" "$planned" "$el" "$eta" >&2
    ((finished == planned)) && echo >&2
  else
    log "$finished/$planned runs done ($el s$eta)"
  fi
  return 0
}

# ---- up to --jobs RL runs at a time ----
NPROC=$(nproc 2>/dev/null || echo 2)
THREADS=$((NPROC / JOBS)); ((THREADS >= 1)) || THREADS=1
running=0
# Start `rl_run ARGS` in the background (its stderr in DIR/train.stderr when several run at
# once); wait for one to finish first when --jobs are running.
spawn() { # LABEL WARM DIR REWARD ALGO SEED LR
  local label=$1; shift
  spawned=$((spawned + 1))
  ((spawned > planned)) && planned=$spawned
  if ((JOBS == 1)); then
    log "$label"
    rl_run "$@"
    finished=$((finished + 1)); progress
    return
  fi
  while ((running >= JOBS)); do reap; done
  mkdir -p "$2"
  log "start $label (stderr: $2/train.stderr)"
  RAYON_NUM_THREADS=$THREADS rl_run "$@" 2> "$2/train.stderr" &
  running=$((running + 1))
}
reap() {
  local rc=0
  wait -n || rc=$?
  running=$((running - 1))
  if ((rc != 0)); then
    kill $(jobs -p) 2>/dev/null || true
    die "an RL run failed (exit $rc): see its train.stderr under $OUT"
  fi
  finished=$((finished + 1)); progress
}
drain() { while ((running > 0)); do reap; done; }

if ((PILOT)); then
  # The pilot of docs/study.md: how long a warm start must train, and which RL learning rate
  # learns, for binary GRPO (2 seeds each). Configurations are named after what they vary.
  # Warm starts of a third, two thirds and all of --sft-steps (400, 800, 1200 by default).
  SFTS=$(printf '%s\n' $((SFT_STEPS / 3)) $((2 * SFT_STEPS / 3)) "$SFT_STEPS" | sort -nu)
  for sft in $SFTS; do
    [[ -s $OUT/pilot/warm-$sft/eval/0.jsonl ]] || warm_start "$OUT/pilot/warm-$sft" "$sft"
  done
  W=$OUT/pilot/warm-$SFT_STEPS
  for lr in 1e-5 "$LR" 3e-4 1e-3; do
    for ((s = 1; s <= 2; s++)); do
      name=binary-grpo
      [[ $lr != "$LR" ]] && name=binary-grpo-lr$lr
      spawn "pilot: binary GRPO at lr $lr, seed $s" "$W" "$OUT/pilot/runs/$name/seed-$s" \
        binary grpo "$s" "$lr"
    done
  done
  # Warm starts of other lengths: binary GRPO at the default lr, seed 1.
  for sft in $SFTS; do
    [[ $sft == "$SFT_STEPS" ]] && continue
    spawn "pilot: binary GRPO from $sft SFT steps" "$OUT/pilot/warm-$sft" \
      "$OUT/pilot/runs/binary-grpo-sft$sft/seed-1" binary grpo 1 "$LR"
  done
  drain
  {
    echo "# Pilot (scripts/reproduce.sh --pilot --out $OUT)"
    echo
    echo "binary-grpo: lr $LR from $SFT_STEPS SFT steps; binary-grpo-lrX: another lr;"
    echo "binary-grpo-sftN: lr $LR from a warm start of N SFT steps. $STEPS steps of $PPS x $GROUP."
    echo
   "$B/rl-eval" compare --runs "$OUT/pilot/runs" --margin "$MARGIN" --out "$OUT/pilot" >/dev/null
    cat "$OUT/pilot/comparison.md"
  } > "$OUT/pilot.md"
  log "pilot done: $OUT/pilot.md"
  cat "$OUT/pilot.md"
  exit 0
fi

warm_start "$OUT/warm" "$SFT_STEPS"

# ---- every configuration and seed, from the same warm start ----
n=0 total=$((${#RW[@]} * ${#AL[@]} * SEEDS)) planned=$total
for r in "${RW[@]}"; do
  for a in "${AL[@]}"; do
    for ((s = 1; s <= SEEDS; s++)); do
      n=$((n + 1))
      dir=$OUT/runs/${r//:/}-$a/seed-$s
      spawn "run $n/$total: reward $r, algo $a, seed $s -> $dir" "$OUT/warm" "$dir" "$r" "$a" "$s" "$LR"
    done
  done
done
drain

# ---- summary, calibration, plots ----
"$B/rl-eval" summary --runs "$OUT/runs" --out "$OUT"
# The paired comparison (docs/study.md): every design vs binary-grpo, and each vs its warm start.
if [[ -d $OUT/runs/binary-grpo ]]; then
  "$B/rl-eval" compare --runs "$OUT/runs" --baseline binary-grpo --margin "$MARGIN" --out "$OUT"
  { echo; cat "$OUT/comparison.md"; } >> "$OUT/summary.md"
fi
# Calibration of each run: its held-out evaluations across steps (docs/calibration.md).
: > "$OUT/calibration.jsonl.tmp.$$"
for dir in "$OUT"/runs/*/seed-*; do
  label=${dir#"$OUT/runs/"}
  "$B/rl-eval" calibration --label "$label" "$dir"/eval/*.jsonl >> "$OUT/calibration.jsonl.tmp.$$"
done
mv -f "$OUT/calibration.jsonl.tmp.$$" "$OUT/calibration.jsonl"
mkdir -p "$OUT/plots"
"$B/rl-eval" plot --runs "$OUT/runs" --out "$OUT/plots" > "$OUT/plots/plots.json"
echo "$(($(date +%s) - T0)) s (this invocation; a resumed run counts only its own time)" > "$OUT/wall.txt"
log "done in $(cat "$OUT/wall.txt"): $OUT/summary.md"
cat "$OUT/summary.md"

#!/usr/bin/env bash
# The RL loop over the binaries: warm start (fresh init + SFT on the synthetic corpus, or an
# existing checkpoint), then for each step sample -> verify -> score -> update, with a held-out
# evaluation every K steps. Resumes after being killed. See docs/training.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/train.sh --out DIR [OPTIONS]

The RL loop on the synthetic task world (docs/tasks.md):
  ckpt/0 = --init DIR, or a fresh `rl-update init` fine-tuned by SFT on `rl-data synth-corpus`;
  step s = 1..STEPS: rl-sample (problems (s-1)*P .. s*P-1 of the train split, from ckpt/s-1)
           | rl-verify | (verdicts/s.jsonl) | rl-score | rl-update -> ckpt/s, one line of
           metrics.jsonl; with --budget updates, further chunks of P problems from the step's
           window (problems (s-1)*P*R .. s*P*R-1) until P groups are informative;
  at step 0, every K steps and the last step: sample the first N held-out problems from
  ckpt/s, verify, rl-eval -> one line of eval.jsonl.
Running it again with the same DIR continues after the last complete step (checkpoint written
and metrics line present); a larger --steps extends the run.

Options (default in brackets):
  --out DIR               run directory (required)
  --reward DESIGN         any rl-score design (`rl-score --help` lists them all: binary,
                          pass_rate, binary_fallback, power:P, test_weighted, full_anchor:C,
                          best_partial, verpo:B, corpo:T) [pass_rate]
  --algo ALGO             grpo or rloo [grpo]
  --steps N               RL steps in all (counting steps already done) [20]
  --group-size K          samples per problem (rl-sample -n) [8]
  --problems-per-step P   train problems per step [8]
  --seed S                sampling seed (step s samples with seed S*100000+s), init and SFT
                          seed [1]
  --data-seed S           seed of the problem order and of the SFT corpus [1]
  --families LIST         task families, comma-separated (rl-data synth --families;
                          docs/tasks.md), or "all"
                          [threshold_count,clamp,in_range,three_way,distance_from]
  --temperature T         sampling temperature, training and eval [0.7]
  --max-tokens N          most tokens per completion, training and eval [96]
  --lr LR                 RL learning rate [1e-4]
  --budget samples|updates  samples: each step samples P problems and updates on them all;
                          updates: DAPO-style dynamic sampling, each step draws chunks of P
                          problems until P groups have rewards that differ (the others are
                          left out of the update; all verdicts are kept) or R chunks are drawn
                          [samples]
  --max-draws R           with --budget updates: most chunks drawn per step [4]
  --update-args "ARGS"    extra rl-update flags for RL steps, word-split (e.g. "--no-std-norm
                          --clip-high 0.28") []
  --diagnostics           add rl-update's gradient diagnostics (docs/diagnostics.md) to every
                          RL step's metrics line (one extra backward per sample)
  --diagnostics-dim D     with --diagnostics: sketch each per-sample gradient to D dimensions
                          instead of keeping it whole (large models) [exact]
  --eval-every K          evaluate ckpt/0, every K-th step and the last step (0: never) [10]
  --eval-problems N       held-out problems per evaluation (the first N of the test split) [25]
  --eval-samples N        samples per held-out problem [4]
  --eval-seed S           sampling seed of every evaluation (the same each time) [12345]
  --init DIR              start from this checkpoint (copied to DIR/ckpt/0) instead of
                          init + SFT
  --config tiny|small     rl-update init preset, without --init [tiny]
  --sft-steps N           SFT optimizer steps of the warm start [1200]
  --sft-corpus N          programs in the SFT corpus [8000]
  --sft-lr LR             SFT peak learning rate [3e-3]
  --sft-batch-size N      SFT sequences per step [16]
  --correct-fraction F    share of correct programs in the SFT corpus [0.4]
  --sft-gate P            after the SFT steps, check the warm start on the held-out problems
                          after the evaluation's (test split, problems N .. N+199 with N =
                          --eval-problems; --eval-samples each): while pass@k (k =
                          --eval-samples) is below P, train --sft-gate-steps more steps (a
                          new cosine schedule from --sft-gate-lr), at most --sft-gate-rounds
                          times; 0: no check (docs/study.md) [0.8]
  --sft-gate-steps N      SFT steps of each further round [400]
  --sft-gate-lr LR        peak learning rate of each further round [1e-3]
  --sft-gate-rounds R     most further rounds [3]
  --sft-args "ARGS"       extra rl-update flags for the SFT warm start, word-split
                          [--lr-schedule cosine --warmup-steps 20]
  --keep-checkpoints N    keep the last N step checkpoints (ckpt/0 is always kept; 0 keeps
                          all) [3]
  -h, --help              this text

Files under DIR:
  data/train.jsonl data/test.jsonl   the problems (rl-data synth, --data-seed)
  data/sft.jsonl  sft.jsonl          the SFT corpus and the SFT metrics (without --init)
  ckpt/0 ckpt/S                      checkpoints (Hugging Face layout)
  verdicts/S.jsonl                   every verdict of step S (re-score them with rl-score)
  eval/S.jsonl                       the verdicts of the evaluation at step S
  metrics.jsonl                      one line per step: rl-update's metrics plus train_step,
                                     reward, offset, problems, seconds_* and "train" (rl-eval
                                     of the step's scored samples)
  eval.jsonl                         one rl-eval line per evaluation (step, label "test")
  log.txt                            the binaries' stderr
Binaries: $RLCODE_BIN, else target/release of this checkout.
EOF
}

die() { echo "train.sh: $*${LOGF:+ (see also $LOGF)}" >&2; exit 2; }
log() { echo "train.sh: $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${RLCODE_BIN:-$ROOT/target/release}

OUT="" REWARD=pass_rate ALGO=grpo STEPS=20 GROUP=8 PPS=8 SEED=1 DATA_SEED=1
TEMP=0.7 MAX_TOKENS=96 LR=1e-4 UPDATE_ARGS="" EVAL_EVERY=10 EVAL_PROBLEMS=25
EVAL_SAMPLES=4 EVAL_SEED=12345 INIT="" CONFIG=tiny SFT_STEPS=1200 SFT_CORPUS=8000
SFT_LR=3e-3 SFT_BATCH=16 CORRECT_FRACTION=0.4 KEEP=3 FAMILIES=threshold_count,clamp,in_range,three_way,distance_from DIAG=0 DIAG_DIM=""
SFT_ARGS="--lr-schedule cosine --warmup-steps 20" BUDGET=samples MAX_DRAWS=4
SFT_GATE=0.8 SFT_GATE_STEPS=400 SFT_GATE_LR=1e-3 SFT_GATE_ROUNDS=3

while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --diagnostics) DIAG=1; shift ;;
    --out|--reward|--algo|--steps|--group-size|--problems-per-step|--seed|--data-seed|\
    --temperature|--max-tokens|--lr|--update-args|--eval-every|--eval-problems|--eval-samples|\
    --eval-seed|--init|--config|--sft-steps|--sft-corpus|--sft-lr|--sft-batch-size|\
    --correct-fraction|--keep-checkpoints|--families|--sft-args|--diagnostics-dim|--budget|\
    --max-draws|--sft-gate|--sft-gate-steps|--sft-gate-lr|--sft-gate-rounds)
      (($# >= 2)) || die "$1 needs a value (see --help)"
      v=$2
      case $1 in
        --out) OUT=$v ;; --reward) REWARD=$v ;; --algo) ALGO=$v ;; --steps) STEPS=$v ;;
        --group-size) GROUP=$v ;; --problems-per-step) PPS=$v ;; --seed) SEED=$v ;;
        --data-seed) DATA_SEED=$v ;; --temperature) TEMP=$v ;; --max-tokens) MAX_TOKENS=$v ;;
        --lr) LR=$v ;; --update-args) UPDATE_ARGS=$v ;; --eval-every) EVAL_EVERY=$v ;;
        --eval-problems) EVAL_PROBLEMS=$v ;; --eval-samples) EVAL_SAMPLES=$v ;;
        --eval-seed) EVAL_SEED=$v ;; --init) INIT=$v ;; --config) CONFIG=$v ;;
        --sft-steps) SFT_STEPS=$v ;; --sft-corpus) SFT_CORPUS=$v ;; --sft-lr) SFT_LR=$v ;;
        --sft-batch-size) SFT_BATCH=$v ;; --correct-fraction) CORRECT_FRACTION=$v ;;
        --keep-checkpoints) KEEP=$v ;; --families) FAMILIES=$v ;; --sft-args) SFT_ARGS=$v ;;
        --diagnostics-dim) DIAG_DIM=$v ;; --budget) BUDGET=$v ;; --max-draws) MAX_DRAWS=$v ;;
        --sft-gate) SFT_GATE=$v ;; --sft-gate-steps) SFT_GATE_STEPS=$v ;;
        --sft-gate-lr) SFT_GATE_LR=$v ;; --sft-gate-rounds) SFT_GATE_ROUNDS=$v ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[[ -n $OUT ]] || die "--out DIR is required (see --help)"
case $ALGO in grpo|rloo) ;; *) die "--algo must be grpo or rloo, not '$ALGO'" ;; esac
case $BUDGET in samples|updates) ;; *) die "--budget must be samples or updates, not '$BUDGET'" ;; esac
awk -v p="$SFT_GATE" 'BEGIN { exit !(p ~ /^[0-9]*\.?[0-9]+$/ && p >= 0 && p <= 1) }' \
  || die "--sft-gate must be a number in [0, 1], not '$SFT_GATE'"
for pair in "steps:$STEPS" "group-size:$GROUP" "problems-per-step:$PPS" "seed:$SEED" \
  "data-seed:$DATA_SEED" "max-tokens:$MAX_TOKENS" "eval-every:$EVAL_EVERY" \
  "eval-problems:$EVAL_PROBLEMS" "eval-samples:$EVAL_SAMPLES" "eval-seed:$EVAL_SEED" \
  "sft-steps:$SFT_STEPS" "sft-corpus:$SFT_CORPUS" "sft-batch-size:$SFT_BATCH" \
  "keep-checkpoints:$KEEP" "max-draws:$MAX_DRAWS" "sft-gate-steps:$SFT_GATE_STEPS" \
  "sft-gate-rounds:$SFT_GATE_ROUNDS"; do
  [[ ${pair#*:} =~ ^[0-9]+$ ]] || die "--${pair%%:*} must be a non-negative integer, not '${pair#*:}'"
done
((GROUP >= 1 && PPS >= 1 && EVAL_SAMPLES >= 1 && MAX_DRAWS >= 1)) || die "--group-size, --problems-per-step, --eval-samples and --max-draws must be at least 1"
[[ -z $INIT || -f $INIT/config.json ]] || die "--init $INIT: no config.json there"
for b in rl-data rl-sample rl-verify rl-score rl-update rl-eval; do
  [[ -x $B/$b ]] || die "$B/$b is missing (build with cargo build --release, or set RLCODE_BIN)"
done
if [[ -n $DIAG_DIM ]]; then
  ((DIAG)) || die "--diagnostics-dim needs --diagnostics"
  [[ $DIAG_DIM =~ ^[1-9][0-9]*$ ]] || die "--diagnostics-dim must be a positive integer, not '$DIAG_DIM'"
fi
read -r -a EXTRA <<<"$UPDATE_ARGS"
read -r -a SFT_EXTRA <<<"$SFT_ARGS"
FAM=()
[[ $FAMILIES != all ]] && FAM=(--families "$FAMILIES")
if ((DIAG)); then
  EXTRA+=(--diagnostics)
  if [[ -n $DIAG_DIM ]]; then EXTRA+=(--diagnostics-dim "$DIAG_DIM"); fi
fi

mkdir -p "$OUT"/{data,ckpt,verdicts,eval}
OUT=$(cd "$OUT" && pwd)
TRAIN=$OUT/data/train.jsonl TEST=$OUT/data/test.jsonl
METRICS=$OUT/metrics.jsonl EVALS=$OUT/eval.jsonl LOGF=$OUT/log.txt
touch "$METRICS" "$EVALS"
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Write stdin's output of a command to FILE atomically: "$@" > FILE.tmp, then mv.
atomic() {
  local file=$1; shift
  "$@" > "$file.tmp.$$"
  mv -f "$file.tmp.$$" "$file"
}

# ---- data (a pure function of --data-seed; regenerated only when missing) ----
[[ -s $TRAIN ]] || atomic "$TRAIN" "$B/rl-data" synth --split train --count 1000000 --seed "$DATA_SEED" "${FAM[@]}"
[[ -s $TEST ]] || atomic "$TEST" "$B/rl-data" synth --split test --count 1000000 --seed "$DATA_SEED" "${FAM[@]}"
NTRAIN=$(wc -l < "$TRAIN") NTEST=$(wc -l < "$TEST")

# ---- resume: the last complete step L ----
# Complete metrics lines are JSON objects with a "train_step" (rl-eval jsonl); anything else is
# a partial write of a killed run.
metric_steps() { "$B/rl-eval" jsonl steps train_step "$METRICS"; }
L=0
if [[ -d $OUT/ckpt/0 ]]; then
  for s in $(metric_steps | sort -rn); do
    if [[ -f $OUT/ckpt/$s/model.safetensors ]]; then L=$s; break; fi
  done
fi
# Drop what lies beyond L: later or partial metrics/eval lines, checkpoints and step files.
"$B/rl-eval" jsonl truncate train_step "$L" "$METRICS"
"$B/rl-eval" jsonl truncate step "$L" "$EVALS"
rm -rf "$OUT"/ckpt/.*.tmp-* "$OUT"/ckpt/.*.old-* "$OUT"/*/*.tmp.* "$OUT"/verdicts/.*.tmp.* \
  "$OUT"/*.tmp.* 2>/dev/null || true
for d in "$OUT"/ckpt/*/; do
  s=$(basename "$d")
  [[ $s =~ ^[0-9]+$ ]] && ((s > L)) && rm -rf "$d"
done
for f in "$OUT"/verdicts/*.jsonl "$OUT"/eval/*.jsonl; do
  [[ -e $f ]] || continue
  s=$(basename "$f" .jsonl)
  [[ $s =~ ^[0-9]+$ ]] && ((s > L)) && rm -f "$f"
done

# Held-out pass@k (k = --eval-samples) of checkpoint DIR on the test problems after the
# evaluation's: the warm start's gate (its problems are never evaluated during RL).
gate_pass_at_k() { # DIR
  local n=$((NTEST - EVAL_PROBLEMS))
  ((n > 200)) && n=200
  ((n > 0)) || die "--sft-gate: the test split has no problems after the first --eval-problems ($EVAL_PROBLEMS)"
  "$B/rl-sample" --model "$1" --problems "$TEST" --offset "$EVAL_PROBLEMS" --limit "$n" \
    -n "$EVAL_SAMPLES" --seed "$EVAL_SEED" --temperature "$TEMP" --max-tokens "$MAX_TOKENS" \
    2>>"$LOGF" | "$B/rl-verify" --problems "$TEST" 2>>"$LOGF" \
    | "$B/rl-eval" --k "$EVAL_SAMPLES" - | "$B/rl-eval" jsonl get "pass_at_k.$EVAL_SAMPLES"
}

# ---- warm start: ckpt/0 ----
if [[ ! -f $OUT/ckpt/0/model.safetensors ]]; then
  rm -rf "$OUT/ckpt/0"
  if [[ -n $INIT ]]; then
    log "ckpt/0 = copy of $INIT"
    rm -rf "$OUT/ckpt/.0.copy"
    cp -r "$INIT" "$OUT/ckpt/.0.copy"
    mv "$OUT/ckpt/.0.copy" "$OUT/ckpt/0"
  else
    t0=$(now)
    log "init --config $CONFIG --seed $SEED, then SFT: $SFT_STEPS steps of $SFT_BATCH on $SFT_CORPUS programs (lr $SFT_LR)"
    rm -rf "$OUT/ckpt/init"
    "$B/rl-update" init --config "$CONFIG" --seed "$SEED" --out "$OUT/ckpt/init" >/dev/null
    atomic "$OUT/data/sft.jsonl" "$B/rl-data" synth-corpus --count "$SFT_CORPUS" \
      --seed "$DATA_SEED" --correct-fraction "$CORRECT_FRACTION" "${FAM[@]}"
    # The warm start is trained in ckpt/.0.sft and becomes ckpt/0 only when complete (gate
    # rounds included), so a kill at any point redoes it from scratch.
    sft=$OUT/ckpt/.0.sft
    rm -rf "$sft" "$sft.next"
    "$B/rl-update" --model "$OUT/ckpt/init" --out "$sft" --algo sft --fsync \
      --steps "$SFT_STEPS" --batch-size "$SFT_BATCH" --lr "$SFT_LR" --seed "$SEED" \
      --log-every 25 "${SFT_EXTRA[@]}" "$OUT/data/sft.jsonl" > "$OUT/sft.jsonl.tmp.$$"
    steps_done=$SFT_STEPS round=0
    while awk -v p="$SFT_GATE" 'BEGIN { exit !(p > 0) }'; do
      p=$(gate_pass_at_k "$sft")
      log "warm start gate: held-out pass@$EVAL_SAMPLES $p after $steps_done SFT steps (at least $SFT_GATE wanted)"
      awk -v p="$p" -v g="$SFT_GATE" 'BEGIN { exit !(p >= g) }' && break
      if ((round >= SFT_GATE_ROUNDS)); then
        log "warning: the warm start stays below the gate after $SFT_GATE_ROUNDS further rounds"
        break
      fi
      round=$((round + 1)) steps_done=$((steps_done + SFT_GATE_STEPS))
      "$B/rl-update" --model "$sft" --out "$sft.next" --algo sft --fsync --steps "$SFT_GATE_STEPS" \
        --batch-size "$SFT_BATCH" --lr "$SFT_GATE_LR" --seed $((SEED + 1000 * round)) \
        --lr-schedule cosine --warmup-steps 0 --log-every 25 "$OUT/data/sft.jsonl" \
        >> "$OUT/sft.jsonl.tmp.$$"
      rm -rf "$sft"
      mv "$sft.next" "$sft"
    done
    mv "$sft" "$OUT/ckpt/0"
    mv -f "$OUT/sft.jsonl.tmp.$$" "$OUT/sft.jsonl"
    rm -rf "$OUT/ckpt/init"
    log "warm start done in $(secs "$t0" "$(now)") s"
  fi
fi

# ---- evaluation of ckpt/S on the first --eval-problems held-out problems ----
evaluate() {
  local s=$1 t0; t0=$(now)
  "$B/rl-sample" --model "$OUT/ckpt/$s" --problems "$TEST" --limit "$EVAL_PROBLEMS" \
    -n "$EVAL_SAMPLES" --seed "$EVAL_SEED" --temperature "$TEMP" --max-tokens "$MAX_TOKENS" \
    2>>"$LOGF" | "$B/rl-verify" --problems "$TEST" 2>>"$LOGF" > "$OUT/eval/$s.jsonl.tmp.$$"
  mv -f "$OUT/eval/$s.jsonl.tmp.$$" "$OUT/eval/$s.jsonl"
  local ks=1
  ((EVAL_SAMPLES > 1)) && ks=1,$EVAL_SAMPLES
  local line
  line=$("$B/rl-eval" --k "$ks" --step "$s" --label test "$OUT/eval/$s.jsonl")
  printf '%s\n' "$line" >> "$EVALS"
  log "eval step $s ($(secs "$t0" "$(now)") s): $line"
}
eval_due() { ((EVAL_EVERY > 0)) && (($1 % EVAL_EVERY == 0 || $1 == STEPS)); }
has_eval() { "$B/rl-eval" jsonl steps step "$EVALS" | grep -qx "$1"; }

prune() {
  ((KEEP > 0)) || return 0
  local d s
  for d in "$OUT"/ckpt/*/; do
    s=$(basename "$d")
    [[ $s =~ ^[0-9]+$ ]] && ((s > 0 && s <= $1 - KEEP)) && rm -rf "$d"
  done
  return 0
}

((L > 0)) && log "resuming after step $L"
if eval_due "$L" && ! has_eval "$L"; then evaluate "$L"; fi

# Sample, verify and append to verdicts/S.jsonl problems OFF .. OFF+LIM-1 of the train split
# for step S, from ckpt/S-1, with sampling seed SEED; add the seconds taken to T_SAMPLE and
# T_VERIFY.
draw() { # S OFF LIM SEED
  local tmp=$OUT/verdicts/$1.samples.tmp.$$ a b c
  a=$(now)
  "$B/rl-sample" --model "$OUT/ckpt/$(($1 - 1))" --problems "$TRAIN" --offset "$2" --limit "$3" \
    -n "$GROUP" --seed "$4" --temperature "$TEMP" --max-tokens "$MAX_TOKENS" 2>>"$LOGF" > "$tmp"
  b=$(now)
  "$B/rl-verify" --problems "$TRAIN" "$tmp" 2>>"$LOGF" >> "$OUT/verdicts/$1.jsonl.tmp.$$"
  c=$(now)
  rm -f "$tmp"
  T_SAMPLE=$(awk -v t="$T_SAMPLE" -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", t + b - a }')
  T_VERIFY=$(awk -v t="$T_VERIFY" -v b="$b" -v c="$c" 'BEGIN { printf "%.3f", t + c - b }')
}
# The number of problems in a scored file (rl-eval's "problems").
groups_in() { "$B/rl-eval" --k 1 "$1" | "$B/rl-eval" jsonl get problems; }

for ((s = L + 1; s <= STEPS; s++)); do
  prev=$((s - 1))
  t0=$(now) T_SAMPLE=0 T_VERIFY=0
  scored=$OUT/verdicts/.$s.scored.tmp.$$
  : > "$OUT/verdicts/$s.jsonl.tmp.$$"
  if [[ $BUDGET == samples ]]; then
    off=$(((prev * PPS) % NTRAIN))
    lim=$PPS
    ((off + lim > NTRAIN)) && lim=$((NTRAIN - off))
    draw "$s" "$off" "$lim" $((SEED * 100000 + s))
    mv -f "$OUT/verdicts/$s.jsonl.tmp.$$" "$OUT/verdicts/$s.jsonl"
    "$B/rl-score" --reward "$REWARD" "$OUT/verdicts/$s.jsonl" 2>>"$LOGF" > "$scored"
    train=$("$B/rl-eval" --k 1 "$scored")
    draws=1 informative=""
  else
    # The step's window of R chunks; chunk r samples with its own seed, so a step's samples
    # do not depend on how many chunks came before in other steps.
    off=$(((prev * PPS * MAX_DRAWS) % NTRAIN)) lim=0 draws=0 informative=0
    while ((draws < MAX_DRAWS && informative < PPS)); do
      o=$(((off + draws * PPS) % NTRAIN)) n=$PPS
      ((o + n > NTRAIN)) && n=$((NTRAIN - o))
      draw "$s" "$o" "$n" $((SEED * 100000 + s + (draws << 40)))
      draws=$((draws + 1)) lim=$((lim + n))
      "$B/rl-score" --reward "$REWARD" --informative-only --max-groups "$PPS" \
        "$OUT/verdicts/$s.jsonl.tmp.$$" 2>>"$LOGF" > "$scored"
      informative=$(groups_in "$scored")
    done
    mv -f "$OUT/verdicts/$s.jsonl.tmp.$$" "$OUT/verdicts/$s.jsonl"
    # "train" describes every sample drawn, not only the informative ones.
    train=$("$B/rl-score" --reward "$REWARD" "$OUT/verdicts/$s.jsonl" 2>>"$LOGF" \
      | "$B/rl-eval" --k 1 -)
  fi
  t2=$(now)
  drawn=$(wc -l < "$OUT/verdicts/$s.jsonl")
  reset=()
  ((prev == 0)) && reset=(--reset-optimizer)
  upd=$("$B/rl-update" --model "$OUT/ckpt/$prev" --out "$OUT/ckpt/$s" --algo "$ALGO" --fsync \
    --lr "$LR" "${reset[@]}" "${EXTRA[@]}" "$scored" 2>>"$LOGF")
  rm -f "$scored"
  t3=$(now)
  [[ $upd == "{"*"}" ]] || die "step $s: rl-update wrote no metrics line"
  inf=()
  [[ -n $informative ]] && inf=("informative_groups:=$informative")
  line=$("$B/rl-eval" jsonl object "train_step:=$s" "reward=$REWARD" "offset:=$off" \
    "problems:=$lim" "budget=$BUDGET" "draws:=$draws" "samples_drawn:=$drawn" "${inf[@]}" \
    "seconds_sample:=$T_SAMPLE" "seconds_verify:=$T_VERIFY" \
    "seconds_update:=$(secs "$t2" "$t3")" "train:=$train" --merge "$upd")
  printf '%s\n' "$line" >> "$METRICS"
  log "step $s/$STEPS ($(secs "$t0" "$t3") s): train $train"
  if eval_due "$s"; then evaluate "$s"; fi
  prune "$s"
done
log "done: $STEPS steps in $OUT"

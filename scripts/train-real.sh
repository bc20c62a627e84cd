#!/usr/bin/env bash
# RL of a real pretrained model (SmolLM2-135M-Instruct, converted from its GGUF by
# scripts/setup-model.sh) with chat prompts and LoRA updates, binary vs pass-rate rewards, on
# problems it can partly solve: by default the synthetic task world in chat form (held-out
# problems from its test split, training problems from its train split). Resumable. Writes the
# study layout of scripts/reproduce.sh, so `rl-eval compare` gives the statistics. See
# docs/training.md (scripts/train-real.sh).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/train-real.sh [OPTIONS]

For each reward design and seed: from the base model, STEPS steps of
  rl-sample --chat-template (P train problems x K samples, from the merged policy of the last
  step) | rl-verify | rl-score --reward R | rl-update --lora-rank ... (an adapter) ->
  rl-update merge-lora (the next policy);
held-out evaluation of the base model (once, shared) and of each run's last policy; then every
design against binary and against the base model (rl-eval compare).

Options (default in brackets; the defaults are the pilot's, docs/training.md):
  --out DIR               run directory [runs/real]
  --model DIR             base checkpoint (Hugging Face layout, with a chat template)
                          [.rlcode/models/smollm2-135m-instruct, made by scripts/setup-model.sh]
  --problems FILE         problems JSONL: the first --eval-problems are held out, the rest are
                          trained on in order [the synthetic world in chat form: rl-data synth
                          --split test (held out) then --split train, --seed 7, written to
                          DIR/problems.jsonl]. `codeio`: CodeI/O, imported from
                          $RLCODE_DATA/codeio.jsonl.gz on first use. `mix`: held out,
                          the synthetic test problems (--eval-problems of them) and the
                          held-out halves of HumanEval's (and CodeI/O's) easy slices; trained on,
                          shuffled, their train halves and synthetic train problems (at least
                          two per real one); rl-eval lines carry `by_source` (docs/training.md)
  --he-lines N            `mix`: HumanEval problems whose canonical solution has at most N
                          lines (rl-data select --max-solution-lines) [1]
  --codeio-lines N        `mix`: CodeI/O problems whose reference has at most N lines; 0
                          leaves CodeI/O out (SmolLM2-135M passes no test of its easy slice:
                          docs/training.md) [0]
  --rewards LIST          rl-score designs, comma-separated [binary,pass_rate]
  --algo ALGO             grpo or rloo [grpo]
  --seeds LIST            seeds, comma-separated: one run per design and seed; seed S samples
                          step s with seed S*100000+s [1]
  --steps N               RL steps per run [30]
  --problems-per-step P   train problems per step [8]
  --group-size K          samples per problem [8]
  --max-tokens N          most tokens per completion [192]
  --temperature T         sampling temperature, training and evaluation [0.6]
  --lr LR                 learning rate of the adapter [2e-4]
  --lora-rank R           LoRA rank (rl-update --lora-rank) [16]
  --micro-batch N         sequences per forward/backward in rl-update [8]
  --eval-problems N       held-out problems (the first N of the file; with `mix`, the synthetic
                          ones) [100]
  --eval-samples N        samples per held-out problem [4]
  --update-args "ARGS"    extra rl-update flags, word-split []
  -h, --help              this text

Environment: RLCODE_BIN (the binaries) [target/release], RLCODE_DATA (the fetched datasets and
their imported problems, *-problems.jsonl, cached) [.rlcode/data].

Writes under DIR:
  problems.jsonl          the default's or `mix`'s problems (with `mix` also
                          problems-held-out.jsonl, problems-train.jsonl, problems-real-train.jsonl)
  eval-base.jsonl, eval-base.verdicts.jsonl
                          rl-eval and verdicts of the base model on the held-out problems
  runs/<reward>-<algo>/seed-<S>/
    verdicts/s.jsonl      every verdict of step s
    adapter/s/            the LoRA adapter after step s (PEFT layout, optimizer state)
    policy/s/             base + adapter merged: what step s+1 samples from (only the last kept)
    metrics.jsonl         one line per step: rl-update's metrics plus seconds_sample,
                          seconds_verify, seconds_update, seconds_merge, seconds_step, and
                          `train`: rl-eval of the step's own samples (pass@1, pass rate,
                          density, `suspicious`: the reward-hacking watch) and `lenient`:
                          scripts/lenient_check.py on them (samples whose verdict a lenient
                          harness would change, e.g. `lenient_only_full_pass`)
    eval/0.jsonl          the base model's held-out verdicts (step 0, the same in every run)
    eval/S.jsonl          the held-out verdicts of the policy after the last step S
    eval.jsonl            rl-eval of both evaluations, one line each
  summary.tsv             reward, seed, steps, mean seconds per step, held-out pass@1 before
                          and after
  comparison.csv/.md      rl-eval compare: every design against binary (when trained) and
                          against the base model (step 0): differences with 95% bootstrap CIs
                          over seeds and problems
  summary.csv/.md         rl-eval summary: one row per run, mean +- std per design, sample
                          efficiency, calibration (with --update-args --diagnostics, the
                          gradient diagnostics too)
EOF
}

die() { echo "train-real.sh: $*" >&2; exit 2; }
log() { echo "train-real.sh: $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${RLCODE_BIN:-$ROOT/target/release}
# The datasets (fetched by scripts/setup.sh) and their imported problems, cached.
DATA=${RLCODE_DATA:-$ROOT/.rlcode/data}
OUT=runs/real MODEL=$ROOT/.rlcode/models/smollm2-135m-instruct PROBLEMS="" REWARDS=binary,pass_rate
ALGO=grpo SEEDS=1 STEPS=30 PPS=8 GROUP=8 MAX_TOKENS=192 TEMP=0.6 LR=2e-4 RANK=16 MICRO=8
EVAL_PROBLEMS=100 EVAL_SAMPLES=4 UPDATE_ARGS="" HE_LINES=1 CODEIO_LINES=0
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --out|--model|--problems|--rewards|--algo|--seeds|--steps|--problems-per-step|--group-size|\
    --max-tokens|--temperature|--lr|--lora-rank|--micro-batch|--eval-problems|--eval-samples|\
    --update-args|--he-lines|--codeio-lines)
      (($# >= 2)) || die "$1 needs a value (see --help)"
      case $1 in
        --out) OUT=$2 ;; --model) MODEL=$2 ;; --problems) PROBLEMS=$2 ;; --rewards) REWARDS=$2 ;;
        --algo) ALGO=$2 ;; --seeds) SEEDS=$2 ;; --steps) STEPS=$2 ;; --problems-per-step) PPS=$2 ;;
        --group-size) GROUP=$2 ;; --max-tokens) MAX_TOKENS=$2 ;; --temperature) TEMP=$2 ;;
        --lr) LR=$2 ;; --lora-rank) RANK=$2 ;; --micro-batch) MICRO=$2 ;;
        --eval-problems) EVAL_PROBLEMS=$2 ;; --eval-samples) EVAL_SAMPLES=$2 ;;
        --update-args) UPDATE_ARGS=$2 ;; --he-lines) HE_LINES=$2 ;;
        --codeio-lines) CODEIO_LINES=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for v in STEPS PPS GROUP MAX_TOKENS RANK MICRO EVAL_PROBLEMS EVAL_SAMPLES HE_LINES CODEIO_LINES; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "${v,,} must be a non-negative integer, not '${!v}'"
done
case $ALGO in grpo|rloo) ;; *) die "--algo: '$ALGO' is not grpo or rloo" ;; esac
IFS=, read -r -a RW <<<"$REWARDS"
((${#RW[@]})) || die "--rewards needs at least one design"
IFS=, read -r -a SEED_LIST <<<"$SEEDS"
((${#SEED_LIST[@]})) || die "--seeds needs at least one seed"
for s in "${SEED_LIST[@]}"; do
  [[ $s =~ ^[0-9]+$ ]] || die "--seeds: '$s' is not a non-negative integer"
done
read -r -a UARGS <<<"$UPDATE_ARGS"

# The model and the problems: fetched and converted once (both scripts are idempotent).
if [[ ! -f $MODEL/config.json && $MODEL == "$ROOT/.rlcode/models/smollm2-135m-instruct" ]]; then
  log "no converted model yet: running scripts/setup-model.sh"
  bash "$ROOT/scripts/setup-model.sh" >&2
fi
[[ -f $MODEL/config.json ]] || die "$MODEL/config.json not found (run scripts/setup-model.sh)"
for b in rl-data rl-sample rl-verify rl-score rl-update rl-eval; do
  [[ -x $B/$b ]] || die "$B/$b is missing (run scripts/setup.sh, or set RLCODE_BIN)"
done
mkdir -p "$OUT"
# imported humaneval|codeio: the path of the dataset's problems, imported on first use.
imported() {
  local dest=$DATA/$1-problems.jsonl src
  if [[ ! -s $dest ]]; then
    case $1 in
      humaneval) src=$DATA/HumanEval.jsonl.gz ;;
      codeio) src=$DATA/codeio.jsonl.gz ;;
    esac
    [[ -f $src ]] || bash "$ROOT/scripts/setup.sh" >&2
    [[ -f $src ]] || die "$src not found (scripts/setup.sh fetches it into .rlcode/data)"
    log "importing $1 (CodeI/O runs every reference and input generator in the sandbox: minutes)"
    "$B/rl-data" import "$1" "$src" > "$dest.tmp.$$" 2>>"$OUT/log.txt"
    mv "$dest.tmp.$$" "$dest"
  fi
  echo "$dest"
}
BY_SOURCE=()
case $PROBLEMS in
  "")
    # Held out: the test split's first EVAL_PROBLEMS; trained on: the whole train split (the
    # splits are disjoint by construction: docs/tasks.md).
    PROBLEMS=$OUT/problems.jsonl
    if [[ ! -s $PROBLEMS ]]; then
      { "$B/rl-data" synth --split test --count "$EVAL_PROBLEMS" --seed 7
        "$B/rl-data" synth --split train --count 2976 --seed 7; } 2>/dev/null > "$PROBLEMS.tmp.$$"
      mv "$PROBLEMS.tmp.$$" "$PROBLEMS"
    fi ;;
  codeio) PROBLEMS=$(imported codeio) ;;
  mix)
    # Held out: the synthetic test split's first EVAL_PROBLEMS, then the held-out halves of
    # HumanEval's (and with --codeio-lines, CodeI/O's) easy slices; trained on, shuffled: their
    # train halves and enough synthetic train problems for every step, at least twice as many
    # as the real ones (the split's 2,976 at most). The halves come from rl-data select's hash
    # split (seed 7): disjoint, whatever the rest of the file.
    PROBLEMS=$OUT/problems.jsonl
    if [[ ! -s $PROBLEMS ]]; then
      he=$(imported humaneval) cio=/dev/null
      ((CODEIO_LINES > 0)) && cio=$(imported codeio)
      slice() { # FILE MAX_LINES PART
        [[ $1 == /dev/null ]] && return 0
        "$B/rl-data" select --max-solution-lines "$2" --part "$3" --seed 7 "$1" 2>/dev/null
      }
      { "$B/rl-data" synth --split test --count "$EVAL_PROBLEMS" --seed 7 2>/dev/null
        slice "$he" "$HE_LINES" held-out; slice "$cio" "$CODEIO_LINES" held-out
      } > "$OUT/problems-held-out.jsonl"
      { slice "$he" "$HE_LINES" train; slice "$cio" "$CODEIO_LINES" train; } > "$OUT/problems-real-train.jsonl"
      real=$(wc -l < "$OUT/problems-real-train.jsonl")
      synth=$((STEPS * PPS - real)); ((synth >= 2 * real)) || synth=$((2 * real))
      ((synth <= 2976)) || synth=2976
      { "$B/rl-data" synth --split train --count "$synth" --seed 7 2>/dev/null
        cat "$OUT/problems-real-train.jsonl"; } \
        | "$B/rl-data" select --shuffle --seed 7 2>/dev/null > "$OUT/problems-train.jsonl"
      cat "$OUT/problems-held-out.jsonl" "$OUT/problems-train.jsonl" > "$PROBLEMS.tmp.$$"
      mv "$PROBLEMS.tmp.$$" "$PROBLEMS"
    fi
    EVAL_PROBLEMS=$(wc -l < "$OUT/problems-held-out.jsonl")
    BY_SOURCE=(--by-source) ;;
esac
[[ -s $PROBLEMS ]] || die "$PROBLEMS is missing or empty"
total=$(wc -l < "$PROBLEMS")
need=$((EVAL_PROBLEMS + STEPS * PPS))
((total >= need)) || die "$PROBLEMS has $total problems; $need are needed"

LOGF=$OUT/log.txt
SAMPLE_ARGS=(--chat-template --temperature "$TEMP" --max-tokens "$MAX_TOKENS")
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# evaluate POLICY VERDICTS: the first EVAL_PROBLEMS problems, EVAL_SAMPLES samples each, with
# the same sampling seed for every policy (so base and trained draw paired samples).
evaluate() {
  local policy=$1 dest=$2
  [[ -s $dest ]] && return 0
  "$B/rl-sample" --model "$policy" --problems "$PROBLEMS" --limit "$EVAL_PROBLEMS" \
    -n "$EVAL_SAMPLES" --seed 12345 "${SAMPLE_ARGS[@]}" 2>>"$LOGF" \
    | "$B/rl-verify" --problems "$PROBLEMS" 2>>"$LOGF" > "$dest.tmp.$$"
  mv "$dest.tmp.$$" "$dest"
}
# metrics LABEL STEP VERDICTS: rl-eval's line for an evaluation.
metrics() { "$B/rl-eval" --k "1,$EVAL_SAMPLES" "${BY_SOURCE[@]}" --label "$1" --step "$2" "$3"; }
pass1() { "$B/rl-eval" jsonl get pass_at_k.1 "$1"; }

log "evaluating the base model on $EVAL_PROBLEMS held-out problems"
evaluate "$MODEL" "$OUT/eval-base.verdicts.jsonl"
[[ -s $OUT/eval-base.jsonl ]] || metrics base 0 "$OUT/eval-base.verdicts.jsonl" > "$OUT/eval-base.jsonl"
log "eval base: $(cat "$OUT/eval-base.jsonl")"

printf 'reward\tseed\tsteps\tmean_seconds_per_step\tpass1_before\tpass1_after\n' \
  > "$OUT/summary.tsv.tmp"
for R in "${RW[@]}"; do
  for SEED in "${SEED_LIST[@]}"; do
    D=$OUT/runs/${R//[:\/]/_}-$ALGO/seed-$SEED
    mkdir -p "$D/verdicts" "$D/adapter" "$D/policy" "$D/eval"
    # Resume after the last step whose metrics line was written (the line is the commit point).
    done_steps=$( (wc -l < "$D/metrics.jsonl") 2>/dev/null || echo 0)
    policy=$MODEL
    if ((done_steps > 0)); then
      [[ -f $D/adapter/$done_steps/adapter_model.safetensors ]] \
        || die "$D/adapter/$done_steps is missing but metrics.jsonl has $done_steps lines"
      if [[ ! -f $D/policy/$done_steps/config.json ]]; then
        "$B/rl-update" merge-lora --model "$MODEL" --adapter "$D/adapter/$done_steps" \
          --out "$D/policy/$done_steps" >>"$LOGF" 2>&1
      fi
      policy=$D/policy/$done_steps
    fi
    for ((s = done_steps + 1; s <= STEPS; s++)); do
      off=$((EVAL_PROBLEMS + (s - 1) * PPS))
      t0=$(now)
      "$B/rl-sample" --model "$policy" --problems "$PROBLEMS" --offset "$off" --limit "$PPS" \
        -n "$GROUP" --seed $((SEED * 100000 + s)) "${SAMPLE_ARGS[@]}" 2>>"$LOGF" \
        > "$D/verdicts/$s.samples.tmp.$$"
      t1=$(now)
      "$B/rl-verify" --problems "$PROBLEMS" "$D/verdicts/$s.samples.tmp.$$" 2>>"$LOGF" \
        > "$D/verdicts/$s.jsonl.tmp.$$"
      mv "$D/verdicts/$s.jsonl.tmp.$$" "$D/verdicts/$s.jsonl"
      rm -f "$D/verdicts/$s.samples.tmp.$$"
      t2=$(now)
      prev=()
      ((s > 1)) && prev=(--adapter "$D/adapter/$((s - 1))")
      rm -rf "$D/adapter/$s" "$D/policy/$s"
      upd=$("$B/rl-score" --reward "$R" "$D/verdicts/$s.jsonl" 2>>"$LOGF" \
        | "$B/rl-update" --model "$MODEL" "${prev[@]}" --lora-rank "$RANK" --algo "$ALGO" \
          --lr "$LR" --micro-batch "$MICRO" --seed "$SEED" --out "$D/adapter/$s" "${UARGS[@]}" \
          2>>"$LOGF")
      [[ $upd == "{"*"}" ]] || die "step $s ($R, seed $SEED): rl-update wrote no metrics line (see $LOGF)"
      t3=$(now)
      "$B/rl-update" merge-lora --model "$MODEL" --adapter "$D/adapter/$s" --out "$D/policy/$s" \
        >>"$LOGF" 2>&1
      t4=$(now)
      # The step's own samples: pass@1, pass rate, density and the reward-hacking watch
      # (`suspicious`: programs with exits, prints or introspection, and how many of them pass).
      train=$("$B/rl-eval" --k 1 "$D/verdicts/$s.jsonl" 2>>"$LOGF")
      # And the same samples under a lenient harness (in the sandbox): whose verdicts would change.
      lenient=$(python3 "$ROOT/scripts/lenient_check.py" "$PROBLEMS" "$D/verdicts/$s.jsonl" \
        --rl-verify "$B/rl-verify" --examples 0 2>>"$LOGF")
      "$B/rl-eval" jsonl object "train_step:=$s" "reward=$R" "seed:=$SEED" \
        "seconds_sample:=$(secs "$t0" "$t1")" "seconds_verify:=$(secs "$t1" "$t2")" \
        "seconds_update:=$(secs "$t2" "$t3")" "seconds_merge:=$(secs "$t3" "$t4")" \
        "seconds_step:=$(secs "$t0" "$t4")" "train:=$train" "lenient:=$lenient" --merge "$upd" \
        >> "$D/metrics.jsonl"
      log "$R seed $SEED step $s/$STEPS: $(secs "$t0" "$t4") s (sample $(secs "$t0" "$t1"), verify $(secs "$t1" "$t2"), update $(secs "$t2" "$t3"), merge $(secs "$t3" "$t4")); train pass@1 $("$B/rl-eval" jsonl get pass_at_k.1 <<<"$train")"
      policy=$D/policy/$s
      # Keep only the last policy (each is a full 0.5 GB checkpoint); adapters are small.
      ((s > 1)) && rm -rf "$D/policy/$((s - 1))"
    done
    last=$(( done_steps > STEPS ? done_steps : STEPS ))
    cp "$OUT/eval-base.verdicts.jsonl" "$D/eval/0.jsonl"
    evaluate "$policy" "$D/eval/$last.jsonl"
    { metrics "$R" 0 "$D/eval/0.jsonl"; metrics "$R" "$last" "$D/eval/$last.jsonl"; } > "$D/eval.jsonl"
    log "eval $R seed $SEED step $last: $(tail -1 "$D/eval.jsonl")"
    mean=""  # no steps (--steps 0: the base model's evaluation alone), no metrics file
    [[ -s $D/metrics.jsonl ]] && mean=$("$B/rl-eval" jsonl get seconds_step "$D/metrics.jsonl" \
      | awk '{ t += $1; n++ } END { if (n) printf "%.1f", t / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$R" "$SEED" "$STEPS" "$mean" \
      "$(pass1 "$OUT/eval-base.jsonl")" "$("$B/rl-eval" jsonl get pass_at_k.1 <<<"$(tail -1 "$D/eval.jsonl")")" \
      >> "$OUT/summary.tsv.tmp"
  done
done
mv "$OUT/summary.tsv.tmp" "$OUT/summary.tsv"
column -t -s $'\t' "$OUT/summary.tsv" >&2 || cat "$OUT/summary.tsv" >&2
# Every design against binary (when it was trained) and against the base model (step 0).
baseline=binary-$ALGO
[[ -d $OUT/runs/$baseline ]] || baseline=$(basename "$(ls -d "$OUT"/runs/*/ | head -1)")
"$B/rl-eval" compare --runs "$OUT/runs" --baseline "$baseline" --out "$OUT" 2>>"$LOGF"
"$B/rl-eval" summary --runs "$OUT/runs" --out "$OUT" 2>>"$LOGF"
cat "$OUT/comparison.md" >&2

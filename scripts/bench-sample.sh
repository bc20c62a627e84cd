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
# With --llama, llama.cpp in the same run: llama-bench (tg128, batch 1) and llama-batched-bench
# (a shared prompt of 200 tokens, 128 generated per sequence, 1 / 8 / 32 / 64 sequences), built
# with cmake from the llama.cpp tree vendored in the PyPI sdist llama-cpp-python==0.3.36
# (pinned by sha256; built once into .rlcode/build/llama.cpp-0.3.36, several minutes), on an
# F32 GGUF that llama-quantize makes from the same Q4_1 GGUF the rlcode checkpoint was
# converted from (so both run the same dequantized weights). Each llama.cpp run comes right
# after rl-sample's f32 run of the workload with as many sequences, since this VM's speed drifts
# within minutes; one sequence (b1, the shortest and noisiest) alternates 3 rounds of each and
# the report gives the medians.
#
# With --torch, PyTorch in the same run: transformers' `generate` (f32, pure sampling at the
# same temperature, one batch of every sequence of the workload, from the very prompt tokens
# rl-sample used; scripts/bench_sample_torch.py), from the venv scripts/bench-update.sh makes
# (.rlcode/bench/torch-venv: torch==2.15.0, transformers==5.25.0 from PyPI; made here if absent).
#
# With --bf16, each workload runs again with `rl-sample --weights bf16` (the linear layers'
# weights read as bf16, f32 arithmetic) and `--weights bf16-dot` (bf16 products, vdpbf16ps), and
# where the torch venv is there, the log-probs of chat64's f32, bf16 and bf16-dot samples are
# compared with PyTorch's f32 model's on the same tokens
# (scripts/logprob_drift.py).
# --only b1,chat64 runs only the workloads named; --b1-rounds N (default 3) sets b1's rounds.
# The update step: scripts/bench-update.sh.
# Usage: scripts/bench-sample.sh [--baseline DIR] [--llama] [--torch] [--bf16] [--out DIR] [--model DIR]
#                                [--only NAMES] [--b1-rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/bench-sample BASE="" LLAMA=0 TORCH=0 BF16=0 ONLY="" ROUNDS_B1=3 MODEL=${RLCODE_HOME:-.rlcode}/models/smollm2-135m-instruct
while [[ $# -gt 0 ]]; do
  case $1 in
    --baseline) BASE=$2; shift 2 ;;
    --llama) LLAMA=1; shift ;;
    --torch) TORCH=1; shift ;;
    --bf16) BF16=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --b1-rounds) ROUNDS_B1=$2; shift 2 ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "bench-sample: unknown argument $1" >&2; exit 2 ;;
  esac
done
B=${RLCODE_BIN:-target/release}
[[ -f $MODEL/config.json ]] || { echo "bench-sample: no model at $MODEL (run scripts/setup-model.sh)" >&2; exit 2; }
[[ -z $BASE || -x $BASE/rl-sample ]] || { echo "bench-sample: no rl-sample in $BASE" >&2; exit 2; }
mkdir -p "$OUT"
$B/rl-data import humaneval "${RLCODE_HOME:-.rlcode}/data/HumanEval.jsonl.gz" > "$OUT/problems.jsonl"
head -n 8 "$OUT/problems.jsonl" > "$OUT/p8.jsonl"

# run LABEL BIN PROBLEMS N MAX_TOKENS [rl-sample ARGS...]
run() {
  local label=$1 bin=$2 np=$3 n=$4 mt=$5
  shift 5
  head -n "$np" "$OUT/p8.jsonl" > "$OUT/$label.problems.jsonl"
  /usr/bin/time -f "%e %U %S %M" -o "$OUT/$label.time" \
    "$bin" --model "$MODEL" --chat-template --problems "$OUT/$label.problems.jsonl" -n "$n" \
    --max-tokens "$mt" --temperature 1.0 --seed 1 "$@" > "$OUT/$label.jsonl" 2> "$OUT/$label.log"
  python3 - "$OUT" "$label" <<'EOF'
import json, sys
out, label = sys.argv[1:]
recs = [json.loads(l) for l in open(f"{out}/{label}.jsonl")]
wall, user, sys_, rss = open(f"{out}/{label}.time").read().split()
tokens = sum(len(r["tokens"]) for r in recs)
# rl-sample's closing line: sampling alone (after the model is loaded).
import re
log = open(f"{out}/{label}.log").read()
m = re.search(r"([\d.]+) tok/s \(([\d.]+) s", log)
pf = re.search(r"prefill ([\d.]+) s", log)  # absent in builds before 2026-12-07
prefill = float(pf.group(1)) if pf else None
json.dump({"label": label, "samples": len(recs), "tokens": tokens, "wall": float(wall),
           "sampling_s": float(m.group(2)), "sampling_tok_s": float(m.group(1)),
           "prefill_s": prefill,
           "decode_tok_s": tokens / (float(m.group(2)) - prefill) if prefill is not None else None,
           "user": float(user), "sys": float(sys_), "rss_mb": int(rss) / 1024,
           "tok_s": tokens / float(wall)}, open(f"{out}/{label}.json", "w"))
EOF
}

# llama.cpp is built (once) and its F32 GGUF made before anything is timed.
if ((LLAMA)); then
  H=${RLCODE_HOME:-.rlcode}
  LDIR=$H/build/llama.cpp-0.3.36
  SDIST_URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz
  SDIST_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
  if [[ ! -x $LDIR/bin/llama-batched-bench ]]; then
    mkdir -p "$LDIR"
    SDIST=$H/wheels/llama_cpp_python-0.3.36.tar.gz
    if [[ ! -f $SDIST ]] || ! echo "$SDIST_SHA  $SDIST" | sha256sum -c --status; then
      curl -sSfL -o "$SDIST.part" "$SDIST_URL"
      echo "$SDIST_SHA  $SDIST.part" | sha256sum -c --status \
        || { echo "bench-sample: $SDIST_URL: sha256 mismatch" >&2; exit 1; }
      mv "$SDIST.part" "$SDIST"
    fi
    rm -rf "$LDIR/src" && mkdir -p "$LDIR/src"
    tar xzf "$SDIST" -C "$LDIR/src" --strip-components=3 llama_cpp_python-0.3.36/vendor/llama.cpp
    [[ -x $LDIR/venv/bin/cmake ]] || { python3 -m venv "$LDIR/venv" && "$LDIR/venv/bin/pip" install -q cmake==4.4.5; }
    echo "bench-sample: building llama.cpp (several minutes)" >&2
    "$LDIR/venv/bin/cmake" -S "$LDIR/src" -B "$LDIR/build" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF > "$LDIR/cmake.log" 2>&1
    "$LDIR/venv/bin/cmake" --build "$LDIR/build" -j "$(nproc)" \
      --target llama-bench llama-batched-bench llama-quantize > "$LDIR/build.log" 2>&1
    mkdir -p "$LDIR/bin" && cp "$LDIR"/build/bin/llama-{bench,batched-bench,quantize} "$LDIR/bin/"
  fi
  F32=$OUT/smollm2-135m-instruct.f32.gguf
  "$LDIR/bin/llama-quantize" --allow-requantize "$H/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$F32" F32 \
    > "$OUT/llama-quantize.log" 2>&1
fi

VENV=${RLCODE_HOME:-.rlcode}/bench/torch-venv
if ((TORCH)) && [[ ! -x $VENV/bin/python ]]; then
  echo "bench-sample: making $VENV (torch==2.15.0, transformers==5.25.0)" >&2
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV.part"
  "$VENV.part/bin/pip" install -q torch==2.15.0 transformers==5.25.0
  mv "$VENV.part" "$VENV"
fi

# llama.cpp runs beside each workload (this VM's speed drifts within minutes): after rl-sample's
# f32 run, llama-batched-bench with as many sequences (and llama-bench tg128 beside b1). b1, the
# shortest and noisiest, runs ROUNDS_B1 times alternating with llama.cpp; the report takes the
# round of median decode-only tok/s and the median of llama.cpp's rounds (--b1-rounds).
llama_beside() {
  local seqs=$1
  "$LDIR/bin/llama-batched-bench" -m "$F32" -t "$(nproc)" -c 32768 -b 2048 -ub 512 -pps \
    -npp 200 -ntg 128 -npl "$seqs" --output-format jsonl >> "$OUT/llama-batched.jsonl" 2>> "$OUT/llama-batched.log"
  if ((seqs == 1)); then
    "$LDIR/bin/llama-bench" -m "$F32" -t "$(nproc)" -p 0 -n 128 -r 1 -o jsonl \
      >> "$OUT/llama-bench.jsonl" 2>> "$OUT/llama-bench.log"
  fi
}
rm -f "$OUT"/llama-batched.jsonl "$OUT"/llama-batched.log "$OUT"/llama-bench.jsonl "$OUT"/llama-bench.log
WORK=("b1 1 1 128" "b8 1 8 128" "b32 4 8 128" "chat64 8 8 256")
if [[ -n $ONLY ]]; then
  kept=()
  for w in "${WORK[@]}"; do
    [[ ",$ONLY," == *",${w%% *},"* ]] && kept+=("$w")
  done
  ((${#kept[@]})) || { echo "bench-sample: --only $ONLY names no workload (b1, b8, b32, chat64)" >&2; exit 2; }
  WORK=("${kept[@]}")
fi
for w in "${WORK[@]}"; do
  read -r name np n mt <<<"$w"
  rounds=1
  [[ $name == b1 ]] && rounds=$ROUNDS_B1
  for ((r = 0; r < rounds; r++)); do
    run "$name.r$r" "$B/rl-sample" "$np" "$n" "$mt"
    ((LLAMA)) && llama_beside $((np * n))
  done
  # The round of median decode-only tok/s stands for the workload.
  python3 - "$OUT" "$name" "$rounds" <<'EOF2'
import json, shutil, sys
out, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rs = sorted(range(rounds), key=lambda r: json.load(open(f"{out}/{name}.r{r}.json"))["decode_tok_s"] or 0)
pick = rs[len(rs) // 2]
for ext in ("json", "jsonl", "log", "time", "problems.jsonl"):
    shutil.copy(f"{out}/{name}.r{pick}.{ext}", f"{out}/{name}.{ext}")
EOF2
  [[ -n $BASE ]] && run "$name.base" "$BASE/rl-sample" "$np" "$n" "$mt"
  ((BF16)) && run "$name.bf16" "$B/rl-sample" "$np" "$n" "$mt" --weights bf16
  ((BF16)) && run "$name.dot" "$B/rl-sample" "$np" "$n" "$mt" --weights bf16-dot
  if ((TORCH)); then
    "$VENV/bin/python" scripts/bench_sample_torch.py "$MODEL" "$OUT/$name.jsonl" \
      --max-tokens "$mt" --temperature 1.0 2> "$OUT/$name.torch.log" | tail -1 > "$OUT/$name.torch.json"
  fi
done

if ((BF16)) && [[ -x $VENV/bin/python && -f $OUT/chat64.bf16.jsonl ]]; then
  "$VENV/bin/python" scripts/logprob_drift.py "$MODEL" "$OUT/chat64.jsonl" "$OUT/chat64.bf16.jsonl" \
    "$OUT/chat64.dot.jsonl" > "$OUT/drift.jsonl" 2> "$OUT/drift.log"
fi

python3 - "$OUT" "$BASE" "${WORK[@]}" <<'EOF'
import json, os, platform, sys
out, base, work = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = ["# rl-sample benchmark", "",
         f"Model: SmolLM2-135M-Instruct f32; chat prompts (HumanEval's first problems); "
         f"temperature 1, seed 1; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}).",
         "tok/s: generated tokens / seconds of sampling (rl-sample's closing line: after the model "
         "is loaded); wall s, user s, sys s, RSS: the whole process.", ""]
head = "| workload | samples | tokens | tok/s | prefill s | decode-only tok/s | wall s | user s | sys s | RSS MB |"
if base:
    head += " baseline tokens | baseline tok/s | speedup |"
lines += [head, "|" + "---|" * (head.count("|") - 1)]
for w in work:
    name = w.split()[0]
    r = json.load(open(f"{out}/{name}.json"))
    dec = f"{r['decode_tok_s']:.1f}" if r.get("decode_tok_s") else "–"
    pre = f"{r['prefill_s']:.2f}" if r.get("prefill_s") is not None else "–"
    row = (f"| {name} | {r['samples']} | {r['tokens']} | {r['sampling_tok_s']:.1f} | {pre} | {dec} | {r['wall']:.1f} | "
           f"{r['user']:.1f} | {r['sys']:.1f} | {r['rss_mb']:.0f} |")
    if base:
        b = json.load(open(f"{out}/{name}.base.json"))
        row += (f" {b['tokens']} | {b['sampling_tok_s']:.1f} | "
                f"{r['sampling_tok_s'] / b['sampling_tok_s']:.2f} |")
    lines.append(row)
# llama.cpp's generation speed (S_TG) by the workload with as many sequences.
ours = {1: "b1", 8: "b8", 32: "b32", 64: "chat64"}
def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
runs = {}
if os.path.exists(f"{out}/llama-batched.jsonl"):
    for l in open(f"{out}/llama-batched.jsonl"):
        if l.strip().startswith("{"):
            b = json.loads(l)
            if b.get("pl") in ours:
                runs.setdefault(ours[b["pl"]], []).append(b["speed_tg"])
llama = {name: median(v) for name, v in runs.items()}
if llama:
    tg = []
    if os.path.exists(f"{out}/llama-bench.jsonl"):
        tg = [json.loads(l)["avg_ts"] for l in open(f"{out}/llama-bench.jsonl") if l.strip().startswith("{")]
    b1r = len(runs.get("b1", []))
    lines += ["", "llama.cpp F32, same run, each right after rl-sample's f32 run of the workload with "
              "as many sequences (llama-bench tg128; llama-batched-bench, shared prompt "
              "of 200 tokens, 128 generated per sequence; its generation speed S_TG leaves the "
              "prompt's processing out, as rl-sample's decode-only tok/s does). One sequence: "
              f"{b1r} rounds alternating with rl-sample's b1, the medians of each "
              "(llama.cpp S_TG per round: " + ", ".join(f"{x:.1f}" for x in runs.get("b1", [])) + "):", "",
              "| sequences | llama.cpp S_TG tok/s | rl-sample decode-only tok/s (workload) | decode-only / llama.cpp | rl-sample tok/s with prefill | with prefill / llama.cpp S_TG |",
              "|---|---|---|---|---|---|"]
    for npl, name in ours.items():
        if name not in llama:
            continue
        ref = llama[name]
        r = json.load(open(f"{out}/{name}.json"))
        dec = r.get("decode_tok_s")
        lines.append(f"| {npl} | {ref:.1f} | " + (f"{dec:.1f} ({ours[npl]}) | {dec / ref:.2f} | " if dec else "– | – | ")
                     + f"{r['sampling_tok_s']:.1f} | {r['sampling_tok_s'] / ref:.2f} |")
    if tg:
        r = json.load(open(f"{out}/b1.json"))
        b1s = [json.load(open(f"{out}/b1.r{i}.json")).get("decode_tok_s") or float("nan") for i in range(b1r)]
        lines += ["", f"llama-bench tg128 (batch 1, empty context), median of {len(tg)} rounds: "
                  f"{median(tg):.1f} tok/s (" + ", ".join(f"{x:.1f}" for x in tg) + "); rl-sample b1 "
                  f"decode-only, median: {(r.get('decode_tok_s') or float('nan')):.1f} ("
                  + ", ".join(f"{x:.1f}" for x in b1s) + f"); ratio of medians: "
                  f"{(r.get('decode_tok_s') or float('nan')) / median(tg):.2f}."]
if os.path.exists(f"{out}/b1.torch.json"):
    lines += ["", "PyTorch, same run (transformers `generate`, f32, one batch of the workload's "
              "sequences from the same prompt tokens, pure sampling at temperature 1):", "",
              "| workload | PyTorch tokens | PyTorch tok/s | rl-sample tok/s | rl-sample / PyTorch |",
              "|---|---|---|---|---|"]
    for w in work:
        name = w.split()[0]
        t = json.load(open(f"{out}/{name}.torch.json"))
        r = json.load(open(f"{out}/{name}.json"))
        lines.append(f"| {name} | {t['tokens']} | {t['tok_s']:.1f} | {r['sampling_tok_s']:.1f} | "
                     f"{r['sampling_tok_s'] / t['tok_s']:.2f} |")
flagged = [("bf16", "`--weights bf16`, same run (same workloads; bf16 weights, f32 arithmetic):"),
           ("dot", "`--weights bf16-dot`, same run (bf16 weights and products' inputs, `vdpbf16ps`, f32 sums):")]
if os.path.exists(f"{out}/b1.bf16.json"):
    for suffix, title in flagged:
        if not os.path.exists(f"{out}/b1.{suffix}.json"):
            continue
        mode = "bf16" if suffix == "bf16" else "bf16-dot"
        lines += ["", title, "",
                  f"| workload | {mode} tokens | {mode} tok/s | f32 tok/s | {mode} / f32 | {mode} decode-only tok/s | {mode} decode-only / llama.cpp F32 S_TG |",
                  "|---|---|---|---|---|---|---|"]
        for w in work:
            name = w.split()[0]
            r = json.load(open(f"{out}/{name}.json"))
            b = json.load(open(f"{out}/{name}.{suffix}.json"))
            dec = b.get("decode_tok_s")
            ref = f"{dec / llama[name]:.2f}" if name in llama and dec else "–"
            lines.append(f"| {name} | {b['tokens']} | {b['sampling_tok_s']:.1f} | {r['sampling_tok_s']:.1f} | "
                         f"{b['sampling_tok_s'] / r['sampling_tok_s']:.2f} | "
                         + (f"{dec:.1f}" if dec else "–") + f" | {ref} |")
    if os.path.exists(f"{out}/drift.jsonl"):
        lines += ["", "Recorded log-probs against PyTorch's f32 model on the same tokens (chat64; "
                  "scripts/logprob_drift.py):", "",
                  "| samples | tokens | mean abs | p99 abs | max abs | KL(sampler, f32) per token |",
                  "|---|---|---|---|---|---|"]
        for l in open(f"{out}/drift.jsonl"):
            d = json.loads(l)
            lines.append(f"| {'/'.join(d['weights'])} | {d['tokens']} | {d['mean_abs']:.2e} | "
                         f"{d['p99_abs']:.2e} | {d['max_abs']:.2e} | {d['kl_estimate']:.2e} |")
open(f"{out}/bench-sample.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

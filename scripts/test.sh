#!/usr/bin/env bash
# Runs every check and test skiff has, installing what is missing first.
# Needs: rustup (the Rust toolchain). Installs: the wasm32-wasip1/wasip2 targets, and the
# Debian and PyPI packages the tests drive (docker-registry, skopeo, umoci, oras, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

# Samples are guest programs built from source; tests run them for real.
bash samples/build.sh --locked

cargo fmt --all --check
(cd samples && cargo fmt --all --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

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
# cargo prints a result line per test target, the last one often an empty doc-test target:
# close with the totals over all of them.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

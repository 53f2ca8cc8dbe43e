#!/usr/bin/env bash
# Builds every skiff guest sample from source (release profile).
#
#   wasm32-wasip1 (core modules): hello fs-demo wagi-hello misbehave (loop hog trap)
#   wasm32-wasip2 (components):   hello fs-demo http-hello http-misbehave misbehave (loop hog trap)
#
# Outputs: samples/target/wasm32-wasip{1,2}/release/<name>.wasm
# (cdylib components use underscores: http_hello.wasm, http_misbehave.wasm),
# and the Linux image samples/target/linux/busybox.tar (linux/busybox/build.sh).
# Can be run from any directory. Extra arguments are passed to both cargo
# builds (e.g. `--locked`, `-j1`).
set -euo pipefail

SAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANIFEST="$SAMPLES_DIR/Cargo.toml"
TARGET_DIR="$SAMPLES_DIR/target"

# Install the WASI targets if they are missing.
installed="$(rustup target list --installed)"
for t in wasm32-wasip1 wasm32-wasip2; do
    if ! grep -qx "$t" <<<"$installed"; then
        echo "installing rustup target $t" >&2
        rustup target add "$t"
    fi
done

# Keep outputs inside samples/target even if CARGO_TARGET_DIR is set.
export CARGO_TARGET_DIR="$TARGET_DIR"

echo "building wasm32-wasip1 samples" >&2
cargo build --release --manifest-path "$MANIFEST" --target wasm32-wasip1 \
    -p hello -p fs-demo -p wagi-hello -p misbehave "$@"

echo "building wasm32-wasip2 samples" >&2
cargo build --release --manifest-path "$MANIFEST" --target wasm32-wasip2 \
    -p hello -p fs-demo -p http-hello -p http-misbehave -p misbehave "$@"

echo "building the linux busybox image" >&2
bash "$SAMPLES_DIR/linux/busybox/build.sh" >/dev/null

outputs=(
    "$TARGET_DIR/wasm32-wasip1/release/hello.wasm"
    "$TARGET_DIR/wasm32-wasip1/release/fs-demo.wasm"
    "$TARGET_DIR/wasm32-wasip1/release/wagi-hello.wasm"
    "$TARGET_DIR/wasm32-wasip1/release/loop.wasm"
    "$TARGET_DIR/wasm32-wasip1/release/hog.wasm"
    "$TARGET_DIR/wasm32-wasip1/release/trap.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/hello.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/fs-demo.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/http_hello.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/http_misbehave.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/loop.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/hog.wasm"
    "$TARGET_DIR/wasm32-wasip2/release/trap.wasm"
    "$TARGET_DIR/linux/busybox.tar"
)

status=0
echo "built:"
for f in "${outputs[@]}"; do
    if [[ -f "$f" ]]; then
        echo "$f"
    else
        echo "MISSING: $f" >&2
        status=1
    fi
done
exit "$status"

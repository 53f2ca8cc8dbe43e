#!/usr/bin/env bash
# The main job: build skiff and the samples; serve the http-hello function with `skiff run
# --listen` over HTTP/1.1 and h2c; then, as root, run the daemon and deploy the mixed sample
# app (two Wasm functions and a Linux service behind one gateway) and send it requests.
# Needs: rustup. Installs: the wasm32 targets, and curl (Debian) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v curl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
fi
bash samples/build.sh --locked >/dev/null
cargo build --release --locked -p skiff
skiff=$PWD/target/release/skiff

work=$(mktemp -d)
pids=()
cleanup() {
    # The app's containers outlive the daemon by design: remove the app before stopping it.
    if [ -S "$work/skiff.sock" ]; then
        SKIFF_SOCKET=$work/skiff.sock SKIFF_DATA_DIR=$work/data "$skiff" apps rm mixed \
            >/dev/null 2>&1 || true
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 10 s for FILE to hold a line starting with PREFIX; prints the rest of it.
stable_line() {
    local file=$1 prefix=$2
    for _ in $(seq 100); do
        grep -q "^$prefix" "$file" && { sed -n "s|^$prefix||p" "$file" | head -1; return; }
        sleep 0.1
    done
    echo "skiff did not print '$prefix'; its output:" >&2
    cat "$file" >&2
    exit 1
}

echo "== one function: skiff run --listen"
SKIFF_DATA_DIR=$work/data "$skiff" run --listen 127.0.0.1:0 \
    samples/target/wasm32-wasip2/release/http_hello.wasm >"$work/run.out" &
pids+=($!)
url=$(stable_line "$work/run.out" "serving http on ")
echo "\$ curl -i $url/hello?from=demo"
curl -sS -i "$url/hello?from=demo"
echo "\$ curl --http2-prior-knowledge $url/over/h2c"
curl -sS --http2-prior-knowledge "$url/over/h2c"

if [ "$(id -u)" != 0 ]; then
    echo "== the mixed app needs root (its service is a Linux container); skipped"
    exit 0
fi

echo "== an app: skiff serve + skiff deploy -f samples/apps/mixed/skiff.toml"
export SKIFF_DATA_DIR=$work/data SKIFF_SOCKET=$work/skiff.sock
"$skiff" serve --gateway 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
gateway=$(stable_line "$work/serve.out" "gateway on ")
"$skiff" load -i samples/target/linux/busybox.tar
"$skiff" deploy -f samples/apps/mixed/skiff.toml
for _ in $(seq 300); do
    curl -sf -o /dev/null "$gateway/index.html" && break
    sleep 0.1
done
echo "\$ skiff ps"
"$skiff" ps
echo "\$ curl $gateway/hello            # Wasm component"
curl -sS "$gateway/hello"
echo "\$ curl $gateway/wagi?x=1         # WAGI module"
curl -sS "$gateway/wagi?x=1"
echo "\$ curl $gateway/index.html       # Linux container (busybox httpd)"
curl -sS --fail-with-body "$gateway/index.html"

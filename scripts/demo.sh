#!/usr/bin/env bash
# The main job, for now: build skiff and the samples, serve the http-hello function, and
# send it a request over HTTP/1.1 and over h2c.
# Needs: rustup. Installs: the wasm32 targets, and curl (Debian) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v curl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
fi
bash samples/build.sh --locked >/dev/null
cargo build --release --locked -p skiff

data_dir=$(mktemp -d)
out=$(mktemp)
SKIFF_DATA_DIR=$data_dir target/release/skiff run --listen 127.0.0.1:0 \
    samples/target/wasm32-wasip2/release/http_hello.wasm >"$out" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data_dir" "$out"' EXIT

for _ in $(seq 100); do grep -q '^serving http on ' "$out" && break; sleep 0.1; done
cat "$out"
url=$(sed -n 's/^serving http on //p' "$out")
[ -n "$url" ] || { echo "skiff did not start" >&2; exit 1; }

echo "\$ curl -i $url/hello?from=demo"
curl -sS -i "$url/hello?from=demo"
echo "\$ curl --http2-prior-knowledge $url/over/h2c"
curl -sS --http2-prior-knowledge "$url/over/h2c"

#!/usr/bin/env bash
# Pull speed: `skiff pull` against `skopeo copy docker://REF oci:DIR` on the same images from the
# same local registry (Debian's docker-registry on loopback), in one hyperfine run, as ratios.
#
#   benches/pull-vs-skopeo.sh [--runs N]
#
# Images: the http-hello Wasm artifact (pushed by skiff), and a 5-layer Linux image built with
# umoci (busybox-static plus four layers of 8 MiB of random data, gzip), copied in by skopeo.
# Cold: the destination is emptied before every run. Warm: every blob is already there, so
# only the manifest is fetched and checked (skiff) or the layout is re-written (skopeo).
#
# Needs: cargo, hyperfine, skopeo, umoci, docker-registry, busybox-static, python3
# (scripts/install-test-deps.sh installs the Debian ones). Loopback only.
set -euo pipefail

RUNS=10
while (($#)); do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
REGISTRY_PID=
cleanup() {
    [ -n "$REGISTRY_PID" ] && kill "$REGISTRY_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "==> $*" >&2; }

bash "$ROOT/scripts/install-test-deps.sh"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
log "building skiff (release) and the samples"
bash "$ROOT/samples/build.sh" >/dev/null
cargo build --release --locked -p skiff --manifest-path "$ROOT/Cargo.toml" >&2
SKIFF="$ROOT/target/release/skiff"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
EOF
env -u REGISTRY_HTTP_ADDR docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
REG=127.0.0.1:$PORT

log "preparing images"
WASM_REF=$REG/bench/http-hello:1
SKIFF_DATA_DIR="$WORK/pusher" "$SKIFF" push "$ROOT/samples/target/wasm32-wasip2/release/http_hello.wasm" "$WASM_REF" >&2
LAYOUT="$WORK/layout"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:latest"
for i in 1 2 3 4 5; do
    rm -rf "$WORK/bundle"
    umoci unpack --image "$LAYOUT:latest" "$WORK/bundle" >/dev/null
    if [ "$i" = 1 ]; then
        mkdir -p "$WORK/bundle/rootfs/bin"
        cp /bin/busybox "$WORK/bundle/rootfs/bin/busybox"
    else
        head -c $((8 << 20)) /dev/urandom >"$WORK/bundle/rootfs/data-$i"
    fi
    umoci repack --image "$LAYOUT:latest" "$WORK/bundle"
done
LINUX_REF=$REG/bench/five-layers:1
skopeo copy --insecure-policy --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$LINUX_REF" >/dev/null

SKOPEO="skopeo copy --insecure-policy --src-tls-verify=false"
run() { # name ref
    local name=$1 ref=$2
    local sd="$WORK/skiff-$name" od="$WORK/oci-$name"
    hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/$name-cold.json" -N \
        --prepare "rm -rf $sd $od" \
        -n "skiff pull (cold)" "env SKIFF_DATA_DIR=$sd $SKIFF pull $ref" \
        -n "skopeo copy (cold)" "$SKOPEO docker://$ref oci:$od:x" >&2
    env SKIFF_DATA_DIR="$sd" "$SKIFF" pull "$ref" >/dev/null
    $SKOPEO "docker://$ref" "oci:$od:x" >/dev/null
    hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/$name-warm.json" -N \
        -n "skiff pull (warm)" "env SKIFF_DATA_DIR=$sd $SKIFF pull $ref" \
        -n "skopeo copy (warm)" "$SKOPEO docker://$ref oci:$od:x" >&2
}
log "wasm artifact"
run wasm "$WASM_REF"
log "5-layer linux image"
run linux "$LINUX_REF"

python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
print(f"{'image':<10} {'state':<5} {'skiff ms':>10} {'skopeo ms':>10} {'ratio':>7}  (skiff/skopeo median; <= 1.0 is the target)")
for image in ("wasm", "linux"):
    for state in ("cold", "warm"):
        results = json.load(open(f"{work}/{image}-{state}.json"))["results"]
        skiff, skopeo = (r["median"] * 1000 for r in results)
        print(f"{image:<10} {state:<5} {skiff:>10.1f} {skopeo:>10.1f} {skiff / skopeo:>7.2f}")
EOF

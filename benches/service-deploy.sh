#!/usr/bin/env bash
# A Linux service under the daemon: `skiff deploy` of a one-replica busybox httpd service
# (an already-loaded image) to its first healthy answer through the gateway, against
# `skiff run -d` of the same container to its first answer on its bridge address (the same
# container without the daemon: the cost the deploy, the supervisor, the health check and the
# proxy add). Medians over the runs, in one run, as a ratio.
#
#   benches/service-deploy.sh [--runs N] [--skiff PATH]
#
# Everything runs in a network namespace of its own (`unshare -n`), so the bridge and NAT
# never touch the host. The service's health check polls every 100 ms, so its figure is
# quantised to that; the supervisor looks for exits every 250 ms but starts at once.
# Needs: root, cargo, curl, awk.
set -euo pipefail

RUNS=20
SKIFF=""
while (($#)); do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --skiff) SKIFF=$2; shift ;;
        -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SKIFF_BENCH_INNER:-}" ]; then
    bash "$ROOT/samples/linux/busybox/build.sh" >/dev/null
    if [ -z "$SKIFF" ]; then
        cargo build --release --locked -p skiff --manifest-path "$ROOT/Cargo.toml" >&2
        SKIFF="$ROOT/target/release/skiff"
    fi
    exec unshare -n env SKIFF_BENCH_INNER=1 bash "${BASH_SOURCE[0]}" --runs "$RUNS" \
        --skiff "$SKIFF"
fi

ip link set lo up
WORK="$(mktemp -d)"
export SKIFF_DATA_DIR="$WORK/data" SKIFF_SOCKET="$WORK/skiff.sock"
"$SKIFF" load -i "$ROOT/samples/target/linux/busybox.tar" >/dev/null
"$SKIFF" serve --gateway 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE=$!
cleanup() {
    "$SKIFF" apps rm web >/dev/null 2>&1 || true
    for id in $("$SKIFF" ps -a -q 2>/dev/null); do "$SKIFF" rm -f "$id" >/dev/null 2>&1 || true; done
    kill "$SERVE" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^gateway on ' "$WORK/serve.out" && break; sleep 0.1; done
GATEWAY=$(sed -n 's/^gateway on //p' "$WORK/serve.out")

cat >"$WORK/web.toml" <<TOML
[app]
name = "web"

[service.web]
image = "localhost/skiff/busybox:latest"
command = ["httpd", "-f", "-p", "80", "-h", "/www"]
ports = [80]
route = "/"
health = { http = "/index.html", interval = "100ms", timeout = "1s", retries = 1 }
TOML

now() { date +%s%N; }
# Polls URL every 2 ms (bounded: 30 s) until it answers 200.
until_served() {
    for _ in $(seq 15000); do
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.002
    done
    echo "never served: $1" >&2
    exit 1
}

deploy_ms=()
run_ms=()
for _ in $(seq "$RUNS"); do
    start=$(now)
    "$SKIFF" deploy -f "$WORK/web.toml" >/dev/null
    until_served "$GATEWAY/index.html"
    deploy_ms+=($((($(now) - start) / 1000)))
    "$SKIFF" apps rm web >/dev/null

    start=$(now)
    id=$(env -u SKIFF_SOCKET "$SKIFF" run -d --name alone localhost/skiff/busybox:latest \
        httpd -f -p 80 -h /www)
    for _ in $(seq 1000); do
        address=$(grep -o '"address": "[0-9.]*"' \
            "$SKIFF_DATA_DIR/linux/containers/$id/state.json" 2>/dev/null | cut -d'"' -f4 || true)
        [ -n "$address" ] && break
        sleep 0.002
    done
    until_served "http://$address/index.html"
    run_ms+=($((($(now) - start) / 1000)))
    "$SKIFF" rm -f alone >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
d=$(median "${deploy_ms[@]}")
r=$(median "${run_ms[@]}")
awk -v d="$d" -v r="$r" -v n="$RUNS" 'BEGIN {
    printf "deploy -> healthy through the gateway: median %.1f ms (%d runs)\n", d / 1000, n
    printf "run -d -> first answer (no daemon):     median %.1f ms\n", r / 1000
    printf "ratio deploy/run -d: %.2f\n", d / r
}'

#!/usr/bin/env bash
# End-to-end HTTP throughput and latency: `skiff run --listen` against `wasmtime serve` (the
# same wasmtime version, 48.0.8) serving the same component, samples/.../http_hello.wasm.
#
#   benches/http-vs-wasmtime-serve.sh [--quick] [--rounds N] [--gateway]
#
#   --quick      3 s per wrk run instead of 10 s (and a shorter warm-up)
#   --gateway    skiff side is `skiff serve` + `skiff deploy` (the component deployed as a
#                function on route `/`, min = 1) behind its gateway, not `skiff run --listen`
#   --rounds N   run each (level, server) pair N times, alternating which server goes first,
#                and report the run with the median req/s (default 1)
#
# For each connection count in 1 16 64 it runs
#   wrk -t <min(conns,2)> -c <conns> -d <10s|3s> --latency http://127.0.0.1:PORT/
# against each server in turn (alternating the order from one level to the next, so neither
# always runs on the "warmer" machine) and prints requests/s and latency p50/p99, then each
# server's CPU time per request and the CPU other processes used meanwhile. Before each run it
# waits (up to 2 min) for the machine to be idle: on a shared 2-core box a concurrent build
# otherwise lands in one server's run and decides the ratio.
#
# Both servers create a fresh instance per request from the pooling allocator: wasmtime serve
# defaults to --max-instance-reuse-count 1 for WASIp2 components and turns on pooling when the
# machine has the address space for it (checked below from each process's VSZ). Differences
# that remain: skiff has epoch interruption always on (wasmtime serve only with
# --wasm-timeout) and speaks HTTP/1.1 + h2c through hyper-util's auto builder (wasmtime serve:
# HTTP/1.1 only). Keep-alive is on in both; wrk keeps its connections open.
#
# Needs: cargo, curl, wrk. Loopback only. Builds: skiff (release), the samples, and, when
# missing, wasmtime-cli 48.0.8 into ${SKIFF_BENCH_CACHE:-$HOME/.cache/skiff-bench}/wasmtime-cli-48
# (cargo install; about 25 min on 2 cores, once).
set -euo pipefail

WASMTIME_VERSION=48.0.8
LEVELS=(1 16 64)
DURATION=10s
WARMUP=3s
ROUNDS=1

GATEWAY=no

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --quick) DURATION=3s WARMUP=1s ;;
        --gateway) GATEWAY=yes ;;
        --rounds)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a positive number" >&2; exit 2; }
            ROUNDS=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_CACHE="${SKIFF_BENCH_CACHE:-$HOME/.cache/skiff-bench}"
WASMTIME_ROOT="$BENCH_CACHE/wasmtime-cli-48"
WASMTIME="$WASMTIME_ROOT/bin/wasmtime"
WASM="$ROOT/samples/target/wasm32-wasip2/release/http_hello.wasm"

for tool in cargo curl wrk; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install $tool)" >&2; exit 1; }
done

log() { echo "==> $*" >&2; }

# --- builds -------------------------------------------------------------------------------
log "building skiff (release)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p skiff
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
SKIFF="${target_dir:-$ROOT/target}/release/skiff"
[[ -x $SKIFF ]] || { echo "error: no skiff binary at $SKIFF" >&2; exit 1; }

log "building the samples"
bash "$ROOT/samples/build.sh" >/dev/null

if ! { [[ -x $WASMTIME ]] && "$WASMTIME" --version | grep -q "^wasmtime $WASMTIME_VERSION\b"; }; then
    log "installing wasmtime-cli $WASMTIME_VERSION into $WASMTIME_ROOT (about 25 min, once)"
    cargo install wasmtime-cli --version "=$WASMTIME_VERSION" --locked --root "$WASMTIME_ROOT"
fi

# --- servers ------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench.XXXXXX")"
SKIFF_PID="" WASMTIME_PID=""
cleanup() {
    local pid
    for pid in $SKIFF_PID $WASMTIME_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $SKIFF_PID $WASMTIME_PID; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for_line PID FILE REGEX: prints the first match of REGEX in FILE, waiting up to 60 s.
wait_for_line() {
    local pid=$1 file=$2 regex=$3 line
    for _ in $(seq 600); do
        if line="$(grep -Eo -m1 "$regex" "$file")"; then
            echo "$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "error: server (pid $pid) did not report its address; its output:" >&2
    cat "$file" "${file%.*}.err" 2>/dev/null >&2 || true
    return 1
}

if [[ $GATEWAY == yes ]]; then
    SKIFF_SIDE="skiff serve (gateway)"
    log "starting skiff serve and deploying the component as a function"
    SKIFF_DATA_DIR="$WORK/skiff-data" "$SKIFF" serve --gateway 127.0.0.1:0 \
        --socket "$WORK/skiff.sock" >"$WORK/skiff.out" 2>"$WORK/skiff.err" &
    SKIFF_PID=$!
    line="$(wait_for_line "$SKIFF_PID" "$WORK/skiff.out" 'gateway on http://127\.0\.0\.1:[0-9]+')"
    SKIFF_URL="http://${line##*http://}/"
    printf '[app]\nname = "bench"\n\n[function.hello]\nfile = "%s"\nroute = "/"\nmin = 1\n' \
        "$WASM" >"$WORK/skiff.toml"
    SKIFF_SOCKET="$WORK/skiff.sock" "$SKIFF" deploy -f "$WORK/skiff.toml" >&2
else
    SKIFF_SIDE="skiff run --listen"
    log "starting skiff run --listen"
    SKIFF_DATA_DIR="$WORK/skiff-data" "$SKIFF" run --listen 127.0.0.1:0 "$WASM" \
        >"$WORK/skiff.out" 2>"$WORK/skiff.err" &
    SKIFF_PID=$!
    line="$(wait_for_line "$SKIFF_PID" "$WORK/skiff.out" 'serving http on http://127\.0\.0\.1:[0-9]+')"
    SKIFF_URL="http://${line##*http://}/"
fi

# Port 0: the kernel picks a free port and wasmtime serve prints the one it got.
log "starting wasmtime serve"
"$WASMTIME" serve -S cli --addr 127.0.0.1:0 "$WASM" >"$WORK/wasmtime.log" 2>"$WORK/wasmtime.out" &
WASMTIME_PID=$!
line="$(wait_for_line "$WASMTIME_PID" "$WORK/wasmtime.out" 'Serving HTTP on http://127\.0\.0\.1:[0-9]+')"
WASMTIME_URL="http://${line##*http://}/"

for url in "$SKIFF_URL" "$WASMTIME_URL"; do
    body="$(curl -fsS --max-time 10 "$url")"
    [[ $body == "Hello from skiff! path=/" ]] || { echo "error: $url answered: $body" >&2; exit 1; }
done

# The pooling allocator reserves its whole pool up front: terabytes of address space.
vsz_gib() { echo $(($(ps -o vsz= -p "$1") / 1024 / 1024)); }
pooled() { (($(vsz_gib "$1") >= 1024)) && echo "pooling (VSZ $(vsz_gib "$1") GiB)" || echo "on-demand? (VSZ $(vsz_gib "$1") GiB)"; }

# --- load ---------------------------------------------------------------------------------
TICK=$(getconf CLK_TCK)
# proc_ticks PID: user+system CPU of a process (all threads), in clock ticks.
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# busy_ticks: CPU used by everything on the machine so far, in clock ticks.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# run_wrk CONNS DURATION URL OUT: one bounded wrk run (wrk's own -d, plus a hard timeout).
# Appends wrk's own CPU seconds ("user sys") to OUT.time.
run_wrk() {
    local conns=$1 duration=$2 url=$3 out=$4 threads TIMEFORMAT='%3U %3S'
    threads=$((conns < 2 ? conns : 2))
    { time timeout --kill-after=5s $((${duration%s} + 30))s \
        wrk -t "$threads" -c "$conns" -d "$duration" --timeout 5s --latency "$url" >"$out" 2>"$out.err"; } 2>"$out.time"
}

# to_us VALUE: wrk's "123.45us" / "1.23ms" / "1.02s" in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.0f", n * m
    }'
}

fmt_us() {
    awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2fms", u / 1000; else printf "%dus", u }'
}

# wait_idle: waits (at most 2 min) until the rest of the machine is idle (< 0.1 core busy
# over 1 s), so a concurrent build does not land in one server's run only.
wait_idle() {
    local busy0 busy1
    for _ in $(seq 120); do
        busy0=$(busy_ticks)
        sleep 1
        busy1=$(busy_ticks)
        ((busy1 - busy0 <= TICK / 10)) && return 0
    done
    log "the machine stayed busy; measuring anyway"
}

# measure PID URL CONNS DURATION: one wrk run against the server PID, printing
# "req/s p50_us p99_us errors server_cpu_us_per_request other_cores", where other_cores is
# the CPU that neither the server nor wrk used during the run (another build, ...), in cores.
measure() {
    local pid=$1 url=$2 conns=$3 duration=$4 file="$WORK/wrk.txt"
    local cpu0 busy0 t0 cpu1 busy1 t1 wrk_user wrk_sys
    cpu0=$(proc_ticks "$pid") busy0=$(busy_ticks) t0=$(date +%s%N)
    run_wrk "$conns" "$duration" "$url" "$file"
    cpu1=$(proc_ticks "$pid") busy1=$(busy_ticks) t1=$(date +%s%N)
    read -r wrk_user wrk_sys <"$file.time"
    awk -v tick="$TICK" -v cpu=$((cpu1 - cpu0)) -v busy=$((busy1 - busy0)) -v ns=$((t1 - t0)) \
        -v wrk="$wrk_user $wrk_sys" '
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        $1 == "50%" { p50 = $2 }
        $1 == "99%" { p99 = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ { for (i = 4; i <= NF; i += 2) errors += $i + 0 }
        function us(v) { return (v ~ /us$/) ? v + 0 : (v ~ /ms$/) ? v * 1000 : v * 1000000 }
        END {
            if (rps == "" || n == 0) exit 1
            split(wrk, w, " ")
            others = (busy / tick - cpu / tick - w[1] - w[2]) / (ns / 1e9)
            printf "%s %.0f %.0f %d %.1f %.2f\n", rps, us(p50), us(p99), errors, cpu / tick * 1e6 / n, (others < 0 ? 0 : others)
        }' "$file" || { echo "error: cannot read wrk output:" >&2; cat "$file" >&2; return 1; }
}

log "warming up both servers ($WARMUP at 16 connections each)"
for url in "$SKIFF_URL" "$WASMTIME_URL"; do
    run_wrk 16 "$WARMUP" "$url" "$WORK/warmup.txt"
done

declare -A RESULT # [server,conns] = measure's fields, of the run with the median req/s
order=(skiff wasmtime)
for conns in "${LEVELS[@]}"; do
    for server in skiff wasmtime; do : >"$WORK/runs-$server-$conns"; done
    for round in $(seq "$ROUNDS"); do
        for server in "${order[@]}"; do
            pid=$SKIFF_PID url=$SKIFF_URL
            [[ $server == wasmtime ]] && pid=$WASMTIME_PID url=$WASMTIME_URL
            log "wrk -c $conns -d $DURATION against $server (round $round/$ROUNDS)"
            wait_idle
            measure "$pid" "$url" "$conns" "$DURATION" >>"$WORK/runs-$server-$conns"
        done
        order=("${order[1]}" "${order[0]}")
    done
    for server in skiff wasmtime; do
        RESULT[$server,$conns]="$(sort -n -k1,1 "$WORK/runs-$server-$conns" | sed -n "$(((ROUNDS + 1) / 2))p")"
    done
done

# --- report -------------------------------------------------------------------------------
echo
echo "$SKIFF_SIDE vs wasmtime serve $WASMTIME_VERSION, http_hello.wasm, wrk $DURATION per run, median of $ROUNDS round(s)"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "skiff:    $(pooled "$SKIFF_PID"), epoch interruption on, HTTP/1.1 + h2c (hyper-util auto)"
echo "wasmtime: $(pooled "$WASMTIME_PID"), epoch interruption off (no --wasm-timeout), HTTP/1.1"
echo
printf '%-6s | %12s | %14s | %24s | %14s | %17s\n' conns "skiff req/s" "wasmtime req/s" "ratio (skiff/wasmtime)" "skiff p50/p99" "wasmtime p50/p99"
printf '%s\n' "-------+--------------+----------------+--------------------------+----------------+------------------"
all_ahead=yes noisy=no
for conns in "${LEVELS[@]}"; do
    read -r s_rps s_p50 s_p99 s_err s_cpu s_other <<<"${RESULT[skiff,$conns]}"
    read -r w_rps w_p50 w_p99 w_err w_cpu w_other <<<"${RESULT[wasmtime,$conns]}"
    ratio="$(awk -v a="$s_rps" -v b="$w_rps" 'BEGIN { printf "%.2f", a / b }')"
    awk -v r="$ratio" 'BEGIN { exit !(r < 1) }' && all_ahead=no
    printf '%-6s | %12.0f | %14.0f | %24s | %14s | %17s\n' "$conns" "$s_rps" "$w_rps" "$ratio" \
        "$(fmt_us "$s_p50")/$(fmt_us "$s_p99")" "$(fmt_us "$w_p50")/$(fmt_us "$w_p99")"
    ((s_err + w_err == 0)) || echo "       ^ errors or non-2xx answers: skiff $s_err, wasmtime $w_err"
done
echo
echo "server CPU per request (user+system of the server process / requests), and CPU used by"
echo "other processes during the run (cores; above ~0.10 the req/s figures are disturbed):"
printf '%-6s | %14s | %17s | %22s\n' conns "skiff CPU/req" "wasmtime CPU/req" "other load skiff/wt"
printf '%s\n' "-------+----------------+-------------------+-----------------------"
for conns in "${LEVELS[@]}"; do
    read -r _ _ _ _ s_cpu s_other <<<"${RESULT[skiff,$conns]}"
    read -r _ _ _ _ w_cpu w_other <<<"${RESULT[wasmtime,$conns]}"
    awk -v a="$s_other" -v b="$w_other" 'BEGIN { exit !(a > 0.1 || b > 0.1) }' && noisy=yes
    printf '%-6s | %12sus | %15sus | %22s\n' "$conns" "$s_cpu" "$w_cpu" "$s_other/$w_other"
done
echo
echo "skiff >= wasmtime serve at every level: $all_ahead"
[[ $noisy == no ]] || echo "warning: other processes used CPU during some runs; rerun on a quiet machine" >&2

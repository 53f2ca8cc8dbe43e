#!/usr/bin/env bash
# Linux containers: skiff against crun (Debian's package) on the same bundle, in one run, as
# ratios.
#
#   benches/linux-vs-crun.sh [--runs N] [--first-byte-runs N]
#
# 1. create + start + wait of /bin/true in the busybox sample: `crun run --bundle B` against
#    `skiff-oci run --bundle B` (skiff's OCI runtime verbs) on one rootfs and one config.json
#    (`crun spec`, args changed), timed by hyperfine. For context, `skiff run --net none --rm`
#    of the same image (overlay root from snapshots, records, reaper) is timed beside them.
# 2. run -> first byte: from launching busybox httpd, detached, to the first byte of its
#    answer on loopback, host network: `crun run --detach` against `skiff run -d --net host`,
#    and skiff with its bridge and `-p` for context. Medians over the runs.
#
# Debian's crun 1.8 refuses this machine's hybrid cgroup layout, so everything runs in a
# private mount namespace (`unshare -m`) with /sys/fs/cgroup/unified unmounted, both
# runtimes alike, and in a network namespace of its own (`unshare -n`). Needs: cargo, hyperfine, crun, umoci, busybox-static, jq, python3, curl.
set -euo pipefail

RUNS=200
FIRST_BYTE_RUNS=30
while (($#)); do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --first-byte-runs) FIRST_BYTE_RUNS=$2; shift ;;
        -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SKIFF_BENCH_INNER:-}" ]; then
    bash "$ROOT/scripts/install-test-deps.sh"
    command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
    echo "==> building skiff (release) and the busybox sample" >&2
    bash "$ROOT/samples/linux/busybox/build.sh" >/dev/null
    cargo build --release --locked -p skiff --manifest-path "$ROOT/Cargo.toml" >&2
    # The rest runs where crun accepts the cgroup layout, in a network namespace of its own
    # (skiff's bridge and NAT rule never touch the host's network).
    exec unshare -m -n env SKIFF_BENCH_INNER=1 bash "${BASH_SOURCE[0]}" --runs "$RUNS" \
        --first-byte-runs "$FIRST_BYTE_RUNS"
fi

mount --make-rprivate /
ip link set lo up
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SKIFF="$ROOT/target/release/skiff"
ln -s "$SKIFF" "$WORK/skiff-oci"
export SKIFF_DATA_DIR="$WORK/data"

echo "==> preparing the bundle" >&2
mkdir "$WORK/layout"
tar -xf "$ROOT/samples/target/linux/busybox.tar" -C "$WORK/layout"
umoci unpack --image "$WORK/layout:latest" "$WORK/bundle" >/dev/null
(cd "$WORK/bundle" && rm config.json && crun spec)
jq '.process.terminal = false | .process.args = ["/bin/true"]' "$WORK/bundle/config.json" \
    >"$WORK/true.json"
mv "$WORK/true.json" "$WORK/bundle/config.json"
"$SKIFF" load -i "$ROOT/samples/target/linux/busybox.tar" >/dev/null
IMAGE=localhost/skiff/busybox:latest
"$SKIFF" run --net none --rm "$IMAGE" /bin/true # unpacks the snapshot once

echo "==> create + start + wait of /bin/true ($RUNS runs each)" >&2
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$WORK/true.json" \
    -n crun "crun --root $WORK/crun run --bundle $WORK/bundle bench" \
    -n skiff-oci "$WORK/skiff-oci --root $WORK/skiff-oci-state run --bundle $WORK/bundle bench" \
    -n "skiff run" "$SKIFF run --net none --rm $IMAGE /bin/true" >&2

echo "==> run -> first byte from busybox httpd ($FIRST_BYTE_RUNS runs each)" >&2
jq '.process.terminal = false
    | .process.args = ["httpd", "-f", "-p", "18781", "-h", "/www"]
    | .linux.namespaces |= map(select(.type != "network"))' \
    "$WORK/bundle/config.json" >"$WORK/httpd.json"
cp -a "$WORK/bundle" "$WORK/httpd-bundle"
mv "$WORK/httpd.json" "$WORK/httpd-bundle/config.json"

python3 - "$WORK" "$SKIFF" "$IMAGE" "$FIRST_BYTE_RUNS" <<'EOF' >"$WORK/first-byte.json"
import json, socket, statistics, subprocess, sys, time
work, skiff_bin, image, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def first_byte(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if s.recv(1):
                    return
        except OSError:
            time.sleep(0.0005)
    raise SystemExit(f"no answer on port {port}")

def crun():
    start = time.monotonic()
    subprocess.run(["crun", "--root", f"{work}/crun", "run", "--detach",
                    "--bundle", f"{work}/httpd-bundle", "web"], check=True)
    first_byte(18781)
    took = time.monotonic() - start
    subprocess.run(["crun", "--root", f"{work}/crun", "delete", "--force", "web"], check=True)
    return took

def skiff_run(net):
    port = 18782 if net == "host" else 18783
    args = [skiff_bin, "run", "-d", "--name", "web", "--rm"]
    if net == "host":
        args += ["--net", "host", image, "httpd", "-f", "-p", str(port), "-h", "/www"]
    else:
        args += ["-p", f"{port}:80", image, "httpd", "-f", "-p", "80", "-h", "/www"]
    start = time.monotonic()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    first_byte(port)
    took = time.monotonic() - start
    subprocess.run([skiff_bin, "rm", "-f", "web"], check=True, stdout=subprocess.DEVNULL)
    return took

results = {"crun": [], "skiff --net host": [], "skiff bridge -p": []}
for _ in range(runs):  # interleaved, so drift on a shared machine hits all alike
    results["crun"].append(crun())
    results["skiff --net host"].append(skiff_run("host"))
    results["skiff bridge -p"].append(skiff_run("bridge"))
print(json.dumps({k: statistics.median(v) for k, v in results.items()}))
EOF

python3 - "$WORK/true.json" "$WORK/first-byte.json" <<'EOF'
import json, sys
runs = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
crun = runs["crun"]["median"]
print("create + start + wait of /bin/true (median)")
for name, r in runs.items():
    print(f"  {name:<20} {r['median'] * 1e3:8.2f} ms  ratio to crun {r['median'] / crun:5.2f}")
first = json.load(open(sys.argv[2]))
print("run -> first byte from busybox httpd (median)")
for name, seconds in first.items():
    print(f"  {name:<20} {seconds * 1e3:8.2f} ms  ratio to crun {seconds / first['crun']:5.2f}")
EOF

#!/usr/bin/env bash
# Builds a small Linux image from Debian's static busybox, as an OCI image-layout tarball
# that `skiff load -i` reads:
#
#   samples/target/linux/busybox.tar   named localhost/skiff/busybox:latest
#
# One layer: /bin/busybox plus a /bin/<applet> -> /bin/busybox symlink per applet,
# /etc/passwd and /etc/group (root 0, nobody 65534, skiff 1000), /tmp (1777), /root,
# /home/skiff and /www/index.html ("hello from busybox httpd"). Config: no Entrypoint,
# Cmd ["sh"], Env PATH=/bin.
#
# Needs busybox-static and umoci (Debian packages; scripts/install-test-deps.sh) and jq.
# BUSYBOX=/path/to/busybox overrides the binary (it must be static: the image has no libc).
set -euo pipefail

SAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="$SAMPLES_DIR/target/linux"
OUT="$OUT_DIR/busybox.tar"
NAME="localhost/skiff/busybox:latest"

for tool in umoci jq tar; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing; install it (apt-get install umoci jq)" >&2
        exit 1
    }
done
BUSYBOX="${BUSYBOX:-}"
if [[ -z "$BUSYBOX" ]]; then
    for candidate in /bin/busybox /usr/bin/busybox; do
        [[ -x "$candidate" ]] && BUSYBOX="$candidate" && break
    done
fi
if [[ -z "$BUSYBOX" ]]; then
    echo "busybox is missing; install busybox-static" >&2
    exit 1
fi
if command -v file >/dev/null && ! file -L "$BUSYBOX" | grep -q 'statically linked\|static-pie'; then
    echo "$BUSYBOX is not statically linked; install busybox-static" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
bundle="$work/bundle"
image="$layout:latest"
rootless=()
[[ "$(id -u)" -eq 0 ]] || rootless=(--rootless)

umoci init --layout "$layout"
umoci new --image "$image"
umoci unpack "${rootless[@]}" --image "$image" "$bundle"

rootfs="$bundle/rootfs"
install -d -m 0755 "$rootfs/bin" "$rootfs/etc" "$rootfs/www" "$rootfs/home"
install -d -m 0700 "$rootfs/root"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0755 "$rootfs/home/skiff"
install -m 0755 "$BUSYBOX" "$rootfs/bin/busybox"
while read -r applet; do
    [[ "$applet" == busybox || -z "$applet" ]] && continue
    ln -sf /bin/busybox "$rootfs/bin/$applet"
done < <("$BUSYBOX" --list)
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
skiff:x:1000:1000:skiff:/home/skiff:/bin/sh
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
skiff:x:1000:
GROUP
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
echo "hello from busybox httpd" >"$rootfs/www/index.html"
chmod 0644 "$rootfs/www/index.html"
if [[ "$(id -u)" -eq 0 ]]; then
    chown 1000:1000 "$rootfs/home/skiff"
fi

umoci repack "${rootless[@]}" --image "$image" "$bundle"
umoci config --image "$image" \
    --clear=config.entrypoint --clear=config.cmd --clear=config.env \
    --config.cmd sh --config.env PATH=/bin \
    --history.created_by "samples/linux/busybox/build.sh"
umoci gc --layout "$layout"

# The full name, where containerd (and skiff load) look for it; umoci writes only the tag.
index="$layout/index.json"
jq --arg name "$NAME" \
    '.manifests[0].annotations["io.containerd.image.name"] = $name' \
    "$index" >"$index.new"
mv "$index.new" "$index"

mkdir -p "$OUT_DIR"
tar -C "$layout" -cf "$OUT.tmp" oci-layout index.json blobs
mv "$OUT.tmp" "$OUT"
echo "$OUT"

#!/usr/bin/env bash
# Installs the outside tools skiff's registry tests use, only those that are missing; silent
# when everything is already there. Debian/Ubuntu (apt), run as root or with sudo.
#
#   docker-registry  (docker-registry)  distribution v2.8, the registry the tests push to
#   skopeo           (skopeo)           an independent client: digests, copies to OCI layouts
#   umoci            (umoci)            unpacks OCI image layouts
#   busybox          (busybox-static)   a small static binary to build image layers from
#   htpasswd         (apache2-utils)    bcrypt htpasswd files for the registry's basic auth
#   jq, file         (jq, file)         the busybox sample image's build script
#   crun             (crun)             the peer the Linux benchmark runs beside skiff
#   podman           (podman)           drives skiff as its OCI runtime in a test
#   nft              (nftables)         the bridge network's one NAT rule
#   curl, nsenter    (curl, util-linux) fetch from a published port inside a test netns
#   import oras      (PyPI: oras)       oras-py, a second OCI artifact client (python3)
#   libseccomp.pc    (libseccomp-dev)   builds the seccomp filter (the libseccomp crate links it)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# command -> Debian package providing it
declare -A providers=(
    [docker-registry]=docker-registry
    [skopeo]=skopeo
    [umoci]=umoci
    [busybox]=busybox-static
    [htpasswd]=apache2-utils
    [jq]=jq
    [file]=file
    [crun]=crun
    [podman]=podman
    [nft]=nftables
    [curl]=curl
    [nsenter]=util-linux
)

missing=()
for cmd in docker-registry skopeo umoci busybox htpasswd jq file crun podman nft curl nsenter; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${providers[$cmd]}")
    fi
done

python=python3
need_oras=0
if ! command -v "$python" >/dev/null 2>&1; then
    missing+=(python3 python3-pip)
    need_oras=1
elif ! "$python" -c 'import oras' >/dev/null 2>&1; then
    need_oras=1
    # pip itself, when this Python lacks it
    "$python" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi

# Build dependencies: checked by their files, not a command.
[ -e /usr/lib/x86_64-linux-gnu/pkgconfig/libseccomp.pc ] || [ -n "$(find /usr/lib -name libseccomp.pc -print -quit 2>/dev/null)" ] || missing+=(libseccomp-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-test-deps: installing ${missing[*]}" >&2
    sudo_if_needed apt-get update -qq
    sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$need_oras" -eq 1 ]; then
    echo "install-test-deps: installing oras (PyPI) for $python" >&2
    pip_args=(install --quiet --disable-pip-version-check "oras>=0.2.43,<0.3")
    # Debian's own Python refuses pip installs (PEP 668) unless told otherwise.
    if "$python" -c 'import os, sysconfig, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        pip_args+=(--break-system-packages)
    fi
    if [ "$(id -u)" -ne 0 ] && ! "$python" -c 'import os, sys; sys.exit(0 if os.access(sys.prefix, os.W_OK) else 1)'; then
        pip_args+=(--user)
    fi
    "$python" -m pip "${pip_args[@]}"
    "$python" -c 'import oras' # fail loudly if it still is not importable
fi

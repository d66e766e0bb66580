#!/usr/bin/env bash
# Run a container on a fresh machine: installs what minidocker needs, makes a
# busybox image from the distribution's busybox-static if there is none, and
# runs it.  Usage: sudo bash scripts/quickstart.sh [RUN ARGUMENTS...]
# (default: an interactive shell, `run --rm -it busybox sh`).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
[ "$(id -u)" -eq 0 ] || { echo "run me as root (sudo)" >&2; exit 1; }
apt_install busybox-static util-linux iproute2 iptables
make_venv ""
if ! "$PYTHON" -m minidocker image inspect busybox >/dev/null 2>&1 &&
   ! "$PYTHON" -m minidocker inspect busybox >/dev/null 2>&1; then
    workdir=$(mktemp -d)
    trap 'rm -rf "$workdir"' EXIT
    (cd "$REPO/tests" && "$PYTHON" -c "from helpers.images import make_busybox_tarball; \
make_busybox_tarball('$workdir/busybox.tar', '$workdir')")
    "$PYTHON" -m minidocker import -c 'CMD ["sh"]' "$workdir/busybox.tar" busybox >/dev/null
    # Now, not at EXIT: the exec below replaces this shell, and its trap with it.
    rm -rf "$workdir"
    trap - EXIT
fi
if [ $# -eq 0 ]; then
    if [ -t 0 ]; then set -- --rm -it busybox sh; else set -- --rm busybox echo "hello from minidocker"; fi
fi
exec "$PYTHON" -m minidocker run "$@"

#!/usr/bin/env bash
# Run minidocker's whole test suite on a fresh machine, as root: installs the
# tools the tests drive (nothing is mocked), makes .venv, runs pytest (every
# chapter, the hardening suite, the leak check) and builds the docs with
# warnings as errors.  Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
[ "$(id -u)" -eq 0 ] || { echo "the tests run as root against the real kernel: use sudo" >&2; exit 1; }
apt_install busybox-static util-linux iproute2 iptables procps psmisc kmod file \
    gcc libc6-dev umoci skopeo docker-registry apache2-utils \
    qemu-system-x86 linux-image-amd64 cpio vagrant vagrant-libvirt shellcheck xfsprogs runc crun podman hyperfine
make_venv "[test,docs]"
cd "$REPO"
status=0
"$PYTHON" -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
[ "$status" -eq 0 ] || exit "$status"
if [ -f docs/conf.py ]; then
    rm -rf docs/_build
    "$PYTHON" -m sphinx -W --keep-going -q -b html docs docs/_build/html
fi

#!/usr/bin/env bash
# Run minidocker's benchmark on this machine, as root: installs the peers it
# is measured against (runc, crun, podman, skopeo, Debian's docker-registry,
# umoci, hyperfine for cross-checks), makes .venv, and runs bench/run.py.
# Extra arguments go to run.py, e.g. `start --scale 0.2`.
# Results: bench/results/results.md and results.json.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
[ "$(id -u)" -eq 0 ] || { echo "the benchmark starts containers: use sudo" >&2; exit 1; }
apt_install busybox-static util-linux iproute2 iptables file \
    runc crun podman skopeo umoci docker-registry hyperfine
make_venv ""
exec "$PYTHON" "$REPO/bench/run.py" "$@"

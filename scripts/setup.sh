# Shared by quickstart.sh and test.sh: find Python >= 3.12 and make .venv.
# Sourced, not run: sets PYTHON (the venv's interpreter) and REPO.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

find_python() {
    local candidate
    for candidate in "${MINIDOCKER_PYTHON:-}" python3.12 python3.13 python3.14 python3 \
                     /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           (cd "$REPO" && "$candidate" -c 'import os, sys; sys.exit(not hasattr(os, "unshare"))') 2>/dev/null; then
            (cd "$REPO" && "$candidate" -c 'import sys; print(sys.executable)')
            return 0
        fi
    done
    echo "minidocker needs Python >= 3.12 (os.unshare). Without pyenv: 'uv python install 3.12'," >&2
    echo "or your distribution's python3.12 package; then set MINIDOCKER_PYTHON=/path/to/python3.12." >&2
    return 1
}

apt_install() {
    # Install the Debian packages that are missing; update the lists only if needed.
    local missing=() package
    if ! command -v apt-get >/dev/null 2>&1; then
        if [ -f /etc/centos-release ]; then
            echo "CentOS: lab/provision.sh installed the tools; not using apt" >&2
            return 0
        fi
        echo "not a Debian-like system: please install the equivalents of: $*" >&2
        return 1
    fi
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_venv() {
    local base extras="$1"
    base=$(find_python)
    if [ ! -x "$REPO/.venv/bin/python" ] ||
       ! "$REPO/.venv/bin/python" -c 'import os, sys; sys.exit(not hasattr(os, "unshare"))'; then
        rm -rf "$REPO/.venv"
        "$base" -m venv "$REPO/.venv"
    fi
    # compat mode is a plain path entry; the default editable finder costs
    # ~20 ms at every Python start, i.e. at every container start.
    "$REPO/.venv/bin/python" -m pip install -q --disable-pip-version-check \
        --config-settings editable_mode=compat -e "$REPO$extras"
    PYTHON="$REPO/.venv/bin/python"
    # Python reads .pyc files even where PYTHONDONTWRITEBYTECODE forbids
    # writing them; compiling once saves every container start ~30 ms.
    "$PYTHON" -m compileall -q "$REPO/minidocker" >/dev/null || true
}

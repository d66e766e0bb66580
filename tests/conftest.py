"""Fixtures every test shares: an engine root, the busybox image, the leak check."""

import os
import shutil
import subprocess
import tempfile

import pytest

from helpers import leaks
from helpers.engine import Engine
from helpers.images import make_busybox_tarball


#: The network rule, enforced: ``run``, ``create`` and ``build`` pull an
#: image they lack, and a Docker Hub name would go to registry-1.docker.io.
#: Every HTTP(S) request of every command the tests start goes to a proxy
#: that is not there (127.0.0.1 port 9, discard, closed), except those to
#: loopback; so an accidental pull fails here and never leaves the machine.
#: (The engine's client, skopeo and podman all honour these variables.)
NOWHERE = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,127.0.0.2,localhost,::1,127.0.0.0/8"  # Python needs each address


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("minidocker's tests run as root against the real kernel")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ[name] = NOWHERE
    for name in ("no_proxy", "NO_PROXY"):
        os.environ[name] = LOOPBACK
    config._minidocker_before = leaks.snapshot()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_minidocker_before", set())
    left = sorted(leaks.snapshot() - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "LEAK CHECK FAILED: the suite left these on the host:\n  " + "\n  ".join(left)
        if reporter:
            reporter.write_line(message, red=True)
        else:
            print(message)
        session.exitstatus = 1


def _unmount_everything_under(path):
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo if line.split()[4].startswith(path)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    return points


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory):
    """A rootfs tarball of busybox, built once per run."""
    workdir = tmp_path_factory.mktemp("busybox")
    return make_busybox_tarball(str(workdir / "busybox-rootfs.tar"), str(workdir))


@pytest.fixture
def engine():
    """A fresh engine root for one test; fails the test if it leaks mounts.

    ``system reset --force`` removes its containers and, since a network's
    bridge and rules outlive its containers, its networks too.
    """
    root = tempfile.mkdtemp(prefix=leaks.TEMP_ROOT_PREFIX, dir="/tmp")
    engine = Engine(root)
    yield engine
    reset = engine.run("system", "reset", "--force", timeout=120)
    left = _unmount_everything_under(root)
    shutil.rmtree(root, ignore_errors=True)
    assert not left, f"mounts left under the engine root: {left}"
    assert reset.returncode == 0, f"system reset --force failed: {reset.stderr}"


@pytest.fixture
def busybox(engine, busybox_tar):
    """The engine, with the busybox image imported as ``busybox``."""
    engine.ok("import", busybox_tar, "busybox")
    return engine

"""Find what minidocker or its tests left on the host.

The suite takes a snapshot before the first test and compares after the
last: any mount, cgroup, network link, network namespace, iptables rule,
process or temporary engine root that appeared and is still there is a leak,
and the run fails.
"""

import glob
import os
import subprocess

#: Engine roots the tests make.  A run inside the cgroup v2 VM (which sees
#: the host's /tmp through its overlay) uses a prefix of its own, so the
#: host's roots coming and going are not taken for the guest's leaks.
TEMP_ROOT_PREFIX = os.environ.get("MINIDOCKER_TEST_ROOT_PREFIX", "minidocker-test-")
TEMP_ROOT_PATTERN = f"/tmp/{TEMP_ROOT_PREFIX}*"


def _lines(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []


def snapshot():
    """Return the host objects a container engine could leave behind."""
    found = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            mount_point = line.split()[4]
            if "minidocker" in mount_point:
                found.add(f"mount {mount_point}")
    # The engine's groups live in a "minidocker" group of each hierarchy
    # (v1: /sys/fs/cgroup/CONTROLLER/minidocker/ID, v2: .../minidocker/ID).
    for pattern in ("/sys/fs/cgroup/*minidocker*", "/sys/fs/cgroup/*/*minidocker*",
                    "/sys/fs/cgroup/*minidocker*/*/", "/sys/fs/cgroup/*/*minidocker*/*/"):
        for path in glob.glob(pattern):
            found.add(f"cgroup {path.rstrip('/')}")
    for line in _lines(["ip", "-o", "link", "show"]):
        name = line.split(": ")[1].split("@")[0]
        if name.startswith(("md", "veth", "minidocker")):
            found.add(f"link {name}")
    for line in _lines(["ip", "netns", "list"]):
        found.add(f"netns {line.split()[0]}")
    for command in (["iptables-save"], ["iptables-legacy-save"], ["iptables-nft-save"]):
        for line in _lines(command):
            if "minidocker" in line.lower() and not line.startswith("#"):
                found.add(f"iptables {line}")
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                words = cmdline.read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(words)
        if b"-m minidocker" in text or b"minidocker-monitor" in text:
            found.add(f"process {pid} {text.decode(errors='replace')[:120]}")
    for path in glob.glob(TEMP_ROOT_PATTERN):
        found.add(f"temp root {path}")
    return found

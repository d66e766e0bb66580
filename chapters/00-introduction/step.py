"""Chapter 0, try it: check that this machine can run the whole course.

Run from the repository's top directory::

    python chapters/00-introduction/step.py

Each line names one thing a later chapter needs and says ``ok`` or what is
missing and which chapter will miss it.  The exit status is 0 only when
everything the engine needs is there.  It reads only what the kernel and
the file system show (``/proc``, ``/sys``, ``PATH``); it changes nothing.
"""

import os
import platform
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host  # noqa: E402  (after the path line above)

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "cgroup")


def checks():
    """Yield ``(what, problem or None, needed)`` for each thing the course uses."""
    yield "Python 3.12 or newer (os.unshare, os.setns)", \
        None if sys.version_info >= (3, 12) else f"this is Python {platform.python_version()}", True
    yield "running as root", None if os.geteuid() == 0 else "run with sudo", True
    missing = [kind for kind in NAMESPACES if not os.path.exists(f"/proc/self/ns/{kind}")]
    yield "namespaces: " + " ".join(NAMESPACES), \
        "missing " + " ".join(missing) if missing else None, True
    yield "cgroups: " + cgroup_layout(), None, True
    yield "overlay filesystem (chapter 3)", \
        None if "overlay" in filesystems() else "no overlay: the engine copies layers (vfs)", False
    for tool, package, chapters in (
            ("mount", "util-linux", "3"), ("nsenter", "util-linux", "3, 6"),
            ("setpriv", "util-linux", "3"), ("ip", "iproute2", "5"),
            ("iptables", "iptables", "5")):
        yield f"{tool} ({package}, chapter {chapters})", \
            None if shutil.which(tool) else f"install {package}", True
    yield "busybox, for the test image", \
        None if shutil.which("busybox") else "install busybox-static", False
    yield "gcc and a static libc, for chapter 3's escape", \
        None if static_c_library() else "install gcc and the static C library", False


def cgroup_layout():
    """Describe the cgroup mounts: v1 hierarchies, v2 unified, or both."""
    kinds = set()
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            kind = line.split()[2]
            if kind in ("cgroup", "cgroup2"):
                kinds.add(kind)
    if kinds == {"cgroup", "cgroup2"}:
        return "v1 hierarchies and a v2 mount (hybrid)"
    if kinds == {"cgroup2"}:
        return "v2 (unified)"
    if kinds == {"cgroup"}:
        return "v1 hierarchies"
    return "none mounted"


def static_c_library():
    """Say whether gcc can link static programs: it knows where libc.a is."""
    if not shutil.which("gcc"):
        return False
    # gcc(1): -print-file-name=LIBRARY prints the full path, or just the
    # name when the library is not installed.
    answer = subprocess.run(["gcc", "-print-file-name=libc.a"], capture_output=True, text=True)
    return os.path.isabs(answer.stdout.strip())


def filesystems():
    with open("/proc/filesystems") as handle:
        return {line.split()[-1] for line in handle}


def main():
    host.narrate(0, "read /proc/self/ns, /proc/self/mounts, /proc/filesystems and PATH")
    missing_needed = False
    for what, problem, needed in checks():
        if problem is None:
            print(f"ok       {what}")
        else:
            print(f"{'MISSING' if needed else 'note':8} {what}: {problem}")
            missing_needed = missing_needed or needed
    print("this machine can run the course" if not missing_needed
          else "this machine lacks something the engine needs (see MISSING above)")
    return 1 if missing_needed else 0


if __name__ == "__main__":
    if "--trace" in sys.argv[1:]:
        host.enable_trace()
    sys.exit(main())

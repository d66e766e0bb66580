"""Chapter 8, try it: three things minidocker leaves to the real engines.

Run as root from the repository's top directory::

    python chapters/08-outlook/step.py

1. **User namespaces**: an ordinary user (``nobody``) becomes root inside a
   user namespace; a file it creates belongs to ``nobody`` outside.  That
   is the heart of rootless containers.
2. **seccomp**: minidocker's container runs with no system call filter
   (``Seccomp: 0``); Python cannot load one without C.
3. **An OCI runtime**: the same busybox root, described by an OCI
   ``config.json`` with a seccomp filter that refuses ``mkdir``, run by
   ``runc`` (or ``crun``): ``Seccomp: 2``, and ``mkdir`` fails.

Everything is made in a temporary directory and removed at the end.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host  # noqa: E402  (after the path line above)

NOBODY = 65534
APPLETS = ("sh", "grep", "mkdir", "cat", "id")


def main():
    if "--trace" in sys.argv[1:]:
        host.enable_trace()
    if os.geteuid() != 0:
        sys.exit("this step needs root")
    workspace = tempfile.mkdtemp(prefix="minidocker-chapter8-")
    try:
        print("1. user namespaces: root inside, an ordinary user outside", flush=True)
        user_namespace(workspace)
        root = make_busybox_root(os.path.join(workspace, "bundle", "rootfs"))
        print("2. seccomp: minidocker's container has no system call filter", flush=True)
        minidocker_seccomp(workspace, root)
        # runc first: crun refuses a hybrid host whose cgroup2 mount holds
        # any controller ("cgroups in hybrid mode not supported").
        runtime = shutil.which("runc") or shutil.which("crun")
        if runtime is None:
            print("3. no OCI runtime here (install crun or runc) to see a seccomp filter at work")
            return
        print(f"3. an OCI runtime ({os.path.basename(runtime)}) runs the same root "
              "with a filter that refuses mkdir", flush=True)
        oci_runtime(runtime, os.path.join(workspace, "bundle"))
    finally:
        shutil.rmtree(workspace)


def user_namespace(workspace):
    """Become root in a new user namespace as ``nobody``, and make a file.

    user_namespaces(7): "a process can have a normal unprivileged user ID
    outside a user namespace while at the same time having a user ID of 0
    inside the namespace".  ``unshare --map-root-user`` writes the one-line
    ``uid_map`` that says so.
    """
    if not os.path.exists("/proc/self/ns/user") or read_number("/proc/sys/user/max_user_namespaces") == 0:
        print("this kernel has user namespaces switched off (user.max_user_namespaces is 0)")
        return
    os.chmod(workspace, 0o711)  # nobody must be able to pass through it
    shared = os.path.join(workspace, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    made = os.path.join(shared, "made-inside")
    result = host.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                       "unshare", "--user", "--map-root-user",
                       "sh", "-c", f"id -u; cat /proc/self/uid_map; touch {made}"],
                      1, capture=True)
    uid, mapping = result.stdout.decode().splitlines()
    inside, outside, count = mapping.split()
    print(f"inside:  id -u prints {uid}")
    print(f"inside:  /proc/self/uid_map maps {inside} to {outside} ({count} id)")
    print(f"outside: the file it made belongs to uid {os.stat(made).st_uid}")


def read_number(path):
    try:
        with open(path) as handle:
            return int(handle.read())
    except FileNotFoundError:
        return None


def make_busybox_root(directory):
    """Lay out a small busybox root; return its path."""
    os.makedirs(os.path.join(directory, "bin"))
    for name in ("proc", "dev", "sys", "tmp", "etc"):
        os.mkdir(os.path.join(directory, name))
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("this step needs busybox (Debian: busybox-static)")
    shutil.copy2(busybox, os.path.join(directory, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(directory, "bin", applet))
    return directory


def minidocker_seccomp(workspace, root):
    """Import the root as an image and read the Seccomp line inside a container.

    The engine is driven through its command line, the way a user would,
    in an engine root of its own.
    """
    engine_root = os.path.join(workspace, "engine")
    tarball = os.path.join(workspace, "busybox.tar")
    with tarfile.open(tarball, "w") as archive:
        for entry in sorted(os.listdir(root)):
            archive.add(os.path.join(root, entry), arcname=entry)
    environment = dict(os.environ, MINIDOCKER_ROOT=engine_root)
    minidocker = [sys.executable, "-m", "minidocker"]
    subprocess.run(minidocker + ["import", tarball, "outlook"], env=environment, check=True,
                   stdout=subprocess.DEVNULL)
    sys.stdout.flush()
    # No network: this engine root is thrown away, and a network's bridge
    # would outlive it (only `system reset` or `network rm` removes one).
    subprocess.run(minidocker + ["run", "--rm", "--network", "none", "outlook",
                                 "grep", "Seccomp:", "/proc/self/status"],
                   env=environment, check=True)
    subprocess.run(minidocker + ["rmi", "outlook"], env=environment, check=True,
                   stdout=subprocess.DEVNULL)


def oci_runtime(runtime, bundle):
    """Write an OCI bundle's config.json and let the runtime run it.

    ``RUNTIME spec`` writes the runtime's default configuration; the step
    changes the command, makes the root writable (so only the filter can
    refuse ``mkdir``) and adds a seccomp filter in the runtime spec's
    format: allow every system call except these two.
    """
    subprocess.run([runtime, "spec"], cwd=bundle, check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "grep Seccomp: /proc/self/status; "
                                 "mkdir /made-here || echo the filter said no"]
    config["root"]["readonly"] = False
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2)
    name = f"minidocker-outlook-{os.getpid()}"
    sys.stdout.flush()
    host.narrate(8, f"{runtime} run --bundle {bundle} {name}")
    result = subprocess.run([runtime, "run", "--bundle", bundle, name], stderr=subprocess.STDOUT,
                            stdout=subprocess.PIPE, text=True)
    print(result.stdout, end="")
    # `run` deletes the container when it exits; make sure, since a left
    # container would keep its cgroup on the host.
    if subprocess.run([runtime, "state", name], capture_output=True).returncode == 0:
        host.run([runtime, "delete", "--force", name], 8)
    if result.returncode != 0:
        raise host.EngineError(f"{os.path.basename(runtime)} run exited {result.returncode}")


if __name__ == "__main__":
    try:
        main()
    except host.EngineError as error:
        sys.exit(f"chapter 8's step failed: {error}")

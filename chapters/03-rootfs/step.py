"""Chapter 3, try it: a root a process cannot climb out of.

Run as root from the repository's top directory::

    python chapters/03-rootfs/step.py            # the escape, before and after the fix
    python chapters/03-rootfs/step.py --trace    # and every mount on the way

The step builds a tiny root filesystem from the host's static busybox,
compiles ``escape.c`` (a dozen lines of C that climb out of a chroot) into
it, and runs the same program twice:

1. under a plain ``chroot(1)``: it reaches a file that exists only on the host;
2. as the PID 1 of a root built by chapter 3's module, ``minidocker.rootfs``
   (overlay, /proc, /dev, the whole tree laid over ``/``, then the chroot
   that ``exec_command`` does): the same climb ends inside the container.

It uses only the modules of chapters 1 to 3, and leaves nothing behind: the
container's mounts live in a mount namespace that dies with its PID 1.
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host, namespace, rootfs  # noqa: E402  (after the path line above)

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "I live on the host, outside every root"


def main():
    if "--trace" in sys.argv[1:]:
        host.enable_trace()
    if os.geteuid() != 0:
        sys.exit("this step needs root: chroot(2) and mount(2) need CAP_SYS_CHROOT and CAP_SYS_ADMIN")
    workspace = tempfile.mkdtemp(prefix="minidocker-chapter3-")
    try:
        secret = os.path.join(workspace, "host-only.txt")
        with open(secret, "w") as handle:
            handle.write(SECRET + "\n")
        layer = make_busybox_root(os.path.join(workspace, "busybox"))
        print("1. a plain chroot(1) into the busybox root", flush=True)
        print(plain_chroot(layer, secret), end="", flush=True)
        print("2. the root chapter 3 builds: laid over /, then chroot", flush=True)
        code = run_in_container_root(os.path.join(workspace, "container"), layer, secret)
        if code != 0:
            sys.exit(f"the container's PID 1 exited with status {code}")
    finally:
        shutil.rmtree(workspace)


def make_busybox_root(directory):
    """Lay out a root with busybox and the escape program; return its path."""
    os.makedirs(os.path.join(directory, "bin"))
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("this step needs busybox (Debian: busybox-static)")
    shutil.copy2(busybox, os.path.join(directory, "bin", "busybox"))
    os.symlink("busybox", os.path.join(directory, "bin", "sh"))
    compile_escape(os.path.join(directory, "escape"))
    return directory


def compile_escape(target):
    """Compile escape.c statically, so it needs nothing from the root it runs in."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        sys.exit("this step compiles escape.c: install gcc and the static C library "
                 "(Debian: gcc libc6-dev; CentOS: gcc glibc-static)")
    result = subprocess.run([compiler, "-static", "-O2", "-o", target,
                             os.path.join(HERE, "escape.c")], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"gcc could not build escape.c (is the static C library installed?):\n"
                 f"{result.stderr}")


def plain_chroot(layer, secret):
    """Run the escape under chroot(1), the way early container tools did."""
    return host.run(["chroot", layer, "/escape", secret], 3, capture=True).stdout.decode()


def run_in_container_root(directory, layer, secret):
    """Run the escape as PID 1 of a root built by ``minidocker.rootfs``.

    This is the engine's own order (container.py does the same with more
    options): a new PID namespace, then mount/UTS/IPC namespaces, then
    :func:`rootfs.build`, :func:`rootfs.switch_root` and
    :func:`rootfs.exec_command`.
    """
    driver = rootfs.choose_driver()
    rootfs.create(directory, [layer], driver)
    rootfs.set_hostname_files(directory, "chapter3")
    sys.stdout.flush()  # a forked child would print the parent's buffered text again
    pid = namespace.fork_into_pid_namespace()
    if pid == 0:
        try:
            namespace.unshare(["mnt", "uts", "ipc"])
            namespace.set_hostname("chapter3")
            merged, _, _ = rootfs.build(directory, [layer], driver)
            rootfs.switch_root(merged)
            rootfs.exec_command(["/escape", secret], {"PATH": "/bin"}, workdir="/")
        except BaseException as error:
            print(f"the container's PID 1 failed before exec: {error}", file=sys.stderr)
        os._exit(125)
    _, status = os.waitpid(pid, 0)
    # The mount namespace died with PID 1, and its mounts with it.
    rootfs.remove(directory)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    main()

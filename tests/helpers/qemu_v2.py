"""Boot a real cgroup v2 kernel under QEMU and run a command inside it.

This lab's host mounts cgroup v1, so minidocker's v2 driver needs another
kernel to be tested against for real.  Debian's own kernel
(``linux-image-amd64``) is one command away:

* a tiny initramfs holds a static busybox, the kernel modules that 9p and
  overlay need, and an ``/init`` script;
* the host's ``/`` is shared read-only over virtio-9p and mounted in the
  guest under a tmpfs overlay, so the guest runs the host's very Python,
  virtualenv and working tree, and may write anywhere without touching
  the host;
* the host's ``/tmp`` stays visible (through the overlay), so a working
  tree under ``/tmp`` runs too;
* the guest mounts only ``cgroup2`` at ``/sys/fs/cgroup`` (no v1 at all),
  runs the command with the working tree as its directory, and writes the
  command's output and exit status into a second, writable 9p share;
* QEMU runs with TCG (software emulation): ``/dev/kvm`` exists on the lab
  host but KVM guests hang there.

Python starts in about 3 s under TCG, so callers batch everything into
one interpreter.  :func:`unavailable` says why the VM cannot run, when it
cannot.
"""

import glob
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

#: Modules the guest needs, in the order modprobe --show-depends gives.
WANTED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

QEMU = "qemu-system-x86_64"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules/order); do
    insmod /modules/$module || echo "minidocker-vm: insmod $module failed"
done
mkdir -p /rw
mount -t tmpfs -o size=512m tmpfs /rw
mkdir -p /rw/upper /rw/work /rw/root /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro host /host
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /rw/root
mkdir -p /rw/root/minidocker-vm-results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /rw/root/minidocker-vm-results
chroot /rw/root /bin/sh /minidocker-vm-results/guest.sh \
    > /rw/root/minidocker-vm-results/output.txt 2>&1
echo $? > /rw/root/minidocker-vm-results/status
sync
echo "minidocker-vm: done"
poweroff -f
"""

GUEST_SCRIPT = """\
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root PYTHONDONTWRITEBYTECODE=1 RESULTS=/minidocker-vm-results {environment}
cd {directory}
{command}
"""


@dataclass
class GuestResult:
    """What came back from the guest."""

    status: int | None     # the command's exit status, None if it never finished
    output: str            # the command's standard output and error
    console: str           # the guest's serial console (kernel and /init)
    seconds: float
    files: dict            # name -> text of every file the command left in $RESULTS


def kernel():
    """Return (vmlinuz path, version) of the newest kernel in /boot, or None."""
    images = sorted(glob.glob("/boot/vmlinuz-*"))
    if not images:
        return None
    image = images[-1]
    return image, image.split("vmlinuz-", 1)[1]


def unavailable():
    """Say why the VM cannot run here, or return None when it can."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    found = kernel()
    if found is None:
        return "no kernel in /boot (apt-get install linux-image-amd64)"
    image, version = found
    if not os.access(image, os.R_OK):
        return f"{image} is not readable"
    if not os.path.isdir(f"/lib/modules/{version}"):
        return f"no modules for {version} in /lib/modules"
    try:
        module_paths(version)
    except RuntimeError as error:
        return str(error)
    if not shutil.which("modprobe"):
        return "modprobe (kmod) is not installed"
    return None


def module_paths(version):
    """The module files to insmod, dependencies first (modprobe's order)."""
    paths = []
    for module in WANTED_MODULES:
        result = subprocess.run(["modprobe", "-S", version, "--show-depends", module],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"modprobe cannot resolve {module} for {version}: "
                               f"{result.stderr.strip()}")
        for line in result.stdout.splitlines():
            words = line.split()
            if words and words[0] == "insmod" and words[1] not in paths:
                paths.append(words[1])
    for path in paths:
        if path.endswith(".zst"):
            raise RuntimeError(f"{path} is zstd-compressed; Python 3.12 cannot unpack it")
    return paths


def build_initramfs(workdir, version):
    """Write an uncompressed newc cpio initramfs; return its path."""
    tree = os.path.join(workdir, "initramfs")
    for name in ("bin", "dev", "proc", "sys", "modules"):
        os.makedirs(os.path.join(tree, name), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(tree, "bin", "busybox"))
    os.symlink("busybox", os.path.join(tree, "bin", "sh"))
    order = []
    for path in module_paths(version):
        name = os.path.basename(path)
        if name.endswith(".xz"):
            name = name[:-3]
            with lzma.open(path) as packed, open(os.path.join(tree, "modules", name), "wb") as plain:
                shutil.copyfileobj(packed, plain)
        else:
            shutil.copy2(path, os.path.join(tree, "modules", name))
        order.append(name)
    with open(os.path.join(tree, "modules", "order"), "w") as handle:
        handle.write("\n".join(order) + "\n")
    with open(os.path.join(tree, "init"), "w") as handle:
        handle.write(INIT)
    os.chmod(os.path.join(tree, "init"), 0o755)
    archive = os.path.join(workdir, "initramfs.cpio")
    names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    with open(archive, "wb") as output:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=tree, input=names,
                       stdout=output, check=True)
    return archive


def run_in_guest(command, directory, environment=None, timeout=240):
    """Boot the v2 kernel, run the shell ``command`` in ``directory``, power off.

    Returns a :class:`GuestResult`.  The temporary files (initramfs,
    results) are removed afterwards, and QEMU is killed if it outlives
    ``timeout`` seconds.
    """
    image, version = kernel()
    workdir = tempfile.mkdtemp(prefix="minidocker-vm-")
    try:
        return _boot_and_run(workdir, image, version, command, directory,
                             environment or {}, timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _boot_and_run(workdir, image, version, command, directory, environment, timeout):
    initramfs = build_initramfs(workdir, version)
    results = os.path.join(workdir, "results")
    os.makedirs(results)
    exports = " ".join(f"{key}={_quote(value)}" for key, value in environment.items())
    with open(os.path.join(results, "guest.sh"), "w") as handle:
        handle.write(GUEST_SCRIPT.format(environment=exports, directory=_quote(directory),
                                         command=command))
    console = os.path.join(workdir, "console.log")
    argv = [
        QEMU, "-accel", "tcg", "-m", "1024", "-smp", "2", "-nodefaults",
        "-display", "none", "-no-reboot", "-monitor", "none",
        "-serial", f"file:{console}",
        "-kernel", image, "-initrd", initramfs,
        "-append", "console=ttyS0 panic=-1 quiet",
        "-virtfs", "local,path=/,mount_tag=host,security_model=passthrough,"
                   "readonly=on,multidevs=remap",
        "-virtfs", f"local,path={results},mount_tag=results,security_model=passthrough",
    ]
    started = time.monotonic()
    machine = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        qemu_output, _ = machine.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        machine.kill()
        qemu_output, _ = machine.communicate()
    seconds = time.monotonic() - started
    status = _read(os.path.join(results, "status")).strip()
    text = _read(console) + qemu_output.decode(errors="replace")
    return GuestResult(
        status=int(status) if status.isdigit() else None,
        output=_read(os.path.join(results, "output.txt")),
        console=text, seconds=seconds,
        files={name: _read(os.path.join(results, name)) for name in os.listdir(results)})


def _quote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


def _read(path):
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def junit_counts(text):
    """Read (tests, failures, errors, skipped) from pytest's junit XML text."""
    match = re.search(r'<testsuite [^>]*', text)
    if not match:
        return None
    fields = dict(re.findall(r'(\w+)="([^"]*)"', match.group(0)))
    return tuple(int(fields.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))

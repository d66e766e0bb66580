"""Build the test images at test time from the distribution's busybox-static.

No binary is committed to the repository: every image the tests use is made
here, from ``/bin/busybox`` (Debian's ``busybox-static``), so anyone can see
exactly what is inside it.
"""

import os
import shutil
import subprocess
import tarfile

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def busybox_is_static():
    """Say whether the host's busybox runs without the host's libraries."""
    output = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True).stdout \
        if shutil.which("file") else ""
    if output:
        return "statically linked" in output or "static-pie" in output
    with open(BUSYBOX, "rb") as binary:
        return b"ld-linux" not in binary.read()


def make_busybox_rootfs(directory):
    """Lay out a minimal root filesystem: busybox, its applets, /etc basics."""
    for name in ("bin", "etc", "tmp", "root", "home/user", "var/www", "usr/bin", "sbin"):
        os.makedirs(os.path.join(directory, name), exist_ok=True)
    os.chmod(os.path.join(directory, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(directory, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            link = os.path.join(directory, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                      "user:x:1000:1000:user:/home/user:/bin/sh\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": "root:x:0:\nuser:x:1000:\nstaff:x:50:user\nnogroup:x:65534:\n",
        "etc/hostname": "image\n",
        "var/www/index.html": "hello from minidocker\n",
    }
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as handle:
            handle.write(text)
    os.chown(os.path.join(directory, "home/user"), 1000, 1000)
    return directory


def make_busybox_tarball(path, workdir):
    """Write a rootfs tarball of the busybox image to ``path``."""
    rootfs = make_busybox_rootfs(os.path.join(workdir, "busybox-rootfs"))
    with tarfile.open(path, "w") as archive:
        for entry in sorted(os.listdir(rootfs)):
            archive.add(os.path.join(rootfs, entry), arcname=entry)
    shutil.rmtree(rootfs)
    return path

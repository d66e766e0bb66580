"""Chapter 7, try it: the upper directory is the diff, and a commit is a tar of it.

Run as root from the repository's top directory::

    python chapters/07-commit/step.py            # the changes, the diff, the layer
    python chapters/07-commit/step.py --trace    # and every mount and syscall on the way

The step makes a tiny one-layer "image" (a few files in a directory), lays
out a container on it with chapter 3's :func:`rootfs.create`, and changes
the container's files through an overlay mount made in a private mount
namespace (:func:`commit.in_container_root`): it adds a file, changes one,
deletes one and replaces a whole directory.  Then it shows, in order:

1. what overlayfs wrote into the upper directory (whiteouts are character
   devices 0/0, the replaced directory is opaque);
2. the same read as Docker's ``diff`` lines;
3. the layer ``commit`` writes: a tar with ``.wh.`` whiteouts and an opaque
   marker, named by the SHA-256 of its bytes;
4. that writing it again gives the same digest.

It uses only the modules of chapters 1 to 7 and leaves nothing behind: the
mount lives in a namespace that dies with the child that made it.
"""

import os
import shutil
import stat
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import commit, host, image, rootfs  # noqa: E402  (after the path line above)


class Record:
    """Just enough of a container record for chapter 7's functions."""

    def __init__(self, directory, layers):
        self.id = "chapter7"
        self.directory = directory
        self.config = {"Driver": "overlay", "LayerDirectories": layers, "Mounts": []}


def main():
    if "--trace" in sys.argv[1:]:
        host.enable_trace()
    if os.geteuid() != 0:
        sys.exit("this step needs root: mount(2) and the trusted.* attributes need CAP_SYS_ADMIN")
    workspace = tempfile.mkdtemp(prefix="minidocker-chapter7-")
    try:
        layer = make_image_layer(os.path.join(workspace, "layer"))
        container = Record(os.path.join(workspace, "container"), [layer])
        os.mkdir(container.directory)
        rootfs.create(container.directory, [layer], "overlay")
        commit.in_container_root(container, make_changes)

        print("1. what overlayfs wrote into upper/:")
        show_upper(os.path.join(container.directory, "upper"))
        print("2. read as diff lines:")
        for kind, path in commit.diff(container):
            print(f"   {kind} {path}")
        store = image.Store(os.path.join(workspace, "engine"))
        store.ensure()
        digest, size = commit.write_layer(store, container)
        print("3. the layer commit writes:")
        with tarfile.open(store.blob_path(digest)) as archive:
            for member in archive.getmembers():
                print(f"   {member.name}{'/' if member.isdir() else ''}")
        print(f"   named {digest[:19]}..., {size} bytes")
        again, _ = commit.write_layer(store, container)
        print(f"4. the same changes again give the same layer: {'yes' if again == digest else 'no'}")
    finally:
        shutil.rmtree(workspace)


def make_image_layer(directory):
    """An unpacked one-layer image: /etc/motd, /etc/group, /www/index.html."""
    for name, text in (("etc/motd", "hello\n"), ("etc/group", "root:x:0:\n"),
                       ("www/index.html", "old page\n"), ("www/logo.txt", "(logo)\n")):
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    return directory


def make_changes(merged):
    """What a container might do: runs in the child, on the mounted root."""
    with open(os.path.join(merged, "added.txt"), "w") as handle:
        handle.write("new\n")
    with open(os.path.join(merged, "etc/motd"), "a") as handle:
        handle.write("changed\n")
    os.unlink(os.path.join(merged, "etc/group"))
    shutil.rmtree(os.path.join(merged, "www"))
    os.mkdir(os.path.join(merged, "www"))
    with open(os.path.join(merged, "www/index.html"), "w") as handle:
        handle.write("new page\n")


def show_upper(upper):
    for current, directories, files in os.walk(upper):
        directories.sort()
        for name in sorted(directories + files):
            path = os.path.join(current, name)
            relative = os.path.relpath(path, upper)
            info = os.lstat(path)
            if rootfs.is_whiteout(info):
                what = "whiteout: a character device 0/0"
            elif stat.S_ISDIR(info.st_mode):
                what = "directory, opaque" if rootfs.is_opaque(path) else "directory"
            else:
                what = f"file, {info.st_size} bytes"
            print(f"   {relative:<16} {what}")


if __name__ == "__main__":
    main()

"""Hostile images, layers, configs and registries for the hardening tests.

Everything is made at test time from the host's static busybox and
Python's ``tarfile``: no binary and no archive is committed.  Images are
served by the tests' fake registry (tests/helpers/registry.py) on 127.0.0.1,
so they reach the engine by the same road as any pulled image.
"""

import hashlib
import json
import os
import tarfile
import threading
import time

from helpers.registry import FakeRegistry, layer_tar, sha256, tar_entry

# -- sentinels: files outside the engine root that must never change ---------


def make_sentinels(directory):
    """Write a few files an escape would aim at; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name in ("passwd", "secret", "target"):
        path = os.path.join(directory, name)
        with open(path, "w") as handle:
            handle.write(f"sentinel {name}: the host's own file\n")
        paths.append(path)
    return paths


def checksums(paths):
    """SHA-256 of each path (None when missing), and the listing of their directories."""
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                found[path] = hashlib.sha256(handle.read()).hexdigest()
        except FileNotFoundError:
            found[path] = None
    for directory in sorted({os.path.dirname(path) for path in paths}):
        found[directory] = sorted(os.listdir(directory))
    return found


def host_tool_checksums():
    """Checksums of the host binaries an exec runs, which an escape would overwrite."""
    import shutil
    import sys
    tools = [shutil.which(name) for name in ("setpriv", "nsenter", "mount")]
    return checksums([os.path.realpath(path) for path in [*tools, sys.executable] if path])


# -- hostile layers --------------------------------------------------------------


def whiteout_naming_dot_dot():
    """A whiteout whose target is ``..``: deleting it would climb out of the layer."""
    return layer_tar([tar_entry("dir/.wh..."), tar_entry("dir/file", data=b"x"),
                      tar_entry(".wh..."), tar_entry("a/b/.wh..", data=b"")])


def duplicate_entries():
    """The same path three times, as a file, a directory and a symlink to the host."""
    return layer_tar([
        tar_entry("twice", data=b"first"),
        tar_entry("twice", data=b"second"),
        tar_entry("same", tarfile.DIRTYPE, 0o755),
        tar_entry("same", tarfile.SYMTYPE, 0o777, linkname="/etc"),
        tar_entry("same/passwd", data=b"written through the link"),
    ])


def long_names():
    """A 4096-byte path made of 255-byte components, and one component too long."""
    component = "n" * 255
    deep = "/".join([component] * 16)[:4095]
    return layer_tar([tar_entry(deep, data=b"deep"), tar_entry("x" * 4096, data=b"wide")])


def device_nodes(directory="dev"):
    """Device nodes for the host's disks and memory (a layer may hold them)."""
    entries = []
    for name, kind, major, minor in (("sda", tarfile.BLKTYPE, 8, 0),
                                     ("mem", tarfile.CHRTYPE, 1, 1),
                                     ("kmsg", tarfile.CHRTYPE, 1, 11),
                                     ("loop0", tarfile.BLKTYPE, 7, 0)):
        info, data = tar_entry(f"{directory}/{name}", kind, 0o666)
        info.devmajor, info.devminor = major, minor
        entries.append((info, data))
    return layer_tar(entries)


def big_file(size):
    """A layer with one file of ``size`` bytes (random, so gzip cannot shrink it)."""
    return layer_tar([tar_entry("big", data=os.urandom(size))])


# -- hostile configs ---------------------------------------------------------------


def serve_with_config(fake, repository, layers, config_changes):
    """Serve an image of ``layers`` whose image config carries ``config_changes``."""
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": ["/bin/sh"], **config_changes},
              "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]}}
    return fake.serve_image(repository, "latest", layers, config=config)


def symlink_layer(name, target):
    return layer_tar([tar_entry(name, tarfile.SYMTYPE, 0o777, linkname=target)])


# -- registries that misbehave -------------------------------------------------------


class SlowRegistry(FakeRegistry):
    """The fake registry, but blobs trickle out at ``rate`` bytes per second.

    A pull then lasts long enough to be killed at a chosen moment.
    """

    def __init__(self, rate=400_000):
        self.rate = rate
        self.stopping = threading.Event()
        super().__init__()

    def _answer(self, handler, head=False):
        path = handler.path.split("?")[0]
        if "/blobs/" not in path or head or path not in self.routes:
            return super()._answer(handler, head)
        self.requests.append((handler.command, handler.path))
        status, headers, body = self.routes[path][-1]
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        chunk = max(1, self.rate // 20)
        try:
            for start in range(0, len(body), chunk):
                if self.stopping.is_set():
                    return
                handler.wfile.write(body[start:start + chunk])
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def stop(self):
        self.stopping.set()
        super().stop()


# -- the store's invariants --------------------------------------------------------------


def store_problems(root):
    """Say what is wrong with an engine root's image store, as a list of lines.

    A blob must hash to its name; no temporary may be left; every image in
    the index must have its manifest, config and layers, and the unpacked
    layer directories its config names.
    """
    problems = []
    blobs = os.path.join(root, "images", "blobs", "sha256")
    for name in os.listdir(blobs) if os.path.isdir(blobs) else []:
        path = os.path.join(blobs, name)
        if name.startswith("."):
            problems.append(f"temporary left: {name}")
            continue
        with open(path, "rb") as handle:
            if hashlib.sha256(handle.read()).hexdigest() != name:
                problems.append(f"blob {name[:12]} does not hash to its name")
    layers = os.path.join(root, "layers")
    for name in os.listdir(layers) if os.path.isdir(layers) else []:
        if name.startswith(".unpack-"):
            problems.append(f"unpacking left: {name}")
    index_path = os.path.join(root, "images", "index.json")
    if not os.path.exists(index_path):
        return problems
    with open(index_path) as handle:
        index = json.load(handle)
    for entry in index["manifests"]:
        manifest_path = os.path.join(blobs, entry["digest"].split(":")[1])
        if not os.path.exists(manifest_path):
            problems.append(f"image {entry['digest'][:19]} has no manifest")
            continue
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        for descriptor in [manifest["config"], *manifest["layers"]]:
            if not os.path.exists(os.path.join(blobs, descriptor["digest"].split(":")[1])):
                problems.append(f"image {entry['digest'][:19]} misses blob "
                                f"{descriptor['digest'][:19]}")
        config_path = os.path.join(blobs, manifest["config"]["digest"].split(":")[1])
        if os.path.exists(config_path):
            with open(config_path) as handle:
                for diff_id in json.load(handle)["rootfs"]["diff_ids"]:
                    if not os.path.isdir(os.path.join(layers, diff_id.split(":")[1])):
                        problems.append(f"image {entry['digest'][:19]} misses layer "
                                        f"{diff_id[:19]}")
    return problems


def free_loopback_port():
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

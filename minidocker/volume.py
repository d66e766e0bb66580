"""Chapter 6: volumes, the data that outlives its container.

A container's own writable layer goes away with the container.  Data that
must stay (a database's files, an upload directory) lives in a *volume*:
a directory the engine keeps under ``ENGINE_ROOT/volumes/NAME/_data`` (the
same layout as Docker's ``local`` driver) and bind-mounts into each
container that names it with ``-v NAME:/path``.

* A **named** volume is made on first use, or by ``volume create``, and is
  removed only by ``volume rm`` or ``volume prune -a``.
* An **anonymous** volume gets a random name.  ``-v /path`` asks for one,
  and so does each ``VOLUME`` path of an image.  ``rm -v`` and ``--rm``
  remove it with its container.
* A new, empty volume is first filled with what the image has at the
  mount point, so ``-v conf:/etc`` starts with the image's ``/etc``
  instead of hiding it.  Docker does the same copy.

A volume that a container (running or not) refers to cannot be removed.
Which containers refer to which volume is the container records'
business, so that check is made by the caller.
"""

import os

from minidocker import host, rootfs


def volumes_directory():
    return os.path.join(host.engine_root(), "volumes")


class Volume:
    """One volume: its name, its data directory and what ``inspect`` shows."""

    def __init__(self, directory):
        self.directory = directory
        self.details = host.read_json(os.path.join(directory, "volume.json"))

    @property
    def name(self):
        return self.details["Name"]

    @property
    def data(self):
        """The directory containers see at the mount point."""
        return os.path.join(self.directory, "_data")

    @property
    def anonymous(self):
        return "com.docker.volume.anonymous" in self.details.get("Labels", {})

    def inspect(self):
        """Docker's ``volume inspect`` keys."""
        return dict(self.details, Mountpoint=self.data)


def create(name=None, anonymous=False, labels=None):
    """Return the volume ``name``, making it if it does not exist yet.

    Without a name, a new volume with a random 64-digit name is made.
    """
    if name and not host.valid_name(name):
        raise host.EngineError(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed')
    name = name or os.urandom(32).hex()
    directory = os.path.join(volumes_directory(), name)
    os.makedirs(volumes_directory(), exist_ok=True)
    with host.locked(os.path.join(volumes_directory(), ".lock")):
        if os.path.exists(os.path.join(directory, "volume.json")):
            return Volume(directory)
        labels = dict(labels or {})
        if anonymous:
            labels["com.docker.volume.anonymous"] = ""
        os.makedirs(os.path.join(directory, "_data"), mode=0o755, exist_ok=True)
        from minidocker import logs

        details = {"CreatedAt": logs.timestamp()[:19] + "Z", "Driver": "local",
                   "Labels": labels, "Name": name, "Options": {}, "Scope": "local"}
        host.narrate(6, f"create volume {name[:12]} at {directory}/_data")
        host.write_atomically(os.path.join(directory, "volume.json"), host.dump_json(details))
    return Volume(directory)


def find(name):
    """Return the volume ``name``, or None if there is none."""
    if not host.valid_name(name):  # never a path: "../containers" names no volume
        return None
    directory = os.path.join(volumes_directory(), name)
    try:
        return Volume(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None


def get(name):
    """Return the volume ``name``, or fail the way Docker does."""
    found = find(name)
    if found is None:
        raise host.EngineError(f"get {name}: no such volume", exit_code=1)
    return found


def all_volumes():
    """Every volume, by name."""
    directory = volumes_directory()
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return [volume for volume in map(find, names) if volume is not None]


def remove(volume):
    """Delete a volume and its data (the caller checked that nobody uses it)."""
    host.narrate(6, f"remove volume {volume.name[:12]}")
    rootfs.remove_path(volume.directory)


def fill_from_image(volume, layers, destination):
    """Copy the image's content at ``destination`` into an empty volume.

    ``layers`` are the image's unpacked layers, lowest first; each one's
    copy of the directory is laid over the last, honouring whiteouts, the
    way the container's root is assembled.  A volume that holds anything
    is left alone: it already has its data.
    """
    if os.listdir(volume.data):
        return
    top = None
    for layer in layers:
        # DESIGN.md fact 7: a path inside an image is hostile.  An image's
        # ``/data -> /etc`` must lead to the layer's etc, never the host's.
        try:
            source = rootfs.resolve(layer, destination)
        except host.EngineError:  # a file on the way: this layer has nothing there
            continue
        if not os.path.lexists(source):
            continue
        info = os.lstat(source)
        if rootfs.is_whiteout(info) or (os.path.isdir(source) and rootfs.is_opaque(source)):
            for entry in os.listdir(volume.data):
                rootfs.remove_path(os.path.join(volume.data, entry))
            top = None
        if os.path.isdir(source) and not os.path.islink(source):
            rootfs.apply_layer_by_copying(source, volume.data)
            top = source
    if top is not None:
        host.narrate(6, f"fill volume {volume.name[:12]} from the image's {destination}")
        rootfs.copy_metadata(top, volume.data)

"""Chapter 7: diff, commit and build, or how a container becomes an image.

Chapter 3 gave every container a writable *upper* directory on top of the
image's read-only layers.  overlayfs writes every change there and nowhere
else, so the upper directory *is* the container's diff:

* a new or changed file is a plain file in upper (changed files were copied
  up whole on their first write);
* a deleted file is a *whiteout*, a character device 0/0 with the old name;
* a directory that was removed and made again is *opaque*: it carries the
  ``trusted.overlay.opaque`` attribute, and hides everything the lower
  layers had in it.

An image layer says the same things in a tar archive, in the OCI image
spec's words: a deleted file is an empty file named ``.wh.NAME``, an opaque
directory holds an empty ``.wh..wh..opq``.  So committing a container is
walking its upper directory once and translating, entry by entry, into a
tar stream that goes straight into the image store while it is hashed.  The
hash of the tar is the layer's *diff id*; the new image is the parent's
layers plus this one, and the parent's config plus the changes.

The ``vfs`` storage driver has no upper directory (each container has a full
copy of its image), so for it the diff is found the slow way, by comparing
the copy with the layers it was made from, as Docker's "naive" diff does.

A Dockerfile is then a loop: for each instruction, start a container from
the last image, let it change its files (``RUN``), or copy files into it
(``COPY``, ``ADD``), and commit it; instructions that only change the
config (``ENV``, ``CMD``, ...) make a new config without a new layer.  Each
step's result is remembered under a *cache key*: the parent image's id plus
the instruction plus, for ``COPY`` and ``ADD``, the digest of the files'
content.  The content matters because the instruction's text does not
change when the files it copies do; keying on what goes *into* a step is
what lets an unchanged rebuild reuse every step and a changed file redo
exactly the steps after it.

This module imports chapters 1 to 4.  Building needs to create, start and
remove containers, which ``minidocker.container`` does on top of all the
chapters; the builder is given that module as a parameter instead of
importing it.
"""

import bz2
import contextlib
import copy
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile

from minidocker import cgroup, host, image, namespace, rootfs

#: The annotation that marks a build step's image in the store's index.
CACHE_KEY = "org.minidocker.build.cache-key"

#: overlayfs keeps its own bookkeeping in these attributes; they describe
#: the upper directory, not the container's files, so no layer carries them.
OVERLAY_ATTRIBUTES = "trusted.overlay."

#: Copy file data in pieces of this size while hashing it.
CHUNK = 1 << 20


# -- 1. the diff: what a container changed -------------------------------

def diff(container):
    """Return the container's changes as sorted ``(kind, path)`` pairs.

    ``kind`` is Docker's letter: ``A`` added, ``C`` changed, ``D`` deleted.
    The engine's own mount points (volume targets) are left out; the
    files the engine binds over (``/etc/hostname``, ...) never reach the
    upper directory, because the init layer already has them.
    """
    base = base_layers(container)
    if container.config["Driver"] == "overlay":
        changes = upper_changes(os.path.join(container.directory, "upper"), base)
    else:
        changes = copy_changes(os.path.join(container.directory, "rootfs"), base)
    excluded = mount_points(container)
    return with_parents(change for change in changes if not is_below(change[1], excluded))


def upper_changes(upper, base, directory="", replaced=False):
    """Read an overlay upper directory as changes, one entry at a time.

    ``replaced`` says that an opaque directory above hides the lower
    layers here, so whatever they had and upper lacks is deleted.
    """
    for name in sorted(os.listdir(os.path.join(upper, directory))):
        relative = os.path.join(directory, name)
        path = os.path.join(upper, relative)
        info = os.lstat(path)
        if rootfs.is_whiteout(info):
            yield "D", "/" + relative
            continue
        existed = find_in_layers(base, relative) is not None
        yield ("C" if existed else "A"), "/" + relative
        if stat.S_ISDIR(info.st_mode):
            refuse_redirected_directory(path)
            hides_lower = replaced or rootfs.is_opaque(path)
            if hides_lower and existed:
                for gone in sorted(list_in_layers(base, relative) - set(os.listdir(path))):
                    yield "D", "/" + os.path.join(relative, gone)
            yield from upper_changes(upper, base, relative, hides_lower)


def copy_changes(copy, base, directory=""):
    """Compare a vfs copy with the layers it was made from.

    Files are compared by type, mode, owner, size, modification time, link
    target and extended attributes, not by content, exactly as Docker's
    naive diff does: a change that keeps all of these is not seen.
    Directories are compared without their times, which the copy itself
    changed when it filled them.
    """
    now = set(os.listdir(os.path.join(copy, directory)))
    before = list_in_layers(base, directory)
    for name in sorted(now | before):
        relative = os.path.join(directory, name)
        if name not in now:
            yield "D", "/" + relative
            continue
        path = os.path.join(copy, relative)
        original = find_in_layers(base, relative) if name in before else None
        if original is None:
            yield "A", "/" + relative
            yield from everything_below(copy, relative)
        elif differs(path, original):
            yield "C", "/" + relative
        if original and is_directory(path):
            if is_directory(original):
                yield from copy_changes(copy, base, relative)
            else:
                yield from everything_below(copy, relative)


def everything_below(root, directory):
    """Yield an ``A`` for every entry below a new directory."""
    if not is_directory(os.path.join(root, directory)):
        return
    for name in sorted(os.listdir(os.path.join(root, directory))):
        relative = os.path.join(directory, name)
        yield "A", "/" + relative
        yield from everything_below(root, relative)


def with_parents(changes):
    """Sort changes and add a ``C`` for each directory that holds one.

    Docker lists ``C /etc`` above ``A /etc/new``: a directory whose
    entries changed has changed.  The overlay walk finds these parents
    itself (they were copied up); the vfs comparison needs this step.
    """
    changes = dict((path, kind) for kind, path in changes)
    for path in list(changes):
        parent = os.path.dirname(path)
        while parent != "/" and parent not in changes:
            changes[parent] = "C"
            parent = os.path.dirname(parent)
    return [(changes[path], path) for path in sorted(changes)]


def differs(path, original):
    """Say whether a vfs copy's entry differs from the layer entry it was copied from."""
    new, old = os.lstat(path), os.lstat(original)
    if (new.st_mode, new.st_uid, new.st_gid) != (old.st_mode, old.st_uid, old.st_gid):
        return True
    if extended_attributes(path) != extended_attributes(original):
        return True
    if stat.S_ISDIR(new.st_mode):
        return False
    if stat.S_ISLNK(new.st_mode) and os.readlink(path) != os.readlink(original):
        return True
    return (new.st_size, new.st_mtime_ns, new.st_rdev) != (old.st_size, old.st_mtime_ns, old.st_rdev)


def base_layers(container):
    """The directories a container's root started from, top first.

    The init layer counts as part of the base: its empty files and
    directories are the engine's, not the container's.
    """
    return [rootfs.init_layer(), *reversed(container.config["LayerDirectories"])]


def mount_points(container):
    """The container's volume targets, which diff and commit leave out."""
    return [os.path.normpath(mount["Destination"]) for mount in container.config.get("Mounts", [])]


def is_below(path, directories):
    return any(path == directory or path.startswith(directory.rstrip("/") + "/")
               for directory in directories)


def refuse_redirected_directory(path):
    """Refuse an upper directory that only points at a lower one.

    With overlay's ``redirect_dir`` or ``metacopy`` features a renamed
    directory or a chmod-ed file is recorded as an attribute naming the
    lower entry, not as a copy, and tarring upper would lose the content.
    They are off by default (``/sys/module/overlay/parameters``).
    """
    for name in ("trusted.overlay.redirect", "trusted.overlay.metacopy"):
        if name in os.listxattr(path, follow_symlinks=False):
            raise host.EngineError(f"{path} carries {name}: overlay's redirect_dir/metacopy "
                                   "features are on, and such a container cannot be committed")


# -- looking a path up through stacked layers ------------------------------

def find_in_layers(layers, relative):
    """Return the host path that shows ``relative`` through ``layers``, or None.

    ``layers`` are unpacked layer directories, top first.  The topmost
    layer that has the path wins; a whiteout there means it was deleted.
    A whiteout, a file or an opaque directory *on the way* in a layer
    hides the path in every layer below it.
    """
    for layer in layers:
        path, hides_lower = lookup_in_layer(layer, relative)
        if path is not None:
            return None if rootfs.is_whiteout(os.lstat(path)) else path
        if hides_lower:
            return None
    return None


def list_in_layers(layers, relative):
    """Return the names the stacked layers show in the directory ``relative``."""
    names, seen = set(), set()
    for layer in layers:
        path, hides_lower = lookup_in_layer(layer, relative) if relative else (layer, False)
        if path is not None and is_directory(path):
            for name in os.listdir(path):
                if name not in seen:
                    seen.add(name)
                    if not rootfs.is_whiteout(os.lstat(os.path.join(path, name))):
                        names.add(name)
        if hides_lower:
            break
    return names


def lookup_in_layer(layer, relative):
    """Look ``relative`` up in one layer: return ``(path or None, hides_lower)``.

    ``hides_lower`` is true when nothing below this layer can show the
    path: the entry is here and is not a directory, or it or a directory
    on the way is opaque, or a whiteout or a file stands on the way.
    """
    current, hidden = layer, False
    parts = relative.split("/")
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return None, hidden
        if not stat.S_ISDIR(info.st_mode):
            return (current, True) if index == len(parts) - 1 else (None, True)
        hidden = hidden or rootfs.is_opaque(current)
    return current, hidden


def is_directory(path):
    return os.path.isdir(path) and not os.path.islink(path)


def extended_attributes(path):
    """Return a file's extended attributes, without overlay's own."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False)
            for name in sorted(names) if not name.startswith(OVERLAY_ATTRIBUTES)}


# -- 2. the layer: the diff as a tar stream --------------------------------

def write_layer(store, container, mtime_limit=None):
    """Write the container's changes into the store as a layer blob.

    Returns ``(digest, size)``.  The layer is an uncompressed tar, so its
    digest is also its diff id.  With ``mtime_limit`` (SOURCE_DATE_EPOCH)
    no entry is newer than that time.
    """
    excluded = mount_points(container)
    if container.config["Driver"] == "overlay":
        members = upper_members(os.path.join(container.directory, "upper"), excluded)
    else:
        members = copy_members(os.path.join(container.directory, "rootfs"), diff(container))
    host.narrate(7, f"tar the changes of {container.id[:12]} into a layer, hashing as it goes")
    return store_layer(store, members, mtime_limit)


def upper_members(upper, excluded, directory=""):
    """Yield the layer's entries for an overlay upper directory.

    Each member is ``(name in the tar, host path)``; a host path of None
    is an empty marker file: a whiteout ``.wh.NAME`` for a deleted entry,
    ``.wh..wh..opq`` right after an opaque directory.
    """
    for name in sorted(os.listdir(os.path.join(upper, directory))):
        relative = os.path.join(directory, name)
        if is_below("/" + relative, excluded):
            continue
        path = os.path.join(upper, relative)
        info = os.lstat(path)
        if rootfs.is_whiteout(info):
            yield os.path.join(directory, image.WHITEOUT_PREFIX + name), None
            continue
        yield relative, path
        if stat.S_ISDIR(info.st_mode):
            refuse_redirected_directory(path)
            if rootfs.is_opaque(path):
                # The OCI spec asks for the opaque marker before the
                # directory's other entries.
                yield os.path.join(relative, image.OPAQUE_MARKER), None
            yield from upper_members(upper, excluded, relative)


def copy_members(copy, changes):
    """Yield the layer's entries for a vfs copy, from its compared changes."""
    for kind, path in changes:
        relative = path.lstrip("/")
        if kind == "D":
            directory, name = os.path.split(relative)
            yield os.path.join(directory, image.WHITEOUT_PREFIX + name), None
        else:
            yield relative, os.path.join(copy, relative)


def store_layer(store, members, mtime_limit=None):
    """Stream ``members`` as a tar into a new blob; return ``(digest, size)``.

    The tar goes straight into a temporary file in the store while its
    SHA-256 is computed, so the bytes are read once and written once, and
    the file is renamed to its digest at the end.  Entries come in a fixed
    order with numeric owners only and whole-second times, so the same
    changes always make the same layer.
    """
    temporary = store.temporary_file()
    try:
        with open(temporary, "wb") as blob:
            output = HashingWriter(blob)
            with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT) as archive:
                archive.copybufsize = CHUNK
                first_names = {}
                for name, path in members:
                    add_member(archive, name, path, first_names, mtime_limit)
        digest = "sha256:" + output.hexdigest()
        store.install_blob_file(temporary, digest)
        host.narrate(7, f"layer {digest[:19]}: {output.size} bytes")
        return digest, output.size
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def add_member(archive, name, path, first_names, mtime_limit):
    """Add one entry: a marker (``path`` None) or the file at ``path``.

    A file with more hard links than one is stored once; its later names
    become hard-link entries pointing at the first, as tar(1) does.
    """
    info = tarfile.TarInfo(name)
    if path is None:
        info.mode = 0o644
        archive.addfile(info)
        return
    status = os.lstat(path)
    info.mode = stat.S_IMODE(status.st_mode)
    info.uid, info.gid = status.st_uid, status.st_gid
    info.mtime = int(status.st_mtime) if mtime_limit is None else min(int(status.st_mtime), mtime_limit)
    kind = stat.S_IFMT(status.st_mode)
    if kind == stat.S_IFREG and status.st_nlink > 1:
        key = (status.st_dev, status.st_ino)
        if key in first_names:
            info.type, info.linkname = tarfile.LNKTYPE, first_names[key]
        else:
            first_names[key] = name
    if kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind == stat.S_IFLNK:
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(status.st_rdev), os.minor(status.st_rdev)
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    elif kind == stat.S_IFSOCK:
        host.narrate(7, f"leave out the socket {name}: a tar archive cannot hold one")
        return
    for attribute, value in extended_attributes(path).items():
        # tarfile writes a PAX value that is not UTF-8 back as its raw bytes.
        info.pax_headers["SCHILY.xattr." + attribute] = value.decode("utf-8", "surrogateescape")
    if info.type == tarfile.REGTYPE:
        info.size = status.st_size
        with open(path, "rb") as data:
            try:
                archive.addfile(info, data)
            except OSError as error:
                raise host.EngineError(f"{name} changed while it was read: {error}") from error
    else:
        archive.addfile(info)


class HashingWriter:
    """A file wrapper that hashes and counts everything written through it."""

    def __init__(self, target):
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    def tell(self):
        return self.size

    def hexdigest(self):
        return self.hash.hexdigest()


# -- 3. commit: a layer and a config make an image -------------------------

def commit(store, container, reference=None, *, message="", author="", changes=(),
           pause=True):
    """Make a new image of a container's changes; return the :class:`Image`.

    The new image's config is the parent image's, updated with what the
    container was run with (its environment, user, working directory and
    command, as Docker does) and then with ``changes`` (Dockerfile lines
    such as ``CMD ["sh"]``).  A running container is frozen while its
    files are read, so the layer is one moment's state, not a smear.
    """
    parent = store.image(container.config["ImageManifest"])
    run_config = container_run_config(container.config, parent.run_config)
    for change in changes:
        apply_change(run_config, change)
    epoch = source_date_epoch(os.environ)
    with paused(container, pause):
        layer = write_layer(store, container, mtime_limit=epoch)
    command = " ".join([container.config["Path"], *container.config["Args"]])
    return new_image(store, parent, layer, run_config, command, comment=message,
                     author=author, epoch=epoch, reference=reference)


def new_image(store, parent, layer, run_config, created_by, *, comment="", author="",
              epoch=None, reference=None):
    """Store the image ``parent`` plus ``layer`` (or no new layer) with ``run_config``.

    ``layer`` is ``(digest, size)`` of an uncompressed layer blob, or None
    for a step that changes only the config; the history says which.
    """
    layers = [(entry["digest"], entry["size"], entry["mediaType"])
              for entry in parent.manifest["layers"]] if parent else []
    diff_ids = list(parent.diff_ids) if parent else []
    if layer:
        layers.append((layer[0], layer[1], image.MEDIA_LAYER))
        diff_ids.append(layer[0])
    config = image.new_config(diff_ids, run_config, created_by, parent.config if parent else None)
    entry = config["history"][-1]
    if comment:
        entry["comment"] = comment
    if author:
        entry["author"] = config["author"] = author
    if not layer:
        entry["empty_layer"] = True
    if epoch is not None:
        config["created"] = entry["created"] = format_epoch(epoch)
    if layer:
        store.sync_directories()  # the layer's name is on the disk before a tag names it
    return store.add_image(layers, config, reference)


def container_run_config(recorded, parent_config):
    """The parent image's run config, updated with how the container ran.

    The container's record keeps its full command line, not the split
    into entrypoint and command: if it starts with the image's entrypoint,
    the rest is the command; otherwise the entrypoint was overridden.
    """
    config = copy.deepcopy(parent_config)
    settings = recorded["Config"]
    config["Env"] = list(settings.get("Env") or [])
    if settings.get("User", "") != parent_config.get("User", ""):
        config["User"] = settings["User"]
    if settings.get("WorkingDir", "/") != (parent_config.get("WorkingDir") or "/"):
        config["WorkingDir"] = settings["WorkingDir"]
    argv = [recorded["Path"], *recorded["Args"]]
    entrypoint = list(parent_config.get("Entrypoint") or [])
    if argv[:len(entrypoint)] == entrypoint:
        if argv[len(entrypoint):] != list(parent_config.get("Cmd") or []):
            config["Cmd"] = argv[len(entrypoint):]
    else:
        config["Entrypoint"], config["Cmd"] = argv[:1], argv[1:]
    return config


@contextlib.contextmanager
def paused(container, pause):
    """Freeze a running container's cgroup for a ``with`` block (``commit --pause``).

    cgroup v1's freezer (or v2's ``cgroup.freeze``) stops every process of
    the group where it stands, so none can write while upper is read.
    """
    if not pause or not container.is_running() or container.state.get("Paused"):
        yield
        return
    group = cgroup.Cgroup(f"minidocker/{container.id}")
    if not group.exists() or not group.driver.can_freeze(group.name):
        host.narrate(7, "no freezer for this container: committing while it runs")
        yield
        return
    host.narrate(7, f"freeze {group.name} while its files are read")
    group.freeze()
    try:
        yield
    finally:
        group.thaw()


def source_date_epoch(variables):
    """Read SOURCE_DATE_EPOCH (reproducible-builds.org): a time no file may pass."""
    value = variables.get("SOURCE_DATE_EPOCH")
    if value in (None, ""):
        return None
    if not host.is_decimal(value) or int(value) > LAST_EPOCH:
        raise host.EngineError(f"SOURCE_DATE_EPOCH must be a number of seconds up to "
                               f"{LAST_EPOCH} (the end of year 9999), not {value[:30]!r}")
    return int(value)


#: 9999-12-31T23:59:59Z: an image's "created" has four digits for its year
#: (RFC 3339), and Python's datetime goes no further.
LAST_EPOCH = 253402300799


def format_epoch(epoch):
    import datetime

    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- 4. Dockerfile instructions ----------------------------------------------

#: Instructions that only change the image's config, and ``commit -c`` accepts.
CONFIG_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME",
                       "WORKDIR", "STOPSIGNAL")
BUILD_INSTRUCTIONS = ("FROM", "RUN", "COPY", "ADD", "ARG", "SHELL", "MAINTAINER")
UNSUPPORTED = ("HEALTHCHECK", "ONBUILD")
DEFAULT_SHELL = ["/bin/sh", "-c"]


class Instruction:
    """One Dockerfile instruction: ``keyword``, its ``flags``, its ``arguments``."""

    def __init__(self, keyword, flags, arguments, line, text):
        self.keyword, self.flags, self.arguments = keyword, flags, arguments
        self.line, self.text = line, text

    def __repr__(self):
        return f"Instruction({self.text!r})"


def parse_dockerfile(text):
    """Split a Dockerfile into instructions.

    A line ending in a backslash goes on on the next line; lines starting
    with ``#`` are comments, even inside such a continuation.  ``--name=value``
    words straight after the keyword are the instruction's flags.
    """
    instructions, pending, first_line = [], "", None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if first_line is None:
            first_line = number
        if stripped.endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        instructions.append(parse_instruction(pending + line, first_line))
        pending, first_line = "", None
    if pending.strip():
        instructions.append(parse_instruction(pending, first_line))
    return instructions


def parse_instruction(line, number):
    """Parse one logical line into an :class:`Instruction`."""
    text = " ".join(line.split())
    word, _, rest = line.strip().partition(" ")
    keyword = word.upper()
    if keyword not in CONFIG_INSTRUCTIONS + BUILD_INSTRUCTIONS + UNSUPPORTED:
        raise host.EngineError(f"dockerfile parse error on line {number}: "
                               f"unknown instruction: {word}", exit_code=1)
    if keyword in UNSUPPORTED:
        raise host.EngineError(f"dockerfile line {number}: {keyword} is not supported by minidocker",
                               exit_code=1)
    flags = {}
    rest = rest.strip()
    while rest.startswith("--") and keyword in ("FROM", "RUN", "COPY", "ADD"):
        flag, _, rest = rest.partition(" ")
        name, has_value, value = flag[2:].partition("=")
        if (keyword, name) not in (("COPY", "chown"), ("ADD", "chown"), ("FROM", "platform")) \
                or not has_value:
            raise host.EngineError(f"dockerfile line {number}: {keyword} does not take "
                                   f"the flag {flag!r} here", exit_code=1)
        flags[name] = value
        rest = rest.strip()
    if not rest:
        raise host.EngineError(f"dockerfile line {number}: {keyword} needs arguments", exit_code=1)
    return Instruction(keyword, flags, rest, number, text)


def exec_form(arguments):
    """Return the JSON list of an exec-form argument, or None for the shell form."""
    if not arguments.strip().startswith("["):
        return None
    try:
        value = host.load_json(arguments)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def apply_change(config, line):
    """Apply one ``commit -c`` line, such as ``ENV A=b``, to a run config."""
    keyword = (line.split() or [""])[0].upper()
    if keyword not in CONFIG_INSTRUCTIONS:
        raise host.EngineError(f"{keyword or line!r} is not a valid change command: use one of "
                               + ", ".join(CONFIG_INSTRUCTIONS))
    instruction = parse_instruction(line, 1)
    apply_instruction(config, instruction, environment_of(config), DEFAULT_SHELL)


def apply_instruction(config, instruction, variables, shell):
    """Change a run config (Docker's ``Cmd``, ``Env``, ...) as one instruction says."""
    keyword, arguments = instruction.keyword, instruction.arguments
    if keyword in ("CMD", "ENTRYPOINT"):
        value = exec_form(arguments)
        config[keyword.title()] = value if value is not None else [*shell, arguments]
    elif keyword in ("ENV", "LABEL"):
        pairs = key_value_pairs(arguments, variables, keyword)
        if keyword == "ENV":
            environment = environment_of(config)
            environment.update(pairs)
            config["Env"] = [f"{name}={value}" for name, value in environment.items()]
        else:
            config["Labels"] = {**(config.get("Labels") or {}), **pairs}
    elif keyword == "WORKDIR":
        path = expand(arguments, variables)
        config["WorkingDir"] = os.path.normpath(
            os.path.join(config.get("WorkingDir") or "/", path))
    elif keyword == "USER":
        config["User"] = expand(arguments, variables)
    elif keyword == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for word in split_words(arguments, variables):
            number, _, protocol = word.partition("/")
            if not host.is_decimal(number) or not 0 < int(number) < 65536 or \
                    protocol not in ("", "tcp", "udp", "sctp"):
                raise host.EngineError(f"invalid port to EXPOSE: {word}", exit_code=1)
            ports[f"{int(number)}/{protocol or 'tcp'}"] = {}
        config["ExposedPorts"] = ports
    elif keyword == "VOLUME":
        paths = exec_form(arguments) or split_words(arguments, variables)
        config["Volumes"] = {**(config.get("Volumes") or {}), **{path: {} for path in paths}}
    elif keyword == "STOPSIGNAL":
        config["StopSignal"] = expand(arguments, variables)


def environment_of(config):
    """A config's ``Env`` list as an ordered dictionary."""
    return dict(entry.partition("=")[::2] for entry in config.get("Env") or [])


def key_value_pairs(arguments, variables, keyword):
    """Parse ``ENV``/``LABEL`` arguments: ``K=V K2="v 2"`` or the old ``K value``."""
    words = split_words(arguments, variables)
    if words and "=" not in words[0]:
        name, _, value = arguments.strip().partition(" ")
        if keyword == "LABEL" or not value.strip():
            raise host.EngineError(f"{keyword} needs NAME=VALUE pairs", exit_code=1)
        return {name: expand(value.strip(), variables)}
    pairs = {}
    for word in words:
        name, has_value, value = word.partition("=")
        if not has_value or not name:
            raise host.EngineError(f"{keyword}: {word!r} is not NAME=VALUE", exit_code=1)
        pairs[name] = value
    return pairs


# -- variables and words, as Docker's shell-like lexer reads them ------------

def expand(text, variables):
    """Expand ``$NAME`` and ``${NAME}`` in ``text`` and remove quotes, as one word."""
    return "".join(split_words(text, variables, split=False))


def split_words(text, variables, split=True):
    """Split ``text`` into words, expanding variables and removing quotes.

    The rules are a small shell's: single quotes keep everything, double
    quotes keep spaces but expand ``$``, a backslash escapes the next
    character.  ``${NAME:-default}`` and ``${NAME:+other}`` work as in sh.
    """
    words, word, quote, started, index = [], [], None, False, 0
    while index < len(text):
        character = text[index]
        if quote == "'":
            if character == "'":
                quote = None
            else:
                word.append(character)
        elif character == "\\" and index + 1 < len(text) and \
                (quote is None or text[index + 1] in '"\\$'):
            word.append(text[index + 1])
            index += 1
        elif character == "$":
            value, index = expand_variable(text, index, variables)
            word.append(value)
            started = True
            continue
        elif quote == '"':
            if character == '"':
                quote = None
            else:
                word.append(character)
        elif character in "'\"":
            quote, started = character, True
        elif character.isspace() and split:
            if word or started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(character)
        index += 1
    if quote:
        raise host.EngineError(f"unmatched quote in {text!r}", exit_code=1)
    if word or started:
        words.append("".join(word))
    return words


def expand_variable(text, index, variables):
    """Expand the variable whose ``$`` is at ``index``; return (value, next index)."""
    if text.startswith("${", index):
        end = text.find("}", index)
        if end < 0:
            raise host.EngineError(f"missing '}}' in {text!r}", exit_code=1)
        inside = text[index + 2:end]
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?", inside, re.DOTALL)
        if not match:
            raise host.EngineError(f"bad substitution: ${{{inside}}}", exit_code=1)
        name, operator, word = match.groups()
        value = variables.get(name, "")
        if operator == "-" and not value:
            value = expand(word, variables)
        elif operator == "+":
            value = expand(word, variables) if value else ""
        return value, end + 1
    match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, index + 1)
    if not match:
        return "$", index + 1
    return variables.get(match.group(), ""), match.end()


# -- 5. build: a Dockerfile as a loop of runs and commits ----------------------

def build(store, context, dockerfile, *, containers, tags=(), build_args=None,
          use_cache=True, quiet=False):
    """Build the image a Dockerfile describes; yield lines of progress.

    ``containers`` is the module that creates, starts and removes
    containers (``minidocker.container``).  Every failure is an
    :class:`~minidocker.host.EngineError` with exit status 1 (as ``docker
    build``) that names the step.
    """
    builder = Builder(store, context, containers, build_args or {}, use_cache, quiet)
    yield from builder.run(read_dockerfile(dockerfile), [image.Reference.parse(tag) for tag in tags])


def read_dockerfile(path):
    try:
        with open(path) as handle:
            return parse_dockerfile(handle.read())
    except FileNotFoundError:
        raise host.EngineError(f"cannot read the Dockerfile: {path}: no such file", exit_code=1)


class Builder:
    """The state of one build: the image so far and its config, ARGs, shell."""

    def __init__(self, store, context, containers, build_args, use_cache, quiet):
        self.store, self.containers = store, containers
        self.context = Context(context)
        self.build_args = dict(build_args)
        self.used_args = set()
        self.use_cache, self.quiet = use_cache, quiet
        # SOURCE_DATE_EPOCH as a build argument (BuildKit's way) or in the environment.
        self.epoch = source_date_epoch({**os.environ, **self.build_args})
        self.global_args, self.stages, self.stage_name = {}, {}, None
        self.image = None
        self.config, self.args, self.shell = None, {}, list(DEFAULT_SHELL)

    def run(self, instructions, references):
        """Run every step; yield progress; tag the result."""
        if not any(instruction.keyword == "FROM" for instruction in instructions):
            raise host.EngineError("the Dockerfile has no FROM instruction", exit_code=1)
        total = len(instructions)
        for number, instruction in enumerate(instructions, 1):
            yield f"Step {number}/{total} : {instruction.text}"
            host.narrate(7, f"step {number}/{total}: {instruction.text}")
            try:
                yield from self.step(instruction)
            except host.EngineError as error:
                raise host.EngineError(f"step {number}/{total} ({instruction.text}): {error}",
                                       exit_code=1) from error
        unused = sorted(set(self.build_args) - self.used_args - {"SOURCE_DATE_EPOCH"})
        if unused:
            yield f"[Warning] One or more build-args {unused} were not consumed"
        for reference in references:
            self.store.tag(reference, self.image.digest)
        yield f"Successfully built {short_id(self.image)}"
        for reference in references:
            yield f"Successfully tagged {reference.familiar_repository}:{reference.tag}"

    def step(self, instruction):
        keyword = instruction.keyword
        if keyword == "FROM":
            yield from self.step_from(instruction)
        elif self.config is None:
            if keyword != "ARG":
                raise host.EngineError("the first instruction must be FROM (or ARG)")
            self.declare_argument(instruction, self.global_args)
        elif keyword == "RUN":
            yield from self.step_run(instruction)
        elif keyword in ("COPY", "ADD"):
            yield from self.step_copy(instruction)
        else:
            yield from self.step_config(instruction)

    # the steps

    def step_from(self, instruction):
        words = split_words(instruction.arguments, self.global_args)
        if len(words) not in (1, 3) or len(words) == 3 and words[1].upper() != "AS":
            raise host.EngineError("FROM takes IMAGE [AS NAME]")
        if instruction.flags.get("platform") not in (None, f"linux/{image.host_architecture()}"):
            raise host.EngineError("this engine builds only for the host's platform")
        if self.stage_name:
            self.stages[self.stage_name] = self.image
        self.stage_name = words[2].lower() if len(words) == 3 else None
        name = words[0]
        if name in self.stages:
            self.image = self.stages[name]
        elif name == "scratch":
            self.image = self.empty_image()
        else:
            # Pulled if missing, as Docker's build does; the pull's lines
            # come between the step's own, on the same standard output.
            self.image = image.find_or_pull(self.store, name, "missing",
                                            None if self.quiet else sys.stdout)
        self.config = copy.deepcopy(self.image.run_config)
        self.args, self.shell = {}, list(self.config.get("Shell") or DEFAULT_SHELL)
        self.cmd_given = False
        yield f" ---> {short_id(self.image)}"

    def step_config(self, instruction):
        """A step that changes only the config: no container, no layer."""
        config = copy.deepcopy(self.config)
        created_by = instruction.text
        if instruction.keyword == "ARG":
            created_by = "ARG " + self.declare_argument(instruction, self.args)
        elif instruction.keyword == "SHELL":
            shell = exec_form(instruction.arguments)
            if not shell:
                raise host.EngineError('SHELL needs the JSON form, such as ["/bin/sh", "-c"]')
            self.shell = config["Shell"] = shell
        elif instruction.keyword == "MAINTAINER":
            pass
        else:
            if instruction.keyword == "ENTRYPOINT" and not self.cmd_given:
                # Docker's rule: a new entrypoint drops a Cmd inherited from the base image.
                config.pop("Cmd", None)
            self.cmd_given = self.cmd_given or instruction.keyword == "CMD"
            apply_instruction(config, instruction, self.variables(), self.shell)
        author = instruction.arguments if instruction.keyword == "MAINTAINER" else ""
        key = cache_key(self.image, "config", config, created_by)
        yield from self.cached_step(key, lambda: self.config_only(config, created_by, author))
        self.config = config

    def config_only(self, config, created_by, author):
        """Make the image of a config step (a generator, like the other steps)."""
        yield from ()
        return new_image(self.store, self.image, None, config, created_by, author=author,
                         epoch=self.epoch)

    def step_run(self, instruction):
        """RUN: start a container from the image so far, then commit it."""
        argv = exec_form(instruction.arguments)
        if argv is None:
            argv = [*self.shell, instruction.arguments]
        if not argv:
            raise host.EngineError("RUN needs a command")
        # ARG values are in the command's environment, not in the image;
        # an ENV of the same name wins, as in Docker.
        environment = environment_of(self.config)
        build_environment = [f"{name}={value}" for name, value in self.args.items()
                             if value is not None and name not in environment]
        key = cache_key(self.image, "RUN", argv, build_environment)

        def make():
            options = {"command": argv, "entrypoint": "", "env": build_environment,
                       "workdir": self.config.get("WorkingDir") or "/",
                       "user": self.config.get("User") or "", "network": "none"}
            record = self.containers.create(self.store, self.image.id, options)
            try:
                yield f" ---> Running in {record.id[:12]}"
                host.narrate(7, f"run {' '.join(argv)} in container {record.id[:12]}, then commit it")
                sys.stdout.flush()
                code = self.containers.start(record, attach=not self.quiet)
                if code != 0:
                    raise host.EngineError(f"the command '{' '.join(argv)}' "
                                           f"returned a non-zero code: {code}")
                layer = write_layer(self.store, record, mtime_limit=self.epoch)
            finally:
                self.containers.remove(record, force=True)
            return new_image(self.store, self.image, layer, self.config,
                             f"RUN {instruction.arguments}", epoch=self.epoch)

        yield from self.cached_step(key, make)

    def step_copy(self, instruction):
        """COPY and ADD: copy context files into a container, then commit it."""
        words = exec_form(instruction.arguments) or split_words(instruction.arguments,
                                                                self.variables())
        if len(words) < 2:
            raise host.EngineError(f"{instruction.keyword} needs a source and a destination")
        if any(re.match(r"^[a-z]+://", word) for word in words[:-1]):
            raise host.EngineError(f"{instruction.keyword} from a URL is not supported: "
                                   "minidocker builds only from the context")
        sources = self.context.select(words[:-1], allow_archives=instruction.keyword == "ADD")
        destination = words[-1]
        if not destination.startswith("/"):
            destination = os.path.join(self.config.get("WorkingDir") or "/", destination)
        into_directory = destination.endswith("/") or len(sources) > 1 or \
            any(source.archive for source in sources) or has_wildcards(words[:-1])
        owner = instruction.flags.get("chown")
        if owner is not None:
            owner = expand(owner, self.variables())
        key = cache_key(self.image, instruction.keyword, self.context.digest(sources),
                        destination, into_directory, owner)

        def make():
            command = ["/bin/sh", "-c", f"#(nop) {instruction.text}"]
            record = self.containers.create(self.store, self.image.id,
                                            {"command": command, "network": "none"})
            try:
                yield f" ---> Copying into {record.id[:12]}"
                host.narrate(7, f"copy {len(sources)} source(s) into container {record.id[:12]}, "
                                "then commit it")
                in_container_root(record, lambda merged: copy_sources(
                    merged, sources, destination, into_directory, owner, self.context))
                layer = write_layer(self.store, record, mtime_limit=self.epoch)
            finally:
                self.containers.remove(record, force=True)
            return new_image(self.store, self.image, layer, self.config, instruction.text,
                             epoch=self.epoch)

        yield from self.cached_step(key, make)

    # the cache

    def cached_step(self, key, make):
        """Reuse the image a step with the same key made, or make it."""
        found = find_cached(self.store, key) if self.use_cache else None
        if found:
            host.narrate(7, f"cache hit {key[:12]}: reuse image {short_id(found)}")
            yield " ---> Using cache"
            self.image = found
        else:
            self.image = yield from make()
            remember(self.store, key, self.image)
        yield f" ---> {short_id(self.image)}"

    def empty_image(self):
        """The image ``FROM scratch`` starts from: no layers, an empty config.

        It is stored like any step, because containers start from stored
        images; its config has no date, so it is always the same image.
        """
        config = {"architecture": image.host_architecture(), "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
        empty = self.store.add_image([], config)
        remember(self.store, "scratch", empty)
        return empty

    # ARGs and variables

    def declare_argument(self, instruction, scope):
        """``ARG NAME[=default]``: a --build-arg value beats the default."""
        name, has_default, default = instruction.arguments.strip().partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise host.EngineError(f"invalid ARG name {name!r}")
        if name in self.build_args:
            value = self.build_args[name]
            self.used_args.add(name)
        elif has_default:
            value = expand(default, {**self.global_args, **self.args})
        else:
            value = self.global_args.get(name)
        scope[name] = value
        return name

    def variables(self):
        """What ``$NAME`` means in this stage: ARG values, then ENV over them."""
        values = {name: value for name, value in self.args.items() if value is not None}
        values.update(environment_of(self.config))
        return values


def short_id(found):
    return found.id.removeprefix("sha256:")[:12]


def cache_key(parent, *parts):
    """The key of a step: its parent image's id and everything that went in."""
    text = json.dumps([parent.id, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_cached(store, key):
    """Return the image a step with this key made earlier, if it is still whole."""
    for entry in store.index()["manifests"]:
        if entry.get("annotations", {}).get(CACHE_KEY) == key:
            try:
                return store.image(entry["digest"])
            except host.EngineError:
                return None
    return None


def remember(store, key, built):
    """Record a step's image in the index under its cache key.

    The entry has no name, so ``images`` does not list it, but it keeps
    the image's blobs from being collected, and ``run`` can find the
    image by its id, which each following step needs.
    """
    manifest = store.read_blob(built.digest)
    with host.locked(store.lock_path):
        index = store.index()
        index["manifests"] = [entry for entry in index["manifests"]
                              if entry.get("annotations", {}).get(CACHE_KEY) != key]
        index["manifests"].append({"mediaType": image.MEDIA_MANIFEST, "digest": built.digest,
                                   "size": len(manifest), "annotations": {CACHE_KEY: key}})
        store.write_index(index)


def listed_images(store):
    """The store's images as ``images`` lists them: build-cache entries left out."""
    entries = []
    for entry in store.index()["manifests"]:
        annotations = entry.get("annotations", {})
        if CACHE_KEY in annotations:
            continue
        name = annotations.get(image.FULL_NAME)
        entries.append((image.Reference.parse(name) if name else None, entry["digest"]))
    return entries


def forget_build_cache(store):
    """Drop every build-cache entry (``builder prune``); return how many there were."""
    with host.locked(store.lock_path):
        index = store.index()
        kept = [entry for entry in index["manifests"]
                if CACHE_KEY not in entry.get("annotations", {})]
        count = len(index["manifests"]) - len(kept)
        index["manifests"] = kept
        store.write_index(index)
    return count


# -- the build context: which files a COPY may read ------------------------------

class Source:
    """One source of a COPY or ADD, resolved inside the context."""

    def __init__(self, relative, path, archive=False):
        self.relative, self.path, self.archive = relative, path, archive

    @property
    def is_directory(self):
        return os.path.isdir(self.path)


class Context:
    """The build context directory and its ``.dockerignore`` rules."""

    def __init__(self, directory):
        if not os.path.isdir(directory):
            raise host.EngineError(f"the build context {directory} is not a directory",
                                   exit_code=1)
        self.directory = os.path.realpath(directory)
        self.rules = read_ignore_rules(os.path.join(self.directory, ".dockerignore"))

    def select(self, patterns, allow_archives=False):
        """Resolve COPY sources; refuse anything outside the context.

        A source is relative to the context even when written as an
        absolute path (Docker's rule).  ``..`` that climbs out, and a
        symbolic link whose target lies outside, are refused: the
        context is everything a build may read from the host.
        """
        sources = []
        for pattern in patterns:
            relative = os.path.normpath(pattern.lstrip("/")) if pattern.strip("/") else "."
            if relative == ".." or relative.startswith("../"):
                raise host.EngineError(f"forbidden path outside the build context: {pattern}")
            if has_wildcards([relative]):
                matches = sorted(os.path.relpath(path, self.directory) for path in
                                 glob.glob(os.path.join(glob.escape(self.directory), relative)))
                matches = [match for match in matches if not self.excluded(match)]
                if not matches:
                    raise host.EngineError(f"no source files were specified by {pattern}")
            else:
                matches = [relative]
            for match in matches:
                path = self.inside(match, pattern)
                if not os.path.lexists(path) or match != "." and self.excluded(match):
                    raise host.EngineError(f"{pattern}: not found in the build context "
                                           "(or excluded by .dockerignore)")
                archive = allow_archives and os.path.isfile(path) and tarfile.is_tarfile(path)
                sources.append(Source(match, path, archive))
        return sources

    def inside(self, relative, pattern):
        """Return the real path of ``relative``, checked to be inside the context."""
        path = os.path.realpath(os.path.join(self.directory, relative))
        if path != self.directory and not path.startswith(self.directory + "/"):
            raise host.EngineError(f"forbidden path outside the build context: {pattern} "
                                   f"(resolves to {path})")
        return path

    def excluded(self, relative):
        """Say whether .dockerignore leaves ``relative`` out (the last matching rule wins)."""
        result = False
        candidates = [relative]
        while os.path.dirname(candidates[-1]):
            candidates.append(os.path.dirname(candidates[-1]))
        for negated, rule in self.rules:
            if any(rule.fullmatch(candidate) for candidate in candidates):
                result = not negated
        return result

    def files(self, source):
        """Yield ``(relative path inside the source, host path)`` for a source, kept files only."""
        if not source.is_directory:
            yield "", source.path
            return
        for current, directories, names in os.walk(source.path):
            directories.sort()
            for name in sorted(directories + names):
                path = os.path.join(current, name)
                inside = os.path.relpath(path, source.path)
                if not self.excluded(os.path.normpath(os.path.join(source.relative, inside))):
                    yield inside, path
            directories[:] = [name for name in directories if not os.path.islink(
                os.path.join(current, name))]

    def digest(self, sources):
        """Hash what the sources hold: names, types, modes, link targets, bytes.

        Times are left out, as Docker does: touching a file does not
        invalidate the cache; changing a byte does.
        """
        digest = hashlib.sha256()
        for source in sources:
            digest.update(f"{source.relative}\0{source.archive}\0".encode())
            for inside, path in self.files(source):
                info = os.lstat(path)
                digest.update(f"{inside}\0{info.st_mode:o}\0".encode(errors="surrogateescape"))
                if stat.S_ISLNK(info.st_mode):
                    digest.update(os.readlink(path).encode(errors="surrogateescape"))
                elif stat.S_ISREG(info.st_mode):
                    with open(path, "rb") as data:
                        while chunk := data.read(CHUNK):
                            digest.update(chunk)
                digest.update(b"\0")
        return "sha256:" + digest.hexdigest()


def has_wildcards(patterns):
    return any(any(character in pattern for character in "*?[") for pattern in patterns)


def read_ignore_rules(path):
    """Read ``.dockerignore``: one pattern a line, ``!`` to take a path back."""
    rules = []
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return rules
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, re.compile(ignore_pattern_to_regex(pattern))))
    return rules


def ignore_pattern_to_regex(pattern):
    """Translate a .dockerignore pattern (Go's filepath.Match plus ``**``)."""
    regex, index = "", 0
    while index < len(pattern):
        character = pattern[index]
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
            continue
        if pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
            continue
        if character == "*":
            regex += "[^/]*"
        elif character == "?":
            regex += "[^/]"
        elif character == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                raise host.EngineError(f".dockerignore: bad pattern {pattern!r}", exit_code=1)
            regex += "[" + pattern[index + 1:end].replace("!", "^", 1).replace("\\", "\\\\") + "]"
            index = end
        elif character == "\\" and index + 1 < len(pattern):
            index += 1
            regex += re.escape(pattern[index])
        else:
            regex += re.escape(character)
        index += 1
    return regex


# -- copying into a container's root -------------------------------------------

def in_container_root(container, work):
    """Mount a container's root in a private mount namespace and call ``work(merged)``.

    A forked child unshares its mount namespace and mounts the root there
    (chapters 1 and 3), so the files land in the container's upper
    directory exactly as if the container had written them, and the mount
    disappears with the child: nothing can leak to the host.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_read)
        status = 0
        try:
            namespace.unshare(["mnt"])
            rootfs.mount_root(container.directory, container.config["LayerDirectories"],
                              container.config["Driver"])
            work(os.path.join(container.directory, "merged"))
        except host.EngineError as error:
            os.write(report_write, str(error).encode())
            status = 1
        except BaseException as error:  # an engine bug: say what it was
            os.write(report_write, f"{type(error).__name__}: {error}".encode())
            status = 1
        finally:
            os._exit(status)
    os.close(report_write)
    with os.fdopen(report_read, "rb") as report:
        message = report.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if message or status != 0:
        raise host.EngineError(message or f"the copying process ended with status {status}")


def copy_sources(merged, sources, destination, into_directory, owner_spec, context):
    """Copy resolved sources to ``destination`` inside the root ``merged``.

    Paths inside the root are resolved as the container would see them
    (chapter 3's :func:`~minidocker.rootfs.resolve`), so an image's
    symbolic link can never send a write to the host.  A directory source
    gives its contents, not itself; an archive (ADD) is unpacked.  New
    files belong to root unless ``--chown`` says otherwise; an archive's
    entries keep their owners.
    """
    owner = resolve_owner(merged, owner_spec) if owner_spec else (0, 0)
    for source in sources:
        if source.archive:
            target = rootfs.resolve(merged, destination, create="directory")
            unpack_archive(source.path, merged, target)
        elif source.is_directory:
            target = rootfs.resolve(merged, destination, create="directory")
            copy_tree(merged, source.path, target, owner, context, source.relative)
        else:
            existing = rootfs.resolve(merged, destination)
            if into_directory or is_directory(existing):
                parent = rootfs.resolve(merged, destination, create="directory")
                target = os.path.join(parent, os.path.basename(source.relative))
            else:
                parent = rootfs.resolve(merged, os.path.dirname(destination), create="directory")
                target = os.path.join(parent, os.path.basename(destination))
            copy_entry(source.path, target, owner)


def copy_tree(merged, source, target, owner, context, relative):
    """Copy the contents of the directory ``source`` into ``target``."""
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        inside = os.path.normpath(os.path.join(relative, name))
        if context is not None and context.excluded(inside):
            continue
        destination = os.path.join(target, name)
        if is_directory(path):
            if os.path.islink(destination):
                # An image's link to a directory is followed, inside the root.
                destination = rootfs.resolve(merged, rootfs.inside_path(merged, destination),
                                             create="directory")
            if not is_directory(destination):
                rootfs.remove_path(destination)
                os.mkdir(destination)
            copy_tree(merged, path, destination, owner, context, inside)
        copy_entry(path, destination, owner)


def copy_entry(source, target, owner):
    """Make ``target`` a copy of ``source`` (a directory gets only its metadata here).

    An existing target is removed first, never written through: it may be
    a symbolic link of the image's.  ``owner`` None keeps the source's.
    """
    info = os.lstat(source)
    if stat.S_ISDIR(info.st_mode):
        if not is_directory(target):
            rootfs.remove_path(target)
            os.mkdir(target)
    else:
        rootfs.remove_path(target)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(info.st_mode):
            shutil.copyfile(source, target, follow_symlinks=False)
        else:
            raise host.EngineError(f"cannot copy {source}: only files, directories and "
                                   "symbolic links can be copied")
    uid, gid = owner if owner is not None else (info.st_uid, info.st_gid)
    os.chown(target, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def unpack_archive(path, merged, target):
    """ADD of a local tar archive (plain, gzip, bzip2 or xz): unpack it into ``target``.

    The archive is unpacked with chapter 4's careful :func:`image.unpack`
    into a staging directory beside the root, then copied in with
    :func:`copy_tree`, which resolves every path inside the root.
    """
    staging = os.path.join(os.path.dirname(merged), "add-staging")
    rootfs.remove_path(staging)
    os.mkdir(staging, 0o700)
    try:
        with open_decompressed(path) as stream:
            image.unpack(stream, staging)
        copy_tree(merged, staging, target, None, None, "")
    finally:
        shutil.rmtree(staging)


def open_decompressed(path):
    """Open a file, decompressing gzip, bzip2 or xz by its first bytes."""
    with open(path, "rb") as probe:
        head = probe.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def resolve_owner(merged, spec):
    """Turn ``--chown=user[:group]`` into numbers with the image's own files."""
    user, _, group = spec.partition(":")
    uid, gid = lookup_id(merged, "/etc/passwd", user, want_group=False)
    if group:
        gid = lookup_id(merged, "/etc/group", group, want_group=True)[0]
    return uid, gid


def lookup_id(merged, table, name, want_group):
    """Find ``name`` in the image's passwd or group file: ``(id, primary group id)``.

    A number passes through, as its own group too (``--chown=10`` is 10:10).
    The file is the image's, read as ``run`` reads it (a regular file only,
    its IDs checked).
    """
    if host.is_decimal(name):
        if int(name) > rootfs.MAX_ID:
            raise host.EngineError(f"invalid --chown ID: {name}")
        return int(name), int(name)
    for fields in rootfs.read_colon_file(merged, table):
        if len(fields) >= 3 and fields[0] == name:
            number = rootfs.id_number(fields[2])
            if want_group or len(fields) < 4:
                return number, number
            return number, rootfs.id_number(fields[3])
    raise host.EngineError(f"unable to find {'group' if want_group else 'user'} {name}: "
                           f"no matching entries in {table}")

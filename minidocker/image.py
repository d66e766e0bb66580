"""Chapter 4: images, the read-only templates containers start from.

An image is a stack of *layers* (tar archives of file changes) plus a
*config* (the command, environment, working directory and user to run
with).  A *manifest* lists the config and the layers by digest, the
SHA-256 of their bytes; the digest of the manifest itself names the image
everywhere.  Because every piece is addressed by its content, nothing can
change under a name without the name changing too.

minidocker keeps its images as an OCI image layout (the OCI image spec's
directory format), so tools nobody here wrote (``skopeo``, ``umoci``) can
read the store directly::

    ENGINE_ROOT/images/oci-layout        {"imageLayoutVersion": "1.0.0"}
    ENGINE_ROOT/images/index.json        the names, each pointing at a manifest
    ENGINE_ROOT/images/blobs/sha256/...  manifests, configs and layers
    ENGINE_ROOT/layers/DIFFID/           each layer unpacked once, shared by
                                         every image and container using it

In an unpacked layer a deleted file (``.wh.NAME`` in the tar) becomes a
character device 0/0 and an opaque directory (``.wh..wh..opq``) carries the
``trusted.overlay.opaque`` attribute: the format overlayfs reads directly.
"""

import errno
import io
import itertools
import os
import stat
import sys

from minidocker import host, rootfs

# hashlib, tarfile, gzip, tempfile and datetime are imported inside the
# functions that use them: ``run`` only looks images up, and those imports
# would add ~20 ms to every container start.

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
FULL_NAME = "io.containerd.image.name"
DISTRIBUTED = "io.minidocker.distributed"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


# -- names ---------------------------------------------------------------

_LOWER_ALPHANUMERIC = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALPHANUMERIC = _LOWER_ALPHANUMERIC | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEXADECIMAL = frozenset("0123456789abcdef")
_IPV6_CHARACTERS = frozenset("0123456789abcdefABCDEF:")


def split_reference(text):
    """Split an image reference into ``(domain, path, tag, digest)``, or None.

    The grammar is Docker's (distribution/reference); each rule is one of
    the functions below it::

        reference      := name [ ":" tag ] [ "@" digest ]
        name           := [ domain "/" ] path-component [ "/" path-component ]*
        domain         := host [ ":" port ]
        path-component := runs of [a-z0-9], each two joined by ".", "_", "__" or "-"s
        tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
        digest         := "sha256:" 64 lowercase hexadecimal digits

    A first component that may be a host is read as the domain; whether
    it really is one is :meth:`Reference.parse`'s decision.  Anything
    outside the grammar (a newline, an escape sequence, ``..``) is None.
    """
    name, at, digest = text.partition("@")
    if at and not is_digest(digest):
        return None
    tag = None
    if name.rfind(":") > name.rfind("/"):  # a colon before the last "/" is a port
        name, _, tag = name.rpartition(":")
        if not _is_tag(tag):
            return None
    domain, slash, path = name.partition("/")
    if not (slash and _is_domain(domain)):
        domain, path = None, name
    if not all(map(_is_path_component, path.split("/"))):
        return None
    return domain, path, tag, digest or None


def _is_path_component(text):
    # Cut it into runs of letters and digits and the separators between them.
    pieces = [(is_run, "".join(characters)) for is_run, characters
              in itertools.groupby(text, _LOWER_ALPHANUMERIC.__contains__)]
    return (bool(pieces) and pieces[0][0] and pieces[-1][0]
            and all(is_run or piece in (".", "_", "__") or set(piece) == {"-"}
                    for is_run, piece in pieces))


def _is_domain(text):
    # A host is DNS labels joined by dots, or an IPv6 address in brackets.
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]")
        host_is_valid = bool(bracket and address) and set(address) <= _IPV6_CHARACTERS
    else:
        name, colon, port = text.partition(":")
        port = colon + port
        host_is_valid = all(map(_is_label, name.split(".")))
    return host_is_valid and (port == "" or port[:1] == ":" and host.is_decimal(port[1:]))


def _is_label(text):
    # Letters, digits and hyphens, neither first nor last a hyphen.
    return (text[:1] in _ALPHANUMERIC and text[-1:] in _ALPHANUMERIC
            and set(text) <= _ALPHANUMERIC | {"-"})


def _is_tag(text):
    return (0 < len(text) <= 128 and text[0] in _ALPHANUMERIC | {"_"}
            and set(text) <= _ALPHANUMERIC | set("_.-"))


def is_digest(text):
    """Say whether ``text`` is a sha256 digest: ``sha256:`` and 64 lowercase hex digits."""
    return text.startswith("sha256:") and is_hexadecimal(text[7:], 64)


def is_hexadecimal(text, shortest, longest=None):
    """Say whether ``text`` is lowercase hex digits, ``shortest`` to ``longest`` of them."""
    return shortest <= len(text) <= (longest or shortest) and set(text) <= _HEXADECIMAL


class Reference:
    """An image reference, normalised the way Docker does it.

    ``busybox`` means ``docker.io/library/busybox:latest``; a first
    component with a dot or a colon, or ``localhost``, is a registry host.
    """

    def __init__(self, domain, path, tag, digest):
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    @classmethod
    def parse(cls, text):
        parts = split_reference(text or "")
        if not parts and split_reference((text or "").lower()):
            # Docker's own wording: "repository name (library/Busybox) must be lowercase".
            name = text.split("@")[0]
            if name.rfind(":") > name.rfind("/"):
                name = name[:name.rfind(":")]
            if "/" not in name:
                name = f"library/{name}"
            raise host.EngineError(f"invalid reference format: repository name ({name}) "
                                   "must be lowercase")
        if not parts:
            raise host.EngineError(f'invalid reference format: "{text}"')
        domain, path, tag, digest = parts
        if domain and not ("." in domain or ":" in domain or domain == "localhost"
                           or domain != domain.lower()):
            path, domain = f"{domain}/{path}", None
        if domain and domain != domain.lower() and "." not in domain and ":" not in domain:
            raise host.EngineError(f'invalid reference format: repository name must be lowercase: "{text}"')
        domain = domain or "docker.io"
        if domain == "index.docker.io":
            domain = "docker.io"
        if domain == "docker.io" and "/" not in path:
            path = f"library/{path}"
        if len(f"{domain}/{path}") > 255:  # the name as normalised; tag and digest are not counted
            raise host.EngineError("invalid reference format: repository name must not be "
                                   "more than 255 characters")
        tag = tag or (None if digest else "latest")
        return cls(domain, path, tag, digest)

    @property
    def repository(self):
        """The full repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self):
        """The repository as Docker prints it: ``busybox``, ``user/app``."""
        if self.domain == "docker.io":
            return self.path.removeprefix("library/")
        return self.repository

    def __str__(self):
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self):
        """The short name used in the layout's ref.name annotation.

        ``busybox`` for ``busybox:latest`` (so ``skopeo inspect
        oci:STORE:busybox`` finds it), ``app:1.0`` otherwise.
        """
        name = self.familiar_repository
        if self.tag and self.tag != "latest":
            name += f":{self.tag}"
        if self.digest and not self.tag:
            name += f"@{self.digest}"
        return name

    def without_digest(self):
        """The same name with its tag only (``latest`` if it had none)."""
        return Reference(self.domain, self.path, self.tag or "latest", None)


# -- the store -----------------------------------------------------------

class IncompleteImage(host.EngineError):
    """An image whose manifest names a blob the store does not hold."""


class NoSuchImage(host.EngineError):
    """No image in the store goes by that name or id."""


class Store:
    """The engine's images: an OCI image layout plus unpacked layers."""

    def __init__(self, root=None):
        self.root = root or host.engine_root()
        self.layout = os.path.join(self.root, "images")
        self.blobs = os.path.join(self.layout, "blobs", "sha256")
        self.layers = os.path.join(self.root, "layers")
        self.lock_path = os.path.join(self.root, "images.lock")

    def ensure(self):
        """Create the layout's skeleton if this engine root is new."""
        os.makedirs(self.blobs, exist_ok=True)
        os.makedirs(self.layers, exist_ok=True)
        marker = os.path.join(self.layout, "oci-layout")
        if not os.path.exists(marker):
            host.write_atomically(marker, host.dump_json({"imageLayoutVersion": "1.0.0"}))
            host.write_atomically(os.path.join(self.layout, "index.json"),
                                  host.dump_json({"schemaVersion": 2, "manifests": []}))

    # blobs

    def blob_path(self, digest):
        algorithm, _, hexadecimal = digest.partition(":")
        if algorithm != "sha256" or not is_hexadecimal(hexadecimal, 64):
            raise host.EngineError(f"invalid digest {digest!r}")
        return os.path.join(self.blobs, hexadecimal)

    def has_blob(self, digest):
        return os.path.exists(self.blob_path(digest))

    def read_blob(self, digest):
        with open(self.blob_path(digest), "rb") as blob:
            return blob.read()

    def read_json(self, digest):
        return host.load_json(self.read_blob(digest))

    def put_blob(self, data, expected_digest=None):
        """Store bytes as a blob and return their digest.

        With ``expected_digest`` the bytes are verified first: a blob whose
        content does not match its name never enters the store.
        """
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected_digest and digest != expected_digest:
            raise host.EngineError(f"digest mismatch: expected {expected_digest}, got {digest}")
        path = self.blob_path(digest)
        if not os.path.exists(path):
            host.write_atomically(path, data)
            os.chmod(path, 0o644)
        return digest

    def put_blob_file(self, temporary_path, expected_digest=None):
        """Move a verified file into the store as a blob; return its digest."""
        digest = "sha256:" + file_sha256(temporary_path)
        if expected_digest and digest != expected_digest:
            os.unlink(temporary_path)
            raise host.EngineError(f"digest mismatch: expected {expected_digest}, got {digest}")
        self.install_blob_file(temporary_path, digest)
        return digest

    def install_blob_file(self, temporary_path, digest):
        """Give a checked temporary file its digest's name, durably.

        The bytes reach the disk before the name does: a crash in between
        leaves a hidden temporary, never a blob whose name lies.
        """
        with open(temporary_path, "rb") as blob:
            host.call(4, f"fsync {temporary_path}", os.fsync, blob.fileno())
        self.install_blob(temporary_path, digest)

    def temporary_file(self):
        """A temporary file inside the store, renamed into place when verified."""
        self.ensure()
        self.remove_abandoned_temporaries()
        return _make_temporary(self.blobs, ".incoming-", lambda path: os.close(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)))

    def remove_abandoned_temporaries(self):
        """Remove downloads and unpackings left by a command that was killed.

        Each temporary name carries its maker's PID; one whose maker is gone
        will never be finished (a new pull starts that blob again).
        """
        for directory, prefix in ((self.blobs, ".incoming-"), (self.layers, ".unpack-")):
            for name in os.listdir(directory) if os.path.isdir(directory) else []:
                maker = name.removeprefix(prefix).split("-")[0]
                if name.startswith(prefix) and maker.isdigit() \
                        and not os.path.exists(f"/proc/{maker}"):
                    host.narrate(4, f"remove {name}, left by a killed command")
                    path = os.path.join(directory, name)
                    # Another command (or another layer's thread of this
                    # pull) may be removing the same leftover right now.
                    try:
                        rootfs.remove_path(path)
                    except FileNotFoundError:
                        pass

    # the index

    def index(self):
        self.ensure()
        return host.read_json(os.path.join(self.layout, "index.json"))

    def write_index(self, index):
        host.write_atomically(os.path.join(self.layout, "index.json"), host.dump_json(index))

    def tag(self, reference, manifest_digest, distributed=False):
        """Point ``reference`` at a stored manifest (replacing an older one).

        ``distributed`` records that a registry serves this manifest under
        the reference's repository (it was pulled or pushed), which is what
        Docker's ``RepoDigests`` lists.
        """
        with host.locked(self.lock_path):
            # Under the lock, so that a failed pull cleaning up at the same
            # time cannot take a shared blob away between check and tag.
            self.check_complete(manifest_digest)
            manifest = self.read_blob(manifest_digest)
            index = self.index()
            old = [entry for entry in index["manifests"]
                   if entry.get("annotations", {}).get(FULL_NAME) == str(reference)]
            distributed = distributed or any(
                entry["digest"] == manifest_digest and entry["annotations"].get(DISTRIBUTED)
                for entry in old)
            index["manifests"] = [entry for entry in index["manifests"] if entry not in old]
            annotations = {REF_NAME: reference.familiar(), FULL_NAME: str(reference)}
            if distributed:
                annotations[DISTRIBUTED] = "true"
            index["manifests"].append({
                "mediaType": host.load_json(manifest).get("mediaType", MEDIA_MANIFEST),
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": annotations,
            })
            self.write_index(index)

    def check_complete(self, manifest_digest):
        """Raise :class:`IncompleteImage` unless every blob of the image is stored."""
        try:
            manifest = self.read_json(manifest_digest)
            digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        except FileNotFoundError:
            digests = [manifest_digest]
        missing = [digest for digest in digests if not self.has_blob(digest)]
        if missing:
            raise IncompleteImage(f"image {manifest_digest[:19]} is incomplete: "
                                  f"blob {missing[0][:19]} is missing")

    def referenced_blobs(self):
        """The digests of every blob a named (or cached) image needs."""
        referenced = set()
        for entry in self.index()["manifests"]:
            referenced.add(entry["digest"])
            try:
                manifest = self.read_json(entry["digest"])
            except FileNotFoundError:
                continue
            referenced.add(manifest["config"]["digest"])
            referenced.update(layer["digest"] for layer in manifest["layers"])
        return referenced

    def referenced_layer_directories(self):
        """The unpacked layer directories a named (or cached) image needs."""
        directories = set()
        for entry in self.index()["manifests"]:
            try:
                manifest = self.read_json(entry["digest"])
                config = self.read_json(manifest["config"]["digest"])
            except FileNotFoundError:
                continue
            directories.update(self.layer_path(diff_id)
                               for diff_id in config.get("rootfs", {}).get("diff_ids", []))
        return directories

    def add_untagged(self, manifest_digest):
        """List a manifest in the index without a name (Docker's ``<none>``)."""
        manifest = self.read_blob(manifest_digest)
        with host.locked(self.lock_path):
            index = self.index()
            if not any(entry["digest"] == manifest_digest for entry in index["manifests"]):
                index["manifests"].append({"mediaType": MEDIA_MANIFEST, "digest": manifest_digest,
                                           "size": len(manifest)})
                self.write_index(index)

    def repository_digests(self, manifest_digest):
        """Docker's ``RepoDigests``: ``REPOSITORY@DIGEST`` for pulled or pushed names."""
        found = set()
        for entry in self.index()["manifests"]:
            annotations = entry.get("annotations", {})
            if entry["digest"] == manifest_digest and annotations.get(DISTRIBUTED) \
                    and annotations.get(FULL_NAME):
                name = Reference.parse(annotations[FULL_NAME])
                found.add(f"{name.familiar_repository}@{manifest_digest}")
        return sorted(found)

    def untag(self, reference):
        with host.locked(self.lock_path):
            index = self.index()
            index["manifests"] = [entry for entry in index["manifests"]
                                  if entry.get("annotations", {}).get(FULL_NAME) != str(reference)]
            self.write_index(index)

    def images(self):
        """Return ``[(reference or None, manifest digest)]`` for every name."""
        entries = []
        for entry in self.index()["manifests"]:
            name = entry.get("annotations", {}).get(FULL_NAME)
            entries.append((Reference.parse(name) if name else None, entry["digest"]))
        return entries

    # looking images up

    def lookup(self, text):
        """Find an image by name, digest or (prefix of its) image id.

        Returns an :class:`Image`; raises ``EngineError`` when nothing
        matches, with Docker's wording.
        """
        entries = self.images()
        if is_hexadecimal(text.removeprefix("sha256:"), 4, 64):
            wanted = text.removeprefix("sha256:")
            matches = {digest for _, digest in entries
                       if self.image(digest).id.removeprefix("sha256:").startswith(wanted)}
            if len(matches) == 1:
                return self.image(matches.pop())
        reference = Reference.parse(text)  # a malformed name says so, as Docker does
        if reference:
            for name, digest in entries:
                if name and str(name) == str(reference):
                    return self.image(digest)
                if name and reference.digest and name.repository == reference.repository \
                        and digest == reference.digest:
                    return self.image(digest)
        raise NoSuchImage(f"No such image: {text}")

    def image(self, manifest_digest):
        return Image(self, manifest_digest)

    # layers

    def layer_path(self, diff_id):
        return os.path.join(self.layers, diff_id.removeprefix("sha256:"))

    def unpack_layer(self, blob_digest, diff_id, media_type):
        """Unpack a stored layer blob once; later images share the directory.

        As a pull does (``registry.install_layers``), the staged files
        reach the disk before the directory gets its diff id's name, and
        the rename itself is made durable: after a crash a layer's name
        never promises files whose bytes were lost.
        """
        target = self.layer_path(diff_id)
        if os.path.isdir(target):
            return target
        try:
            with host.locked(target + ".lock"):
                if not os.path.isdir(target):
                    with open(self.blob_path(blob_digest), "rb") as blob:
                        staging = self.unpack_into_staging(blob, blob_digest, diff_id,
                                                           media_type)
                    try:
                        make_durable(self.root)
                    except BaseException:
                        rootfs.remove_tree(staging)
                        raise
                    self.install_layer(staging, diff_id)
                    self.sync_directories()
        finally:
            try:
                os.unlink(target + ".lock")
            except FileNotFoundError:
                pass
        return target

    def unpack_into_staging(self, blob, blob_digest, diff_id, media_type):
        """Unpack a layer from its blob's bytes into a new hidden directory; return it.

        ``blob`` is anything with ``read`` and ``readinto``: the stored
        file, or the bytes still arriving from a registry.  The
        uncompressed stream is hashed as it is unpacked: if it is not the
        diff id the image config promised, the directory is thrown away.
        """
        staging = _make_temporary(self.layers, ".unpack-", lambda path: os.mkdir(path, 0o700))
        try:
            host.narrate(4, f"unpack layer {diff_id[:19]} into {self.layer_path(diff_id)}")
            stream = _Hashing(decompressed(blob, media_type, digest_checked=True))
            try:
                unpack(stream, staging)
                stream.drain()
            except (EOFError, OSError, ValueError, OverflowError) as error:
                # Only now: a pull inflates with _Gunzip and needs no gzip
                # module (2 ms to load) until it must tell an error apart.
                import gzip

                if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # the command line says the disk is full
                if isinstance(error, OSError) and not isinstance(error, gzip.BadGzipFile):
                    # A path the kernel refuses (ENAMETOOLONG, ELOOP, ...)
                    # is the layer's fault, not the engine's.
                    name = os.path.relpath(error.filename or "?", staging)
                    raise host.EngineError(
                        f"layer {blob_digest[:19]} cannot be unpacked: {error.strerror}: "
                        f"{name[:60]}{'...' if len(name) > 60 else ''}")
                raise host.EngineError(f"layer {blob_digest[:19]} is not a valid "
                                       f"{media_type.rsplit('.', 1)[-1]}: {error}")
            if stream.digest() != diff_id:
                raise host.EngineError(f"layer {blob_digest[:19]} unpacks to "
                                       f"{stream.digest()[:19]}, not the diff id "
                                       f"{diff_id[:19]} its image config promised")
        except BaseException:
            try:
                rootfs.remove_tree(staging)
            except OSError:
                pass
            raise
        return staging

    def install_layer(self, staging, diff_id):
        """Give a checked staging directory its diff id's name; say if it was new.

        If a parallel command installed the same layer first, rename(2)
        fails with ENOTEMPTY: its directory stays, ours goes.
        """
        try:
            os.rename(staging, self.layer_path(diff_id))
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            rootfs.remove_tree(staging)
            return False
        return True

    def install_blob(self, temporary_path, digest):
        """Give an already checked (and synced) temporary file its digest's name."""
        os.chmod(temporary_path, 0o644)
        os.rename(temporary_path, self.blob_path(digest))

    def sync_directories(self):
        """Make the renames into ``blobs/`` and ``layers/`` durable.

        fsync(2): "Calling fsync() does not necessarily ensure that the
        entry in the directory containing the file has also reached disk.
        For that an explicit fsync() on a file descriptor for the directory
        is also needed."
        """
        for directory in (self.blobs, self.layers):
            descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    # writing new images

    def add_image(self, layers, config, reference=None):
        """Store a new image from layer blobs and a config; return its Image.

        ``layers`` is a list of ``(blob digest, size, media type)``.
        """
        config_bytes = canonical_json(config)
        config_digest = self.put_blob(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [{"mediaType": media, "digest": digest, "size": size}
                       for digest, size, media in layers],
        }
        manifest_digest = self.put_blob(canonical_json(manifest))
        if reference:
            self.tag(reference, manifest_digest)
        return self.image(manifest_digest)

    def import_tarball(self, path, reference, changes=None):
        """Make a one-layer image from a flat root filesystem tarball."""
        import gzip
        import shutil
        import tarfile

        self.ensure()
        temporary = self.temporary_file()
        try:
            with open(path if path != "-" else "/dev/stdin", "rb") as source:
                head = source.read(2)
                source_stream = io.BufferedReader(_Prepend(head, source))
                if head == b"\x1f\x8b":
                    source_stream = gzip.GzipFile(fileobj=source_stream)
                with open(temporary, "wb") as blob:
                    shutil.copyfileobj(source_stream, blob, 1 << 20)
            if not tarfile.is_tarfile(temporary):
                raise host.EngineError(f"{path}: not a tar archive")
            size = os.path.getsize(temporary)
            digest = self.put_blob_file(temporary)
        except FileNotFoundError:
            raise host.EngineError(f"open {path}: no such file or directory")
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        self.unpack_layer(digest, digest, MEDIA_LAYER)
        config = new_config([digest], changes or {}, "import")
        return self.add_image([(digest, size, MEDIA_LAYER)], config, reference)

    def images_using_layer_dirs(self):
        """Return the set of unpacked layer directories some image needs."""
        needed = set()
        for _, digest in self.images():
            needed.update(self.image(digest).layer_directories(unpack=False))
        return needed

    def remove_unused(self, keep_directories=()):
        """Delete blobs and unpacked layers that no name refers to any more.

        ``keep_directories`` are unpacked layers a container still runs on
        (after ``rmi -f``); they stay until that container is removed.
        """
        with host.locked(self.lock_path):
            keep = set()
            for _, digest in self.images():
                image = self.image(digest)
                keep.add(digest.split(":")[1])
                keep.add(image.manifest["config"]["digest"].split(":")[1])
                keep.update(layer["digest"].split(":")[1] for layer in image.manifest["layers"])
                keep.update(d.split(":")[1] for d in image.diff_ids)
            for name in os.listdir(self.blobs):
                if name not in keep and not name.startswith(".incoming-"):
                    os.unlink(os.path.join(self.blobs, name))
            for name in os.listdir(self.layers):
                path = os.path.join(self.layers, name)
                if name not in keep and path not in keep_directories \
                        and not name.endswith(".lock") and not name.startswith("."):
                    host.narrate(4, f"remove unused layer {name[:12]}")
                    rootfs.remove_tree(path)


def decompressed(blob, media_type, digest_checked=False):
    """The uncompressed tar stream of a layer blob, by its media type.

    ``digest_checked`` says the caller hashes every byte of the result and
    compares it with the diff id; gzip's own CRC-32 then proves nothing
    more, and :class:`_Gunzip` skips it.
    """
    if media_type.endswith("zstd"):
        try:
            from compression import zstd
        except ImportError:
            raise host.EngineError("this layer is zstd-compressed, and this Python has no "
                                   "compression.zstd module (Python 3.14 adds it)")
        return zstd.ZstdFile(blob)
    if media_type.endswith("gzip"):
        if digest_checked:
            return _Gunzip(blob)
        import gzip

        return gzip.GzipFile(fileobj=blob)
    return blob


#: How much of a layer is inflated, hashed and written at a time.  Each
#: step gives up the GIL (zlib, SHA-256, write(2)), so the layers' threads
#: overlap.  zlib returns each step's output as a new ``bytes``; a small
#: step lets the allocator hand the same memory back step after step.
#: (With 4 MiB steps zlib gathered its output in blocks and copied them
#: into one more new object: pulling the benchmark's image made 8,800 page
#: faults, 4,700 now, 1,350 of them the imports'.  A fault costs 3.5 us on
#: the reference VM, bench/README.md.)  A step of compressed bytes that
#: inflates to more than a step leaves zlib a copy of its rest, at most a
#: step.
STEP = 1 << 18
#: How much compressed data one read from the blob asks for: a MiB, into a
#: buffer kept for the whole layer.  With 128 KiB, pulling the benchmark's
#: image took ~650 recv(2) and ~3,700 futex(2) calls (the layers' threads
#: handing the GIL around); with a MiB ~100 and ~2,200, and a sixth less
#: system time.
READ_SIZE = 1 << 20


class _Gunzip:
    """The inflated bytes of a gzip stream (RFC 1952), without its CRC-32.

    Python's gzip module computes a CRC-32 of every byte it inflates and
    compares it with the member's trailer: one more pass over a layer, 4%
    of a pull's CPU.  A layer's bytes are checked twice over already (the
    blob's SHA-256, then the diff id of what comes out here), so this
    reader parses the header, inflates, and skips the trailer.  Like
    gzip(1) it reads members one after another and ignores zero padding
    at the end.

    The compressed bytes are read into one buffer (``readinto``) and given
    to zlib a ``STEP`` at a time, as views of that buffer: no copy, and no
    new memory per read.  Headers and trailers take from the same buffer;
    what one step took too many (zlib's ``unused_data`` after a member,
    the bytes after a name) is given back, still there.
    """

    def __init__(self, compressed):
        import zlib

        self.zlib, self.compressed = zlib, compressed
        self.inflater = None
        self.buffer = None             # a memoryview of READ_SIZE bytes, made at the first read
        self.start = self.end = 0      # the part of the buffer not yet taken

    def read(self, size=-1):
        size = min(size, STEP) if size and size > 0 else STEP
        while self.inflater is not None or self._begin_member():
            try:
                data = self.inflater.decompress(self.inflater.unconsumed_tail or self._more(),
                                                size)
            except self.zlib.error as error:
                raise ValueError(f"invalid compressed data ({error})") from None
            if self.inflater.eof:
                # unused_data is the end of the step zlib was last given.
                self._give_back(len(self.inflater.unused_data))
                self._take(8)   # the trailer: CRC-32 and size, which the diff id makes moot
                self.inflater = None
            if data:
                return data
        return b""

    def _begin_member(self):
        """Read a member's header; False at the end of the stream."""
        while True:   # past zero padding
            data = self._more(optional=True)
            if not data:
                return False
            rest = len(bytes(data).lstrip(b"\0")) if data[0] == 0 else len(data)
            if rest:
                self._give_back(rest)
                break
        # ID1 ID2 CM FLG MTIME(4) XFL OS, then the optional fields FLG names.
        header = self._take(10)
        if header[:3] != b"\x1f\x8b\x08":
            raise ValueError("not a gzip stream (bad magic number or method)")
        flags = header[3]
        if flags & 4:   # FEXTRA: a two-byte length, then that many bytes
            self._take(int.from_bytes(self._take(2), "little"))
        for flag in (8, 16):   # FNAME, FCOMMENT: zero-terminated, of any length
            if flags & flag:
                while True:
                    data = self._more()
                    end = bytes(data).find(b"\0")
                    if end >= 0:
                        break
                self._give_back(len(data) - end - 1)
        if flags & 2:   # FHCRC
            self._take(2)
        self.inflater = self.zlib.decompressobj(-self.zlib.MAX_WBITS)
        return True

    def _more(self, limit=STEP, optional=False):
        """The next compressed bytes, at most ``limit``, as a view of the buffer.

        At the end of the stream this raises EOFError, or returns an empty
        result when ``optional``.
        """
        if self.start == self.end:
            if self.buffer is None:
                self.buffer = memoryview(bytearray(READ_SIZE))
            self.start, self.end = 0, self.compressed.readinto(self.buffer)
            if not self.end:
                if optional:
                    return b""
                raise EOFError("the gzip stream ends inside a member")
        data = self.buffer[self.start:min(self.start + limit, self.end)]
        self.start += len(data)
        return data

    def _give_back(self, count):
        """Untake the last ``count`` bytes the last :meth:`_more` gave."""
        self.start -= count

    def _take(self, count):
        """The next ``count`` bytes of a header or trailer."""
        taken = b""
        while len(taken) < count:
            taken += self._more(count - len(taken))
        return taken


class _Hashing:
    """A stream that computes the SHA-256 of everything read through it.

    It asks the stream below for a ``STEP`` at a time and hashes each
    piece once.  What a read does not take waits for the next read: the
    tar reader's 512-byte headers cost no call below, and a file's content
    comes back as views of the pieces, to be written as they are.  (An
    ``io.BufferedReader`` here would copy every byte twice more: into its
    buffer, then out.)  A read may return fewer bytes than asked for, as a
    pipe does; the tar reader reads on until it has what it needs.
    """

    def __init__(self, stream):
        import hashlib

        self.stream = stream
        self.hash = hashlib.sha256()
        self.piece, self.position = b"", 0

    def read(self, size):
        if self.position == len(self.piece):
            self.piece, self.position = self.stream.read(STEP), 0
            self.hash.update(self.piece)
        start = self.position
        self.position = min(start + size, len(self.piece))
        if self.position - start < 65536:
            return self.piece[start:self.position]   # a header: bytes, as parsing wants
        # A file's content: a slice of bytes would be a copy (the content
        # starts after a header, so a read rarely takes a whole piece);
        # a memoryview is the same bytes, and write(2) takes it as it is.
        return memoryview(self.piece)[start:self.position]

    def drain(self):
        """Read what tar left after its end marker: it is part of the diff id too."""
        while self.read(STEP):
            pass

    def digest(self):
        return "sha256:" + self.hash.hexdigest()


class _Prepend(io.RawIOBase):
    """A stream that gives back bytes already read, then the rest."""

    def __init__(self, head, rest):
        self.head, self.rest = head, rest

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            count = min(len(buffer), len(self.head))
            buffer[:count], self.head = self.head[:count], self.head[count:]
            return count
        data = self.rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class Image:
    """One stored image: its manifest, config and layers."""

    def __init__(self, store, manifest_digest):
        self.store = store
        self.digest = manifest_digest
        try:
            self.manifest = store.read_json(manifest_digest)
            self.config = store.read_json(self.manifest["config"]["digest"])
        except FileNotFoundError:
            raise host.EngineError(f"image {manifest_digest} is incomplete: a blob is missing")

    @property
    def id(self):
        """Docker's image id: the digest of the config."""
        return self.manifest["config"]["digest"]

    @property
    def diff_ids(self):
        return self.config.get("rootfs", {}).get("diff_ids", [])

    @property
    def run_config(self):
        """The ``config`` part of the image config: Cmd, Env, WorkingDir, ..."""
        return self.config.get("config") or {}

    def names(self):
        return [str(name) for name, digest in self.store.images() if digest == self.digest and name]

    def layer_directories(self, unpack=True):
        """Return the unpacked layer directories, lowest first."""
        directories = []
        for layer, diff_id in zip(self.manifest["layers"], self.diff_ids):
            if unpack:
                directories.append(self.store.unpack_layer(layer["digest"], diff_id,
                                                           layer["mediaType"]))
            else:
                directories.append(self.store.layer_path(diff_id))
        return directories

    def size(self):
        return sum(layer.get("size", 0) for layer in self.manifest["layers"])


def new_config(diff_ids, run_config, created_by, parent=None):
    """Return an OCI image config for the given layers."""
    now = utc_now()
    parent = parent or {}
    history = list(parent.get("history", []))
    history.append({"created": now, "created_by": created_by})
    return {
        "created": now,
        "architecture": parent.get("architecture", host_architecture()),
        "os": "linux",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history,
    }


def host_architecture():
    """The host's architecture in the OCI spelling (amd64, arm64, ...)."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def utc_now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_or_pull(store, text, policy="missing", progress_stream=None):
    """Return the image ``text`` names, pulling it first if ``policy`` says so.

    Docker's ``run``, ``create`` and ``build`` pull an image they do not
    have, and say so ("Unable to find image 'busybox:latest' locally");
    ``--pull`` chooses: ``missing`` (the default), ``always`` or
    ``never``.  An image id is never pulled: no registry serves one.  The
    registry client is imported only to pull (its HTTP client and, for
    HTTPS, ssl take milliseconds that a ``run`` of a stored image should
    not pay).
    """
    is_id = is_hexadecimal(text.removeprefix("sha256:"), 64)
    if policy != "always" or is_id:
        try:
            return store.lookup(text)
        except NoSuchImage:
            if policy == "never" or is_id:
                raise
    from minidocker import registry

    progress = registry.Progress(progress_stream)
    if policy != "always":
        reference = Reference.parse(text)
        shown = reference.familiar_repository
        if reference.tag:
            shown += f":{reference.tag}"
        if reference.digest:
            shown += f"@{reference.digest}"
        progress.say(f"Unable to find image '{shown}' locally")
    return registry.pull(text, progress=progress, store=store)


def canonical_json(value):
    return host.dump_json(value, canonical=True).encode()


def make_durable(path):
    """Write everything pending on ``path``'s filesystem to the disk, at once.

    syncfs(2) "is like sync(), but synchronizes just the filesystem
    containing file referred to by the open file descriptor fd".  Python
    has no syncfs, coreutils' ``sync --file-system`` (8.24 and later) is
    one; where it is older (CentOS 7's 8.22) sync(2) does the same for
    every filesystem.
    """
    try:
        host.run(["sync", "--file-system", path], 4)
    except host.EngineError as error:
        host.call(4, f"sync ({error})", os.sync)


def release_cached_pages(path):
    """Let the kernel reuse the memory that a written file's pages hold in its cache.

    posix_fadvise(2): "POSIX_FADV_DONTNEED attempts to free cached pages
    associated with the specified region. [...] Pages that have not yet
    been written out will be unaffected", so this follows
    :func:`make_durable`.  A pulled blob is kept for ``push`` and ``save``,
    not read again soon; the layers still arriving take its memory for
    their own pages.  On the reference VM that is the difference between
    0.25 and 3 ms per MiB written: memory the kernel has not used lately
    is slow to fill there (bench/README.md).
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as error:
        # "The advice is not binding": a filesystem that takes none costs
        # memory, not correctness.
        host.narrate(4, f"    posix_fadvise {path}: {error.strerror}; the pages stay cached")
    finally:
        os.close(descriptor)


_temporary_numbers = itertools.count()


def _make_temporary(directory, prefix, make):
    """Create a new temporary in ``directory`` with ``make(path)``; return the path.

    The name is PREFIX-PID-NUMBER: the PID tells
    :meth:`Store.remove_abandoned_temporaries` whose it is, the number
    keeps apart those of one process and its threads.  ``make`` must fail
    on a name that exists (O_EXCL, mkdir), so a leftover of an earlier
    process that had the same PID is never reused.  (The tempfile module
    would do, but its import costs a pull 4 ms.)
    """
    while True:
        path = os.path.join(directory, f"{prefix}{os.getpid()}-{next(_temporary_numbers)}")
        try:
            make(path)
            return path
        except FileExistsError:
            continue


def file_sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- unpacking a layer, safely -------------------------------------------

def unpack(stream, target):
    """Extract a layer tar stream into the empty directory ``target``.

    The archive is hostile until checked.  Every entry must land inside
    ``target``: no absolute names, no ``..``, no writing *through* a
    symbolic link the archive made earlier, no hard link to anything
    outside.  What an image may legitimately carry stays: owners, setuid
    bits, device nodes, extended attributes, modification times.
    Whiteouts become overlayfs' own format.  Directories get their times
    last, as Docker does: creating an entry inside a directory would
    change its modification time again.
    """
    known = {""}          # names checked to be real directories (see _make_parents)
    directory_times = []
    for entry in read_tar(stream):
        name = safe_name(entry.name)
        if name is None:
            continue
        directory, base = os.path.split(name)
        path = os.path.join(target, name)
        if base == OPAQUE_MARKER:
            _make_parents(target, name, entry.name, known)
            os.setxattr(os.path.join(target, directory), "trusted.overlay.opaque", b"y")
            continue
        if base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", ".."):
                raise host.EngineError(f"layer entry {entry.name!r}: invalid whiteout")
            # A layer lists only what changed, so the parent directory of
            # a deleted file need not be in this tar.
            _make_parents(target, os.path.join(directory, hidden), entry.name, known)
            whiteout = os.path.join(target, directory, hidden)
            _remove(whiteout, os.path.join(directory, hidden), known)
            os.mknod(whiteout, stat.S_IFCHR | 0o600, 0)
            continue
        _make_parents(target, name, entry.name, known)
        if entry.kind == DIRECTORY:
            if name not in known:
                _make_directory(path, name, known)
            _set_attributes(entry, path)
            directory_times.append((name, entry.mtime))
        elif entry.kind == REGULAR:
            descriptor = _create(lambda: os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600),
                path, name, known)
            try:
                entry.copy_to(descriptor)
                _set_file_attributes(entry, descriptor)
            finally:
                os.close(descriptor)
        elif entry.kind == HARD_LINK:
            # A second name for a file already unpacked, which has its own
            # owner and mode: the link's header does not change them.
            source = os.path.join(target, _hard_link_source(target, entry, known))
            _create(lambda: os.link(source, path, follow_symlinks=False), path, name, known)
        else:
            _create(lambda: _make_special(entry, path), path, name, known)
            _set_attributes(entry, path)
    for name, mtime in directory_times:
        if name in known:   # not replaced by a later entry
            os.utime(os.path.join(target, name), ns=(mtime, mtime), follow_symlinks=False)


def _make_special(entry, path):
    """Make a symbolic link, a FIFO or a device node."""
    if entry.kind == SYMBOLIC_LINK:
        os.symlink(entry.linkname, path)
    elif entry.kind == FIFO:
        os.mkfifo(path, 0o600)
    else:
        node_type = stat.S_IFCHR if entry.kind == CHARACTER_DEVICE else stat.S_IFBLK
        os.mknod(path, node_type | 0o600, os.makedev(entry.device_major, entry.device_minor))


def safe_name(name):
    """Return the entry's path relative to the layer root, or raise.

    ``None`` means the entry is the root itself (``./``), which is skipped.
    """
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise host.EngineError(f"layer entry {name!r} points outside the layer")
    return "/".join(parts) or None


def _make_parents(target, name, original, known, create=True):
    """Make sure every parent of ``name`` is a real directory, creating missing ones.

    A parent that is a symbolic link is refused: writing through a link the
    archive made (``etc -> /etc``, then ``etc/passwd``) would write on the
    host.  ``known`` holds the names already checked, so a layer of many
    files in one directory costs one lstat(2) for that directory, not one
    per file.  Missing parents are made 0755, as Docker makes them; without
    ``create`` a missing parent raises FileNotFoundError.
    """
    current = ""
    for part in name.split("/")[:-1]:
        current = f"{current}/{part}" if current else part
        if current in known:
            continue
        path = os.path.join(target, current)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(path)
            os.chmod(path, 0o755)   # mkdir(2)'s mode is masked by the umask
        else:
            if stat.S_ISLNK(mode):
                raise host.EngineError(f"layer entry {original!r} goes through a symbolic link")
            if not stat.S_ISDIR(mode):
                raise host.EngineError(f"layer entry {original!r}: a parent is not a directory")
        known.add(current)


def _make_directory(path, name, known):
    """Make a directory entry; one already there is kept, anything else replaced.

    A directory entry over a symbolic link must replace the link: using
    the link as the directory would chmod and chown its target.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            _remove(path, name, known)
            os.mkdir(path, 0o700)
    known.add(name)


def _create(make, path, name, known):
    """Run ``make`` to create ``path``; if the name is taken, replace what is there.

    A layer may carry the same name twice, and the later entry wins, as in
    ``tar -x``.  Trying first and removing only on EEXIST saves a syscall
    for each of the hundreds of entries that are new.
    """
    try:
        return make()
    except FileExistsError:
        _remove(path, name, known)
        return make()


def _remove(path, name, known):
    """Remove what is at ``path``; forget the directories that went with it."""
    if name in known:
        known.difference_update([other for other in known
                                 if other == name or other.startswith(name + "/")])
    rootfs.remove_path(path)


def _hard_link_source(target, entry, known):
    """Return the name a hard link entry links to, checked to be a file inside the layer."""
    try:
        source = safe_name(entry.linkname)
    except host.EngineError:
        raise host.EngineError(f"layer entry {entry.name!r}: hard link to "
                               f"{entry.linkname!r} points outside the layer")
    if source is None:
        raise host.EngineError(f"layer entry {entry.name!r}: hard link out of the layer")
    path = os.path.join(target, source)
    try:
        _make_parents(target, source, entry.linkname, known, create=False)
        missing = not stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        missing = True
    if missing:
        raise host.EngineError(f"layer entry {entry.name!r}: hard link to a missing file")
    return source


def _set_attributes(entry, path):
    """Give a new entry its owner, mode, time and extended attributes.

    A symbolic link is never followed, and has no mode of its own to set.
    The owner comes first: chown(2) clears the set-user-ID and set-group-ID
    bits of an executable, so chmod(2) must come after it.  A directory's
    time is set at the end of the layer (see :func:`unpack`).
    """
    os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    if entry.kind != SYMBOLIC_LINK:
        os.chmod(path, entry.mode)
    if entry.kind != DIRECTORY:
        os.utime(path, ns=(entry.mtime, entry.mtime), follow_symlinks=False)
    _set_extended_attributes(entry, path)


def _set_file_attributes(entry, descriptor):
    """The same for a regular file still open: no path is looked up again."""
    os.fchown(descriptor, entry.uid, entry.gid)
    os.fchmod(descriptor, entry.mode)
    os.utime(descriptor, ns=(entry.mtime, entry.mtime))
    _set_extended_attributes(entry, descriptor)


def _set_extended_attributes(entry, where):
    """Set the extended attributes a pax header carried (``SCHILY.xattr.*``)."""
    for key, value in entry.extended_attributes.items():
        try:
            if isinstance(where, int):
                os.setxattr(where, key, value)
            else:
                os.setxattr(where, key, value, follow_symlinks=False)
        except OSError as error:
            host.narrate(4, f"cannot keep xattr {key} on {entry.name}: {error.strerror}")


# -- the tar format, read -------------------------------------------------
#
# A tar archive is a sequence of 512-byte blocks.  Each entry is one header
# block (name, mode, owner, size, time, type, link target, all as text),
# then the file's bytes padded to a whole block; two zero blocks end it.
# Names longer than 100 bytes, owners above 2,097,151 and sizes above 8 GiB
# did not fit the 1988 layout, so two extensions put them in an entry of
# their own just before the one they describe: POSIX's pax header (type
# ``x``: "length key=value\n" records) and GNU's ``L``/``K`` entries (the
# long name or link as content).  Python's tarfile reads all of this, but
# at about 0.1 ms per entry in Python; a layer has thousands of entries,
# and this reader, which only reads what a layer may hold, is ten times
# faster.  References: POSIX.1-2017 pax(1) "ustar Interchange Format" and
# "pax Interchange Format"; GNU tar's manual, "Basic Tar Format".

BLOCK = 512
REGULAR, HARD_LINK, SYMBOLIC_LINK, CHARACTER_DEVICE, BLOCK_DEVICE, DIRECTORY, FIFO = \
    "0", "1", "2", "3", "4", "5", "6"
#: Type flags that are a regular file too: NUL (pre-POSIX) and 7 (contiguous).
_REGULAR_ALIASES = {"\0": REGULAR, "7": REGULAR}
#: Only a regular file has content; for the others POSIX says the size
#: "shall be ignored", and Go's archive/tar (Docker's reader) reads none.
_HEADER_ONLY = {HARD_LINK, SYMBOLIC_LINK, CHARACTER_DEVICE, BLOCK_DEVICE, DIRECTORY, FIFO}
_POSIX_MAGIC = b"ustar\x0000"
#: A name is at most PATH_MAX (4096) bytes and an extended attribute value
#: 64 KiB; a pax or GNU header larger than this is an attack.
EXTENSION_LIMIT = 8 << 20


class TarEntry:
    """One member of a tar archive, as :func:`read_tar` found it.

    ``mode`` holds the permission bits (setuid, setgid and sticky
    included), ``mtime`` is in nanoseconds, ``extended_attributes`` maps
    names to raw bytes.  The content of a regular file is read with
    :meth:`copy_to` before the next entry is asked for.
    """

    __slots__ = ("name", "kind", "mode", "uid", "gid", "size", "mtime", "linkname",
                 "device_major", "device_minor", "extended_attributes", "_stream", "_left")

    def copy_to(self, descriptor):
        """Write the file's content to an open descriptor."""
        while self._left:
            chunk = self._stream.read(min(self._left, 1 << 20))
            if not chunk:
                raise ValueError(f"unexpected end of data in {self.name!r}")
            self._left -= len(chunk)
            host.write_all(descriptor, chunk)

    def _skip(self):
        """Read past the rest of the content and its padding."""
        padding = -self.size % BLOCK if self.kind == REGULAR else 0
        left = self._left + padding
        while left:
            chunk = self._stream.read(min(left, 1 << 20))
            if not chunk:
                raise ValueError(f"unexpected end of data in {self.name!r}")
            left -= len(chunk)
        self._left = 0


def read_tar(stream):
    """Yield the entries of the tar archive ``stream`` as :class:`TarEntry`.

    Extension entries (pax, GNU long names) are applied to the entry they
    describe and not yielded.  A malformed archive raises ValueError; an
    entry of a kind a layer must not hold (a GNU sparse file, a volume of a
    multi-volume archive) raises host.EngineError.
    """
    global_records, records, long_name, long_link = {}, {}, None, None
    while True:
        block = _read_up_to(stream, BLOCK)
        if not block or block == bytes(BLOCK):
            # Docker's reader (Go) takes an empty stream for an empty layer.
            return
        if len(block) < BLOCK:
            raise ValueError("unexpected end of data in a header")
        kind, size = _check_header(block)
        if kind in ("x", "g", "L", "K"):
            if size > EXTENSION_LIMIT:
                # Read whole into memory: a hostile size would exhaust it.
                raise ValueError(f"a pax or GNU extension header of {size} bytes")
            data = _read_exactly(stream, size + (-size % BLOCK))[:size]
            if kind == "x":
                records = _pax_records(data)
            elif kind == "g":
                global_records.update(_pax_records(data))
            elif kind == "L":
                long_name = _text(data.split(b"\0", 1)[0])
            else:
                long_link = _text(data.split(b"\0", 1)[0])
            continue
        entry = _entry(block, kind, size, {**global_records, **records}, long_name, long_link)
        records, long_name, long_link = {}, None, None
        entry._stream = stream
        entry._left = entry.size if entry.kind == REGULAR else 0
        yield entry
        entry._skip()


def _check_header(block):
    """Return a header's type flag and size, after checking its checksum."""
    stored = _number(block[148:156])
    # "The chksum field shall be the ASCII representation of the octal
    # value of the simple sum of all bytes in the header logical record.
    # When calculating the checksum, the chksum field is treated as if it
    # were all <space> characters."  Old tars summed signed bytes.
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if stored != unsigned:
        signed = unsigned - 256 * sum(1 for byte in block[:148] + block[156:] if byte > 127)
        if stored != signed:
            raise ValueError("invalid header (bad checksum); is this a tar archive?")
    kind = chr(block[156])
    return _REGULAR_ALIASES.get(kind, kind), _number(block[124:136])


def _entry(block, kind, size, records, long_name, long_link):
    """Build the entry a header describes, with what extensions said about it."""
    if kind not in _HEADER_ONLY and kind != REGULAR:
        raise host.EngineError(f"layer entry {_text(block[:100].split(b'\0', 1)[0])!r} has "
                               f"tar type {kind!r}, which a layer does not hold")
    if any(key.startswith("GNU.sparse.") for key in records):
        raise host.EngineError("layer holds a GNU sparse file, which minidocker does not unpack")
    entry = TarEntry()
    name = _text(block[:100].split(b"\0", 1)[0])
    if block[257:265] == _POSIX_MAGIC and block[345] != 0:
        name = _text(block[345:500].split(b"\0", 1)[0]) + "/" + name
    entry.name = records.get("path") or long_name or name
    if kind == REGULAR and entry.name.endswith("/") and block[156] == 0:
        kind = DIRECTORY   # pre-POSIX tars marked directories with a trailing slash only
    entry.kind = kind
    entry.mode = _number(block[100:108]) & 0o7777
    entry.uid = int(records["uid"]) if "uid" in records else _number(block[108:116])
    entry.gid = int(records["gid"]) if "gid" in records else _number(block[116:124])
    entry.size = int(records["size"]) if "size" in records else size
    entry.mtime = _nanoseconds(records["mtime"]) if "mtime" in records \
        else _number(block[136:148]) * 1_000_000_000
    entry.linkname = records.get("linkpath") or long_link or \
        _text(block[157:257].split(b"\0", 1)[0])
    entry.device_major = _number(block[329:337]) if kind in (CHARACTER_DEVICE, BLOCK_DEVICE) else 0
    entry.device_minor = _number(block[337:345]) if kind in (CHARACTER_DEVICE, BLOCK_DEVICE) else 0
    entry.extended_attributes = {key[len("SCHILY.xattr."):]: value.encode("utf-8", "surrogateescape")
                                 for key, value in records.items()
                                 if key.startswith("SCHILY.xattr.")}
    if entry.size < 0 or entry.uid < 0 or entry.gid < 0:
        raise ValueError(f"invalid header for {entry.name!r}: a negative size or owner")
    return entry


def _number(field):
    """A numeric header field: octal text, or GNU's base-256 for large values."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ValueError(f"invalid number {bytes(field)!r} in a tar header") from None


def _pax_records(data):
    """Parse pax records: ``"%d %s=%s\\n", <length>, <keyword>, <value>``."""
    records, position = {}, 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
        except ValueError:
            raise ValueError("invalid pax header") from None
        record = data[space + 1:position + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ValueError("invalid pax header")
        key, _, value = record[:-1].partition(b"=")
        records[_text(key)] = _text(value)
        position += length
    return records


def _nanoseconds(text):
    """A pax time (``1700000000.123456789``) in nanoseconds."""
    seconds, _, fraction = text.partition(".")
    try:
        return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0) * \
            (-1 if seconds.startswith("-") else 1)
    except ValueError:
        raise ValueError(f"invalid pax time {text!r}") from None


def _text(raw):
    """Bytes of a name as text; bytes that are not UTF-8 survive the round trip."""
    return raw.decode("utf-8", "surrogateescape")


def _read_up_to(stream, size):
    """Read ``size`` bytes, fewer only at the end (a pipe may return less at a time)."""
    data = bytes(stream.read(size))   # bytes() of bytes is the object itself
    while 0 < len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _read_exactly(stream, size):
    data = _read_up_to(stream, size)
    if len(data) < size:
        raise ValueError("unexpected end of data")
    return data


# -- moving images in and out: save, load, history, export -------------------

def save(store, names, output):
    """Write images into one tar that ``docker load`` and ``podman load`` accept.

    The tar is what Docker 25 writes: the classic docker-archive index
    (``manifest.json``: for each image its config file, its tags and its
    layer files) and, beside it, an OCI image layout (``oci-layout``,
    ``index.json``) over the same ``blobs/sha256/`` files, so both kinds of
    reader find what they look for.  Layers are stored uncompressed, named
    by their diff id, which is what a docker-archive reader expects.
    """
    import hashlib
    import tarfile

    entries, index, files = [], [], {}
    for name in names:
        found = store.lookup(name)
        tags = _tags_to_save(store, name, found)
        layers = []
        for layer, diff_id in zip(found.manifest["layers"], found.diff_ids):
            files[diff_id] = ("layer", layer["digest"], layer["mediaType"])
            layers.append(diff_id)
        files[found.id] = ("bytes", store.read_blob(found.id))
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": found.id,
                       "size": len(files[found.id][1])},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": diff_id,
                        "size": _uncompressed_size(store, *files[diff_id][1:])}
                       for diff_id in layers]})
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        files[manifest_digest] = ("bytes", manifest)
        entries.append({"Config": _blob_name(found.id), "RepoTags": tags,
                        "Layers": [_blob_name(diff_id) for diff_id in layers]})
        for tag in tags or [None]:
            descriptor = {"mediaType": MEDIA_MANIFEST, "digest": manifest_digest,
                          "size": len(manifest)}
            if tag:
                reference = Reference.parse(tag)
                descriptor["annotations"] = {FULL_NAME: str(reference),
                                             REF_NAME: reference.tag or "latest"}
            index.append(descriptor)
    host.narrate(4, f"save {len(entries)} image(s), {len(files)} blob(s) to {output}")
    with _open_output(output) as stream, tarfile.open(fileobj=stream, mode="w|",
                                                      format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "oci-layout", host.dump_json({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(archive, "index.json",
                   host.dump_json({"schemaVersion": 2, "manifests": index}).encode())
        _add_bytes(archive, "manifest.json", host.dump_json(entries).encode())
        for digest, source in files.items():
            if source[0] == "bytes":
                _add_bytes(archive, _blob_name(digest), source[1])
            else:
                _add_layer(archive, store, digest, source[1], source[2])


def _tags_to_save(store, name, found):
    """The names to record: the one asked for, or all of them for an id."""
    try:
        reference = Reference.parse(name)
    except host.EngineError:
        reference = None
    if reference and reference.tag and any(str(n) == str(reference) for n in found.names()
                                           if n):
        return [f"{reference.familiar_repository}:{reference.tag}"]
    return [f"{Reference.parse(n).familiar_repository}:{Reference.parse(n).tag}"
            for n in found.names() if Reference.parse(n).tag]


def _blob_name(digest):
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _uncompressed_size(store, blob_digest, media_type):
    if media_type == MEDIA_LAYER or media_type.endswith(".tar"):
        return os.path.getsize(store.blob_path(blob_digest))
    size = 0
    with open(store.blob_path(blob_digest), "rb") as blob:
        stream = decompressed(blob, media_type)
        while chunk := stream.read(1 << 20):
            size += len(chunk)
    return size


def _open_output(output):
    if output in (None, "-"):
        import contextlib

        return contextlib.nullcontext(sys.stdout.buffer)
    return open(output, "wb")


def _add_bytes(archive, name, data):
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _add_layer(archive, store, diff_id, blob_digest, media_type):
    import shutil
    import tarfile
    import tempfile

    with tempfile.TemporaryFile(dir=store.layers) as plain:
        with open(store.blob_path(blob_digest), "rb") as blob:
            shutil.copyfileobj(decompressed(blob, media_type), plain, 1 << 20)
        info = tarfile.TarInfo(_blob_name(diff_id))
        info.size = plain.tell()
        info.mtime = 0
        info.mode = 0o644
        plain.seek(0)
        archive.addfile(info, plain)


def load(store, path):
    """Load the images of a docker-archive or an OCI archive; return their names.

    Every blob is checked against its digest (layers of a docker-archive
    against the diff ids in their config) before it enters the store; if
    anything is wrong, what this load added is removed again.
    """
    import shutil
    import tarfile
    import tempfile

    store.ensure()
    if path in (None, "-"):
        with tempfile.NamedTemporaryFile(dir=store.layers, prefix=".load-") as copy:
            shutil.copyfileobj(sys.stdin.buffer, copy, 1 << 20)
            copy.flush()
            return load(store, copy.name)
    try:
        archive = tarfile.open(path, "r:*")
    except FileNotFoundError:
        raise host.EngineError(f"open {path}: no such file or directory")
    except tarfile.TarError as error:
        raise host.EngineError(f"{path}: not a tar archive ({error})")
    added = []
    with archive:
        # extractfile() follows links between members inside the archive
        # (skopeo's docker-archive links LAYERID/layer.tar to a file).
        members = {safe_name(member.name): member for member in archive.getmembers()
                   if member.isfile() or member.issym() or member.islnk()}
        try:
            if "manifest.json" in members:
                return _load_docker_archive(store, archive, members, added)
            if "index.json" in members:
                return _load_oci_archive(store, archive, members, added)
            raise host.EngineError(f"{path}: neither a docker-archive (no manifest.json) "
                                   "nor an OCI archive (no index.json)")
        except BaseException:
            for digest in added:
                os.unlink(store.blob_path(digest))
            raise


def _read_member(archive, members, name, limit=16 << 20):
    member = members.get(safe_name(name) if name else None)
    if member is None:
        raise host.EngineError(f"the archive has no file {name!r}")
    if member.size > limit:
        raise host.EngineError(f"{name!r} in the archive is too large")
    return archive.extractfile(member).read()


def _copy_member_checked(store, archive, members, name, expected, decompress, added):
    """Copy one archive member into the store as a blob that must hash to ``expected``."""
    import gzip
    import shutil

    member = members.get(safe_name(name))
    if member is None:
        raise host.EngineError(f"the archive has no file {name!r}")
    if store.has_blob(expected):
        return os.path.getsize(store.blob_path(expected))
    temporary = store.temporary_file()
    try:
        source = archive.extractfile(member)
        if decompress:
            head = source.read(2)
            source.seek(0)
            if head == b"\x1f\x8b":
                source = gzip.GzipFile(fileobj=source)
        with open(temporary, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        size = os.path.getsize(temporary)
        store.put_blob_file(temporary, expected_digest=expected)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    added.append(expected)
    return size


def _load_docker_archive(store, archive, members, added):
    import hashlib

    loaded = []
    for entry in host.load_json(_read_member(archive, members, "manifest.json")):
        config_bytes = _read_member(archive, members, entry["Config"])
        config = host.load_json(config_bytes)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(entry["Layers"]):
            raise host.EngineError(f"{entry['Config']}: {len(diff_ids)} diff ids for "
                                   f"{len(entry['Layers'])} layers")
        layers = []
        for name, diff_id in zip(entry["Layers"], diff_ids):
            size = _copy_member_checked(store, archive, members, name, diff_id, True, added)
            layers.append({"mediaType": MEDIA_LAYER, "digest": diff_id, "size": size})
        if not store.has_blob(config_digest):
            store.put_blob(config_bytes)
            added.append(config_digest)
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers})
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if not store.has_blob(manifest_digest):
            store.put_blob(manifest)
            added.append(manifest_digest)
        store.image(manifest_digest).layer_directories()
        names = [Reference.parse(name) for name in entry.get("RepoTags") or []]
        for name in names:
            store.tag(name, manifest_digest)
        if not names:
            store.add_untagged(manifest_digest)
        loaded += [f"Loaded image: {name.familiar_repository}:{name.tag}" for name in names] \
            or [f"Loaded image ID: {config_digest}"]
    return loaded


def _load_oci_archive(store, archive, members, added):
    loaded = []
    index = host.load_json(_read_member(archive, members, "index.json"))
    for descriptor in index.get("manifests", []):
        manifest_digest, manifest = _resolve_archive_manifest(archive, members, descriptor)
        for blob in [manifest["config"], *manifest["layers"]]:
            _copy_member_checked(store, archive, members, _blob_name(blob["digest"]),
                                 blob["digest"], False, added)
        manifest_bytes = _read_member(archive, members, _blob_name(manifest_digest))
        if not store.has_blob(manifest_digest):
            store.put_blob(manifest_bytes, expected_digest=manifest_digest)
            added.append(manifest_digest)
        store.image(manifest_digest).layer_directories()
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(FULL_NAME) or annotations.get(REF_NAME)
        if name:
            reference = Reference.parse(name)
            store.tag(reference, manifest_digest)
            loaded.append(f"Loaded image: {reference.familiar_repository}:{reference.tag}")
        else:
            store.add_untagged(manifest_digest)
            config_digest = manifest["config"]["digest"]
            loaded.append(f"Loaded image ID: {config_digest}")
    return loaded


def _resolve_archive_manifest(archive, members, descriptor):
    """Follow an index in an OCI archive to the manifest for this host."""
    import hashlib

    digest = descriptor["digest"]
    for _ in range(4):
        data = _read_member(archive, members, _blob_name(digest))
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise host.EngineError(f"blob {digest} in the archive does not match its digest")
        document = host.load_json(data)
        if "manifests" not in document:
            return digest, document
        choices = document["manifests"]
        matching = [entry for entry in choices
                    if (entry.get("platform") or {}).get("architecture") == host_architecture()]
        if not matching:
            raise host.EngineError(f"no matching manifest for linux/{host_architecture()} "
                                   "in the archive's index")
        digest = matching[0]["digest"]
    raise host.EngineError("the archive's indexes nest too deeply")


def history(found):
    """The image's history, newest first: ``(created, created_by, size, comment, empty)``.

    ``empty_layer`` entries (a CMD or ENV change) made no layer; the others
    are paired with the manifest's layers in order.
    """
    layers = list(found.manifest["layers"])
    rows = []
    for entry in found.config.get("history") or []:
        empty = bool(entry.get("empty_layer"))
        size = 0 if empty or not layers else layers.pop(0).get("size", 0)
        rows.append((entry.get("created", ""), entry.get("created_by", ""), size,
                     entry.get("comment", ""), empty))
    return list(reversed(rows))


def export(directories, output):
    """Write the merged view of stacked layer directories (lowest first) as one tar.

    This is what overlayfs shows, computed by hand: walk the layers from the
    top down, let the first layer that has a path win, and let a whiteout
    (char device 0/0) or an opaque directory hide the path in every layer
    below it.
    """
    import tarfile

    hidden, seen = set(), set()
    with _open_output(output) as stream, tarfile.open(fileobj=stream, mode="w|",
                                                      format=tarfile.PAX_FORMAT) as archive:
        for directory in reversed(directories):
            hidden_below = set()
            for current, subdirectories, files in os.walk(directory):
                relative_directory = os.path.relpath(current, directory)
                for name in sorted(subdirectories + files):
                    relative = os.path.normpath(os.path.join(relative_directory, name))
                    path = os.path.join(current, name)
                    if _is_hidden(relative, hidden):
                        continue
                    status = os.lstat(path)
                    if stat.S_ISCHR(status.st_mode) and status.st_rdev == 0:
                        hidden_below.add(relative)
                        continue
                    if stat.S_ISDIR(status.st_mode) and _is_opaque(path):
                        hidden_below.add(relative + "/")
                    if relative not in seen:
                        seen.add(relative)
                        archive.add(path, arcname=relative, recursive=False)
                subdirectories[:] = [d for d in subdirectories if not _is_hidden(
                    os.path.normpath(os.path.join(relative_directory, d)), hidden)]
            hidden |= hidden_below


def _is_hidden(relative, hidden):
    """Say whether a whiteout or opaque directory of an upper layer hides ``relative``."""
    parts = relative.split("/")
    for count in range(1, len(parts) + 1):
        prefix = "/".join(parts[:count])
        if prefix in hidden or (count < len(parts) and prefix + "/" in hidden):
            return True
    return False


def _is_opaque(path):
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False

"""Chapter 4: registries, where images come from and go to.

A registry is a web server speaking the OCI distribution API.  Pulling an
image is a short conversation over plain HTTP(S), and ``minidocker --trace
pull busybox`` shows every line of it::

    GET /v2/                                   401, WWW-Authenticate: Bearer
                                               realm=...,service=...
    GET REALM?service=...&scope=repository:library/busybox:pull
                                               200, {"token": "..."}
    GET /v2/library/busybox/manifests/latest   200, an index: one manifest
                                               per platform
    GET /v2/library/busybox/manifests/DIGEST   200, the manifest for ours
    GET /v2/library/busybox/blobs/CONFIG       200, the image config
    GET /v2/library/busybox/blobs/LAYER ...    200, each layer (gzip tar)

The HTTP/1.1 underneath is the engine's own client, in ``http_client.py``.

Everything after the manifest is addressed by digest, so the client checks
every byte it receives: a blob whose SHA-256 or size is not the one the
manifest promised is refused before it enters the store.  The manifest
itself is checked against the digest it was asked for by, or against the
``Docker-Content-Digest`` the registry announced.

Pushing is the same conversation backwards: ``HEAD`` each blob to see if the
registry has it, upload the ones it lacks (``POST`` an upload, ``PUT`` the
bytes with their digest), then ``PUT`` the manifest under the tag.

The settings a user can give, in ``ENGINE_ROOT/daemon.json`` (the keys of
Docker's ``/etc/docker/daemon.json``) or the environment:

* ``registry-mirrors`` / ``MINIDOCKER_REGISTRY_MIRRORS`` (comma separated):
  registries asked first for Docker Hub images, as Docker's mirrors are;
* ``insecure-registries`` / ``MINIDOCKER_INSECURE_REGISTRIES``: hosts that
  may be reached over plain HTTP or HTTPS with an unverified certificate.
  ``localhost``, ``127.0.0.1`` and ``::1`` are insecure by default (Docker
  allows all of 127.0.0.0/8; minidocker only these three names, so that a
  verified HTTPS registry can be tested on another loopback address);
* ``ENGINE_ROOT/certs.d/HOST:PORT/ca.crt``: a CA to trust for one registry,
  as Docker's ``/etc/docker/certs.d``;
* ``ENGINE_ROOT/auth.json`` (mode 0600, written by ``login``): credentials,
  in the ``{"auths": {HOST: {"auth": base64(user:password)}}}`` form that
  Docker's ``config.json`` and podman's ``auth.json`` use.
"""

import hashlib
import os
import sys
import time

from minidocker import host
from minidocker import http_client
from minidocker import image
from minidocker import rootfs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)

#: Sent with every manifest request.  The registry answers with the first
#: form it has that the client lists; distribution 2.8 serves an OCI
#: manifest only to a client that names the OCI type here.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"
DEFAULT_INSECURE = ("localhost", "127.0.0.1", "::1")

#: Manifests are small; a "manifest" of more than this is an attack (the
#: limit containerd uses).
MANIFEST_LIMIT = 4 * 1024 * 1024
ATTEMPTS = 3
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
CHUNK = 1 << 20
#: Layers read and unpacked at once, each on its own connection: Docker's
#: default ``max-concurrent-downloads`` (3), but no more than the CPUs this
#: process may use.  Unpacking is CPU work, and a thread beyond the cores
#: only trades the GIL back and forth (measured on 2 cores: 2 threads beat
#: 3).  One more request than that is sent ahead: a registry takes a while
#: to answer (docker-registry on this machine 6 to 11 ms per blob), and that
#: wait passes while the other layers are unpacked.
PARALLEL_LAYERS = min(3, len(os.sched_getaffinity(0)))


# -- pull: the main idea ---------------------------------------------------

def pull(text, platform=None, progress=None, store=None):
    """Pull the image ``text`` names into the store and return it.

    Every blob is downloaded into a temporary file inside the store and
    checked (size, then SHA-256) before it is renamed into place; layers are
    unpacked once per diff id.  If anything fails, the blobs this pull added
    are removed again, so a failed pull leaves the store as it found it.
    """
    store = store or image.Store()
    store.ensure()
    reference = image.Reference.parse(text)
    progress = progress or Progress(None)
    wanted = Platform.parse(platform) if platform else Platform.host()
    last_error = None
    for client in clients_for(reference.domain, mirrors_first=True):
        try:
            try:
                return _pull_from(client, reference, wanted, progress, store)
            except image.IncompleteImage:
                # A parallel pull that failed took back a blob this one had
                # found already stored; once more fetches what is missing.
                return _pull_from(client, reference, wanted, progress, store)
        except RegistryUnreachable as error:
            # Docker falls back from a mirror to the next endpoint on any
            # error; so do we, but only on errors that say "not here".
            last_error = error
            host.narrate(4, f"{client.host}: {error}; trying the next endpoint")
    raise host.EngineError(str(last_error))


def _pull_from(client, reference, wanted, progress, store):
    repository = client.repository_path(reference)
    progress.say(f"{reference.tag or reference.digest}: Pulling from {repository}")
    manifest_digest, manifest = client.get_manifest(repository, reference.digest or reference.tag)
    if manifest["mediaType"] in INDEXES:
        entry = choose_platform(manifest["document"], wanted, str(reference))
        manifest_digest, manifest = client.get_manifest(repository, entry["digest"])
        if manifest["mediaType"] in INDEXES:
            raise host.EngineError(f"{reference}: an index inside an index is not supported")
    document = manifest["document"]
    check_manifest(document, reference)
    added, unpacked = [], []
    try:
        config_bytes = client.get_small_blob(repository, document["config"])
        try:
            config = host.load_json(config_bytes)
        except ValueError as error:
            raise host.EngineError(f"{reference}: the image config is not JSON ({error})")
        check_config(config, document, wanted, reference)
        for layer in document["layers"]:
            check_layer_media_type(layer)
        staged = fetch_layers(client, repository, document["layers"],
                              config["rootfs"]["diff_ids"], store, progress)
        install_layers(store, staged, added, unpacked)
        for layer in document["layers"]:
            progress.update(short(layer["digest"]), "Pull complete")
        # Config and manifest last: the layers need nothing from the disk
        # to start, and an image is whole only once its manifest is stored.
        added += store_blob_bytes(store, config_bytes, document["config"]["digest"])
        added += store_blob_bytes(store, manifest["bytes"], manifest_digest)
    except BaseException:
        undo_pull(store, added, unpacked)
        raise
    named = reference.without_digest() if reference.tag else reference
    up_to_date = any(str(name) == str(named) and digest == manifest_digest
                     for name, digest in store.images() if name is not None)
    store.tag(named, manifest_digest, distributed=True)
    progress.say(f"Digest: {manifest_digest}")
    progress.say(f"Status: {'Image is up to date' if up_to_date else 'Downloaded newer image'} "
                 f"for {named.familiar_repository}"
                 f"{':' + named.tag if named.tag else '@' + manifest_digest}")
    return store.image(manifest_digest)


def undo_pull(store, blobs, layer_directories):
    """Remove what a failed pull added, so the store is as it was.

    Under the store's lock, and sparing any blob or unpacked layer an image
    was tagged with meanwhile: a parallel pull of an image sharing a layer
    may have found it already there and used it.
    """
    with host.locked(store.lock_path):
        in_use = store.referenced_blobs()
        for digest in blobs:
            if digest in in_use or not store.has_blob(digest):
                continue
            host.narrate(4, f"pull failed: remove blob {short(digest)} again")
            os.unlink(store.blob_path(digest))
        layers_in_use = store.referenced_layer_directories()
        for directory in layer_directories:
            if directory in layers_in_use or not os.path.isdir(directory):
                continue
            host.narrate(4, f"pull failed: remove unpacked layer "
                            f"{os.path.basename(directory)[:12]}")
            rootfs.remove_tree(directory)


def store_blob_bytes(store, data, digest):
    """Put a small, already checked blob into the store; say if it was new."""
    if store.has_blob(digest):
        return []
    store.put_blob(data, expected_digest=digest)
    return [digest]


# -- layers: downloaded a few at a time, unpacked as they arrive --------------

class StagedLayer:
    """What one layer's fetch left ready, still hidden from the store.

    ``blob`` is a checked temporary file to rename to the layer's digest,
    ``directory`` a checked staging directory to rename to its diff id;
    either is None when the store has that part already.
    """

    def __init__(self, digest, diff_id, blob=None, directory=None):
        self.digest, self.diff_id, self.blob, self.directory = digest, diff_id, blob, directory

    def discard(self):
        if self.blob and os.path.exists(self.blob):
            os.unlink(self.blob)
        if self.directory and os.path.isdir(self.directory):
            rootfs.remove_tree(self.directory)


class Cancelled(Exception):
    """Another layer of the same pull failed; this one stopped early."""


def fetch_layers(client, repository, layers, diff_ids, store, progress):
    """Fetch every layer the store lacks, ``PARALLEL_LAYERS`` at a time.

    One request more than that is sent ahead (``requests``), and a layer
    takes its slot (``slots``) only once the registry has answered, so the
    registry's time to answer passes while the other layers unpack.

    Each layer takes one pass over its bytes: as they arrive from the socket
    they are hashed, written to a temporary blob, decompressed, hashed again
    (the diff id) and unpacked into a staging directory.  A layer is checked
    whole before anything of it becomes visible.  The threads overlap well
    because the heavy steps (``recv``, SHA-256, zlib, ``write``) release the
    GIL.  If one layer fails, the others stop at their next chunk and
    everything staged is thrown away.  Returns the :class:`StagedLayer` list.
    """
    import threading

    jobs, seen_digests, seen_diff_ids = [], set(), set()
    for descriptor, diff_id in zip(layers, diff_ids):
        if descriptor["digest"] in seen_digests:
            continue  # the same layer twice in one image is fetched once
        seen_digests.add(descriptor["digest"])
        # A second blob with the same content (another compression) is only
        # downloaded: the first one unpacks the directory they share.
        unpack = diff_id not in seen_diff_ids
        seen_diff_ids.add(diff_id)
        jobs.append((descriptor, diff_id, unpack))
    abort = threading.Event()
    requests = threading.Semaphore(PARALLEL_LAYERS + 1)
    slots = threading.Semaphore(PARALLEL_LAYERS)
    results = [None] * len(jobs)

    def work(number, descriptor, diff_id, unpack):
        staged = None
        try:
            with requests:
                staged = fetch_layer(client, repository, descriptor, diff_id, unpack,
                                     store, progress, abort, slots)
            if staged.blob or staged.directory:
                # Durable before install_layers renames it into view; the
                # next layer downloads meanwhile (see install_layers).
                image.make_durable(store.root)
                if staged.blob:
                    image.release_cached_pages(staged.blob)
            results[number] = staged
        except BaseException as error:
            if staged:
                staged.discard()
            results[number] = error
            abort.set()

    threads = [threading.Thread(target=work, args=(number, *job), daemon=True)
               for number, job in enumerate(jobs)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        # Ctrl-C: stop every layer at its next chunk and keep nothing.
        abort.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join()
        _discard(results)
        raise
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        _discard(results)
        raise next((error for error in errors if not isinstance(error, Cancelled)), errors[0])
    return results


def _discard(results):
    for result in results:
        if isinstance(result, StagedLayer):
            result.discard()


def fetch_layer(client, repository, descriptor, diff_id, unpack, store, progress, abort, slots):
    """Fetch one layer: its blob, its unpacked directory, or both, as the store needs.

    The bytes are read and unpacked while holding one of the ``slots``
    (a semaphore); a download asks for it only once the registry answered.
    """
    digest, media_type = descriptor["digest"], descriptor["mediaType"]
    identifier = short(digest)
    if abort.is_set():
        raise Cancelled()
    have_blob = store.has_blob(digest)
    unpack = unpack and not os.path.isdir(store.layer_path(diff_id))
    if have_blob and not unpack:
        progress.update(identifier, "Already exists")
        return StagedLayer(digest, diff_id)
    if have_blob:
        with slots, open(store.blob_path(digest), "rb") as blob:
            if abort.is_set():  # another layer failed while this one waited for its slot
                raise Cancelled()
            return StagedLayer(digest, diff_id, directory=store.unpack_into_staging(
                blob, digest, diff_id, media_type))
    progress.update(identifier, "Pulling fs layer")

    def receive(reader):
        if not unpack:
            progress.update(identifier, "Verifying Checksum")
            reader.finish()
            return None
        try:
            staging = store.unpack_into_staging(reader, digest, diff_id, media_type)
        except host.EngineError:
            # Bytes that are not the blob the manifest names explain any
            # unpacking failure; say that first.
            reader.finish()
            raise
        progress.update(identifier, "Verifying Checksum")
        try:
            reader.finish()
        except BaseException:
            rootfs.remove_tree(staging)
            raise
        return staging

    temporary = store.temporary_file()
    try:
        directory = client.fetch_blob(
            repository, descriptor, receive, gate=slots, copy_to=temporary, abort=abort,
            report=lambda done: progress.bytes(identifier, done, descriptor["size"]))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    progress.update(identifier, "Download complete")
    return StagedLayer(digest, diff_id, blob=temporary, directory=directory)


def install_layers(store, staged, added, unpacked):
    """Give staged layers their names, then make the names durable.

    Durability is bought once per layer, not per file: fsync(2) of each of
    a layer's hundreds of files would cost a disk flush each.  When a layer
    is staged, one syncfs(2) of the store's filesystem (``make_durable``,
    called by :func:`fetch_layers` while other layers still download)
    writes its blob and all its files at once; only after that do these
    renames give them their names.  A crash before the renames leaves
    hidden temporaries (the next command removes them); a crash after finds
    complete content under every name, never a blob or a layer whose name
    promises bytes that did not reach the disk.  The renames themselves are
    made durable before the image gets its tag.
    """
    try:
        for layer in staged:
            if layer.blob:
                if not store.has_blob(layer.digest):
                    added.append(layer.digest)
                store.install_blob(layer.blob, layer.digest)
                layer.blob = None
            if layer.directory:
                if store.install_layer(layer.directory, layer.diff_id):
                    unpacked.append(store.layer_path(layer.diff_id))
                layer.directory = None
        store.sync_directories()
    finally:
        _discard(staged)


# -- what a manifest must say ----------------------------------------------

def check_manifest(document, reference):
    """Refuse a manifest that does not describe one image we can unpack."""
    if not isinstance(document.get("config"), dict) or not isinstance(document.get("layers"), list):
        raise host.EngineError(f"{reference}: the manifest has no config or no layers")
    for descriptor in [document["config"], *document["layers"]]:
        check_descriptor(descriptor, reference)


def check_descriptor(descriptor, reference):
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("size"), int) \
            or descriptor["size"] < 0 \
            or not image.is_digest(str(descriptor.get("digest"))):
        raise host.EngineError(f"{reference}: the manifest has an invalid descriptor: "
                               f"{host.dump_json(descriptor)[:200]}")


def check_layer_media_type(descriptor):
    """Say clearly which layer compressions this engine can unpack."""
    media_type = descriptor.get("mediaType", "")
    if not isinstance(media_type, str):
        raise host.EngineError(f"layer {short(descriptor['digest'])} has a media type that "
                               f"is not a string: {host.dump_json(media_type)[:100]}")
    if "foreign" in media_type or descriptor.get("urls"):
        raise host.EngineError(f"layer {short(descriptor['digest'])} is a foreign layer "
                               f"({media_type}) that must be fetched from elsewhere; "
                               "minidocker only pulls from the registry")
    if media_type.endswith("zstd"):
        try:
            import compression.zstd  # noqa: F401  (Python 3.14 and later)
        except ImportError:
            raise host.EngineError(
                f"layer {short(descriptor['digest'])} is zstd-compressed, and this Python "
                f"({sys.version.split()[0]}) has no compression.zstd module (Python 3.14 adds it)")
    elif not (media_type.endswith(("tar", "tar.gzip", "tar+gzip"))):
        raise host.EngineError(f"layer {short(descriptor['digest'])} has an unsupported "
                               f"media type {media_type!r}")


def check_config(config, document, wanted, reference):
    """The config must list one diff id per layer, for the platform we run."""
    if not isinstance(config, dict) or not isinstance(config.get("rootfs", {}), dict):
        raise host.EngineError(f"{reference}: the image config is not a JSON object "
                               "with a rootfs object")
    diff_ids = config.get("rootfs", {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(document["layers"]):
        raise host.EngineError(f"{reference}: the image config lists "
                               f"{len(diff_ids or [])} diff ids for "
                               f"{len(document['layers'])} layers")
    for diff_id in diff_ids:
        if not image.is_digest(str(diff_id)):
            raise host.EngineError(f"{reference}: invalid diff id {diff_id!r}")
    found = Platform(config.get("os", ""), config.get("architecture", ""), config.get("variant"))
    if not found.matches(wanted):
        # Docker pulls the image anyway and warns; so do we.
        host.narrate(4, f"warning: the image's platform ({found}) does not match the "
                        f"requested platform ({wanted})")


# -- platforms -------------------------------------------------------------

class Platform:
    """An ``os/architecture[/variant]`` triple, as in ``--platform linux/arm64``."""

    MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm",
                "armv6l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
                "s390x": "s390x", "riscv64": "riscv64"}

    def __init__(self, os_name, architecture, variant=None):
        self.os, self.architecture, self.variant = os_name, architecture, variant or None

    @classmethod
    def host(cls):
        machine = os.uname().machine
        variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
        return cls("linux", cls.MACHINES.get(machine, machine), variant)

    @classmethod
    def parse(cls, text):
        parts = text.lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise host.EngineError(f'invalid platform "{text}": expected os/arch[/variant]')
        return cls(*parts)

    def matches(self, other):
        """Say whether an image made for ``self`` runs as ``other`` asks."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        # arm64 images are v8 unless they say otherwise.
        mine = self.variant or ("v8" if self.architecture == "arm64" else None)
        theirs = other.variant or ("v8" if other.architecture == "arm64" else None)
        return theirs is None or mine == theirs

    def __str__(self):
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


def choose_platform(index, wanted, name):
    """Pick the manifest for ``wanted`` from an index, as Docker does."""
    entries = index.get("manifests", [])
    if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and image.is_digest(str(entry.get("digest")))
            and isinstance(entry.get("platform") or {}, dict) for entry in entries):
        # A digest goes into the next request's path: "../../x" must not.
        raise host.EngineError(f"{name}: the manifest list has an invalid entry")
    for entry in entries:
        description = entry.get("platform") or {}
        offered = Platform(description.get("os", ""), description.get("architecture", ""),
                           description.get("variant"))
        if offered.matches(wanted):
            host.narrate(4, f"index: {offered} is {entry.get('digest')}")
            return entry
    raise host.EngineError(f"no matching manifest for {wanted} in the manifest list "
                           f"entries of {name}")


# -- push ------------------------------------------------------------------

def push(text, progress=None, store=None):
    """Push a stored image to the registry its name points at.

    Return the manifest digest the registry now serves it under.
    """
    store = store or image.Store()
    reference = image.Reference.parse(text)
    stored = store.lookup(text)
    progress = progress or Progress(None)
    client = clients_for(reference.domain, mirrors_first=False)[0]
    repository = client.repository_path(reference)
    progress.say(f"The push refers to repository [{reference.repository}]")
    scope = f"repository:{repository}:pull,push"
    manifest = store.read_blob(stored.digest)
    document = host.load_json(manifest)
    for descriptor in [*reversed(document["layers"]), document["config"]]:
        identifier = short(descriptor["digest"])
        if client.has_blob(repository, descriptor["digest"], scope):
            progress.update(identifier, "Layer already exists")
            continue
        progress.update(identifier, "Preparing")
        client.upload_blob(repository, descriptor, store.blob_path(descriptor["digest"]), scope)
        progress.update(identifier, "Pushed")
    media_type = document.get("mediaType", OCI_MANIFEST)
    tag = reference.tag or "latest"
    digest = client.put_manifest(repository, tag, manifest, media_type, scope)
    store.tag(reference.without_digest(), stored.digest, distributed=True)
    progress.say(f"{tag}: digest: {digest} size: {len(manifest)}")
    return digest


# -- login -----------------------------------------------------------------

def login(server, username, password):
    """Check credentials against a registry, then keep them in auth.json."""
    import base64  # here: only login and stored credentials need it

    domain = normalise_server(server)
    client = clients_for(domain, mirrors_first=False)[0]
    client.credentials = (username, password)
    client.check_login()
    credentials = read_credentials()
    secret = base64.b64encode(f"{username}:{password}".encode()).decode()
    credentials.setdefault("auths", {})[domain] = {"auth": secret}
    write_credentials(credentials)
    return domain


def logout(server):
    """Forget the credentials for ``server``; say whether there were any."""
    domain = normalise_server(server)
    credentials = read_credentials()
    if domain not in credentials.get("auths", {}):
        return False
    del credentials["auths"][domain]
    write_credentials(credentials)
    return True


def normalise_server(server):
    """``docker login`` with no server, or any spelling of Docker Hub, is docker.io."""
    server = (server or DOCKER_HUB).strip()
    scheme, separator, rest = server.partition("://")
    if separator and scheme in ("http", "https"):
        server = rest
    server = server.rstrip("/")
    server = server.removesuffix("/v1").removesuffix("/v2")
    if server in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        return DOCKER_HUB
    return server


def credentials_path():
    return os.path.join(host.engine_root(), "auth.json")


def read_credentials():
    """Read auth.json: ``{"auths": {REGISTRY: {"auth": BASE64("user:password")}}}``.

    A person may edit the file, so it is checked as ``daemon.json`` is: a
    file of another shape is one line on stderr, never a traceback.
    """
    path = credentials_path()
    try:
        document = host.read_json(path)
    except FileNotFoundError:
        return {"auths": {}}
    except ValueError as error:
        raise host.EngineError(f"{path} is not valid JSON: {error}")
    except OSError as error:  # a directory, say
        raise host.EngineError(f"{path} cannot be read: {error.strerror}")
    auths = document.get("auths", {}) if isinstance(document, dict) else None
    if not isinstance(auths, dict) or not all(isinstance(entry, dict) for entry in auths.values()):
        raise host.EngineError(f'{path} must hold a JSON object whose "auths" maps each '
                               "registry to an object")
    return document


def write_credentials(credentials):
    # write_atomically creates the file with mode 0600: passwords are in it.
    os.makedirs(host.engine_root(), exist_ok=True)
    import json  # indented for people, as Docker writes its config.json

    host.write_atomically(credentials_path(), json.dumps(credentials, indent=2) + "\n")


def credentials_for(domain):
    """Return ``(user, password)`` stored for ``domain``, or None."""
    entry = read_credentials().get("auths", {}).get(domain)
    if not entry or entry.get("auth") in (None, ""):
        return None  # Docker too reads an empty auth as no credentials
    import base64  # only now: every pull asks, few have credentials stored

    try:
        # Go's decoder (Docker's) takes the base64 alphabet and skips line breaks.
        text = base64.b64decode(entry["auth"].replace("\r", "").replace("\n", ""),
                                validate=True).decode()
    except (AttributeError, ValueError):  # not a string; binascii.Error; not UTF-8
        text = ""
    user, separator, password = text.partition(":")
    if not separator:
        raise host.EngineError(f'{credentials_path()}: the "auth" of {domain} must be '
                               'the base64 of "user:password"')
    return user, password


# -- settings: mirrors and insecure registries -------------------------------

def settings():
    """Read ``ENGINE_ROOT/daemon.json`` (missing means defaults)."""
    path = os.path.join(host.engine_root(), "daemon.json")
    try:
        document = host.read_json(path)
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise host.EngineError(f"{path} is not valid JSON: {error}")
    except OSError as error:  # a directory, say
        raise host.EngineError(f"{path} cannot be read: {error.strerror}")
    if not isinstance(document, dict):
        raise host.EngineError(f"{path} must hold a JSON object")
    for key in ("registry-mirrors", "insecure-registries"):
        value = document.get(key, [])
        if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
            raise host.EngineError(f"{path}: {key} must be a list of strings")
    return document


def registry_mirrors():
    """The mirrors for Docker Hub, environment first, as ``(scheme, host[:port], path)``.

    A mirror comes from a setting, so it is checked as any input is: an
    http:// or https:// URL with a host name (or address) and a valid
    port, maybe a path, and no query or fragment, as Docker asks.
    """
    listed = [m for m in os.environ.get("MINIDOCKER_REGISTRY_MIRRORS", "").split(",") if m.strip()]
    listed += settings().get("registry-mirrors", [])
    mirrors = []
    for mirror in listed:
        text = mirror.strip()
        if not text.startswith(("http://", "https://")):
            raise host.EngineError(f"registry mirror {text!r} must start with http:// or https://")
        scheme, _, rest = text.rstrip("/").partition("://")
        address, slash, path = rest.partition("/")
        if "?" in rest or "#" in rest:
            raise host.EngineError(f"registry mirror {text!r}: a query or fragment at the end "
                                   "of the URL is not allowed")
        try:
            http_client.split_authority(address)
        except host.EngineError:
            raise host.EngineError(f"registry mirror {text!r}: invalid host name or port") from None
        if path and not http_client.only(path, http_client.VISIBLE):
            raise host.EngineError(f"registry mirror {text!r}: the path may hold only printable "
                                   "ASCII characters and no spaces")
        mirrors.append((scheme, address, slash + path))
    return mirrors


def insecure_registries():
    listed = [r for r in os.environ.get("MINIDOCKER_INSECURE_REGISTRIES", "").split(",") if r.strip()]
    listed += settings().get("insecure-registries", [])
    return {entry.strip() for entry in listed} | set(DEFAULT_INSECURE)


def is_insecure(address):
    """Say whether ``host[:port]`` may be reached without a verified certificate."""
    insecure = insecure_registries()
    hostname = http_client.split_authority(address)[0]
    return address in insecure or hostname in insecure or f"[{hostname}]" in insecure


def clients_for(domain, mirrors_first):
    """The endpoints to try for a registry domain, in order."""
    clients = []
    if domain == DOCKER_HUB:
        if mirrors_first:
            for scheme, address, path in registry_mirrors():
                clients.append(Client(DOCKER_HUB, address, schemes=[scheme],
                                      verify=scheme == "https" and not is_insecure(address),
                                      base_path=path, mirror=True))
        clients.append(Client(DOCKER_HUB, DOCKER_HUB_HOST, schemes=["https"], verify=True))
    elif is_insecure(domain):
        # Docker's rule for insecure registries: HTTPS first without
        # verifying the certificate, plain HTTP if TLS itself fails.
        clients.append(Client(domain, domain, schemes=["https", "http"], verify=False))
    else:
        clients.append(Client(domain, domain, schemes=["https"], verify=True))
    return clients


# -- one endpoint: the distribution API over http_client --------------------

class RegistryUnreachable(host.EngineError):
    """The endpoint could not be used; another one (a mirror's origin) may."""


class Client:
    """One registry endpoint: how to reach it and how to be let in.

    Authentication follows the registry's ``WWW-Authenticate`` challenge:
    ``Basic`` sends the stored user and password with each request;
    ``Bearer`` asks the named realm for a token for each scope
    (``repository:NAME:pull``), with the stored credentials if there are
    any, anonymously otherwise (how Docker Hub serves public images).
    """

    def __init__(self, domain, address, schemes, verify, base_path="", mirror=False):
        self.domain = domain
        self.host = address
        self.schemes = schemes
        self.verify = verify
        self.base_path = base_path.rstrip("/")
        self.mirror = mirror
        self.scheme = None
        self.challenge = None
        self.tokens = {}
        # A mirror gets the credentials stored for the mirror's own host,
        # never the Docker Hub password.
        self.credentials = credentials_for(address if mirror else domain)
        self.context = None

    def tls_context(self):
        """How to check this endpoint's certificate; made at the first HTTPS request.

        Layers download in threads: the context is kept only once it is
        complete, so no thread uses one half set up.
        """
        if self.context is not None:
            return self.context
        import ssl  # only here: plain-HTTP registries never pay for loading OpenSSL

        if not self.verify:
            # Nothing to verify, so no CA bundle to load: create_default_context()
            # would spend ~50 ms reading the system's certificates for nothing.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context()
            certificate = os.path.join(host.engine_root(), "certs.d", self.host, "ca.crt")
            if os.path.exists(certificate):
                context.load_verify_locations(cafile=certificate)
        self.context = context
        return context

    def repository_path(self, reference):
        """The repository name this endpoint knows the image by."""
        return reference.path

    # the handshake

    def ping(self):
        """``GET /v2/``: learn the scheme that works and the auth challenge."""
        if self.scheme:
            return
        last_error = None
        for scheme in self.schemes:
            url = f"{scheme}://{self.host}{self.base_path}/v2/"
            try:
                if scheme == "https" and scheme != self.schemes[-1] \
                        and not http_client.speaks_tls(url):
                    # Only an insecure registry has a scheme to fall back to.
                    last_error = ConnectionError("the server does not speak TLS")
                    host.narrate(4, f"TLS hello to {self.host}: the answer is not TLS; "
                                    "trying the next scheme")
                    continue
                response = self._send("GET", url)
            except http_client.TLSFailed as error:
                last_error = error
                host.narrate(4, f"GET {url}: TLS failed ({error.reason}); trying the next scheme")
                continue
            except (OSError, http_client.ProtocolError) as error:
                last_error = error
                break
            self.scheme = scheme
            response.read()
            if response.status == 401:
                self.challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            elif response.status >= 400 and response.status != 404:
                raise self.unreachable(f"GET {url} answered {response.status}")
            return
        raise self.unreachable(f"cannot reach the registry at {self.host}: "
                               f"{http_client.describe_error(last_error)}")

    def unreachable(self, message):
        return RegistryUnreachable(message)

    def check_login(self):
        """Prove the credentials work: a token (Bearer) or a 200 (Basic)."""
        self.ping()
        if self.challenge is None:
            host.narrate(4, f"{self.host} asks for no credentials")
            return
        if self.challenge["scheme"] == "bearer":
            self.token_for("")
            return
        response = self.request("GET", "/v2/", scope="", ok=(200, 401))
        response.read()
        if response.status == 401:
            raise host.EngineError(f"login to {self.domain} failed: unauthorized: "
                                   "incorrect username or password")

    def token_for(self, scope):
        """Ask the realm named in the challenge for a bearer token for ``scope``."""
        if scope in self.tokens:
            return self.tokens[scope]
        # As Docker asks: each parameter only when it has a value, added to
        # any query the realm carries already.
        parameters = {"service": self.challenge.get("service", ""), "scope": scope,
                      "account": self.credentials[0] if self.credentials else ""}
        query = "&".join(f"{name}={http_client.percent_encode(value)}"
                         for name, value in parameters.items() if value)
        realm = self.challenge["realm"].partition("#")[0]  # a fragment is never sent
        url = realm + ("&" if "?" in realm else "?") + query if query else realm
        headers = {"Authorization": http_client.basic_header(self.credentials)} \
            if self.credentials else {}
        host.narrate(4, f"ask the token server for {scope or 'a login token'}, "
                        + ("with the stored credentials" if self.credentials else "anonymously"))
        response = self._send_with_retries("GET", url, headers)
        body = response.read()
        if response.status == 401:
            raise host.EngineError(f"login to {self.domain} failed: unauthorized: "
                                   "incorrect username or password")
        if response.status != 200:
            raise host.EngineError(f"token server {self.challenge['realm']} answered "
                                   f"{response.status}: {error_text(body)}")
        try:
            answer = host.load_json(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):  # not JSON, or not a JSON object
            token = None
        if not token or not isinstance(token, str):
            raise host.EngineError(f"token server {self.challenge['realm']} sent no token")
        host.narrate(4, f"    200: a bearer token for {scope or 'login'} "
                        f"(expires in {answer.get('expires_in', 60)} s)")
        self.tokens[scope] = token
        return token

    def authorize(self, headers, scope):
        """Add the Authorization header the challenge asks for (a redirect drops it)."""
        if self.challenge is None:
            return
        if self.challenge["scheme"] == "bearer":
            headers["Authorization"] = f"Bearer {self.token_for(scope)}"
        elif self.challenge["scheme"] == "basic" and self.credentials:
            headers["Authorization"] = http_client.basic_header(self.credentials)

    def request(self, method, path, *, scope, headers=None, data=None, ok=(200,)):
        """Send one authorised request; return the response if its status is in ``ok``.

        A ``401`` with a new challenge (a token for another scope is needed)
        is answered once; transient failures are retried.
        """
        self.ping()
        url = path if "://" in path else f"{self.scheme}://{self.host}{self.base_path}{path}"
        for attempt in ("first", "after a new challenge"):
            request_headers = dict(headers or {})
            self.authorize(request_headers, scope)
            response = self._send_with_retries(method, url, request_headers, data)
            if response.status != 401 or attempt != "first":
                break
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            response.read()
            if not challenge or (challenge == self.challenge and self.credentials is None
                                 and challenge["scheme"] == "basic"):
                break
            self.challenge = challenge
            self.tokens.pop(scope, None)
            scope = challenge.get("scope", scope)
        if response.status in ok:
            return response
        body = response.read(65536)
        message = error_text(body) or response.reason
        if response.status == 401:
            if self.credentials is None:
                raise host.EngineError(f"{method} {url}: unauthorized: authentication "
                                       f"required (use: minidocker login {self.domain})")
            raise host.EngineError(f"{method} {url}: unauthorized: {message}")
        if response.status == 404 and self.mirror:
            raise self.unreachable(f"{method} {url}: not found on the mirror")
        raise host.EngineError(f"{method} {url}: {response.status} {message}")

    def _send_with_retries(self, method, url, headers=None, body=None):
        """Send, retrying what is worth retrying: 5xx, 429, dropped connections."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._send(method, url, headers, body)
            except (OSError, http_client.ProtocolError) as error:
                if attempt == ATTEMPTS or not is_transient(error):
                    raise host.EngineError(f"{method} {url}: {http_client.describe_error(error)}")
                host.narrate(4, f"    {http_client.describe_error(error)}; "
                                f"retrying ({attempt}/{ATTEMPTS})")
            else:
                if response.status not in RETRY_STATUSES or attempt == ATTEMPTS:
                    return response
                response.read()
                host.narrate(4, f"    {response.status}: retrying ({attempt}/{ATTEMPTS})")
            time.sleep(0.25 * 2 ** (attempt - 1))

    def _send(self, method, url, headers=None, body=None):
        """Send one request and narrate it; HTTP errors come back as responses."""
        headers = headers or {}
        shown = url.split("?")[0] if "/token" not in url else url
        accept = headers.get("Accept")
        host.narrate(4, f"{method} {shown}" + (f"  Accept: {accept}" if accept else ""))
        response = http_client.send(method, url, headers, body, self.tls_context)
        details = []
        for name in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate", "Location"):
            value = response.headers.get(name)
            if value:
                details.append(f"{name}: {value if len(value) < 120 else value[:117] + '...'}")
        host.narrate(4, f"    {response.status} {'; '.join(details)}")
        return response

    # manifests

    def get_manifest(self, repository, reference):
        """Fetch a manifest or index; return ``(digest, {mediaType, document, bytes})``.

        By digest, the bytes must hash to it; by tag, to the digest the
        registry announces (if it announces one).
        """
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                                scope=f"repository:{repository}:pull",
                                headers={"Accept": ACCEPT})
        body = response.read(MANIFEST_LIMIT + 1)
        if len(body) > MANIFEST_LIMIT:
            raise host.EngineError(f"manifest {repository}:{reference} is larger than "
                                   f"{MANIFEST_LIMIT} bytes; refusing it")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = reference if reference.startswith("sha256:") else \
            response.headers.get("Docker-Content-Digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise host.EngineError(f"manifest {repository}@{expected}: the registry sent "
                                   f"content with digest {digest}; refusing it")
        try:
            document = host.load_json(body)
        except ValueError as error:
            raise host.EngineError(f"manifest {repository}:{reference} is not JSON ({error})")
        if not isinstance(document, dict):
            raise host.EngineError(f"manifest {repository}:{reference} is not a JSON object")
        media_type = document.get("mediaType") or \
            response.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type:
            media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
        if media_type in DOCKER_SCHEMA1:
            raise host.EngineError(f"{repository}:{reference} uses Docker image manifest "
                                   "schema 1, which minidocker does not support")
        if media_type not in MANIFESTS + INDEXES:
            raise host.EngineError(f"{repository}:{reference}: unsupported manifest media type "
                                   f"{media_type!r}")
        host.narrate(4, f"    manifest {digest} ({media_type.split('/')[-1]})")
        return digest, {"mediaType": media_type, "document": document, "bytes": body}

    def put_manifest(self, repository, tag, body, media_type, scope):
        response = self.request("PUT", f"/v2/{repository}/manifests/{tag}", scope=scope,
                                headers={"Content-Type": media_type}, data=body, ok=(200, 201))
        response.read()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        announced = response.headers.get("Docker-Content-Digest")
        if announced and announced != digest:
            raise host.EngineError(f"the registry stored the manifest as {announced}, "
                                   f"not {digest}")
        return digest

    # blobs

    def get_small_blob(self, repository, descriptor):
        """Fetch a small blob (the config) into memory, checked."""
        if descriptor["size"] > MANIFEST_LIMIT:
            raise host.EngineError(f"config blob {descriptor['digest']} is too large")
        response = self.request("GET", f"/v2/{repository}/blobs/{descriptor['digest']}",
                                scope=f"repository:{repository}:pull")
        try:
            return read_checked(response, descriptor)
        except ShortBlob as error:
            raise host.EngineError(str(error))

    def fetch_blob(self, repository, descriptor, receive, gate, copy_to=None, abort=None,
                   report=None):
        """Stream a blob through ``receive(reader)``, checked; return what it returns.

        ``reader`` is a :class:`BlobReader`: what ``receive`` reads from it is
        hashed, counted and copied to ``copy_to``, and ``receive`` calls
        ``reader.finish()`` to check size and digest.  A connection that
        drops before the promised size is retried from the start; a wrong
        digest is not retried.  ``gate`` (a lock or semaphore) is held from
        the registry's answer to the last byte.
        """
        for attempt in range(1, ATTEMPTS + 1):
            response = self.request("GET", f"/v2/{repository}/blobs/{descriptor['digest']}",
                                    scope=f"repository:{repository}:pull")
            try:
                with gate, \
                        BlobReader(response, descriptor, copy_to, report, abort) as reader:
                    return receive(reader)
            except ShortBlob as error:
                if attempt == ATTEMPTS:
                    raise host.EngineError(str(error))
                host.narrate(4, f"    {error}; retrying ({attempt}/{ATTEMPTS})")
                time.sleep(0.25 * 2 ** (attempt - 1))

    def has_blob(self, repository, digest, scope):
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope,
                                ok=(200, 404))
        response.read()
        return response.status == 200

    def upload_blob(self, repository, descriptor, path, scope):
        """Monolithic upload: ``POST`` for an upload URL, ``PUT`` the bytes there."""
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope,
                                data=b"", ok=(202,))
        response.read()
        location = response.headers.get("Location")
        if not location:
            raise host.EngineError(f"{self.host} gave no upload location")
        location = http_client.resolve_url(f"{self.scheme}://{self.host}/", location)
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}digest={http_client.percent_encode(descriptor['digest'])}"
        with open(path, "rb") as blob:
            data = blob.read()
        response = self.request("PUT", url, scope=scope, data=data, ok=(201, 204),
                                headers={"Content-Type": "application/octet-stream"})
        response.read()


class ShortBlob(Exception):
    """The connection closed before the blob's promised size arrived."""


class BlobReader:
    """A blob's body as it arrives, checked on the way.

    Whatever reads it (a tar unpacker, gzip, a plain copy) gets the bytes
    while they are hashed, counted and, with ``copy_to``, written to a file,
    so one pass over the bytes stores, verifies and unpacks a layer.  It
    never reads more than one byte past the promised size, so a hostile
    server cannot fill the disk; a connection that ends early is a
    :class:`ShortBlob`.  :meth:`finish` reads what the reader left and
    checks size and digest.
    """

    def __init__(self, response, descriptor, copy_to=None, report=None, abort=None):
        import hashlib

        self.response = response
        self.expected_size, self.expected_digest = descriptor["size"], descriptor["digest"]
        self.hash = hashlib.sha256()
        self.done = 0
        self.copy = open(copy_to, "wb") if copy_to else None
        self.report = report
        self.abort = abort

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.response.close()
        if self.copy:
            self.copy.close()

    def read(self, size=-1):
        """Return the next bytes, at most ``size`` (a MiB when not said); ``b""`` at the end."""
        return self._receive(self.response.read, CHUNK if size is None or size < 0 else size)

    def readinto(self, buffer):
        """Fill ``buffer`` with the next bytes; return how many (0 at the end).

        A caller that reads a whole layer into one buffer it keeps spares
        the memory a new ``bytes`` per read would take: on the reference
        VM, memory the process has not used before costs a page fault per
        4 KiB, 0.9 ms per MiB (bench/README.md).
        """
        view = memoryview(buffer)
        return len(self._receive(lambda size: view[:self.response.readinto(view[:size])],
                                 len(view)))

    def _receive(self, receive, size):
        """Take the next piece with ``receive(size)``, then count, check, hash and copy it."""
        if self.abort is not None and self.abort.is_set():
            raise Cancelled()
        try:
            chunk = receive(min(size, self.expected_size + 1 - self.done))
        except (http_client.IncompleteBody, ConnectionError, TimeoutError) as error:
            raise ShortBlob(f"blob {self.expected_digest}: truncated, the connection broke "
                            f"after {self.done} of {self.expected_size} bytes "
                            f"({http_client.describe_error(error)})")
        if not chunk:
            if self.done < self.expected_size:
                raise ShortBlob(f"blob {self.expected_digest}: truncated, got {self.done} of "
                                f"{self.expected_size} bytes")
            return chunk
        self.done += len(chunk)
        if self.done > self.expected_size:
            raise host.EngineError(f"blob {self.expected_digest}: the registry sent more than "
                                   f"the {self.expected_size} bytes the manifest promised; "
                                   "refusing it")
        self.hash.update(chunk)
        if self.copy:
            self.copy.write(chunk)
        if self.report:
            self.report(self.done)
        return chunk

    def finish(self):
        """Read to the end; raise unless the size and the digest are the promised ones."""
        while self.read(CHUNK):
            pass
        found = "sha256:" + self.hash.hexdigest()
        if found != self.expected_digest:
            raise host.EngineError(f"blob {self.expected_digest}: the registry sent content "
                                   f"with digest {found}; refusing it")
        if self.copy:
            self.copy.close()
        host.narrate(4, f"    verified {self.expected_digest} ({self.done} bytes)")


def read_checked(response, descriptor):
    """Read a small blob (a config) into memory, checked as :class:`BlobReader` checks."""
    with BlobReader(response, descriptor) as reader:
        body = b"".join(iter(lambda: reader.read(CHUNK), b""))
        reader.finish()
    return body


# -- small helpers ---------------------------------------------------------

def parse_challenge(header):
    """Parse ``WWW-Authenticate: Bearer realm="...",service="...",scope="..."``."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    challenge = {"scheme": scheme.lower()}
    for key, value in quoted_parameters(rest):
        challenge[key.lower()] = value
    if challenge["scheme"] == "bearer" and "realm" not in challenge:
        raise host.EngineError(f"the registry's bearer challenge names no realm: {header!r}")
    return challenge


def quoted_parameters(text):
    """The ``name="value"`` pairs in ``text``, in order.

    A name is a run of word characters right before ``="``: letters and
    digits of any script, and ``_`` (what a regular expression's word
    character is).  The value runs to the next ``"``.  Text between the
    pairs (``,`` and spaces, or anything else) is passed over.
    """
    pairs, position = [], 0
    while (equals := text.find('="', position)) != -1:
        start = equals
        while start > position and (text[start - 1].isalnum() or text[start - 1] == "_"):
            start -= 1
        end = text.find('"', equals + 2)
        if end == -1:
            break   # no value ends: no later pair can either
        if start == equals:
            position = equals + 1   # no name: a pair may still start inside what follows
            continue
        pairs.append((text[start:equals], text[equals + 2:end]))
        position = end + 1
    return pairs


def is_transient(error):
    """Say whether a failed request might succeed if sent again.

    Timeouts and dropped connections might; a refusal, a name that does not
    resolve, a failed TLS handshake, a proxy that says no, or an answer that
    is not HTTP will not.
    """
    if isinstance(error, (ConnectionRefusedError, http_client.LookupFailed,
                          http_client.TLSFailed, http_client.ProxyFailed,
                          http_client.ProtocolError)):
        return False
    return isinstance(error, OSError)


def error_text(body):
    """The message of a distribution API error body, else the body's start."""
    try:
        errors = host.load_json(body).get("errors") or []
        return "; ".join(f"{e.get('code', '').lower()}: {e.get('message', '')}" for e in errors)
    except (ValueError, AttributeError, TypeError):  # not JSON, or not the API's shape
        return body[:200].decode(errors="replace").strip()


def short(digest):
    """The 12 hex digits Docker shows for a layer."""
    return digest.split(":")[-1][:12]


# -- progress ----------------------------------------------------------------

class Progress:
    """Pull and push progress, as Docker shows it.

    On a terminal each layer has one line that is rewritten in place
    (``a3ed95caeb02: Downloading  1.2MB/2.8MB``); otherwise each status
    change is a plain line of its own, and byte counts are left out.
    """

    def __init__(self, stream):
        import threading

        self.stream = stream
        self.terminal = bool(stream) and stream.isatty()
        self.lines = []
        self.last_draw = 0.0
        # Layers download in parallel threads; one line is drawn at a time.
        self.drawing = threading.Lock()

    def say(self, text):
        if self.stream:
            with self.drawing:
                self.stream.write(text + "\n")
                self.stream.flush()
                if self.terminal:
                    self.lines = []

    def update(self, identifier, status):
        if not self.stream:
            return
        with self.drawing:
            if not self.terminal:
                self.stream.write(f"{identifier}: {status}\n")
                self.stream.flush()
                return
            self._draw(identifier, status)

    def bytes(self, identifier, done, total):
        if not self.terminal:
            return
        now = time.monotonic()
        if done < total and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        width = 40
        filled = width * done // total if total else width
        bar = "[" + "=" * max(filled - 1, 0) + (">" if filled < width else "=") + \
            " " * (width - filled) + "]"
        with self.drawing:
            self._draw(identifier, f"Downloading {bar} {human_size(done)}/{human_size(total)}")

    def _draw(self, identifier, status):
        if identifier not in self.lines:
            self.lines.append(identifier)
            self.stream.write("\n")
        up = len(self.lines) - self.lines.index(identifier)
        # Move up to the layer's line, clear it, write, move back down.
        self.stream.write(f"\033[{up}A\r\033[2K{identifier}: {status}\033[{up}B\r")
        self.stream.flush()


def human_size(count):
    """Sizes as Docker prints them: decimal units, three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.3g}{unit}" if unit != "B" else f"{count}B"
        count /= 1000
    return f"{count}B"

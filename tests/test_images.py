"""Chapter 4: the image store and the commands around it.

The store must stay an OCI image layout that skopeo and umoci read; ``save``
must write what skopeo and podman read; ``load`` must take what skopeo
writes.  None of those tools were written here, which is the point.
"""

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from helpers.engine import Engine
from helpers.registry import build_layout

pytestmark = pytest.mark.ch4


@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    return build_layout(str(tmp_path_factory.mktemp("umoci-images")))


@pytest.fixture
def fresh(tmp_path):
    """A second engine root, empty, for round trips."""
    engine = Engine(str(tmp_path / "fresh-root"))
    yield engine
    # Containers, and the networks whose bridges outlive them.
    engine.run("system", "reset", "--force", timeout=120)
    shutil.rmtree(engine.root, ignore_errors=True)


def inspect(engine, name):
    return json.loads(engine.ok("image", "inspect", name))[0]


def tool(*argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    return result.stdout


def blob_files(engine):
    directory = os.path.join(engine.root, "images", "blobs", "sha256")
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


# -- images, tag, rmi ---------------------------------------------------------------

def test_images_prints_dockers_columns_ids_and_digests(busybox):
    lines = busybox.ok("images").splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    identifier = inspect(busybox, "busybox")["Id"].split(":")[1]
    assert re.split(r"\s{2,}", lines[1])[:3] == ["busybox", "latest", identifier[:12]]
    assert busybox.ok("images", "-q").split() == [identifier[:12]]
    assert busybox.ok("images", "-q", "--no-trunc").split() == [identifier]
    with_digests = busybox.ok("images", "--digests").splitlines()
    assert "DIGEST" in with_digests[0]
    assert "<none>" in with_digests[1]      # never pulled or pushed: no registry digest


def test_tag_adds_a_name_and_rmi_of_one_name_keeps_the_other(busybox):
    busybox.ok("tag", "busybox", "example.com/team/tool:1.0")
    before = inspect(busybox, "busybox")
    assert inspect(busybox, "example.com/team/tool:1.0")["Id"] == before["Id"]
    assert sorted(inspect(busybox, "busybox")["RepoTags"]) == [
        "busybox:latest", "example.com/team/tool:1.0"]
    output = busybox.ok("rmi", "example.com/team/tool:1.0")
    assert "Untagged: example.com/team/tool:1.0" in output
    assert inspect(busybox, "busybox")["Id"] == before["Id"]
    assert busybox.ok("run", "--rm", "busybox", "echo", "still here") == "still here\n"
    output = busybox.ok("rmi", "busybox")
    assert f"Deleted: {before['Id']}" in output
    assert blob_files(busybox) == set()
    assert os.listdir(os.path.join(busybox.root, "layers")) == []


def test_rmi_refuses_an_image_a_container_uses_unless_forced(busybox):
    busybox.ok("create", "--name", "user-of-busybox", "busybox", "true")
    result = busybox.run("rmi", "busybox")
    assert result.returncode == 1
    assert "conflict" in result.stderr and "must force" in result.stderr
    assert inspect(busybox, "busybox")
    busybox.ok("rmi", "-f", "busybox")
    assert busybox.run("image", "inspect", "busybox").returncode == 1
    busybox.ok("rm", "user-of-busybox")


def test_tag_of_a_missing_image_and_bad_names_are_errors(busybox):
    result = busybox.run("tag", "nothing-here", "other")
    assert result.returncode == 125 and "No such image: nothing-here" in result.stderr
    result = busybox.run("tag", "busybox", "Bad Name")
    assert result.returncode == 125 and "invalid reference format" in result.stderr


# -- the store, read by other tools -----------------------------------------------

def test_store_is_an_oci_layout_that_skopeo_and_umoci_read(busybox):
    store = os.path.join(busybox.root, "images")
    mine = inspect(busybox, "busybox")
    skopeo = json.loads(tool("skopeo", "inspect", f"oci:{store}:busybox"))
    assert skopeo["Layers"] == [mine["Descriptor"]["digest"]] or \
        len(skopeo["Layers"]) == len(mine["RootFS"]["Layers"])
    config = json.loads(tool("skopeo", "inspect", "--config", f"oci:{store}:busybox"))
    assert config["rootfs"]["diff_ids"] == mine["RootFS"]["Layers"]
    assert "busybox" in tool("umoci", "ls", "--layout", store).split()
    assert "LAYER" in tool("umoci", "stat", "--image", f"{store}:busybox")


def test_history_and_image_inspect(busybox):
    history = busybox.ok("history", "busybox").splitlines()
    assert re.split(r"\s{2,}", history[0])[:4] == ["IMAGE", "CREATED", "CREATED BY", "SIZE"]
    assert len(history) == 2 and "import" in history[1]
    details = inspect(busybox, "busybox")
    for key in ("Id", "RepoTags", "RepoDigests", "Created", "Config", "Architecture", "Os",
                "Size", "RootFS"):
        assert key in details
    assert details["RepoTags"] == ["busybox:latest"]
    assert details["RootFS"]["Type"] == "layers"


# -- save and load -------------------------------------------------------------

def test_save_is_read_by_skopeo_and_load_round_trips(busybox, fresh, tmp_path):
    archive = str(tmp_path / "busybox.tar")
    busybox.ok("save", "-o", archive, "busybox")
    mine = inspect(busybox, "busybox")
    with tarfile.open(archive) as saved:
        index = json.load(saved.extractfile("manifest.json"))
    assert index[0]["RepoTags"] == ["busybox:latest"]
    docker_archive = json.loads(tool("skopeo", "inspect", f"docker-archive:{archive}"))
    assert len(docker_archive["Layers"]) == 1
    config = json.loads(tool("skopeo", "inspect", "--config", f"docker-archive:{archive}"))
    assert config["rootfs"]["diff_ids"] == mine["RootFS"]["Layers"]
    tool("skopeo", "inspect", f"oci-archive:{archive}")
    assert "Loaded image: busybox:latest" in fresh.ok("load", "-i", archive)
    assert inspect(fresh, "busybox")["Id"] == mine["Id"]
    assert fresh.ok("run", "--rm", "busybox", "echo", "loaded") == "loaded\n"


def test_save_to_stdout_and_load_from_stdin(busybox, fresh):
    saved = subprocess.run(busybox.command("save", "busybox"), capture_output=True,
                           env=busybox.environment(), check=True).stdout
    assert tarfile.open(fileobj=io.BytesIO(saved)).getmember("manifest.json")
    fresh.ok("load", input=saved)
    assert inspect(fresh, "busybox")["Id"] == inspect(busybox, "busybox")["Id"]


PODMAN_LOCK = "/dev/shm/libpod_lock"


def test_podman_loads_what_save_writes(busybox, tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    archive = str(tmp_path / "for-podman.tar")
    busybox.ok("save", "-o", archive, "busybox")
    # A private storage root, so the host's podman images are never touched
    # (podman wants its run root shorter than 50 characters).
    run_root = tempfile.mkdtemp(prefix="podman-run-", dir="/tmp")
    podman = ["podman", "--root", str(tmp_path / "podman-root"),
              "--runroot", run_root, "--storage-driver", "vfs"]
    had_lock = os.path.exists(PODMAN_LOCK)
    try:
        output = tool(*podman, "load", "-i", archive)
        assert "busybox" in output
        images = tool(*podman, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
        identifier = inspect(busybox, "busybox")["Id"].split(":")[1]
        assert f"docker.io/library/busybox:latest {identifier[:12]}" in images
    finally:
        subprocess.run([*podman, "system", "reset", "--force"], capture_output=True)
        shutil.rmtree(run_root, ignore_errors=True)
        if not had_lock and os.path.exists(PODMAN_LOCK):
            os.unlink(PODMAN_LOCK)   # podman's shared-memory locks outlive its reset


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_load_takes_what_skopeo_writes_and_runs_it(engine, layout, tmp_path, transport):
    archive = str(tmp_path / f"{transport}.tar")
    tool("skopeo", "copy", "--quiet", f"oci:{layout}:layered",
         f"{transport}:{archive}:loaded/layered:v1")
    output = engine.ok("load", "-i", archive)
    assert "Loaded image: loaded/layered:v1" in output
    assert engine.ok("run", "--rm", "loaded/layered:v1", "ls", "/var/www").split() == \
        ["fresh.html"]


def test_load_refuses_a_tampered_layer_and_keeps_the_store_clean(busybox, fresh, tmp_path):
    archive = str(tmp_path / "good.tar")
    busybox.ok("save", "-o", archive, "busybox")
    tampered = str(tmp_path / "tampered.tar")
    layer = "blobs/sha256/" + inspect(busybox, "busybox")["RootFS"]["Layers"][0].split(":")[1]
    with tarfile.open(archive) as source, tarfile.open(tampered, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name == layer:
                evil = tarfile.TarInfo("evil")
                evil.size = 4
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as inner:
                    inner.addfile(evil, io.BytesIO(b"evil"))
                data = buffer.getvalue()
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    result = fresh.run("load", "-i", tampered)
    assert result.returncode == 125 and "digest mismatch" in result.stderr, result.stderr
    assert blob_files(fresh) == set()
    assert [n for n in os.listdir(os.path.join(fresh.root, "layers"))] == []


def test_load_of_something_else_is_a_clear_error(engine, tmp_path):
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello\n")
    result = engine.run("load", "-i", str(not_tar))
    assert result.returncode == 125 and "not a tar archive" in result.stderr
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    result = engine.run("load", "-i", str(empty))
    assert result.returncode == 125 and "neither a docker-archive" in result.stderr


# -- import and export -------------------------------------------------------------

def test_export_writes_the_merged_filesystem_and_import_takes_it_back(busybox, tmp_path):
    busybox.ok("run", "--name", "changed", "busybox", "sh", "-c",
               "echo made > /made.txt && rm /var/www/index.html")
    exported = str(tmp_path / "exported.tar")
    busybox.ok("export", "-o", exported, "changed")
    with tarfile.open(exported) as archive:
        names = set(archive.getnames())
        assert "made.txt" in names
        assert "bin/busybox" in names
        assert "var/www/index.html" not in names
        assert archive.extractfile("made.txt").read() == b"made\n"
    busybox.ok("rm", "changed")
    busybox.ok("import", exported, "reimported:1")
    assert busybox.ok("run", "--rm", "reimported:1", "cat", "/made.txt") == "made\n"


def test_import_and_commit_put_bytes_on_the_disk_before_names_on_them(engine, busybox_tar):
    # Pull's rule (registry.install_layers) for every writer of the store:
    # the blob is fsynced, and the unpacked layer synced, before either is
    # renamed to the name an image refers to.
    def trace(*arguments):
        result = engine.run("--trace", *arguments, check=True)
        return [line for line in result.stderr.splitlines() if line.startswith("[ch")]

    lines = trace("import", busybox_tar, "traced")
    fsync = next(i for i, line in enumerate(lines) if line.startswith("[ch4 image] fsync "))
    unpack = next(i for i, line in enumerate(lines) if "unpack layer" in line)
    sync = next(i for i, line in enumerate(lines) if "sync --file-system" in line)
    assert fsync < unpack < sync, lines
    engine.ok("run", "--name", "changed", "--network", "none", "traced", "touch", "/new")
    lines = trace("commit", "changed", "committed")
    fsync = next(i for i, line in enumerate(lines) if line.startswith("[ch4 image] fsync "))
    named = next(i for i, line in enumerate(lines) if line.startswith("[ch7 commit] layer sha256:"))
    assert fsync < named, lines
    lines = trace("run", "--rm", "--network", "none", "committed", "true")
    unpack = next(i for i, line in enumerate(lines) if "unpack layer" in line)
    assert "sync --file-system" in lines[unpack + 1], lines[unpack:unpack + 2]
    engine.ok("rm", "changed")


@pytest.mark.ch4
def test_a_tag_never_points_at_an_image_with_a_missing_blob(busybox_tar, tmp_path):
    # The store refuses, under its lock, to name an incomplete image; that is
    # what keeps a parallel pull's clean-up from leaving a dangling name.
    from minidocker import image, registry

    store = image.Store(str(tmp_path / "root"))
    imported = store.import_tarball(busybox_tar, image.Reference.parse("complete"))
    layer = imported.manifest["layers"][0]["digest"]
    # A failed pull's clean-up spares a blob a named image uses...
    registry.undo_pull(store, [layer], [])
    assert store.has_blob(layer)
    # ...and a blob that is gone makes tagging fail instead of dangling.
    os.unlink(store.blob_path(layer))
    with pytest.raises(image.IncompleteImage):
        store.tag(image.Reference.parse("dangling"), imported.digest)
    assert "dangling" not in json.dumps(store.index())


@pytest.mark.ch4
def test_two_unpackings_of_one_layer_race_and_one_directory_wins(busybox_tar, tmp_path):
    # Parallel pulls stage the same layer side by side; the first rename
    # wins, the second finds the name taken and throws its copy away.
    from minidocker import host, image

    store = image.Store(str(tmp_path / "root"))
    store.ensure()
    diff_id = "sha256:" + image.file_sha256(busybox_tar)
    stagings = []
    for _ in range(2):
        with open(busybox_tar, "rb") as blob:
            stagings.append(store.unpack_into_staging(blob, diff_id, diff_id, image.MEDIA_LAYER))
    assert [store.install_layer(staging, diff_id) for staging in stagings] == [True, False]
    assert not any(os.path.exists(staging) for staging in stagings)
    assert os.path.isfile(os.path.join(store.layer_path(diff_id), "bin", "busybox"))
    # A stream that is not the promised diff id leaves no staging behind.
    with open(busybox_tar, "rb") as blob, pytest.raises(host.EngineError, match="diff id"):
        store.unpack_into_staging(blob, diff_id, "sha256:" + "0" * 64, image.MEDIA_LAYER)
    assert [name for name in os.listdir(store.layers) if name.startswith(".")] == []


# -- the layer reader against tar writers nobody here wrote ---------------------------

def make_tree(root, limited):
    """A directory holding every kind of entry a layer may carry.

    ``limited`` leaves out what the old ustar layout cannot hold: names
    longer than 100 bytes, owners above 2,097,151, extended attributes.
    """
    os.makedirs(os.path.join(root, "bin"))
    with open(os.path.join(root, "bin", "tool"), "wb") as handle:
        handle.write(b"#!/bin/sh\necho tool\n")
    os.chown(os.path.join(root, "bin", "tool"), 1000, 1000)
    os.chmod(os.path.join(root, "bin", "tool"), 0o4755)
    os.link(os.path.join(root, "bin", "tool"), os.path.join(root, "bin", "hard"))
    os.symlink("tool", os.path.join(root, "bin", "relative"))
    os.symlink("/etc/passwd", os.path.join(root, "bin", "absolute"))
    with open(os.path.join(root, "bin", "large"), "wb") as handle:
        handle.write(os.urandom(3 << 20))
    open(os.path.join(root, "bin", "empty"), "wb").close()
    os.makedirs(os.path.join(root, "dev"))
    os.mknod(os.path.join(root, "dev", "null"), 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(os.path.join(root, "dev", "pipe"), 0o640)
    os.makedirs(os.path.join(root, "tmp"))
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.makedirs(os.path.join(root, "var", "empty"))
    os.chown(os.path.join(root, "var", "empty"), 1234, 5678)
    os.chown(os.path.join(root, "bin", "relative"), 1000, 1000, follow_symlinks=False)
    if not limited:
        deep = os.path.join(root, "long", "d" * 120, "e" * 120)
        os.makedirs(deep)
        with open(os.path.join(deep, "f" * 150), "w") as handle:
            handle.write("a long name\n")
        os.symlink("../" + "d" * 120, os.path.join(deep, "link-with-a-long-target-" + "g" * 80))
        with open(os.path.join(root, "owned-by-a-large-uid"), "w") as handle:
            handle.write("uid\n")
        os.chown(os.path.join(root, "owned-by-a-large-uid"), 3_000_000, 3_000_000)
        os.setxattr(os.path.join(root, "bin", "tool"), "user.note", b"kept")
    # Times last: creating entries changes a directory's time.
    for number, (directory, _, files) in enumerate(sorted(os.walk(root))):
        for name in files:
            os.utime(os.path.join(directory, name), (1_600_000_000 + number, 1_600_000_000 + number),
                     follow_symlinks=False)
        os.utime(directory, (1_500_000_000 + number, 1_500_000_000 + number))


def describe_tree(root):
    """What a layer must reproduce: kind, mode, owner, time, content, link, device, xattrs."""
    import hashlib
    import stat

    description, inodes = {}, {}
    for directory, directories, files in sorted(os.walk(root)):
        for name in sorted(directories + files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            entry = [stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid,
                     info.st_gid, int(info.st_mtime)]
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    entry.append(hashlib.sha256(handle.read()).hexdigest())
                entry.append(os.listxattr(path))
                entry.append(inodes.setdefault(info.st_ino, os.path.relpath(path, root)))
            elif stat.S_ISLNK(info.st_mode):
                entry.append(os.readlink(path))
            elif stat.S_ISCHR(info.st_mode):
                entry.append((os.major(info.st_rdev), os.minor(info.st_rdev)))
            description[os.path.relpath(path, root)] = entry
    return description


WRITERS = {
    # name: (argv of GNU tar, or a tarfile format), limited to ustar's layout
    "gnu-tar-posix": (["--format=posix", "--xattrs", "--xattrs-include=user.*"], False),
    "gnu-tar-gnu": (["--format=gnu"], False),
    "gnu-tar-ustar": (["--format=ustar"], True),
    "python-pax": (tarfile.PAX_FORMAT, False),
    "python-gnu": (tarfile.GNU_FORMAT, False),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_the_layer_reader_unpacks_what_tar_writers_write(tmp_path, writer):
    # image.unpack has its own tar reader (tarfile costs ~0.1 ms an entry).
    # GNU tar and Python's tarfile write the archive here, in each format a
    # layer arrives in, and the unpacked tree must be the tree they read.
    from minidocker import image

    how, limited = WRITERS[writer]
    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    os.makedirs(source)
    make_tree(source, limited)
    if not limited and writer == "gnu-tar-gnu":
        # GNU's format carries no extended attributes.
        os.removexattr(os.path.join(source, "bin", "tool"), "user.note")
    archive = str(tmp_path / "layer.tar")
    if isinstance(how, list):
        subprocess.run(["tar", *how, "--numeric-owner", "-cf", archive, "-C", source, "."],
                       check=True)
    else:
        with tarfile.open(archive, "w", format=how) as writing:
            writing.add(source, arcname=".")
    os.makedirs(target)
    with open(archive, "rb") as stream:
        image.unpack(io.BufferedReader(stream), target)
    expected = describe_tree(source)
    if writer.startswith("python"):
        # tarfile's add() reads no extended attributes (GNU tar's posix
        # format above carries them).
        expected["bin/tool"][6] = expected["bin/hard"][6] = []
    assert describe_tree(target) == expected


def test_a_directory_replaced_by_a_link_is_never_written_through(tmp_path):
    # The unpacker remembers which parents it has checked; a later entry
    # that turns one of them (or its parent) into a link must end that.
    from minidocker import host, image

    outside = tmp_path / "outside"
    outside.mkdir()

    def entry(name, kind=tarfile.REGTYPE, linkname=""):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        return info

    # The last entry writes below a/, or (a hard link) reads from below it.
    for last in (entry("a/b/x"), entry("a/b/.wh.x"), entry("a/b/.wh..wh..opq"),
                 entry("x", tarfile.LNKTYPE, "a/b/first")):
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as writing:
            for info in (entry("a/", tarfile.DIRTYPE), entry("a/b/", tarfile.DIRTYPE),
                         entry("a/b/first"), entry("a", tarfile.SYMTYPE, str(outside)),
                         last):
                writing.addfile(info, io.BytesIO(b""))
        target = tempfile.mkdtemp(dir=tmp_path)
        if last.islnk():  # a host file for the link to reach, if it followed a/
            (outside / "b").mkdir()
            (outside / "b" / "first").write_text("host")
        with pytest.raises(host.EngineError, match="symbolic link|not a directory"):
            image.unpack(io.BufferedReader(io.BytesIO(archive.getvalue())), target)
        if last.islnk():
            assert not os.path.lexists(os.path.join(target, "x"))
            assert os.stat(outside / "b" / "first").st_nlink == 1
            shutil.rmtree(outside / "b")
        assert list(outside.iterdir()) == [], last.name
        assert os.readlink(os.path.join(target, "a")) == str(outside)


def test_the_layer_reader_refuses_what_it_cannot_unpack_in_one_line(tmp_path):
    from minidocker import host, image

    def unpack_bytes(data):
        target = tempfile.mkdtemp(dir=tmp_path)
        image.unpack(io.BufferedReader(io.BytesIO(data)), target)
        return target

    # Docker's reader takes an empty stream, and a lone end marker, as an empty layer.
    assert os.listdir(unpack_bytes(b"")) == []
    assert os.listdir(unpack_bytes(bytes(1024))) == []
    # A header whose checksum is wrong: not a tar archive.
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w", format=tarfile.PAX_FORMAT) as writing:
        info = tarfile.TarInfo("file")
        info.size = 4
        writing.addfile(info, io.BytesIO(b"data"))
    broken = bytearray(good.getvalue())
    broken[0] ^= 0x01
    with pytest.raises(ValueError, match="checksum"):
        unpack_bytes(bytes(broken))
    # Content that ends before the size the header promised.
    with pytest.raises(ValueError, match="end of data"):
        unpack_bytes(good.getvalue()[:512 + 2])
    # A pax header that claims a gigabyte is refused before it is read.
    huge = tarfile.TarInfo("././@PaxHeader")
    huge.type, huge.size = tarfile.XHDTYPE, 1 << 30
    with pytest.raises(ValueError, match="extension header"):
        unpack_bytes(huge.tobuf(tarfile.USTAR_FORMAT))
    # A sparse file (GNU tar writes it as pax GNU.sparse.* records or type S).
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as handle:
        handle.truncate(1 << 20)
        handle.write(b"start")
    for format_name in ("posix", "gnu"):
        archive = tmp_path / f"sparse-{format_name}.tar"
        subprocess.run(["tar", f"--format={format_name}", "--sparse", "-cf", str(archive),
                        "-C", str(tmp_path), "sparse"], check=True)
        with pytest.raises(host.EngineError, match="sparse|type 'S'") as raised:
            unpack_bytes(archive.read_bytes())
        assert "\n" not in str(raised.value)


def test_the_layer_gunzip_reads_what_gzip_writes_and_refuses_the_rest():
    # Layers inflate through image._Gunzip, which skips gzip's CRC-32 (the
    # diff id checks every byte); gzip's own writer and hand-made headers
    # with every optional field must come out whole, broken ones must not.
    import gzip
    import zlib

    from minidocker import image

    def inflate(data, size=1000, stream=io.BytesIO):
        reader, pieces = image._Gunzip(stream(data)), []
        while piece := reader.read(size):
            pieces.append(piece)
        return b"".join(pieces)

    class Trickling(io.RawIOBase):
        """A stream that gives a few KiB per read, as a pipe or a socket may."""

        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self.data.readinto(memoryview(buffer)[:7001])

    raw = os.urandom(300_000) + b"a" * 500_000
    assert inflate(gzip.compress(raw)) == raw
    assert inflate(gzip.compress(raw), 1 << 20) == raw
    # Two members and zero padding, as gzip(1) reads them.
    assert inflate(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + bytes(100)) == raw
    # FEXTRA, FNAME, FCOMMENT and FHCRC.
    header = b"\x1f\x8b\x08" + bytes([4 | 8 | 16 | 2]) + bytes(6) + (5).to_bytes(2, "little") \
        + b"extra" + b"layer.tar\0" + b"a comment\0" + bytes(2)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert inflate(header + deflate.compress(raw) + deflate.flush() + bytes(8)) == raw
    assert inflate(b"") == b""
    # Members, and zero padding, that run past one read into _Gunzip's buffer.
    big = os.urandom(1_500_000)
    members = gzip.compress(big[:1_200_000]) + gzip.compress(big[1_200_000:]) \
        + bytes(image.READ_SIZE + 10)
    assert inflate(members, 1 << 20) == big
    assert inflate(members, 1 << 20, stream=Trickling) == big
    whole = gzip.compress(raw)
    for broken, error in ((whole[:-20], EOFError), (whole[:5], EOFError),
                          (b"not gzip at all", ValueError),
                          (whole[:10] + b"\xff" * 64 + whole[74:], ValueError)):
        with pytest.raises(error):
            inflate(broken)
        with pytest.raises(error):
            inflate(broken, stream=Trickling)


# -- the reference grammar -----------------------------------------------------

# Docker's grammar (distribution/reference's regexp.go) as one regular
# expression, with Go's meaning of \w (ASCII only).  minidocker parses
# references without regular expressions (they are not worth their import on
# the start path); this checks that it reads every text as this does.
_GO_WORD = "[A-Za-z0-9_]"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_GO_WORD}[\w.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?",
    re.ASCII)

REFERENCES = [
    "busybox", "busybox:1.36", "library/busybox", "docker.io/library/busybox:latest",
    "localhost/app", "localhost:5000/app:v1", "127.0.0.1:5000/a/b/c:t", "[::1]:5000/app",
    "[::1]/app", "[fe80::1%eth0]/app", "[]/app", "example.com:/app", "example.com:5x/app",
    "-example.com/app", "example-.com/app", "exa_mple.com/app", "Example.Com/app", "UPPER",
    "app@sha256:" + "a" * 64, "app:tag@sha256:" + "0" * 64, "app@sha256:" + "A" * 64,
    "app@sha256:" + "a" * 63, "app@", "app:", ":tag", "/app", "app/", "a//b", "a..b", "a.b",
    "a_b", "a__b", "a___b", "a-b", "a--b", "a-_b", "a._b", "_a", "a_", "-a", "a-", ".a",
    "a:b:c", "a:" + "t" * 128, "a:" + "t" * 129, "a:.t", "a:-t", "a:_t", "a:t.-_", "a:é",
    "é", "busybox\n", "busybox\x1b[2J", "../../etc/passwd", "a/../b", "host:5000",
    "host:5000/", "a b", "a\tb", "", "a:b/c", "a@b", "a@sha256:", "sha256:" + "0" * 64,
]


def _grammar_says(text):
    match = _REFERENCE.fullmatch(text)
    return match and (match["domain"], match["path"], match["tag"], match["digest"])


@pytest.mark.ch4
def test_the_reference_parser_reads_every_text_as_dockers_grammar_does():
    import random

    from minidocker import image

    generator = random.Random(9)
    alphabet = "ab0Z._-:/@[]"
    texts = REFERENCES + ["".join(generator.choice(alphabet) for _ in range(generator.randint(1, 12)))
                          for _ in range(20000)]
    disagreements = [(text, image.split_reference(text), _grammar_says(text)) for text in texts
                     if (image.split_reference(text) or None) != (_grammar_says(text) or None)]
    assert disagreements == [], disagreements[:10]
    assert sum(bool(_grammar_says(text)) for text in texts) > 500  # both kinds were tried

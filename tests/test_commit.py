"""Chapter 7: diff and commit, on the real kernel, with both storage drivers.

A container changes its files; ``diff`` must list exactly those changes;
``commit`` must turn them into a layer a new container sees, with OCI
whiteouts, owners, modes, extended attributes and hard links kept, and
leave the parent image alone.  The committed image must be readable by
tools nobody here wrote: skopeo copies it from minidocker's store to a real
registry (from which minidocker pulls it back) and umoci unpacks it into the
same tree the container saw.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time

import pytest

from helpers.registry import RegistryServer

pytestmark = pytest.mark.ch7

DRIVERS = ["overlay", "vfs"]

#: The changes every test makes: add, change, delete, replace a directory,
#: make a new tree, hard-link and chown/chmod a file.
CHANGES = ("echo new > /added && echo more >> /etc/passwd && rm /etc/group && "
           "rm -r /var/www && mkdir /var/www && echo fresh > /var/www/fresh.html && "
           "mkdir -p /opt/deep && touch /opt/deep/f && ln /added /added-link && "
           "chown 1000:50 /added && chmod 4750 /added && mkfifo /opt/pipe")

EXPECTED_DIFF = """\
A /added
A /added-link
C /etc
D /etc/group
C /etc/passwd
A /opt
A /opt/deep
A /opt/deep/f
A /opt/pipe
C /var
C /var/www
A /var/www/fresh.html
D /var/www/index.html
"""


def changed_container(engine, driver, name="changed", env=None):
    """Run the changes in a new container of ``busybox``; return its id."""
    engine.ok("--storage-driver", driver, "run", "--name", name, "busybox", "sh", "-c", CHANGES,
              env=env)
    return json.loads(engine.ok("inspect", name))[0]["Id"]


def image_config(engine, reference):
    """Read an image's config blob straight from the OCI layout."""
    identifier = json.loads(engine.ok("inspect", reference))[0]["Id"]
    path = os.path.join(engine.root, "images", "blobs", "sha256", identifier.split(":")[1])
    with open(path) as handle:
        return json.load(handle)


def last_layer(engine, reference):
    """Return the path of an image's top layer blob (uncompressed tar)."""
    config = image_config(engine, reference)
    return os.path.join(engine.root, "images", "blobs", "sha256",
                        config["rootfs"]["diff_ids"][-1].split(":")[1])


@pytest.mark.parametrize("driver", DRIVERS)
def test_diff_lists_exactly_the_changes(busybox, driver):
    changed_container(busybox, driver)
    assert busybox.ok("diff", "changed") == EXPECTED_DIFF


def test_diff_of_a_new_container_is_empty_and_of_a_missing_one_an_error(busybox):
    busybox.ok("create", "--name", "fresh", "busybox", "true")
    assert busybox.ok("diff", "fresh") == ""
    result = busybox.run("diff", "nothing-here")
    assert result.returncode == 125
    assert result.stderr.strip() == "minidocker: No such container: nothing-here"


@pytest.mark.parametrize("driver", DRIVERS)
def test_commit_gives_an_image_that_sees_the_changes(busybox, driver):
    changed_container(busybox, driver)
    identifier = busybox.ok("commit", "-m", "a message", "-a", "Ada <ada@example.org>",
                            "-c", 'CMD ["cat", "/added"]', "-c", 'ENV GREETING="hi there"',
                            "changed", "committed:1").strip()
    assert identifier.startswith("sha256:") and len(identifier) == 71

    assert busybox.ok("--storage-driver", driver, "run", "--rm", "committed:1") == "new\n"
    script = ("cat /added-link; ls /var/www; test ! -e /etc/group && echo group-gone; "
              "stat -c '%h %u %g %a' /added; test -p /opt/pipe && echo fifo; "
              "[ $(stat -c %i /added) = $(stat -c %i /added-link) ] && echo same-inode; "
              "tail -1 /etc/passwd; echo $GREETING")
    # Run on overlay: the vfs driver's copy of the layers does not keep hard
    # links (rootfs.apply_layer_by_copying); the layer does, as the next test shows.
    seen = busybox.ok("--storage-driver", "overlay", "run", "--rm", "committed:1", "sh", "-c",
                      script)
    assert seen == ("new\nfresh.html\ngroup-gone\n2 1000 50 4750\nfifo\nsame-inode\nmore\n"
                    "hi there\n")

    # The parent image is unchanged.
    parent = busybox.ok("--storage-driver", driver, "run", "--rm", "busybox", "sh", "-c",
                        "ls /var/www; test -e /added || echo no-added; head -1 /etc/group")
    assert parent == "index.html\nno-added\nroot:x:0:\n"

    config = image_config(busybox, "committed:1")
    parent_config = image_config(busybox, "busybox")
    assert config["rootfs"]["diff_ids"][:-1] == parent_config["rootfs"]["diff_ids"]
    assert len(config["history"]) == len(parent_config["history"]) + 1
    entry = config["history"][-1]
    assert entry["comment"] == "a message" and entry["author"] == "Ada <ada@example.org>"
    assert entry["created_by"] == "sh -c " + CHANGES
    assert config["author"] == "Ada <ada@example.org>"
    assert config["config"]["Cmd"] == ["cat", "/added"]
    assert "GREETING=hi there" in config["config"]["Env"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_layer_is_an_oci_layer_with_whiteouts_owners_and_links(busybox, driver):
    identifier = changed_container(busybox, driver)
    # An extended attribute, set on the container's own copy of the file.
    own = "upper" if driver == "overlay" else "rootfs"
    os.setxattr(os.path.join(busybox.root, "containers", identifier, own, "added"),
                "user.note", b"kept \xff")
    busybox.ok("commit", "changed", "committed")
    with tarfile.open(last_layer(busybox, "committed")) as archive:
        members = {member.name: member for member in archive.getmembers()}
    assert members["etc/.wh.group"].isfile() and members["etc/.wh.group"].size == 0
    if driver == "overlay":
        # The removed and re-made directory is opaque, as overlay recorded it.
        assert "var/www/.wh..wh..opq" in members
        assert "var/www/.wh.index.html" not in members
    else:
        # The comparison finds the same deletion file by file.
        assert "var/www/.wh.index.html" in members
    added, link = members["added"], members["added-link"]
    assert added.isfile() and (added.uid, added.gid, added.mode) == (1000, 50, 0o4750)
    assert added.pax_headers["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") \
        == b"kept \xff"
    assert link.islnk() and link.linkname == "added"
    assert members["opt/pipe"].isfifo()
    assert all(not name.startswith(("/", "./")) for name in members)
    assert not any(name.startswith(("proc", "sys", "dev")) for name in members)
    assert "etc/hostname" not in members and "etc/hosts" not in members
    busybox.ok("--storage-driver", driver, "run", "--rm", "committed", "true")


def test_the_same_changes_give_the_same_layer(busybox):
    changed_container(busybox, "overlay", name="first")
    first = busybox.ok("commit", "first", "one")
    busybox.ok("commit", "first", "again")
    assert first != busybox.ok("commit", "first", "again")  # a new config (its date)...
    assert image_config(busybox, "one")["rootfs"] == image_config(busybox, "again")["rootfs"]

    # Two containers making the same changes at different times: with
    # SOURCE_DATE_EPOCH no file is newer than that time, so the layers match.
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    time.sleep(1.1)
    changed_container(busybox, "overlay", name="second")
    busybox.ok("commit", "first", "clamped-first", env=epoch)
    busybox.ok("commit", "second", "clamped-second", env=epoch)
    clamped = image_config(busybox, "clamped-first")
    assert clamped["rootfs"] == image_config(busybox, "clamped-second")["rootfs"]
    assert clamped["created"] == "2023-11-14T22:13:20Z"
    assert clamped["rootfs"] != image_config(busybox, "one")["rootfs"]

    # A time past the year 9999 was a traceback after the layer was written.
    images = busybox.ok("images", "-q")
    for bad in ("253402300800", "9" * 5000, "²"):
        result = busybox.run("commit", "first", "too-late", env={"SOURCE_DATE_EPOCH": bad})
        assert result.returncode == 125 and "Traceback" not in result.stderr, result.stderr
        assert "SOURCE_DATE_EPOCH must be a number of seconds" in result.stderr
    assert busybox.ok("images", "-q") == images


def test_commit_freezes_a_running_container_and_leaves_it_running(busybox):
    busybox.ok("run", "-d", "--name", "busy", "busybox", "sh", "-c",
               "echo before > /state; while true; do sleep 1; done")
    deadline = time.monotonic() + 10
    while "A /state" not in busybox.ok("diff", "busy") and time.monotonic() < deadline:
        time.sleep(0.05)
    result = busybox.run("--trace", "commit", "busy", "snapshot")
    assert result.returncode == 0, result.stderr
    assert "freezer.state" in result.stderr or "cgroup.freeze" in result.stderr
    assert "echo FROZEN" in result.stderr or "echo 1 >" in result.stderr
    assert json.loads(busybox.ok("inspect", "busy"))[0]["State"]["Status"] == "running"
    assert busybox.ok("run", "--rm", "snapshot", "cat", "/state") == "before\n"

    unpaused = busybox.run("--trace", "commit", "--pause=false", "busy", "snapshot:2")
    assert unpaused.returncode == 0, unpaused.stderr
    assert "FROZEN" not in unpaused.stderr


def test_volume_mount_points_stay_out_of_diff_and_commit(busybox):
    volume = tempfile.mkdtemp(prefix="minidocker-test-volume-")
    try:
        busybox.ok("run", "--name", "with-volume", "-v", f"{volume}:/srv/data", "busybox", "sh",
                   "-c", "echo inside > /srv/data/file; echo kept > /kept")
        changes = busybox.ok("diff", "with-volume").splitlines()
        assert "A /kept" in changes
        assert not any(line.endswith(("/srv/data", "/srv/data/file")) for line in changes)
        busybox.ok("commit", "with-volume", "volume-free")
        with tarfile.open(last_layer(busybox, "volume-free")) as archive:
            names = archive.getnames()
        assert "kept" in names and "srv/data" not in names
    finally:
        shutil.rmtree(volume)


def test_bad_changes_are_refused_and_nothing_is_stored(busybox):
    busybox.ok("run", "--name", "plain", "busybox", "true")
    blobs = os.path.join(busybox.root, "images", "blobs", "sha256")
    before = sorted(os.listdir(blobs))
    result = busybox.run("commit", "-c", "RUN rm -rf /", "plain", "bad")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "not a valid change command" in result.stderr
    assert sorted(os.listdir(blobs)) == before
    # The names only: an image id may hold "bad" too (bad25ddfb335 did once).
    assert "bad" not in [row.split()[0] for row in busybox.ok("images").splitlines()[1:]]


# -- tools nobody here wrote read what commit wrote ------------------------------

@pytest.fixture(scope="module")
def docker_registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1 (tests/helpers/registry.py)."""
    if shutil.which("docker-registry") is None or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed to test interoperability")
    server = RegistryServer(str(tmp_path_factory.mktemp("commit-registry")))
    yield server
    server.stop()


def test_skopeo_copies_a_commit_to_a_registry_and_pull_brings_it_back(busybox, docker_registry):
    changed_container(busybox, "overlay")
    busybox.ok("commit", "-c", 'CMD ["cat", "/var/www/fresh.html"]', "changed", "committed")
    store = os.path.join(busybox.root, "images")
    remote = f"{docker_registry.address}/test/committed:latest"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{store}:committed", f"docker://{remote}"], check=True,
                   capture_output=True)
    busybox.ok("rmi", "committed")
    busybox.ok("pull", remote)
    assert busybox.ok("run", "--rm", remote) == "fresh\n"
    assert busybox.ok("run", "--rm", remote, "sh", "-c",
                      "test -e /etc/group || echo gone") == "gone\n"


def test_umoci_unpacks_a_commit_into_the_tree_the_container_saw(busybox, tmp_path):
    if shutil.which("umoci") is None or shutil.which("skopeo") is None:
        pytest.skip("umoci and skopeo are needed to test interoperability")
    identifier = changed_container(busybox, "vfs")
    busybox.ok("commit", "changed", "committed")
    layout = str(tmp_path / "layout")
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{busybox.root}/images:committed",
                    f"oci:{layout}:committed"], check=True, capture_output=True)
    bundle = str(tmp_path / "bundle")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:committed", bundle], check=True,
                   capture_output=True)
    # The vfs container's copy is what it saw, except the engine's own init
    # layer (empty mount points, and the files bound over the image's).
    seen = tree(os.path.join(busybox.root, "containers", identifier, "rootfs"))
    unpacked = tree(os.path.join(bundle, "rootfs"))
    for engine_only in ("dev", "proc", "sys", "etc/hostname", "etc/hosts", "etc/resolv.conf"):
        seen.pop(engine_only, None)
        unpacked.pop(engine_only, None)
    assert "added" in unpacked and "etc/group" not in unpacked
    assert unpacked == seen


def tree(root):
    """Describe every entry below ``root``: type, mode, owner, link target, content, time."""
    entries = {}
    for current, directories, files in os.walk(root):
        for name in directories + files:
            path = os.path.join(current, name)
            info = os.lstat(path)
            relative = os.path.relpath(path, root)
            description = [stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                           info.st_uid, info.st_gid]
            if stat.S_ISLNK(info.st_mode):
                description.append(os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    description.append(hashlib.sha256(handle.read()).hexdigest())
                description.append(int(info.st_mtime))
            entries[relative] = description
    return entries

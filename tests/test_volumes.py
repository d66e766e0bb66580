"""Chapter 6: named and anonymous volumes (real mounts, real directories)."""

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.ch6


def volume_names(engine):
    return engine.ok("volume", "ls", "-q").split()


def test_a_named_volume_outlives_its_container_and_is_seen_by_the_next(busybox):
    busybox.ok("run", "--rm", "-v", "keep:/data", "busybox", "sh", "-c", "echo kept > /data/file")
    assert volume_names(busybox) == ["keep"]
    assert busybox.ok("run", "--rm", "-v", "keep:/elsewhere", "busybox",
                      "cat", "/elsewhere/file") == "kept\n"
    details = json.loads(busybox.ok("volume", "inspect", "keep"))[0]
    assert details["Name"] == "keep" and details["Driver"] == "local"
    assert details["Mountpoint"] == os.path.join(busybox.root, "volumes", "keep", "_data")
    with open(os.path.join(details["Mountpoint"], "file")) as handle:
        assert handle.read() == "kept\n"


def test_a_new_volume_starts_with_the_images_content(busybox):
    output = busybox.ok("run", "--rm", "-v", "config:/etc", "busybox", "sh", "-c",
                        "grep ^user: /etc/passwd; echo changed > /etc/added")
    assert output.startswith("user:x:1000:1000")
    # A volume that holds data is not filled again: the change stays, the image's files too.
    assert busybox.ok("run", "--rm", "-v", "config:/etc", "busybox", "cat", "/etc/added") == "changed\n"
    data = os.path.join(busybox.root, "volumes", "config", "_data")
    assert {"added", "group", "passwd"} <= set(os.listdir(data))


def test_volume_rm_of_a_volume_in_use_is_refused(busybox):
    busybox.ok("volume", "create", "busy")
    container_id = busybox.ok("create", "-v", "busy:/data", "busybox", "true").strip()
    refused = busybox.run("volume", "rm", "busy")
    assert refused.returncode == 1
    assert "volume is in use" in refused.stderr and container_id in refused.stderr
    assert volume_names(busybox) == ["busy"]
    busybox.ok("rm", container_id)
    assert busybox.ok("volume", "rm", "busy").strip() == "busy"
    assert volume_names(busybox) == []
    missing = busybox.run("volume", "rm", "busy")
    assert missing.returncode == 1 and "no such volume" in missing.stderr
    assert busybox.run("volume", "rm", "-f", "busy").returncode == 0


def test_anonymous_volumes_go_with_rm_v_and_rm_and_named_ones_stay(busybox):
    container_id = busybox.ok("create", "-v", "/scratch", "-v", "named:/named", "busybox",
                              "true").strip()
    names = volume_names(busybox)
    assert len(names) == 2 and "named" in names
    anonymous = next(name for name in names if name != "named")
    assert len(anonymous) == 64
    mounts = json.loads(busybox.ok("inspect", container_id))[0]["Mounts"]
    assert {(mount["Type"], mount["Name"], mount["Destination"]) for mount in mounts} == {
        ("volume", anonymous, "/scratch"), ("volume", "named", "/named")}
    busybox.ok("rm", "-v", container_id)
    assert volume_names(busybox) == ["named"]
    busybox.ok("run", "--rm", "-v", "/gone", "busybox", "true")
    assert volume_names(busybox) == ["named"]  # --rm removes anonymous volumes too


def image_with_a_volume(engine, workdir, busybox_tar):
    """Load an image whose config declares ``VOLUME /store``, built with umoci."""
    layout, bundle = str(workdir / "layout"), str(workdir / "bundle")
    for arguments in (["init", "--layout", layout], ["new", "--image", f"{layout}:v"],
                      ["unpack", "--image", f"{layout}:v", bundle]):
        subprocess.run(["umoci", *arguments], check=True, capture_output=True)
    subprocess.run(["tar", "-xf", busybox_tar, "-C", os.path.join(bundle, "rootfs")], check=True)
    os.makedirs(os.path.join(bundle, "rootfs", "store"))
    with open(os.path.join(bundle, "rootfs", "store", "seed"), "w") as handle:
        handle.write("from the image\n")
    os.symlink("/etc", os.path.join(bundle, "rootfs", "hostile"))  # fact 7: inside, not the host's
    for arguments in (["repack", "--image", f"{layout}:v", bundle],
                      ["config", "--image", f"{layout}:v", "--config.volume", "/store",
                       "--config.cmd", "sh"]):
        subprocess.run(["umoci", *arguments], check=True, capture_output=True)
    archive = str(workdir / "image.tar")
    subprocess.run(["tar", "-cf", archive, "-C", layout, "."], check=True)
    engine.ok("load", "-i", archive)
    return engine.ok("images", "-q").split()[0]


def test_the_images_volume_paths_get_anonymous_volumes(engine, busybox_tar, tmp_path):
    image_id = image_with_a_volume(engine, tmp_path, busybox_tar)
    container_id = engine.ok("run", "-d", image_id, "sh", "-c",
                             "cat /store/seed; echo x > /store/f").strip()
    engine.ok("wait", container_id)
    assert engine.ok("logs", container_id) == "from the image\n"
    mounts = json.loads(engine.ok("inspect", container_id))[0]["Mounts"]
    assert [(mount["Type"], mount["Destination"]) for mount in mounts] == [("volume", "/store")]
    with open(os.path.join(mounts[0]["Source"], "f")) as handle:
        assert handle.read() == "x\n"
    # -v for the same path replaces the image's anonymous volume.
    other = engine.ok("create", "-v", "mine:/store", image_id).strip()
    assert [mount["Name"] for mount in json.loads(engine.ok("inspect", other))[0]["Mounts"]] == ["mine"]
    engine.ok("rm", "-v", container_id, other)
    assert volume_names(engine) == ["mine"]


def test_volume_prune_and_bad_names(busybox):
    busybox.ok("volume", "create", "unused")
    busybox.ok("create", "-v", "/anon", "busybox", "true")
    container_id = busybox.ok("create", "-v", "/other", "busybox", "true").strip()
    busybox.ok("rm", container_id)  # without -v: its anonymous volume stays, unused
    assert len(volume_names(busybox)) == 3
    pruned = busybox.ok("volume", "prune", "-f")
    assert "Deleted Volumes:" in pruned
    assert sorted(volume_names(busybox))[-1] == "unused" and len(volume_names(busybox)) == 2
    busybox.ok("volume", "prune", "-a", "-f")
    assert len(volume_names(busybox)) == 1  # the one still used by a container
    bad = busybox.run("run", "--rm", "-v", "bad$name:/data", "busybox", "true")
    assert bad.returncode == 125 and "invalid characters" in bad.stderr
    assert bad.stderr.count("\n") == 1


def test_filling_a_volume_follows_the_images_links_inside_the_image(engine, busybox_tar, tmp_path):
    image_id = image_with_a_volume(engine, tmp_path, busybox_tar)
    engine.ok("create", "-v", "seeded:/hostile/sub", image_id)
    engine.ok("create", "-v", "whole:/hostile", image_id)
    whole = os.path.join(engine.root, "volumes", "whole", "_data")
    with open(os.path.join(whole, "passwd")) as handle:
        assert handle.read().startswith("root:x:0:0:root:/root:/bin/sh\nuser:x:1000")  # the image's
    assert os.listdir(os.path.join(engine.root, "volumes", "seeded", "_data")) == []

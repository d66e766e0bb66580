"""Chapter 7: build, a Dockerfile as a loop of container runs and commits.

One Dockerfile uses every supported instruction; the image it builds must
run with the right command, environment, working directory and user.  A
second build must come from the cache; changing a file that a COPY reads
must redo that step and every step after it.  Bad input must fail with one
clear line naming the step, exit 1 (as ``docker build``), and leave no
container, no half-written blob and no new image behind.
"""

import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

pytestmark = pytest.mark.ch7

DOCKERFILE = """\
# every instruction minidocker supports
ARG BASE=busybox
FROM $BASE AS base
ARG GREETING=hello
ENV APP_HOME=/srv/app \\
    TITLE="demo app"
LABEL org.example.title="$TITLE" version=1
WORKDIR $APP_HOME
COPY app.sh ./bin/
COPY data/ data/
ADD archive.tar.gz /opt/
ADD notes.txt /opt/notes/
RUN ["/bin/sh", "-c", "echo exec form > /srv/app/exec.txt"]
RUN echo "$GREETING from build" > greeting.txt && chown -R 1000:1000 /srv/app
COPY --chown=user:staff data/a.txt /srv/owned.txt
USER user
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-c"]
ENTRYPOINT ["/bin/sh"]
CMD ["bin/app.sh"]
"""

APP = """\
#!/bin/sh
pwd
id -u
echo "$TITLE"
cat greeting.txt exec.txt /opt/pkg/file /opt/notes/notes.txt
find data | sort
stat -c '%U %G' /srv/owned.txt
"""


@pytest.fixture
def context(tmp_path):
    """A build context for DOCKERFILE, with files .dockerignore leaves out."""
    root = tmp_path / "context"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "secret").mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "app.sh").write_text(APP)
    (root / "app.sh").chmod(0o755)
    (root / "data" / "a.txt").write_text("a\n")
    (root / "data" / "sub" / "b.txt").write_text("b\n")
    (root / "data" / "debug.log").write_text("left out\n")
    (root / "secret" / "key").write_text("never copied\n")
    (root / "notes.txt").write_text("notes\n")
    (root / ".dockerignore").write_text("# not sent\n**/*.log\nsecret/\n")
    package = tmp_path / "package"
    (package / "pkg").mkdir(parents=True)
    (package / "pkg" / "file").write_text("from the archive\n")
    with tarfile.open(root / "archive.tar.gz", "w:gz") as archive:
        archive.add(package / "pkg", arcname="pkg")
    return root


def build(engine, context, *arguments, env=None):
    return engine.run("build", *arguments, str(context), env=env, timeout=120)


def steps(output):
    """Map each step number to whether it came from the cache."""
    found, current = {}, None
    for line in output.splitlines():
        match = re.match(r"Step (\d+)/\d+ : ", line)
        if match:
            current = int(match.group(1))
            found[current] = False
        elif line == " ---> Using cache":
            found[current] = True
    return found


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_every_instruction_builds_and_runs_as_described(busybox, context, driver):
    env = {"MINIDOCKER_STORAGE_DRIVER": driver}
    result = build(busybox, context, "-t", "app:1", "--build-arg", "GREETING=hi",
                   "--build-arg", "UNUSED=x", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Step ") == 20
    assert "[Warning] One or more build-args ['UNUSED'] were not consumed" in result.stdout
    assert result.stdout.rstrip().endswith("Successfully tagged app:1")

    output = busybox.ok("run", "--rm", "app:1", env=env)
    assert output == ("/srv/app\n1000\ndemo app\nhi from build\nexec form\nfrom the archive\n"
                      "notes\ndata\ndata/a.txt\ndata/sub\ndata/sub/b.txt\nuser staff\n")

    config = json.loads(busybox.ok("inspect", "app:1"))[0]["Config"]
    assert config["Entrypoint"] == ["/bin/sh"] and config["Cmd"] == ["bin/app.sh"]
    assert config["WorkingDir"] == "/srv/app" and config["User"] == "user"
    assert "APP_HOME=/srv/app" in config["Env"] and "TITLE=demo app" in config["Env"]
    assert not any(entry.startswith("GREETING=") for entry in config["Env"])  # an ARG stays out
    assert config["Labels"] == {"org.example.title": "demo app", "version": "1"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["Volumes"] == {"/data": {}} and config["StopSignal"] == "SIGTERM"
    # Only named images are listed; the steps' images are build cache.
    assert sorted(line.split()[0] for line in busybox.ok("images").splitlines()[1:]) == \
        ["app", "busybox"]
    assert busybox.ok("ps", "-aq") == ""


def test_a_second_build_comes_from_the_cache(busybox, context):
    first = build(busybox, context, "-t", "app")
    assert first.returncode == 0, first.stderr
    blobs = os.path.join(busybox.root, "images", "blobs", "sha256")
    before = sorted(os.listdir(blobs))
    second = build(busybox, context, "-t", "app")
    assert second.returncode == 0, second.stderr
    cached = steps(second.stdout)
    assert all(cached[number] for number in range(3, 21)), second.stdout
    assert "Running in" not in second.stdout and "Copying into" not in second.stdout
    assert first.stdout.splitlines()[-2] == second.stdout.splitlines()[-2]  # Successfully built ID
    assert sorted(os.listdir(blobs)) == before

    # Touching a file changes no content: still the cache.  --no-cache runs everything.
    os.utime(context / "app.sh")
    assert all(steps(build(busybox, context).stdout)[number] for number in range(3, 21))
    assert not any(steps(build(busybox, context, "--no-cache").stdout).values())


def test_changing_a_copied_file_invalidates_from_that_step_on(busybox, context):
    assert build(busybox, context, "-t", "app").returncode == 0
    (context / "data" / "sub" / "b.txt").write_text("changed\n")
    result = build(busybox, context, "-t", "app")
    assert result.returncode == 0, result.stderr
    cached = steps(result.stdout)
    copy_data = 8  # Step 8 is COPY data/ data/
    assert all(cached[number] for number in range(3, copy_data))
    assert not any(cached[number] for number in range(copy_data, 21))
    assert busybox.ok("run", "--rm", "--entrypoint", "cat", "app",
                      "data/sub/b.txt") == "changed\n"

    # A file .dockerignore leaves out is not content: changing it keeps the cache.
    (context / "data" / "debug.log").write_text("still left out\n")
    assert all(steps(build(busybox, context).stdout)[number] for number in range(3, 21))


def test_trace_shows_each_step_as_a_container_and_a_commit(busybox, context):
    (context / "Dockerfile").write_text("FROM busybox\nCOPY notes.txt /\nRUN echo ran\n")
    result = busybox.run("--trace", "build", str(context))
    assert result.returncode == 0, result.stderr
    trace = result.stderr
    assert "[ch7 commit] step 2/3: COPY notes.txt /" in trace
    assert "[ch7 commit] step 3/3: RUN echo ran" in trace
    assert re.search(r"\[ch7 commit\] copy 1 source\(s\) into container \w+, then commit it", trace)
    assert re.search(r"\[ch7 commit\] run /bin/sh -c echo ran in container \w+, then commit it",
                     trace)
    assert trace.count("[ch7 commit] tar the changes of") == 2
    assert "ran\n" in result.stdout


def test_from_scratch_with_an_added_root_filesystem_and_stages(busybox, tmp_path, busybox_tar):
    context = tmp_path / "scratch"
    context.mkdir()
    shutil.copy(busybox_tar, context / "rootfs.tar")
    (context / "Dockerfile").write_text(
        "FROM scratch AS root\n"
        "ADD rootfs.tar /\n"
        "FROM root\n"
        'CMD ["/bin/sh", "-c", "echo from scratch; head -1 /etc/passwd"]\n')
    result = build(busybox, context, "-t", "scratch-built")
    assert result.returncode == 0, result.stderr
    assert busybox.ok("run", "--rm", "scratch-built") == "from scratch\nroot:x:0:0:root:/root:/bin/sh\n"
    layers = json.loads(busybox.ok("inspect", "scratch-built"))[0]["RootFS"]["Layers"]
    assert len(layers) == 1


# -- bad input: one line, exit 1, nothing left behind ---------------------------

BAD = {
    "unknown instruction": ("FROM busybox\nFETCH http://example.invalid/x /x\n",
                            "dockerfile parse error on line 2: unknown instruction: FETCH"),
    "parent directory": ("FROM busybox\nRUN true\nCOPY ../outside.txt /x\n",
                         "step 3/3 (COPY ../outside.txt /x): forbidden path outside the "
                         "build context: ../outside.txt"),
    "absolute path": ("FROM busybox\nCOPY /etc/passwd /x\n",
                      "step 2/2 (COPY /etc/passwd /x): /etc/passwd: not found in the build "
                      "context (or excluded by .dockerignore)"),
    "symbolic link out": ("FROM busybox\nCOPY link-out /x\n",
                          "step 2/2 (COPY link-out /x): forbidden path outside the build "
                          "context: link-out (resolves to /etc/passwd)"),
    "failing RUN": ("FROM busybox\nRUN echo first > /first\nRUN echo second; exit 3\n",
                    "step 3/3 (RUN echo second; exit 3): the command "
                    "'/bin/sh -c echo second; exit 3' returned a non-zero code: 3"),
    "missing command": ('FROM busybox\nRUN ["/no/such/tool"]\n',
                        'step 2/2 (RUN ["/no/such/tool"]): exec: "/no/such/tool": '
                        "no such file or directory"),
    "no FROM": ("RUN true\n", "the Dockerfile has no FROM instruction"),
    "URL": ("FROM busybox\nADD http://127.0.0.1:9/x /x\n",
            "step 2/2 (ADD http://127.0.0.1:9/x /x): ADD from a URL is not supported: "
            "minidocker builds only from the context"),
    # COPY --chown reads the image's passwd as run does: a regular file
    # only (a FIFO would block the build for ever), its IDs checked.
    "chown, an ID no number": ("FROM busybox\nRUN echo 'ghost:x:abc:0::/:/bin/sh' >> /etc/passwd\n"
                               "COPY --chown=ghost Dockerfile /x\n",
                               "step 3/3 (COPY --chown=ghost Dockerfile /x): the container's "
                               "passwd or group file holds an invalid ID: 'abc'"),
    "chown, a FIFO passwd": ("FROM busybox\nRUN rm /etc/passwd && mkfifo /etc/passwd\n"
                             "COPY --chown=ghost Dockerfile /x\n",
                             "step 3/3 (COPY --chown=ghost Dockerfile /x): unable to find user "
                             "ghost: no matching entries in /etc/passwd"),
    "chown, past the last ID": ("FROM busybox\nCOPY --chown=4294967295 Dockerfile /x\n",
                                "step 2/2 (COPY --chown=4294967295 Dockerfile /x): invalid "
                                "--chown ID: 4294967295"),
    # str.isdigit() says yes to "²", which int() refuses with a traceback.
    "EXPOSE, no ASCII number": ("FROM busybox\nEXPOSE ²\n",
                                "step 2/2 (EXPOSE ²): invalid port to EXPOSE: ²"),
    # A missing base is pulled, as Docker's build does; here from a
    # registry on a closed local port (conftest.py keeps tests off the net).
    "unknown base": ("FROM 127.0.0.1:9/no-such-image\n",
                     "step 1/1 (FROM 127.0.0.1:9/no-such-image): "
                     "cannot reach the registry at 127.0.0.1:9: connection refused"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_with_one_line_and_leaves_nothing(busybox, tmp_path, case):
    dockerfile, message = BAD[case]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    (tmp_path / "outside.txt").write_text("outside\n")
    os.symlink("/etc/passwd", context / "link-out")
    images_before = busybox.ok("images", "-q")
    result = build(busybox, context, "-t", "broken")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"minidocker: {message}\n"
    assert busybox.ok("ps", "-aq") == ""
    assert busybox.ok("images", "-q") == images_before
    blobs = os.path.join(busybox.root, "images", "blobs", "sha256")
    assert not [name for name in os.listdir(blobs) if name.startswith(".")]
    containers = os.path.join(busybox.root, "containers")
    assert not os.path.isdir(containers) or os.listdir(containers) == []
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                            text=True).stdout
    assert busybox.root not in mounts

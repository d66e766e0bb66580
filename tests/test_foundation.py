"""The foundation: a container on its own root (chapters 1 and 3).

Each test runs real containers on the real kernel through the command line,
the way a user would, and checks what isolation the kernel really gave.
"""

import os
import re
import select
import shutil
import socket
import subprocess
import tarfile
import time

import pytest

from helpers.engine import REPO
from helpers.images import make_busybox_rootfs

DOCKER_DEFAULT_BOUNDING_SET = "00000000a80425fb"


def run_ok(engine, *arguments, **options):
    return engine.ok("run", "--rm", *arguments, **options)


# -- chapter 1: namespaces ---------------------------------------------------

@pytest.mark.ch1
def test_hostname_is_private_to_the_container(busybox):
    before = socket.gethostname()
    # The engine set "box" in the container's UTS namespace; the host keeps its
    # name.  Like Docker, the container itself lacks CAP_SYS_ADMIN to change it.
    output = run_ok(busybox, "--hostname", "box", "busybox", "sh", "-c",
                    "hostname; hostname changed-inside 2>/dev/null || echo refused; hostname")
    assert output.split() == ["box", "refused", "box"]
    assert socket.gethostname() == before != "box"


@pytest.mark.ch1
def test_command_is_pid_1_and_sees_only_its_own_processes(busybox):
    output = run_ok(busybox, "busybox", "sh", "-c", "echo $$; ps -o pid,comm; true")
    lines = output.splitlines()
    assert lines[0] == "1"
    processes = [line.split() for line in lines[2:]]
    assert [pid for pid, _ in processes] == ["1", str(max(int(p) for p, _ in processes))]
    assert len(processes) == 2, output  # the shell and ps, nothing of the host


@pytest.mark.ch1
def test_network_none_has_only_loopback_and_it_is_up(busybox):
    output = run_ok(busybox, "--network", "none", "busybox", "sh", "-c",
                    "ls /sys/class/net; cat /sys/class/net/lo/operstate; "
                    "ping -c 1 -W 1 127.0.0.1 >/dev/null && echo ping-ok")
    lines = output.split()
    assert lines[0] == "lo" and len([l for l in lines if l not in ("unknown", "ping-ok")]) == 1
    assert "ping-ok" in lines


@pytest.mark.ch1
def test_host_shared_memory_is_invisible_inside(busybox):
    created = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True, check=True)
    segment = re.search(r"(\d+)", created.stdout).group(1)
    try:
        host_view = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
        assert segment in host_view.split()
        inside = run_ok(busybox, "busybox", "cat", "/proc/sysvipc/shm")
        assert len(inside.strip().splitlines()) == 1, inside  # only the header line
    finally:
        subprocess.run(["ipcrm", "-m", segment], check=True)


@pytest.mark.ch1
def test_container_mounts_never_reach_the_host(busybox):
    # Nor does word of them: libmount writes mounts down in the host's
    # /run/mount/utab (replacing the file) unless asked not to.
    utab = "/run/mount/utab"
    before = os.stat(utab).st_ino if os.path.exists(utab) else None
    process = subprocess.Popen(busybox.command("run", "--rm", "busybox", "sh", "-c",
                                               "echo started; sleep 2"),
                               stdout=subprocess.PIPE, env=busybox.environment(), cwd=REPO)
    try:
        assert process.stdout.readline() == b"started\n"
        with open("/proc/self/mountinfo") as mountinfo:
            host_mounts = mountinfo.read()
        assert busybox.root not in host_mounts
    finally:
        process.wait(timeout=30)
    assert (os.stat(utab).st_ino if os.path.exists(utab) else None) == before


@pytest.mark.ch1
def test_container_has_its_own_namespaces(busybox):
    output = run_ok(busybox, "busybox", "sh", "-c",
                    "for kind in pid mnt uts ipc net cgroup; do readlink /proc/self/ns/$kind; done")
    inside = output.split()
    for kind, link in zip(["pid", "mnt", "uts", "ipc", "net", "cgroup"], inside):
        assert link != os.readlink(f"/proc/self/ns/{kind}"), kind


# -- chapter 3: the root filesystem --------------------------------------------

ESCAPE_SOURCE = r"""
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
/* The classic chroot escape: chroot into a subdirectory (so the working
   directory is now *outside* the root), climb with "..", chroot there. */
int main(int argc, char **argv) {
    mkdir("escape-dir", 0755);
    if (chroot("escape-dir") != 0) { perror("chroot"); return 2; }
    for (int i = 0; i < 256; i++) chdir("..");
    if (chroot(".") != 0) { perror("chroot ."); return 2; }
    puts(access(argv[1], F_OK) == 0 ? "ESCAPED" : "CONTAINED");
    return 0;
}
"""


@pytest.fixture(scope="module")
def escape_program(tmp_path_factory):
    directory = tmp_path_factory.mktemp("escape")
    source = directory / "escape.c"
    source.write_text(ESCAPE_SOURCE)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(directory / "escape"), str(source)],
                   check=True)
    marker = directory / "host-marker"
    marker.write_text("only the host has this file\n")
    return directory, str(marker)


@pytest.mark.ch3
def test_plain_chroot_is_escapable_which_is_why_the_root_is_moved(escape_program, tmp_path):
    # First show the escape works: this is what a plain chroot gives.
    directory, marker = escape_program
    jail = make_busybox_rootfs(str(tmp_path / "jail"))
    shutil.copy(directory / "escape", os.path.join(jail, "escape"))
    result = subprocess.run(["chroot", jail, "/escape", marker], capture_output=True, text=True)
    assert result.stdout.strip() == "ESCAPED"


@pytest.mark.ch3
def test_chroot_escape_fails_inside_a_container(busybox, escape_program):
    directory, marker = escape_program
    output = run_ok(busybox, "-v", f"{directory}:/probe:ro", "-w", "/tmp", "busybox",
                    "/probe/escape", marker)
    assert output.strip() == "CONTAINED"


@pytest.mark.ch3
def test_the_root_switch_holds_where_the_hosts_own_root_is_an_overlay(busybox, escape_program,
                                                                      tmp_path):
    # mount --all skips the table's last line (the rbind onto //) when the
    # host's / looks the same to libmount: an overlay at "/", as on a host
    # that is itself a container.  An overlay stacked on / in a mount
    # namespace of the test's own makes such a host; the engine must fall
    # back to mount --move, and the climb must still end inside.
    directory, marker = escape_program
    for name in ("lower", "upper", "work"):
        os.mkdir(tmp_path / name)
    stack = (f"mount -t overlay overlay -o lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,"
             f'workdir={tmp_path}/work // && exec "$@"')
    command = busybox.command("--trace", "run", "--rm", "--network", "none",
                              "-v", f"{directory}:/probe:ro", "-w", "/tmp", "busybox",
                              "/probe/escape", marker)
    result = subprocess.run(["unshare", "--mount", "--propagation", "private",
                             "sh", "-c", stack, "sh", *command],
                            capture_output=True, text=True, env=busybox.environment(),
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "CONTAINED"
    assert "mount --move --no-mtab --no-canonicalize . /" in result.stderr, result.stderr


@pytest.mark.ch3
def test_kernel_interfaces_are_protected(busybox):
    output = run_ok(busybox, "busybox", "sh", "-c",
                    "echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written;"
                    "mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mounted;"
                    "echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo sysctl-written;"
                    "touch /sys/kernel/x 2>/dev/null && echo sys-written;"
                    "grep CapBnd /proc/self/status")
    assert "written" not in output and "mounted" not in output
    assert output.split()[-1] == DOCKER_DEFAULT_BOUNDING_SET


@pytest.mark.ch3
def test_dev_is_minimal_and_works(busybox):
    output = run_ok(busybox, "busybox", "sh", "-c",
                    "ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; "
                    "echo x > /dev/null && echo null-ok; ls -l /dev/ptmx")
    names = set(output.splitlines()[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "fd",
            "stdin", "stdout", "stderr", "ptmx"} <= names
    assert not names & {"sda", "vda", "mem", "kmsg"}
    assert "null-ok" in output and "-> pts/ptmx" in output


@pytest.mark.ch3
@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_copy_on_write_keeps_the_image_unchanged(busybox, driver):
    env = {"MINIDOCKER_STORAGE_DRIVER": driver}
    first = busybox.ok("run", "busybox", "sh", "-c",
                       "echo changed > /var/www/index.html; rm /etc/group; echo new > /new-file;"
                       "cat /var/www/index.html", env=env)
    assert first.strip() == "changed"
    second = run_ok(busybox, "busybox", "sh", "-c",
                    "cat /var/www/index.html; test -e /etc/group && echo group-present;"
                    "test -e /new-file || echo no-new-file", env=env)
    assert second.split("\n")[:3] == ["hello from minidocker", "group-present", "no-new-file"]
    inspect = busybox.ok("inspect", busybox.ok("ps", "-aq").split()[0])
    assert f'"Driver": "{driver}"' in inspect


@pytest.mark.ch3
def test_read_only_root(busybox):
    output = run_ok(busybox, "--read-only", "busybox", "sh", "-c",
                    "touch /x 2>/dev/null && echo wrote-root; echo ok > /dev/shm/y && echo shm-ok")
    assert "wrote-root" not in output and "shm-ok" in output


@pytest.mark.ch3
def test_bind_volume_read_write_and_read_only(busybox, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "from-host").write_text("host data\n")
    output = run_ok(busybox, "-v", f"{data}:/data", "-w", "/data", "-e", "A=1", "busybox",
                    "sh", "-c", "cat from-host; pwd; echo $A; echo written > from-container")
    assert output.split("\n")[:3] == ["host data", "/data", "1"]
    assert (data / "from-container").read_text() == "written\n"
    output = run_ok(busybox, "-v", f"{data}:/data:ro", "busybox", "sh", "-c",
                    "echo x > /data/nope 2>/dev/null && echo wrote; cat /data/from-host")
    assert "wrote" not in output and "host data" in output
    assert not (data / "nope").exists()


@pytest.mark.ch3
def test_user_and_groups_come_from_the_image(busybox, tmp_path):
    output = run_ok(busybox, "-u", "user", "busybox", "sh", "-c", "id; echo $HOME; "
                    "grep CapEff /proc/self/status")
    assert "uid=1000(user) gid=1000(user) groups=50(staff)" in output
    assert "/home/user" in output and "0000000000000000" in output
    assert run_ok(busybox, "-u", "1000:1000", "busybox", "id", "-u").strip() == "1000"


def hostile_image(engine, tmp_path):
    """An image whose /data, /work and /etc-link point at the host's /etc."""
    rootfs = make_busybox_rootfs(str(tmp_path / "hostile"))
    os.symlink("/etc", os.path.join(rootfs, "data"))
    os.symlink("/etc", os.path.join(rootfs, "work"))
    os.symlink("../../../../../../etc", os.path.join(rootfs, "climb"))
    tarball = str(tmp_path / "hostile.tar")
    with tarfile.open(tarball, "w") as archive:
        archive.add(rootfs, arcname=".")
    engine.ok("import", tarball, "hostile")


@pytest.mark.ch3
def test_volume_and_workdir_through_hostile_symlinks_stay_inside(busybox, tmp_path):
    hostile_image(busybox, tmp_path)
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "planted").write_text("x")
    before = sorted(os.listdir("/etc"))
    output = run_ok(busybox, "-v", f"{volume}:/data", "hostile", "ls", "/etc/planted")
    assert output.split() == ["/etc/planted"]
    output = run_ok(busybox, "-w", "/work/sub", "hostile", "sh", "-c", "pwd; touch made-here")
    assert output.split() == ["/etc/sub"]
    # That volume now holds /etc, so, as Docker does, the engine made the
    # mount points of hostname, hosts and resolv.conf in it.
    assert sorted(os.listdir(volume)) == ["hostname", "hosts", "planted", "resolv.conf"]
    second = tmp_path / "second"
    second.mkdir()
    (second / "planted").write_text("x")
    output = run_ok(busybox, "-v", f"{second}:/climb/deeper", "hostile", "ls", "/etc/deeper")
    assert output.split() == ["planted"]
    assert sorted(os.listdir("/etc")) == before
    assert not os.path.exists("/etc/sub") and not os.path.exists("/etc/deeper")


@pytest.mark.ch3
def test_image_config_is_honoured(busybox, busybox_tar):
    busybox.ok("import", "-c", "ENV GREETING=hi", "-c", "WORKDIR /tmp", "-c", "USER user",
               "-c", 'CMD ["sh", "-c", "echo $GREETING; pwd; id -un"]', busybox_tar, "configured")
    assert run_ok(busybox, "configured").split() == ["hi", "/tmp", "user"]
    output = run_ok(busybox, "--entrypoint", "echo", "configured", "replaced")
    assert output.strip() == "replaced"


@pytest.mark.ch3
def test_exit_codes_follow_docker(busybox, tmp_path):
    assert busybox.run("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    missing = busybox.run("run", "--rm", "busybox", "no-such-command")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    not_executable = busybox.run("run", "--rm", "busybox", "/etc/passwd")
    assert not_executable.returncode == 126
    # PID 1 ignores signals sent from inside its namespace (pid_namespaces(7)),
    # so the signal comes from the host, as `docker kill` would send it.
    process = subprocess.Popen(busybox.command("run", "--rm", "--name", "victim", "busybox",
                                               "sh", "-c", "echo up; sleep 30"),
                               stdout=subprocess.PIPE, env=busybox.environment(), cwd=REPO)
    assert process.stdout.readline() == b"up\n"
    import json
    pid = json.loads(busybox.ok("inspect", "victim"))[0]["State"]["Pid"]
    os.kill(pid, 9)
    assert process.wait(timeout=30) == 137
    assert busybox.ok("ps", "-aq") == ""


@pytest.mark.ch3
def test_interactive_terminal(busybox):
    master, slave = os.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    process = subprocess.Popen(busybox.command("run", "--rm", "-it", "--hostname", "box",
                                               "busybox", "sh"),
                               stdin=slave, stdout=slave, stderr=slave, env=busybox.environment(),
                               cwd=REPO, start_new_session=True)
    os.close(slave)
    output = b""
    sent = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if b"\x1b[6n" in chunk:  # busybox asks the terminal where the cursor is
                os.write(master, b"\x1b[1;1R")
            if not sent and b"# " in output:
                os.write(master, b"tty; hostname; stty size; exit 7\n")
                sent = True
        elif process.poll() is not None:
            break
    os.close(master)
    assert process.wait(timeout=10) == 7
    text = output.decode(errors="replace")
    assert "/dev/pts/0" in text and "box" in text and "33 111" in text, text


# -- bad input ---------------------------------------------------------------------

BAD_RUNS = [
    (["--pull", "never", "no-such-image", "true"], "No such image"),
    (["-v", "relative", "busybox", "true"], "invalid volume specification"),
    (["-v", "/tmp:relative", "busybox", "true"], "invalid volume specification"),
    (["-v", "/tmp:/x:bogus", "busybox", "true"], "invalid mode"),
    (["-v", "/tmp:/", "busybox", "true"], "invalid volume specification"),
    (["-e", "=value", "busybox", "true"], "invalid environment variable"),
    (["-u", "a:b:c", "busybox", "true"], "invalid user"),
    (["-u", "nobody-here", "busybox", "true"], "unable to find user"),
    (["-w", "relative", "busybox", "true"], "needs to be an absolute path"),
    (["--hostname", "bad_host!", "busybox", "true"], "invalid hostname"),
    (["--name", "bad name", "busybox", "true"], "Invalid container name"),
    (["--network", "nowhere", "busybox", "true"], "network nowhere not found"),
    (["busybox"], "no command specified"),
    (["--no-such-flag", "busybox", "true"], "unknown flag: --no-such-flag"),
    (["Bad/Name", "true"], "invalid reference format"),
]


def tmp_entries():
    """What is in /tmp, less other tests' engine roots and pytest's own folders."""
    return sorted(name for name in os.listdir("/tmp")
                  if not name.startswith(("minidocker-test-", "minidocker-vmtest-", "pytest-of-")))


@pytest.mark.ch3
@pytest.mark.parametrize("arguments,message", BAD_RUNS, ids=[m for _, m in BAD_RUNS])
def test_bad_input_is_one_line_and_exit_125(busybox, arguments, message):
    before = tmp_entries()
    result = busybox.run("run", "--rm", *arguments)
    assert result.returncode == 125, result
    lines = [line for line in result.stderr.splitlines() if not line.startswith("See '")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert busybox.ok("ps", "-aq") == ""
    containers = os.path.join(busybox.root, "containers")
    assert not os.path.isdir(containers) or os.listdir(containers) == []
    assert tmp_entries() == before


@pytest.mark.ch3
def test_duplicate_name_is_refused(busybox):
    busybox.ok("create", "--name", "only-one", "busybox", "true")
    result = busybox.run("run", "--name", "only-one", "busybox", "true")
    assert result.returncode == 125 and "already in use" in result.stderr
    assert len(busybox.ok("ps", "-aq").split()) == 1


@pytest.mark.ch3
def test_hostname_files_sit_on_top_of_a_volume_over_etc(busybox, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "hosts").symlink_to("/etc/shadow")  # resolved inside the container, not on the host
    output = run_ok(busybox, "--network", "none", "--hostname", "on-top", "-v", f"{etc}:/etc",
                    "busybox", "sh", "-c", "cat /etc/hostname; grep -c localhost /etc/hosts; "
                                           "head -c 4 /etc/passwd")
    assert output.split() == ["on-top", "2", "root"]
    assert (etc / "hosts").is_symlink() and os.readlink(etc / "hosts") == "/etc/shadow"


# -- the start path ------------------------------------------------------------

#: What ``run`` does without: modules whose import costs more than the work
#: they would do there (host.py, "A note on the imports of the start path"),
#: and the chapters a stored image does not need.
NOT_ON_THE_START_PATH = {
    "re", "json", "enum", "signal", "socket", "contextlib", "functools", "collections",
    "subprocess", "threading", "ipaddress", "shlex", "shutil", "tarfile", "hashlib", "termios",
    "minidocker.registry", "minidocker.http_client", "minidocker.commit", "minidocker.volume",
}


def test_run_imports_none_of_the_modules_it_does_without(busybox):
    result = subprocess.run(
        busybox.command("run", "--rm", "--network", "none", "--pull", "never", "busybox",
                        "echo", "ran"),
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env=busybox.environment({"PYTHONPROFILEIMPORTTIME": "1"}))
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    # "import time: self [us] | cumulative | imported package", one line per import.
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "minidocker.container" in imported  # the lines were read right
    assert imported & NOT_ON_THE_START_PATH == set()


def test_state_files_are_json_as_the_json_module_reads_and_writes_it():
    import json

    from minidocker import host

    values = [{"Id": "a" * 64, "Config": {"Env": ["PATH=/bin", "Ü=ß\n\x00"], "Tty": False},
               "Numbers": [0, -1, 2.5, 1e300, None, True], "Empty": {}, "List": []},
              "évité\u2028", [], 3, float("inf")]
    for value in values:
        assert host.dump_json(value) == json.dumps(value)
        assert host.dump_json(value, canonical=True) == \
            json.dumps(value, sort_keys=True, separators=(",", ":"))
        text = json.dumps(value, indent=2)
        assert host.load_json(f" \n{text}\n") == json.loads(text)
        assert host.load_json(text.encode()) == json.loads(text)
        assert host.load_json(b"\xef\xbb\xbf" + text.encode()) == json.loads(b"\xef\xbb\xbf" + text.encode())
    for broken in ("", "{", '{"a": 1} x', "[1,]", '"\x01"', "nul", "[" * 100000):
        with pytest.raises(ValueError):
            host.load_json(broken)
    with pytest.raises(TypeError):
        host.dump_json({"a": object()})

"""Chapter 2: control groups, checked against the real kernel.

``TestCgroupApi`` drives minidocker.cgroup directly (a process forked here
joins a group, the kernel enforces its limits).  The same class runs twice:
here, against this host's driver (v1 on this lab's host), and inside a
virtual machine that boots Debian's kernel with only cgroup v2 mounted
(``test_v2_driver_inside_a_cgroup2_kernel``).  The other tests go through
``python -m minidocker`` as a user would.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from helpers import qemu_v2
from minidocker import cgroup, host

pytestmark = pytest.mark.ch2

MiB = 1024 * 1024

#: Set inside the v2 virtual machine: the driver the host must get there.
EXPECTED_VERSION = os.environ.get("MINIDOCKER_EXPECT_CGROUP_VERSION")

BUSYBOX = "/bin/busybox"


@pytest.fixture
def group():
    """A fresh group named minidocker/test-..., destroyed afterwards."""
    made = cgroup.Cgroup(f"minidocker/test-{uuid.uuid4().hex[:12]}")
    yield made
    made.destroy()
    assert not made.exists(), f"{made.name} survived destroy()"


def start_in(group, argv, **options):
    """Start ``argv`` as a child that joins ``group`` before it execs."""
    return subprocess.Popen(argv, preexec_fn=group.join, **options)


def run_in(group, argv, timeout=30):
    """Run ``argv`` inside ``group``; return (exit status, standard output)."""
    child = start_in(group, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output, _ = child.communicate(timeout=timeout)
    return child.returncode, output


def knob(group, filename):
    """Read one of the group's files, from whichever directory holds it."""
    for directory in group.directories():
        path = os.path.join(directory, filename)
        if os.path.exists(path):
            with open(path) as handle:
                return handle.read().strip()
    raise AssertionError(f"no {filename} in {group.directories()}")


def cpu_time_over(group, seconds):
    """CPU seconds the group used during ``seconds`` of wall time."""
    before = group.stats()["cpu_nanoseconds"]
    time.sleep(seconds)
    return (group.stats()["cpu_nanoseconds"] - before) / 1e9


class TestCgroupApi:
    """The cgroup API on this host's driver (also run inside the v2 VM)."""

    def test_driver_matches_the_host(self):
        driver = cgroup.host_driver()
        if EXPECTED_VERSION:
            assert driver.version == int(EXPECTED_VERSION)
        hierarchies = cgroup.find_hierarchies()
        has_v1 = any(h.version == 1 and h.controllers for h in hierarchies)
        assert driver.version == (1 if has_v1 else 2)

    def test_create_and_destroy_leave_nothing(self, group):
        group.create(cgroup.Limits())
        assert group.exists()
        for directory in group.directories():
            assert os.path.isdir(directory)
        group.destroy()
        group.destroy()  # idempotent
        for directory in group.directories():
            assert not os.path.exists(directory)
            # the shared parent goes too once no container uses it, unless
            # another test run (a parallel helper) still has a group there
            parent = os.path.dirname(directory)
            assert not os.path.exists(parent) or child_groups(parent)

    def test_the_process_is_inside_before_its_command_runs(self, group):
        group.create(cgroup.Limits())
        status, output = run_in(group, ["cat", "/proc/self/cgroup"])
        assert status == 0
        lines = [line for line in output.splitlines()
                 if line.endswith("/" + group.name)]
        # v1: one line per hierarchy we use; v2: the single 0:: line
        assert len(lines) >= (len(group.directories()) if group.version == 1 else 1), output

    def test_processes_lists_what_joined(self, group):
        group.create(cgroup.Limits())
        child = start_in(group, ["sleep", "30"])
        try:
            assert group.processes() == [child.pid]
            assert group.stats()["pids"] == 1 or group.version == 1 and \
                "pids" not in cgroup.host_driver().mount_points
        finally:
            child.kill()
            child.wait()
        assert group.processes() == []

    def test_over_allocating_memory_is_oom_killed(self, group):
        group.create(cgroup.Limits(memory=32 * MiB))
        status, _ = run_in(group, [BUSYBOX, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])
        assert status == -signal.SIGKILL
        assert group.oom_killed()

    def test_allocating_under_the_limit_completes(self, group):
        group.create(cgroup.Limits(memory=32 * MiB))
        status, _ = run_in(group, [BUSYBOX, "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=4"])
        assert status == 0
        assert not group.oom_killed()

    def test_memory_swap_follows_docker(self, group):
        group.create(cgroup.Limits(memory=32 * MiB))
        if group.version == 1:
            assert knob(group, "memory.limit_in_bytes") == str(32 * MiB)
            # no --memory-swap: as much swap as memory, so memory+swap = 2x
            assert knob(group, "memory.memsw.limit_in_bytes") == str(64 * MiB)
        else:
            assert knob(group, "memory.max") == str(32 * MiB)
            assert knob(group, "memory.swap.max") == str(32 * MiB)

    def test_memory_swap_minus_one_is_unlimited_swap(self, group):
        group.create(cgroup.Limits(memory=32 * MiB, memory_swap=-1))
        if group.version == 1:
            assert int(knob(group, "memory.memsw.limit_in_bytes")) > 2 ** 60
        else:
            assert knob(group, "memory.swap.max") == "max"

    def test_memory_swap_equal_to_memory_means_no_swap(self, group):
        group.create(cgroup.Limits(memory=32 * MiB, memory_swap=32 * MiB))
        if group.version == 1:
            assert knob(group, "memory.memsw.limit_in_bytes") == str(32 * MiB)
        else:
            assert knob(group, "memory.swap.max") == "0"

    def test_half_a_cpu_gets_about_half_a_cpu(self, group):
        group.create(cgroup.Limits(cpus=0.5))
        if group.version == 1:
            assert knob(group, "cpu.cfs_quota_us") == "50000"
            assert knob(group, "cpu.cfs_period_us") == "100000"
        else:
            assert knob(group, "cpu.max") == "50000 100000"
        busy = start_in(group, [BUSYBOX, "sh", "-c", "while :; do :; done"])
        try:
            time.sleep(0.3)
            used = cpu_time_over(group, 2.0)
        finally:
            busy.kill()
            busy.wait()
        # A busy loop alone would use 1.0 CPU seconds per second.
        assert 0.3 <= used / 2.0 <= 0.7, f"used {used:.2f} CPU seconds in 2 s"

    def test_cpu_shares(self, group):
        group.create(cgroup.Limits(cpu_shares=512))
        if group.version == 1:
            assert knob(group, "cpu.shares") == "512"
        else:
            assert knob(group, "cpu.weight") == str(cgroup.cpu_weight(512)) == "20"

    def test_cpuset_pins_the_process(self, group):
        group.create(cgroup.Limits(cpuset_cpus="0"))
        status, output = run_in(group, ["grep", "Cpus_allowed_list", "/proc/self/status"])
        assert status == 0
        assert output.split() == ["Cpus_allowed_list:", "0"]

    def test_pids_limit_stops_the_eleventh_process(self, group):
        group.create(cgroup.Limits(pids_limit=10))
        assert knob(group, "pids.max") == "10"
        script = textwrap.dedent("""
            import os, signal, time
            children = []
            while len(children) < 20:
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                children.append(pid)
            for pid in children:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            print(len(children))
        """)
        status, output = run_in(group, [sys.executable, "-c", script])
        # the script itself is process 1 of 10; nine children fit, the
        # tenth (the eleventh process) fails to fork, and the script lives on
        assert status == 0
        assert output.strip() == "9"

    def test_freeze_stops_cpu_use_and_thaw_restarts_it(self, group):
        group.create(cgroup.Limits())
        busy = start_in(group, [BUSYBOX, "sh", "-c", "while :; do :; done"])
        try:
            group.freeze()
            assert cpu_time_over(group, 0.5) < 0.02
            group.thaw()
            assert cpu_time_over(group, 0.5) > 0.1
        finally:
            busy.kill()
            busy.wait()

    def test_destroy_kills_leftover_processes(self, group):
        group.create(cgroup.Limits())
        # a shell whose children outlive it, as after a monitor died
        start_in(group, ["sh", "-c", "sleep 100 & sleep 100 & exit 0"]).wait()
        leftovers = group.processes()
        assert len(leftovers) == 2
        group.destroy()
        assert not group.exists()
        for pid in leftovers:
            reap(pid)
            assert not os.path.exists(f"/proc/{pid}") or zombie(pid)

    def test_stats_count_memory(self, group):
        group.create(cgroup.Limits(memory=64 * MiB))
        holder = start_in(group, [sys.executable, "-c",
                                  "import sys; data = bytearray(20 * 1024 * 1024); "
                                  "print('ready', flush=True); sys.stdin.read()"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "ready"
            stats = group.stats()
            assert stats["memory_usage"] >= 20 * MiB
            assert stats["memory_limit"] == 64 * MiB
        finally:
            holder.kill()
            holder.wait()


def child_groups(directory):
    """The groups below a cgroup directory (its other entries are knob files)."""
    return [entry for entry in os.listdir(directory)
            if os.path.isdir(os.path.join(directory, entry))]


def reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its own parent (or init) reaps it


def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- pure parts: units, Docker's rules, host layouts ---------------------

@pytest.mark.parametrize("text, expected", [
    ("512", 512), ("1b", 1), ("32m", 32 * MiB), ("32M", 32 * MiB), ("32mb", 32 * MiB),
    ("32MiB", 32 * MiB), ("1.5g", 1536 * MiB), ("4k", 4096),
])
def test_parse_bytes_like_docker(text, expected):
    assert cgroup.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "12x", "1..5m"])
def test_parse_bytes_refuses_nonsense(text):
    with pytest.raises(host.EngineError, match="invalid size"):
        cgroup.parse_bytes(text)


def test_memory_swap_minus_one_parses():
    assert cgroup.parse_memory_swap("-1") == -1
    assert cgroup.parse_memory_swap("64m") == 64 * MiB


@pytest.mark.parametrize("limits, message", [
    (cgroup.Limits(memory=5 * MiB), "Minimum memory limit allowed is 6MB"),
    (cgroup.Limits(memory_swap=64 * MiB), "You should always set the Memory limit"),
    (cgroup.Limits(memory=64 * MiB, memory_swap=32 * MiB), "Minimum memoryswap limit"),
    (cgroup.Limits(cpus=0.001), "Range of CPUs is from 0.01"),
    (cgroup.Limits(cpus=1000.0), "Range of CPUs is from 0.01"),
    (cgroup.Limits(cpu_shares=-5), "CPU shares"),
    (cgroup.Limits(cpuset_cpus="0-"), "Invalid value 0- for cpuset cpus"),
    (cgroup.Limits(cpuset_cpus="4096"), "Requested CPUs are not available"),
])
def test_limits_check_refuses_what_docker_refuses(limits, message):
    with pytest.raises(host.EngineError, match=message):
        limits.check()


def test_limits_check_accepts_sane_values():
    cgroup.Limits(memory=6 * MiB, memory_swap=-1, cpus=0.5, cpu_shares=512,
                  cpuset_cpus="0", pids_limit=10).check()


def test_cpu_list_round_trip():
    assert cgroup.parse_cpu_list("0-2,4,6-7") == {0, 1, 2, 4, 6, 7}
    assert cgroup.format_cpu_list({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"


def test_cpu_weight_matches_runc():
    assert cgroup.cpu_weight(2) == 1
    assert cgroup.cpu_weight(1024) == 39
    assert cgroup.cpu_weight(262144) == 10000
    assert cgroup.cpu_weight(1) == 1  # clamped like the kernel clamps cpu.shares


CENTOS7_MOUNTINFO = """\
22 17 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
23 22 0:21 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
26 22 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpuacct,cpu
27 22 0:25 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
28 22 0:26 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
29 22 0:27 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
40 27 0:25 /docker /var/lib/docker/cg rw - cgroup cgroup rw,memory
"""


def test_hierarchies_come_from_mountinfo(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(CENTOS7_MOUNTINFO)
    found = cgroup.find_hierarchies(str(mountinfo))
    places = {h.mount_point: set(h.controllers) for h in found}
    # co-mounted controllers share one hierarchy; a subtree mount is ignored
    assert places["/sys/fs/cgroup/cpu,cpuacct"] == {"cpu", "cpuacct"}
    assert places["/sys/fs/cgroup/memory"] == {"memory"}
    assert places["/sys/fs/cgroup/systemd"] == set()
    assert "/var/lib/docker/cg" not in places
    driver = cgroup.V1Driver(found)
    # one directory for cpu and cpuacct, no pids hierarchy at all
    assert driver.directories("minidocker/x") == [
        "/sys/fs/cgroup/memory/minidocker/x", "/sys/fs/cgroup/cpu,cpuacct/minidocker/x",
        "/sys/fs/cgroup/cpuset/minidocker/x", "/sys/fs/cgroup/freezer/minidocker/x"]


def test_a_limit_without_its_controller_is_an_error(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(CENTOS7_MOUNTINFO)
    driver = cgroup.V1Driver(cgroup.find_hierarchies(str(mountinfo)))
    with pytest.raises(host.EngineError, match="--pids-limit needs the pids cgroup controller"):
        driver.require(cgroup.Limits(pids_limit=10).needed_controllers())
    driver.require(cgroup.Limits(memory=64 * MiB, cpus=1.0).needed_controllers())


# -- through the command line, as a user runs it ----------------------------

def container_group(identifier):
    return cgroup.Cgroup(f"minidocker/{identifier}")


def inspect(engine, name):
    return json.loads(engine.ok("inspect", name))[0]


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_run_over_the_memory_limit_exits_137_and_says_oom(busybox):
    result = busybox.run("run", "--name", "hog", "-m", "32m", "busybox",
                         "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    assert result.returncode == 137, result.stderr
    state = inspect(busybox, "hog")["State"]
    assert state["OOMKilled"] is True
    assert state["ExitCode"] == 137


def test_run_under_the_memory_limit_completes(busybox):
    result = busybox.run("run", "--name", "modest", "-m", "32m", "busybox",
                         "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=4")
    assert result.returncode == 0, result.stderr
    assert inspect(busybox, "modest")["State"]["OOMKilled"] is False


@pytest.mark.parametrize("flags, message", [
    (["-m", "5m"], "Minimum memory limit allowed is 6MB"),
    (["-m", "lots"], "invalid size"),
    (["--memory-swap", "64m"], "You should always set the Memory limit"),
    (["-m", "64m", "--memory-swap", "32m"], "Minimum memoryswap limit"),
    (["--cpus", "0.001"], "Range of CPUs is from 0.01"),
    (["--cpuset-cpus", "4096"], "Requested CPUs are not available"),
])
def test_run_refuses_bad_limits_with_docker_words(busybox, flags, message):
    result = busybox.run("run", "--rm", *flags, "busybox", "true")
    assert result.returncode == 125
    assert message in result.stderr
    assert busybox.ok("ps", "-aq").split() == []


def test_inspect_shows_the_limits_under_docker_keys(busybox):
    busybox.ok("create", "--name", "limited", "-m", "32m", "--cpus", "1.5", "-c", "512",
               "--cpuset-cpus", "0", "--pids-limit", "20", "busybox", "true")
    host_config = inspect(busybox, "limited")["HostConfig"]
    assert host_config["Memory"] == 32 * MiB
    assert host_config["MemorySwap"] == 64 * MiB  # Docker's default: as much swap as memory
    assert host_config["NanoCpus"] == 1_500_000_000
    assert host_config["CpuShares"] == 512
    assert host_config["CpusetCpus"] == "0"
    assert host_config["PidsLimit"] == 20


def test_cpuset_cpus_zero_allows_exactly_cpu_zero(busybox):
    output = busybox.ok("run", "--rm", "--cpuset-cpus", "0", "busybox",
                        "grep", "Cpus_allowed_list", "/proc/self/status")
    assert output.split() == ["Cpus_allowed_list:", "0"]


def test_pids_limit_stops_the_eleventh_process_and_the_container_lives(busybox):
    # PID 1 (sh) + a forking shell + 8 sleeps = 10; the 9th sleep would be
    # the 11th process.  The forking shell dies of the failed fork, PID 1
    # carries on and counts what is left using builtins only.
    script = ('sh -c "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done" 2>/dev/null; '
              'echo "forker exited $?"; set -- /proc/[0-9]*; echo "processes $#"')
    output = busybox.ok("run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c", script)
    assert output.split("\n")[:2] == ["forker exited 2", "processes 9"]


def test_a_pids_limit_of_one_holds_pid_1_alone(busybox):
    # Docker takes --pids-limit 1.  PID 1 joins its group after the last
    # host tool that forks (the root switch is a line of the mount table),
    # so the command starts, and its first fork is refused.
    result = busybox.run("run", "--rm", "--network", "none", "--pids-limit", "1", "busybox",
                         "sh", "-c", "echo started; /bin/true; echo never")
    assert (result.returncode, result.stdout) == (2, "started\n"), result
    assert "can't fork" in result.stderr


def test_the_command_runs_inside_its_group(busybox):
    identifier = busybox.ok("run", "-d", "busybox", "sleep", "30").strip()
    group = container_group(identifier)
    pid = inspect(busybox, identifier)["State"]["Pid"]
    assert group.processes() == [pid]
    with open(f"/proc/{pid}/cgroup") as handle:
        seen_from_the_host = handle.read()
    assert f"/minidocker/{identifier}\n" in seen_from_the_host
    busybox.ok("rm", "-f", identifier)


def test_the_group_is_removed_after_a_normal_exit(busybox):
    identifier = busybox.ok("run", "-d", "busybox", "sleep", "0.3").strip()
    group = container_group(identifier)
    assert wait_until(lambda: inspect(busybox, identifier)["State"]["Status"] == "exited")
    assert wait_until(lambda: not group.exists())


def test_rm_force_removes_the_group(busybox):
    identifier = busybox.ok("run", "-d", "busybox", "sleep", "100").strip()
    group = container_group(identifier)
    assert group.exists()
    busybox.ok("rm", "-f", identifier)
    assert not group.exists()


def test_rm_cleans_up_after_a_monitor_killed_with_sigkill(busybox):
    identifier = busybox.ok("run", "-d", "busybox", "sleep", "100").strip()
    group = container_group(identifier)
    state = inspect(busybox, identifier)["State"]
    os.kill(state["MonitorPid"], signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{state['MonitorPid']}"))
    assert group.exists()  # nobody released it: the monitor died first
    busybox.ok("rm", "-f", identifier)
    assert not group.exists()


def test_ps_cleans_up_after_monitor_and_command_were_killed(busybox):
    identifier = busybox.ok("run", "-d", "busybox", "sleep", "100").strip()
    group = container_group(identifier)
    state = inspect(busybox, identifier)["State"]
    os.kill(state["MonitorPid"], signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{state['MonitorPid']}"))
    os.kill(state["Pid"], signal.SIGKILL)
    assert wait_until(lambda: zombie(state["Pid"]))
    busybox.ok("ps", "-a")
    assert not group.exists()


def test_stats_no_stream_shows_half_a_cpu_and_the_memory_limit(busybox):
    identifier = busybox.ok("run", "-d", "--name", "spinner", "--cpus", "0.5", "-m", "64m",
                            "busybox", "sh", "-c", "while :; do :; done").strip()
    busybox.ok("run", "-d", "--name", "idler", "busybox", "sleep", "100")
    lines = busybox.ok("stats", "--no-stream").splitlines()
    header = lines[0].split("   ")
    assert [column.strip() for column in header if column.strip()] == [
        "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
        "BLOCK I/O", "PIDS"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"spinner", "idler"}
    spinner = rows["spinner"]
    assert spinner[0] == identifier[:12]
    cpu = float(spinner[2].rstrip("%"))
    assert 30 <= cpu <= 70, lines
    assert spinner[5] == "64MiB"   # "USAGE / LIMIT" splits as usage, "/", limit
    assert spinner[-1] == "1"
    only = busybox.ok("stats", "--no-stream", "idler").splitlines()
    assert len(only) == 2 and only[1].split()[1] == "idler"


def test_top_lists_the_container_processes(busybox):
    identifier = busybox.ok("run", "-d", "busybox", "sh", "-c", "sleep 100 & sleep 101 & wait").strip()
    assert wait_until(lambda: len(container_group(identifier).processes()) == 3)
    lines = busybox.ok("top", identifier).splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(" ".join(line.split()[7:]) for line in lines[1:])
    assert commands == ["sh -c sleep 100 & sleep 101 & wait", "sleep 100", "sleep 101"]
    pids = sorted(int(line.split()[1]) for line in lines[1:])
    assert pids == container_group(identifier).processes()


def test_top_refuses_a_stopped_container(busybox):
    busybox.ok("create", "--name", "idle", "busybox", "true")
    result = busybox.run("top", "idle")
    assert result.returncode == 1
    assert "is not running" in result.stderr


# -- the v2 driver on a real cgroup v2 kernel ----------------------------

@pytest.mark.skipif(bool(EXPECTED_VERSION), reason="already inside the cgroup v2 VM")
def test_v2_driver_inside_a_cgroup2_kernel():
    """Run TestCgroupApi inside a VM that mounts only cgroup2.

    One Python interpreter runs the whole class in the guest (Python takes
    about 3 s to start under TCG); its junit report comes back through a
    writable 9p share.
    """
    reason = qemu_v2.unavailable()
    if reason:
        pytest.skip(f"cannot boot the cgroup v2 VM: {reason}")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = (f"{sys.executable} -m pytest -q -p no:cacheprovider "
               f"tests/test_cgroup.py::TestCgroupApi --junitxml=$RESULTS/junit.xml")
    result = qemu_v2.run_in_guest(command, repository,
                                  {"MINIDOCKER_EXPECT_CGROUP_VERSION": "2",
                                       "MINIDOCKER_TEST_ROOT_PREFIX": "minidocker-vmtest-"}, timeout=240)
    report = f"guest output:\n{result.output}\nconsole tail:\n{result.console[-2000:]}"
    assert result.status == 0, report
    expected = len([name for name in dir(TestCgroupApi) if name.startswith("test_")])
    # every test ran and passed: none failed, none errored, none skipped
    assert qemu_v2.junit_counts(result.files.get("junit.xml", "")) == (expected, 0, 0, 0), report
    assert result.seconds < 180, f"the VM run took {result.seconds:.0f} s"

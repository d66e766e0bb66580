"""Chapter 6: the container lifecycle, the monitor, exec and attach (real kernel)."""

import concurrent.futures
import json
import os
import select
import shlex
import signal
import subprocess
import time

import pytest

from helpers.terminal import Session

pytestmark = pytest.mark.ch6


def state(engine, reference):
    return json.loads(engine.ok("inspect", reference))[0]["State"]


def process_exists(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout=10, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def attach_and_exit(engine, name, code, ask=None):
    """Attach to the shell of a detached container and end it; return attach's status.

    ``ask`` is a line to type and the answer to wait for first.
    """
    session = Session(engine.command("attach", name), engine.environment())
    session.wait_for_raw_mode()
    if ask:
        session.type(ask[0])
        session.read_until(ask[1])
    session.type(b"exit %d\r" % code)
    return session.wait()


def monitor_pid(engine, container_id):
    with open(os.path.join(engine.root, "containers", container_id, "state.json")) as handle:
        return json.load(handle)["MonitorPid"]


# -- run -d and the monitor ------------------------------------------------------------

def test_run_detached_returns_at_once_and_the_monitor_records_the_end(busybox):
    started = time.monotonic()
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", "sleep 1; exit 3").strip()
    assert time.monotonic() - started < 1.0
    assert len(container_id) == 64
    assert state(busybox, container_id)["Status"] == "running"
    monitor = monitor_pid(busybox, container_id)
    with open(f"/proc/{monitor}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    assert int(fields[3]) == monitor  # session id: its own session, safe from a closing terminal
    assert busybox.ok("wait", container_id[:8]).strip() == "3"
    final = state(busybox, container_id)
    assert (final["Status"], final["Running"], final["ExitCode"], final["Pid"]) == ("exited", False, 3, 0)
    assert final["StartedAt"] < final["FinishedAt"]
    assert wait_for(lambda: not process_exists(monitor))  # ended and reaped: no zombie


def test_run_detached_with_trace_lets_go_of_the_pipe_it_narrates_into(busybox):
    # `--trace run -d 2>&1 | cat` must end when run -d does, not when the
    # container does: the monitor gives back its copy of standard error.
    started = time.monotonic()
    result = subprocess.run([*busybox.command("--trace", "run", "-d", "busybox", "sleep", "15")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=busybox.environment(), timeout=30)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout
    lines = result.stdout.decode().splitlines()
    assert took < 10, f"the pipe stayed open {took:.1f} s, until the container ended"
    assert any(line.startswith("[ch3 rootfs]") for line in lines)
    container_id = lines[-1]
    assert len(container_id) == 64, lines[-3:]
    assert state(busybox, container_id)["Running"]
    busybox.ok("rm", "-f", container_id)


def test_run_detached_keeps_no_descriptor_its_caller_passed_down(busybox):
    # A caller's pipe inherited by run -d (a CI runner's, make's jobserver)
    # must not stay open in the monitor for the container's whole life.
    read_end, write_end = os.pipe()
    try:
        result = subprocess.run(busybox.command("run", "-d", "busybox", "sleep", "30"),
                                capture_output=True, env=busybox.environment(),
                                pass_fds=(write_end,), timeout=30)
        assert result.returncode == 0, result.stderr
        os.close(write_end)
        write_end = None
        ready, _, _ = select.select([read_end], [], [], 5)
        assert ready and os.read(read_end, 1) == b"", \
            "the pipe's write end is still open somewhere after run -d returned"
        busybox.ok("rm", "-f", result.stdout.decode().strip())
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


def test_wait_on_a_detached_rm_container_returns_its_exit_code(busybox):
    # The record is gone by the time the code is known; Docker's wait
    # still says it, and so does ours: the monitor tells it on its socket.
    container_id = busybox.ok("run", "-d", "--rm", "busybox", "sh", "-c",
                              "yes | head -c 300000; sleep 0.5; exit 3").strip()
    assert busybox.ok("wait", container_id).strip() == "3"
    assert busybox.ok("ps", "-aq") == ""


def test_foreground_run_passes_piped_stdin_with_i(busybox):
    result = busybox.run("run", "-i", "--rm", "busybox", "sh", "-c", "tr a-z A-Z; echo done",
                         input="hello through the pipe\n")
    assert result.returncode == 0
    assert result.stdout == "HELLO THROUGH THE PIPE\ndone\n"
    without_i = busybox.run("run", "--rm", "busybox", "cat", input="ignored\n")
    assert without_i.stdout == ""


def test_foreground_run_forwards_ctrl_c_to_the_container(busybox):
    script = "trap 'echo got INT; exit 42' INT; echo ready; while true; do sleep 0.1; done"
    process = subprocess.Popen(busybox.command("run", "--rm", "busybox", "sh", "-c", script),
                               stdout=subprocess.PIPE, env=busybox.environment(), text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 42
        assert "got INT" in process.stdout.read()
    finally:
        process.kill()
        process.wait()


def test_run_it_gives_a_terminal_of_the_right_size(busybox):
    session = Session(busybox.command("run", "-it", "--rm", "busybox", "sh"),
                      busybox.environment(), rows=33, columns=111)
    session.read_until(b"# ")
    session.type(b"tty; stty size\r")
    output = session.read_until(b"33 111")
    assert b"/dev/pts/0" in output
    session.type(b"exit 5\r")
    assert session.wait() == 5


def test_run_it_detaches_with_ctrl_p_ctrl_q_and_attach_takes_the_shell_back(busybox):
    # Docker's run -it: the detach keys leave the container running, with
    # the same shell, and its exit code comes back to whoever is attached.
    session = Session(busybox.command("run", "-it", "--name", "kept", "busybox", "sh"),
                      busybox.environment())
    session.read_until(b"# ")
    session.type(b"export MARK=still-here\r")
    session.read_until(b"# ", timeout=5)
    session.type(b"\x10\x11")
    assert session.wait() == 0
    assert b"read escape sequence" in session.output
    assert state(busybox, "kept")["Running"]
    assert attach_and_exit(busybox, "kept", 7, ask=(b"echo $MARK\r", b"still-here\r\n")) == 7
    assert state(busybox, "kept")["ExitCode"] == 7
    busybox.ok("rm", "kept")


def test_run_it_rm_returns_the_exit_code_of_a_container_already_removed(busybox):
    session = Session(busybox.command("run", "-it", "--rm", "--detach-keys", "ctrl-x,x",
                                      "busybox", "sh", "-c", "echo first-words; read line; exit 9"),
                      busybox.environment())
    session.read_until(b"first-words")  # said before the command line attached: held for it
    session.type(b"\x10\x11go\r")  # ctrl-p ctrl-q are only keys when others detach
    assert session.wait() == 9
    assert b"read escape sequence" not in session.output
    assert busybox.ok("ps", "-aq") == ""


def test_dit_then_attach_and_detach_with_ctrl_p_ctrl_q(busybox):
    busybox.ok("run", "-dit", "--name", "shell", "busybox", "sh")
    session = Session(busybox.command("attach", "shell"), busybox.environment())
    session.wait_for_raw_mode()
    session.type(b"echo attached-$((6*7))\r")
    session.read_until(b"attached-42")
    session.type(b"\x10\x11")
    assert session.wait() == 0
    assert state(busybox, "shell")["Running"] is True  # detaching leaves it running
    assert attach_and_exit(busybox, "shell", 4) == 4
    assert "\nattached-42\n" in busybox.ok("logs", "shell")  # a tty is logged as stdout


# -- create, then start -----------------------------------------------------------------

def test_a_state_file_emptied_by_a_power_cut_reads_as_created(busybox):
    # state.json is written without fsync (only config.json has one), so a
    # power cut may leave it empty; the container must stay visible,
    # startable and removable, not vanish with its name still taken.
    identifier = busybox.ok("create", "--name", "after-the-cut", "busybox", "echo", "back").strip()
    open(os.path.join(busybox.root, "containers", identifier, "state.json"), "w").close()
    assert "Created" in busybox.ok("ps", "-a", "--filter", "name=after-the-cut")
    assert busybox.ok("start", "-a", "after-the-cut") == "back\n"
    busybox.ok("rm", "after-the-cut")


def test_create_then_start_runs_it_in_the_background_and_start_a_in_the_foreground(busybox):
    busybox.ok("create", "--name", "later", "busybox", "sh", "-c", "echo said-$((6*7)); exit 3")
    assert state(busybox, "later")["Status"] == "created"
    assert busybox.ok("start", "later") == "later\n"
    assert busybox.ok("wait", "later").strip() == "3"
    assert busybox.ok("logs", "later") == "said-42\n"
    again = busybox.run("start", "-a", "later")  # Docker's start -a: the output and the code
    assert (again.returncode, again.stdout) == (3, "said-42\n")
    assert busybox.ok("logs", "later") == "said-42\nsaid-42\n"
    busybox.ok("rm", "later")


def test_start_ai_gives_the_terminal_and_detaches_with_ctrl_p_ctrl_q(busybox):
    busybox.ok("create", "-it", "--name", "later-shell", "busybox", "sh")
    session = Session(busybox.command("start", "-ai", "later-shell"), busybox.environment())
    session.read_until(b"# ")
    session.type(b"echo in-$((6*7))\r")
    session.read_until(b"in-42")
    session.type(b"\x10\x11")
    assert session.wait() == 0
    assert state(busybox, "later-shell")["Running"]
    assert attach_and_exit(busybox, "later-shell", 4) == 4
    busybox.ok("rm", "later-shell")


# -- stop, kill, restart, wait ---------------------------------------------------------

def test_stop_kills_a_process_that_ignores_sigterm_after_the_timeout(busybox):
    busybox.ok("run", "-d", "--name", "stubborn", "busybox", "sleep", "1000")
    started = time.monotonic()
    assert busybox.ok("stop", "-t", "1", "stubborn").strip() == "stubborn"
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 4
    final = state(busybox, "stubborn")
    assert (final["Status"], final["ExitCode"]) == ("exited", 137)


def test_stop_lets_a_process_handling_sigterm_exit_cleanly(busybox):
    script = "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"
    busybox.ok("run", "-d", "--name", "polite", "busybox", "sh", "-c", script)
    started = time.monotonic()
    busybox.ok("stop", "-t", "10", "polite")
    assert time.monotonic() - started < 3
    assert state(busybox, "polite")["ExitCode"] == 0
    assert busybox.ok("logs", "polite") == "bye\n"


def test_kill_with_a_signal_restart_and_wait(busybox):
    container_id = busybox.ok("run", "-d", "--name", "kk", "busybox", "sh", "-c",
                              "trap 'exit 9' USR1; while true; do sleep 0.1; done").strip()
    first_pid = state(busybox, "kk")["Pid"]
    busybox.ok("kill", "-s", "USR1", "kk")
    assert busybox.ok("wait", "kk").strip() == "9"
    failed = busybox.run("kill", "kk")
    assert failed.returncode == 1 and "is not running" in failed.stderr
    busybox.ok("restart", "-t", "1", container_id[:12])
    assert state(busybox, "kk")["Running"] and state(busybox, "kk")["Pid"] != first_pid
    busybox.ok("kill", "kk")
    assert busybox.ok("wait", "kk").strip() == "137"


def test_restart_policy_on_failure_counts_and_always_survives_exits(busybox):
    busybox.ok("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c",
               "echo try; exit 1")
    assert wait_for(lambda: state(busybox, "flaky")["Status"] == "exited"
                    and busybox.ok("logs", "flaky").count("try") == 3)
    assert json.loads(busybox.ok("inspect", "flaky"))[0]["RestartCount"] == 2
    busybox.ok("run", "-d", "--name", "forever", "--restart", "always", "busybox", "sh", "-c",
               "echo up; sleep 0.2")
    assert wait_for(lambda: busybox.ok("logs", "forever").count("up") >= 3)
    busybox.ok("stop", "-t", "1", "forever")
    count = busybox.ok("logs", "forever").count("up")
    time.sleep(0.7)
    assert busybox.ok("logs", "forever").count("up") == count  # stopped means stopped
    assert state(busybox, "forever")["Status"] == "exited"
    conflict = busybox.run("run", "--rm", "--restart", "always", "busybox", "true")
    assert conflict.returncode == 125 and "Conflicting options" in conflict.stderr


# -- ps, rename, rm, prune -------------------------------------------------------------

def test_ps_filters_format_rename_and_prune(busybox):
    running = busybox.ok("run", "-d", "--name", "one", "busybox", "sleep", "100").strip()
    exited = busybox.ok("run", "-d", "--name", "two", "busybox", "sh", "-c", "exit 2").strip()
    busybox.ok("wait", "two")
    created = busybox.ok("create", "--name", "three", "busybox", "true").strip()
    assert busybox.ok("ps", "-q").split() == [running[:12]]
    assert busybox.ok("ps", "-aq", "--no-trunc").split() == [running, exited, created]
    assert busybox.ok("ps", "-q", "-f", "status=exited").split() == [exited[:12]]
    assert busybox.ok("ps", "-q", "-f", "exited=2").split() == [exited[:12]]
    assert busybox.ok("ps", "-aq", "-f", "name=thr").split() == [created[:12]]
    assert busybox.ok("ps", "-a", "--format", "{{.Names}}\\t{{.State}}").splitlines() == [
        "one\trunning", "two\texited", "three\tcreated"]
    table = busybox.ok("ps", "--format", "table {{.ID}}\\t{{.Status}}").splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "STATUS"] and table[1].startswith(running[:12])
    assert busybox.run("ps", "-f", "status=sleepy").returncode == 125
    busybox.ok("rename", "one", "uno")
    assert busybox.ok("ps", "--format", "{{.Names}}").strip() == "uno"
    taken = busybox.run("rename", "uno", "two")
    assert taken.returncode == 125 and "already in use" in taken.stderr
    refused = busybox.run("rm", "uno")
    assert refused.returncode == 1 and "stop the container" in refused.stderr
    pruned = busybox.ok("container", "prune", "-f")
    assert exited in pruned and created in pruned and running not in pruned
    assert busybox.ok("ps", "-aq", "--no-trunc").split() == [running]


def test_ps_is_right_with_30_containers_created_in_parallel(busybox):
    def create(number):
        return busybox.run("create", "--name", f"parallel{number}", "busybox", "true")

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(create, range(30)))
    assert all(result.returncode == 0 for result in results), [r.stderr for r in results]
    ids = {result.stdout.strip() for result in results}
    assert len(ids) == 30
    listed = busybox.ok("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.State}}")
    rows = [line.split() for line in listed.splitlines()]
    assert {row[0] for row in rows} == ids
    assert sorted(row[1] for row in rows) == sorted(f"parallel{number}" for number in range(30))
    assert all(row[2] == "created" for row in rows)


# -- exec ----------------------------------------------------------------------------

def test_exec_joins_the_containers_namespaces(busybox, tmp_path):
    (tmp_path / "marker").write_text("bound\n")
    container_id = busybox.ok("run", "-d", "--name", "target", "-h", "inside", "-v",
                              f"{tmp_path}:/data", "busybox", "sleep", "100").strip()
    pid = state(busybox, "target")["Pid"]
    output = busybox.ok("exec", "target", "sh", "-c",
                        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                        "cat /data/marker; for kind in net mnt uts ipc; do "
                        "readlink /proc/self/ns/$kind; done")
    lines = output.splitlines()
    assert lines[0] == "inside"
    assert lines[1].strip() == "sleep 100"  # PID 1 of the PID namespace it joined
    assert lines[2] == "bound"
    assert lines[3:] == [os.readlink(f"/proc/{pid}/ns/{kind}") for kind in ("net", "mnt", "uts", "ipc")]
    assert lines[3] != os.readlink("/proc/self/ns/net")
    capabilities = busybox.ok("exec", container_id[:6], "grep", "CapBnd", "/proc/self/status")
    assert capabilities.split()[1] == "00000000a80425fb"
    # An exec'd process is in the same cgroups as PID 1, seen from the host.
    assert busybox.run("exec", "-d", "target", "sleep", "30").returncode == 0
    with open(f"/proc/{pid}/cgroup") as handle:
        groups_of_pid_1 = handle.read()
    assert "minidocker" in groups_of_pid_1
    def sleepers():  # setpriv and nsenter exec on their way to sleep: wait for it
        return [entry for entry in os.listdir("/proc") if entry.isdigit()
                and _command_line(entry) == "sleep 30" and _parent_namespace(entry, pid)]

    assert wait_for(lambda: len(sleepers()) == 1)
    with open(f"/proc/{sleepers()[0]}/cgroup") as handle:
        assert handle.read() == groups_of_pid_1


def _command_line(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _parent_namespace(pid, container_pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{container_pid}/ns/pid")
    except OSError:
        return False


def test_exec_exit_status_user_workdir_env_and_stdin(busybox):
    busybox.ok("run", "-d", "--name", "box", "busybox", "sleep", "100")
    assert busybox.run("exec", "box", "sh", "-c", "exit 7").returncode == 7
    assert busybox.run("exec", "box", "no-such-command").returncode == 127
    assert busybox.ok("exec", "-u", "user", "-w", "/tmp", "-e", "GREETING=hi", "box", "sh", "-c",
                      "id -u; pwd; echo $GREETING").split() == ["1000", "/tmp", "hi"]
    assert busybox.ok("exec", "-i", "box", "cat", input="piped in\n") == "piped in\n"
    busybox.ok("exec", "-d", "box", "sh", "-c", "echo made > /tmp/detached")
    assert wait_for(lambda: busybox.run("exec", "box", "cat", "/tmp/detached").stdout == "made\n")


def test_run_keeps_the_variables_a_secure_exec_would_drop(busybox):
    # PID 1's chain used to run setpriv and nsenter with a real UID that is
    # not the effective one (AT_SECURE), and glibc then dropped these from
    # the command's environment; Docker keeps them (images set
    # LD_LIBRARY_PATH in their ENV).
    variables = {"LD_LIBRARY_PATH": "/opt/lib", "TMPDIR": "/scratch", "TZDIR": "/zones",
                 "LOCPATH": "/locales", "RES_OPTIONS": "ndots:2"}
    arguments = [item for name, value in variables.items() for item in ("-e", f"{name}={value}")]
    output = busybox.ok("run", "--rm", "--network", "none", *arguments, "busybox", "env")
    found = dict(line.partition("=")[::2] for line in output.splitlines())
    assert {name: found.get(name) for name in variables} == variables
    output = busybox.ok("run", "--rm", "--network", "none", "-u", "1000", *arguments,
                        "busybox", "env")
    assert "LD_LIBRARY_PATH=/opt/lib" in output.splitlines()


def test_only_a_joining_process_runs_its_tools_with_another_real_uid():
    # exec's setpriv and nsenter: real UID nobody's, effective 0 (non-dumpable
    # until nsenter's chroot); PID 1's: the same IDs for both, so that glibc
    # keeps the command's environment whole.
    from minidocker import rootfs

    class Tool:
        path_for_others = "/proc/1/fd/3"

    def ids(joining, capabilities=rootfs.DEFAULT_CAPABILITIES, uid=0, gid=0):
        return rootfs.steps_to_the_command(
            ["true"], {"nsenter": Tool()}, workdir="/", uid=uid, gid=gid, groups=(),
            capabilities=capabilities, no_new_privileges=False, joining=joining)[0]

    assert ids(joining=False) == ((0, 0), None)
    assert ids(joining=False, uid=1000, gid=1000) == ((1000, 1000), None)
    assert ids(joining=True) == ((0, 0), (rootfs.NOBODY, 0))
    assert ids(joining=True, uid=1000, gid=1000) == ((1000, 1000), (1000, 0))
    without_setuid = [name for name in rootfs.DEFAULT_CAPABILITIES if name != "setuid"]
    assert ids(joining=True, capabilities=without_setuid) == ((0, 1), None)


def test_a_fifo_for_etc_passwd_does_not_stop_exec(busybox):
    # exec reads the container's /etc/passwd from the host; a FIFO there
    # held the command line in open(2) for ever.
    busybox.ok("run", "-d", "--name", "fifo", "--network", "none", "busybox", "sh", "-c",
               "rm /etc/passwd && mkfifo /etc/passwd && sleep 100")
    assert wait_for(lambda: busybox.run("exec", "fifo", "test", "-p", "/etc/passwd",
                                        timeout=20).returncode == 0)
    assert busybox.ok("exec", "fifo", "echo", "joined", timeout=20) == "joined\n"


def test_exec_opens_no_etc_passwd_that_is_not_a_regular_file(busybox):
    # Opening a device node or a FIFO acts on it (a writer waiting on the
    # FIFO goes on; a watchdog device starts counting), from the host's side
    # for exec.  Here the writer marks that somebody opened the FIFO.
    busybox.ok("run", "-d", "--name", "opened", "--network", "none", "busybox", "sh", "-c",
               "rm /etc/passwd && mkfifo /etc/passwd && "
               "(: > /etc/passwd; touch /tmp/opened) & sleep 100")
    assert wait_for(lambda: busybox.run("exec", "opened", "test", "-p", "/etc/passwd",
                                        timeout=20).returncode == 0)
    busybox.ok("exec", "opened", "true", timeout=20)
    time.sleep(0.2)
    assert busybox.run("exec", "opened", "test", "-e", "/tmp/opened").returncode == 1


def test_exec_waits_until_pid_1_stands_on_the_container_s_root():
    # Until its last chroot, a starting container's PID 1 stands on the
    # host's root; exec must not join it there.  This process stands on
    # the host's root too: exec would wait, then give up.
    from minidocker import container, host

    class Starting:
        id = "f" * 64

    started = time.monotonic()
    with pytest.raises(host.EngineError, match="has not finished starting") as raised:
        container._wait_until_on_its_root(Starting(), os.getpid(), timeout=0.2)
    assert raised.value.exit_code == 126 and time.monotonic() - started >= 0.2
    with pytest.raises(host.EngineError, match="is not running"):
        container._wait_until_on_its_root(Starting(), 2**22 + 1, timeout=0.2)


def test_exec_d_stays_a_child_of_the_engine_which_reaps_it(busybox):
    # Orphaned when the command line returned, an exec -d process went to
    # the reaper of the command line's PID namespace, the host's: on this
    # VM the host's PID 1 became the parent of a container process.
    # Docker's shim stays the parent of its exec'd processes and reaps
    # them; minidocker's waiter must too, and the container's PID 1 (sleep,
    # which never waits) must be left no child of it.
    busybox.ok("run", "-d", "--name", "sleeper", "busybox", "sleep", "100")
    pid = state(busybox, "sleeper")["Pid"]
    script = "sleep 1; echo done > /tmp/mark"
    busybox.ok("exec", "-d", "sleeper", "sh", "-c", script)
    [command] = [entry for entry in os.listdir("/proc")   # exec -d returns once it runs
                 if entry.isdigit() and _command_line(entry) == f"sh -c {script}"]
    waiter = _stat_fields(command)[1]
    assert _comm(waiter) == "md-exec"
    assert wait_for(lambda: busybox.run("exec", "sleeper", "cat", "/tmp/mark").stdout == "done\n")
    assert wait_for(lambda: _comm(waiter) != "md-exec")   # it reaped the command and ended

    def children_of_pid_1():  # an orphan is reparented to PID 1; a zombie one stays listed
        return [(entry, fields[0]) for entry in os.listdir("/proc") if entry.isdigit()
                for fields in [_stat_fields(entry)] if fields and fields[1] == str(pid)]

    assert wait_for(lambda: children_of_pid_1() == []), children_of_pid_1()


def test_exec_dt_output_that_nobody_reads_does_not_stop_the_command(busybox):
    # A terminal holds a few kilobytes; the waiter drops what exec -dt writes.
    busybox.ok("run", "-d", "--name", "talker", "busybox", "sleep", "100")
    busybox.ok("exec", "-dt", "talker", "sh", "-c", "yes | head -c 2000000; echo done > /tmp/dt")
    assert wait_for(lambda: busybox.run("exec", "talker", "cat", "/tmp/dt").stdout == "done\n",
                    timeout=20)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name: state, parent, ..."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def test_exec_it_gives_a_terminal(busybox):
    busybox.ok("run", "-d", "--name", "plain", "busybox", "sleep", "100")
    session = Session(busybox.command("exec", "-it", "plain", "sh"), busybox.environment(),
                      rows=21, columns=77)
    session.read_until(b"# ")
    session.type(b"tty; stty size\r")
    output = session.read_until(b"21 77")
    assert b"/dev/pts/" in output
    session.type(b"exit 3\r")
    assert session.wait() == 3


def test_exec_into_a_stopped_container_is_a_clear_error(busybox):
    busybox.ok("create", "--name", "idle", "busybox", "true")
    result = busybox.run("exec", "idle", "true")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("is not running")
    assert result.stderr.count("\n") == 1


# -- when things die -------------------------------------------------------------------

def test_a_killed_monitor_never_leaves_a_stale_up(busybox):
    container_id = busybox.ok("run", "-d", "--name", "orphan", "busybox", "sleep", "1000").strip()
    pid = state(busybox, "orphan")["Pid"]
    monitor = monitor_pid(busybox, container_id)
    os.kill(monitor, signal.SIGKILL)
    assert wait_for(lambda: not process_exists(monitor))
    # PID 1 still runs: "Up" is the truth, and says so because the kernel says so.
    assert busybox.ok("ps", "--format", "{{.State}}").strip() == "running"
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not process_exists(pid))
    assert busybox.ok("ps", "-q") == ""
    assert busybox.ok("ps", "-a", "--format", "{{.State}}").strip() == "exited"
    busybox.ok("rm", "-f", "orphan")
    assert busybox.ok("ps", "-aq") == ""
    assert not os.path.exists(os.path.join(busybox.root, "containers", container_id))


def test_rm_f_after_a_killed_monitor_cleans_everything(busybox):
    container_id = busybox.ok("run", "-d", "busybox", "sleep", "1000").strip()
    pid = state(busybox, container_id)["Pid"]
    os.kill(monitor_pid(busybox, container_id), signal.SIGKILL)
    busybox.ok("rm", "-f", container_id)
    assert wait_for(lambda: not process_exists(pid))
    assert busybox.ok("ps", "-aq") == ""


def test_killing_the_cli_during_run_d_leaves_nothing_half_made(busybox):
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3):
        process = subprocess.Popen(busybox.command("run", "-d", "busybox", "sleep", "1000"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=busybox.environment())
        time.sleep(delay)
        process.kill()
        process.wait()
    time.sleep(0.3)
    containers = os.path.join(busybox.root, "containers")
    for record in busybox.ok("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}").splitlines():
        container_id, status = record.split()
        assert status in ("created", "running")
        assert os.path.exists(os.path.join(containers, container_id, "config.json"))
    ids = busybox.ok("ps", "-aq").split()
    if ids:
        busybox.ok("rm", "-f", *ids)
    busybox.ok("create", "busybox", "true")  # also sweeps drafts a killed create left
    leftovers = [name for name in os.listdir(containers) if name.startswith(".draft-")]
    assert leftovers == []


def test_the_command_starts_with_default_signal_dispositions(busybox):
    # Python ignores SIGPIPE; a container that inherited that would never see
    # `yes | head` end (yes would spin on EPIPE forever).
    result = busybox.run("run", "--rm", "busybox", "sh", "-c", "yes | head -c 4", timeout=30)
    assert (result.returncode, result.stdout) == (0, "y\ny\n")
    ignored = busybox.ok("run", "--rm", "busybox", "grep", "SigIgn", "/proc/self/status")
    assert ignored.split()[-1] == "0000000000000000"
    exec_id = busybox.ok("run", "-d", "busybox", "sleep", "100").strip()
    ignored = busybox.ok("exec", exec_id, "grep", "SigIgn", "/proc/self/status")
    assert ignored.split()[-1] == "0000000000000000"


def test_attach_without_a_terminal_keeps_streams_apart_and_passes_stdin(busybox):
    busybox.ok("run", "-di", "--name", "catter", "busybox", "sh", "-c",
               "read line; echo \"out:$line\"; echo \"err:$line\" >&2; exit 6")
    result = busybox.run("attach", "catter", input="typed\n", timeout=20)
    assert (result.returncode, result.stdout, result.stderr) == (6, "out:typed\n", "err:typed\n")
    refused = busybox.run("attach", "catter")
    assert refused.returncode == 1 and "start it first" in refused.stderr


def test_a_resized_window_resizes_the_containers_terminal(busybox):
    import fcntl
    import struct
    import termios

    session = Session(busybox.command("run", "-it", "--rm", "busybox", "sh"),
                      busybox.environment(), rows=33, columns=111)
    session.read_until(b"# ")
    session.wait_for_raw_mode()
    # The kernel sends SIGWINCH to the terminal's foreground process: run -it,
    # attached to the container's monitor, which it tells the new size.
    fcntl.ioctl(session.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    time.sleep(0.3)
    session.type(b"stty size\r")
    session.read_until(b"40 100")
    session.type(b"exit\r")
    assert session.wait() == 0


def test_the_monitor_outlives_the_terminal_it_was_started_from(busybox):
    # A monitor still in the terminal's session would get its SIGHUP and pass
    # it on to PID 1, which would then exit 1.
    command = busybox.command("run", "-d", "--name", "survivor", "busybox", "sh", "-c",
                              "trap 'exit 1' HUP; while true; do sleep 0.1; done")
    session = Session(["sh", "-c", shlex.join(command) + "; echo started; sleep 100"],
                      busybox.environment())
    session.read_until(b"started")
    session.wait(timeout=0.5)  # kills the shell and closes the terminal: a hangup for its session
    time.sleep(0.5)
    assert state(busybox, "survivor")["Running"] is True

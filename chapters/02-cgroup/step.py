"""Chapter 2, try it: put a process in a control group and watch the kernel enforce it.

Run as root from the repository's top directory::

    python chapters/02-cgroup/step.py           # what the limits do
    python chapters/02-cgroup/step.py --trace   # and every file the engine wrote

The step uses only chapter 2's module (``minidocker.cgroup``) and the host
door.  It makes one group with ``-m 32m --cpus 0.5 --pids-limit 10``, forks
children that join it, and shows what happens to each: one allocates a
little memory, one too much, one spins, one forks until it cannot.  Then
it removes the group.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import cgroup, host  # noqa: E402  (after the path line above)

MiB = 1024 * 1024


def in_group(group, work):
    """Fork a child that joins ``group`` and then does ``work``; return its PID."""
    sys.stdout.flush()  # a forked child would print the parent's buffered text again
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            group.join()
            code = work() or 0
        except BaseException as error:
            print(f"in the child: {error}", file=sys.stderr)
            code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    return pid


def allocate(size):
    """Touch ``size`` bytes: filled bytes, so the kernel must really give pages."""
    return lambda: len(b"\1" * size) and 0


def spin():
    while True:
        pass


def fork_until_refused():
    """Fork sleeping children until the kernel refuses; print how many fitted."""
    children = []
    try:
        while len(children) < 50:
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
        refusal = "nothing refused"
    except OSError as error:
        refusal = error.strerror
    print(f"--pids-limit 10:    {len(children)} children forked, the next one failed: {refusal}")
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def describe(status):
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited {os.WEXITSTATUS(status)}"


def main():
    if "--trace" in sys.argv[1:]:
        host.enable_trace()
    if os.geteuid() != 0:
        sys.exit("this step needs root: only root may create cgroups")
    group = cgroup.Cgroup(f"minidocker/chapter2-{os.getpid()}")
    driver = "v1 (a directory per controller)" if group.version == 1 else "v2 (one unified tree)"
    print(f"cgroup driver:      {driver}")
    limits = cgroup.Limits(memory=32 * MiB, cpus=0.5, pids_limit=10)
    group.create(limits)
    try:
        print(f"the group lives in: {' '.join(group.directories())}")
        for size in (8 * MiB, 64 * MiB):
            _, status = os.waitpid(in_group(group, allocate(size)), 0)
            print(f"-m 32m, {size // MiB:2} MiB:     {describe(status)}, "
                  f"OOM killed: {group.oom_killed()}")
        spinner = in_group(group, spin)
        time.sleep(0.2)
        before = group.stats()["cpu_nanoseconds"]
        time.sleep(1.0)
        used = (group.stats()["cpu_nanoseconds"] - before) / 1e9
        os.kill(spinner, signal.SIGKILL)
        os.waitpid(spinner, 0)
        verdict = "about half a CPU" if 0.3 <= used <= 0.7 else "NOT half a CPU"
        print(f"--cpus 0.5:         a busy loop used {used:.2f} CPU seconds in 1 s: {verdict}")
        os.waitpid(in_group(group, fork_until_refused), 0)
    finally:
        group.destroy()
    print(f"group removed:      {not group.exists()}")


if __name__ == "__main__":
    main()

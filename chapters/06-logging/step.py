"""Chapter 6, try it: be a process's monitor, then join a process's namespaces.

Run as root from the repository's top directory::

    python chapters/06-logging/step.py           # what happens
    python chapters/06-logging/step.py --trace   # and each setns(2) on the way

The step uses only modules of chapters 1 to 6 and the host door.  First it
plays the monitor for a plain host process: it holds the other ends of the
process's stdout and stderr, relays them into a json-file log that rotates
at 200 bytes (four files kept), and reads the log back as ``logs`` does.  Then it shows the
idea behind ``exec``: a child in new UTS and PID namespaces, and a second
process that joins them with setns(2) and sees the same hostname.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host, logs, namespace  # noqa: E402  (after the path line above)

# stderr first, then a pause: two pipes have no order between them, and the
# pause makes this step print the same every time.
SCRIPT = "echo oops >&2; sleep 0.2; echo hello; for i in 1 2 3 4 5; do echo line $i; done; " \
         "printf 'no newline'"


def monitor(directory):
    """Run SCRIPT with its output in pipes we hold; log it; return its exit status."""
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(stdout_write, 1)
        os.dup2(stderr_write, 2)
        os.execv("/bin/sh", ["sh", "-c", SCRIPT])
    # The monitor keeps only the read ends: when the child exits, they reach
    # end of file, and that is how the relay knows the output is complete.
    os.close(stdout_write)
    os.close(stderr_write)
    path = os.path.join(directory, "demo-json.log")
    log = logs.JsonFileWriter(path, max_size=200, max_files=4)
    relay = logs.Relay(log, {stdout_read: "stdout", stderr_read: "stderr"})
    relay.run()
    relay.close()
    log.close()
    _, status = os.waitpid(pid, 0)
    return path, os.waitstatus_to_exitcode(status)


def show_log(path):
    print(f"log files, oldest first: {[os.path.basename(name) for name in logs.log_files(path)]}")
    with open(path) as handle:
        print("the newest file's last entry:", handle.read().splitlines()[-1][:60] + "...")
    entries = [entry for batch in logs.read_entries(path) for entry in batch]
    kept = "".join(text for stream, text, _ in entries if stream == "stdout")
    print(f"stdout, read back across the files: {kept!r}")
    print(f"stderr entries: {[text for stream, text, _ in entries if stream == 'stderr']}")
    print(f"--tail 2: {[text for _, text, _ in logs.tail_entries(path, 2)]}")


def join_namespaces():
    """A 'container' with its own hostname, and an 'exec' that joins it."""
    ready_read, ready_write = os.pipe()
    done_read, done_write = os.pipe()
    sys.stdout.flush()  # a forked child would print the parent's buffered text again
    container = namespace.fork_into_pid_namespace()
    if container == 0:
        namespace.unshare(["uts"])
        namespace.set_hostname("in-the-box")
        os.write(ready_write, b"x")
        os.read(done_read, 1)  # stay alive until the visitor has looked
        os._exit(0)
    os.read(ready_read, 1)
    visitor = os.fork()
    if visitor == 0:
        # setns(2) on a PID namespace changes where our *children* go, so the
        # visitor forks once more; the grandchild is inside both namespaces.
        namespace.enter(container, ["uts", "pid"])
        inner = os.fork()
        if inner == 0:
            import socket

            same = os.readlink("/proc/self/ns/pid") == os.readlink(f"/proc/{container}/ns/pid")
            print(f"the visitor sees hostname {socket.gethostname()!r}; "
                  f"it is in the container's PID namespace: {same}")
            sys.stdout.flush()
            os._exit(0)
        os.waitpid(inner, 0)
        os._exit(0)
    os.waitpid(visitor, 0)
    import socket

    print(f"the host's hostname is unchanged: {socket.gethostname() != 'in-the-box'}")
    os.write(done_write, b"x")
    os.waitpid(container, 0)


def main():
    if "--trace" in sys.argv:
        host.enable_trace()
    with tempfile.TemporaryDirectory(prefix="minidocker-step6-") as directory:
        path, code = monitor(directory)
        print(f"the process exited with status {code}; its output is in the log")
        show_log(path)
    join_namespaces()


if __name__ == "__main__":
    main()

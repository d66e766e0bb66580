"""Chapter 1, try it: give a process a world of its own.

Run as root from the repository's top directory::

    python chapters/01-namespace/step.py           # what the child sees
    python chapters/01-namespace/step.py --trace   # and every system call it took

The step uses only chapter 1's module (``minidocker.namespace``) and the host
door.  A child is forked into a new PID namespace, unshares the other kinds,
names its own host, and reports what it sees; the parent then shows that
none of it reached the host.
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host, namespace  # noqa: E402  (after the path line above)

HOSTNAME = "chapter1"


def child():
    """Run in the new namespaces: report what the world looks like from here."""
    namespace.unshare([kind for kind in ("mnt", "uts", "ipc", "net") if kind in namespace.available()])
    namespace.set_hostname(HOSTNAME)
    say("in the child", f"my PID is {os.getpid()}, my parent's PID is {os.getppid()}")
    say("in the child", f"my hostname is {socket.gethostname()}")
    interfaces = " ".join(name for _, name in socket.if_nameindex())
    say("in the child", f"my network interfaces: {interfaces}")


def main():
    if "--trace" in sys.argv[1:]:
        host.enable_trace()
    if os.geteuid() != 0:
        sys.exit("this step needs root: creating namespaces needs CAP_SYS_ADMIN")
    hostname_before = socket.gethostname()
    # /proc/self, not /proc/PID: the child's PID is 1 in its own namespace,
    # but /proc here is still the host's, where /proc/1 is the host's init.
    host_namespaces = namespace.identity("self")
    sys.stdout.flush()  # a forked child would print the parent's buffered text again
    report_read, report_write = os.pipe()
    pid = namespace.fork_into_pid_namespace()
    if pid == 0:
        os.close(report_read)
        code = 0
        try:
            child()
            # The child's namespace numbers reach the parent through a pipe.
            identities = namespace.identity("self")
            os.write(report_write, " ".join(f"{kind}={number}" for kind, number
                                            in identities.items()).encode())
        except BaseException as error:
            print(f"in the child: {error}", file=sys.stderr)
            code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(report_write)
    with os.fdopen(report_read) as report:
        child_namespaces = dict(entry.split("=") for entry in report.read().split())
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("the child failed")
    say("in the host", f"the child's PID out here was {pid}")
    unchanged = "unchanged" if socket.gethostname() == hostname_before else "CHANGED"
    say("in the host", f"my hostname is {unchanged}")
    different = sorted(kind for kind in child_namespaces
                       if int(child_namespaces[kind]) != host_namespaces.get(kind))
    say("namespaces", "the child had its own " + " ".join(different))


def say(who, text):
    print(f"{who + ':':14}{text}")


if __name__ == "__main__":
    main()

"""Chapter 1: namespaces, or how a process gets a world of its own.

A namespace wraps one kind of global resource so that the processes inside
see their own copy of it:

=========  ================  ===========================================
kind       flag              what the processes inside see of their own
=========  ================  ===========================================
pid        CLONE_NEWPID      process numbers, starting again at 1
mnt        CLONE_NEWNS       the mount table
uts        CLONE_NEWUTS      the hostname
ipc        CLONE_NEWIPC      System V shared memory, semaphores, queues
net        CLONE_NEWNET      interfaces, addresses, routes, firewall
cgroup     CLONE_NEWCGROUP   the root of the cgroup tree (chapter 2)
=========  ================  ===========================================

Python 3.12 gives us ``os.unshare`` (leave some namespaces for new ones) and
``os.setns`` (join an existing one).  A container is nothing more than a
process that unshared all of them before it ran the user's command.

The PID namespace is the odd one.  unshare(2) says: "Unshare the PID
namespace, so that the calling process has a new PID namespace for its
children which is not shared with any previously existing process.  The
calling process is not moved into the new namespace.  The first child
created by the calling process will have the process ID 1".  So the
container's PID 1 is always a *child* of the process that unshared.
"""

import os
import _socket  # not socket: see host.py

from minidocker import host

#: The namespaces a container gets, by the name /proc/PID/ns uses.
FLAGS = {
    "pid": os.CLONE_NEWPID,
    "mnt": os.CLONE_NEWNS,
    "uts": os.CLONE_NEWUTS,
    "ipc": os.CLONE_NEWIPC,
    "net": os.CLONE_NEWNET,
    "cgroup": os.CLONE_NEWCGROUP,
}


def available():
    """Return the namespace kinds this kernel offers (``/proc/self/ns``)."""
    return [kind for kind in FLAGS if os.path.exists(f"/proc/self/ns/{kind}")]


def fork_into_pid_namespace(of=None):
    """Fork a child in a PID namespace other than the caller's.

    Without ``of`` the namespace is new and the child is its PID 1 (how
    ``run`` starts a container); with ``of`` it is the namespace of the
    running process ``of`` (how ``exec`` joins one).  Returns the child's
    host PID in the parent and 0 in the child, like ``os.fork``.

    After the fork the parent joins its own PID namespace again: the kernel
    keeps pointing the parent's *future* children at the other namespace,
    and once a new namespace's PID 1 has exited, "a subsequent fork(2)
    [...] will fail with ENOMEM" (pid_namespaces(7)).  The parent is the
    container's monitor and must be able to fork helpers afterwards.
    """
    own_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if of is None:
            host.call(1, "unshare(CLONE_NEWPID)", os.unshare, os.CLONE_NEWPID)
        else:
            enter(of, ["pid"])
        pid = os.fork()
        if pid != 0:
            os.setns(own_namespace, os.CLONE_NEWPID)
        return pid
    finally:
        os.close(own_namespace)


def unshare(kinds):
    """Move the calling process into new namespaces of the given kinds."""
    flags = 0
    for kind in kinds:
        flags |= FLAGS[kind]
    names = "|".join("CLONE_NEW" + ("NS" if kind == "mnt" else kind.upper()) for kind in kinds)
    host.call(1, f"unshare({names})", os.unshare, flags)


def set_hostname(name):
    """Set the hostname, which only the caller's UTS namespace will see."""
    host.call(1, f"sethostname({name!r})", _socket.sethostname, name)


def enter(pid, kinds):
    """Join the namespaces of the running process ``pid``, as ``exec`` does.

    All descriptors are opened before the first ``setns``: once the caller
    is in the container's mount namespace, ``/proc`` may be a different one.
    setns(2) asks that a process joining a PID namespace's children be
    forked afterwards, so the caller must fork before it execs.
    """
    descriptors = [(kind, os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
                   for kind in kinds]
    try:
        for kind, descriptor in descriptors:
            host.call(1, f"setns(/proc/{pid}/ns/{kind})", os.setns, descriptor, FLAGS[kind])
    finally:
        for _, descriptor in descriptors:
            os.close(descriptor)


def identity(pid):
    """Return ``{kind: inode}`` for the namespaces of ``pid``.

    Two processes share a namespace exactly when these numbers match; the
    tests and ``inspect`` use it to show isolation.
    """
    identities = {}
    for kind in FLAGS:
        try:
            identities[kind] = os.stat(f"/proc/{pid}/ns/{kind}").st_ino
        except FileNotFoundError:
            pass
    return identities

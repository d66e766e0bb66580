"""Chapter 3: the root filesystem, from chroot to a root nobody can climb out of.

A container's files are the image's layers stacked with overlayfs, plus a
writable layer of its own on top (copy-on-write: the image never changes).
On top of that root the engine mounts what a Linux program expects to find:
``/proc``, a small ``/dev``, a read-only ``/sys``, the three files that tell
a program who it is on the network (``/etc/hostname``, ``/etc/hosts``,
``/etc/resolv.conf``) and the user's volumes.

Then the process must be made to *stay* there.  chroot(2) alone is not
enough: "This call does not change the current working directory [...] In
particular, the superuser can escape from a 'chroot jail' by doing: mkdir
foo; chroot foo; cd .."  So the engine first lays the container's whole
tree on top of ``/`` in its private mount namespace (an ``rbind`` onto
``//``, the last line of its mount table), and only then chroots into it:
``..`` at the top of that tree leads back into the container, because the
container's root now hides the host's.

Everything here runs in the child that will become the container's PID 1,
inside its new mount namespace, except :func:`create` and :func:`remove`,
which the engine runs on the host side.  The order of the steps is the
order of :func:`build`.
"""

import errno
import fcntl
import os
import stat
import struct

from minidocker import host

#: Docker's default capability set; with it ``CapBnd`` reads 00000000a80425fb.
DEFAULT_CAPABILITIES = (
    "chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "net_bind_service", "net_raw", "sys_chroot", "mknod",
    "audit_write", "setfcap",
)

#: Every capability by its number (linux/capability.h), as setpriv names them.
ALL_CAPABILITIES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
    "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
    "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
    "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)


def kernel_capabilities():
    """The capabilities this kernel knows (``/proc/sys/kernel/cap_last_cap``)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last = int(handle.read())
    except OSError:
        last = len(ALL_CAPABILITIES) - 1
    return ALL_CAPABILITIES[:last + 1]


def capability_name(text, flag):
    """Turn ``CAP_NET_ADMIN``, ``NET_ADMIN`` or ``net_admin`` into ``net_admin``."""
    name = text.strip().lower()
    name = name[4:] if name.startswith("cap_") else name
    if name != "all" and name not in ALL_CAPABILITIES:
        raise host.EngineError(f'invalid {flag}: unknown capability: "{text}"')
    return name


def capability_set(add=(), drop=(), privileged=False):
    """Return ``(capabilities, warnings)`` for ``--cap-add``, ``--cap-drop``, ``--privileged``.

    Docker's rules: ``--privileged`` gives every capability; ``--cap-add
    ALL`` gives every one not dropped; ``--cap-drop ALL`` keeps only those
    added; otherwise the default set loses the dropped ones and gains the
    added ones.

    One capability cannot go: the last exec chain is setpriv, then nsenter,
    and nsenter needs CAP_SYS_CHROOT for the chroot *after* setpriv has
    limited the bounding set.  Nothing from the host can run after that
    chroot (its dynamic loader is not in the container), and raising the
    capability through the inheritable set instead would pass it to the
    command too (capabilities(7), for root: "P'(permitted) = P(inheritable)
    | P(bounding)").  So it stays, and the user is told.
    """
    add = [capability_name(text, "CapAdd") for text in add]
    drop = [capability_name(text, "CapDrop") for text in drop]
    known = kernel_capabilities()
    if privileged or "all" in add:
        chosen = [name for name in known if privileged or name not in drop]
    elif "all" in drop:
        chosen = [name for name in known if name in add]
    else:
        chosen = [name for name in DEFAULT_CAPABILITIES if name not in drop]
        chosen += [name for name in known if name in add and name not in chosen]
    warnings = []
    if "sys_chroot" not in chosen:
        chosen.append("sys_chroot")
        warnings.append("minidocker keeps CAP_SYS_CHROOT: nsenter needs it for the last chroot, "
                        "after setpriv has limited the others (chapter 3, What can go wrong)")
    unknown = [name for name in add if name != "all" and name not in known]
    if unknown:
        warnings.append(f"this kernel does not know {', '.join(unknown)}: not added")
    return chosen, warnings

#: Paths Docker hides from the container (files get /dev/null, directories
#: an empty read-only tmpfs).  Only those that exist on this kernel are
#: masked: mount(2) cannot cover what is not there.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

#: Paths Docker leaves visible but read-only.
READ_ONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

#: The device nodes of a container's /dev: name, major, minor.
DEVICES = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
    ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)

DEVICE_LINKS = (
    ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)

#: The files the engine writes for each container and binds over the image's.
NETWORK_FILES = ("hostname", "hosts", "resolv.conf")


# -- on the host side: the container's layers ----------------------------

def choose_driver(requested=None):
    """Return the storage driver to use: ``overlay`` or ``vfs``.

    overlay needs the kernel's overlay filesystem; without it, the engine
    falls back to ``vfs``, which copies the image's layers for each
    container (slow, but works everywhere).  ``--storage-driver`` and
    ``MINIDOCKER_STORAGE_DRIVER`` choose explicitly, so both are tested.
    """
    driver = requested or os.environ.get("MINIDOCKER_STORAGE_DRIVER")
    if driver not in (None, "", "overlay", "vfs"):
        raise host.EngineError(f"unknown storage driver {driver!r}: use overlay or vfs")
    if driver:
        return driver
    with open("/proc/filesystems") as filesystems:
        if any(line.split()[-1] == "overlay" for line in filesystems):
            return "overlay"
    host.narrate(3, "no overlay filesystem in this kernel: using the vfs (copying) driver")
    return "vfs"


def create(directory, layers, driver):
    """Lay out a new container's filesystem directories under ``directory``.

    ``layers`` are the image's unpacked layer directories, lowest first;
    the engine's :func:`init_layer` goes on top of them.  For overlay,
    ``upper`` receives the container's changes; for vfs, ``rootfs`` is a
    full private copy.
    """
    init = init_layer()
    os.makedirs(os.path.join(directory, "merged"), exist_ok=True)
    if driver == "overlay":
        os.makedirs(os.path.join(directory, "upper"), exist_ok=True)
        os.makedirs(os.path.join(directory, "work"), exist_ok=True)
    else:
        copy = os.path.join(directory, "rootfs")
        os.makedirs(copy, exist_ok=True)
        host.narrate(3, f"vfs: copy {len(layers)} layer(s) into {copy}")
        for layer in [*layers, init]:
            apply_layer_by_copying(layer, copy)


def init_layer():
    """Return the engine's *init* layer, making it the first time it is needed.

    It holds the empty files and directories that mounts will cover
    (``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``, ``/dev``,
    ``/proc``, ``/sys``), so they never show up as a container's own
    changes.  Docker keeps such a layer for each container; its content is
    the same for all of them, and under overlay a lower layer is never
    written, so here one copy serves every container of the engine root.
    It is built under a temporary name and renamed into place, so a
    parallel command or a killed one never leaves half of it.
    """
    path = os.path.join(host.engine_root(), "init-layer")
    if os.path.isdir(path):
        return path
    draft = f"{path}.draft-{os.getpid()}"
    remove_path(draft)  # a killed command's, if the PID came round again
    for name in ("etc", "dev", "proc", "sys"):
        os.makedirs(os.path.join(draft, name))
    for name in NETWORK_FILES:
        open(os.path.join(draft, "etc", name), "a").close()
    try:
        os.rename(draft, path)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        remove_tree(draft)  # a parallel command made it first
    return path


def apply_layer_by_copying(layer, target):
    """Copy one unpacked layer onto ``target``, honouring its whiteouts.

    In an unpacked layer a deleted file is a character device 0/0 and a
    directory that hides everything below it carries the
    ``trusted.overlay.opaque`` attribute (overlayfs' own format).  The
    copying driver turns them back into deletions.
    """
    for current, directories, files in os.walk(layer):
        relative = os.path.relpath(current, layer)
        destination = os.path.normpath(os.path.join(target, relative))
        if relative != "." and is_opaque(current):
            for entry in os.listdir(destination) if os.path.isdir(destination) else []:
                remove_path(os.path.join(destination, entry))
        for name in directories[:]:
            source = os.path.join(current, name)
            if os.path.islink(source):
                directories.remove(name)
                files.append(name)
                continue
            path = os.path.join(destination, name)
            if os.path.lexists(path) and not os.path.isdir(path) or os.path.islink(path):
                remove_path(path)
            if not os.path.exists(path):
                os.mkdir(path)
            copy_metadata(source, path)
        for name in files:
            source = os.path.join(current, name)
            path = os.path.join(destination, name)
            info = os.lstat(source)
            remove_path(path)
            if is_whiteout(info):
                continue
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), path)
            elif stat.S_ISREG(info.st_mode):
                import shutil

                shutil.copyfile(source, path, follow_symlinks=False)
            else:
                os.mknod(path, info.st_mode, info.st_rdev)
            copy_metadata(source, path)


def is_whiteout(info):
    """Say whether ``lstat`` info describes an overlay whiteout (char 0/0)."""
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def is_opaque(directory):
    """Say whether an unpacked layer's directory is opaque."""
    try:
        return os.getxattr(directory, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def copy_metadata(source, path):
    """Copy owner, mode, times and extended attributes, never following links."""
    info = os.lstat(source)
    os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(path, stat.S_IMODE(info.st_mode))
        for name in os.listxattr(source, follow_symlinks=False):
            if name != "trusted.overlay.opaque":
                os.setxattr(path, name, os.getxattr(source, name, follow_symlinks=False),
                            follow_symlinks=False)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def remove_path(path):
    """Remove a file, link or whole directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def remove(directory):
    """Remove a container's filesystem directories (nothing may be mounted)."""
    check_unmounted(directory)
    remove_tree(directory)


def remove_tree(path):
    """Delete a directory and everything in it, following no symbolic link.

    A container's upper layer is the container's to fill, links included.
    os.fwalk walks by directory descriptors and never enters a link; a
    link to a directory is listed among the directories, so it is
    unlinked when rmdir finds it is not one.  (shutil.rmtree does the
    same, but importing shutil would add milliseconds to ``run --rm``.)
    """
    for _, directories, files, descriptor in os.fwalk(path, topdown=False):
        for name in files:
            os.unlink(name, dir_fd=descriptor)
        for name in directories:
            try:
                os.rmdir(name, dir_fd=descriptor)
            except NotADirectoryError:
                os.unlink(name, dir_fd=descriptor)
    os.rmdir(path)


def check_unmounted(directory):
    """Refuse to touch a container directory whose root is still mounted on the host."""
    merged = os.path.join(directory, "merged")
    with open("/proc/self/mountinfo") as mountinfo:
        if any(line.split()[4] == merged for line in mountinfo):
            raise host.EngineError(f"{merged} is still mounted")


# -- in the child: build the container's mount table ---------------------

def build(directory, layers, driver, *, read_only=False, volumes=(), workdir="/",
          tty_size=None, tmpfs=None, devices=(), privileged=False):
    """Mount everything the container needs under ``directory``/merged, and lay it over ``/``.

    ``tmpfs`` maps container paths to tmpfs options (``--tmpfs``), which
    stay writable under ``read_only``; ``devices`` are ``--device`` entries
    whose nodes are made in the container's /dev; ``privileged`` leaves
    /sys writable and nothing masked.

    Returns ``(merged, workdir, pty_master)``: the root, the workdir
    resolved inside it, and, when ``tty_size`` is given, the master side of
    a terminal opened from the container's own devpts.  The caller is in
    its new mount namespace and has not switched root yet.
    """
    merged = os.path.join(directory, "merged")
    root_table = root_mount_table(directory, layers, driver)
    if volumes or tmpfs:
        # Their mount points are paths inside the image, resolved in the
        # mounted root: the root goes first, in a table of its own.
        mount_root(directory, layers, driver)
        root_table = ""
    target_of = prepare_mount_points(merged, volumes)
    tmpfs_targets = {path: resolve(merged, path, create="directory") for path in tmpfs or {}}
    table = root_table + mount_table(directory, merged, volumes, target_of, privileged=privileged)
    for path, options in (tmpfs or {}).items():
        table += f"tmpfs {escape(tmpfs_targets[path])} tmpfs {options} 0 0\n"
    # The tree goes over / last of all.  Two things must happen before,
    # and each needs the tree in place first: binds onto files inside a
    # volume, and the read-only remount (the copy keeps the flag).  When
    # neither is asked for, the last line of this one table does it.
    over_root_later = read_only or network_files_under_volumes(merged, target_of)
    mount_all(table if over_root_later else table + over_root_line(merged))
    workdir_path = resolve(merged, workdir, create="directory")
    make_devices(os.path.join(merged, "dev"))
    for device in devices:
        make_device_node(merged, device)
    if over_root_later:
        later = binds_over_volume_network_files(directory, merged, target_of)
        if read_only:
            host.run(["mount", "--no-mtab", "-o", "remount,bind,ro", merged], 3)
        mount_all(later + over_root_line(merged))
    pty_master = open_terminal(merged, tty_size) if tty_size else None
    return merged, workdir_path, pty_master


def root_mount_table(directory, layers, driver):
    """Return the fstab lines that make the mount namespace private and mount the root.

    ``mount --all`` skips a line whose target is exactly ``/`` (the root
    was mounted at boot); ``//`` names the same directory and is not
    skipped, so even the propagation change rides in the table.
    """
    merged = os.path.join(directory, "merged")
    # mount_namespaces(7): a new mount namespace starts as a copy whose
    # mounts stay in the same peer groups as the host's, so on a host where
    # systemd made / shared our mounts would propagate back to the host.
    table = "none // none rprivate 0 0\n"
    if driver == "vfs":
        # The read-only remount needs a mount point, so the copy is bound onto merged.
        return table + f"{escape(os.path.join(directory, 'rootfs'))} {escape(merged)} none bind 0 0\n"
    if any(character in directory for character in ",: \t\n\\"):
        raise host.EngineError("for overlay, the engine root's path must not contain "
                               "',', ':', '\\' or white space")
    # overlayfs takes lowerdir top first; the init layer sits above the image.
    lower = ":".join([init_layer(), *reversed(layers)])
    options = (f"lowerdir={lower},upperdir={os.path.join(directory, 'upper')},"
               f"workdir={os.path.join(directory, 'work')}")
    return table + f"overlay {escape(merged)} overlay {options} 0 0\n"


def mount_all(table):
    """Mount every line of the fstab text ``table``, in order, with one exec of ``mount``.

    The table goes to ``mount`` in memory: memfd_create(2) "creates an
    anonymous file and returns a file descriptor that refers to it", which
    ``mount`` reads as ``/proc/self/fd/N``.  Nothing of it is written to the
    disk, and ``--trace`` shows its lines.

    mount(8): "The mount command canonicalizes all paths (from the command
    line or fstab) by default", a realpath of every source and target:
    here ~25 lines of long paths, about three milliseconds of stat and
    readlink calls.  The engine writes absolute paths that are canonical
    already (paths inside the container's root come from
    :func:`resolve`, which follows no link out of it), so it asks for
    ``--no-canonicalize``; the kernel resolves the same paths in mount(2)
    either way.  And ``--no-mtab`` ("Mount without writing in /etc/mtab"):
    otherwise libmount writes the container's mounts down in
    ``/run/mount/utab``, a file of the host's that has no business knowing
    them.
    """
    if host.tracing():
        host.narrate(3, "the mount table:", details=table.splitlines())
    descriptor = os.memfd_create("fstab", 0)  # not close-on-exec: mount inherits it
    try:
        host.write_all(descriptor, table.encode())
        host.run(["mount", "--all", "--no-mtab", "--no-canonicalize",
                  "--fstab", f"/proc/self/fd/{descriptor}"], 3)
    finally:
        os.close(descriptor)


def mount_root(directory, layers, driver):
    """Make the mount namespace private and mount the root, and nothing else."""
    mount_all(root_mount_table(directory, layers, driver))


def prepare_mount_points(merged, volumes):
    """Create each volume's mount point inside the root; return their paths.

    A volume target is a path *inside the image*, and the image may have
    made any part of it a symbolic link, even ``/data -> /etc`` or
    ``/data -> /proc/1/root``.  :func:`resolve` walks it one component at a
    time inside ``merged``, so the mount lands inside the container.
    """
    targets = {}
    for volume in volumes:
        kind = "directory" if os.path.isdir(volume["Source"]) else "file"
        targets[volume["Destination"]] = resolve(merged, volume["Destination"], create=kind)
    return targets


def mount_table(directory, merged, volumes, target_of, privileged=False):
    """Return the container's mounts as an fstab, in the order they must happen.

    One ``mount --all --fstab`` call does them all: one exec instead of one
    per mount.  The ``X-mount.mkdir`` option makes mount points inside the
    fresh /dev tmpfs.
    """
    def line(source, target, kind, options):
        return f"{escape(source)} {escape(target)} {kind} {options} 0 0\n"

    inside = lambda path: os.path.join(merged, path.lstrip("/"))  # noqa: E731
    table = [
        line("proc", inside("/proc"), "proc", "nosuid,nodev,noexec"),
        line("tmpfs", inside("/dev"), "tmpfs", "nosuid,strictatime,mode=755,size=65536k"),
        line("devpts", inside("/dev/pts"), "devpts",
             "newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec,X-mount.mkdir"),
        line("shm", inside("/dev/shm"), "tmpfs",
             "nosuid,nodev,noexec,mode=1777,size=65536k,X-mount.mkdir"),
        line("mqueue", inside("/dev/mqueue"), "mqueue", "nosuid,nodev,noexec,X-mount.mkdir"),
        line("sysfs", inside("/sys"), "sysfs",
             "rw,nosuid,nodev,noexec" if privileged else "ro,nosuid,nodev,noexec"),
    ]
    for volume in volumes:
        options = "bind,ro" if volume.get("ReadOnly") else "bind"
        table.append(line(volume["Source"], target_of[volume["Destination"]], "none", options))
    under_volumes = network_files_under_volumes(merged, target_of)
    for name in NETWORK_FILES:
        if name not in under_volumes:
            table.append(line(os.path.join(directory, name), resolve(merged, f"/etc/{name}"),
                              "none", "bind"))
    if privileged:
        return "".join(table)  # Docker's --privileged masks nothing and protects nothing
    for path in MASKED_PATHS:
        if os.path.isdir(path):
            table.append(line("tmpfs", inside(path), "tmpfs", "ro,size=0k"))
        elif os.path.exists(path):
            table.append(line("/dev/null", inside(path), "none", "bind"))
    for path in READ_ONLY_PATHS:
        if os.path.exists(path):
            table.append(line(inside(path), inside(path), "none", "bind,ro"))
    return "".join(table)


def covered_by_volume(path, volume_targets):
    """Say whether a volume is mounted on ``path`` or on a directory above it.

    Both are host paths already resolved inside the root, so a volume on
    ``/data -> /etc`` covers ``/etc/hosts``.
    """
    return any(path == target or path.startswith(target.rstrip("/") + "/")
               for target in volume_targets)


def binds_over_volume_network_files(directory, merged, volume_targets):
    """Return the fstab lines that bind hostname, hosts and resolv.conf over a volume.

    Docker puts these three files on top of everything, volumes included.
    Their mount points now lie in the volume, whose content nobody checked:
    they are resolved inside the container's root like any other path (a
    link there must not send the bind to a host path) and made if missing,
    so the volume must be mounted first, and these lines go in a second,
    small table.
    """
    table = ""
    for name in network_files_under_volumes(merged, volume_targets):
        target = resolve(merged, f"/etc/{name}", create="file")
        table += f"{escape(os.path.join(directory, name))} {escape(target)} none bind 0 0\n"
    return table


def network_files_under_volumes(merged, volume_targets):
    """Return the names in NETWORK_FILES whose path a volume covers, as mounted so far."""
    return [name for name in NETWORK_FILES if volume_targets and
            covered_by_volume(resolve(merged, f"/etc/{name}"), volume_targets.values())]


def over_root_line(merged):
    """Return the fstab line that lays the finished tree over ``/``.

    ``rbind`` copies ``merged`` with every mount under it, and ``//`` names
    the root as a target that ``mount --all`` does not skip (see
    :func:`root_mount_table`).  The copy is the same overlay, tmpfs and
    devpts as the originals, so files made through ``merged`` afterwards
    (the workdir, the device nodes) are in it too.  Then ``..`` at the top
    of the container's tree leads to the host's root, and the kernel steps
    from there onto what is mounted on it: the container's root again.
    """
    return f"{escape(merged)} // none rbind 0 0\n"


def escape(path):
    """Escape a path for an fstab field, as fstab(5) asks (octal escapes)."""
    for character, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(character, code)
    return path


def make_devices(dev):
    """Create the device nodes and links of a minimal ``/dev``."""
    for name, major, minor in DEVICES:
        path = os.path.join(dev, name)
        host.make_node(path, stat.S_IFCHR | 0o666, major, minor, 3)
        os.chmod(path, 0o666)
    for name, target in DEVICE_LINKS:
        os.symlink(target, os.path.join(dev, name))


def make_device_node(merged, device):
    """Make a ``--device`` node inside the container, a copy of the host's.

    Only the node is copied (type, numbers, mode, owner); whether the
    container may open it is the devices cgroup's decision (chapter 2).
    """
    info = os.stat(device["PathOnHost"])
    parent = resolve(merged, os.path.dirname(device["PathInContainer"]), create="directory")
    path = os.path.join(parent, os.path.basename(device["PathInContainer"]))
    remove_path(path)
    kind = stat.S_IFBLK if stat.S_ISBLK(info.st_mode) else stat.S_IFCHR
    host.make_node(path, kind | stat.S_IMODE(info.st_mode), os.major(info.st_rdev),
                   os.minor(info.st_rdev), 3)
    os.chmod(path, stat.S_IMODE(info.st_mode))
    os.chown(path, info.st_uid, info.st_gid)


def parse_tmpfs(spec):
    """Parse ``--tmpfs PATH[:OPTIONS]``; return ``(path, mount options)``.

    Docker mounts it ``noexec,nosuid,nodev`` unless the options say
    otherwise.  Only tmpfs(5)'s own options and the generic mount flags
    are taken: the options go into an fstab line, and anything else
    (another source, a bind) has no business there.
    """
    path, _, given = spec.partition(":")
    if not path.startswith("/") or os.path.normpath(path) == "/":
        raise host.EngineError(f"invalid mount path for tmpfs: '{path}': "
                               "it must be an absolute path other than /")
    import re  # only for --tmpfs: see host.py on the start path's imports

    options = ["noexec", "nosuid", "nodev"]
    for option in filter(None, given.split(",")):
        key, _, value = option.partition("=")
        if key not in TMPFS_OPTIONS or not re.fullmatch(r"[A-Za-z0-9%.:_-]*", value) \
                or ("=" in option) != (key in TMPFS_VALUED_OPTIONS):
            raise host.EngineError(f"invalid tmpfs option '{option}' in '{spec}'")
        options.append(option)
    return os.path.normpath(path), ",".join(options)


TMPFS_VALUED_OPTIONS = ("size", "nr_blocks", "nr_inodes", "mode", "uid", "gid", "huge", "mpol")
TMPFS_OPTIONS = TMPFS_VALUED_OPTIONS + (
    "rw", "ro", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime",
    "relatime", "norelatime", "strictatime", "nodiratime", "sync", "async", "dirsync")


def parse_device(spec):
    """Parse ``--device HOST[:CONTAINER][:PERMISSIONS]`` into Docker's ``Devices`` entry."""
    parts = spec.split(":")
    if len(parts) == 2 and parts[1] and set(parts[1]) <= set("rwm"):
        parts = [parts[0], parts[0], parts[1]]
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise host.EngineError(f"invalid device specification: {spec}")
    source = parts[0]
    target = parts[1] if len(parts) > 1 and parts[1] else source
    permissions = parts[2] if len(parts) > 2 else "rwm"
    if not permissions or not set(permissions) <= set("rwm"):
        raise host.EngineError(f"invalid device permissions '{permissions}' in {spec}: use r, w, m")
    if not source.startswith("/") or not target.startswith("/") or "\0" in spec:
        raise host.EngineError(f"invalid device specification: {spec}: paths must be absolute")
    try:
        info = os.stat(source)
    except OSError as error:
        raise host.EngineError("error gathering device information while adding custom device "
                               f"\"{source}\": {error.strerror.lower()}")
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        raise host.EngineError(f"{source} is not a device node")
    return {"PathOnHost": source, "PathInContainer": os.path.normpath(target),
            "CgroupPermissions": permissions}


def open_terminal(merged, size):
    """Open a terminal pair from the container's own devpts instance.

    A pty opened from the host's ``/dev/ptmx`` belongs to the host's devpts,
    and inside the container (with its own devpts) it is "not a tty".  So
    the master comes from ``merged/dev/pts/ptmx``.  Python 3.12 has no
    ``unlockpt``/``ptsname``; the two ioctls below are what they do.
    """
    import termios  # only for -t: see host.py on the start path's imports

    TIOCSPTLCK, TIOCGPTN = 0x40045431, 0x80045430
    master = os.open(os.path.join(merged, "dev/pts/ptmx"), os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(os.path.join(merged, f"dev/pts/{number}"), os.O_RDWR | os.O_NOCTTY)
    rows, columns = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    host.narrate(3, f"open a terminal: /dev/pts/{number} of the container's devpts")
    return master, slave


# -- resolving paths inside the root -------------------------------------

def resolve(root, path, create=None, limit=40):
    """Return the host path of ``path`` as the container would see it.

    Each component is looked up inside ``root``; a symbolic link is
    followed *as the container would follow it*, so an absolute target
    starts again at ``root`` and ``..`` never climbs above it.  With
    ``create`` ("directory" or "file"), missing components are made.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    current = root
    links_followed = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = os.path.dirname(current) if current != root else root
            continue
        candidate = os.path.join(current, part)
        try:
            # One lstat(2) per component says all three things asked below.
            mode = os.lstat(candidate).st_mode
        except OSError:
            mode = None  # missing, or unreachable: as os.path.lexists says
        except ValueError:   # an image config's JSON can hold what no path can
            raise host.EngineError(f"{path[:60]!r}: not a path in the container (a NUL byte, "
                                   "or a character with no encoding)")
        if mode is not None and stat.S_ISLNK(mode):
            links_followed += 1
            if links_followed > limit:
                raise host.EngineError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if mode is None and create:
            if parts or create == "directory":
                os.mkdir(candidate, 0o755)
            else:
                open(candidate, "a").close()
        elif parts and mode is not None and not stat.S_ISDIR(mode):
            raise host.EngineError(f"{path}: not a directory in the container")
        current = candidate
    return current


def inside_path(root, host_path):
    """Turn a resolved host path back into the container's view of it."""
    relative = os.path.relpath(host_path, root)
    return "/" if relative == "." else "/" + relative


# -- the switch, and the last exec ---------------------------------------

def switch_root(merged):
    """Stand on the container's root, which :func:`build` laid over ``/``.

    A lookup of ``/`` stops at the process's root directory, the host's,
    and does not look at what is mounted on it; a step to ``..`` from
    there stays on that directory but then crosses onto the mount on top,
    as every step does.  So ``/..`` is the container's root.  The check
    after it makes sure of that: a root left on the host's would be
    caught here, before the chroot in :func:`exec_command` makes it the
    container's.  The root directory stays the host's meanwhile, so host
    tools can still run for the last steps.

    ``mount --all`` skips a line it takes for mounted already, and it may
    take the copy for the host's own root: where that root is an overlay
    too (a host that is itself a container), both are "overlay" at "/".
    Then the tree is still only at ``merged``, and a ``mount --move`` of it
    does what the table's line would have done, in a program of its own.
    """
    root = os.stat(merged)
    host.call(3, "chdir /..", os.chdir, "/..")
    if os.path.samestat(os.stat("."), root):
        return
    os.chdir(merged)
    host.run(["mount", "--move", "--no-mtab", "--no-canonicalize", ".", "/"], 3)
    host.call(3, "chdir /..", os.chdir, "/..")
    if not os.path.samestat(os.stat("."), root):
        raise host.EngineError("the container's root did not go on top of /")


def exec_command(argv, environment, *, workdir, uid=0, gid=0, groups=(),
                 capabilities=DEFAULT_CAPABILITIES, no_new_privileges=False, joining=False):
    """Become the user's command; never returns.

    The supplementary groups and the group IDs are set here, with Python's
    ``os``; so is, for a process ``joining`` a running container (``exec``)
    where CAP_SETUID stays, a real UID that is not 0 (see
    :func:`steps_to_the_command` for why).  Python can neither drop
    capabilities nor set ``no_new_privs`` without ctypes, so the last steps
    are two host tools, each exec'ing the next:

    * ``setpriv`` limits the capability bounding set (capabilities(7): "the
      bounding set [...] limits the capabilities that can be gained during
      execve(2)");
    * ``nsenter --root=. --wd=...`` chroots into the container's root (the
      working directory, since :func:`switch_root`), changes to the
      workdir, switches to the user's UID and execs the command, looked up
      in the container's ``PATH``.

    Both run from sealed in-memory copies (:func:`seal_host_tool`), and
    when ``joining``, while nsenter still stands on the host's root its
    real UID differs from its effective one, which makes it non-dumpable:
    see :func:`steps_to_the_command` for why each matters.  (setpriv could set
    the IDs too, but it looks each number up as a name first, through the
    host's NSS modules: 0.6 ms of every start.)
    """
    tools = sealed_tools()
    keep = []
    if not tools["nsenter"].held_elsewhere:
        tools["nsenter"].pass_through_exec()
        keep.append(tools["nsenter"].descriptor)
    (group_ids, user_ids), chain = steps_to_the_command(
        argv, tools, workdir=workdir, uid=uid, gid=gid, groups=groups,
        capabilities=capabilities, no_new_privileges=no_new_privileges, joining=joining)
    keep_only_standard_descriptors(keep)
    # Still root with every capability: the groups first, the UIDs last.
    # The effective UID stays 0, so setpriv's execve gives it every
    # capability of the bounding set, to limit that set.  The saved ID
    # follows the effective one, as setpriv's own options set it.
    try:
        host.call(3, f"setgroups({list(groups)})", os.setgroups, list(groups))
        real, effective = group_ids
        host.call(3, f"setresgid({real}, {effective}, {effective})",
                  os.setresgid, real, effective, effective)
        if user_ids:
            real, effective = user_ids
            host.call(3, f"setresuid({real}, {effective}, {effective})",
                      os.setresuid, real, effective, effective)
    except (OSError, OverflowError) as error:
        raise host.EngineError(f"cannot take the user's IDs ({uid}:{gid}, groups {list(groups)}):"
                               f" {error}", exit_code=126)
    host.narrate(3, " ".join(chain))
    try:
        os.execve(tools["setpriv"].path_for_owner, chain, environment)
    except OSError as error:  # E2BIG: an environment larger than execve(2) takes
        raise host.EngineError(f'exec: "{argv[0]}": {error.strerror}', exit_code=126)
    except ValueError:   # a NUL in an argument or a variable of the image's config
        raise host.EngineError(f'exec: "{argv[0]}": an argument or a variable holds a NUL byte '
                               "or a character with no encoding", exit_code=126)


def steps_to_the_command(argv, tools, *, workdir, uid, gid, groups, capabilities,
                         no_new_privileges, joining=False):
    """Return the IDs to take, and the ``setpriv ... -- nsenter ... -- COMMAND`` list.

    The IDs are ``((real GID, effective GID), (real UID, effective UID))``;
    the UIDs are None where they stay 0.

    Two rules shape it.  A process in the container may open
    ``/proc/PID/exe`` of a process that joins it and, once that process
    has moved on, write through the descriptor into the host binary
    (runc's CVE-2019-5736): so the tools run from sealed memfd copies, and
    the binary such a process can reach is one nobody can write.  And
    ``/proc/PID/root`` of nsenter leads to the host's root until nsenter
    has chrooted: ptrace(2)'s access mode check refuses it to another
    process only if the target is not "dumpable", and execve(2) makes a
    program non-dumpable when its "effective user ID is not the same as
    its real user ID".  So for a process ``joining`` the container,
    setpriv and nsenter get a real UID that is not 0 (the user's, or
    nobody's for root) while the effective one stays 0, and nsenter's
    ``--setuid`` sets all of them after the chroot.

    Putting the IDs right needs CAP_SETUID in the bounding set (setuid(2):
    without it only the effective ID changes).  Without it, a different
    effective *group* does the same job, put right by nsenter's
    ``--setgid``, which also clears the supplementary groups, so it serves
    only a user who has none.  With neither, nsenter stays dumpable, and
    the trace says so.

    The price: such an execve(2) is also a "secure" one (AT_SECURE), and
    glibc's loader then drops ``LD_LIBRARY_PATH``, ``LD_PRELOAD``,
    ``TMPDIR``, ``TZDIR`` and a dozen more from the environment the
    command inherits, where Docker keeps them.  PID 1's own chain pays
    none of it: no other process is in the container while it runs,
    because ``exec`` waits until PID 1 stands on the container's root
    (``container.execute``).
    """
    if uid and "setuid" not in capabilities:
        # The effective UID must stay 0 until nsenter (setpriv's exec gives
        # nsenter the bounding set only while a UID is 0), so nsenter
        # switches users, and setuid(2) to another user needs CAP_SETUID.
        raise host.EngineError("a user other than root needs CAP_SETUID: nsenter switches to "
                               "the user after setpriv has limited the capabilities")
    chain = ["setpriv", "--bounding-set=-all" + "".join(f",+{name}" for name in capabilities)]
    identity = [f"--setuid={uid}"]
    user_ids = None
    if not joining:
        group_ids = (gid, gid)
    elif "setuid" in capabilities:
        group_ids, user_ids = (gid, gid), (uid or NOBODY, 0)
    elif "setgid" in capabilities and not groups:
        group_ids = (gid, gid + 1 if gid < NOBODY else gid - 1)
        identity.append(f"--setgid={gid}")
    else:
        group_ids = (gid, gid)
        host.narrate(3, "without CAP_SETUID and CAP_SETGID nsenter cannot be made non-dumpable")
    if no_new_privileges:
        chain.append("--no-new-privs")
    chain += ["--", tools["nsenter"].path_for_others, "--root=.", "--wd=." + workdir,
              *identity, "--", *argv]
    return (group_ids, user_ids), chain


#: The real UID nsenter runs under, for root's commands, until it has chrooted.
NOBODY = 65534


def keep_only_standard_descriptors(keep=()):
    """Let no descriptor but 0, 1 and 2 pass into the container.

    A descriptor the engine inherited from whoever started it (a shell, a
    CI runner) would otherwise reach the container's command still open,
    and one naming a host directory is a way out (runc's CVE-2024-21626).
    Close-on-exec, rather than close, keeps the error pipe working until
    the exec succeeds.
    """
    for name in os.listdir("/proc/self/fd"):
        descriptor = int(name)
        if descriptor > 2 and descriptor not in keep:
            try:
                os.set_inheritable(descriptor, False)
            except OSError:
                pass  # the descriptor listdir itself used, closed already


class SealedTool:
    """A host tool copied into a sealed memfd, and how to exec it.

    ``path_for_owner`` works in the process that holds the descriptor (and
    its forked children, which share it until they exec);
    ``path_for_others`` names the copy through the holder's ``/proc/PID``,
    so a later program in the chain can exec it without inheriting an
    open descriptor.
    """

    def __init__(self, name, descriptor, owner):
        self.name = name
        self.descriptor = descriptor
        self.path_for_owner = f"/proc/self/fd/{descriptor}"
        self.path_for_others = f"/proc/{owner}/fd/{descriptor}"
        self.held_elsewhere = owner != os.getpid()

    def pass_through_exec(self):
        """Keep the copy open across an exec, for a caller that holds it alone.

        A caller that did not seal the tools before it forked is the only
        holder, so the copy must survive its exec, and the command
        inherits one descriptor of a read-only memfd.
        """
        os.set_inheritable(self.descriptor, True)
        self.path_for_others = self.path_for_owner


_sealed_tools = {}

#: memfd_create(2): "MFD_EXEC [...] Create the memfd with executable
#: permission" (Linux 6.3); older kernels refuse the unknown flag.
MFD_EXEC = 0x10


def sealed_tools():
    """Return the sealed copies of ``setpriv`` and ``nsenter`` this process holds.

    The process that forks a container's PID 1 or an exec'd process calls
    this before it forks and keeps the copies open while the child may
    still need them: the child's ``setpriv`` execs ``nsenter`` through
    ``/proc/OWNER/fd/N``.
    """
    if not _sealed_tools or _sealed_tools["owner"] != os.getpid() and not _inherited():
        _sealed_tools.clear()
        _sealed_tools["owner"] = os.getpid()
        for name in ("setpriv", "nsenter"):
            _sealed_tools[name] = seal_host_tool(name)
    owner = _sealed_tools["owner"]
    return {name: SealedTool(name, _sealed_tools[name], owner) for name in ("setpriv", "nsenter")}


def _inherited():
    """Say whether the sealed copies this process knows of are still open in it."""
    try:
        return all(os.readlink(f"/proc/self/fd/{_sealed_tools[name]}") == f"/memfd:{name} (deleted)"
                   for name in ("setpriv", "nsenter"))
    except OSError:
        return False


def seal_host_tool(name):
    """Copy a host tool into a memfd and seal it against every change.

    fcntl(2): "F_SEAL_WRITE: If this seal is set, you cannot modify the
    contents of the file", and F_SEAL_SEAL forbids removing that seal
    again.  So a process that reaches the copy through ``/proc/PID/exe``
    can read it but never write it, and the host's own binary is never
    executed by anything that joins a container.
    """
    path = host.tool_path(name)
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        descriptor = os.memfd_create(name, flags | MFD_EXEC)
    except OSError:
        descriptor = os.memfd_create(name, flags)
    try:
        with open(path, "rb") as binary:
            host.write_all(descriptor, binary.read())
        os.fchmod(descriptor, 0o555)
        fcntl.fcntl(descriptor, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW |
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    except OSError as error:
        os.close(descriptor)
        raise host.EngineError(f"cannot make a sealed copy of {path}: {error.strerror}")
    host.narrate(3, f"memfd_create({name}): a sealed copy of {path} for the last exec")
    return descriptor


def find_command(root, name, search_path):
    """Check that the command exists and can run inside the root.

    Returns nothing; raises :class:`~minidocker.host.EngineError` with
    Docker's wording and exit code (127 not found, 126 not executable).
    Checking before the container starts gives a clear message instead of
    a tool's.
    """
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(directory or ".", name) for directory in search_path.split(":")]
    for candidate in candidates:
        path = resolve(root, candidate)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # not in this directory of the search path
        if stat.S_ISREG(mode):
            if not mode & 0o111:
                raise host.EngineError(
                    f'exec: "{name}": permission denied', exit_code=126)
            return
        if "/" in name and stat.S_ISDIR(mode):
            raise host.EngineError(f'exec: "{name}": is a directory', exit_code=126)
    if "/" in name:
        raise host.EngineError(f'exec: "{name}": no such file or directory', exit_code=127)
    raise host.EngineError(f'exec: "{name}": executable file not found in $PATH', exit_code=127)


#: The largest user or group ID (2**32 - 1 is "no ID" to the kernel's calls).
MAX_ID = 2**32 - 2


def read_colon_file(root, path):
    """The lines of ``/etc/passwd`` or ``/etc/group`` in the root, split at the colons.

    Only a regular file is read, and nothing else is even opened: opening
    a FIFO waits for a writer, and opening a device node the image holds
    can act on the device (a watchdog starts counting), on the host's side
    for ``exec``.  So the name is opened with ``O_PATH``, which reads
    nothing, and reopened through ``/proc/self/fd`` only once it is known
    to be a regular file.  (``O_NOFOLLOW``: :func:`resolve` has followed
    the links.)  A file that cannot be read gives no lines.
    """
    try:
        handle = os.open(resolve(root, path), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, host.EngineError):
        return []
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return []
        with open(f"/proc/self/fd/{handle}", errors="replace") as lines:
            return [line.rstrip("\n").split(":") for line in lines if not line.startswith("#")]
    except OSError:
        return []
    finally:
        os.close(handle)


def id_number(text):
    """A user or group ID field of ``/etc/passwd`` or ``/etc/group``, checked."""
    if not host.is_decimal(text) or int(text) > MAX_ID:
        raise host.EngineError(f"the container's passwd or group file holds an invalid ID: "
                               f"{text[:20]!r}")
    return int(text)


def set_hostname_files(directory, hostname, hosts_lines=()):
    """Write the container's ``hostname``, ``hosts`` and ``resolv.conf``."""
    with open(os.path.join(directory, "hostname"), "w") as handle:
        handle.write(hostname + "\n")
    with open(os.path.join(directory, "hosts"), "w") as handle:
        handle.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        for entry in hosts_lines:
            handle.write(entry + "\n")
    with open(os.path.join(directory, "resolv.conf"), "w") as handle:
        handle.write(host_resolv_conf())


def host_resolv_conf():
    """Return the host's resolver settings without loopback name servers.

    A name server on the host's 127.0.0.1 is unreachable from the
    container's own network namespace, so Docker drops such lines too.
    """
    try:
        with open("/etc/resolv.conf") as handle:
            lines = handle.read().splitlines()
    except OSError:
        lines = []
    kept = [line for line in lines
            if not (line.startswith("nameserver") and
                    line.split()[1:2] and line.split()[1].startswith(("127.", "::1")))]
    return "\n".join(kept) + "\n"


def default_hostname(container_id):
    """Docker names a container's host after the first 12 digits of its id."""
    return container_id[:12] or os.uname().nodename

"""The container: a record on disk, and a lifecycle that composes the chapters.

Each container has a directory under ``ENGINE_ROOT/containers/ID``::

    config.json     what was asked for (Docker's inspect keys: Config, HostConfig, Mounts)
    state.json      what is happening (State: Status, Pid, ExitCode, ...), replaced atomically
    ID-json.log     its output (chapter 6)
    init/ upper/ work/ merged/   its filesystem (chapter 3)
    hostname hosts resolv.conf   bound over the image's /etc files

Starting one follows DESIGN.md's process model::

    monitor (the CLI itself, or a daemon for ``run -d``)
    └─ PID 1: new namespaces (ch1), its cgroup (ch2), its root (ch3),
              then the user's command

A recorded PID is never trusted alone: it counts as running only if a
process with that PID exists *and* started at the recorded time, since PIDs
are reused.
"""

import json
import os
import re
import shlex
import signal
import socket
import struct
import sys
import time

from minidocker import cgroup, host, image, logs, namespace, rootfs

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_PATTERN = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
HOSTNAME_PATTERN = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                              r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
USER_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")


def containers_directory():
    return os.path.join(host.engine_root(), "containers")


# -- the record ------------------------------------------------------------

class Container:
    """A container's record: its configuration and its state on disk."""

    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "config.json")) as handle:
            self.config = json.load(handle)
        try:
            with open(os.path.join(directory, "state.json")) as handle:
                self.state = json.load(handle)
        except FileNotFoundError:
            self.state = new_state()

    @property
    def id(self):
        return self.config["Id"]

    @property
    def name(self):
        return self.config["Name"].lstrip("/")

    @property
    def log_path(self):
        return os.path.join(self.directory, f"{self.id}-json.log")

    def save_state(self, **changes):
        self.state.update(changes)
        host.write_atomically(os.path.join(self.directory, "state.json"),
                              json.dumps(self.state, indent=2))

    def save_config(self):
        host.write_atomically(os.path.join(self.directory, "config.json"),
                              json.dumps(self.config, indent=2))

    def is_running(self):
        """Say whether PID 1 is alive: the PID exists and started when recorded."""
        pid = self.state.get("Pid")
        return bool(pid) and process_start_ticks(pid) == self.state.get("PidStartTicks")

    def monitor_alive(self):
        pid = self.state.get("MonitorPid")
        return bool(pid) and process_start_ticks(pid) == self.state.get("MonitorStartTicks")

    def status(self):
        """The container's status, checked against the kernel, not just the file."""
        recorded = self.state.get("Status", "created")
        if recorded == "running" and not self.is_running():
            return "exited"
        return recorded


def new_state():
    return {"Status": "created", "Running": False, "Paused": False, "Restarting": False,
            "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
            "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}


def process_start_ticks(pid):
    """Return when ``pid`` started (clock ticks since boot), or None if it is gone.

    proc(5): field 22 of /proc/PID/stat is "starttime  The time the process
    started after system boot".  The command name in field 2 may contain
    spaces, so the fields are counted after its closing parenthesis.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def all_containers():
    """Return every container record, oldest first."""
    directory = containers_directory()
    found = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.startswith("."):
            continue
        try:
            found.append(Container(os.path.join(directory, name)))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            continue
    return sorted(found, key=lambda container: container.config["Created"])


def find(reference):
    """Find a container by full id, name, or unique id prefix (as Docker does)."""
    containers = all_containers()
    for container in containers:
        if reference in (container.id, container.name, "/" + container.name):
            return container
    matches = [container for container in containers if container.id.startswith(reference)]
    if len(matches) == 1 and reference:
        return matches[0]
    if len(matches) > 1:
        raise host.EngineError(f"multiple IDs found with provided prefix: {reference}")
    raise host.EngineError(f"No such container: {reference}")


# -- creating --------------------------------------------------------------

def create(store, image_name, options):
    """Create a container from an image and the ``run`` options; return it.

    Everything the user gave is checked before anything is written, and
    the directory is built under a temporary name and renamed into place,
    so a bad flag or a killed command leaves nothing half-made.
    """
    source = store.lookup(image_name)
    image_config = source.run_config
    argv = command_line(image_config, options)
    environment = environment_list(image_config, options)
    workdir = options.get("workdir") or image_config.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise host.EngineError(
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    user = options.get("user") if options.get("user") is not None else image_config.get("User", "")
    if user and not USER_PATTERN.match(user):
        raise host.EngineError(f"invalid user: {user!r}")
    mounts = [parse_volume(spec) for spec in options.get("volumes", [])]
    hostname = options.get("hostname")
    if hostname is not None and (len(hostname) > 253 or not HOSTNAME_PATTERN.match(hostname)):
        raise host.EngineError(f"invalid hostname format: {hostname}")
    network_mode = options.get("network") or "none"
    if network_mode != "none":
        raise host.EngineError(f"network {network_mode} not found")
    limits = resource_limits(options)
    limits.check()
    driver = rootfs.choose_driver(options.get("storage_driver"))
    layers = source.layer_directories()

    identifier = os.urandom(32).hex()
    directory = containers_directory()
    os.makedirs(directory, exist_ok=True)
    remove_abandoned_drafts(directory)
    draft = os.path.join(directory, f".draft-{os.getpid()}-{identifier[:12]}")
    os.mkdir(draft, 0o700)
    try:
        config = {
            "Id": identifier,
            "Created": logs.timestamp(),
            "Path": argv[0],
            "Args": argv[1:],
            "Image": source.id,
            "ImageManifest": source.digest,
            "Driver": driver,
            "LayerDirectories": layers,
            "LogPath": os.path.join(directory, identifier, f"{identifier}-json.log"),
            "Config": {
                "Hostname": hostname or identifier[:12],
                "User": user,
                "Env": environment,
                "Cmd": argv,
                "Entrypoint": None,
                "WorkingDir": workdir,
                "Tty": bool(options.get("tty")),
                "OpenStdin": bool(options.get("interactive")),
                "AttachStdin": bool(options.get("interactive")),
                "Image": image_name,
                "Labels": dict(image_config.get("Labels") or {}),
            },
            "HostConfig": {
                "Binds": list(options.get("volumes", [])),
                "AutoRemove": bool(options.get("auto_remove")),
                "ReadonlyRootfs": bool(options.get("read_only")),
                "NetworkMode": network_mode,
                **limits.host_config(),
            },
            "Mounts": mounts,
        }
        rootfs.create(draft, layers, driver)
        rootfs.set_hostname_files(draft, config["Config"]["Hostname"])
        with host.locked(os.path.join(host.engine_root(), "names.lock")):
            name = options.get("name") or unused_name()
            check_name_is_free(name)
            config["Name"] = "/" + name
            host.write_atomically(os.path.join(draft, "config.json"), json.dumps(config, indent=2))
            host.write_atomically(os.path.join(draft, "state.json"), json.dumps(new_state()))
            os.rename(draft, os.path.join(directory, identifier))
    except BaseException:
        rootfs.remove_path(draft)
        raise
    return Container(os.path.join(directory, identifier))


def resource_limits(options):
    """The ``run`` flags -m, --memory-swap, --cpus, ... as cgroup limits.

    Docker reads 0 as "not set" for each of them.
    """
    return cgroup.Limits(**{name: options.get(name) or None for name in (
        "memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "pids_limit")})


def container_cgroup(container):
    """The container's control group: ``minidocker/ID`` in every hierarchy."""
    return cgroup.Cgroup(f"minidocker/{container.id}")


def command_line(image_config, options):
    """Join entrypoint and command the way Docker does.

    ``--entrypoint`` replaces the image's entrypoint *and* drops its Cmd;
    arguments after the image name replace the image's Cmd.
    """
    if options.get("entrypoint") is not None:
        entrypoint = shlex.split(options["entrypoint"]) if options["entrypoint"] else []
        command = list(options.get("command") or [])
    else:
        entrypoint = list(image_config.get("Entrypoint") or [])
        command = list(options.get("command") or image_config.get("Cmd") or [])
    argv = entrypoint + command
    if not argv:
        raise host.EngineError("no command specified")
    return argv


def environment_list(image_config, options):
    """The container's environment: the image's, then --env-file, then -e."""
    values = {}
    for entry in image_config.get("Env") or []:
        name, _, value = entry.partition("=")
        values[name] = value
    given = []
    for path in options.get("env_files", []):
        try:
            with open(path) as handle:
                given += [line.strip() for line in handle
                          if line.strip() and not line.lstrip().startswith("#")]
        except OSError as error:
            raise host.EngineError(f"open {path}: {error.strerror.lower()}")
    given += options.get("env", [])
    for entry in given:
        name, has_value, value = entry.partition("=")
        if not name or any(character.isspace() for character in name) or "\0" in entry:
            raise host.EngineError(f"invalid environment variable: {entry}")
        if has_value:
            values[name] = value
        elif name in os.environ:
            values[name] = os.environ[name]
    values.setdefault("PATH", DEFAULT_PATH)
    return [f"{name}={value}" for name, value in values.items()]


def parse_volume(spec):
    """Parse ``-v SOURCE:DESTINATION[:ro|rw]`` into a Docker ``Mounts`` entry."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise host.EngineError(f"invalid volume specification: '{spec}'")
    source, destination = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    flags = set(mode.split(","))
    if not flags <= {"ro", "rw", "z", "Z"} or {"ro", "rw"} <= flags:
        raise host.EngineError(f"invalid mode: {mode}")
    if not destination.startswith("/") or os.path.normpath(destination) == "/":
        raise host.EngineError(f"invalid volume specification: '{spec}': "
                               "the destination must be an absolute path other than /")
    if not source.startswith("/"):
        raise host.EngineError(f"invalid volume specification: '{spec}': "
                               "the source must be an absolute host path")
    if "\0" in spec:
        raise host.EngineError("invalid volume specification: a path contains a NUL byte")
    read_only = "ro" in flags
    return {"Type": "bind", "Source": os.path.normpath(source),
            "Destination": os.path.normpath(destination),
            "Mode": mode if len(parts) == 3 else "", "RW": not read_only, "ReadOnly": read_only,
            "Propagation": "rprivate"}


def check_name_is_free(name):
    if not NAME_PATTERN.match(name):
        raise host.EngineError(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    for container in all_containers():
        if container.name == name.lstrip("/"):
            raise host.EngineError(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{container.id}". You have to remove (or rename) that container to be able '
                "to reuse that name.")


ADJECTIVES = ("brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid",
              "merry", "nifty", "proud", "quirky", "sharp", "tender", "vivid", "wise")
SCIENTISTS = ("curie", "dijkstra", "euler", "hopper", "kepler", "lovelace", "noether",
              "pascal", "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak")


def unused_name():
    """A random ``adjective_scientist`` name, as Docker gives."""
    taken = {container.name for container in all_containers()}
    while True:
        number = int.from_bytes(os.urandom(2))
        name = f"{ADJECTIVES[number % len(ADJECTIVES)]}_{SCIENTISTS[(number >> 4) % len(SCIENTISTS)]}"
        if name in taken:
            name += str(number % 100)
        if name not in taken:
            return name


def remove_abandoned_drafts(directory):
    """Remove drafts left by a ``create`` that was killed half way."""
    for name in os.listdir(directory):
        if name.startswith(".draft-"):
            pid = int(name.split("-")[1])
            if process_start_ticks(pid) is None:
                rootfs.remove_path(os.path.join(directory, name))


# -- starting: the monitor and PID 1 -----------------------------------------

def start(container, attach=True, terminal_size=None, on_running=None):
    """Start PID 1 and monitor it until it exits; return its exit code.

    The caller is the monitor: it keeps the container's output streams,
    writes the log, waits for PID 1 and cleans up after it.  With
    ``attach`` the output is also copied to the caller's own streams.
    ``on_running`` is called once the user's command has started.
    """
    # The group exists, limits written, before PID 1 does: PID 1 joins it
    # first thing, so nothing the user runs is ever outside it.  A group
    # of the same name can only be a leftover of a monitor that was killed.
    group = container_cgroup(container)
    group.destroy()
    for warning in group.create(cgroup.Limits.from_host_config(container.config["HostConfig"])):
        print(f"WARNING: {warning}", file=sys.stderr)
    try:
        return _start_and_monitor(container, group, attach, terminal_size, on_running)
    finally:
        group.destroy()


def _start_and_monitor(container, group, attach, terminal_size, on_running):
    config = container.config
    tty = config["Config"]["Tty"]
    interactive = config["Config"]["OpenStdin"]
    error_read, error_write = os.pipe()
    if tty:
        parent_socket, child_socket = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        streams = None
    else:
        streams = {"stdout": os.pipe(), "stderr": os.pipe()}
        streams["stdin"] = os.pipe() if interactive else None
    pid = namespace.fork_into_new_pid_namespace()
    if pid == 0:
        os.close(error_read)
        _container_process(container, error_write, streams,
                           child_socket if tty else None, terminal_size)
    os.close(error_write)
    container.save_state(MonitorPid=os.getpid(), MonitorStartTicks=process_start_ticks(os.getpid()),
                         Pid=pid, PidStartTicks=process_start_ticks(pid))
    if tty:
        child_socket.close()
    else:
        for name, pipe in streams.items():
            if pipe:
                os.close(pipe[1] if name != "stdin" else pipe[0])
    failure = _read_all(error_read)
    if failure:
        os.waitpid(pid, 0)
        code, _, message = failure.decode(errors="replace").partition("\t")
        finish(container, exit_code=int(code), error=message)
        raise host.EngineError(message, exit_code=int(code))
    container.save_state(Status="running", Running=True, StartedAt=logs.timestamp(),
                         ExitCode=0, Error="")
    logs.narrate_monitor(container.id, pid)
    if on_running:
        on_running()
    log = logs.JsonFileWriter(container.log_path)
    if tty:
        _, descriptors, _, _ = socket.recv_fds(parent_socket, 16, 1)
        parent_socket.close()
        master = descriptors[0]
        logs.relay({master: ("stdout", 1 if attach else None)}, log,
                   stdin_source=0 if attach and interactive else None, stdin_target=master)
        os.close(master)
    else:
        sources = {streams["stdout"][0]: ("stdout", 1 if attach else None),
                   streams["stderr"][0]: ("stderr", 2 if attach else None)}
        stdin_write = streams["stdin"][1] if streams["stdin"] else None
        logs.relay(sources, log, stdin_source=0 if attach and stdin_write is not None else None,
                   stdin_target=stdin_write)
        for descriptor in sources:
            os.close(descriptor)
    log.close()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    oom_killed = group.oom_killed()
    group.destroy()
    return finish(container, exit_code=code if code >= 0 else 128 - code, oom_killed=oom_killed)


def finish(container, exit_code, error="", oom_killed=False):
    """Record how the container ended and release what it held."""
    container.save_state(Status="exited", Running=False, Pid=0, ExitCode=exit_code,
                         Error=error, FinishedAt=logs.timestamp(), OOMKilled=oom_killed)
    if container.config["HostConfig"].get("AutoRemove"):
        remove_files(container)
    return exit_code


def _read_all(descriptor):
    data = b""
    while chunk := os.read(descriptor, 4096):
        data += chunk
    os.close(descriptor)
    return data


def _container_process(container, error_pipe, streams, terminal_socket, terminal_size):
    """Become the container's PID 1; never returns.

    Any failure before the user's command starts is written to
    ``error_pipe`` as ``CODE<TAB>MESSAGE`` for the monitor to report; the
    pipe closes by itself (close-on-exec) once the command is running.
    """
    try:
        config = container.config
        # Join before unsharing the cgroup namespace, whose root is the
        # group the process is in at that moment (cgroup_namespaces(7)).
        container_cgroup(container).join()
        namespace.unshare([kind for kind in ("mnt", "uts", "ipc", "net", "cgroup")
                           if kind in namespace.available()])
        namespace.set_hostname(config["Config"]["Hostname"])
        bring_loopback_up()
        merged, workdir, terminal = rootfs.build(
            container.directory, config["LayerDirectories"], config["Driver"],
            read_only=config["HostConfig"]["ReadonlyRootfs"], volumes=config["Mounts"],
            workdir=config["Config"]["WorkingDir"],
            tty_size=(terminal_size or (24, 80)) if terminal_socket else None)
        uid, gid, groups, home = resolve_user(merged, config["Config"]["User"])
        environment = dict(entry.partition("=")[::2] for entry in config["Config"]["Env"])
        environment.setdefault("HOSTNAME", config["Config"]["Hostname"])
        environment.setdefault("HOME", home)
        if config["Config"]["Tty"]:
            environment.setdefault("TERM", "xterm")
        rootfs.find_command(merged, config["Path"], environment.get("PATH", DEFAULT_PATH))
        if terminal:
            master, slave = terminal
            socket.send_fds(terminal_socket, [b"t"], [master])
            os.close(master)
            os.login_tty(slave)
        else:
            stdin = streams["stdin"][0] if streams["stdin"] else os.open("/dev/null", os.O_RDONLY)
            os.dup2(stdin, 0)
            os.dup2(streams["stdout"][1], 1)
            os.dup2(streams["stderr"][1], 2)
        inside_workdir = rootfs.inside_path(merged, workdir)
        rootfs.switch_root(merged)
        rootfs.exec_command([config["Path"], *config["Args"]], environment,
                            workdir=inside_workdir, uid=uid, gid=gid, groups=groups)
    except host.EngineError as error:
        os.write(error_pipe, f"{error.exit_code}\t{error}".encode())
        os._exit(error.exit_code)
    except BaseException as error:  # an engine bug: say what it was
        os.write(error_pipe, f"125\t{type(error).__name__}: {error}".encode())
        os._exit(125)


def bring_loopback_up():
    """Set ``lo`` up in the new network namespace, as ``ip link set lo up``.

    netdevice(7): SIOCGIFFLAGS and SIOCSIFFLAGS "get or set the active flag
    word of the device"; IFF_UP is bit 0.  Doing it with an ioctl saves
    starting a tool.
    """
    import fcntl

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        host.call(5, "ip link set lo up", fcntl.ioctl, probe, SIOCSIFFLAGS,
                  struct.pack("16sH14x", b"lo", flags | IFF_UP))


def resolve_user(root, user):
    """Turn ``name|uid[:group|gid]`` into numbers using the image's files.

    Returns ``(uid, gid, supplementary groups, home)``.  Names are looked up
    in the container's ``/etc/passwd`` and ``/etc/group``, never the host's.
    """
    passwd = read_colon_file(root, "/etc/passwd")
    group_file = read_colon_file(root, "/etc/group")
    name, _, group = (user or "0").partition(":")
    entry = next((fields for fields in passwd
                  if len(fields) >= 6 and (fields[0] == name or fields[2] == name)), None)
    if entry:
        uid, gid, home, user_name = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    elif name.isdigit():
        uid, gid, home, user_name = int(name), 0 if not group else None, "/", None
    else:
        raise host.EngineError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        match = next((fields for fields in group_file
                      if len(fields) >= 3 and (fields[0] == group or fields[2] == group)), None)
        if match:
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise host.EngineError(f"unable to find group {group}: no matching entries in group file")
    groups = sorted({int(fields[2]) for fields in group_file
                     if len(fields) >= 4 and user_name and user_name in fields[3].split(",")
                     and fields[2].isdigit()} - {gid})
    if uid > 2**32 - 2 or gid > 2**32 - 2:
        raise host.EngineError(f"invalid user: {user}")
    return uid, gid, groups, home


def read_colon_file(root, path):
    try:
        with open(rootfs.resolve(root, path), errors="replace") as handle:
            return [line.rstrip("\n").split(":") for line in handle if not line.startswith("#")]
    except (OSError, host.EngineError):
        return []


def start_detached(container):
    """Start the container under a monitor of its own; return once it runs.

    The monitor is a child that leaves the command's session (setsid), so
    closing the user's terminal does not end it, and points its own
    streams at /dev/null.  It tells the command line through a pipe when
    PID 1 is running, or why it failed.
    """
    ready_read, ready_write = os.pipe()
    monitor = os.fork()
    if monitor == 0:
        os.close(ready_read)
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for descriptor in (0, 1, 2):
            os.dup2(null, descriptor)
        _write_comm("md-monitor")
        code = 125
        try:
            code = start(container, attach=False,
                         on_running=lambda: _report(ready_write, "ok"))
        except host.EngineError as error:
            _report(ready_write, f"{error.exit_code}\t{error}")
        finally:
            os._exit(code & 0xFF)
    os.close(ready_write)
    answer = _read_all(ready_read).decode(errors="replace")
    if answer.startswith("ok"):
        return
    os.waitpid(monitor, 0)
    code, _, message = answer.partition("\t")
    if not message:
        raise host.EngineError("the container's monitor ended before the container started")
    raise host.EngineError(message, exit_code=int(code))


def _report(descriptor, text):
    try:
        os.write(descriptor, text.encode())
        os.close(descriptor)
    except OSError:
        pass


def _write_comm(name):
    try:
        with open("/proc/self/comm", "w") as handle:
            handle.write(name)
    except OSError:
        pass


# -- stopping and removing ---------------------------------------------------

def kill(container, signal_number=signal.SIGKILL):
    """Send a signal to the container's PID 1."""
    if not container.is_running():
        raise host.EngineError(f"Cannot kill container: {container.id}: "
                               f"container {container.id} is not running", exit_code=1)
    host.call(1, f"kill({container.state['Pid']}, {signal.Signals(signal_number).name})",
              os.kill, container.state["Pid"], signal_number)


def wait_for_monitor(container, timeout=10.0):
    """Wait until the monitor has recorded the end and released everything."""
    if container.state.get("MonitorPid") == os.getpid():
        return  # the caller is the monitor (a build step): it has finished already
    deadline = time.monotonic() + timeout
    while container.monitor_alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def remove(container, force=False):
    """Remove a container; with ``force`` kill it first (``rm -f``)."""
    if container.is_running():
        if not force:
            raise host.EngineError(
                f"cannot remove container \"/{container.name}\": container is running: "
                "stop the container before removing or force remove")
        os.kill(container.state["Pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while container.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)
    wait_for_monitor(container)
    # A monitor killed with SIGKILL never destroyed the group; do it now.
    container_cgroup(container).destroy()
    if os.path.isdir(container.directory):
        remove_files(container)


def release_abandoned(container):
    """Destroy the group of a container whose monitor and PID 1 are both gone.

    ``ps`` calls this, so the host is cleaned after a monitor was killed
    with SIGKILL even before anyone removes the container.
    """
    if container.state.get("Status") == "running" and not container.is_running() \
            and not container.monitor_alive():
        container_cgroup(container).destroy()


def remove_files(container):
    """Release what the container held and delete its directory."""
    host.narrate(0, f"remove container {container.id[:12]}")
    rootfs.remove(container.directory)

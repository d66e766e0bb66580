"""The container: a record on disk, and a lifecycle that composes the chapters.

Each container has a directory under ``ENGINE_ROOT/containers/ID``::

    config.json     what was asked for (Docker's inspect keys: Config, HostConfig, Mounts)
    state.json      what is happening (State: Status, Pid, ExitCode, ...), replaced atomically
    ID-json.log     its output (chapter 6)
    upper/ work/ merged/   its filesystem (chapter 3, over the engine's init layer)
    hostname hosts resolv.conf   bound over the image's /etc files

Starting one follows DESIGN.md's process model::

    monitor (the CLI itself, or a daemon for ``run -d``)
    └─ PID 1: new namespaces (ch1), its cgroup (ch2), its root (ch3),
              then the user's command

A recorded PID is never trusted alone: it counts as running only if a
process with that PID exists *and* started at the recorded time, since PIDs
are reused.
"""

import os
import _signal  # not signal, nor json, re or contextlib: see host.py
import _socket
import struct
import sys
import time

from minidocker import cgroup, host, logs, namespace, network, rootfs

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Patterns for the flags that need one, used (and ``re`` imported) only when
# the flag is given.  Matched whole: Python's "$" also matches before a
# trailing newline, which Go's (Docker's) does not, and "h\n" is no
# hostname.  Names are checked by host.valid_name.
HOSTNAME_PATTERN = (r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                    r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*")
USER_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?"


def _matches(pattern, text):
    """Say whether all of ``text`` matches the regular expression ``pattern``."""
    import re

    return re.fullmatch(pattern, text) is not None


def containers_directory():
    return os.path.join(host.engine_root(), "containers")


# -- the record ------------------------------------------------------------

class Container:
    """A container's record: its configuration and its state on disk."""

    def __init__(self, directory):
        self.directory = directory
        self.config = host.read_json(os.path.join(directory, "config.json"))
        try:
            self.state = host.read_json(os.path.join(directory, "state.json"))
        except (FileNotFoundError, ValueError):
            # Written without fsync (see save_state): after a power cut it
            # may be empty.  Nothing of the container runs after one.
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
                              host.dump_json(self.state), durable=False)

    def save_config(self):
        host.write_atomically(os.path.join(self.directory, "config.json"),
                              host.dump_json(self.config))

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
        if recorded == "restarting" and not self.monitor_alive():
            return "exited"  # the monitor that was to restart it is gone
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
        except (FileNotFoundError, NotADirectoryError, ValueError):
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

def create(store, image_name, options, source=None):
    """Create a container from an image and the ``run`` options; return it.

    Everything the user gave is checked before anything is written, and
    the directory is built under a temporary name and renamed into place,
    so a bad flag or a killed command leaves nothing half-made.  ``source``
    is the image, when the caller has looked it up (or pulled it) already.
    """
    source = source or store.lookup(image_name)
    image_config = source.run_config
    argv = command_line(image_config, options)
    environment = environment_list(image_config, options)
    workdir = options.get("workdir") or image_config.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise host.EngineError(
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    user = options.get("user") if options.get("user") is not None else image_config.get("User", "")
    if user and not _matches(USER_PATTERN, user):
        raise host.EngineError(f"invalid user: {user!r}")
    mounts = [parse_volume(spec) for spec in options.get("volumes", [])]
    hostname = options.get("hostname")
    if hostname is not None and (len(hostname) > 253
                                 or not _matches(HOSTNAME_PATTERN, hostname)):
        raise host.EngineError(f"invalid hostname format: {hostname}")
    networking = network.configuration(options, image_config)
    limits = resource_limits(options)
    limits.check()
    lifecycle = lifecycle_settings(options, mounts)
    security = security_settings(options)
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
                "ExposedPorts": networking["ExposedPorts"],
            },
            "HostConfig": {
                "Binds": list(options.get("volumes", [])),
                "AutoRemove": bool(options.get("auto_remove")),
                "ReadonlyRootfs": bool(options.get("read_only")),
                **networking["HostConfig"],
                **limits.host_config(),
                **lifecycle,
                **security,
            },
            "Mounts": mounts,
            "NetworkingConfig": networking["NetworkingConfig"],
        }
        materialize_volumes(mounts, image_config, layers)
        rootfs.create(draft, layers, driver)
        rootfs.set_hostname_files(draft, config["Config"]["Hostname"])
        with names_locked():
            name = options.get("name") or unused_name()
            check_name_is_free(name)
            name = name.lstrip("/")  # Docker's "/web" is "web"
            config["Name"] = "/" + name
            host.write_atomically(os.path.join(draft, "config.json"), host.dump_json(config))
            # The state skips the fsync, as every later state write does
            # (save_state); the configuration is what must survive a crash.
            host.write_atomically(os.path.join(draft, "state.json"), host.dump_json(new_state()),
                                  durable=False)
            os.rename(draft, os.path.join(directory, identifier))
            claim_name(name, identifier)
    except BaseException:
        rootfs.remove_path(draft)
        remove_anonymous_volumes(mounts)
        raise
    return Container(os.path.join(directory, identifier))


def security_settings(options):
    """Check ``--cap-add/--cap-drop/--privileged/--security-opt/--tmpfs/--device``.

    Returns the ``HostConfig`` keys Docker uses for them, and prints the
    engine's warnings (such as the capability it cannot drop) once, here.
    """
    _, warnings = rootfs.capability_set(options.get("cap_add") or [],
                                        options.get("cap_drop") or [],
                                        bool(options.get("privileged")))
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    no_new_privileges = False
    for option in options.get("security_opts") or []:
        key, _, value = option.replace("=", ":", 1).partition(":")
        if key == "no-new-privileges" and value in ("", "true", "false"):
            no_new_privileges = value != "false"
        elif option in ("seccomp=unconfined", "apparmor=unconfined", "label=disable",
                        "label:disable"):
            continue  # asks for less confinement than Docker's default: minidocker has none of it
        else:
            raise host.EngineError(f'invalid --security-opt: "{option}": minidocker knows '
                                   "no-new-privileges[:true|false] only")
    tmpfs = dict(rootfs.parse_tmpfs(spec) for spec in options.get("tmpfs") or [])
    return {"CapAdd": list(options.get("cap_add") or []) or None,
            "CapDrop": list(options.get("cap_drop") or []) or None,
            "Privileged": bool(options.get("privileged")),
            "SecurityOpt": (["no-new-privileges"] if no_new_privileges else None),
            "Tmpfs": tmpfs,
            "Devices": [rootfs.parse_device(spec) for spec in options.get("devices") or []]}


def capabilities_of(container):
    """The container's capability set, from its ``HostConfig``."""
    host_config = container.config["HostConfig"]
    chosen, _ = rootfs.capability_set(host_config.get("CapAdd") or [],
                                      host_config.get("CapDrop") or [],
                                      host_config.get("Privileged", False))
    return chosen


def no_new_privileges(container):
    return "no-new-privileges" in (container.config["HostConfig"].get("SecurityOpt") or [])


def lifecycle_settings(options, mounts):
    """Check the chapter 6 options (--restart, --log-opt, volumes); return HostConfig keys."""
    restart_policy = parse_restart_policy(options.get("restart"))
    if restart_policy["Name"] != "no" and options.get("auto_remove"):
        raise host.EngineError("Conflicting options: --restart and --rm")
    log_config = {}
    for option in options.get("log_opts") or []:
        key, has_value, value = option.partition("=")
        if not has_value:
            raise host.EngineError(f"invalid log opt '{option}': use KEY=VALUE")
        log_config[key] = value
    logs.log_options(log_config)
    destinations = [mount["Destination"] for mount in mounts]
    for destination in destinations:
        if destinations.count(destination) > 1:
            raise host.EngineError(f"Duplicate mount point: {destination}")
    return {"RestartPolicy": restart_policy,
            "LogConfig": {"Type": "json-file", "Config": log_config}}


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
        import shlex

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
    """Parse ``-v [SOURCE:]DESTINATION[:ro|rw]`` into a Docker ``Mounts`` entry.

    A SOURCE that is an absolute path is a bind mount of a host directory;
    any other SOURCE names a volume (created on first use); no SOURCE at
    all asks for an anonymous volume.  The volumes themselves are made by
    :func:`materialize_volumes`.
    """
    parts = spec.split(":")
    if len(parts) == 1 and spec.startswith("/"):
        parts = ["", spec]
    elif len(parts) not in (2, 3) or not all(parts[:2]):
        raise host.EngineError(f"invalid volume specification: '{spec}'")
    source, destination = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    flags = set(mode.split(","))
    if not flags <= {"ro", "rw", "z", "Z"} or {"ro", "rw"} <= flags:
        raise host.EngineError(f"invalid mode: {mode}")
    if not destination.startswith("/") or os.path.normpath(destination) == "/":
        raise host.EngineError(f"invalid volume specification: '{spec}': "
                               "the destination must be an absolute path other than /")
    if "\0" in spec:
        raise host.EngineError("invalid volume specification: a path contains a NUL byte")
    read_only = "ro" in flags
    if not source.startswith("/"):
        if source and not host.valid_name(source):
            raise host.EngineError(
                f'create {source}: "{source}" includes invalid characters for a local volume '
                'name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a '
                "host directory, use absolute path")
        return {"Type": "volume", "Name": source, "Source": "",
                "Destination": os.path.normpath(destination), "Driver": "local",
                "Mode": mode if len(parts) == 3 else "z", "RW": not read_only,
                "ReadOnly": read_only, "Propagation": ""}
    return {"Type": "bind", "Source": os.path.normpath(source),
            "Destination": os.path.normpath(destination),
            "Mode": mode if len(parts) == 3 else "", "RW": not read_only, "ReadOnly": read_only,
            "Propagation": "rprivate"}


# -- names: one small file each, so a new name is checked without reading every record

class names_locked(host.locked):
    """Hold the engine's names lock; the names directory is read and written under it.

    The first time (an engine root made before names had files), every
    existing container's name is written down.
    """

    def __init__(self):
        super().__init__(os.path.join(host.engine_root(), "names.lock"))

    def __enter__(self):
        super().__enter__()
        try:
            if not os.path.isdir(_names_directory()):
                os.makedirs(_names_directory() + ".new", exist_ok=True)
                for container in all_containers():
                    _write_name_file(_names_directory() + ".new", container.name, container.id)
                os.rename(_names_directory() + ".new", _names_directory())
        except BaseException:
            self.__exit__()
            raise
        return self


def _names_directory():
    return os.path.join(host.engine_root(), "names")


def _name_file(name, directory=None):
    """The file that records ``name``: the name itself, in the names directory.

    A valid name (:func:`~minidocker.host.valid_name`, without Docker's
    leading "/") is one harmless file name; anything else, "/etc/x" or
    "../x", would be a path out of the directory, and is refused.
    """
    if not host.valid_name(name):
        raise host.EngineError(f"Invalid container name ({name}), only "
                               "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return os.path.join(directory or _names_directory(), name)


def _write_name_file(directory, name, identifier):
    with open(_name_file(name, directory), "w") as handle:
        handle.write(identifier)


def name_owner(name):
    """Return the id of the container called ``name``, or None.

    A name file is only a hint: a command killed half way may leave one
    behind, so it counts only if its container exists and still has that
    name.
    """
    try:
        with open(_name_file(name)) as handle:
            identifier = handle.read()
    except FileNotFoundError:
        return None
    try:
        config = host.read_json(os.path.join(containers_directory(), identifier, "config.json"))
        current = config["Name"].lstrip("/")
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return identifier if current == name else None


def claim_name(name, identifier):
    """Write down that ``name`` is the container ``identifier``'s (under the names lock)."""
    _write_name_file(_names_directory(), name, identifier)


def release_name(name, identifier):
    """Forget ``name`` if it is still the container ``identifier``'s."""
    with names_locked():
        path = _name_file(name)
        try:
            with open(path) as handle:
                if handle.read() == identifier:
                    os.unlink(path)
        except FileNotFoundError:
            pass


def check_name_is_free(name):
    if not host.valid_name(name.removeprefix("/")):
        raise host.EngineError(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    owner = name_owner(name.lstrip("/"))
    if owner:
        raise host.EngineError(
            f'Conflict. The container name "/{name.lstrip("/")}" is already in use by container '
            f'"{owner}". You have to remove (or rename) that container to be able '
            "to reuse that name.")


ADJECTIVES = ("brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid",
              "merry", "nifty", "proud", "quirky", "sharp", "tender", "vivid", "wise")
SCIENTISTS = ("curie", "dijkstra", "euler", "hopper", "kepler", "lovelace", "noether",
              "pascal", "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak")


def unused_name():
    """A random ``adjective_scientist`` name, as Docker gives."""
    while True:
        number = int.from_bytes(os.urandom(2))
        name = f"{ADJECTIVES[number % len(ADJECTIVES)]}_{SCIENTISTS[(number >> 4) % len(SCIENTISTS)]}"
        if name_owner(name):
            name += str(number % 100)
        if not name_owner(name):
            return name


def remove_abandoned_drafts(directory):
    """Remove drafts and removals left by a ``create`` or ``rm`` that was killed half way."""
    for name in os.listdir(directory):
        if name.startswith((".draft-", ".removing-")):
            pid = int(name.split("-")[1])
            if process_start_ticks(pid) is None:
                rootfs.remove_path(os.path.join(directory, name))


# -- starting: the monitor and PID 1 -----------------------------------------

def start(container, attach=True, terminal_size=None, on_running=None, client_coming=False):
    """Start PID 1 and monitor it until it exits; return its exit code.

    The caller is the monitor: it keeps the container's output streams,
    writes the log, waits for PID 1 and cleans up after it.  With
    ``attach`` the output is also copied to the caller's own streams.
    ``on_running`` is called once the user's command has started.  With
    ``client_coming`` the output waits for the first ``attach`` client
    (``run -it``: the command line attaches as soon as it hears "running").
    """
    group = container_cgroup(container)
    try:
        return _start_and_monitor(container, group, attach, terminal_size, on_running,
                                  client_coming)
    finally:
        group.destroy()


def _make_group(container, group):
    """Make the container's cgroup with its limits (chapter 2).

    The monitor does this while PID 1 builds its root; PID 1 joins the
    group after "go", before it runs anything of the user's, so nothing
    the user runs is ever outside it.  A group of the same name can only
    be a leftover of a monitor that was killed.
    """
    group.destroy()
    for warning in group.create(cgroup.Limits.from_host_config(container.config["HostConfig"])):
        print(f"WARNING: {warning}", file=sys.stderr)


def _start_and_monitor(container, group, attach, terminal_size, on_running, client_coming):
    config = container.config
    tty = config["Config"]["Tty"]
    interactive = config["Config"]["OpenStdin"]
    error_read, error_write = os.pipe()
    if tty:
        parent_socket, child_socket = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        streams = None
    else:
        streams = {"stdout": os.pipe(), "stderr": os.pipe()}
        streams["stdin"] = os.pipe() if interactive else None
    handshake, child_handshake = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    rootfs.sealed_tools()  # held by the monitor: PID 1's last exec reaches them through it
    pid = namespace.fork_into_pid_namespace()
    if pid == 0:
        os.close(error_read)
        handshake.close()
        _container_process(container, error_write, streams,
                           child_socket if tty else None, terminal_size, child_handshake)
    os.close(error_write)
    child_handshake.close()
    container.save_state(MonitorPid=os.getpid(), MonitorStartTicks=process_start_ticks(os.getpid()),
                         Pid=pid, PidStartTicks=process_start_ticks(pid))
    try:
        # PID 1 unshares and builds its root meanwhile, on the other CPU.
        _make_group(container, group)
        unrecorded_settings = _plug_network(container, pid, handshake)
    except BaseException as error:
        # PID 1 ends by itself, never told to go; if it failed first (its
        # root, its command), its own reason is the one to report.
        handshake.close()
        failure = _read_all(error_read)
        os.waitpid(pid, 0)
        if failure:
            _report_failure(container, failure)
        message = str(error) if isinstance(error, host.EngineError) else repr(error)
        finish(container, exit_code=getattr(error, "exit_code", 125), error=message)
        raise
    if tty:
        child_socket.close()
    else:
        for name, pipe in streams.items():
            if pipe:
                os.close(pipe[1] if name != "stdin" else pipe[0])
    failure = _read_all(error_read)
    if failure:
        os.waitpid(pid, 0)
        _report_failure(container, failure)
    running = dict(Status="running", Running=True, Restarting=False,
                   StartedAt=logs.timestamp(), ExitCode=0, Error="")
    if unrecorded_settings is not None:
        running["NetworkSettings"] = unrecorded_settings
    container.save_state(**running)
    logs.narrate_monitor(container.id, pid)
    relay = _make_relay(container, parent_socket if tty else None, streams, attach, client_coming)
    if on_running:
        on_running()
    exit_code = None
    try:
        with _forwarded_signals(pid, relay if tty and attach else None):
            relay.run()
        relay.close()
        for descriptor in relay.output_descriptors:
            os.close(descriptor)
        relay.log.close()
        _, status = os.waitpid(pid, 0)
        oom_killed = group.oom_killed()
        group.destroy()
        exit_code = finish(container, exit_code=_exit_code(status), oom_killed=oom_killed)
        return exit_code
    finally:
        # Last, once a --rm container is gone too: an attached ``run -it``
        # returns this code, and Docker's run returns after the removal.
        relay.report_exit(exit_code)


def _make_relay(container, terminal_socket, streams, attach, client_coming=False):
    """Set up the monitor's side: the log, the streams, the attach socket.

    A foreground ``run`` is attached: output is also copied to the
    caller's own descriptors, and its input (with -i) to the container.
    """
    config = container.config
    log_config = config["HostConfig"].get("LogConfig") or {}
    log = logs.JsonFileWriter(container.log_path, *logs.log_options(log_config.get("Config") or {}))
    if terminal_socket is not None:
        master = _receive_descriptor(terminal_socket)
        terminal_socket.close()
        relay = logs.Relay(log, {master: "stdout"}, container_input=master, terminal=master,
                           hold_for_client=client_coming)
    else:
        stdin_write = streams["stdin"][1] if streams["stdin"] else None
        relay = logs.Relay(log, {streams["stdout"][0]: "stdout", streams["stderr"][0]: "stderr"},
                           container_input=stdin_write, hold_for_client=client_coming)
    relay.output_descriptors = list(relay.outputs)
    if attach:
        relay.attach_locally(1, 2, stdin=0 if config["Config"]["OpenStdin"] else None,
                             close_input_at_end=terminal_socket is None)
    with short_path(container.directory) as directory:
        relay.listen(os.path.join(container.directory, ATTACH_SOCKET),
                     bind_path=os.path.join(directory, ATTACH_SOCKET))
    return relay


#: The monitor's Unix socket that ``attach`` connects to.
ATTACH_SOCKET = "attach.sock"


class short_path:
    """Name ``directory`` by a short path, ``/proc/self/fd/N``, in a ``with`` block.

    unix(7): a socket's path may hold at most 108 bytes ("sun_path"), and
    a container directory under a long engine root is longer than that.
    The magic link of an open descriptor leads to the same directory.
    """

    def __init__(self, directory):
        self.directory = directory

    def __enter__(self):
        self.descriptor = os.open(self.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.descriptor}"

    def __exit__(self, *exception):
        os.close(self.descriptor)


#: Signals a monitor passes on to PID 1 (Docker's --sig-proxy), so that
#: ctrl-c on a foreground run, or SIGTERM to a monitor, reach the command.
FORWARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
                     _signal.SIGUSR1, _signal.SIGUSR2)


class _forwarded_signals:
    """Pass signals the monitor receives on to PID 1 while it runs (a ``with`` block).

    With a terminal attached, a resized window (SIGWINCH) resizes the
    container's terminal too.
    """

    def __init__(self, pid, resizable_relay=None):
        self.pid, self.resizable_relay = pid, resizable_relay

    def forward(self, number, frame):
        try:
            os.kill(self.pid, number)
        except ProcessLookupError:
            pass

    def resize(self, number, frame):
        size = os.get_terminal_size(0)
        self.resizable_relay.resize(size.lines, size.columns)

    def __enter__(self):
        self.previous = {number: _signal.signal(number, self.forward)
                         for number in FORWARDED_SIGNALS}
        if self.resizable_relay is not None and os.isatty(0):
            self.previous[_signal.SIGWINCH] = _signal.signal(_signal.SIGWINCH, self.resize)

    def __exit__(self, *exception):
        for number, handler in self.previous.items():
            _signal.signal(number, handler)


def _plug_network(container, pid, handshake):
    """Connect PID 1 to its network, then tell it to go (chapter 5).

    PID 1 says "ready" once it is in its own network namespace, and goes
    on to build its root while the monitor, out here in the host's
    namespaces, makes the veth pair, the address and the published ports.
    PID 1 runs the user's command only after "go".  If PID 1 failed before
    "ready", its error pipe says why.

    What the network took (an address, a cable, ports) is recorded before
    "go", so that whoever finds the container after a crash can give it
    back.  Settings that hold nothing (``none``, ``host``) are returned
    instead, for the caller's next state write: one write fewer per start.
    """
    try:
        if handshake.recv(1) != b"r":
            return None
        settings = network.connect(container.id, pid,
                                   network.request_for(container.config, container.directory))
        unrecorded = settings if _network_holds_nothing(container) else None
        if unrecorded is None:
            container.save_state(NetworkSettings=settings)
        try:
            handshake.sendall(b"g")
        except (BrokenPipeError, ConnectionResetError):
            pass  # PID 1 failed while building its root: its error pipe says why
        return unrecorded
    finally:
        handshake.close()


def _network_holds_nothing(container):
    """Say whether the container's network mode takes nothing to give back (none, host)."""
    return container.config["HostConfig"].get("NetworkMode") in ("none", "host")


def _send_descriptor(connection, descriptor):
    """Pass an open descriptor to the process at the other end of a Unix socket.

    unix(7): "SCM_RIGHTS: Send or receive a set of open file descriptors
    from another process"; the receiver gets a new descriptor for the same
    open file.  PID 1 sends the master side of the terminal it opened from
    the container's own devpts, so the monitor can relay it.
    """
    connection.sendmsg([b"t"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                 struct.pack("i", descriptor))])


def _receive_descriptor(connection):
    """Receive the one descriptor :func:`_send_descriptor` passed.

    Python opens its own descriptors close-on-exec (PEP 446), but one that
    arrives in a message is the kernel's to open; recvmsg(2):
    "MSG_CMSG_CLOEXEC: Set the close-on-exec flag for the file descriptor
    received via a UNIX domain file descriptor using the SCM_RIGHTS
    operation".  So no program the monitor runs inherits the terminal.
    """
    size = struct.calcsize("i")
    _, ancillary, _, _ = connection.recvmsg(1, _socket.CMSG_LEN(size), _socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= size:
            return struct.unpack("i", data[:size])[0]
    raise host.EngineError("the container's terminal never arrived from its PID 1")


def _report_failure(container, failure):
    """Record and raise the error PID 1 sent before it could run the command."""
    code, _, message = failure.decode(errors="replace").partition("\t")
    finish(container, exit_code=int(code), error=message)
    raise host.EngineError(message, exit_code=int(code))


def _disconnect_network(container):
    """Give back what :func:`_plug_network` took: cable, address, ports (chapter 5).

    Returns the network settings to record, or None when there is nothing
    to record.
    """
    if _network_holds_nothing(container):
        return None  # none and host take nothing: no cable, address or port
    if not os.path.exists(os.path.join(container.directory, "state.json")):
        return None  # removed already (--rm) by a monitor that disconnected first
    return network.disconnect(container.id, refresh(container).state.get("NetworkSettings"))


def _release_network(container):
    """Disconnect the container and record the settings it has left."""
    settings = _disconnect_network(container)
    if settings is not None:
        container.save_state(NetworkSettings=settings)


def finish(container, exit_code, error="", oom_killed=False):
    """Record how the container ended and release what it held.

    The end and the network settings left go into one state write: each
    write is a new file renamed over the old one.
    """
    ended = dict(Status="exited", Running=False, Pid=0, ExitCode=exit_code, Error=error,
                 FinishedAt=logs.timestamp(), OOMKilled=oom_killed)
    settings = _disconnect_network(container)
    if settings is not None:
        ended["NetworkSettings"] = settings
    container.save_state(**ended)
    if container.config["HostConfig"].get("AutoRemove"):
        remove_files(container)
        remove_anonymous_volumes(container.config.get("Mounts", []))
    return exit_code


def _read_all(descriptor):
    data = b""
    while chunk := os.read(descriptor, 4096):
        data += chunk
    os.close(descriptor)
    return data


def _container_process(container, error_pipe, streams, terminal_socket, terminal_size,
                       handshake):
    """Become the container's PID 1; never returns.

    Any failure before the user's command starts is written to
    ``error_pipe`` as ``CODE<TAB>MESSAGE`` for the monitor to report; the
    pipe closes by itself (close-on-exec) once the command is running.
    """
    try:
        restore_default_signals()
        config = container.config
        host_network = config["HostConfig"].get("NetworkMode") == "host"
        kernel_has = namespace.available()
        namespace.unshare([kind for kind in ("mnt", "uts", "ipc", "net")
                           if kind in kernel_has and not (kind == "net" and host_network)])
        namespace.set_hostname(config["Config"]["Hostname"])
        if not host_network:
            bring_loopback_up()
        # The monitor now plugs the network in (chapter 5) while this
        # process builds its root.
        handshake.sendall(b"r")
        merged, workdir, terminal = rootfs.build(
            container.directory, config["LayerDirectories"], config["Driver"],
            read_only=config["HostConfig"]["ReadonlyRootfs"], volumes=config["Mounts"],
            workdir=config["Config"]["WorkingDir"],
            tty_size=(terminal_size or (24, 80)) if terminal_socket else None,
            tmpfs=config["HostConfig"].get("Tmpfs"), devices=config["HostConfig"].get("Devices", []),
            privileged=config["HostConfig"].get("Privileged", False))
        uid, gid, groups, home = resolve_user(merged, config["Config"]["User"])
        environment = dict(entry.partition("=")[::2] for entry in config["Config"]["Env"])
        environment.setdefault("HOSTNAME", config["Config"]["Hostname"])
        environment.setdefault("HOME", home)
        if config["Config"]["Tty"]:
            environment.setdefault("TERM", "xterm")
        rootfs.find_command(merged, config["Path"], environment.get("PATH", DEFAULT_PATH))
        if handshake.recv(1) != b"g":
            os._exit(125)  # the monitor failed, and reports why itself
        handshake.close()
        # The monitor has made the group meanwhile.  Join it before
        # unsharing the cgroup namespace, whose root is the group the
        # process is in at that moment (cgroup_namespaces(7)).
        container_cgroup(container).join()
        if "cgroup" in kernel_has:
            namespace.unshare(["cgroup"])
        settings = {} if _network_holds_nothing(container) else \
            refresh(container).state.get("NetworkSettings") or {}
        if settings.get("IPAddress"):
            # network: the cable is in; its inner end gets its address here (chapter 5)
            network.configure_eth0(settings["IPAddress"], settings["IPPrefixLen"],
                                   settings["Gateway"])
        if terminal:
            master, slave = terminal
            _send_descriptor(terminal_socket, master)
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
                            workdir=inside_workdir, uid=uid, gid=gid, groups=groups,
                            capabilities=capabilities_of(container),
                            no_new_privileges=no_new_privileges(container))
    except BaseException as error:
        _fail_before_exec(error_pipe, error, bug_code=125)


def _fail_before_exec(error_pipe, error, bug_code):
    """Tell the waiting parent why the command never started, and end the child.

    The message goes through ``error_pipe`` as ``CODE<TAB>MESSAGE``.  An
    :class:`~minidocker.host.EngineError` carries its own code; anything
    else is an engine bug, reported by its type with ``bug_code``.
    """
    if isinstance(error, host.EngineError):
        code, message = error.exit_code, str(error)
    else:
        code, message = bug_code, f"{type(error).__name__}: {error}"
    os.write(error_pipe, f"{code}\t{message}".encode())
    os._exit(code)


def restore_default_signals():
    """Give the command the signal dispositions a freshly started program expects.

    Python ignores SIGPIPE (and SIGXFSZ) in itself, and signal(7) says "A
    child created via fork(2) inherits a copy of its parent's signal
    dispositions.  During an execve(2), the dispositions of handled signals
    are reset to the default; the dispositions of ignored signals are left
    unchanged."  Left ignored, ``yes | head`` in a container would never end.
    """
    for number in (_signal.SIGPIPE, _signal.SIGXFSZ, *FORWARDED_SIGNALS):
        _signal.signal(number, _signal.SIG_DFL)


def bring_loopback_up():
    """Set ``lo`` up in the new network namespace, as ``ip link set lo up``.

    An ioctl (chapter 5's :func:`~minidocker.network.set_link_up`) saves
    starting a tool.
    """
    with network.probe_socket() as probe:
        network.set_link_up(probe, "lo")


def resolve_user(root, user):
    """Turn ``name|uid[:group|gid]`` into numbers using the image's files.

    Returns ``(uid, gid, supplementary groups, home)``.  Names are looked up
    in the container's ``/etc/passwd`` and ``/etc/group``, never the host's.
    """
    passwd = rootfs.read_colon_file(root, "/etc/passwd")
    group_file = rootfs.read_colon_file(root, "/etc/group")
    name, _, group = (user or "0").partition(":")
    entry = next((fields for fields in passwd
                  if len(fields) >= 6 and (fields[0] == name or fields[2] == name)), None)
    if entry:
        uid, gid = rootfs.id_number(entry[2]), rootfs.id_number(entry[3])
        home, user_name = entry[5] or "/", entry[0]
    elif host.is_decimal(name):
        uid, gid, home, user_name = int(name), 0 if not group else None, "/", None
    else:
        raise host.EngineError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        match = next((fields for fields in group_file
                      if len(fields) >= 3 and (fields[0] == group or fields[2] == group)), None)
        if match:
            gid = rootfs.id_number(match[2])
        elif host.is_decimal(group):
            gid = int(group)
        else:
            raise host.EngineError(f"unable to find group {group}: no matching entries in group file")
    # A group line the kernel could not take (a GID that is not a number,
    # or above 2**32 - 2) gives no supplementary group.
    groups = sorted({int(fields[2]) for fields in group_file
                     if len(fields) >= 4 and user_name and user_name in fields[3].split(",")
                     and host.is_decimal(fields[2]) and int(fields[2]) <= rootfs.MAX_ID} - {gid})
    if uid > rootfs.MAX_ID or gid > rootfs.MAX_ID:
        raise host.EngineError(f"invalid user: {user}")
    return uid, gid, groups, home


def start_detached(container, terminal_size=None, client_coming=False):
    """Start the container under a monitor of its own; return once it runs.

    The monitor is a background child (:func:`_run_in_background`): it
    outlives the command line, and tells it when PID 1 is running, or why
    it failed.  With ``client_coming`` the command line attaches next
    (``run -it``, see :func:`start`).
    """
    def monitor(report_running):
        def running():
            report_running()
            if not client_coming:
                # Docker's run -d returns as the container starts; the
                # trace of the rest would reach a terminal that has moved on.
                host.end_trace()

        code = start(container, attach=False, terminal_size=terminal_size,
                     on_running=running, client_coming=client_coming)
        host.end_trace()  # its reader, the command line of run -it, has ended too
        return restart_while_the_policy_says(container, code)

    _run_in_background("md-monitor", monitor,
                       "the container's monitor ended before the container started")


def _run_in_background(name, work, ended_early):
    """Run ``work(running)`` in a child that outlives the command line.

    The child leaves the command's session (setsid), so closing the user's
    terminal does not end it, points its own streams at /dev/null, lets go
    of the descriptors the command line inherited, and calls itself
    ``name`` in ``ps``.  ``work`` calls ``running()`` once what it started
    runs; the command line returns then.  If ``work`` fails first, its
    :class:`~minidocker.host.EngineError` is raised here, in the command
    line; ``ended_early`` says what happened if the child ended without a
    word.  The child's exit status is what ``work`` returns.
    """
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_read)
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for descriptor in (0, 1, 2):
            os.dup2(null, descriptor)
        os.close(null)
        _close_inherited_descriptors()
        _write_comm(name)
        code = 125
        try:
            code = work(lambda: _report(ready_write, "ok"))
        except host.EngineError as error:
            _report(ready_write, f"{error.exit_code}\t{error}")
        finally:
            os._exit(code & 0xFF)
    os.close(ready_write)
    answer = _read_all(ready_read).decode(errors="replace")
    if answer.startswith("ok"):
        return
    os.waitpid(child, 0)
    code, _, message = answer.partition("\t")
    if not message:
        raise host.EngineError(ended_early)
    raise host.EngineError(message, exit_code=int(code))


def _close_inherited_descriptors():
    """Close the descriptors the command line inherited from its caller.

    The monitor outlives the command line, so a descriptor its caller
    passed down (a CI runner's pipe, make's jobserver) would stay open as
    long as the container runs, and whoever waits for the end of that pipe
    would wait as long.  Python opens its own descriptors close-on-exec
    (PEP 446), so those still inheritable above 2 came from outside.
    """
    for name in os.listdir("/proc/self/fd"):
        descriptor = int(name)
        try:
            if descriptor > 2 and os.get_inheritable(descriptor):
                os.close(descriptor)
        except OSError:
            pass  # the descriptor listdir itself used, closed already


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

def kill(container, signal_number=_signal.SIGKILL):
    """Send a signal to the container's PID 1."""
    if not container.is_running():
        raise host.EngineError(f"Cannot kill container: {container.id}: "
                               f"container {container.id} is not running", exit_code=1)
    import signal

    host.call(1, f"kill({container.state['Pid']}, {signal.Signals(signal_number).name})",
              os.kill, container.state["Pid"], signal_number)


def wait_for_monitor(container, timeout=10.0):
    """Wait until the monitor has recorded the end and released everything."""
    if container.state.get("MonitorPid") == os.getpid():
        return  # the caller is the monitor (a build step): it has finished already
    deadline = time.monotonic() + timeout
    while container.monitor_alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def remove(container, force=False, volumes=False):
    """Remove a container; with ``force`` kill it first (``rm -f``).

    With ``volumes`` (``rm -v``) its anonymous volumes go too; named
    volumes outlive their containers.
    """
    if container.is_running() or container.status() == "restarting":
        if not force:
            raise host.EngineError(
                f"cannot remove container \"/{container.name}\": container is running: "
                "stop the container before removing or force remove")
        request_stop(container)
    if container.is_running():
        if not force:
            raise host.EngineError(
                f"cannot remove container \"/{container.name}\": container is running: "
                "stop the container before removing or force remove")
        os.kill(container.state["Pid"], _signal.SIGKILL)
        deadline = time.monotonic() + 10
        while container.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)
    wait_for_monitor(container)
    # A monitor killed with SIGKILL never destroyed the group; do it now.
    container_cgroup(container).destroy()
    _release_network(container)
    if os.path.isdir(container.directory):
        remove_files(container)
    if volumes:
        remove_anonymous_volumes(container.config.get("Mounts", []))


def release_abandoned(container):
    """Destroy the group of a container whose monitor and PID 1 are both gone.

    ``ps`` calls this, so the host is cleaned after a monitor was killed
    with SIGKILL even before anyone removes the container.
    """
    if container.state.get("Status") == "running" and not container.is_running() \
            and not container.monitor_alive():
        container_cgroup(container).destroy()
        _release_network(container)


def remove_files(container):
    """Release what the container held and delete its directory.

    The directory is first renamed out of the way (rename(2) is atomic), so
    a command killed half way through the deletion leaves no half-deleted
    record that ``ps`` would misread, only a ``.removing-`` directory that
    the next ``create`` clears.
    """
    host.narrate(0, f"remove container {container.id[:12]}")
    doomed = os.path.join(os.path.dirname(container.directory),
                          f".removing-{os.getpid()}-{container.id}")
    rootfs.check_unmounted(container.directory)
    try:
        os.rename(container.directory, doomed)
    except FileNotFoundError:
        return  # another command removed it meanwhile
    release_name(container.name, container.id)
    rootfs.remove_tree(doomed)  # checked unmounted above, before the rename


# -- the lifecycle: stop, restart, wait, rename, prune (chapter 6) -----------

#: A file whose presence tells the monitor that the user stopped the
#: container, so no restart policy brings it back.  A file of its own, not a
#: key in state.json: the monitor rewrites state.json from its own copy.
STOP_REQUESTED = "stop-requested"


def refresh(container):
    """Read the container's state again: another process may have changed it."""
    try:
        container.state = host.read_json(os.path.join(container.directory, "state.json"))
    except FileNotFoundError:  # removed meanwhile (--rm): it has ended
        container.state = dict(container.state, Status="removed", Running=False)
    return container


def request_stop(container):
    """Tell the monitor that the user wants the container to stay stopped."""
    if os.path.isdir(container.directory):
        open(os.path.join(container.directory, STOP_REQUESTED), "w").close()


def stop_was_requested(container):
    return os.path.exists(os.path.join(container.directory, STOP_REQUESTED))


def stop(container, timeout=10):
    """Stop PID 1: SIGTERM, then SIGKILL after ``timeout`` seconds (``stop -t``).

    A PID 1 that installed no handler for SIGTERM ignores it: the kernel
    does not deliver "signals for which the init process has not
    established a signal handler" (pid_namespaces(7)), which is why so many
    containers take exactly ten seconds to stop.
    """
    request_stop(container)
    if container.is_running() and not _signal_and_wait(container, _signal.SIGTERM, timeout):
        host.narrate(6, f"{container.id[:12]} ignored SIGTERM for {timeout}s: SIGKILL")
        _signal_and_wait(container, _signal.SIGKILL, 30)
    # The monitor records the end (or, restarting, sees the request and gives up).
    wait_for_monitor(container)
    settle_abandoned(container)


def _signal_and_wait(container, signal_number, timeout):
    """Signal PID 1 and wait for it to end; say whether it did."""
    try:
        kill(container, signal_number)
    except host.EngineError:  # "is not running": it ended by itself meanwhile
        return True
    return wait_until_stopped(container, timeout)


def wait_until_stopped(container, timeout):
    """Wait up to ``timeout`` seconds for PID 1 to end; say whether it did."""
    deadline = time.monotonic() + timeout
    while container.is_running():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def restart(container, timeout=10):
    """Stop the container if it runs, then start it again under a new monitor."""
    stop(container, timeout)
    prepare_to_start(refresh(container))
    start_detached(container)


def prepare_to_start(container):
    """Forget an earlier stop request and restart count; the user is starting it again."""
    path = os.path.join(container.directory, STOP_REQUESTED)
    if os.path.exists(path):
        os.unlink(path)
    if container.state.get("RestartCount"):
        container.save_state(RestartCount=0)


def wait(container, poll_interval=0.02):
    """Block until the container has ended; return its exit code (``wait``).

    A running container's monitor says the code itself, on the attach
    socket, even when ``--rm`` removes the container's record before
    anyone could read it.  Otherwise the end counts once the monitor has
    recorded it, or once no monitor is left to record it.
    """
    if container.is_running():
        try:
            with short_path(container.directory) as directory:
                code = logs.wait_for_exit_frame(os.path.join(directory, ATTACH_SOCKET))
        except FileNotFoundError:
            code = None  # ended and removed (--rm) this very moment
        if code is not None:
            return code
    while True:
        if refresh(container).state.get("Status") in ("exited", "created", "removed"):
            break
        if not container.monitor_alive() and not container.is_running():
            break
        time.sleep(poll_interval)
    settle_abandoned(container)
    return container.state.get("ExitCode", 0)


def settle_abandoned(container):
    """Record the end of a container whose monitor died before PID 1 did.

    Nobody is left to learn PID 1's exit status (its parent, the monitor,
    is gone), so it is recorded as unknown, Docker's 255, and what the
    monitor would have released is released now.
    """
    refresh(container)
    if container.state.get("Status") not in ("running", "restarting") or \
            container.is_running() or container.monitor_alive():
        return
    release_abandoned(container)
    container.save_state(Status="exited", Running=False, Restarting=False, Pid=0,
                         ExitCode=255, FinishedAt=logs.timestamp(),
                         Error="the monitor ended before the container: exit status unknown")


def restart_while_the_policy_says(container, exit_code):
    """Start the container again as ``--restart`` asks; return the last exit code.

    The monitor runs this after PID 1 has ended.  Between tries it waits
    100 ms, doubling each time, as Docker does.
    """
    delay = 0.1
    while restart_is_due(refresh(container), exit_code):
        container.save_state(Status="restarting", Restarting=True,
                             RestartCount=container.state.get("RestartCount", 0) + 1)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stop_was_requested(container):
            time.sleep(0.05)  # short naps: a stop or rm must not wait out the delay
        delay = min(delay * 2, 60.0)
        if stop_was_requested(container) or not os.path.isdir(container.directory):
            if os.path.isdir(container.directory):
                container.save_state(Status="exited", Restarting=False)
            break
        try:
            exit_code = start(container, attach=False)
        except host.EngineError as error:
            exit_code = error.exit_code
    return exit_code


def restart_is_due(container, exit_code):
    """Say whether the restart policy brings the container back after ``exit_code``.

    ``no`` never restarts; ``on-failure[:N]`` restarts after a non-zero exit,
    at most N times; ``always`` and ``unless-stopped`` restart after any
    exit.  A container the user stopped or removed stays down.
    """
    policy = container.config["HostConfig"].get("RestartPolicy") or {}
    name, limit = policy.get("Name") or "no", policy.get("MaximumRetryCount") or 0
    if name == "no" or stop_was_requested(container) or not os.path.isdir(container.directory):
        return False
    if name == "on-failure":
        return exit_code != 0 and (not limit or container.state.get("RestartCount", 0) < limit)
    return True


def parse_restart_policy(text):
    """Parse ``--restart no|on-failure[:N]|always|unless-stopped``."""
    name, _, count = (text or "no").partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise host.EngineError(f"invalid restart policy '{text}'")
    if count and name != "on-failure":
        raise host.EngineError(f"invalid restart policy '{text}': only on-failure takes a "
                               "maximum retry count")
    if count and not host.is_decimal(count):
        raise host.EngineError(f"invalid restart policy '{text}': the maximum retry count "
                               "must be a number")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def rename(container, new_name):
    """Give a container a new name (``rename``); the name must be free."""
    with names_locked():
        check_name_is_free(new_name)
        old_name = container.name
        container.config["Name"] = "/" + new_name.lstrip("/")
        container.save_config()
        claim_name(container.name, container.id)
        if old_name != container.name:
            try:
                os.unlink(_name_file(old_name))
            except FileNotFoundError:
                pass


def prune():
    """Remove every container that is not running; return the removed ids."""
    removed = []
    for container in all_containers():
        if container.status() in ("exited", "created", "dead"):
            remove(container)
            removed.append(container.id)
    return removed


# -- exec: a second process in a running container ---------------------------

def execute(container, argv, *, interactive=False, tty=False, env=(), workdir=None, user=None,
            detach=False, terminal_size=None):
    """Run ``argv`` inside the running container (``exec``); return its exit code.

    The new process joins each of PID 1's namespaces with setns(2) and its
    cgroup, and ends with the same capability set.  setns(2) on a PID
    namespace only changes where the caller's *children* go, so the caller
    forks after it: the child is the process that runs the command.
    """
    if not container.is_running():
        raise host.EngineError(f"container {container.id} is not running", exit_code=1)
    pid = container.state["Pid"]
    _wait_until_on_its_root(container, pid)
    root = f"/proc/{pid}/root"
    config = container.config
    uid, gid, groups, home = resolve_user(root, user if user is not None else config["Config"]["User"])
    environment = dict(entry.partition("=")[::2] for entry in config["Config"]["Env"])
    for entry in env:
        name, has_value, value = entry.partition("=")
        if has_value:
            environment[name] = value
        elif name in os.environ:
            environment[name] = os.environ[name]
    environment.setdefault("HOSTNAME", config["Config"]["Hostname"])
    environment.setdefault("HOME", home)
    if tty:
        environment.setdefault("TERM", "xterm")
    workdir = workdir or config["Config"]["WorkingDir"] or "/"
    inside_workdir = rootfs.resolve(root, workdir)
    if not os.path.isdir(inside_workdir):
        raise host.EngineError(f"chdir to cwd ({workdir!r}) failed: no such directory",
                               exit_code=126)
    rootfs.find_command(root, argv[0], environment.get("PATH", DEFAULT_PATH))
    terminal = rootfs.open_terminal(root, terminal_size or (24, 80)) if tty else None
    # The lookups above read the image's files, and may have taken a while:
    # is that PID still this container's PID 1, on its own root?
    if not container.is_running():
        raise host.EngineError(f"container {container.id} is not running", exit_code=1)
    _wait_until_on_its_root(container, pid)
    process = (container, argv, environment, rootfs.inside_path(root, inside_workdir),
               (uid, gid, groups), terminal, interactive, detach)
    if detach:
        # Docker's shim stays the parent of an exec'd process and reaps it
        # when it ends.  Here a small waiter on the host does.  Without it
        # the command line's exit would orphan the process, and the kernel
        # hands an orphan to the reaper of the *dying parent's* PID
        # namespace (find_new_reaper in kernel/exit.c): the host's PID 1 or
        # a subreaper above the command line, a host process that may
        # never wait for it (checked on this VM: the host's PID 1 adopted it).
        def waiter(running):
            child = _fork_exec(*process)  # its sealed tools stay here as long as it runs
            _wait_until_past_sealed_tools(child)
            running()
            host.end_trace()
            if terminal:
                # Nobody reads an exec -dt terminal.  Its output is dropped, as
                # Docker's shim drops it, or a full terminal would stop the command.
                import threading

                threading.Thread(target=_drain, args=(terminal[0],), daemon=True).start()
            return _exit_code(os.waitpid(child, 0)[1])

        _run_in_background("md-exec", waiter, "exec's waiter ended before the command started")
        return 0
    child = _fork_exec(*process)
    if terminal:
        relay = logs.Relay(None, {terminal[0]: "stdout"}, container_input=terminal[0],
                           terminal=terminal[0])
        relay.attach_locally(1, 2, stdin=0 if interactive else None, close_input_at_end=False)
        with _forwarded_signals(child, relay):
            relay.run()
        relay.close()
        os.close(terminal[0])
    return _exit_code(os.waitpid(child, 0)[1])


def _wait_until_on_its_root(container, pid, timeout=10.0):
    """Wait until PID 1 stands on the container's root, not the host's.

    A container is "running" as soon as PID 1 exists, and PID 1 then
    builds the container's root while it still stands on the host's,
    until the chroot of its last step.  Until then ``/proc/PID/root`` is
    the host's ``/``: a process joining then would look up the user, the
    workdir and the command among the host's files, and chroot into the
    host's root.  PID 1's chain also relies on this wait (see
    :func:`rootfs.steps_to_the_command`).
    """
    host_root = os.stat("/")
    deadline = time.monotonic() + timeout
    while True:
        try:
            root = os.stat(f"/proc/{pid}/root")
        except OSError:
            raise host.EngineError(f"container {container.id} is not running", exit_code=1)
        if (root.st_dev, root.st_ino) != (host_root.st_dev, host_root.st_ino):
            return
        if time.monotonic() > deadline:
            raise host.EngineError(f"container {container.id} has not finished starting after "
                                   f"{timeout:g} s", exit_code=126)
        time.sleep(0.002)


def _wait_until_past_sealed_tools(child, timeout=10.0):
    """Wait until ``child`` runs the user's command, not one of our sealed tools.

    ``exec -d`` returns once the command runs, as Docker's does; until
    then the child is ``setpriv`` or ``nsenter``, run from memfds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not os.readlink(f"/proc/{child}/exe").startswith("/memfd:"):
                return
        except OSError:
            return  # it has ended already
        time.sleep(0.001)


def _fork_exec(container, argv, environment, workdir, ids, terminal, interactive, detach):
    """Fork the process that joins the container and runs ``argv``; return its PID.

    If it fails before the command starts, its reason is raised here.
    """
    error_read, error_write = os.pipe()
    rootfs.sealed_tools()  # held by this process until the child has passed them
    child = namespace.fork_into_pid_namespace(of=container.state["Pid"])
    if child == 0:
        os.close(error_read)
        _exec_process(container, argv, environment, workdir, ids, terminal, interactive, detach,
                      error_write)
    os.close(error_write)
    if terminal:
        os.close(terminal[1])
    failure = _read_all(error_read)
    if failure:
        os.waitpid(child, 0)
        code, _, message = failure.decode(errors="replace").partition("\t")
        raise host.EngineError(message, exit_code=int(code))
    return child


def _drain(descriptor):
    """Read and drop everything from ``descriptor`` until its writers are gone."""
    try:
        while os.read(descriptor, 65536):
            pass
    except OSError:  # EIO: a terminal whose other side has closed
        pass


def _exit_code(status):
    """The exit code a shell would show for a wait status: 128+N after signal N."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _exec_process(container, argv, environment, workdir, ids, terminal, interactive, detach,
                  error_pipe):
    """In the forked child: join the container and become the command; never returns.

    DESIGN.md fact 8: after setns(2) into the mount namespace the caller
    stands on the container's root, where no host tool can run.  So ``/``
    is opened first, and fchdir + chroot(".") go back to the host's root
    while staying in the container's mount namespace; the chain of
    :func:`rootfs.exec_command` then reaches the container through
    ``/proc/PID/root`` and does the last chroot itself.
    """
    try:
        restore_default_signals()
        pid = container.state["Pid"]
        if detach:
            os.setsid()
        host_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        group = container_cgroup(container)
        if group.exists():
            group.join()
        namespace.enter(pid, [kind for kind in ("cgroup", "ipc", "uts", "net", "mnt")
                              if kind in namespace.available()])
        os.fchdir(host_root)
        host.call(1, "chroot(.) back to the host's root, still in the container's mounts",
                  os.chroot, ".")
        os.close(host_root)
        os.chdir(f"/proc/{pid}/root")
        if terminal:
            os.close(terminal[0])
            os.login_tty(terminal[1])
        elif detach or not interactive:
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            if detach:
                os.dup2(null, 1)
                os.dup2(null, 2)
        uid, gid, groups = ids
        rootfs.exec_command(argv, environment, workdir=workdir, uid=uid, gid=gid, groups=groups,
                            capabilities=capabilities_of(container),
                            no_new_privileges=no_new_privileges(container), joining=True)
    except BaseException as error:
        _fail_before_exec(error_pipe, error, bug_code=126)


# -- volumes (chapter 6) --------------------------------------------------------

def volume_users(name):
    """The containers whose mounts use the volume ``name``."""
    return [container for container in all_containers()
            if any(mount.get("Type") == "volume" and mount.get("Name") == name
                   for mount in container.config.get("Mounts", []))]


def materialize_volumes(mounts, image_config, layers):
    """Create the container's volumes and fill new ones from the image.

    Adds an anonymous volume for each of the image's ``VOLUME`` paths that
    no ``-v`` covers.  Each volume mount gets its ``Name`` and ``Source``;
    ``mounts`` is changed in place, so a caller that fails later knows
    which anonymous volumes to remove again.
    """
    covered = {mount["Destination"] for mount in mounts}
    for destination in sorted(image_config.get("Volumes") or {}):
        if os.path.normpath(destination) not in covered:
            mounts.append(parse_volume(os.path.normpath(destination)))
    wanted = [mount for mount in mounts if mount["Type"] == "volume"]
    if not wanted:
        return  # most runs have no volume, and need not load the module
    from minidocker import volume

    for mount in wanted:
        made = volume.create(mount["Name"], anonymous=not mount["Name"])
        mount["Name"], mount["Source"] = made.name, made.data
        volume.fill_from_image(made, layers, mount["Destination"])


def remove_anonymous_volumes(mounts):
    """Remove the anonymous volumes among ``mounts`` that no container uses.

    Called for a removed container (``rm -v``, ``--rm``) and for a create
    that failed after making its volumes.  Named volumes are never removed
    here: they outlive their containers.
    """
    named = [mount["Name"] for mount in mounts if mount.get("Type") == "volume" and mount.get("Name")]
    if not named:
        return  # most runs have no volume, and need not load the module
    from minidocker import volume

    for name in named:
        found = volume.find(name)
        if found and found.anonymous and not volume_users(found.name):
            volume.remove(found)

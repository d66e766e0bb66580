"""The command line: Docker's commands and flags, and the only place that prints tables.

Each ``command_*`` function takes the parsed arguments and returns the exit
status.  Errors the engine raises (:class:`~minidocker.host.EngineError`)
become one line on standard error and Docker's exit codes: 125 when the
engine failed or was given bad input, 126 when the command cannot be
invoked, 127 when it cannot be found.
"""

import errno
import os
import sys
import time

from minidocker import flags, host


class Parser(flags.Parser):
    """An argument parser that fails the Docker way: one line, exit 125."""

    def error(self, message):
        complain(message)
        sys.stderr.write(f"See '{self.prog} --help'.\n")
        sys.exit(125)


def command_word(argv):
    """The command named in ``argv`` (after the global options), or None."""
    words = list(sys.argv[1:] if argv is None else argv)
    while words:
        word = words.pop(0)
        if word in ("--root", "--storage-driver"):
            words = words[1:]
        elif not word.startswith("-"):
            return word
    return None


def build_parser(wanted=None):
    """The argument parser; with ``wanted``, only that command's part of it.

    ``image`` and ``container`` reuse the parsers of the commands they
    group (``image ls`` is ``images``), so they need everything built.
    """
    parser = Parser(prog="minidocker", description="A Docker-like container engine, written to be read.")
    parser.add_argument("--root", help="engine root (default /var/lib/minidocker, or $MINIDOCKER_ROOT)")
    parser.add_argument("--trace", action="store_true",
                        help="narrate every host action, tagged with its chapter")
    parser.add_argument("--step", action="store_true",
                        help="with --trace, wait for Enter before each host action")
    parser.add_argument("--storage-driver", choices=("overlay", "vfs"),
                        help="how container filesystems are made (default: overlay if the kernel has it)")
    parser.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser,
                                     only=None if wanted in ("image", "container") else wanted)

    run = commands.add_parser("run", help="create and start a container", add_help=False)
    add_create_options(run)
    run.add_argument("-d", "--detach", action="store_true", help="run in the background, print its id")
    run.add_argument("--detach-keys", default="ctrl-p,ctrl-q",
                     help="keys that detach from -it (default ctrl-p,ctrl-q)")
    run.add_argument("--rm", dest="auto_remove", action="store_true",
                     help="remove the container when it exits")
    run.set_defaults(handler=command_run)

    create = commands.add_parser("create", help="create a container without starting it",
                                 add_help=False)
    add_create_options(create)
    create.add_argument("--rm", dest="auto_remove", action="store_true",
                        help="remove the container when it exits")
    create.set_defaults(handler=command_create)

    start = commands.add_parser("start", help="start a created or stopped container")
    start.add_argument("-a", "--attach", action="store_true", help="attach to its output")
    start.add_argument("-i", "--interactive", action="store_true", help="attach its standard input")
    start.add_argument("--detach-keys", default="ctrl-p,ctrl-q",
                       help="keys that detach from -ai (default ctrl-p,ctrl-q)")
    start.add_argument("containers", nargs="+", metavar="CONTAINER")
    start.set_defaults(handler=command_start)

    ps = commands.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true", help="show all containers, not just running ones")
    ps.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    ps.add_argument("--no-trunc", action="store_true", help="do not shorten ids and commands")
    ps.add_argument("-f", "--filter", dest="filters", action="append", default=[],
                    help="only containers matching KEY=VALUE (status, name, id, exited, ancestor)")
    ps.add_argument("--format", help="a template such as '{{.ID}}\\t{{.Status}}', or 'table ...'")
    ps.set_defaults(handler=command_ps)

    rm = commands.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    rm.add_argument("-v", "--volumes", action="store_true", help="also remove anonymous volumes")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")
    rm.set_defaults(handler=command_rm)

    inspect = commands.add_parser("inspect", help="show containers' or images' details as JSON")
    inspect.add_argument("names", nargs="+", metavar="NAME")
    inspect.set_defaults(handler=command_inspect)

    logs = commands.add_parser("logs", help="show a container's output")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.add_argument("-n", "--tail", default="all", help="only the last N lines (default all)")
    logs.add_argument("--since", help="only output since a time (timestamp, Unix time, or 10m)")
    logs.add_argument("--until", help="only output before a time (timestamp, Unix time, or 10m)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    logs.add_argument("container", metavar="CONTAINER")
    logs.set_defaults(handler=command_logs)

    images = commands.add_parser("images", help="list images")
    images.add_argument("-q", "--quiet", action="store_true", help="only print image ids")
    images.add_argument("--no-trunc", action="store_true", help="do not shorten ids")
    images.add_argument("--digests", action="store_true", help="show digests")
    images.set_defaults(handler=command_images)

    rmi = commands.add_parser("rmi", help="remove images")
    rmi.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")
    rmi.set_defaults(handler=command_rmi)

    stats = commands.add_parser("stats", help="show containers' resource usage")
    stats.add_argument("-a", "--all", action="store_true", help="show all containers, not just running ones")
    stats.add_argument("--no-stream", action="store_true", help="print one table and exit")
    stats.add_argument("--no-trunc", action="store_true", help="do not shorten ids")
    stats.add_argument("containers", nargs="*", metavar="CONTAINER")
    stats.set_defaults(handler=command_stats)

    top = commands.add_parser("top", help="list the processes of a container")
    top.add_argument("container", metavar="CONTAINER")
    top.set_defaults(handler=command_top)

    load_tar = commands.add_parser("import", help="make an image from a root filesystem tarball")
    load_tar.add_argument("tarball", metavar="FILE", help="a tar (or tar.gz) of a root filesystem; - for stdin")
    load_tar.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    load_tar.add_argument("-c", "--change", action="append", default=[],
                          help="apply a Dockerfile instruction (CMD, ENV, WORKDIR, USER, ENTRYPOINT)")
    load_tar.set_defaults(handler=command_import)
    add_image_commands(commands)
    add_lifecycle_commands(commands)
    add_commit_commands(commands)
    add_network_commands(commands)
    add_system_commands(commands)
    add_demo_command(commands)
    return parser


def add_demo_command(commands):
    demo = commands.add_parser("demo", help="walk through the whole course on one busybox image")
    demo.add_argument("--keep", action="store_true",
                      help="keep the demo's engine root to look around in")
    demo.set_defaults(handler=command_demo)


def command_demo(arguments):
    from minidocker import demo

    return demo.main(keep=arguments.keep)


def add_create_options(parser):
    parser.add_argument("--name", help="assign a name to the container")
    parser.add_argument("-h", "--hostname", help="the container's host name")
    parser.add_argument("--help", action="help", help="show this help and exit")  # -h is --hostname
    parser.add_argument("--pull", choices=("missing", "always", "never"), default="missing",
                        help="pull the image first: if it is missing (default), always, never")
    parser.add_argument("-e", "--env", action="append", default=[], help="set an environment variable")
    parser.add_argument("--env-file", dest="env_files", action="append", default=[],
                        help="read environment variables from a file")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-u", "--user", help="user name or UID, optionally :group or :GID")
    parser.add_argument("-v", "--volume", dest="volumes", action="append", default=[],
                        help="bind a host path or a volume: [HOST-PATH|NAME:]DESTINATION[:ro]")
    parser.add_argument("--restart", help="restart policy: no, on-failure[:N], always, unless-stopped")
    parser.add_argument("--log-opt", dest="log_opts", action="append", default=[],
                        help="json-file log option: max-size=SIZE, max-file=N")
    parser.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep standard input open")
    parser.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    parser.add_argument("--entrypoint", help="override the image's entrypoint")
    parser.add_argument("--network", "--net",
                        help="bridge (the default), none, host, or a network's name")
    parser.add_argument("-p", "--publish", action="append", default=[],
                        help="publish a port: [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
    parser.add_argument("-P", "--publish-all", action="store_true",
                        help="publish every exposed port on a random host port")
    parser.add_argument("--ip", help="the container's IPv4 address (user-defined networks)")
    parser.add_argument("--network-alias", dest="network_aliases", action="append", default=[],
                        help="another name the container has on its network")
    parser.add_argument("--add-host", dest="add_hosts", action="append", default=[],
                        help="add NAME:IP to /etc/hosts (IP may be host-gateway)")
    parser.add_argument("--dns", action="append", default=[], help="a name server for resolv.conf")
    parser.add_argument("-m", "--memory", type=size_argument, help="memory limit (e.g. 32m, 1g)")
    parser.add_argument("--memory-swap", type=swap_argument,
                        help="memory plus swap limit; -1 for unlimited swap")
    parser.add_argument("--cpus", type=cpus_argument, help="number of CPUs (e.g. 0.5)")
    parser.add_argument("-c", "--cpu-shares", type=int, help="relative CPU weight (default 1024)")
    parser.add_argument("--cpuset-cpus", help="CPUs the container may run on (e.g. 0-1,3)")
    parser.add_argument("--pids-limit", type=int, help="most processes at once (-1 for unlimited)")
    parser.add_argument("--cap-add", action="append", default=[], help="add a capability (or ALL)")
    parser.add_argument("--cap-drop", action="append", default=[], help="drop a capability (or ALL)")
    parser.add_argument("--privileged", action="store_true",
                        help="every capability and device, nothing masked")
    parser.add_argument("--security-opt", dest="security_opts", action="append", default=[],
                        help="no-new-privileges[:true|false]")
    parser.add_argument("--tmpfs", action="append", default=[],
                        help="mount a tmpfs: PATH[:OPTIONS] (works with --read-only)")
    parser.add_argument("--device", dest="devices", action="append", default=[],
                        help="give a host device: HOST[:CONTAINER[:PERMISSIONS]]")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=flags.REMAINDER, metavar="COMMAND")


def size_argument(text):
    """The type of -m: Docker's sizes (b, k, m, g)."""
    from minidocker import cgroup

    try:
        return cgroup.parse_bytes(text)
    except host.EngineError as error:
        raise flags.InvalidValue(str(error))


def swap_argument(text):
    """The type of --memory-swap: a size, or -1."""
    from minidocker import cgroup

    try:
        return cgroup.parse_memory_swap(text)
    except host.EngineError as error:
        raise flags.InvalidValue(str(error))


def cpus_argument(text):
    """The type of --cpus: a decimal number of CPUs."""
    try:
        return float(text)
    except ValueError:
        raise flags.InvalidValue(f"failed to parse {text} as a rational number")


def run_and_exit():
    """Run the command in ``sys.argv`` and end the process with its status.

    ``python -m minidocker`` and the ``minidocker`` console script come
    here.  By the time a command returns, the engine has closed every file
    it wrote, so the interpreter's clean-up at exit (freeing each module
    and object one by one, several milliseconds) would only slow every
    command down: the process ends with ``os._exit`` once the standard
    streams are flushed.  An exception still leaves the ordinary way, with
    its traceback.
    """
    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        status = status or 1  # the reader went away; Python would say 120
    os._exit(status)


def print_inspected(results):
    """Print what an ``inspect`` found as Docker does: a JSON array indented by four."""
    import json  # only here, not at the top: see host.py on the start path's imports

    print(json.dumps(results, indent=4))


def complain(message):
    """Print an error as Docker does, on one line of standard error.

    A name the user typed may hold a newline or an escape sequence; shown
    escaped (as Go's %q would), the message stays one line that cannot
    repaint the terminal.
    """
    print(f"minidocker: {host.printable(str(message))}", file=sys.stderr)


def main(argv=None):
    """Run one command; return its exit status."""
    parser = build_parser(command_word(argv))
    arguments = parser.parse_args(argv)
    if arguments.root:
        os.environ["MINIDOCKER_ROOT"] = os.path.abspath(arguments.root)
    if arguments.storage_driver:
        os.environ["MINIDOCKER_STORAGE_DRIVER"] = arguments.storage_driver
    if arguments.trace or arguments.step:
        host.enable_trace(step=arguments.step)
    if arguments.version:
        from minidocker import __version__

        print(f"minidocker version {__version__}")  # Docker: "Docker version 24.0.7, build ..."
        return 0
    if not getattr(arguments, "handler", None):
        # A group named without its command (``minidocker image``) shows its own help.
        while parser.commands and getattr(arguments, parser.commands.dest) in parser.commands.parsers:
            parser = parser.commands.parsers[getattr(arguments, parser.commands.dest)]
        parser.print_help()
        return 0
    if os.geteuid() != 0:
        print("minidocker: this command needs root (try sudo)", file=sys.stderr)
        return 125
    try:
        return arguments.handler(arguments)
    except host.EngineError as error:
        complain(error)
        return error.exit_code
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every writer undoes its half-made work on the way out (temporary
        # files, drafts, downloads), so the store is as it was.
        print(f"minidocker: no space left on the device of the engine root "
              f"{host.engine_root()}: nothing was changed; free some space and try again",
              file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130


# -- containers ------------------------------------------------------------

def create_options(arguments):
    return {name: getattr(arguments, name, None) for name in (
        "name", "hostname", "env", "env_files", "workdir", "user", "volumes", "read_only",
        "interactive", "tty", "entrypoint", "network", "auto_remove", "command",
        "publish", "publish_all", "ip", "network_aliases", "add_hosts", "dns",
        "restart", "log_opts",
        "memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "pids_limit",
        "cap_add", "cap_drop", "privileged", "security_opts", "tmpfs", "devices")}


def new_container(arguments):
    from minidocker import container, image

    store = image.Store()
    store.ensure()
    # As Docker's run and create do: a missing image is pulled, and the
    # pull's progress goes to standard error, leaving stdout to the command.
    source = image.find_or_pull(store, arguments.image, arguments.pull, sys.stderr)
    return container.create(store, arguments.image, create_options(arguments), source)


def command_run(arguments):
    from minidocker import container

    if arguments.tty and not arguments.detach and not os.isatty(0):
        print("minidocker: the input device is not a TTY", file=sys.stderr)
        return 1
    detach_keys = parse_detach_keys(arguments.detach_keys)
    created = new_container(arguments)
    if arguments.detach:
        container.start_detached(created)
        print(created.id)
        return 0
    if has_its_own_monitor(created):
        return start_and_attach(created, detach_keys)
    code = run_attached(created)
    if (created.config["HostConfig"].get("RestartPolicy") or {}).get("Name", "no") != "no":
        # The foreground run ends here as Docker's does; a monitor of its
        # own carries the restart policy on.
        container.refresh(created)
        if container.restart_is_due(created, code):
            created.save_state(RestartCount=created.state.get("RestartCount", 0) + 1)
            container.start_detached(created)
    return code


def has_its_own_monitor(created):
    """Say whether a foreground start is a detached monitor plus ``attach``.

    So it is for -it on a terminal, as in Docker: ctrl-p ctrl-q must be
    able to leave the container running, and the monitor cannot be the
    command line that the shell waits for.
    """
    config = created.config["Config"]
    return config["Tty"] and config["OpenStdin"] and os.isatty(0)


def start_and_attach(created, detach_keys):
    """Start under a monitor of its own, attach this terminal; return the exit code."""
    from minidocker import container

    size = os.get_terminal_size(0)
    container.start_detached(created, terminal_size=(size.lines, size.columns),
                             client_coming=True)
    return attach_to(created, detach_keys=detach_keys)


def run_attached(created):
    """Start a container in the foreground, with the caller's terminal if it has one.

    The command line is the container's monitor (see :func:`has_its_own_monitor`
    for -it on a terminal).
    """
    from minidocker import container

    size = None
    saved = None
    if created.config["Config"]["Tty"] and os.isatty(0):
        import termios
        import tty

        size = os.get_terminal_size(0)
        size = (size.lines, size.columns)
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    try:
        return container.start(created, attach=True, terminal_size=size)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def command_create(arguments):
    print(new_container(arguments).id)
    return 0


def command_start(arguments):
    from minidocker import container

    status = 0
    for reference in arguments.containers:
        found = container.find(reference)
        if found.is_running():
            if arguments.attach:
                return attach_to(found, send_input=arguments.interactive)
            print(reference)
            continue
        if arguments.attach:
            container.prepare_to_start(found)
            if arguments.interactive and has_its_own_monitor(found):
                status = start_and_attach(found, parse_detach_keys(arguments.detach_keys))
            else:
                status = run_attached(found)
            continue
        container.prepare_to_start(found)
        container.start_detached(found)
        print(reference)
    return status


def command_ps(arguments):
    from minidocker import container

    filters = parse_filters(arguments.filters)
    rows = []
    for record in container.all_containers():
        container.release_abandoned(record)
        status = record.status()
        if status not in ("running", "restarting") and not arguments.all and \
                "status" not in filters and "exited" not in filters:
            continue
        if not matches_filters(record, status, filters):
            continue
        rows.append(ps_fields(record, status, arguments.no_trunc))
    if arguments.quiet:
        for fields in rows:
            print(fields["ID"])
    elif arguments.format:
        print_formatted(arguments.format, rows)
    else:
        print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
                    [[fields[key] for key in ("ID", "Image", "Command", "RunningFor", "Status",
                                              "Ports", "Names")] for fields in rows])
    return 0


def ps_fields(record, status, no_trunc=False):
    """A container's ``ps`` columns by the names ``--format`` uses."""
    command = " ".join([record.config["Path"], *record.config["Args"]])
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    return {"ID": record.id if no_trunc else record.id[:12], "Image": record.config["Config"]["Image"],
            "Command": f'"{command}"', "CreatedAt": record.config["Created"],
            "RunningFor": human_since(record.config["Created"]) + " ago",
            "Status": describe_status(record, status), "State": status,
            "Ports": describe_ports(record, status), "Names": record.name,
            "Mounts": ",".join(mount.get("Name") or mount["Source"]
                               for mount in record.config.get("Mounts", [])),
            "Labels": ",".join(f"{key}={value}" for key, value in
                               record.config["Config"].get("Labels", {}).items())}


def describe_ports(record, status):
    from minidocker import network

    settings = record.state.get("NetworkSettings") or {}
    return network.describe_ports(settings.get("Ports")) if status == "running" else ""


PS_FILTERS = ("status", "name", "id", "exited", "ancestor", "label", "volume")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def parse_filters(given):
    """Parse ``-f KEY=VALUE`` options into ``{key: [values]}``, checking them."""
    filters = {}
    for text in given:
        key, has_value, value = text.partition("=")
        if not has_value or key not in PS_FILTERS:
            raise host.EngineError(f"invalid filter '{text}'")
        if key == "status" and value not in STATUSES:
            raise host.EngineError(f"invalid filter 'status={value}'")
        filters.setdefault(key, []).append(value)
    return filters


def matches_filters(record, status, filters):
    """Docker's rule: values of one key are alternatives, different keys must all match."""
    tests = {
        "status": lambda value: status == value,
        "name": lambda value: value.lstrip("/") in record.name,
        "id": lambda value: record.id.startswith(value),
        "exited": lambda value: status == "exited" and str(record.state.get("ExitCode")) == value,
        "ancestor": lambda value: value in (record.config["Config"]["Image"], record.config["Image"]),
        "label": lambda value: _has_label(record, value),
        "volume": lambda value: any(value in (mount.get("Name"), mount["Source"],
                                              mount["Destination"])
                                    for mount in record.config.get("Mounts", [])),
    }
    return all(any(tests[key](value) for value in values) for key, values in filters.items())


def _has_label(record, text):
    key, has_value, value = text.partition("=")
    labels = record.config["Config"].get("Labels", {})
    return key in labels and (not has_value or labels[key] == value)


def print_formatted(template, rows):
    """Print rows through a Go-style template: ``{{.ID}}``, ``table {{.Names}}``.

    Only field references are supported, which covers what ``ps --format``
    is used for; ``\\t`` and ``\\n`` become a tab and a newline, as in Docker.
    """
    import re

    table = template.startswith("table")
    if table:
        template = template[len("table"):].strip()
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    field = re.compile(r"{{\s*\.(\w+)\s*}}")
    for name in field.findall(template):
        if rows and name not in rows[0]:
            raise host.EngineError(f"template: can't evaluate field {name}")

    def fill(values):
        return field.sub(lambda match: str(values.get(match.group(1), "")), template)

    if table:
        headers = {"ID": "CONTAINER ID", "RunningFor": "CREATED", "CreatedAt": "CREATED AT"}
        cells = [fill({name: headers.get(name, name.upper())
                       for name in field.findall(template)}).split("\t")]
        cells += [fill(values).split("\t") for values in rows]
        print_table(cells[0], cells[1:])
        return
    for values in rows:
        print(fill(values))


def describe_status(record, status):
    if status == "running":
        return "Up " + human_since(record.state["StartedAt"])
    if status == "exited":
        return f"Exited ({record.state.get('ExitCode', 0)}) {human_since(record.state['FinishedAt'])} ago"
    if status == "restarting":
        return (f"Restarting ({record.state.get('ExitCode', 0)}) "
                f"{human_since(record.state['FinishedAt'])} ago")
    return status.capitalize()


def command_rm(arguments):
    from minidocker import container

    status = 0
    for reference in arguments.containers:
        try:
            container.remove(container.find(reference), force=arguments.force,
                             volumes=arguments.volumes)
            print(reference)
        except host.EngineError as error:
            complain(error)
            status = 1
    return status


def command_inspect(arguments):
    from minidocker import container, image

    results = []
    status = 0
    for name in arguments.names:
        try:
            record = container.find(name)
            details = dict(record.config)
            details["State"] = dict(record.state, Status=record.status(),
                                    Running=record.status() == "running")
            details["NetworkSettings"] = details["State"].pop("NetworkSettings", None) or {}
            details.pop("LayerDirectories", None)
            # Docker keeps the restart count beside State.  (MonitorPid stays
            # in State: tests and instructors use it to kill the monitor.)
            details["RestartCount"] = details["State"].pop("RestartCount", 0)
            details["State"]["Restarting"] = details["State"]["Status"] == "restarting"
            if details["State"]["Status"] != "running":
                details["State"]["Pid"] = 0
            results.append(details)
            continue
        except host.EngineError:
            pass
        try:
            found = image.Store().lookup(name)
            results.append({"Id": found.id, "RepoTags": found.names(),
                            "RepoDigests": image.Store().repository_digests(found.digest),
                            "Created": found.config.get("created"),
                            "Architecture": found.config.get("architecture"),
                            "Os": found.config.get("os"), "Config": found.run_config,
                            "RootFS": {"Type": "layers", "Layers": found.diff_ids},
                            "Size": found.size()})
        except host.EngineError:
            complain(f"Error: No such object: {name}")
            status = 1
    print_inspected(results)
    return status


def command_logs(arguments):
    """``logs``: the container's output from its json-file log, each stream to its own."""
    import itertools

    from minidocker import container, logs

    record = container.find(arguments.container)
    since = logs.parse_time_argument(arguments.since) if arguments.since else None
    until = logs.parse_time_argument(arguments.until) if arguments.until else None
    if arguments.tail not in ("all", "-1") and not host.is_decimal(arguments.tail):
        raise host.EngineError(f"invalid value for tail: {arguments.tail!r}")
    whole = arguments.tail in ("all", "-1")

    def still_running():
        container.refresh(record)
        return record.monitor_alive()

    if whole and arguments.follow:
        batches = logs.follow(record.log_path, still_running)
    elif whole:
        batches = logs.read_entries(record.log_path)
    else:
        # Take the tail up to where the current file ends now; a follower
        # goes on from that very offset, so no line is lost or repeated.
        try:
            handle = open(record.log_path, "rb")
        except FileNotFoundError:
            handle = None
        end = os.fstat(handle.fileno()).st_size if handle else 0
        batches = [logs.tail_entries(record.log_path, int(arguments.tail), end_of_current=end)]
        if arguments.follow:
            if handle:
                handle.seek(end)
            batches = itertools.chain(batches, logs.follow(record.log_path, still_running, handle))
        elif handle:
            handle.close()
    for entries in batches:
        write_log_entries(entries, arguments.timestamps, since, until)
    return 0


def write_log_entries(entries, timestamps=False, since=None, until=None):
    """Write log entries to standard output or standard error, by their stream.

    Neighbouring entries of one stream are joined into a single write.
    """
    from minidocker import logs

    if since is not None or until is not None:
        entries = [entry for entry in entries
                   if (since is None or logs.parse_timestamp(entry[2]) >= since)
                   and (until is None or logs.parse_timestamp(entry[2]) < until)]
    run_stream, run_texts = None, []
    for stream, text, time_text in entries + [(None, "", "")]:
        if stream != run_stream and run_texts:
            target = sys.stdout.buffer if run_stream == "stdout" else sys.stderr.buffer
            target.write("".join(run_texts).encode("utf-8", "surrogateescape"))
            target.flush()
            run_texts = []
        run_stream = stream
        run_texts.append(f"{time_text} {text}" if timestamps and stream else text)


def command_stats(arguments):
    """Print CPU, memory, network, block I/O and process counts per container.

    CPU % is the CPU time the container's group used between two readings
    divided by the wall time between them, so 100% is one CPU kept busy.
    """
    from minidocker import container

    if arguments.containers:
        records = [container.find(reference) for reference in arguments.containers]
    else:
        records = [record for record in container.all_containers()
                   if arguments.all or record.status() == "running"]
    previous = read_usage(records)
    while True:
        time.sleep(0.5 if arguments.no_stream else 1.0)
        current = read_usage(records)
        rows = [stats_row(record, previous[record.id], current[record.id], arguments.no_trunc)
                for record in records]
        if not arguments.no_stream:
            print("\033[2J\033[H", end="")
        print_table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                     "NET I/O", "BLOCK I/O", "PIDS"], rows)
        if arguments.no_stream:
            return 0
        sys.stdout.flush()
        previous = current


def read_usage(records):
    """Read each container's cgroup counters and network bytes, with the time."""
    from minidocker import container

    usage = {}
    for record in records:
        running = record.status() == "running"
        stats = container.container_cgroup(record).stats() if running else None
        network = network_bytes(record.state.get("Pid")) if running else (0, 0)
        usage[record.id] = (time.monotonic_ns(), stats, network)
    return usage


def network_bytes(pid):
    """Bytes received and sent on the container's interfaces (loopback aside).

    ``/proc/PID/net/dev`` shows the network namespace of that process.
    """
    received = sent = 0
    try:
        with open(f"/proc/{pid}/net/dev") as handle:
            lines = handle.readlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() != "lo":
            fields = counters.split()
            received += int(fields[0])
            sent += int(fields[8])
    return received, sent


def stats_row(record, before, after, no_trunc):
    identifier = record.id if no_trunc else record.id[:12]
    (start, first, _), (end, second, network) = before, after
    if first is None or second is None:
        return [identifier, record.name, "0.00%", "0B / 0B", "0.00%", "0B / 0B", "0B / 0B", "0"]
    cpu = (second["cpu_nanoseconds"] - first["cpu_nanoseconds"]) / max(end - start, 1) * 100
    memory = second["memory_usage"]
    limit = second["memory_limit"]
    return [identifier, record.name, f"{cpu:.2f}%",
            f"{binary_size(memory)} / {binary_size(limit)}",
            f"{memory / limit * 100 if limit else 0:.2f}%",
            f"{human_size(network[0])} / {human_size(network[1])}",
            f"{human_size(second['block_read'])} / {human_size(second['block_write'])}",
            str(second["pids"])]


def command_top(arguments):
    """List the container's processes with ``ps -ef``'s columns."""
    import psutil

    from minidocker import container

    record = container.find(arguments.container)
    if record.status() != "running":
        raise host.EngineError(f"Container {record.id} is not running", exit_code=1)
    rows = []
    for pid in container.container_cgroup(record).processes():
        try:
            rows.append(top_row(psutil.Process(pid)))
        except psutil.NoSuchProcess:
            continue  # it ended between the listing and the reading
    print_table(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows)
    return 0


def top_row(process):
    """One ``ps -ef`` line for a process, read through psutil."""
    with process.oneshot():
        times = process.cpu_times()
        used = times.user + times.system
        started = process.create_time()
        elapsed = max(time.time() - started, 1e-9)
        try:
            user = process.username()
        except KeyError:  # a UID with no name in the host's passwd
            user = str(process.uids().real)
        terminal = process.terminal()
        command = " ".join(process.cmdline()) or f"[{process.name()}]"
        if time.time() - started < 24 * 3600:
            start_text = time.strftime("%H:%M", time.localtime(started))
        else:
            start_text = time.strftime("%b%d", time.localtime(started))
        seconds = int(used)
        return [user, process.pid, process.ppid(), int(used * 100 / elapsed), start_text,
                terminal.removeprefix("/dev/") if terminal else "?",
                f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}", command]


# -- images ----------------------------------------------------------------

def command_images(arguments):
    from minidocker import image

    from minidocker import commit

    store = image.Store()
    rows = []
    for reference, digest in commit.listed_images(store):
        found = store.image(digest)
        identifier = found.id.removeprefix("sha256:")
        if arguments.quiet:
            print(identifier if arguments.no_trunc else identifier[:12])
            continue
        repository = reference.familiar_repository if reference else "<none>"
        tag = reference.tag if reference and reference.tag else "<none>"
        digest = [found.digest if store.repository_digests(found.digest) else "<none>"]
        rows.append([repository, tag, *(digest if arguments.digests else []),
                     identifier if arguments.no_trunc else identifier[:12],
                     human_since(found.config.get("created")) + " ago",
                     human_size(found.size())])
    if not arguments.quiet:
        print_table(["REPOSITORY", "TAG", *(["DIGEST"] if arguments.digests else []),
                     "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def command_rmi(arguments):
    from minidocker import container, image

    store = image.Store()
    status = 0
    for name in arguments.images:
        try:
            found = store.lookup(name)
            names = [reference for reference, digest in store.images()
                     if digest == found.digest and reference]
            asked = [reference for reference in names if str(reference) == str(
                image.Reference.parse(name)) or reference.familiar() == name] \
                if not name.startswith("sha256:") else []
            if asked and len(names) > 1:
                # Docker removes only the name asked for while others remain.
                store.untag(asked[0])
                print(f"Untagged: {display_name(asked[0])}")
                continue
            if not asked and len(names) > 1 and not arguments.force:
                raise host.EngineError(
                    f"conflict: unable to delete {found.id[7:19]} (must be forced) - image is "
                    "referenced in multiple repositories", exit_code=1)
            users = [record for record in container.all_containers() if record.config["Image"] == found.id]
            if users and not arguments.force:
                raise host.EngineError(
                    f"conflict: unable to remove repository reference \"{name}\" (must force) - "
                    f"container {users[0].id[:12]} is using its referenced image {found.id[7:19]}",
                    exit_code=1)
            for reference, digest in store.images():
                if digest == found.digest and reference:
                    store.untag(reference)
                    print(f"Untagged: {display_name(reference)}")
            print(f"Deleted: {found.id}")
        except host.EngineError as error:
            complain(f"Error response: {error}")
            status = 1
    in_use = {directory for record in container.all_containers()
              for directory in record.config.get("LayerDirectories", [])}
    store.remove_unused(keep_directories=in_use)
    return status


def command_import(arguments):
    from minidocker import image

    store = image.Store()
    reference = image.Reference.parse(arguments.reference) if arguments.reference else None
    changes = parse_changes(arguments.change)
    imported = store.import_tarball(arguments.tarball, reference, changes)
    print(imported.id)
    return 0


def parse_changes(instructions):
    """Turn ``--change 'CMD ["sh"]'`` lines into image config fields, as ``commit -c`` does."""
    from minidocker import commit

    config = {}
    for instruction in instructions:
        commit.apply_change(config, instruction)
    return config


def display_name(reference):
    """A name as Docker prints it: ``busybox:latest``, ``host:5000/app@sha256:...``."""
    return reference.familiar_repository + (f":{reference.tag}" if reference.tag else
                                            f"@{reference.digest}")


def add_image_commands(commands):
    """pull, push, login, logout, tag, save, load, history, export and ``image ...``."""
    pull = commands.add_parser("pull", help="download an image from a registry")
    pull.add_argument("--platform", help="os/arch[/variant] to pull from a multi-platform image")
    pull.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    pull.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    pull.set_defaults(handler=command_pull)

    push = commands.add_parser("push", help="upload an image to a registry")
    push.add_argument("name", metavar="NAME[:TAG]")
    push.set_defaults(handler=command_push)

    login = commands.add_parser("login", help="log in to a registry")
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument("server", nargs="?", metavar="SERVER")
    login.set_defaults(handler=command_login)

    logout = commands.add_parser("logout", help="forget the credentials for a registry")
    logout.add_argument("server", nargs="?", metavar="SERVER")
    logout.set_defaults(handler=command_logout)

    tag = commands.add_parser("tag", help="give an image another name")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    tag.set_defaults(handler=command_tag)

    save = commands.add_parser("save", help="write images to a tar archive (docker-archive)")
    save.add_argument("-o", "--output", help="write to a file, not standard output")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    save.set_defaults(handler=command_save)

    load = commands.add_parser("load", help="load images from a docker-archive or OCI archive")
    load.add_argument("-i", "--input", help="read from a file, not standard input")
    load.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    load.set_defaults(handler=command_load)

    history = commands.add_parser("history", help="show the history of an image")
    history.add_argument("--no-trunc", action="store_true", help="do not shorten the output")
    history.add_argument("-q", "--quiet", action="store_true", help="only print image ids")
    history.add_argument("image", metavar="IMAGE")
    history.set_defaults(handler=command_history)

    export = commands.add_parser("export", help="write a container's filesystem as a tar archive")
    export.add_argument("-o", "--output", help="write to a file, not standard output")
    export.add_argument("container", metavar="CONTAINER")
    export.set_defaults(handler=command_export)

    group = commands.add_parser("image", help="manage images (image inspect, ls, rm, ...)")
    actions = group.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=Parser)
    inspect = actions.add_parser("inspect", help="show images' details as JSON")
    inspect.add_argument("names", nargs="+", metavar="IMAGE")
    inspect.set_defaults(handler=command_image_inspect)
    if not group.built:
        return
    for name, source in (("ls", "images"), ("rm", "rmi"), ("pull", "pull"), ("push", "push"),
                         ("tag", "tag"), ("save", "save"), ("load", "load"),
                         ("history", "history"), ("import", "import")):
        # ``image ls`` is ``images`` with the same flags: the parser's options are lent.
        alias = actions.add_parser(name, help=f"the same as {source!r}",
                                   parents=[commands.parsers[source]], add_help=False)
        alias.set_defaults(handler=commands.parsers[source].get_default("handler"))


def command_pull(arguments):
    from minidocker import registry

    progress = registry.Progress(None if arguments.quiet else sys.stdout)
    pulled = registry.pull(arguments.name, platform=arguments.platform, progress=progress)
    from minidocker import image

    reference = image.Reference.parse(arguments.name)
    if reference.tag:
        reference = reference.without_digest()
    print(reference)
    return 0 if pulled else 1


def command_push(arguments):
    from minidocker import registry

    registry.push(arguments.name, progress=registry.Progress(sys.stdout))
    return 0


def command_login(arguments):
    import getpass

    from minidocker import registry

    username, password = arguments.username, arguments.password
    if arguments.password_stdin:
        if password:
            raise host.EngineError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\n")
    if not username or not password:
        if not sys.stdin.isatty():
            raise host.EngineError("cannot perform an interactive login from a non TTY device")
        username = username or input("Username: ")
        password = password or getpass.getpass("Password: ")
    if arguments.password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
    registry.login(arguments.server, username, password)
    print("Login Succeeded")
    return 0


def command_logout(arguments):
    from minidocker import registry

    server = registry.normalise_server(arguments.server)
    if registry.logout(server):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


def command_tag(arguments):
    from minidocker import image

    store = image.Store()
    found = store.lookup(arguments.source)
    target = image.Reference.parse(arguments.target)
    if target.digest:
        raise host.EngineError("refusing to create a tag with a digest reference")
    store.tag(target, found.digest)
    return 0


def command_save(arguments):
    from minidocker import image

    if arguments.output is None and sys.stdout.isatty():
        raise host.EngineError("cowardly refusing to save to a terminal. Use the -o flag "
                               "or redirect")
    image.save(image.Store(), arguments.images, arguments.output)
    return 0


def command_load(arguments):
    from minidocker import image

    for line in image.load(image.Store(), arguments.input):
        if not arguments.quiet:
            print(line)
    return 0


def command_history(arguments):
    from minidocker import image

    found = image.Store().lookup(arguments.image)
    rows = []
    for position, (created, created_by, size, comment, _) in enumerate(image.history(found)):
        identifier = found.id if position == 0 else "<missing>"
        if identifier != "<missing>" and not arguments.no_trunc:
            identifier = identifier.removeprefix("sha256:")[:12]
        if arguments.quiet:
            print(identifier)
            continue
        if not arguments.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append([identifier, human_since(created) + " ago" if created else "N/A",
                     created_by, human_size(size), comment])
    if not arguments.quiet:
        print_table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)
    return 0


def command_export(arguments):
    from minidocker import container, image

    if arguments.output is None and sys.stdout.isatty():
        raise host.EngineError("cowardly refusing to save to a terminal. Use the -o flag "
                               "or redirect")
    record = container.find(arguments.container)
    layers = record.config["LayerDirectories"]
    if os.path.isdir(os.path.join(record.directory, "rootfs")):
        directories = [os.path.join(record.directory, "rootfs")]
    else:
        directories = [*layers, os.path.join(record.directory, "upper")]
    image.export(directories, arguments.output)
    return 0


def command_image_inspect(arguments):
    from minidocker import image

    store = image.Store()
    results, status = [], 0
    for name in arguments.names:
        try:
            found = store.lookup(name)
        except host.EngineError:
            complain(f"Error: No such image: {name}")
            status = 1
            continue
        results.append(describe_image(store, found))
    print_inspected(results)
    return status


def describe_image(store, found):
    """Docker's ``image inspect`` keys for one image."""
    from minidocker import image

    return {"Id": found.id,
            "RepoTags": [f"{image.Reference.parse(name).familiar_repository}:"
                         f"{image.Reference.parse(name).tag}"
                         for name in found.names() if image.Reference.parse(name).tag],
            "RepoDigests": store.repository_digests(found.digest),
            "Parent": "", "Comment": "",
            "Created": found.config.get("created"),
            "Author": found.config.get("author", ""),
            "Config": found.run_config,
            "Architecture": found.config.get("architecture"),
            "Variant": found.config.get("variant", ""),
            "Os": found.config.get("os"),
            "Size": found.size(),
            "RootFS": {"Type": "layers", "Layers": found.diff_ids},
            "Metadata": {"LastTagTime": ""},
            "Descriptor": {"mediaType": found.manifest.get("mediaType", image.MEDIA_MANIFEST),
                           "digest": found.digest,
                           "size": len(store.read_blob(found.digest))}}


# -- the container lifecycle (chapter 6) ---------------------------------------

def add_lifecycle_commands(commands):
    """stop, restart, kill, wait, rename, attach, exec, container ..., volume ..."""
    stop = commands.add_parser("stop", help="stop running containers (SIGTERM, then SIGKILL)")
    stop.add_argument("-t", "--time", type=int, default=10,
                      help="seconds to wait before SIGKILL (default 10)")
    stop.add_argument("containers", nargs="+", metavar="CONTAINER")
    stop.set_defaults(handler=command_stop)

    restart = commands.add_parser("restart", help="stop and start containers again")
    restart.add_argument("-t", "--time", type=int, default=10,
                         help="seconds to wait before SIGKILL (default 10)")
    restart.add_argument("containers", nargs="+", metavar="CONTAINER")
    restart.set_defaults(handler=command_restart)

    kill = commands.add_parser("kill", help="send a signal to containers' PID 1")
    kill.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    kill.add_argument("containers", nargs="+", metavar="CONTAINER")
    kill.set_defaults(handler=command_kill)

    wait = commands.add_parser("wait", help="wait for containers to end; print their exit codes")
    wait.add_argument("containers", nargs="+", metavar="CONTAINER")
    wait.set_defaults(handler=command_wait)

    rename = commands.add_parser("rename", help="rename a container")
    rename.add_argument("container", metavar="CONTAINER")
    rename.add_argument("new_name", metavar="NEW_NAME")
    rename.set_defaults(handler=command_rename)

    attach = commands.add_parser("attach", help="connect the terminal to a running container")
    attach.add_argument("--no-stdin", action="store_true", help="do not send input")
    attach.add_argument("--detach-keys", default="ctrl-p,ctrl-q",
                        help="keys that detach (default ctrl-p,ctrl-q)")
    attach.add_argument("container", metavar="CONTAINER")
    attach.set_defaults(handler=command_attach)

    exec_ = commands.add_parser("exec", help="run a command in a running container")
    exec_.add_argument("-i", "--interactive", action="store_true", help="keep standard input open")
    exec_.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    exec_.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    exec_.add_argument("-e", "--env", action="append", default=[], help="set an environment variable")
    exec_.add_argument("-w", "--workdir", help="working directory inside the container")
    exec_.add_argument("-u", "--user", help="user name or UID, optionally :group or :GID")
    exec_.add_argument("container", metavar="CONTAINER")
    exec_.add_argument("command", nargs=flags.REMAINDER, metavar="COMMAND")
    exec_.set_defaults(handler=command_exec)

    group = commands.add_parser("container", help="manage containers (container prune, ls, ...)")
    actions = group.add_subparsers(dest="container_command", metavar="COMMAND", parser_class=Parser)
    prune = actions.add_parser("prune", help="remove all stopped containers")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.set_defaults(handler=command_container_prune)
    for name, source in (("ls", "ps"), ("rm", "rm"), ("start", "start"), ("stop", "stop"),
                         ("restart", "restart"), ("kill", "kill"), ("wait", "wait"),
                         ("rename", "rename"), ("attach", "attach"), ("exec", "exec"),
                         ("logs", "logs"), ("inspect", "inspect"), ("create", "create"),
                         ("run", "run")):
        if not group.built:
            break
        alias = actions.add_parser(name, help=f"the same as {source!r}",
                                   parents=[commands.parsers[source]], add_help=False)
        alias.set_defaults(handler=commands.parsers[source].get_default("handler"))

    volume = commands.add_parser("volume", help="manage volumes (create, ls, inspect, rm, prune)")
    actions = volume.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=Parser)
    create = actions.add_parser("create", help="create a volume")
    create.add_argument("--label", action="append", default=[], help="set a label KEY=VALUE")
    create.add_argument("name", nargs="?", metavar="VOLUME")
    create.set_defaults(handler=command_volume_create)
    listing = actions.add_parser("ls", help="list volumes")
    listing.add_argument("-q", "--quiet", action="store_true", help="only print names")
    listing.set_defaults(handler=command_volume_ls)
    inspect = actions.add_parser("inspect", help="show volumes' details as JSON")
    inspect.add_argument("names", nargs="+", metavar="VOLUME")
    inspect.set_defaults(handler=command_volume_inspect)
    remove = actions.add_parser("rm", help="remove volumes no container uses")
    remove.add_argument("-f", "--force", action="store_true", help="do not fail if it does not exist")
    remove.add_argument("names", nargs="+", metavar="VOLUME")
    remove.set_defaults(handler=command_volume_rm)
    prune = actions.add_parser("prune", help="remove unused anonymous volumes (-a: all unused)")
    prune.add_argument("-a", "--all", action="store_true", help="named volumes too")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.set_defaults(handler=command_volume_prune)


def for_each_container(references, action):
    """Run ``action`` on each container; print its reference, or the error.

    Like Docker, one failure does not stop the others, and the exit status
    says whether any failed.
    """
    from minidocker import container

    status = 0
    for reference in references:
        try:
            action(container.find(reference))
            print(reference)
        except host.EngineError as error:
            complain(error)
            status = 1
    return status


def command_stop(arguments):
    from minidocker import container

    return for_each_container(arguments.containers,
                              lambda record: container.stop(record, arguments.time))


def command_restart(arguments):
    from minidocker import container

    return for_each_container(arguments.containers,
                              lambda record: container.restart(record, arguments.time))


def command_kill(arguments):
    import signal

    from minidocker import container

    name = arguments.signal.upper()
    try:
        number = int(name) if host.is_decimal(name) else signal.Signals[
            name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise host.EngineError(f"invalid signal: {arguments.signal}")
    if number not in signal.valid_signals():  # 0, or past the kernel's last (SIGRTMAX)
        raise host.EngineError(f"invalid signal: {arguments.signal}")
    return for_each_container(arguments.containers,
                              lambda record: container.kill(record, number))


def command_wait(arguments):
    from minidocker import container

    status = 0
    for reference in arguments.containers:
        try:
            print(container.wait(container.find(reference)), flush=True)
        except host.EngineError as error:
            complain(error)
            status = 1
    return status


def command_rename(arguments):
    from minidocker import container

    container.rename(container.find(arguments.container), arguments.new_name)
    return 0


def command_attach(arguments):
    from minidocker import container

    record = container.find(arguments.container)
    if not record.is_running():
        raise host.EngineError("You cannot attach to a stopped container, start it first",
                               exit_code=1)
    return attach_to(record, send_input=not arguments.no_stdin,
                     detach_keys=parse_detach_keys(arguments.detach_keys))


def attach_to(record, send_input=True, detach_keys=None):
    """Attach the caller's terminal to a running container through its monitor's socket.

    Returns the container's exit code once its output ends, or 0 when the
    user detached.
    """
    from minidocker import container, logs

    tty = record.config["Config"]["Tty"]
    send_input = send_input and record.config["Config"]["OpenStdin"]
    if tty and send_input and not os.isatty(0):
        raise host.EngineError("the input device is not a TTY", exit_code=1)
    saved = None
    if tty and send_input:
        import termios
        import tty as terminal

        saved = termios.tcgetattr(0)
        terminal.setraw(0)
    try:
        with container.short_path(record.directory) as directory:
            detached, exit_code = logs.attach(
                os.path.join(directory, container.ATTACH_SOCKET), tty, send_input=send_input,
                detach_keys=logs.DETACH_KEYS if detach_keys is None else detach_keys)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    if detached:
        print("read escape sequence", file=sys.stderr)
        return 0
    # The monitor says how the container ended (even one --rm removed);
    # a monitor that could not say leaves it to the container's state.
    return exit_code if exit_code is not None else container.wait(record)


def parse_detach_keys(text):
    """Turn ``ctrl-p,ctrl-q`` (Docker's notation) into the bytes the terminal sends."""
    keys = b""
    for key in text.split(","):
        if key.startswith("ctrl-") and len(key) == 6 and key[5] in "abcdefghijklmnopqrstuvwxyz@[\\]^_":
            keys += bytes([ord(key[5].upper()) & 0x1F])
        elif len(key) == 1:
            keys += key.encode()
        else:
            raise host.EngineError(f"invalid detach keys: {text!r}")
    return keys


def command_exec(arguments):
    from minidocker import container

    if not arguments.command:
        raise host.EngineError("exec needs a command to run")
    if arguments.tty and arguments.interactive and not arguments.detach and not os.isatty(0):
        raise host.EngineError("the input device is not a TTY", exit_code=1)
    record = container.find(arguments.container)
    size = saved = None
    if arguments.tty and not arguments.detach and os.isatty(0):
        import termios
        import tty

        size = os.get_terminal_size(0)
        size = (size.lines, size.columns)
        if arguments.interactive:
            saved = termios.tcgetattr(0)
            tty.setraw(0)
    try:
        return container.execute(record, arguments.command, interactive=arguments.interactive,
                                 tty=arguments.tty, env=arguments.env, workdir=arguments.workdir,
                                 user=arguments.user, detach=arguments.detach,
                                 terminal_size=size)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def command_container_prune(arguments):
    from minidocker import container

    sizes = {record.id: disk_usage(record.directory) for record in container.all_containers()}
    removed = container.prune()
    print_pruned("Deleted Containers:", removed, sum(sizes[identifier] for identifier in removed))
    return 0


def print_pruned(title, removed, size):
    """Docker's prune report: what went, then the space it freed."""
    if removed:
        print(title, *removed, "", sep="\n")
    print(f"Total reclaimed space: {human_size(size)}")


def disk_usage(directory):
    """Bytes used by the files under ``directory`` (not following links)."""
    total = 0
    for current, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(current, name)).st_size
            except FileNotFoundError:
                continue
    return total


def command_volume_create(arguments):
    from minidocker import volume

    labels = dict(label.partition("=")[::2] for label in arguments.label)
    print(volume.create(arguments.name, labels=labels).name)
    return 0


def command_volume_ls(arguments):
    from minidocker import volume

    names = [found.name for found in volume.all_volumes()]
    if arguments.quiet:
        print(*names, sep="\n") if names else None
        return 0
    print_table(["DRIVER", "VOLUME NAME"], [["local", name] for name in names])
    return 0


def command_volume_inspect(arguments):
    from minidocker import volume

    results, status = [], 0
    for name in arguments.names:
        try:
            results.append(volume.get(name).inspect())
        except host.EngineError as error:
            complain(error)
            status = 1
    print_inspected(results)
    return status


def command_volume_rm(arguments):
    from minidocker import container, volume

    status = 0
    for name in arguments.names:
        try:
            found = volume.find(name)
            if found is None:
                if arguments.force:
                    continue
                volume.get(name)
            users = container.volume_users(found.name)
            if users:
                raise host.EngineError(
                    f"remove {name}: volume is in use - [{', '.join(user.id for user in users)}]",
                    exit_code=1)
            volume.remove(found)
            print(name)
        except host.EngineError as error:
            complain(f"Error response from daemon: {error}")
            status = 1
    return status


def command_volume_prune(arguments):
    from minidocker import container, volume

    removed, size = [], 0
    for found in volume.all_volumes():
        if (arguments.all or found.anonymous) and not container.volume_users(found.name):
            size += disk_usage(found.data)
            volume.remove(found)
            removed.append(found.name)
    print_pruned("Deleted Volumes:", removed, size)
    return 0


# -- printing ----------------------------------------------------------------

def print_table(headers, rows):
    """Print rows in columns separated by three spaces, as Docker does."""
    widths = [max(len(str(value)) for value in column) for column in zip(headers, *rows)]
    for row in [headers, *rows]:
        print("   ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip())


def human_since(timestamp):
    """How long ago ``timestamp`` was, in Docker's words."""
    from minidocker import logs

    if not timestamp or timestamp.startswith("0001"):
        return "Less than a second"
    seconds = max(0.0, (time.time_ns() - logs.parse_timestamp(timestamp)) / 1e9)
    return human_duration(seconds)


def human_duration(seconds):
    """Docker's ``units.HumanDuration``."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = seconds / 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 2:
        return "About an hour"
    if hours < 48:
        return f"{int(hours)} hours"
    if hours < 24 * 7 * 2:
        return f"{int(hours / 24)} days"
    if hours < 24 * 30 * 2:
        return f"{int(hours / 24 / 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{int(hours / 24 / 30)} months"
    return f"{int(hours / 24 / 365)} years"


def binary_size(size):
    """A size in powers of 1024, as Docker prints memory: 1.5MiB, 31.25GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.4g}{unit}"
        size /= 1024


def human_size(size):
    """A size the way Docker prints it: 4.26MB (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{size}B"
        size /= 1000


# -- diff, commit and build (chapter 7) ------------------------------------------

def add_commit_commands(commands):
    """diff, commit, build and ``builder prune``."""
    diff = commands.add_parser("diff", help="list the files a container added, changed or deleted")
    diff.add_argument("container", metavar="CONTAINER")
    diff.set_defaults(handler=command_diff)

    commit = commands.add_parser("commit", help="make a new image from a container's changes")
    commit.add_argument("-m", "--message", default="", help="a commit message")
    commit.add_argument("-a", "--author", default="", help='the author, e.g. "Ada <ada@example.org>"')
    commit.add_argument("-c", "--change", action="append", default=[],
                        help="apply a Dockerfile instruction: " + ", ".join(
                            ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME",
                             "WORKDIR", "STOPSIGNAL")))
    commit.add_argument("-p", "--pause", action="store_true", default=True,
                        help="freeze a running container while committing (default true)")
    commit.add_argument("container", metavar="CONTAINER")
    commit.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    commit.set_defaults(handler=command_commit)

    build = commands.add_parser("build", help="build an image from a Dockerfile")
    build.add_argument("-t", "--tag", action="append", default=[], help="name the image NAME[:TAG]")
    build.add_argument("-f", "--file", help="the Dockerfile (default CONTEXT/Dockerfile)")
    build.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE",
                       help="set a build-time variable")
    build.add_argument("--no-cache", action="store_true", help="do not reuse earlier steps")
    build.add_argument("-q", "--quiet", action="store_true",
                       help="print only the image id, not the steps and their output")
    build.add_argument("context", metavar="CONTEXT", help="the directory a build may copy from")
    build.set_defaults(handler=command_build)

    builder = commands.add_parser("builder", help="manage the build cache")
    actions = builder.add_subparsers(dest="builder_command", metavar="COMMAND", parser_class=Parser)
    prune = actions.add_parser("prune", help="forget the build cache and free its space")
    prune.set_defaults(handler=command_builder_prune)


def command_diff(arguments):
    from minidocker import commit, container

    for kind, path in commit.diff(container.find(arguments.container)):
        print(f"{kind} {path}")
    return 0


def command_commit(arguments):
    from minidocker import commit, container, image

    store = image.Store()
    store.ensure()
    reference = image.Reference.parse(arguments.reference) if arguments.reference else None
    committed = commit.commit(store, container.find(arguments.container), reference,
                              message=arguments.message, author=arguments.author,
                              changes=arguments.change, pause=arguments.pause)
    print(committed.id)
    return 0


def command_build(arguments):
    from minidocker import commit, container, image

    store = image.Store()
    store.ensure()
    build_args = {}
    for entry in arguments.build_arg:
        name, has_value, value = entry.partition("=")
        if has_value:
            build_args[name] = value
        elif name in os.environ:
            build_args[name] = os.environ[name]
    dockerfile = arguments.file or os.path.join(arguments.context, "Dockerfile")
    progress = commit.build(store, arguments.context, dockerfile, containers=container,
                            tags=arguments.tag, build_args=build_args,
                            use_cache=not arguments.no_cache, quiet=arguments.quiet)
    for line in progress:
        if not arguments.quiet:
            print(line, flush=True)
        elif line.startswith("Successfully built"):
            print(line.split()[-1])
    return 0


def command_builder_prune(arguments):
    from minidocker import commit, container, image

    store = image.Store()
    count = commit.forget_build_cache(store)
    in_use = {directory for record in container.all_containers()
              for directory in record.config.get("LayerDirectories", [])}
    store.remove_unused(keep_directories=in_use)
    print(f"Deleted build cache objects: {count}")
    return 0


# -- networks (chapter 5) ------------------------------------------------------

def add_network_commands(commands):
    """network create, ls, inspect, rm."""
    group = commands.add_parser("network", help="manage networks (create, ls, inspect, rm)")
    actions = group.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    create = actions.add_parser("create", help="create a bridge network")
    create.add_argument("--subnet", help="the network's IPv4 subnet, e.g. 10.20.0.0/24")
    create.add_argument("--gateway", help="the bridge's address in the subnet")
    create.add_argument("-d", "--driver", default="bridge", help="only bridge is supported")
    create.add_argument("name", metavar="NAME")
    create.set_defaults(handler=command_network_create)
    for name in ("ls", "list"):
        listing = actions.add_parser(name, help="list networks")
        listing.add_argument("-q", "--quiet", action="store_true", help="only print ids")
        listing.add_argument("--no-trunc", action="store_true", help="do not shorten ids")
        listing.set_defaults(handler=command_network_ls)
    inspect = actions.add_parser("inspect", help="show networks' details as JSON")
    inspect.add_argument("names", nargs="+", metavar="NETWORK")
    inspect.set_defaults(handler=command_network_inspect)
    for name in ("rm", "remove"):
        remove = actions.add_parser(name, help="remove networks no container uses")
        remove.add_argument("names", nargs="+", metavar="NETWORK")
        remove.set_defaults(handler=command_network_rm)
    prune = actions.add_parser("prune", help="remove all user-defined networks no container uses")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.set_defaults(handler=command_network_prune)


def command_network_create(arguments):
    from minidocker import network

    record = network.create_network(arguments.name, subnet=arguments.subnet,
                                    gateway=arguments.gateway, driver=arguments.driver)
    print(record["Id"])
    return 0


def command_network_ls(arguments):
    from minidocker import network

    records = network.list_networks()
    if arguments.quiet:
        for record in records:
            print(record["Id"] if arguments.no_trunc else record["Id"][:12])
        return 0
    print_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                [[record["Id"] if arguments.no_trunc else record["Id"][:12], record["Name"],
                  record["Driver"], "local"] for record in records])
    return 0


def command_network_inspect(arguments):
    from minidocker import network

    results, status = [], 0
    for name in arguments.names:
        try:
            results.append(network.inspect_network(name))
        except host.EngineError:
            complain(f"Error: No such network: {name}")
            status = 1
    print_inspected(results)
    return status


def command_network_rm(arguments):
    from minidocker import network

    status = 0
    for name in arguments.names:
        try:
            network.remove_network(name)
            print(name)
        except host.EngineError as error:
            complain(error)
            status = error.exit_code
    return status


def command_network_prune(arguments):
    from minidocker import network

    removed = network.prune_networks()
    if removed:
        print("Deleted Networks:", *removed, sep="\n")
    return 0


# -- the whole engine root ----------------------------------------------------

def add_system_commands(commands):
    """system reset (podman's command; Docker has none)."""
    group = commands.add_parser("system", help="manage the engine root (reset)")
    actions = group.add_subparsers(dest="system_command", metavar="COMMAND", parser_class=Parser)
    reset = actions.add_parser("reset", help="remove all containers, images, volumes and networks")
    reset.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(handler=command_system_reset)


RESET_WARNING = """WARNING! This will remove:
        - all containers
        - all images
        - all networks, their bridges and their rules
        - all volumes
        - everything else the engine keeps in its root: "{root}"
Are you sure you want to continue? [y/N] """

#: What the engine keeps in its root, by the module that writes it:
#: container.py, image.py, rootfs.py (the init layer, and its draft while
#: it is made), network.py, volume.py, registry.py (login, settings,
#: certificates).  ``system reset`` removes these and nothing else, so a
#: mistaken --root (a home directory, "/") loses nothing that is not ours.
ENGINE_ENTRIES = {"containers", "names", "names.lock", "names.new", "images", "images.lock",
                  "layers", "init-layer", "networks", "volumes", "auth.json", "daemon.json",
                  "certs.d"}


def command_system_reset(arguments):
    """Empty the engine root: containers (as rm -f), networks, then the engine's files.

    Volumes and images are files under the root; containers and networks
    also hold host objects (mounts, cgroups, bridges, rules), so they are
    removed through the engine first.  Files the engine did not make
    (:data:`ENGINE_ENTRIES`) stay, and a line on standard error names them.
    """
    from minidocker import container, network, rootfs

    root = host.engine_root()
    if not arguments.force and not confirmed(RESET_WARNING.format(root=root)):
        return 0
    if not os.path.isdir(root):
        return 0
    for record in container.all_containers():
        container.remove(record, force=True, volumes=True)
    network.remove_all_networks()
    inside = os.path.realpath(root) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        mounted = [line.split()[4] for line in mountinfo if line.split()[4].startswith(inside)]
    if mounted:
        # Deleting a tree with a mount inside deletes what is mounted there.
        raise host.EngineError(f"{mounted[0]} is still mounted: the rest of {root} is kept")
    kept = []
    for entry in sorted(os.listdir(root)):
        if entry in ENGINE_ENTRIES or entry.startswith("init-layer.draft-"):
            rootfs.remove_path(os.path.join(root, entry))
        else:
            kept.append(entry)
    if kept:
        complain(f"kept what is not the engine's in {root}: {', '.join(kept[:5])}"
                 f"{' ...' if len(kept) > 5 else ''}")
    return 0


def confirmed(question):
    """Ask ``question``; say whether the answer starts with y or Y, as podman does."""
    print(question, end="", flush=True)
    answer = sys.stdin.readline()
    if not answer:
        raise host.EngineError("no answer on standard input: nothing was removed "
                               "(--force removes without asking)", exit_code=1)
    return answer[:1].lower() == "y"

"""The command line: Docker's commands and flags, and the only place that prints tables.

Each ``command_*`` function takes the parsed arguments and returns the exit
status.  Errors the engine raises (:class:`~minidocker.host.EngineError`)
become one line on standard error and Docker's exit codes: 125 when the
engine failed or was given bad input, 126 when the command cannot be
invoked, 127 when it cannot be found.
"""

import argparse
import json
import os
import sys
import time

from minidocker import host


class Parser(argparse.ArgumentParser):
    """An argument parser that fails the Docker way: one line, exit 125."""

    def error(self, message):
        sys.stderr.write(f"minidocker: {message}\nSee 'minidocker {self.prog.split()[-1]} --help'.\n")
        sys.exit(125)


def build_parser():
    parser = Parser(prog="minidocker", description="A Docker-like container engine, written to be read.")
    parser.add_argument("--root", help="engine root (default /var/lib/minidocker, or $MINIDOCKER_ROOT)")
    parser.add_argument("--trace", action="store_true",
                        help="narrate every host action, tagged with its chapter")
    parser.add_argument("--step", action="store_true",
                        help="with --trace, wait for Enter before each host action")
    parser.add_argument("--storage-driver", choices=("overlay", "vfs"),
                        help="how container filesystems are made (default: overlay if the kernel has it)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    run = commands.add_parser("run", help="create and start a container", add_help=False)
    add_create_options(run)
    run.add_argument("-d", "--detach", action="store_true", help="run in the background, print its id")
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
    start.add_argument("containers", nargs="+", metavar="CONTAINER")
    start.set_defaults(handler=command_start)

    ps = commands.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true", help="show all containers, not just running ones")
    ps.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    ps.add_argument("--no-trunc", action="store_true", help="do not shorten ids and commands")
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
    logs.add_argument("container", metavar="CONTAINER")
    logs.set_defaults(handler=command_logs)

    images = commands.add_parser("images", help="list images")
    images.add_argument("-q", "--quiet", action="store_true", help="only print image ids")
    images.add_argument("--no-trunc", action="store_true", help="do not shorten ids")
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
    return parser


def add_create_options(parser):
    parser.add_argument("--name", help="assign a name to the container")
    parser.add_argument("-h", "--hostname", help="the container's host name")
    parser.add_argument("--help", action="help", help="show this help and exit")  # -h is --hostname
    parser.add_argument("-e", "--env", action="append", default=[], help="set an environment variable")
    parser.add_argument("--env-file", dest="env_files", action="append", default=[],
                        help="read environment variables from a file")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-u", "--user", help="user name or UID, optionally :group or :GID")
    parser.add_argument("-v", "--volume", dest="volumes", action="append", default=[],
                        help="bind a host path: SOURCE:DESTINATION[:ro]")
    parser.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep standard input open")
    parser.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    parser.add_argument("--entrypoint", help="override the image's entrypoint")
    parser.add_argument("--network", "--net", default="none", help="network mode: none")
    parser.add_argument("-m", "--memory", type=size_argument, help="memory limit (e.g. 32m, 1g)")
    parser.add_argument("--memory-swap", type=swap_argument,
                        help="memory plus swap limit; -1 for unlimited swap")
    parser.add_argument("--cpus", type=cpus_argument, help="number of CPUs (e.g. 0.5)")
    parser.add_argument("-c", "--cpu-shares", type=int, help="relative CPU weight (default 1024)")
    parser.add_argument("--cpuset-cpus", help="CPUs the container may run on (e.g. 0-1,3)")
    parser.add_argument("--pids-limit", type=int, help="most processes at once (-1 for unlimited)")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def size_argument(text):
    """argparse type for -m: Docker's sizes (b, k, m, g)."""
    from minidocker import cgroup

    try:
        return cgroup.parse_bytes(text)
    except host.EngineError as error:
        raise argparse.ArgumentTypeError(str(error))


def swap_argument(text):
    """argparse type for --memory-swap: a size, or -1."""
    from minidocker import cgroup

    try:
        return cgroup.parse_memory_swap(text)
    except host.EngineError as error:
        raise argparse.ArgumentTypeError(str(error))


def cpus_argument(text):
    """argparse type for --cpus: a decimal number of CPUs."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"failed to parse {text} as a rational number")


def main(argv=None):
    """Run one command; return its exit status (also used by the console script)."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.root:
        os.environ["MINIDOCKER_ROOT"] = os.path.abspath(arguments.root)
    if arguments.storage_driver:
        os.environ["MINIDOCKER_STORAGE_DRIVER"] = arguments.storage_driver
    if arguments.trace or arguments.step:
        host.enable_trace(step=arguments.step)
    if not getattr(arguments, "handler", None):
        parser.print_help()
        return 0
    if os.geteuid() != 0:
        print("minidocker: this command needs root (try sudo)", file=sys.stderr)
        return 125
    try:
        return arguments.handler(arguments)
    except host.EngineError as error:
        print(f"minidocker: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


# -- containers ------------------------------------------------------------

def create_options(arguments):
    return {name: getattr(arguments, name, None) for name in (
        "name", "hostname", "env", "env_files", "workdir", "user", "volumes", "read_only",
        "interactive", "tty", "entrypoint", "network", "auto_remove", "command",
        "memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "pids_limit")}


def new_container(arguments):
    from minidocker import container, image

    store = image.Store()
    store.ensure()
    return container.create(store, arguments.image, create_options(arguments))


def command_run(arguments):
    from minidocker import container

    if arguments.tty and not arguments.detach and not os.isatty(0):
        print("minidocker: the input device is not a TTY", file=sys.stderr)
        return 1
    created = new_container(arguments)
    if arguments.detach:
        container.start_detached(created)
        print(created.id)
        return 0
    return run_attached(created)


def run_attached(created):
    """Start a container in the foreground, with the caller's terminal if it has one."""
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
            print(reference)
            continue
        if arguments.attach:
            status = run_attached(found)
            continue
        container.start_detached(found)
        print(reference)
    return status


def command_ps(arguments):
    from minidocker import container

    rows = []
    for record in container.all_containers():
        container.release_abandoned(record)
        status = record.status()
        if status != "running" and not arguments.all:
            continue
        if arguments.quiet:
            print(record.id if arguments.no_trunc else record.id[:12])
            continue
        command = " ".join([record.config["Path"], *record.config["Args"]])
        if not arguments.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        rows.append([record.id if arguments.no_trunc else record.id[:12],
                     record.config["Config"]["Image"], f'"{command}"',
                     human_since(record.config["Created"]) + " ago",
                     describe_status(record, status), "", record.name])
    if not arguments.quiet:
        print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)
    return 0


def describe_status(record, status):
    if status == "running":
        return "Up " + human_since(record.state["StartedAt"])
    if status == "exited":
        return f"Exited ({record.state.get('ExitCode', 0)}) {human_since(record.state['FinishedAt'])} ago"
    return status.capitalize()


def command_rm(arguments):
    from minidocker import container

    status = 0
    for reference in arguments.containers:
        try:
            container.remove(container.find(reference), force=arguments.force)
            print(reference)
        except host.EngineError as error:
            print(f"minidocker: {error}", file=sys.stderr)
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
            details.pop("LayerDirectories", None)
            results.append(details)
            continue
        except host.EngineError:
            pass
        try:
            found = image.Store().lookup(name)
            results.append({"Id": found.id, "RepoTags": found.names(),
                            "RepoDigests": [], "Created": found.config.get("created"),
                            "Architecture": found.config.get("architecture"),
                            "Os": found.config.get("os"), "Config": found.run_config,
                            "RootFS": {"Type": "layers", "Layers": found.diff_ids},
                            "Size": found.size()})
        except host.EngineError:
            print(f"minidocker: Error: No such object: {name}", file=sys.stderr)
            status = 1
    print(json.dumps(results, indent=4))
    return status


def command_logs(arguments):
    from minidocker import container, logs

    record = container.find(arguments.container)
    for stream, data, _ in logs.read_entries(record.log_path):
        target = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
        target.write(data)
    return 0


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

    store = image.Store()
    rows = []
    for reference, digest in store.images():
        found = store.image(digest)
        identifier = found.id.removeprefix("sha256:")
        if arguments.quiet:
            print(identifier if arguments.no_trunc else identifier[:12])
            continue
        repository = reference.familiar_repository if reference else "<none>"
        tag = reference.tag if reference and reference.tag else "<none>"
        rows.append([repository, tag, identifier if arguments.no_trunc else identifier[:12],
                     human_since(found.config.get("created")) + " ago",
                     human_size(found.size())])
    if not arguments.quiet:
        print_table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def command_rmi(arguments):
    from minidocker import container, image

    store = image.Store()
    status = 0
    for name in arguments.images:
        try:
            found = store.lookup(name)
            users = [record for record in container.all_containers() if record.config["Image"] == found.id]
            if users and not arguments.force:
                raise host.EngineError(
                    f"conflict: unable to remove repository reference \"{name}\" (must force) - "
                    f"container {users[0].id[:12]} is using its referenced image {found.id[7:19]}",
                    exit_code=1)
            for reference, digest in store.images():
                if digest == found.digest and reference:
                    store.untag(reference)
                    print(f"Untagged: {reference.familiar()}")
            print(f"Deleted: {found.id}")
        except host.EngineError as error:
            print(f"minidocker: Error response: {error}", file=sys.stderr)
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
    """Turn ``--change 'CMD ["sh"]'`` lines into image config fields."""
    import shlex

    config = {}
    for instruction in instructions:
        keyword, _, value = instruction.strip().partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword in ("CMD", "ENTRYPOINT"):
            config[keyword.title()] = \
                json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
        elif keyword == "ENV":
            name, _, rest = value.partition("=") if "=" in value.split(" ")[0] else value.partition(" ")
            config.setdefault("Env", []).append(f"{name}={rest.strip()}")
        elif keyword == "WORKDIR":
            config["WorkingDir"] = value
        elif keyword == "USER":
            config["User"] = value
        else:
            raise host.EngineError(f"{keyword} is not a supported change: use CMD, ENTRYPOINT, ENV, "
                                   "WORKDIR or USER")
    return config


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

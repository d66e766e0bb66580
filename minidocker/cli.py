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
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


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
        "interactive", "tty", "entrypoint", "network", "auto_remove", "command")}


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


def human_size(size):
    """A size the way Docker prints it: 4.26MB (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{size}B"
        size /= 1000

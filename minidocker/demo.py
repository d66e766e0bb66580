"""``minidocker demo``: the whole course in a few minutes, on one busybox image.

Made for a live class.  The demo makes a throw-away engine root, builds a
busybox image from the host's ``/bin/busybox`` (the way the test suite
does), and plays one short scene per chapter: each scene prints the command
it runs, ``$ minidocker ...``, then what the command printed.  With
``minidocker --trace demo`` every host action of every command is narrated
with its chapter; ``--step`` waits for Enter before each one.

The demo drives the engine only through its command line, as a user would,
and plays a scene only when this engine has the commands it needs, so it
runs on every stage of the course.  At the end every container, network and
image it made is removed with the engine root; ``--keep`` keeps the root
to look around in.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from minidocker import host

#: The scenes in the order they are played.  A scene: its chapter, its
#: title, what to say first, the commands it needs, and the steps, each
#: ``(arguments, expected exit status)``.
SCENES = (
    (0, "an image to play with", "A root filesystem from /bin/busybox, imported as an image.",
     ("import",), (
         (("import", "{tarball}", "busybox"), 0),
     )),
    (1, "namespaces", "PID 1, its own hostname, only a loopback interface.",
     ("run",), (
         (("run", "--rm", "busybox", "echo", "hello from a container"), 0),
         (("run", "--rm", "--network", "none", "--hostname", "island", "busybox", "sh", "-c",
           'echo "I am PID $$ on $(hostname)"; ps -o pid,comm; ip -o link | cut -d: -f2'), 0),
     )),
    (2, "cgroups", "A memory limit with no swap: the kernel's OOM killer ends it (137).",
     ("run", "--memory", "--memory-swap"), (
         (("run", "--rm", "--memory", "16m", "--memory-swap", "16m", "busybox", "sh", "-c",
           "echo filling 64 MB into 16 MB; head -c 64m /dev/zero | tail"), 137),
     )),
    (3, "the root filesystem", "Copy-on-write: a container deletes ls; the image still has it.",
     ("run",), (
         (("run", "--rm", "busybox", "sh", "-c", "echo /*; rm /bin/ls && echo removed /bin/ls"), 0),
         (("run", "--rm", "busybox", "ls", "-l", "/bin/ls"), 0),
         (("run", "--rm", "--read-only", "busybox", "touch", "/file"), 1),
     )),
    (4, "images", "An image is layers plus a config, named by digests; a tag is just a name.",
     ("images", "tag", "history"), (
         (("tag", "busybox", "demo:v1"), 0),
         (("images",), 0),
         (("history", "demo:v1"), 0),
         (("rmi", "demo:v1"), 0),
     )),
    (5, "networking", "Two containers on one bridge: a web server and a client that finds it by name.",
     ("network", "run", "--network"), (
         (("network", "create", "demo-net"), 0),
         (("run", "-d", "--network", "demo-net", "--name", "demo-web", "busybox",
           "httpd", "-f", "-p", "80", "-h", "/var/www"), 0),
         (("run", "--rm", "--network", "demo-net", "busybox", "sh", "-c",
           "sleep 0.3; wget -q -O - http://demo-web/"), 0),
         (("rm", "-f", "demo-web"), 0),
         (("network", "rm", "demo-net"), 0),
     )),
    (6, "logging and the lifecycle", "A detached container, its monitor's log, both streams.",
     ("run", "logs", "wait"), (
         (("run", "-d", "--name", "demo-talker", "busybox", "sh", "-c",
           "echo to stdout; echo to stderr >&2"), 0),
         (("wait", "demo-talker"), 0),
         (("logs", "demo-talker"), 0),
         (("ps", "-a"), 0),
         (("rm", "demo-talker"), 0),
     )),
    (7, "commit", "The upper directory is the container's diff; commit makes it a layer.",
     ("run", "diff", "commit"), (
         (("run", "--name", "demo-changer", "busybox", "sh", "-c",
           "echo hello from a new layer > /greeting; rm /bin/ls"), 0),
         (("diff", "demo-changer"), 0),
         (("commit", "demo-changer", "demo:committed"), 0),
         (("run", "--rm", "demo:committed", "cat", "/greeting"), 0),
         (("rm", "demo-changer"), 0),
         (("rmi", "demo:committed"), 0),
     )),
)

#: The files of the demo image besides busybox and its applet links.
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "var/www/index.html": "hello from minidocker's web server\n",
}


def main(keep=False):
    """Play every scene this engine can; return 0, or raise :class:`host.EngineError`."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise host.EngineError("the demo builds its image from busybox: install busybox-static")
    root = tempfile.mkdtemp(prefix="minidocker-demo-")
    available = available_commands()
    networks = []
    try:
        tarball = make_busybox_tarball(busybox, os.path.join(root, "busybox.tar"))
        for chapter, title, story, needs, steps in SCENES:
            play(chapter, title, story, needs, steps, root, tarball, available, networks)
    finally:
        clean_up(root, keep, networks)
    say("\nThat was the course. Read it in order: chapters/README.md")
    return 0


def play(chapter, title, story, needs, steps, root, tarball, available, networks):
    """Play one scene, or say which commands this engine still lacks for it.

    Networks the scene creates are added to ``networks`` (and taken off
    when it removes them), so that a failed scene leaves none behind.
    """
    say(f"\n== Chapter {chapter}: {title}\n{story}")
    missing = [need for need in needs if need not in available]
    if missing:
        say(f"(this engine has no {', '.join(missing)} yet: the scene is skipped)")
        return
    if host.tracing():
        host.narrate(0, f"chapter {chapter} begins")
    for arguments, expected in steps:
        arguments = [argument.format(tarball=tarball) for argument in arguments]
        status = minidocker(root, arguments)
        if arguments[:2] == ["network", "create"] and status == 0:
            networks.append(arguments[-1])
        if arguments[:2] == ["network", "rm"] and status == 0:
            networks.remove(arguments[-1])
        if status != expected:
            raise host.EngineError(f"the demo's command 'minidocker {' '.join(arguments)}' "
                                   f"exited {status}, not {expected}")


def minidocker(root, arguments):
    """Show and run one command against the demo's engine root; return its status."""
    say("$ minidocker " + " ".join(quote(argument) for argument in arguments))
    environment = dict(os.environ, MINIDOCKER_ROOT=root)
    result = subprocess.run([sys.executable, "-m", "minidocker", *arguments], env=environment)
    if result.returncode != 0:
        say(f"(exit status {result.returncode})")
    return result.returncode


def available_commands():
    """Return the engine's commands and run options, read from its parser."""
    from minidocker import cli

    commands = cli.build_parser().commands
    names = set(commands.parsers)
    for option in commands.parsers["run"].options:
        names.update(option.names)
    return names


def make_busybox_tarball(busybox, path):
    """Write a root filesystem tarball: busybox, a link per applet, a few files."""
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory(prefix="minidocker-demo-rootfs-") as rootfs:
        for name in ("bin", "etc", "tmp", "root", "var/www"):
            os.makedirs(os.path.join(rootfs, name), exist_ok=True)
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
        for applet in applets.stdout.split():
            link = os.path.join(rootfs, "bin", applet)
            if applet != "busybox" and not os.path.lexists(link):
                os.symlink("busybox", link)
        for name, text in FILES.items():
            with open(os.path.join(rootfs, name), "w") as handle:
                handle.write(text)
        with tarfile.open(path, "w") as archive:
            for entry in sorted(os.listdir(rootfs)):
                archive.add(os.path.join(rootfs, entry), arcname=entry)
    return path


def clean_up(root, keep, networks):
    """Remove what the scenes made, even after a failed one, then the root."""
    environment = dict(os.environ, MINIDOCKER_ROOT=root)
    command = [sys.executable, "-m", "minidocker"]
    left = subprocess.run(command + ["ps", "-aq"], env=environment, capture_output=True,
                          text=True).stdout.split()
    if left:
        subprocess.run(command + ["rm", "-f", *left], env=environment, stdout=subprocess.DEVNULL)
    for network in networks:
        subprocess.run(command + ["network", "rm", network], env=environment,
                       stdout=subprocess.DEVNULL)
    if keep:
        say(f"\nThe demo's engine root is kept: MINIDOCKER_ROOT={root} "
            "('minidocker system reset' removes it all, the bridge too)")
        return
    # The default network's bridge outlives the containers; reset takes it down.
    subprocess.run(command + ["system", "reset", "--force"], env=environment,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # "kept busybox.tar"
    shutil.rmtree(root)


def quote(argument):
    import shlex

    return shlex.quote(argument)


def say(text):
    print(text, flush=True)

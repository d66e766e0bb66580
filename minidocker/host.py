"""The single door between minidocker and the host.

Every action that touches the kernel or runs one of the host's tools goes
through this module: running ``mount``, ``ip`` or ``iptables``, writing a
cgroup file, calling ``unshare(2)``, making a device node.  Keeping them in
one place has two uses:

* ``minidocker --trace`` prints each action as it happens, tagged with the
  chapter that explains it, so an instructor can narrate a run;
* a reader who wants to know "what does this engine really do to my
  machine?" has exactly one file to read.

The module also holds the few helpers every other module shares: the engine
root, the engine's error type, atomic state files, JSON, file locks and the
rule for names.

A note on the imports of the start path.  Every ``run`` pays for what its
modules import, before the container does anything, and on the reference
machine a few everyday modules cost more than the engine's own work:

* ``import socket`` costs about 4 ms, most of it spent building enum
  classes (AddressFamily, SocketKind, ...) that make its constants print
  nicely.  Its C core, ``_socket``, makes the same socket objects and has
  the same functions (socket(2), socketpair(2), sethostname(2),
  inet_aton(3)).  ``signal`` and ``_signal`` are the same story.
* ``import json`` imports ``re`` (and with it ``enum``, ``functools`` and
  ``collections``) and compiles six regular expressions: about 10 ms.  Its
  C core, ``_json``, does the real parsing and writing for ``json`` too;
  :func:`load_json` and :func:`dump_json` call it directly.
* ``contextlib`` brings ``functools`` and ``collections`` along (3 ms), so
  the context managers on the start path are classes.

So the code that starts a container uses the C cores, checks names with
string methods rather than regular expressions, and imports ``re``,
``json``, ``signal`` or ``socket`` only inside the functions that need
them (a ``--hostname`` to check, ``inspect`` output to indent, a registry
to talk to).  ``tests/test_foundation.py`` checks that ``run`` keeps it so.
"""

import _json
import fcntl
import os
import sys

#: The chapter that explains each kind of action; used to tag the trace.
CHAPTERS = {
    0: "engine",
    1: "namespace",
    2: "cgroup",
    3: "rootfs",
    4: "image",
    5: "network",
    6: "logging",
    7: "commit",
    8: "outlook",
}

DEFAULT_ROOT = "/var/lib/minidocker"


class EngineError(Exception):
    """An error the engine reports to the user as one line.

    ``exit_code`` follows Docker: 125 when the engine itself failed or was
    given bad input, 126 when the command cannot be invoked, 127 when it
    cannot be found.
    """

    def __init__(self, message, exit_code=125):
        super().__init__(message)
        self.exit_code = exit_code


# -- narration -----------------------------------------------------------

_trace_fd = None
_step = False


def enable_trace(step=False):
    """Narrate every host action on the current standard error.

    The descriptor is duplicated so that the narration keeps its destination
    after a container process has pointed its own standard error elsewhere.
    With ``step``, wait for Enter before each action (for live demos).
    """
    global _trace_fd, _step
    _trace_fd = os.dup(2)
    _step = step
    os.environ["MINIDOCKER_TRACE"] = "step" if step else "1"


def end_trace():
    """Stop narrating and let go of the duplicated standard error.

    A detached monitor calls this once the container runs: it may live
    for days, and a reader of the command line's standard error (``run
    -d --trace 2>&1 | cat``) waits until every writer has closed it.
    """
    global _trace_fd
    if _trace_fd is not None:
        os.close(_trace_fd)
        _trace_fd = None


def tracing():
    """Say whether ``--trace`` is on."""
    return _trace_fd is not None


def narrate(chapter, text, details=()):
    """Print one line of the trace: ``[ch3 rootfs] mount --all ...``.

    ``details`` are more lines under it, indented (the mount table's).  On
    a terminal the tag is coloured; into a file or a pipe (and when the
    ``NO_COLOR`` convention asks for it) the line is plain text.
    """
    global _trace_fd
    if _trace_fd is None:
        return
    # Names, commands and header values from images and registries reach
    # the trace: every line is shown escaped, as errors are, so none can
    # repaint the terminal or pass for a line of the trace.
    text = "".join([printable(shorten_for_reading(text)),
                    *(f"\n    {printable(shorten_for_reading(line))}" for line in details)])
    tag = f"ch{chapter} {CHAPTERS[chapter]}"
    if os.isatty(_trace_fd) and not os.environ.get("NO_COLOR"):
        line = f"\033[36m[{tag}]\033[0m {text}\n"
    else:
        line = f"[{tag}] {text}\n"
    try:
        os.write(_trace_fd, line.encode(errors="replace"))
    except OSError:
        # The reader went away (``--trace ... | head``): stop narrating
        # rather than abort the action, or its clean-up, half way.
        _trace_fd = None
        return
    if _step:
        _wait_for_enter()


def printable(text):
    """Show ``text`` on one line: what is not printable is escaped, as Go's %q would."""
    return "".join(character if character.isprintable() else repr(character)[1:-1]
                   for character in text)


_LONG_ID = None


def shorten_for_reading(text):
    """Make a trace line readable aloud: ``$ROOT`` for the engine root, short ids.

    Container and layer ids are 64 hex digits; like ``docker ps``, the
    trace shows their first 12.
    """
    global _LONG_ID
    import re

    if _LONG_ID is None:
        _LONG_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")
    return _LONG_ID.sub(r"\1", text.replace(engine_root(), "$ROOT"))


def _wait_for_enter():
    """Wait for Enter on the controlling terminal, whatever stdin is.

    Without a terminal (a script, CI) there is nobody to press Enter: say
    so once and go on, rather than hang or fail the command.
    """
    global _step
    try:
        with open("/dev/tty", "rb", buffering=0) as terminal:
            os.write(_trace_fd, b"    (Enter to go on) ")
            terminal.readline()
    except OSError as error:
        os.write(_trace_fd, f"    (--step: no terminal to wait on ({error.strerror}); "
                            "going on without pauses)\n".encode())
        _step = False


def _restore_trace_from_environment():
    # A monitor started for ``run -d`` is a new process; it learns about
    # --trace from the environment the CLI left for it.
    mode = os.environ.get("MINIDOCKER_TRACE")
    if mode and _trace_fd is None and sys.stderr is not None:
        enable_trace(step=(mode == "step"))


_restore_trace_from_environment()


# -- the actions ---------------------------------------------------------

class Completed:
    """What a host tool did: ``returncode``, and its ``stdout`` and ``stderr`` bytes."""

    def __init__(self, argv, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr


def tool_path(name):
    """Return where the host tool ``name`` is, searched in $PATH as a shell would."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    raise EngineError(f"the host tool {name!r} is not installed")


def run(argv, chapter, *, check=True, capture=False, input=None, env=None):
    """Run one of the host's tools and return a :class:`Completed`.

    With ``check`` a non-zero exit becomes an :class:`EngineError` carrying
    the tool's own complaint, so a failed ``mount`` reads as that.  The
    tool is started with ``posix_spawn(3)``, which needs none of the
    ``subprocess`` module's machinery (and its ~9 ms of imports per run),
    in the C locale: the engine reads what tools say (a failure's first
    line, ``iptables-save``), which must not depend on the user's language
    (and a tool then loads no locale files).
    """
    narrate(chapter, " ".join(argv))
    stdin_read, stdin_write = os.pipe() if input is not None else (None, None)
    stdout_read, stdout_write = os.pipe() if capture else (None, None)
    stderr_read, stderr_write = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, stdin_read, 0) if input is not None
               else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, stdout_write, 1) if capture
               else (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
               (os.POSIX_SPAWN_DUP2, stderr_write, 2)]
    try:
        pid = os.posix_spawnp(argv[0], argv,
                              dict(os.environ if env is None else env, LC_ALL="C"),
                              file_actions=actions)
    except FileNotFoundError:
        raise EngineError(f"the host tool {argv[0]!r} is not installed")
    finally:
        for descriptor in (stdin_read, stdout_write, stderr_write):
            if descriptor is not None:
                os.close(descriptor)
    output = _exchange(stdin_write, input, stdout_read, stderr_read)
    _, status = os.waitpid(pid, 0)
    result = Completed(argv, os.waitstatus_to_exitcode(status),
                       output.get(stdout_read, b""), output[stderr_read])
    if check and result.returncode != 0:
        complaint = result.stderr.decode(errors="replace").strip().splitlines()
        detail = complaint[0] if complaint else f"exit status {result.returncode}"
        raise EngineError(f"{argv[0]} failed: {detail}")
    return result


def _exchange(stdin_write, input, *outputs):
    """Feed ``input`` to a tool and collect its outputs until it closes them.

    Both directions at once, so a tool that writes a lot before reading
    everything cannot block us (nor we it).
    """
    import select

    collected = {descriptor: b"" for descriptor in outputs if descriptor is not None}
    reading = list(collected)
    pending = memoryview(input or b"")
    writing = [stdin_write] if stdin_write is not None else []
    if writing and not pending:
        os.close(stdin_write)
        writing = []
    while reading or writing:
        readable, writable, _ = select.select(reading, writing, [])
        for descriptor in readable:
            chunk = os.read(descriptor, 65536)
            if chunk:
                collected[descriptor] += chunk
            else:
                reading.remove(descriptor)
                os.close(descriptor)
        if writable:
            try:
                pending = pending[os.write(stdin_write, pending[:65536]):]
            except BrokenPipeError:
                pending = pending[:0]
            if not pending:
                os.close(stdin_write)
                writing = []
    return collected


def call(chapter, description, function, *args):
    """Make one system call through Python's ``os`` module, narrated."""
    narrate(chapter, description)
    return function(*args)


def write(path, text, chapter):
    """Write a kernel interface file (a cgroup knob, a ``/proc/sys`` key)."""
    narrate(chapter, f"echo {text} > {path}")
    with open(path, "w") as kernel_file:
        kernel_file.write(text)


def make_node(path, mode, major, minor, chapter):
    """Make a device node, as ``mknod(2)`` does."""
    narrate(chapter, f"mknod {path} {major} {minor}")
    os.mknod(path, mode, os.makedev(major, minor))


# -- engine state --------------------------------------------------------

def engine_root():
    """The directory that holds all of minidocker's state.

    ``--root`` on the command line and ``MINIDOCKER_ROOT`` in the
    environment override the default ``/var/lib/minidocker``.
    """
    return os.environ.get("MINIDOCKER_ROOT") or DEFAULT_ROOT


def write_atomically(path, data, durable=True):
    """Replace ``path`` with ``data`` so that a reader never sees half of it.

    rename(2): "If newpath already exists, it will be atomically replaced,
    so that there is no point at which another process attempting to access
    newpath will find it missing."  With ``durable`` an fsync before the
    rename makes the new content survive a power cut too; a container's
    running state, which no process outlives a power cut to use, skips it.
    """
    if isinstance(data, str):
        data = data.encode()
    temporary = f"{path}.tmp{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(descriptor, data)
        if durable:
            os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    os.close(descriptor)
    os.rename(temporary, path)


def write_all(descriptor, data):
    """Write all of ``data`` to ``descriptor``.

    write(2) "may write fewer bytes than requested" (on a nearly full
    filesystem, say); the next call then writes the rest, or reports why not.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


class locked:
    """Hold an exclusive ``fcntl`` lock on ``path`` for a ``with`` block.

    Shared allocations (names, addresses, ports, tags) are read and changed
    only while holding their lock, so parallel commands never collide.  The
    kernel drops the lock if the holder dies, so a killed CLI cannot wedge
    the engine.
    """

    def __init__(self, path):
        self.path = path
        self.descriptor = None

    def __enter__(self):
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exception):
        os.close(self.descriptor)
        self.descriptor = None


# -- JSON, through json's C core (see the note at the top) -----------------

class _Decoding:
    """The settings ``_json``'s scanner reads, as ``json.loads`` sets them by default."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                      "-Infinity": float("-inf")}.__getitem__


def _not_json(value):
    raise TypeError(f"{type(value).__name__} is not JSON")


_scan_json = _json.make_scanner(_Decoding)
#: Arguments: circular-reference markers (none), the fallback for unknown
#: types, the string encoder, indent (unsupported), the separators, sort
#: keys, skip keys whose type JSON lacks, allow NaN.  With these, the
#: output is byte for byte ``json.dumps(value)`` and, sorted and without
#: spaces, ``json.dumps(value, sort_keys=True, separators=(",", ":"))``.
_encode_json = _json.make_encoder(None, _not_json, _json.encode_basestring_ascii, None,
                                  ": ", ", ", False, False, True)
_encode_canonical_json = _json.make_encoder(None, _not_json, _json.encode_basestring_ascii,
                                            None, ":", ",", True, False, True)
_JSON_SPACE = " \t\n\r"


def load_json(text):
    """Parse a JSON document (``str`` or UTF-8 ``bytes``), as ``json.loads`` does.

    A document that is not JSON raises ``ValueError`` (``json.JSONDecodeError``
    is one) naming the place, as does one nested too deeply for Python's
    stack (``json.loads`` lets that ``RecursionError`` through).
    """
    if isinstance(text, (bytes, bytearray)):
        # A byte order mark first is allowed, as json.loads allows it.  (The
        # "utf-8-sig" codec drops it too, but is a module to import; "utf-8"
        # is built in.)
        text = text.decode("utf-8").removeprefix("\ufeff")
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        value, end = _scan_json(text, start)
    except StopIteration as stop:
        raise ValueError(f"not JSON: expecting a value at character {stop.value}") from None
    except RecursionError:  # "[[[[..." from a hostile registry or archive
        raise ValueError("not JSON the engine reads: nested too deeply") from None
    if text[end:].strip(_JSON_SPACE):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def read_json(path):
    """Parse the JSON file at ``path``."""
    with open(path, "rb") as handle:
        return load_json(handle.read())


def dump_json(value, canonical=False):
    """Return ``value`` as one line of JSON text (ASCII, as ``json.dumps``).

    ``canonical``: keys sorted and no spaces, the form whose SHA-256 names
    an image's config and manifest.  Engine state is written on one line
    too, as Docker writes its ``config.v2.json``; ``python3 -m json.tool
    FILE`` shows one indented.
    """
    return "".join((_encode_canonical_json if canonical else _encode_json)(value, 0))


# -- names and numbers ------------------------------------------------------

#: ``int()`` refuses a text of more digits (CPython's guard against
#: quadratic conversions, ``sys.get_int_max_str_digits()``).
MAX_DIGITS = 4300


def is_decimal(text):
    """Say whether ``text`` is a number in plain decimal that ``int()`` reads.

    ASCII digits, at least one, at most :data:`MAX_DIGITS`.  ``str.isdigit``
    alone is not that check: it also says yes to "²" and "٣", which
    ``int()`` refuses (a traceback) or reads as 3.  Docker's Go code reads
    numbers with strconv, which takes ASCII digits only.  Callers check the
    range they need.
    """
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def valid_name(name):
    """Say whether ``name`` is a valid container or volume name.

    Docker's rule for both (``[a-zA-Z0-9][a-zA-Z0-9_.-]+``, matched whole):
    ASCII letters and digits, then at least one more of those or ``_.-``.
    A valid name is also one harmless file name, never a path.
    """
    return (len(name) >= 2 and name.isascii() and name[0].isalnum()
            and all(character.isalnum() or character in "_.-" for character in name))

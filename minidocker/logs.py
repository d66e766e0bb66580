"""Chapter 6: logging, or who holds the pipes when the command line is gone.

A container's output has to go somewhere even when nobody is watching:
``run -d`` returns at once, the user's terminal may close, and ``logs``
may be asked for it a week later.  So each container has a *monitor*, a
small process that holds the other end of the container's standard
streams, copies what arrives into a log file (and to whoever is attached),
waits for PID 1 and records how it ended.  Docker calls this process a
shim (containerd-shim), podman calls it conmon.

Why a separate process and not the command line?  Because a pipe has to
have a reader.  pipe(7): "If all file descriptors referring to the read end
of a pipe have been closed, then a write(2) will cause a SIGPIPE signal to
be generated for the calling process."  If the ``run -d`` command held the
pipes, the container would be killed the first time it printed after the
command returned.

The log uses Docker's ``json-file`` format: one JSON object per line, with
the text (``log``), the stream it came from (``stream``) and the time it
arrived, with nanoseconds (``time``)::

    {"log":"hello\\n","stream":"stdout","time":"2026-11-28T10:00:00.123456789Z"}

A line is one entry; output that stops before a newline is a *partial*
entry whose ``log`` does not end in ``\\n``, and the next entry carries on.
Bytes that are not UTF-8 are kept exactly: they are written as JSON
``\\udcXX`` escapes (Python's "surrogateescape"), which read back as the
same bytes.  ``--log-opt max-size=10m --log-opt max-file=3`` rotates the
file: ``ID-json.log`` becomes ``ID-json.log.1``, that one ``.2``, and the
oldest is dropped.

The module has three parts, in the order the data flows:

1. :class:`JsonFileWriter` turns output into log entries;
2. :class:`Relay` is the monitor's loop: container output to the log and to
   attached clients, attached input to the container;
3. the readers: :func:`read_entries`, :func:`tail_entries` and
   :func:`follow` for ``logs``, and :func:`attach` for ``attach``.
"""

import os
import select
import struct
import time

from minidocker import host

#: How much the monitor reads from a stream at once.
CHUNK = 1 << 18

#: Docker's attach framing (its "stdcopy" format): one byte for the stream,
#: three zero bytes, and the payload's length as a 32-bit big-endian number.
FRAME = struct.Struct(">BxxxI")
STDIN, STDOUT, STDERR, RESIZE = 0, 1, 2, 3
STREAM_NUMBERS = {"stdout": STDOUT, "stderr": STDERR}
#: The monitor's last frame to a client: the container's exit code (a
#: 32-bit signed number).  Docker's CLI asks its daemon instead; here the
#: monitor says it, so ``run -it --rm`` knows the code of a container that
#: is already removed.
EXIT = 4
EXIT_CODE = struct.Struct(">i")

#: How long a monitor holds the output of a container whose command line
#: is about to attach (``run -it``) before it logs it without a client.
ATTACH_GRACE = 10.0

#: ctrl-p ctrl-q, Docker's default detach keys.
DETACH_KEYS = b"\x10\x11"


def timestamp(nanoseconds=None):
    """Format a time as Docker does in logs: RFC 3339 with nanoseconds, UTC."""
    nanoseconds = time.time_ns() if nanoseconds is None else nanoseconds
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def parse_timestamp(text):
    """Turn a log timestamp back into nanoseconds since the epoch."""
    import calendar

    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


def parse_time_argument(text, now=None):
    """Parse ``--since``/``--until`` as Docker does; return nanoseconds.

    Accepted: a timestamp (``2026-11-28T10:00:00Z``, with or without
    fraction, or just a date), Unix seconds (``1700000000.5``), or a
    duration before now (``10s``, ``5m``, ``1h30m``).
    """
    import re

    now = time.time_ns() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", text):
        whole, _, fraction = text.partition(".")
        return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])
    duration = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms|us|ns))+", text)
    if duration:
        units = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1}
        total = sum(float(number) * units[unit]
                    for number, _, unit in re.findall(r"(\d+(\.\d+)?)(h|m|s|ms|us|ns)", text))
        return now - int(total)
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d)(T\d\d:\d\d(:\d\d(\.\d{1,9})?)?)?(Z)?", text)
    if match:
        date, clock, seconds = match.group(1), match.group(2) or "T00:00", match.group(3)
        return parse_timestamp(date + clock + ("" if seconds else ":00") + "Z")
    raise host.EngineError(f"invalid value for time: {text!r} (use a timestamp, Unix seconds "
                           "or a duration like 10m)")


def parse_size(text):
    """Parse ``max-size`` the way Docker does (binary units: 1k = 1024)."""
    import re

    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", text.strip().lower())
    if not match:
        raise host.EngineError(f"invalid size: '{text}'")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def log_options(options):
    """Check ``--log-opt`` values; return ``(max_size or None, max_files)``."""
    unknown = set(options) - {"max-size", "max-file"}
    if unknown:
        raise host.EngineError(f"unknown log opt '{sorted(unknown)[0]}' for json-file log driver")
    max_size = parse_size(options["max-size"]) if "max-size" in options else None
    try:
        max_files = int(options.get("max-file", "1"))
    except ValueError:
        raise host.EngineError(f"invalid max-file: {options['max-file']!r}")
    if max_files < 1:
        raise host.EngineError("max-file cannot be less than 1")
    if max_files > 1 and max_size is None:
        raise host.EngineError("max-file cannot be set without max-size")
    return max_size, max_files


# -- 1. writing ---------------------------------------------------------------

#: Bytes the JSON escape would change, besides everything outside ASCII:
#: the control characters but the newline, DEL, the quote, the backslash.
ESCAPED_IN_ASCII = bytes([*range(0x0A), *range(0x0B, 0x20), 0x7F, ord('"'), ord("\\")])


def encode_entries(data, stream, time_text):
    """Turn a chunk of output into json-file lines, one per line of output.

    Encoding line by line would cost a Python call per line (a container
    printing ``yes`` makes millions); instead the whole chunk is handled at
    once.  Most output is printable ASCII, whose JSON form is itself: only
    its newlines become entry boundaries.  Anything else is escaped whole,
    and the escaped newlines become the boundaries.  After the escape every
    backslash of the output reads ``\\\\``, so those are set aside first:
    what remains of ``\\n`` can only be a newline.  (The escape turns a NUL
    into ``\\u0000``, so NUL is free to mark the set-aside backslashes.)
    """
    head = b'{"log":"'
    tail = f'","stream":"{stream}","time":"{time_text}"}}\n'.encode()
    # Two checks in C, each a fraction of a millisecond for a 256 KiB chunk
    # (a regular expression takes ten times as long).
    if data.isascii() and len(data.translate(None, ESCAPED_IN_ASCII)) == len(data):
        return _entries(data, b"\n", head, tail)
    text = data.decode("utf-8", "surrogateescape")
    escaped = host.dump_json(text)[1:-1].replace("\\\\", "\0").encode("ascii")
    return _entries(escaped, b"\\n", head, tail).replace(b"\0", b"\\\\")


def _entries(escaped, newline, head, tail):
    """Wrap escaped output in entries, a line each; a last piece with no newline yet too."""
    complete, found, partial = escaped.rpartition(newline)
    pieces = []
    if found:
        pieces.append(head + complete.replace(newline, b"\\n" + tail + head) + b"\\n" + tail)
    if partial:
        pieces.append(head + partial + tail)
    return b"".join(pieces)


class JsonFileWriter:
    """Append a container's output to its json-file log, rotating by size.

    Each chunk is written with one ``write(2)`` straight to the file, never
    held in a buffer, so ``logs -f`` sees a line as soon as the monitor
    has read it.
    """

    def __init__(self, path, max_size=None, max_files=1):
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self.descriptor = self._open()

    def _open(self):
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o640)
        self.size = os.fstat(descriptor).st_size
        return descriptor

    def write(self, stream, data):
        encoded = encode_entries(data, stream, timestamp())
        if self.max_size is None or self.size + len(encoded) <= self.max_size:
            self._write(encoded)
            return
        # Rotate at entry boundaries, as Docker does: an entry never spans two files.
        for entry in encoded.splitlines(keepends=True):
            if self.size and self.size + len(entry) > self.max_size:
                self.rotate()
            self._write(entry)

    def _write(self, data):
        host.write_all(self.descriptor, data)
        self.size += len(data)

    def rotate(self):
        """Shift ``log`` to ``log.1``, ``log.1`` to ``log.2``, ... dropping the oldest."""
        os.close(self.descriptor)
        if self.max_files == 1:
            os.truncate(self.path, 0)
        else:
            for number in range(self.max_files - 1, 0, -1):
                older = f"{self.path}.{number - 1}" if number > 1 else self.path
                if os.path.exists(older):
                    os.rename(older, f"{self.path}.{number}")
        self.descriptor = self._open()

    def close(self):
        os.close(self.descriptor)


# -- 2. the monitor's loop ------------------------------------------------------

#: What a descriptor is watched for (epoll(7)'s EPOLLIN and EPOLLOUT).
READ, WRITE = select.EPOLLIN, select.EPOLLOUT


class Watcher:
    """The descriptors a monitor waits on, each with its role, over one epoll(7).

    (The selectors module does this too, with more classes; importing it
    costs more than a millisecond of every ``run``.)  A hang-up or an
    error counts as whatever the descriptor is watched for, as in
    selectors: the next read(2) or write(2) then says what happened.
    """

    def __init__(self):
        self.epoll = select.epoll()
        self.watched = {}  # descriptor -> (role, the object registered, events wanted)

    def register(self, source, events, role):
        descriptor = source if isinstance(source, int) else source.fileno()
        self.epoll.register(descriptor, events)
        self.watched[descriptor] = (role, source, events)

    def modify(self, descriptor, events):
        self.epoll.modify(descriptor, events)
        role, source, _ = self.watched[descriptor]
        self.watched[descriptor] = (role, source, events)

    def unregister(self, source):
        descriptor = source if isinstance(source, int) else source.fileno()
        self.epoll.unregister(descriptor)
        del self.watched[descriptor]

    def wait(self, timeout=None):
        """Wait (``timeout`` seconds at most) and return what is ready.

        Each item is a tuple: the descriptor, its role, the object
        registered for it, and the events that are ready.
        """
        ready = []
        for descriptor, events in self.epoll.poll(-1 if timeout is None else timeout):
            if descriptor not in self.watched:
                continue  # no longer watched
            role, source, wanted = self.watched[descriptor]
            if events & (select.EPOLLHUP | select.EPOLLERR):
                events |= READ | WRITE
            ready.append((descriptor, role, source, events & wanted))
        return ready

    def close(self):
        self.epoll.close()


class Relay:
    """Copy a container's output to its log and to whoever is attached.

    ``outputs`` maps a descriptor the container writes to onto its stream
    name.  ``container_input`` is where input for the container goes (the
    write end of its stdin pipe, or the terminal's master side), or None.
    Attached parties are the monitor's own terminal (for a foreground
    ``run``) and clients of the attach socket (``attach``).

    The container is never made to wait for a slow reader of the *log*:
    the log is a file, and ``logs`` reads the file.  It does wait for an
    attached terminal, as it would in Docker.
    """

    def __init__(self, log, outputs, container_input=None, terminal=None,
                 hold_for_client=False):
        """With ``hold_for_client`` no output is read until the first
        ``attach`` client connects (or :data:`ATTACH_GRACE` has passed):
        ``run -it`` starts its container detached and attaches a moment
        later, and the shell's first prompt must reach it."""
        self.log = log
        self.outputs = dict(outputs)
        self.container_input = container_input
        self.terminal = terminal
        self.selector = Watcher()
        self.echo = {}
        self.local_input = None
        self.close_input_at_end = False
        self.listener = None
        self.clients = set()
        self.pending_input = bytearray()
        self.waiting_to_write = False
        self.held_until = time.monotonic() + ATTACH_GRACE if hold_for_client else None
        if not hold_for_client:
            self._read_outputs()
        if container_input is not None:
            os.set_blocking(container_input, False)

    def _read_outputs(self):
        self.held_until = None
        for descriptor in self.outputs:
            self.selector.register(descriptor, READ, "output")

    def attach_locally(self, stdout, stderr, stdin=None, close_input_at_end=True):
        """Echo output to the caller's own descriptors and take its input."""
        self.echo = {"stdout": stdout, "stderr": stderr}
        if stdin is not None and self.container_input is not None:
            self.local_input = stdin
            self.close_input_at_end = close_input_at_end
            self.selector.register(stdin, READ, "local input")

    def listen(self, path, bind_path=None):
        """Accept ``attach`` clients on a Unix socket at ``path``.

        ``bind_path`` is a shorter name for the same place, for paths
        longer than a socket address can hold.
        """
        import _socket  # not socket, on the start path: see host.py

        if os.path.lexists(path):
            os.unlink(path)
        self.listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.listener.bind(bind_path or path)
        self.socket_path = path
        os.chmod(path, 0o600)
        self.listener.listen(4)
        self.selector.register(self.listener, READ, "listener")

    def run(self):
        """Relay until every output stream has reached end of file.

        End of file comes when the last process holding the container's end
        has exited; for a terminal, read(2) fails with EIO instead.
        """
        while self.outputs:
            timeout = None
            if self.held_until is not None:
                timeout = self.held_until - time.monotonic()
                if timeout <= 0:
                    self._read_outputs()  # nobody came: the log still gets it all
                    continue
            for descriptor, role, source, mask in self.selector.wait(timeout):
                if mask & WRITE:
                    self._flush_input()
                if not mask & READ:
                    continue
                if role == "output":
                    self._from_container(descriptor)
                elif role == "local input":
                    self._from_local_input(descriptor)
                elif role == "listener":
                    self._accept()
                elif role == "client":
                    self._from_client(source)

    def close(self):
        """Stop listening and close the container's input; its output has ended.

        Attached clients stay connected until :meth:`report_exit` tells
        them how the container ended.
        """
        if self.listener is not None:
            self.listener.close()
            if os.path.lexists(self.socket_path):
                os.unlink(self.socket_path)
        if self.container_input is not None and self.container_input != self.terminal:
            _close_quietly(self.container_input)
        for client in self.clients:
            self.selector.unregister(client)
        self.selector.close()

    def report_exit(self, exit_code):
        """Send attached clients the container's exit code, then hang up.

        ``exit_code`` None (the monitor failed) hangs up without one: the
        clients ask the container's state instead.
        """
        for client in list(self.clients):
            try:
                if exit_code is not None:
                    client.sendall(FRAME.pack(EXIT, EXIT_CODE.size) + EXIT_CODE.pack(exit_code))
            except OSError:
                pass
            client.close()
        self.clients.clear()

    # output

    def _from_container(self, descriptor):
        data = _read(descriptor)
        if data is None:
            return
        if not data:
            self.selector.unregister(descriptor)
            del self.outputs[descriptor]
            if descriptor == self.container_input:  # a terminal: input has nowhere to go
                self.pending_input.clear()
                self.waiting_to_write = False
            return
        stream = self.outputs[descriptor]
        if self.log is not None:  # exec's terminal is relayed, not logged
            self.log.write(stream, data)
        if self.echo:
            _write_all(self.echo[stream], data)
        if self.clients:
            frame = FRAME.pack(STREAM_NUMBERS[stream], len(data)) + data
            for client in list(self.clients):
                try:
                    client.sendall(frame)
                except OSError:
                    self._drop(client)

    # input

    def _from_local_input(self, descriptor):
        data = _read(descriptor)
        if data is None:
            return
        if data:
            self._send_to_container(data)
            return
        self.selector.unregister(descriptor)
        self.local_input = None
        if self.close_input_at_end:
            self._close_input()

    def _send_to_container(self, data):
        if self.container_input is None:
            return
        self.pending_input += data
        self._flush_input()

    def _flush_input(self):
        # The container's input is non-blocking: a container that does not
        # read its input must never stop the monitor from reading its output.
        try:
            while self.pending_input:
                del self.pending_input[:os.write(self.container_input, self.pending_input)]
        except BlockingIOError:
            pass
        except OSError:  # the container closed its end: input has nowhere to go
            self.pending_input.clear()
        self._wait_until_writable(bool(self.pending_input))

    def _wait_until_writable(self, wanted):
        """Watch the container's input for room to write, or stop watching it.

        A terminal's master is both the container's input and its output, so
        its registration is changed, not replaced.
        """
        if wanted == self.waiting_to_write:
            return
        self.waiting_to_write = wanted
        descriptor = self.container_input
        events = (READ if descriptor in self.outputs else 0) | \
            (WRITE if wanted else 0)
        if descriptor in self.selector.watched:
            if events:
                self.selector.modify(descriptor, events)
            else:
                self.selector.unregister(descriptor)
        elif events:
            self.selector.register(descriptor, events, "input")

    def _close_input(self):
        if self.container_input is None or self.container_input == self.terminal:
            return
        if self.pending_input:
            os.set_blocking(self.container_input, True)
            self._flush_input()
        self._wait_until_writable(False)
        _close_quietly(self.container_input)
        self.container_input = None

    def resize(self, rows, columns):
        """Set the container terminal's size (TIOCSWINSZ), as a resized window does."""
        if self.terminal is None:
            return
        import fcntl
        import termios

        fcntl.ioctl(self.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    # attach clients

    def _accept(self):
        import _socket

        # accept(2), as _socket has it: the new connection's descriptor
        # (socket.socket.accept wraps this same call).
        descriptor, _ = self.listener._accept()
        client = _socket.socket(fileno=descriptor)
        self.clients.add(client)
        self.selector.register(client, READ, "client")
        if self.held_until is not None:
            self._read_outputs()

    def _from_client(self, client):
        try:
            kind, payload = receive_frame(client)
        except (EOFError, OSError):
            self._drop(client)
            return
        if kind == STDIN and payload:
            self._send_to_container(payload)
        elif kind == STDIN:
            self._close_input()
        elif kind == RESIZE:
            self.resize(*struct.unpack(">HH", payload))

    def _drop(self, client):
        self.clients.discard(client)
        if client.fileno() >= 0:
            self.selector.unregister(client)
            client.close()


def _read(descriptor):
    """Read what is there; b"" at end of file, None if nothing is there after all."""
    try:
        return os.read(descriptor, CHUNK)
    except BlockingIOError:
        return None
    except OSError:  # EIO: a terminal whose other side has closed
        return b""


def _write_all(descriptor, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(descriptor, view):]
        except BrokenPipeError:
            return
        except BlockingIOError:
            import select

            select.select([], [descriptor], [])


def receive_frame(connection):
    """Read one frame (see :data:`FRAME`); return its kind and its payload."""
    kind, length = FRAME.unpack(_receive_exactly(connection, FRAME.size))
    return kind, _receive_exactly(connection, length)


def _receive_exactly(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the other side closed the connection")
        data += chunk
    return data


def _close_quietly(descriptor):
    try:
        os.close(descriptor)
    except OSError:
        pass


def narrate_monitor(container_id, pid):
    host.narrate(6, f"monitor {os.getpid()} holds the streams of {container_id[:12]} (PID {pid})")


# -- 3. reading ---------------------------------------------------------------

def log_files(path):
    """The files of a log, oldest first: ``log.N`` ... ``log.1``, ``log``."""
    rotated = []
    number = 1
    while os.path.exists(f"{path}.{number}"):
        rotated.append(f"{path}.{number}")
        number += 1
    return [*reversed(rotated), path]


def parse_lines(block, path="log"):
    """Parse complete json-file lines; return ``[(stream, text, time)]``.

    All the lines are handed to the JSON decoder as one array, so parsing
    costs one call per block, not one per line.
    """
    block = block.rstrip(b"\n")
    if not block:
        return []
    try:
        entries = host.load_json(b"[" + block.replace(b"\n", b",") + b"]")
    except ValueError:
        entries = []
        for number, line in enumerate(block.split(b"\n"), 1):
            try:
                entries.append(host.load_json(line))
            except ValueError:
                raise host.EngineError(f"{path}: line {number} is not a json-file entry")
    return [(entry["stream"], entry["log"], entry["time"]) for entry in entries]


def read_entries(path, block_size=1 << 20):
    """Yield lists of entries from a log and its rotated files, oldest first."""
    for name in log_files(path):
        try:
            handle = open(name, "rb")
        except FileNotFoundError:
            continue
        with handle:
            rest = b""
            while chunk := handle.read(block_size):
                chunk = rest + chunk
                end = chunk.rfind(b"\n") + 1
                rest = chunk[end:]
                yield parse_lines(chunk[:end], name)


def tail_entries(path, count, end_of_current=None, block_size=1 << 16):
    """Return the last ``count`` entries, reading the files from their ends.

    ``end_of_current`` stops the current file at that offset, so that a
    follower can go on from exactly there.
    """
    lines = []
    for name in reversed(log_files(path)):
        try:
            handle = open(name, "rb")
        except FileNotFoundError:
            continue
        with handle:
            position = handle.seek(0, os.SEEK_END)
            if name == path and end_of_current is not None:
                position = min(position, end_of_current)
            rest = b""
            while position > 0 and len(lines) <= count:
                step = min(block_size, position)
                position -= step
                handle.seek(position)
                chunk = handle.read(step) + rest
                parts = chunk.split(b"\n")
                rest = parts.pop(0) if position > 0 else b""
                lines[:0] = [part for part in parts if part]
            if rest:
                lines.insert(0, rest)
        if len(lines) >= count:
            break
    chosen = lines[-count:] if count else []
    return parse_lines(b"\n".join(chosen), path)


def follow(path, still_running, handle=None, poll_interval=0.05):
    """Yield lists of entries as they are written, until the container ends.

    Reading starts at the beginning of the oldest file, or wherever the
    open ``handle`` stands.  Like ``tail -F``: when the monitor rotates the
    file, the old one is read to its end before the next one is opened.
    ``still_running`` is asked whenever no new data has come; once it says
    no, what is left is read and the generator ends.
    """
    handle = handle or _open_oldest(path, still_running, poll_interval)
    if handle is None:
        return
    rest = b""
    try:
        while True:
            chunk = handle.read(CHUNK)
            if chunk:
                chunk = rest + chunk
                end = chunk.rfind(b"\n") + 1
                rest = chunk[end:]
                if end:
                    yield parse_lines(chunk[:end], path)
                continue
            status = os.fstat(handle.fileno())
            if status.st_size < handle.tell():  # max-file=1 rotates by truncating
                handle.seek(0)
                rest = b""
                continue
            newer = _files_after(path, status.st_ino)
            if newer:
                handle.close()
                handle, rest = open(newer[0], "rb"), b""
                continue
            if not still_running():
                # The monitor closes the log before it records the end, so
                # after one more read there is nothing left to come.
                chunk = rest + handle.read()
                if chunk.endswith(b"\n"):
                    yield parse_lines(chunk, path)
                return
            time.sleep(poll_interval)
    finally:
        handle.close()


def _open_oldest(path, still_running, poll_interval):
    """Open the oldest file of the log, waiting for the monitor to make one."""
    while True:
        for name in log_files(path):
            try:
                return open(name, "rb")
            except FileNotFoundError:  # rotated away meanwhile
                continue
        if not still_running():
            return None
        time.sleep(poll_interval)


def _files_after(path, inode):
    """The log's files newer than the one with ``inode``, oldest first.

    The open file may have been renamed (``log`` to ``log.1``) by rotation;
    if the current ``log`` is still ours there is nothing newer.
    """
    files = log_files(path)
    inodes = []
    for name in files:
        try:
            inodes.append(os.stat(name).st_ino)
        except FileNotFoundError:
            inodes.append(None)
    if inodes[-1] == inode or inodes[-1] is None:
        return []
    if inode in inodes:
        return files[inodes.index(inode) + 1:]
    return files  # ours was dropped by rotation: go on with the oldest that is left


# -- attaching ------------------------------------------------------------------

def attach(socket_path, tty, send_input=True, detach_keys=DETACH_KEYS):
    """Connect the caller's terminal to a container's monitor.

    Returns ``(detached, exit_code)``: ``(True, None)`` when the user
    detached (ctrl-p ctrl-q), else ``(False, code)`` once the container
    has ended, with the code its monitor reported (None if the monitor
    hung up without one).  Output frames go to standard output or
    standard error; keystrokes go to the container, except the detach
    sequence, which ends the attachment and leaves the container running.
    """
    import select
    import signal
    import socket

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
    except OSError as error:
        raise host.EngineError(f"cannot attach: the container's monitor is not listening "
                               f"({error.strerror})")

    def send_size(*_):
        if tty and os.isatty(0):
            size = os.get_terminal_size(0)
            connection.sendall(FRAME.pack(RESIZE, 4) + struct.pack(">HH", size.lines, size.columns))

    send_size()
    previous_handler = signal.signal(signal.SIGWINCH, send_size)
    watched = [connection] + ([0] if send_input else [])
    matched = b""
    try:
        while True:
            ready, _, _ = select.select(watched, [], [])
            if connection in ready:
                try:
                    kind, payload = receive_frame(connection)
                except (EOFError, ConnectionResetError):
                    return False, None
                if kind == EXIT:
                    return False, EXIT_CODE.unpack(payload)[0]
                _write_all(2 if kind == STDERR else 1, payload)
            if 0 in ready:
                typed = os.read(0, 4096)
                data, matched, detached = _watch_for_detach(matched + typed, detach_keys)
                try:
                    if data or not typed:  # an empty frame says: end of input
                        connection.sendall(FRAME.pack(STDIN, len(data)) + data)
                except (BrokenPipeError, ConnectionResetError):
                    typed = b""  # the monitor has gone: read what output is left
                if not typed:
                    watched.remove(0)
                if detached:
                    return True, None
    finally:
        signal.signal(signal.SIGWINCH, previous_handler)
        connection.close()


def wait_for_exit_frame(socket_path):
    """Wait on a monitor's attach socket for the exit code it sends last.

    Output frames on the way are read and dropped.  Returns None when
    nothing listens there (the container is not running) or the monitor
    hangs up without a code: the caller then asks the container's state.
    """
    import socket

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with connection:
        try:
            connection.connect(socket_path)
            while True:
                kind, payload = receive_frame(connection)
                if kind == EXIT:
                    return EXIT_CODE.unpack(payload)[0]
        except (EOFError, OSError):
            return None


def _watch_for_detach(data, keys):
    """Split typed bytes into what to send, a held-back prefix of the keys, and whether to detach.

    As in Docker, the bytes of a partly typed sequence are held back until
    it is clear whether the user is detaching; if not, they are sent.
    """
    if keys and keys in data:
        return data[:data.index(keys)], b"", True
    for length in range(min(len(keys) - 1, len(data)), 0, -1):
        if data.endswith(keys[:length]):
            return data[:-length], data[-length:], False
    return data, b"", False

"""Chapter 6: logging, or who holds the pipes when the command line is gone.

A container's output has to go somewhere even when nobody is watching:
``run -d`` returns at once, the user's terminal may close, and ``logs``
may be asked for it a week later.  So each container has a *monitor*, a
small process that holds the other end of the container's standard
streams, copies what arrives into a log file (and to the user's terminal,
when one is attached), waits for PID 1 and records how it ended.  Docker
calls this process a shim (containerd-shim), podman calls it conmon.

The log uses Docker's ``json-file`` format: one JSON object per line, with
the text (``log``), the stream it came from (``stream``) and the time it
arrived with nanoseconds (``time``)::

    {"log":"hello\\n","stream":"stdout","time":"2026-11-28T10:00:00.123456789Z"}
"""

import json
import os
import select
import time

from minidocker import host

CHUNK = 1 << 16


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


class JsonFileWriter:
    """Append a container's output to its json-file log, one line per entry.

    Docker splits output at newlines; a chunk that ends without one is
    written as a partial entry and the rest follows in the next.
    """

    def __init__(self, path):
        self.path = path
        self.file = open(path, "ab", buffering=CHUNK)

    def write(self, stream, data):
        now = timestamp()
        entries = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end + 1
            text = data[start:end].decode("utf-8", "surrogateescape")
            entries.append(json.dumps({"log": text, "stream": stream, "time": now},
                                      ensure_ascii=False).encode("utf-8", "surrogateescape"))
            start = end
        self.file.write(b"\n".join(entries) + b"\n")

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()


def read_entries(path):
    """Yield ``(stream, text bytes, time text)`` for each entry of a log."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            entry = json.loads(line)
            yield entry["stream"], entry["log"].encode("utf-8", "surrogateescape"), entry["time"]


def relay(sources, log, stdin_source=None, stdin_target=None):
    """Copy the container's output to its log and to the attached terminal.

    ``sources`` maps a descriptor the container writes to onto
    ``(stream name, descriptor to echo to or None)``.  Returns when every
    source has reached end of file, which happens when the last process
    holding the container's end has exited.
    """
    open_sources = dict(sources)
    watched = list(open_sources)
    if stdin_source is not None:
        watched.append(stdin_source)
    while open_sources:
        ready, _, _ = select.select(watched, [], [])
        for descriptor in ready:
            if descriptor == stdin_source:
                data = _read(descriptor)
                if data:
                    _write_all(stdin_target, data)
                else:
                    watched.remove(descriptor)
                    if stdin_target not in open_sources:  # a terminal stays open
                        os.close(stdin_target)
                continue
            data = _read(descriptor)
            stream, echo = open_sources[descriptor]
            if not data:
                del open_sources[descriptor]
                watched.remove(descriptor)
                continue
            log.write(stream, data)
            if echo is not None:
                _write_all(echo, data)
    log.flush()


def _read(descriptor):
    try:
        return os.read(descriptor, CHUNK)
    except OSError:  # EIO: a terminal's other side has closed
        return b""


def _write_all(descriptor, data):
    view = memoryview(data)
    while view:
        try:
            written = os.write(descriptor, view)
        except BrokenPipeError:
            return
        view = view[written:]


def narrate_monitor(container_id, pid):
    host.narrate(6, f"monitor {os.getpid()} holds the streams of {container_id[:12]} (PID {pid})")

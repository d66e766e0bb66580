"""Drive minidocker through a pseudo-terminal, as a user at a keyboard would."""

import fcntl
import os
import pty
import select
import struct
import termios
import time


class Session:
    """One command running on a pty of its own; type into it and read what it shows."""

    def __init__(self, argv, env, rows=33, columns=111, cwd=None):
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            if cwd:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.output = b""
        self.code = None

    def wait_for_raw_mode(self, timeout=10):
        """Wait until the command has put its terminal in raw mode (ICANON off).

        The master side reports the terminal's settings, so this tells when
        typed keys stop being edited as a line by the kernel.
        """
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ICANON:
            if time.monotonic() > deadline:
                raise AssertionError("the terminal never went into raw mode")
            self._read_some(0.02)

    def type(self, data):
        os.write(self.master, data)

    def read_until(self, expected, timeout=10):
        """Read until ``expected`` (bytes) has appeared; return all output so far."""
        deadline = time.monotonic() + timeout
        while expected not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{expected!r} never came; output: {self.output!r}")
            if not self._read_some(remaining):
                raise AssertionError(f"ended before {expected!r}; output: {self.output!r}")
        return self.output

    def _read_some(self, timeout):
        ready, _, _ = select.select([self.master], [], [], min(timeout, 0.2))
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the command ended and closed the terminal
            return False
        self.output += data
        return bool(data)

    def wait(self, timeout=15):
        """Read to the end and return the command's exit status (killed after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            finished, status = os.waitpid(self.pid, os.WNOHANG)
            if finished:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                _, status = os.waitpid(self.pid, 0)
                break
            if not self._read_some(0.1):
                time.sleep(0.01)
        while self._read_some(0.05) and select.select([self.master], [], [], 0)[0]:
            pass
        os.close(self.master)
        self.code = os.waitstatus_to_exitcode(status)
        return self.code

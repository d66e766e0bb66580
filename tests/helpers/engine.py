"""Drive minidocker the way a user does: through its command line."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Engine:
    """One engine root, and a way to run ``python -m minidocker`` against it."""

    def __init__(self, root):
        self.root = root

    def environment(self, extra=None):
        environment = dict(os.environ, MINIDOCKER_ROOT=self.root,
                           PYTHONPATH=REPO)
        environment.pop("MINIDOCKER_TRACE", None)
        environment.update(extra or {})
        return environment

    def command(self, *arguments):
        return [sys.executable, "-m", "minidocker", *arguments]

    def run(self, *arguments, input=None, timeout=60, env=None, check=False):
        """Run one minidocker command; return the CompletedProcess (text)."""
        result = subprocess.run(
            self.command(*arguments), input=input, capture_output=True,
            timeout=timeout, env=self.environment(env), cwd=REPO,
            text=not isinstance(input, bytes))
        if check and result.returncode != 0:
            raise AssertionError(
                f"minidocker {' '.join(arguments)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}")
        return result

    def ok(self, *arguments, **options):
        """Run a command that must succeed; return its standard output."""
        return self.run(*arguments, check=True, **options).stdout

"""``python -m minidocker``: the command line."""

from minidocker.cli import run_and_exit

run_and_exit()

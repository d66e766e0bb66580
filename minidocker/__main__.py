"""``python -m minidocker``: the command line."""

import sys

from minidocker.cli import main

sys.exit(main())

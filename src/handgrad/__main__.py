"""``python -m handgrad`` and the ``handgrad`` command (``run``): the command line of
handgrad.nn.cli, imported here so that a Ctrl-C while it loads (numpy, graphviz: half a
second) is the command's "interrupted", status 130, not a traceback."""
from __future__ import annotations

import sys


def run() -> int:
    try:
        from handgrad.nn.cli import main
    except KeyboardInterrupt:
        print("handgrad: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())

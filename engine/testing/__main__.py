"""``python -m handgrad.engine.testing``: see engine/testing/cli.py."""
import sys

from .cli import main

sys.exit(main())

"""``python -m nn``: the same as the ``handgrad`` command."""
import sys

from .cli import main

sys.exit(main())

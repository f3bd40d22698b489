"""``python -m handgrad``: the same as the ``handgrad`` command."""
import sys

from handgrad.nn.cli import main

sys.exit(main())

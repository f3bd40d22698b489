"""handgrad's pytest plugin, the entry point ``pytest11`` named ``handgrad``: the option
``--handgrad-profile`` and the hook that turns a test module's ``HANDGRAD_RULES`` into one
test per rule and property (handgrad.engine.testing.pytest_plugin).

This module is all that another project's pytest run loads when handgrad is installed: it
imports neither numpy nor handgrad.engine nor hypothesis; they come in only when a test
module defines ``HANDGRAD_RULES``. ``-p no:handgrad`` turns the plugin off.
"""
from __future__ import annotations

from typing import Any

import pytest

DECLARED = "HANDGRAD_RULES"
OPTION = "--handgrad-profile"
PROFILES = ("dev", "ci", "thorough")      # = engine.testing.PROFILE_NAMES (a test checks)


def add_options(parser: pytest.Parser) -> None:
    """``--handgrad-profile``: how many examples each property gets."""
    parser.addoption(OPTION, choices=PROFILES, default=None,
                     help="handgrad's hypothesis profile for derivative checks: dev 10, ci 25, "
                          "thorough 1000 examples per property (default: $HANDGRAD_PROFILE, "
                          "else ci under CI=true, else dev)")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> Any:
    """A module-level ``HANDGRAD_RULES`` becomes one item per rule and property."""
    if name != DECLARED or not isinstance(collector, pytest.Module):
        return None
    from handgrad.engine.testing.pytest_plugin import collect
    return collect(collector, obj)

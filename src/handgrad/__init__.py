"""handgrad: a small, exact compute-graph engine for neural networks, with hand-written
derivative rules for every op.

    from handgrad import engine, nn

``handgrad.engine`` (tensors, the graph, the ops and their rules) needs numpy alone;
``handgrad.nn`` (layers, losses, optimizers, data, training) builds on it. Both load on
first use, so ``import handgrad`` costs nothing.

In the repository the two packages are the top-level folders ``engine/`` and ``nn/``;
``pyproject.toml`` maps them into this package when it is installed, so no top-level
``engine`` or ``nn`` module is ever installed.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"   # the one version source: pyproject.toml reads it from here

__all__ = ["engine", "nn", "__version__"]

if TYPE_CHECKING:
    from . import engine, nn


if not TYPE_CHECKING:   # hidden from type checkers: handgrad.<misspelt name> is their error
    def __getattr__(name: str) -> Any:
        if name in ("engine", "nn"):
            return import_module(f".{name}", __name__)
        raise AttributeError(f"module 'handgrad' has no attribute {name!r}")

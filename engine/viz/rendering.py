"""Turning DOT text into SVG, PNG or PDF with the Graphviz ``dot`` program.

The ``graphviz`` Python package only writes DOT text; the pictures come from the ``dot``
binary of the system package Graphviz. Without it, ``digraph.source`` still works and
rendering raises ``GraphvizNotFound`` saying how to install it.
"""
from __future__ import annotations

from pathlib import Path

import graphviz

FORMATS = ("svg", "png", "pdf", "dot")

INSTALL_HINT = ("install Graphviz: apt-get install graphviz (Debian/Ubuntu), "
                "brew install graphviz (macOS) or conda install graphviz (conda); "
                "the DOT text is available without it (digraph.source)")


class GraphvizNotFound(RuntimeError):
    """The Graphviz ``dot`` program is not installed (or not on PATH)."""


def pipe(digraph: graphviz.Digraph, format: str) -> bytes:
    """The picture as bytes in ``format``, made by ``dot``."""
    try:
        return digraph.pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFound(f"rendering to {format} needs the Graphviz 'dot' program, which "
                               f"was not found on PATH: {INSTALL_HINT}") from None


def to_svg(digraph: graphviz.Digraph) -> str:
    """The picture as SVG text."""
    return pipe(digraph, "svg").decode("utf-8")


def render(digraph: graphviz.Digraph, path: str | Path, format: str = "svg") -> Path:
    """Write the picture to ``path`` as svg, png or pdf ("dot": the DOT text, which needs
    no Graphviz). Returns the path. Raises GraphvizNotFound when ``dot`` is missing."""
    if format not in FORMATS:
        raise ValueError(f"render: format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if format == "dot":
        path.write_text(digraph.source, encoding="utf-8")
    else:
        path.write_bytes(pipe(digraph, format))
    return path

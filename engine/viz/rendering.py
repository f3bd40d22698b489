"""Turning DOT text into SVG, PNG or PDF with the Graphviz ``dot`` program.

The ``graphviz`` Python package only writes DOT text; the pictures come from the ``dot``
binary of the system package Graphviz. Without it, ``digraph.source`` still works and
rendering raises ``GraphvizNotFound`` saying how to install it.

A picture with heat-map thumbnails (``images``: file name -> PNG bytes, see thumbnails.py)
has them written to a temporary directory that ``dot`` reads (``imagepath``) and deleted
afterwards; SVG output gets them as ``data:`` URIs, so it never names a deleted file
(PNG and PDF hold the pixels themselves).
"""
from __future__ import annotations

import base64
import contextlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import graphviz

from ..plain import plain_repr

FORMATS = ("svg", "png", "pdf", "dot")

INSTALL_HINT = ("install Graphviz: apt-get install graphviz (Debian/Ubuntu), "
                "brew install graphviz (macOS) or conda install graphviz (conda); "
                "the DOT text is available without it (digraph.source)")


class GraphvizNotFound(RuntimeError):
    """The Graphviz ``dot`` program is not installed (or not on PATH)."""


IMAGE_HREF = re.compile(r'(?<=<image )([^>]*?\b(?:xlink:)?href=")([^"]*)(")')


@contextlib.contextmanager
def image_directory(images: dict[str, bytes]) -> Iterator[str | None]:
    """A temporary directory holding ``images`` (file name -> bytes), deleted on exit;
    None when there are none."""
    if not images:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="handgrad-images-") as where:
        for name, data in images.items():
            (Path(where) / name).write_bytes(data)
        yield where


def png_data_uri(png: bytes) -> str:
    """A PNG as a data: URI, for SVG and HTML that must not name a file."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def embed_images(svg: bytes, images: dict[str, bytes]) -> bytes:
    """Every ``<image>`` of ``svg`` that names one of ``images`` (by file name, whatever
    directory Graphviz put in front) gets the PNG itself as a data: URI."""
    if not images:
        return svg

    def inline(m: re.Match[str]) -> str:
        name = m.group(2).replace("\\", "/").rsplit("/", 1)[-1]
        if name not in images:
            return m.group(0)
        return m.group(1) + png_data_uri(images[name]) + m.group(3)

    return IMAGE_HREF.sub(inline, svg.decode("utf-8")).encode("utf-8")


def pipe(digraph: graphviz.Digraph, format: str) -> bytes:
    """The picture as bytes in ``format``, made by ``dot`` (with its thumbnails, if any)."""
    images: dict[str, bytes] = getattr(digraph, "images", {})
    try:
        with image_directory(images) as where:
            if where is not None:
                digraph = digraph.copy()
                digraph.graph_attr["imagepath"] = where
            out = digraph.pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFound(f"rendering to {format} needs the Graphviz 'dot' program, which "
                               f"was not found on PATH: {INSTALL_HINT}") from None
    return embed_images(out, images) if format == "svg" else out


# a heat map in its box (thumbnails.html_label): always in a cell of fixed size
IMAGE_TAG = re.compile(r'<IMG SRC="[^"]*" SCALE="TRUE"/>')


def layout_json(digraph: graphviz.Digraph) -> Any:
    """Where ``dot`` puts everything (``dot -Tjson``, parsed), with the heat maps left out:
    each sits in a cell of fixed size (thumbnails.html_label), so the layout is the same
    without it, and Graphviz's json renderer, which cannot load PNGs, would warn
    'No loadimage plugin for "png:json"' once per picture. Every other warning or error
    of ``dot`` still shows."""
    plain = digraph.copy()
    plain.body = [IMAGE_TAG.sub("", line) for line in plain.body]   # an empty cell
    if hasattr(plain, "images"):
        plain.images = {}
    return json.loads(pipe(plain, "json"))


def to_svg(digraph: graphviz.Digraph) -> str:
    """The picture as SVG text."""
    return pipe(digraph, "svg").decode("utf-8")


def format_for(path: Path, format: str | None) -> str:
    """The format to write ``path`` in: ``format`` if given, else the file's extension
    (.svg, .png, .pdf, .dot; none at all: svg). A ``format`` that contradicts a known
    extension, or an unknown extension without a ``format``, is a ValueError: a .png file
    holding SVG text would only fail later, in whatever opens it."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"render: format must be one of {FORMATS}, got {plain_repr(format)}")
    suffix = path.suffix.lstrip(".").lower()
    if format is not None:
        if suffix in FORMATS and suffix != format:
            raise ValueError(f"render: format {plain_repr(format)} contradicts the path {str(path)!r} "
                             f"(a .{suffix} file); drop one or make them agree")
        return format
    if not suffix:
        return "svg"
    if suffix not in FORMATS:
        raise ValueError(f"render: cannot tell the format from the path {str(path)!r} "
                         f"(extension .{suffix}); use a .svg, .png, .pdf or .dot file or pass "
                         f"format= one of {FORMATS}")
    return suffix


def render(digraph: graphviz.Digraph, path: str | Path, format: str | None = None) -> Path:
    """Write the picture to ``path`` as svg, png or pdf ("dot": the DOT text, which needs
    no Graphviz), in the format its extension names (no extension: svg) or ``format``,
    which must agree with a .svg/.png/.pdf/.dot extension. Returns the path. Raises
    GraphvizNotFound when ``dot`` is missing.

    DOT text names its heat-map thumbnails as files (``hg-heat-<hash>.png``: Graphviz reads
    images from files only); they are written beside it, so ``dot -Tsvg graph.dot`` run in
    that folder draws them."""
    path = Path(path)
    format = format_for(path, format)
    if format == "dot":
        for name, png in getattr(digraph, "images", {}).items():
            (path.parent / name).write_bytes(png)
        path.write_text(digraph.source, encoding="utf-8")
    else:
        path.write_bytes(pipe(digraph, format))
    return path

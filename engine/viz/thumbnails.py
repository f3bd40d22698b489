"""Heat-map thumbnails of big arrays: one colour mapping for the layer view (inline SVG,
layers.py) and the op view (PNG images placed by Graphviz in HTML-like labels).

A big array is averaged in blocks to at most HEAT_CELLS × HEAT_CELLS cells (a vector is
one row, an array of more than 2 dimensions has its leading dimensions stacked as rows),
coloured blue for negative, red for positive and white for 0, by |value| over the largest
|value| (a symmetric scale; non-finite cells grey), and written as a PNG with numpy and
zlib alone, each cell a block of pixels so that it stays crisp when scaled.

``Picture`` is the ``graphviz.Digraph`` that ``draw`` returns: it keeps the PNGs its
labels name (``images``); rendering.py hands them to ``dot`` and embeds them in SVG.
"""
from __future__ import annotations

import hashlib
import html
import math
import struct
import zlib
from typing import Any

import graphviz
import numpy as np

from . import labels, measures, rendering

HEAT_CELLS = 48          # a heat-map thumbnail has at most this many rows and columns of cells
LONG_SIDE = 192          # px: a PNG's longer side is about this long (cells scaled up whole)
SHORT_SIDE = 16          # px: its shorter side at least (a vector is a strip, not a hairline)
FRAME = (153, 153, 170)  # the 1-px frame around a PNG, so white (zero) cells show on white
GREY = (136, 136, 136)   # a cell that is not finite (nan, inf)
THUMB_SIZE = (96, 60)    # pt: the box a thumbnail is fitted into (aspect kept) in a label
PAD = 4                  # pt around a thumbnail in its cell
MARGIN = 8               # pt between a box's lines and its thumbnail: see html_label
Slot = tuple[int, str, tuple[int, int]]  # (beside the lines up to k, file name, (w, h) pt)
PREFIX = "hg-heat-"      # every thumbnail file is named hg-heat-<hash of its PNG>.png


def wants_thumbnail(a: np.ndarray, max_elements: int) -> bool:
    """Whether ``labels.array_lines`` summarises ``a`` as min / mean / max: a number array
    with more than ``max_elements`` elements that is not a few class labels (those keep
    their class counts)."""
    a = np.asarray(a)
    return (a.size > max_elements and a.dtype.kind in "biuf"
            and labels.class_counts(a) is None)


def heat_cells(a: np.ndarray) -> np.ndarray:
    """``a`` as a 2-D float64 array of at most HEAT_CELLS × HEAT_CELLS block means (taken
    by measures.mean, so finite entries near the float64 maximum never average to inf)."""
    a = np.asarray(a, dtype=np.float64)
    m = a.reshape(1, -1) if a.ndim <= 1 else a.reshape(-1, a.shape[-1])
    rows = [np.asarray(measures.mean(blk, axis=0))
            for blk in np.array_split(m, min(len(m), HEAT_CELLS))]
    return np.stack([[measures.mean(blk) for blk in np.array_split(r, min(len(r), HEAT_CELLS))]
                     for r in rows])


def heat_colours(m: np.ndarray) -> np.ndarray:
    """RGB (uint8, shape ``m.shape + (3,)``) of each cell: red for positive, blue for
    negative, fading to white at 0 by |value| over the largest finite |value|; grey when
    not finite."""
    m = np.asarray(m, dtype=np.float64)
    finite = np.isfinite(m)
    top = float(np.max(np.abs(m[finite]), initial=0.0)) or 1.0
    with np.errstate(invalid="ignore"):
        t = np.where(finite, np.minimum(1.0, np.abs(m) / top), 1.0)
    fade = np.round(255 * (1 - t)).astype(np.uint8)
    full = np.full_like(fade, 255)
    positive = (m > 0)[..., None]
    rgb = np.where(positive, np.stack([full, fade, fade], axis=-1),
                   np.stack([fade, fade, full], axis=-1))
    rgb[~finite] = GREY
    return rgb


def cell_pixels(shape: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of pixels per cell for a grid of ``shape`` cells: the longer side
    about LONG_SIDE px, the shorter at least SHORT_SIDE px."""
    h, w = shape
    s = max(1, LONG_SIDE // max(h, w))
    return max(s, math.ceil(SHORT_SIDE / h)), max(s, math.ceil(SHORT_SIDE / w))


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG (no interlace, filter 0 on every row) of an (h, w, 3) uint8 array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, 3 * w)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))


def thumbnail(a: np.ndarray) -> bytes:
    """The heat map of ``a`` as PNG bytes: each cell a block of ``cell_pixels`` pixels, in
    a 1-px FRAME."""
    cells = heat_cells(a)
    py, px = cell_pixels(cells.shape)
    rgb = np.repeat(np.repeat(heat_colours(cells), py, axis=0), px, axis=1)
    framed = np.empty((rgb.shape[0] + 2, rgb.shape[1] + 2, 3), np.uint8)
    framed[...] = FRAME
    framed[1:-1, 1:-1] = rgb
    return png_bytes(framed)


def file_name(png: bytes) -> str:
    """hg-heat-<hash>.png: the same picture gets the same name in every frame."""
    return f"{PREFIX}{hashlib.sha1(png).hexdigest()[:16]}.png"


def fitted_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pt of a PNG fitted into THUMB_SIZE, its aspect kept (from its
    IHDR chunk), at least 4 pt each."""
    w, h = struct.unpack(">II", png[16:24])
    k = min(THUMB_SIZE[0] / w, THUMB_SIZE[1] / h)
    return max(4, round(w * k)), max(4, round(h * k))


def html_label(lines: list[str], slots: list[Slot]) -> str:
    """A Graphviz HTML-like label: the lines left-aligned, each slot's (k, file name, size)
    picture to the right of the lines since the previous slot, up to line ``k`` (an empty
    cell of that size for the name "", so a frame without that picture keeps the layout);
    lines after the last slot span every column. The text keeps the node's font and size."""
    rows: list[str] = []
    start = 0
    for k, name, (w, h) in [*slots, (len(lines), None, (0, 0))]:
        text = "".join(f'{html.escape(line, quote=False)}<BR ALIGN="LEFT"/>'
                       for line in lines[start:k])
        if name is None:
            if text:
                rows.append(f'<TR><TD ALIGN="LEFT" BALIGN="LEFT" COLSPAN="3">{text}</TD></TR>')
            break
        image = f'<IMG SRC="{html.escape(name)}" SCALE="TRUE"/>' if name else " "
        pad = PAD                              # the picture keeps clear of the text
        # An empty cell MARGIN pt wide between the lines and the picture: Graphviz measures
        # its monospace text narrower than a browser draws it (380 pt where Chromium drew
        # 386 px), and the last digit ran under the picture. (No text in it: the player
        # fills a box's <text> elements line by line.)
        rows.append(f'<TR><TD ALIGN="LEFT" BALIGN="LEFT">{text}</TD><TD WIDTH="{MARGIN}"></TD>'
                    f'<TD FIXEDSIZE="TRUE" CELLPADDING="{pad}" WIDTH="{w + 2 * pad}" '
                    f'HEIGHT="{h + 2 * pad}">{image}</TD></TR>')
        start = k
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">'
            + "".join(rows) + "</TABLE>>")


class Picture(graphviz.Digraph):
    """A ``graphviz.Digraph`` that carries the thumbnails its labels name (``images``:
    file name -> PNG bytes). ``.source`` is plain DOT text; rendering.pipe writes the
    images where ``dot`` finds them, and in Jupyter the picture displays with them."""

    def __init__(self, *args: Any, images: dict[str, bytes] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.images: dict[str, bytes] = dict(images or {})

    def _copy_kwargs(self, **kwargs: Any) -> Any:
        """copy() keeps the images (graphviz's own classes drop unknown keywords here)."""
        return {**super()._copy_kwargs(**kwargs), "images": dict(self.images)}

    def add_thumbnail(self, k: int, a: np.ndarray) -> Slot:
        """Keep the heat map of ``a`` for rendering; its slot below line ``k`` (its file
        name is the same for the same picture)."""
        png = thumbnail(a)
        name = file_name(png)
        self.images[name] = png
        return k, name, fitted_size(png)

    def _repr_image_svg_xml(self) -> str:
        return rendering.to_svg(self)

    def _repr_image_png(self) -> bytes:
        return rendering.pipe(self, "png")

    def _repr_image_jpeg(self) -> bytes:
        return rendering.pipe(self, "jpeg")

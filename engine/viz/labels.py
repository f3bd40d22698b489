"""The text inside the boxes: numbers, arrays, op names with their parameters, and each
op's derivative rule (its ``rule`` attribute, checked when the op is registered). What a
loss node shows (its output delta, its rule for its reduction) is in losses.py."""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from ..graph import Node
from ..op import Op
from ..tensor import Tensor
from . import measures

RULE_WIDTH = 40  # characters per line of a derivative rule in an op box
VECTOR_ROW = 8   # numbers per row of a long vector (it wraps into aligned rows)
MAX_CLASSES = 10  # a big integer array (class labels) lists the count of each value up to this
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines breaks a line
DIGITS = 4       # significant digits of a number in a picture
MAX_DIGITS = 17  # enough for any float64


def one_line(text: str) -> str:
    """A name or scope as one line of a picture: each line break in it written as repr
    writes it ("x\\ny"), so a box keeps one drawn line per line of its text (the player
    and the step exports fill them one by one) and a cluster's name one line of DOT."""
    return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)


def number(v: Any, digits: int = DIGITS) -> str:
    """A number in ``digits`` significant digits: 0.1235, -3, 1.5e-07, True (an int in
    full). A negative zero (relu's grad * mask, x * 0) is 0: "-0" would read as a small
    negative number rounded away."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v) + 0.0:.{digits}g}"


def digits_to_subtract(a: np.ndarray, b: np.ndarray, digits: int = DIGITS) -> int:
    """The significant digits to print ``a`` with so that (a as printed) − b keeps
    ``digits`` significant digits of a − b, in every entry: a picture that states
    "p − y = δ" must hold for the numbers it prints. ``digits`` unless a and b nearly
    cancel (p = 0.99995892 beside y = 1 printed "1" made "1 − 1" of a δ of −4.108e-05),
    then one more per power of ten they cancel (at most MAX_DIGITS). Rounding a to k
    digits moves it by at most half a unit in its k-th digit, so k must reach
    ``digits`` places below the leading digit of a − b."""
    a64, b64 = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        gap, size = np.abs(a64 - b64), np.abs(a64)
        counted = np.isfinite(gap) & (gap > 0) & np.isfinite(size) & (size > 0)
        if not counted.any():
            return digits
        need = np.floor(np.log10(size[counted])) - np.floor(np.log10(gap[counted])) + digits
    return int(min(max(digits, need.max()), MAX_DIGITS))


def digits_to_sum(total: np.ndarray, magnitude: np.ndarray, digits: int = DIGITS) -> int:
    """The significant digits to print the terms of sums with (Σₙ δ, the products of aᵀδ)
    so that the printed terms add up to ``digits`` digits of each ``total``: ``digits``
    unless the terms cancel, then one more per power of ten of ``magnitude`` (the same
    sums on absolute values) over 2 |total| (at most MAX_DIGITS): the terms' rounding, half
    a unit in their last digit, adds up to at most that share of ``magnitude``, and sums
    that cancel less than twofold keep the usual digits. Near a minimum ∂L/∂b is -9.8e-06
    while its δ are ±0.25, which 4 digits print as summing to 0."""
    t, s = np.abs(np.asarray(total, np.float64)), np.asarray(magnitude, np.float64)
    with np.errstate(all="ignore"):
        counted = np.isfinite(t) & (t > 0) & np.isfinite(s) & (s > 0)
        if not counted.any():
            return digits
        need = np.ceil(np.log10(s[counted] / (2 * t[counted]))) + digits
    return int(min(max(digits, need.max()), MAX_DIGITS))


def shape_text(shape: tuple[int, ...]) -> str:
    return str(tuple(int(n) for n in shape))


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows of number texts, each column right-aligned to its widest entry."""
    widths = [max(len(row[j]) for row in rows if j < len(row)) for j in range(len(rows[0]))]
    return [", ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)) for row in rows]


def vector_rows(a: np.ndarray, per_row: int = VECTOR_ROW, digits: int = DIGITS
                ) -> list[list[str]]:
    """A vector's numbers (as text) in rows of at most ``per_row``: a long vector wraps."""
    cells = [number(v, digits) for v in np.asarray(a).reshape(-1)]
    return [cells[i:i + per_row] for i in range(0, len(cells), per_row)] or [[]]


def class_counts(a: np.ndarray) -> str | None:
    """"counts 0: 3, 1: 5" for an integer array (class labels) with few distinct values,
    else None: a mean of class ids says nothing."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu" or a.size == 0:
        return None
    values, counts = np.unique(a, return_counts=True)
    if len(values) > MAX_CLASSES:
        return None
    return "counts " + ", ".join(f"{int(v)}: {int(c)}" for v, c in zip(values, counts, strict=True))


def array_lines(a: np.ndarray, max_elements: int, digits: int = DIGITS) -> list[str]:
    """The values of a small array in ``digits`` significant digits (one line per matrix
    row, numbers right-aligned in columns; a vector longer than VECTOR_ROW wraps into
    rows), else min / mean / max (an integer array of few distinct values, such as class
    labels: the count of each)."""
    a = np.asarray(a)
    if a.size <= max_elements and a.ndim == 2:
        rows = ["[" + r + "]" for r in _aligned([[number(v, digits) for v in row] for row in a])]
        return [("[" if i == 0 else " ") + r + ("]" if i == len(rows) - 1 else ",")
                for i, r in enumerate(rows)]
    if VECTOR_ROW < a.size <= max_elements and a.ndim == 1:
        rows = _aligned(vector_rows(a, digits=digits))
        return [("[" if i == 0 else " ") + r + ("]" if i == len(rows) - 1 else ",")
                for i, r in enumerate(rows)]
    if a.size <= max_elements:
        text = np.array2string(a, separator=", ", max_line_width=10**6,
                               threshold=max_elements + 1,
                               formatter={"all": lambda v: number(v, digits)})
        return text.splitlines()
    if a.dtype.kind not in "biuf":
        return [f"{a.dtype} array"]
    counts = class_counts(a)
    if counts is not None:
        return [counts]
    return [f"min {number(a.min())}  mean {number(measures.mean(a))}  max {number(a.max())}"]


def labelled(title: str, a: np.ndarray, max_elements: int, digits: int = DIGITS) -> list[str]:
    """``title`` in front of the first line of ``array_lines``."""
    lines = array_lines(a, max_elements, digits)
    pad = " " * (len(title) + 1)            # continuation rows stay under the first one
    return [f"{title} {lines[0]}", *(pad + line for line in lines[1:])]


def param_value(v: Any) -> str:
    """A short text for an op parameter (axis=1, shape=(2, 3), index=array (4,))."""
    if isinstance(v, Tensor):
        v = v._data
    if isinstance(v, np.ndarray):
        return f"array {shape_text(v.shape)}"
    if isinstance(v, tuple):
        return "(" + ", ".join(param_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, slice):
        parts = ["" if x is None else str(x) for x in (v.start, v.stop, v.step)]
        return ":".join(parts[:2] if v.step is None else parts)
    if isinstance(v, float):
        return number(v)
    if isinstance(v, np.random.Generator):     # its repr holds a memory address
        return f"Generator({type(v.bit_generator).__name__})"
    return repr(v)


def _is_default(value: Any, default: Any) -> bool:
    if isinstance(value, (np.ndarray, Tensor)):
        return False
    try:
        return bool(value == default) and type(value) is type(default)
    except (TypeError, ValueError):
        return False


def op_params(node: Node) -> str:
    """The node's parameters that differ from its op's defaults: "axis=(1,)"."""
    defaults = node.op.signature.defaults
    shown = [f"{k}={param_value(v)}" for k, v in node.params.items()
             if v is not None and not (k in defaults and _is_default(v, defaults[k]))]
    return ", ".join(shown)


def derivative_rule(op: Op) -> str:
    """The op's derivative rule, as its class states it (``rule = "d/dx = ..."``)."""
    return op.rule


def wrap(text: str, width: int = RULE_WIDTH) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def module_description(module: Any) -> str:
    """"Linear 2→3, bias=True": the module's class and its extra_repr."""
    extra = module.extra_repr() if hasattr(module, "extra_repr") else ""
    return f"{type(module).__name__} {extra}".strip()

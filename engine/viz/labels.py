"""The text inside the boxes: numbers, arrays, op names with their parameters, and each
op's derivative rule (its ``rule`` attribute, checked when the op is registered)."""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from ..graph import Node
from ..op import Op
from ..tensor import Tensor

# The fused losses are one node whose backward is the classic output delta.
FUSED_DELTAS = {
    "softmax_cross_entropy": "δ = (p − y)/N",
    "sigmoid_binary_cross_entropy": "δ = (σ(z) − y)/N",
}


def fused_loss_parts(node: Node) -> tuple[np.ndarray, np.ndarray, float, str]:
    """(p, y, N, the delta formula that applies) for a fused loss node, from its inputs:
    p = softmax(z) or σ(z); y as the derivation writes it (integer labels one-hot, label
    smoothing applied); N the divisor its ``reduction`` implies."""
    z = np.asarray(node.inputs[0].data, dtype=np.float64)
    y = np.asarray(node.inputs[1].data)
    reduction = node.params.get("reduction", "mean")
    if node.op.name == "softmax_cross_entropy":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
        C = z.shape[-1]
        y = np.eye(C)[y] if y.dtype.kind in "iu" else y.astype(np.float64)
        eps = node.params.get("label_smoothing", 0.0)
        if eps:
            y = (1 - eps) * y + eps / C
        rows = int(np.prod(z.shape[:-1]))
        n, formula = {"mean": (rows, f"δ = (p − y)/N, N = {rows} rows"),
                      "sum": (1, "δ = p − y (reduction sum)")}.get(
            reduction, (1, "δₙ = (pₙ − yₙ)·gₙ per row (reduction none)"))
    else:
        p = 0.5 * (1 + np.tanh(0.5 * z))             # σ(z), without overflow
        y = y.astype(np.float64)
        n, formula = {"mean": (z.size, f"δ = (σ(z) − y)/N, N = {z.size} elements"),
                      "batchmean": (z.shape[0], f"δ = (σ(z) − y)/N, N = {z.shape[0]} rows"),
                      "sum": (1, "δ = σ(z) − y (reduction sum)")}.get(
            reduction, (1, "δ = (σ(z) − y)·g per element (reduction none)"))
    return p, y, float(n), formula


def fused_loss_lines(node: Node, max_elements: int) -> list[str]:
    """The delta formula for the node's reduction and, for small tensors, p and y (so a
    student can check the delta by hand)."""
    p, y, _, formula = fused_loss_parts(node)
    lines = [formula]
    if p.size <= max_elements:
        lines += labelled("p", p, max_elements) + labelled("y", y, max_elements)
    return lines
RULE_WIDTH = 40  # characters per line of a derivative rule in an op box


def number(v: Any) -> str:
    """A number in 4 significant digits: 0.1235, -3, 1.5e-07, True."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.4g}"


def shape_text(shape: tuple[int, ...]) -> str:
    return str(tuple(int(n) for n in shape))


def array_lines(a: np.ndarray, max_elements: int) -> list[str]:
    """The values of a small array (one line per matrix row, numbers right-aligned in
    columns), else min / mean / max."""
    a = np.asarray(a)
    if a.size <= max_elements and a.ndim == 2:
        cells = [[number(v) for v in row] for row in a]
        widths = [max(len(row[j]) for row in cells) for j in range(a.shape[1])]
        rows = ["[" + ", ".join(c.rjust(w) for c, w in zip(row, widths)) + "]" for row in cells]
        return [("[" if i == 0 else " ") + r + ("]" if i == len(rows) - 1 else ",")
                for i, r in enumerate(rows)]
    if a.size <= max_elements:
        text = np.array2string(a, separator=", ", max_line_width=10**6,
                               threshold=max_elements + 1, formatter={"all": number})
        return text.splitlines()
    if a.dtype.kind not in "biuf":
        return [f"{a.dtype} array"]
    with np.errstate(all="ignore"):  # inf - inf in a mean is not worth a warning here
        lo, mean, hi = a.min(), a.astype(np.float64).mean(), a.max()
    return [f"min {number(lo)}  mean {number(mean)}  max {number(hi)}"]


def labelled(title: str, a: np.ndarray, max_elements: int) -> list[str]:
    """``title`` in front of the first line of ``array_lines``."""
    lines = array_lines(a, max_elements)
    pad = " " * (len(title) + 1)            # continuation rows stay under the first one
    return [f"{title} {lines[0]}", *(pad + line for line in lines[1:])]


def param_value(v: Any) -> str:
    """A short text for an op parameter (axis=1, shape=(2, 3), index=array (4,))."""
    if isinstance(v, Tensor):
        v = v.data
    if isinstance(v, np.ndarray):
        return f"array {shape_text(v.shape)}"
    if isinstance(v, tuple):
        return "(" + ", ".join(param_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, slice):
        parts = ["" if x is None else str(x) for x in (v.start, v.stop, v.step)]
        return ":".join(parts[:2] if v.step is None else parts)
    if isinstance(v, float):
        return number(v)
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

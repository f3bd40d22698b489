"""Shared shapes of rules: elementwise ops whose VJP and JVP are both "multiply by the
local derivative", and the broadcasting check of two-input ops."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..broadcast import broadcast_shapes, sum_to
from ..op import Op, RuleContext


def is_number(value: Any) -> bool:
    """A real number and not a bool (parameters reach ops as Python numbers: the call
    turned numpy scalars into them). The plain types first: this runs on every call."""
    return type(value) in (float, int) or (
        isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)))


def as_float(x: np.ndarray) -> np.ndarray:
    """``x`` unchanged if it is floating point (or complex), else in float64: every op that
    computes a floating-point result from integer or bool inputs computes it in float64,
    whatever their width. numpy alone would not: ``np.exp`` of int8, uint8 or bool computes
    in float16 (``np.exp(np.int8(12))`` is inf) and of int16 in float32, and a difference
    of unsigned integers wraps around (uint8 ``0 - 1`` is 255). One dtype-kind test on the
    float path."""
    return x if x.dtype.kind in "fc" else x.astype(np.float64)


def over(x: np.ndarray, n: int) -> np.ndarray:
    """``x / n`` for a count ``n`` (the elements a mean averages). A float16 ``x`` is divided
    in float32 and cast back: numpy would make n float16 first, inf from n = 65520, and
    x / inf is 0. Other dtypes: one dtype test, the plain division."""
    if x.dtype.char == "e":
        return (x / np.float32(n)).astype(np.float16)
    return x / n


def times(x: np.ndarray, c: float) -> np.ndarray:
    """``x * c`` for a Python float ``c``, in float32 for a float16 ``x`` (cast back): a small
    c (2 / n past n = 32768) is subnormal or 0 in float16."""
    if x.dtype.char == "e":
        return (x * np.float32(c)).astype(np.float16)
    return x * c


class UnaryElementwise(Op):
    """y = f(x) elementwise. The Jacobian is diagonal, diag(f'(x)), so the VJP is
    ``grad * f'(x)`` and the JVP is ``tangent * f'(x)``. Subclasses give ``forward``
    (saving what f' needs) and ``derivative``."""

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        raise NotImplementedError

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (grad * self.derivative(ctx),)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        return dx * self.derivative(ctx)


class Broadcasting(Op):
    """Two inputs combined with numpy broadcasting: their shapes must broadcast together."""

    def check(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape:
            broadcast_shapes(self.name, a.shape, b.shape)


class BinaryElementwise(Broadcasting):
    """z = f(a, b) elementwise with numpy broadcasting. Subclasses give ``partials``:
    the local derivatives (df/da, df/db), each of the output's shape or broadcastable
    to it. VJP: each gradient is ``grad * partial`` summed back to its input's shape;
    JVP: ``da * df/da + db * df/db``."""

    def partials(self, ctx: RuleContext) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        a, b = ctx.inputs
        da, db = self.partials(ctx)
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(grad * da, a.shape) if need_a else None,
                sum_to(grad * db, b.shape) if need_b else None)

    def jvp(self, ctx: RuleContext, ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
        da, db = self.partials(ctx)
        out_shape = np.broadcast_shapes(ta.shape, tb.shape)
        return np.broadcast_to(tangent_term(ta, da) + tangent_term(tb, db), out_shape)


def tangent_term(tangent: np.ndarray, partial: Any) -> np.ndarray:
    """``tangent * partial`` with a zero tangent giving 0 even where the partial is NaN or
    infinite (1/x at 0, 2x at inf): a constant operand's tangent is all zeros, and reverse
    mode never multiplies a gradient into a constant's partial, so forward mode must not
    either (0 * inf = NaN made the JVP of 1/x at 0 NaN where its VJP is -inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(tangent == 0, np.zeros((), dtype=np.result_type(tangent, partial)),
                        tangent * partial)


def moves(tangent: np.ndarray | None) -> bool:
    """Whether a tangent has a nonzero entry (a constant's is all zeros): a product rule's
    term for one that does not is left out, as reverse mode leaves its gradient out,
    rather than computed as 0 @ B, NaN where B holds an inf."""
    return tangent is not None and bool(tangent.any())

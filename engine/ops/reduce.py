"""Reductions over numpy-style ``axis`` (int, tuple or None) with ``keepdims``:
sum, mean, max, min, var, logsumexp.

``check`` turns ``axis`` into a sorted tuple of non-negative axes (what the rules use) and
refuses a reduction over no elements at all: a sum or a mean of an empty batch is an error,
never a silent 0.

float16 inputs are summed in float32 and the results cast back (as PyTorch does): a float16
sum along a strided axis stalls at 2048, and var's sum of squares overflows where the
variance fits.

Convention at ties: max/min split the gradient evenly among the tied elements
(as PyTorch's amax and JAX do), so the gradient stays a valid subgradient and sums to 1.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..broadcast import add_reduce, expand_reduced, normalize_axis, wide_sum
from ..op import Op, RuleContext, register
from ..plain import plain_repr
from ._base import as_float, over, times


class _Reduction(Op):
    """Shared axis handling for ``forward(ctx, x, *, axis=None, keepdims=False, ...)``."""

    def check(self, x: np.ndarray, *, axis: Any = None, keepdims: bool = False,
              **rest: Any) -> dict[str, Any]:
        axes = normalize_axis(self.name, axis, x.ndim)
        if not isinstance(keepdims, (bool, np.bool_)):
            raise self.error(f"keepdims must be True or False, got {plain_repr(keepdims)}", TypeError)
        if x.size == 0 and math.prod(x.shape[a] for a in axes) == 0:
            raise self.error(f"cannot reduce over no elements (shape {x.shape}, axis {axis}): "
                             f"an empty batch?")
        # None (every axis) stays None, as the caller wrote it; anything else is a tuple.
        return {"axis": None if axis is None else axes, "keepdims": bool(keepdims), **rest}

    @staticmethod
    def axes(ctx: RuleContext) -> tuple[int, ...]:
        """The reduced axes as a tuple (every axis for axis=None)."""
        axis = ctx.params["axis"]
        return tuple(range(ctx.inputs[0].ndim)) if axis is None else axis

    def expand(self, ctx: RuleContext, g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Gradient of the output broadcast back to the input's shape."""
        return expand_reduced(g, shape, self.axes(ctx), ctx.params["keepdims"])

    def reduce_tangent(self, ctx: RuleContext, t: np.ndarray) -> np.ndarray:
        return add_reduce(t, axis=ctx.params["axis"], keepdims=ctx.params["keepdims"])


@register(method=True)
class Sum(_Reduction):
    """sum(x, axis) = Σ_axis x. Linear: its JVP is sum(dx)."""

    name = "sum"
    rule = "d/dx = 1: the gradient is copied back along the summed axes"
    linear = True

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        return add_reduce(x, axis=axis, keepdims=keepdims)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (self.expand(ctx, grad, ctx.inputs[0].shape),)


@register(method=True)
class Mean(_Reduction):
    """mean(x, axis) = Σ_axis x / n, n = the number of elements averaged. Linear."""

    name = "mean"
    rule = "d/dx = 1/n, n = the number of elements averaged"
    linear = True

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        return x.mean(axis=axis, keepdims=keepdims)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        shape = ctx.inputs[0].shape
        n = math.prod(shape[a] for a in self.axes(ctx))
        return (self.expand(ctx, over(grad, n), shape),)


class _Extremum(_Reduction):
    """max or min over axes; ``pick`` is np.max or np.min. The gradient goes to the
    elements equal to the result, shared evenly among ties."""

    pick: Callable[..., np.ndarray] = staticmethod(np.max)

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        m = self.pick(x, axis=axis, keepdims=True)
        share = (x == m).astype(x.dtype if x.dtype.kind in "fc" else np.float64)
        share /= wide_sum(share, axis=axis, keepdims=True)   # > 2048 float16 ties: counted in float32
        ctx.save(share)
        return m if keepdims else np.squeeze(m, axis=axis)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        (share,) = ctx.saved
        return (self.expand(ctx, grad, share.shape) * share,)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        (share,) = ctx.saved
        return self.reduce_tangent(ctx, dx * share)


@register(method=True)
class Max(_Extremum):
    """max(x, axis): the largest element along the axes; tied maxima share the gradient."""

    name = "max"
    rule = "d/dx = [x = max] / (number of tied maxima)"
    pick = staticmethod(np.max)


@register(method=True)
class Min(_Extremum):
    """min(x, axis): the smallest element along the axes; tied minima share the gradient."""

    name = "min"
    rule = "d/dx = [x = min] / (number of tied minima)"
    pick = staticmethod(np.min)


@register(method=True)
class Var(_Reduction):
    """var(x, axis, ddof) = Σ (x - mean)^2 / (n - ddof).

    ddof=0 (numpy's default) is the population variance; ddof=1 is PyTorch's default.
    """

    name = "var"
    rule = "d/dx = 2 (x - mean) / (n - ddof)"

    def check(self, x: np.ndarray, *, axis: Any = None, keepdims: bool = False,  # type: ignore[override]
              ddof: int = 0) -> dict[str, Any]:          # (ddof: var's own, where the base has **rest)
        params = super().check(x, axis=axis, keepdims=keepdims, ddof=ddof)
        if not isinstance(ddof, (int, np.integer)) or isinstance(ddof, bool) or ddof < 0:
            raise self.error(f"ddof must be a non-negative integer, got {plain_repr(ddof)}", TypeError)
        n = math.prod(x.shape[a] for a in normalize_axis(self.name, axis, x.ndim))
        if n - ddof <= 0:
            raise self.error(f"needs more than ddof={ddof} elements along axis {axis}, "
                             f"got {n} (shape {x.shape})")
        return params

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: Any = None, keepdims: bool = False,
                ddof: int = 0) -> np.ndarray:
        n = x.size if axis is None else math.prod(x.shape[a] for a in axis)
        wide = x.astype(np.float32) if x.dtype.char == "e" else x   # float16: squares in float32
        centered = wide - wide.mean(axis=axis, keepdims=True)
        out = (centered * centered).sum(axis=axis, keepdims=keepdims) / (n - ddof)
        if wide is not x:
            centered, out = centered.astype(np.float16), out.astype(np.float16)
        ctx.save(centered, n - ddof)
        return out

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        centered, dof = ctx.saved
        return (times(self.expand(ctx, grad, centered.shape) * centered, 2 / dof),)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        centered, dof = ctx.saved
        return times(self.reduce_tangent(ctx, dx * centered), 2 / dof)


@register(method=True)
class LogSumExp(_Reduction):
    """logsumexp(x, axis) = log Σ_axis exp(x).

    Computed as m + log Σ exp(x - m) with m the maximum, so it is finite for |x| ~ 1e4.
    """

    name = "logsumexp"
    rule = "d/dx = softmax(x) along the reduced axes"

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        x = as_float(x)               # x - m of an unsigned x would wrap around
        m = x.max(axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)  # all -inf along an axis: keep exp(x - m) at 0, not NaN
        e = np.exp(x - m)
        s = wide_sum(e, axis=axis, keepdims=True)     # float32 for float16: may pass 65504
        ctx.save((e / s).astype(x.dtype, copy=False))
        out = (m + np.log(s)).astype(x.dtype, copy=False)
        return out if keepdims else np.squeeze(out, axis=axis)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        (p,) = ctx.saved
        return (self.expand(ctx, grad, p.shape) * p,)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        (p,) = ctx.saved
        return self.reduce_tangent(ctx, dx * p)

"""Reductions over numpy-style ``axis`` (int, tuple or None) with ``keepdims``:
sum, mean, max, min, var, logsumexp.

Convention at ties: max/min split the gradient evenly among the tied elements
(as PyTorch's amax and JAX do), so the gradient stays a valid subgradient and sums to 1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..broadcast import expand_reduced, keepdims_shape, normalize_axis
from ..graph import Node
from ..op import Op, register


class _Reduction(Op):
    """Shared axis handling: ``forward`` normalizes ``axis`` and saves the input shape."""

    def __call__(self, x: Any, axis: Any = None, keepdims: bool = False, **params: Any) -> Any:
        return self.apply(x, axis=axis, keepdims=keepdims, **params)

    def axes(self, ctx: Node, x: np.ndarray, axis: Any) -> tuple[int, ...]:
        return normalize_axis(self.name, axis, x.ndim)

    def expand(self, ctx: Node, g: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
        """Gradient of the output broadcast back to the input's shape."""
        return expand_reduced(g, shape, axes, ctx.params.get("keepdims", False))

    def reduce_tangent(self, ctx: Node, t: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        return t.sum(axis=axes, keepdims=ctx.params.get("keepdims", False))


class Sum(_Reduction):
    """sum(x, axis) = Σ_axis x.   d/dx = 1: the gradient is copied back along the summed axes."""

    name = "sum"

    def forward(self, ctx: Node, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        axes = self.axes(ctx, x, axis)
        ctx.save(x.shape, axes)
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        shape, axes = ctx.saved
        return (self.expand(ctx, grad, shape, axes),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        _, axes = ctx.saved
        return self.reduce_tangent(ctx, dx, axes)


class Mean(_Reduction):
    """mean(x, axis) = Σ_axis x / n, n = number of elements reduced.   d/dx = 1/n."""

    name = "mean"

    def forward(self, ctx: Node, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        axes = self.axes(ctx, x, axis)
        n = int(np.prod([x.shape[a] for a in axes]))
        if n == 0:
            raise self.error(f"mean of an empty selection (shape {x.shape}, axis {axis})")
        ctx.save(x.shape, axes, n)
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        shape, axes, n = ctx.saved
        return (self.expand(ctx, grad / n, shape, axes),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        _, axes, n = ctx.saved
        return self.reduce_tangent(ctx, dx, axes) / n


class Max(_Reduction):
    """max(x, axis).   d/dx = [x == max] / (number of tied maxima): ties share the gradient."""

    name = "max"
    pick = staticmethod(np.max)

    def forward(self, ctx: Node, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        axes = self.axes(ctx, x, axis)
        if x.size == 0:
            raise self.error(f"{self.name} of an empty tensor (shape {x.shape})")
        m = self.pick(x, axis=axes, keepdims=True)
        share = (x == m).astype(x.dtype)
        share /= share.sum(axis=axes, keepdims=True)
        ctx.save(share, axes)
        return m if keepdims else np.squeeze(m, axis=axes)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        share, axes = ctx.saved
        return (self.expand(ctx, grad, share.shape, axes) * share,)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        share, axes = ctx.saved
        return self.reduce_tangent(ctx, dx * share, axes)


class Min(Max):
    """min(x, axis).   d/dx = [x == min] / (number of tied minima): ties share the gradient."""

    name = "min"
    pick = staticmethod(np.min)


class Var(_Reduction):
    """var(x, axis, ddof) = Σ (x - mean)^2 / (n - ddof).   d/dx = 2 (x - mean) / (n - ddof).

    ddof=0 (numpy's default) is the population variance; ddof=1 is PyTorch's default.
    """

    name = "var"

    def forward(self, ctx: Node, x: np.ndarray, axis: Any = None, keepdims: bool = False,
                ddof: int = 0) -> np.ndarray:
        axes = self.axes(ctx, x, axis)
        n = int(np.prod([x.shape[a] for a in axes]))
        if n - ddof <= 0:
            raise self.error(f"needs more than ddof={ddof} elements along axis {axis}, "
                             f"got {n} (shape {x.shape})")
        centered = x - x.mean(axis=axes, keepdims=True)
        ctx.save(centered, axes, n - ddof)
        return (centered * centered).sum(axis=axes, keepdims=keepdims) / (n - ddof)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        centered, axes, dof = ctx.saved
        return (self.expand(ctx, grad, centered.shape, axes) * centered * (2 / dof),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        centered, axes, dof = ctx.saved
        return self.reduce_tangent(ctx, dx * centered, axes) * (2 / dof)


class LogSumExp(_Reduction):
    """logsumexp(x, axis) = log Σ_axis exp(x).   d/dx = softmax(x) along the axes.

    Computed as m + log Σ exp(x - m) with m the maximum, so it is finite for |x| ~ 1e4.
    """

    name = "logsumexp"

    def forward(self, ctx: Node, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        axes = self.axes(ctx, x, axis)
        if x.size == 0:
            raise self.error(f"logsumexp of an empty tensor (shape {x.shape})")
        m = x.max(axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)  # all -inf along an axis: keep exp(x - m) at 0, not NaN
        e = np.exp(x - m)
        s = e.sum(axis=axes, keepdims=True)
        ctx.save(e / s, axes)
        out = m + np.log(s)
        return out if keepdims else np.squeeze(out, axis=axes)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        p, axes = ctx.saved
        return (self.expand(ctx, grad, p.shape, axes) * p,)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        p, axes = ctx.saved
        return self.reduce_tangent(ctx, dx * p, axes)


sum = register(Sum())
mean = register(Mean())
max = register(Max())
min = register(Min())
var = register(Var())
logsumexp = register(LogSumExp())

__all__ = ["sum", "mean", "max", "min", "var", "logsumexp", "keepdims_shape"]

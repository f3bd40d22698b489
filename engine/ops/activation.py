"""Activation functions, softmax and dropout.

All are stable for inputs of magnitude 1e4 in float32 and float64: no exp() of a large
positive number is ever computed. Convention at kinks: relu'(0) = 0, leaky_relu'(0) =
negative_slope, elu'(0) = alpha (the left-hand derivative), as in PyTorch.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..broadcast import normalize_axis
from ..graph import Node
from ..op import Op, register
from ..tensor import Tensor
from ._base import UnaryElementwise


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow: uses e^-|x| <= 1 on both sides of 0."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(UnaryElementwise):
    """sigmoid(x) = 1 / (1 + e^-x).   d/dx = s (1 - s), s = sigmoid(x)."""

    name = "sigmoid"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        s = stable_sigmoid(x)
        ctx.save(s)
        return s

    def derivative(self, ctx: Node) -> np.ndarray:
        (s,) = ctx.saved
        return s * (1 - s)


class Tanh(UnaryElementwise):
    """tanh(x).   d/dx = 1 - tanh(x)^2."""

    name = "tanh"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x)
        ctx.save(y)
        return y

    def derivative(self, ctx: Node) -> np.ndarray:
        (y,) = ctx.saved
        return 1 - y * y


class ReLU(UnaryElementwise):
    """relu(x) = max(x, 0).   d/dx = [x > 0] (so relu'(0) = 0)."""

    name = "relu"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x > 0)
        return np.maximum(x, 0)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        (positive,) = ctx.saved
        return (grad * positive,)  # multiplying by a bool mask keeps grad's dtype

    def derivative(self, ctx: Node) -> np.ndarray:
        return ctx.saved[0]


class LeakyReLU(UnaryElementwise):
    """leaky_relu(x) = x if x > 0 else a x (a = negative_slope).   d/dx = 1 if x > 0 else a."""

    name = "leaky_relu"

    def __call__(self, x: Any, negative_slope: float = 0.01) -> Tensor:
        return self.apply(x, negative_slope=negative_slope)  # a parameter, not a second input

    def forward(self, ctx: Node, x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
        ctx.save(x > 0)
        return np.where(x > 0, x, x * negative_slope)

    def derivative(self, ctx: Node) -> np.ndarray:
        (positive,) = ctx.saved
        slope = ctx.params.get("negative_slope", 0.01)
        x = ctx.inputs[0].data
        return np.where(positive, np.ones((), x.dtype), np.asarray(slope, x.dtype))


class ELU(UnaryElementwise):
    """elu(x) = x if x > 0 else alpha (e^x - 1).   d/dx = 1 if x > 0 else alpha e^x."""

    name = "elu"

    def __call__(self, x: Any, alpha: float = 1.0) -> Tensor:
        return self.apply(x, alpha=alpha)

    def forward(self, ctx: Node, x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
        neg = alpha * np.exp(np.minimum(x, 0))   # alpha e^x on the left; never overflows
        ctx.save(x > 0, neg)
        return np.where(x > 0, x, neg - alpha)

    def derivative(self, ctx: Node) -> np.ndarray:
        positive, neg = ctx.saved
        return np.where(positive, np.ones((), neg.dtype), neg)


class Softplus(UnaryElementwise):
    """softplus(x) = log(1 + e^x).   d/dx = sigmoid(x).

    Computed as logaddexp(0, x), exact for large |x| (softplus(1e4) = 1e4)."""

    name = "softplus"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x)
        return np.logaddexp(0, x).astype(x.dtype, copy=False)

    def derivative(self, ctx: Node) -> np.ndarray:
        return stable_sigmoid(ctx.saved[0])


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)


class GELU(UnaryElementwise):
    """gelu(x) = x Phi(x), Phi the standard normal CDF.
    approximate="tanh": Phi(x) ~ (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3),
    d/dx = (1 + t)/2 + x (1 - t^2) u'(x) / 2 with t = tanh(u);
    approximate="none": exact, d/dx = Phi(x) + x phi(x), phi the normal density.
    """

    name = "gelu"

    def __call__(self, x: Any, approximate: str = "tanh") -> Tensor:
        return self.apply(x, approximate=approximate)

    def forward(self, ctx: Node, x: np.ndarray, approximate: str = "tanh") -> np.ndarray:
        if approximate == "tanh":
            t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
            ctx.save(x, t)
            return 0.5 * x * (1 + t)
        if approximate == "none":
            cdf = np.asarray(0.5 * (1 + _erf(x * _INV_SQRT_2)), dtype=x.dtype)
            ctx.save(x, cdf)
            return x * cdf
        raise self.error(f"approximate must be 'tanh' or 'none', got {approximate!r}")

    def derivative(self, ctx: Node) -> np.ndarray:
        x, t_or_cdf = ctx.saved
        if ctx.params.get("approximate", "tanh") == "tanh":
            t = t_or_cdf
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
        return t_or_cdf + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)


class Softmax(Op):
    """softmax(x, axis)_i = e^(x_i) / Σ_j e^(x_j).   VJP: p * (grad - Σ grad p);
    JVP: p * (dx - Σ dx p) (the Jacobian diag(p) - p p^T is symmetric)."""

    name = "softmax"

    def __call__(self, x: Any, axis: int = -1) -> Tensor:
        return self.apply(x, axis=axis)

    def forward(self, ctx: Node, x: np.ndarray, axis: int = -1) -> np.ndarray:
        (ax,) = normalize_axis(self.name, axis, x.ndim)
        e = np.exp(x - x.max(axis=ax, keepdims=True))  # shift by the max: exponents <= 0
        p = e / e.sum(axis=ax, keepdims=True)
        ctx.save(p, ax)
        return p

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        p, ax = ctx.saved
        return (p * (grad - (grad * p).sum(axis=ax, keepdims=True)),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        return self.backward(ctx, dx)[0]


class LogSoftmax(Op):
    """log_softmax(x, axis) = x - logsumexp(x, axis).   VJP: grad - p Σ grad; JVP: dx - Σ p dx."""

    name = "log_softmax"

    def __call__(self, x: Any, axis: int = -1) -> Tensor:
        return self.apply(x, axis=axis)

    def forward(self, ctx: Node, x: np.ndarray, axis: int = -1) -> np.ndarray:
        (ax,) = normalize_axis(self.name, axis, x.ndim)
        shifted = x - x.max(axis=ax, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=ax, keepdims=True))
        ctx.save(np.exp(out), ax)
        return out

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        p, ax = ctx.saved
        return (grad - p * grad.sum(axis=ax, keepdims=True),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        p, ax = ctx.saved
        return dx - (p * dx).sum(axis=ax, keepdims=True)


class Dropout(Op):
    """dropout(x, mask) = x * mask, where mask = keep / (1 - p) was drawn once by the
    ``dropout`` function and is a (non-differentiable) input of the node.   d/dx = mask."""

    name = "dropout"
    nondiff = (1,)

    def forward(self, ctx: Node, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if mask.shape != x.shape:
            raise self.error(f"mask shape {mask.shape} differs from input shape {x.shape}")
        mask = mask.astype(x.dtype, copy=False)
        ctx.save(mask)
        return x * mask

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray, None]:
        return grad * ctx.saved[0], None

    def jvp(self, ctx: Node, dx: np.ndarray, _: None) -> np.ndarray:
        return dx * ctx.saved[0]


sigmoid = register(Sigmoid())
tanh = register(Tanh())
relu = register(ReLU())
leaky_relu = register(LeakyReLU())
elu = register(ELU())
softplus = register(Softplus())
gelu = register(GELU())
softmax = register(Softmax())
log_softmax = register(LogSoftmax())
dropout_op = register(Dropout())


def dropout(x: Any, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    The identity when ``training`` is False or p == 0. ``rng`` (a numpy Generator) makes
    the mask reproducible; the mask is stored as an input of the graph node.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    if not training or p == 0:
        return x
    rng = rng if rng is not None else np.random.default_rng()
    keep = rng.random(x.shape) >= p
    mask = keep.astype(x.dtype) / np.asarray(1 - p, dtype=x.dtype)
    return dropout_op(x, mask)

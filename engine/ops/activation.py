"""Activation functions, softmax and dropout.

All are stable for inputs of magnitude 1e4 in float32 and float64: no exp() of a large
positive number is ever computed. Convention at kinks: relu'(0) = 0, leaky_relu'(0) =
negative_slope, elu'(0) = alpha (the left-hand derivative), as in PyTorch.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..broadcast import add_reduce, normalize_axis, wide_sum
from ..op import Op, RuleContext, register
from ..plain import plain_repr
from ._base import UnaryElementwise, as_float, is_number


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow: uses e^-|x| <= 1 on both sides of 0."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register(method=True)
class Sigmoid(UnaryElementwise):
    """sigmoid(x) = 1 / (1 + e^-x)."""

    name = "sigmoid"
    rule = "d/dx = s (1 - s), s = sigmoid(x)"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        s = stable_sigmoid(as_float(x))   # -|x| of an unsigned x would wrap around
        ctx.save_output(s)
        return s

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        (s,) = ctx.saved
        return s * (1 - s)


@register(method=True)
class Tanh(UnaryElementwise):
    """tanh(x), the hyperbolic tangent."""

    name = "tanh"
    rule = "d/dx = 1 - tanh(x)^2"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        y = np.tanh(as_float(x))
        ctx.save_output(y)
        return y

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        (y,) = ctx.saved
        return 1 - y * y


@register(method=True)
class ReLU(UnaryElementwise):
    """relu(x) = max(x, 0), with relu'(0) = 0."""

    name = "relu"
    rule = "d/dx = [x > 0] (0 at x = 0)"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        ctx.save(x > 0)
        return np.maximum(x, 0)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        (positive,) = ctx.saved
        return (grad * positive,)  # multiplying by a bool mask keeps grad's dtype

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        return ctx.saved[0]


def _real(op: Op, what: str, value: Any) -> None:
    if not is_number(value) or not math.isfinite(value):
        raise op.error(f"{what} must be a finite real number, got {plain_repr(value)}", TypeError)


@register(method=True)
class LeakyReLU(UnaryElementwise):
    """leaky_relu(x) = x if x > 0 else a x, a = negative_slope (its derivative at 0)."""

    name = "leaky_relu"
    rule = "d/dx = 1 if x > 0 else negative_slope"

    def check(self, x: np.ndarray, *, negative_slope: float = 0.01) -> None:
        _real(self, "negative_slope", negative_slope)

    def forward(self, ctx: RuleContext, x: np.ndarray, *, negative_slope: float = 0.01) -> np.ndarray:
        ctx.save(x > 0)
        return np.where(x > 0, x, x * negative_slope)

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        (positive,) = ctx.saved
        dtype = ctx.inputs[0].dtype
        return np.where(positive, np.ones((), dtype), np.asarray(ctx.params["negative_slope"], dtype))


@register(method=True)
class ELU(UnaryElementwise):
    """elu(x) = x if x > 0 else alpha (e^x - 1); its derivative at 0 is alpha."""

    name = "elu"
    rule = "d/dx = 1 if x > 0 else alpha e^x"

    def check(self, x: np.ndarray, *, alpha: float = 1.0) -> None:
        _real(self, "alpha", alpha)

    def forward(self, ctx: RuleContext, x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
        x = as_float(x)
        left = np.minimum(x, 0)                  # e^x on the left only: never overflows
        ctx.save(x > 0, alpha * np.exp(left))    # alpha e^x, the derivative on the left
        # expm1, not e^x - 1, which cancels near 0 (elu(-1e-8) was 0 in float32)
        return np.where(x > 0, x, alpha * np.expm1(left))

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        positive, neg = ctx.saved
        return np.where(positive, np.ones((), neg.dtype), neg)


@register(method=True)
class Softplus(UnaryElementwise):
    """softplus(x) = log(1 + e^x), computed as logaddexp(0, x): exact for large |x|
    (softplus(1e4) = 1e4)."""

    name = "softplus"
    rule = "d/dx = sigmoid(x)"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        ctx.save_input(x)
        x = as_float(x)
        return np.logaddexp(np.zeros((), x.dtype), x)

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        return stable_sigmoid(ctx.saved[0])


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)


@register(method=True)
class GELU(UnaryElementwise):
    """gelu(x) = x Phi(x), Phi the standard normal CDF.

    approximate="tanh" (the default): Phi(x) ~ (1 + tanh(u)) / 2 with
    u = sqrt(2/pi) (x + 0.044715 x^3), so with t = tanh(u)
    d/dx = (1 + t)/2 + x (1 - t^2) u'(x) / 2.
    approximate="none": exact, d/dx = Phi(x) + x phi(x), phi the normal density.
    """

    name = "gelu"
    rule = ("tanh form: d/dx = (1 + t)/2 + x (1 − t²) u′(x)/2, t = tanh(u), "
            "u = √(2/π) (x + 0.044715 x³); exact form: d/dx = Φ(x) + x φ(x)")

    def check(self, x: np.ndarray, *, approximate: str = "tanh") -> None:
        if approximate not in ("tanh", "none"):
            raise self.error(f"approximate must be 'tanh' or 'none', got {plain_repr(approximate)}")

    def forward(self, ctx: RuleContext, x: np.ndarray, *, approximate: str = "tanh") -> np.ndarray:
        x = as_float(x)               # a copy only if x is an integer: no gradient, no node
        if approximate == "tanh":
            # x^3 overflows float16 from |x| ~ 40: u in float32 there (t = tanh(u) fits)
            wide = x.astype(np.float32) if x.dtype == np.float16 else x
            t = np.tanh(_SQRT_2_OVER_PI * (wide + 0.044715 * wide ** 3)).astype(x.dtype, copy=False)
            ctx.save_input(x)
            ctx.save(t)
            return 0.5 * x * (1 + t)
        cdf = np.asarray(0.5 * (1 + _erf(x * _INV_SQRT_2)), dtype=x.dtype)
        ctx.save_input(x)
        ctx.save(cdf)
        return x * cdf

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        x, t_or_cdf = ctx.saved
        if ctx.params["approximate"] == "tanh":
            if x.dtype == np.float16:
                # u'(x) ~ 0.107 x^2 overflows float16 from |x| ~ 700, where 1 - t^2 is 0:
                # 0 * inf = NaN. In float32 the product is 0, as it should be.
                x32, t32 = x.astype(np.float32), t_or_cdf.astype(np.float32)
                du32 = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x32 * x32)
                return (0.5 * (1 + t32) + 0.5 * x32 * (1 - t32 * t32) * du32).astype(np.float16)
            t = t_or_cdf
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
        return t_or_cdf + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)


class _AlongAxis(Op):
    """softmax and log_softmax work along one axis, which must not be empty."""

    def check(self, x: np.ndarray, *, axis: int = -1) -> dict[str, Any]:
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise self.error(f"axis must be an int, got {plain_repr(axis)}", TypeError)
        if x.ndim == 0:
            raise self.error("needs a tensor with at least one axis, got a 0-d tensor")
        (ax,) = normalize_axis(self.name, axis, x.ndim)
        if x.shape[ax] == 0:   # an empty batch (other axes of length 0) is fine: no rows
            raise self.error(f"cannot normalize over an axis of length 0 (shape {x.shape}, "
                             f"axis {axis}): there is no element to give the probability to")
        return {"axis": ax}


@register(method=True)
class Softmax(_AlongAxis):
    """softmax(x, axis)_i = e^(x_i) / Σ_j e^(x_j), computed with the max shifted out.
    Its Jacobian diag(p) - p p^T is symmetric, so the JVP is the VJP's formula."""

    name = "softmax"
    rule = "VJP: p ⊙ (grad − Σ grad ⊙ p), p = softmax(x)"

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: int = -1) -> np.ndarray:
        x = as_float(x)               # x - max of an unsigned x would wrap around
        e = np.exp(x - x.max(axis=axis, keepdims=True))  # exponents <= 0
        # float16: the normaliser in float32 (over > 65504 elements it is no float16)
        p = np.divide(e, wide_sum(e, axis=axis, keepdims=True), out=e)
        ctx.save_output(p)
        return p

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        (p,) = ctx.saved
        return (p * (grad - add_reduce(grad * p, axis=ctx.params["axis"], keepdims=True)),)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        return self.backward(ctx, dx)[0]


@register(method=True)
class LogSoftmax(_AlongAxis):
    """log_softmax(x, axis) = x - logsumexp(x, axis), computed with the max shifted out."""

    name = "log_softmax"
    rule = "VJP: grad − p Σ grad, p = softmax(x); JVP: dx − Σ p dx"

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axis: int = -1) -> np.ndarray:
        x = as_float(x)               # x - max of an unsigned x would wrap around
        shifted = x - x.max(axis=axis, keepdims=True)
        log_norm = np.log(wide_sum(np.exp(shifted), axis=axis, keepdims=True))  # float16: in float32
        out = np.subtract(shifted, log_norm, out=shifted)
        ctx.save(np.exp(out))
        return out

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        (p,) = ctx.saved
        return (grad - p * add_reduce(grad, axis=ctx.params["axis"], keepdims=True),)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        (p,) = ctx.saved
        return dx - add_reduce(p * dx, axis=ctx.params["axis"], keepdims=True)


@register
class Dropout(Op):
    """dropout(x, p=0.5, training=True, rng=None): inverted dropout. In training, each
    element is zeroed with probability p and the rest scaled by 1/(1-p): x * mask with
    mask = keep / (1 - p), drawn once in the forward and saved. Otherwise the identity.

    ``rng`` is a numpy Generator (its state advances), an int seed (the same mask every
    call: what gradient checks need) or None (fresh entropy). x must be floating point.
    """

    name = "dropout"
    rule = "d/dx = mask = keep / (1 − p)"

    def check(self, x: np.ndarray, *, p: float = 0.5, training: bool = True,
              rng: Any = None) -> None:
        if x.dtype.kind not in "fc":
            raise self.error(f"needs a floating-point input, got dtype {x.dtype} "
                             f"(convert first: t.astype(np.float32))", TypeError)
        if not is_number(p) or not 0 <= p < 1:
            raise self.error(f"p must be in [0, 1), got {plain_repr(p)}")
        if not isinstance(training, (bool, np.bool_)):
            raise self.error(f"training must be True or False, got {plain_repr(training)}", TypeError)
        if rng is not None and not isinstance(rng, (np.random.Generator, numbers.Integral)):
            raise self.error(f"rng must be a numpy Generator, an int seed or None, got "
                             f"{type(rng).__name__}", TypeError)

    def forward(self, ctx: RuleContext, x: np.ndarray, *, p: float = 0.5, training: bool = True,
                rng: Any = None) -> np.ndarray:
        if not training or p == 0:
            ctx.save(None)
            return x
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        keep = generator.random(x.shape) >= p
        kept = x.dtype.type(1 - p)
        if kept == 0:      # float16 and p > 1 - 3e-8: every mask entry 0/0 or 1/0
            raise self.error(f"p = {p} leaves 1 - p = 0 in {x.dtype}, the input's dtype: the "
                             f"kept values would be scaled by 1/0", ValueError)
        mask = keep.astype(x.dtype) / kept
        ctx.save(mask)
        return x * mask

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        (mask,) = ctx.saved
        return (grad if mask is None else grad * mask,)

    def jvp(self, ctx: RuleContext, dx: np.ndarray) -> np.ndarray:
        (mask,) = ctx.saved
        return dx if mask is None else dx * mask

"""Elementwise arithmetic: + - * / neg, powers, exp, log, sqrt, abs, max/min of two tensors,
clip and where.

Conventions at kinks (documented, and tested at the kink itself):
abs'(0) = 0; maximum/minimum split the gradient evenly between a and b where a == b;
clip passes the gradient at the bounds themselves (min <= x <= max), like PyTorch.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..broadcast import broadcast_shapes, sum_to
from ..graph import Node
from ..op import Op, register
from ..tensor import Tensor
from ._base import BinaryElementwise, UnaryElementwise


class Add(BinaryElementwise):
    """add(a, b) = a + b.   d/da = 1, d/db = 1 (each gradient summed over broadcast axes)."""

    name = "add"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        return a + b

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[Any, Any]:
        a, b = ctx.inputs
        return sum_to(grad, a.shape), sum_to(grad, b.shape)

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        return 1, 1


class Sub(BinaryElementwise):
    """sub(a, b) = a - b.   d/da = 1, d/db = -1."""

    name = "sub"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        return a - b

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[Any, Any]:
        a, b = ctx.inputs
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(grad, a.shape) if need_a else None,
                sum_to(-grad, b.shape) if need_b else None)

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        return 1, -1


class Mul(BinaryElementwise):
    """mul(a, b) = a * b.   d/da = b, d/db = a."""

    name = "mul"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        ctx.save(a, b)
        return a * b

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        a, b = ctx.saved
        return b, a


class Div(BinaryElementwise):
    """div(a, b) = a / b.   d/da = 1/b, d/db = -a/b^2."""

    name = "div"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        ctx.save(a, b)
        return a / b

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        a, b = ctx.saved
        return 1 / b, -a / (b * b)


class Neg(UnaryElementwise):
    """neg(x) = -x.   d/dx = -1."""

    name = "neg"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        return -x

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        return (-grad,)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        return -dx


class Pow(BinaryElementwise):
    """pow(a, b) = a ** b (both tensors).   d/da = b a^(b-1), d/db = a^b log(a).

    d/db needs a > 0 (for a == 0 it is taken as 0, the limit when b > 0; for a < 0 it
    is NaN, as the real power is undefined). Use ``pow_scalar`` for a constant exponent.
    """

    name = "pow"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        out = a ** b
        ctx.save(a, b, out)
        return out

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        a, b, out = ctx.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = np.where(a == 0, 0, np.log(np.where(a == 0, 1, a)))
        return b * a ** (b - 1), out * log_a


class PowScalar(UnaryElementwise):
    """pow_scalar(x, exponent=p) = x ** p for a constant number p.   d/dx = p x^(p-1)."""

    name = "pow_scalar"

    def __call__(self, x: Any, exponent: float) -> Tensor:
        return self.apply(x, exponent=exponent)  # a constant parameter, not an input

    def forward(self, ctx: Node, x: np.ndarray, exponent: float) -> np.ndarray:
        if not isinstance(exponent, numbers.Real):
            raise self.error(f"exponent must be a real number, got {exponent!r}", TypeError)
        ctx.save(x)
        return x ** exponent

    def derivative(self, ctx: Node) -> np.ndarray:
        (x,) = ctx.saved
        p = ctx.params["exponent"]
        if p == 0:
            return np.zeros_like(x)
        return p * x ** (p - 1)


class Exp(UnaryElementwise):
    """exp(x) = e^x.   d/dx = e^x (the output itself)."""

    name = "exp"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        y = np.exp(x)
        ctx.save(y)
        return y

    def derivative(self, ctx: Node) -> np.ndarray:
        return ctx.saved[0]


class Log(UnaryElementwise):
    """log(x), natural logarithm, x > 0.   d/dx = 1/x."""

    name = "log"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x)
        return np.log(x)

    def derivative(self, ctx: Node) -> np.ndarray:
        return 1 / ctx.saved[0]


class Sqrt(UnaryElementwise):
    """sqrt(x) = x^(1/2), x >= 0.   d/dx = 1 / (2 sqrt(x))."""

    name = "sqrt"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        y = np.sqrt(x)
        ctx.save(y)
        return y

    def derivative(self, ctx: Node) -> np.ndarray:
        return 0.5 / ctx.saved[0]


class Abs(UnaryElementwise):
    """abs(x) = |x|.   d/dx = sign(x), with abs'(0) = 0."""

    name = "abs"

    def forward(self, ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x)
        return np.abs(x)

    def derivative(self, ctx: Node) -> np.ndarray:
        return np.sign(ctx.saved[0])


class Maximum(BinaryElementwise):
    """maximum(a, b) elementwise.   d/da = [a > b] + [a == b]/2, d/db = [b > a] + [a == b]/2."""

    name = "maximum"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        ctx.save(a, b)
        return np.maximum(a, b)

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        a, b = ctx.saved
        return _winner_share(a, b)


class Minimum(BinaryElementwise):
    """minimum(a, b) elementwise.   d/da = [a < b] + [a == b]/2, d/db = [b < a] + [a == b]/2."""

    name = "minimum"

    def forward(self, ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.check_shapes(a, b)
        ctx.save(a, b)
        return np.minimum(a, b)

    def partials(self, ctx: Node) -> tuple[Any, Any]:
        a, b = ctx.saved
        return _winner_share(b, a)


def _winner_share(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of the gradient of max(a, b) each side receives: all to the larger one,
    half each on a tie."""
    dtype = np.result_type(a, b)
    tie = (a == b).astype(dtype) * 0.5
    return (a > b).astype(dtype) + tie, (b > a).astype(dtype) + tie


class Clip(UnaryElementwise):
    """clip(x, min, max) = min(max(x, min), max).   d/dx = [min <= x <= max]."""

    name = "clip"

    def __call__(self, x: Any, min: float | None = None, max: float | None = None) -> Tensor:
        return self.apply(x, min=min, max=max)  # bounds are parameters, not inputs

    def forward(self, ctx: Node, x: np.ndarray, min: float | None = None,
                max: float | None = None) -> np.ndarray:
        if min is None and max is None:
            raise self.error("at least one of min and max must be given")
        if min is not None and max is not None and min > max:
            raise self.error(f"min ({min}) must not exceed max ({max})")
        ctx.save(x)
        return np.clip(x, min, max)

    def derivative(self, ctx: Node) -> np.ndarray:
        (x,) = ctx.saved
        lo, hi = ctx.params.get("min"), ctx.params.get("max")
        inside = np.ones(x.shape, dtype=bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        return inside.astype(x.dtype)


class Where(Op):
    """where(cond, a, b) = a where cond else b.   d/da = [cond], d/db = [not cond];
    cond is not differentiable."""

    name = "where"
    nondiff = (0,)

    def forward(self, ctx: Node, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if cond.dtype != bool:
            raise self.error(f"condition must be boolean, got dtype {cond.dtype}", TypeError)
        broadcast_shapes(self.name, cond.shape, a.shape, b.shape)
        ctx.save(cond)
        return np.where(cond, a, b)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[Any, Any, Any]:
        (cond,) = ctx.saved
        _, a, b = ctx.inputs
        zero = np.zeros((), dtype=grad.dtype)
        return (None,
                sum_to(np.where(cond, grad, zero), a.shape),
                sum_to(np.where(cond, zero, grad), b.shape))

    def jvp(self, ctx: Node, _: None, da: np.ndarray, db: np.ndarray) -> np.ndarray:
        (cond,) = ctx.saved
        out_shape = np.broadcast_shapes(cond.shape, da.shape, db.shape)
        return np.broadcast_to(np.where(cond, da, db), out_shape)


add = register(Add())
sub = register(Sub())
mul = register(Mul())
div = register(Div())
neg = register(Neg())
pow_tensor = register(Pow())
pow_scalar = register(PowScalar())
exp = register(Exp())
log = register(Log())
sqrt = register(Sqrt())
abs = register(Abs())
maximum = register(Maximum())
minimum = register(Minimum())
clip = register(Clip())
where = register(Where())


def power(base: Any, exponent: Any) -> Tensor:
    """``base ** exponent``: ``pow_scalar`` for a constant Python number exponent (any
    base), ``pow`` when the exponent is a tensor or array."""
    if isinstance(exponent, numbers.Real) and not isinstance(exponent, bool):
        return pow_scalar(base, exponent=exponent)
    return pow_tensor(base, exponent)

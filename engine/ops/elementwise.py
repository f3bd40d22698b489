"""Elementwise arithmetic: + - * / neg, powers, exp, log, sqrt, abs, max/min of two tensors,
clip and where.

Conventions at kinks (documented, and tested at the kink itself):
abs'(0) = 0; maximum/minimum split the gradient evenly between a and b where a == b;
clip passes the gradient at the bounds themselves (min <= x <= max), like PyTorch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..broadcast import broadcast_shapes, sum_to
from ..op import Op, RuleContext, register
from ..plain import plain_repr
from ._base import BinaryElementwise, Broadcasting, UnaryElementwise, as_float, is_number, tangent_term


@register
class Add(Broadcasting):
    """add(a, b) = a + b, with numpy broadcasting. Linear: its JVP is da + db."""

    name = "add"
    rule = "d/da = 1, d/db = 1 (each summed over its broadcast axes)"
    linear = True

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[Any, Any]:
        a, b = ctx.inputs
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(grad, a.shape) if need_a else None,
                sum_to(grad, b.shape) if need_b else None)


def _bool_arithmetic(op: Op, verb: str, *inputs: np.ndarray) -> Exception:
    """The error for ``-`` of booleans, which numpy and PyTorch refuse too: the only
    inputs for which numpy's ``-`` raises, as ``check_dtype`` let only numbers in."""
    if len(inputs) == 1:
        what = f"a boolean tensor (dtype {inputs[0].dtype})"
    else:
        what = f"boolean tensors (dtypes {' and '.join(str(x.dtype) for x in inputs)})"
    return op.error(f"cannot {verb} {what}, as numpy and PyTorch cannot; "
                    f"convert first, e.g. t.astype(np.float64) (or use logical ops on masks)",
                    TypeError)


@register
class Sub(Broadcasting):
    """sub(a, b) = a - b, with numpy broadcasting. Linear: its JVP is da - db."""

    name = "sub"
    rule = "d/da = 1, d/db = -1 (each summed over its broadcast axes)"
    linear = True

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        try:
            return a - b
        except TypeError:             # free unless raised: nothing added to the float path
            raise _bool_arithmetic(self, "subtract", a, b) from None

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[Any, Any]:
        a, b = ctx.inputs
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(grad, a.shape) if need_a else None,
                sum_to(-grad, b.shape) if need_b else None)


@register
class Mul(BinaryElementwise):
    """mul(a, b) = a * b, elementwise with broadcasting."""

    name = "mul"
    rule = "d/da = b, d/db = a"

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_input(a, b)
        return a * b

    def partials(self, ctx: RuleContext) -> tuple[Any, Any]:
        a, b = ctx.saved
        return b, a


@register
class Div(BinaryElementwise):
    """div(a, b) = a / b, elementwise with broadcasting (true division)."""

    name = "div"
    rule = "d/da = 1/b, d/db = -a/b^2"

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_input(a, b)
        return a / b

    def partials(self, ctx: RuleContext) -> tuple[Any, Any]:
        a, b = ctx.saved
        # -(a / b) / b, not -a / (b * b): b * b overflows or underflows where a / b^2 fits
        # (float16 from |b| = 256: d/db was 0; 0 / 0 = NaN for a = 0, b = 1e-300).
        return 1 / b, -(a / b) / b


@register
class Neg(Op):
    """neg(x) = -x. Linear: its JVP is -dx."""

    name = "neg"
    rule = "d/dx = -1"
    linear = True

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        try:
            return -x
        except TypeError:             # free unless raised: nothing added to the float path
            raise _bool_arithmetic(self, "negate", x) from None

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (-grad,)


@register
class Pow(BinaryElementwise):
    """pow(a, b) = a ** b, both tensors (``t ** u``; ``t ** 2`` with a number is pow_scalar).

    d/da = b a^(b-1) is 0 where b == 0 (a^0 is the constant 1), a == 0 included, where the
    formula would give 0 * inf (as pow_scalar and PyTorch give).
    d/db = a^b log(a) needs a > 0: for a == 0 it is taken as 0 (the limit when b > 0;
    b == 0 too, where 0^b jumps); for a == 0 and b < 0, where the output is inf, it is NaN
    (PyTorch gives -inf, the limit from a > 0); for a < 0 it is NaN, as the real power is
    undefined there. A constant exponent
    contributes nothing in either mode: reverse mode never computes its gradient, and
    forward mode drops each term whose tangent is zero (0 * NaN would otherwise make
    (-2) ** 3's JVP NaN although its d/da, 12, is finite).
    """

    name = "pow"
    rule = "d/da = b a^(b-1), d/db = a^b log(a)"

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.dtype.kind in "biu" and b.dtype.kind in "biu" and (b < 0).any():
            a = as_float(a)           # numpy refuses integers to negative integer powers
        out = a ** b
        ctx.save_input(a, b)          # a copy only if both are integers: no gradient, no node
        ctx.save_output(out)
        return out

    def partials(self, ctx: RuleContext) -> tuple[Any, Any]:
        a, b, out = ctx.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = np.where(a == 0, 0, np.log(np.where(a == 0, 1, a)))
            d_a = b * a ** (b - 1)
        if (b == 0).any():                    # 0 * 0^(-1) = NaN where a == 0: a^0 is flat
            d_a = np.where(b == 0, np.zeros((), d_a.dtype), d_a)
        return d_a, out * log_a

    def jvp(self, ctx: RuleContext, ta: np.ndarray | None, tb: np.ndarray | None) -> np.ndarray:
        a, b = ctx.inputs
        da, db = self.partials(ctx)
        terms = [tangent_term(t, d) for t, d in ((ta, da), (tb, db)) if t is not None]
        out_shape = np.broadcast_shapes(a.shape, b.shape)
        total = sum(terms[1:], terms[0]) if terms else np.zeros((), dtype=ctx.saved[2].dtype)
        return np.broadcast_to(total, out_shape)


@register
class PowScalar(UnaryElementwise):
    """pow_scalar(x, exponent=p) = x ** p for a constant real number p (``t ** p``).
    Integer tensors with a negative p compute in float64."""

    name = "pow_scalar"
    rule = "d/dx = p x^(p-1)"

    def check(self, x: np.ndarray, *, exponent: float) -> None:
        if not is_number(exponent):
            raise self.error(f"exponent must be a real number, got {plain_repr(exponent)}", TypeError)

    def forward(self, ctx: RuleContext, x: np.ndarray, *, exponent: float) -> np.ndarray:
        if exponent < 0:
            x = as_float(x)           # numpy refuses integers to negative integer powers
        ctx.save_input(x)             # a copy only if x is an integer: no gradient, no node
        return x ** exponent

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        (x,) = ctx.saved
        p = ctx.params["exponent"]
        if p == 0:
            return np.zeros_like(x)
        return p * x ** (p - 1)


@register(method=True)
class Exp(UnaryElementwise):
    """exp(x) = e^x."""

    name = "exp"
    rule = "d/dx = e^x (the output itself)"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        y = np.exp(as_float(x))
        ctx.save_output(y)
        return y

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        return ctx.saved[0]


@register(method=True)
class Log(UnaryElementwise):
    """log(x), the natural logarithm, for x > 0."""

    name = "log"
    rule = "d/dx = 1/x"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        x = as_float(x)               # a copy only if x is an integer: no gradient, no node
        ctx.save_input(x)
        return np.log(x)

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        return 1 / ctx.saved[0]


@register(method=True)
class Sqrt(UnaryElementwise):
    """sqrt(x) = x^(1/2), for x >= 0."""

    name = "sqrt"
    rule = "d/dx = 1 / (2 sqrt(x))"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        y = np.sqrt(as_float(x))
        ctx.save_output(y)
        return y

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        return 0.5 / ctx.saved[0]


@register(method=True)
class Abs(UnaryElementwise):
    """abs(x) = |x|, with abs'(0) = 0 by convention."""

    name = "abs"
    rule = "d/dx = sign(x), 0 at x = 0"

    def forward(self, ctx: RuleContext, x: np.ndarray) -> np.ndarray:
        ctx.save_input(x)
        return np.abs(x)

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        return np.sign(ctx.saved[0])


def _winner_share(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of the gradient of max(a, b) each side receives: all to the larger one,
    half each on a tie."""
    dtype = np.result_type(a, b)
    tie = (a == b).astype(dtype) * 0.5
    return (a > b).astype(dtype) + tie, (b > a).astype(dtype) + tie


@register(method=True)
class Maximum(BinaryElementwise):
    """maximum(a, b), elementwise with broadcasting; ties split the gradient evenly."""

    name = "maximum"
    rule = "d/da = [a > b] + [a = b]/2, d/db = [b > a] + [a = b]/2"

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_input(a, b)
        return np.maximum(a, b)

    def partials(self, ctx: RuleContext) -> tuple[Any, Any]:
        a, b = ctx.saved
        return _winner_share(a, b)


@register(method=True)
class Minimum(BinaryElementwise):
    """minimum(a, b), elementwise with broadcasting; ties split the gradient evenly."""

    name = "minimum"
    rule = "d/da = [a < b] + [a = b]/2, d/db = [b < a] + [a = b]/2"

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_input(a, b)
        return np.minimum(a, b)

    def partials(self, ctx: RuleContext) -> tuple[Any, Any]:
        a, b = ctx.saved
        return _winner_share(b, a)   # ([a < b] + tie, [b < a] + tie)


@register(method=True)
class Clip(UnaryElementwise):
    """clip(x, min, max) = min(max(x, min), max); either bound may be None."""

    name = "clip"
    rule = "d/dx = [min <= x <= max] (the gradient passes at the bounds)"

    def check(self, x: np.ndarray, *, min: float | None = None, max: float | None = None) -> None:
        if min is None and max is None:
            raise self.error("at least one of min and max must be given")
        for what, bound in (("min", min), ("max", max)):
            if bound is not None and not is_number(bound):
                raise self.error(f"{what} must be a real number or None, got {plain_repr(bound)}", TypeError)
        if min is not None and max is not None and min > max:
            raise self.error(f"min ({min}) must not exceed max ({max})")

    def forward(self, ctx: RuleContext, x: np.ndarray, *, min: float | None = None,
                max: float | None = None) -> np.ndarray:
        ctx.save_input(x)
        return np.clip(x, min, max)

    def derivative(self, ctx: RuleContext) -> np.ndarray:
        (x,) = ctx.saved
        lo, hi = ctx.params["min"], ctx.params["max"]
        inside = np.ones(x.shape, dtype=bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        return inside.astype(x.dtype)


@register
class Where(Op):
    """where(cond, a, b) = a where cond else b, with broadcasting; cond (boolean) is not
    differentiable. Linear in (a, b): its JVP is where(cond, da, db)."""

    name = "where"
    rule = "d/da = [cond], d/db = [not cond]"
    nondiff = (0,)
    linear = True

    def check(self, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        if cond.dtype != bool:
            raise self.error(f"condition must be boolean, got dtype {cond.dtype}", TypeError)
        broadcast_shapes(self.name, cond.shape, a.shape, b.shape)

    def forward(self, ctx: RuleContext, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_input(cond)
        return np.where(cond, a, b)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[Any, Any, Any]:
        (cond,) = ctx.saved
        _, a, b = ctx.inputs
        zero = np.zeros((), dtype=grad.dtype)
        return (None,
                sum_to(np.where(cond, grad, zero), a.shape),
                sum_to(np.where(cond, zero, grad), b.shape))

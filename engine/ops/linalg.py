"""Matrix products: matmul (numpy's rules: 2-D, batched N-D, 1-D vectors) and the fused
dense layer linear(x, W, b) = x @ W + b."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..broadcast import add_reduce, broadcast_shapes, sum_to
from ..op import Op, RuleContext, register
from ._base import moves


def _swap(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


@register(method=True)
class MatMul(Op):
    """matmul(a, b) = a @ b (``t @ u``), batch axes broadcast as in numpy.

    1-D operands follow numpy: a vector a is a row (1, k), a vector b a column (k, 1), and
    the added axis is dropped from the result; the backward adds it back. JVP (the product
    rule): da @ b + a @ db.
    """

    name = "matmul"
    rule = "grad_a = grad @ b^T, grad_b = a^T @ grad (batch axes summed back)"

    def check(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.ndim == 0 or b.ndim == 0:
            raise self.error(f"operands must have at least 1 dimension, got shapes {a.shape} "
                             f"and {b.shape} (use mul for scalars)")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise self.error(f"inner dimensions do not match: shapes {a.shape} and {b.shape} "
                             f"({k_a} != {k_b})")
        if a.ndim > 2 or b.ndim > 2:
            broadcast_shapes(self.name, a.shape[:-2], b.shape[:-2])

    def forward(self, ctx: RuleContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_input(a, b)
        return a @ b

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[Any, Any]:
        a, b = ctx.saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad[..., None] if b.ndim == 1 else grad
        g = np.expand_dims(g, -2) if a.ndim == 1 else g
        need_a, need_b = ctx.needs_input_grad
        ga = sum_to(g @ _swap(b2), a2.shape).reshape(a.shape) if need_a else None
        gb = sum_to(_swap(a2) @ g, b2.shape).reshape(b.shape) if need_b else None
        return ga, gb

    def jvp(self, ctx: RuleContext, da: np.ndarray, db: np.ndarray) -> np.ndarray:
        a, b = ctx.saved
        # a constant operand's term is left out (``moves``): 0 @ B is NaN where B holds inf
        left, right = moves(da), moves(db)
        if left and right:
            return da @ b + a @ db
        if left or right:
            return da @ b if left else a @ db
        return np.zeros_like(da) @ np.zeros_like(db)     # no tangent: zeros, the output's shape


@register
class Linear(Op):
    """linear(x, W, b=None) = x @ W + b, x: (..., in), W: (in, out), b: (out,) or None.

    This is the classic layer of the from-scratch derivations: the weight gradient is the
    previous activation^T times the delta, the bias gradient the delta summed over the
    batch. W is stored (in, out), not (out, in) as in PyTorch.
    """

    name = "linear"
    rule = "grad_x = grad @ W^T, grad_W = x^T @ grad, grad_b = Σ_batch grad"

    def check(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> None:
        if W.ndim != 2:
            raise self.error(f"weight must be 2-D (in_features, out_features), got shape {W.shape}")
        if x.ndim == 0 or x.shape[-1] != W.shape[0]:
            raise self.error(f"input of shape {x.shape} does not fit weight of shape {W.shape}: "
                             f"the last axis of the input must be {W.shape[0]}")
        if b is not None and b.shape != (W.shape[1],):
            raise self.error(f"bias must have shape ({W.shape[1]},), got {b.shape}")

    def forward(self, ctx: RuleContext, x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        ctx.save_input(x, W)
        out = x @ W
        if b is not None:
            # In place when the dtypes allow it: `out` is a fresh array, no need for another.
            out = np.add(out, b, out=out) if b.dtype == out.dtype else out + b
        return out

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[Any, ...]:
        x, W = ctx.saved
        needs = ctx.needs_input_grad
        # Batch axes flattened into one: (batch, out) and (batch, in); a 2-D array already is.
        # The batch size spelled out: numpy cannot infer a -1 next to an axis of length 0
        # (in_features or out_features 0).
        if x.ndim == 2:
            g2, x2 = grad, x
        else:
            batch = math.prod(x.shape[:-1])
            g2, x2 = grad.reshape(batch, grad.shape[-1]), x.reshape(batch, x.shape[-1])
        gx = (grad @ W.T) if needs[0] else None
        gW = (x2.T @ g2) if needs[1] else None
        if len(ctx.inputs) == 2:
            return gx, gW
        gb = add_reduce(g2, axis=0) if needs[2] else None   # g2.sum(axis=0); float16: summed in float32
        return gx, gW, gb

    def jvp(self, ctx: RuleContext, dx: np.ndarray, dW: np.ndarray, db: np.ndarray | None = None) -> np.ndarray:
        x, W = ctx.saved
        # a constant operand's term is left out (``moves``): 0 @ W is NaN where W holds inf
        terms = []
        if moves(dx):
            terms.append(dx @ W)
        if moves(dW):
            terms.append(x @ dW)
        if not terms:                                    # no tangent: zeros, the output's shape
            terms.append(np.zeros(x.shape[:-1] + W.shape[-1:], np.result_type(dx, dW)))
        out = sum(terms[1:], terms[0])
        return out + db if moves(db) else out

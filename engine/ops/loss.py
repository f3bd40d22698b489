"""Losses, fused with their final activation where that is what makes them exact.

softmax_cross_entropy and sigmoid_binary_cross_entropy are single nodes whose backward is
the classic output delta computed from the probabilities saved in the forward:

    d loss / d z = (p - y) / N

never a derivative taken through log(softmax(z)) or log(sigmoid(z)), which overflows or
loses every digit for large logits. Both are finite and exact for |z| up to 1e4.

A loss over an empty batch is an error, never a silent 0.

float16 losses are summed in float32, divided by N there and cast back (as PyTorch does):
a float16 total passes 65504 where the mean fits.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..broadcast import add_reduce, wide_sum
from ..op import Op, RuleContext, register
from ..plain import plain_repr
from ._base import as_float, is_number, over
from .activation import stable_sigmoid

REDUCTIONS = ("mean", "sum", "none")
# Each signed integer dtype's unsigned twin, in its byte order (big-endian labels read from
# a file are labels too).
_UNSIGNED = {np.dtype(f"{order}i{size}"): np.dtype(f"{order}u{size}")
             for order in "<>" for size in (1, 2, 4, 8)}


def _reduce(per_item: np.ndarray, reduction: str, n: int) -> np.ndarray:
    if reduction == "none":
        return per_item
    total = wide_sum(per_item)               # per_item.sum(); float32 for float16
    out = total / n if reduction in ("mean", "batchmean") else total
    return out.astype(np.float16) if per_item.dtype.char == "e" else out


def _scale_grad(grad: np.ndarray, reduction: str, n: int, item_ndim: int) -> np.ndarray:
    """The incoming gradient as a factor that broadcasts against per-element deltas."""
    if reduction == "none":
        return grad.reshape(grad.shape + (1,) * item_ndim)
    return over(grad, n) if reduction in ("mean", "batchmean") else grad


class _Loss(Op):
    reductions: tuple[str, ...] = REDUCTIONS

    def check_reduction(self, reduction: str) -> None:
        if reduction not in self.reductions:
            raise self.error(f"reduction must be one of {self.reductions}, got {plain_repr(reduction)}")

    def check_not_empty(self, z: np.ndarray) -> None:
        if z.size == 0:
            raise self.error(f"got an empty batch (shape {z.shape}): there is no loss to compute")


@register
class MSE(_Loss):
    """mse(pred, target) = mean((pred - target)^2) over all N elements (or sum / none)."""

    name = "mse"
    rule = "d/dpred = 2 (pred − target)/N, d/dtarget = −2 (pred − target)/N"

    def check(self, pred: np.ndarray, target: np.ndarray, *, reduction: str = "mean") -> None:
        self.check_reduction(reduction)
        if pred.shape != target.shape:
            raise self.error(f"prediction shape {pred.shape} and target shape {target.shape} "
                             f"differ (handgrad does not broadcast a loss silently)")
        self.check_not_empty(pred)

    def forward(self, ctx: RuleContext, pred: np.ndarray, target: np.ndarray, *,
                reduction: str = "mean") -> np.ndarray:
        if pred.dtype.kind not in "fc" and target.dtype.kind not in "fc":
            # Both integers or bools: in float64, as uint8 0 - 20 would wrap to 236 and int8
            # 100² overflow. (With a float one, numpy computes the difference in floats.)
            pred, target = as_float(pred), as_float(target)
        diff = pred - target
        ctx.save(diff)
        return _reduce(diff * diff, reduction, diff.size)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[Any, Any]:
        (diff,) = ctx.saved
        g = 2 * _scale_grad(grad, ctx.params["reduction"], diff.size, 0) * diff
        return g, -g

    def jvp(self, ctx: RuleContext, dp: np.ndarray, dt: np.ndarray) -> np.ndarray:
        (diff,) = ctx.saved
        return _reduce(2 * diff * (dp - dt), ctx.params["reduction"], diff.size)


def softmax_parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``shifted`` = z minus each row's max, ``p`` = softmax(z) in z's dtype and ``norm``
    = Σ exp(shifted) per row (float16: summed in float32, which may pass 65504): what
    softmax_cross_entropy's forward computes, and the pictures print as its p. The max
    shifted out keeps the log-sum-exp exact for |z| ~ 1e4. (np.maximum.reduce and
    np.add.reduce: z.max and e.sum minus numpy's Python wrappers, which cost a step of a
    tiny model about a microsecond.)"""
    shifted = z - np.maximum.reduce(z, axis=-1, keepdims=True)
    e = np.exp(shifted)
    norm = wide_sum(e, axis=-1, keepdims=True)
    return shifted, np.divide(e, norm, out=e), norm       # e is not needed again


@register
class SoftmaxCrossEntropy(_Loss):
    """softmax_cross_entropy(z, y) = -Σ_c y_c log softmax(z)_c per row, averaged over the
    N rows (reduction "mean"; or "sum", "none"). With p = softmax(z) the gradient is
    (p Σ_c y_c - y) / N, which is (p - y) / N for one-hot or probability targets.

    z: (..., C) logits; y: integer labels of shape z.shape[:-1] or probabilities of z's
    shape. label_smoothing eps replaces y by (1 - eps) y + eps / C. Targets are not
    differentiable (PyTorch's are): a target that requires grad is an error.
    """

    name = "softmax_cross_entropy"
    rule = ("d/dz = (p·Σy − y)/N, p = softmax(z), Σy = each row's target sum (1 for labels "
            "and one-hot rows), N = rows averaged (mean), 1 (sum)")
    nondiff = (1,)
    refuses_grad = (1,)

    def check(self, z: np.ndarray, y: np.ndarray, *, reduction: str = "mean",
              label_smoothing: float = 0.0) -> None:
        if z.ndim == 0 or z.dtype.kind != "f":
            raise self.error(f"logits must be a floating-point array with a class axis last, "
                             f"got shape {z.shape} dtype {z.dtype}")
        if reduction not in REDUCTIONS:
            self.check_reduction(reduction)
        if label_smoothing != 0.0 and (not is_number(label_smoothing) or not 0 <= label_smoothing <= 1):
            raise self.error(f"label_smoothing must be in [0, 1], got {plain_repr(label_smoothing)}")
        if z.size == 0:
            self.check_not_empty(z)
        if y.dtype.kind in "iu":
            if y.shape != z.shape[:-1]:
                raise self.error(f"integer labels must have shape {z.shape[:-1]} (the logits' "
                                 f"shape {z.shape} without the class axis), got {y.shape}")
        elif y.dtype.kind == "f":
            if y.shape != z.shape:
                hint = (" (float labels? class labels must be integers)"
                        if y.shape == z.shape[:-1] else "")
                raise self.error(f"probability targets must have the logits' shape {z.shape}, "
                                 f"got {y.shape}{hint}")
        else:
            raise self.error(f"targets must be integer class labels or float probabilities, "
                             f"got dtype {y.dtype}", TypeError)

    def validate(self, z: np.ndarray, y: np.ndarray, *, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        """Integer labels lie in [0, C), probability targets are not negative (nor NaN): a
        target row [-1, 0, 0] gave a negative loss. Read at every call and every replay."""
        if y.dtype.kind == "f":
            if y.size and not np.minimum.reduce(y, axis=None) >= 0:    # False for NaN too
                bad = y[~(y >= 0)].ravel()[0]
                raise self.error(f"probability targets must not be negative (nor NaN), got {bad}")
            return
        if y.dtype.kind not in "iu":
            return
        C = z.shape[-1]
        # One pass over the labels: viewed as unsigned, a negative label is huge.
        unsigned = y.view(_UNSIGNED[y.dtype]) if y.dtype.kind == "i" else y
        if np.maximum.reduce(unsigned, axis=None) >= C:        # unsigned.max()
            bad = y[(y < 0) | (y >= C)].ravel()[0]
            raise self.error(f"class label {bad} is outside [0, {C}) for logits of shape {z.shape}")

    def forward(self, ctx: RuleContext, z: np.ndarray, y: np.ndarray, *, reduction: str = "mean",
                label_smoothing: float = 0.0) -> np.ndarray:
        eps, C = label_smoothing, z.shape[-1]
        shifted, p, norm = softmax_parts(z)
        log_norm = np.log(norm).astype(z.dtype, copy=False)
        if y.dtype.kind in "iu" and not eps:
            # The common case in few passes: -log p_y = log(norm) - shifted_y per row, and
            # the delta p - y is p with 1 taken off at the true class (no one-hot built).
            rows = np.arange(y.size)
            if z.ndim == 2:        # (N, C) logits, (N,) labels: no axes to flatten
                flat_y, flat_shifted, flat_p = y, shifted, p
            else:
                flat_y, flat_shifted, flat_p = y.reshape(-1), shifted.reshape(-1, C), p.reshape(-1, C)
            per_row = log_norm.reshape(-1) - flat_shifted[rows, flat_y]
            flat_p[rows, flat_y] -= 1
            per_row = per_row.reshape(y.shape)
            # flat_p, not p: on non-contiguous logits (a transposed (T, N, C) tensor) the
            # reshape above copied, and only the copy has the 1 taken off.
            ctx.save(flat_p.reshape(z.shape), per_row.size)
            return _reduce(per_row, reduction, per_row.size)
        log_p = shifted - log_norm
        if y.dtype.kind in "iu":
            # The one-hot target is never built: pick log p of the true class per row, and
            # subtract (1 - eps) from p at that class for the delta p - y.
            rows, flat_y = np.arange(y.size), y.reshape(-1)
            log_p2 = log_p.reshape(-1, C)
            per_row = -(1 - eps) * log_p2[rows, flat_y]
            if eps:
                per_row -= (eps / C) * wide_sum(log_p2, axis=-1)   # float16: Σ may pass 65504
            per_row = per_row.reshape(y.shape)
            delta: np.ndarray = p.reshape(-1, C)
            if eps:
                delta -= eps / C
            delta[rows, flat_y] -= 1 - eps
            delta = delta.reshape(z.shape)
        else:
            targets = y.astype(z.dtype, copy=False)
            if eps:
                targets = (1 - eps) * targets + eps / C
            per_row = -add_reduce(targets * log_p, axis=-1)
            delta = p * add_reduce(targets, axis=-1, keepdims=True) - targets
        ctx.save(delta, per_row.size)
        return _reduce(per_row, reduction, per_row.size)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray, None]:
        delta, n = ctx.saved
        return _scale_grad(grad, ctx.params["reduction"], n, 1) * delta, None

    def jvp(self, ctx: RuleContext, dz: np.ndarray, _: None) -> np.ndarray:
        delta, n = ctx.saved
        return _reduce(add_reduce(delta * dz, axis=-1), ctx.params["reduction"], n)


@register
class SigmoidBinaryCrossEntropy(_Loss):
    """sigmoid_binary_cross_entropy(z, y) = -[y log s + (1 - y) log(1 - s)], s = sigmoid(z),
    per element, computed as max(z, 0) - z y + log(1 + e^-|z|) (exact for |z| ~ 1e4).

    reduction="mean" averages over all elements (N = z.size, as PyTorch's
    BCEWithLogitsLoss); "batchmean" sums over the labels and averages over the batch
    (N = z.shape[0], the classic derivation); "sum" (N = 1); "none". Targets are not
    differentiable (PyTorch's are): a target that requires grad is an error.
    """

    name = "sigmoid_binary_cross_entropy"
    rule = ("d/dz = (σ(z) − y)/N, N = all elements (mean), the batch size (batchmean), "
            "1 (sum)")
    nondiff = (1,)
    refuses_grad = (1,)
    reductions = REDUCTIONS + ("batchmean",)

    def check(self, z: np.ndarray, y: np.ndarray, *, reduction: str = "mean") -> None:
        if z.dtype.kind != "f":
            raise self.error(f"logits must be floating point, got dtype {z.dtype}", TypeError)
        self.check_reduction(reduction)
        if y.shape != z.shape:
            raise self.error(f"targets shape {y.shape} differs from logits shape {z.shape}")
        if y.dtype.kind not in "biuf":
            raise self.error(f"targets must be numbers in [0, 1], got dtype {y.dtype}", TypeError)
        self.check_not_empty(z)

    def validate(self, z: np.ndarray, y: np.ndarray, *, reduction: str = "mean") -> None:
        """Targets lie in [0, 1] (NaN does not): read at every call and every replay."""
        lo, hi = y.min(), y.max()
        if not (lo >= 0 and hi <= 1):       # NaN fails both (min and max propagate it)
            got = "NaN" if np.isnan(lo) else f"values from {lo} to {hi}"
            raise self.error(f"targets must lie in [0, 1], got {got}")

    def forward(self, ctx: RuleContext, z: np.ndarray, y: np.ndarray, *, reduction: str = "mean") -> np.ndarray:
        y = y.astype(z.dtype, copy=False)
        per_item = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        n = (z.shape[0] if z.ndim else 1) if reduction == "batchmean" else z.size
        ctx.save(stable_sigmoid(z) - y, n)
        return _reduce(per_item, reduction, n)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray, None]:
        delta, n = ctx.saved
        return _scale_grad(grad, ctx.params["reduction"], n, 0) * delta, None

    def jvp(self, ctx: RuleContext, dz: np.ndarray, _: None) -> np.ndarray:
        delta, n = ctx.saved
        return _reduce(delta * dz, ctx.params["reduction"], n)

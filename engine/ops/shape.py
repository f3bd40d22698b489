"""Ops that move elements without changing them: reshape, flatten, transpose, getitem,
concat, stack, broadcast_to. All are linear (their JVP is the op applied to the tangent);
their backward moves the gradient back where each element came from."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import numpy as np

from ..broadcast import broadcast_shapes, one_axis, sum_to
from ..op import Op, RuleContext, register
from ..plain import plain_repr
from ..tensor import Tensor


def _shape_arg(op: Op, shape: Any) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple, or a TypeError naming the op."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        return (int(shape),)
    try:
        out = tuple(shape)
    except TypeError:
        out = None
    if out is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in out):
        raise op.error(f"shape must be an int or a sequence of ints, got {plain_repr(shape)}", TypeError)
    return tuple(int(s) for s in out)


@register
class Reshape(Op):
    """reshape(x, shape): the same elements in a new shape (one entry may be -1)."""

    name = "reshape"
    rule = "the gradient is reshaped back to the input's shape"
    linear = True

    def check(self, x: np.ndarray, *, shape: Any) -> dict[str, Any]:
        shape = _shape_arg(self, shape)
        known = math.prod(s for s in shape if s != -1)
        free = shape.count(-1)
        fits = (free == 0 and known == x.size) or (free == 1 and known > 0 and x.size % known == 0)
        if free > 1 or any(s < -1 for s in shape) or not fits:
            raise self.error(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {shape}")
        return {"shape": shape}

    def forward(self, ctx: RuleContext, x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
        return x.reshape(shape)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (grad.reshape(ctx.inputs[0].shape),)


@register(method=True)
class Flatten(Op):
    """flatten(x, start_dim=0, end_dim=-1): axes start_dim..end_dim merged into one
    (a 0-d tensor becomes shape (1,))."""

    name = "flatten"
    rule = "the gradient is reshaped back to the input's shape"
    linear = True

    def check(self, x: np.ndarray, *, start_dim: int = 0, end_dim: int = -1) -> dict[str, Any]:
        # a 0-d input takes the dims of a 1-d one (0 or -1), as in PyTorch
        flat = " of a 0-d tensor (flattened as one of 1 dimension)" if x.ndim == 0 else ""
        start = one_axis(self.name, start_dim, max(x.ndim, 1), "start_dim" + flat)
        end = one_axis(self.name, end_dim, max(x.ndim, 1), "end_dim" + flat)
        if x.ndim == 0:
            return {"start_dim": 0, "end_dim": 0}
        if start > end:
            raise self.error(f"start_dim {start_dim} comes after end_dim {end_dim} "
                             f"for shape {x.shape}")
        return {"start_dim": start, "end_dim": end}

    def forward(self, ctx: RuleContext, x: np.ndarray, *, start_dim: int = 0, end_dim: int = -1) -> np.ndarray:
        s = x.shape
        return x.reshape(s[:start_dim] + (math.prod(s[start_dim:end_dim + 1]),) + s[end_dim + 1:])

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (grad.reshape(ctx.inputs[0].shape),)


@register
class Transpose(Op):
    """transpose(x, axes=None): the axes permuted (reversed when axes is None); ``t.T``,
    ``t.transpose(...)`` and ``t.permute(...)`` call it."""

    name = "transpose"
    rule = "the gradient is permuted back by the inverse permutation"
    linear = True

    def check(self, x: np.ndarray, *, axes: Sequence[int] | None = None) -> dict[str, Any]:
        if axes is None:
            return {"axes": tuple(reversed(range(x.ndim)))}
        # Ints only (numpy integers too): int() would truncate 1.7 to 1, read "10" as
        # axes 1 and 0, and True as 1, where numpy and torch raise.
        given = tuple(axes) if isinstance(axes, Iterable) and not isinstance(axes, (str, bytes)) \
            else None
        if given is None or any(isinstance(a, bool) or not isinstance(a, (int, np.integer))
                                for a in given):
            raise self.error(f"axes must be a sequence of ints, got {plain_repr(axes)}", TypeError)
        perm = tuple(int(a) for a in given)
        if any(not -x.ndim <= a < x.ndim for a in perm) or \
                sorted(a % x.ndim for a in perm) != list(range(x.ndim)):
            raise self.error(f"axes {axes} are not a permutation of the {x.ndim} axes of "
                             f"shape {x.shape}")
        return {"axes": tuple(a % x.ndim for a in perm)}

    def forward(self, ctx: RuleContext, x: np.ndarray, *, axes: tuple[int, ...] | None = None) -> np.ndarray:
        return x.transpose(axes)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (grad.transpose(np.argsort(ctx.params["axes"])),)


def _plain_index(index: Any) -> Any:
    """Lists inside an index become integer or boolean arrays (numpy's meaning). An empty
    list (``x[[]]``, ``x[:, []]``) selects nothing, as in numpy and PyTorch: its array is
    an integer one (``np.asarray([])`` alone would be float64, which no index may be)."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, list):
        array = np.asarray(index)
        return array.astype(np.intp) if array.size == 0 and array.dtype.kind == "f" else array
    return index


def _is_basic(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, numbers.Integral)) for p in parts)


@register
class GetItem(Op):
    """getitem(x, index) = x[index]: slices, ints, None, ..., integer or boolean arrays.
    Index arrays are copied when the node is made, so changing them later is harmless."""

    name = "getitem"
    rule = "the gradient is scattered back into zeros; repeated indices add up"
    linear = True

    def check(self, x: np.ndarray, *, index: Any) -> dict[str, Any]:
        try:
            return {"index": _plain_index(index)}
        except ValueError as e:          # a ragged list, [[1], []]: no array, no index
            raise IndexError(f"{self.name}: index {plain_repr(index)} is invalid for shape "
                             f"{x.shape}: {e}") from None

    def forward(self, ctx: RuleContext, x: np.ndarray, *, index: Any) -> np.ndarray:
        try:
            return np.asarray(x[index])
        except IndexError as e:
            raise IndexError(f"{self.name}: index {plain_repr(index)} is invalid for shape "
                             f"{x.shape}: {e}") from None

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        index = ctx.params["index"]
        g = np.zeros(ctx.inputs[0].shape, dtype=grad.dtype)
        if _is_basic(index):
            g[index] = grad  # a view: every element appears once
        else:
            np.add.at(g, index, grad)  # advanced indexing may repeat an element
        return (g,)


class _Joining(Op):
    """concat and stack take a list of tensors: ``concat([a, b], axis=0)``."""

    def __call__(self, tensors: Sequence[Any], axis: int = 0) -> Tensor:
        if isinstance(tensors, (Tensor, np.ndarray)) or not isinstance(tensors, Sequence) \
                or len(tensors) == 0:
            raise self.error("expects a non-empty list of tensors", TypeError)
        return self.apply(*tensors, axis=axis)


@register
class Concat(_Joining):
    """concat([x1, x2, ...], axis=0) joins tensors along an existing axis."""

    name = "concat"
    rule = "the gradient is split back into the pieces' extents along the axis"
    linear = True

    def check(self, *xs: np.ndarray, axis: int = 0) -> dict[str, Any]:
        ndim = xs[0].ndim
        if ndim == 0:
            raise self.error("cannot concatenate 0-d tensors (use stack)")
        ax = one_axis(self.name, axis, ndim)
        for x in xs:
            if x.ndim != ndim or x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:]:
                raise self.error(f"all shapes must match except along axis {axis}: "
                                 f"{[x.shape for x in xs]}")
        return {"axis": ax}

    def forward(self, ctx: RuleContext, *xs: np.ndarray, axis: int = 0) -> np.ndarray:
        return np.concatenate(xs, axis=axis)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray, ...]:
        ax = ctx.params["axis"]
        ends = np.cumsum([t.shape[ax] for t in ctx.inputs])[:-1]
        return tuple(np.split(grad, ends, axis=ax))


@register
class Stack(_Joining):
    """stack([x1, x2, ...], axis=0) joins equal-shaped tensors along a new axis."""

    name = "stack"
    rule = "the gradient is cut back into slices along the new axis"
    linear = True

    def check(self, *xs: np.ndarray, axis: int = 0) -> dict[str, Any]:
        if any(x.shape != xs[0].shape for x in xs):
            raise self.error(f"all tensors must have the same shape, got {[x.shape for x in xs]}")
        ax = one_axis(self.name, axis, xs[0].ndim + 1)
        return {"axis": ax}

    def forward(self, ctx: RuleContext, *xs: np.ndarray, axis: int = 0) -> np.ndarray:
        return np.stack(xs, axis=axis)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.moveaxis(grad, ctx.params["axis"], 0))


@register(method=True)
class BroadcastTo(Op):
    """broadcast_to(x, shape): numpy broadcasting made explicit (a read-only view)."""

    name = "broadcast_to"
    rule = "the gradient is summed over the broadcast axes (sum_to)"
    linear = True

    def check(self, x: np.ndarray, *, shape: Any) -> dict[str, Any]:
        shape = _shape_arg(self, shape)
        if broadcast_shapes(self.name, x.shape, shape) != shape:
            raise self.error(f"cannot broadcast shape {x.shape} to {shape}")
        return {"shape": shape}

    def forward(self, ctx: RuleContext, x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(x, shape)

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        return (sum_to(grad, ctx.inputs[0].shape),)

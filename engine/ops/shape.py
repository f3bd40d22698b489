"""Ops that move elements without changing them: reshape, flatten, transpose/permute,
getitem, concat, stack, broadcast_to. Their derivatives move the gradient back."""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from ..broadcast import broadcast_shapes, normalize_axis, sum_to
from ..graph import Node
from ..op import Op, register
from ..tensor import Tensor


def _shape_arg(op: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        return (int(shape),)
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: shape must be an int or a sequence of ints, got {shape!r}") from None


class Reshape(Op):
    """reshape(x, shape): the same elements in a new shape.   The gradient is reshaped back."""

    name = "reshape"

    def __call__(self, x: Any, shape: Any) -> Tensor:
        return self.apply(x, shape=_shape_arg(self.name, shape))

    def target(self, x: np.ndarray, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def forward(self, ctx: Node, x: np.ndarray, **params: Any) -> np.ndarray:
        shape = self.target(x, **params)
        try:
            out = x.reshape(shape)
        except ValueError:
            raise self.error(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {shape}") from None
        ctx.save(x.shape, out.shape)
        return out

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        return (grad.reshape(ctx.saved[0]),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        return dx.reshape(ctx.saved[1])


class Flatten(Reshape):
    """flatten(x, start_dim=0, end_dim=-1): axes start_dim..end_dim merged into one.
    The gradient is reshaped back."""

    name = "flatten"

    def __call__(self, x: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return self.apply(x, start_dim=start_dim, end_dim=end_dim)

    def target(self, x: np.ndarray, start_dim: int = 0, end_dim: int = -1) -> tuple[int, ...]:
        shape = x.shape
        if len(shape) == 0:
            return (1,)
        (start,) = normalize_axis(self.name, start_dim, len(shape))
        (end,) = normalize_axis(self.name, end_dim, len(shape))
        if start > end:
            raise self.error(f"start_dim {start_dim} comes after end_dim {end_dim} "
                             f"for shape {shape}")
        return shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]


class Transpose(Op):
    """transpose(x, axes): permute the axes (reverse them when axes is None).
    The gradient is permuted back by the inverse permutation."""

    name = "transpose"

    def __call__(self, x: Any, axes: Sequence[int] | None = None) -> Tensor:
        return self.apply(x, axes=None if axes is None else tuple(axes))

    def forward(self, ctx: Node, x: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
        perm = tuple(reversed(range(x.ndim))) if axes is None else axes
        if sorted(a % x.ndim if x.ndim else a for a in perm) != list(range(x.ndim)) or \
                any(not -x.ndim <= a < x.ndim for a in perm):
            raise self.error(f"axes {axes} are not a permutation of the {x.ndim} axes of "
                             f"shape {x.shape}")
        perm = tuple(a % x.ndim for a in perm)
        ctx.save(perm)
        return x.transpose(perm)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        (perm,) = ctx.saved
        return (grad.transpose(np.argsort(perm)),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        (perm,) = ctx.saved
        return dx.transpose(perm)


def permute(x: Any, *axes: int) -> Tensor:
    """PyTorch's name for transpose with an explicit permutation."""
    return transpose(x, axes[0] if len(axes) == 1 and not isinstance(axes[0], numbers.Integral) else axes)


class GetItem(Op):
    """getitem(x, index) = x[index] (slices, ints, None, ..., integer or boolean arrays).
    The gradient is scattered back into zeros; repeated indices accumulate (np.add.at)."""

    name = "getitem"

    def __call__(self, x: Any, index: Any) -> Tensor:
        return self.apply(x, index=_plain_index(index))

    def forward(self, ctx: Node, x: np.ndarray, index: Any) -> np.ndarray:
        try:
            out = x[index]
        except IndexError as e:
            raise IndexError(f"{self.name}: index {index!r} is invalid for shape {x.shape}: {e}") from None
        return np.asarray(out)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        x = ctx.inputs[0]
        index = ctx.params["index"]
        g = np.zeros(x.shape, dtype=grad.dtype)
        if _is_basic(index):
            g[index] = grad  # a view: every element appears once
        else:
            np.add.at(g, index, grad)  # advanced indexing may repeat an element
        return (g,)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        return np.asarray(dx[ctx.params["index"]])


def _plain_index(index: Any) -> Any:
    """Tensors inside an index become numpy arrays; lists become arrays (numpy semantics)."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, numbers.Integral)) for p in parts)


class Concat(Op):
    """concat([x1, x2, ...], axis) joins along an existing axis.
    The gradient is split back into the pieces' extents along that axis."""

    name = "concat"

    def __call__(self, tensors: Sequence[Any], axis: int = 0) -> Tensor:
        if isinstance(tensors, (Tensor, np.ndarray)) or len(tensors) == 0:
            raise self.error("expects a non-empty list of tensors", TypeError)
        return self.apply(*tensors, axis=axis)

    def forward(self, ctx: Node, *xs: np.ndarray, axis: int = 0) -> np.ndarray:
        ndim = xs[0].ndim
        if ndim == 0:
            raise self.error("cannot concatenate 0-d tensors (use stack)")
        (ax,) = normalize_axis(self.name, axis, ndim)
        for i, x in enumerate(xs):
            if x.ndim != ndim or x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:]:
                raise self.error(f"all shapes must match except along axis {axis}: "
                                 f"{[x.shape for x in xs]}")
        ctx.save(ax, np.cumsum([x.shape[ax] for x in xs])[:-1])
        return np.concatenate(xs, axis=ax)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray, ...]:
        ax, splits = ctx.saved
        return tuple(np.split(grad, splits, axis=ax))

    def jvp(self, ctx: Node, *dxs: np.ndarray) -> np.ndarray:
        ax, _ = ctx.saved
        return np.concatenate(dxs, axis=ax)


class Stack(Op):
    """stack([x1, x2, ...], axis) joins equal-shaped tensors along a new axis.
    The gradient is cut back into slices along that axis."""

    name = "stack"

    def __call__(self, tensors: Sequence[Any], axis: int = 0) -> Tensor:
        if isinstance(tensors, (Tensor, np.ndarray)) or len(tensors) == 0:
            raise self.error("expects a non-empty list of tensors", TypeError)
        return self.apply(*tensors, axis=axis)

    def forward(self, ctx: Node, *xs: np.ndarray, axis: int = 0) -> np.ndarray:
        if any(x.shape != xs[0].shape for x in xs):
            raise self.error(f"all tensors must have the same shape, got {[x.shape for x in xs]}")
        (ax,) = normalize_axis(self.name, axis, xs[0].ndim + 1)
        ctx.save(ax)
        return np.stack(xs, axis=ax)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray, ...]:
        (ax,) = ctx.saved
        return tuple(np.moveaxis(grad, ax, 0))

    def jvp(self, ctx: Node, *dxs: np.ndarray) -> np.ndarray:
        (ax,) = ctx.saved
        return np.stack(dxs, axis=ax)


class BroadcastTo(Op):
    """broadcast_to(x, shape): numpy broadcasting made explicit.
    The gradient is summed over the broadcast axes (sum_to)."""

    name = "broadcast_to"

    def __call__(self, x: Any, shape: Any) -> Tensor:
        return self.apply(x, shape=_shape_arg(self.name, shape))

    def forward(self, ctx: Node, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if broadcast_shapes(self.name, x.shape, shape) != shape:
            raise self.error(f"cannot broadcast shape {x.shape} to {shape}")
        return np.broadcast_to(x, shape)

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray]:
        return (sum_to(grad, ctx.inputs[0].shape),)

    def jvp(self, ctx: Node, dx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(dx, ctx.params["shape"])


reshape = register(Reshape())
flatten = register(Flatten())
transpose = register(Transpose())
getitem = register(GetItem())
concat = register(Concat())
stack = register(Stack())
broadcast_to = register(BroadcastTo())

"""Shapes: numpy broadcasting in the forward pass, its adjoint (a sum) in the backward pass.

Broadcasting copies an input along new or size-1 axes. The adjoint of "copy" is "add
up the copies", so every backward rule sends its gradient through `sum_to`, the one
place in handgrad that undoes broadcasting.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .plain import plain_repr

Shape = tuple[int, ...]
_add_reduce: Any = np.add.reduce         # typed loosely: numpy's overloads want a literal keepdims


def broadcast_shapes(op: str, *shapes: Shape) -> Shape:
    """numpy's broadcast result shape, or a ValueError that names the op and the shapes."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ValueError(f"{op}: shapes {listed} cannot be broadcast together") from None


def wide_sum(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """Σ x along ``axis`` (``np.add.reduce``: ``x.sum`` minus numpy's Python wrapper),
    accumulated in float32 for a float16 ``x`` and returned in float32, for a caller that
    divides or takes a log before casting back (a mean, a softmax normaliser). In float16 a
    sum along a strided axis stalls at 2048 (2048 + 1 rounds to 2048) and a total beyond
    65504 is inf even where the mean fits; PyTorch accumulates float16 in float32 too.
    Other dtypes: one dtype test, the plain sum."""
    out: np.ndarray = (_add_reduce(x, axis=axis, dtype=np.float32, keepdims=keepdims)
                       if x.dtype.char == "e" else _add_reduce(x, axis=axis, keepdims=keepdims))
    return out


def add_reduce(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """Σ x along ``axis`` in x's dtype: ``wide_sum`` with a float16 result cast back."""
    if x.dtype.char == "e":                    # float16
        return wide_sum(x, axis, keepdims).astype(np.float16)
    out: np.ndarray = _add_reduce(x, axis=axis, keepdims=keepdims)
    return out


def sum_to(grad: np.ndarray, shape: Shape) -> np.ndarray:
    """Sum `grad` down to `shape`, the adjoint of broadcasting an array of `shape` to grad.shape.

    A no-op (no copy) when the shapes already match, which is the common case.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"sum_to: cannot reduce shape {grad.shape} to the larger shape {shape}")
    # Axes that broadcasting added in front, then axes where the input had size 1.
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1
    )
    out = add_reduce(grad, axis=axes, keepdims=True) if axes else grad
    if extra:
        out = out.reshape(out.shape[extra:])
    if out.shape != shape:
        raise ValueError(f"sum_to: shape {grad.shape} does not broadcast from {shape}")
    return out


def one_axis(op: str, axis: Any, ndim: int, what: str = "axis") -> int:
    """One numpy-style axis (an int, negative from the end) as a non-negative int; a
    TypeError naming the op for anything but an int (None or a tuple, which
    ``normalize_axis`` takes), a ValueError for one out of range."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: {what} must be an int, got {plain_repr(axis)}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {what} {axis} is out of range for a tensor with {ndim} "
                         f"dimension(s)")
    return int(axis) % ndim


def normalize_axis(op: str, axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """numpy-style `axis` (int, tuple or None) as a sorted tuple of non-negative axes.

    None means every axis. Raises ValueError naming the op for an axis out of range or
    repeated.
    """
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:
        return (axis % ndim,)                   # the common case, without the loop below
    if isinstance(axis, (int, np.integer)):
        axes: tuple[Any, ...] = (axis,)       # checked one by one below
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{op}: axis must be an int, a tuple of ints or None, got {plain_repr(axis)}")
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"{op}: axis must be an int, a tuple of ints or None, got {plain_repr(axis)}")
        out.append(one_axis(op, a, ndim))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {plain_repr(axis)}")
    return tuple(sorted(out))


def expand_reduced(grad: np.ndarray, shape: Shape, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Broadcast the gradient of a reduction over `axes` back to the input `shape`."""
    if not keepdims:
        grad = np.expand_dims(grad, axes) if axes else grad
    return np.broadcast_to(grad, shape)


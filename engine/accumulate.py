"""Handing out the gradients of a backward pass without needless copies.

A training step's parameter gradients are big, and copying each one would cost about as
much as the optimizer's update. So a tensor may keep ("adopt") the very array the
backward pass computed as its ``.grad``, but only when nobody else can hold that array,
because ``.grad`` is later changed in place (accumulation ``+=``, gradient clipping):

* not an array the caller passed in (``loss.backward(grad)``: the caller still has it);
* not an array already handed to another tensor in this pass (``add`` sends the very
  same array to both of its inputs);
* not a view (its base may be another tensor's gradient) and writeable (a broadcast view
  is read-only);
* of the tensor's dtype.

Anything else is copied. ``engine.grad`` hands out its results by the same rule.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .tensor import Tensor


class GradientStore:
    """The copy-or-adopt decisions of one backward pass."""

    __slots__ = ("handed_out",)

    def __init__(self, given: Iterable[np.ndarray]):
        self.handed_out = {id(g) for g in given}

    def own(self, g: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``g`` itself if its receiver may keep it, otherwise a copy."""
        key = id(g)
        if key not in self.handed_out and g.base is None and g.dtype == dtype \
                and g.flags.writeable:
            self.handed_out.add(key)
            return g
        return np.array(g, dtype=dtype, copy=True)

    def accumulate(self, tensor: "Tensor", g: np.ndarray) -> None:
        """Add ``g`` to ``tensor.grad`` (set it, if it has none)."""
        current = tensor.grad
        if current is None:
            dtype = tensor._data.dtype
            key = id(g)
            if key not in self.handed_out and g.base is None and g.dtype == dtype \
                    and g.flags.writeable:             # own(g), inlined: once per leaf
                self.handed_out.add(key)
                tensor.grad = g
            else:
                tensor.grad = np.array(g, dtype=dtype, copy=True)
            return
        if type(current) is not np.ndarray or current.shape != g.shape:
            raise RuntimeError(
                f"backward: {tensor.describe()} has a stale .grad of shape "
                f"{np.shape(current)}, but its new gradient has shape {g.shape} (its data "
                f"changed shape?). Set .grad = None (zero_grad()) before backward().")
        current += g

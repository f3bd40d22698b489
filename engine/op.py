"""The op contract and the registry of every op handgrad knows.

An op is ONE class holding everything about one mathematical function:

* ``forward(ctx, *arrays, **params)``: numpy in, numpy out. It validates its inputs
  (raising ValueError/TypeError that name the op) and saves what the rules below need
  with ``ctx.save(...)``.
* ``backward(ctx, grad)``: the vector-Jacobian product. Given the gradient of the loss
  with respect to the output, return one gradient per input (None for inputs that are
  not differentiable or whose gradient is not needed: ``ctx.needs_input_grad[i]``).
* ``jvp(ctx, *tangents)``: the Jacobian-vector product (forward mode). Given one
  tangent per input (an array of the input's shape; None for non-differentiable
  inputs), return the tangent of the output.
* ``nondiff``: positions of inputs that are not differentiable (labels, masks,
  conditions). The engine never asks for their gradient and never perturbs them.
* the class docstring: the math of the forward and of the derivative.

``register(op)`` puts an instance in ``REGISTRY`` under ``op.name``. The test suite walks
``REGISTRY``, so a registered op without a test specification fails the suite.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import graph
from .graph import Node
from .tensor import Tensor


class Op:
    """Base class of every op. Subclasses set ``name`` and the three rules."""

    name: str = ""
    nondiff: tuple[int, ...] = ()

    def forward(self, ctx: Node, *arrays: np.ndarray, **params: Any) -> np.ndarray:
        raise NotImplementedError(f"op {self.name!r} has no forward rule")

    def backward(self, ctx: Node, grad: np.ndarray) -> tuple[np.ndarray | None, ...]:
        raise NotImplementedError(f"op {self.name!r} has no backward (VJP) rule")

    def jvp(self, ctx: Node, *tangents: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError(f"op {self.name!r} has no forward-mode (JVP) rule")

    def __call__(self, *inputs: Any, **params: Any) -> Tensor:
        """Apply the op. Ops whose public signature differs (a list of tensors, a
        target to convert) override this and end in ``self.apply``."""
        return self.apply(*inputs, **params)

    def apply(self, *inputs: Any, **params: Any) -> Tensor:
        """Run the forward on the inputs' arrays and, if a gradient can flow, record a node."""
        tensors = self._as_tensors(inputs)
        # numpy scalars as parameters (alpha=np.float64(0.5), ddof=np.int64(1)) become Python
        # numbers: numpy would let them promote a float32 computation to float64.
        if params:
            params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
        grad_on = graph._GradMode.enabled
        nondiff = self.nondiff
        needs = tuple([grad_on and t.requires_grad and i not in nondiff
                       for i, t in enumerate(tensors)])
        ctx = Node(self, tensors, params, needs)
        arrays = [t.data for t in tensors]
        out = self.forward(ctx, *arrays, **params)
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)  # reductions give numpy scalars; keep them 0-d arrays
        if graph._GradMode.anomaly:
            graph.check_finite("forward", ctx, out, arrays)
        return Tensor._from_op(out, ctx if any(needs) else None)

    def _as_tensors(self, inputs: tuple[Any, ...]) -> tuple[Tensor, ...]:
        """Wrap numbers and arrays as constant tensors. A constant in a differentiable
        position takes the dtype of the first floating-point tensor input, so
        ``float32_tensor * np.float64(2)`` stays float32; labels and masks keep theirs."""
        if all(isinstance(x, Tensor) for x in inputs):
            return inputs  # type: ignore[return-value]
        ref = next((x.dtype for x in inputs if isinstance(x, Tensor) and x.dtype.kind == "f"), None)
        out = []
        for i, x in enumerate(inputs):
            if not isinstance(x, Tensor):
                if x is None or isinstance(x, (str, bytes)):
                    raise self.error(f"input {i} must be a Tensor, an array or a number, "
                                     f"got {x!r}", TypeError)
                array = np.asarray(x)
                if array.dtype == object:
                    raise self.error(f"input {i} must be a Tensor, an array or a number, "
                                     f"got {type(x).__name__}", TypeError)
                if ref is not None and i not in self.nondiff and array.dtype.kind in "biuf":
                    array = array.astype(ref, copy=False)
                x = Tensor(array)
            out.append(x)
        return tuple(out)

    def error(self, message: str, kind: type[Exception] = ValueError) -> Exception:
        """An exception whose message starts with this op's name."""
        return kind(f"{self.name}: {message}")

    def __repr__(self) -> str:
        return f"<op {self.name}>"


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` to ``REGISTRY`` under ``op.name`` and return it (use it as the public function)."""
    if not isinstance(op, Op):
        raise TypeError(f"register expects an Op instance, got {type(op).__name__}")
    if not op.name or not isinstance(op.name, str):
        raise ValueError(f"{type(op).__name__} needs a non-empty string `name` to be registered")
    if op.name in REGISTRY and type(REGISTRY[op.name]) is not type(op):
        raise ValueError(
            f"an op named {op.name!r} is already registered ({type(REGISTRY[op.name]).__name__})"
        )
    if not (type(op).__doc__ or "").strip():
        raise ValueError(f"op {op.name!r} needs a docstring stating its math and its derivative")
    REGISTRY[op.name] = op
    return op


def unregister(name: str) -> None:
    """Remove a user op from ``REGISTRY`` (tests of custom ops clean up with this)."""
    REGISTRY.pop(name, None)


OpFunction = Callable[..., Tensor]

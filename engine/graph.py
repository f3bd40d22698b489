"""The compute graph: nodes, grad mode, iterative topological order, the backward and
forward-mode drivers.

Every op application that involves a tensor requiring a gradient creates a ``Node``
recording the op, its input tensors, its parameters (axis, keepdims, ...) and what the
op's forward saved for its derivative rules. The output tensor points at its node;
nodes point at their input tensors: that is the whole graph.

No walk here is recursive, so graphs of any depth work (a chain of 100,000 ops
backpropagates without RecursionError).
"""
from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .op import Op
    from .tensor import Tensor

_FREED = object()  # what `Node.saved` holds once backward released the buffers
_counter = itertools.count()


class Node:
    """One op application: ``op(*inputs, **params)``, with the buffers its rules saved."""

    __slots__ = ("op", "inputs", "params", "saved", "needs_input_grad", "index", "scope")

    def __init__(self, op: "Op", inputs: tuple["Tensor", ...], params: dict[str, Any],
                 needs_input_grad: tuple[bool, ...]):
        self.op = op
        self.inputs = inputs
        self.params = params
        self.saved: Any = ()
        self.needs_input_grad = needs_input_grad
        self.index = next(_counter)          # creation order, for stable ordering
        self.scope = _GradMode.scope         # name of the nn module that created it, if any

    def save(self, *values: Any) -> None:
        """Keep ``values`` (arrays, shapes, ...) for the backward and JVP rules."""
        self.saved = values

    @property
    def freed(self) -> bool:
        return self.saved is _FREED

    def free(self) -> None:
        """Release the saved buffers (backward does this unless retain_graph=True)."""
        self.saved = _FREED

    def __repr__(self) -> str:
        shapes = ", ".join(str(t.shape) for t in self.inputs)
        return f"<node #{self.index} {self.op.name}({shapes})>"


# --- grad mode -------------------------------------------------------------------------

class _GradMode:
    enabled = True
    anomaly = False
    scope: str | None = None      # the dotted name of the nn modules being called


def is_grad_enabled() -> bool:
    return _GradMode.enabled


class _SetGradEnabled(contextlib.ContextDecorator):
    def __init__(self, mode: bool):
        self.mode = mode
        self.previous: list[bool] = []

    def __enter__(self) -> None:
        self.previous.append(_GradMode.enabled)
        _GradMode.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        _GradMode.enabled = self.previous.pop()


class no_grad(_SetGradEnabled):
    """Context manager and decorator: ops inside record no graph (evaluation, updates)."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(_SetGradEnabled):
    """Context manager and decorator: record the graph again inside a ``no_grad`` block."""

    def __init__(self) -> None:
        super().__init__(True)


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Raise at the first op whose forward or backward produces NaN or Inf from finite inputs."""
    previous = _GradMode.anomaly
    _GradMode.anomaly = True
    try:
        yield
    finally:
        _GradMode.anomaly = previous


def anomaly_enabled() -> bool:
    return _GradMode.anomaly


class name_scope:
    """Nodes created inside are tagged with ``name``; nested scopes join with '.'
    ("layers" then "0" gives "layers.0"). A small class rather than a generator-based
    context manager: every module call enters one, so it must be cheap."""

    __slots__ = ("name", "outer")

    def __init__(self, name: str):
        self.name = name
        self.outer: str | None = None

    def __enter__(self) -> None:
        self.outer = _GradMode.scope
        _GradMode.scope = f"{self.outer}.{self.name}" if self.outer else self.name

    def __exit__(self, *exc: object) -> None:
        _GradMode.scope = self.outer


def current_scope() -> str | None:
    return _GradMode.scope


def check_finite(what: str, node: Node, array: np.ndarray, inputs: Iterable[np.ndarray]) -> None:
    """detect_anomaly's test: report the node that turned finite inputs into NaN/Inf."""
    if array.dtype.kind not in "fc" or np.isfinite(array).all():
        return
    if not all(np.isfinite(x).all() for x in inputs if x.dtype.kind in "fc"):
        return  # the non-finite value came from upstream; its producer was reported there
    bad = "NaN" if np.isnan(array).any() else "Inf"
    raise FloatingPointError(f"detect_anomaly: the {what} of op '{node.op.name}' produced {bad} "
                             f"({node!r}, params {node.params})")


# --- walks -------------------------------------------------------------------------------

def topological_order(roots: Sequence["Tensor"]) -> list["Tensor"]:
    """Every tensor that requires grad reachable from ``roots``, inputs before outputs.

    An iterative depth-first post-order: a stack of (tensor, children_done) pairs
    replaces the recursion of micrograd's version.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in reversed(roots)]
    push, pop = stack.append, stack.pop
    while stack:
        tensor, children_done = pop()
        if children_done:
            order.append(tensor)
            continue
        key = id(tensor)
        if key in seen:
            continue
        seen.add(key)
        push((tensor, True))
        node = tensor.node
        if node is not None:
            inputs, needed = node.inputs, node.needs_input_grad
            for i in range(len(inputs) - 1, -1, -1):   # right to left: the left input is visited first
                if needed[i] and id(inputs[i]) not in seen:
                    push((inputs[i], False))
    return order


def _check_alive(node: Node) -> None:
    if node.freed:
        raise RuntimeError(
            f"trying to go through the graph a second time: the buffers saved by op "
            f"'{node.op.name}' ({node!r}) were freed by an earlier backward(). "
            f"Pass retain_graph=True to the first backward() to keep them."
        )


def _check_shape(node: Node, i: int, value: np.ndarray, expected: tuple[int, ...], what: str) -> None:
    if value.shape != expected:
        raise RuntimeError(
            f"op '{node.op.name}': its {what} rule returned shape {value.shape} for input {i}, "
            f"which has shape {expected} (a missing sum_to/unbroadcast?)"
        )


def backward(roots: Sequence["Tensor"], root_grads: Sequence[np.ndarray], *,
             retain_graph: bool = False,
             inputs: Sequence["Tensor"] | None = None) -> list[np.ndarray | None] | None:
    """Run every node's backward rule once, outputs first.

    Without ``inputs``: accumulate into ``.grad`` of the leaves that require grad (and of
    tensors that called ``retain_grad()``). With ``inputs``: return their gradients
    instead and leave every ``.grad`` untouched (``engine.grad``).
    """
    order = topological_order(roots)
    grads: dict[int, np.ndarray] = {}
    for r, g in zip(roots, root_grads):
        grads[id(r)] = grads[id(r)] + g if id(r) in grads else g
    wanted = {id(t): None for t in inputs} if inputs is not None else None
    accumulate = inputs is None
    anomaly = _GradMode.anomaly
    # Arrays already stored as some tensor's .grad, or given by the caller: a tensor may
    # adopt a gradient array without copying only if it is none of these, owns its memory
    # (not a view) and is writeable (not a broadcast). Copying every parameter gradient
    # would cost as much as a layer's update.
    handed_out: set[int] = {id(g) for g in root_grads}

    for tensor in reversed(order):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        if wanted is not None and id(tensor) in wanted:
            # A private copy, as for .grad: g may be a read-only broadcast view or the
            # caller's own grad_outputs array.
            wanted[id(tensor)] = np.array(g, copy=True)
        node = tensor.node
        if accumulate and (node is None or tensor._retains_grad):
            may_adopt = (id(g) not in handed_out and g.base is None and g.flags.writeable
                         and g.dtype == tensor.dtype)
            handed_out.add(id(g))
            tensor._accumulate_grad(g, may_adopt)
        if node is None:
            continue
        if node.saved is _FREED:
            _check_alive(node)
        in_grads = node.op.backward(node, g)
        if len(in_grads) != len(node.inputs):
            raise RuntimeError(f"op '{node.op.name}': backward returned {len(in_grads)} "
                               f"gradients for {len(node.inputs)} inputs")
        for i, (inp, ig, needed) in enumerate(zip(node.inputs, in_grads, node.needs_input_grad)):
            if not needed or ig is None:
                continue
            if type(ig) is not np.ndarray:
                ig = np.asarray(ig)
            data = inp.data
            if ig.shape != data.shape:
                _check_shape(node, i, ig, data.shape, "backward")
            if ig.dtype != data.dtype:
                ig = ig.astype(data.dtype)
            if anomaly:
                check_finite("backward", node, ig, [g])
            key = id(inp)
            grads[key] = grads[key] + ig if key in grads else ig
        if not retain_graph:
            node.saved = _FREED  # release the buffers (Node.free)

    if wanted is None:
        return None
    return [wanted[id(t)] for t in inputs]  # type: ignore[union-attr]


def forward_tangents(outputs: Sequence["Tensor"],
                     tangents: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Push ``tangents`` (id(leaf) -> array) through the recorded graph with each op's JVP rule.

    Returns the tangent of each output (zeros where no tangent reaches it).
    """
    values = dict(tangents)
    for tensor in topological_order(outputs):
        node = tensor.node
        if node is None or id(tensor) in values:
            continue
        ins: list[np.ndarray | None] = []
        for i, inp in enumerate(node.inputs):
            ins.append(values.get(id(inp)) if i not in node.op.nondiff else None)
        if all(t is None for t in ins):
            continue
        _check_alive(node)
        # A differentiable input without a tangent (a constant) has tangent zero.
        ins = [np.zeros_like(inp.data) if t is None and i not in node.op.nondiff else t
               for i, (inp, t) in enumerate(zip(node.inputs, ins))]
        out = np.asarray(node.op.jvp(node, *ins))
        if out.shape != tensor.shape:
            raise RuntimeError(f"op '{node.op.name}': its jvp rule returned shape {out.shape} "
                               f"for an output of shape {tensor.shape}")
        values[id(tensor)] = out.astype(tensor.dtype, copy=False)
    return [values.get(id(o), np.zeros_like(o.data)) for o in outputs]

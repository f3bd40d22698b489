"""The compute graph: nodes, the topological order, and the backward pass as one walker.

Every op application that involves a tensor requiring a gradient creates a ``Node``
recording the op, its input tensors, its parameters (axis, keepdims, ...) and what the
op's forward saved for its derivative rules. The output tensor points at its node; nodes
point at their input tensors: that is the whole graph.

``backward_steps`` is the backward pass. It visits the tensors outputs first; once all
the gradient that flows into a tensor has been summed, it runs the tensor's node's
backward rule (checking what the rule returns) and yields one ``Step``. Everything that
needs a backward pass consumes it: ``Tensor.backward`` (gradients into ``.grad``),
``engine.grad`` and ``vjp`` (gradients returned), and the step-by-step pictures.

No walk here is recursive, so graphs of any depth work (a chain of 100,000 ops
backpropagates without RecursionError).
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from . import memory
from .modes import SEQUENCE, STATE
from .plain import plain_repr

if TYPE_CHECKING:  # pragma: no cover
    from .op import Op
    from .tensor import Tensor

_FREED = object()  # what ``Node.saved`` holds once backward released the buffers
_counter = SEQUENCE           # shared with hand-outs (memory.forward_change)
_FIRST = [tuple(range(n)) for n in range(16)]   # Node.declared_inputs of a first save_input


class Node:
    """One op application: ``op(*inputs, **params)``, with the values its rules saved. It
    is the ``ctx`` its op's rules get (it implements ``op.RuleContext``)."""

    __slots__ = ("op", "inputs", "params", "saved", "declared_inputs", "declared_output",
                 "needs_input_grad", "index", "scope", "memory")

    def __init__(self, op: "Op", inputs: tuple["Tensor", ...], params: dict[str, Any],
                 needs_input_grad: tuple[bool, ...]):
        self.op = op
        self.inputs = inputs
        self.params = params
        self.saved: Any = ()
        # ``declared_inputs`` (a tuple) and ``declared_output``: the indices in ``saved`` of
        # the values the rule kept with save_input and save_output, read by engine/memory.py.
        # Set by those calls only: a slot left empty costs nothing.
        self.needs_input_grad = needs_input_grad
        self.index = next(_counter)          # creation order, for stable ordering
        self.scope = STATE.scope             # the module that made it (see modes.name_scope)
        # engine/memory.py's slot, opaque here: the write clock's tick at the forward pass,
        # or what the node holds (locks, checksums); the walker compares it, nothing more.
        self.memory: Any = memory.write_tick

    def save(self, *values: Any) -> None:
        """Keep ``values`` the rule made itself (arrays, shapes, numbers) for the backward
        and JVP rules, after what was saved before."""
        if self.saved:
            self.saved += values
        else:
            self.saved = values

    def save_input(self, *arrays: np.ndarray) -> None:
        """Keep input arrays of the forward, as it got them, for the rules: declared as the
        inputs' memory, which handgrad then protects without searching for it."""
        saved = self.saved
        if saved:
            n = len(saved)
            self.declared_inputs = getattr(self, "declared_inputs", ()) + \
                tuple(range(n, n + len(arrays)))
            self.saved = saved + arrays
        else:                                 # the common case: the first save
            self.saved = arrays
            try:
                self.declared_inputs = _FIRST[len(arrays)]
            except IndexError:
                self.declared_inputs = tuple(range(len(arrays)))

    def save_output(self, array: np.ndarray) -> None:
        """Keep the array the forward returns for the rules, declared as the output's memory."""
        saved = self.saved
        if saved:
            self.declared_output = len(saved)
            self.saved = saved + (array,)
        else:
            self.declared_output = 0
            self.saved = (array,)

    @property
    def freed(self) -> bool:
        """True once ``free()`` has released the saved values (after a backward without
        ``retain_graph=True``); a second backward through this node then raises."""
        return self.saved is _FREED

    def free(self) -> None:
        """Release the saved values (backward does this unless retain_graph=True)."""
        self.saved = _FREED
        if self.memory is not memory.write_tick:
            memory.release(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> "Node":
        """Refused, as in PyTorch: only graph leaves can be deep-copied. Copying a node
        would copy the graph behind it, one nested call per node (RecursionError on a
        deep graph), into a graph nothing could backpropagate through twice."""
        raise RuntimeError(f"deepcopy: only graph leaves can be deep-copied, and this tensor "
                           f"was computed by op '{self.op.name}' (node #{self.index}); "
                           f"deep-copy t.detach() for its values without the graph")

    def __repr__(self) -> str:
        shapes = ", ".join(str(t.shape) for t in self.inputs)
        return f"<node #{self.index} {self.op.name}({shapes})>"


def saved_arrays(value: Any) -> Iterator[np.ndarray]:
    """The arrays inside a node's saved values (``node.saved``): tuples, lists and dicts
    are searched, as a hand-written rule's cache may be any of them."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from saved_arrays(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from saved_arrays(v)


# --- the walk ------------------------------------------------------------------------------

def topological_order(roots: Sequence["Tensor"], *, everything: bool = False) -> list["Tensor"]:
    """The tensors reachable from ``roots``, inputs before outputs.

    By default it follows only the edges a gradient flows along (inputs the node needs
    a gradient for); ``everything=True`` follows every input, constants and labels
    included: what a picture of the graph shows. An iterative depth-first post-order,
    inputs explored left to right: a stack of (tensor, iterator over its inputs) pairs
    replaces the recursion of micrograd's version. A leaf has no inputs to wait for, so it
    is placed when first met, without a stack entry.
    """
    order: list[Tensor] = []
    # Tensors hash by identity (``Tensor.__hash__`` is ``object.__hash__``; the ones here
    # are alive, held by the graph), so they are their own keys: no ``id()`` call per edge.
    seen: set[Tensor] = set()
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        if root.node is None:
            order.append(root)
            continue
        stack = [(root, _inputs(root.node, everything))]
        while stack:
            tensor, inputs = stack[-1]
            for child in inputs:                 # resumes where this tensor's loop stopped
                if child in seen:
                    continue
                seen.add(child)
                node = child.node
                if node is None:
                    order.append(child)
                else:
                    stack.append((child, _inputs(node, everything)))
                    break                        # its inputs first
            else:                                # every input placed: the tensor follows
                stack.pop()
                order.append(tensor)
    return order


def _inputs(node: Node, everything: bool) -> Iterator["Tensor"]:
    """The node's inputs to follow, left to right: those it needs a gradient for, or all."""
    if everything:
        return iter(node.inputs)
    return itertools.compress(node.inputs, node.needs_input_grad)


# --- the backward pass ---------------------------------------------------------------------

Step = tuple["Tensor", np.ndarray, Node | None, Sequence[np.ndarray | None]]
"""One step of the backward pass, a plain tuple ``(tensor, grad, node, sent)`` (plain
for speed: the walker makes one per tensor): ``tensor`` has received all its gradient,
``grad`` = d roots / d tensor. For a tensor made by an op, ``node`` is its node and
``sent`` what the node's backward rule sent to each of its inputs (None where no gradient
flows: labels, masks, constants). For a leaf, ``node`` is None and ``sent`` is empty."""


def backward_steps(roots: Sequence["Tensor"], grads: Sequence[np.ndarray], *,
                   retain_graph: bool = False) -> Iterator[Step]:
    """The backward pass from ``roots`` (seeded with ``grads``), one tensor at a time,
    outputs first, as steps ``(tensor, grad, node, sent)`` (see ``Step``). Each node's rule
    runs once, after all its output's gradient is summed; its buffers are freed after its
    step unless ``retain_graph``."""
    pending: dict[Tensor, np.ndarray] = {}     # keyed by the tensors (topological_order)
    for root, g in zip(roots, grads, strict=True):
        pending[root] = pending[root] + g if root in pending else g
    anomaly = STATE.anomaly
    order = topological_order(roots)
    if STATE.tape is not None or STATE.transform_leaves:
        _refuse_nested(order)
    for tensor in reversed(order):
        grad = pending.pop(tensor, None)
        if grad is None:
            continue                         # nothing reached it (its users got no gradient)
        node = tensor.node
        if node is None:
            yield tensor, grad, None, ()
            continue
        sent = run_rule(node, grad, tensor, anomaly)
        yield tensor, grad, node, sent
        for key, g_inp in zip(node.inputs, sent, strict=True):    # one entry per input
            if g_inp is not None:
                pending[key] = pending[key] + g_inp if key in pending else g_inp
        if not retain_graph:
            node.free()                      # release what the rules saved


def _refuse_nested(order: Sequence["Tensor"]) -> None:
    """A backward pass inside a captured function (a replay would skip it: the tape says
    so), or inside a function engine.jvp or vjp is running that reaches one of its leaves:
    it gives numpy arrays, constants to the transform, which would see zero derivatives
    through them (a Hessian-vector product as jvp of grad gave 0)."""
    if STATE.tape is not None:
        STATE.tape.backward_inside()
    leaves = frozenset().union(*STATE.transform_leaves)
    if any(id(t) in leaves for t in order):
        raise RuntimeError("backward: this backward pass (backward(), engine.grad) runs inside "
                           "a function engine.jvp or vjp is differentiating, and reaches its "
                           "inputs: the gradients it gives are constants to the transform, which "
                           "would see zero derivatives through them (transforms do not nest)")


def run_rule(node: Node, grad: np.ndarray, out: "Tensor", anomaly: bool = False) -> list[np.ndarray | None]:
    """Call ``node``'s backward rule (``out`` is its output) on ``grad`` with every check:
    buffers still alive and unchanged since the forward pass, one gradient per input, each
    of its input's shape (cast to its dtype), None where no gradient is needed, and, in
    anomaly mode, no NaN or Inf out of finite values."""
    if node.saved is _FREED:
        raise RuntimeError(
            f"trying to go through the graph a second time: the buffers saved by op "
            f"'{node.op.name}' ({node!r}) were freed by an earlier backward(). "
            f"Pass retain_graph=True to the first backward() to keep them.")
    # A write since its forward pass, or one running now (another thread's), or holds.
    # writes_now first, then the clock (memory.Writing says why this order).
    if memory.writes_now or node.memory is not memory.write_tick or anomaly:
        memory.before_rule(node, out)
    result = node.op.backward(node, grad)
    if memory.writes_now or node.memory is not memory.write_tick:   # again: another
        memory.after_rule(node, out)                                # thread may write meanwhile
    inputs, needed = node.inputs, node.needs_input_grad
    if len(result) != len(inputs):
        raise RuntimeError(f"op '{node.op.name}': backward returned {len(result)} "
                           f"gradients for {len(inputs)} inputs")
    sent: list[np.ndarray | None] = []        # what goes to each input
    for i, g in enumerate(result):
        if g is None or not needed[i]:
            sent.append(None)
            continue
        if type(g) is not np.ndarray:
            g = np.asarray(g)
        data = inputs[i]._data
        if g.shape != data.shape:
            raise RuntimeError(
                f"op '{node.op.name}': its backward rule returned shape {g.shape} for input "
                f"{i}, which has shape {data.shape} (a missing sum_to/unbroadcast?)")
        if g.dtype != data.dtype:
            g = g.astype(data.dtype)
        if anomaly:
            check_finite("backward", node, g, [grad])
        sent.append(g)
    return sent


def check_finite(what: str, node: Node, array: np.ndarray, inputs: Iterable[np.ndarray]) -> None:
    """detect_anomaly's test: report the node that turned finite inputs into NaN/Inf."""
    if array.dtype.kind not in "fc" or np.isfinite(array).all():
        return
    if not all(np.isfinite(x).all() for x in inputs if x.dtype.kind in "fc"):
        return  # the non-finite value came from upstream; its producer was reported there
    bad = "NaN" if np.isnan(array).any() else "Inf"
    raise FloatingPointError(f"detect_anomaly: the {what} of op '{node.op.name}' produced {bad} "
                             f"({node!r}, params {plain_repr(node.params)})")


# --- forward mode --------------------------------------------------------------------------

def forward_tangents(outputs: Sequence["Tensor"],
                     tangents: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Push ``tangents`` (id(leaf) -> array) through the recorded graph with each op's JVP
    rule. Returns the tangent of each output (zeros where no tangent reaches it)."""
    values = dict(tangents)
    for tensor in topological_order(outputs):
        node = tensor.node
        if node is None or id(tensor) in values:
            continue
        nondiff = node.op.nondiff
        ins = [None if i in nondiff else values.get(id(inp)) for i, inp in enumerate(node.inputs)]
        if all(t is None for t in ins):
            continue
        if node.saved is _FREED:
            raise RuntimeError(f"forward mode: the buffers saved by op '{node.op.name}' "
                               f"({node!r}) were freed by an earlier backward()")
        if memory.writes_now or node.memory is not memory.write_tick:
            memory.before_rule(node, tensor)
        # A differentiable input without a tangent (a constant) has tangent zero.
        ins = [np.zeros_like(inp._data) if t is None and i not in nondiff else t
               for i, (inp, t) in enumerate(zip(node.inputs, ins, strict=True))]
        out = np.asarray(node.op.jvp(node, *ins))
        if memory.writes_now or node.memory is not memory.write_tick:   # again: another
            memory.after_rule(node, tensor)                             # thread may write meanwhile
        if out.shape != tensor.shape:
            raise RuntimeError(f"op '{node.op.name}': its jvp rule returned shape {out.shape} "
                               f"for an output of shape {tensor.shape}")
        values[id(tensor)] = out.astype(tensor.dtype, copy=False)
    return [values.get(id(o), np.zeros_like(o._data)) for o in outputs]

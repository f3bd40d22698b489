"""Gradients for the pictures, all taken from the engine's own backward walker
(``graph.backward_steps``, run with ``retain_graph=True``): every tensor's gradient,
intermediates included, without touching ``.grad``, and the backward pass one step at a
time exactly as ``loss.backward()`` runs it.

Once ``loss.backward()`` freed the graph, a picture of the loss still shows the gradient
of that loss, never ``.grad``: ``.grad`` sums every backward pass since it was last
cleared (gradient accumulation, an earlier batch without ``zero_grad()``) and may have
been clipped or assigned, and nothing records which. ``replayed_gradients`` re-runs the
recorded ops on the same values in a graph of its own and walks that one backward. It
replays only leaves whose values handgrad can vouch for (``memory.unwatched``): a batch
shared with the caller (``from_numpy``, ``copy=False``) may hold the next batch by then,
so such a graph is drawn with no gradient and a caption saying why."""
from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence

import numpy as np

from .. import graph
from ..graph import Node
from ..memory import unwatched
from ..modes import enable_grad
from ..tensor import Tensor
from .view import GraphView


class Step(NamedTuple):
    """One step of the engine's backward pass (``graph.backward_steps``), with names."""

    tensor: Tensor                       # its gradient is complete now
    grad: np.ndarray                     # d root / d tensor
    node: Node | None                    # the node that made it (None: a leaf)
    sent: Sequence[np.ndarray | None]    # what the node's rule sent to each input


def can_differentiate(view: GraphView) -> bool:
    """A gradient of every tensor exists when the root is a scalar with a live graph."""
    root = view.root
    return root.node is not None and root.size == 1 and view.alive


def backward_steps(view: GraphView) -> list[Step]:
    """The backward pass from the root, one ``Step`` per tensor (leaves too), in the order
    the engine runs it. Needs a scalar root whose graph is still alive."""
    root = view.root
    if root.node is None:
        raise ValueError(f"backward steps need a root computed by ops (a loss); this one is a "
                         f"leaf of shape {root.shape}, with no backward pass to show")
    if root.size != 1:
        raise ValueError(f"backward steps need a scalar root (a loss); this one has shape "
                         f"{root.shape}: draw its sum, or the loss it feeds")
    if not can_differentiate(view):
        raise ValueError("backward steps need a graph that is still alive: draw before "
                         "calling loss.backward(), or pass retain_graph=True to it")
    return [Step(*s) for s in graph.backward_steps([root], [np.ones_like(root._data)],
                                                    retain_graph=True)]


def rule_steps(steps: list[Step]) -> list[Step]:
    """The steps that ran an op's backward rule (leaves only receive)."""
    return [s for s in steps if s.node is not None]


def differentiates_root(view: GraphView) -> bool:
    """Whether a picture's gradients are those of its root: a scalar computed by ops (for
    any other root the tensors' ``.grad`` is all there is)."""
    return view.root.node is not None and view.root.size == 1


def all_gradients(view: GraphView, steps: list[Step] | None = None) -> dict[int, np.ndarray]:
    """id(tensor) -> d root / d tensor for every tensor a gradient reaches: from ``steps``
    or a live graph's walker, else (backward() freed the graph) ``replayed_gradients``
    (a ValueError saying why when the graph cannot be replayed). For a root that is not
    a scalar loss, the ``.grad`` already stored on tensors is all there is."""
    if steps is None:
        if not differentiates_root(view):
            return {id(t): t.grad for t in view.tensors if t.grad is not None}
        if not view.alive:
            return replayed_gradients(view)
        steps = backward_steps(view)
    return {id(s.tensor): s.grad for s in steps}


def backward_order(steps: list[Step]) -> list[Node]:
    """The op nodes in the order backward runs their rules: outputs first."""
    return [s.node for s in steps if s.node is not None]     # the rule steps' nodes


def received(view: GraphView, steps: list[Step], done: int) -> dict[int, np.ndarray]:
    """id(tensor) -> the gradient summed from the first ``done`` rule steps (the root
    starts at 1)."""
    sums: dict[int, np.ndarray] = {id(view.root): np.ones_like(view.root._data)}
    for step in steps[:done]:
        assert step.node is not None
        for inp, g in zip(step.node.inputs, step.sent, strict=True):
            if g is not None:
                sums[id(inp)] = sums[id(inp)] + g if id(inp) in sums else g
    return sums


def is_complete(view: GraphView, tensor: Tensor, pending: set[int]) -> bool:
    """A tensor's gradient is final once no op that used it still has to run its backward
    (``pending``: ids of the nodes whose step is still to come)."""
    return not any(id(n) in pending for n in view.consumers(tensor))


def draws_random(node: Node) -> bool:
    """True when re-running the node would draw other random numbers than its forward did:
    a zeroing dropout without an int seed (its mask went with the freed buffers), or any op
    given a numpy Generator."""
    params = node.params
    if node.op.name == "dropout":
        return (bool(params.get("training", True)) and params.get("p", 0.5) != 0
                and not isinstance(params.get("rng"), numbers.Integral))
    return any(isinstance(v, np.random.Generator) for v in params.values())


class NoGradient(ValueError):
    """The picture cannot differentiate this loss: the message says why (a picture drawn
    anyway shows no gradient and this as its caption)."""


def replayed_gradients(view: GraphView) -> dict[int, np.ndarray]:
    """id(tensor) -> d root / d tensor for a scalar root whose graph backward() freed: the
    recorded ops re-applied, with their parameters, to copies of the leaves' values (the
    user's tensors and their ``.grad`` untouched), and that graph walked backward. The
    values are the forward's (``check_one_point`` refused changed ones). NoGradient when
    a leaf's memory could have been written with no trace (``memory.unwatched``: shared
    with the caller, foreign), an op would draw new random numbers, or the re-run does not
    give the recorded root: its gradient would be another function's (the root alone
    cannot tell, when the loss does not depend on the changed values)."""
    why = ("no gradient shown: backward() freed this graph, and .grad may hold other "
           "backward passes too, so the picture re-runs the ops to differentiate this loss")
    advice = "draw before loss.backward(), or pass retain_graph=True to it"
    for reader in view.nodes:
        for t in reader.inputs:
            how = unwatched(reader, t) if t.node is None else None
            if how is not None:
                raise NoGradient(
                    f"no gradient shown: backward() freed this graph (and .grad may hold "
                    f"other backward passes), and re-running its ops needs the values its "
                    f"forward pass read, but {view.name(t)} may no longer hold them: {how}; "
                    f"the values shown for {view.name(t)} are its values now, which may not be "
                    f"those the forward pass read. Draw before loss.backward() (or pass "
                    f"retain_graph=True to it), or make the batch with Tensor(x), which copies it")
    values: dict[int, Tensor] = {}
    with enable_grad():
        for t in view.tensors:
            node = t.node
            if node is None:
                values[id(t)] = Tensor(t._data, requires_grad=t.requires_grad)
                continue
            if draws_random(node):
                raise NoGradient(f"{why}, but op '{node.op.name}' (node #{node.index}) would "
                                 f"draw new random numbers; {advice}")
            values[id(t)] = node.op.apply(*(values[id(i)] for i in node.inputs), **node.params)
    root = values[id(view.root)]
    if root.node is None or not np.array_equal(root._data, view.root._data, equal_nan=True):
        raise NoGradient(f"{why}, but the re-run did not give the recorded loss; {advice}")
    original = {id(values[id(t)]): id(t) for t in view.tensors}
    steps = graph.backward_steps([root], [np.ones_like(root._data)])
    return {original[id(tensor)]: g for tensor, g, _, _ in steps}

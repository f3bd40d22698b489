"""Gradients for the pictures, all taken from the engine's own backward walker
(``graph.backward_steps``, run with ``retain_graph=True``): every tensor's gradient,
intermediates included, without touching ``.grad``, and the backward pass one step at a
time exactly as ``loss.backward()`` runs it."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .. import graph
from ..graph import Node
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


def all_gradients(view: GraphView, steps: list[Step] | None = None) -> dict[int, np.ndarray]:
    """id(tensor) -> d root / d tensor for every tensor a gradient reaches. Without a live
    graph and a scalar root, the ``.grad`` already stored on tensors is all there is."""
    if steps is None:
        if not can_differentiate(view):
            return {id(t): t.grad for t in view.tensors if t.grad is not None}
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

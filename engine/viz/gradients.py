"""Gradients for the pictures: every tensor's gradient (intermediates too) without
touching ``.grad``, and the backward pass replayed one op at a time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import graph
from ..graph import Node
from ..tensor import Tensor
from .view import GraphView


def can_differentiate(view: GraphView) -> bool:
    """A gradient of every tensor exists when the root is a scalar with a live graph."""
    root = view.root
    return root.node is not None and root.size == 1 and view.alive


def all_gradients(view: GraphView) -> dict[int, np.ndarray]:
    """id(tensor) -> d root / d tensor for every tensor that requires grad.

    With a live graph and a scalar root, one extra backward pass (``retain_graph=True``,
    ``inputs=`` every tensor) gives leaves and intermediates alike and leaves ``.grad``
    alone. Otherwise the ``.grad`` already stored on tensors is all there is to show.
    """
    if not can_differentiate(view):
        return {id(t): t.grad for t in view.tensors if t.grad is not None}
    tensors = graph.topological_order([view.root])
    found = graph.backward([view.root], [np.ones_like(view.root.data)], retain_graph=True,
                           inputs=tensors)
    assert found is not None
    return {id(t): g for t, g in zip(tensors, found) if g is not None}


def backward_order(view: GraphView) -> list[Node]:
    """The op nodes in the order ``graph.backward`` runs their rules: outputs first."""
    return [t.node for t in reversed(graph.topological_order([view.root])) if t.node is not None]


@dataclass
class Step:
    """One backward step: ``node``'s rule turned ``grad_out`` into one gradient per input
    (None where no gradient flows: data, labels, masks)."""

    node: Node
    grad_out: np.ndarray
    grad_in: list[np.ndarray | None]


def backward_steps(view: GraphView) -> list[Step]:
    """The backward pass, one op at a time, each rule called as ``graph.backward`` calls it."""
    if not can_differentiate(view):
        raise ValueError("backward steps need a scalar root (a loss) whose graph is still alive: "
                         "draw before calling loss.backward(), or pass retain_graph=True to it")
    grads = all_gradients(view)
    steps = []
    for node in backward_order(view):
        out = view.output[id(node)]
        g = grads[id(out)]
        raw = node.op.backward(node, g)
        grad_in = [np.asarray(ig) if needed and ig is not None else None
                   for ig, needed in zip(raw, node.needs_input_grad)]
        steps.append(Step(node, g, grad_in))
    return steps


def received(view: GraphView, steps: list[Step], done: int) -> dict[int, np.ndarray]:
    """id(tensor) -> the gradient summed from the first ``done`` steps (the root starts at 1)."""
    sums: dict[int, np.ndarray] = {id(view.root): np.ones_like(view.root.data)}
    for step in steps[:done]:
        for inp, g in zip(step.node.inputs, step.grad_in):
            if g is not None:
                sums[id(inp)] = sums[id(inp)] + g if id(inp) in sums else g
    return sums


def is_complete(view: GraphView, tensor: Tensor, pending: set[int]) -> bool:
    """A tensor's gradient is final once no op that used it still has to run its backward
    (``pending``: ids of the nodes whose step is still to come)."""
    return not any(id(n) in pending for n in view.consumers(tensor))

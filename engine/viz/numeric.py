"""Numeric gradients beside the analytic ones: the engine's central difference
(``gradcheck.central_difference``) of the root, recomputed by replaying the recorded graph
with one leaf nudged.

The replay runs in float64 (a central difference in float32 cannot beat ~3e-7 relative)
with step EPS = 1e-6, close to the best step cbrt(machine eps) ~ 6e-6 for float64, where
the error is ~1e-10 relative.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..gradcheck import central_difference
from ..graph import Node
from ..modes import no_grad
from ..tensor import Tensor
from .view import GraphView

EPS = 1e-6


@dataclass
class NumericCheck:
    """The analytic and numeric derivative of the root for one leaf.

    Per element (``direction`` None): both have the leaf's shape. Directional: both are
    0-d, the derivative along the unit vector ``direction`` (the analytic one is
    ``<grad, direction>``). ``analytic`` is None when the picture has no gradient for the
    leaf (the graph was freed and ``.grad`` is None, e.g. after ``zero_grad()``): the
    numeric estimate stands alone, compared with nothing.
    """

    analytic: np.ndarray | None
    numeric: np.ndarray
    direction: np.ndarray | None = None

    @property
    def error(self) -> float | None:
        """The largest |analytic - numeric|, or None without an analytic gradient (a
        missing gradient is not a zero one)."""
        if self.analytic is None:
            return None
        return float(np.max(np.abs(self.analytic - self.numeric), initial=0.0))


def _float64(t: Tensor) -> Tensor:
    return Tensor(t._data.astype(np.float64)) if t.dtype.kind == "f" else t


def _masks(node: Node) -> bool:
    """True for a dropout that zeroes elements (training, p > 0): its output depends on the
    mask its forward drew."""
    params = node.params
    return (node.op.name == "dropout" and bool(params.get("training", True))
            and params.get("p", 0.5) != 0)


def _replay_node(node: Node, inputs: list[Tensor]) -> Tensor:
    """The node's op on new inputs with its recorded parameters. The function backward
    differentiated is the one with the random numbers the forward drew, so a zeroing
    dropout becomes x · mask with its recorded mask: re-running it would draw a new mask
    from its Generator or fresh entropy (noise in the central difference, and the model's
    Generator advanced by drawing). A dropout that zeroes nothing (eval mode, p = 0) is
    the identity, whatever its Generator. Refused: a zeroing dropout whose mask backward()
    freed (unless an int seed redraws the same mask from no shared state), and any other op
    given a numpy Generator."""
    where = f"op '{node.op.name}' (node #{node.index})"
    if node.op.name == "dropout" and not _masks(node):
        return inputs[0]              # eval mode or p = 0: the identity, drawing nothing
    if _masks(node):
        if not node.freed:
            (mask,) = node.saved         # keep / (1 − p) in x's dtype, as backward uses it
            return Tensor(inputs[0]._data * mask)
        if not isinstance(node.params.get("rng"), numbers.Integral):
            raise ValueError(f"numeric=True cannot replay {where}: backward() freed the mask "
                             f"it drew, and a new mask is another function; draw before "
                             f"loss.backward(), pass retain_graph=True, or make the loss "
                             f"again with the model in eval mode (model.eval(): dropout is "
                             f"then the identity)")
    elif any(isinstance(v, np.random.Generator) for v in node.params.values()):
        raise ValueError(f"numeric=True cannot replay {where}: it draws from a numpy "
                         f"Generator, so each replay would draw new numbers and advance it")
    return node.op.apply(*inputs, **node.params)


def replay(view: GraphView, leaves: dict[int, Tensor]) -> float:
    """The root's value recomputed from the recorded ops, in float64.

    ``leaves`` replaces some leaves (id(leaf) -> tensor); the others keep their data.
    Each node re-applies its op to the new inputs with its recorded parameters (a random
    op with the numbers it drew, see ``_replay_node``).
    """
    values: dict[int, Tensor] = {}
    with no_grad():
        for t in view.tensors:
            if t.node is None:
                values[id(t)] = leaves[id(t)] if id(t) in leaves else _float64(t)
            else:
                inputs = [values[id(inp)] for inp in t.node.inputs]
                values[id(t)] = _replay_node(t.node, inputs)
    return float(values[id(view.root)]._data.reshape(()))


def derivative_along(view: GraphView, leaf: Tensor, direction: np.ndarray) -> float:
    """d/dt f(leaf + t u) at t = 0 by central difference, f the root, u = ``direction``."""
    x = leaf._data.astype(np.float64)
    return float(central_difference(
        lambda t: replay(view, {id(leaf): Tensor(x + t * direction, copy=False)}), EPS))


def numeric_check(view: GraphView, leaf: Tensor, analytic: np.ndarray | None,
                  max_elements: int, seed: int) -> NumericCheck:
    """Per element for a small leaf; along one random unit vector (from ``seed``) otherwise.
    ``analytic`` None: the numeric estimate only."""
    if analytic is not None:
        analytic = np.asarray(analytic, dtype=np.float64)
    if leaf.size <= max_elements:
        numeric = np.zeros(leaf.shape)
        for index in np.ndindex(*leaf.shape):
            e = np.zeros(leaf.shape)
            e[index] = 1.0
            numeric[index] = derivative_along(view, leaf, e)
        return NumericCheck(analytic, numeric)
    u = np.random.default_rng(seed).standard_normal(leaf.shape)
    u /= np.linalg.norm(u)
    numeric = np.asarray(derivative_along(view, leaf, u))
    along = None if analytic is None else np.asarray(np.sum(analytic * u))   # <grad, u>
    return NumericCheck(along, numeric, direction=u)


def numeric_checks(view: GraphView, grads: dict[int, np.ndarray],
                   max_elements: int) -> dict[int, NumericCheck]:
    """A check for every leaf that requires grad (id(leaf) -> NumericCheck); a leaf
    missing from ``grads`` gets the numeric estimate with no analytic side."""
    if view.root.size != 1:
        raise ValueError(f"numeric=True needs a scalar root (a loss); this one has shape "
                         f"{view.root.shape}")
    checks = {}
    for position, t in enumerate(view.tensors):
        if t.node is None and t.requires_grad:
            checks[id(t)] = numeric_check(view, t, grads.get(id(t)), max_elements,
                                          seed=position)
    return checks

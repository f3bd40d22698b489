"""Why a numeric check can disagree with an exact gradient: a kink. At relu's 0 (and every
other point where an op's derivative jumps) the backward rule takes a convention
(relu′(0) = 0) while a central difference of step h that straddles the point averages
both sides: both are right, and their difference says nothing about backprop.

Kinks are found as the op checker finds them (``gradcheck.one_sided_derivatives`` and
``at_kink``): the derivative of sum(op(inputs)) from the left and from the right, entry by
entry at the recorded inputs, with the numeric check's step. Only leaves whose check
disagrees get a note, naming the kinked inputs that lie on their way to the root.
"""
from __future__ import annotations

import numpy as np

from ..gradcheck import at_kink, one_sided_derivatives
from ..graph import Node, topological_order
from ..modes import no_grad
from ..tensor import Tensor
from .gradients import draws_random
from .numeric import EPS, NumericCheck
from .view import GraphView

MISMATCH = 1e-4       # |analytic − numeric| beyond this (relative to the numbers, at least 1)
PROBE_LIMIT = 20_000  # op inputs probed entry by entry, at most, per picture


def disagrees(check: NumericCheck) -> bool:
    """True when the analytic and numeric derivative differ by more than MISMATCH."""
    error = check.error
    scale = max(1.0, float(np.max(np.abs(check.numeric), initial=0.0)))
    return error is not None and error > MISMATCH * scale


def kinked_entries(node: Node, i: int) -> int:
    """How many entries of the node's input ``i`` lie within EPS of a kink of the op: its
    one-sided derivatives of sum(output) differ (float64, other inputs as recorded)."""
    inputs = [np.asarray(t._data, np.float64) if t.dtype.kind == "f" else t._data
              for t in node.inputs]

    def total(x: np.ndarray) -> float:
        args = [Tensor(x if k == i else a, copy=False) for k, a in enumerate(inputs)]
        with no_grad():
            return float(np.sum(node.op.apply(*args, **node.params)._data))

    left, right = one_sided_derivatives(total, inputs[i], EPS)
    return int(np.count_nonzero(at_kink(left, right)))


def kink_notes(view: GraphView, checks: dict[int, NumericCheck]) -> dict[int, list[str]]:
    """id(leaf) -> the lines that explain its check's disagreement by kinks: for every op
    input that depends on the leaf and sits within EPS of a kink, which input of which op
    and how many entries, then why that makes the two differ. Empty for a leaf whose check
    agrees, or with no kink on its way (a disagreement the kinks do not explain)."""
    wrong = {key for key, check in checks.items() if disagrees(check)}
    if not wrong:
        return {}
    notes: dict[int, list[str]] = {}
    budget = PROBE_LIMIT
    for node in view.nodes:
        if draws_random(node) or node.op.name == "dropout":   # x · mask: linear
            continue
        for i, inp in enumerate(node.inputs):
            if not node.needs_input_grad[i] or inp.dtype.kind != "f" or inp.size > budget:
                continue
            below = {id(t) for t in topological_order([inp]) if t.node is None} & wrong
            if not below:
                continue
            budget -= inp.size
            count = kinked_entries(node, i)
            if count:
                line = (f"kink: {count} entr{'y' if count == 1 else 'ies'} of "
                        f"{view.symbol(inp)} (into {node.op.name}) within h = {EPS:g} of it")
                for key in below:
                    notes.setdefault(key, []).append(line)
    for lines in notes.values():
        # "a convention", not "one side's slope": abs′(0) = 0 is neither side's, and max
        # splits its gradient among k tied entries (1/3 each for three)
        lines += ["the rule takes a convention there, the central",
                  "difference averages both sides: both are right"]
    return notes

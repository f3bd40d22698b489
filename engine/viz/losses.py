"""What the pictures say about a loss node: the output delta of a fused loss with the
numbers that make it (p, y, the rows' target sums, N), and each loss's derivative rule for
the reduction the node actually used.

The formulas are the ones ``engine/ops/loss.py`` computes, never a textbook special case:
softmax cross-entropy sends ``(p·Σy − y)/N`` (Σy: each row's target sum, after label
smoothing), which is the familiar ``(p − y)/N`` only when every row of y sums to 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import Node
from ..ops.activation import stable_sigmoid
from ..ops.loss import softmax_parts
from . import labels

# The fused losses: one node whose backward is the classic output delta.
FUSED_LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")
ROW_SUM_ULPS = 4  # rows of y "sum to 1" within this many roundings of the logits' dtype


@dataclass
class OutputDelta:
    """The output delta of a fused loss node as the derivation writes it.

    p: softmax(z) or σ(z), in float64; y: the targets as the engine uses them (integer
    labels one-hot, label smoothing applied); N: the divisor the reduction implies (1 for
    "sum" and "none"), a count, so an int (``labels.number`` prints it exactly); y_sum:
    each row's target sum, shape (..., 1), when some row does not sum to 1 (softmax
    cross-entropy only), else None; formula: the text that states it.
    """

    p: np.ndarray
    y: np.ndarray
    N: int
    y_sum: np.ndarray | None
    formula: str

    def rhs(self) -> np.ndarray:
        """The delta recomputed from p, y and N with the formula shown (float64)."""
        return (self.term() - self.y) / self.N

    def term(self) -> np.ndarray:
        """What y is subtracted from: p, or p·Σy."""
        return self.p if self.y_sum is None else self.p * self.y_sum

    def digits(self) -> tuple[int, int]:
        """The significant digits to print p (and Σy) and y with, so that the delta
        written with the printed numbers holds (``labels.digits_to_subtract``): a
        confident p = 0.99995892 is no "1" beside y = 1."""
        term = self.term()
        return (labels.digits_to_subtract(term, self.y),
                labels.digits_to_subtract(self.y, term))


def engine_p(node: Node, z: np.ndarray) -> np.ndarray:
    """p as the loss op computes it, in the logits' dtype (``engine/ops/loss.py``), as
    float64 (exactly): softmax(z) with the max shifted out, or σ(z). Not p recomputed in
    float64: next to y = 1 the digits a slide prints of p must be the engine's, or
    (p − y)/N written with them is not the engine's δ (0.99995892 in float64 against the
    engine's float32 0.99995888, a δ of -2.054e-05 printed beside the engine's -2.056e-05)."""
    p = softmax_parts(z)[1] if node.op.name == "softmax_cross_entropy" else stable_sigmoid(z)
    return p.astype(np.float64)


def engine_row_sums(z: np.ndarray, y_raw: np.ndarray, eps: float) -> np.ndarray | None:
    """Σy, each row's target sum, as ``engine/ops/loss.py`` computes it for probability
    targets: y cast to the logits' dtype, label smoothing (1 − eps) y + eps/C applied in
    that dtype, summed over the class axis in that dtype (shape (..., 1)). None for integer
    labels: the engine builds their delta as p − y, with no sum at all."""
    if y_raw.dtype.kind in "iu":
        return None
    targets = y_raw.astype(z.dtype, copy=False)
    if eps:
        targets = (1 - eps) * targets + eps / z.shape[-1]
    sums: np.ndarray = targets.sum(axis=-1, keepdims=True)
    return sums


def _rows_sum_to_one(sums: np.ndarray, dtype: np.dtype) -> bool:
    """True when every row sum the engine computed (``engine_row_sums``) is 1 within
    ROW_SUM_ULPS roundings of the logits' dtype, the one it sums and multiplies in. Then
    p·Σy differs from p by no more than the engine's own rounding of that product, and
    (p − y) gives the engine's numbers. Anything further from 1 is in the targets
    themselves, however coarse their dtype (float16 rows summing to 0.99 are summed
    exactly in float32), and the engine's delta is p·Σy − y."""
    deviation = np.abs(sums.astype(np.float64) - 1)
    return bool(np.all(deviation <= ROW_SUM_ULPS * float(np.finfo(dtype).eps)))


def softmax_core(node: Node) -> str:
    """"p − y" when every row of the node's targets sums to 1, else "p·Σy − y"."""
    return "p − y" if output_delta(node).y_sum is None else "p·Σy − y"


def _times(core: str, scaled: bool) -> str:
    """``core``, or g·(core) for a loss whose output receives a gradient g other than 1."""
    return f"g·({core})" if scaled else core


def _over_n(core: str, scaled: bool) -> str:
    """(core)/N, or g·(core)/N."""
    return f"{'g·' if scaled else ''}({core})/N"


def output_delta(node: Node, scaled: bool = False) -> OutputDelta:
    """p, y, N, the rows' target sums and the delta formula of a fused loss node, from its
    inputs and parameters. The formula is the delta for an incoming gradient of 1 (the loss
    is the root), or with ``scaled`` g·(...) for an incoming gradient g (reduction "none"
    always names its per-row gₙ)."""
    z = np.asarray(node.inputs[0]._data)
    y_raw = np.asarray(node.inputs[1]._data)
    reduction = node.params.get("reduction", "mean")
    if node.op.name == "softmax_cross_entropy":
        C = z.shape[-1]
        # y as the engine subtracts it: in the logits' dtype, smoothed in that dtype (y in
        # float64 next to the engine's float32 p printed a p − y that was not the δ beside it)
        y = (np.eye(C, dtype=z.dtype)[y_raw] if y_raw.dtype.kind in "iu"
             else y_raw.astype(z.dtype, copy=False))
        eps = node.params.get("label_smoothing", 0.0)
        if eps:
            y = (1 - eps) * y + eps / C
        y = y.astype(np.float64)
        sums = engine_row_sums(z, y_raw, eps)
        y_sum = None if sums is None or _rows_sum_to_one(sums, z.dtype) \
            else sums.astype(np.float64)
        core = "p − y" if y_sum is None else "p·Σy − y"
        rows = int(np.prod(z.shape[:-1]))
        note = "" if y_sum is None else ", Σy = each row's target sum (not all 1)"
        n, formula = {
            "mean": (rows, f"δ = {_over_n(core, scaled)}, N = {rows} rows{note}"),
            "sum": (1, f"δ = {_times(core, scaled)} (reduction sum){note}")}.get(
            reduction, (1, f"δₙ = ({core})ₙ·gₙ per row (reduction none){note}"))
        return OutputDelta(engine_p(node, z), y, int(n), y_sum, formula)
    n, formula = _bce_formula(z.shape, reduction, scaled)
    return OutputDelta(engine_p(node, z), y_raw.astype(z.dtype).astype(np.float64), int(n),
                       None, formula)


def _bce_formula(shape: tuple[int, ...], reduction: str, scaled: bool) -> tuple[int, str]:
    """N and the delta formula of sigmoid binary cross-entropy on logits of ``shape``:
    N = all elements (mean), the batch size shape[0] (batchmean; 1 for a 0-d logit, as the
    engine counts it), 1 (sum, none). Only the reduction used is looked at: a 0-d logit has
    no shape[0]."""
    core = "σ(z) − y"
    if reduction == "mean":
        n = int(np.prod(shape))
        return n, f"δ = {_over_n(core, scaled)}, N = {n} elements"
    if reduction == "batchmean":
        n = shape[0] if shape else 1
        return n, f"δ = {_over_n(core, scaled)}, N = {n} rows"
    if reduction == "sum":
        return 1, f"δ = {_times(core, scaled)} (reduction sum)"
    return 1, "δ = (σ(z) − y)·g per element (reduction none)"


def fused_loss_lines(node: Node, max_elements: int, incoming: float | None,
                     root: bool | None = None) -> list[str]:
    """The delta formula for the node's reduction and, for small tensors, p, y (and the
    rows' target sums when they are not all 1), so a student can check it by hand.

    ``incoming``: the gradient g the loss's output receives, 1 at the root (the formula
    as the rule states it), None when it is not known here. ``root``: whether the loss is
    the graph's root (default: when ``incoming`` is exactly 1). A loss that is not states
    the delta the node sends, g·(...): ∂L/∂z = ∂L/∂ℓ · ∂ℓ/∂z for a loss ℓ scaled or summed
    into L (a penalty added, gradient accumulation, loss weights), in every frame, g's
    value once it is known (1 for L = ℓ + penalty): each frame then has the same lines as
    the last one, which the layout is made from."""
    reduction = node.params.get("reduction", "mean")
    at_root = incoming == 1.0 if root is None else root
    scaled = not at_root and reduction != "none"          # "none": gₙ is in the formula
    delta = output_delta(node, scaled)
    lines = [delta.formula]
    if scaled:
        g = "" if incoming is None else f" = {labels.number(incoming)}"
        lines.append(f"g = the gradient the loss receives{g}")
    if delta.p.size <= max_elements:
        p_digits, y_digits = delta.digits()
        lines += (labels.labelled("p", delta.p, max_elements, p_digits)
                  + labels.labelled("y", delta.y, max_elements, y_digits))
        if delta.y_sum is not None:
            lines += labels.labelled("Σy", delta.y_sum, max_elements, p_digits)
    return lines


def loss_rule(node: Node) -> str | None:
    """The derivative rule of a loss node for the reduction it used (and, for softmax
    cross-entropy, its targets), or None for an op that is not a loss."""
    name, reduction = node.op.name, node.params.get("reduction", "mean")
    incoming = "g = the incoming gradient (reduction none)"
    if name == "softmax_cross_entropy":
        core = softmax_core(node)
        sums = "" if core == "p − y" else ", Σy = each row's target sum"
        return {"mean": f"d/dz = ({core})/N, p = softmax(z){sums}, N = rows averaged",
                "sum": f"d/dz = {core}, p = softmax(z){sums} (reduction sum: no /N)"}.get(
            reduction, f"d/dzₙ = ({core})ₙ·gₙ per row, p = softmax(z){sums}, {incoming}")
    if name == "sigmoid_binary_cross_entropy":
        return {"mean": "d/dz = (σ(z) − y)/N, N = all elements (mean)",
                "batchmean": "d/dz = (σ(z) − y)/N, N = the batch size (batchmean)",
                "sum": "d/dz = σ(z) − y (reduction sum: no /N)"}.get(
            reduction, f"d/dz = (σ(z) − y)·g per element, {incoming}")
    if name == "mse":
        return {"mean": "d/dpred = 2 (pred − target)/N, d/dtarget = −2 (pred − target)/N, "
                        "N = all elements (mean)",
                "sum": "d/dpred = 2 (pred − target), d/dtarget = −2 (pred − target) "
                       "(reduction sum: no /N)"}.get(
            reduction, f"d/dpred = 2 (pred − target)·g, d/dtarget = −2 (pred − target)·g "
                       f"per element, {incoming}")
    return None


def node_rule(node: Node) -> str:
    """The derivative rule a picture prints for ``node``: a loss's rule for its reduction,
    a dropout's for its mode (the identity in eval mode or with p = 0, whose backward sends
    the gradient unchanged: not ``keep / (1 − p)``), else the op's own ``rule``."""
    if identity_dropout(node):
        return "d/dx = 1 (the identity: eval mode, or p = 0)"
    return loss_rule(node) or labels.derivative_rule(node.op)


def identity_dropout(node: Node) -> bool:
    """A dropout that zeroes nothing (eval mode, or p = 0): its output is its input and its
    backward sends the gradient unchanged (so the layers on either side of it are the
    chain BP1-BP4 describe)."""
    return node.op.name == "dropout" and (not node.params.get("training", True)
                                          or node.params.get("p", 0.5) == 0)

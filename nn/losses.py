"""Loss modules over the engine's fused losses, and L2 regularization."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from .module import Module


class CrossEntropyLoss(Module):
    """Softmax + cross-entropy in one node: backward is (softmax(z) - y) / N.

    Targets: integer class labels (N,) or one-hot / probability rows (N, C).
    """

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        self.reduction, self.label_smoothing = reduction, label_smoothing

    def forward(self, logits: Tensor, targets: Any) -> Tensor:
        """The loss of ``logits`` (N, C) against class labels (N,) or probability rows (N, C):
        ``engine.softmax_cross_entropy`` with this module's reduction and label smoothing."""
        return engine.softmax_cross_entropy(logits, targets, reduction=self.reduction,
                                            label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class BCEWithLogitsLoss(Module):
    """Sigmoid + binary cross-entropy in one node, for binary and multi-label targets in
    [0, 1]: backward is (sigmoid(z) - y) / N. reduction "mean" averages over all elements
    (PyTorch's choice), "batchmean" sums over labels and averages over the batch."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Any) -> Tensor:
        """The loss of ``logits`` against targets in [0, 1] of the same shape:
        ``engine.sigmoid_binary_cross_entropy`` with this module's reduction."""
        return engine.sigmoid_binary_cross_entropy(logits, targets, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(Module):
    """Mean squared error; prediction and target must have the same shape."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        """The squared error of ``pred`` against ``target`` (same shape): ``engine.mse``
        with this module's reduction."""
        return engine.mse(pred, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def l2_penalty(params: Iterable[Tensor] | Module, weight_decay: float,
               include_biases: bool = False) -> Tensor:
    """(weight_decay / 2) * Σ ||W||^2 over the weights (1-D biases skipped unless asked):
    add it to the loss for classic L2 regularization; its gradient is weight_decay * W."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, np.integer, np.floating)) \
            or not 0 <= weight_decay < math.inf:
        raise ValueError(f"l2_penalty: weight_decay must be a finite number >= 0, got "
                         f"{plain_repr(weight_decay)} (a negative one rewards large weights)")
    params = params.parameters() if isinstance(params, Module) else list(params)
    chosen = [p for p in params if include_biases or p.ndim > 1]
    if not chosen:
        raise ValueError("l2_penalty: no parameters to regularize")
    total = sum(((p * p).sum() for p in chosen), start=Tensor(0.0, dtype=chosen[0].dtype))
    return total * (weight_decay / 2)

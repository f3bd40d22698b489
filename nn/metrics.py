"""Evaluation metrics on numpy arrays: accuracy, confusion matrix, precision and recall."""
from __future__ import annotations

from typing import Any

import numpy as np


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else x)


def predictions(scores: Any) -> np.ndarray:
    """Class predictions: the argmax over the last axis of logits/probabilities, or the
    labels themselves when given 1-D integer predictions."""
    s = _np(scores)
    return s if s.ndim == 1 and s.dtype.kind in "iu" else s.argmax(axis=-1)


def accuracy(scores: Any, labels: Any) -> float:
    """Fraction of examples whose predicted class equals the label (labels may be one-hot)."""
    pred, y = predictions(scores), _np(labels)
    if y.ndim == pred.ndim + 1:
        y = y.argmax(axis=-1)
    if pred.shape != y.shape:
        raise ValueError(f"accuracy: {pred.shape[0] if pred.ndim else 0} predictions for labels of shape {y.shape}")
    return float(np.mean(pred == y)) if y.size else float("nan")


def confusion_matrix(labels: Any, pred: Any, num_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of examples of true class i predicted as class j."""
    y, p = _np(labels).astype(np.int64), predictions(pred).astype(np.int64)
    if y.shape != p.shape:
        raise ValueError(f"confusion_matrix: labels shape {y.shape} != predictions shape {p.shape}")
    n = num_classes if num_classes is not None else int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= n):
        raise ValueError(f"confusion_matrix: classes must lie in [0, {n})")
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (y, p), 1)
    return out


def precision_recall(probabilities: Any, targets: Any, threshold: float = 0.5,
                     average: str | None = "micro") -> tuple[Any, Any]:
    """Precision and recall of binary or multi-label outputs thresholded at ``threshold``.

    ``probabilities`` and ``targets`` (0/1) have the same shape: (N,) for binary, (N, L)
    for multi-label. average="micro" pools every decision, "macro" averages the per-label
    values, None returns one value per label. A ratio with a zero denominator is 0.
    """
    p, t = _np(probabilities), _np(targets)
    if p.shape != t.shape:
        raise ValueError(f"precision_recall: probabilities shape {p.shape} != targets shape {t.shape}")
    if average not in ("micro", "macro", None):
        raise ValueError(f"precision_recall: average must be 'micro', 'macro' or None, got {average!r}")
    pred = p >= threshold
    truth = t.astype(bool)
    axis = 0 if p.ndim > 1 and average != "micro" else None
    tp = np.sum(pred & truth, axis=axis)
    fp = np.sum(pred & ~truth, axis=axis)
    fn = np.sum(~pred & truth, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    if average == "macro":
        return float(np.mean(precision)), float(np.mean(recall))
    if average == "micro" or precision.ndim == 0:
        return float(precision), float(recall)
    return precision, recall

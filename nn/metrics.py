"""Evaluation metrics on numpy arrays: accuracy, confusion matrix, precision and recall.

NaN or Inf among the scores is an error, never a class: argmax would read NaN as the
largest score and a threshold would read it as below it."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from .finite import all_finite, non_finite_rows


def _np(x: Any) -> np.ndarray:
    """An array from an array, a Tensor (a copy: no need to hand out its memory) or
    anything numpy takes (a list; a CPU torch tensor, through its ``__array__``)."""
    if isinstance(x, Tensor):
        return x.numpy(copy=True)
    return np.asarray(x)


def _finite_scores(what: str, s: np.ndarray, name: str = "scores") -> np.ndarray:
    """``s`` itself, or a ValueError saying how many examples hold NaN/Inf and the first."""
    if not all_finite(s):
        count, first = non_finite_rows(s)
        raise ValueError(f"{what}: the {name} are NaN/Inf for {count} of {len(s) if s.ndim else 1} "
                         f"examples (the first is example {first}); a model that "
                         f"gives them has diverged or was fed NaN/Inf")
    return s


def _threshold(what: str, threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not math.isfinite(threshold):
        raise ValueError(f"{what}: threshold must be a finite number, got {plain_repr(threshold)}")
    return float(threshold)


def _labels(what: str, x: Any) -> np.ndarray:
    """Class labels as int64: integers, booleans, or floats holding whole numbers (1.0);
    any other float (2.7) is an error, never truncated to a class."""
    a = _np(x)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            bad = a[~np.isfinite(a) | (a != np.round(a))].ravel()[0]
            raise ValueError(f"{what}: class labels must be whole numbers, got {bad}")
        if a.size and np.max(np.abs(a)) >= 2.0**63:      # no int64 holds it: the cast would wrap
            bad = a[np.abs(a) >= 2.0**63].ravel()[0]
            raise ValueError(f"{what}: class label {bad:g} is beyond any class (int64)")
    elif a.dtype.kind not in "biu":
        raise TypeError(f"{what}: class labels must be integers, got dtype {a.dtype}")
    elif a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size and a.max() >= 2**63:
        # the cast would wrap it to a negative number, and the message would show that
        raise ValueError(f"{what}: class label {a.max()} is beyond any class (int64)")
    return a.astype(np.int64)


def _column(a: np.ndarray) -> np.ndarray:
    """An (N, 1) column as (N,): one label per example written as a column (after
    ``y.reshape(-1, 1)``, or read from a table), which scikit-learn and Keras also accept;
    any other array as it is."""
    return a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a


def _class_indices(what: str, x: Any, name: str) -> np.ndarray:
    """One class label per example, (N,) or an (N, 1) column, as int64 (N,); a ValueError
    for any other shape (one-hot rows among them)."""
    a = _labels(what, _column(_np(x)))
    if a.ndim != 1:
        raise ValueError(f"{what}: {name} must be class indices of shape (N,) or (N, 1), got "
                         f"shape {a.shape}; for one-hot rows pass {name}.argmax(axis=1)")
    return a


def predictions(scores: Any) -> np.ndarray:
    """Class predictions: the argmax over the last axis of logits/probabilities, or the
    labels themselves when given integer predictions, (N,) or an (N, 1) column. NaN/Inf
    scores are an error, and so is one float score per example ((N,) or (N, 1), a binary
    classifier's): its argmax would be class 0 for every example."""
    return _predictions("predictions", scores)


def _predictions(what: str, scores: Any) -> np.ndarray:
    s = _np(scores)
    if s.dtype.kind in "biu" and s.ndim <= 2:
        s = _column(s)
        if s.ndim == 1:
            return s
    if s.ndim < 2 or s.shape[-1] == 1:
        raise ValueError(f"{what}: scores of shape {s.shape} hold one score per example (a "
                         f"binary classifier's), whose argmax is class 0 for every example; "
                         f"threshold them instead (scores >= 0 for logits, >= 0.5 for "
                         f"probabilities)")
    return _finite_scores(what, s).argmax(axis=-1)


def accuracy(scores: Any, labels: Any, threshold: float | None = None,
             logits: bool | None = None) -> float:
    """Fraction of examples whose predicted class equals the label (labels may be one-hot).

    Multi-class scores (N, C): the argmax (logits and probabilities agree), against class
    labels (N,), the same labels as an (N, 1) column (as scikit-learn and Keras take them),
    or one-hot/probability rows (N, C). One output per example ((N,) or (N, 1)) is a binary
    classifier: predicted 1 when the score is at least ``threshold``, which is 0 for
    ``logits=True`` and 0.5 for ``logits=False``, against labels that must be 0 or 1 in
    any dtype (a label 2 is an error). Without either, scores outside [0, 1] must be
    logits (threshold 0); scores all inside [0, 1] could be either, and that is an error
    asking which, never a guess. ``logits=False`` with scores outside [0, 1] is an error
    too (as in ``precision_recall``): they are no probabilities.
    """
    s, y = _finite_scores("accuracy", _np(scores)), _np(labels)
    if y.dtype.kind == "f":
        _finite_scores("accuracy", y, "labels")
    if threshold is not None:
        threshold = _threshold("accuracy", threshold)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    binary = s.dtype.kind == "f" and s.ndim == 1
    if not binary and (threshold is not None or logits is not None):
        raise ValueError(f"accuracy: threshold= and logits= are for one score per example (a "
                         f"binary classifier); scores of shape {s.shape} are compared by their "
                         f"argmax, which neither changes")
    if binary:
        if threshold is None:
            if logits is None:
                if s.size and s.min() >= 0 and s.max() <= 1:
                    raise ValueError("accuracy: one score per example, all in [0, 1]: they could "
                                     "be probabilities or logits; pass threshold= or logits=")
                logits = True
            elif not logits and s.size and (s.min() < 0 or s.max() > 1):
                # thresholded at 0.5, logits would give a wrong accuracy, silently
                raise ValueError(f"accuracy: logits=False, but the scores lie in "
                                 f"[{s.min():.4g}, {s.max():.4g}], outside [0, 1]: logits? "
                                 f"Pass logits=True, or sigmoid(logits)")
            threshold = 0.0 if logits else 0.5
        pred = (s >= threshold).astype(np.int64)
        y = _binary_targets(_column(y))
    else:
        pred = _predictions("accuracy", s)
        y = _column(y) if pred.ndim == 1 else y      # (N, 1) labels of (N, 1, C) scores stay
        if y.ndim == pred.ndim + 1:
            _same_classes(s, y)
            y = y.argmax(axis=-1)
        else:
            y = _labels("accuracy", y)
            _known_classes(y, s.shape[-1] if s.ndim >= 2 else None)
    if pred.shape != y.shape:
        raise ValueError(f"accuracy: predictions of shape {pred.shape} (from scores of shape "
                         f"{s.shape}) for labels of shape {y.shape}")
    return float(np.mean(pred == y)) if y.size else float("nan")


def _known_classes(y: np.ndarray, classes: int | None) -> None:
    """Class labels in [0, C) for scores of C classes (in [0, ...) for predicted classes,
    whose count is not known): a label 7 for 3 classes, or a -1 ("ignore"), is an error, as
    in the loss, never counted as a wrong prediction."""
    bad = (y < 0) | (y >= classes) if classes is not None else y < 0
    if np.any(bad):
        where = (f"outside [0, {classes}) for scores of {classes} classes"
                 if classes is not None else "negative")
        raise ValueError(f"accuracy: class label {y[bad].ravel()[0]} is {where}")


def _binary_targets(y: np.ndarray) -> np.ndarray:
    """The labels of a binary classifier as int64: 0 or 1 (False/True, 0.0/1.0), whatever
    their dtype; any other value (a class 2) is an error, never compared with 0/1."""
    outside = ~np.isin(y, (0, 1))
    if np.any(outside):
        raise ValueError(f"accuracy: binary targets must be 0 or 1 (one score per example is "
                         f"a binary classifier), got {y[outside].ravel()[0]!s}")
    return y.astype(np.int64)


def _same_classes(s: np.ndarray, y: np.ndarray) -> None:
    """One-hot/probability rows ``y`` must have one column per class of the scores ``s``."""
    if s.ndim == y.ndim and s.shape[-1] != y.shape[-1]:
        raise ValueError(f"accuracy: one-hot/probability labels of shape {y.shape} for scores "
                         f"of shape {s.shape}: they need one column per class")


def confusion_matrix(labels: Any, pred: Any, num_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of examples of true class i predicted as class j.

    ``labels`` are class indices, (N,) or an (N, 1) column; ``pred`` the predicted classes
    in the same form, or scores (N, C), whose argmax is taken. ``num_classes``, a positive
    integer, sets the matrix's size; without it, the largest class seen plus one."""
    if num_classes is not None and (isinstance(num_classes, bool) or
                                    not isinstance(num_classes, (int, np.integer)) or num_classes <= 0):
        raise ValueError(f"confusion_matrix: num_classes must be a positive integer (or None), "
                         f"got {plain_repr(num_classes)}")
    y = _class_indices("confusion_matrix", labels, "labels")
    p = _np(pred)
    p = _predictions("confusion_matrix", p).astype(np.int64) if p.ndim == 2 and p.shape[1] > 1 \
        else _class_indices("confusion_matrix", p, "predictions")
    if y.shape != p.shape:
        raise ValueError(f"confusion_matrix: labels shape {y.shape} != predictions shape {p.shape}")
    n = int(num_classes) if num_classes is not None else int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    for name, a in (("label", y), ("prediction", p)):
        bad = (a < 0) | (a >= n)
        if np.any(bad):
            limit = "num_classes" if num_classes is not None else "the largest class seen plus one"
            raise ValueError(f"confusion_matrix: {name} {a[bad].ravel()[0]} is outside [0, {n}) "
                             f"(n = {limit})")
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (y, p), 1)
    return out


def precision_recall(probabilities: Any, targets: Any, threshold: float | None = None,
                     average: str | None = "micro") -> tuple[Any, Any]:
    """Precision and recall of binary or multi-label outputs thresholded at ``threshold``.

    ``probabilities`` and ``targets`` (0/1) have the same shape: (N,) for binary, (N, L)
    for multi-label; an (N, 1) column against (N,) is taken as (N,). average="micro" pools
    every decision, "macro" averages the per-label values, None returns one value per
    label. A ratio with a zero denominator is 0.
    Without ``threshold`` the outputs must be probabilities, thresholded at 0.5: a value
    outside [0, 1] (a logit) is an error, never read as a probability; for logits pass
    ``threshold=0`` (any threshold given is taken as it is).
    """
    p, t = _finite_scores("precision_recall", _np(probabilities), "probabilities"), \
        _labels("precision_recall", targets)
    if threshold is None:
        if p.size and (p.min() < 0 or p.max() > 1):
            raise ValueError(f"precision_recall: the probabilities lie in [{p.min():.4g}, "
                             f"{p.max():.4g}], outside [0, 1]: logits? Pass threshold=0 for "
                             f"logits, or sigmoid(logits)")
        threshold = 0.5
    threshold = _threshold("precision_recall", threshold)
    if t.size and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"precision_recall: targets must be 0 or 1, got "
                         f"{t[(t < 0) | (t > 1)].ravel()[0]}")
    if p.ndim == 1 or t.ndim == 1:
        p, t = _column(p), _column(t)
    if p.shape != t.shape:
        raise ValueError(f"precision_recall: probabilities shape {p.shape} != targets shape {t.shape}")
    if average not in ("micro", "macro", None):
        raise ValueError(f"precision_recall: average must be 'micro', 'macro' or None, "
                         f"got {plain_repr(average)}")
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

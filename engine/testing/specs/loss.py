"""Specs of the losses (engine/ops/loss.py)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .. import strategies as s
from . import Sample, spec


def _mse_ref(pred: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    sq = (pred - target) ** 2
    return {"mean": sq.mean, "sum": sq.sum, "none": lambda: sq}[reduction]()


@st.composite
def _mse_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes())
    return ((draw(s.reals(shape)), draw(s.reals(shape))),
            {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))})


@st.composite
def _sce_sample(draw: st.DrawFn) -> Sample:
    classes = draw(st.integers(2, 5))
    # A third of the samples are square (as many rows as classes): a VJP that transposes
    # the (N, C) gradient is then the right shape and must be caught by its values.
    square = draw(st.integers(0, 2)) == 0
    batch = (classes,) if square else draw(s.shapes(min_dims=0, max_dims=2))
    z = draw(s.wide(batch + (classes,), 4.0, 1e3))   # stable for |z| ~ 1e3 and beyond
    y = draw(st.one_of(s.labels(batch, classes), s.probabilities(batch + (classes,)),
                       s.weights(batch + (classes,))))  # rows not summing to 1, zero rows
    return (z, y), {"reduction": draw(st.sampled_from(["mean", "sum", "none"])),
                    "label_smoothing": draw(st.sampled_from([0.0, 0.1]))}


def _sce_ref(z: np.ndarray, y: np.ndarray, reduction: str, label_smoothing: float) -> np.ndarray:
    C = z.shape[-1]
    t = np.eye(C)[y] if y.dtype.kind in "iu" else y
    t = (1 - label_smoothing) * t + label_smoothing / C
    log_p = z - np.expand_dims(np.logaddexp.reduce(z, axis=-1), -1)
    per_row = -(t * log_p).sum(axis=-1)
    return {"mean": per_row.mean, "sum": per_row.sum, "none": lambda: per_row}[reduction]()


@st.composite
def _bce_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1))
    z = draw(s.wide(shape, 5.0, 1e4))   # stable for |z| up to 1e4 (README)
    y = draw(st.one_of(s.values(shape, 0.0, 1.0), s.hnp.arrays(np.int64, shape, elements=st.integers(0, 1))))
    return (z, y), {"reduction": draw(st.sampled_from(["mean", "sum", "none", "batchmean"]))}


def _bce_ref(z: np.ndarray, y: np.ndarray, reduction: str) -> np.ndarray:
    # -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z): stable forms.
    per = y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)
    if reduction == "batchmean":
        return per.sum() / z.shape[0]
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[reduction]()


spec("mse", _mse_sample(), _mse_ref, complex_step=True)
spec("softmax_cross_entropy", _sce_sample(), _sce_ref,
     kinks="none (targets are not differentiable)")
spec("sigmoid_binary_cross_entropy", _bce_sample(), _bce_ref,
     kinks="none (targets are not differentiable)")

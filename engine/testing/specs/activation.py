"""Specs of the activations, softmax and dropout (engine/ops/activation.py)."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from .. import strategies as s
from . import Sample, along_axis, spec, unary


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """Stable for any magnitude: logaddexp folded along the axis (kept, size 1)."""
    return np.expand_dims(np.logaddexp.reduce(x, axis=axis), axis)


def _softmax_ref(x: np.ndarray, axis: int) -> np.ndarray:
    return np.exp(x - _logsumexp(x, axis))


def _gelu_ref(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@st.composite
def _dropout_sample(draw: st.DrawFn) -> Sample:
    """An int seed as rng: the same mask in every call, as finite differences need."""
    shape = draw(s.shapes())
    params = {"p": draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])), "training": draw(st.booleans()),
              "rng": draw(st.integers(0, 2**31 - 1))}
    return (draw(s.reals(shape)),), params


def _dropout_ref(x: np.ndarray, p: float, training: bool, rng: int) -> np.ndarray:
    if not training or p == 0:
        return x
    keep = np.random.default_rng(rng).random(x.shape) >= p
    return x * (keep / (1 - p))


# Stability is part of these ops' contract: samples mix |x| up to 1e4 in (s.wide), and
# the references are stable there (logaddexp instead of log(1 + exp)).
spec("sigmoid", unary(lambda sh: s.wide(sh, 5.0)), lambda x: np.exp(-np.logaddexp(0, -x)))
spec("tanh", unary(s.wide), np.tanh, complex_step=True)
_KINK = (np.array([-1.0, 0.0, 1.0]),)
spec("relu", unary(s.nonzero), lambda x: np.maximum(x, 0), kinks="at 0 (relu'(0) = 0): |x| >= 0.3",
     kink_examples=((_KINK, {}, (np.array([0.0, 0.0, 1.0]),)),))
spec("leaky_relu", unary(s.nonzero, negative_slope=st.sampled_from([0.01, 0.2])),
     lambda x, negative_slope: np.where(x > 0, x, negative_slope * x),
     kinks="at 0 (derivative there = negative_slope): |x| >= 0.3",
     kink_examples=((_KINK, {"negative_slope": 0.2}, (np.array([0.2, 0.2, 1.0]),)),))
spec("elu", unary(s.nonzero, alpha=st.sampled_from([1.0, 0.5])),
     lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(x) - 1)),
     kinks="at 0 when alpha != 1 (derivative there = alpha): |x| >= 0.3",
     kink_examples=((_KINK, {"alpha": 0.5}, (np.array([0.5 * np.exp(-1.0), 0.5, 1.0]),)),))
spec("softplus", unary(lambda sh: s.wide(sh, 5.0)), lambda x: np.logaddexp(0, x))
spec("gelu", unary(s.reals, approximate=st.sampled_from(["tanh", "none"])), _gelu_ref)
spec("softmax", along_axis(s.wide), _softmax_ref)
spec("log_softmax", along_axis(s.wide), lambda x, axis: x - _logsumexp(x, axis))
spec("dropout", _dropout_sample(), _dropout_ref,
     kinks="none (x * a fixed mask once the mask is drawn)", complex_step=True)

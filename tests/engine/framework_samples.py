"""Samples and the reference shared by the PyTorch and the JAX rule tests (test_check_torch.py,
test_check_jax.py): both check a hand-written linear layer and a cube."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from handgrad.engine.testing import strategies


@st.composite
def linear_samples(draw: st.DrawFn) -> tuple[tuple[np.ndarray, ...], dict]:
    """x (n, k), a square w (k, k) (a transposed gradient has the right shape) and b (k,)."""
    n, k = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    return (draw(strategies.reals((n, k))), draw(strategies.reals((k, k))),
            draw(strategies.reals((k,)))), {}


def linear_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x @ w + b


def one_vector() -> st.SearchStrategy:
    """One fixed generic sample: for a rule that fails on every sample, so that hypothesis
    has nothing to shrink and the test stays fast."""
    return st.just(((np.array([0.5, -1.25, 2.0]),), {}))

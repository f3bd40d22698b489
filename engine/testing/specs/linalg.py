"""Specs of matmul and linear (engine/ops/linalg.py)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .. import strategies as s
from . import Sample, spec


@st.composite
def _matmul_sample(draw: st.DrawFn) -> Sample:
    sa, sb = draw(s.matmul_shapes())
    return (draw(s.reals(sa)), draw(s.reals(sb))), {}


@st.composite
def _linear_sample(draw: st.DrawFn) -> Sample:
    batch = draw(s.shapes(min_dims=0, max_dims=2))
    # Half the batched draws give x square last axes (batch[-1] == in): the shape on which
    # a gradient differs from its transpose and a statistic from one over the wrong axis.
    square = len(batch) > 0 and batch[-1] > 1 and draw(st.booleans())
    n_in = batch[-1] if square else draw(st.integers(1, 4))
    n_out = draw(st.integers(1, 4))
    x = draw(s.reals(batch + (n_in,)))
    W = draw(s.reals((n_in, n_out)))
    args = (x, W, draw(s.reals((n_out,)))) if draw(st.booleans()) else (x, W)
    return args, {}


spec("matmul", _matmul_sample(), np.matmul, complex_step=True)
spec("linear", _linear_sample(), lambda x, W, b=None: x @ W + (0 if b is None else b),
     complex_step=True)

"""Specs of the reductions (engine/ops/reduce.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from .. import strategies as s
from . import Sample, reduction, spec


@st.composite
def _var_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=3, min_side=2))
    axis = draw(s.axis_for(len(shape)))
    # axis=() reduces over one element: ddof=1 would leave none (an error, as in numpy)
    return (draw(s.reals(shape)),), {"axis": axis, "keepdims": draw(st.booleans()),
                                     "ddof": draw(st.sampled_from([0] if axis == () else [0, 1]))}


spec("sum", reduction(s.reals), lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
     complex_step=True)
spec("mean", reduction(s.reals), lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
     complex_step=True)
_TIES = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
spec("max", reduction(s.distinct), lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims),
     kinks="ties (gradient split evenly): entries pairwise >= 0.3 apart",
     kink_examples=(((_TIES,), {"axis": 1}, (np.array([[0, .5, .5], [1 / 3, 1 / 3, 1 / 3]]),)),
                    ((_TIES,), {"axis": -1, "keepdims": True},
                     (np.array([[0, .5, .5], [1 / 3, 1 / 3, 1 / 3]]),)),
                    ((_TIES,), {"axis": None}, (np.array([[0, .5, .5], [0, 0, 0]]),)),
                    ((_TIES,), {"axis": (0, -1), "keepdims": True},
                     (np.array([[0, .5, .5], [0, 0, 0]]),))))
spec("min", reduction(s.distinct), lambda x, axis, keepdims: np.min(x, axis=axis, keepdims=keepdims),
     kinks="ties (gradient split evenly): entries pairwise >= 0.3 apart",
     kink_examples=(((_TIES,), {"axis": 1}, (np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]]),)),
                    ((_TIES,), {"axis": (-1,), "keepdims": True},
                     (np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]]),)),
                    ((_TIES,), {"axis": 0, "keepdims": True},
                     (np.array([[1, 0, 0], [0, 1, 1]]),))))
spec("var", _var_sample(),
     lambda x, axis, keepdims, ddof: np.var(x, axis=axis, keepdims=keepdims, ddof=ddof),
     complex_step=True)


def _logsumexp_ref(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    """Stable for any magnitude: the reduced axes moved last, flattened, and folded with
    logaddexp (another algorithm than the op's max-shift)."""
    axes = tuple(range(x.ndim)) if axis is None else tuple(np.atleast_1d(axis) % max(x.ndim, 1))
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, kept + list(axes)).reshape([x.shape[a] for a in kept] + [-1])
    out = np.logaddexp.reduce(moved, axis=-1)
    return out.reshape([1 if a in axes else n for a, n in enumerate(x.shape)]) if keepdims else out


spec("logsumexp", reduction(s.wide), _logsumexp_ref)

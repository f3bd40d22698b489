"""Specs of the shape ops (engine/ops/shape.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from .. import strategies as s
from . import Sample, spec


@st.composite
def _reshape_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(max_dims=3))
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1, size), (size, 1)]))
    return (draw(s.reals(shape)),), {"shape": target}


@st.composite
def _flatten_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=4))
    n = len(shape)
    # start < end wherever the shape allows (start == end flattens nothing: 70-80% of the
    # samples were that no-op)
    start = draw(st.integers(0, max(n - 2, 0)))
    end = draw(st.integers(min(start + 1, n - 1), n - 1))
    return (draw(s.reals(shape)),), {"start_dim": start, "end_dim": end - n}


@st.composite
def _transpose_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(max_dims=4))
    axes = draw(st.one_of(st.none(), s.permutation(len(shape))))
    return (draw(s.reals(shape)),), {"axes": axes}


@st.composite
def _with_repeats(draw: st.DrawFn, n: int) -> list[int]:
    """1 to 5 indices into n elements, half the time with the first one repeated."""
    picks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4))
    return picks + picks[:1] if draw(st.booleans()) else picks


@st.composite
def _getitem_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=3))
    x = draw(s.reals(shape))
    kinds = ["slice", "int", "array", "mask", "mixed", "arrays in a tuple"]
    kind = draw(st.sampled_from(kinds + (["array on axis 1"] if len(shape) > 1 else [])))
    n = shape[0]
    if kind == "slice":
        start = draw(st.integers(0, n - 1))
        index: Any = (slice(start, None, draw(st.sampled_from([1, 2, -1]))), Ellipsis)
    elif kind == "int":
        index = draw(st.integers(-n, n - 1))
    elif kind == "array":  # repeated indices: the backward must accumulate
        index = np.asarray(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6)))
    elif kind == "mask":
        index = draw(s.hnp.arrays(np.bool_, shape))
    elif kind == "mixed":
        index = (Ellipsis, None, draw(st.integers(0, shape[-1] - 1)))
    elif kind == "array on axis 1":  # x[:, [0, 0, 1]]: repeats inside a tuple
        index = (slice(None), np.asarray(draw(_with_repeats(shape[1]))))
    else:  # x[rows, cols] (or x[(rows,)]): index arrays side by side, repeated pairs
        axes = draw(st.integers(1, len(shape)))
        picks = draw(_with_repeats(int(np.prod(shape[:axes]))))
        index = tuple(np.asarray(a) for a in np.unravel_index(picks, shape[:axes]))
    return (x,), {"index": index}


@st.composite
def _concat_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        sh = list(shape)
        sh[axis] = draw(st.integers(1, 3))
        pieces.append(draw(s.reals(tuple(sh))))
    return tuple(pieces), {"axis": axis}


@st.composite
def _stack_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(max_dims=3))
    k = draw(st.integers(1, 3))
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return tuple(draw(s.reals(shape)) for _ in range(k)), {"axis": axis}


@st.composite
def _broadcast_to_sample(draw: st.DrawFn) -> Sample:
    if draw(st.booleans()):
        # A square input broadcast along a new leading axis: its gradient is a square,
        # non-symmetric matrix, so a rule that transposes it is seen.
        n = draw(st.integers(2, 4))
        return (draw(s.reals((n, n))),), {"shape": (draw(st.integers(1, 3)), n, n)}
    target = draw(s.shapes(max_dims=3))
    keep = draw(st.integers(0, len(target)))
    shape = tuple(1 if draw(st.booleans()) else n for n in target[len(target) - keep:])
    return (draw(s.reals(shape)),), {"shape": target}


spec("reshape", _reshape_sample(), lambda x, shape: np.reshape(x, shape), complex_step=True)
spec("flatten", _flatten_sample(),
     lambda x, start_dim, end_dim: x.reshape(x.shape[:start_dim] + (-1,) + x.shape[x.ndim + end_dim + 1:]),
     complex_step=True)
spec("transpose", _transpose_sample(), lambda x, axes: np.transpose(x, axes), complex_step=True)
spec("getitem", _getitem_sample(), lambda x, index: np.asarray(x[index]), complex_step=True)
spec("concat", _concat_sample(), lambda *xs, axis: np.concatenate(xs, axis=axis), complex_step=True)
spec("stack", _stack_sample(), lambda *xs, axis: np.stack(xs, axis=axis), complex_step=True)
spec("broadcast_to", _broadcast_to_sample(), lambda x, shape: np.broadcast_to(x, shape),
     complex_step=True)

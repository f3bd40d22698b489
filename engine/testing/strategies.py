"""Hypothesis strategies for op inputs: shapes, and values kept inside an op's domain and
a stated distance away from its kinks and poles.

Values are built valid (an interval is chosen, then a number inside it), never filtered:
a finite-difference step of 1e-6 must not cross a kink, so "valid" means at least
``margin`` (default 0.1, five orders of magnitude above the step) from every kink.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

Shape = tuple[int, ...]
MARGIN = 0.1


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy[Shape]:
    """Array shapes, 0-d to ``max_dims``-d, each side in [min_side, max_side]; part of
    them end in a square (n, n) with n >= 2, so that a gradient with its last two axes
    swapped differs from the right one."""
    any_shape = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                 max_side=max_side)
    if max_dims < 2 or max_side < 2:
        return any_shape
    square = st.tuples(hnp.array_shapes(min_dims=max(min_dims - 2, 0), max_dims=max_dims - 2,
                                        min_side=min_side, max_side=max_side),
                       st.integers(max(min_side, 2), max_side))
    return st.one_of(any_shape, square.map(lambda p: p[0] + (p[1], p[1])))


@st.composite
def _square_broadcast(draw: st.DrawFn, n: int, max_side: int) -> tuple[Shape, ...]:
    """``n`` shapes broadcasting to (k, k), k >= 2, at least one of them (k, k) itself."""
    k = draw(st.integers(2, max_side))
    out = [draw(st.sampled_from([(k, k), (k,), (1, k), (k, 1), ()])) for _ in range(n)]
    out[draw(st.integers(0, n - 1))] = (k, k)
    return tuple(out)


def broadcastable_shapes(n: int = 2, max_dims: int = 3, max_side: int = 4) -> st.SearchStrategy[tuple[Shape, ...]]:
    """``n`` shapes that broadcast together (numpy rules), including size-1 and missing
    axes; part of them around a square (k, k) (see ``shapes``)."""
    general = hnp.mutually_broadcastable_shapes(num_shapes=n, max_dims=max_dims,
                                                max_side=max_side).map(lambda bs: bs.input_shapes)
    return st.one_of(general, _square_broadcast(n, max_side))


def matmul_shapes(max_dims: int = 4, max_side: int = 4) -> st.SearchStrategy[tuple[Shape, Shape]]:
    """Shape pairs valid for matmul: 1-D vectors, 2-D matrices and broadcast batches."""
    return hnp.mutually_broadcastable_shapes(
        signature="(m?,n),(n,p?)->(m?,p?)", max_dims=max_dims, max_side=max_side).map(
        lambda bs: bs.input_shapes)


def intervals_avoiding(kinks: Sequence[float], lo: float, hi: float,
                       margin: float = MARGIN) -> list[tuple[float, float]]:
    """The parts of [lo, hi] at least ``margin`` away from every kink."""
    edges = sorted(kinks)
    out, start = [], lo
    for k in edges:
        if k - margin > start:
            out.append((start, k - margin))
        start = max(start, k + margin)
    if hi > start:
        out.append((start, hi))
    return out


def values(shape: Shape, lo: float = -3.0, hi: float = 3.0, avoid: Sequence[float] = (),
           margin: float = MARGIN) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` with entries in [lo, hi], ``margin`` away from ``avoid``."""
    pieces = intervals_avoiding(avoid, lo, hi, margin)
    element = st.one_of(*[st.floats(a, b, allow_nan=False, allow_infinity=False, allow_subnormal=False)
                          for a, b in pieces])
    return hnp.arrays(np.float64, shape, elements=element)


def reals(shape: Shape, bound: float = 3.0) -> st.SearchStrategy[np.ndarray]:
    """Any real in [-bound, bound]: for ops smooth everywhere."""
    return values(shape, -bound, bound)


def wide(shape: Shape, bound: float = 3.0, extreme: float = 1e4) -> st.SearchStrategy[np.ndarray]:
    """Reals in [-bound, bound] mixed with huge ones (100 <= |x| <= ``extreme``): for the
    ops that promise stability there (sigmoid, softplus, softmax, logsumexp, the fused
    losses). Their references must be stable too (np.logaddexp, not exp then log)."""
    element = st.one_of(st.floats(-bound, bound, allow_subnormal=False),
                        st.floats(100.0, extreme), st.floats(-extreme, -100.0))
    return hnp.arrays(np.float64, shape, elements=element)


def positive(shape: Shape, lo: float = 0.2, hi: float = 3.0) -> st.SearchStrategy[np.ndarray]:
    """In [lo, hi], lo > 0: for log, sqrt, a base raised to a real power."""
    return values(shape, lo, hi)


def nonzero(shape: Shape, bound: float = 3.0, margin: float = 0.3) -> st.SearchStrategy[np.ndarray]:
    """Away from 0 by ``margin``: for division and negative powers (poles) and abs (a kink)."""
    return values(shape, -bound, bound, avoid=(0.0,), margin=margin)


@st.composite
def distinct(draw: st.DrawFn, shape: Shape, spacing: float = 0.5) -> np.ndarray:
    """Entries pairwise at least 0.6 * ``spacing`` apart: no ties for max/min."""
    n = int(np.prod(shape))
    order = draw(st.permutations(range(n)))
    jitter = draw(hnp.arrays(np.float64, n, elements=st.floats(0, 0.2 * spacing)))
    return ((np.asarray(order, dtype=np.float64) - n / 2) * spacing + jitter).reshape(shape)


def off_grid(shape: Shape, offset: float) -> st.SearchStrategy[np.ndarray]:
    """Integers in [-3, 3] plus ``offset`` plus a jitter in [-0.2, 0.2]. Arrays drawn with
    offsets 0 and 0.5 never come closer than 0.1: maximum/minimum stay away from ties
    under any broadcasting."""
    ints = hnp.arrays(np.float64, shape, elements=st.integers(-3, 3).map(float))
    jitter = hnp.arrays(np.float64, shape, elements=st.floats(-0.2, 0.2))
    return st.tuples(ints, jitter).map(lambda p: p[0] + offset + p[1])


def axis_for(ndim: int, allow_none: bool = True, allow_tuple: bool = True) -> st.SearchStrategy:
    """A valid numpy ``axis`` for an array of ``ndim`` dims: None, an int (maybe negative)
    or a tuple of distinct axes, each written as a or a - ndim (negative entries)."""
    options: list[st.SearchStrategy] = []
    if allow_none:
        options.append(st.none())
    if ndim:
        options.append(st.integers(-ndim, ndim - 1))
        if allow_tuple:
            options.append(st.lists(st.tuples(st.integers(0, ndim - 1), st.booleans()),
                                    min_size=1, max_size=ndim, unique_by=lambda p: p[0]).map(
                lambda pairs: tuple(a - ndim if negative else a for a, negative in pairs)))
    return st.one_of(*options) if options else st.none()


def permutation(ndim: int) -> st.SearchStrategy[tuple[int, ...]]:
    """A permutation of ``ndim`` axes, some entries written negatively (a - ndim)."""
    return st.tuples(st.permutations(range(ndim)), st.lists(st.booleans(), min_size=ndim,
                                                             max_size=ndim)).map(
        lambda p: tuple(a - ndim if negative else a for a, negative in zip(*p)))


def labels(shape: Shape, classes: int) -> st.SearchStrategy[np.ndarray]:
    """Integer class labels in [0, classes)."""
    return hnp.arrays(np.int64, shape, elements=st.integers(0, classes - 1))


@st.composite
def probabilities(draw: st.DrawFn, shape: Shape) -> np.ndarray:
    """Rows (last axis) of non-negative numbers summing to 1."""
    w = draw(values(shape, 0.05, 1.0))
    return w / w.sum(axis=-1, keepdims=True)


@st.composite
def weights(draw: st.DrawFn, shape: Shape) -> np.ndarray:
    """Rows (last axis) of non-negative numbers that need not sum to 1, some rows all
    zero: soft targets as a user may pass them (not normalized)."""
    w = draw(values(shape, 0.0, 2.0))
    if len(shape) > 1:
        zero = draw(hnp.arrays(np.bool_, shape[:-1]))
        w[zero] = 0.0
    elif draw(st.booleans()):
        w[...] = 0.0
    return w

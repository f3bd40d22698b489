"""Hypothesis strategies for op inputs: shapes, and values kept inside an op's domain and
a stated distance away from its kinks and poles.

Values are built valid (an interval is chosen, then a number inside it), never filtered:
a finite-difference step of 1e-6 must not cross a kink, so "valid" means at least
``margin`` (default 0.1, five orders of magnitude above the step) from every kink.

Two kinds of arrays, both built by construction: *generic* ones (every entry drawn on its
own, all distinct, at least a spacing apart: no cancellation hides a term) make at least
half of the draws (``GENERIC_SHARE``); *structured* ones (hypothesis's own arrays: one value
repeated, a few values, zeros) the rest. A rule whose bug vanishes when entries coincide
(a batch norm's term in x - mean, a cross term) passes on structured arrays only.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

Shape = tuple[int, ...]
MARGIN = 0.1


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy[Shape]:
    """Array shapes, 0-d to ``max_dims``-d, each side in [min_side, max_side]; part of
    them end in a square (n, n) with n >= 2, so that a gradient with its last two axes
    swapped differs from the right one, and part of them have every side >= 2 and one
    axis at least (hypothesis favours sides of 1: a sum over a size-1 axis, a batch of one,
    a product contracting over 1 hide the bugs that only show with more)."""
    any_shape = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                 max_side=max_side)
    if max_dims < 2 or max_side < 2:
        return any_shape
    square = st.tuples(hnp.array_shapes(min_dims=max(min_dims - 2, 0), max_dims=max_dims - 2,
                                        min_side=min_side, max_side=max_side),
                       st.integers(max(min_side, 2), max_side))
    full = hnp.array_shapes(min_dims=max(min_dims, 1), max_dims=max_dims,
                            min_side=max(min_side, 2), max_side=max_side)
    return st.one_of(any_shape, square.map(lambda p: p[0] + (p[1], p[1])), full)


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
        signature="(m?,n),(n,p?)->(m?,p?)", max_dims=max_dims, max_side=max_side).map(_pair)


def _pair(bs: hnp.BroadcastableShapes) -> tuple[Shape, Shape]:
    """The two input shapes of a two-operand signature's draw."""
    a, b = bs.input_shapes
    return a, b


def intervals_avoiding(kinks: Sequence[float], lo: float, hi: float,
                       margin: float = MARGIN) -> list[tuple[float, float]]:
    """The parts of [lo, hi] away from every kink: [lo, hi] minus the union of
    (k - m, k + m), as closed pieces inside [lo, hi] (a kink beyond either end removes only
    what its margin reaches inside). m is ``margin``, or a quarter of the distance to the
    nearest other kink where that is less: two kinks 0.2 apart (a Huber loss with beta
    0.1) would otherwise remove the whole piece between them, and a rule wrong only there
    would never be sampled."""
    points = sorted(set(kinks))
    out, start = [], lo
    for i, k in enumerate(points):
        gaps = [k - points[i - 1]] if i else []
        gaps += [points[i + 1] - k] if i + 1 < len(points) else []
        m = min([margin, *(g / 4 for g in gaps)])
        end = min(k - m, hi)               # the piece before this kink stops at hi
        if end > start:
            out.append((start, end))
        start = max(start, k + m)
    if hi > start:
        out.append((start, hi))
    return out


SPAN = 3.0      # the default range is [-SPAN, SPAN], reaching SPAN beyond every kink


def default_range(avoid: Sequence[float], lo: float | None, hi: float | None) -> tuple[float, float]:
    """[lo, hi] as given, each end left out (None) being -SPAN or SPAN, or SPAN beyond the
    outermost kink of ``avoid`` if that is further: a relu6 (kinks 0 and 6) is drawn on
    [-3, 9], so that a rule wrong above the cap is sampled (on [-3, 3] it never was)."""
    if lo is None:
        lo = min([-SPAN, *(k - SPAN for k in avoid)])
    if hi is None:
        hi = max([SPAN, *(k + SPAN for k in avoid)])
    return lo, hi


GENERIC_SHARE = 3 / 4     # of the arrays ``values`` and ``wide`` draw, about (72% of 200 4x3 draws)
MAX_SPACING = 0.05        # generic entries are min(this, room / (2 n)) apart at least


_CHOICE = st.integers(0, 9999)


@st.composite
def _draw_mixed(draw: st.DrawFn, generic: Callable[[], st.SearchStrategy[np.ndarray]],
                structured: Callable[[], st.SearchStrategy[np.ndarray]]) -> np.ndarray:
    # 1 in 20 structured, nominally; hypothesis also favours an integer's bounds, small
    # values and integer constants it finds in the code loaded (round numbers: 10, 100,
    # 1000, ...; more of them the more modules a test run has imported). 0 (where
    # shrinking ends, so a shrunk counterexample is as simple as hypothesis can make it)
    # picks the structured arrays, and so do 107, 127, ..., 9987: numbers that no bias
    # favours. Small values, round constants and 9999 pick the generic ones. About 1 in 7
    # draws end up structured: a sample of two arrays is still generic in most draws.
    return draw(structured() if _is_structured(draw(_CHOICE)) else generic())


def _is_structured(choice: int) -> bool:
    """Whether a drawn choice in 0..9999 picks a structured array (see _draw_mixed)."""
    return choice == 0 or (choice >= 100 and choice % 20 == 7)


def _mixed(generic: Callable[[], st.SearchStrategy[np.ndarray]],
           structured: Callable[[], st.SearchStrategy[np.ndarray]]) -> st.SearchStrategy[np.ndarray]:
    """``generic()`` in about GENERIC_SHARE of the draws, ``structured()`` in the rest (a
    choice inside one composite: a ``flatmap`` or ``one_of`` lets hypothesis favour the
    branch with fewer choices, the structured one). Only the chosen strategy is built."""
    return _draw_mixed(generic, structured)


def _place(u: np.ndarray, pieces: list[tuple[float, float]]) -> np.ndarray:
    """Map each of ``u`` (in [0, 1]) into the pieces, all at least a spacing apart: the
    entries sorted by u get positions u * (room - (n-1) d) + rank * d along the pieces laid
    end to end (the gaps between pieces only add distance), in u's own order. A piece
    shorter than a quarter of the average is laid out as if it were that long, its
    positions squeezed back into it: the 0.1-wide middle of a Huber loss with beta 0.1 is
    drawn in about 1 entry in 12, not 1 in 60 (its entries are closer together)."""
    lengths = np.array([b - a for a, b in pieces])
    shares = np.maximum(lengths, lengths.sum() / (4 * len(pieces)))
    room = float(shares.sum())
    n = u.size
    spacing = min(MAX_SPACING, room / (2 * n))
    rank = np.empty(n)
    rank[np.argsort(u, kind="stable")] = np.arange(n)
    t = np.minimum(u * (room - (n - 1) * spacing) + rank * spacing, room)
    starts = np.concatenate([[0.0], np.cumsum(shares)[:-1]])
    piece = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(pieces) - 1)
    along = np.minimum(t - starts[piece], shares[piece]) * (lengths / shares)[piece]
    return np.array([p[0] for p in pieces])[piece] + along


def generic(shape: Shape, lo: float | None = None, hi: float | None = None,
            avoid: Sequence[float] = (), margin: float = MARGIN) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` in [lo, hi] (``default_range``: [-3, 3] reaching 3
    beyond every kink), ``margin`` away from ``avoid``, every entry drawn on its own
    (uniform along the allowed pieces, a narrow piece drawn as if it were wider: ``_place``)
    and all pairwise at least min(0.05, room / (2 n)) apart (times a narrow piece's own
    width over the width it is drawn as, inside it)."""
    return _generic(tuple(shape), *default_range(avoid, lo, hi), tuple(avoid), margin)


@lru_cache(maxsize=1024)
def _generic(shape: Shape, lo: float, hi: float, avoid: tuple[float, ...],
             margin: float) -> st.SearchStrategy[np.ndarray]:
    pieces = intervals_avoiding(avoid, lo, hi, margin)
    n = int(np.prod(shape))
    if n == 0:                          # a zero-length side: the one empty array
        return st.just(np.zeros(shape))
    # Each entry from its own 4 random bytes (one hypothesis choice for the whole array:
    # 64 float choices cost more than the properties that use them); ties among u (all
    # zero bytes, as hypothesis shrinks) are spread apart by _place.
    u = st.binary(min_size=4 * n, max_size=4 * n).map(
        lambda raw: np.frombuffer(raw, dtype="<u4") / 2.0 ** 32)
    return u.map(lambda x: _place(x, pieces).reshape(shape))


def structured(shape: Shape, lo: float | None = None, hi: float | None = None,
               avoid: Sequence[float] = (), margin: float = MARGIN) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` in [lo, hi] (``default_range``), ``margin`` away from
    ``avoid``, as hypothesis draws them: often one value repeated, a few values, zeros,
    bounds."""
    return _structured(tuple(shape), *default_range(avoid, lo, hi), tuple(avoid), margin)


@lru_cache(maxsize=1024)
def _structured(shape: Shape, lo: float, hi: float, avoid: tuple[float, ...],
                margin: float) -> st.SearchStrategy[np.ndarray]:
    pieces = intervals_avoiding(avoid, lo, hi, margin)
    element = st.one_of(*[st.floats(a, b, allow_nan=False, allow_infinity=False, allow_subnormal=False)
                          for a, b in pieces])
    return hnp.arrays(np.float64, shape, elements=element)


def values(shape: Shape, lo: float | None = None, hi: float | None = None,
           avoid: Sequence[float] = (), margin: float = MARGIN) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` with entries in [lo, hi] (by default [-3, 3], reaching 3
    beyond every kink of ``avoid``: ``default_range``), ``margin`` away from ``avoid``:
    ``generic`` ones in GENERIC_SHARE of the draws, ``structured`` ones in the rest."""
    lo, hi = default_range(avoid, lo, hi)
    return _mixed(lambda: generic(shape, lo, hi, avoid, margin),
                  lambda: structured(shape, lo, hi, avoid, margin))


def reals(shape: Shape, bound: float = 3.0) -> st.SearchStrategy[np.ndarray]:
    """Any real in [-bound, bound]: for ops smooth everywhere."""
    return values(shape, -bound, bound)


HUGE = 100.0     # wide(): huge entries have |x| >= HUGE; between bound and HUGE, saturating ones


def wide(shape: Shape, bound: float = 3.0, extreme: float = 1e4) -> st.SearchStrategy[np.ndarray]:
    """Reals in [-bound, bound] mixed with saturating ones (bound < |x| < 100, drawn
    log-uniformly: sigmoid'(8) is still 3e-4, where a rule that rounds a saturated
    derivative to 0 is wrong) and huge ones (100 <= |x| <= ``extreme``): for the ops that
    promise stability there (sigmoid, softplus, softmax, logsumexp, the fused losses).
    Their references must be stable too (np.logaddexp, not exp then log)."""
    # (the structured arrays keep to moderate and huge values, with their bounds, which
    # hypothesis favours: the saturating ones come from the generic arrays)
    element = st.one_of(st.floats(-bound, bound, allow_subnormal=False),
                        st.floats(HUGE, extreme), st.floats(-extreme, -HUGE))
    return _mixed(lambda: _generic_wide(tuple(shape), bound, extreme),
                  lambda: hnp.arrays(np.float64, shape, elements=element))


@lru_cache(maxsize=1024)
def _generic_wide(shape: Shape, bound: float, extreme: float) -> st.SearchStrategy[np.ndarray]:
    """Generic arrays of reals in [-bound, bound], about a quarter of the entries replaced
    by huge ones (HUGE <= |x| <= extreme) and a quarter by saturating ones (bound < |x| <
    HUGE, log-uniform), each with the small entry's sign, all distinct. An array of four or
    more entries always has a huge one (and moderate ones), so the stability promise is
    exercised whatever examples a hypothesis version happens to generate."""
    n = int(np.prod(shape))
    # (a bound of HUGE or more leaves no band between: nothing to draw there)
    band = generic((n,), np.log(bound), np.log(HUGE)) if bound < HUGE else st.just(np.zeros(n))
    return st.tuples(generic((n,), -bound, bound), generic((n,), HUGE, extreme),
                     band, st.binary(min_size=n, max_size=n)).map(
        lambda p: _widened(p[0], p[1], p[2], p[3], bound < HUGE).reshape(shape))


def _widened(small: np.ndarray, huge: np.ndarray, log_band: np.ndarray, draws: bytes,
             banded: bool) -> np.ndarray:
    """``small`` with the entries ``draws`` picks made huge or saturating (the small
    entry's sign): about one in four huge, at least one among four or more; about one in
    four saturating (``banded``)."""
    b = np.frombuffer(draws, dtype=np.uint8)
    huge_mask = b >= 192
    if b.size >= 4:
        huge_mask[np.argmax(b)] = True
    band_mask = (b >= 128) & ~huge_mask if banded else np.zeros(b.size, bool)
    magnitude = np.where(huge_mask, huge, np.exp(log_band))
    return np.where(huge_mask | band_mask, np.where(small < 0, -magnitude, magnitude), small)


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
    jitter = values(shape, -0.2, 0.2)       # generic jitter: all entries distinct
    return st.tuples(ints, jitter).map(lambda p: p[0] + offset + p[1])


def axis_for(ndim: int, allow_none: bool = True, allow_tuple: bool = True) -> st.SearchStrategy:
    """A valid numpy ``axis`` for an array of ``ndim`` dims: None, an int (maybe negative)
    or a tuple of distinct axes, each written as a or a - ndim (negative entries), or the
    empty tuple (numpy's no-op reduction, which a rule testing ``if not axis`` mistakes
    for None)."""
    options: list[st.SearchStrategy] = []
    if allow_none:
        options.append(st.none())
    if allow_tuple:
        options.append(st.just(()))
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
        lambda p: tuple(a - ndim if negative else a for a, negative in zip(*p, strict=True)))


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
    """Rows (last axis) of non-negative numbers that need not sum to 1, in one sample of
    four some rows all zero: soft targets as a user may pass them (not normalized). Zero
    rows repeat a value, so they are kept to a share that leaves most samples generic."""
    w = draw(values(shape, 0.0, 2.0))
    if draw(st.integers(0, 3)) != 0:
        return w
    if len(shape) > 1:
        zero = draw(hnp.arrays(np.bool_, shape[:-1]))
        w[zero] = 0.0
    elif draw(st.booleans()):
        w[...] = 0.0
    return w

"""One test specification per registered op: how to draw valid inputs (its domain, its
kinks avoided), a numpy reference for its forward, and any tolerance override with the
reason. The suite walks ``engine.REGISTRY`` and looks each op up here: an op without a
spec fails the suite, so no op escapes testing.

The specs of the built-in ops live beside this file, one module per op family, mirroring
``engine/ops/``; this module holds the ``OpSpec`` record and the building blocks.

A sample is ``(args, params)``: ``op.apply(*args, **params)`` is the op under test. Float
arrays in differentiable positions are checked; labels, masks and conditions are not.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import ArrayLike

from ...plain import plain_repr
from .. import strategies as s

Sample = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class OpSpec:
    """How to test one op.

    sample:        a hypothesis strategy of (args, params) inside the op's domain.
    reference:     numpy (float64) reference of the forward: reference(*args, **params),
                   an array or a numpy scalar (compared through ``np.asarray``).
    kinks:         where the op is not differentiable and how the sample avoids it.
    complex_step:  the forward is analytic and accepts complex input (complex-step check).
    atol, rtol:    tolerance override for finite-difference checks, with ``why``.
    accurate_to:   the relative accuracy the derivative rules reach in float64 (checked
                   against an extrapolated difference); None skips that check (say why).
    kink_examples: (args, params, expected gradients of sum(output)) at the kinks
                   themselves, documenting the convention chosen there.
    """

    name: str
    sample: st.SearchStrategy
    reference: Callable[..., ArrayLike]
    kinks: str = "none: smooth on its domain"
    complex_step: bool = False
    atol: float | None = None
    rtol: float | None = None
    why: str = ""
    accurate_to: float | None = 1e-9
    kink_examples: tuple[tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    module: str = ""   # the module that defined the spec


SPECS: dict[str, OpSpec] = {}


def spec(name: str, sample: st.SearchStrategy, reference: Callable[..., ArrayLike],
         **kw: Any) -> OpSpec:
    """Define (or replace) the test specification of op ``name``. Users call this for their ops."""
    module = sys._getframe(1).f_globals.get("__name__", "")
    SPECS[name] = OpSpec(name, sample, reference, module=module, **kw)
    return SPECS[name]


def spec_for(name: str) -> OpSpec:
    """The test specification of the op called ``name``; a KeyError saying how to add one
    when it has none."""
    if name not in SPECS:
        raise KeyError(f"op {name!r} has no test specification: add one with "
                       f"engine.testing.spec({name!r}, sample=..., reference=...)")
    return SPECS[name]


# --- building blocks ---------------------------------------------------------------------

Values = Callable[[s.Shape], st.SearchStrategy] | st.SearchStrategy
"""How a building block draws one input: a shape factory (``strategies.reals``: a shape in,
a strategy of arrays of that shape out), or a hypothesis strategy of arrays (used as drawn,
its own shapes) or of numbers (the elements of an array of the shape the block draws)."""


def _check_values(what: str, values: Any) -> None:
    if not (isinstance(values, st.SearchStrategy) or callable(values)):
        raise TypeError(f"{what}: values must be a hypothesis strategy or a shape factory "
                        f"(shape -> strategy), got {type(values).__name__}")


def _draw_any(draw: st.DrawFn, what: str, values: Values,
              shape: s.Shape) -> tuple[np.ndarray, bool]:
    """One input array, and whether it came with a shape of its own: from the shape factory
    at ``shape``, or from the strategy (an array as drawn: True; numbers fill an array of
    ``shape``, float64 unless they are all integers)."""
    if not isinstance(values, st.SearchStrategy):
        return draw(values(shape)), False
    first = draw(values)
    if isinstance(first, np.ndarray):
        return first, True
    size = int(np.prod(shape))
    items = [first, *draw(st.lists(values, min_size=size - 1, max_size=size - 1))]
    bad = [x for x in items if isinstance(x, (bool, np.bool_))
           or not isinstance(x, (int, float, np.integer, np.floating))]
    if bad:
        raise TypeError(f"{what}: the strategy drew {plain_repr(bad[0])} ({type(bad[0]).__name__}); "
                        f"it must draw numpy arrays or real numbers")
    dtype = np.int64 if all(isinstance(x, (int, np.integer)) for x in items) else np.float64
    return np.array(items, dtype=dtype).reshape(shape), False


def _draw(draw: st.DrawFn, what: str, values: Values, shape: s.Shape) -> np.ndarray:
    return _draw_any(draw, what, values, shape)[0]


def unary(values: Values, max_dims: int = 3, **params: st.SearchStrategy) -> st.SearchStrategy:
    """Samples of a one-input op: an array of any small shape (up to ``max_dims`` axes) from
    ``values``, and each keyword parameter drawn from its strategy.

    ``values`` is a shape factory (``strategies.reals``) or a hypothesis strategy, of
    arrays (``hypothesis.extra.numpy.arrays(...)``, used as drawn) or of numbers
    (``st.floats(-1, 1)``: the elements)."""
    _check_values("unary", values)

    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(max_dims=max_dims))
        return (_draw(draw, "unary", values, shape),), {k: draw(v) for k, v in params.items()}
    return draw_sample()


def _broadcasting_with(shape: s.Shape) -> st.SearchStrategy:
    return hnp.broadcastable_shapes(shape, max_dims=3, max_side=4)


def binary(left: Values, right: Values) -> st.SearchStrategy:
    """Samples of a two-input broadcasting op: shapes that broadcast together. Each side is
    a shape factory or a strategy (see ``unary``); an array a strategy draws keeps its
    shape, and the other side is drawn to broadcast with it. Two drawn arrays whose shapes
    do not broadcast are an error."""
    _check_values("binary", left)
    _check_values("binary", right)

    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        sa, sb = draw(s.broadcastable_shapes(2))
        a, a_as_drawn = _draw_any(draw, "binary", left, sa)
        if a_as_drawn:
            sb = draw(_broadcasting_with(a.shape))
        b, b_as_drawn = _draw_any(draw, "binary", right, sb)
        if b_as_drawn and not a_as_drawn:         # the left one again, to fit the right one
            a = _draw(draw, "binary", left, draw(_broadcasting_with(b.shape)))
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"binary: the strategies drew arrays of shapes {a.shape} and "
                             f"{b.shape}, which do not broadcast together") from None
        return (a, b), {}
    return draw_sample()


def reduction(values: Values, **params: st.SearchStrategy) -> st.SearchStrategy:
    """Samples of a reduction: an array (``values`` as in ``unary``), a valid ``axis``
    (None, int or tuple) for its shape, ``keepdims``. With a shape factory, half the
    samples reduce axes other than the first of a 2-d or 3-d array without keepdims: a
    backward that broadcasts the gradient back without putting the reduced axes in place
    is right whenever they lead (numpy aligns trailing axes), which the other samples
    mostly are (None, (), all axes, keepdims, 0-d and 1-d arrays); 7% of them showed it.
    A third of the others reduce over no axis (``axis=()``, numpy's no-op reduction) of an
    array of one dimension or more, where a rule testing ``if not axis`` takes it for None
    and reduces everything (on a 0-d array the two agree): one sample in ten showed it, so
    40 examples could miss it."""
    _check_values("reduction", values)

    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        drawn = isinstance(values, st.SearchStrategy)    # an array strategy keeps its shape
        revealing = not drawn and draw(st.booleans())
        no_op = not drawn and not revealing and draw(st.sampled_from((False, False, True)))
        shape = draw(s.shapes(min_dims=2, max_dims=3, min_side=2) if revealing
                     else s.shapes(min_dims=1 if no_op else 0, max_dims=3))
        x = _draw(draw, "reduction", values, shape) if drawn \
            else None          # a factory's array is drawn last, as it always was
        if revealing:
            inner = draw(st.lists(st.integers(1, len(shape) - 1), min_size=1,
                                  max_size=len(shape) - 1, unique=True))
            p = {"axis": inner[0] if len(inner) == 1 else tuple(sorted(inner)), "keepdims": False}
        elif no_op:
            p = {"axis": (), "keepdims": draw(st.booleans())}
        else:
            p = {"axis": draw(s.axis_for(len(shape) if x is None else x.ndim)),
                 "keepdims": draw(st.booleans())}
        p.update({k: draw(v) for k, v in params.items()})
        return (_draw(draw, "reduction", values, shape) if x is None else x,), p
    return draw_sample()


def along_axis(values: Callable[[s.Shape], st.SearchStrategy]) -> st.SearchStrategy:
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(min_dims=1, max_dims=3))
        return (draw(values(shape)),), {"axis": draw(st.integers(-len(shape), len(shape) - 1))}
    return draw_sample()


# The built-in ops' specs (each module calls spec() for its family).
from . import activation as _activation  # noqa: E402,F401,I001
from . import elementwise as _elementwise  # noqa: E402,F401
from . import linalg as _linalg  # noqa: E402,F401
from . import loss as _loss  # noqa: E402,F401
from . import reduce as _reduce  # noqa: E402,F401
from . import shape as _shape  # noqa: E402,F401

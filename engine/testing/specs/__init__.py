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

from .. import strategies as s

Sample = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class OpSpec:
    """How to test one op.

    sample:        a hypothesis strategy of (args, params) inside the op's domain.
    reference:     numpy (float64) reference of the forward: reference(*args, **params).
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
    reference: Callable[..., np.ndarray]
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


def spec(name: str, sample: st.SearchStrategy, reference: Callable[..., np.ndarray], **kw: Any) -> OpSpec:
    """Define (or replace) the test specification of op ``name``. Users call this for their ops."""
    module = sys._getframe(1).f_globals.get("__name__", "")
    SPECS[name] = OpSpec(name, sample, reference, module=module, **kw)
    return SPECS[name]


def spec_for(name: str) -> OpSpec:
    if name not in SPECS:
        raise KeyError(f"op {name!r} has no test specification: add one with "
                       f"engine.testing.spec({name!r}, sample=..., reference=...)")
    return SPECS[name]


# --- building blocks ---------------------------------------------------------------------

def unary(values: Callable[[s.Shape], st.SearchStrategy], max_dims: int = 3, **params: st.SearchStrategy) -> st.SearchStrategy:
    """Samples of a one-input op: an array of any small shape from ``values(shape)``,
    and each keyword parameter drawn from its strategy."""
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(max_dims=max_dims))
        return (draw(values(shape)),), {k: draw(v) for k, v in params.items()}
    return draw_sample()


def binary(left: Callable[[s.Shape], st.SearchStrategy], right: Callable[[s.Shape], st.SearchStrategy]) -> st.SearchStrategy:
    """Samples of a two-input broadcasting op: shapes that broadcast together."""
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        sa, sb = draw(s.broadcastable_shapes(2))
        return (draw(left(sa)), draw(right(sb))), {}
    return draw_sample()


def reduction(values: Callable[[s.Shape], st.SearchStrategy], **params: st.SearchStrategy) -> st.SearchStrategy:
    """Samples of a reduction: an array, a valid ``axis`` (None, int or tuple), ``keepdims``."""
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(max_dims=3))
        p = {"axis": draw(s.axis_for(len(shape))), "keepdims": draw(st.booleans())}
        p.update({k: draw(v) for k, v in params.items()})
        return (draw(values(shape)),), p
    return draw_sample()


def along_axis(values: Callable[[s.Shape], st.SearchStrategy]) -> st.SearchStrategy:
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(min_dims=1, max_dims=3))
        return (draw(values(shape)),), {"axis": draw(st.integers(-len(shape), len(shape) - 1))}
    return draw_sample()


# The built-in ops' specs (each module calls spec() for its family).
from . import (activation as _activation, elementwise as _elementwise,  # noqa: E402,F401
               linalg as _linalg, loss as _loss, reduce as _reduce, shape as _shape)

"""Specs of the elementwise ops (engine/ops/elementwise.py)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .. import strategies as s
from . import Sample, binary, spec, unary

spec("add", binary(s.reals, s.reals), np.add, complex_step=True)
spec("sub", binary(s.reals, s.reals), np.subtract, complex_step=True)
spec("mul", binary(s.reals, s.reals), np.multiply, complex_step=True)
spec("div", binary(s.reals, s.nonzero), np.divide, kinks="pole at b = 0: b kept |b| >= 0.3",
     complex_step=True)
spec("neg", unary(s.reals), np.negative, complex_step=True)
@st.composite
def _pow_integer_exponent_sample(draw: st.DrawFn) -> Sample:
    """Bases of either sign with constant integer exponents in [-3, 4] (int8: numpy keeps
    a float32 base float32 with it, not with int64). The exponent is not differentiated
    (d/db is undefined for a < 0), so both modes must give d/da alone: finite, with the
    sign of a^(b-1)."""
    sa, sb = draw(s.broadcastable_shapes(2))
    return (draw(s.nonzero(sa)), draw(s.hnp.arrays(np.int8, sb, elements=st.integers(-3, 4)))), {}


spec("pow", st.one_of(binary(s.positive, lambda sh: s.reals(sh, 2.0)),
                      _pow_integer_exponent_sample()), np.power,
     kinks="a > 0 for a real exponent (a^b and the log(a) in d/db need it): a in [0.2, 3]; "
           "a of either sign, |a| >= 0.3 (pole of negative powers), for a constant integer "
           "exponent; at a = 0 (b >= 1) d/da = b 0^(b-1) and d/db = 0, as documented; "
           "b = 0 gives d/da = 0 everywhere (a^0 is the constant 1), a = 0 included",
     complex_step=True,
     kink_examples=(((np.zeros(3), np.array([1.0, 2.0, 3.0])), {},
                     (np.array([1.0, 0.0, 0.0]), np.zeros(3))),
                    ((np.zeros(2), np.array([0.0, 1.0])), {},
                     (np.array([0.0, 1.0]), np.zeros(2)))))


@st.composite
def _pow_scalar_sample(draw: st.DrawFn) -> Sample:
    exponent = draw(st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5]))
    shape = draw(s.shapes())
    if float(exponent).is_integer() and exponent >= 0:
        x = draw(s.reals(shape))
    elif float(exponent).is_integer():
        x = draw(s.nonzero(shape))
    else:
        x = draw(s.positive(shape))
    return (x,), {"exponent": exponent}


_ZEROS = (np.zeros(2),)
spec("pow_scalar", _pow_scalar_sample(), lambda x, exponent: np.power(x, exponent),
     kinks="pole at 0 for negative exponents (|x| >= 0.3); x > 0 for fractional ones; at "
           "x = 0 the documented derivative for p = 0, 1, 2, 3",
     complex_step=True,
     kink_examples=tuple((_ZEROS, {"exponent": p}, (np.full(2, d),))
                         for p, d in ((0, 0.0), (1, 1.0), (2, 0.0), (3, 0.0))))
spec("exp", unary(s.reals), np.exp, complex_step=True)
spec("log", unary(s.positive), np.log, kinks="pole at 0: x in [0.2, 3]", complex_step=True)
spec("sqrt", unary(s.positive), np.sqrt, kinks="infinite slope at 0: x in [0.2, 3]",
     complex_step=True)
spec("abs", unary(s.nonzero), np.abs, kinks="kink at 0 (abs'(0) = 0 by convention): |x| >= 0.3",
     kink_examples=(((np.array([-1.0, 0.0, 2.0]),), {}, (np.array([-1.0, 0.0, 1.0]),)),))
_TIE: Sample = ((np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])), {})
spec("maximum", binary(lambda sh: s.off_grid(sh, 0.0), lambda sh: s.off_grid(sh, 0.5)),
     np.maximum, kinks="ties a == b (gradient split evenly): |a - b| >= 0.1",
     kink_examples=(_TIE + ((np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0])),),))
spec("minimum", binary(lambda sh: s.off_grid(sh, 0.0), lambda sh: s.off_grid(sh, 0.5)),
     np.minimum, kinks="ties a == b (gradient split evenly): |a - b| >= 0.1",
     kink_examples=(_TIE + ((np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.5, 1.0])),),))


@st.composite
def _clip_sample(draw: st.DrawFn) -> Sample:
    bounds = draw(st.sampled_from([(-1.0, 1.0), (None, 0.5), (-0.5, None),
                                   (0.0, 6.0), (0.0, None), (None, 0.0)]))  # relu6, bounds of 0
    shape = draw(s.shapes())
    x = draw(s.values(shape, -3, 3, avoid=[b for b in bounds if b is not None]))
    return (x,), {"min": bounds[0], "max": bounds[1]}


spec("clip", _clip_sample(), lambda x, min=None, max=None: np.clip(x, min, max),
     kinks="at min and max (gradient passes at the bound): x >= 0.1 away from both",
     kink_examples=(((np.array([-2.0, -1.0, 0.0, 1.0, 2.0]),), {"min": -1.0, "max": 1.0},
                     (np.array([0.0, 1.0, 1.0, 1.0, 0.0]),)),
                    ((np.array([-1.0, 0.0, 3.0, 6.0, 7.0]),), {"min": 0.0, "max": 6.0},
                     (np.array([0.0, 1.0, 1.0, 1.0, 0.0]),)),
                    ((np.array([-1.0, 0.0, 1.0]),), {"min": 0.0},
                     (np.array([0.0, 1.0, 1.0]),)),
                    # one bound only (a separate code path in many hand-written clips)
                    ((np.array([-1.0, 0.5, 2.0]),), {"max": 0.5},
                     (np.array([1.0, 1.0, 0.0]),)),
                    ((np.array([-2.0, -0.5, 1.0]),), {"min": -0.5},
                     (np.array([0.0, 1.0, 1.0]),)),
                    ((np.array([-1.0, 0.0, 1.0]),), {"min": None, "max": 0.0},
                     (np.array([1.0, 1.0, 0.0]),))))


@st.composite
def _where_sample(draw: st.DrawFn) -> Sample:
    sc, sa, sb = draw(s.broadcastable_shapes(3))
    cond = draw(s.hnp.arrays(np.bool_, sc))
    return (cond, draw(s.reals(sa)), draw(s.reals(sb))), {}


spec("where", _where_sample(), np.where, kinks="none (cond is not differentiable)")

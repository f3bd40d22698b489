"""The spec building blocks ``unary``, ``binary`` and ``reduction`` take a hypothesis
strategy (of arrays, or of numbers) as well as a shape factory."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handgrad import engine
from handgrad.engine.testing import OpSpec, binary, check_op, reduction, strategies, unary

FEW = settings(max_examples=30, derandomize=True, database=None, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


def matrices(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-1, 1))


@FEW
@given(unary(st.floats(-0.5, 0.5)))
def test_unary_fills_arrays_of_any_shape_from_a_strategy_of_numbers(sample):
    (x,), params = sample
    assert isinstance(x, np.ndarray) and x.dtype == np.float64 and x.ndim <= 3
    assert np.all(np.abs(x) <= 0.5) and params == {}


@FEW
@given(unary(st.integers(0, 4)))
def test_integers_give_an_integer_array(sample):
    (x,), _ = sample
    assert x.dtype == np.int64 and np.all((0 <= x) & (x <= 4))


@FEW
@given(unary(matrices((2, 3)), alpha=st.just(0.5)))
def test_unary_uses_a_strategy_of_arrays_as_drawn(sample):
    (x,), params = sample
    assert x.shape == (2, 3) and params == {"alpha": 0.5}


@FEW
@given(binary(matrices((3, 1)), strategies.reals))
def test_binary_draws_the_other_side_to_broadcast_with_a_drawn_array(sample):
    (a, b), _ = sample
    assert a.shape == (3, 1)
    np.broadcast_shapes(a.shape, b.shape)


@FEW
@given(binary(st.floats(-1, 1), st.floats(2, 3)))
def test_binary_takes_two_strategies_of_numbers(sample):
    (a, b), _ = sample
    np.broadcast_shapes(a.shape, b.shape)
    assert np.all(a <= 1) and np.all(b >= 2)


@FEW
@given(reduction(matrices((2, 3))))
def test_reduction_draws_an_axis_for_the_drawn_array(sample):
    (x,), params = sample
    assert x.shape == (2, 3)
    np.sum(x, axis=params["axis"], keepdims=params["keepdims"])   # a valid axis for 2-D


def test_arrays_that_do_not_broadcast_are_an_error():
    @FEW
    @given(binary(matrices((2,)), matrices((3,))))
    def draw(sample):
        pass

    with pytest.raises(ValueError, match=r"binary: the strategies drew arrays of shapes \(2,\) "
                                         r"and \(3,\), which do not broadcast together"):
        draw()


def test_a_strategy_of_something_else_is_an_error():
    @FEW
    @given(unary(st.text()))
    def draw(sample):
        pass

    with pytest.raises(TypeError, match=r"unary: the strategy drew .* \(str\); it must draw "
                                        r"numpy arrays or real numbers"):
        draw()
    with pytest.raises(TypeError, match="reduction: values must be a hypothesis strategy or a "
                                        "shape factory"):
        reduction(3.0)


def test_check_op_runs_on_a_spec_built_from_a_strategy():
    spec = OpSpec("exp", unary(st.floats(-2, 2)), np.exp, complex_step=True)
    assert check_op(engine.exp, spec, max_examples=10)
    spec = OpSpec("mul", binary(st.floats(-2, 2), matrices((2, 2))), np.multiply,
                  complex_step=True)
    assert check_op(engine.mul, spec, max_examples=10)


@FEW
@given(st.floats(-3, 3), st.floats(0.05, 3), st.lists(st.floats(-5, 5), max_size=4))
def test_intervals_avoiding_are_the_parts_of_lo_hi_a_margin_from_every_kink(lo, width, kinks):
    """Each piece lies inside [lo, hi] and a margin from every kink, and every point of
    [lo, hi] a margin from every kink lies in a piece (a kink above hi stretched the
    piece before it up to the kink, beyond hi)."""
    hi = lo + width
    points = sorted(set(kinks))

    def margin(k):       # MARGIN, or a quarter of the way to the nearest other kink
        others = [abs(k - j) for j in points if j != k]
        return min([strategies.MARGIN, *(d / 4 for d in others)])
    pieces = strategies.intervals_avoiding(kinks, lo, hi)
    for a, b in pieces:
        assert lo <= a < b <= hi
        assert all(k <= a - margin(k) + 1e-12 or k >= b + margin(k) - 1e-12 for k in points)
    for x in np.linspace(lo, hi, 101):          # (a single point is not a piece)
        if all(abs(x - k) > margin(k) + 1e-12 for k in points):
            assert any(a <= x <= b for a, b in pieces), (x, pieces)


@FEW
@given(strategies.values((20,), -0.5, 0.5, avoid=[-1.0, 1.0]))
def test_values_stay_in_lo_hi_with_kinks_beyond_both_ends(x):
    assert np.all((-0.5 <= x) & (x <= 0.5)), x

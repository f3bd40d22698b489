"""Optimizer.step never leaves a parameter half-written or silently wrong: a read-only
parameter is a clear error before anything changes, and with ``check_finite`` (which fit
turns on) an update giving NaN or Inf is undone for every parameter and raises."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine
from handgrad.nn import optim
from handgrad.nn.module import Parameter

ALL = [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad, optim.Adadelta]


def test_a_read_only_parameter_is_a_clear_error_before_anything_changes():
    a = Parameter(np.ones(3))
    frozen = np.full(2, 5.0)
    frozen.flags.writeable = False
    b = engine.Tensor(frozen, copy=False, requires_grad=True)    # shares a read-only array
    opt = optim.SGD([a, b], lr=0.5, momentum=0.9)
    a.grad, b.grad = np.ones(3), np.ones(2)
    with pytest.raises(ValueError, match=r"SGD\.step: parameter 1 \(shape \(2,\)\) is read-only "
                                         r"\(its numpy array is not writeable"):
        opt.step()
    np.testing.assert_array_equal(a.data, np.ones(3))   # the parameter before it is untouched
    assert opt.steps == 0 and opt.state[id(a)] == {}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_with_check_finite_an_overflowing_update_is_undone_for_every_parameter(cls):
    big = np.finfo(np.float64).max
    good = Parameter(np.array([0.5, -0.25]))               # updated first, finite
    huge = Parameter(np.array([big, 1.0]))                 # big - lr * (negative) overflows
    opt = cls([good, huge], lr=1e306)
    opt.check_finite = True
    good.grad, huge.grad = np.array([1e-300, 0.0]), np.array([-1.0, 0.0])
    before = [good.data.copy(), huge.data.copy()]
    with pytest.raises(optim.NonFiniteUpdate, match=rf"{cls.__name__}\.step: the update of "
                       r"parameter 1 \(shape \(2,\)\) gives -?(inf|nan); every parameter keeps its "
                       r"value from before the step") as info:
        opt.step()
    assert info.value.index == 1 and not np.isfinite(info.value.value)
    np.testing.assert_array_equal(good.data, before[0])
    np.testing.assert_array_equal(huge.data, before[1])


def test_check_finite_is_off_by_default_and_changes_no_bit_of_a_finite_step():
    rng = np.random.default_rng(0)
    runs = []
    for check in (False, True):
        p = Parameter(rng.standard_normal((4, 3)).astype(np.float32) if not runs else
                      runs[0][0].copy())
        opt = optim.Adam([p], lr=0.1)
        assert opt.check_finite is False
        opt.check_finite = check
        start = p.data.copy()
        for k in range(3):
            p.grad = np.full((4, 3), k - 1.5, np.float32)
            opt.step()
        runs.append((start, p.data.copy()))
    np.testing.assert_array_equal(runs[0][1], runs[1][1])

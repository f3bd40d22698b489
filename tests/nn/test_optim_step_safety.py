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
                       r"parameter 1 \(shape \(2,\)\) gives -?(inf|nan); every parameter and the "
                       r"optimizer's state keep their values from before the step") as info:
        opt.step()
    assert info.value.index == 1 and not np.isfinite(info.value.value)
    np.testing.assert_array_equal(good.data, before[0])
    np.testing.assert_array_equal(huge.data, before[1])


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_an_overflowing_update_leaves_the_optimizers_state_as_before_the_step(cls):
    """The moment buffers, step counts and `steps` of the parameters updated before the
    failure had taken the failed step: retrying it (as fit's error advises) then differed
    from a retry from the state before. They are put back, in the same arrays."""
    big = np.finfo(np.float64).max
    good = Parameter(np.array([0.5, -0.25]))
    huge = Parameter(np.array([1.0, 1.0]))
    opt = cls([good, huge], lr=0.1)
    opt.check_finite = True
    good.grad, huge.grad = np.array([0.3, -0.2]), np.array([0.1, 0.4])
    opt.step()                                          # a finite step: state exists
    state = {k: dict(v) for k, v in opt.state.items()}
    before = {k: {key: np.copy(value) for key, value in v.items()} for k, v in state.items()}
    steps = opt.steps
    with engine.no_grad():
        huge.data[0] = big
    for group in opt.param_groups:
        group["lr"] = 1e306
    good.grad, huge.grad = np.array([1e-300, 0.0]), np.array([-1.0, 0.0])
    with pytest.raises(optim.NonFiniteUpdate):
        opt.step()
    assert opt.steps == steps
    for k, v in opt.state.items():
        assert v.keys() == before[k].keys()
        for key, value in v.items():
            np.testing.assert_array_equal(value, before[k][key])
            if isinstance(value, np.ndarray):
                assert value is state[k][key]              # the arrays handed out, kept


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


BAD_GRADIENTS = {
    "a row for a matrix": (np.ones(4), ValueError, r"has shape \(4,\); a gradient must have its parameter's shape"),
    "a numpy scalar": (np.float64(1.0), ValueError, r"has shape \(\); a gradient must"),
    "a transposed matrix": (np.ones((4, 3)), ValueError, r"has shape \(4, 3\)"),
    "complex": (np.ones((3, 4), complex), ValueError, r"has dtype complex128; a gradient must hold real numbers"),
    "a list": ([[1.0] * 4] * 3, TypeError, r"is a list, not a numpy array"),
    "a Python float": (1.0, TypeError, r"is a float, not a numpy array"),
}


@pytest.mark.parametrize("check_finite", [False, True])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", BAD_GRADIENTS)
def test_a_gradient_not_shaped_as_its_parameter_is_refused_before_anything_changes(bad, cls, check_finite):
    """numpy would broadcast a (4,) gradient into every row of a (3, 4) weight (and SGD's
    momentum buffer would take its shape); a complex one fails halfway through an update.
    Each is an error naming the parameter and both shapes, before any parameter or state
    changes, whichever parameter it is."""
    grad, error, message = BAD_GRADIENTS[bad]
    first, second = Parameter(np.zeros(2)), Parameter(np.zeros((3, 4)))
    kwargs = {"momentum": 0.9} if cls in (optim.SGD, optim.RMSprop) else {}
    opt = cls([first, second], lr=0.1, **kwargs)
    opt.check_finite = check_finite
    first.grad, second.grad = np.ones(2), np.ones((3, 4))
    opt.step()
    before = opt.state_dict()
    values = [first.numpy(copy=True), second.numpy(copy=True)]
    first.grad, second.grad = np.ones(2), grad
    with pytest.raises(error, match=rf"{cls.__name__}\.step: the gradient of parameter 1 "
                                    rf"\(shape \(3, 4\)\) {message}"):
        opt.step()
    assert first.numpy().tobytes() == values[0].tobytes()
    assert second.numpy().tobytes() == values[1].tobytes()
    after = opt.state_dict()
    assert after["steps"] == before["steps"]
    for i, state in before["state"].items():
        for key, value in state.items():
            assert np.array_equal(after["state"][i][key], value), (i, key)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_a_gradient_of_another_real_dtype_is_taken_as_its_values(cls):
    """A float64 (or integer) gradient of a float32 parameter gives the update of the same
    values in float32, to float32 rounding: it is cast, not refused."""
    a, b = Parameter(np.ones((3, 4), np.float32)), Parameter(np.ones((3, 4), np.float32))
    opt_a, opt_b = cls([a], lr=0.1), cls([b], lr=0.1)
    for grad in (np.full((3, 4), 0.5), np.full((3, 4), 2, dtype=np.int64)):
        a.grad, b.grad = grad, grad.astype(np.float32)
        opt_a.step()
        opt_b.step()
    assert a.dtype == np.float32
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad, optim.Adadelta])
def test_an_update_that_makes_the_optimizers_state_inf_is_undone(cls):
    """g² of a finite float32 gradient beyond 1.8e19 is Inf: the step succeeded with v (or
    the sum of squares) Inf, and the weight never moved again (m / inf = 0), where torch
    goes on. The state is checked with the weights: the step is undone and named."""
    p = Parameter(np.array([1.0, 0.5], dtype=np.float32))
    opt = cls([p])
    opt.check_finite = True
    p.grad = np.array([2e19, 1.0], dtype=np.float32)
    with pytest.raises(optim.NonFiniteUpdate, match=r"gives inf in its optimizer state '"):
        opt.step()
    assert np.array_equal(p.numpy(), [1.0, 0.5]) and opt.steps == 0
    assert all(np.isfinite(v).all() for s in opt.state.values() for v in s.values()
               if isinstance(v, np.ndarray))


def test_a_failed_update_restores_a_parameter_listed_twice_and_memory_shared_by_two():
    """The copies were kept by parameter, so the second update's copy (taken after the
    first) was put back: [0.9, -8.0] for [1, 2], with a message saying every value was."""
    p = Parameter(np.array([1.0, 2.0], dtype=np.float32))
    q = Parameter(np.array([1.0], dtype=np.float32))
    opt = optim.SGD([{"params": [p], "lr": 0.1}, {"params": [q], "lr": 0.1}])
    opt.check_finite = True
    opt.param_groups[1]["params"].append(p)               # p in both groups, by hand
    opt.param_groups[1]["lr"] = 1e38
    p.grad, q.grad = np.array([1.0, 1e2], np.float32), np.array([1.0], np.float32)
    with pytest.raises(optim.NonFiniteUpdate):
        opt.step()
    assert np.array_equal(p.numpy(), [1.0, 2.0])
    shared = np.array([1.0, 2.0], dtype=np.float32)
    a, b = engine.Tensor(shared, requires_grad=True, copy=False), engine.Tensor(shared, requires_grad=True, copy=False)
    opt = optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1e38}])
    opt.check_finite = True
    a.grad, b.grad = np.ones(2, np.float32), np.array([1.0, 1e2], np.float32)
    with pytest.raises(optim.NonFiniteUpdate):
        opt.step()
    assert np.array_equal(shared, [1.0, 2.0])


def test_a_step_that_raises_midway_leaves_nothing_changed():
    """Adam's betas set to (1.0, 0.999) by hand: a ZeroDivisionError after the first
    parameters were updated and the step counts moved on."""
    ps = [Parameter(np.array([1.0, 2.0])), Parameter(np.array([3.0]))]
    opt = optim.Adam([{"params": [ps[0]]}, {"params": [ps[1]]}], lr=0.1)
    opt.check_finite = True
    for p in ps:
        p.grad = np.ones_like(p.numpy())
    opt.step()
    before = [p.numpy(copy=True) for p in ps]
    opt.param_groups[1]["betas"] = (1.0, 0.999)
    with pytest.raises(ZeroDivisionError):
        opt.step()
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(ps, before)) and opt.steps == 1
    assert [s["t"] for s in opt.state.values()] == [1, 1]


def test_centered_rmsprop_with_a_steady_gradient_stays_finite():
    """v - mean_g² rounds below 0 after about a thousand steps of one gradient: sqrt gave
    NaN, and 0 * NaN reached the weight even with lr = 0."""
    p = Parameter(np.zeros(64, dtype=np.float32))
    opt = optim.RMSprop([p], lr=0.0, centered=True)
    opt.check_finite = True
    g = (np.arange(64, dtype=np.float32) / 64 + 1) * 0.3
    for _ in range(2000):
        p.grad = g.copy()
        opt.step()
    assert np.array_equal(p.numpy(), np.zeros(64))
